/* The libc entry points a program uses on device files, redirected for forwarded descriptors. Every
 * other call goes straight to libc. */
#include "shim.h"
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

struct pd_real pd_real;

static void *next(const char *name) { return dlsym(RTLD_NEXT, name); }

__attribute__((constructor)) void pd_resolve_real(void) {
    if (pd_real.open) return;
    pd_real.open = next("open");
    pd_real.openat = next("openat");
    pd_real.close = next("close");
    pd_real.read = next("read");
    pd_real.write = next("write");
    pd_real.ioctl = next("ioctl");
    pd_real.fcntl = next("fcntl");
    pd_real.dup = next("dup");
    pd_real.dup2 = next("dup2");
    pd_real.dup3 = next("dup3");
    pd_real.poll = next("poll");
}

#define REAL(fn) static __typeof__(&fn) real_##fn; if (!real_##fn) real_##fn = next(#fn)

/* ---- fork ---- */

/* The child keeps what it inherits: the backend holds the parent's files for it from before the fork
 * until the child's connection claims them (PD_FORK). vfork and posix_spawn children exec at once. */
pid_t fork(void) {
    REAL(fork);
    uint32_t ticket = pd_fork_ticket();
    pid_t pid = real_fork();
    if (pid == 0 && ticket) pd_claim_fork_ticket(ticket);
    if (pid < 0 && ticket) pd_return_ticket(ticket);
    return pid;
}

/* ---- exec ----
 * The new program keeps the forwarded descriptors that survive the exec: a PD_FORK ticket holds their
 * files for it, and PARADICE_INHERIT, added to the environment it gets, names them (files.c). An exec
 * that fails gives the ticket back. Everything lives on the stack: in a vfork child this memory is the
 * parent's, and a successful exec frees nothing. */

#define INHERIT "PARADICE_INHERIT="

/* The new program, as it starts: the descriptors the image before it kept for it. */
__attribute__((constructor)) static void adopt_inherited(void) {
    pd_resolve_real();
    pd_adopt_inheritance();
}

static size_t environment_length(char *const envp[]) {
    size_t n = 0;
    while (envp && envp[n]) n++;
    return n;
}

/* Runs `exec` with envp, plus the description when forwarded descriptors survive the exec. */
static int exec_keeping_files(char *const envp[], int (*exec)(char *const envp[], void *context), void *context) {
    pd_resolve_real();
    size_t size = pd_inheritance_size();   /* 0 without files */
    size_t entries = environment_length(envp);
    if (size == 0 || size > (64u << 10) || entries > (16u << 10)) return exec(envp, context);
    char variable[sizeof INHERIT + 48 + size];
    int ahead_memory;
    char *files = variable + sizeof INHERIT + 48;
    size_t length = pd_describe_inheritance(files, size, pd_in_parents_memory(), &ahead_memory);
    uint32_t token, ticket = length ? pd_exec_ticket(&token) : 0;
    if (ticket == 0) {
        if (ahead_memory >= 0) pd_real.close(ahead_memory);
        return exec(envp, context);
    }
    int head = snprintf(variable, sizeof INHERIT + 48, INHERIT "%d %u %u %d", (int)getpid(), ticket, token, ahead_memory);
    memmove(variable + head, files, length + 1);
    char *environment[entries + 2];
    size_t n = 0;
    for (size_t i = 0; i < entries; i++)
        if (strncmp(envp[i], INHERIT, sizeof INHERIT - 1) != 0) environment[n++] = envp[i];
    environment[n++] = variable;
    environment[n] = NULL;
    int r = exec(environment, context);
    int e = errno;
    pd_return_ticket(ticket);
    if (ahead_memory >= 0) pd_real.close(ahead_memory);
    errno = e;
    return r;
}

struct exec_call { int dirfd; const char *path; char *const *argv; int flags; int search; };

static int exec_path(char *const envp[], void *context) {
    const struct exec_call *c = context;
    REAL(execve);
    REAL(execvpe);
    REAL(execveat);
    if (c->search) return real_execvpe(c->path, c->argv, envp);
    if (c->dirfd != AT_FDCWD || c->flags) return real_execveat(c->dirfd, c->path, c->argv, envp, c->flags);
    return real_execve(c->path, c->argv, envp);
}

