// SPDX-License-Identifier: GPL-2.0
/*
 * file.c — the file operations of forwarded nodes: every one becomes a request to the daemon (request.c).
 */
#include <linux/slab.h>
#include <linux/poll.h>
#include <linux/compat.h>
#include <linux/fs.h>
#include "internal.h"

static atomic64_t pdk_next_file_id = ATOMIC64_INIT(0);

struct pdk_file *pdk_file_new(struct pdk_control *c, struct pdk_knode *n)
{
	struct pdk_file *f = kzalloc(sizeof(*f), GFP_KERNEL);

	if (!f)
		return NULL;
	f->id = atomic64_inc_return(&pdk_next_file_id);
	pdk_control_get(c);
	f->control = c;
	pdk_node_get(n);
	f->node = n;
	INIT_LIST_HEAD(&f->control_entry);
	init_waitqueue_head(&f->pollq);
	return f;
}

void pdk_file_free(struct pdk_file *f)
{
	pdk_node_put(f->node);
	pdk_control_put(f->control);
	kfree(f);
}

/* After a read, write or ioctl the last readiness may be stale: the next poll asks the daemon again, and
 * an answer to a WATCH sent before now is not trusted (pdk_file_notified_locked). */
void pdk_file_forget_readiness(struct pdk_file *f)
{
	spin_lock(&f->control->lock);
	f->ready_valid = false;
	f->calls_done++;
	spin_unlock(&f->control->lock);
}

/* The files of node n (all when n is NULL) hang up (control->lock held). */
void pdk_files_hangup_locked(struct pdk_control *c, struct pdk_knode *n)
{
	struct pdk_file *f;

	list_for_each_entry(f, &c->files, control_entry)
		if (!n || f->node == n)
			pdk_file_readiness_locked(f, EPOLLERR | EPOLLHUP);
}

static bool pdk_file_gone(struct pdk_file *f)
{
	return READ_ONCE(f->control->dead) || READ_ONCE(f->node->removed);
}

static int pdk_open(struct inode *inode, struct file *file)
{
	struct pdk_knode *n = pdk_node_lookup(inode->i_rdev);
	struct pdk_control *c;
	struct pdk_file *f;
	u64 handle = 0;
	long res;

	if (!n)
		return -ENXIO;
	c = n->control;
	f = pdk_file_new(c, n);
	pdk_node_put(n);
	if (!f)
		return -ENOMEM;
	f->file = file;
	res = pdk_call(f, PDK_OP_OPEN, file->f_flags, 0, 0, 0, 0, &handle);
	if (res < 0) {
		pdk_file_free(f);
		return res;
	}
	if (res != 0 && res != PDK_OPEN_SEEKABLE) {
		pdk_send_release(c, f, handle, n->cookie);
		pdk_file_free(f);
		return -EIO;
	}
	f->handle = handle;
	f->seekable = res == PDK_OPEN_SEEKABLE;
	if (!f->seekable)
		nonseekable_open(inode, file);
	spin_lock(&c->lock);
	list_add_tail(&f->control_entry, &c->files);
	spin_unlock(&c->lock);
	WRITE_ONCE(file->private_data, f);
	return 0;
}

static int pdk_release(struct inode *inode, struct file *file)
{
	struct pdk_file *f = file->private_data;
	struct pdk_control *c = f->control;

	spin_lock(&c->lock);
	list_del_init(&f->control_entry);
	spin_unlock(&c->lock);
	pdk_call(f, PDK_OP_RELEASE, 0, 0, 0, 0, 0, NULL);   /* waits, but not past the daemon's end */
	pdk_file_free(f);
	return 0;
}

static ssize_t pdk_rw(struct file *file, u32 op, unsigned long buf, size_t count, loff_t *ppos)
{
	struct pdk_file *f = file->private_data;
	long res;

	res = pdk_call(f, op, buf, count, f->seekable ? *ppos : 0, f->seekable, 0, NULL);
	pdk_file_forget_readiness(f);
	if (res > (long)count)
		return -EIO;   /* more than asked for: a broken daemon */
	if (res > 0 && f->seekable)
		*ppos += res;
	return res;
}

