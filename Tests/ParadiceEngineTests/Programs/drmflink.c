/* Two guests on one DRM device (vgem): what one may reach of the other's buffers.
 *
 *   drmflink make DEVICE NAMEFILE DONEFILE
 *     creates a dumb buffer, names it (GEM_FLINK), opens it by that name in a second file of its own,
 *     exports it as a PRIME fd (kept as descriptor 100), writes "NAME FD" to NAMEFILE, gives up DRM
 *     master (so that the next file opened on the device becomes master, and so authenticated), then
 *     holds the buffer until DONEFILE exists.
 *   drmflink open DEVICE NAME FD
 *     opens the device and tries the other's buffer: GEM_OPEN of NAME, and PRIME_FD_TO_HANDLE of the
 *     descriptor number FD, which it does not hold. GEM_OPEN of name 0 (never a name) shows what the
 *     driver answers for a name that does not exist.
 * Each step prints its result or errno. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <drm.h>
#include <drm_mode.h>

static int call(int fd, unsigned long request, void *argument) {
    int r;
    do r = ioctl(fd, request, argument); while (r < 0 && (errno == EINTR || errno == EAGAIN));
    return r;
}

static void report(const char *what, int r) {
    if (r == 0) printf("%s: ok\n", what);
    else printf("%s: -1 %s\n", what, strerror(errno));
}

static int gem_open(int fd, uint32_t name, const char *what) {
    struct drm_gem_open o = { .name = name };
    int r = call(fd, DRM_IOCTL_GEM_OPEN, &o);
    report(what, r);
    if (r == 0) printf("%s: size %llu\n", what, (unsigned long long)o.size);
    return r;
}

static int make(const char *path, const char *name_file, const char *done_file) {
    int a = open(path, O_RDWR | O_CLOEXEC), second = open(path, O_RDWR | O_CLOEXEC);
    if (a < 0 || second < 0) { perror(path); return 1; }
    /* The first file is master; it authenticates the second, as a display server does its clients. */
    struct drm_auth magic = { 0 };
    report("GET_MAGIC (second file)", call(second, DRM_IOCTL_GET_MAGIC, &magic));
    report("AUTH_MAGIC", call(a, DRM_IOCTL_AUTH_MAGIC, &magic));

    struct drm_mode_create_dumb create = { .width = 64, .height = 64, .bpp = 32 };
    if (call(a, DRM_IOCTL_MODE_CREATE_DUMB, &create)) { perror("CREATE_DUMB"); return 1; }
    struct drm_gem_flink flink = { .handle = create.handle };
    report("GEM_FLINK", call(a, DRM_IOCTL_GEM_FLINK, &flink));
    printf("named: %s\n", flink.name != 0 ? "yes" : "no");
    gem_open(second, flink.name, "GEM_OPEN of its own name in its second file");

    struct drm_prime_handle out = { .handle = create.handle, .flags = DRM_CLOEXEC, .fd = -1 };
    report("PRIME_HANDLE_TO_FD", call(a, DRM_IOCTL_PRIME_HANDLE_TO_FD, &out));
    int kept = out.fd;
    if (out.fd >= 0 && dup2(out.fd, 100) == 100) kept = 100;
    report("DROP_MASTER", call(a, DRM_IOCTL_DROP_MASTER, NULL));
    fflush(stdout);

    char temporary[4096];
    snprintf(temporary, sizeof temporary, "%s.tmp", name_file);
    FILE *f = fopen(temporary, "w");
    if (!f) { perror(temporary); return 1; }
    fprintf(f, "%u %d\n", flink.name, kept);
    fclose(f);
    if (rename(temporary, name_file)) { perror("rename"); return 1; }

    /* Holds the buffer (and so its name) while the other guest tries it: up to 10 minutes. */
    for (int i = 0; i < 60000 && access(done_file, F_OK) != 0; i++) nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
    printf("done\n");
    return 0;
}

static int try_other(const char *path, uint32_t name, int fd) {
    int b = open(path, O_RDWR | O_CLOEXEC);
    if (b < 0) { perror(path); return 1; }
    gem_open(b, 0, "GEM_OPEN of name 0");
    gem_open(b, name, "GEM_OPEN of the other's name");
    struct drm_prime_handle in = { .fd = fd };
    report("PRIME_FD_TO_HANDLE of a descriptor it does not hold", call(b, DRM_IOCTL_PRIME_FD_TO_HANDLE, &in));
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && strcmp(argv[1], "make") == 0) return make(argv[2], argv[3], argv[4]);
    if (argc == 5 && strcmp(argv[1], "open") == 0) return try_other(argv[2], (uint32_t)strtoul(argv[3], NULL, 10), atoi(argv[4]));
    fprintf(stderr, "usage: drmflink make DEVICE NAMEFILE DONEFILE | drmflink open DEVICE NAME FD\n");
    return 2;
}
