// SPDX-License-Identifier: GPL-2.0
/*
 * module.c — init/exit and the control node /dev/paradice. Each open of the control node is one daemon's
 * control file: it owns the nodes it adds, its queue of requests and its areas (see paradice_kernel.h).
 */
#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/capability.h>
#include <linux/poll.h>
#include <linux/mm.h>
#include "internal.h"

DEFINE_MUTEX(pdk_global_mutex);
struct device *pdk_control_device;

static int pdk_control_open(struct inode *inode, struct file *file)
{
	struct pdk_control *c;

	/* A daemon chooses device numbers, owners and modes of /dev nodes: that is the administrator's. */
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c)
		return -ENOMEM;
	kref_init(&c->kref);
	spin_lock_init(&c->lock);
	INIT_LIST_HEAD(&c->pending);
	INIT_LIST_HEAD(&c->inflight);
	INIT_LIST_HEAD(&c->files);
	INIT_LIST_HEAD(&c->areas);
	INIT_LIST_HEAD(&c->nodes);
	init_waitqueue_head(&c->readq);
	c->next_area_offset = 0;
	file->private_data = c;
	stream_open(inode, file);
	return 0;
}

static void pdk_control_free(struct kref *kref)
{
	kfree(container_of(kref, struct pdk_control, kref));
}

void pdk_control_put(struct pdk_control *c)
{
	kref_put(&c->kref, pdk_control_free);
}

static int pdk_control_release(struct inode *inode, struct file *file)
{
	struct pdk_control *c = file->private_data;

	pdk_control_shutdown(c);   /* waiters wake with EIO, queued requests go, open files hang up */
	pdk_remove_all_nodes(c);
	pdk_control_put(c);
	return 0;
}

static long pdk_control_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct pdk_control *c = file->private_data;
	void __user *argp = (void __user *)arg;

	switch (cmd) {
	case PDK_GET_VERSION:
		return PDK_VERSION;
	case PDK_ADD_NODE:
		return pdk_add_node(c, argp);
	case PDK_REMOVE_NODE:
		return pdk_remove_node(c, argp);
	case PDK_REPLY:
		return pdk_reply(c, argp);
	case PDK_ACCESS:
		return pdk_access(c, argp);
	case PDK_NOTIFY:
		return pdk_notify(c, argp);
	case PDK_SET_PARENT:
		return pdk_set_parent(c, argp);
	case PDK_PARENT_ATTR:
		return pdk_parent_attr(c, argp);
	default:
		return -ENOTTY;
	}
}

static int pdk_control_mmap_op(struct file *file, struct vm_area_struct *vma)
{
	return pdk_control_mmap(file->private_data, vma);
}

static const struct file_operations pdk_control_fops = {
	.owner = THIS_MODULE,
	.open = pdk_control_open,
	.release = pdk_control_release,
	.read = pdk_control_read,
	.poll = pdk_control_poll,
	.unlocked_ioctl = pdk_control_ioctl,
	.compat_ioctl = compat_ptr_ioctl,   /* every structure has the same layout in 32 and 64 bits */
	.mmap = pdk_control_mmap_op,
	.llseek = no_llseek,
};

static struct miscdevice pdk_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = PDK_CONTROL_NODE,
	.fops = &pdk_control_fops,
	.mode = 0600,
};

static int __init pdk_init(void)
{
	int err;

	BUILD_BUG_ON(sizeof(struct pdk_request) != 96);
	BUILD_BUG_ON(sizeof(struct pdk_node) != 192);
	err = pdk_nodes_init();
	if (err)
		return err;
	err = misc_register(&pdk_misc);
	if (err) {
		pdk_nodes_exit();
		return err;
	}
	pdk_control_device = pdk_misc.this_device;
	pr_info("paradice: control node /dev/%s, interface version %d\n", PDK_CONTROL_NODE, PDK_VERSION);
	return 0;
}

static void __exit pdk_exit(void)
{
	misc_deregister(&pdk_misc);
	pdk_nodes_exit();
}

module_init(pdk_init);
module_exit(pdk_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Paradice: device nodes whose file operations a user-space daemon serves");
MODULE_AUTHOR("The Paradice authors");