static int exec_descriptor(char *const envp[], void *context) {
    const struct exec_call *c = context;
    REAL(fexecve);
    return real_fexecve(c->dirfd, c->argv, envp);
}

int execve(const char *path, char *const argv[], char *const envp[]) {
    struct exec_call c = { AT_FDCWD, path, argv, 0, 0 };
    return exec_keeping_files(envp, exec_path, &c);
}
int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags) {
    struct exec_call c = { dirfd, path, argv, flags, 0 };
    return exec_keeping_files(envp, exec_path, &c);
}
int fexecve(int fd, char *const argv[], char *const envp[]) {
    struct exec_call c = { fd, NULL, argv, 0, 0 };
    return exec_keeping_files(envp, exec_descriptor, &c);
}
int execvpe(const char *file, char *const argv[], char *const envp[]) {
    struct exec_call c = { AT_FDCWD, file, argv, 0, 1 };
    return exec_keeping_files(envp, exec_path, &c);
}
int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }
int execvp(const char *file, char *const argv[]) { return execvpe(file, argv, environ); }

/* execl, execlp, execle: the arguments as a vector (on the stack), then as above. */
#define ARGUMENTS(first, last_named, extra) \
    size_t count = 1; \
    va_list ap; \
    va_start(ap, last_named); \
    while (va_arg(ap, char *) != NULL) count++; \
    va_end(ap); \
    char *argv[count + 1]; \
    argv[0] = (char *)(first); \
    va_start(ap, last_named); \
    for (size_t i = 1; i <= count; i++) argv[i] = va_arg(ap, char *); \
    extra; \
    va_end(ap)

int execl(const char *path, const char *arg, ...) {
    ARGUMENTS(arg, arg, (void)0);
    return execve(path, argv, environ);
}
int execlp(const char *file, const char *arg, ...) {
    ARGUMENTS(arg, arg, (void)0);
    return execvpe(file, argv, environ);
}
int execle(const char *path, const char *arg, ...) {
    char *const *envp;
    ARGUMENTS(arg, arg, envp = va_arg(ap, char *const *));
    return execve(path, argv, envp);
}

/* ---- opening ---- */

static int open_common(int dirfd, const char *path, int flags, mode_t mode, int at) {
    pd_resolve_real();
    char backend[512];
    if ((!at || dirfd == AT_FDCWD || (path && path[0] == '/')) && pd_forwarded_path(path, backend, sizeof backend))
        return pd_open(backend, flags, mode);
    return at ? pd_real.openat(dirfd, path, flags, mode) : pd_real.open(path, flags, mode);
}

