/* epoll and stdio on forwarded descriptors, next to a local pipe in the same epoll set. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
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
    /* Drained: no longer ready. */
    n = epoll_wait(ep, got, 4, 100);
    printf("drained: %d\n", n);

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
