// SPDX-License-Identifier: GPL-2.0
/*
 * node.c — PDK_ADD_NODE / PDK_REMOVE_NODE: a character device region, its cdev, and a device in a class
 * so that devtmpfs makes /dev/<path> and sysfs has /sys/dev/char/M:m (uevent MAJOR, MINOR, DEVNAME).
 */
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/kdev_t.h>
#include <linux/kernfs.h>
#include <linux/string.h>
#include <linux/uidgid.h>
#include <linux/cred.h>
#include <linux/idr.h>
#include "internal.h"

struct class *pdk_default_class;

/* A class the module made for a subsystem name the kernel has no class of (a guest without the driver). */
struct pdk_class {
	struct list_head entry;
	struct class *cls;
	unsigned int users;
	char name[PDK_MAX_NAME];
};

/* A parent device that nodes share (PDK_SET_PARENT), in a class (the backend parent's subsystem, or
 * paradice), so that its nodes sit directly in its directory (a class device under a class device gets no
 * glue directory). */
struct pdk_parent_dev {
	struct list_head entry;
	struct device *dev;
	struct pdk_class *cls;
	unsigned int users;
	struct list_head attrs;          /* pdk_parent_file.entry */
	unsigned int attr_count;
	struct list_head glues;          /* pdk_glue.entry */
	const char *uevent;              /* set once (smp_store_release), read without the mutex */
	char name[PDK_MAX_NAME];
	char subsystem[PDK_MAX_NAME];
};

/* A copy of one of the backend parent's attributes (PDK_PARENT_ATTR): immutable once made, so that its
 * show needs no lock (a lock taken there would deadlock with the removal, which drains the readers). */
struct pdk_parent_file {
	struct list_head entry;
	struct device_attribute attr;
	size_t length;
	char name[PDK_MAX_NAME];
	u8 value[];
};

/* The parent's SUBSYSTEM folder: links NAME to the nodes of that subsystem, as the backend kernel's class
 * folder under a bus device holds them. */
struct pdk_glue {
	struct list_head entry;
	struct kobject *kobj;
	unsigned int users;
	char name[PDK_MAX_NAME];
};

/* Nodes whose number is taken here (PDK_NODE_ANY_NUMBER) share one dynamic major, so that many of them do
 * not use up the kernel's few dynamic majors; past its minors each takes a major of its own. */
#define PDK_POOL_MINORS 1024
static dev_t pdk_pool_base;
static DEFINE_IDA(pdk_pool_ida);

static LIST_HEAD(pdk_all_nodes);     /* pdk_node.global_entry, under pdk_global_mutex */
static LIST_HEAD(pdk_parents);       /* pdk_parent_dev.entry, under pdk_global_mutex */
static LIST_HEAD(pdk_classes);
static struct pdk_class pdk_default = { .name = "paradice" };

static bool pdk_name_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '.' || ch == '_' || ch == '-';
}

/* One component of [A-Za-z0-9._-], neither "." nor "..". */
static bool pdk_component_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
		return false;
	for (i = 0; i < len; i++)
		if (!pdk_name_char(s[i]))
			return false;
	return true;
}

/* A parent's name is a device name as the backend's kernel gives it: besides [A-Za-z0-9._-], the other
 * graphic ASCII bytes a bus may use (PCI "0000:00:02.0", USB "1-1:1.0", "PNP0C0A:00"); never '/', a
 * space, a control or non-ASCII byte, "." or "..". The length is bounded by the field (NUL included). */
static bool pdk_device_name_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
		return false;
	for (i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] > '~' || s[i] == '/')
			return false;
	return true;
}

static bool pdk_path_ok(const char *path)
{
	const char *p = path, *slash;

	for (;;) {
		slash = strchr(p, '/');
		if (!pdk_component_ok(p, slash ? (size_t)(slash - p) : strlen(p)))
			return false;
		if (!slash)
			return true;
		p = slash + 1;
	}
}

static char *pdk_devnode(struct device *dev, umode_t *mode, kuid_t *uid, kgid_t *gid)
{
	struct pdk_knode *n = dev_get_drvdata(dev);

	if (mode)
		*mode = n->mode;
	if (uid)
		*uid = n->uid;
	if (gid)
		*gid = n->gid;
	return kstrdup(n->path, GFP_KERNEL);
}

static const struct device_type pdk_device_type = {
	.name = "paradice",
	.devnode = pdk_devnode,
};