#define MODE_ARG(flags) mode_t mode = 0; \
    if ((flags) & (O_CREAT | __O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }

int open(const char *path, int flags, ...) { MODE_ARG(flags); return open_common(AT_FDCWD, path, flags, mode, 0); }
int open64(const char *path, int flags, ...) { MODE_ARG(flags); return open_common(AT_FDCWD, path, flags | O_LARGEFILE, mode, 0); }
int openat(int dirfd, const char *path, int flags, ...) { MODE_ARG(flags); return open_common(dirfd, path, flags, mode, 1); }
int openat64(int dirfd, const char *path, int flags, ...) { MODE_ARG(flags); return open_common(dirfd, path, flags | O_LARGEFILE, mode, 1); }
int __open_2(const char *path, int flags) { return open_common(AT_FDCWD, path, flags, 0, 0); }
int __open64_2(const char *path, int flags) { return open_common(AT_FDCWD, path, flags | O_LARGEFILE, 0, 0); }
int __openat_2(int dirfd, const char *path, int flags) { return open_common(dirfd, path, flags, 0, 1); }
int __openat64_2(int dirfd, const char *path, int flags) { return open_common(dirfd, path, flags | O_LARGEFILE, 0, 1); }

/* stdio on a forwarded device: a cookie stream whose reads and writes are forwarded ones. */
static ssize_t cookie_read(void *c, char *buffer, size_t size) {
    PD_HOLD(f, (int)(intptr_t)c);
    return f ? pd_read(f, buffer, size, 0, 0) : -1;
}
static ssize_t cookie_write(void *c, const char *buffer, size_t size) {
    PD_HOLD(f, (int)(intptr_t)c);
    return f ? pd_write(f, buffer, size, 0, 0) : -1;
}
static int cookie_seek(void *c, off64_t *offset, int whence) {
    PD_HOLD(f, (int)(intptr_t)c);
    off_t r = f ? pd_lseek(f, *offset, whence) : -1;
    if (r < 0) return -1;
    *offset = r;
    return 0;
}
static int cookie_close(void *c) {
    return pd_close_descriptor((int)(intptr_t)c);
}

static FILE *fopen_common(const char *path, const char *how, const char *symbol) {
    pd_resolve_real();
    char backend[512];
    if (!pd_forwarded_path(path, backend, sizeof backend)) {
        FILE *(*real)(const char *, const char *) = next(symbol);
        return real(path, how);
    }
    int flags = strchr(how, '+') ? O_RDWR : how[0] == 'r' ? O_RDONLY : O_WRONLY;
    if (how[0] == 'w') flags |= O_CREAT | O_TRUNC;
    if (how[0] == 'a') flags |= O_CREAT | O_APPEND;
    if (strchr(how, 'e')) flags |= O_CLOEXEC;
    int fd = pd_open(backend, flags, 0666);
    if (fd < 0) return NULL;
    cookie_io_functions_t io = { cookie_read, cookie_write, cookie_seek, cookie_close };
    FILE *stream = fopencookie((void *)(intptr_t)fd, how, io);
    /* stdio goes through the cookie; code that reads fileno(stream) directly (libstdc++'s filebuf)
     * gets the placeholder, whose reads are forwarded too. */
    if (stream) stream->_fileno = fd;
    return stream;
}

FILE *fopen(const char *path, const char *how) { return fopen_common(path, how, "fopen"); }
FILE *fopen64(const char *path, const char *how) { return fopen_common(path, how, "fopen64"); }

int close(int fd) {
    pd_resolve_real();
    if (pd_forwarded(fd)) return pd_close_descriptor(fd);
    return pd_real.close(fd);
}

/* ---- data ---- */

ssize_t read(int fd, void *buffer, size_t count) {
    pd_resolve_real();
    PD_HOLD(f, fd);
    return f ? pd_read(f, buffer, count, 0, 0) : pd_real.read(fd, buffer, count);
}

ssize_t __read_chk(int fd, void *buffer, size_t count, size_t size) {
    if (count > size) abort();
    return read(fd, buffer, count);
}

ssize_t write(int fd, const void *buffer, size_t count) {
    pd_resolve_real();
    PD_HOLD(f, fd);
    return f ? pd_write(f, buffer, count, 0, 0) : pd_real.write(fd, buffer, count);
}

#define POSITIONAL(name, rtype, ptype, pdcall) \
    rtype name(int fd, ptype buffer, size_t count, off_t offset) { \
        REAL(name); \
        PD_HOLD(f, fd); \
        return f ? pdcall(f, buffer, count, 1, offset) : real_##name(fd, buffer, count, offset); \
    }
POSITIONAL(pread, ssize_t, void *, pd_read)
POSITIONAL(pread64, ssize_t, void *, pd_read)
POSITIONAL(pwrite, ssize_t, const void *, pd_write)
POSITIONAL(pwrite64, ssize_t, const void *, pd_write)

ssize_t readv(int fd, const struct iovec *iov, int n) {
    REAL(readv);
    PD_HOLD(f, fd);
    if (!f) return real_readv(fd, iov, n);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += iov[i].iov_len;
    char *buffer = malloc(total ? total : 1);
    ssize_t got = pd_read(f, buffer, total, 0, 0);
    for (ssize_t done = 0, i = 0; got > 0 && done < got && i < n; i++) {
        size_t k = (size_t)(got - done) < iov[i].iov_len ? (size_t)(got - done) : iov[i].iov_len;
        memcpy(iov[i].iov_base, buffer + done, k);
        done += k;
    }
    int e = errno;
    free(buffer);
    errno = e;
    return got;
}

ssize_t writev(int fd, const struct iovec *iov, int n) {
    REAL(writev);
    PD_HOLD(f, fd);
    if (!f) return real_writev(fd, iov, n);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += iov[i].iov_len;
    char *buffer = malloc(total ? total : 1);
    for (size_t done = 0, i = 0; i < (size_t)n; i++) { memcpy(buffer + done, iov[i].iov_base, iov[i].iov_len); done += iov[i].iov_len; }
    ssize_t r = pd_write(f, buffer, total, 0, 0);
    int e = errno;
    free(buffer);
    errno = e;
    return r;
}

off_t lseek(int fd, off_t offset, int whence) {
    REAL(lseek);
    PD_HOLD(f, fd);
    return f ? pd_lseek(f, offset, whence) : real_lseek(fd, offset, whence);
}

off64_t lseek64(int fd, off64_t offset, int whence) {
    REAL(lseek64);
    PD_HOLD(f, fd);
    return f ? pd_lseek(f, offset, whence) : real_lseek64(fd, offset, whence);
}

/* ---- control ---- */

int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    unsigned long argument = va_arg(ap, unsigned long);
    va_end(ap);
    pd_resolve_real();
    PD_HOLD(f, fd);
    if (!f) return pd_real.ioctl(fd, request, argument);
    /* FIONBIO and FIOASYNC change the open file's flags: they are the frontend's, kept in step. */
    if (request == FIONBIO) {
        int on;
        if (!argument || pd_real.ioctl(fd, FIONBIO, argument) != 0) { errno = EFAULT; return -1; }
        memcpy(&on, (void *)argument, sizeof on);
        int flags = pd_file_flags(f);
        return pd_setfl(f, on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK));
    }
    return (int)pd_ioctl(f, request, argument);
}

