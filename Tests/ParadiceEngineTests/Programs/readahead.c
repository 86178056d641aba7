/* poll then read, as an event loop does. `pty ROUNDS`: ROUNDS times, a chunk written to the slave of a
 * pty master (the master forwarded, the slave local), one poll of the master, then reads of 3 bytes until
 * the chunk is in; then the slave closes and one poll and one read show the hangup. Prints every byte
 * read and each read's errno after the hangup, the same natively and forwarded. `file PATH ROUNDS`: a
 * poll and a read of 16 bytes, ROUNDS times. `fork`: the parent polls the master and reads part of a
 * chunk, forks, and reads the rest; the child reads the next chunk; then the parent polls while the child
 * reads part of a third, and the parent the rest: each byte is read once, by the process that reads it
 * natively. `exec`: the parent reads part of a chunk, an exec of a missing program fails, it reads a little
 * more and execs itself (`exec-child`), keeping the master, while a second master opened with O_CLOEXEC
 * goes with the exec: the new program reads the rest of the chunk and one written after, and finds the
 * second master's slave hung up. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static int wait_readable(int fd) {
    struct pollfd p = { fd, POLLIN, 0 };
    int r = poll(&p, 1, 10000);
    return r == 1 && (p.revents & POLLIN) ? 0 : -1;
}

static void print_read(const char *who, int fd, size_t count) {
    char b[64];
    ssize_t n = read(fd, b, count < sizeof b ? count : sizeof b);
    if (n < 0) printf("%s: read %s\n", who, strerror(errno));
    else printf("%s: read \"%.*s\"\n", who, (int)n, b);
    fflush(stdout);
}

static int fork_between_reads(int master, int slave) {
    const char *first = "abcdefghij", *second = "klm", *third = "xyz!";
    int go[2], polling[2];
    if (pipe(go) != 0 || pipe(polling) != 0 || write(slave, first, strlen(first)) != (ssize_t)strlen(first) ||
        wait_readable(master) != 0) {
        perror("first chunk");
        return 1;
    }
    print_read("parent", master, 3);
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child == 0) {
        char c;
        if (read(go[0], &c, 1) != 1) _exit(1);
        if (wait_readable(master) != 0) { printf("child: not readable\n"); fflush(stdout); _exit(1); }
        print_read("child", master, 64);
        /* While the parent polls the master too: its poll takes none of the bytes the child reads. */
        if (read(polling[0], &c, 1) != 1) _exit(1);
        usleep(200000);
        if (write(slave, third, strlen(third)) != (ssize_t)strlen(third)) _exit(1);
        if (wait_readable(master) != 0) { printf("child: not readable\n"); fflush(stdout); _exit(1); }
        print_read("child", master, 3);
        _exit(0);
    }
    print_read("parent", master, 7);
    if (write(slave, second, strlen(second)) != (ssize_t)strlen(second) || write(go[1], "g", 1) != 1 ||
        write(polling[1], "p", 1) != 1) {
        perror("second chunk");
        return 1;
    }
    struct pollfd p = { master, POLLIN, 0 };
    int polled = poll(&p, 1, 10000);
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("parent: the child failed\n");
        return 1;
    }
    printf("parent: poll %d%s\n", polled, p.revents & POLLIN ? " POLLIN" : "");
    print_read("parent", master, 64);
    return 0;
}

static int open_pty(int flags, int *slave);

static int exec_between_reads(const char *self, int master, int slave) {
    int second_slave;
    if (open_pty(O_CLOEXEC, &second_slave) < 0) return 1;
    const char *chunk = "abcdefghij";
    if (write(slave, chunk, strlen(chunk)) != (ssize_t)strlen(chunk) || wait_readable(master) != 0) {
        perror("chunk");
        return 1;
    }
    print_read("before exec", master, 3);
    execl("/nonexistent/program", "program", (char *)NULL);
    printf("exec of a missing program: %s\n", strerror(errno));
    print_read("before exec", master, 2);
    char m[16], s[16], s2[16];
    snprintf(m, sizeof m, "%d", master);
    snprintf(s, sizeof s, "%d", slave);
    snprintf(s2, sizeof s2, "%d", second_slave);
    fflush(stdout);
    execl(self, self, "exec-child", m, s, s2, (char *)NULL);
    perror("exec");
    return 1;
}

