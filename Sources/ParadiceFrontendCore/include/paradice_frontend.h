/*
 * The frontend core: the client side of the Paradice protocol, shared by every frontend (the preload
 * inside a program, the Swift client, a daemon serving a guest kernel's device node). It owns the
 * connection (handshake, request/reply matching, events), executes the backend's ioctl plans (NEED
 * rounds, out regions, descriptor slots, mirrored mappings) and checks every reply against the trust
 * model of docs/protocol.md ("Trust"). It knows no device class, and reaches the guest's memory and
 * descriptors only through the interfaces below, so that it runs in the program itself, in another
 * process, or over a kernel module's copies.
 *
 * Every call that fails returns -1 (or PD_NO_ADDRESS) with errno set. Calls that take `int *broken` set
 * it (when not NULL) to 1 when the failure is the backend's breaking the protocol (errno EPROTO, and one
 * line through the connection's log naming the rule), 0 otherwise.
 */
#ifndef PARADICE_FRONTEND_H
#define PARADICE_FRONTEND_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "paradice_wire.h"
#include "paradice_frontend_parse.h"
#include "paradice_tls.h"

/* ---- frames ---- */

/* A frame received from the backend. */
struct pd_frame {
    struct pd_header header;
    uint8_t *body;            /* malloc'ed, header.length bytes */
    int descriptor;           /* passed with the frame (PD_SHARE), or -1 */
};

/* A growable byte buffer holding a frame being built; room for the header is kept in front. */
struct pd_buffer {
    uint8_t *data;
    size_t length, capacity;
};
void pd_buffer_init(struct pd_buffer *b, size_t capacity);
void pd_buffer_append(struct pd_buffer *b, const void *bytes, size_t n);
void pd_buffer_pad(struct pd_buffer *b);
void pd_buffer_free(struct pd_buffer *b);

/* For PD_REPLY: the result, or -1 with errno set; data and length: what follows pd_reply (NULL and 0 when
 * the frame is no reply). */
int64_t pd_reply_result(const struct pd_frame *f, const uint8_t **data, size_t *length);
/* 1 when the frame carries no result: not a PD_REPLY, shorter than pd_reply, or a negative result without
 * an errno. */
int pd_reply_broken(const struct pd_frame *f);

/* ---- the guest's memory and descriptors ---- */

#define PD_NO_ADDRESS UINT64_MAX

/* How the core reaches the memory of the program whose calls it forwards. */
struct pd_memory {
    void *context;
    /* Copy `length` bytes at guest `address`: 0, or -1 (errno set) when any of them cannot be reached:
       never part of them. The core fails the guest's call with EFAULT then. */
    int (*read)(void *context, uint64_t address, void *into, size_t length);
    int (*write)(void *context, uint64_t address, const void *from, size_t length);
    /* Optional: the mirror bytes at [address, address + length) as this process's memory (a frontend
       inside the program: the program's own; a daemon: its view of a mirror), NULL when they are none. When
       given, the core reaches mirrors only through it and argument memory only through read/write, so that
       an argument address can never reach a mirror, nor a mirror address the caller's memory (a daemon's
       views and its caller's memory are different address spaces). */
    uint8_t *(*local)(void *context, uint64_t address, size_t length);
    /* Optional (mmap): new private, writable guest memory for a mirror, at `hint` when `fixed`; its guest
       address, or PD_NO_ADDRESS with errno. NULL: this frontend cannot mirror (ENODEV). */
    uint64_t (*map)(void *context, uint64_t hint, uint64_t length, int fixed);
    void (*unmap)(void *context, uint64_t address, uint64_t length);
};

/* The memory of the calling process itself (the preload): process_vm_readv/writev on its own pid, so
   that a bad pointer is EFAULT, not a crash. */
