/* Module areas: the pages the module maps into a caller for its mmap of a node. The daemon maps each
 * area from the control file too (its view) and keeps the device's mirror there (the core's mirror.c),
 * so that what the device holds reaches the caller's mapping, and the caller's stores the device, at the
 * class's sync points. A view address is the daemon's, never the caller's: the core reaches it only
 * through `local`, which accepts nothing outside the views. */
#define _GNU_SOURCE
#include "guestd.h"
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#define MAX_AREAS 1024
struct view { uint64_t area, address, length; uint32_t handle; };
static struct view views[MAX_AREAS];
static int view_count;
static pthread_mutex_t views_lock = PTHREAD_MUTEX_INITIALIZER;   /* taken inside the core's mirrors lock */

uint64_t gd_area_map(uint64_t area, uint64_t length, uint32_t handle) {
    if (length == 0 || length > (1ull << 40)) { errno = EINVAL; return PD_NO_ADDRESS; }
    pthread_mutex_lock(&views_lock);
    int full = view_count == MAX_AREAS;
    pthread_mutex_unlock(&views_lock);
    if (full) { errno = ENOMEM; return PD_NO_ADDRESS; }
    void *at = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, gd.control, (off_t)area);
    if (at == MAP_FAILED) return PD_NO_ADDRESS;
    pthread_mutex_lock(&views_lock);
    if (view_count == MAX_AREAS) {
        pthread_mutex_unlock(&views_lock);
        munmap(at, length);
        errno = ENOMEM;
        return PD_NO_ADDRESS;
    }
    views[view_count++] = (struct view){ area, (uint64_t)(uintptr_t)at, length, handle };
    pthread_mutex_unlock(&views_lock);
    return (uint64_t)(uintptr_t)at;
}

int gd_area_find(uint64_t area, uint64_t *view, uint64_t *length) {
    int r = -1;
    pthread_mutex_lock(&views_lock);
    for (int i = 0; i < view_count; i++)
        if (views[i].area == area) { *view = views[i].address; *length = views[i].length; r = 0; break; }
    pthread_mutex_unlock(&views_lock);
    return r;
}

/* After the core let go of its mirror there (pd_file_unmap, or a failed pd_file_map). */
void gd_area_unmap(uint64_t area) {
    struct view gone = { 0 };
    pthread_mutex_lock(&views_lock);
    for (int i = 0; i < view_count; i++) {
        if (views[i].area != area) continue;
        gone = views[i];
        views[i] = views[--view_count];
        break;
    }
    pthread_mutex_unlock(&views_lock);
    if (gone.address) munmap((void *)(uintptr_t)gone.address, gone.length);
}

uint8_t *gd_view_local(void *unused, uint64_t address, size_t length) {
    (void)unused;
    uint8_t *here = NULL;
    pthread_mutex_lock(&views_lock);
    for (int i = 0; i < view_count && !here; i++) {
        struct view *v = &views[i];
        if (address >= v->address && address - v->address <= v->length && length <= v->length - (address - v->address))
            here = (uint8_t *)(uintptr_t)address;
    }
    pthread_mutex_unlock(&views_lock);
    return here;
}

int gd_area_count(void) {
    pthread_mutex_lock(&views_lock);
    int n = view_count;
    pthread_mutex_unlock(&views_lock);
    return n;
}