static ssize_t pdk_read(struct file *file, char __user *buf, size_t count, loff_t *ppos)
{
	return pdk_rw(file, PDK_OP_READ, (unsigned long)buf, count, ppos);
}

static ssize_t pdk_write(struct file *file, const char __user *buf, size_t count, loff_t *ppos)
{
	return pdk_rw(file, PDK_OP_WRITE, (unsigned long)buf, count, ppos);
}

static long pdk_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct pdk_file *f = file->private_data;
	long res = pdk_call(f, PDK_OP_IOCTL, cmd, arg, 0, 0, 0, NULL);

	pdk_file_forget_readiness(f);
	return res;
}

#ifdef CONFIG_COMPAT
/* arg[2] = 1: a 32-bit caller; the daemon refuses what it cannot translate. */
static long pdk_compat_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct pdk_file *f = file->private_data;
	long res = pdk_call(f, PDK_OP_IOCTL, cmd, (unsigned long)compat_ptr(arg), 1, 0, 0, NULL);

	pdk_file_forget_readiness(f);
	return res;
}
#endif

static loff_t pdk_llseek(struct file *file, loff_t offset, int whence)
{
	struct pdk_file *f = file->private_data;
	long res;

	if (!f->seekable)
		return -ESPIPE;
	switch (whence) {
	case SEEK_SET:
		break;
	case SEEK_CUR:   /* the position is the guest's: the daemon gets it absolute */
		if (check_add_overflow(file->f_pos, offset, &offset))
			return -EINVAL;
		whence = SEEK_SET;
		break;
	case SEEK_END:
	case SEEK_DATA:
	case SEEK_HOLE:
		break;
	default:
		return -EINVAL;
	}
	if (whence == SEEK_SET && offset < 0)
		return -EINVAL;
	res = pdk_call(f, PDK_OP_LLSEEK, offset, whence, 0, 0, 0, NULL);
	if (res >= 0)
		file->f_pos = res;
	return res;
}

static int pdk_fsync(struct file *file, loff_t start, loff_t end, int datasync)
{
	struct pdk_file *f = file->private_data;

	return pdk_call(f, PDK_OP_FSYNC, datasync ? 1 : 0, 0, 0, 0, 0, NULL);
}

static int pdk_fasync(int fd, struct file *file, int on)
{
	struct pdk_file *f = file->private_data;
	long res;

	res = fasync_helper(fd, file, on, &f->fasync);
	if (res < 0)
		return res;
	if (!on) {
		if (!pdk_file_gone(f))
			pdk_call(f, PDK_OP_FASYNC, 0, 0, 0, 0, 0, NULL);
		return 0;
	}
	res = pdk_call(f, PDK_OP_FASYNC, 1, 0, 0, 0, 0, NULL);
	if (res < 0) {
		fasync_helper(fd, file, 0, &f->fasync);
		return res;
	}
	return 0;
}

/* The events a WATCH can name: what poll(2) reports, less what it always reports (POLLERR, POLLHUP) and
 * the poll machinery's own flags (EPOLLET, busy polling, ...). */
static const __poll_t pdk_watchable = EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLRDNORM | EPOLLRDBAND | EPOLLWRNORM |
	EPOLLWRBAND | EPOLLMSG | EPOLLRDHUP;

/*
 * A waiter is satisfied by the known readiness when it holds one of its events (or POLLERR/POLLHUP,
 * which every waiter gets). One that is not needs a WATCH outstanding for its events, since epoll calls
 * poll again only when woken: a WATCH is sent unless the outstanding ones already name them, and it
 * names the events of every WATCH still outstanding, as the daemon replaces the backend's watch with
 * the last. The known readiness answers only what it holds: a waiter for other events is not satisfied
 * by it even when its WATCH named them (the backend answers as soon as one event holds).
 * When nothing is known and nothing asked (the first poll after a forwarded call), the poll asks the
 * level and waits for it (PDK_OP_POLL): a driver's poll answers at once, and callers count on it
 * (v4l2-compliance selects for an event with a 100 us timeout). Not ready, the daemon has made the WATCH.
 */