extern const struct pd_memory pd_self_memory;
/* The memory of another process: its pid in *context. A pid names whichever process holds it now, so it
   must be one that cannot be reused during a call: the caller's child, reaped only after its last call (a
   child that exits meanwhile is a zombie: its memory is gone, ESRCH, and the call EFAULT). A transfer that
   falls short (a page the process has not mapped) is EFAULT, one that wraps around memory EFAULT unsent.
   No mirrors (mmap is ENODEV): the core cannot map memory into another process. */
int pd_process_read(void *pid, uint64_t address, void *into, size_t length);
int pd_process_write(void *pid, uint64_t address, const void *from, size_t length);
#define PD_PROCESS_MEMORY(pid_pointer) \
    ((struct pd_memory){ (pid_pointer), pd_process_read, pd_process_write, NULL, NULL, NULL })

/* What the guest's descriptor numbers stand for, in ioctl arguments (slots) and results. */
struct pd_descriptors {
    void *context;
    /* 1: the guest's descriptor numbers are the backend's handles (the Swift client): nothing is
       translated, every ioctl goes out PD_IOCTL_TRANSLATED, and the callbacks are not used. */
    int numbers_are_handles;
    /* The backend handle descriptor `fd` of the guest names: 0, or -1 when it names no forwarded file. */
    int (*handle_for)(void *context, int64_t fd, uint32_t *handle);
    /* A guest descriptor for a file the backend created (an ioctl's result or slot): >= 0, or -1 with
       errno. The handle is the callback's either way (on failure it closes it remotely). */
    int64_t (*adopt)(void *context, uint32_t handle);
};

/* Memory behind pointers the program handed a file's device (a buffer in user memory the driver keeps): a later
 * reply on the file may fill it. The most recently handed ones are kept. Zeroed storage is an empty
 * record; pd_lent_destroy frees nothing but its lock. */
#define PD_LENT_SPANS 64
struct pd_lent {
    pthread_mutex_t lock;
    struct { uint64_t address, length, used; } spans[PD_LENT_SPANS];
    int count;
    uint64_t clock;
};
void pd_lent_init(struct pd_lent *l);
void pd_lent_destroy(struct pd_lent *l);
void pd_lent_add(struct pd_lent *l, uint64_t address, uint64_t length);
size_t pd_lent_spans(struct pd_lent *l, struct pd_span *out, size_t max);

/* ---- byte streams ---- */

/* A connected, ordered, reliable byte stream under the frames: a socket, or a shared-memory ring. The
 * connection serializes its use: sends never overlap, receives come from one thread at a time, close
 * comes once; shutdown may come at any time from any thread. */
struct pd_stream;
struct pd_stream_ops {
    /* Sends some of the n bytes (at least one): how many, or -1 with errno (EINTR: try again). */
    long (*send)(struct pd_stream *s, const void *bytes, size_t n);
    /* Receives up to n bytes: how many, 0 at the end of the stream, or -1 with errno (EINTR: try again).
     * When `descriptor` is not NULL it is set to a descriptor that came with these bytes, or -1. */
    long (*recv)(struct pd_stream *s, void *bytes, size_t n, int *descriptor);
    /* Ends the stream both ways and wakes a thread blocked in send or recv; its resources stay. */
    void (*shutdown)(struct pd_stream *s);
    /* Releases the stream's resources without a word to the peer: a forked child drops its copy of the
     * parent's stream this way and the parent's stream goes on. */
    void (*close)(struct pd_stream *s);
    /* Optional: the stream's connection made anew (what was unsent or unread on the old one is gone); 0, or
     * -1 with errno. A transport that can lose a connection's first frame has it (a virtio-serial port's
     * chardev socket: docs/transports.md, "serial"): pd_conn_start then says PD_HELLO again on a new
     * connection when the last got no answer for PD_HELLO_SILENCE_MS. */
    int (*redial)(struct pd_stream *s);
};
struct pd_stream {
    const struct pd_stream_ops *ops;   /* NULL: no stream */
    int fd;                            /* the socket under the stream (-1: none) */
    void *state;                       /* the transport's own (a socket's: what its receives learned of spinning) */
};
#define PD_STREAM_NONE { .ops = NULL, .fd = -1, .state = NULL }
#define PD_HELLO_SILENCE_MS 2000
#define PD_HELLO_ATTEMPTS 5   /* the last waits as long as the backend takes */

