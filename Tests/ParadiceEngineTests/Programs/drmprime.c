/* A GEM buffer shared through PRIME: created as a dumb buffer on one open file of a DRM device (vgem),
 * mapped, written with a pattern, exported as a dma-buf fd, imported into a second open file of the
 * same device, mapped there and read back. Run natively and through Paradice, it prints the same. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <drm.h>
#include <drm_mode.h>

static int call(int fd, unsigned long request, void *argument) {
    int r;
    do r = ioctl(fd, request, argument); while (r < 0 && (errno == EINTR || errno == EAGAIN));
    return r;
}

static void *map(int fd, uint32_t handle, uint64_t size) {
    struct drm_mode_map_dumb m = { .handle = handle };
    if (call(fd, DRM_IOCTL_MODE_MAP_DUMB, &m)) { perror("MAP_DUMB"); exit(1); }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)m.offset);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    return p;
}

static uint32_t word(size_t i) { return (uint32_t)(i * 2654435761u) ^ 0x5a5a0000u; }

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/dev/dri/card1";
    int a = open(path, O_RDWR | O_CLOEXEC), b = open(path, O_RDWR | O_CLOEXEC);
    if (a < 0 || b < 0) { perror(path); return 1; }
    char name[64] = "";
    struct drm_version v = { .name_len = sizeof name - 1, .name = name };
    if (call(a, DRM_IOCTL_VERSION, &v)) { perror("VERSION"); return 1; }
    printf("driver %s\n", name);

    struct drm_mode_create_dumb create = { .width = 256, .height = 64, .bpp = 32 };
    if (call(a, DRM_IOCTL_MODE_CREATE_DUMB, &create)) { perror("CREATE_DUMB"); return 1; }
    printf("created %ux%u pitch %u size %llu\n", create.width, create.height, create.pitch, (unsigned long long)create.size);
    uint32_t *mine = map(a, create.handle, create.size);
    size_t words = create.size / 4;
    for (size_t i = 0; i < words; i++) mine[i] = word(i);

    struct drm_prime_handle out = { .handle = create.handle, .flags = DRM_CLOEXEC | DRM_RDWR, .fd = -1 };
    if (call(a, DRM_IOCTL_PRIME_HANDLE_TO_FD, &out)) { perror("PRIME_HANDLE_TO_FD"); return 1; }
    printf("exported: fd %s, size %lld\n", out.fd > 2 ? "valid" : "invalid", (long long)lseek(out.fd, 0, SEEK_END));

    struct drm_prime_handle back = { .fd = out.fd };
    if (call(a, DRM_IOCTL_PRIME_FD_TO_HANDLE, &back)) { perror("PRIME_FD_TO_HANDLE (same file)"); return 1; }
    printf("imported into the same file: %s handle\n", back.handle == create.handle ? "the same" : "another");

    struct drm_prime_handle in = { .fd = out.fd };
    if (call(b, DRM_IOCTL_PRIME_FD_TO_HANDLE, &in)) { perror("PRIME_FD_TO_HANDLE"); return 1; }
    uint32_t *theirs = map(b, in.handle, create.size);
    size_t wrong = 0;
    for (size_t i = 0; i < words; i++) wrong += theirs[i] != word(i);
    printf("imported into another file: %zu of %zu words differ from the pattern\n", wrong, words);

    /* A descriptor that is not a dma-buf (the device file itself) is refused as a local driver refuses it. */
    struct drm_prime_handle bad = { .fd = a };
    int r = call(b, DRM_IOCTL_PRIME_FD_TO_HANDLE, &bad);
    printf("import of the device file: %d %s\n", r, r < 0 ? strerror(errno) : "");

    munmap(theirs, create.size);
    munmap(mine, create.size);
    struct drm_gem_close closing = { .handle = in.handle };
    call(b, DRM_IOCTL_GEM_CLOSE, &closing);
    struct drm_mode_destroy_dumb destroy = { .handle = create.handle };
    printf("destroy: %d\n", call(a, DRM_IOCTL_MODE_DESTROY_DUMB, &destroy));
    close(out.fd);
    close(a);
    close(b);
    return wrong != 0;
}
