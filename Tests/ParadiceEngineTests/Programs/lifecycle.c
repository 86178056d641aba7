/* dup, dup2, F_DUPFD, F_GETFL/F_SETFL, fork (the child shares the parent's forwarded files, and its
 * close drops only its own reference), and exec with and without close-on-exec. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static int check(int ok, const char *what) {
    if (!ok) { fprintf(stderr, "FAILED: %s (errno %d)\n", what, errno); exit(1); }
    return 1;
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "exec-child") == 0) {
        /* After exec: the close-on-exec descriptor is gone; the other survives as a plain descriptor. */
        int gone = atoi(argv[2]);
        check(fcntl(gone, F_GETFD) == -1 && errno == EBADF, "close-on-exec honoured");
        printf("exec child ok\n");
        return 0;
    }
    int m = open("/dev/ptmx", O_RDWR | O_NOCTTY);
    check(m >= 0, "open");
    struct winsize w = { 33, 77 }, back;
    check(ioctl(m, TIOCSWINSZ, &w) == 0, "TIOCSWINSZ");
    int d = dup(m);
    check(d >= 0 && ioctl(d, TIOCGWINSZ, &back) == 0 && back.ws_row == 33, "dup");
    int d2 = dup2(m, 50);
    check(d2 == 50 && ioctl(50, TIOCGWINSZ, &back) == 0 && back.ws_col == 77, "dup2");
    int d3 = fcntl(m, F_DUPFD_CLOEXEC, 60);
    check(d3 >= 60 && ioctl(d3, TIOCGWINSZ, &back) == 0, "F_DUPFD_CLOEXEC");
    check(close(m) == 0 && ioctl(d, TIOCGWINSZ, &back) == 0, "a dup outlives the closed original");
    check((fcntl(d, F_GETFL) & O_ACCMODE) == O_RDWR, "F_GETFL");
    check(fcntl(d, F_SETFL, O_NONBLOCK) == 0 && (fcntl(d, F_GETFL) & O_NONBLOCK), "F_SETFL");
    char c;
    check(read(d, &c, 1) == -1 && errno == EAGAIN, "non-blocking read is EAGAIN");
    check(ioctl(999, TIOCGWINSZ, &back) == -1 && errno == EBADF, "EBADF for a descriptor that is not open");
    check(pread(d, &c, 1, 0) == -1 && errno == ESPIPE, "pread on a pty is ESPIPE, as the driver says");
    int d4 = dup3(d, 70, O_CLOEXEC);
    check(d4 == 70 && ioctl(70, TIOCGWINSZ, &back) == 0 && (fcntl(70, F_GETFD) & FD_CLOEXEC), "dup3");
    check(close(70) == 0, "close a dup");
    FILE *stream = fopen("/dev/ptmx", "r+");
    check(stream && fileno(stream) >= 0 && ioctl(fileno(stream), TIOCGWINSZ, &back) == 0,
          "fileno of a forwarded fopen stream is a forwarded descriptor (libstdc++ reads through it)");
    fclose(stream);
    struct stat st;
    check(stat("/dev/ptmx", &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 5 && minor(st.st_rdev) == 2,
          "stat on a forwarded path: the backend's node");

    pid_t child = fork();
    if (child == 0) {
        /* The child's inherited descriptors name the same files as the parent's… */
        if (ioctl(d, TIOCGWINSZ, &back) != 0 || back.ws_row != 33) _exit(10);
        struct winsize changed = { 44, 77 };
        if (ioctl(d, TIOCSWINSZ, &changed) != 0) _exit(11);
        /* …its own opens work too, and closing its copy leaves the parent's open. */
        int mine = open("/dev/ptmx", O_RDWR | O_NOCTTY);
        if (mine < 0 || ioctl(mine, TIOCGWINSZ, &back) != 0) _exit(12);
        if (close(d) != 0) _exit(13);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork: the child uses the inherited file");
    check(ioctl(d, TIOCGWINSZ, &back) == 0 && back.ws_row == 44, "the parent sees the child's change, and its file is still open");

    char gone[16];
    snprintf(gone, sizeof gone, "%d", d3);
    fflush(stdout);
    pid_t e = fork();
    if (e == 0) { execl(argv[0], argv[0], "exec-child", gone, (char *)NULL); _exit(12); }
    waitpid(e, &status, 0);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exec");
    printf("lifecycle ok\n");
    return 0;
}
