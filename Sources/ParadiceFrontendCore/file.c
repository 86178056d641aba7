/* Operations on a remote file whose answers are a result and plain data: each answer is checked against
 * what was asked and what the frame carries (docs/protocol.md, "Trust"). And the memory a file was lent. */
#define _GNU_SOURCE
#include "paradice_frontend.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Sends a request of `length` bytes of body and takes its PD_REPLY: the result (or -1 with the device's
 * errno, or EPROTO and *broken when the answer is no reply). */
static int64_t request(struct pd_connection *c, uint16_t op, uint32_t handle, const void *head, size_t head_length,
                       const void *tail, size_t tail_length, struct pd_frame *reply, const uint8_t **data, size_t *n,
                       int *broken, struct pd_interruption *interruption) {
    struct pd_buffer b;
    pd_buffer_init(&b, head_length + tail_length);
    if (head_length) pd_buffer_append(&b, head, head_length);
    if (tail_length) pd_buffer_append(&b, tail, tail_length);
    *reply = (struct pd_frame){ .descriptor = -1 };
    int r = pd_conn_call_interruptible(c, op, 0, handle, &b, reply, interruption);
    pd_buffer_free(&b);
    if (r != 0) return -1;
    int64_t result = pd_reply_result(reply, data, n);
    if (pd_reply_broken(reply)) {
        pd_conn_log(c, "paradice: the backend answered op %u with no result", op);
        *broken = 1;
        errno = EPROTO;
    }
    return result;
}

static int64_t refuse(struct pd_connection *c, struct pd_frame *reply, int *broken) {
    pd_frame_release(c, reply);
    *broken = 1;
    errno = EPROTO;
    return -1;
}

static int64_t finish(struct pd_connection *c, struct pd_frame *reply, int64_t result) {
    int e = errno;
    pd_frame_release(c, reply);
    errno = e;
    return result;
}

int64_t pd_file_open(struct pd_connection *c, const char *path, size_t path_length, int flags, uint32_t mode,
                     struct pd_stat *stat, int *broken) {
    int ignored;
    if (!broken) broken = &ignored;
    *broken = 0;
    struct pd_open o = { flags, mode };
    struct pd_frame reply;
    const uint8_t *data;
    size_t n;
    int64_t handle = request(c, PD_OPEN, 0, &o, sizeof o, path, path_length, &reply, &data, &n, broken, NULL);
    if (handle < 0) return finish(c, &reply, -1);
    if (handle == 0 || handle > UINT32_MAX || n < sizeof *stat) {
        pd_conn_log(c, "paradice: open: the backend answered handle %lld with %zu bytes", (long long)handle, n);
        /* A handle it did make is released: nothing here will name it. */
        if (handle > 0 && handle <= UINT32_MAX) {
            struct pd_frame closed;
            const uint8_t *unused;
            size_t none;
            int also;
            (void)request(c, PD_CLOSE, (uint32_t)handle, NULL, 0, NULL, 0, &closed, &unused, &none, &also, NULL);
            pd_frame_release(c, &closed);
        }
        return refuse(c, &reply, broken);
    }
    memcpy(stat, data, sizeof *stat);
    return finish(c, &reply, handle);
}

static int64_t file_read(struct pd_connection *c, uint32_t handle, void *into, size_t count, int positional,
                         int64_t offset, int *broken, struct pd_interruption *interruption) {
    int ignored;
    if (!broken) broken = &ignored;
    *broken = 0;
    struct pd_io io = { count, offset };
    struct pd_frame reply;
    const uint8_t *data;
    size_t length;
    int64_t n = request(c, positional ? PD_PREAD : PD_READ, handle, &io, sizeof io, NULL, 0, &reply, &data, &length, broken,
                        interruption);
    if (n < 0) return finish(c, &reply, -1);
    if ((uint64_t)n > count || (uint64_t)n > length) {
        pd_conn_log(c, "paradice: read: the backend answered %lld bytes for %zu asked, %zu sent", (long long)n, count, length);
        return refuse(c, &reply, broken);
    }
    if (n > 0) memcpy(into, data, (size_t)n);
    return finish(c, &reply, n);
}

int64_t pd_file_read(struct pd_connection *c, uint32_t handle, void *into, size_t count, int positional,
                     int64_t offset, int *broken) {
    return file_read(c, handle, into, count, positional, offset, broken, NULL);
}

static int64_t file_write(struct pd_connection *c, uint32_t handle, const void *from, size_t count, int positional,
                          int64_t offset, int *broken, struct pd_interruption *interruption) {
    int ignored;
    if (!broken) broken = &ignored;
    *broken = 0;
    struct pd_io io = { count, offset };
    struct pd_frame reply;
    const uint8_t *data;
    size_t length;
    int64_t n = request(c, positional ? PD_PWRITE : PD_WRITE, handle, &io, sizeof io, from, count, &reply, &data, &length, broken,
                        interruption);
    if (n < 0) return finish(c, &reply, -1);
    if ((uint64_t)n > count) {
        pd_conn_log(c, "paradice: write: the backend answered %lld bytes written of %zu", (long long)n, count);
        return refuse(c, &reply, broken);
    }
    return finish(c, &reply, n);
}

