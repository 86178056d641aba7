// SPDX-License-Identifier: GPL-2.0
/*
 * abi-test.c — drives paradice.ko through its interface (paradice_kernel.h) as a daemon would, with
 * child processes as the callers, and checks what each side sees. Run as root where the module is loaded.
 * abi-test [32-BIT-CALLER]: the compat-ioctl program, for the compat_ioctl check (skipped without it).
 * Prints one line per check ("ok - ..." / "FAIL - ..."), exits 1 if any check failed.
 *
 * Each wait for a request has a generous deadline (30 s, the driver VM is emulated): a request that does
 * not come is a failure, never a pass.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <unistd.h>
#include "paradice_kernel.h"

static int failures;
static int ctl;

static void check(int ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s - ", ok ? "ok" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (!ok)
		failures++;
}

static void die(const char *what)
{
	printf("FAIL - %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ---- daemon side ------------------------------------------------------------------------------------ */

static const char *op_name(unsigned op)
{
	static const char *names[] = { "?", "OPEN", "RELEASE", "READ", "WRITE", "IOCTL", "LLSEEK", "FSYNC",
				       "MMAP", "MUNMAP", "WATCH", "INTERRUPT", "FASYNC", "POLL" };
	return op < sizeof(names) / sizeof(names[0]) ? names[op] : "?";
}

/* The next request, which must be `op` (0: any). */
static int next_request(int fd, unsigned op, struct pdk_request *rq)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n;

	if (poll(&p, 1, 30000) != 1) {
		check(0, "a %s request arrives (none in 30 s)", op_name(op));
		return -1;
	}
	n = read(fd, rq, sizeof(*rq));
	if (n != sizeof(*rq)) {
		check(0, "read of the control file gives one request (%zd, %s)", n, strerror(errno));
		return -1;
	}
	if (op && rq->op != op) {
		check(0, "the next request is %s (it is %s, id %llu)", op_name(op), op_name(rq->op),
		      (unsigned long long)rq->id);
		return -1;
	}
	return 0;
}

static int no_request(int fd)
{
	struct pdk_request rq;
	int fl = fcntl(fd, F_GETFL);
	ssize_t n;

	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	n = read(fd, &rq, sizeof(rq));
	fcntl(fd, F_SETFL, fl);
	if (n == sizeof(rq))
		printf("   (unexpected request %s id %llu)\n", op_name(rq.op), (unsigned long long)rq.id);
	return n < 0 && errno == EAGAIN;
}

static int reply(int fd, uint64_t id, int64_t result, uint64_t value)
{
	struct pdk_reply r = { .request = id, .result = result, .value = value };

	return ioctl(fd, PDK_REPLY, &r) < 0 ? -errno : 0;
}

static int access_(int fd, uint64_t id, uint32_t kind, uint64_t address, uint64_t length, void *buffer,
		   uint64_t *value)
{
	struct pdk_access a = { .request = id, .kind = kind, .address = address, .length = length,
				.buffer = (uintptr_t)buffer, .value = value ? *value : 0 };

	if (ioctl(fd, PDK_ACCESS, &a) < 0)
		return -errno;
	if (value)
		*value = a.value;
	return 0;
}

static int notify(int fd, uint64_t file, uint32_t revents)
{
	struct pdk_notify n = { .file = file, .revents = revents };

	return ioctl(fd, PDK_NOTIFY, &n) < 0 ? -errno : 0;
}

static int add_node(int fd, struct pdk_node *n)
{
	return ioctl(fd, PDK_ADD_NODE, n) < 0 ? -errno : 0;
}

static struct pdk_node node_of(uint64_t cookie, const char *path, const char *subsystem, uint32_t flags)
{
	struct pdk_node n = { .cookie = cookie, .mode = 0666, .flags = flags };

	snprintf(n.path, sizeof(n.path), "%s", path);
	snprintf(n.subsystem, sizeof(n.subsystem), "%s", subsystem);
	return n;
}

/* ---- caller side: a child process whose result comes back through a pipe ---------------------------- */

struct outcome {
	long ret;
	int err;
	int extra;
	unsigned char data[64];
};

struct child {
	pid_t pid;
	int pipe;
};

static struct child spawn(void (*fn)(struct outcome *, void *), void *arg)
{
	struct child c;
	int p[2];

	if (pipe(p))
		die("pipe");
	c.pid = fork();
	if (c.pid < 0)
		die("fork");
	if (c.pid == 0) {
		struct outcome o;

		memset(&o, 0, sizeof(o));
		close(p[0]);
		close(ctl);
		fn(&o, arg);
		if (write(p[1], &o, sizeof(o)) != sizeof(o))
			_exit(2);
		_exit(0);
	}
	close(p[1]);
	c.pipe = p[0];
	return c;
}

static int collect(struct child c, struct outcome *o)
{
	struct pollfd p = { .fd = c.pipe, .events = POLLIN };
	int status, ok = 0;

	memset(o, 0, sizeof(*o));
	if (poll(&p, 1, 30000) == 1 && read(c.pipe, o, sizeof(*o)) == sizeof(*o))
		ok = 1;
	if (!ok)
		kill(c.pid, SIGKILL);
	waitpid(c.pid, &status, 0);
	close(c.pipe);
	if (!ok)
		check(0, "the caller process reports back");
	return ok;
}

static char node_path[64] = "/dev/pdktest/node0";

static int open_node(void)
{
	return open(node_path, O_RDWR);
}

/* ---- scenarios ---------------------------------------------------------------------------------------- */

/* Serves an OPEN (value = handle) and returns the request's file id. */
static uint64_t serve_open(uint64_t handle, int64_t result, pid_t pid, uint32_t cookie)
{
	struct pdk_request rq;

	if (next_request(ctl, PDK_OP_OPEN, &rq))
		return 0;
	if (pid)
		check(rq.tgid == (uint32_t)pid && rq.handle == 0 && rq.cookie == cookie &&
		      (rq.arg[0] & O_ACCMODE) == O_RDWR && (rq.file_flags & O_ACCMODE) == O_RDWR && rq.uid == 0,
		      "OPEN carries the caller (tgid %u), cookie %llu, handle 0 and the open flags", rq.tgid,
		      (unsigned long long)rq.cookie);
	reply(ctl, rq.id, result, handle);
	return rq.file;
}

static void serve_release(uint64_t handle, const char *what)
{
	struct pdk_request rq;

	if (next_request(ctl, PDK_OP_RELEASE, &rq))
		return;
	check(rq.handle == handle, "%s: RELEASE carries handle %llu (got %llu)", what,
	      (unsigned long long)handle, (unsigned long long)rq.handle);
	reply(ctl, rq.id, 0, 0);
}

static void c_read(struct outcome *o, void *arg)
{
	int fd = open_node();
	char buf[32];

	(void)arg;
	if (fd < 0) {
		o->ret = -1;
		o->err = errno;
		return;
	}
	memset(buf, 'x', sizeof(buf));
	o->ret = read(fd, buf + 4, 16);
	o->err = errno;
	memcpy(o->data, buf, sizeof(buf));
	o->extra = (int)lseek(fd, 0, SEEK_CUR) == -1 ? errno : 0;
	close(fd);
}

static void test_read(void)
{
	struct child c = spawn(c_read, NULL);
	struct pdk_request rq;
	struct outcome o;
	char big[64];
	int r;

	serve_open(7, 0, c.pid, 1);
	if (next_request(ctl, PDK_OP_READ, &rq))
		return;
	check(rq.handle == 7 && rq.arg[1] == 16 && rq.arg[3] == 0 && rq.cookie == 1,
	      "READ carries handle 7, count 16, not positional");
	r = access_(ctl, rq.id, PDK_COPY_TO_CALLER, rq.arg[0], PDK_MAX_ACCESS + 1ull, big, NULL);
	check(r == -EINVAL, "ACCESS longer than PDK_MAX_ACCESS is EINVAL (%d)", r);
	r = access_(ctl, rq.id, PDK_COPY_TO_CALLER, 16, 4, big, NULL);
	check(r == -EFAULT, "ACCESS to an address the caller has not mapped is EFAULT (%d)", r);
	r = access_(ctl, rq.id, PDK_COPY_TO_CALLER, rq.arg[0], 4, (void *)16, NULL);
	check(r == -EFAULT, "ACCESS from a daemon buffer that faults is EFAULT (%d)", r);
	r = access_(ctl, rq.id + 1000000, PDK_COPY_TO_CALLER, rq.arg[0], 4, big, NULL);
	check(r == -ESRCH, "ACCESS for an unknown request is ESRCH (%d)", r);
	r = access_(ctl, rq.id, 99, rq.arg[0], 4, big, NULL);
	check(r == -EINVAL, "ACCESS of an unknown kind is EINVAL (%d)", r);
	r = access_(ctl, rq.id, PDK_COPY_TO_CALLER, rq.arg[0], 5, "hello", NULL);
	check(r == 0, "ACCESS COPY_TO_CALLER of 5 bytes (%d)", r);
	check(reply(ctl, rq.id, 5, 0) == 0, "REPLY to READ");
	r = access_(ctl, rq.id, PDK_COPY_TO_CALLER, rq.arg[0], 5, "hello", NULL);
	check(r == -ESRCH, "ACCESS after the reply is ESRCH (%d)", r);
	check(reply(ctl, rq.id, 5, 0) == -ESRCH, "a second REPLY is ESRCH");
	serve_release(7, "close");
	if (!collect(c, &o))
		return;
	check(o.ret == 5 && !memcmp(o.data, "xxxxhello", 9) && o.data[9] == 'x' && o.data[31] == 'x',
	      "the caller's read gives exactly the 5 bytes, nothing around them written (ret %ld)", o.ret);
	check(o.extra == ESPIPE, "lseek on a nonseekable file is ESPIPE (%d)", o.extra);
}

static void c_write_ioctl(struct outcome *o, void *arg)
{
	int fd = open_node();
	unsigned char st[16];
	int p[2];

	(void)arg;
	if (fd < 0) {
		o->ret = -100;
		return;
	}
	o->ret = write(fd, "abcdef", 6);
	memset(st, 0x11, sizeof(st));
	if (pipe(p))
		return;
	/* the ioctl's argument names the descriptors for PDK_FILE_HANDLE */
	st[0] = fd;
	st[1] = p[0];
	o->extra = ioctl(fd, _IOWR('T', 0x7a, unsigned char[16]), st);
	o->err = errno;
	memcpy(o->data, st, sizeof(st));
	close(fd);
}

