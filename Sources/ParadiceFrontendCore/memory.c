/* The guest memory interfaces the core ships: the calling process itself, and another process. A frontend
 * over other copies (a guest kernel module's) brings its own struct pd_memory. */
#define _GNU_SOURCE
#include "paradice_frontend.h"
#include "cparadice.h"
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

/* Every byte of [address, address + length) of process `pid`, or -1 with errno. process_vm_readv/writev
 * stop at the first page they cannot reach and return what they moved: a short count is EFAULT, as the
 * kernel's copy_from_user/copy_to_user fail, never part of the bytes taken for all of them. A range that
 * wraps past the top of memory is EFAULT before any call; a process that has exited (a zombie still
 * holds its pid) is ESRCH. */
static int transfer(pid_t pid, uint64_t address, void *local, size_t length, int writing) {
    if (length == 0) return 0;
    if (pid <= 0) { errno = ESRCH; return -1; }
    if (length > SSIZE_MAX || address > UINTPTR_MAX || address + length < address) { errno = EFAULT; return -1; }
    ssize_t n = writing ? paradice_write_process(pid, local, (unsigned long)address, length)
                        : paradice_read_process(pid, local, (unsigned long)address, length);
    if (n < 0) return -1;
    if ((size_t)n != length) { errno = EFAULT; return -1; }
    return 0;
}

int pd_process_read(void *pid, uint64_t address, void *into, size_t length) {
    if (!pid) { errno = ESRCH; return -1; }
    return transfer(*(pid_t *)pid, address, into, length, 0);
}

int pd_process_write(void *pid, uint64_t address, const void *from, size_t length) {
    if (!pid) { errno = ESRCH; return -1; }
    return transfer(*(pid_t *)pid, address, (void *)from, length, 1);
}

/* The process's own memory, through process_vm_readv/writev of its own pid: a pointer the program got wrong
 * is EFAULT, as the kernel's copy_from_user makes it, not a crash of the program inside the frontend. */
static int self_read(void *unused, uint64_t address, void *into, size_t length) {
    (void)unused;
    return transfer(getpid(), address, into, length, 0);
}

static int self_write(void *unused, uint64_t address, const void *from, size_t length) {
    (void)unused;
    return transfer(getpid(), address, (void *)from, length, 1);
}

/* A mirror the core made lives in this process: its pages are compared in place. */
static uint8_t *self_local(void *unused, uint64_t address, size_t length) {
    (void)unused;
    (void)length;
    return (uint8_t *)(uintptr_t)address;
}

const struct pd_memory pd_self_memory = { NULL, self_read, self_write, self_local, NULL, NULL };
