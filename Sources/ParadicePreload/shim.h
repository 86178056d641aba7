/*
 * The preload frontend's internals. It knows no device class: it forwards file operations on the paths
 * the backend exports and, for ioctls, gathers and scatters exactly the guest memory the backend's plan
 * names (PD_NEED / PD_REPLY regions).
 */
#ifndef PARADICE_SHIM_H
#define PARADICE_SHIM_H
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include "paradice_frontend.h"

/* The connection to the backend, shared by the process's threads (connection.c). */
extern struct pd_connection pd_conn;
int pd_connect(void);                       /* 0, or -1 with errno */
uint32_t pd_session_token(void);           /* this process's handle table (0: not connected) */
int pd_call(uint16_t op, uint16_t flags, uint32_t handle, struct pd_buffer *request, struct pd_frame *reply);
int64_t pd_call_without_body(uint16_t op, uint32_t handle);   /* the reply's result, or -1 with errno */
void pd_frame_free(struct pd_frame *f);

/* A forwarded file, shared by the local descriptors that dup'ed it and by the calls using it. Every
 * field that changes after the file is installed is guarded by the files lock (files.c). */
struct pd_file {
    uint32_t handle;
    int refs;                 /* one per descriptor naming it, one per call using it (pd_get/pd_put) */
    int descriptors;          /* the descriptors naming it */
    int flags;                /* the open flags the program gave (O_ACCMODE, O_NONBLOCK, O_APPEND) */
    uint32_t mode;            /* st_mode and st_rdev on the backend */
    uint64_t rdev;
    uint32_t owner;           /* the token of the handle table the handle belongs to (shared after fork) */
    int placeholder;          /* one local descriptor of it: events make it readable for epoll (-1: none left) */
    short watch;              /* events an epoll set waits for (0: none) */
    short revents;            /* what the backend last said is ready (for epoll_wait's answer) */
    short polling;            /* events a poll over mixed descriptors waits for (0: none) */
    int shared;               /* the device's own descriptor, for mmap on a same-host backend, or -1
                                 (-2: the backend said it keeps it) */
    struct pd_file *next_by_handle;   /* the handle index's chain */
    int indexed;
    struct pd_lent lent;      /* memory the program handed the device through it (the core fills it) */
    uint32_t read_unit;       /* pd_stat.read_unit: how its reads may be split (0: no read-ahead) */
    uint8_t *ahead;           /* bytes a poll read ahead, the file's next ones: reads take them first */
    size_t ahead_length, ahead_taken;
    long ahead_at;            /* when they came (CLOCK_MONOTONIC, ns) */
    int reads_in_flight;      /* forwarded reads not yet answered */
    int ahead_pending;        /* a poll that may read ahead is in flight: reads wait for its answer */
    int forked;               /* held across a fork: another process may read it, so nothing is read ahead */
    int described;            /* an exec's description names it already (pd_describe_inheritance) */
};

/* The file a descriptor names, held until pd_put (NULL: not forwarded). A close racing the call only
 * drops the descriptor's reference; the last put closes the file remotely and frees it. */
struct pd_file *pd_get(int fd);
void pd_put(struct pd_file *f);
static inline void pd_put_scoped(struct pd_file **f) { if (*f) pd_put(*f); }
/* A descriptor's file, held for the enclosing scope. */
#define PD_HOLD(name, fd) struct pd_file *name __attribute__((cleanup(pd_put_scoped))) = pd_get(fd)
int pd_forwarded(int fd);                  /* 1 when fd names a forwarded file */
int pd_usable(struct pd_file *f);          /* 1, or 0 with errno (EIO: a session this process cannot join) */
int pd_install(struct pd_file *f, int cloexec);   /* a new local descriptor for f, or -1 */
int pd_adopt_handle(uint32_t handle, int flags);  /* a new local descriptor for a handle the backend made */
void pd_bind(int fd, struct pd_file *f);   /* fd now also names f (dup) */
/* close(fd) of a forwarded descriptor: the local close and the table agree under the files lock; returns
 * the remote close's result when this was the file's last reference. */