static void test_write_ioctl(void)
{
	struct child c = spawn(c_write_ioctl, NULL);
	struct pdk_request rq;
	struct outcome o;
	unsigned char buf[16];
	uint64_t v;
	int r;

	serve_open(8, 0, 0, 1);
	if (next_request(ctl, PDK_OP_WRITE, &rq))
		return;
	memset(buf, 0, sizeof(buf));
	r = access_(ctl, rq.id, PDK_COPY_FROM_CALLER, rq.arg[0], rq.arg[1], buf, NULL);
	check(r == 0 && rq.arg[1] == 6 && !memcmp(buf, "abcdef", 6),
	      "WRITE: ACCESS COPY_FROM_CALLER gives the caller's 6 bytes");
	reply(ctl, rq.id, 6, 0);
	if (next_request(ctl, PDK_OP_IOCTL, &rq))
		return;
	check(rq.arg[0] == (uint32_t)_IOWR('T', 0x7a, unsigned char[16]) && rq.arg[2] == 0 && rq.handle == 8,
	      "IOCTL carries the command, handle 8, native (arg[2] 0)");
	r = access_(ctl, rq.id, PDK_COPY_FROM_CALLER, rq.arg[1], 16, buf, NULL);
	check(r == 0 && buf[2] == 0x11, "IOCTL: argument bytes read from the caller");
	v = buf[0];
	r = access_(ctl, rq.id, PDK_FILE_HANDLE, buf[0], 0, NULL, &v);
	check(r == 0 && v == 8, "FILE_HANDLE of the caller's own descriptor gives handle 8 (%d, %llu)", r,
	      (unsigned long long)v);
	r = access_(ctl, rq.id, PDK_FILE_HANDLE, buf[1], 0, NULL, &v);
	check(r == -EBADF, "FILE_HANDLE of a pipe is EBADF (%d)", r);
	r = access_(ctl, rq.id, PDK_FILE_HANDLE, 1000, 0, NULL, &v);
	check(r == -EBADF, "FILE_HANDLE of a closed descriptor is EBADF (%d)", r);
	r = access_(ctl, rq.id, PDK_COPY_TO_CALLER, rq.arg[1] + 4, 3, "\x01\x02\x03", NULL);
	check(r == 0, "IOCTL: 3 bytes written back at offset 4");
	reply(ctl, rq.id, 42, 0);
	serve_release(8, "close");
	if (!collect(c, &o))
		return;
	check(o.ret == 6, "the caller's write returns 6 (%ld)", o.ret);
	check(o.extra == 42 && o.data[3] == 0x11 && o.data[4] == 1 && o.data[6] == 3 && o.data[7] == 0x11,
	      "the caller's ioctl returns 42 with exactly bytes 4..6 changed");
}

static void c_new_file(struct outcome *o, void *arg)
{
	int fd = open_node(), nfd;

	(void)arg;
	nfd = ioctl(fd, _IO('T', 0x7b));
	o->ret = nfd;
	o->extra = nfd >= 0 ? fcntl(nfd, F_GETFD) : -1;
	o->err = nfd >= 0 ? ioctl(nfd, _IO('T', 0x7c)) : -1;
	close(nfd);
	close(fd);
}

static void test_new_file(void)
{
	struct child c = spawn(c_new_file, NULL);
	struct pdk_request rq;
	struct outcome o;
	uint64_t v = 99;
	int r;

	serve_open(9, 0, 0, 1);
	if (next_request(ctl, PDK_OP_IOCTL, &rq))
		return;
	r = access_(ctl, rq.id, PDK_NEW_FILE, 2, 0, NULL, &v);
	check(r == -EINVAL, "NEW_FILE with address 2 is EINVAL (%d)", r);
	v = 99;
	r = access_(ctl, rq.id, PDK_NEW_FILE, 1, 0, NULL, &v);
	check(r == 0 && v >= 3 && v < 1024, "NEW_FILE gives a descriptor (%d, %llu)", r, (unsigned long long)v);
	reply(ctl, rq.id, (int64_t)v, 0);
	if (next_request(ctl, PDK_OP_IOCTL, &rq))
		return;
	check(rq.handle == 99 && rq.arg[0] == _IO('T', 0x7c), "a call on the new descriptor carries handle 99");
	reply(ctl, rq.id, 5, 0);
	serve_release(99, "close of the new descriptor");
	serve_release(9, "close");
	if (!collect(c, &o))
		return;
	check(o.ret >= 3 && (o.extra & FD_CLOEXEC) && o.err == 5,
	      "the caller has the descriptor (close-on-exec) and its ioctl returns 5");
}

static void c_poll(struct outcome *o, void *arg)
{
	int fd = open_node(), ep;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	struct epoll_event ev = { .events = EPOLLIN }, got;

	(void)arg;
	o->ret = poll(&p, 1, 30000);
	o->extra = p.revents;
	p.events = POLLOUT;          /* the readiness known answers for POLLIN only */
	o->data[1] = poll(&p, 1, 30000);
	o->data[2] = p.revents;
	ioctl(fd, _IO('T', 0x7d));   /* makes the readiness stale */
	ep = epoll_create1(0);
	epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	o->err = epoll_wait(ep, &got, 1, 30000);
	o->data[0] = got.events;
	close(ep);
	close(fd);
}

static void test_poll(void)
{
	struct child c = spawn(c_poll, NULL);
	struct pdk_request rq;
	struct outcome o;
	uint64_t file;

	file = serve_open(10, 0, 0, 1);
	if (next_request(ctl, PDK_OP_POLL, &rq))
		return;
	check(rq.file == file && (rq.arg[0] & POLLIN) && rq.handle == 10, "the first poll asks the level (POLL POLLIN)");
	reply(ctl, rq.id, 0, 0);            /* not ready: the daemon watches */
	check(notify(ctl, file + 1000, POLLIN) == -ESRCH, "NOTIFY of an unknown file is ESRCH");
	check(notify(ctl, file, POLLIN) == 0, "NOTIFY POLLIN");
	if (next_request(ctl, PDK_OP_WATCH, &rq))
		return;
	check((rq.arg[0] & POLLOUT) && !(rq.arg[0] & POLLIN),
	      "a poll for POLLOUT the known readiness (POLLIN) does not satisfy sends WATCH for POLLOUT (%#llx)",
	      (unsigned long long)rq.arg[0]);
	notify(ctl, file, POLLIN | POLLOUT);
	if (next_request(ctl, PDK_OP_IOCTL, &rq))
		return;
	reply(ctl, rq.id, 0, 0);
	if (next_request(ctl, PDK_OP_POLL, &rq))
		return;
	check(rq.arg[0] & POLLIN, "after an ioctl epoll asks again (POLL)");
	reply(ctl, rq.id, 0, 0);
	notify(ctl, file, POLLIN | POLLOUT);
	serve_release(10, "close");
	if (!collect(c, &o))
		return;
	check(o.ret == 1 && o.extra == POLLIN, "poll(2) wakes with POLLIN (%ld, %#x)", o.ret, o.extra);
	check(o.data[1] == 1 && o.data[2] == POLLOUT, "poll(2) for POLLOUT wakes with POLLOUT (%d, %#x)", o.data[1],
	      o.data[2]);
	check(o.err == 1 && (o.data[0] & EPOLLIN), "epoll_wait wakes with EPOLLIN");
}

/* Readiness and forwarded calls: the first poll after a call asks the level and waits for it; an answer
 * to a WATCH made before a call that completed since is not trusted; every answer wakes every waiter (an
 * epoll for POLLPRI after an answer of POLLIN). */
static void c_poll_races(struct outcome *o, void *arg)
{
	int fd = open_node(), ep;
	struct pollfd p = { .fd = fd, .events = POLLPRI };
	struct epoll_event ev = { .events = EPOLLPRI }, got;

	(void)arg;
	o->data[0] = poll(&p, 1, 0);        /* POLL POLLPRI: not ready, the daemon watches */
	ioctl(fd, _IO('T', 0x7d));          /* the answer comes while this call is in flight */
	o->data[1] = poll(&p, 1, 0);        /* POLL again: the call may have consumed that readiness */
	ioctl(fd, _IO('T', 0x7d));          /* the answer comes after this call */
	o->ret = poll(&p, 1, 30000);        /* not that answer: a POLL, answered POLLPRI */
	o->extra = p.revents;
	ioctl(fd, _IO('T', 0x7d));
	o->data[4] = poll(&p, 1, 0);        /* a level already there: found with no timeout */
	o->data[5] = p.revents;
	ioctl(fd, _IO('T', 0x7d));
	ep = epoll_create1(0);
	epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);   /* POLL POLLPRI: not ready */
	p.events = POLLIN;
	o->data[2] = poll(&p, 1, 0);        /* WATCH POLLPRI|POLLIN (answered with POLLIN after it returned) */
	o->err = epoll_wait(ep, &got, 1, 30000);
	o->data[3] = got.events;
	close(ep);
	close(fd);
}

/* Serves the next request as op, replying result; its events in *events. */
static int serve_poll_op(unsigned op, int64_t result, uint64_t *events)
{
	struct pdk_request rq;

	if (next_request(ctl, op, &rq))
		return -1;
	*events = rq.arg[0];
	if (op == PDK_OP_POLL || op == PDK_OP_IOCTL)
		reply(ctl, rq.id, result, 0);
	return 0;
}

