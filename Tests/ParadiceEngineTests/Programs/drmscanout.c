/* KMS on dumb buffers that stay mapped: after each of ADDFB, SETCRTC, DIRTYFB and PAGE_FLIP the buffer
 * is mapped a second time and compared with what the program last wrote through the first mapping, so
 * the device must hold the new pixels by then. Also the page-flip event read from the DRM fd, the master
 * rules between two open files, and a few bad requests. Run natively and through Paradice, it prints the
 * same. Build: cc drmscanout.c -I/usr/include/libdrm -ldrm */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xf86drm.h>
#include <xf86drmMode.h>

static int fd;
static uint32_t width, height, pitch;
static uint64_t size;

struct buffer { uint32_t handle, fb; uint32_t *pixels; };

static uint32_t *map(uint32_t handle) {
    struct drm_mode_map_dumb m = { .handle = handle };
    if (drmIoctl(fd, DRM_IOCTL_MODE_MAP_DUMB, &m)) { perror("MAP_DUMB"); exit(1); }
    uint32_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)m.offset);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    return p;
}

static void create(struct buffer *b) {
    struct drm_mode_create_dumb c = { .width = width, .height = height, .bpp = 32 };
    if (drmIoctl(fd, DRM_IOCTL_MODE_CREATE_DUMB, &c)) { perror("CREATE_DUMB"); exit(1); }
    pitch = c.pitch;
    size = c.size;
    b->handle = c.handle;
    b->pixels = map(c.handle);
}

/* A pattern per step: stripes whose colours depend on the step, so no two steps look alike. */
static uint32_t pixel(int step, uint32_t x, uint32_t y) { return 0xff000000u | ((uint32_t)(step * 0x3f2e1d) ^ ((x / 16 + y / 16) * 0x010203u)); }

static void draw(struct buffer *b, int step) {
    for (uint32_t y = 0; y < height; y++)
        for (uint32_t x = 0; x < width; x++) b->pixels[y * (pitch / 4) + x] = pixel(step, x, y);
}

/* The buffer as the device holds it: a second mapping of the same object. */
static void check(struct buffer *b, int step, const char *after) {
    uint32_t *device = map(b->handle);
    size_t wrong = 0;
    for (uint32_t y = 0; y < height; y++)
        for (uint32_t x = 0; x < width; x++) wrong += device[y * (pitch / 4) + x] != pixel(step, x, y);
    munmap(device, size);
    if (wrong) printf("after %s: %zu pixels differ from what the program wrote\n", after, wrong);
    else printf("after %s: the device holds what the program wrote\n", after);
}

static const char *result(int r) { return r == 0 ? "ok" : strerror(r < 0 ? -r : r); }

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/dev/dri/card0";
    fd = open(path, O_RDWR | O_CLOEXEC);
    int other = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 || other < 0) { perror(path); return 1; }
    printf("master: first file %s, second file %s\n", drmIsMaster(fd) ? "yes" : "no", drmIsMaster(other) ? "yes" : "no");

    drmModeRes *res = drmModeGetResources(fd);
    if (!res) { perror("GETRESOURCES"); return 1; }
    drmModeConnector *connector = NULL;
    for (int i = 0; i < res->count_connectors && !connector; i++) {
        connector = drmModeGetConnector(fd, res->connectors[i]);
        if (connector && (connector->connection != DRM_MODE_CONNECTED || connector->count_modes == 0)) {
            drmModeFreeConnector(connector);
            connector = NULL;
        }
    }
    if (!connector) { fprintf(stderr, "no connected connector\n"); return 1; }
    drmModeModeInfo mode = connector->modes[0];
    for (int i = 0; i < connector->count_modes; i++)
        if (connector->modes[i].hdisplay == 640 && connector->modes[i].vdisplay == 480) { mode = connector->modes[i]; break; }
    uint32_t crtc = res->crtcs[0], connector_id = connector->connector_id;
    width = mode.hdisplay;
    height = mode.vdisplay;
    printf("mode %s on connector %u, crtc %u\n", mode.name, connector_id, crtc);

    struct buffer front, back;
    create(&front);
    create(&back);
    draw(&front, 1);
    int r = drmModeAddFB(fd, width, height, 24, 32, pitch, front.handle, &front.fb);
    printf("ADDFB: %s\n", result(r));
    check(&front, 1, "ADDFB");

    draw(&front, 2);
    r = drmModeSetCrtc(fd, crtc, front.fb, 0, 0, &connector_id, 1, &mode);
    printf("SETCRTC: %s\n", result(r));
    check(&front, 2, "SETCRTC");
    printf("SETCRTC from the second file: %s\n", result(drmModeSetCrtc(other, crtc, front.fb, 0, 0, &connector_id, 1, &mode)));

    draw(&front, 3);
    printf("DIRTYFB: %s\n", result(drmModeDirtyFB(fd, front.fb, NULL, 0)));
    check(&front, 3, "DIRTYFB");

    draw(&back, 4);
    printf("ADDFB: %s\n", result(drmModeAddFB(fd, width, height, 24, 32, pitch, back.handle, &back.fb)));
    draw(&back, 5);
    r = drmModePageFlip(fd, crtc, back.fb, DRM_MODE_PAGE_FLIP_EVENT, (void *)(uintptr_t)0x1234);
    printf("PAGE_FLIP: %s\n", result(r));
    check(&back, 5, "PAGE_FLIP");
    struct pollfd p = { fd, POLLIN, 0 };
    int ready = poll(&p, 1, 2000);
    union { struct drm_event base; struct drm_event_vblank vblank; char bytes[4096]; } event;
    ssize_t n = ready > 0 ? read(fd, &event, sizeof event) : -1;
    if (n >= (ssize_t)sizeof event.vblank)
        printf("event: %zd bytes, %s, user data 0x%llx, crtc %s\n", n,
               event.base.type == DRM_EVENT_FLIP_COMPLETE ? "flip complete" : "another type",
               (unsigned long long)event.vblank.user_data, event.vblank.crtc_id == crtc ? "the flipped one" : "another");
    else
        printf("event: none (poll %d, read %zd)\n", ready, n);

    /* Bad requests: the driver's own answers. */
    uint32_t fb;
    printf("ADDFB of an unknown handle: %s\n", result(drmModeAddFB(fd, width, height, 24, 32, pitch, 0x7777, &fb)));
    printf("PAGE_FLIP with an unknown flag: %s\n", result(drmModePageFlip(fd, crtc, front.fb, 0x80, NULL)));
    printf("RMFB of an unknown framebuffer: %s\n", result(drmModeRmFB(fd, 0x7777)));

    /* Master moves to the second file. */
    printf("DROP_MASTER: %s\n", result(drmDropMaster(fd)));
    printf("SET_MASTER on the second file: %s\n", result(drmSetMaster(other)));
    printf("SETCRTC from the first file now: %s\n", result(drmModeSetCrtc(fd, crtc, front.fb, 0, 0, &connector_id, 1, &mode)));
    printf("master: first file %s, second file %s\n", drmIsMaster(fd) ? "yes" : "no", drmIsMaster(other) ? "yes" : "no");

    drmModeRmFB(fd, back.fb);
    drmModeRmFB(fd, front.fb);
    munmap(front.pixels, size);
    munmap(back.pixels, size);
    close(other);
    close(fd);
    return 0;
}
