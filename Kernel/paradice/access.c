// SPDX-License-Identifier: GPL-2.0
/*
 * access.c — PDK_ACCESS: the daemon names bytes or descriptors of a waiting caller; the caller's own
 * wait loop carries the access out in its context (copy_from_user / copy_to_user of exactly
 * [address, address + length), fd_install, fget), through a kernel bounce buffer. The daemon never
 * reaches the caller's memory itself, and an ended request accepts no access (ESRCH).
 */
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/uaccess.h>
#include <linux/file.h>
#include <linux/anon_inodes.h>
#include <linux/sched.h>
#include "internal.h"

/* Two references: the daemon's, and the one of the request's list (or of the caller running it). */
static void pdk_access_put(struct pdk_access_work *a)
{
	if (refcount_dec_and_test(&a->refs)) {
		kvfree(a->buf);
		kfree(a);
	}
}

/* The request ended (reply, death, control gone): its queued accesses fail with ESRCH. The daemon still
 * holds its own reference to each, so the list's reference never is the last here. */
void pdk_drain_accesses_locked(struct pdk_req *r)
{
	struct pdk_access_work *a, *tmp;

	list_for_each_entry_safe(a, tmp, &r->accesses, entry) {
		list_del_init(&a->entry);
		a->err = -ESRCH;
		complete(&a->done);
		refcount_dec(&a->refs);
	}
}

static bool pdk_caller_has_memory(void)
{
	return current->mm && !(current->flags & (PF_KTHREAD | PF_EXITING));
}

/* PDK_NEW_FILE: a new open file of the request's node for daemon handle a->value. */
static int pdk_access_new_file(struct pdk_req *r, struct pdk_access_work *a)
{
	struct pdk_control *c = r->control;
	struct pdk_file *nf;
	struct file *file;
	int fd;

	if (!r->node || READ_ONCE(r->node->removed) || READ_ONCE(c->dead))
		return -EIO;
	nf = pdk_file_new(c, r->node);
	if (!nf)
		return -ENOMEM;
	nf->handle = a->value;
	fd = get_unused_fd_flags(a->address ? O_CLOEXEC : 0);
	if (fd < 0) {
		pdk_file_free(nf);
		return fd;
	}
	file = anon_inode_getfile("[paradice]", &pdk_file_fops, nf, O_RDWR);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		pdk_file_free(nf);
		return PTR_ERR(file);
	}
	file->f_mode &= ~(FMODE_LSEEK | FMODE_PREAD | FMODE_PWRITE);   /* as nonseekable_open */
	nf->file = file;
	spin_lock(&c->lock);
	list_add_tail(&nf->control_entry, &c->files);
	spin_unlock(&c->lock);
	fd_install(fd, file);
	a->value = fd;
	return 0;
}

/* PDK_FILE_HANDLE: the daemon's handle of the caller's descriptor a->address. */
static int pdk_access_file_handle(struct pdk_req *r, struct pdk_access_work *a)
{
	struct pdk_file *pf;
	struct file *file;
	int err = -EBADF;

	if (a->address > INT_MAX)
		return -EBADF;
	file = fget(a->address);
	if (!file)
		return -EBADF;
	if (file->f_op == &pdk_file_fops) {
		pf = READ_ONCE(file->private_data);
		if (pf && pf->control == r->control) {
			a->value = pf->handle;
			err = 0;
		}
	}
	fput(file);
	return err;
}

/* In the caller's context. */
static int pdk_access_run(struct pdk_req *r, struct pdk_access_work *a)
{
	if (!pdk_caller_has_memory())
		return a->kind == PDK_FILE_HANDLE ? -EBADF : -EFAULT;
	switch (a->kind) {
	case PDK_COPY_FROM_CALLER:
		if (copy_from_user(a->buf, u64_to_user_ptr(a->address), a->length))
			return -EFAULT;
		return 0;
	case PDK_COPY_TO_CALLER:
		/* a fault part way leaves the caller's bytes half written: the daemon gets EFAULT and must
		 * fail the call, so the caller never sees it as a success */
		if (copy_to_user(u64_to_user_ptr(a->address), a->buf, a->length))
			return -EFAULT;
		return 0;
	case PDK_NEW_FILE:
		return pdk_access_new_file(r, a);
	case PDK_FILE_HANDLE:
		return pdk_access_file_handle(r, a);
	}
	return -EINVAL;
}

