/* A frontend serving another process, as a daemon serving a guest kernel's device node does: the calls
 * are the child's, their arguments live in the child's memory, and this process forwards them through
 * the frontend core with pd_process_read/write on the child's pid (RemoteMemoryTests.swift compiles it
 * with the core's sources).
 *
 *   remotememory native [kvm]   conformance.c's sequence, then this file's, on the process's own files
 *   remotememory URL [kvm]      the same sequences in a child whose calls go to this process over a pipe,
 *                               which forwards them to the backend at URL; then, once the child has
 *                               exited (a zombie: its pid cannot be reused), calls whose memory is gone
 *
 * Each line is as conformance.c prints it; native and forwarded, the shared sequences must print the
 * same lines (but for mmap: this frontend cannot map memory into another process, ENODEV). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include "paradice_frontend.h"

/* ---- the child's side: its calls, native or sent to the daemon ---- */

enum { OPEN = 1, CLOSE, READ, WRITE, IOCTL, POLL, LSEEK, MMAP, GONE };
struct call { int op; int fd; uint64_t a, b, c; };
struct answer { int64_t result; int error; };

static int forwarded;                      /* the child of a daemon */
static int to_daemon = -1, from_daemon = -1;

static int post(const struct call *call) { return write(to_daemon, call, sizeof *call) == sizeof *call ? 0 : -1; }

static int64_t ask(int op, int fd, uint64_t a, uint64_t b, uint64_t c) {
    struct call call = { op, fd, a, b, c };
    struct answer answer;
    if (post(&call) != 0 || read(from_daemon, &answer, sizeof answer) != sizeof answer) {
        fprintf(stderr, "remotememory: the daemon is gone\n");
        exit(2);
    }
    errno = answer.error;
    return answer.result;
}

static int remote_open(const char *path, int flags, ...) {
    if (!forwarded) return open(path, flags);
    return (int)ask(OPEN, -1, (uintptr_t)path, strlen(path), (uint64_t)flags);
}
static int remote_close(int fd) { return forwarded ? (int)ask(CLOSE, fd, 0, 0, 0) : close(fd); }
static ssize_t remote_read(int fd, void *into, size_t n) {
    return forwarded ? (ssize_t)ask(READ, fd, (uintptr_t)into, n, 0) : read(fd, into, n);
}
static ssize_t remote_write(int fd, const void *from, size_t n) {
    return forwarded ? (ssize_t)ask(WRITE, fd, (uintptr_t)from, n, 0) : write(fd, from, n);
}
static int remote_ioctl(int fd, unsigned long command, ...) {
    va_list ap;
    va_start(ap, command);
    unsigned long argument = va_arg(ap, unsigned long);
    va_end(ap);
    return forwarded ? (int)ask(IOCTL, fd, command, argument, 0) : ioctl(fd, command, argument);
}
static int remote_poll(struct pollfd *p, nfds_t n, int timeout) {
    if (!forwarded) return poll(p, n, timeout);
    if (n != 1) { errno = EINVAL; return -1; }
    return (int)ask(POLL, p->fd, (uintptr_t)p, (uint64_t)(int64_t)timeout, 0);
}
static off_t remote_lseek(int fd, off_t offset, int whence) {
    return forwarded ? (off_t)ask(LSEEK, fd, (uint64_t)offset, (uint64_t)whence, 0) : lseek(fd, offset, whence);
}
static void *remote_mmap(void *hint, size_t length, int protection, int flags, int fd, off_t offset) {
    if (!forwarded) return mmap(hint, length, protection, flags, fd, offset);
    (void)hint;
    int64_t r = ask(MMAP, fd, length, ((uint64_t)(uint32_t)protection << 32) | (uint32_t)flags, (uint64_t)offset);
    return r < 0 ? MAP_FAILED : (void *)(uintptr_t)r;
}

/* The child's own memory: a page, and an unmapped one after it. */
static uint8_t *page_before_a_hole(void) {
    uint8_t *page = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED || munmap(page + 4096, 4096) != 0) return NULL;
    return page;
}

#define open remote_open
#define close remote_close
#define read remote_read
#define write remote_write
#define ioctl remote_ioctl
#define poll remote_poll
#define lseek remote_lseek
#define mmap remote_mmap
#define main conformance_main
#include "conformance.c"
#undef main

/* What only memory out of the frontend's reach shows: bytes around an out argument stay as they were,
 * arguments that straddle the end of the memory or wrap around it, data buffers the driver cannot reach. */
