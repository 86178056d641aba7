#ifndef CPARADICE_H
#define CPARADICE_H
#include <stddef.h>
#include <sys/types.h>

/// process_vm_readv on one contiguous range of a process (the caller's own, for frontends).
ssize_t paradice_read_process(pid_t pid, void *local, unsigned long remote, size_t length);
/// process_vm_writev likewise.
ssize_t paradice_write_process(pid_t pid, const void *local, unsigned long remote, size_t length);

#endif
