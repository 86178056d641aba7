/* paradice-guestd: the frontend daemon of a guest kernel's Paradice module. It connects to a backend with
 * the frontend core, registers the backend's devices as nodes of the module (Kernel/paradice) and serves
 * the calls programs make on them (paradice_kernel.h). It knows no device class. */
#ifndef PARADICE_GUESTD_H
#define PARADICE_GUESTD_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include "paradice_frontend.h"
#include "paradice_kernel.h"

/* What the whole daemon shares. */
struct guestd {
    struct pd_connection *connection;
    const char *backend;          /* the URL as given */
    int control;                  /* /dev/paradice */
    atomic_int lost;              /* the backend is gone: every call fails with EIO */
    atomic_ulong served, failed;  /* requests answered with a result >= 0 / with an error */
    atomic_ulong shared_maps;     /* mmaps answered with the device itself (PDK_MMAP_DEVICE) */
    atomic_int dirty;             /* the status file is behind */
};
extern struct guestd gd;

void gd_log(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* A request and what serving it may reach: the caller's memory and descriptors through PDK_ACCESS. */
struct gd_call {
    struct pdk_request request;
};
/* access.c: memory and descriptors of the caller of one request. */
struct pd_memory gd_caller_memory(struct gd_call *call);
struct pd_descriptors gd_caller_descriptors(struct gd_call *call);

/* nodes.c: the backend's devices as module nodes. */
struct gd_mapping { const char *guest, *backend; };   /* both absolute paths */
struct gd_node {
    uint64_t cookie;
    char guest[PDK_MAX_PATH];     /* under /dev */
    char backend[256];
    char class_name[64];
    char subsystem[PDK_MAX_NAME];
    uint32_t major, minor;        /* as the module gave them */
    uint32_t wanted_major, wanted_minor;
    atomic_int open_files;
};
int gd_register_nodes(const struct pd_frame *hello, const struct gd_mapping *maps, int map_count);
struct gd_node *gd_node(uint64_t cookie);   /* NULL: no node of that cookie */
int gd_node_count(void);
struct gd_node *gd_node_at(int index);

/* files.c: the daemon's open files; the daemon's handle is the backend's. */
struct gd_file {
    uint32_t handle;
    uint64_t cookie;              /* the node it is a file of */
    int flags;                    /* O_NONBLOCK | O_APPEND as the backend's file has them */
    struct pd_lent lent;
    int refs;                     /* the table's, and each call's */
    int closed;                   /* released: the table no longer holds it */
    uint64_t watchers[8];         /* module files waiting for a PDK_NOTIFY of this handle */
    int watcher_count;
    short watch_events;           /* the events they asked for since the last event: the backend's watch */
    uint64_t events_heard;        /* the backend's events of this handle so far */
    pthread_mutex_t watch_lock;   /* PD_WATCHes of the handle go one at a time, each naming all of them */
    int shared;                   /* the device's own descriptor (PD_SHARE), -1 not asked, -2 refused */
};
struct gd_file *gd_file_add(uint32_t handle, uint64_t cookie, int flags);
struct gd_file *gd_file_get(uint32_t handle);   /* a reference, or NULL */
void gd_file_put(struct gd_file *f);
struct gd_file *gd_file_remove(uint32_t handle); /* the table's reference, or NULL */
/* What one registration changed, so that a watch the backend answered at once can be taken back. */
struct gd_watch_mark { uint64_t module_file; int added; short events_before; uint64_t heard; };
/* 0 and *all = every event asked since the last event, or -1: no room / no file. `mark` (or NULL) keeps
 * what it changed. */
int gd_file_watch(uint32_t handle, uint64_t module_file, short events, short *all, struct gd_watch_mark *mark);
/* The backend answered the level at once and armed nothing: the registration goes, unless an event of
 * the handle came since (it ended every registration itself). */
void gd_file_unwatch(uint32_t handle, const struct gd_watch_mark *mark);
void gd_file_event(uint32_t handle, short revents);
/* The device's own descriptor for a same-host mmap (asked once, kept with the file), or -1 with errno. */
int gd_file_shared(struct gd_file *f);

/* areas.c: module areas mapped into the daemon (views), which hold the mirrors of device mappings. */
uint64_t gd_area_map(uint64_t area, uint64_t length, uint32_t handle);   /* the view's address, or PD_NO_ADDRESS */
int gd_area_find(uint64_t area, uint64_t *view, uint64_t *length);       /* 0, or -1 */
void gd_area_unmap(uint64_t area);
uint8_t *gd_view_local(void *unused, uint64_t address, size_t length);   /* pd_memory.local over the views */
int gd_area_count(void);

/* interrupts.c: the calls in flight a PDK_OP_INTERRUPT may end early. */
void gd_interruptible_begin(uint64_t request, uint32_t handle, struct pd_interruption *i);
void gd_interruptible_end(uint64_t request, struct pd_interruption *i);
void gd_interrupt(uint64_t request);
void gd_interrupt_file(uint32_t handle);

/* serve.c */
int gd_serve_start(void);     /* the first threads of the pool */
void gd_pool_size(int *total, int *busy);

/* status.c */
void gd_status_init(const char *path);   /* NULL: /run/paradice/guest-<pid>.status */
void gd_status_write(const char *state);
void gd_status_remove(void);
#endif
