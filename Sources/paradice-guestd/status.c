/* The status file: what `paradice guest status` shows. Rewritten whole (a new file renamed over the old)
 * whenever it is behind, so that a reader never sees half of it. */
#define _GNU_SOURCE
#include "guestd.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char status_path[256];

void gd_status_init(const char *path) {
    if (path) snprintf(status_path, sizeof status_path, "%s", path);
    else {
        (void)mkdir("/run/paradice", 0755);
        snprintf(status_path, sizeof status_path, "/run/paradice/guest-%d.status", (int)getpid());
    }
}

void gd_status_write(const char *state) {
    if (!status_path[0]) return;
    gd.dirty = 0;
    char temporary[300];
    snprintf(temporary, sizeof temporary, "%s.new", status_path);
    FILE *f = fopen(temporary, "w");
    if (!f) { gd_log("status %s: %m", temporary); return; }
    fprintf(f, "pid %d\nstate %s\nbackend %s\nsession %u\n", (int)getpid(), state, gd.backend, gd.connection->session);
    int threads, busy;
    gd_pool_size(&threads, &busy);
    fprintf(f, "requests %lu served %lu failed\nmappings %d\nshared %lu\nthreads %d %d busy\n", (unsigned long)gd.served,
            (unsigned long)gd.failed, gd_area_count(), (unsigned long)gd.shared_maps, threads, busy);
    for (int i = 0; i < gd_node_count(); i++) {
        struct gd_node *n = gd_node_at(i);
        fprintf(f, "node /dev/%s %u:%u %s %s %d\n", n->guest, n->major, n->minor, n->backend,
                n->subsystem[0] ? n->subsystem : (n->class_name[0] ? n->class_name : "-"), (int)n->open_files);
    }
    if (fclose(f) != 0 || rename(temporary, status_path) != 0) gd_log("status %s: %m", status_path);
}

void gd_status_remove(void) {
    if (status_path[0]) (void)unlink(status_path);
}
