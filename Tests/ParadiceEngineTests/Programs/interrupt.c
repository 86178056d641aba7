/* pd_interrupt as a daemon serving a guest kernel's device node uses it: one thread serves a call on a
 * forwarded pty master, another learns that the call's caller got a signal. Against a real backend run
 * with --max-workers 1, so that a blocking call can be made to wait for the session's one thread.
 * One line per check: NAME RESULT ERRNO [BYTES]. A check that hangs is ended by the alarm. */
#define _GNU_SOURCE
#include "paradice_frontend.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static struct pd_connection *connection;
static uint32_t master;   /* the backend's handle of the pty master */
static const struct pd_descriptors handles = { .numbers_are_handles = 1 };

static void line(const char *name, int64_t result, int error, const char *bytes) {
    printf("%s %lld %d%s%s\n", name, (long long)result, error, bytes ? " " : "", bytes ? bytes : "");
    fflush(stdout);
}

static struct pd_target target(const struct pd_memory *memory, struct pd_interruption *i) {
    return (struct pd_target){ connection, master, NULL, memory, &handles, i };
}

static int64_t ioctl_on(uint32_t command, void *argument, struct pd_interruption *i, int *error) {
    struct pd_target t = target(&pd_self_memory, i);
    errno = 0;
    int64_t r = pd_file_ioctl(&t, command, (uintptr_t)argument, NULL);
    *error = r < 0 ? errno : 0;
    return r;
}

/* A read served on a thread of its own, as the daemon serves each call. */
struct served {
    pthread_t thread;
    struct pd_interruption interruption;
    int64_t result;
    int error;
    char bytes[16];
};

static void *serve_read(void *argument) {
    struct served *s = argument;
    struct pd_target t = target(&pd_self_memory, &s->interruption);
    errno = 0;
    s->result = pd_target_read(&t, (uintptr_t)s->bytes, sizeof s->bytes - 1, 0, 0, NULL);
    s->error = s->result < 0 ? errno : 0;
    return NULL;
}

/* Starts a read and returns once the backend has taken it: its request is sent (or even answered), and a
 * request sent after it, which the session serves after it, has been answered. */
static void start_read(struct served *s) {
    memset(s, 0, sizeof *s);
    pd_interruption_init(&s->interruption);
    pthread_create(&s->thread, NULL, serve_read, s);
    for (;;) {
        pthread_mutex_lock(&s->interruption.lock);
        int taken = s->interruption.request != 0 || s->interruption.ended;   /* sent, or already answered */
        pthread_mutex_unlock(&s->interruption.lock);
        if (taken) break;
        usleep(1000);
    }
    unsigned short ws[4];
    int error;
    (void)ioctl_on(0x5413 /* TIOCGWINSZ */, ws, NULL, &error);
}

static void finish_read(const char *name, struct served *s) {
    pthread_join(s->thread, NULL);
    if (s->result > 0) s->bytes[s->result] = 0;
    line(name, s->result, s->error, s->result > 0 ? s->bytes : NULL);
    pd_interruption_destroy(&s->interruption);
}

/* Memory whose reads (the core gathering what a PD_NEED asked for, between two requests of one call)
 * interrupt the call first: the interrupt comes between its NEED rounds. */
