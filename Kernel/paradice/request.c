// SPDX-License-Identifier: GPL-2.0
/*
 * request.c — the queue of requests of one control file, the callers' waits, the daemon's replies,
 * interrupts (as FUSE does them) and readiness news (PDK_NOTIFY).
 *
 * A waiting caller sleeps interruptibly. A signal before the daemon read the request takes the request
 * back (-ERESTARTSYS: restarted under SA_RESTART, EINTR otherwise). After it, the caller queues one
 * PDK_OP_INTERRUPT and waits killably; a reply of -EINTR then becomes -ERESTARTSYS as a local driver's
 * would. A fatal signal ends the wait at once: the request is ended (accesses and replies get ESRCH),
 * and a late successful OPEN reply makes the module release the daemon's new handle itself.
 */
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/sched/signal.h>
#include <linux/poll.h>
#include <linux/cred.h>
#include <linux/file.h>
#include "internal.h"

static atomic64_t pdk_next_request_id = ATOMIC64_INIT(0);

struct pdk_req *pdk_req_new(struct pdk_control *c, struct pdk_file *f, u32 op, bool waited)
{
	struct pdk_req *r = kzalloc(sizeof(*r), GFP_KERNEL);

	if (!r)
		return NULL;
	r->control = c;
	INIT_LIST_HEAD(&r->queue_entry);
	INIT_LIST_HEAD(&r->inflight_entry);
	INIT_LIST_HEAD(&r->accesses);
	init_waitqueue_head(&r->wq);
	r->msg.id = atomic64_inc_return(&pdk_next_request_id);
	r->msg.op = op;
	r->expects_reply = waited;
	if (f) {
		r->msg.file_flags = f->file ? READ_ONCE(f->file->f_flags) : 0;
		r->msg.file = f->id;
		r->msg.handle = f->handle;
		r->msg.cookie = f->node->cookie;
		r->node = f->node;
		pdk_node_get(f->node);
	}
	if (waited) {
		r->msg.pid = task_pid_nr(current);
		r->msg.tgid = task_tgid_nr(current);
		r->msg.uid = from_kuid_munged(&init_user_ns, current_fsuid());
		r->msg.gid = from_kgid_munged(&init_user_ns, current_fsgid());
	}
	return r;
}

void pdk_req_free(struct pdk_req *r)
{
	if (r->device)
		fput(r->device);
	if (r->node)
		pdk_node_put(r->node);
	kfree(r);
}

/* Queues a request for the daemon; false (and the request is the caller's to free) when the control died. */
static bool pdk_enqueue(struct pdk_req *r)
{
	struct pdk_control *c = r->control;

	spin_lock(&c->lock);
	if (c->dead) {
		spin_unlock(&c->lock);
		return false;
	}
	list_add_tail(&r->queue_entry, &c->pending);
	if (r->expects_reply)
		list_add_tail(&r->inflight_entry, &c->inflight);
	wake_up_interruptible_poll(&c->readq, EPOLLIN | EPOLLRDNORM);
	spin_unlock(&c->lock);
	return true;
}

/* A request nobody waits for: WATCH, INTERRUPT, MUNMAP (no reply). */
bool pdk_send_oneway(struct pdk_control *c, struct pdk_file *f, u32 op, u64 a0, u64 area)
{
	struct pdk_req *r = pdk_req_new(c, f, op, false);

	if (!r)
		return false;
	r->msg.arg[0] = a0;
	r->msg.area = area;
	if (!pdk_enqueue(r)) {
		pdk_req_free(r);
		return false;
	}
	return true;
}

/* A RELEASE of a daemon handle that no open file holds any more (a late OPEN reply); its reply is taken
 * and dropped. */
void pdk_send_release(struct pdk_control *c, struct pdk_file *f, u64 handle, u64 cookie)
{
	struct pdk_req *r = pdk_req_new(c, f, PDK_OP_RELEASE, true);

	if (!r)
		return;
	r->orphan = true;
	r->msg.handle = handle;
	r->msg.cookie = cookie;
	r->msg.pid = r->msg.tgid = r->msg.uid = r->msg.gid = 0;
	if (!pdk_enqueue(r))
		pdk_req_free(r);
}

static void pdk_unlink_locked(struct pdk_req *r)
{
	list_del_init(&r->queue_entry);
	list_del_init(&r->inflight_entry);
}

/* A result as a local driver returns it: kernel-internal codes and out-of-range errors do not leak. */
long pdk_sanitize_result(s64 result)
{
	if (result >= 0)
		return result > LONG_MAX ? -EIO : (long)result;
	if (result < -MAX_ERRNO)
		return -EIO;
	if (result == -ENOIOCTLCMD)
		return -ENOTTY;
	if (-result >= 512)   /* ERESTARTSYS and its kin are the kernel's own */
		return -EIO;
	return (long)result;
}