/* A stream over the connected socket `fd`, which it takes. */
void pd_stream_socket(struct pd_stream *s, int fd);
/* A stream over a Xen vchan: `rest` is "DOMID:XENSTORE-PATH" of the backend's server. 0, or -1 with errno
 * and *why. */
int pd_stream_vchan(struct pd_stream *s, const char *rest, const char **why);
/* Why a TLS stream's last read failed in TLS itself (the backend's alert), or NULL (none, or no TLS stream). */
const char *pd_stream_tls_failure(const struct pd_stream *s);
/* A stream over the shared-memory rings a backend offers on the connected unix socket `setup_fd`, which
 * it takes (and keeps, for liveness and descriptors). 0, or -1 with errno. */
int pd_stream_ring(struct pd_stream *s, int setup_fd);

/* ---- the connection ---- */

struct pd_waiter;

/* Per ioctl command: the regions the backend asked for last time, sent ahead next time. */
#define PD_SHAPES 256
#define PD_SHAPE_PARTS 8
struct pd_shape {
    unsigned long command;
    int parts;
    uint64_t offset[PD_SHAPE_PARTS];
    uint32_t length[PD_SHAPE_PARTS];
    int via[PD_SHAPE_PARTS];   /* -1: at argument + offset; else the offset of the pointer in the argument */
    int out[PD_SHAPE_PARTS];   /* named as written (PD_REGION_OUT), not sent */
    int mirrors;               /* the backend asked for mapped bytes: send the file's changed pages ahead */
    /* Descriptors the backend asked to have translated, at argument + slot_offset: translated ahead next time
       (PD_IOCTL_SLOTS_AHEAD), so a call that passes a descriptor takes one round trip, not two. */
    int slots;
    uint64_t slot_offset[PD_SHAPE_PARTS];
    uint32_t slot_width[PD_SHAPE_PARTS];
    int argument_fd;           /* the argument itself is a descriptor */
};

/* Mirrors of device mappings a backend on another machine holds. */
#define PD_MIRRORS 256
#define PD_MAX_FILE_MIRRORS 256
struct pd_mirror {
    uint64_t address;         /* guest address of the mirror (0: free) */
    uint64_t length;
    uint32_t id;
    uint32_t handle;          /* the file it maps */
    pid_t owner;
    uint8_t *shadow;          /* the device's bytes as last sent or received */
    int writeback;            /* MAP_SHARED and writable: changes reach the device at munmap */
};

/* One connection to a backend, shared by the frontend's threads: the first thread waiting for a reply
 * reads the socket for all of them (a lone caller never changes threads); once a file is watched, a
 * thread of the core reads it for good. Statically: PD_CONNECTION_INIT; dynamically: pd_conn_new. */
struct pd_connection {
    pthread_mutex_t lock;      /* guards everything below but the tables */
    pthread_cond_t cond;
    pthread_mutex_t send_lock;
    pthread_mutex_t shapes_lock;
    pthread_mutex_t mirrors_lock;
    struct pd_stream stream;   /* ops NULL: not connected */
    pid_t owner;               /* the process that made it: a forked child's copy is not its to use */
    int dead;
    int reading;
    uint32_t next;
    struct pd_waiter *waiting;
    int leaving;               /* PD_BYE sent: the connection's end is no loss */
    int event_reader;
    int told_stray;
    int refs;                  /* pd_conn_new's, and the event reader's */
    uint32_t session, token;   /* from the handshake */
    uint32_t capabilities;     /* the backend's, from the handshake (PD_CAP_*) */
    /* What the frontend does with what comes unasked; each may be NULL. */
    void *context;
    void (*on_event)(void *context, uint32_t handle, short revents);
    void (*log)(void *context, const char *line);                 /* one line, no newline */
    void (*release)(void *context);                               /* the connection is freed */
    const char *address;       /* the backend's address as dialed, for log lines (may be NULL; not owned) */
    int plain_tcp;             /* dialed plain TCP on purpose (pd_conn_dial_secure) */
    char why[320];             /* a failed dial's or handshake's reason, when it is more than an errno */
    struct pd_shape shapes[PD_SHAPES];
    struct pd_mirror mirrors[PD_MIRRORS];
};
#define PD_CONNECTION_INIT { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, \
    .send_lock = PTHREAD_MUTEX_INITIALIZER, .shapes_lock = PTHREAD_MUTEX_INITIALIZER, \
    .mirrors_lock = PTHREAD_MUTEX_INITIALIZER, .stream = PD_STREAM_NONE, .next = 1, .refs = 1 }

