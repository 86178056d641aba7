/* Several threads use forwarded ptys at once, while one of them sits in a blocking read. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

static int blocked_fd;
static volatile int done_workers;

static void *reader(void *arg) {
    char buffer[16];
    ssize_t n = read(blocked_fd, buffer, sizeof buffer);   /* until main writes to the slave */
    return (void *)(long)n;
}

static void *worker(void *arg) {
    long id = (long)arg;
    int m = open("/dev/ptmx", O_RDWR | O_NOCTTY);
    if (m < 0) { perror("open"); exit(2); }
    for (int i = 0; i < 200; i++) {
        struct winsize w = { .ws_row = (unsigned short)(id + 1), .ws_col = (unsigned short)i };
        struct winsize back;
        if (ioctl(m, TIOCSWINSZ, &w) != 0 || ioctl(m, TIOCGWINSZ, &back) != 0) { perror("ioctl"); exit(3); }
        if (back.ws_row != w.ws_row || back.ws_col != w.ws_col) { fprintf(stderr, "thread %ld: mismatch\n", id); exit(4); }
    }
    close(m);
    __sync_fetch_and_add(&done_workers, 1);
    return NULL;
}

int main(void) {
    int m = open("/dev/ptmx", O_RDWR | O_NOCTTY);
    int unlock = 0, n = 0;
    if (m < 0 || ioctl(m, TIOCSPTLCK, &unlock) != 0 || ioctl(m, TIOCGPTN, &n) != 0) { perror("ptmx"); return 1; }
    char name[32];
    snprintf(name, sizeof name, "/dev/pts/%d", n);
    int s = open(name, O_RDWR | O_NOCTTY);
    struct termios t;
    tcgetattr(s, &t);
    cfmakeraw(&t);
    tcsetattr(s, TCSANOW, &t);
    blocked_fd = m;
    pthread_t r, w[4];
    pthread_create(&r, NULL, reader, NULL);
    for (long i = 0; i < 4; i++) pthread_create(&w[i], NULL, worker, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(w[i], NULL);
    if (write(s, "wake", 4) != 4) { perror("write"); return 5; }
    void *got;
    pthread_join(r, &got);
    printf("workers %d, reader got %ld bytes\n", done_workers, (long)got);
    return done_workers == 4 && (long)got == 4 ? 0 : 6;
}