static void test_poll_races(void)
{
	struct child c = spawn(c_poll_races, NULL);
	struct pdk_request call;
	struct outcome o;
	uint64_t file, ev;

	file = serve_open(12, 0, 0, 1);
	if (serve_poll_op(PDK_OP_POLL, 0, &ev))
		return;
	check(ev & POLLPRI, "a poll for POLLPRI asks the level (POLL POLLPRI)");
	if (next_request(ctl, PDK_OP_IOCTL, &call))
		return;
	notify(ctl, file, POLLPRI);         /* during the call */
	reply(ctl, call.id, 0, 0);
	if (serve_poll_op(PDK_OP_POLL, 0, &ev))
		return;
	check(ev & POLLPRI, "a NOTIFY during a call is forgotten when it completes: the next poll asks again");
	if (serve_poll_op(PDK_OP_IOCTL, 0, &ev))
		return;
	notify(ctl, file, POLLPRI);         /* answers the WATCH made before the call */
	if (serve_poll_op(PDK_OP_POLL, POLLPRI, &ev))
		return;
	check(ev & POLLPRI, "a NOTIFY answering a WATCH made before a completed call is not trusted: the waiter asks again");
	if (serve_poll_op(PDK_OP_IOCTL, 0, &ev) || serve_poll_op(PDK_OP_POLL, POLLPRI, &ev) ||
	    serve_poll_op(PDK_OP_IOCTL, 0, &ev) || serve_poll_op(PDK_OP_POLL, 0, &ev))
		return;
	check(ev == POLLPRI, "epoll for EPOLLPRI asks POLLPRI (%#llx)", (unsigned long long)ev);
	if (serve_poll_op(PDK_OP_WATCH, 0, &ev))
		return;
	check((ev & (POLLIN | POLLPRI)) == (POLLIN | POLLPRI), "a poll for POLLIN beside it names both in its WATCH (%#llx)",
	      (unsigned long long)ev);
	notify(ctl, file, POLLIN);
	if (serve_poll_op(PDK_OP_WATCH, 0, &ev))
		return;
	check(ev == POLLPRI, "an answer of POLLIN wakes the epoll for EPOLLPRI, which asks again (%#llx)",
	      (unsigned long long)ev);
	notify(ctl, file, POLLPRI);
	serve_release(12, "close");
	if (!collect(c, &o))
		return;
	check(o.data[0] == 0 && o.data[1] == 0 && o.data[2] == 0, "the polls with no timeout find nothing (%d, %d, %d)",
	      o.data[0], o.data[1], o.data[2]);
	check(o.ret == 1 && o.extra == POLLPRI, "poll(2) wakes with the level asked after the call (%ld, %#x)", o.ret,
	      o.extra);
	check(o.data[4] == 1 && o.data[5] == POLLPRI, "a poll with no timeout finds a level already there (%d, %#x)",
	      o.data[4], o.data[5]);
	check(o.err == 1 && o.data[3] == EPOLLPRI, "epoll_wait wakes with EPOLLPRI (%d, %#x)", o.err, o.data[3]);
}

static void on_usr1(int sig) { (void)sig; }

static void c_signal(struct outcome *o, void *arg)
{
	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = arg ? SA_RESTART : 0 };
	int fd = open_node();
	char b[8];

	sigaction(SIGUSR1, &sa, NULL);
	o->ret = read(fd, b, sizeof(b));
	o->err = errno;
	close(fd);
}

static void test_signal(int restart)
{
	struct child c = spawn(c_signal, restart ? (void *)1 : NULL);
	struct pdk_request rq, irq;
	struct outcome o;
	const char *how = restart ? "SA_RESTART" : "no SA_RESTART";

	/* the open is served before the handler is installed; USR1 is sent once the READ is here */
	serve_open(11, 0, 0, 1);
	if (next_request(ctl, PDK_OP_READ, &rq))
		return;
	kill(c.pid, SIGUSR1);
	if (next_request(ctl, PDK_OP_INTERRUPT, &irq))
		return;
	check(irq.arg[0] == rq.id, "%s: a signal during a read sends INTERRUPT for it", how);
	reply(ctl, rq.id, -EINTR, 0);
	if (restart) {
		if (next_request(ctl, PDK_OP_READ, &rq))
			return;
		check(1, "SA_RESTART: the read is restarted (a new READ)");
		reply(ctl, rq.id, 0, 0);
	}
	serve_release(11, "close");
	if (!collect(c, &o))
		return;
	if (restart)
		check(o.ret == 0, "SA_RESTART: the restarted read returns 0 (%ld)", o.ret);
	else
		check(o.ret == -1 && o.err == EINTR, "no SA_RESTART: the read fails with EINTR (%ld, %s)", o.ret,
		      strerror(o.err));
}

static void c_takeback(struct outcome *o, void *arg)
{
	struct sigaction sa = { .sa_handler = on_usr1 };
	int fd = open_node(), *report = arg;
	char b[8];

	sigaction(SIGUSR1, &sa, NULL);
	o->ret = read(fd, b, sizeof(b));
	o->err = errno;
	if (write(report[1], "r", 1) != 1)
		_exit(3);
	close(fd);
}

/* A signal before the daemon read the request takes it back: the daemon never sees it. */
static void test_takeback(void)
{
	struct pollfd p = { .fd = ctl, .events = POLLIN };
	int report[2];
	struct child c;
	struct outcome o;
	char x;

	if (pipe(report))
		die("pipe");
	c = spawn(c_takeback, report);
	close(report[1]);
	serve_open(17, 0, 0, 1);
	check(poll(&p, 1, 30000) == 1, "the READ is queued (the control file polls POLLIN)");
	kill(c.pid, SIGUSR1);
	check(read(report[0], &x, 1) == 1, "the caller's read returns");
	close(report[0]);
	serve_release(17, "a request taken back is never seen: the next request is the close's");
	if (!collect(c, &o))
		return;
	check(o.ret == -1 && o.err == EINTR, "the taken-back read fails with EINTR (%ld, %s)", o.ret, strerror(o.err));
}

static void c_hostile(struct outcome *o, void *arg)
{
	int fd = open_node();
	char b[4];
	void *m;

	(void)arg;
	o->ret = read(fd, b, sizeof(b)) < 0 ? errno : 0;
	o->err = ioctl(fd, _IO('T', 1)) < 0 ? errno : 0;
	o->extra = ioctl(fd, _IO('T', 2)) < 0 ? errno : 0;
	m = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
	o->data[0] = m == MAP_FAILED ? errno : 0;
	close(fd);
	o->data[1] = open_node() < 0 ? errno : 0;
}

/* Replies a local driver could not give are not passed on as they are. */
static void test_hostile(void)
{
	struct child c = spawn(c_hostile, NULL);
	struct pdk_request rq;
	struct outcome o;
	uint64_t area;
	char b[8];
	int r;

	serve_open(18, 0, 0, 1);
	if (next_request(ctl, PDK_OP_READ, &rq))
		return;
	reply(ctl, rq.id, 10, 0);   /* more than the 4 bytes asked for */
	if (next_request(ctl, PDK_OP_IOCTL, &rq))
		return;
	reply(ctl, rq.id, -512, 0);   /* ERESTARTSYS is the kernel's own */
	if (next_request(ctl, PDK_OP_IOCTL, &rq))
		return;
	reply(ctl, rq.id, -515, 0);   /* ENOIOCTLCMD */
	if (next_request(ctl, PDK_OP_MMAP, &rq))
		return;
	area = rq.area;
	r = access_(ctl, rq.id, PDK_COPY_TO_CALLER, rq.arg[0], 4, b, NULL);
	check(r == -EINVAL, "ACCESS on an MMAP request (its caller holds its mmap lock) is EINVAL (%d)", r);
	reply(ctl, rq.id, -ENODEV, 0);
	if (next_request(ctl, PDK_OP_MUNMAP, &rq))
		return;
	check(rq.area == area, "a failed mmap sends MUNMAP for its area");
	serve_release(18, "close");
	if (next_request(ctl, PDK_OP_OPEN, &rq))
		return;
	reply(ctl, rq.id, 7, 1234);   /* neither 0 nor PDK_OPEN_SEEKABLE */
	serve_release(1234, "an OPEN reply out of range: its handle");
	if (!collect(c, &o))
		return;
	check(o.ret == EIO, "a READ reply beyond the count gives EIO (%s)", strerror(o.ret));
	check(o.err == EIO, "a reply of -ERESTARTSYS gives EIO (%s)", strerror(o.err));
	check(o.extra == ENOTTY, "a reply of -ENOIOCTLCMD gives ENOTTY (%s)", strerror(o.extra));
	check(o.data[0] == ENODEV, "the daemon's mmap error reaches the caller (%s)", strerror(o.data[0]));
	check(o.data[1] == EIO, "an OPEN reply out of range gives EIO (%s)", strerror(o.data[1]));
}

static const char *compat_caller;

static void c_compat(struct outcome *o, void *arg)
{
	(void)o;
	(void)arg;
	execl(compat_caller, compat_caller, node_path, (char *)NULL);
	_exit(127);
}