static struct class *pdk_class_of(struct pdk_class *pc);

static void pdk_device_release(struct device *dev)
{
	kfree(dev);
}

/* The node's device in its class, under `parent` (NULL: /sys/devices/virtual/CLASS); devtmpfs makes its node. */
static struct device *pdk_node_device(struct pdk_knode *n, struct device *parent, const char *devname)
{
	struct device *dev = kzalloc(sizeof(*dev), GFP_KERNEL);
	int err;

	if (!dev)
		return ERR_PTR(-ENOMEM);
	device_initialize(dev);
	dev->devt = n->devt;
	dev->class = pdk_class_of(n->cls);
	dev->type = &pdk_device_type;
	dev->release = pdk_device_release;
	dev->parent = parent;
	dev_set_drvdata(dev, n);
	err = dev_set_name(dev, "%s", devname);
	if (!err)
		err = device_add(dev);
	if (err) {
		put_device(dev);
		return ERR_PTR(err);
	}
	return dev;
}

/* Whether the running kernel has a class of this name (that the module did not make): /sys/class/NAME. */
static bool pdk_kernel_has_class(const char *name)
{
	struct kernfs_node *link, *found;
	bool has = false;

	/* The control node is a misc device: its "subsystem" link leads to /sys/class/misc, whose parent
	 * is /sys/class. */
	link = kernfs_find_and_get(pdk_control_device->kobj.sd, "subsystem");
	if (!link)
		return true;   /* cannot tell: keep to the module's own class */
	if (link->symlink.target_kn && link->symlink.target_kn->parent) {
		found = kernfs_find_and_get(link->symlink.target_kn->parent, name);
		has = found != NULL;
		kernfs_put(found);
	} else {
		has = true;
	}
	kernfs_put(link);
	return has;
}

/* The class a node of `subsystem` belongs to (pdk_global_mutex held). */
static struct pdk_class *pdk_class_get(const char *subsystem)
{
	struct pdk_class *pc;
	struct class *cls;

	if (!subsystem[0] || !strcmp(subsystem, pdk_default.name))
		goto fallback;
	list_for_each_entry(pc, &pdk_classes, entry) {
		if (!strcmp(pc->name, subsystem)) {
			pc->users++;
			return pc;
		}
	}
	if (pdk_kernel_has_class(subsystem)) {
		pr_info("paradice: this kernel has a class '%s' already; its nodes go in class '%s'\n",
			subsystem, pdk_default.name);
		goto fallback;
	}
	pc = kzalloc(sizeof(*pc), GFP_KERNEL);
	if (!pc)
		return ERR_PTR(-ENOMEM);
	strscpy(pc->name, subsystem, sizeof(pc->name));
	cls = class_create(THIS_MODULE, pc->name);
	if (IS_ERR(cls)) {
		kfree(pc);
		return ERR_CAST(cls);
	}
	pc->cls = cls;
	pc->users = 1;
	list_add(&pc->entry, &pdk_classes);
	return pc;
fallback:
	pdk_default.users++;
	return &pdk_default;
}

static struct class *pdk_class_of(struct pdk_class *pc)
{
	return pc == &pdk_default ? pdk_default_class : pc->cls;
}

static void pdk_class_put(struct pdk_class *pc)
{
	if (--pc->users || pc == &pdk_default)
		return;
	list_del(&pc->entry);
	class_destroy(pc->cls);
	kfree(pc);
}

static void pdk_node_release(struct kref *kref)
{
	struct pdk_knode *n = container_of(kref, struct pdk_knode, kref);

	pdk_control_put(n->control);
	kfree(n);
}

void pdk_node_put(struct pdk_knode *n)
{
	kref_put(&n->kref, pdk_node_release);
}

/* The node of a device number, with a reference, or NULL. */
struct pdk_knode *pdk_node_lookup(dev_t devt)
{
	struct pdk_knode *n, *found = NULL;

	mutex_lock(&pdk_global_mutex);
	list_for_each_entry(n, &pdk_all_nodes, global_entry) {
		if (n->devt == devt && !n->removed) {
			pdk_node_get(n);
			found = n;
			break;
		}
	}
	mutex_unlock(&pdk_global_mutex);
	return found;
}