static __poll_t pdk_poll(struct file *file, struct poll_table_struct *wait)
{
	struct pdk_file *f = file->private_data;
	struct pdk_control *c = f->control;
	__poll_t want = poll_requested_events(wait) & pdk_watchable;
	__poll_t mask = 0, ask = 0;
	bool send = false, query = false;
	u64 calls_done = 0, sent = 0;
	long res;

	poll_wait(file, &f->pollq, wait);
	if (pdk_file_gone(f))
		return EPOLLERR | EPOLLHUP;
	spin_lock(&c->lock);
	if (f->ready_valid && ((__force __poll_t)f->revents & (want | EPOLLERR | EPOLLHUP))) {
		mask = (__force __poll_t)f->revents;
	} else {
		/* the level is unknown since the last call (a WATCH made before it may be answered late) */
		query = !f->ready_valid && (!f->watch_outstanding || f->watch_calls_done != f->calls_done);
		send = query || !f->watch_outstanding || ((__force u32)want & ~f->watching);
	}
	if (send) {
		if (!f->watch_outstanding)
			f->watch_calls_done = f->calls_done;
		f->watch_outstanding = true;
		f->watching |= (__force u32)want;
		ask = (__force __poll_t)f->watching;
		calls_done = f->calls_done;
		sent = ++f->watches_sent;
	}
	spin_unlock(&c->lock);
	if (!send)
		return mask;
	if (query) {
		/* this waiter's events alone: a driver's answer depends on them (vb2 says POLLERR to a poll for
		 * POLLIN on a queue that is not streaming, nothing to one for POLLPRI) */
		res = pdk_call(f, PDK_OP_POLL, (__force u32)want, 0, 0, 0, 0, NULL);
		if (res == 0)
			return 0;   /* not ready: the daemon made the WATCH */
		if (res < 0 && res != -ERESTARTSYS && res != -EINTR)
			res = EPOLLERR;   /* the daemon cannot tell: as a driver whose device failed */
		spin_lock(&c->lock);
		/* ready, or no answer (a signal): no WATCH came of it, unless another poll sent one meanwhile */
		if (f->watches_sent == sent) {
			f->watch_outstanding = false;
			f->watching = 0;
		}
		if (res > 0 && f->calls_done == calls_done) {
			f->revents = (u32)res & (__force u32)PDK_POLL_BITS;
			f->ready_valid = true;
		}
		spin_unlock(&c->lock);
		return res > 0 ? (__force __poll_t)((u32)res & (__force u32)PDK_POLL_BITS) : 0;
	}
	if (!pdk_send_oneway(c, f, PDK_OP_WATCH, (__force u32)ask, 0)) {
		spin_lock(&c->lock);   /* not sent (no memory, or the daemon is gone): the next poll asks again */
		if (f->watches_sent == sent) {
			f->watch_outstanding = false;
			f->watching = 0;
		}
		spin_unlock(&c->lock);
	}
	return mask;
}

static int pdk_mmap(struct file *file, struct vm_area_struct *vma)
{
	return pdk_file_mmap(file->private_data, vma);
}

const struct file_operations pdk_file_fops = {
	.owner = THIS_MODULE,
	.open = pdk_open,
	.release = pdk_release,
	.read = pdk_read,
	.write = pdk_write,
	.unlocked_ioctl = pdk_ioctl,
#ifdef CONFIG_COMPAT
	.compat_ioctl = pdk_compat_ioctl,
#endif
	.llseek = pdk_llseek,
	.fsync = pdk_fsync,
	.fasync = pdk_fasync,
	.poll = pdk_poll,
	.mmap = pdk_mmap,
};
