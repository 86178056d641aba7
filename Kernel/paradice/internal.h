/* SPDX-License-Identifier: GPL-2.0 */
/*
 * internal.h — the Paradice module's shared types. The module knows no device class: it forwards the
 * file operations of the nodes a daemon adds (see paradice_kernel.h) to that daemon.
 *
 * Objects and their lifetimes:
 *  - pdk_control: one per open of /dev/paradice (the daemon's control file). Refcounted: the control
 *    file, every forwarded open file and every area hold a reference. `lock` guards its lists and
 *    every request's state; it is a spinlock, so nothing under it copies user memory or sleeps.
 *  - pdk_node: a device node the daemon added; refcounted by the control (while added) and its files.
 *  - pdk_file: one per forwarded open file (file->private_data).
 *  - pdk_req: one request; a waited one belongs to its waiting caller, others to the queue.
 *  - pdk_area: pages of one caller mmap, shared with the daemon's mapping of the control file.
 */
#ifndef PDK_INTERNAL_H
#define PDK_INTERNAL_H

#include <linux/types.h>
#include <linux/list.h>
#include <linux/kref.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/completion.h>
#include <linux/fs.h>
#include <linux/poll.h>
#include <linux/cdev.h>
#include <linux/device.h>
#include "paradice_kernel.h"

#define PDK_MAX_NODES_PER_CONTROL 1024
#define PDK_MAX_AREA (512ul << 20)
/* The events a readiness may hold (PDK_NOTIFY, PDK_OP_POLL's result). */
#define PDK_POLL_BITS (EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLERR | EPOLLHUP | EPOLLNVAL | EPOLLRDNORM | \
		       EPOLLRDBAND | EPOLLWRNORM | EPOLLWRBAND | EPOLLMSG | EPOLLRDHUP)

struct pdk_control {
	struct kref kref;
	spinlock_t lock;
	bool dead;                   /* the control file was released */
	struct list_head pending;    /* pdk_req.queue_entry: not read by the daemon yet */
	struct list_head inflight;   /* pdk_req.inflight_entry: requests that expect a reply */
	struct list_head files;      /* pdk_file.control_entry */
	struct list_head areas;      /* pdk_area.control_entry: areas the daemon may still map */
	wait_queue_head_t readq;     /* the daemon's read/poll */
	u64 next_area_offset;
	/* under pdk_global_mutex */
	struct list_head nodes;      /* pdk_node.control_entry */
	unsigned int node_count;
};

struct pdk_class;
struct pdk_parent_dev;
struct pdk_glue;

struct pdk_knode {
	struct kref kref;
	struct pdk_control *control;
	struct list_head control_entry;
	struct list_head global_entry;
	u64 cookie;
	dev_t devt;
	bool pooled;                 /* devt is a minor of the module's pool, not a region of its own */
	bool removed;                /* READ_ONCE: its files fail with EIO */
	umode_t mode;
	kuid_t uid;
	kgid_t gid;
	struct cdev *cdev;
	struct device *dev;
	struct pdk_class *cls;
	struct pdk_parent_dev *parent;   /* PDK_SET_PARENT's, or NULL */
	struct pdk_glue *glue;           /* the parent's SUBSYSTEM folder holding the node's NAME link, or NULL */
	char path[PDK_MAX_PATH];
	char subsystem[PDK_MAX_NAME];    /* PDK_ADD_NODE's */
	char name[PDK_MAX_NAME];         /* PDK_SET_PARENT's: the node's name on the backend, or "" */
};

struct pdk_file {
	struct pdk_control *control;
	struct pdk_knode *node;
	struct file *file;
	struct list_head control_entry;   /* on control->files once open */
	u64 id;
	u64 handle;
	bool seekable;
	/* under control->lock */
	bool ready_valid;            /* revents is a trusted PDK_NOTIFY's, not made stale since */
	u32 revents;
	bool watch_outstanding;      /* a PDK_OP_WATCH was sent and no PDK_NOTIFY came since */
	u32 watching;                /* the events the outstanding WATCHes asked for (the last one names all) */
	u64 calls_done;              /* forwarded reads, writes and ioctls that completed */
	u64 watch_calls_done;        /* calls_done when the first outstanding WATCH was sent */
	u64 watches_sent;            /* WATCHes and POLLs sent, to tell whether one went during a POLL */
	wait_queue_head_t pollq;
	struct fasync_struct *fasync;
};

enum pdk_req_state {
	PDK_REQ_QUEUED = 0,          /* on control->pending */
	PDK_REQ_SENT,                /* read by the daemon, waiting for the reply */
	PDK_REQ_ANSWERED,
	PDK_REQ_ENDED,               /* its caller gave up (fatal signal); kept only to undo a late OPEN */
};

