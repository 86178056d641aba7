/* A close racing a read: one thread blocks reading a forwarded pty slave while another closes that
 * descriptor, then sends the slave a line through the master. As locally, the read in flight keeps its
 * file and returns the line; the descriptor is gone (EBADF) for whatever comes after. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static int slave;
static pid_t reader_tid;
static char got[64];
static ssize_t got_length;

static void *reader(void *unused) {
    (void)unused;
    reader_tid = (pid_t)syscall(SYS_gettid);
    got_length = read(slave, got, sizeof got - 1);
    return NULL;
}

/* The reader's scheduler state, read with raw system calls (nothing of the frontend in the way). */
static char state_of(pid_t tid) {
    char path[64], text[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY);
    if (fd < 0) return '?';
    long n = syscall(SYS_read, fd, text, sizeof text - 1);
    syscall(SYS_close, fd);
    if (n <= 0) return '?';
    text[n] = 0;
    char *end = strrchr(text, ')');
    return end && end[1] == ' ' ? end[2] : '?';
}

int main(void) {
    /* glibc's unlockpt and ptsname call the kernel directly: the ioctls themselves are forwarded. */
    int master = open("/dev/ptmx", O_RDWR | O_NOCTTY), unlock = 0;
    unsigned int number;
    if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) != 0 || ioctl(master, TIOCGPTN, &number) != 0) { perror("ptmx"); return 1; }
    char name[64];
    snprintf(name, sizeof name, "/dev/pts/%u", number);
    slave = open(name, O_RDWR | O_NOCTTY);
    if (slave < 0) { perror("slave"); return 1; }
    pthread_t thread;
    pthread_create(&thread, NULL, reader, NULL);
    /* Once the reader sleeps, it sleeps in the forwarded read: nothing else in it waits. */
    while (__atomic_load_n(&reader_tid, __ATOMIC_SEQ_CST) == 0 || state_of(reader_tid) != 'S') usleep(1000);
    if (close(slave) != 0) { perror("close"); return 1; }
    if (write(master, "after\n", 6) != 6) { perror("write"); return 1; }
    pthread_join(thread, NULL);
    char byte;
    ssize_t again = read(slave, &byte, 1);
    int e = errno;
    printf("in-flight read got %zd: %.*s", got_length, got_length > 0 ? (int)got_length : 0, got);
    printf("closed descriptor: %s\n", again < 0 && e == EBADF ? "EBADF" : "still open");
    return 0;
}
