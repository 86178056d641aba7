/* A stream over a Xen vchan (paradice_vchan.h): a guest's frontend is the client of the backend's server. */
#include "paradice_frontend.h"
#include "paradice_vchan.h"
#include <errno.h>

static long vchan_send(struct pd_stream *s, const void *bytes, size_t n) { return paradice_vchan_send(s->state, bytes, n); }

static long vchan_recv(struct pd_stream *s, void *bytes, size_t n, int *descriptor) {
    if (descriptor) *descriptor = -1;   /* none travel between domains */
    return paradice_vchan_receive(s->state, bytes, n);
}

static void vchan_shutdown(struct pd_stream *s) { paradice_vchan_shutdown(s->state); }

/* In a forked child, the parent's vchan is left as it is (paradice_vchan_close). */
static void vchan_close(struct pd_stream *s) { paradice_vchan_close(s->state); }

static const struct pd_stream_ops vchan_ops = { vchan_send, vchan_recv, vchan_shutdown, vchan_close };

int pd_stream_vchan(struct pd_stream *s, const char *rest, const char **why) {
    int domain;
    char path[256];
    if (paradice_vchan_parse(rest, &domain, path, sizeof path, why) != 0) { errno = EINVAL; return -1; }
    struct paradice_vchan *v = paradice_vchan_open(0, domain, path, why);
    if (!v) return -1;
    *s = (struct pd_stream){ .ops = &vchan_ops, .fd = -1, .state = v };
    return 0;
}
