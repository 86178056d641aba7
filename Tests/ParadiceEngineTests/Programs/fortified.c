/* Built with -O2 -D_FORTIFY_SOURCE=2 -D_FILE_OFFSET_BITS=64, with sizes and flags the compiler cannot
 * prove safe, so that the calls go to __open64_2, __read_chk and __poll_chk. */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 9;
    const char *path = argv[1];                 /* a pty slave the test writes into natively */
    size_t want = (size_t)atoi(argv[2]);        /* the test passes 64 */
    int odd = want == 1000;                     /* never, but the compiler cannot know */
    int flags = O_RDWR | (odd ? O_APPEND : O_NOCTTY);
    int fd = open(path, flags);
    if (fd < 0) { perror("open"); return 1; }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode)) { fprintf(stderr, "fstat: not a character device\n"); return 2; }
    if (!isatty(fd)) { fprintf(stderr, "isatty: no\n"); return 3; }
    struct pollfd p = { fd, POLLIN, 0 };
    printf("ready\n");
    fflush(stdout);
    nfds_t count = (nfds_t)(1 + odd);
    if (poll(&p, count, 5000) != 1) { fprintf(stderr, "poll: nothing\n"); return 4; }
    char buffer[64];
    ssize_t n = read(fd, buffer, want);
    if (n <= 0) { perror("read"); return 5; }
    int queued = -1;
    ioctl(fd, FIONREAD, &queued);
    printf("read %zd bytes: %.*s, major %u minor %u, queued %d\n", n, (int)n, buffer,
           (unsigned)((st.st_rdev >> 8) & 0xfff), (unsigned)((st.st_rdev & 0xff) | ((st.st_rdev >> 12) & 0xfff00)), queued);
    return 0;
}
