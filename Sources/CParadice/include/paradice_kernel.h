/*
 * paradice_kernel.h — the interface between the guest kernel's Paradice module (Kernel/paradice) and the
 * frontend daemon that serves it (paradice-guestd). One definition, included by both; it knows no device
 * class.
 *
 * The module owns a control node, /dev/paradice. The daemon opens it, adds device nodes (PDK_ADD_NODE),
 * and then serves the calls programs make on those nodes: each read(2) of the control file returns one
 * struct pdk_request; the daemon answers with PDK_REPLY. While the caller waits, the daemon reaches the
 * caller's memory and descriptors only through PDK_ACCESS, which the module carries out in the caller's
 * own context (copy_from_user / copy_to_user of exactly the bytes named, fd_install, fget): the daemon
 * never holds a grant on the caller's memory, and a request that ended (answered, or its caller killed)
 * accepts no more accesses.
 *
 * Closing the control file removes its nodes; files still open on them fail every call with EIO (poll
 * reports POLLERR | POLLHUP) until they are closed.
 */
#ifndef PARADICE_KERNEL_H
#define PARADICE_KERNEL_H
#include <linux/ioctl.h>
#include <linux/types.h>

#define PDK_CONTROL_NODE   "paradice"   /* /dev/paradice */
#define PDK_VERSION        2
#define PDK_MAX_PATH       128          /* node path under /dev, NUL included */
#define PDK_MAX_NAME       32
#define PDK_MAX_ACCESS     (1u << 20)   /* bytes one PDK_ACCESS copy may move */
#define PDK_OPEN_SEEKABLE  1

/* PDK_ADD_NODE: a character device node for one device of the backend. */
#define PDK_NODE_ANY_NUMBER 0x1u        /* when major:minor is taken in this kernel, take a free one */
struct pdk_node {
    __u64 cookie;                 /* the daemon's name for the node, echoed in every request on it */
    __u32 major, minor;           /* the number the backend's device has (in: wanted; out: given) */
    __u32 mode;                   /* permission bits of the node (S_IFCHR is implied) */
    __u32 uid, gid;               /* owner of the node */
    __u32 flags;                  /* PDK_NODE_* */
    char path[PDK_MAX_PATH];      /* under /dev, e.g. "video0" or "dri/card0": a relative path of
                                     [A-Za-z0-9._-] components, no "." or ".." component */
    char subsystem[PDK_MAX_NAME]; /* the backend's sysfs class of the device ("" for none): the node's
                                     /sys/class/NAME/..., so that /sys/dev/char/M:m/subsystem names it */
};

/* PDK_ADD_NODE errors: EINVAL (a field out of range: path, subsystem, mode, uid/gid, flags), EEXIST (the
 * cookie, or the path, is another node's), EBUSY (the number is taken and PDK_NODE_ANY_NUMBER not given).
 * A mode of 0 gives 0600. Opening the control node needs CAP_SYS_ADMIN.
 * PDK_REMOVE_NODE: the node of a cookie goes (ENOENT: no such node); its open files fail with EIO from then
 * on. The daemon's mappings of areas hold its control file open: it ends when they are unmapped too. */

