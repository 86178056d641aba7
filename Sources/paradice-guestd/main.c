/* paradice-guestd --backend URL [--map GUEST=BACKEND]... [--control PATH] [--status PATH] [--name NAME]
 *
 * Connects to the backend, registers its devices with the guest kernel's Paradice module and serves the
 * calls on them until SIGTERM/SIGINT (goodbye to the backend, exit 0) or the backend's end (every call
 * fails with EIO; the control file is closed, which removes the nodes, and the daemon exits 1). */
#define _GNU_SOURCE
#include "guestd.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

struct guestd gd = { .control = -1 };

void gd_log(const char *format, ...) {
    char line[600];
    int at = snprintf(line, sizeof line, "paradice-guestd: ");
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(line + at, sizeof line - (size_t)at - 1, format, ap);
    va_end(ap);
    if (n < 0) return;
    size_t length = strlen(line);
    line[length++] = '\n';
    ssize_t ignored = write(2, line, length);
    (void)ignored;
}

static void log_line(void *unused, const char *line) {
    (void)unused;
    gd_log("%s", strncmp(line, "paradice: ", 10) == 0 ? line + 10 : line);
}

static void on_event(void *unused, uint32_t handle, short revents) {
    (void)unused;
    gd_file_event(handle, revents);
}

static void usage(void) {
    fprintf(stderr, "usage: paradice-guestd --backend URL [--map GUEST=BACKEND]... [--control PATH] [--status PATH] "
                    "[--name NAME] [--tls-cert FILE --tls-key FILE --tls-ca FILE | --psk-file FILE | --plain-tcp]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *control = "/dev/" PDK_CONTROL_NODE, *status = NULL, *name = NULL;
    struct gd_mapping *maps = calloc((size_t)argc, sizeof *maps);
    int map_count = 0;
    struct pd_security security = { 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) usage();
        if (strcmp(a, "--plain-tcp") == 0) { security.plain_tcp = 1; continue; }
        if (!value) { fprintf(stderr, "paradice-guestd: %s needs a value\n", a); usage(); }
        i++;
        if (strcmp(a, "--backend") == 0) gd.backend = value;
        else if (strcmp(a, "--control") == 0) control = value;
        else if (strcmp(a, "--status") == 0) status = value;
        else if (strcmp(a, "--name") == 0) name = value;
        else if (strcmp(a, "--tls-cert") == 0) security.cert = value;
        else if (strcmp(a, "--tls-key") == 0) security.key = value;
        else if (strcmp(a, "--tls-ca") == 0) security.ca = value;
        else if (strcmp(a, "--psk-file") == 0) security.psk_file = value;
        else if (strcmp(a, "--map") == 0) {
            const char *eq = strchr(value, '=');
            if (!eq || eq == value || !eq[1] || value[0] != '/' || eq[1] != '/') {
                fprintf(stderr, "paradice-guestd: --map wants GUEST=BACKEND, two absolute paths: %s\n", value);
                return 2;
            }
            maps[map_count].guest = strndup(value, (size_t)(eq - value));
            maps[map_count++].backend = eq + 1;
        } else { fprintf(stderr, "paradice-guestd: unknown option %s\n", a); usage(); }
    }
    if (!gd.backend) { fprintf(stderr, "paradice-guestd: --backend URL is required\n"); usage(); }

    /* Signals go to the main thread only, which waits for them below. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    gd.control = open(control, O_RDWR | O_CLOEXEC);
    if (gd.control < 0) { gd_log("%s: %m (is the paradice module loaded?)", control); return 1; }
    int version = ioctl(gd.control, PDK_GET_VERSION);
    if (version != PDK_VERSION) {
        gd_log("%s: module interface version %d, this daemon speaks %d", control, version, PDK_VERSION);
        return 1;
    }

    char host[256] = "guest";
    if (!name) { (void)gethostname(host, sizeof host - 1); name = host; }
    gd.connection = pd_conn_new();
    if (!gd.connection) { gd_log("no memory"); return 1; }
    gd.connection->log = log_line;
    gd.connection->on_event = on_event;
    gd.connection->address = gd.backend;
    struct pd_stream stream;
    if (security.plain_tcp && strncmp(gd.backend, "tcp:", 4) == 0)
        gd_log("warning: plain TCP to %s: the connection is neither authenticated nor encrypted", gd.backend);
    if (pd_conn_dial_secure(gd.connection, gd.backend, &security, &stream) != 0) {
        if (gd.connection->why[0]) gd_log("cannot reach the backend at %s: %s", gd.backend, gd.connection->why);
        else gd_log("cannot reach the backend at %s: %m", gd.backend);
        return 1;
    }
    struct pd_hello hello = { PD_MAGIC, PD_VERSION_MAJOR, PD_VERSION_MINOR, PD_CAP_EVENTS | PD_CAP_FD_SLOTS | PD_CAP_INTERRUPT,
                              (uint32_t)getpid(), 0, 0 };
    struct pd_frame reply;
    const char *why = NULL;
    if (pd_conn_start(gd.connection, &stream, &hello, name, strlen(name), &reply, &why) != 0) {
        gd_log("the backend at %s: %s", gd.backend, why);
        return 1;
    }
    gd_log("connected to %s, session %u%s", gd.backend, gd.connection->session,
           gd.connection->capabilities & PD_CAP_INTERRUPT ? "" : " (the backend cannot end a call early: signals wait for the device)");
    gd_status_init(status);
    gd_status_write("starting");
    gd_register_nodes(&reply, maps, map_count);
    pd_frame_release(gd.connection, &reply);
    /* A thread reads the backend for good: readiness events, and the backend's end at any time. */
    pd_conn_start_event_reader(gd.connection);
    if (gd_serve_start() != 0) { gd_log("cannot start serving"); return 1; }
    gd_log("serving %d nodes", gd_node_count());
    gd_status_write("ready");

    for (;;) {
        struct timespec second = { 1, 0 };
        int s = sigtimedwait(&signals, NULL, &second);
        if (s == SIGTERM || s == SIGINT || s == SIGHUP) {
            gd_log("signal %d: leaving", s);
            gd_status_remove();
            pd_conn_goodbye(gd.connection);
            close(gd.control);
            return 0;
        }
        if (!pd_conn_live(gd.connection)) {
            gd.lost = 1;
            gd_log("the backend at %s is gone: the nodes go", gd.backend);
            gd_status_remove();
            close(gd.control);   /* the nodes go when the last call in flight has returned */
            _exit(1);
        }
        if (gd.dirty) gd_status_write("ready");
    }
}