static int fcntl_common(int fd, int cmd, unsigned long argument, const char *symbol) {
    pd_resolve_real();
    int (*real)(int, int, ...) = symbol ? (int (*)(int, int, ...))next(symbol) : pd_real.fcntl;
    PD_HOLD(f, fd);
    if (!f) return real(fd, cmd, argument);
    switch (cmd) {
    case F_GETFL: return pd_file_flags(f);
    case F_SETFL: return pd_setfl(f, (int)argument);
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
        int copy = real(fd, cmd, argument);
        if (copy >= 0) pd_bind(copy, f);
        return copy;
    }
    default:
        return real(fd, cmd, argument);   /* F_GETFD, F_SETFD, locks: the local descriptor's */
    }
}

int fcntl(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    unsigned long argument = va_arg(ap, unsigned long);
    va_end(ap);
    return fcntl_common(fd, cmd, argument, NULL);
}

int fcntl64(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    unsigned long argument = va_arg(ap, unsigned long);
    va_end(ap);
    return fcntl_common(fd, cmd, argument, "fcntl64");
}

int dup(int fd) {
    pd_resolve_real();
    PD_HOLD(f, fd);
    int copy = pd_real.dup(fd);
    if (copy >= 0 && f) pd_bind(copy, f);
    return copy;
}

static int dup_to(int fd, int target, int flags, int three) {
    pd_resolve_real();
    return pd_dup_onto(fd, target, flags, three);
}

int dup2(int fd, int target) { return dup_to(fd, target, 0, 0); }
int dup3(int fd, int target, int flags) { return dup_to(fd, target, flags, 1); }

/* ---- terminals: glibc's tcgetattr/tcsetattr call the kernel directly, so they are redone here. ---- */

struct kernel_termios {
    tcflag_t c_iflag, c_oflag, c_cflag, c_lflag;
    cc_t c_line;
    cc_t c_cc[19];
};

int tcgetattr(int fd, struct termios *t) {
    REAL(tcgetattr);
    PD_HOLD(f, fd);
    if (!f) return real_tcgetattr(fd, t);
    struct kernel_termios k;
    if (pd_ioctl(f, TCGETS, (unsigned long)&k) < 0) return -1;
    memset(t, 0, sizeof *t);
    t->c_iflag = k.c_iflag;
    t->c_oflag = k.c_oflag;
    t->c_cflag = k.c_cflag;
    t->c_lflag = k.c_lflag;
    t->c_line = k.c_line;
    t->c_ispeed = t->c_ospeed = k.c_cflag & (CBAUD | CBAUDEX);
    memcpy(t->c_cc, k.c_cc, sizeof k.c_cc);
    return 0;
}

