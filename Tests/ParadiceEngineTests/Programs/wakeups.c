/* Forwarded wake-ups on a pty: COUNT waits, taking turns between epoll_wait, poll and select (poll and
 * select with a local pipe beside the pty, so that they wait on the forwarded file's events). Each wait
 * must return the next byte the writer sends; the byte is echoed back as the writer's cue for the next.
 * A wait that expires (5 s) or a byte out of sequence names the wait and the byte, and fails. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <termios.h>
#include <unistd.h>

#define WAIT_MS 5000

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: wakeups PTY COUNT\n"); return 2; }
    int count = atoi(argv[2]);
    int fd = open(argv[1], O_RDWR | O_NOCTTY);
    if (fd < 0) { perror("open"); return 1; }
    struct termios t;
    if (tcgetattr(fd, &t) != 0) { perror("tcgetattr"); return 1; }
    cfmakeraw(&t);
    if (tcsetattr(fd, TCSANOW, &t) != 0) { perror("tcsetattr"); return 1; }
    int idle[2];
    if (pipe(idle) != 0) { perror("pipe"); return 1; }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event interest = { .events = EPOLLIN, .data.fd = fd };
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &interest) != 0) { perror("epoll"); return 1; }
    if (write(fd, "R", 1) != 1) { perror("write ready"); return 1; }   /* the writer starts now */
    static const char *names[] = { "epoll_wait", "poll", "select" };
    int woken[3] = { 0 };
    for (int i = 0; i < count; i++) {
        int how = i % 3, ready = 0;
        unsigned char expected = (unsigned char)(i % 256);
        if (how == 0) {
            struct epoll_event e;
            int n = epoll_wait(ep, &e, 1, WAIT_MS);
            ready = n == 1 && (e.events & EPOLLIN) && e.data.fd == fd;
        } else if (how == 1) {
            struct pollfd p[2] = { { fd, POLLIN, 0 }, { idle[0], POLLIN, 0 } };
            int n = poll(p, 2, WAIT_MS);
            ready = n >= 1 && (p[0].revents & POLLIN) && !p[1].revents;
        } else {
            fd_set r;
            FD_ZERO(&r);
            FD_SET(fd, &r);
            FD_SET(idle[0], &r);
            struct timeval tv = { WAIT_MS / 1000, 0 };
            int n = select((fd > idle[0] ? fd : idle[0]) + 1, &r, NULL, NULL, &tv);
            ready = n >= 1 && FD_ISSET(fd, &r) && !FD_ISSET(idle[0], &r);
        }
        if (!ready) {
            printf("wait %d (%s) for byte %d: no wake-up within %d ms (%s)\n", i, names[how], expected, WAIT_MS,
                   errno ? strerror(errno) : "timed out");
            return 1;
        }
        unsigned char got;
        ssize_t k = read(fd, &got, 1);
        if (k != 1 || got != expected) {
            printf("wait %d (%s): read %zd byte(s), %d where %d was next\n", i, names[how], k, k == 1 ? got : -1, expected);
            return 1;
        }
        woken[how]++;
        if (write(fd, &got, 1) != 1) { perror("echo"); return 1; }
    }
    printf("%d wake-ups: epoll_wait %d, poll %d, select %d\n", count, woken[0], woken[1], woken[2]);
    return 0;
}