static bool pdk_req_wakes(struct pdk_req *r)
{
	return READ_ONCE(r->state) == PDK_REQ_ANSWERED || READ_ONCE(r->control->dead) ||
	       !list_empty_careful(&r->accesses);
}

/*
 * Waits for the reply of a queued request, running the daemon's accesses meanwhile. Consumes the request.
 * idle: wait uninterruptibly (release), until the reply or the daemon's end.
 */
static long pdk_wait_consume(struct pdk_req *r, bool idle, u64 *value, struct file **device)
{
	struct pdk_control *c = r->control;
	bool interrupt;
	long w, res;

	for (;;) {
		pdk_run_accesses(r);
		w = 0;
		if (idle)
			wait_event_idle(r->wq, pdk_req_wakes(r));
		else if (!r->interrupted)
			w = wait_event_interruptible(r->wq, pdk_req_wakes(r));
		else
			w = wait_event_killable(r->wq, pdk_req_wakes(r));

		interrupt = false;
		spin_lock(&c->lock);
		if (r->state == PDK_REQ_ANSWERED) {
			spin_unlock(&c->lock);
			res = pdk_sanitize_result(r->result);
			if (value)
				*value = r->value;
			if (device) {
				*device = r->device;
				r->device = NULL;
			}
			if (res == -EINTR && r->interrupted && signal_pending(current))
				res = -ERESTARTSYS;
			break;
		}
		if (c->dead) {
			pdk_unlink_locked(r);
			pdk_drain_accesses_locked(r);
			spin_unlock(&c->lock);
			res = -EIO;
			break;
		}
		if (!list_empty(&r->accesses)) {
			spin_unlock(&c->lock);
			continue;
		}
		if (w) {
			if (r->state == PDK_REQ_QUEUED) {
				/* the daemon never saw it: take it back, the call restarts or fails with EINTR */
				pdk_unlink_locked(r);
				spin_unlock(&c->lock);
				res = -ERESTARTSYS;
				break;
			}
			if (fatal_signal_pending(current)) {
				pdk_drain_accesses_locked(r);
				if (r->msg.op == PDK_OP_OPEN) {
					/* stays listed, so that a late reply's handle is released */
					r->state = PDK_REQ_ENDED;
					spin_unlock(&c->lock);
					return -EINTR;
				}
				pdk_unlink_locked(r);
				spin_unlock(&c->lock);
				res = -EINTR;
				break;
			}
			if (!r->interrupted) {
				r->interrupted = true;
				interrupt = true;
			}
		}
		spin_unlock(&c->lock);
		if (interrupt)
			pdk_send_oneway(c, NULL, PDK_OP_INTERRUPT, r->msg.id, 0);
	}
	pdk_req_free(r);
	return res;
}

static long pdk_call_common(struct pdk_file *f, u32 op, u64 a0, u64 a1, u64 a2, u64 a3, u64 area, u64 *value,
			    struct file **device);

long pdk_call(struct pdk_file *f, u32 op, u64 a0, u64 a1, u64 a2, u64 a3, u64 area, u64 *value)
{
	return pdk_call_common(f, op, a0, a1, a2, a3, area, value, NULL);
}

long pdk_call_device(struct pdk_file *f, u32 op, u64 a0, u64 a1, u64 a2, u64 a3, u64 area,
		     struct file **device)
{
	*device = NULL;
	return pdk_call_common(f, op, a0, a1, a2, a3, area, NULL, device);
}

static long pdk_call_common(struct pdk_file *f, u32 op, u64 a0, u64 a1, u64 a2, u64 a3, u64 area, u64 *value,
			    struct file **device)
{
	struct pdk_control *c = f->control;
	bool idle = op == PDK_OP_RELEASE || (op == PDK_OP_FASYNC && a0 == 0);
	struct pdk_req *r;

	if (READ_ONCE(c->dead) || (op != PDK_OP_RELEASE && READ_ONCE(f->node->removed)))
		return -EIO;
	r = pdk_req_new(c, f, op, true);
	if (!r)
		return -ENOMEM;
	r->msg.arg[0] = a0;
	r->msg.arg[1] = a1;
	r->msg.arg[2] = a2;
	r->msg.arg[3] = a3;
	r->msg.area = area;
	/* An mmap waits with the caller's mmap lock held: a copy that faults would deadlock. A release
	 * may run where the caller's memory is gone. */
	r->accessible = !idle && op != PDK_OP_MMAP;
	if (!pdk_enqueue(r)) {
		pdk_req_free(r);
		return -EIO;
	}
	return pdk_wait_consume(r, idle, value, device);
}

/* The request `id` among those that expect a reply (control->lock held). */
static struct pdk_req *pdk_find_locked(struct pdk_control *c, u64 id)
{
	struct pdk_req *r;