static void edges(int kvm_too) {
    int master = open("/dev/ptmx", O_RDWR | O_NOCTTY);
    int zero = 0;
    unsigned int n = 0;
    if (master < 0 || io(master, 0x40045431, &zero) != 0 || io(master, 0x80045430, &n) != 0) { line("edges-pty", -1, NULL, 0); return; }
    char path[64];
    snprintf(path, sizeof path, "/dev/pts/%u", n);
    int slave = open(path, O_RDWR | O_NOCTTY);
    if (slave < 0) { line("edges-slave", -1, NULL, 0); return; }
    unsigned short ws[4] = { 24, 80, 0, 0 };
    line("TIOCSWINSZ", io(master, 0x5414, ws), NULL, 0);
    uint8_t around[16];
    memset(around, 0xaa, sizeof around);
    line("TIOCGWINSZ-sentinel", io(slave, 0x5413, around), around, sizeof around);

    uint8_t *page = page_before_a_hole();
    if (!page) { line("edges-page", -1, NULL, 0); return; }
    uint8_t *straddle = page + 4096 - 4;
    unsigned short other[4] = { 1, 2, 3, 4 };
    memcpy(straddle, other, 4);
    line("TIOCSWINSZ-straddle", io(master, 0x5414, straddle), NULL, 0);
    memset(around, 0xaa, sizeof around);
    line("TIOCGWINSZ-unchanged", io(slave, 0x5413, around), around, 8);
    line("TIOCGWINSZ-straddle", io(slave, 0x5413, straddle), NULL, 0);
    line("TIOCGWINSZ-wrap", io(slave, 0x5413, (void *)(uintptr_t)0xfffffffffffffffcull), NULL, 0);
    line("TIOCGWINSZ-kernel", io(slave, 0x5413, (void *)(uintptr_t)0xffff800000000000ull), NULL, 0);
    line("TIOCSWINSZ-wrap", io(master, 0x5414, (void *)(uintptr_t)0xfffffffffffffffcull), NULL, 0);

    line("write-slave", write(slave, "ping\n", 5), NULL, 0);
    struct pollfd p = { master, POLLIN, 0 };
    line("poll-master", poll(&p, 1, 10000), NULL, 0);
    uint8_t queued[8];
    memset(queued, 0xaa, sizeof queued);
    line("FIONREAD-sentinel", io(master, 0x541b, queued), queued, sizeof queued);
    line("read-bad-buffer", read(master, (void *)16, 64), NULL, 0);
    line("write-bad-buffer", write(slave, (void *)16, 4), NULL, 0);
    line("write-straddle", write(slave, page + 4096 - 2, 4), NULL, 0);
    line("close-slave", close(slave), NULL, 0);
    line("close-master", close(master), NULL, 0);

    if (kvm_too) {
        int kvm = open("/dev/kvm", O_RDWR);
        if (kvm < 0) { line("edges-kvm", -1, NULL, 0); return; }
        uint8_t cpuid[8 + 40];
        memset(cpuid, 0xaa, sizeof cpuid);
        memset(cpuid, 0, 8);
        cpuid[0] = 1;
        line("KVM_GET_SUPPORTED_CPUID-sentinel", io(kvm, 0xc008ae05, cpuid), cpuid, sizeof cpuid);
        line("KVM_GET_SUPPORTED_CPUID-straddle", io(kvm, 0xc008ae05, page + 4096 - 4), NULL, 0);
        line("close-kvm", close(kvm), NULL, 0);
    }
}

/* The child's last calls: a pty pair and a winsize the daemon uses once the child is gone, then a read
 * the daemon is still serving when the child exits. */
static void leave(void) {
    int master = open("/dev/ptmx", O_RDWR | O_NOCTTY);
    int zero = 0;
    unsigned int n = 0;
    if (master < 0 || io(master, 0x40045431, &zero) != 0 || io(master, 0x80045430, &n) != 0) return;
    char path[64];
    snprintf(path, sizeof path, "/dev/pts/%u", n);
    int slave = open(path, O_RDWR | O_NOCTTY);
    if (slave < 0) return;
    static unsigned short ws[4] = { 30, 90, 0, 0 };
    static char buffer[64];
    fflush(stdout);
    if (ask(GONE, master, (uint64_t)slave, (uintptr_t)ws, (uintptr_t)buffer) != 0) return;
    struct call call = { READ, master, (uintptr_t)buffer, sizeof buffer, 0 };
    if (post(&call) != 0) return;
    _exit(0);   /* without waiting for the answer */
}

