/* readlink and directory listings inside a tree the backend exports (sysfs): what libraries read to
 * identify a device. A forwarded listing is a DIR of our own, recognised by its address. */
#include "shim.h"
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct remote_dir {
    uint32_t magic;
    int count, next;
    struct dirent64 *entries;
    struct dirent *plain;      /* readdir's view of the current entry */
};

#define REMOTE_DIR_MAGIC 0x50445244u
#define MAX_REMOTE_DIRS 64
static struct remote_dir *open_dirs[MAX_REMOTE_DIRS];
static pthread_mutex_t dirs_lock = PTHREAD_MUTEX_INITIALIZER;

static struct remote_dir *remote(void *d) {
    struct remote_dir *found = NULL;
    pthread_mutex_lock(&dirs_lock);
    for (int i = 0; i < MAX_REMOTE_DIRS; i++) if (open_dirs[i] && (void *)open_dirs[i] == d) found = open_dirs[i];
    pthread_mutex_unlock(&dirs_lock);
    return found;
}

static int64_t path_call(uint16_t op, const char *path, struct pd_frame *reply, const uint8_t **data, size_t *length) {
    struct pd_buffer b;
    pd_buffer_init(&b, strlen(path));
    pd_buffer_append(&b, path, strlen(path));
    int r = pd_call(op, 0, 0, &b, reply);
    pd_buffer_free(&b);
    if (r != 0) return -1;
    return pd_reply_result(reply, data, length);
}

ssize_t readlink(const char *path, char *buffer, size_t size) {
    static ssize_t (*real)(const char *, char *, size_t);
    if (!real) real = (ssize_t (*)(const char *, char *, size_t))dlsym(RTLD_NEXT, "readlink");
    char backend[512];
    if (!pd_forwarded_path(path, backend, sizeof backend)) return real(path, buffer, size);
    struct pd_frame reply = { .descriptor = -1 };
    const uint8_t *data;
    size_t length;
    int64_t n = path_call(PD_READLINK, backend, &reply, &data, &length);
    int e = errno;
    if (n >= 0) {
        if ((uint64_t)n > length) { n = -1; e = EPROTO; pd_log("paradice: readlink: a reply shorter than its length"); }
        else {
            n = (size_t)n < size ? n : (int64_t)size;   /* readlink truncates silently */
            memcpy(buffer, data, (size_t)n);
        }
    }
    if (reply.body) pd_frame_free(&reply);
    errno = e;
    return n;
}

static void add_entry(const char *name, size_t name_length, uint8_t type, void *context) {
    struct remote_dir *d = context;
    struct dirent64 *out = &d->entries[d->count++];
    out->d_ino = (ino64_t)d->count;
    out->d_type = type;
    out->d_reclen = sizeof *out;
    memcpy(out->d_name, name, name_length);   /* at most PD_MAX_NAME_LENGTH: d_name holds 256 */
    out->d_name[name_length] = 0;
}

DIR *opendir(const char *path) {
    static DIR *(*real)(const char *);
    if (!real) real = (DIR *(*)(const char *))dlsym(RTLD_NEXT, "opendir");
    char backend[512];
    if (!pd_forwarded_path(path, backend, sizeof backend) && !pd_device_directory(path, backend, sizeof backend)) return real(path);
    struct pd_frame reply = { .descriptor = -1 };
    const uint8_t *data;
    size_t length;
    int64_t count = path_call(PD_LISTDIR, backend, &reply, &data, &length);
    if (count < 0) { int e = errno; if (reply.body) pd_frame_free(&reply); errno = e; return NULL; }
    struct remote_dir *d = calloc(1, sizeof *d);
    d->magic = REMOTE_DIR_MAGIC;
    d->entries = count >= 0 && (uint64_t)count <= length / sizeof(struct pd_dirent) ? calloc((size_t)count + 1, sizeof *d->entries) : NULL;
    d->plain = calloc(1, sizeof *d->plain);
    const char *why = "a listing of more entries than its bytes hold";
    if (!d->entries || pd_parse_listing(data, length, count, add_entry, d, &why) != 0) {
        pd_log("paradice: opendir %s: %s", path, why);
        pd_frame_free(&reply);
        free(d->entries);
        free(d->plain);
        free(d);
        errno = EPROTO;
        return NULL;
    }
    pd_frame_free(&reply);
    pthread_mutex_lock(&dirs_lock);
    int placed = 0;
    for (int i = 0; i < MAX_REMOTE_DIRS && !placed; i++) if (!open_dirs[i]) { open_dirs[i] = d; placed = 1; }
    pthread_mutex_unlock(&dirs_lock);
    if (!placed) { free(d->entries); free(d->plain); free(d); errno = EMFILE; return NULL; }
    return (DIR *)d;
}