/* Takes the region of the wanted number, or (PDK_NODE_ANY_NUMBER) a free one. */
static int pdk_take_number(struct pdk_knode *n, const struct pdk_node *want, const char *name)
{
	bool any = want->flags & PDK_NODE_ANY_NUMBER;
	int err = -EBUSY;

	if (want->major != 0 && want->major < CHRDEV_MAJOR_MAX && want->minor <= MINORMASK) {
		n->devt = MKDEV(want->major, want->minor);
		err = register_chrdev_region(n->devt, 1, name);
		if (!err)
			return 0;
	} else if (!any) {
		return -EINVAL;
	}
	if (!any)
		return err;
	err = ida_alloc_max(&pdk_pool_ida, PDK_POOL_MINORS - 1, GFP_KERNEL);
	if (err >= 0) {
		n->devt = MKDEV(MAJOR(pdk_pool_base), MINOR(pdk_pool_base) + err);
		n->pooled = true;
		return 0;
	}
	if (err != -ENOSPC)
		return err;
	return alloc_chrdev_region(&n->devt, 0, 1, name);
}

static void pdk_release_number(struct pdk_knode *n)
{
	if (n->pooled)
		ida_free(&pdk_pool_ida, MINOR(n->devt) - MINOR(pdk_pool_base));
	else
		unregister_chrdev_region(n->devt, 1);
}

long pdk_add_node(struct pdk_control *c, struct pdk_node __user *arg)
{
	struct pdk_node want;
	struct pdk_knode *n, *other;
	struct pdk_parent_dev *p;
	struct device *dev;
	char devname[PDK_MAX_PATH];
	int err;

	if (copy_from_user(&want, arg, sizeof(want)))
		return -EFAULT;
	if (strnlen(want.path, sizeof(want.path)) == sizeof(want.path) ||
	    strnlen(want.subsystem, sizeof(want.subsystem)) == sizeof(want.subsystem))
		return -EINVAL;
	if (!pdk_path_ok(want.path) || !strcmp(want.path, PDK_CONTROL_NODE))
		return -EINVAL;
	if (want.subsystem[0] && !pdk_component_ok(want.subsystem, strlen(want.subsystem)))
		return -EINVAL;
	if (want.mode & ~0777u || want.flags & ~PDK_NODE_ANY_NUMBER)
		return -EINVAL;

	n = kzalloc(sizeof(*n), GFP_KERNEL);
	if (!n)
		return -ENOMEM;
	kref_init(&n->kref);
	n->cookie = want.cookie;
	n->mode = want.mode;
	n->uid = make_kuid(current_user_ns(), want.uid);
	n->gid = make_kgid(current_user_ns(), want.gid);
	if (!uid_valid(n->uid) || !gid_valid(n->gid)) {
		kfree(n);
		return -EINVAL;
	}
	strscpy(n->path, want.path, sizeof(n->path));
	strscpy(devname, want.path, sizeof(devname));
	strreplace(devname, '/', '!');   /* how the kernel spells a subdirectory in a device name */

	mutex_lock(&pdk_global_mutex);
	err = -EBUSY;
	if (c->node_count >= PDK_MAX_NODES_PER_CONTROL)
		goto unlock_free;
	err = -EEXIST;
	list_for_each_entry(other, &c->nodes, control_entry)
		if (other->cookie == want.cookie)
			goto unlock_free;
	list_for_each_entry(other, &pdk_all_nodes, global_entry)
		if (!strcmp(other->path, n->path))
			goto unlock_free;


	err = pdk_take_number(n, &want, devname);
	if (err)
		goto unlock_free;
	n->cls = pdk_class_get(want.subsystem);
	if (IS_ERR(n->cls)) {
		err = PTR_ERR(n->cls);
		goto unlock_region;
	}
	err = -EEXIST;   /* a parent device of that name in the same class */
	list_for_each_entry(p, &pdk_parents, entry)
		if (p->cls == n->cls && !strcmp(p->name, devname))
			goto unlock_class;
	strscpy(n->subsystem, want.subsystem, sizeof(n->subsystem));
	n->cdev = cdev_alloc();
	err = -ENOMEM;
	if (!n->cdev)
		goto unlock_class;
	n->cdev->owner = THIS_MODULE;
	n->cdev->ops = &pdk_file_fops;
	err = cdev_add(n->cdev, n->devt, 1);
	if (err) {
		kobject_put(&n->cdev->kobj);
		goto unlock_class;
	}

	dev = pdk_node_device(n, NULL, devname);
	if (IS_ERR(dev)) {
		err = PTR_ERR(dev);
		goto unlock_cdev;
	}
	n->dev = dev;
	pdk_control_get(c);
	n->control = c;
	list_add_tail(&n->control_entry, &c->nodes);
	list_add_tail(&n->global_entry, &pdk_all_nodes);
	c->node_count++;
	mutex_unlock(&pdk_global_mutex);

	want.major = MAJOR(n->devt);
	want.minor = MINOR(n->devt);
	if (copy_to_user(arg, &want, sizeof(want)))
		return -EFAULT;   /* the node stays: the daemon can still remove it by its cookie */
	return 0;

unlock_cdev:
	cdev_del(n->cdev);
unlock_class:
	pdk_class_put(n->cls);
unlock_region:
	pdk_release_number(n);
unlock_free:
	mutex_unlock(&pdk_global_mutex);
	kfree(n);
	return err;
}

