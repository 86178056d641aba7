/*
 * paradice_wire.h — the Paradice wire protocol. This header is the one definition of the frame
 * layout: the Swift engine and client import it, and C frontends include it. All integers are
 * little-endian; every structure is naturally aligned and padded to 8 bytes.
 *
 * A frame is a pd_header followed by `length` bytes of body. Requests flow frontend → backend and
 * carry a `request` id the reply echoes; the backend may also push PD_EVENT frames (request 0).
 */
#ifndef PARADICE_WIRE_H
#define PARADICE_WIRE_H
#include <stdint.h>

#define PD_MAGIC          0x45434450u   /* "PDCE" */
#define PD_VERSION_MAJOR  1
#define PD_VERSION_MINOR  0
#define PD_MAX_FRAME      (80u << 20)   /* larger frames are a protocol error */

enum pd_op {
    PD_HELLO   = 1,   /* pd_hello + guest name                        → pd_hello_reply + devices */
    PD_OPEN    = 2,   /* pd_open + path                               → result = handle, pd_stat */
    PD_CLOSE   = 3,   /* (handle)                                     → result */
    PD_READ    = 4,   /* pd_io                                        → result = bytes, then data */
    PD_WRITE   = 5,   /* pd_io + data                                 → result */
    PD_IOCTL   = 6,   /* pd_ioctl + regions                           → pd_ioctl_done, or PD_NEED */
    PD_POLL    = 7,   /* pd_poll                                      → result = revents */
    PD_LLSEEK  = 8,   /* pd_llseek                                    → result = offset */
    PD_FSYNC   = 9,   /* (handle)                                     → result */
    PD_FASYNC  = 10,  /* pd_flags (on/off)                            → result */
    PD_SETFL   = 11,  /* pd_flags (O_NONBLOCK, O_APPEND, …)           → result */
    PD_WATCH   = 12,  /* pd_poll (events; timeout ignored)            → result 0; later one PD_EVENT. With
                                                                         PD_WATCH_LEVEL: pd_watch → result =
                                                                         the level's revents, or 0 and armed */
    PD_PREAD   = 13,  /* pd_io                                        → like PD_READ */
    PD_PWRITE  = 14,  /* pd_io + data                                 → like PD_WRITE */
    PD_FSTAT   = 15,  /* (handle)                                     → pd_stat */
    PD_MMAP    = 17,  /* pd_mmap                                      → result = a mapping id [+ pd_mapping_count,
                                                                         the device's bytes]; the frontend
                                                                         keeps a mirror, synced at the points
                                                                         the class's plug-in names */
    PD_MUNMAP  = 18,  /* pd_munmap [+ pd_mapping_count, changed bytes] → result */
    PD_READLINK = 19, /* path, inside an exported tree                → result = length, then the target */
    PD_LISTDIR = 20,  /* path, inside an exported tree or a folder    → result = count, then pd_dirent × n
                                                                         of exported nodes */
    PD_BYE     = 21,  /* (none), last of a connection                 → result 0 once the session's references
                                                                         are dropped, as a process's exit closes
                                                                         its descriptors before its parent's wait */
    PD_SHARE   = 16,  /* (handle), unix transport only                → result 0; the backend's descriptor
                                                                         travels with the reply (SCM_RIGHTS) */
    PD_INTERRUPT = 22, /* pd_interrupt_request: end that request early → no reply of its own; the request is
                                                                         answered EINTR if it waits in the
                                                                         driver or has not started (PD_CAP_INTERRUPT) */
    PD_FOCUS   = 23,  /* guest name (handle 0), a control request     → result 0 once that guest is the foreground
                                                                         of every `foreground` export; EPERM when
                                                                         the policy does not let the sender, ENOENT
                                                                         when no session is that guest */
    PD_FORK    = 24,  /* (handle 0), as the guest process forks       → result = a ticket: a session id the
                          or execs                                       child names in pd_hello.join_session
                                                                         (with the table's token) to hold what
                                                                         the parent held at the fork, whatever
                                                                         the parent closes or opens after it;
                          (handle = a ticket): the fork or exec failed → result 0, its references dropped
                                                                         (EINVAL: not a ticket of this table) */

    PD_REPLY   = 0x80, /* pd_reply + op-specific data */
    PD_NEED    = 0x81, /* pd_need: an ioctl needs more guest memory; resend PD_IOCTL with it */
    PD_EVENT   = 0x82, /* pd_event: readiness of a watched handle */
};

