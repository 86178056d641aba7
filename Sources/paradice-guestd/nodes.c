/* The backend's devices as nodes of the module: the handshake's list (path, mode, rdev), patterns such
 * ("/dev/NAME*") expanded through the backend's listing, each added with PDK_ADD_NODE at the backend's
 * path under /dev (or where --map puts it) with the backend's number, or any free one when that number
 * is taken here. The node's sysfs class is the backend's own, read through its exported /sys tree. */
#define _GNU_SOURCE
#include "guestd.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define MAX_NODES 512
#define MAX_LISTED 4096   /* devices, listed or expanded, the daemon looks at: a backend cannot make it hoard */
static struct gd_node nodes[MAX_NODES];
static int node_count;
static int backend_has_sys;

struct gd_node *gd_node(uint64_t cookie) {
    if (cookie == 0 || cookie > (uint64_t)node_count) return NULL;
    return &nodes[cookie - 1];
}
int gd_node_count(void) { return node_count; }
struct gd_node *gd_node_at(int index) { return index >= 0 && index < node_count ? &nodes[index] : NULL; }

/* PD_READLINK / PD_LISTDIR of a backend path: the result, the reply kept in *reply (release it). */
static int64_t path_call(uint16_t op, const char *path, struct pd_frame *reply, const uint8_t **data, size_t *length) {
    struct pd_buffer b;
    pd_buffer_init(&b, strlen(path));
    pd_buffer_append(&b, path, strlen(path));
    *reply = (struct pd_frame){ .descriptor = -1 };
    int r = pd_conn_call(gd.connection, op, 0, 0, &b, reply);
    pd_buffer_free(&b);
    if (r != 0) return -1;
    return pd_reply_result(reply, data, length);
}

/* The backend's link target at `path` into out: 0, or -1. */
static int backend_readlink(const char *path, char *out, size_t size) {
    struct pd_frame reply;
    const uint8_t *data;
    size_t length;
    int64_t n = path_call(PD_READLINK, path, &reply, &data, &length);
    int ok = n >= 0 && (uint64_t)n <= length && (size_t)n < size;
    if (ok) { memcpy(out, data, (size_t)n); out[n] = 0; }
    pd_frame_release(gd.connection, &reply);
    return ok ? 0 : -1;
}

/* The names in a backend folder, one callback each. */
static int backend_list(const char *folder, void (*each)(const char *name, uint8_t type, void *context), void *context) {
    struct pd_frame reply;
    const uint8_t *data;
    size_t length;
    int64_t count = path_call(PD_LISTDIR, folder, &reply, &data, &length);
    if (count < 0 || (uint64_t)count > length / sizeof(struct pd_dirent)) {
        int e = count < 0 ? errno : EPROTO;
        pd_frame_release(gd.connection, &reply);
        errno = e;
        return -1;
    }
    const uint8_t *p = data, *end = data + length;
    for (int64_t i = 0; i < count && (size_t)(end - p) >= sizeof(struct pd_dirent); i++) {
        struct pd_dirent e;
        memcpy(&e, p, sizeof e);
        p += sizeof e;
        size_t padded = ((size_t)e.name_length + 7) / 8 * 8;
        if ((size_t)(end - p) < padded) break;   /* a name past the reply */
        char name[256];
        if (e.name_length > 0 && e.name_length < sizeof name && !memchr(p, 0, e.name_length)) {
            memcpy(name, p, e.name_length);
            name[e.name_length] = 0;
            each(name, e.type, context);
        }
        p += padded;
    }
    pd_frame_release(gd.connection, &reply);
    return 0;
}