/* A 32-bit caller's ioctl is forwarded with arg[2] = 1 and its 32-bit argument address. */
static void test_compat(void)
{
	struct pdk_request rq;
	unsigned char buf[8];
	struct child c;
	int r, st;

	if (!compat_caller) {
		printf("skip - compat_ioctl (no 32-bit caller given)\n");
		return;
	}
	if (access(compat_caller, X_OK)) {
		check(0, "the 32-bit caller %s exists", compat_caller);
		return;
	}
	c = spawn(c_compat, NULL);
	serve_open(19, 0, 0, 1);
	if (next_request(ctl, PDK_OP_IOCTL, &rq))
		return;
	check(rq.arg[0] == 0xc0087a01 && rq.arg[2] == 1 && rq.arg[1] < (1ull << 32),
	      "compat_ioctl: IOCTL with arg[2] 1 and a 32-bit address (%#llx)", (unsigned long long)rq.arg[1]);
	r = access_(ctl, rq.id, PDK_COPY_FROM_CALLER, rq.arg[1], 8, buf, NULL);
	check(r == 0 && buf[0] == 1 && buf[7] == 8, "compat_ioctl: the 32-bit caller's bytes are read");
	buf[0] = 9;
	access_(ctl, rq.id, PDK_COPY_TO_CALLER, rq.arg[1], 1, buf, NULL);
	reply(ctl, rq.id, 5, 0);
	serve_release(19, "compat close");
	waitpid(c.pid, &st, 0);
	close(c.pipe);
	check(WIFEXITED(st) && WEXITSTATUS(st) == 5, "compat_ioctl: the 32-bit caller gets 5 and the byte written (status %d)",
	      WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

#define STRESS_CALLERS 4
#define STRESS_READS 200

static void c_stress(struct outcome *o, void *arg)
{
	struct sigaction sa = { .sa_handler = on_usr1 };
	int fd, i;
	char b[8];

	(void)arg;
	sigaction(SIGUSR1, &sa, NULL);
	fd = open_node();
	for (i = 0; i < STRESS_READS; i++) {
		ssize_t n = read(fd, b, sizeof(b));

		if (n == 8 && !memcmp(b, "ABCDEFGH", 8))
			o->ret++;
		else if (n < 0 && errno == EINTR)
			o->err++;
		else
			o->extra++;
	}
	close(fd);
}

/* Several callers read at once while signals interrupt some of them before and after the daemon read
 * their requests: every read ends as a full read or EINTR, each answered request once. */
static void test_stress(void)
{
	struct child c[STRESS_CALLERS];
	struct pdk_request pending[STRESS_CALLERS], rq;
	int npending = 0, released = 0, round = 0, i, bad = 0, interrupts = 0, served = 0;
	unsigned seed = 12345;

	struct sigaction sa = { .sa_handler = on_usr1 };

	/* the callers inherit the handler: a signal before their own sigaction must not kill them */
	sigaction(SIGUSR1, &sa, NULL);
	for (i = 0; i < STRESS_CALLERS; i++)
		c[i] = spawn(c_stress, NULL);
	while (released < STRESS_CALLERS && !bad) {
		struct pollfd p = { .fd = ctl, .events = POLLIN };

		if (poll(&p, 1, 30000) != 1) {
			check(0, "stress: requests keep coming (none in 30 s, %d pending)", npending);
			bad = 1;
			break;
		}
		fcntl(ctl, F_SETFL, O_NONBLOCK);
		while (read(ctl, &rq, sizeof(rq)) == sizeof(rq)) {
			switch (rq.op) {
			case PDK_OP_OPEN:
				reply(ctl, rq.id, 0, 500);
				break;
			case PDK_OP_RELEASE:
				reply(ctl, rq.id, 0, 0);
				released++;
				break;
			case PDK_OP_READ:
				if (npending == STRESS_CALLERS) {
					bad = 1;
					break;
				}
				pending[npending++] = rq;
				break;
			case PDK_OP_INTERRUPT:
				for (i = 0; i < npending; i++) {
					if (pending[i].id == rq.arg[0]) {
						if (reply(ctl, pending[i].id, -EINTR, 0))
							bad = 1;
						pending[i] = pending[--npending];
						interrupts++;
						break;
					}
				}
				break;
			default:
				printf("   (stress: unexpected %s)\n", op_name(rq.op));
				bad = 1;
			}
		}
		fcntl(ctl, F_SETFL, 0);
		round++;
		if (round % 3 == 0 && npending) {
			/* signal a waiting caller: its INTERRUPT comes next */
			kill(pending[rand_r(&seed) % npending].tgid, SIGUSR1);
			continue;
		}
		if (round % 5 == 0) {
			/* signal a caller whose request may not be read yet: it is taken back */
			kill(c[rand_r(&seed) % STRESS_CALLERS].pid, SIGUSR1);
		}
		for (i = 0; i < npending; i++) {
			int r = access_(ctl, pending[i].id, PDK_COPY_TO_CALLER, pending[i].arg[0], 8, "ABCDEFGH", NULL);

			if (r == 0)
				r = reply(ctl, pending[i].id, 8, 0);
			if (r)
				bad = 1;
			served++;
		}
		npending = 0;
	}
	check(!bad, "stress: every request served once (%d reads, %d interrupts)", served, interrupts);
	for (i = 0; i < STRESS_CALLERS; i++) {
		struct outcome o;

		if (!collect(c[i], &o))
			continue;
		check(o.ret + o.err == STRESS_READS && o.extra == 0,
		      "stress caller %d: %ld full reads, %d EINTR, %d other", i, o.ret, o.err, o.extra);
	}
}

struct uffd_job {
	int uffd, up, down;
	void *page;
};

static void *uffd_resolver(void *arg)
{
	struct uffd_job *j = arg;
	struct pollfd p = { .fd = j->uffd, .events = POLLIN };
	struct uffd_msg msg;
	struct uffdio_zeropage zp = { .range = { .start = (uintptr_t)j->page, .len = 4096 } };
	char x;

	if (poll(&p, 1, 30000) != 1 || read(j->uffd, &msg, sizeof(msg)) != sizeof(msg))
		return NULL;
	if (write(j->up, "f", 1) != 1 || read(j->down, &x, 1) != 1)
		return NULL;
	ioctl(j->uffd, UFFDIO_ZEROPAGE, &zp);
	return NULL;
}

static void c_uffd(struct outcome *o, void *arg)
{
	int *pipes = arg, fd = open_node();
	struct uffd_job j = { .up = pipes[1], .down = pipes[2] };
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg;
	pthread_t t;

	j.uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
	j.page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	reg.range.start = (uintptr_t)j.page;
	reg.range.len = 4096;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (j.uffd < 0 || ioctl(j.uffd, UFFDIO_API, &api) || ioctl(j.uffd, UFFDIO_REGISTER, &reg)) {
		o->ret = -100;
		o->err = errno;
		close(fd);
		return;
	}
	pthread_create(&t, NULL, uffd_resolver, &j);
	o->ret = ioctl(fd, _IO('T', 0x70), j.page);
	memcpy(o->data, j.page, 4);
	pthread_join(t, NULL);
	close(fd);
}

/* The daemon's process dies while a caller carries out its access (the caller's copy faults on a
 * userfaultfd page meanwhile): the caller finishes the copy alone, and the request is still answered. */
static void test_daemon_killed_in_access(void)
{
	int up[2], down[2], pipes[3], st;
	struct pdk_request rq;
	struct outcome o;
	struct child c;
	pid_t helper;
	char x;

	if (pipe(up) || pipe(down))
		die("pipe");
	pipes[1] = up[1];
	pipes[2] = down[0];
	c = spawn(c_uffd, pipes);
	serve_open(22, 0, 0, 1);
	if (next_request(ctl, PDK_OP_IOCTL, &rq))
		return;
	helper = fork();
	if (helper == 0)
		_exit(access_(ctl, rq.id, PDK_COPY_TO_CALLER, rq.arg[1], 4, "XYZW", NULL) ? 1 : 0);
	if (read(up[0], &x, 1) != 1) {
		check(0, "the caller's copy faults on its userfaultfd page");
		kill(helper, SIGKILL);
		waitpid(helper, &st, 0);
		return;
	}
	kill(helper, SIGKILL);
	waitpid(helper, &st, 0);
	check(WIFSIGNALED(st), "a daemon process blocked in PDK_ACCESS dies of SIGKILL");
	write(down[1], "r", 1);
	reply(ctl, rq.id, 0, 0);
	serve_release(22, "after the daemon process died in an access");
	if (!collect(c, &o))
		return;
	check(o.ret == 0 && !memcmp(o.data, "XYZW", 4),
	      "the caller completes the copy alone and its ioctl is answered (%ld, %.4s)", o.ret, o.data);
	close(up[0]);
	close(up[1]);
	close(down[0]);
	close(down[1]);
}

static void c_fuzz_caller(struct outcome *o, void *arg)
{
	char buf[64];
	int i;

	(void)arg;
	for (i = 0; i < 100000; i++) {
		int fd = open("/dev/pdktest/fuzz", O_RDWR);

		if (fd < 0) {
			if (errno == ENOENT || errno == ENXIO)
				break;   /* the fuzzing control file went */
			continue;
		}
		(void)!read(fd, buf, sizeof(buf));
		(void)!write(fd, buf, sizeof(buf));
		ioctl(fd, _IOWR('T', 0x71, char[64]), buf);
		close(fd);
		o->ret++;
	}
}

static uint64_t fuzz_rand(unsigned *seed)
{
	return ((uint64_t)rand_r(seed) << 33) ^ ((uint64_t)rand_r(seed) << 11) ^ (uint64_t)rand_r(seed);
}

/* A hostile daemon: random replies, accesses, notifications and node requests on a control file of its
 * own while a caller keeps calling; nothing may crash, and the kernel log must stay clean. */
static void test_fuzz(void)
{
	static unsigned char big[PDK_MAX_ACCESS + 4096];
	struct pdk_node n = node_of(1, "pdktest/fuzz", "", PDK_NODE_ANY_NUMBER);
	struct pdk_request last = { 0 }, rq;
	unsigned seed = 4242;
	struct outcome o;
	struct child c;
	int fz, i, ops = 0;

	fz = open("/dev/paradice", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fz < 0 || add_node(fz, &n)) {
		check(0, "fuzz: a control file and its node");
		return;
	}
	c = spawn(c_fuzz_caller, NULL);
	for (i = 0; i < 4000; i++) {
		uint64_t r = fuzz_rand(&seed);
		uint64_t id = r % 4 ? last.id : last.id + (r % 5) - 2;   /* mostly the live request */

		if (read(fz, &rq, sizeof(rq)) == sizeof(rq))
			last = rq;
		switch ((r >> 8) % 8) {
		case 0:
		case 1: {   /* replies, sometimes sane */
			int64_t res = (r >> 16) % 4 == 0 ? (int64_t)fuzz_rand(&seed) :
				      (r >> 16) % 4 == 1 ? (int64_t)((r >> 20) % 80) - 40 : 0;

			reply(fz, id, res, fuzz_rand(&seed));
			break;
		}
		case 2:
		case 3: {   /* accesses near the caller's buffer, or anywhere it has nothing mapped */
			uint64_t addr = (r >> 16) & 1 ? last.arg[0] + ((r >> 20) % 128) - 64 : fuzz_rand(&seed);
			uint64_t len = (r >> 30) & 1 ? (r >> 31) % 128 : fuzz_rand(&seed) % (PDK_MAX_ACCESS + 4096);
			uint32_t kind = (r >> 40) % 6;
			uint64_t value = fuzz_rand(&seed) % 3;

			if (kind == PDK_COPY_TO_CALLER && addr != last.arg[0])
				addr = 8;   /* never scribble on the caller beyond its buffer: it must keep calling */
			if (kind == PDK_COPY_TO_CALLER && len > 64)
				len = 64;
			if (kind == PDK_NEW_FILE)
				addr = value & 1;
			access_(fz, id, kind, addr, len, (r >> 50) & 1 ? big : (void *)(uintptr_t)fuzz_rand(&seed), &value);
			if (kind == PDK_NEW_FILE)
				break;
			break;
		}
		case 4:
			notify(fz, last.file + (r >> 16) % 3 - 1, (uint32_t)fuzz_rand(&seed) & 0x3fff);
			break;
		case 5: {   /* node requests from random bytes */
			struct pdk_node junk;
			unsigned j;

			for (j = 0; j < sizeof(junk); j++)
				((unsigned char *)&junk)[j] = (unsigned char)fuzz_rand(&seed);
			junk.path[(r >> 16) % sizeof(junk.path)] = 0;
			junk.subsystem[(r >> 24) % sizeof(junk.subsystem)] = 0;
			if (add_node(fz, &junk) == 0) {
				uint64_t ck = junk.cookie;

				ioctl(fz, PDK_REMOVE_NODE, &ck);
			}
			break;
		}
		case 6: {
			struct pdk_parent pp = { .cookie = (r >> 16) % 3 };

			snprintf(pp.parent, sizeof(pp.parent), "%s", (r >> 20) & 1 ? "fuzzdev" : "");
			ioctl(fz, PDK_SET_PARENT, &pp);
			break;
		}
		default:   /* the daemon maps what it should not */
		{
			void *m = mmap(NULL, 4096 * (1 + (r >> 16) % 4), PROT_READ, MAP_SHARED, fz,
				       last.area + 4096 * ((r >> 20) % 3));

			if (m != MAP_FAILED)
				munmap(m, 4096);
		}
		}
		ops++;
	}
	close(fz);   /* the caller's calls fail with EIO from now on, and the node goes */
	/* collect fails unless the caller's calls all ended once the control file went */
	if (collect(c, &o))
		check(1, "fuzz: after %d hostile operations the caller's calls end (%ld rounds made meanwhile)", ops,
		      o.ret);
}

static void c_open_only(struct outcome *o, void *arg)
{
	(void)arg;
	o->ret = open_node();
	o->err = errno;
	if (o->ret >= 0) {
		char b[4];

		o->extra = read(o->ret, b, sizeof(b));
	}
}

static void test_kill(void)
{
	struct child c = spawn(c_open_only, NULL);
	struct pdk_request rq;
	char b[4];
	int r, st;

	serve_open(12, 0, 0, 1);
	if (next_request(ctl, PDK_OP_READ, &rq))
		return;
	kill(c.pid, SIGKILL);
	/* the dying caller's release comes once its read has ended; it waits for the reply, so the
	 * checks come before it is answered and the child is reaped after */
	{
		struct pdk_request rel;

		if (next_request(ctl, PDK_OP_RELEASE, &rel))
			return;
		r = access_(ctl, rq.id, PDK_COPY_TO_CALLER, rq.arg[0], 4, b, NULL);
		check(r == -ESRCH, "SIGKILL of a waiting caller: a later ACCESS is ESRCH (%d)", r);
		check(reply(ctl, rq.id, 4, 0) == -ESRCH, "SIGKILL: a late REPLY is ESRCH");
		check(rel.handle == 12, "SIGKILL: the dead caller's file is released (handle %llu)",
		      (unsigned long long)rel.handle);
		reply(ctl, rel.id, 0, 0);
	}
	waitpid(c.pid, &st, 0);
	close(c.pipe);

	/* killed during OPEN: the daemon's late handle is released by the module */
	c = spawn(c_open_only, NULL);
	if (next_request(ctl, PDK_OP_OPEN, &rq))
		return;
	kill(c.pid, SIGKILL);
	waitpid(c.pid, &st, 0);
	close(c.pipe);
	check(reply(ctl, rq.id, 0, 555) == -ESRCH, "SIGKILL during OPEN: the late reply is ESRCH");
	serve_release(555, "SIGKILL during OPEN: the late handle");
}

static void c_mmap(struct outcome *o, void *arg)
{
	int fd = open_node(), cmd[2];
	int *pipes = arg;
	unsigned char *m;
	pid_t g;
	char x;

	m = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 4096);
	if (m == MAP_FAILED) {
		o->ret = -1;
		o->err = errno;
		return;
	}
	memcpy(o->data, m, 8);          /* what the daemon wrote */
	memcpy(m + 100, "CALLER", 6);   /* for the daemon to see */
	if (write(pipes[1], "w", 1) != 1 || read(pipes[2], &x, 1) != 1)
		return;
	/* a hole in the middle: the mapping splits, nothing is unmapped for the daemon yet */
	munmap(m + 4096, 4096);
	if (pipe(cmd))
		return;
	g = fork();
	if (g == 0) {          /* the grandchild keeps the area mapped after the child unmaps it */
		close(cmd[1]);
		if (read(cmd[0], &x, 1) == 1 && m[0] == 'D')
			_exit(7);
		_exit(1);
	}
	munmap(m, 4096);
	munmap(m + 8192, 4096);
	if (write(pipes[1], "u", 1) != 1 || read(pipes[2], &x, 1) != 1)
		return;
	write(cmd[1], "g", 1);
	waitpid(g, &o->extra, 0);
	o->ret = 0;
	close(fd);
}

static void test_mmap(void)
{
	int to_parent[2], to_child[2], pipes[3];
	struct pdk_request rq;
	struct outcome o;
	struct child c;
	unsigned char *d;
	void *bad;
	char x;

	if (pipe(to_parent) || pipe(to_child))
		die("pipe");
	pipes[0] = 0;
	pipes[1] = to_parent[1];
	pipes[2] = to_child[0];
	c = spawn(c_mmap, pipes);
	serve_open(13, 0, 0, 1);
	if (next_request(ctl, PDK_OP_MMAP, &rq))
		return;
	check(rq.arg[0] == 3 * 4096 && rq.arg[1] == 4096 && rq.arg[2] == (PROT_READ | PROT_WRITE) &&
	      rq.arg[3] == MAP_SHARED && rq.handle == 13,
	      "MMAP carries length, device offset, PROT_* and MAP_SHARED");
	bad = mmap(NULL, 4 * 4096, PROT_READ, MAP_SHARED, ctl, rq.area);
	check(bad == MAP_FAILED && errno == EINVAL, "the daemon cannot map beyond the area (EINVAL)");
	bad = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, ctl, rq.area);
	check(bad == MAP_FAILED && errno == EINVAL, "the daemon cannot map an area privately (EINVAL)");
	bad = mmap(NULL, 4096, PROT_READ, MAP_SHARED, ctl, rq.area + 1024 * 1024 * 1024ull);
	check(bad == MAP_FAILED, "the daemon cannot map an offset that is no area");
	d = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ctl, rq.area);
	check(d != MAP_FAILED, "the daemon maps the area from its control file");
	if (d == MAP_FAILED)
		return;
	memcpy(d, "DAEMON!", 8);
	reply(ctl, rq.id, 0, 0);
	if (read(to_parent[0], &x, 1) != 1)
		die("pipe read");
	check(!memcmp(d + 100, "CALLER", 6), "the daemon sees the bytes the caller wrote");
	write(to_child[1], "c", 1);
	if (read(to_parent[0], &x, 1) != 1)
		die("pipe read");
	check(no_request(ctl), "no MUNMAP while a forked child still maps the area");
	write(to_child[1], "c", 1);
	if (next_request(ctl, PDK_OP_MUNMAP, &rq))
		return;
	check(rq.handle == 13, "MUNMAP arrives when the caller's last mapping (the forked child's) goes");
	munmap(d, 3 * 4096);
	serve_release(13, "close");
	if (!collect(c, &o))
		return;
	check(o.ret == 0 && !memcmp(o.data, "DAEMON!", 8), "the caller sees the bytes the daemon wrote");
	check(WIFEXITED(o.extra) && WEXITSTATUS(o.extra) == 7, "the forked child sees the area too");
}