int tcsetattr(int fd, int action, const struct termios *t) {
    REAL(tcsetattr);
    PD_HOLD(f, fd);
    if (!f) return real_tcsetattr(fd, action, t);
    unsigned long command = action == TCSANOW ? TCSETS : action == TCSADRAIN ? TCSETSW : action == TCSAFLUSH ? TCSETSF : 0;
    if (!command) { errno = EINVAL; return -1; }
    struct kernel_termios k;
    k.c_iflag = t->c_iflag;
    k.c_oflag = t->c_oflag;
    k.c_cflag = (t->c_cflag & ~(CBAUD | CBAUDEX)) | (t->c_ospeed & (CBAUD | CBAUDEX));
    k.c_lflag = t->c_lflag;
    k.c_line = t->c_line;
    memcpy(k.c_cc, t->c_cc, sizeof k.c_cc);
    return (int)pd_ioctl(f, command, (unsigned long)&k);
}

int isatty(int fd) {
    REAL(isatty);
    if (!pd_forwarded(fd)) return real_isatty(fd);
    struct termios t;
    if (tcgetattr(fd, &t) == 0) return 1;
    errno = ENOTTY;
    return 0;
}

/* ---- status ---- */

#define FSTAT(name, stype) \
    int name(int fd, struct stype *st) { \
        REAL(name); \
        PD_HOLD(f, fd); \
        if (!f) return real_##name(fd, st); \
        struct stat s; \
        if (pd_fstat(f, &s) != 0) return -1; \
        memset(st, 0, sizeof *st); \
        st->st_mode = s.st_mode; st->st_rdev = s.st_rdev; st->st_size = s.st_size; \
        st->st_nlink = s.st_nlink; st->st_blksize = s.st_blksize; st->st_uid = s.st_uid; st->st_gid = s.st_gid; \
        return 0; \
    }
FSTAT(fstat, stat)
FSTAT(fstat64, stat64)