static int after_exec(int master, int slave, int second_slave) {
    if (wait_readable(master) != 0) { printf("after exec: not readable\n"); return 1; }
    print_read("after exec", master, 64);
    if (write(slave, "klm", 3) != 3 || wait_readable(master) != 0) { printf("after exec: not readable\n"); return 1; }
    print_read("after exec", master, 64);
    struct pollfd p = { second_slave, POLLIN, 0 };
    int polled = poll(&p, 1, 10000);
    printf("after exec: the slave of the close-on-exec master: %s\n", polled == 1 && (p.revents & POLLHUP) ? "hung up" : "open");
    return 0;
}

/* A pty master (forwarded) and its slave (local, raw), or -1. */
static int open_pty(int flags, int *slave) {
    int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | flags);
    int unlock = 0;   /* unlockpt without grantpt: devpts gives the slave to its opener already */
    if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) != 0) { perror("ptmx"); return -1; }
    int number;
    if (ioctl(master, TIOCGPTN, &number) != 0) { perror("TIOCGPTN"); return -1; }
    char path[64];
    snprintf(path, sizeof path, "/dev/pts/%d", number);
    *slave = open(path, O_RDWR | O_NOCTTY);
    struct termios t;
    if (*slave < 0 || tcgetattr(*slave, &t) != 0) { perror("slave"); return -1; }
    cfmakeraw(&t);   /* the bytes pass as written */
    tcsetattr(*slave, TCSANOW, &t);
    return master;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "exec-child") == 0) return after_exec(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    if (argc == 4 && strcmp(argv[1], "file") == 0) {
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) { perror("open"); return 1; }
        for (int i = 0; i < atoi(argv[3]); i++) {
            char b[16];
            if (wait_readable(fd) != 0 || read(fd, b, sizeof b) != sizeof b) { perror("poll/read"); return 1; }
        }
        printf("read %d\n", atoi(argv[3]));
        return 0;
    }
    int forks = argc == 2 && strcmp(argv[1], "fork") == 0, execs = argc == 2 && strcmp(argv[1], "exec") == 0;
    if (!forks && !execs && (argc != 3 || strcmp(argv[1], "pty") != 0)) return 2;
    int slave, master = open_pty(0, &slave);
    if (master < 0) return 1;
    if (forks) return fork_between_reads(master, slave);
    if (execs) return exec_between_reads(argv[0], master, slave);
    int rounds = atoi(argv[2]);
    for (int i = 0; i < rounds; i++) {
        char chunk[32];
        int length = snprintf(chunk, sizeof chunk, "chunk %d of %d;", i, rounds);
        if (write(slave, chunk, length) != length) { perror("write"); return 1; }
        int got = 0;
        while (got < length) {
            if (wait_readable(master) != 0) { fprintf(stderr, "not readable after %d of round %d\n", got, i); return 1; }
            char b[3];
            ssize_t n = read(master, b, sizeof b);
            if (n <= 0) { perror("read"); return 1; }
            fwrite(b, 1, (size_t)n, stdout);
            got += (int)n;
        }
    }
    close(slave);
    struct pollfd p = { master, POLLIN, 0 };
    int polled = poll(&p, 1, 10000);
    char b[16];
    ssize_t n = read(master, b, sizeof b);
    int e = errno;
    ssize_t again = read(master, b, sizeof b);
    printf("\nhangup poll %d %s, read %zd %s, again %zd %s\n", polled, p.revents & POLLHUP ? "POLLHUP" : "-", n,
           n < 0 ? strerror(e) : "-", again, again < 0 ? strerror(errno) : "-");
    return 0;
}