	list_for_each_entry(r, &c->inflight, inflight_entry)
		if (r->msg.id == id)
			return r;
	return NULL;
}

struct pdk_req *pdk_find_waiting_locked(struct pdk_control *c, u64 id)
{
	struct pdk_req *r = pdk_find_locked(c, id);

	return r && r->state == PDK_REQ_SENT && !r->orphan ? r : NULL;
}

ssize_t pdk_control_read(struct file *file, char __user *buf, size_t count, loff_t *ppos)
{
	struct pdk_control *c = file->private_data;
	struct pdk_request msg;
	struct pdk_req *r;
	bool owned;

	if (count < sizeof(msg))
		return -EINVAL;
	for (;;) {
		spin_lock(&c->lock);
		r = list_first_entry_or_null(&c->pending, struct pdk_req, queue_entry);
		if (r)
			break;
		spin_unlock(&c->lock);
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		if (wait_event_interruptible(c->readq, !list_empty_careful(&c->pending)))
			return -ERESTARTSYS;
	}
	list_del_init(&r->queue_entry);
	msg = r->msg;
	owned = !r->expects_reply;
	if (!owned)
		r->state = PDK_REQ_SENT;
	spin_unlock(&c->lock);

	if (copy_to_user(buf, &msg, sizeof(msg))) {
		/* not delivered: put it back at the head (a waited one only if its caller still waits) */
		spin_lock(&c->lock);
		if (owned) {
			if (!c->dead) {
				list_add(&r->queue_entry, &c->pending);
				r = NULL;
			}
		} else {
			struct pdk_req *w = pdk_find_locked(c, msg.id);

			if (w && w->state == PDK_REQ_SENT && !c->dead) {
				w->state = PDK_REQ_QUEUED;
				list_add(&w->queue_entry, &c->pending);
			}
			r = NULL;
		}
		spin_unlock(&c->lock);
		if (r)
			pdk_req_free(r);
		return -EFAULT;
	}
	if (owned)
		pdk_req_free(r);
	return sizeof(msg);
}

__poll_t pdk_control_poll(struct file *file, struct poll_table_struct *wait)
{
	struct pdk_control *c = file->private_data;

	poll_wait(file, &c->readq, wait);
	return list_empty_careful(&c->pending) ? 0 : EPOLLIN | EPOLLRDNORM;
}

/*
 * A PDK_MMAP_DEVICE reply's descriptor, taken in the daemon's context: a character device's open file whose
 * driver maps (never one of the module's own: a node's mmap would come back here, the control file's
 * would hand out the daemon's areas). The caller's mmap then
 * maps it as the device's own mapping (pdk_file_mmap).
 */
static struct file *pdk_reply_device(u64 fd, long *err)
{
	struct file *file;

	*err = -EBADF;
	if (fd > INT_MAX)
		return NULL;
	file = fget((unsigned int)fd);
	if (!file)
		return NULL;
	*err = -EINVAL;
	if (!S_ISCHR(file_inode(file)->i_mode) || !file->f_op || !file->f_op->mmap ||
	    file->f_op->owner == THIS_MODULE || !(file->f_mode & FMODE_READ)) {
		fput(file);
		return NULL;
	}
	return file;
}

long pdk_reply(struct pdk_control *c, struct pdk_reply __user *arg)
{
	struct pdk_reply rep;
	struct pdk_req *r;
	struct file *device = NULL;
	long err;

	if (copy_from_user(&rep, arg, sizeof(rep)))
		return -EFAULT;
	if (rep.result == PDK_MMAP_DEVICE) {
		/* only an mmap's 1 names a descriptor (ids are never reused: the request is looked up again) */
		u32 op = 0;

		spin_lock(&c->lock);
		r = pdk_find_locked(c, rep.request);
		if (r)
			op = r->msg.op;
		spin_unlock(&c->lock);
		if (op == PDK_OP_MMAP) {
			device = pdk_reply_device(rep.value, &err);
			if (!device)
				return err;
		}
	}
	spin_lock(&c->lock);
	r = pdk_find_locked(c, rep.request);
	if (!r || r->state == PDK_REQ_QUEUED) {
		spin_unlock(&c->lock);
		if (device)
			fput(device);
		return -ESRCH;
	}
	if (device && (r->msg.op != PDK_OP_MMAP || r->orphan || r->state != PDK_REQ_SENT)) {
		/* a device only answers an mmap some caller waits for; the request stays unanswered */
		spin_unlock(&c->lock);
		fput(device);
		return -ESRCH;
	}
	if (r->orphan || r->state == PDK_REQ_ENDED) {
		bool undo = !r->orphan && r->msg.op == PDK_OP_OPEN && rep.result >= 0;

		pdk_unlink_locked(r);
		spin_unlock(&c->lock);
		if (undo)
			pdk_send_release(c, NULL, rep.value, r->msg.cookie);
		rep.result = r->orphan ? 0 : -ESRCH;
		pdk_req_free(r);
		return rep.result;
	}
	r->result = rep.result;
	r->value = rep.value;
	r->device = device;
	list_del_init(&r->inflight_entry);
	pdk_drain_accesses_locked(r);
	WRITE_ONCE(r->state, PDK_REQ_ANSWERED);
	wake_up(&r->wq);
	spin_unlock(&c->lock);
	return 0;
}

