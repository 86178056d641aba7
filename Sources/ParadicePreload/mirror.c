/* mmap of a forwarded device the backend cannot share: a mirror in the program's memory, kept by the
 * frontend core (Sources/ParadiceFrontendCore/mirror.c). */
#include "shim.h"
#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef void *(*mmap_function)(void *, size_t, int, int, int, off_t);

static uint64_t map(void *real, uint64_t hint, uint64_t length, int fixed) {
    void *at = ((mmap_function)real)((void *)(uintptr_t)hint, length, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS | (fixed ? MAP_FIXED : 0), -1, 0);
    return at == MAP_FAILED ? PD_NO_ADDRESS : (uint64_t)(uintptr_t)at;
}

/* A mirror the core could not keep (no memory for its shadow) goes again. */
static void unmap(void *unused, uint64_t address, uint64_t length) {
    (void)unused;
    syscall(SYS_munmap, (void *)(uintptr_t)address, length);
}

void *pd_mirror_map(struct pd_file *f, void *address, size_t length, int protection, int flags, off_t offset,
                    void *(*real_mmap)(void *, size_t, int, int, int, off_t)) {
    struct pd_memory memory = pd_self_memory;
    memory.context = (void *)real_mmap;
    memory.map = map;
    memory.unmap = unmap;
    struct pd_target target = { &pd_conn, f->handle, &f->lent, &memory, NULL };
    uint64_t at = pd_file_map(&target, (uint64_t)(uintptr_t)address, length, protection, flags, offset);
    return at == PD_NO_ADDRESS ? MAP_FAILED : (void *)(uintptr_t)at;
}

int pd_mirror_unmap(void *address) {
    return pd_file_unmap(&pd_conn, &pd_self_memory, (uint64_t)(uintptr_t)address);
}