/* stat on a forwarded path asks the backend about its node (opened O_PATH: no side effects). */
static int stat_path(const char *path, struct stat *st) {
    char backend[512];
    if (!pd_forwarded_path(path, backend, sizeof backend) && !pd_device_directory(path, backend, sizeof backend)) return 1;
    int fd = pd_open(backend, O_PATH | O_CLOEXEC, 0);
    if (fd < 0) return -1;
    PD_HOLD(f, fd);
    int r = f ? pd_fstat(f, st) : -1;
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

#define STAT(name, stype) \
    int name(const char *path, struct stype *st) { \
        REAL(name); \
        struct stat s; \
        int r = stat_path(path, &s); \
        if (r == 1) return real_##name(path, st); \
        if (r != 0) return -1; \
        memset(st, 0, sizeof *st); \
        st->st_mode = s.st_mode; st->st_rdev = s.st_rdev; st->st_size = s.st_size; \
        st->st_nlink = s.st_nlink; st->st_blksize = s.st_blksize; st->st_uid = s.st_uid; st->st_gid = s.st_gid; \
        return 0; \
    }
STAT(stat, stat)
STAT(stat64, stat64)
STAT(lstat, stat)
STAT(lstat64, stat64)

/* ---- readiness ---- */

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

/* poll over a mix of local and forwarded descriptors. One forwarded descriptor alone waits in the
 * backend. A mix waits locally: on the local descriptors and on the forwarded ones' placeholders, which
 * the backend's one-shot watches make readable; a file whose watch cannot be set is looked at again
 * every 10 ms. */
static int poll_mixed(struct pollfd *fds, nfds_t n, int timeout) {
    pd_resolve_real();
    int (*real_poll)(struct pollfd *, nfds_t, int) = (void *)pd_real.poll;
    nfds_t forwarded = 0;
    for (nfds_t i = 0; i < n; i++) if (pd_forwarded(fds[i].fd)) forwarded++;
    if (forwarded == 0) return real_poll(fds, n, timeout);
    if (n == 1) {
        short revents = 0;
        PD_HOLD(f, fds[0].fd);
        int r = f ? pd_poll_one(f, fds[0].events, timeout, &revents) : real_poll(fds, n, timeout);
        if (!f) return r;
        fds[0].revents = r > 0 ? revents : 0;
        return r;
    }
    struct pollfd *local = calloc(2 * n, sizeof *local);   /* the local descriptors, then placeholders */
    nfds_t *watched = calloc(n, sizeof *watched);           /* where each forwarded one's placeholder is, or 0 */
    long long deadline = timeout < 0 ? -1 : now_ms() + timeout;
    int ready = 0;
    for (;;) {
        /* The local descriptors first; when one is ready, the forwarded files are asked directly. */
        ready = 0;
        for (nfds_t i = 0; i < n; i++) {
            local[i] = fds[i];
            local[i].revents = 0;
            fds[i].revents = 0;
            if (pd_forwarded(fds[i].fd)) local[i].fd = -1;   /* skipped by the local poll */
        }
        ready = real_poll(local, n, 0);
        if (ready < 0) break;
        for (nfds_t i = 0; i < n && ready == 0; i++) {
            PD_HOLD(f, fds[i].fd);
            if (f && pd_has_read_ahead(f)) ready = 1;   /* readable without asking: answered below */
        }
        long long left = deadline < 0 ? -1 : deadline - now_ms();
        if (ready > 0 || (deadline >= 0 && left <= 0)) {
            for (nfds_t i = 0; i < n && ready >= 0; i++) {
                PD_HOLD(f, fds[i].fd);
                short revents = 0;
                if (!f) fds[i].revents = local[i].revents;
                else if (pd_poll_one(f, fds[i].events, 0, &revents) < 0) ready = -1;
                else fds[i].revents = revents;
            }
            if (ready >= 0) { ready = 0; for (nfds_t i = 0; i < n; i++) if (fds[i].revents) ready++; }
            break;
        }

        /* Nothing yet: watch the forwarded files and wait for their events or the local descriptors. */
        nfds_t waiting = n;
        int sliced = 0;
        for (nfds_t i = 0; i < n; i++) {
            PD_HOLD(f, fds[i].fd);
            watched[i] = 0;
            if (!f) continue;
            if (pd_watch_once(f, fds[i].events) != 0) { sliced = 1; continue; }
            watched[i] = waiting;
            local[waiting++] = (struct pollfd){ pd_placeholder(f), POLLIN, 0 };
        }
        int wait = sliced && (left < 0 || left > 10) ? 10 : (int)left;
        int r = real_poll(local, waiting, wait);
        int e = errno;
        for (nfds_t i = 0; i < n; i++) {
            PD_HOLD(f, fds[i].fd);
            if (!f) { fds[i].revents = local[i].revents; continue; }
            /* The event says what the backend found ready when it fired, but it may be an earlier watch's
             * (the one an epoll set keeps, fired for a change this program has already taken through another
             * wait): the level is asked again, and a wake-up the device no longer stands behind is none. */
            short revents = pd_end_poll(f), now = 0;
            if (watched[i] && local[watched[i]].revents && (revents & (fds[i].events | POLLERR | POLLHUP | POLLNVAL)))
                fds[i].revents = pd_poll_one(f, fds[i].events, 0, &now) == 0 ? now : revents;
            /* The backend keeps one watch per file: this poll's replaced the one an epoll set relies on. */
            pd_rearm(f);
        }
        if (r < 0) { errno = e; ready = -1; break; }
        ready = 0;
        for (nfds_t i = 0; i < n; i++) if (fds[i].revents) ready++;
        if (ready > 0 || (deadline >= 0 && now_ms() >= deadline)) break;
    }
    int e = errno;
    free(local);
    free(watched);
    errno = e;
    return ready;
}

int poll(struct pollfd *fds, nfds_t n, int timeout) { return poll_mixed(fds, n, timeout); }
int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t size) {
    if (n * sizeof *fds > size) abort();
    return poll_mixed(fds, n, timeout);
}

int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout, const sigset_t *mask) {
    REAL(ppoll);
    int forwarded = 0;
    for (nfds_t i = 0; i < n; i++) if (pd_forwarded(fds[i].fd)) forwarded = 1;
    if (!forwarded) return real_ppoll(fds, n, timeout, mask);
    int ms = timeout ? (int)(timeout->tv_sec * 1000 + timeout->tv_nsec / 1000000) : -1;
    return poll_mixed(fds, n, ms);
}