/* PDK_MMAP_DEVICE: the caller maps the daemon's device file itself (/dev/zero here). */
static void c_mmap_device(struct outcome *o, void *arg)
{
	int fd = open_node();
	unsigned char *m;

	(void)arg;
	m = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	o->extra = m == MAP_FAILED ? errno : 0;   /* the device file is read-only: EACCES */
	m = mmap(NULL, 2 * 4096, PROT_READ, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED) {
		o->ret = -1;
		o->err = errno;
		return;
	}
	o->data[0] = m[0] | m[4096 + 7];
	o->data[1] = 1;
	munmap(m, 2 * 4096);
	o->ret = 0;
	close(fd);
}

static void test_mmap_device(void)
{
	struct child c = spawn(c_mmap_device, NULL);
	int zero = open("/dev/zero", O_RDONLY), p[2], r;
	struct pdk_request rq;
	struct outcome o;

	if (zero < 0 || pipe(p))
		die("open /dev/zero");
	serve_open(16, 0, 0, 1);
	if (next_request(ctl, PDK_OP_MMAP, &rq))
		return;
	check(reply(ctl, rq.id, PDK_MMAP_DEVICE, p[0]) == -EINVAL, "MMAP_DEVICE with a pipe is EINVAL");
	check(reply(ctl, rq.id, PDK_MMAP_DEVICE, 9999) == -EBADF, "MMAP_DEVICE with no such descriptor is EBADF");
	check(reply(ctl, rq.id, PDK_MMAP_DEVICE, ctl) == -EINVAL, "MMAP_DEVICE with the control file is EINVAL");
	check(reply(ctl, rq.id, PDK_MMAP_DEVICE, zero) == 0, "MMAP_DEVICE with /dev/zero (the refusals left the request waiting)");
	if (next_request(ctl, PDK_OP_MMAP, &rq))
		return;
	check(rq.arg[3] == MAP_PRIVATE, "the second mmap is MAP_PRIVATE");
	r = reply(ctl, rq.id, PDK_MMAP_DEVICE, zero);
	check(r == 0, "MMAP_DEVICE again (%d)", r);
	serve_release(16, "close after device mappings");
	check(no_request(ctl), "no MUNMAP for mappings of the device itself");
	if (!collect(c, &o))
		return;
	check(o.extra == EACCES, "a shared writable mapping of a read-only device file is EACCES (%s)",
	      strerror(o.extra));
	check(o.ret == 0 && o.data[1] == 1 && o.data[0] == 0, "the caller maps the device and reads it (%ld, %s)",
	      o.ret, strerror(o.err));
	close(zero);
	close(p[0]);
	close(p[1]);
}