static void pdk_parent_put(struct pdk_parent_dev *p)
{
	struct pdk_parent_file *f, *tmp;

	if (--p->users)
		return;
	list_del(&p->entry);
	/* The removal drains the readers of its files and of its uevent: they can go after it. */
	device_unregister(p->dev);
	list_for_each_entry_safe(f, tmp, &p->attrs, entry)
		kfree(f);
	kfree(p->uevent);
	pdk_class_put(p->cls);
	kfree(p);
}

/* The node's NAME link in its parent's SUBSYSTEM folder goes (pdk_global_mutex held). */
static void pdk_glue_unlink(struct pdk_knode *n)
{
	struct pdk_glue *g = n->glue;

	if (!g)
		return;
	n->glue = NULL;
	sysfs_remove_link(g->kobj, n->name);
	if (--g->users)
		return;
	list_del(&g->entry);
	kobject_put(g->kobj);
	kfree(g);
}

static struct pdk_glue *pdk_glue_find(struct pdk_parent_dev *p, const char *name)
{
	struct pdk_glue *g;

	list_for_each_entry(g, &p->glues, entry)
		if (!strcmp(g->name, name))
			return g;
	return NULL;
}

/* Whether the directory of `kobj` has an entry `name`. */
static bool pdk_has_entry(struct kobject *kobj, const char *name)
{
	struct kernfs_node *found = kernfs_find_and_get(kobj->sd, name);

	kernfs_put(found);
	return found != NULL;
}

/* Whether the node's SUBSYSTEM/NAME link can be made in `p` (pdk_global_mutex held): 0 or -EEXIST. */
static int pdk_glue_check(struct pdk_parent_dev *p, const char *subsystem, const char *name)
{
	struct pdk_glue *g;

	if (!subsystem[0] || !name[0])
		return 0;
	g = pdk_glue_find(p, subsystem);
	if (g)
		return pdk_has_entry(g->kobj, name) ? -EEXIST : 0;
	return pdk_has_entry(&p->dev->kobj, subsystem) ? -EEXIST : 0;
}

/* The node's NAME link in its parent's SUBSYSTEM folder (pdk_global_mutex held, pdk_glue_check passed). */
static int pdk_glue_link(struct pdk_knode *n)
{
	struct pdk_parent_dev *p = n->parent;
	struct pdk_glue *g;
	int err;

	if (!p || !n->dev || !n->subsystem[0] || !n->name[0])
		return 0;
	g = pdk_glue_find(p, n->subsystem);
	if (!g) {
		g = kzalloc(sizeof(*g), GFP_KERNEL);
		if (!g)
			return -ENOMEM;
		strscpy(g->name, n->subsystem, sizeof(g->name));
		g->kobj = kobject_create_and_add(g->name, &p->dev->kobj);
		if (!g->kobj) {
			kfree(g);
			return -ENOMEM;
		}
		list_add(&g->entry, &p->glues);
	}
	g->users++;
	err = sysfs_create_link(g->kobj, &n->dev->kobj, n->name);
	n->glue = g;
	if (err)
		pdk_glue_unlink(n);
	return err;
}

/* pdk_global_mutex held. The node's files fail with EIO from now on (poll: POLLERR | POLLHUP). */
static void pdk_node_remove_locked(struct pdk_knode *n)
{
	struct pdk_control *c = n->control;

	WRITE_ONCE(n->removed, true);
	list_del(&n->control_entry);
	list_del(&n->global_entry);
	c->node_count--;
	pdk_glue_unlink(n);
	if (n->dev)
		device_unregister(n->dev);
	if (n->parent)
		pdk_parent_put(n->parent);
	cdev_del(n->cdev);
	pdk_release_number(n);
	pdk_class_put(n->cls);
	spin_lock(&c->lock);
	pdk_files_hangup_locked(c, n);
	spin_unlock(&c->lock);
	pdk_node_put(n);
}

