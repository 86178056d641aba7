// SPDX-License-Identifier: GPL-2.0
/*
 * area.c — mmap of forwarded nodes: the module's pages (an "area", vmalloc_user) are mapped into the
 * caller and, at the area's offset on the control file, into the daemon, which fills them before it
 * answers PDK_OP_MMAP. When the caller's last mapping of an area goes the daemon gets PDK_OP_MUNMAP;
 * the pages are freed when the daemon's mappings are gone too.
 *
 * When the daemon answers PDK_MMAP_DEVICE (its backend is on this machine and shares the device's open
 * file), the caller maps the device itself, as dma_buf_mmap does: the vma becomes the device file's and
 * its driver's mmap decides, with the caller's offset, length and flags. No area, no mirror, no MUNMAP:
 * the vma holds the device file, so munmap, fork and close keep the kernel's own semantics.
 */
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/vmalloc.h>
#include <linux/file.h>
#include "internal.h"

static void pdk_area_release(struct kref *kref)
{
	struct pdk_area *a = container_of(kref, struct pdk_area, kref);

	vfree(a->pages);
	pdk_control_put(a->control);
	kfree(a);
}

static void pdk_area_put(struct pdk_area *a)
{
	kref_put(&a->kref, pdk_area_release);
}

/* No new daemon mapping of it (control->lock held). */
static void pdk_area_unlist_locked(struct pdk_area *a)
{
	if (a->listed) {
		list_del_init(&a->control_entry);
		a->listed = false;
	}
}

/* The caller's mappings together hold one reference; fork and splits add vmas, munmap removes them. */
static void pdk_caller_vm_open(struct vm_area_struct *vma)
{
	struct pdk_area *a = vma->vm_private_data;

	spin_lock(&a->control->lock);
	a->caller_maps++;
	spin_unlock(&a->control->lock);
}

static void pdk_caller_vm_close(struct vm_area_struct *vma)
{
	struct pdk_area *a = vma->vm_private_data;
	struct pdk_control *c = a->control;
	bool last;

	spin_lock(&c->lock);
	last = --a->caller_maps == 0;
	if (last)
		pdk_area_unlist_locked(a);
	spin_unlock(&c->lock);
	if (!last)
		return;
	if (vma->vm_file && vma->vm_file->f_op == &pdk_file_fops)
		pdk_send_oneway(c, vma->vm_file->private_data, PDK_OP_MUNMAP, 0, a->offset);
	pdk_area_put(a);
}

static const struct vm_operations_struct pdk_caller_vm_ops = {
	.open = pdk_caller_vm_open,
	.close = pdk_caller_vm_close,
};

static void pdk_daemon_vm_open(struct vm_area_struct *vma)
{
	struct pdk_area *a = vma->vm_private_data;

	kref_get(&a->kref);
}

static void pdk_daemon_vm_close(struct vm_area_struct *vma)
{
	pdk_area_put(vma->vm_private_data);
}

static const struct vm_operations_struct pdk_daemon_vm_ops = {
	.open = pdk_daemon_vm_open,
	.close = pdk_daemon_vm_close,
};

/* The caller's mapping becomes the device's own (the area was never mapped by the daemon). */
static int pdk_map_device(struct vm_area_struct *vma, struct file *device)
{
	int res;

	if (!(device->f_mode & FMODE_WRITE) && (vma->vm_flags & VM_SHARED)) {
		if (vma->vm_flags & VM_WRITE)
			res = -EACCES;   /* as the device's own file would answer */
		else {
			vma->vm_flags &= ~VM_MAYWRITE;
			res = 0;
		}
		if (res) {
			fput(device);
			return res;
		}
	}
	vma_set_file(vma, device);   /* the vma's reference; a failed mmap's is dropped by the mm */
	res = call_mmap(device, vma);
	fput(device);
	return res;
}

int pdk_file_mmap(struct pdk_file *f, struct vm_area_struct *vma)
{
	struct pdk_control *c = f->control;
	unsigned long len = vma->vm_end - vma->vm_start;
	struct file *device = NULL;
	struct pdk_area *a;
	u64 prot = 0;
	long res;

	if (READ_ONCE(c->dead) || READ_ONCE(f->node->removed))
		return -EIO;
	if (len > PDK_MAX_AREA)
		return -ENOMEM;
	a = kzalloc(sizeof(*a), GFP_KERNEL);
	if (!a)
		return -ENOMEM;
	a->pages = vmalloc_user(len);
	if (!a->pages) {
		kfree(a);
		return -ENOMEM;
	}
	kref_init(&a->kref);   /* the caller side's */
	a->size = len;
	INIT_LIST_HEAD(&a->control_entry);
	pdk_control_get(c);
	a->control = c;
	spin_lock(&c->lock);
	a->offset = c->next_area_offset;
	c->next_area_offset += len + PAGE_SIZE;   /* never reused, never adjacent */
	if (!c->dead) {
		list_add_tail(&a->control_entry, &c->areas);
		a->listed = true;
	}
	spin_unlock(&c->lock);

	if (vma->vm_flags & VM_READ)
		prot |= PROT_READ;
	if (vma->vm_flags & VM_WRITE)
		prot |= PROT_WRITE;
	if (vma->vm_flags & VM_EXEC)
		prot |= PROT_EXEC;
	res = pdk_call_device(f, PDK_OP_MMAP, len, (u64)vma->vm_pgoff << PAGE_SHIFT, prot,
			      (vma->vm_flags & VM_SHARED) ? MAP_SHARED : MAP_PRIVATE, a->offset, &device);
	if (res == PDK_MMAP_DEVICE && device) {
		spin_lock(&c->lock);
		pdk_area_unlist_locked(a);
		spin_unlock(&c->lock);
		pdk_area_put(a);
		return pdk_map_device(vma, device);
	}
	if (device)
		fput(device);
	if (res > 0)
		res = -EIO;
	if (res == 0)
		res = remap_vmalloc_range(vma, a->pages, 0);
	if (res) {
		spin_lock(&c->lock);
		pdk_area_unlist_locked(a);
		spin_unlock(&c->lock);
		/* the daemon may have mapped it (a failed reply, a caller killed meanwhile): it unmaps it */
		pdk_send_oneway(c, f, PDK_OP_MUNMAP, 0, a->offset);
		pdk_area_put(a);
		return res;
	}
	spin_lock(&c->lock);
	a->caller_maps = 1;
	spin_unlock(&c->lock);
	vma->vm_private_data = a;
	vma->vm_ops = &pdk_caller_vm_ops;
	return 0;
}

/* The daemon maps an area of its own control file: MAP_SHARED, within the area. */
int pdk_control_mmap(struct pdk_control *c, struct vm_area_struct *vma)
{
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	unsigned long len = vma->vm_end - vma->vm_start;
	struct pdk_area *a, *found = NULL;
	int err;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	spin_lock(&c->lock);
	list_for_each_entry(a, &c->areas, control_entry) {
		if (off >= a->offset && off - a->offset < a->size && len <= a->size - (off - a->offset)) {
			kref_get(&a->kref);
			found = a;
			break;
		}
	}
	spin_unlock(&c->lock);
	if (!found)
		return -EINVAL;
	err = remap_vmalloc_range(vma, found->pages, (off - found->offset) >> PAGE_SHIFT);
	if (err) {
		pdk_area_put(found);
		return err;
	}
	vma->vm_private_data = found;
	vma->vm_ops = &pdk_daemon_vm_ops;
	return 0;
}