struct pd_connection *pd_conn_new(void);
/* Drops a reference; the last closes the stream and frees the connection. */
void pd_conn_release(struct pd_connection *c);
/* A stream to `url` (unix:PATH, unix://PATH, tcp:HOST:PORT, tcp://HOST:PORT/, shm:PATH) in *stream: 0, or -1. */
int pd_conn_dial(const char *url, struct pd_stream *stream);
/* How a frontend secures TCP: certificate, key and CA, or a PSK file (paradice_tls.h), or plain TCP when
 * asked for. Unix sockets need none. */
struct pd_security {
    const char *cert, *key, *ca, *psk_file;
    int plain_tcp;
};
/* From the environment the CLI sets for the preload: PARADICE_TLS_CERT, PARADICE_TLS_KEY, PARADICE_TLS_CA,
 * PARADICE_PSK_FILE, PARADICE_PLAIN_TCP=1. */
struct pd_security pd_security_from_environment(void);
/* pd_conn_dial, then on TCP the TLS handshake `s` asks for: the stream is then a TLS one. 0, or -1 with
 * errno (EACCES: no TLS settings and no plain TCP asked for, or the TLS handshake failed) and c->why saying
 * why. */
int pd_conn_dial_secure(struct pd_connection *c, const char *url, const struct pd_security *s, struct pd_stream *stream);
/* Shakes hands over *stream (taken either way): pd_hello with `name` after it. On success the connection
 * uses the stream, and *reply holds the backend's answer (pd_hello_reply and its devices, checked; free it). */
int pd_conn_start(struct pd_connection *c, const struct pd_stream *stream, const struct pd_hello *hello, const char *name,
                  size_t name_length, struct pd_frame *reply, const char **why);
/* 1 when the connection's stream was made by another process (this one is a forked child). */
int pd_conn_inherited(struct pd_connection *c);
/* 1 while the connection is this process's and alive. */
int pd_conn_live(struct pd_connection *c);
/* The handle table this process's connection names (0: none). */
uint32_t pd_conn_token(struct pd_connection *c);
/* The process that made the live connection (0: none) and its table's token, whoever asks. */
pid_t pd_conn_owner(struct pd_connection *c, uint32_t *token);
/* Inherited across fork: forgets the parent's connection (closing the child's copy of its stream) and
 * hands back what the child needs to join its session. */
void pd_conn_forget(struct pd_connection *c, uint32_t *session, uint32_t *token);
/* Sends a request (the buffer holds its body after room for the header) and waits for its answer. */
int pd_conn_call(struct pd_connection *c, uint16_t op, uint16_t flags, uint32_t handle, struct pd_buffer *request,
                 struct pd_frame *reply);
/* The same for one request of a call another thread may interrupt (pd_interrupt); `i` may be NULL. */
struct pd_interruption;
int pd_conn_call_interruptible(struct pd_connection *c, uint16_t op, uint16_t flags, uint32_t handle,
                               struct pd_buffer *request, struct pd_frame *reply, struct pd_interruption *i);