/* The caller's side: runs the accesses queued on its request, one at a time. */
void pdk_run_accesses(struct pdk_req *r)
{
	struct pdk_control *c = r->control;
	struct pdk_access_work *a;

	for (;;) {
		spin_lock(&c->lock);
		a = list_first_entry_or_null(&r->accesses, struct pdk_access_work, entry);
		if (a)
			list_del_init(&a->entry);
		spin_unlock(&c->lock);
		if (!a)
			return;
		a->err = pdk_access_run(r, a);
		complete(&a->done);
		pdk_access_put(a);
	}
}

/* The daemon's side of PDK_ACCESS. */
long pdk_access(struct pdk_control *c, struct pdk_access __user *arg)
{
	struct pdk_access acc;
	struct pdk_access_work *a;
	struct pdk_req *r;
	bool copy;
	long err;

	if (copy_from_user(&acc, arg, sizeof(acc)))
		return -EFAULT;
	if (acc.reserved)
		return -EINVAL;
	switch (acc.kind) {
	case PDK_COPY_FROM_CALLER:
	case PDK_COPY_TO_CALLER:
		if (acc.length > PDK_MAX_ACCESS)
			return -EINVAL;
		copy = true;
		break;
	case PDK_NEW_FILE:
		if (acc.address > 1)
			return -EINVAL;
		copy = false;
		break;
	case PDK_FILE_HANDLE:
		copy = false;
		break;
	default:
		return -EINVAL;
	}

	a = kzalloc(sizeof(*a), GFP_KERNEL);
	if (!a)
		return -ENOMEM;
	INIT_LIST_HEAD(&a->entry);
	refcount_set(&a->refs, 2);
	init_completion(&a->done);
	a->kind = acc.kind;
	a->address = acc.address;
	a->length = copy ? acc.length : 0;
	a->value = acc.value;
	if (copy && acc.length) {
		a->buf = kvmalloc(acc.length, GFP_KERNEL);
		if (!a->buf) {
			kfree(a);
			return -ENOMEM;
		}
		if (acc.kind == PDK_COPY_TO_CALLER &&
		    copy_from_user(a->buf, u64_to_user_ptr(acc.buffer), acc.length)) {
			err = -EFAULT;
			goto out_unqueued;
		}
	}

	spin_lock(&c->lock);
	r = pdk_find_waiting_locked(c, acc.request);
	if (!r || !r->accessible) {
		spin_unlock(&c->lock);
		err = r ? -EINVAL : -ESRCH;
		goto out_unqueued;
	}
	list_add_tail(&a->entry, &r->accesses);
	wake_up(&r->wq);
	spin_unlock(&c->lock);

	if (wait_for_completion_killable(&a->done)) {
		spin_lock(&c->lock);
		if (!list_empty(&a->entry)) {   /* still queued: nobody else will drop the list's reference */
			list_del_init(&a->entry);
			refcount_dec(&a->refs);
		}
		spin_unlock(&c->lock);
		pdk_access_put(a);
		return -EINTR;
	}
	err = a->err;
	if (!err && acc.kind == PDK_COPY_FROM_CALLER && acc.length &&
	    copy_to_user(u64_to_user_ptr(acc.buffer), a->buf, acc.length))
		err = -EFAULT;
	if (!err && !copy) {
		acc.value = a->value;
		if (copy_to_user(arg, &acc, sizeof(acc)))
			err = -EFAULT;
	}
	pdk_access_put(a);
	return err;

out_unqueued:
	kvfree(a->buf);
	kfree(a);
	return err;
}