static struct pd_interruption *interrupted_between;
static int read_and_interrupt(void *context, uint64_t address, void *into, size_t length) {
    if (interrupted_between) pd_interrupt(connection, interrupted_between);
    return pd_self_memory.read(context, address, into, length);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: interrupt URL\n"); return 2; }
    alarm(60);
    connection = pd_conn_new();
    struct pd_stream stream;
    int dialed = pd_conn_dial(argv[1], &stream);
    struct pd_hello hello = { PD_MAGIC, PD_VERSION_MAJOR, PD_VERSION_MINOR, PD_CAP_FD_SLOTS, (uint32_t)getpid(), 0, 0 };
    struct pd_frame reply;
    const char *why = "";
    if (dialed != 0 || pd_conn_start(connection, &stream, &hello, "interrupt", 9, &reply, &why) != 0) {
        fprintf(stderr, "interrupt: no backend at %s: %s\n", argv[1], why);
        return 1;
    }
    pd_frame_release(connection, &reply);
    line("granted", (connection->capabilities & PD_CAP_INTERRUPT) != 0, 0, NULL);

    struct pd_stat stat;
    int64_t opened = pd_file_open(connection, "/dev/ptmx", 9, O_RDWR | O_NOCTTY, 0, &stat, NULL);
    if (opened <= 0) { perror("interrupt: open /dev/ptmx"); return 1; }
    master = (uint32_t)opened;
    unsigned number = 0;
    int unlock = 0, error;
    if (ioctl_on(0x80045430 /* TIOCGPTN */, &number, NULL, &error) != 0
        || ioctl_on(0x40045431 /* TIOCSPTLCK */, &unlock, NULL, &error) != 0) { fprintf(stderr, "interrupt: no pty\n"); return 1; }
    char path[64];
    snprintf(path, sizeof path, "/dev/pts/%u", number);
    int slave = open(path, O_RDWR | O_NOCTTY);
    if (slave < 0) { perror(path); return 1; }

    /* A read blocked for want of data, interrupted from another thread. */
    struct served blocked;
    start_read(&blocked);
    pd_interrupt(connection, &blocked.interruption);
    finish_read("read-interrupted", &blocked);

    /* The file goes on: a byte written now is read, once. */
    if (write(slave, "a", 1) != 1) return 1;
    struct served after;
    start_read(&after);
    finish_read("read-after", &after);

    /* An interrupt between two NEED rounds applies to the next request: TCSETSW (blocking, so served by a
       worker) waits for the session's one thread, which a read holds, and is answered EINTR unrun. */
    struct served holder;
    start_read(&holder);
    /* The kernel's struct termios (36 bytes: four flags, c_line, 19 control characters), not glibc's. */
    unsigned char before[36] = { 0 }, wanted[36], now[36] = { 0 };
    if (ioctl_on(0x5401 /* TCGETS */, before, NULL, &error) != 0) return 1;
    memcpy(wanted, before, sizeof wanted);
    wanted[17 + VTIME] = (unsigned char)(before[17 + VTIME] + 7);
    struct pd_interruption between;
    pd_interruption_init(&between);
    struct pd_memory interrupting = pd_self_memory;
    interrupting.read = read_and_interrupt;
    interrupted_between = &between;
    struct pd_target t = target(&interrupting, &between);
    errno = 0;
    int64_t r = pd_file_ioctl(&t, 0x5403 /* TCSETSW */, (uintptr_t)wanted, NULL);
    line("need-round-interrupted", r, r < 0 ? errno : 0, NULL);
    interrupted_between = NULL;
    r = ioctl_on(0x5401, now, NULL, &error);
    line("termios-unchanged", r == 0 && memcmp(now, before, sizeof now) == 0, 0, NULL);

    /* After the call, its interrupt does nothing, even with another call in flight. */
    pd_interrupt(connection, &between);
    pd_interrupt(connection, &holder.interruption);
    finish_read("held-read-interrupted", &holder);
    struct served later;
    start_read(&later);
    pd_interrupt(connection, &between);
    unsigned short ws[4];
    (void)ioctl_on(0x5413, ws, NULL, &error);   /* served after whatever the interrupt sent */
    if (write(slave, "z", 1) != 1) return 1;
    finish_read("late-interrupt-ignored", &later);
    pd_interruption_destroy(&between);

    /* An interrupt before the call's first request applies to it. */
    struct served early;
    memset(&early, 0, sizeof early);
    pd_interruption_init(&early.interruption);
    pd_interrupt(connection, &early.interruption);
    serve_read(&early);
    line("interrupted-before-start", early.result, early.error, NULL);
    pd_interruption_destroy(&early.interruption);

    /* Nothing was lost on the way: the next byte is the next one read. */
    if (write(slave, "q", 1) != 1) return 1;
    struct served last;
    start_read(&last);
    finish_read("read-last", &last);

    close(slave);
    pd_conn_goodbye(connection);
    pd_conn_release(connection);
    return 0;
}