int pd_close_descriptor(int fd);
/* dup2/dup3 with the table kept in step (the target may have been forwarded). */
int pd_dup_onto(int fd, int target, int flags, int three);
int pd_handle_for_fd(int fd, uint32_t *handle);
int pd_file_flags(struct pd_file *f);
int pd_has_read_ahead(struct pd_file *f);   /* 1 when a poll read bytes its next reads take */
int pd_has_files(void);                    /* 1 when some descriptor names a forwarded file */
uint32_t pd_fork_ticket(void);             /* the parent, as it forks: the child's PD_FORK ticket, or 0 */
void pd_claim_fork_ticket(uint32_t ticket);   /* the child, just forked: joins with it */
/* As the process execs: a ticket for the new program (0: none) and the table's token. A vfork child asks on
 * its parent's connection. */
uint32_t pd_exec_ticket(uint32_t *token);
int pd_in_parents_memory(void);              /* 1 in a vfork child, until it execs */
void pd_return_ticket(uint32_t ticket);      /* the fork or exec failed: the backend drops the ticket */
int pd_claim_exec_ticket(uint32_t ticket, uint32_t token);   /* the new program: 1 when its files are its own */
/* As the process execs: the files the new program keeps, for PARADICE_INHERIT (see files.c); the length
 * the description needs (0: no forwarded descriptor survives the exec). */
size_t pd_describe_inheritance(char *out, size_t size, int parents_memory, int *ahead_memory);
size_t pd_inheritance_size(void);
void pd_adopt_inheritance(void);             /* the new program, as it starts */

/* Readiness for epoll: the backend's events mirrored into the placeholder eventfd. */
void pd_start_event_reader(void);
void pd_event(uint32_t handle, short revents);
void pd_rearm(struct pd_file *f);          /* after the program used the file: clear, and watch again */
int pd_watch_once(struct pd_file *f, short events);   /* a poll's wait: the next event makes the placeholder readable */
short pd_end_poll(struct pd_file *f);      /* the poll's wait is over: what the last event said */
void pd_set_watch(struct pd_file *f, short events);   /* an epoll set's interest (0: none) */
short pd_revents(struct pd_file *f);
int pd_placeholder(struct pd_file *f);

/* Mirrors of mappings a remote backend holds (kept by the core). */
void *pd_mirror_map(struct pd_file *f, void *address, size_t length, int protection, int flags, off_t offset,
                    void *(*real_mmap)(void *, size_t, int, int, int, off_t));
int pd_mirror_unmap(void *address);   /* 1 when address started a mirror */

/* Paths. */
int pd_forwarded_path(const char *path, char *backend_path, size_t size);   /* 1 when forwarded */
int pd_device_directory(const char *path, char *backend_path, size_t size); /* 1: a folder of them the host lacks */

/* Operations. */
int pd_open(const char *path, int flags, mode_t mode);
long pd_ioctl(struct pd_file *f, unsigned long command, unsigned long argument);
ssize_t pd_read(struct pd_file *f, void *buffer, size_t count, int positional, off_t offset);
ssize_t pd_write(struct pd_file *f, const void *buffer, size_t count, int positional, off_t offset);
int pd_poll_one(struct pd_file *f, short events, int timeout_ms, short *revents);
off_t pd_lseek(struct pd_file *f, off_t offset, int whence);
int pd_setfl(struct pd_file *f, int flags);
int pd_fstat(struct pd_file *f, struct stat *st);
int pd_shared_descriptor(struct pd_file *f);   /* for mmap: -1 with errno when the backend keeps it */

/* The real libc functions. */
struct pd_real {
    int (*open)(const char *, int, ...);
    int (*openat)(int, const char *, int, ...);
    int (*close)(int);
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
    int (*ioctl)(int, unsigned long, ...);
    int (*fcntl)(int, int, ...);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*poll)(void *, unsigned long, int);
};
extern struct pd_real pd_real;
void pd_resolve_real(void);

void pd_log(const char *format, ...);
#endif