static void c_seek(struct outcome *o, void *arg)
{
	int fd = open_node();
	char b[8];

	(void)arg;
	o->ret = pread(fd, b, 8, 100);
	o->extra = (int)lseek(fd, -10, SEEK_END);
	o->err = (int)lseek(fd, 5, SEEK_CUR);
	close(fd);
}

static void test_seekable(void)
{
	struct child c = spawn(c_seek, NULL);
	struct pdk_request rq;
	struct outcome o;

	serve_open(14, PDK_OPEN_SEEKABLE, 0, 1);
	if (next_request(ctl, PDK_OP_READ, &rq))
		return;
	check(rq.arg[2] == 100 && rq.arg[3] == 1, "a seekable file's pread is positional (arg[2] 100)");
	reply(ctl, rq.id, 0, 0);
	if (next_request(ctl, PDK_OP_LLSEEK, &rq))
		return;
	check((int64_t)rq.arg[0] == -10 && rq.arg[1] == SEEK_END, "LLSEEK SEEK_END carries offset -10");
	reply(ctl, rq.id, 1000, 0);
	if (next_request(ctl, PDK_OP_LLSEEK, &rq))
		return;
	check(rq.arg[0] == 1005 && rq.arg[1] == SEEK_SET, "SEEK_CUR goes as SEEK_SET of the guest's position");
	reply(ctl, rq.id, 1005, 0);
	serve_release(14, "close");
	if (!collect(c, &o))
		return;
	check(o.ret == 0 && o.extra == 1000 && o.err == 1005, "the caller's positions are the daemon's answers");
}

static volatile sig_atomic_t got_sigio;
static void on_sigio(int sig) { (void)sig; got_sigio = 1; }

static void c_fasync(struct outcome *o, void *arg)
{
	int fd = open_node();
	sigset_t none, io;

	(void)arg;
	signal(SIGIO, on_sigio);
	sigemptyset(&io);
	sigaddset(&io, SIGIO);
	sigprocmask(SIG_BLOCK, &io, NULL);
	fcntl(fd, F_SETOWN, getpid());
	o->ret = fcntl(fd, F_SETFL, O_ASYNC | O_RDWR);
	o->err = errno;
	sigemptyset(&none);
	ioctl(fd, _IO('T', 0x7e));   /* tells the daemon we are ready for the signal */
	while (!got_sigio)
		sigsuspend(&none);
	o->extra = got_sigio;
	close(fd);
}

static void test_fasync(void)
{
	struct child c = spawn(c_fasync, NULL);
	struct pdk_request rq;
	struct outcome o;
	uint64_t file = serve_open(15, 0, 0, 1);

	if (next_request(ctl, PDK_OP_FASYNC, &rq))
		return;
	check(rq.arg[0] == 1, "O_ASYNC sends FASYNC on");
	reply(ctl, rq.id, 0, 0);
	if (next_request(ctl, PDK_OP_IOCTL, &rq))
		return;
	reply(ctl, rq.id, 0, 0);
	notify(ctl, file, POLLIN);
	if (next_request(ctl, PDK_OP_FASYNC, &rq))
		return;
	check(rq.arg[0] == 0, "close sends FASYNC off");
	reply(ctl, rq.id, 0, 0);
	serve_release(15, "close");
	if (!collect(c, &o))
		return;
	check(o.ret == 0 && o.extra == 1, "NOTIFY POLLIN sends the caller SIGIO");
}

static int path_exists(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0;
}

static int read_file(const char *p, char *buf, size_t n)
{
	int fd = open(p, O_RDONLY);
	ssize_t r;

	if (fd < 0)
		return -1;
	r = read(fd, buf, n - 1);
	close(fd);
	if (r < 0)
		return -1;
	buf[r] = 0;
	return 0;
}

static void test_nodes(void)
{
	struct pdk_node n = node_of(1, "pdktest/node0", "", PDK_NODE_ANY_NUMBER), m;
	char sys[128], buf[512], want[256], link[256];
	struct stat st;
	ssize_t l;
	int r;

	n.mode = 0640;
	n.uid = 3;
	n.gid = 4;
	r = add_node(ctl, &n);
	check(r == 0 && n.major != 0, "ADD_NODE pdktest/node0 with any number gives %u:%u (%d)", n.major,
	      n.minor, r);
	if (r)
		exit(1);
	check(stat(node_path, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(n.major, n.minor) &&
	      (st.st_mode & 07777) == 0640 && st.st_uid == 3 && st.st_gid == 4,
	      "%s is a character device %u:%u, mode 0640, owner 3:4", node_path, n.major, n.minor);
	snprintf(sys, sizeof(sys), "/sys/dev/char/%u:%u/uevent", n.major, n.minor);
	snprintf(want, sizeof(want), "MAJOR=%u\nMINOR=%u\nDEVNAME=pdktest/node0\n", n.major, n.minor);
	check(read_file(sys, buf, sizeof(buf)) == 0 && strstr(buf, want), "%s says MAJOR, MINOR, DEVNAME", sys);
	snprintf(sys, sizeof(sys), "/sys/dev/char/%u:%u/subsystem", n.major, n.minor);
	l = readlink(sys, link, sizeof(link) - 1);
	link[l > 0 ? l : 0] = 0;
	check(l > 0 && strstr(link, "/class/paradice"), "no subsystem: the node is in class paradice (%s)", link);

	m = node_of(2, "pdktest/node0", "", PDK_NODE_ANY_NUMBER);
	check(add_node(ctl, &m) == -EEXIST, "a second node on the same path is EEXIST");
	m = node_of(1, "pdktest/other", "", PDK_NODE_ANY_NUMBER);
	check(add_node(ctl, &m) == -EEXIST, "a second node with the same cookie is EEXIST");
	m = node_of(2, "pdktest/null", "", 0);
	m.major = 1;
	m.minor = 3;
	check(add_node(ctl, &m) == -EBUSY, "a taken number (1:3) without ANY_NUMBER is EBUSY");
	{
		static const char *bad[] = { "../x", "a//b", "a/./b", "/abs", "trail/", "sp ace", "a/../b", "",
					     "paradice", ".", "x/..", "semi;colon" };
		unsigned i;
		int all = 1;

		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			m = node_of(3, bad[i], "", PDK_NODE_ANY_NUMBER);
			if (add_node(ctl, &m) != -EINVAL) {
				printf("   (path '%s' accepted)\n", bad[i]);
				all = 0;
			}
		}
		check(all, "bad paths are EINVAL");
	}
	m = node_of(3, "pdktest/x", "", PDK_NODE_ANY_NUMBER);
	memset(m.path, 'a', sizeof(m.path));
	check(add_node(ctl, &m) == -EINVAL, "a path without its NUL is EINVAL");
	m = node_of(3, "pdktest/x", "", PDK_NODE_ANY_NUMBER);
	m.mode = 04755;
	check(add_node(ctl, &m) == -EINVAL, "mode bits beyond 0777 are EINVAL");
	m = node_of(3, "pdktest/x", "", PDK_NODE_ANY_NUMBER | 0x80);
	check(add_node(ctl, &m) == -EINVAL, "unknown flags are EINVAL");
	m = node_of(3, "pdktest/x", "bad/class", PDK_NODE_ANY_NUMBER);
	check(add_node(ctl, &m) == -EINVAL, "a subsystem with '/' is EINVAL");
	m = node_of(3, "pdktest/x", "", PDK_NODE_ANY_NUMBER);
	m.uid = (uint32_t)-1;
	check(add_node(ctl, &m) == -EINVAL, "uid -1 is EINVAL");

	/* a subsystem this kernel has no class of: the module makes it */
	m = node_of(4, "pdktest/sub0", "pdktestclass", PDK_NODE_ANY_NUMBER);
	m.major = 1;
	m.minor = 3;
	r = add_node(ctl, &m);
	check(r == 0 && !(m.major == 1 && m.minor == 3), "a taken number with ANY_NUMBER gives another (%u:%u)",
	      m.major, m.minor);
	check(m.major == n.major && m.minor != n.minor, "nodes given a number share the module's major (%u:%u, %u:%u)",
	      n.major, n.minor, m.major, m.minor);
	snprintf(sys, sizeof(sys), "/sys/dev/char/%u:%u/subsystem", m.major, m.minor);
	l = readlink(sys, link, sizeof(link) - 1);
	link[l > 0 ? l : 0] = 0;
	check(l > 0 && strstr(link, "/class/pdktestclass") && path_exists("/sys/class/pdktestclass/pdktest!sub0"),
	      "subsystem pdktestclass: /sys/class/pdktestclass/pdktest!sub0 (%s)", link);
	/* a subsystem the kernel has: the node goes in class paradice */
	m = node_of(5, "pdktest/sub1", "mem", PDK_NODE_ANY_NUMBER);
	r = add_node(ctl, &m);
	snprintf(sys, sizeof(sys), "/sys/dev/char/%u:%u/subsystem", m.major, m.minor);
	l = readlink(sys, link, sizeof(link) - 1);
	link[l > 0 ? l : 0] = 0;
	check(r == 0 && l > 0 && strstr(link, "/class/paradice"), "subsystem mem (the kernel's): class paradice");
	{
		uint64_t cookie = 4;

		check(ioctl(ctl, PDK_REMOVE_NODE, &cookie) == 0 && !path_exists("/dev/pdktest/sub0") &&
		      !path_exists("/sys/class/pdktestclass"),
		      "REMOVE_NODE: the node and the class made for it go");
		check(ioctl(ctl, PDK_REMOVE_NODE, &cookie) < 0 && errno == ENOENT, "REMOVE_NODE twice is ENOENT");
	}
}

static int set_parent(int fd, uint64_t cookie, const char *name)
{
	struct pdk_parent p = { .cookie = cookie };

	snprintf(p.parent, sizeof(p.parent), "%s", name);
	return ioctl(fd, PDK_SET_PARENT, &p) < 0 ? -errno : 0;
}

static int dir_has(const char *dir, const char *name)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return path_exists(p);
}