long pdk_remove_node(struct pdk_control *c, u64 __user *arg)
{
	struct pdk_knode *n;
	u64 cookie;
	long err = -ENOENT;

	if (copy_from_user(&cookie, arg, sizeof(cookie)))
		return -EFAULT;
	mutex_lock(&pdk_global_mutex);
	list_for_each_entry(n, &c->nodes, control_entry) {
		if (n->cookie == cookie) {
			pdk_node_remove_locked(n);
			err = 0;
			break;
		}
	}
	mutex_unlock(&pdk_global_mutex);
	return err;
}

/* What a parent's uevent file shows after the kernel's own lines: the backend parent's (PDK_PARENT_ATTR).
 * An event sent to user space (its environment starts with ACTION=, which a read of the uevent file has
 * not) leaves MODALIAS out: udev would load a driver for hardware this machine does not have, while
 * libraries read it from the file (libdrm takes a platform device's "compatible" from it). */
static int pdk_parent_uevent(struct device *dev, struct kobj_uevent_env *env)
{
	struct pdk_parent_dev *p = dev_get_drvdata(dev);
	bool announced = env->envp_idx > 0 && !strncmp(env->envp[0], "ACTION=", 7);
	const char *line, *end;
	int err;

	if (!p)
		return 0;
	line = smp_load_acquire(&p->uevent);
	for (; line && *line; line = *end ? end + 1 : end) {
		end = strchrnul(line, '\n');
		if (announced && end - line >= 9 && !strncmp(line, "MODALIAS=", 9))
			continue;
		err = add_uevent_var(env, "%.*s", (int)(end - line), line);
		if (err)
			return err;
	}
	return 0;
}

static const struct device_type pdk_parent_type = {
	.uevent = pdk_parent_uevent,
};

/* The parent device of that name, made on first use in the class of `subsystem` (pdk_global_mutex held). */
static struct pdk_parent_dev *pdk_parent_get(const char *name, const char *subsystem)
{
	struct pdk_parent_dev *p;
	struct pdk_knode *n;
	struct device *dev;
	struct pdk_class *cls;
	int err;

	list_for_each_entry(p, &pdk_parents, entry) {
		if (!strcmp(p->name, name)) {
			if (subsystem[0] && strcmp(p->subsystem, subsystem))
				return ERR_PTR(-EINVAL);
			p->users++;
			return p;
		}
	}
	cls = pdk_class_get(subsystem);
	if (IS_ERR(cls))
		return ERR_CAST(cls);
	list_for_each_entry(n, &pdk_all_nodes, global_entry) {
		if (n->dev && n->cls == cls && !strcmp(dev_name(n->dev), name)) {
			pdk_class_put(cls);
			return ERR_PTR(-EEXIST);
		}
	}
	p = kzalloc(sizeof(*p), GFP_KERNEL);
	dev = kzalloc(sizeof(*dev), GFP_KERNEL);
	if (!p || !dev) {
		kfree(p);
		kfree(dev);
		pdk_class_put(cls);
		return ERR_PTR(-ENOMEM);
	}
	strscpy(p->name, name, sizeof(p->name));
	strscpy(p->subsystem, subsystem, sizeof(p->subsystem));
	INIT_LIST_HEAD(&p->attrs);
	INIT_LIST_HEAD(&p->glues);
	p->cls = cls;
	device_initialize(dev);
	dev->class = pdk_class_of(cls);
	dev->type = &pdk_parent_type;
	dev->release = pdk_device_release;
	dev_set_drvdata(dev, p);
	err = dev_set_name(dev, "%s", p->name);
	if (!err)
		err = device_add(dev);
	if (err) {
		put_device(dev);
		pdk_class_put(cls);
		kfree(p);
		return ERR_PTR(err);
	}
	p->dev = dev;
	p->users = 1;
	list_add(&p->entry, &pdk_parents);
	return p;
}