static int select_common(int nfds, fd_set *r, fd_set *w, fd_set *x, int timeout_ms) {
    struct pollfd fds[FD_SETSIZE];
    nfds_t n = 0;
    for (int fd = 0; fd < nfds && fd < FD_SETSIZE; fd++) {
        short events = 0;
        if (r && FD_ISSET(fd, r)) events |= POLLIN;
        if (w && FD_ISSET(fd, w)) events |= POLLOUT;
        if (x && FD_ISSET(fd, x)) events |= POLLPRI;
        if (events) fds[n++] = (struct pollfd){ fd, events, 0 };
    }
    int ready = poll_mixed(fds, n, timeout_ms);
    if (ready < 0) return -1;
    if (r) FD_ZERO(r);
    if (w) FD_ZERO(w);
    if (x) FD_ZERO(x);
    int count = 0;
    for (nfds_t i = 0; i < n; i++) {
        if (r && fds[i].revents & (POLLIN | POLLHUP | POLLERR)) { FD_SET(fds[i].fd, r); count++; }
        if (w && fds[i].revents & (POLLOUT | POLLERR)) { FD_SET(fds[i].fd, w); count++; }
        if (x && fds[i].revents & POLLPRI) { FD_SET(fds[i].fd, x); count++; }
    }
    return count;
}

static int any_forwarded(int nfds, fd_set *r, fd_set *w, fd_set *x) {
    for (int fd = 0; fd < nfds && fd < FD_SETSIZE; fd++)
        if (((r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) || (x && FD_ISSET(fd, x))) && pd_forwarded(fd)) return 1;
    return 0;
}

int select(int nfds, fd_set *r, fd_set *w, fd_set *x, struct timeval *timeout) {
    REAL(select);
    if (!any_forwarded(nfds, r, w, x)) return real_select(nfds, r, w, x, timeout);
    return select_common(nfds, r, w, x, timeout ? (int)(timeout->tv_sec * 1000 + timeout->tv_usec / 1000) : -1);
}

int pselect(int nfds, fd_set *r, fd_set *w, fd_set *x, const struct timespec *timeout, const sigset_t *mask) {
    REAL(pselect);
    if (!any_forwarded(nfds, r, w, x)) return real_pselect(nfds, r, w, x, timeout, mask);
    return select_common(nfds, r, w, x, timeout ? (int)(timeout->tv_sec * 1000 + timeout->tv_nsec / 1000000) : -1);
}

/* epoll watches the placeholder eventfd, which mirrors the remote file's readiness: the backend pushes
 * an event when it becomes readable, and the frontend clears and re-arms after each use. The placeholder
 * is always writable, so EPOLLOUT is always reported for a forwarded file. */
/* Forwarded registrations, so that epoll_wait can answer with the remote events (EPOLLPRI, EPOLLERR…)
 * that an eventfd cannot carry. */
#define EPOLL_ENTRIES 256
static struct { int epfd, fd; uint64_t data; uint32_t events; } epoll_entries[EPOLL_ENTRIES];
static pthread_mutex_t epoll_lock = PTHREAD_MUTEX_INITIALIZER;

static void remember_epoll(int epfd, int op, int fd, const struct epoll_event *event) {
    pthread_mutex_lock(&epoll_lock);
    int slot = -1;
    for (int i = 0; i < EPOLL_ENTRIES; i++) {
        if (epoll_entries[i].epfd == epfd && epoll_entries[i].fd == fd && epoll_entries[i].events) slot = i;
    }
    if (op == EPOLL_CTL_DEL) {
        if (slot >= 0) epoll_entries[slot].events = 0;
    } else {
        if (slot < 0) for (int i = 0; i < EPOLL_ENTRIES && slot < 0; i++) if (!epoll_entries[i].events) slot = i;
        if (slot >= 0 && event) {
            epoll_entries[slot].epfd = epfd;
            epoll_entries[slot].fd = fd;
            epoll_entries[slot].data = event->data.u64;
            epoll_entries[slot].events = event->events | EPOLLERR | EPOLLHUP;
        }
    }
    pthread_mutex_unlock(&epoll_lock);
}

/* Rewrites the events of forwarded registrations with what the backend last reported; drops those the
 * backend no longer reports ready. */
