/* TCP to the backend over TLS (Sources/ParadiceTLS), as one more kind of stream, and dialing with the
 * frontend's security settings: TLS, or plain TCP only when asked for. */
#define _GNU_SOURCE
#include "paradice_frontend.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct tls_state {
    struct pd_tls_context *context;
    struct pd_tls *tls;
};

static long tls_send(struct pd_stream *s, const void *bytes, size_t n) {
    return pd_tls_write(((struct tls_state *)s->state)->tls, bytes, n);
}

/* No descriptor travels over TCP. */
static long tls_recv(struct pd_stream *s, void *bytes, size_t n, int *descriptor) {
    if (descriptor) *descriptor = -1;
    return pd_tls_read(((struct tls_state *)s->state)->tls, bytes, n);
}

static void tls_shutdown(struct pd_stream *s) { pd_tls_shutdown(((struct tls_state *)s->state)->tls); }

/* Without a word to the peer (close_notify): after a fork the parent's stream goes on. */
static void tls_close(struct pd_stream *s) {
    struct tls_state *state = s->state;
    pd_tls_free(state->tls);
    pd_tls_context_free(state->context);
    free(state);
    syscall(SYS_close, s->fd);
}

static const struct pd_stream_ops tls_ops = { tls_send, tls_recv, tls_shutdown, tls_close };

const char *pd_stream_tls_failure(const struct pd_stream *s) {
    if (s->ops != &tls_ops) return NULL;
    const char *failure = pd_tls_failure(((struct tls_state *)s->state)->tls);
    return failure[0] ? failure : NULL;
}

struct pd_security pd_security_from_environment(void) {
    struct pd_security s = { getenv("PARADICE_TLS_CERT"), getenv("PARADICE_TLS_KEY"), getenv("PARADICE_TLS_CA"),
                             getenv("PARADICE_PSK_FILE"), 0 };
    const char *plain = getenv("PARADICE_PLAIN_TCP");
    s.plain_tcp = plain && strcmp(plain, "1") == 0;
    return s;
}

int pd_conn_dial_secure(struct pd_connection *c, const char *url, const struct pd_security *s, struct pd_stream *stream) {
    *stream = (struct pd_stream)PD_STREAM_NONE;
    c->why[0] = 0;
    int tcp = strncmp(url, "tcp:", 4) == 0;
    int tls = s->cert || s->key || s->ca || s->psk_file;
    if (tcp && !tls && !s->plain_tcp) {
        snprintf(c->why, sizeof c->why, "TCP needs TLS: --tls-cert, --tls-key and --tls-ca, or --psk-file "
                 "(or, unauthenticated and unencrypted, --plain-tcp)");
        errno = EACCES;
        return -1;
    }
    if (tcp && tls && s->plain_tcp) {
        snprintf(c->why, sizeof c->why, "--plain-tcp and TLS settings exclude each other");
        errno = EINVAL;
        return -1;
    }
    c->plain_tcp = tcp && !tls;
    if (strncmp(url, "vchan:", 6) == 0) {
        const char *why = "no vchan";
        *stream = (struct pd_stream)PD_STREAM_NONE;
        if (pd_stream_vchan(stream, url + 6, &why) == 0) return 0;
        int e = errno;
        snprintf(c->why, sizeof c->why, "%s", why);
        errno = e;
        return -1;
    }
    if (pd_conn_dial(url, stream) != 0) return -1;
    if (!tcp || !tls) return 0;
    struct pd_tls_settings settings = { s->cert, s->key, s->ca, s->psk_file };
    char error[256];
    struct tls_state *state = calloc(1, sizeof *state);
    if (state) state->context = pd_tls_context_new(PD_TLS_CLIENT, &settings, error, sizeof error);
    else snprintf(error, sizeof error, "out of memory");
    if (state && state->context) state->tls = pd_tls_handshake(state->context, stream->fd, 10000, error, sizeof error);
    if (!state || !state->tls) {
        snprintf(c->why, sizeof c->why, state && state->context ? "the backend is refused: %s" : "%s", error);
        if (state) pd_tls_context_free(state->context);
        free(state);
        stream->ops->close(stream);
        *stream = (struct pd_stream)PD_STREAM_NONE;
        errno = EACCES;
        return -1;
    }
    free(stream->state);   /* the socket stream's own (its receives' spin): TLS reads the socket itself */
    *stream = (struct pd_stream){ .ops = &tls_ops, .fd = stream->fd, .state = state };
    return 0;
}
