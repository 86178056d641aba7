#ifndef CPARADICE_H
#define CPARADICE_H
#include <stddef.h>
#include <sys/types.h>
#include "paradice_vchan.h"
#include "paradice_ring.h"

/// process_vm_readv on one contiguous range of a process (the caller's own, for frontends).
ssize_t paradice_read_process(pid_t pid, void *local, unsigned long remote, size_t length);
/// process_vm_writev likewise.
ssize_t paradice_write_process(pid_t pid, const void *local, unsigned long remote, size_t length);



/// ioctl with the argument as an integer (a value or an address).
long paradice_ioctl(int fd, unsigned long command, unsigned long argument);

/// accept4 with SOCK_CLOEXEC; fills the peer address.
int paradice_accept(int fd, void *address, unsigned int *length);
/// The pid and uid of a unix socket's peer (SO_PEERCRED). Returns 0 on success.
int paradice_peer_credentials(int fd, int *pid, unsigned int *uid);
/// The pid, uid and gid of a unix socket's peer (SO_PEERCRED). Returns 0 on success.
int paradice_peer_ucred(int fd, int *pid, unsigned int *uid, unsigned int *gid);

/// Sends bytes with a descriptor attached to the first of them (SCM_RIGHTS). 0, or -1 with errno.
int paradice_send_with_descriptor(int socket, const void *bytes, size_t length, int descriptor);
/// recv that also takes a descriptor passed with the bytes (*descriptor = -1 when none).
long paradice_recv_with_descriptor(int socket, void *bytes, size_t length, int *descriptor);
long paradice_recv_with_descriptor_flags(int socket, void *bytes, size_t length, int *descriptor, int flags);

/// eventfd(0, EFD_CLOEXEC): a wake-up channel for poll loops.
int paradice_eventfd(void);
/* A descriptor a frontend keeps for itself (its connection, a ring's doorbells), moved to the top of the
 * descriptor table, close-on-exec: the program's own numbers stay where they would be without it (a shell's
 * `exec 3< FILE` makes 3 by dup2, onto whatever 3 is), and the lowest free one stays the program's next.
 * Returns the new number, or fd itself when the top is taken. */
int paradice_descriptor_out_of_the_way(int fd);
/// O_DIRECT and O_PATH, which glibc hides without _GNU_SOURCE.
int paradice_o_direct(void);
int paradice_o_path(void);
/// Fixes glibc's mmap threshold (mallopt M_MMAP_THRESHOLD): blocks this large or larger go back to the
/// system when freed. 1 on success.
int paradice_fix_mmap_threshold(int bytes);
/// finit_module(2) of the module file `fd` with no parameters: 0, or -1 with errno.
int paradice_finit_module(int fd);
#endif