/* Names a parent device's own directory has: a node named so cannot sit in it. */
static bool pdk_parent_entry_name(const char *name)
{
	static const char *const names[] = { "uevent", "power", "subsystem", "device", "driver", "dev",
					     "of_node", "firmware_node", "waiting_for_supplier" };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(names); i++)
		if (!strcmp(name, names[i]))
			return true;
	return false;
}

static struct pdk_knode *pdk_control_node(struct pdk_control *c, u64 cookie)
{
	struct pdk_knode *n;

	list_for_each_entry(n, &c->nodes, control_entry)
		if (n->cookie == cookie)
			return n;
	return NULL;
}

/* A field of [A-Za-z0-9._-] or empty, NUL-terminated inside its array. */
static bool pdk_optional_component_ok(const char *s, size_t size)
{
	size_t len = strnlen(s, size);

	return len < size && (len == 0 || pdk_component_ok(s, len));
}

long pdk_set_parent(struct pdk_control *c, struct pdk_parent __user *arg)
{
	struct pdk_parent_dev *p = NULL, *old;
	struct pdk_parent want;
	struct pdk_knode *n;
	long err;

	if (copy_from_user(&want, arg, sizeof(want)))
		return -EFAULT;
	if (strnlen(want.parent, sizeof(want.parent)) == sizeof(want.parent))
		return -EINVAL;
	if (want.parent[0] && !pdk_device_name_ok(want.parent, strlen(want.parent)))
		return -EINVAL;
	if (!pdk_optional_component_ok(want.subsystem, sizeof(want.subsystem)) ||
	    !pdk_optional_component_ok(want.name, sizeof(want.name)))
		return -EINVAL;
	if (!want.parent[0])
		want.name[0] = 0;
	mutex_lock(&pdk_global_mutex);
	n = pdk_control_node(c, want.cookie);
	err = -ENOENT;
	if (!n)
		goto unlock;
	err = -ENODEV;
	if (!n->dev)
		goto unlock;   /* a node whose device could not be made again: only REMOVE_NODE is left */
	old = n->parent;
	err = 0;
	if (old ? !strcmp(old->name, want.parent) && (!want.subsystem[0] || !strcmp(old->subsystem, want.subsystem)) &&
		  !strcmp(n->name, want.name) : !want.parent[0])
		goto unlock;
	if (want.parent[0]) {
		err = -EINVAL;
		if (pdk_parent_entry_name(dev_name(n->dev)))
			goto unlock;
		p = pdk_parent_get(want.parent, want.subsystem);
		err = PTR_ERR_OR_ZERO(p);
		if (err)
			goto unlock;
		if (p != old) {
			err = pdk_glue_check(p, n->subsystem, want.name);
			if (err) {
				pdk_parent_put(p);
				goto unlock;
			}
		}
	}
	pdk_glue_unlink(n);
	if (p && p == old) {
		/* the same parent, another name: only the link changes */
		pdk_parent_put(p);
		err = pdk_glue_check(p, n->subsystem, want.name);
		if (!err)
			strscpy(n->name, want.name, sizeof(n->name));
		pdk_glue_link(n);
		goto unlock;
	}
	/* The device is made again under its new parent rather than moved: device_move leaves the old glue
	 * directory (/sys/devices/virtual/CLASS) behind, and a later load of the module could not make it
	 * again. Its files keep working (they hold the cdev); its /dev node is made again. */
	{
		char devname[PDK_MAX_PATH];
		struct device *dev;

		strscpy(devname, dev_name(n->dev), sizeof(devname));
		device_unregister(n->dev);
		dev = pdk_node_device(n, p ? p->dev : NULL, devname);
		if (IS_ERR(dev) && p) {
			/* back where it was, without a parent */
			pdk_parent_put(p);
			p = NULL;
			err = PTR_ERR(dev);
			dev = pdk_node_device(n, old ? old->dev : NULL, devname);
			if (!IS_ERR(dev)) {
				n->dev = dev;
				pdk_glue_link(n);
				goto unlock;
			}
		}
		if (IS_ERR(dev)) {
			/* no device: the node is removed, as PDK_REMOVE_NODE would */
			n->dev = NULL;
			err = PTR_ERR(dev);
			if (old)
				pdk_parent_put(old);
			n->parent = NULL;
			goto unlock;
		}
		n->dev = dev;
	}
	n->parent = p;
	strscpy(n->name, want.name, sizeof(n->name));
	if (old)
		pdk_parent_put(old);
	err = pdk_glue_link(n);
unlock:
	mutex_unlock(&pdk_global_mutex);
	return err;
}