/* PDK_SET_PARENT: nodes side by side under a shared parent device, as a driver's device has them. */
static void test_parent(void)
{
	struct pdk_node a = node_of(30, "pdktest/vidp", "", PDK_NODE_ANY_NUMBER);
	struct pdk_node b = node_of(31, "pdktest/medp", "pdktestclass2", PDK_NODE_ANY_NUMBER);
	struct pdk_node coll = node_of(32, "pdkcoll", "", PDK_NODE_ANY_NUMBER);
	struct pdk_node res = node_of(33, "uevent", "", PDK_NODE_ANY_NUMBER);
	struct pdk_node same = node_of(34, "pdkdev.0", "", PDK_NODE_ANY_NUMBER);
	char dev[128], link[256], uev[128], buf[512];
	uint64_t cookie;
	ssize_t l;

	if (add_node(ctl, &a) || add_node(ctl, &b) || add_node(ctl, &coll) || add_node(ctl, &res)) {
		check(0, "nodes for PDK_SET_PARENT");
		return;
	}
	snprintf(dev, sizeof(dev), "/sys/dev/char/%u:%u/device", a.major, a.minor);
	check(!path_exists(dev), "a node has no parent device at first");
	check(set_parent(ctl, 30, "pdkdev.0") == 0 && set_parent(ctl, 31, "pdkdev.0") == 0,
	      "SET_PARENT puts two nodes (two classes) under parent pdkdev.0");
	l = readlink(dev, link, sizeof(link) - 1);
	link[l > 0 ? l : 0] = 0;
	check(l > 0 && !strcmp(strrchr(link, '/'), "/pdkdev.0"), "/sys/dev/char/M:m/device is the parent (%s)", link);
	check(dir_has(dev, "pdktest!vidp") && dir_has(dev, "pdktest!medp"),
	      "the parent's directory lists both nodes by their device names");
	snprintf(uev, sizeof(uev), "/sys/dev/char/%u:%u/uevent", b.major, b.minor);
	check(read_file(uev, buf, sizeof(buf)) == 0 && strstr(buf, "DEVNAME=pdktest/medp\n") &&
	      path_exists("/dev/pdktest/medp"), "a moved node keeps its uevent and its /dev node");
	check(set_parent(ctl, 30, "a/b") == -EINVAL, "SET_PARENT with a bad name is EINVAL");
	check(set_parent(ctl, 30, "..") == -EINVAL && set_parent(ctl, 30, ".") == -EINVAL &&
	      set_parent(ctl, 30, "a b") == -EINVAL && set_parent(ctl, 30, "a\tb") == -EINVAL &&
	      set_parent(ctl, 30, "a\xc3\xa9") == -EINVAL, "SET_PARENT refuses \".\", \"..\", spaces, controls, non-ASCII");
	/* a PCI device's name, as a GPU's DRM nodes have for parent */
	check(set_parent(ctl, 30, "0000:00:02.0") == 0, "SET_PARENT takes a PCI device name (0000:00:02.0)");
	l = readlink(dev, link, sizeof(link) - 1);
	link[l > 0 ? l : 0] = 0;
	check(l > 0 && !strcmp(strrchr(link, '/'), "/0000:00:02.0") && dir_has(dev, "pdktest!vidp") &&
	      path_exists("/sys/class/paradice/0000:00:02.0"),
	      "the node's device link is the PCI-named parent (%s), which lists it", link);
	check(set_parent(ctl, 30, "pdkdev.0") == 0 && !path_exists("/sys/class/paradice/0000:00:02.0"),
	      "moved back to pdkdev.0, the PCI-named parent goes with its last node");
	check(set_parent(ctl, 99, "pdkdev.0") == -ENOENT, "SET_PARENT of an unknown cookie is ENOENT");
	check(set_parent(ctl, 30, "pdkcoll") == -EEXIST, "SET_PARENT named like a node of class paradice is EEXIST");
	check(set_parent(ctl, 33, "pdkdev.0") == -EINVAL, "a node named uevent cannot go under a parent (EINVAL)");
	check(add_node(ctl, &same) == -EEXIST, "ADD_NODE named like a parent device is EEXIST");
	check(set_parent(ctl, 30, "") == 0 && !path_exists(dev) && path_exists("/sys/class/paradice/pdkdev.0"),
	      "SET_PARENT \"\" puts the node back alone; the parent stays for the other");
	cookie = 31;
	check(ioctl(ctl, PDK_REMOVE_NODE, &cookie) == 0 && !path_exists("/sys/class/paradice/pdkdev.0"),
	      "the parent goes with its last node");
	for (cookie = 30; cookie <= 33; cookie++)
		if (cookie != 31)
			ioctl(ctl, PDK_REMOVE_NODE, &cookie);
}

static int set_parent_in(int fd, uint64_t cookie, const char *name, const char *subsystem, const char *own)
{
	struct pdk_parent p = { .cookie = cookie };

	snprintf(p.parent, sizeof(p.parent), "%s", name);
	snprintf(p.subsystem, sizeof(p.subsystem), "%s", subsystem);
	snprintf(p.name, sizeof(p.name), "%s", own);
	return ioctl(fd, PDK_SET_PARENT, &p) < 0 ? -errno : 0;
}

static int parent_attr(int fd, uint64_t cookie, const char *name, const void *value, size_t length)
{
	static struct pdk_parent_attr a;
	int r;

	memset(&a, 0, sizeof(a));
	a.cookie = cookie;
	snprintf(a.name, sizeof(a.name), "%s", name);
	a.length = (uint32_t)length;
	memcpy(a.value, value, length < sizeof(a.value) ? length : sizeof(a.value));
	r = ioctl(fd, PDK_PARENT_ATTR, &a);
	return r < 0 ? -errno : 0;
}

/* The parent's bus view: its class named after the backend parent's subsystem, SUBSYSTEM/NAME links to its
 * nodes, copies of the backend parent's files and uevent (PDK_SET_PARENT's subsystem and name,
 * PDK_PARENT_ATTR): what libdrm reads to tell a GPU's bus and PCI ids. */