int64_t pd_file_write(struct pd_connection *c, uint32_t handle, const void *from, size_t count, int positional,
                      int64_t offset, int *broken) {
    return file_write(c, handle, from, count, positional, offset, broken, NULL);
}

/* The call that used t->interruption is over; errno is kept. */
static int64_t ended(const struct pd_target *t, int64_t result) {
    int e = errno;
    pd_interruption_end(t->interruption);
    errno = e;
    return result;
}

/* Staging for the guest's bytes: the core cannot hand the backend's reply to memory it does not hold. */
int64_t pd_target_read(const struct pd_target *t, uint64_t address, size_t count, int positional, int64_t offset,
                       int *broken) {
    if (broken) *broken = 0;
    if (count > PD_MAX_CALL_BYTES) count = PD_MAX_CALL_BYTES;
    uint8_t *staging = malloc(count ? count : 1);
    if (!staging) { errno = ENOMEM; return ended(t, -1); }
    int64_t n = file_read(t->connection, t->handle, staging, count, positional, offset, broken, t->interruption);
    if (n > 0 && t->memory->write(t->memory->context, address, staging, (size_t)n) != 0) {
        errno = EFAULT;
        n = -1;
    }
    int e = errno;
    free(staging);
    errno = e;
    return ended(t, n);
}

int64_t pd_target_write(const struct pd_target *t, uint64_t address, size_t count, int positional, int64_t offset,
                        int *broken) {
    if (broken) *broken = 0;
    if (count > PD_MAX_CALL_BYTES) count = PD_MAX_CALL_BYTES;
    uint8_t *staging = malloc(count ? count : 1);
    if (!staging) { errno = ENOMEM; return ended(t, -1); }
    if (count && t->memory->read(t->memory->context, address, staging, count) != 0) {
        free(staging);
        errno = EFAULT;
        return ended(t, -1);
    }
    int64_t n = file_write(t->connection, t->handle, staging, count, positional, offset, broken, t->interruption);
    int e = errno;
    free(staging);
    errno = e;
    return ended(t, n);
}

static int64_t file_simple(struct pd_connection *c, uint32_t handle, uint16_t op, const void *body, size_t length,
                           void *out, size_t out_length, int *broken, struct pd_interruption *interruption) {
    int ignored;
    if (!broken) broken = &ignored;
    *broken = 0;
    struct pd_frame reply;
    const uint8_t *data;
    size_t n;
    int64_t result = request(c, op, handle, body, length, NULL, 0, &reply, &data, &n, broken, interruption);
    if (result < 0) return finish(c, &reply, -1);
    if (out && n < out_length) {
        pd_conn_log(c, "paradice: a reply shorter than its data");
        return refuse(c, &reply, broken);
    }
    if (out && out_length) memcpy(out, data, out_length);
    return finish(c, &reply, result);
}

int64_t pd_file_simple(struct pd_connection *c, uint32_t handle, uint16_t op, const void *body, size_t length,
                       void *out, size_t out_length, int *broken) {
    return file_simple(c, handle, op, body, length, out, out_length, broken, NULL);
}

int64_t pd_target_simple(const struct pd_target *t, uint16_t op, const void *body, size_t length, void *out,
                         size_t out_length, int *broken) {
    return ended(t, file_simple(t->connection, t->handle, op, body, length, out, out_length, broken, t->interruption));
}

int64_t pd_file_watch_level(struct pd_connection *c, uint32_t handle, short events, short level, int *broken) {
    int ignored;
    if (!broken) broken = &ignored;
    *broken = 0;
    if (!(c->capabilities & PD_CAP_WATCH_LEVEL)) {
        struct pd_poll now = { (int32_t)(uint16_t)level, 0 };
        int64_t revents = file_simple(c, handle, PD_POLL, &now, sizeof now, NULL, 0, broken, NULL);
        if (revents != 0) return revents;   /* ready, or failed */
        struct pd_poll watch = { (int32_t)(uint16_t)events, -1 };
        return file_simple(c, handle, PD_WATCH, &watch, sizeof watch, NULL, 0, broken, NULL) < 0 ? -1 : 0;
    }
    struct pd_watch w = { (int32_t)(uint16_t)events, -1, (int32_t)(uint16_t)level, 0 };
    struct pd_buffer b;
    pd_buffer_init(&b, sizeof w);
    pd_buffer_append(&b, &w, sizeof w);
    struct pd_frame reply = { .descriptor = -1 };
    int r = pd_conn_call(c, PD_WATCH, PD_WATCH_LEVEL, handle, &b, &reply);
    pd_buffer_free(&b);
    if (r != 0) return -1;
    int64_t result = pd_reply_result(&reply, NULL, NULL);
    if (pd_reply_broken(&reply) || result > 0xffff) {
        pd_conn_log(c, "paradice: the backend answered a watch with no revents");
        return refuse(c, &reply, broken);
    }
    return finish(c, &reply, result);
}