#undef open
#undef close
#undef read
#undef write
#undef ioctl
#undef poll
#undef lseek
#undef mmap

/* ---- the daemon's side ---- */

#define FILES 64
#define FIRST_FD 100
static struct { int used; uint32_t handle; struct pd_lent lent; } files[FILES];
static struct pd_connection *connection;
static pid_t child;
static const struct pd_memory child_memory = PD_PROCESS_MEMORY(&child);

static int handle_for(void *unused, int64_t fd, uint32_t *handle) {
    (void)unused;
    if (fd < FIRST_FD || fd >= FIRST_FD + FILES || !files[fd - FIRST_FD].used) return -1;
    *handle = files[fd - FIRST_FD].handle;
    return 0;
}

static int64_t adopt(void *unused, uint32_t handle) {
    (void)unused;
    for (int i = 0; i < FILES; i++) {
        if (files[i].used) continue;
        files[i].used = 1;
        files[i].handle = handle;
        pd_lent_init(&files[i].lent);
        return FIRST_FD + i;
    }
    int broken;
    (void)pd_file_simple(connection, handle, PD_CLOSE, NULL, 0, NULL, 0, &broken);
    errno = EMFILE;
    return -1;
}

static const struct pd_descriptors descriptors = { NULL, 0, handle_for, adopt };

static int target(int fd, struct pd_target *t) {
    uint32_t handle;
    if (handle_for(NULL, fd, &handle) != 0) { errno = EBADF; return -1; }
    *t = (struct pd_target){ connection, handle, &files[fd - FIRST_FD].lent, &child_memory, &descriptors };
    return 0;
}

static int64_t serve(const struct call *call) {
    struct pd_target t;
    int broken;
    if (call->op == OPEN) {
        char path[256];
        if (call->b >= sizeof path) { errno = ENAMETOOLONG; return -1; }
        if (pd_process_read(&child, call->a, path, call->b) != 0) { errno = EFAULT; return -1; }
        struct pd_stat stat;
        int64_t handle = pd_file_open(connection, path, call->b, (int)call->c, 0, &stat, &broken);
        return handle < 0 ? -1 : adopt(NULL, (uint32_t)handle);
    }
    if (target(call->fd, &t) != 0) return -1;
    switch (call->op) {
    case CLOSE: {
        int64_t r = pd_file_simple(connection, t.handle, PD_CLOSE, NULL, 0, NULL, 0, &broken);
        pd_lent_destroy(&files[call->fd - FIRST_FD].lent);
        files[call->fd - FIRST_FD].used = 0;
        return r;
    }
    case READ: return pd_target_read(&t, call->a, call->b, 0, 0, &broken);
    case WRITE: return pd_target_write(&t, call->a, call->b, 0, 0, &broken);
    case IOCTL: return pd_file_ioctl(&t, (uint32_t)call->a, call->b, &broken);
    case POLL: {
        struct pollfd p;
        if (pd_process_read(&child, call->a, &p, sizeof p) != 0) { errno = EFAULT; return -1; }
        struct pd_poll request = { p.events, (int32_t)call->b };
        int64_t r = pd_file_simple(connection, t.handle, PD_POLL, &request, sizeof request, NULL, 0, &broken);
        if (r < 0) return -1;
        p.revents = (short)r;
        if (pd_process_write(&child, call->a, &p, sizeof p) != 0) { errno = EFAULT; return -1; }
        return r != 0;
    }
    case LSEEK: {
        struct pd_llseek l = { (int64_t)call->a, (int32_t)call->b, 0 };
        return pd_file_simple(connection, t.handle, PD_LLSEEK, &l, sizeof l, NULL, 0, &broken);
    }
    case MMAP: {
        uint64_t at = pd_file_map(&t, 0, call->a, (int)(call->b >> 32), (int)(uint32_t)call->b, (int64_t)call->c);
        return at == PD_NO_ADDRESS ? -1 : (int64_t)at;
    }
    }
    errno = ENOSYS;
    return -1;
}

static void log_line(void *unused, const char *text) {
    (void)unused;
    fprintf(stderr, "%s\n", text);
}

/* Once the child has exited (and stays a zombie), a write to the slave ends the read the daemon serves. */
struct late { uint32_t slave; };
static void *write_late(void *argument) {
    struct late *late = argument;
    siginfo_t info;
    if (waitid(P_PID, (id_t)child, &info, WEXITED | WNOWAIT) != 0) return NULL;
    int broken;
    (void)pd_file_write(connection, late->slave, "late\n", 5, 0, 0, &broken);
    return NULL;
}

