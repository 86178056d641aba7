/* Whether one open file of a DRM device is master, asked again whenever the test says so.
 *
 *   drmmaster DRIVER FOLDER NAME
 *     opens the first /dev/dri/card* whose driver is DRIVER (DRM_IOCTL_VERSION's name) and prints "open: master=M"; then, for N = 1, 2, ..., waits for FOLDER/NAME.checkN and
 *     prints "check N: master=M setcrtc=R" (it may not write FOLDER: it runs as a guest's uid); it exits when
 *     FOLDER/NAME.exit exists. A checkN file that says "set" or "drop" first calls DRM_IOCTL_SET_MASTER or
 *     DRM_IOCTL_DROP_MASTER, and the line starts "check N: set=R" or "check N: drop=R".
 *   drmmaster PATH FOLDER NAME
 *     (PATH starting with "/") opens PATH, prints "holding PATH", and keeps it open until FOLDER/NAME.exit
 *     exists: a guest connected to the backend without a file of the card.
 * master is libdrm's drmIsMaster test: AUTH_MAGIC is for masters only (EACCES otherwise), and magic 0 is
 * never valid (EINVAL). setcrtc is SETCRTC turning the device's first CRTC off, a mode set, which the
 * driver allows a master alone (EACCES otherwise): 0 or the errno's name. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <drm.h>
#include <drm_mode.h>

static int exists(const char *folder, const char *name, const char *what, int n) {
    char path[4096];
    if (n > 0) snprintf(path, sizeof path, "%s/%s.%s%d", folder, name, what, n);
    else snprintf(path, sizeof path, "%s/%s.%s", folder, name, what);
    return access(path, F_OK) == 0;
}

static const char *name_of(int e) {
    switch (e) {
    case 0: return "0";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case EBUSY: return "EBUSY";
    case EPERM: return "EPERM";
    default: return strerror(e);
    }
}

static int is_master(int fd) {
    struct drm_auth auth = { .magic = 0 };
    return ioctl(fd, DRM_IOCTL_AUTH_MAGIC, &auth) == 0 || errno != EACCES;
}

static int first_crtc(int fd, uint32_t *crtc) {
    struct drm_mode_card_res counts = { 0 };
    if (ioctl(fd, DRM_IOCTL_MODE_GETRESOURCES, &counts) != 0 || counts.count_crtcs == 0) return -1;
    uint32_t crtcs[64];
    struct drm_mode_card_res res = { .crtc_id_ptr = (uint64_t)(uintptr_t)crtcs, .count_crtcs = counts.count_crtcs < 64 ? counts.count_crtcs : 64 };
    if (ioctl(fd, DRM_IOCTL_MODE_GETRESOURCES, &res) != 0) return -1;
    *crtc = crtcs[0];
    return 0;
}

static int open_card(const char *driver) {
    for (int minor = 0; minor < 32; minor++) {
        char path[64], name[64] = { 0 };
        snprintf(path, sizeof path, "/dev/dri/card%d", minor);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) continue;
        struct drm_version version = { .name_len = sizeof name - 1, .name = name };
        if (ioctl(fd, DRM_IOCTL_VERSION, &version) == 0 && strcmp(name, driver) == 0) return fd;
        close(fd);
    }
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: drmmaster DRIVER FOLDER NAME\n"); return 2; }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argv[1][0] == '/') {
        if (open(argv[1], O_RDONLY | O_CLOEXEC) < 0) { printf("open %s: %s\n", argv[1], strerror(errno)); return 1; }
        printf("holding %s\n", argv[1]);
        while (!exists(argv[2], argv[3], "exit", 0) && access(argv[2], F_OK) == 0) usleep(50000);
        return 0;
    }
    int fd = open_card(argv[1]);
    if (fd < 0) { printf("open: no %s card\n", argv[1]); return 1; }
    uint32_t crtc;
    if (first_crtc(fd, &crtc) != 0) { printf("GETRESOURCES: %s\n", strerror(errno)); return 1; }
    printf("open: master=%d\n", is_master(fd));
    for (int n = 1;; n++) {
        while (!exists(argv[2], argv[3], "check", n)) {
            if (exists(argv[2], argv[3], "exit", 0) || access(argv[2], F_OK) != 0) return 0;
            usleep(50000);
        }
        char path[4096], action[16] = { 0 }, said[64] = "";
        snprintf(path, sizeof path, "%s/%s.check%d", argv[2], argv[3], n);
        FILE *f = fopen(path, "r");
        if (f) { if (!fgets(action, sizeof action, f)) action[0] = 0; fclose(f); }
        if (strncmp(action, "set", 3) == 0 || strncmp(action, "drop", 4) == 0) {
            int drop = action[0] == 'd';
            int r = ioctl(fd, drop ? DRM_IOCTL_DROP_MASTER : DRM_IOCTL_SET_MASTER, 0) == 0 ? 0 : errno;
            snprintf(said, sizeof said, "%s=%s ", drop ? "drop" : "set", name_of(r));
        }
        struct drm_mode_crtc off = { .crtc_id = crtc };
        int set = ioctl(fd, DRM_IOCTL_MODE_SETCRTC, &off) == 0 ? 0 : errno;
        printf("check %d: %smaster=%d setcrtc=%s\n", n, said, is_master(fd), name_of(set));
    }
}