/* Readiness is level-based end to end: a trusted answer is kept until a forwarded call may change it,
 * and every waiter it does not satisfy has a WATCH outstanding (pdk_poll). Every PDK_NOTIFY ends the
 * outstanding WATCHes (the daemon keeps one backend watch per file), so it wakes every waiter, whatever
 * its events: a wake-up keyed by the answer's events alone would pass by an epoll or a poll waiting for
 * others, which would then never ask again. */
static void pdk_file_wake_locked(struct pdk_file *f, __poll_t revents)
{
	f->watch_outstanding = false;
	f->watching = 0;
	wake_up_interruptible_poll(&f->pollq, PDK_POLL_BITS);
	if (revents & (EPOLLIN | EPOLLRDNORM))
		kill_fasync(&f->fasync, SIGIO, POLL_IN);
	if (revents & (EPOLLOUT | EPOLLWRNORM))
		kill_fasync(&f->fasync, SIGIO, POLL_OUT);
	if (revents & EPOLLPRI)
		kill_fasync(&f->fasync, SIGIO, POLL_PRI);
	if (revents & EPOLLERR)
		kill_fasync(&f->fasync, SIGIO, POLL_ERR);
	if (revents & EPOLLHUP)
		kill_fasync(&f->fasync, SIGIO, POLL_HUP);
}

/* Readiness the module knows for itself (a hangup): kept whatever was asked (control->lock held). */
void pdk_file_readiness_locked(struct pdk_file *f, __poll_t revents)
{
	f->revents = (__force u32)revents;
	f->ready_valid = true;
	pdk_file_wake_locked(f, revents);
}

/* The daemon's PDK_NOTIFY (control->lock held). It is trusted only when no forwarded call completed
 * since the first outstanding WATCH was sent: an answer to a WATCH made before such a call (a
 * DQEVENT, a read) may tell of readiness the call consumed. Untrusted, it only wakes the waiters, whose
 * next poll asks again and gets the level as it is now. */
void pdk_file_notified_locked(struct pdk_file *f, __poll_t revents)
{
	if (f->watch_outstanding && f->watch_calls_done == f->calls_done) {
		f->revents = (__force u32)revents;
		f->ready_valid = true;
	}
	pdk_file_wake_locked(f, revents);
}

long pdk_notify(struct pdk_control *c, struct pdk_notify __user *arg)
{
	struct pdk_notify n;
	struct pdk_file *f;
	long err = -ESRCH;

	if (copy_from_user(&n, arg, sizeof(n)))
		return -EFAULT;
	if (n.reserved || (n.revents & ~(__force u32)PDK_POLL_BITS))
		return -EINVAL;
	spin_lock(&c->lock);
	list_for_each_entry(f, &c->files, control_entry) {
		if (f->id == n.file) {
			if (!READ_ONCE(f->node->removed))
				pdk_file_notified_locked(f, (__force __poll_t)n.revents);
			err = 0;
			break;
		}
	}
	spin_unlock(&c->lock);
	return err;
}

/* The control file goes: every waiter wakes with EIO, queued requests go, open files hang up, areas can
 * no longer be mapped by the daemon. */
void pdk_control_shutdown(struct pdk_control *c)
{
	struct pdk_req *r, *tmp;
	struct pdk_area *a, *atmp;
	LIST_HEAD(freeq);

	spin_lock(&c->lock);
	c->dead = true;
	list_for_each_entry_safe(r, tmp, &c->pending, queue_entry) {
		list_del_init(&r->queue_entry);
		if (!r->expects_reply)
			list_add(&r->queue_entry, &freeq);
	}
	list_for_each_entry_safe(r, tmp, &c->inflight, inflight_entry) {
		if (r->orphan || r->state == PDK_REQ_ENDED) {
			list_del_init(&r->inflight_entry);
			list_add(&r->queue_entry, &freeq);
		} else {
			pdk_drain_accesses_locked(r);
			wake_up(&r->wq);
		}
	}
	pdk_files_hangup_locked(c, NULL);
	list_for_each_entry_safe(a, atmp, &c->areas, control_entry) {
		list_del_init(&a->control_entry);
		a->listed = false;
	}
	wake_up_all(&c->readq);
	spin_unlock(&c->lock);
	list_for_each_entry_safe(r, tmp, &freeq, queue_entry)
		pdk_req_free(r);
}