static ssize_t pdk_parent_file_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct pdk_parent_file *f = container_of(attr, struct pdk_parent_file, attr);

	memcpy(buf, f->value, f->length);
	return f->length;
}

/* KEY=VALUE lines, KEY of [A-Z0-9_] (a uevent's own), VALUE without control bytes. */
static bool pdk_uevent_lines_ok(const u8 *s, size_t length)
{
	size_t i = 0, start;

	while (i < length) {
		start = i;
		while (i < length && ((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			i++;
		if (i == start || i == length || s[i] != '=')
			return false;
		for (i++; i < length && s[i] != '\n'; i++)
			if (s[i] < ' ' || s[i] == 0x7f)
				return false;
		if (i - start >= 2048)   /* add_uevent_var's own bound */
			return false;
		i++;
	}
	return true;
}

long pdk_parent_attr(struct pdk_control *c, struct pdk_parent_attr __user *arg)
{
	struct pdk_parent_attr *want;
	struct pdk_parent_file *f = NULL;
	struct pdk_parent_dev *p;
	struct pdk_knode *n;
	long err;

	want = memdup_user(arg, sizeof(*want));
	if (IS_ERR(want))
		return PTR_ERR(want);
	err = -EINVAL;
	if (!pdk_optional_component_ok(want->name, sizeof(want->name)) || !want->name[0] ||
	    want->length > PDK_MAX_ATTR || want->reserved)
		goto out;
	mutex_lock(&pdk_global_mutex);
	n = pdk_control_node(c, want->cookie);
	err = -ENOENT;
	if (!n || !n->parent)
		goto unlock;
	p = n->parent;
	if (!strcmp(want->name, "uevent")) {
		char *lines;

		err = -EEXIST;
		if (p->uevent)
			goto unlock;
		err = -EINVAL;
		if (!pdk_uevent_lines_ok(want->value, want->length))
			goto unlock;
		err = -ENOMEM;
		lines = kmemdup_nul(want->value, want->length, GFP_KERNEL);
		if (!lines)
			goto unlock;
		smp_store_release(&p->uevent, lines);
		err = 0;
		kobject_uevent(&p->dev->kobj, KOBJ_CHANGE);
		goto unlock;
	}
	err = -ENOSPC;
	if (p->attr_count >= PDK_MAX_PARENT_ATTRS)
		goto unlock;
	err = -EEXIST;
	if (pdk_parent_entry_name(want->name) || pdk_glue_find(p, want->name) || pdk_has_entry(&p->dev->kobj, want->name))
		goto unlock;
	err = -ENOMEM;
	f = kzalloc(struct_size(f, value, want->length), GFP_KERNEL);
	if (!f)
		goto unlock;
	strscpy(f->name, want->name, sizeof(f->name));
	memcpy(f->value, want->value, want->length);
	f->length = want->length;
	sysfs_attr_init(&f->attr.attr);
	f->attr.attr.name = f->name;
	f->attr.attr.mode = 0444;
	f->attr.show = pdk_parent_file_show;
	err = device_create_file(p->dev, &f->attr);
	if (err) {
		kfree(f);
		goto unlock;
	}
	list_add(&f->entry, &p->attrs);
	p->attr_count++;
unlock:
	mutex_unlock(&pdk_global_mutex);
out:
	kfree(want);
	return err;
}

void pdk_remove_all_nodes(struct pdk_control *c)
{
	struct pdk_knode *n, *tmp;

	mutex_lock(&pdk_global_mutex);
	list_for_each_entry_safe(n, tmp, &c->nodes, control_entry)
		pdk_node_remove_locked(n);
	mutex_unlock(&pdk_global_mutex);
}

int pdk_nodes_init(void)
{
	int err = alloc_chrdev_region(&pdk_pool_base, 0, PDK_POOL_MINORS, pdk_default.name);

	if (err)
		return err;
	pdk_default_class = class_create(THIS_MODULE, pdk_default.name);
	if (IS_ERR(pdk_default_class)) {
		unregister_chrdev_region(pdk_pool_base, PDK_POOL_MINORS);
		return PTR_ERR(pdk_default_class);
	}
	return 0;
}

void pdk_nodes_exit(void)
{
	class_destroy(pdk_default_class);
	unregister_chrdev_region(pdk_pool_base, PDK_POOL_MINORS);
	ida_destroy(&pdk_pool_ida);
}