static int daemon_main(const char *url, int kvm_too) {
    int calls[2], answers[2];
    if (pipe(calls) != 0 || pipe(answers) != 0) return 1;
    fflush(stdout);
    child = fork();
    if (child < 0) return 1;
    if (child == 0) {
        forwarded = 1;
        to_daemon = calls[1];
        from_daemon = answers[0];
        close(calls[0]);
        close(answers[1]);
        char *arguments[] = { "conformance", kvm_too ? "kvm" : NULL, NULL };
        if (conformance_main(kvm_too ? 2 : 1, arguments) != 0) { fflush(stdout); _exit(1); }
        edges(kvm_too);
        leave();
        fflush(stdout);
        _exit(3);
    }
    close(calls[1]);
    close(answers[0]);

    connection = pd_conn_new();
    connection->log = log_line;
    connection->address = url;
    struct pd_stream stream;
    int dialed = pd_conn_dial(url, &stream);
    struct pd_hello hello = { PD_MAGIC, PD_VERSION_MAJOR, PD_VERSION_MINOR, PD_CAP_FD_SLOTS, (uint32_t)getpid(), 0, 0 };
    struct pd_frame reply;
    const char *why = "";
    if (dialed != 0 || pd_conn_start(connection, &stream, &hello, "remotememory", 12, &reply, &why) != 0) {
        fprintf(stderr, "remotememory: no backend at %s: %s\n", url, why);
        kill(child, SIGKILL);
        return 1;
    }
    pd_frame_release(connection, &reply);

    struct call call;
    int gone_master = -1;
    uint64_t gone_winsize = 0;
    struct late late = { 0 };
    pthread_t writer;
    int writing = 0;
    while (read(calls[0], &call, sizeof call) == sizeof call) {
        struct answer answer = { 0, 0 };
        if (call.op == GONE) {
            uint32_t slave;
            gone_master = call.fd;
            gone_winsize = call.b;
            answer.result = handle_for(NULL, (int64_t)call.a, &slave) == 0 ? 0 : -1;
            late.slave = slave;
            writing = answer.result == 0 && pthread_create(&writer, NULL, write_late, &late) == 0;
        } else {
            answer.result = serve(&call);
            answer.error = answer.result < 0 ? errno : 0;
        }
        if (call.op == READ && call.fd == gone_master) {
            /* The read the child did not wait for: its buffer went with it. */
            errno = answer.error;
            line("gone-read", answer.result, NULL, 0);
            continue;
        }
        if (write(answers[1], &answer, sizeof answer) != sizeof answer) break;
    }
    if (writing) pthread_join(writer, NULL);
    siginfo_t info;
    if (waitid(P_PID, (id_t)child, &info, WEXITED | WNOWAIT) != 0 || info.si_code != CLD_EXITED || info.si_status != 0) {
        fprintf(stderr, "remotememory: the child ended with %d\n", info.si_status);
        return 1;
    }
    /* The child is a zombie: its memory is gone, its pid not reusable. */
    if (gone_master >= 0) {
        struct call set = { IOCTL, gone_master, 0x5414, gone_winsize, 0 };
        errno = 0;
        int64_t r = serve(&set);
        line("gone-TIOCSWINSZ", r, NULL, 0);
        struct call get = { IOCTL, gone_master, 0x5413, gone_winsize, 0 };
        r = serve(&get);
        line("gone-TIOCGWINSZ", r, NULL, 0);
        /* The connection still serves: the same call with the daemon's own memory. */
        unsigned short ws[4] = { 0 };
        struct pd_target t;
        int broken;
        r = target(gone_master, &t) == 0 ? (t.memory = &pd_self_memory, pd_file_ioctl(&t, 0x5413, (uintptr_t)ws, &broken)) : -1;
        line("self-TIOCGWINSZ", r, ws, sizeof ws);
    }
    waitpid(child, NULL, 0);
    pd_conn_goodbye(connection);
    pd_conn_release(connection);
    return 0;
}

int main(int argc, char **argv) {
    int kvm_too = argc > 2 && strcmp(argv[2], "kvm") == 0;
    if (argc > 1 && strcmp(argv[1], "native") == 0) {
        char *arguments[] = { "conformance", kvm_too ? "kvm" : NULL, NULL };
        if (conformance_main(kvm_too ? 2 : 1, arguments) != 0) return 1;
        edges(kvm_too);
        return 0;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: remotememory native|URL [kvm]\n");
        return 2;
    }
    return daemon_main(argv[1], kvm_too);
}