struct pd_header {
    uint32_t length;     /* body bytes after this header */
    uint16_t op;         /* enum pd_op */
    uint16_t flags;
    uint32_t request;    /* frontend's id, echoed; 0 for events */
    uint32_t handle;     /* the remote file the operation is on */
};

/* Capabilities exchanged in the handshake. */
#define PD_CAP_EVENTS     0x1u   /* PD_WATCH / PD_EVENT */
#define PD_CAP_FD_SLOTS   0x2u   /* the frontend translates descriptors named in PD_NEED */
#define PD_CAP_INTERRUPT  0x4u   /* the backend ends a request early on PD_INTERRUPT (a signal in the guest) */
#define PD_CAP_WATCH_LEVEL 0x8u  /* PD_WATCH answers PD_WATCH_LEVEL: the level now, the watch only if none holds */
#define PD_CAP_SLOTS_AHEAD 0x10u /* PD_IOCTL may carry PD_IOCTL_SLOTS_AHEAD: descriptors translated without a PD_NEED round */
#define PD_CAP_READ_AHEAD 0x20u  /* PD_POLL and PD_WATCH (with PD_WATCH_LEVEL) may carry PD_READ_AHEAD */

struct pd_hello {
    uint32_t magic;
    uint16_t major, minor;
    uint32_t capabilities;
    uint32_t pid;              /* the guest process, for logs */
    uint32_t join_session;     /* a forked child: its PD_FORK ticket, or the parent's session (whose
                                  handles it then shares as they are when it joins), or 0 */
    uint32_t join_token;       /* that session's token (pd_hello_reply) */
    /* then the guest's name (UTF-8), to the end of the body */
};

struct pd_hello_reply {
    uint32_t magic;
    uint16_t major, minor;
    uint32_t capabilities;
    uint32_t session;
    uint32_t device_count;
    uint32_t token;            /* lets a forked child join this session (pd_hello.join_token) */
    /* then device_count × (pd_device, path bytes, class bytes, padding to 8) */
};

struct pd_device {
    uint32_t path_length;
    uint32_t class_length;
    uint32_t mode;             /* st_mode of the node, 0 for a pattern */
    uint32_t reserved;
    uint64_t rdev;             /* st_rdev, 0 for a pattern */
};

struct pd_open {
    int32_t  flags;            /* Linux open(2) flags */
    uint32_t mode;
    /* then the path (UTF-8), to the end of the body */
};

struct pd_stat {
    uint32_t mode;
    uint32_t read_unit;        /* how reads may be split (the class's spec `read`): 1 a byte stream, N whole
                                  records of N bytes, 0 not declared (no read-ahead) */
    uint64_t rdev;
    uint64_t size;
};

/* Every reply starts with this. result < 0 never happens: failures set error (an errno) and result -1. */
struct pd_reply {
    int64_t  result;
    int32_t  error;
    uint32_t reserved;
};

struct pd_io {
    uint64_t count;
    int64_t  offset;           /* PD_PREAD / PD_PWRITE */
};

#define PD_IOCTL_TRANSLATED  0x1u  /* descriptors in the regions and argument are handles already */
#define PD_IOCTL_MAPPINGS    0x2u  /* after the regions: pd_mapping_count, then the mirrored bytes that
                                      changed; the asked ranges count as answered */
#define PD_IOCTL_SLOTS_AHEAD 0x4u  /* last in the body: pd_slot_count, then pd_slot × n: the descriptors the
                                      frontend translated into handles before sending (where an earlier call of the
                                      command had them). The backend takes them as handles only when they are
                                      exactly its plan's; otherwise it answers PD_NEED and the frontend sends the
                                      program's numbers again (PD_CAP_SLOTS_AHEAD) */

struct pd_slot_count {
    uint32_t count;
    uint32_t flags;            /* PD_NEED_ARGUMENT_FD: the argument was translated too */
};

struct pd_ioctl {
    uint32_t command;
    uint32_t region_count;
    uint64_t argument;
    /* then region_count × (pd_region, bytes, padding to 8) */
};

struct pd_region {
    uint64_t address;          /* guest address */
    uint32_t length;
    uint32_t reserved;         /* PD_REGION_OUT, or 0 */
};

/* A region the call may write but need not read: no bytes follow it. In PD_IOCTL the frontend names it
 * (its memory may be written back); in PD_NEED the backend asks the frontend to name it. The backend
 * writes back only regions the request carried, with bytes or named so. */
#define PD_REGION_OUT  0x1u

/* Where a descriptor number sits in guest memory (or, with address 0, the argument itself). */
struct pd_slot {
    uint64_t address;
    uint32_t width;            /* 4 or 8 */
    uint32_t direction;        /* 1 in, 2 out, 3 inout */
};