static int answer_epoll(int epfd, struct epoll_event *events, int n) {
    int kept = 0;
    for (int i = 0; i < n; i++) {
        uint32_t wanted = 0;
        int fd = -1;
        pthread_mutex_lock(&epoll_lock);
        for (int k = 0; k < EPOLL_ENTRIES; k++)
            if (epoll_entries[k].events && epoll_entries[k].epfd == epfd && epoll_entries[k].data == events[i].data.u64) {
                wanted = epoll_entries[k].events;
                fd = epoll_entries[k].fd;
            }
        pthread_mutex_unlock(&epoll_lock);
        PD_HOLD(f, fd);
        if (f) {
            uint32_t remote = (uint32_t)(unsigned short)pd_revents(f) | (events[i].events & EPOLLOUT);
            events[i].events = remote & wanted;
            if (!events[i].events) continue;
        }
        events[kept++] = events[i];
    }
    return kept;
}

int epoll_wait(int epfd, struct epoll_event *events, int max, int timeout) {
    REAL(epoll_wait);
    for (;;) {
        int n = real_epoll_wait(epfd, events, max, timeout);
        if (n <= 0) return n;
        int kept = answer_epoll(epfd, events, n);
        if (kept > 0 || timeout == 0) return kept;
    }
}

int epoll_pwait(int epfd, struct epoll_event *events, int max, int timeout, const sigset_t *mask) {
    REAL(epoll_pwait);
    for (;;) {
        int n = real_epoll_pwait(epfd, events, max, timeout, mask);
        if (n <= 0) return n;
        int kept = answer_epoll(epfd, events, n);
        if (kept > 0 || timeout == 0) return kept;
    }
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event) {
    REAL(epoll_ctl);
    PD_HOLD(f, fd);
    if (!f || !event) return real_epoll_ctl(epfd, op, fd, event);
    /* The descriptor shares the placeholder's eventfd, which only ever becomes readable: any remote
     * readiness the program asks for (EPOLLPRI alone, say) is watched as EPOLLIN there, and epoll_wait
     * answers with the remote events. */
    struct epoll_event placeholder = *event;
    uint32_t readiness = EPOLLIN | EPOLLPRI | EPOLLRDNORM | EPOLLRDBAND | EPOLLRDHUP;
    placeholder.events = (event->events & ~readiness) | ((event->events & readiness) ? EPOLLIN : 0);
    int r = real_epoll_ctl(epfd, op, fd, &placeholder);
    if (r != 0) return r;
    remember_epoll(epfd, op, fd, event);
    if (op == EPOLL_CTL_DEL) { pd_set_watch(f, 0); return 0; }
    short watch = (short)((event ? event->events : 0) & (EPOLLIN | EPOLLPRI | EPOLLRDNORM));
    pd_set_watch(f, watch);
    if (watch) {
        pd_start_event_reader();
        pd_rearm(f);
    }
    return 0;
}

/* mmap of a forwarded device maps the device itself when the backend is on this machine and shares its
 * descriptor; otherwise the backend maps it and the program gets a mirror. A device without mmap answers
 * as it would locally (ENODEV from the driver). */
static void *mmap_common(void *address, size_t length, int protection, int flags, int fd, off_t offset, const char *symbol) {
    void *(*real)(void *, size_t, int, int, int, off_t) = (void *(*)(void *, size_t, int, int, int, off_t))next(symbol);
    PD_HOLD(f, (flags & MAP_ANONYMOUS) ? -1 : fd);
    if (!f) return real(address, length, protection, flags, fd, offset);
    int shared = pd_shared_descriptor(f);
    if (shared >= 0) return real(address, length, protection, flags, shared, offset);
    /* Not on this machine, or not shared: a mirror, kept coherent at the plug-in's sync points. */
    return pd_mirror_map(f, address, length, protection, flags, offset, real);
}

int munmap(void *address, size_t length) {
    REAL(munmap);
    /* The mirror's release is a call to the backend, whose transport may leave errno set (a TLS read that
     * waited); munmap that succeeds leaves errno as the program had it. */
    int e = errno;
    pd_mirror_unmap(address);
    errno = e;
    return real_munmap(address, length);
}

void *mmap(void *address, size_t length, int protection, int flags, int fd, off_t offset) {
    return mmap_common(address, length, protection, flags, fd, offset, "mmap");
}

void *mmap64(void *address, size_t length, int protection, int flags, int fd, off64_t offset) {
    return mmap_common(address, length, protection, flags, fd, offset, "mmap64");
}