struct pdk_req {
	struct pdk_control *control;
	struct pdk_knode *node;       /* for PDK_NEW_FILE; a reference while the request lives */
	struct list_head queue_entry;
	struct list_head inflight_entry;
	struct pdk_request msg;
	enum pdk_req_state state;
	bool expects_reply;
	bool orphan;                 /* expects a reply nobody waits for (a RELEASE the module sent itself) */
	bool interrupted;            /* PDK_OP_INTERRUPT was queued for it */
	bool accessible;             /* PDK_ACCESS may run in its caller's context */
	s64 result;
	u64 value;
	struct file *device;         /* PDK_MMAP_DEVICE's file (a reference), until the caller takes it */
	wait_queue_head_t wq;
	struct list_head accesses;   /* pdk_access_work.entry, for the caller to run */
};

struct pdk_access_work {
	struct list_head entry;
	refcount_t refs;
	u32 kind;
	u64 address;
	u64 length;
	u64 value;
	void *buf;
	int err;
	struct completion done;
};

struct pdk_area {
	struct kref kref;            /* one per mapping (caller side as a whole counts once) + setup */
	struct pdk_control *control;
	struct list_head control_entry;
	bool listed;
	void *pages;
	unsigned long size;          /* page aligned */
	u64 offset;                  /* on the control file */
	int caller_maps;             /* caller vmas; under control->lock */
};

extern struct mutex pdk_global_mutex;
extern struct class *pdk_default_class;
extern struct device *pdk_control_device;
extern const struct file_operations pdk_file_fops;

/* module.c */
void pdk_control_put(struct pdk_control *c);
static inline void pdk_control_get(struct pdk_control *c) { kref_get(&c->kref); }

/* node.c */
long pdk_add_node(struct pdk_control *c, struct pdk_node __user *arg);
long pdk_remove_node(struct pdk_control *c, u64 __user *arg);
long pdk_set_parent(struct pdk_control *c, struct pdk_parent __user *arg);
long pdk_parent_attr(struct pdk_control *c, struct pdk_parent_attr __user *arg);
void pdk_remove_all_nodes(struct pdk_control *c);
struct pdk_knode *pdk_node_lookup(dev_t devt);
void pdk_node_put(struct pdk_knode *n);
static inline void pdk_node_get(struct pdk_knode *n) { kref_get(&n->kref); }
int pdk_nodes_init(void);
void pdk_nodes_exit(void);

/* request.c */
struct pdk_req *pdk_req_new(struct pdk_control *c, struct pdk_file *f, u32 op, bool waited);
void pdk_req_free(struct pdk_req *r);
struct pdk_req *pdk_find_waiting_locked(struct pdk_control *c, u64 id);
void pdk_file_readiness_locked(struct pdk_file *f, __poll_t revents);
void pdk_file_notified_locked(struct pdk_file *f, __poll_t revents);
long pdk_call(struct pdk_file *f, u32 op, u64 a0, u64 a1, u64 a2, u64 a3, u64 area, u64 *value);
/* pdk_call that also hands over the file of a PDK_MMAP_DEVICE reply (*device: a reference, or NULL) */
long pdk_call_device(struct pdk_file *f, u32 op, u64 a0, u64 a1, u64 a2, u64 a3, u64 area,
		     struct file **device);
void pdk_send_release(struct pdk_control *c, struct pdk_file *f, u64 handle, u64 cookie);
bool pdk_send_oneway(struct pdk_control *c, struct pdk_file *f, u32 op, u64 a0, u64 area);
ssize_t pdk_control_read(struct file *file, char __user *buf, size_t count, loff_t *ppos);
__poll_t pdk_control_poll(struct file *file, struct poll_table_struct *wait);
long pdk_reply(struct pdk_control *c, struct pdk_reply __user *arg);
long pdk_notify(struct pdk_control *c, struct pdk_notify __user *arg);
void pdk_control_shutdown(struct pdk_control *c);
long pdk_sanitize_result(s64 result);

/* access.c */
long pdk_access(struct pdk_control *c, struct pdk_access __user *arg);
void pdk_run_accesses(struct pdk_req *r);
void pdk_drain_accesses_locked(struct pdk_req *r);

/* file.c */
struct pdk_file *pdk_file_new(struct pdk_control *c, struct pdk_knode *n);
void pdk_file_free(struct pdk_file *f);
void pdk_file_forget_readiness(struct pdk_file *f);
void pdk_files_hangup_locked(struct pdk_control *c, struct pdk_knode *n);

/* area.c */
int pdk_file_mmap(struct pdk_file *f, struct vm_area_struct *vma);
int pdk_control_mmap(struct pdk_control *c, struct vm_area_struct *vma);

#endif
