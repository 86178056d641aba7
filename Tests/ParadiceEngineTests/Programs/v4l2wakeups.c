/* Wake-ups from a V4L2 driver's event queue, counted: `v4l2wakeups DEVICE COUNT`.
 *
 * One descriptor subscribes to the brightness control's change events; a second thread sets the control
 * through another descriptor each time the first is about to wait, so the event may come before the
 * wait starts, while it is being set up, or while it sleeps. The waits take turns: epoll (EPOLLPRI),
 * poll (POLLPRI) and select (exceptfds), poll and select on the device alone or next to a local pipe,
 * and epoll right after a short poll of the device for something else (POLLOUT, which a capture device
 * never reports), which must leave the epoll set's interest in place.
 * After each wake-up VIDIOC_DQEVENT must return exactly the change just made. A wait that sees nothing
 * within 10 s is a lost wake-up: the program names it and exits 1. */
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 10000

static int setter;            /* the second descriptor: the control is set through it */
static int go[2];             /* main → setter: one byte per change to make */

static int value_of(int i) { return i % 2 ? 200 : 100; }   /* each change differs from the last */

static void *set_controls(void *unused) {
    (void)unused;
    unsigned char token;
    for (int i = 0; read(go[0], &token, 1) == 1; i++) {
        if (i % 4 == 1) usleep(1000);   /* now and then while the wait already sleeps */
        struct v4l2_control c = { V4L2_CID_BRIGHTNESS, value_of(i) };
        if (ioctl(setter, VIDIOC_S_CTRL, &c) != 0) { perror("VIDIOC_S_CTRL"); exit(4); }
    }
    return NULL;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: v4l2wakeups DEVICE COUNT\n"); return 2; }
    int count = atoi(argv[2]);
    int fd = open(argv[1], O_RDWR | O_NONBLOCK);
    setter = open(argv[1], O_RDWR);
    if (fd < 0 || setter < 0) { perror(argv[1]); return 2; }
    struct v4l2_control start = { V4L2_CID_BRIGHTNESS, 128 };
    if (ioctl(setter, VIDIOC_S_CTRL, &start) != 0) { perror("VIDIOC_S_CTRL"); return 2; }
    struct v4l2_event_subscription sub = { .type = V4L2_EVENT_CTRL, .id = V4L2_CID_BRIGHTNESS };
    if (ioctl(fd, VIDIOC_SUBSCRIBE_EVENT, &sub) != 0) { perror("VIDIOC_SUBSCRIBE_EVENT"); return 2; }
    int local[2];
    if (pipe(go) != 0 || pipe(local) != 0) return 2;
    int ep = epoll_create1(0);
    struct epoll_event interest = { .events = EPOLLPRI, .data.fd = fd };
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &interest) != 0) { perror("epoll"); return 2; }
    pthread_t thread;
    pthread_create(&thread, NULL, set_controls, NULL);

    static const char *names[] = { "epoll", "poll", "poll beside a pipe", "select", "select beside a pipe",
                                   "epoll after a poll for POLLOUT" };
    int done[6] = { 0 };
    double began = now();
    for (int i = 0; i < count; i++) {
        int kind = i % 6;
        unsigned char token = 1;
        if (write(go[1], &token, 1) != 1) return 2;
        int woke = 0;
        double waited = now();
        if (kind == 5) {
            struct pollfd fds[2] = { { fd, POLLOUT, 0 }, { local[0], POLLIN, 0 } };
            int n = poll(fds, 2, 1);
            if (n != 0) { printf("wake-up %d (%s): the poll for POLLOUT gave %d (revents %#x)\n", i, names[kind], n, fds[0].revents); return 1; }
        }
        if (kind == 0 || kind == 5) {
            struct epoll_event got;
            int n = epoll_wait(ep, &got, 1, WAIT_MS);
            woke = n == 1 && got.data.fd == fd && (got.events & EPOLLPRI);
            if (n < 0) perror("epoll_wait");
        } else if (kind == 1 || kind == 2) {
            struct pollfd fds[2] = { { fd, POLLPRI, 0 }, { local[0], POLLIN, 0 } };
            int n = poll(fds, kind == 1 ? 1 : 2, WAIT_MS);
            woke = n == 1 && (fds[0].revents & POLLPRI);
            if (n < 0) perror("poll");
        } else {
            fd_set except, readable;
            FD_ZERO(&except);
            FD_ZERO(&readable);
            FD_SET(fd, &except);
            if (kind == 4) FD_SET(local[0], &readable);
            struct timeval timeout = { WAIT_MS / 1000, 0 };
            int top = (kind == 4 && local[0] > fd ? local[0] : fd) + 1;
            int n = select(top, kind == 4 ? &readable : NULL, NULL, &except, &timeout);
            woke = n == 1 && FD_ISSET(fd, &except);
            if (n < 0) perror("select");
        }
        if (!woke) {
            printf("wake-up %d (%s) lost: nothing within %.1f s\n", i, names[kind], now() - waited);
            return 1;
        }
        struct v4l2_event event;
        memset(&event, 0, sizeof event);
        if (ioctl(fd, VIDIOC_DQEVENT, &event) != 0) { printf("wake-up %d (%s): VIDIOC_DQEVENT: %s\n", i, names[kind], strerror(errno)); return 1; }
        if (event.type != V4L2_EVENT_CTRL || event.id != V4L2_CID_BRIGHTNESS || event.u.ctrl.value != value_of(i) || event.pending != 0) {
            printf("wake-up %d (%s): event type %u id %#x value %d pending %u, expected the change to %d alone\n",
                   i, names[kind], event.type, event.id, event.u.ctrl.value, event.pending, value_of(i));
            return 1;
        }
        done[kind]++;
    }
    double seconds = now() - began;
    close(go[1]);
    pthread_join(thread, NULL);
    ioctl(setter, VIDIOC_S_CTRL, &start);   /* the default again, for whoever reads it next */
    printf("wake-ups %d in %.1f s: epoll %d, poll %d, select %d; lost 0\n", count, seconds, done[0] + done[5], done[1] + done[2], done[3] + done[4]);
    return 0;
}