/* Operations the module asks the daemon to carry out (pdk_request.op). */
enum pdk_op {
    PDK_OP_OPEN      = 1,   /* arg[0] = open flags        → result 0 or PDK_OPEN_SEEKABLE, value = daemon's handle.
                               A file opened without PDK_OPEN_SEEKABLE is nonseekable (llseek ESPIPE, reads and
                               writes at the backend's position); with it the guest's f_pos is the position
                               (every read and write positional, llseek carried as SEEK_SET/SEEK_END/...) */
    PDK_OP_RELEASE   = 2,   /* the last reference to the open file went    → result ignored */
    PDK_OP_READ      = 3,   /* arg[0] = caller buffer, arg[1] = count, arg[2] = position,
                               arg[3] = 1 when positional (a PDK_OPEN_SEEKABLE file)
                                                                            → result = bytes (copied through
                                                                              PDK_ACCESS before the reply) */
    PDK_OP_WRITE     = 4,   /* same arguments                              → result = bytes */
    PDK_OP_IOCTL     = 5,   /* arg[0] = command, arg[1] = argument, arg[2] = 1 for a 32-bit caller's
                               compat_ioctl (0 otherwise)               → result */
    PDK_OP_LLSEEK    = 6,   /* arg[0] = offset, arg[1] = whence           → result = new position */
    PDK_OP_FSYNC     = 7,   /* arg[0] = 1 for fdatasync                   → result */
    PDK_OP_MMAP      = 8,   /* arg[0] = length, arg[1] = offset in the device (bytes), arg[2] = PROT_*,
                               arg[3] = MAP_SHARED or MAP_PRIVATE; area = the module's pages for it, which the
                               daemon maps with mmap(control fd, length, ..., MAP_SHARED, area offset) and
                               fills before it replies                       → result 0;
                               or, when the daemon holds the device's own open file (a backend on this
                               machine that shares it: PD_SHARE), result PDK_MMAP_DEVICE with value = that
                               descriptor in the daemon: the caller then maps the device itself (below) */
    PDK_OP_MUNMAP    = 9,   /* area: the caller's last mapping of it went, or its mmap failed after the
                               PDK_OP_MMAP (no reply): the daemon unmaps the area if it mapped it */
    PDK_OP_WATCH     = 10,  /* arg[0] = poll events the file's waiters wait for: report readiness once with
                               PDK_NOTIFY when one of them (or POLLERR/POLLHUP) holds, at once when one holds
                               already (no reply). Each WATCH names every event of the file's WATCHes still
                               unanswered; a NOTIFY answers them all. The module returns that readiness to the
                               polls it satisfies until a forwarded read, write or ioctl on the file makes it
                               stale, and sends a WATCH for a waiter it does not satisfy. A NOTIFY answering a
                               WATCH sent before a forwarded call that completed since only wakes the waiters */
    PDK_OP_INTERRUPT = 11,  /* arg[0] = the request a signal interrupted: end it early if its operation
                               blocks (its reply then says EINTR); no reply of its own. (A request the
                               daemon has not read yet is taken back instead: the daemon never sees it.) */
    PDK_OP_FASYNC    = 12,  /* arg[0] = 1 on, 0 off (the module sends SIGIO itself on readiness) → result */
    PDK_OP_POLL      = 13,  /* arg[0] = poll events, as PDK_OP_WATCH's: the first poll after the readiness went
                               stale asks the level now (a driver's poll answers at once, and a caller's
                               timeout may be 100 us)  → result = revents when one of them (or POLLERR/POLLHUP)
                               holds; else 0, and the daemon has made the WATCH (a PDK_NOTIFY follows) */
};

/* What read(2) of the control file returns, one per read (a shorter buffer gets EINVAL); a read blocks
 * until a request is there (O_NONBLOCK: EAGAIN), and poll reports POLLIN while one is. */
struct pdk_request {
    __u64 id;                     /* nonzero, never reused while the module is loaded */
    __u32 op;                     /* enum pdk_op */
    __u32 file_flags;             /* the open file's f_flags now (O_NONBLOCK, O_APPEND, O_ACCMODE, ...) */
    __u64 file;                   /* the module's id of the open file (for PDK_NOTIFY) */
    __u64 handle;                 /* the daemon's handle for it (PDK_OP_OPEN's value; 0 in PDK_OP_OPEN) */
    __u64 cookie;                 /* the node's cookie */
    __u64 area;                   /* PDK_OP_MMAP / PDK_OP_MUNMAP: the area's mmap offset on the control file */
    __u64 arg[4];
    __u32 pid, tgid;              /* the caller (for logs); 0 for requests no process waits on */
    __u32 uid, gid;
};

/* PDK_MMAP_DEVICE, a PDK_OP_MMAP's shared answer: the module takes the daemon's descriptor `value` in
 * PDK_REPLY (EBADF: no such descriptor; EINVAL: not a character device's file with an mmap of its driver, one
 * of the module's own, or one not open for reading; ESRCH: no caller waits; in each case the request stays
 * unanswered; a result of 1 to another operation is just 1), and the caller's mmap becomes the device file's own mapping
 * (vma_set_file + the driver's mmap, as dma_buf_mmap does) with the caller's offset, length, protection and
 * flags: the driver's checks decide, the area goes unmapped and unused (the daemon must not map it) and no
 * PDK_OP_MUNMAP follows; the mapping holds the device file, not the node's. A shared writable mapping of a
 * file not open for writing is EACCES. The daemon answers so only with the descriptor its backend handed for
 * that very open file. */
#define PDK_MMAP_DEVICE    1

/* PDK_REPLY: the answer to a request that expects one. A reply to a request that already ended (its
 * caller was killed) is ESRCH; the module then undoes what it can (a new handle is released). */
struct pdk_reply {
    __u64 request;
    __s64 result;                 /* >= 0, or -errno as a local driver returns it */
    __u64 value;                  /* PDK_OP_OPEN: the daemon's handle for the new open file */
};