int64_t pd_file_poll_read(struct pd_connection *c, uint32_t handle, short events, int timeout_ms, uint32_t read_max,
                          uint32_t read_unit, uint8_t **ahead, size_t *ahead_length, int *broken) {
    int ignored;
    if (!broken) broken = &ignored;
    *broken = 0;
    *ahead = NULL;
    *ahead_length = 0;
    struct pd_poll p = { (int32_t)(uint16_t)events, timeout_ms };
    if (!(c->capabilities & PD_CAP_READ_AHEAD) || read_unit == 0 || read_max < read_unit)
        return file_simple(c, handle, PD_POLL, &p, sizeof p, NULL, 0, broken, NULL);
    if (read_max > PD_MAX_READ_AHEAD) read_max = PD_MAX_READ_AHEAD;
    struct pd_read_ahead r = { read_max, 0 };
    struct pd_buffer b;
    pd_buffer_init(&b, sizeof p + sizeof r);
    pd_buffer_append(&b, &p, sizeof p);
    pd_buffer_append(&b, &r, sizeof r);
    struct pd_frame reply = { .descriptor = -1 };
    int sent = pd_conn_call(c, PD_POLL, PD_READ_AHEAD, handle, &b, &reply);
    pd_buffer_free(&b);
    if (sent != 0) return -1;
    const uint8_t *data;
    size_t n;
    int64_t result = pd_reply_result(&reply, &data, &n);
    if (pd_reply_broken(&reply) || result > 0xffff) {
        pd_conn_log(c, "paradice: the backend answered a poll with no revents");
        return refuse(c, &reply, broken);
    }
    if (result < 0) return finish(c, &reply, -1);
    /* No more than asked, than the frame carries, nor a part of a record: the bytes stand for reads. */
    const uint8_t *bytes;
    uint32_t count;
    const char *why;
    if (pd_parse_read_ahead(data, n, result, read_max, read_unit, &bytes, &count, &why) != 0) {
        pd_conn_log(c, "paradice: poll: %s", why);
        return refuse(c, &reply, broken);
    }
    if (count > 0) {
        *ahead = malloc(count);
        if (!*ahead) { errno = ENOMEM; return refuse(c, &reply, broken); }
        memcpy(*ahead, bytes, count);
        *ahead_length = count;
    }
    return finish(c, &reply, result);
}

void pd_lent_init(struct pd_lent *l) {
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->lock, NULL);
}

void pd_lent_destroy(struct pd_lent *l) { pthread_mutex_destroy(&l->lock); }

void pd_lent_add(struct pd_lent *l, uint64_t address, uint64_t length) {
    pthread_mutex_lock(&l->lock);
    uint64_t now = ++l->clock;
    int at = -1, oldest = 0;
    for (int i = 0; i < l->count && at < 0; i++) {
        if (l->spans[i].address == address) at = i;
        if (l->spans[i].used < l->spans[oldest].used) oldest = i;
    }
    if (at < 0) at = l->count < PD_LENT_SPANS ? l->count++ : oldest;   /* the least recently handed goes */
    if (l->spans[at].address != address || l->spans[at].length < length) l->spans[at].length = length;
    l->spans[at].address = address;
    l->spans[at].used = now;
    pthread_mutex_unlock(&l->lock);
}

size_t pd_lent_spans(struct pd_lent *l, struct pd_span *out, size_t max) {
    pthread_mutex_lock(&l->lock);
    size_t n = 0;
    for (int i = 0; i < l->count && n < max; i++, n++) out[n] = (struct pd_span){ l->spans[i].address, l->spans[i].length };
    pthread_mutex_unlock(&l->lock);
    return n;
}

int pd_file_shared(struct pd_connection *c, uint32_t handle, int *slot, pthread_mutex_t *lock) {
    pthread_mutex_lock(lock);
    int shared = *slot;
    pthread_mutex_unlock(lock);
    if (shared >= 0) return shared;
    if (shared == -2) { errno = ENODEV; return -1; }   /* refused once: the backend keeps it */
    struct pd_buffer b;
    pd_buffer_init(&b, 0);
    struct pd_frame reply = { .descriptor = -1 };
    int r = pd_conn_call(c, PD_SHARE, 0, handle, &b, &reply);
    pd_buffer_free(&b);
    if (r != 0) return -1;
    int64_t result = pd_reply_result(&reply, NULL, NULL);
    int e = errno, got = -1;
    if (result >= 0 && reply.descriptor >= 0) {
        got = reply.descriptor;
        reply.descriptor = -1;
    } else if (result >= 0) {
        e = ENODEV;   /* an answer without a descriptor: nothing to share */
    }
    pd_frame_release(c, &reply);
    pthread_mutex_lock(lock);
    if (got >= 0 && *slot >= 0) { syscall(SYS_close, got); got = *slot; }   /* another thread's came first */
    else if (got >= 0) *slot = got;
    else if (e == ENODEV && *slot == -1) *slot = -2;
    pthread_mutex_unlock(lock);
    if (got >= 0) return got;
    errno = e;
    return -1;
}