struct dirent64 *readdir64(DIR *dir) {
    static struct dirent64 *(*real)(DIR *);
    if (!real) real = (struct dirent64 *(*)(DIR *))dlsym(RTLD_NEXT, "readdir64");
    struct remote_dir *d = remote(dir);
    if (!d) return real(dir);
    return d->next < d->count ? &d->entries[d->next++] : NULL;
}

struct dirent *readdir(DIR *dir) {
    static struct dirent *(*real)(DIR *);
    if (!real) real = (struct dirent *(*)(DIR *))dlsym(RTLD_NEXT, "readdir");
    struct remote_dir *d = remote(dir);
    if (!d) return real(dir);
    if (d->next >= d->count) return NULL;
    struct dirent64 *e = &d->entries[d->next++];
    d->plain->d_ino = e->d_ino;
    d->plain->d_type = e->d_type;
    d->plain->d_reclen = sizeof *d->plain;
    memcpy(d->plain->d_name, e->d_name, sizeof d->plain->d_name);
    return d->plain;
}

void rewinddir(DIR *dir) {
    static void (*real)(DIR *);
    if (!real) real = (void (*)(DIR *))dlsym(RTLD_NEXT, "rewinddir");
    struct remote_dir *d = remote(dir);
    if (!d) { real(dir); return; }
    d->next = 0;
}

int closedir(DIR *dir) {
    static int (*real)(DIR *);
    if (!real) real = (int (*)(DIR *))dlsym(RTLD_NEXT, "closedir");
    struct remote_dir *d = remote(dir);
    if (!d) return real(dir);
    pthread_mutex_lock(&dirs_lock);
    for (int i = 0; i < MAX_REMOTE_DIRS; i++) if (open_dirs[i] == d) open_dirs[i] = NULL;
    pthread_mutex_unlock(&dirs_lock);
    free(d->entries);
    free(d->plain);
    free(d);
    return 0;
}

/* glibc's scandir lists a folder with its own internal opendir, which this library never sees; libevdev
 * finds a uinput device's node with scandir of its sysfs folder. A forwarded folder is listed here,
 * through the forwarded opendir and readdir, then filtered and sorted as scandir does. */
typedef int (*scan_filter)(const struct dirent *);
typedef int (*scan_compare)(const struct dirent **, const struct dirent **);

static int scan_forwarded(const char *path, struct dirent ***list, scan_filter filter, scan_compare compare) {
    DIR *dir = opendir(path);
    if (!dir) return -1;
    struct dirent **entries = NULL;
    size_t count = 0, capacity = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (filter && !filter(e)) continue;
        if (count == capacity) {
            capacity = capacity ? 2 * capacity : 16;
            struct dirent **grown = realloc(entries, capacity * sizeof *entries);
            if (!grown) break;
            entries = grown;
        }
        struct dirent *copy = malloc(sizeof *copy);
        if (!copy) break;
        memcpy(copy, e, sizeof *copy);
        entries[count++] = copy;
    }
    int failed = e != NULL;   /* stopped early: out of memory */
    closedir(dir);
    if (failed) {
        while (count) free(entries[--count]);
        free(entries);
        errno = ENOMEM;
        return -1;
    }
    if (compare && count > 1) qsort(entries, count, sizeof *entries, (int (*)(const void *, const void *))compare);
    *list = entries;
    return (int)count;
}

int scandir(const char *path, struct dirent ***list, scan_filter filter, scan_compare compare) {
    static int (*real)(const char *, struct dirent ***, scan_filter, scan_compare);
    if (!real) real = (int (*)(const char *, struct dirent ***, scan_filter, scan_compare))dlsym(RTLD_NEXT, "scandir");
    char backend[512];
    if (!pd_forwarded_path(path, backend, sizeof backend)) return real(path, list, filter, compare);
    return scan_forwarded(path, list, filter, compare);
}

/* On LP64 struct dirent64 is struct dirent. */
_Static_assert(sizeof(struct dirent64) == sizeof(struct dirent), "dirent64 and dirent differ");
int scandir64(const char *path, struct dirent64 ***list, int (*filter)(const struct dirent64 *),
              int (*compare)(const struct dirent64 **, const struct dirent64 **)) {
    static int (*real)(const char *, struct dirent64 ***, int (*)(const struct dirent64 *), int (*)(const struct dirent64 **, const struct dirent64 **));
    if (!real) real = (int (*)(const char *, struct dirent64 ***, int (*)(const struct dirent64 *), int (*)(const struct dirent64 **, const struct dirent64 **)))dlsym(RTLD_NEXT, "scandir64");
    char backend[512];
    if (!pd_forwarded_path(path, backend, sizeof backend)) return real(path, list, filter, compare);
    return scan_forwarded(path, (struct dirent ***)list, (scan_filter)filter, (scan_compare)compare);
}