static void test_parent_view(void)
{
	struct pdk_node a = node_of(40, "pdktest/gpu9", "pdktestgpu", PDK_NODE_ANY_NUMBER);
	struct pdk_node b = node_of(41, "pdktest/gpur9", "pdktestgpu", PDK_NODE_ANY_NUMBER);
	struct pdk_node alone = node_of(42, "pdktest/alone", "", PDK_NODE_ANY_NUMBER);
	char dev[128], p[256], real[512], node_real[512], buf[4200];
	uint8_t config[256];
	uint64_t cookie;
	int i, r, ok;

	if (add_node(ctl, &a) || add_node(ctl, &b) || add_node(ctl, &alone)) {
		check(0, "nodes for the parent's view");
		return;
	}
	snprintf(dev, sizeof(dev), "/sys/dev/char/%u:%u/device", a.major, a.minor);
	check(set_parent_in(ctl, 40, "0000:00:09.0", "pdktestbus", "card9") == 0 &&
	      set_parent_in(ctl, 41, "0000:00:09.0", "pdktestbus", "renderD9") == 0,
	      "SET_PARENT with a subsystem and the nodes' own names");
	snprintf(p, sizeof(p), "%s/subsystem", dev);
	check(realpath(p, real) && !strcmp(real, "/sys/class/pdktestbus"),
	      "the parent is in class pdktestbus, its backend's subsystem (%s)", real);
	snprintf(p, sizeof(p), "%s/pdktestgpu/card9", dev);
	snprintf(buf, sizeof(buf), "/sys/dev/char/%u:%u", a.major, a.minor);
	check(realpath(p, real) && realpath(buf, node_real) && !strcmp(real, node_real) &&
	      dir_has(dev, "pdktestgpu/renderD9"),
	      "the parent's pdktestgpu folder leads to its nodes by their names (card9, renderD9)");
	check(set_parent_in(ctl, 41, "0000:00:09.0", "otherbus", "renderD9") == -EINVAL,
	      "a parent that exists in another subsystem is EINVAL");
	check(set_parent_in(ctl, 41, "0000:00:09.0", "", "renderD9") == 0, "an unknown subsystem joins the parent as it is");
	check(set_parent_in(ctl, 41, "0000:00:09.0", "pdktestbus", "card9") == -EEXIST && dir_has(dev, "pdktestgpu/renderD9"),
	      "a name the SUBSYSTEM folder holds already is EEXIST, and the node keeps its own");
	check(set_parent_in(ctl, 41, "0000:00:09.0", "pdktestbus", "bad/name") == -EINVAL &&
	      set_parent_in(ctl, 41, "0000:00:09.0", "bad/bus", "x") == -EINVAL, "bad names and subsystems are EINVAL");

	check(parent_attr(ctl, 40, "vendor", "0x1af4\n", 7) == 0, "PARENT_ATTR vendor");
	snprintf(p, sizeof(p), "%s/vendor", dev);
	check(read_file(p, buf, sizeof(buf)) == 0 && !strcmp(buf, "0x1af4\n"), "the parent's vendor file reads 0x1af4");
	for (i = 0; i < 256; i++)
		config[i] = (uint8_t)(i * 7);
	config[3] = 0;
	check(parent_attr(ctl, 41, "config", config, sizeof(config)) == 0, "PARENT_ATTR config (binary, NUL bytes)");
	{
		int fd;
		ssize_t n;

		snprintf(p, sizeof(p), "%s/config", dev);
		fd = open(p, O_RDONLY);
		n = fd >= 0 ? read(fd, buf, sizeof(buf)) : -1;
		if (fd >= 0)
			close(fd);
		check(n == 256 && !memcmp(buf, config, 256), "config reads back its 256 bytes (%zd)", n);
	}
	check(parent_attr(ctl, 40, "vendor", "0x1\n", 4) == -EEXIST, "an attribute is set once (EEXIST)");
	check(parent_attr(ctl, 40, "power", "x", 1) == -EEXIST && parent_attr(ctl, 40, "subsystem", "x", 1) == -EEXIST &&
	      parent_attr(ctl, 40, "pdktestgpu", "x", 1) == -EEXIST,
	      "names the parent has (power, subsystem, its SUBSYSTEM folder) are EEXIST");
	check(parent_attr(ctl, 40, "a/b", "x", 1) == -EINVAL && parent_attr(ctl, 40, "", "x", 1) == -EINVAL &&
	      parent_attr(ctl, 40, "big", "x", PDK_MAX_ATTR + 1) == -EINVAL, "bad names and lengths are EINVAL");
	check(parent_attr(ctl, 42, "vendor", "x", 1) == -ENOENT && parent_attr(ctl, 99, "vendor", "x", 1) == -ENOENT,
	      "a node without a parent, or no node, is ENOENT");
	{
		static struct pdk_parent_attr bad;

		memset(&bad, 0, sizeof(bad));
		bad.cookie = 40;
		snprintf(bad.name, sizeof(bad.name), "resv");
		bad.reserved = 1;
		check(ioctl(ctl, PDK_PARENT_ATTR, &bad) < 0 && errno == EINVAL, "a nonzero reserved field is EINVAL");
		memset(bad.name, 'a', sizeof(bad.name));
		bad.reserved = 0;
		check(ioctl(ctl, PDK_PARENT_ATTR, &bad) < 0 && errno == EINVAL, "a name without its NUL is EINVAL");
	}

	check(parent_attr(ctl, 40, "uevent", "lower=x\n", 8) == -EINVAL &&
	      parent_attr(ctl, 40, "uevent", "NOEQUALS\n", 9) == -EINVAL &&
	      parent_attr(ctl, 40, "uevent", "A=\x01\n", 4) == -EINVAL, "uevent lines that are no KEY=VALUE are EINVAL");
	{
		/* the change event the uevent's lines are announced with, as udev would receive it */
		struct sockaddr_nl addr = { .nl_family = AF_NETLINK, .nl_groups = 1 };
		int s = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
		struct timeval tv = { 2, 0 };
		const char *lines = "PCI_SLOT_NAME=0000:00:09.0\nMODALIAS=pci:v00001AF4d00001050\n";
		int seen = 0, modalias = 0;

		if (s >= 0 && bind(s, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
			close(s);
			s = -1;
		}
		if (s >= 0)
			setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		r = parent_attr(ctl, 40, "uevent", lines, strlen(lines));
		check(r == 0, "PARENT_ATTR uevent (%d)", r);
		snprintf(p, sizeof(p), "%s/uevent", dev);
		check(read_file(p, buf, sizeof(buf)) == 0 && strstr(buf, "PCI_SLOT_NAME=0000:00:09.0\n") &&
		      strstr(buf, "MODALIAS=pci:v00001AF4d00001050\n"), "the parent's uevent file shows them");
		for (i = 0; s >= 0 && i < 50 && !seen; i++) {
			ssize_t n = recv(s, buf, sizeof(buf) - 1, 0);
			char *q;

			if (n <= 0)
				break;
			buf[n] = 0;
			if (!strstr(buf, "change@") || !strstr(buf, "0000:00:09.0"))
				continue;
			for (q = buf; q < buf + n; q += strlen(q) + 1) {
				seen |= !strcmp(q, "PCI_SLOT_NAME=0000:00:09.0");
				modalias |= !strncmp(q, "MODALIAS=", 9);
			}
		}
		if (s >= 0)
			close(s);
		check(seen && !modalias, "the change event carries PCI_SLOT_NAME and no MODALIAS (udev loads no driver)");
	}
	check(parent_attr(ctl, 40, "uevent", "A=b\n", 4) == -EEXIST, "the uevent lines are set once (EEXIST)");
	ok = 1;
	for (i = 0; ok; i++) {
		char name[16];

		snprintf(name, sizeof(name), "f%d", i);
		r = parent_attr(ctl, 40, name, "x", 1);
		if (r == -ENOSPC)
			break;
		ok = r == 0 && i < PDK_MAX_PARENT_ATTRS;
	}
	check(ok && i == PDK_MAX_PARENT_ATTRS - 2, "at most %d files a parent: then ENOSPC (%d made)", PDK_MAX_PARENT_ATTRS, i);

	cookie = 40;
	check(ioctl(ctl, PDK_REMOVE_NODE, &cookie) == 0 && !dir_has(dev, "pdktestgpu/card9") &&
	      path_exists("/sys/class/pdktestbus/0000:00:09.0/pdktestgpu/renderD9"),
	      "a removed node's link goes; the other's stays");
	cookie = 41;
	check(ioctl(ctl, PDK_REMOVE_NODE, &cookie) == 0 && !path_exists("/sys/class/pdktestbus"),
	      "the parent, its files and its class go with its last node");
	cookie = 42;
	ioctl(ctl, PDK_REMOVE_NODE, &cookie);
}

static void test_control(void)
{
	struct pdk_request rq;
	char small[8];

	check(ioctl(ctl, PDK_GET_VERSION) == PDK_VERSION, "PDK_GET_VERSION is %d", PDK_VERSION);
	check(read(ctl, small, sizeof(small)) < 0 && errno == EINVAL, "a short read of the control file is EINVAL");
	check(no_request(ctl), "O_NONBLOCK read with nothing queued is EAGAIN");
	check(reply(ctl, 123456789, 0, 0) == -ESRCH, "REPLY to an unknown request is ESRCH");
	check(ioctl(ctl, _IO(PDK_IOCTL_BASE, 99)) < 0 && errno == ENOTTY, "an unknown control ioctl is ENOTTY");
	(void)rq;
}

static void c_removed(struct outcome *o, void *arg)
{
	int fd = open_node(), *report = arg;
	struct pollfd p;
	char b[4], x;

	if (write(report[1], "o", 1) != 1 || read(report[2], &x, 1) != 1)
		_exit(3);
	o->ret = read(fd, b, sizeof(b)) < 0 ? errno : 0;
	o->err = ioctl(fd, _IO('T', 1)) < 0 ? errno : 0;
	p.fd = fd;
	p.events = POLLIN;
	o->extra = poll(&p, 1, 0) == 1 ? p.revents : 0;
	close(fd);
}

/* REMOVE_NODE with a file open on it: the file fails with EIO and hangs up; its release still comes. */
static void test_remove_open(void)
{
	struct pdk_node n = node_of(20, "pdktest/removed", "", PDK_NODE_ANY_NUMBER);
	int up[2], down[2], report[3];
	uint64_t cookie = 20;
	struct outcome o;
	struct child c;
	char x;

	if (add_node(ctl, &n) || pipe(up) || pipe(down)) {
		check(0, "a node to remove");
		return;
	}
	snprintf(node_path, sizeof(node_path), "/dev/pdktest/removed");
	report[1] = up[1];
	report[2] = down[0];
	c = spawn(c_removed, report);
	serve_open(20, 0, 0, 20);
	if (read(up[0], &x, 1) != 1)
		die("pipe");
	check(ioctl(ctl, PDK_REMOVE_NODE, &cookie) == 0 && !path_exists(node_path),
	      "REMOVE_NODE with a file open: the node goes");
	write(down[1], "r", 1);
	serve_release(20, "a removed node's open file");
	snprintf(node_path, sizeof(node_path), "/dev/pdktest/node0");
	close(up[0]);
	close(up[1]);
	close(down[0]);
	close(down[1]);
	if (!collect(c, &o))
		return;
	check(o.ret == EIO && o.err == EIO && o.extra == (POLLERR | POLLHUP),
	      "the removed node's file: read and ioctl EIO, poll POLLERR|POLLHUP");
}

static void c_close_only(struct outcome *o, void *arg)
{
	int fd = open_node(), *report = arg;

	if (write(report[1], "o", 1) != 1)
		_exit(3);
	o->ret = close(fd);
	o->err = errno;
}

static void c_block(struct outcome *o, void *arg)
{
	int fd = open_node();
	struct pollfd p;
	char b[4];

	(void)arg;
	o->ret = read(fd, b, sizeof(b));
	o->err = errno;
	o->extra = read(fd, b, sizeof(b)) < 0 ? errno : 0;
	p.fd = fd;
	p.events = POLLIN;
	poll(&p, 1, 0);
	o->data[0] = p.revents;
	close(fd);
}

static void test_close_control(void)
{
	struct child c = spawn(c_block, NULL);
	struct pdk_request rq;
	struct outcome o;
	struct pdk_node n;
	int second;

	struct child closer;
	struct outcome co;
	int report[2];
	char x;

	serve_open(16, 0, 0, 1);
	if (next_request(ctl, PDK_OP_READ, &rq))
		return;
	/* a second caller waits in close for a RELEASE reply that never comes */
	if (pipe(report))
		die("pipe");
	closer = spawn(c_close_only, report);
	close(report[1]);
	serve_open(21, 0, 0, 1);
	if (read(report[0], &x, 1) != 1)
		die("pipe");
	close(report[0]);
	if (next_request(ctl, PDK_OP_RELEASE, &rq))
		return;
	/* a second control file's nodes are its own */
	second = open("/dev/paradice", O_RDWR);
	n = node_of(1, "pdktest/second", "", PDK_NODE_ANY_NUMBER);
	check(second >= 0 && add_node(second, &n) == 0, "a second control file adds a node with the same cookie");
	close(ctl);
	if (!collect(c, &o))
		return;
	check(o.ret == -1 && o.err == EIO, "closing the control file: the waiting caller's read fails with EIO");
	if (collect(closer, &co))
		check(co.ret == 0, "closing the control file: a close waiting for its RELEASE reply returns");
	check(o.extra == EIO && o.data[0] == (POLLERR | POLLHUP), "later calls fail with EIO, poll says POLLERR|POLLHUP");
	check(!path_exists(node_path) && path_exists("/dev/pdktest/second"),
	      "the control file's nodes are gone, the other control file's stay");
	close(second);
	check(!path_exists("/dev/pdktest/second"), "closing the second control file removes its node");
}

int main(int argc, char **argv)
{
	if (argc > 1)
		compat_caller = argv[1];
	setvbuf(stdout, NULL, _IOLBF, 0);
	ctl = open("/dev/paradice", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		die("open /dev/paradice");
	test_control();
	test_nodes();
	test_parent();
	test_parent_view();
	test_read();
	test_write_ioctl();
	test_new_file();
	test_poll();
	test_poll_races();
	test_signal(0);
	test_signal(1);
	test_takeback();
	test_hostile();
	test_kill();
	test_mmap();
	test_mmap_device();
	test_seekable();
	test_fasync();
	test_compat();
	test_stress();
	test_daemon_killed_in_access();
	test_fuzz();
	test_remove_open();
	test_close_control();
	printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
	return failures ? 1 : 0;
}