/* Frees a reply's body and closes a descriptor it carried that its receiver did not take. */
void pd_frame_release(struct pd_connection *c, struct pd_frame *f);
/* From now on a thread reads the socket for good, delivering events as they come. */
void pd_conn_start_event_reader(struct pd_connection *c);
/* PD_BYE and its answer (the backend drops this frontend's references first), then the end. */
void pd_conn_goodbye(struct pd_connection *c);
/* Shuts the stream down: every waiting call fails with EIO, the event reader ends. */
void pd_conn_shutdown(struct pd_connection *c);
void pd_conn_log(struct pd_connection *c, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* ---- interrupting a call ---- */

/* A call one thread serves while another may learn that its caller got a signal (a daemon serving a guest
 * kernel's device node: the module reports the signal, the call's thread waits for the backend). The
 * signal gets its local meaning: a call blocked in the driver ends with -1/EINTR, as the driver's wait
 * returns -ERESTARTSYS; one that finished first keeps the device's answer. Zeroed storage (or
 * pd_interruption_init) is a call not yet interrupted; one per served call, named in its pd_target: the
 * call's function (pd_target_read/write/simple, pd_file_ioctl) ends its use as it returns. */
struct pd_interruption {
    pthread_mutex_t lock;      /* guards what follows */
    uint32_t request;          /* the call's request in flight now (0: none, as between two NEED rounds) */
    int pending;               /* interrupted between two requests: the next one is interrupted as it goes */
    int ended;                 /* the call returned: an interrupt does nothing */
};
void pd_interruption_init(struct pd_interruption *i);
void pd_interruption_destroy(struct pd_interruption *i);
/* From any thread: ends the call that uses `i` early if it blocks in the backend (its result is then
 * -1/EINTR, or whatever the device answered if it finished first). An interrupt that comes between two
 * requests of the same call (NEED rounds), or before its first, applies to the next one; one that comes
 * after the call ended does nothing. It never waits for the backend (PD_INTERRUPT has no reply), and does
 * nothing when the backend does not grant PD_CAP_INTERRUPT (the call then ends when the device answers). */
void pd_interrupt(struct pd_connection *c, struct pd_interruption *i);
/* The call that used `i` is over: later interrupts do nothing. The functions above do it as they return;
 * a frontend making its own requests with pd_conn_call_interruptible calls it when its call is done. */
void pd_interruption_end(struct pd_interruption *i);

/* ---- operations on a remote file ---- */

/* One forwarded file as a call sees it. */
struct pd_target {
    struct pd_connection *connection;
    uint32_t handle;
    struct pd_lent *lent;                        /* the file's lent memory (NULL: none kept) */
    const struct pd_memory *memory;
    const struct pd_descriptors *descriptors;
    struct pd_interruption *interruption;        /* what ends the call early (NULL: nothing does) */
};

/* PD_SHARE, once per file: a backend on this machine that shares mappings hands over the device's own
 * open file; any other answers ENODEV (TCP, or no --share-mappings), and is not asked again. *slot, under
 * `lock`, is -1 (not asked yet), -2 (refused) or that descriptor. The descriptor, or -1 with errno. */
int pd_file_shared(struct pd_connection *c, uint32_t handle, int *slot, pthread_mutex_t *lock);
/* PD_OPEN: the new handle (> 0) and its pd_stat, or -1. */
int64_t pd_file_open(struct pd_connection *c, const char *path, size_t path_length, int flags, uint32_t mode,
                     struct pd_stat *stat, int *broken);
/* PD_READ/PD_PREAD into `into` (this process's memory): bytes read, or -1. */
int64_t pd_file_read(struct pd_connection *c, uint32_t handle, void *into, size_t count, int positional,
                     int64_t offset, int *broken);
/* PD_WRITE/PD_PWRITE from `from` (this process's memory): bytes written, or -1. */
int64_t pd_file_write(struct pd_connection *c, uint32_t handle, const void *from, size_t count, int positional,
                      int64_t offset, int *broken);
/* The same with the bytes in the guest's memory, at `address` through t->memory (a frontend serving
 * another process), interruptible by t->interruption. At most PD_MAX_CALL_BYTES go in one call (a
 * shorter count, as a driver may answer). A read whose bytes the guest's memory cannot take fails with EFAULT (they are consumed, as when a
 * driver's copy_to_user fails); a write from memory the guest cannot read fails with EFAULT unsent. */
int64_t pd_target_read(const struct pd_target *t, uint64_t address, size_t count, int positional, int64_t offset,
                       int *broken);
int64_t pd_target_write(const struct pd_target *t, uint64_t address, size_t count, int positional, int64_t offset,
                        int *broken);
/* Any request whose answer is a result and, when `out`, exactly `out_length` bytes of data. */
int64_t pd_file_simple(struct pd_connection *c, uint32_t handle, uint16_t op, const void *body, size_t length,
                       void *out, size_t out_length, int *broken);
/* The same on t's file, interruptible by t->interruption (PD_POLL with a timeout, PD_FSYNC, ...). */
int64_t pd_target_simple(const struct pd_target *t, uint16_t op, const void *body, size_t length, void *out,
                         size_t out_length, int *broken);
/* The level of `level` on the file now and, when none of it (nor POLLERR/POLLHUP/POLLNVAL) holds, a
 * one-shot watch for `events`, armed before the answer, so that whatever comes after the look arrives as
 * a PD_EVENT: the revents (> 0), 0 when the watch is armed, or -1. A level that holds arms nothing: the
 * file's watch stays as it was. One round trip with a backend that grants PD_CAP_WATCH_LEVEL; PD_POLL
 * (timeout 0), then PD_WATCH when not ready, otherwise. */
int64_t pd_file_watch_level(struct pd_connection *c, uint32_t handle, short events, short level, int *broken);
/* PD_POLL (timeout_ms as poll's) that, with a backend granting PD_CAP_READ_AHEAD and a file whose
 * read_unit (pd_stat) is not 0, also reads up to read_max bytes when the file is readable (PD_READ_AHEAD):
 * the revents (0 at the timeout) or -1, and *ahead (malloc'd, *ahead_length bytes, a whole number of
 * read units) or NULL. The bytes are the file's next ones: the caller serves its reads from them first. */
int64_t pd_file_poll_read(struct pd_connection *c, uint32_t handle, short events, int timeout_ms, uint32_t read_max,
                          uint32_t read_unit, uint8_t **ahead, size_t *ahead_length, int *broken);
/* ioctl through the backend's memory plan: the result, or -1. */
int64_t pd_file_ioctl(const struct pd_target *t, uint32_t command, uint64_t argument, int *broken);
/* mmap as a mirror: PD_MMAP, then guest memory from t->memory->map filled with what the device holds;
 * its guest address, or PD_NO_ADDRESS. */
uint64_t pd_file_map(const struct pd_target *t, uint64_t hint, uint64_t length, int protection, int flags,
                     int64_t offset);
/* munmap of a mirror: 1 when `address` starts one (its backend mapping is released, a writable shared
 * one's changes written back first), 0 otherwise. The caller unmaps the memory itself. */
int pd_file_unmap(struct pd_connection *c, const struct pd_memory *memory, uint64_t address);

/* The mirrors this process holds of file `handle`. */
size_t pd_mirror_spans(struct pd_connection *c, uint32_t handle, struct pd_mirror_span *out, size_t max);
/* Appends the changed pages of a range as pd_mapping_range + bytes entries; returns their number. */
uint32_t pd_mirror_changes(struct pd_connection *c, const struct pd_memory *memory, struct pd_buffer *b,
                           uint32_t handle, uint32_t id, uint64_t offset, uint64_t length);
/* The same for every mirror of a file, whole. */
uint32_t pd_mirror_file_changes(struct pd_connection *c, const struct pd_memory *memory, struct pd_buffer *b,
                                uint32_t handle);
/* Copies `count` checked pd_mapping_range + bytes entries into the file's mirrors. */
void pd_mirror_receive(struct pd_connection *c, const struct pd_memory *memory, uint32_t handle, const uint8_t *p,
                       uint32_t count);
#endif
