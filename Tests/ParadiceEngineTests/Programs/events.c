/* epoll and stdio on forwarded descriptors, next to a local pipe in the same epoll set. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/uio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *path = argv[1];                  /* a pty slave; the test writes lines into its master */
    int fd = open(path, O_RDWR | O_NOCTTY);
    if (fd < 0) { perror("open"); return 1; }
    int pipefd[2];
    if (pipe(pipefd) != 0) return 2;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event in = { .events = EPOLLIN, .data.fd = fd };
    struct epoll_event local = { .events = EPOLLIN, .data.fd = pipefd[0] };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &in) != 0 || epoll_ctl(ep, EPOLL_CTL_ADD, pipefd[0], &local) != 0) { perror("epoll_ctl"); return 3; }
    struct epoll_event got[4];
    int n = epoll_wait(ep, got, 4, 200);
    printf("before: %d\n", n);
    printf("ready\n");
    fflush(stdout);
    n = epoll_wait(ep, got, 4, 5000);
    printf("after: %d ready, forwarded %s\n", n, n == 1 && got[0].data.fd == fd ? "yes" : "no");
    char line[64];
    ssize_t k = read(fd, line, sizeof line);
    printf("read %zd: %.*s", k, (int)(k > 0 ? k : 0), line);
    /* Drained: no longer ready, by epoll, ppoll and pselect alike. */
    n = epoll_wait(ep, got, 4, 100);
    printf("drained: %d\n", n);
    struct pollfd pf = { fd, POLLIN, 0 };
    struct timespec short_wait = { 0, 50 * 1000 * 1000 };
    fd_set set;
    FD_ZERO(&set);
    FD_SET(fd, &set);
    printf("ppoll %d pselect %d\n", ppoll(&pf, 1, &short_wait, NULL), pselect(fd + 1, &set, NULL, NULL, &short_wait, NULL));
    printf("second\n");
    fflush(stdout);
    pf.revents = 0;
    FD_SET(fd, &set);
    struct timespec long_wait = { 5, 0 };
    int p1 = ppoll(&pf, 1, &long_wait, NULL);
    int p2 = pselect(fd + 1, &set, NULL, NULL, &long_wait, NULL);
    char a[3], b[16];
    struct iovec into[2] = { { a, sizeof a }, { b, sizeof b } };
    ssize_t got2 = readv(fd, into, 2);
    printf("ready again: ppoll %d pselect %d, readv %zd: %.3s|%.*s", p1, p2, got2, a, (int)(got2 > 3 ? got2 - 3 : 0), b);

    /* writev through the forwarded descriptor, and stdio through fopen. */
    struct iovec parts[2] = { { "vec", 3 }, { "tor\\n", 5 } };
    parts[1].iov_base = "tor\n";
    parts[1].iov_len = 4;
    if (writev(fd, parts, 2) != 7) { perror("writev"); return 4; }
    FILE *stream = fopen(path, "r+");
    if (!stream) { perror("fopen"); return 5; }
    fprintf(stream, "stdio\n");
    fflush(stream);
    fclose(stream);
    printf("done\n");
    return 0;
}
