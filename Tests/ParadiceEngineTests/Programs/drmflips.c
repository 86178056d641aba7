/* Page flips between two framebuffers, each waited for by its flip-complete event (poll, then read
 * from the DRM fd), timed step by step. Prints what it saw, then the rate and the time per step.
 * Usage: drmflips [DEVICE [FLIPS [nonblock]]]. Build: cc drmflips.c -I/usr/include/libdrm -ldrm */
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xf86drm.h>
#include <xf86drmMode.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/dev/dri/card0";
    int flips = argc > 2 ? atoi(argv[2]) : 200;
    int fd = open(path, O_RDWR | O_CLOEXEC | (argc > 3 && strcmp(argv[3], "nonblock") == 0 ? O_NONBLOCK : 0));
    drmModeRes *res = fd < 0 ? NULL : drmModeGetResources(fd);
    drmModeConnector *connector = res ? drmModeGetConnector(fd, res->connectors[0]) : NULL;
    if (!connector || connector->count_modes == 0) { perror(path); return 1; }
    drmModeModeInfo mode = connector->modes[0];
    for (int i = 0; i < connector->count_modes; i++)
        if (connector->modes[i].hdisplay == 1024 && connector->modes[i].vdisplay == 768) mode = connector->modes[i];
    uint32_t crtc = res->crtcs[0], connector_id = connector->connector_id, fb[2];
    for (int i = 0; i < 2; i++) {
        struct drm_mode_create_dumb c = { .width = mode.hdisplay, .height = mode.vdisplay, .bpp = 32 };
        if (drmIoctl(fd, DRM_IOCTL_MODE_CREATE_DUMB, &c) || drmModeAddFB(fd, c.width, c.height, 24, 32, c.pitch, c.handle, &fb[i])) {
            perror("dumb framebuffer");
            return 1;
        }
    }
    if (drmModeSetCrtc(fd, crtc, fb[0], 0, 0, &connector_id, 1, &mode)) { perror("SETCRTC"); return 1; }
    double flipping = 0, waiting = 0, reading = 0, start = now();
    int events = 0;
    for (int i = 0; i < flips; i++) {
        double a = now();
        if (drmModePageFlip(fd, crtc, fb[(i + 1) % 2], DRM_MODE_PAGE_FLIP_EVENT, (void *)(uintptr_t)(i + 1))) { perror("PAGE_FLIP"); break; }
        double b = now();
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 2000) != 1) { fprintf(stderr, "no event after flip %d\n", i); break; }
        double c = now();
        union { struct drm_event base; struct drm_event_vblank vblank; char bytes[256]; } e;
        ssize_t n = read(fd, &e, sizeof e);
        double d = now();
        if (n >= (ssize_t)sizeof e.vblank && e.base.type == DRM_EVENT_FLIP_COMPLETE && e.vblank.user_data == (uint64_t)(i + 1)) events++;
        flipping += b - a;
        waiting += c - b;
        reading += d - c;
    }
    double total = now() - start;
    printf("%d flips, %d flip-complete events with their user data\n", flips, events);
    printf("rate %.1f Hz; per flip: PAGE_FLIP %.3f ms, poll %.3f ms, read %.3f ms\n", flips / total,
           flipping / flips * 1e3, waiting / flips * 1e3, reading / flips * 1e3);
    return events == flips ? 0 : 1;
}
