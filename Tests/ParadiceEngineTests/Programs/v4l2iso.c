/* Two guests on one V4L2 capture node (vivid): what one may reach of the other's buffer queue.
 *
 *   v4l2iso own DEVICE INFOFILE DONEFILE
 *     allocates two MMAP capture buffers (REQBUFS), so its file owns the queue; asks buffer 0's offset
 *     (QUERYBUF), maps it, and maps it again through a second file of its own; writes "OFFSET LENGTH" to
 *     INFOFILE, then holds the queue until DONEFILE exists.
 *   v4l2iso reader DEVICE INFOFILE DONEFILE
 *     reads a frame with read(), so its file owns the queue (videobuf2's file I/O, with buffers of its own
 *     making); asks buffer 0's offset (QUERYBUF), writes "OFFSET LENGTH" to INFOFILE, holds it likewise.
 *   v4l2iso other DEVICE OFFSET LENGTH
 *     opens the device and tries the other's queue: QUERYBUF and QBUF of buffer 0, then mmap of OFFSET.
 * Each step prints its result or errno. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/videodev2.h>

static int call(int fd, unsigned long request, void *argument) {
    int r;
    do r = ioctl(fd, request, argument); while (r < 0 && errno == EINTR);
    return r;
}

static void report(const char *what, int r) {
    if (r == 0) printf("%s: ok\n", what);
    else printf("%s: -1 %s\n", what, strerror(errno));
}

static void map(int fd, unsigned long offset, unsigned long length, const char *what) {
    void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)offset);
    report(what, p == MAP_FAILED ? -1 : 0);
    if (p != MAP_FAILED) munmap(p, length);
}

/* Writes "OFFSET LENGTH" to info_file (by a rename) and holds the queue while the other guest tries it:
 * up to 10 minutes, until done_file exists. */
static int hold(const char *info_file, const char *done_file, unsigned offset, unsigned length) {
    char temporary[4096];
    snprintf(temporary, sizeof temporary, "%s.tmp", info_file);
    FILE *f = fopen(temporary, "w");
    if (!f) { perror(temporary); return 1; }
    fprintf(f, "%u %u\n", offset, length);
    fclose(f);
    if (rename(temporary, info_file)) { perror("rename"); return 1; }
    for (int i = 0; i < 60000 && access(done_file, F_OK) != 0; i++) nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
    printf("done\n");
    return 0;
}

static int own(const char *path, const char *info_file, const char *done_file) {
    int a = open(path, O_RDWR | O_CLOEXEC), second = open(path, O_RDWR | O_CLOEXEC);
    if (a < 0 || second < 0) { perror(path); return 1; }
    struct v4l2_requestbuffers request = { .count = 2, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP };
    report("REQBUFS", call(a, VIDIOC_REQBUFS, &request));
    printf("buffers: %u\n", request.count);
    struct v4l2_buffer buffer = { .index = 0, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP };
    report("QUERYBUF", call(a, VIDIOC_QUERYBUF, &buffer));
    if (buffer.length == 0) { printf("no buffer\n"); return 1; }
    map(a, buffer.m.offset, buffer.length, "mmap of its own buffer");
    map(second, buffer.m.offset, buffer.length, "mmap of its own buffer in its second file");
    fflush(stdout);
    return hold(info_file, done_file, buffer.m.offset, buffer.length);
}

static int read_frames(const char *path, const char *info_file, const char *done_file) {
    int a = open(path, O_RDWR | O_CLOEXEC);
    if (a < 0) { perror(path); return 1; }
    struct v4l2_format format = { .type = V4L2_BUF_TYPE_VIDEO_CAPTURE };
    report("G_FMT", call(a, VIDIOC_G_FMT, &format));
    size_t size = format.fmt.pix.sizeimage ? format.fmt.pix.sizeimage : 1 << 20;
    char *frame = malloc(size);
    ssize_t n;
    do n = read(a, frame, size); while (n < 0 && errno == EINTR);
    report("read of a frame", n > 0 ? 0 : -1);
    free(frame);
    struct v4l2_buffer buffer = { .index = 0, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP };
    report("QUERYBUF", call(a, VIDIOC_QUERYBUF, &buffer));
    if (buffer.length == 0) { printf("no buffer\n"); return 1; }
    fflush(stdout);
    return hold(info_file, done_file, buffer.m.offset, buffer.length);
}

static int try_other(const char *path, unsigned long offset, unsigned long length) {
    int b = open(path, O_RDWR | O_CLOEXEC);
    if (b < 0) { perror(path); return 1; }
    struct v4l2_buffer buffer = { .index = 0, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP };
    report("QUERYBUF of the other's buffer", call(b, VIDIOC_QUERYBUF, &buffer));
    printf("its offset: %s\n", buffer.m.offset == offset ? "the same" : "another");
    struct v4l2_buffer queued = { .index = 0, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP };
    report("QBUF of the other's buffer", call(b, VIDIOC_QBUF, &queued));
    map(b, offset, length, "mmap of the other's buffer");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && strcmp(argv[1], "own") == 0) return own(argv[2], argv[3], argv[4]);
    if (argc == 5 && strcmp(argv[1], "reader") == 0) return read_frames(argv[2], argv[3], argv[4]);
    if (argc == 5 && strcmp(argv[1], "other") == 0)
        return try_other(argv[2], strtoul(argv[3], NULL, 10), strtoul(argv[4], NULL, 10));
    fprintf(stderr, "usage: v4l2iso own|reader DEVICE INFOFILE DONEFILE | v4l2iso other DEVICE OFFSET LENGTH\n");
    return 2;
}
