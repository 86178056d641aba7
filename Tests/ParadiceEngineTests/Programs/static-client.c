/* A statically linked client (gcc -static): no dynamic loader, so no LD_PRELOAD can reach it; only device
 * nodes that behave like the real ones can. The same binary runs natively in the driver VM and in a guest
 * VM on the Paradice module's nodes; its output must be the same.
 *
 *   static-client v4l2 DEVICE FRAMES     MMAP streaming: QUERYCAP, S_FMT 640x360 YUYV, REQBUFS, QUERYBUF, mmap,
 *                                        QBUF, STREAMON, DQBUF of FRAMES frames (each checked for vivid's
 *                                        colour bars), STREAMOFF
 *   static-client evdev DEVICE EVENTS    EVIOCGNAME, EVIOCGID, then blocking reads of EVENTS input_events
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/input.h>
#include <linux/videodev2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define WIDTH 640
#define HEIGHT 360
#define BUFFERS 4

static int xioctl(int fd, unsigned long request, void *arg, const char *name) {
    int r;
    do { r = ioctl(fd, request, arg); } while (r < 0 && errno == EINTR);
    if (r < 0) { printf("%s: %s\n", name, strerror(errno)); exit(1); }
    return r;
}

/* FNV-1a of a row: equal rows of two runs mean the same pattern, byte for byte. */
static uint32_t fnv(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static int v4l2(const char *device, int frames) {
    int fd = open(device, O_RDWR);
    if (fd < 0) { printf("open %s: %s\n", device, strerror(errno)); return 1; }
    struct v4l2_capability cap = {0};
    xioctl(fd, VIDIOC_QUERYCAP, &cap, "VIDIOC_QUERYCAP");
    printf("driver %s card %s device caps 0x%08x\n", cap.driver, cap.card, cap.device_caps);
    struct v4l2_format fmt = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
    fmt.fmt.pix.width = WIDTH;
    fmt.fmt.pix.height = HEIGHT;
    fmt.fmt.pix.pixelformat = V4L2_PIX_FMT_YUYV;
    fmt.fmt.pix.field = V4L2_FIELD_NONE;
    xioctl(fd, VIDIOC_S_FMT, &fmt, "VIDIOC_S_FMT");
    printf("format %ux%u bytesperline %u sizeimage %u\n", fmt.fmt.pix.width, fmt.fmt.pix.height,
           fmt.fmt.pix.bytesperline, fmt.fmt.pix.sizeimage);
    struct v4l2_requestbuffers req = {.count = BUFFERS, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP};
    xioctl(fd, VIDIOC_REQBUFS, &req, "VIDIOC_REQBUFS");
    printf("buffers %u\n", req.count);
    uint8_t *maps[BUFFERS] = {0};
    size_t lengths[BUFFERS] = {0};
    for (unsigned i = 0; i < req.count && i < BUFFERS; i++) {
        struct v4l2_buffer b = {.index = i, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP};
        xioctl(fd, VIDIOC_QUERYBUF, &b, "VIDIOC_QUERYBUF");
        lengths[i] = b.length;
        maps[i] = mmap(NULL, b.length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, b.m.offset);
        if (maps[i] == MAP_FAILED) { printf("mmap buffer %u: %s\n", i, strerror(errno)); return 1; }
        memset(maps[i], 0, b.length);   /* a stale frame must not pass for a new one */
        printf("buffer %u length %u\n", i, b.length);
        xioctl(fd, VIDIOC_QBUF, &b, "VIDIOC_QBUF");
    }
    int type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    xioctl(fd, VIDIOC_STREAMON, &type, "VIDIOC_STREAMON");
    int bad = 0;
    for (int f = 0; f < frames; f++) {
        struct v4l2_buffer b = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP};
        xioctl(fd, VIDIOC_DQBUF, &b, "VIDIOC_DQBUF");
        if (b.index >= BUFFERS || !maps[b.index]) { printf("DQBUF gave buffer %u\n", b.index); return 1; }
        const uint8_t *frame = maps[b.index];
        /* vivid's 75% colour bars: eight bars, each its own luma; the bottom rows carry no text. */
        const uint8_t *row = frame + (size_t)(HEIGHT - 40) * fmt.fmt.pix.bytesperline;
        unsigned bar = fmt.fmt.pix.bytesperline / 8;
        char lumas[64] = "";
        int distinct = 0, seen[256] = {0};
        for (int i = 0; i < 8; i++) {
            uint8_t y = row[i * bar + bar / 2 - (bar / 2) % 2];   /* a Y byte of YUYV, mid-bar */
            snprintf(lumas + strlen(lumas), sizeof lumas - strlen(lumas), "%s%u", i ? " " : "", y);
            if (!seen[y]++) distinct++;
        }
        if (b.bytesused != fmt.fmt.pix.sizeimage || distinct < 6) bad++;
        printf("frame %d: %u bytes, bar lumas %s, row crc %08x\n", f, b.bytesused, lumas, fnv(row, fmt.fmt.pix.bytesperline));
        xioctl(fd, VIDIOC_QBUF, &b, "VIDIOC_QBUF");
    }
    xioctl(fd, VIDIOC_STREAMOFF, &type, "VIDIOC_STREAMOFF");
    for (unsigned i = 0; i < BUFFERS; i++) if (maps[i]) munmap(maps[i], lengths[i]);
    req.count = 0;
    xioctl(fd, VIDIOC_REQBUFS, &req, "VIDIOC_REQBUFS 0");
    close(fd);
    printf("%d frames, %d without the pattern\n", frames, bad);
    return bad != 0;
}

static int evdev(const char *device, int events) {
    int fd = open(device, O_RDONLY);
    if (fd < 0) { printf("open %s: %s\n", device, strerror(errno)); return 1; }
    char name[256] = "";
    xioctl(fd, EVIOCGNAME(sizeof name - 1), name, "EVIOCGNAME");
    struct input_id id;
    xioctl(fd, EVIOCGID, &id, "EVIOCGID");
    printf("name \"%s\" bus 0x%x vendor 0x%x product 0x%x version 0x%x\n", name, id.bustype, id.vendor, id.product, id.version);
    printf("reading\n");
    fflush(stdout);
    for (int n = 0; n < events;) {
        struct input_event ev[8];
        ssize_t got = read(fd, ev, sizeof ev);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) { printf("read: %s\n", strerror(errno)); return 1; }
        if (got == 0 || got % sizeof ev[0]) { printf("read gave %zd bytes\n", got); return 1; }
        for (size_t i = 0; i < got / sizeof ev[0] && n < events; i++, n++)
            printf("event %u %u %d at %ld.%06ld\n", ev[i].type, ev[i].code, ev[i].value, (long)ev[i].input_event_sec,
                   (long)ev[i].input_event_usec);
    }
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && !strcmp(argv[1], "v4l2")) return v4l2(argv[2], atoi(argv[3]));
    if (argc == 4 && !strcmp(argv[1], "evdev")) return evdev(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: static-client v4l2 DEVICE FRAMES | evdev DEVICE EVENTS\n");
    return 2;
}