/* PDK_ACCESS: done by the waiting caller, in its context, for request `request`. */
enum pdk_access_kind {
    PDK_COPY_FROM_CALLER = 1,     /* copy_from_user(caller `address`, `length`) into daemon `buffer` */
    PDK_COPY_TO_CALLER   = 2,     /* daemon `buffer` → copy_to_user(caller `address`, `length`) */
    PDK_NEW_FILE         = 3,     /* a new open file of this node for daemon handle `value` (its release will
                                     be a PDK_OP_RELEASE with that handle); out: `value` = the caller's
                                     descriptor (O_RDWR, close-on-exec when `address` is 1) */
    PDK_FILE_HANDLE      = 4,     /* the caller's descriptor `address`: out `value` = the daemon handle of the
                                     open file, when it is one of this control file's; else EBADF */
};
struct pdk_access {
    __u64 request;
    __u32 kind;                   /* enum pdk_access_kind */
    __u32 reserved;
    __u64 address;
    __u64 length;                 /* at most PDK_MAX_ACCESS */
    __u64 buffer;                 /* in the daemon's memory */
    __u64 value;
};
/* Errors: EFAULT (the caller's bytes or the daemon's buffer cannot be reached: nothing is half done for the
 * caller's side), ESRCH (no such waiting request), EINVAL (bad kind or length, or a request that takes no
 * accesses: PDK_OP_MMAP, whose caller holds its mmap lock, PDK_OP_RELEASE and PDK_OP_FASYNC off, whose caller
 * may have no memory left), EBADF (PDK_FILE_HANDLE). */

/* PDK_NOTIFY: readiness of an open file (the answer to PDK_OP_WATCH, or news the daemon has unasked). */
struct pdk_notify {
    __u64 file;
    __u32 revents;
    __u32 reserved;
};

#define PDK_IOCTL_BASE   0xDC
#define PDK_ADD_NODE     _IOWR(PDK_IOCTL_BASE, 1, struct pdk_node)
#define PDK_REMOVE_NODE  _IOW(PDK_IOCTL_BASE, 2, __u64)
#define PDK_REPLY        _IOW(PDK_IOCTL_BASE, 3, struct pdk_reply)
#define PDK_ACCESS       _IOWR(PDK_IOCTL_BASE, 4, struct pdk_access)
#define PDK_NOTIFY       _IOW(PDK_IOCTL_BASE, 5, struct pdk_notify)
#define PDK_GET_VERSION  _IO(PDK_IOCTL_BASE, 6)   /* → PDK_VERSION */

/* PDK_SET_PARENT: the node of `cookie` goes under the parent device named `parent` (made on first use, gone
 * with its last node), so that /sys/dev/char/M:m/device is that parent and its directory lists the nodes
 * that share it by their device names, as a driver's device lists its video0 and media0 side by side (where
 * v4l-utils looks for a video node's media device); "" puts the node back alone.
 * The parent is in the class named `subsystem` (the backend parent's own bus or class, "pci" say) when this
 * kernel has no class of that name, else in class "paradice": libraries that ask what kind of device a node
 * hangs on read the last component of /sys/dev/char/M:m/device/subsystem (libdrm: "pci", "platform").
 * With `name` (the node's own name on the backend, "card0") and the node's subsystem, the parent's folder
 * gets SUBSYSTEM/NAME leading to the node, where the backend's kernel has its class folder ("drm/card0",
 * which libdrm lists to find a device's nodes).
 * Errors: ENOENT (no such node), EINVAL (a bad name, a node named like one of the parent's own entries:
 * uevent, power, subsystem, ..., or a parent that exists in another subsystem), EEXIST (the name is a node's
 * of class "paradice", or SUBSYSTEM/NAME is there already). A module without it answers ENOTTY. */
struct pdk_parent {
    __u64 cookie;
    char parent[PDK_MAX_NAME];    /* the backend's device name, e.g. "vivid.0" or the PCI "0000:00:02.0":
                                     graphic ASCII without '/', neither "." nor ".." */
    char subsystem[PDK_MAX_NAME]; /* [A-Za-z0-9._-], or "" (unknown: a parent that exists keeps its own) */
    char name[PDK_MAX_NAME];      /* [A-Za-z0-9._-] or "" */
};
#define PDK_SET_PARENT   _IOW(PDK_IOCTL_BASE, 7, struct pdk_parent)

/* PDK_PARENT_ATTR: a read-only file `name` in the folder of the parent of the node of `cookie`, holding the
 * `length` bytes of `value`: a copy of the backend parent's attribute of that name (PCI "vendor", "device",
 * "config", ...), for libraries that read them. The name "uevent" instead gives the KEY=VALUE lines (one
 * per line) that the parent's uevent file shows after the kernel's own, and announces them (a change
 * event). Each is set once. Errors: ENOENT (no such node, or it has no parent), EINVAL (a bad name or
 * length, a uevent line that is no KEY=VALUE), EEXIST (the parent has an entry of that name), ENOSPC (the
 * parent holds PDK_MAX_PARENT_ATTRS files already). */
#define PDK_MAX_ATTR          4096
#define PDK_MAX_PARENT_ATTRS  64
struct pdk_parent_attr {
    __u64 cookie;
    char name[PDK_MAX_NAME];      /* [A-Za-z0-9._-] */
    __u32 length;                 /* at most PDK_MAX_ATTR */
    __u32 reserved;               /* 0 */
    __u8 value[PDK_MAX_ATTR];
};
#define PDK_PARENT_ATTR  _IOW(PDK_IOCTL_BASE, 8, struct pdk_parent_attr)
#endif