#define PD_NEED_ARGUMENT_FD  0x1u  /* the ioctl's argument is a descriptor by value */

struct pd_need {
    uint32_t region_count;     /* pd_region × n: memory to gather */
    uint32_t slot_count;       /* pd_slot × n: descriptors the frontend translates before resending */
    uint32_t flags;
    uint32_t mapping_count;    /* pd_mapping_range × n: mirrored mapping bytes the device needs first */
};

#define PD_DONE_RESULT_HANDLE  0x1u  /* result is a new remote handle */

/* After pd_reply for PD_IOCTL. */
struct pd_ioctl_done {
    uint32_t region_count;     /* pd_region + bytes × n: to scatter into guest memory */
    uint32_t slot_count;       /* pd_slot × n: new handles written into those regions */
    uint32_t flags;
    uint32_t mapping_count;    /* pd_mapping_range + bytes × n: to copy into the frontend's mirrors */
};

/* A mapping the backend holds for the guest, which keeps a mirror of it. */
struct pd_mmap {
    uint64_t offset;           /* the device's mmap offset */
    uint64_t length;
    int32_t  prot;
    int32_t  flags;
};

struct pd_munmap {
    uint32_t mapping;
    uint32_t reserved;
};

/* A byte range of a mirrored mapping (followed by the bytes where data travels, padded to 8). */
struct pd_mapping_range {
    uint32_t mapping;
    uint32_t length;
    uint64_t offset;           /* within the mapping */
};

struct pd_mapping_count {
    uint32_t count;
    uint32_t reserved;
};

struct pd_poll {
    int32_t  events;
    int32_t  timeout_ms;       /* -1: wait for ever */
};

/* PD_WATCH's header flag: the body is a pd_watch, and the reply's result is poll(level) now. When one of
 * those events (or POLLERR/POLLHUP/POLLNVAL) holds, the reply says it and no watch is made: the handle's
 * watch stays as it was. Otherwise the result is 0 and the watch for `events` is armed, as a plain
 * PD_WATCH's; what comes after the look at the level is reported by its PD_EVENT. One round trip does what
 * PD_POLL (timeout 0) and PD_WATCH did in two, nothing arriving in between unreported. */
#define PD_WATCH_LEVEL  0x1u

struct pd_watch {
    int32_t  events;           /* to watch, as pd_poll.events */
    int32_t  timeout_ms;       /* ignored, as pd_poll's: pd_poll is this structure's head */
    int32_t  level;            /* the events whose level the reply reports (a waiter's own, a subset) */
    uint32_t reserved;
};

/* PD_POLL's and (with PD_WATCH_LEVEL) PD_WATCH's header flag: after the body's pd_poll or pd_watch, a
 * pd_read_ahead. When the level found POLLIN, the backend also reads up to read_max bytes from the file
 * (a whole number of records of its read_unit), without sleeping, and the reply carries them: after
 * pd_reply, always a pd_read_ahead_done, then `length` bytes padded to 8. Length 0 when nothing was read
 * (not ready, end of file, an error, or a read that could have slept): the next read is forwarded as
 * ever. The frontend serves the program's next reads from those bytes, in order, before forwarding any
 * (PD_CAP_READ_AHEAD; only for files whose pd_stat.read_unit is not 0). */
#define PD_READ_AHEAD    0x2u
#define PD_MAX_READ_AHEAD (64u << 10)   /* a larger read_max is read as this much */

struct pd_read_ahead {
    uint32_t read_max;
    uint32_t reserved;
};

struct pd_read_ahead_done {
    uint32_t length;           /* bytes read ahead, which follow, padded to 8 */
    uint32_t reserved;
};

struct pd_llseek {
    int64_t  offset;
    int32_t  whence;
    uint32_t reserved;
};

struct pd_flags {
    int32_t  flags;
    uint32_t reserved;
};

/* One directory entry: the name follows, padded to 8. */
struct pd_dirent {
    uint8_t  type;             /* d_type */
    uint8_t  reserved;
    uint16_t name_length;
    uint32_t reserved2;
};

/* PD_INTERRUPT: a signal reached the guest's caller of `request`, a request of this session in flight. A
 * request done or unknown is left alone (a late interrupt is no error); no other request is touched. */
struct pd_interrupt_request {
    uint32_t request;          /* the frontend's id of the request to end */
    uint32_t reserved;
};

struct pd_event {
    int32_t  revents;
    uint32_t reserved;
};

#endif