static const char *basename_of(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The backend's sysfs class of char device M:m (the last component of its subsystem link), or "". */
static void backend_subsystem(uint32_t major, uint32_t minor, char *out, size_t size) {
    out[0] = 0;
    if (!backend_has_sys) return;
    char path[64], target[512];
    snprintf(path, sizeof path, "/sys/dev/char/%u:%u/subsystem", major, minor);
    if (backend_readlink(path, target, sizeof target) != 0) return;
    snprintf(out, size, "%s", basename_of(target));
}

/* The backend's parent device of char device M:m: its name, "" for none (the last component of
 * /sys/dev/char/M:m/device, a class device's; else the folder that holds the device itself, a bus
 * device's), its own subsystem (the last component of its subsystem link, "" when unknown) and the node's
 * own name there ("card0"). Nodes of one parent sit side by side under it, as a driver's nodes do, where
 * libraries look for a node's siblings. */
static void backend_parent(uint32_t major, uint32_t minor, struct pdk_parent *out) {
    out->parent[0] = out->subsystem[0] = out->name[0] = 0;
    if (!backend_has_sys) return;
    char path[96], target[512], link[640], found[512];
    snprintf(path, sizeof path, "/sys/dev/char/%u:%u", major, minor);
    if (backend_readlink(path, target, sizeof target) != 0) return;
    char *last = strrchr(target, '/');
    if (!last) return;
    char own[PDK_MAX_NAME];
    snprintf(own, sizeof own, "%s", last + 1);
    *last = 0;   /* target: the folder that holds the device */
    snprintf(path, sizeof path, "/sys/dev/char/%u:%u/device", major, minor);
    if (backend_readlink(path, found, sizeof found) == 0) {
        snprintf(out->parent, sizeof out->parent, "%s", basename_of(found));
        snprintf(link, sizeof link, "%s/subsystem", path);
    } else {
        /* a virtual device ("…/devices/virtual/sound/seq") has no parent */
        if ((!strstr(target, "/devices/") && strncmp(target, "../../devices/", 14) != 0) || strstr(target, "/devices/virtual")) return;
        snprintf(out->parent, sizeof out->parent, "%s", basename_of(target));
        if (strcmp(out->parent, "devices") == 0 || strcmp(out->parent, "virtual") == 0 || strcmp(out->parent, "..") == 0) {
            out->parent[0] = 0;
            return;
        }
        snprintf(link, sizeof link, "/sys/dev/char/%s/subsystem", target);
    }
    if (backend_readlink(link, found, sizeof found) == 0) snprintf(out->subsystem, sizeof out->subsystem, "%s", basename_of(found));
    /* In a class folder of the parent ("…/0000:00:02.0/drm/card0"), not in the parent itself ("…/vivid.0/media0"). */
    if (strcmp(basename_of(target), out->parent) != 0) snprintf(out->name, sizeof out->name, "%s", own);
}

/* Up to `size` bytes of a backend file into `into`: the count, or -1 (also when the file holds more). */
static ssize_t backend_read_file(const char *path, uint8_t *into, size_t size) {
    struct pd_stat st;
    int broken;
    int64_t handle = pd_file_open(gd.connection, path, strlen(path), O_RDONLY | O_NONBLOCK | O_NOCTTY, 0, &st, &broken);
    if (handle < 0) return -1;
    size_t got = 0;
    uint8_t spare;
    for (;;) {
        int64_t n = got < size ? pd_file_read(gd.connection, (uint32_t)handle, into + got, size - got, 0, 0, &broken)
                               : pd_file_read(gd.connection, (uint32_t)handle, &spare, 1, 0, 0, &broken);
        if (n < 0 || (got == size && n > 0)) { got = (size_t)-1; break; }
        if (n == 0) break;
        got += (size_t)n;
    }
    (void)pd_file_simple(gd.connection, (uint32_t)handle, PD_CLOSE, NULL, 0, NULL, 0, &broken);
    return (ssize_t)got;
}

/* The backend's uevent lines this parent may show: not DRIVER (no driver is bound here; the module keeps
 * MODALIAS out of the events it sends). */
static size_t keep_uevent_lines(uint8_t *p, size_t n) {
    size_t out = 0;
    for (size_t i = 0; i < n;) {
        size_t end = i;
        while (end < n && p[end] != '\n') end++;
        size_t length = end - i;
        int dropped = length >= 7 && memcmp(p + i, "DRIVER=", 7) == 0;
        if (!dropped && length > 0) {
            if (out > 0) p[out++] = '\n';
            memmove(p + out, p + i, length);
            out += length;
        }
        i = end + 1;
    }
    return out;
}

struct parent_files { uint64_t cookie; const char *folder; int count; };

static void mirror_parent_file(const char *name, uint8_t type, void *context) {
    struct parent_files *x = context;
    if (type != DT_REG) return;
    struct pdk_parent_attr *a = calloc(1, sizeof *a);
    if (!a) return;
    char path[640];
    snprintf(path, sizeof path, "%s/%s", x->folder, name);
    ssize_t n = strlen(name) < sizeof a->name ? backend_read_file(path, a->value, sizeof a->value) : -1;
    if (n >= 0) {
        a->cookie = x->cookie;
        snprintf(a->name, sizeof a->name, "%s", name);
        a->length = (uint32_t)(strcmp(name, "uevent") == 0 ? keep_uevent_lines(a->value, (size_t)n) : (size_t)n);
        if (ioctl(gd.control, PDK_PARENT_ATTR, a) == 0) x->count++;
        else if (errno != EEXIST) gd_log("parent file %s: %m", path);
    }
    free(a);
}

/* The backend parent's own files (PCI vendor, device, config, its uevent's variables) copied into the
 * parent made here, once per parent: what libdrm reads to tell a device's bus and ids. Its folders (power,
 * the class folders) are not copied. */
static void mirror_parent(const struct pdk_parent *parent, uint32_t major, uint32_t minor) {
    static char done[64][PDK_MAX_NAME];
    static int done_count;
    for (int i = 0; i < done_count; i++) if (strcmp(done[i], parent->parent) == 0) return;
    if (done_count == (int)(sizeof done / sizeof done[0])) return;
    snprintf(done[done_count++], PDK_MAX_NAME, "%s", parent->parent);
    char folder[96];
    snprintf(folder, sizeof folder, "/sys/dev/char/%u:%u/device", major, minor);
    struct parent_files x = { parent->cookie, folder, 0 };
    if (backend_list(folder, mirror_parent_file, &x) != 0) { gd_log("%s: the backend lists no %s (%m)", parent->parent, folder); return; }
    gd_log("parent %s (%s): %d files of the backend's", parent->parent, parent->subsystem[0] ? parent->subsystem : "no subsystem", x.count);
}

/* ---- patterns ---- */

/* The backend's char devices by kernel name (its /sys/dev/char links' last component), read once. */
struct sys_device { char name[64]; uint32_t major, minor; };
static struct sys_device *sys_devices;
static int sys_device_count, sys_devices_read;

static void add_sys_device(const char *name, uint8_t type, void *unused) {
    (void)type;
    (void)unused;
    unsigned major, minor;
    char path[64], target[512];
    if (sscanf(name, "%u:%u", &major, &minor) != 2 || sys_device_count >= MAX_LISTED) return;
    snprintf(path, sizeof path, "/sys/dev/char/%s", name);
    if (backend_readlink(path, target, sizeof target) != 0) return;
    struct sys_device *grown = realloc(sys_devices, sizeof *grown * (size_t)(sys_device_count + 1));
    if (!grown) return;
    sys_devices = grown;
    struct sys_device *d = &sys_devices[sys_device_count++];
    snprintf(d->name, sizeof d->name, "%s", basename_of(target));
    d->major = major;
    d->minor = minor;
}

/* The number of backend node `path` (mode and rdev): from the backend's sysfs when it exports it (no
 * open of the device), else from an open of the node. 0, or -1. */
static int backend_number(const char *path, uint32_t *mode, uint64_t *rdev) {
    if (backend_has_sys) {
        if (!sys_devices_read) {
            sys_devices_read = 1;
            (void)backend_list("/sys/dev/char", add_sys_device, NULL);
        }
        for (int i = 0; i < sys_device_count; i++) {
            if (strcmp(sys_devices[i].name, basename_of(path)) != 0) continue;
            *mode = S_IFCHR | 0660;
            *rdev = makedev(sys_devices[i].major, sys_devices[i].minor);
            return 0;
        }
    }
    struct pd_stat st;
    int broken;
    int64_t handle = pd_file_open(gd.connection, path, strlen(path), O_RDONLY | O_NONBLOCK | O_NOCTTY, 0, &st, &broken);
    if (handle < 0) return -1;
    (void)pd_file_simple(gd.connection, (uint32_t)handle, PD_CLOSE, NULL, 0, NULL, 0, &broken);
    *mode = st.mode;
    *rdev = st.rdev;
    return 0;
}

/* ---- registration ---- */

struct wanted { char backend[256]; char class_name[64]; uint32_t mode; uint64_t rdev; };
static struct wanted *wanted;
static int wanted_count;

static void want(const char *path, const char *class_name, uint32_t mode, uint64_t rdev) {
    for (int i = 0; i < wanted_count; i++) if (strcmp(wanted[i].backend, path) == 0) return;   /* listed twice */
    if (wanted_count >= MAX_LISTED) return;
    struct wanted *grown = realloc(wanted, sizeof *grown * (size_t)(wanted_count + 1));
    if (!grown) return;
    wanted = grown;
    struct wanted *w = &wanted[wanted_count++];
    snprintf(w->backend, sizeof w->backend, "%s", path);
    snprintf(w->class_name, sizeof w->class_name, "%s", class_name);
    w->mode = mode;
    w->rdev = rdev;
}

struct expansion { const char *pattern, *folder, *class_name; };

static void expand_entry(const char *name, uint8_t type, void *context) {
    struct expansion *x = context;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", x->folder, name);
    if (type == DT_DIR || fnmatch(x->pattern, path, FNM_PATHNAME) != 0) return;
    uint32_t mode;
    uint64_t rdev;
    if (backend_number(path, &mode, &rdev) != 0) { gd_log("%s: no number from the backend (%m): skipped", path); return; }
    want(path, x->class_name, mode, rdev);
}

static void expand(const char *pattern, const char *class_name) {
    char folder[256];
    snprintf(folder, sizeof folder, "%s", pattern);
    char *slash = strrchr(folder, '/');
    if (!slash || strcspn(folder, "*?[") < (size_t)(slash - folder)) {
        gd_log("%s: only the last component of a pattern may hold wildcards: skipped", pattern);
        return;
    }
    *slash = 0;
    struct expansion x = { pattern, folder, class_name };
    if (backend_list(folder, expand_entry, &x) != 0) gd_log("%s: the backend lists no %s (%m)", pattern, folder);
}

/* A node path under /dev the module accepts: relative components of [A-Za-z0-9._-], no "." or "..". */
static int valid_node_path(const char *p) {
    if (!*p || strlen(p) >= PDK_MAX_PATH) return 0;
    for (const char *c = p; *c; c++)
        if (!(*c == '/' || *c == '.' || *c == '_' || *c == '-' || (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z')
              || (*c >= 'A' && *c <= 'Z')))
            return 0;
    char copy[PDK_MAX_PATH];
    snprintf(copy, sizeof copy, "%s", p);
    for (char *save = NULL, *part = strtok_r(copy, "/", &save); part; part = strtok_r(NULL, "/", &save))
        if (strcmp(part, ".") == 0 || strcmp(part, "..") == 0) return 0;
    return p[0] != '/' && p[strlen(p) - 1] != '/' && !strstr(p, "//");
}

static void add_node(const struct wanted *w, const struct gd_mapping *maps, int map_count) {
    const char *guest = NULL;
    int mapped = 0;
    for (int i = 0; i < map_count; i++)
        if (strcmp(maps[i].backend, w->backend) == 0) { guest = maps[i].guest; mapped = 1; break; }
    if (!guest) guest = w->backend;
    if (strncmp(guest, "/dev/", 5) != 0) { gd_log("%s: not under /dev: skipped", guest); return; }
    const char *relative = guest + 5;
    if (!valid_node_path(relative)) { gd_log("%s: not a node path the module takes: skipped", guest); return; }
    struct stat existing;
    if (lstat(guest, &existing) == 0) {
        gd_log("%s exists here: %s skipped%s", guest, w->backend, mapped ? "" : " (--map it elsewhere)");
        return;
    }
    if (node_count == MAX_NODES) { gd_log("%s: more than %d nodes: skipped", w->backend, MAX_NODES); return; }
    struct gd_node *n = &nodes[node_count];
    memset(n, 0, sizeof *n);
    n->cookie = (uint64_t)node_count + 1;
    n->wanted_major = major(w->rdev);
    n->wanted_minor = minor(w->rdev);
    snprintf(n->guest, sizeof n->guest, "%s", relative);
    snprintf(n->backend, sizeof n->backend, "%s", w->backend);
    snprintf(n->class_name, sizeof n->class_name, "%s", w->class_name);
    backend_subsystem(n->wanted_major, n->wanted_minor, n->subsystem, sizeof n->subsystem);
    struct pdk_node k = { .cookie = n->cookie, .major = n->wanted_major, .minor = n->wanted_minor,
                          .mode = w->mode & 0777, .uid = 0, .gid = 0 };
    snprintf(k.path, sizeof k.path, "%s", n->guest);
    snprintf(k.subsystem, sizeof k.subsystem, "%s", n->subsystem);
    char here[64];
    snprintf(here, sizeof here, "/sys/dev/char/%u:%u", k.major, k.minor);
    if (access(here, F_OK) == 0) k.flags |= PDK_NODE_ANY_NUMBER;
    int r = ioctl(gd.control, PDK_ADD_NODE, &k);
    if (r != 0 && errno == EBUSY && !(k.flags & PDK_NODE_ANY_NUMBER)) {
        k.flags |= PDK_NODE_ANY_NUMBER;
        k.major = n->wanted_major;
        k.minor = n->wanted_minor;
        r = ioctl(gd.control, PDK_ADD_NODE, &k);
    }
    if (r != 0) { gd_log("%s: PDK_ADD_NODE: %m: skipped", guest); return; }
    n->major = k.major;
    n->minor = k.minor;
    node_count++;
    struct pdk_parent parent = { .cookie = n->cookie };
    backend_parent(n->wanted_major, n->wanted_minor, &parent);
    if (parent.parent[0]) {
        if (ioctl(gd.control, PDK_SET_PARENT, &parent) != 0) gd_log("%s: parent device %s: %m", guest, parent.parent);
        else if (parent.subsystem[0]) mirror_parent(&parent, n->wanted_major, n->wanted_minor);
    }
    if (k.major != n->wanted_major || k.minor != n->wanted_minor)
        gd_log("node %s = %s (%s) at %u:%u: %u:%u is taken here", guest, w->backend,
               n->subsystem[0] ? n->subsystem : "no class", k.major, k.minor, n->wanted_major, n->wanted_minor);
    else
        gd_log("node %s = %s (%s) at %u:%u", guest, w->backend, n->subsystem[0] ? n->subsystem : "no class",
               k.major, k.minor);
}

int gd_register_nodes(const struct pd_frame *hello, const struct gd_mapping *maps, int map_count) {
    struct pd_hello_reply hr;
    memcpy(&hr, hello->body, sizeof hr);   /* checked by pd_conn_start */
    if (hr.device_count > MAX_LISTED) {
        gd_log("the backend lists %u devices: only the first %d are looked at", hr.device_count, MAX_LISTED);
        hr.device_count = MAX_LISTED;
    }
    const uint8_t *p = hello->body + sizeof hr;
    struct entry { char path[256], class_name[64]; uint32_t mode; uint64_t rdev; } *list = calloc(hr.device_count + 1, sizeof *list);
    if (!list) return -1;
    for (uint32_t i = 0; i < hr.device_count; i++) {
        struct pd_device d;
        memcpy(&d, p, sizeof d);
        p += sizeof d;
        struct entry *e = &list[i];
        snprintf(e->path, sizeof e->path, "%.*s", (int)(d.path_length < 255 ? d.path_length : 255), (const char *)p);
        snprintf(e->class_name, sizeof e->class_name, "%.*s", (int)(d.class_length < 63 ? d.class_length : 63),
                 (const char *)p + d.path_length);
        e->mode = d.mode;
        e->rdev = d.rdev;
        p += ((uint64_t)d.path_length + d.class_length + 7) / 8 * 8;
        if (strcmp(e->path, "/sys/") == 0) backend_has_sys = 1;
    }
    for (uint32_t i = 0; i < hr.device_count; i++) {
        struct entry *e = &list[i];
        size_t n = strlen(e->path);
        if (n == 0 || e->path[n - 1] == '/') continue;                  /* a tree, not a node */
        if (S_ISCHR(e->mode)) want(e->path, e->class_name, e->mode, e->rdev);
        else if (e->mode == 0 && strcspn(e->path, "*?[") < n) expand(e->path, e->class_name);
        else if (e->mode == 0) gd_log("%s: the backend has no such node now: skipped", e->path);
        else gd_log("%s: not a character device: skipped", e->path);
    }
    free(list);
    for (int i = 0; i < wanted_count; i++) add_node(&wanted[i], maps, map_count);
    for (int i = 0; i < map_count; i++) {
        int found = 0;
        for (int k = 0; k < wanted_count; k++) found |= strcmp(wanted[k].backend, maps[i].backend) == 0;
        if (!found) gd_log("--map %s=%s: the backend exports no %s", maps[i].guest, maps[i].backend, maps[i].backend);
    }
    free(wanted);
    wanted = NULL;
    wanted_count = 0;
    free(sys_devices);
    sys_devices = NULL;
    return 0;
}
