/* The guest memory interfaces the core ships: the calling process itself, and another process. A frontend
 * over other copies (a guest kernel module's) brings its own struct pd_memory. */
#define _GNU_SOURCE
#include "paradice_frontend.h"
#include "cparadice.h"
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

int pd_process_read(void *pid, uint64_t address, void *into, size_t length) {
    if (length == 0) return 0;
    return paradice_read_process(*(pid_t *)pid, into, (unsigned long)address, length) == (ssize_t)length ? 0 : -1;
}

int pd_process_write(void *pid, uint64_t address, const void *from, size_t length) {
    if (length == 0) return 0;
    return paradice_write_process(*(pid_t *)pid, from, (unsigned long)address, length) == (ssize_t)length ? 0 : -1;
}

/* The process's own memory, through process_vm_readv/writev of its own pid: a pointer the program got wrong
 * is EFAULT, as the kernel's copy_from_user makes it, not a crash of the program inside the frontend. */
static int self_read(void *unused, uint64_t address, void *into, size_t length) {
    (void)unused;
    if (length == 0) return 0;
    return paradice_read_process(getpid(), into, (unsigned long)address, length) == (ssize_t)length ? 0 : -1;
}

static int self_write(void *unused, uint64_t address, const void *from, size_t length) {
    (void)unused;
    if (length == 0) return 0;
    return paradice_write_process(getpid(), from, (unsigned long)address, length) == (ssize_t)length ? 0 : -1;
}

/* A mirror the core made lives in this process: its pages are compared in place. */
static uint8_t *self_local(void *unused, uint64_t address, size_t length) {
    (void)unused;
    (void)length;
    return (uint8_t *)(uintptr_t)address;
}

const struct pd_memory pd_self_memory = { NULL, self_read, self_write, self_local, NULL, NULL };
