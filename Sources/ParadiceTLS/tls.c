/* The TLS layer on OpenSSL (paradice_tls.h). No cryptography of its own: OpenSSL does the handshake, the
 * certificate checks and the records; this file chooses the options (TLS 1.3 only, the peer's certificate
 * or PSK required, no session tickets) and moves bytes with raw system calls. */
#define _GNU_SOURCE
#include "paradice_tls.h"
#include "paradice_spin.h"
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define PD_PSK_MAX_KEY 64
#define PD_PSK_MIN_KEY 16
#define PD_PSK_MAX_IDENTITY 128

struct psk_entry {
    char identity[PD_PSK_MAX_IDENTITY + 1];
    unsigned char key[PD_PSK_MAX_KEY];
    unsigned key_length;
};

struct pd_tls_context {
    SSL_CTX *ssl;
    int role;
    struct psk_entry *keys;
    size_t key_count;
};

struct pd_tls {
    SSL *ssl;
    int fd;
    pthread_mutex_t lock;   /* every OpenSSL call on ssl */
    int handshaking;        /* the BIO reads the socket itself (one thread, before any other may use it) */
    /* Ciphertext the reading thread received (outside the lock, in a blocking recv) for OpenSSL to take
     * (under the lock, through the BIO): waiting costs the read no more system calls than plain TCP. */
    unsigned char *incoming;
    size_t incoming_start, incoming_end;
    int incoming_ended;     /* the peer's end of stream came after them */
    struct paradice_spin spin;   /* the reading thread's receives: how long they spin before they sleep */
    struct pd_tls_context *context;
    char kind[8];
    char *subject, *names;
    char psk_identity[PD_PSK_MAX_IDENTITY + 1];
    char failure[256];      /* why the last read or write failed in TLS ("" if none) */
};

/* ---- errors ---- */

static void say(char *error, size_t size, const char *format, const char *a, const char *b) {
    if (error && size) snprintf(error, size, format, a ? a : "", b ? b : "");
}

/* OpenSSL's last reason, or what the system said. */
static const char *openssl_reason(char *buffer, size_t size) {
    unsigned long e = ERR_peek_last_error();
    if (!e) return errno ? strerror(errno) : "the connection ended during the handshake";
    const char *reason = ERR_reason_error_string(e);
    if (reason) snprintf(buffer, size, "%s", reason);
    else ERR_error_string_n(e, buffer, size);
    return buffer;
}

/* ---- system calls (the preload wraps the libc functions) ---- */

static int wait_for(int fd, short events, int timeout_ms) {
    struct pollfd p = { .fd = fd, .events = events };
    struct timespec t = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L };
    for (;;) {
        long r = syscall(SYS_ppoll, &p, 1, timeout_ms < 0 ? NULL : &t, NULL, 8);
        if (r > 0) return 0;
        if (r == 0) { errno = ETIMEDOUT; return -1; }
        if (errno != EINTR) return -1;
    }
}

#define PD_TLS_INCOMING (64 << 10)

/* Never blocks (MSG_DONTWAIT): a writer waiting for the socket waits outside the lock (pd_tls_write). */
static int socket_write(BIO *bio, const char *data, int length) {
    struct pd_tls *t = BIO_get_data(bio);
    int fd = t->fd;
    BIO_clear_retry_flags(bio);
    long n = syscall(SYS_sendto, fd, data, (size_t)length, MSG_NOSIGNAL | MSG_DONTWAIT, NULL, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) BIO_set_retry_write(bio);
    return (int)n;
}

/* During the handshake: the socket, without blocking. Afterwards: what the reading thread received. */
static int socket_read(BIO *bio, char *data, int length) {
    struct pd_tls *t = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (t->handshaking) {
        long n = syscall(SYS_recvfrom, t->fd, data, (size_t)length, MSG_DONTWAIT, NULL, NULL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) BIO_set_retry_read(bio);
        return (int)n;
    }
    size_t have = t->incoming_end - t->incoming_start;
    if (have == 0) {
        if (t->incoming_ended) return 0;
        BIO_set_retry_read(bio);
        return -1;
    }
    size_t n = have < (size_t)length ? have : (size_t)length;
    memcpy(data, t->incoming + t->incoming_start, n);
    t->incoming_start += n;
    if (t->incoming_start == t->incoming_end) t->incoming_start = t->incoming_end = 0;
    return (int)n;
}

static long socket_ctrl(BIO *bio, int command, long number, void *pointer) {
    (void)bio; (void)number; (void)pointer;
    return command == BIO_CTRL_FLUSH ? 1 : 0;
}

static BIO_METHOD *socket_method;
static pthread_once_t socket_method_once = PTHREAD_ONCE_INIT;
static void make_socket_method(void) {
    socket_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "paradice socket");
    if (!socket_method) return;
    BIO_meth_set_write(socket_method, socket_write);
    BIO_meth_set_read(socket_method, socket_read);
    BIO_meth_set_ctrl(socket_method, socket_ctrl);
}

/* ---- PSK files ---- */

static int hex_value(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int load_psk_file(struct pd_tls_context *c, const char *path, char *error, size_t size) {
    FILE *f = fopen(path, "re");
    if (!f) { say(error, size, "cannot read the PSK file %s: %s", path, strerror(errno)); return -1; }
    char line[512];
    int number = 0, failed = 0;
    while (!failed && fgets(line, sizeof line, f)) {
        number++;
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t')) line[--n] = 0;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '#') continue;
        char where[32];
        snprintf(where, sizeof where, "%d", number);
        char *colon = strchr(p, ':');
        size_t id_length = colon ? (size_t)(colon - p) : 0;
        const char *hex = colon ? colon + 1 : "";
        size_t hex_length = strlen(hex);
        if (!colon || id_length == 0 || id_length > PD_PSK_MAX_IDENTITY) {
            say(error, size, "%s:%s:1: a PSK line is IDENTITY:HEXKEY (an identity of 1 to 128 bytes)", path, where);
            failed = 1;
        } else if (hex_length % 2 || hex_length / 2 < PD_PSK_MIN_KEY || hex_length / 2 > PD_PSK_MAX_KEY) {
            say(error, size, "%s:%s: a PSK key is 16 to 64 bytes in hex (32 to 128 digits)", path, where);
            failed = 1;
        } else {
            struct psk_entry *grown = realloc(c->keys, (c->key_count + 1) * sizeof *grown);
            if (!grown) { say(error, size, "%s%s: out of memory", path, ""); failed = 1; break; }
            c->keys = grown;
            struct psk_entry *e = &c->keys[c->key_count];
            memset(e, 0, sizeof *e);
            memcpy(e->identity, p, id_length);
            e->key_length = (unsigned)(hex_length / 2);
            for (size_t i = 0; i < e->key_length && !failed; i++) {
                int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
                if (hi < 0 || lo < 0) {
                    say(error, size, "%s:%s: a PSK key is hex digits", path, where);
                    failed = 1;
                }
                e->key[i] = (unsigned char)(hi << 4 | lo);
            }
            for (size_t i = 0; !failed && i < c->key_count; i++)
                if (strcmp(c->keys[i].identity, e->identity) == 0) {
                    say(error, size, "%s:%s: the identity is already in the file", path, where);
                    failed = 1;
                }
            if (!failed) c->key_count++;
            else OPENSSL_cleanse(e, sizeof *e);
        }
    }
    OPENSSL_cleanse(line, sizeof line);
    fclose(f);
    if (failed) return -1;
    if (c->key_count == 0) { say(error, size, "the PSK file %s holds no IDENTITY:HEXKEY line%s", path, ""); return -1; }
    if (c->role == PD_TLS_CLIENT && c->key_count != 1) {
        say(error, size, "the PSK file %s holds several keys: a frontend's holds one%s", path, "");
        return -1;
    }
    return 0;
}

static const unsigned char session_context[] = "paradice";

/* A TLS 1.3 external PSK is a session to resume: the key as its secret, TLS_AES_128_GCM_SHA256 (whose
 * hash every TLS 1.3 implementation has) as its suite. */
static SSL_SESSION *psk_session(SSL *ssl, const struct psk_entry *e) {
    static const unsigned char aes128gcmsha256[] = { 0x13, 0x01 };
    const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, aes128gcmsha256);
    SSL_SESSION *session = cipher ? SSL_SESSION_new() : NULL;
    if (!session) return NULL;
    if (!SSL_SESSION_set1_master_key(session, e->key, e->key_length) || !SSL_SESSION_set_cipher(session, cipher)
        || !SSL_SESSION_set_protocol_version(session, TLS1_3_VERSION)
        || !SSL_SESSION_set1_id_context(session, session_context, sizeof session_context - 1)) {
        SSL_SESSION_free(session);
        return NULL;
    }
    return session;
}

static int psk_for_server(SSL *ssl, const unsigned char *identity, size_t length, SSL_SESSION **session) {
    struct pd_tls *t = SSL_get_app_data(ssl);
    *session = NULL;
    if (!t) return 0;
    for (size_t i = 0; i < t->context->key_count; i++) {
        struct psk_entry *e = &t->context->keys[i];
        if (strlen(e->identity) != length || memcmp(e->identity, identity, length) != 0) continue;
        *session = psk_session(ssl, e);
        if (!*session) return 0;
        snprintf(t->psk_identity, sizeof t->psk_identity, "%s", e->identity);
        return 1;
    }
    return 1;   /* an unknown identity: no PSK (the guest must then prove itself with a certificate) */
}

static int psk_for_client(SSL *ssl, const EVP_MD *md, const unsigned char **identity, size_t *length, SSL_SESSION **session) {
    struct pd_tls *t = SSL_get_app_data(ssl);
    *session = NULL;
    *identity = NULL;
    *length = 0;
    if (!t || t->context->key_count == 0) return 0;
    struct psk_entry *e = &t->context->keys[0];
    SSL_SESSION *made = psk_session(ssl, e);
    if (!made) return 0;
    if (md && SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(made)) != md) {
        SSL_SESSION_free(made);   /* a retried hello with another hash: this PSK does not fit it */
        return 1;
    }
    *session = made;
    *identity = (const unsigned char *)e->identity;
    *length = strlen(e->identity);
    snprintf(t->psk_identity, sizeof t->psk_identity, "%s", e->identity);
    return 1;
}

/* ---- contexts ---- */

struct pd_tls_context *pd_tls_context_new(int role, const struct pd_tls_settings *s, char *error, size_t size) {
    int certificates = s->cert || s->key || s->ca;
    if (certificates && !(s->cert && s->key && s->ca)) {
        say(error, size, "TLS certificates need a certificate, its key and the CA (--tls-cert, --tls-key, --tls-ca)%s%s", "", "");
        return NULL;
    }
    if (!certificates && !s->psk_file) { say(error, size, "TLS needs certificates or a PSK file%s%s", "", ""); return NULL; }
    pthread_once(&socket_method_once, make_socket_method);
    struct pd_tls_context *c = calloc(1, sizeof *c);
    if (!c || !socket_method) { free(c); say(error, size, "out of memory%s%s", "", ""); return NULL; }
    c->role = role;
    c->ssl = SSL_CTX_new(role == PD_TLS_SERVER ? TLS_server_method() : TLS_client_method());
    char reason[256];
    if (!c->ssl) { say(error, size, "OpenSSL: %s%s", openssl_reason(reason, sizeof reason), ""); free(c); return NULL; }
    SSL_CTX_set_min_proto_version(c->ssl, TLS1_3_VERSION);
    SSL_CTX_set_options(c->ssl, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_num_tickets(c->ssl, 0);
    /* A PSK handshake counts as a resumption, which OpenSSL refuses to verify without a context. */
    SSL_CTX_set_session_id_context(c->ssl, session_context, sizeof session_context - 1);
    SSL_CTX_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* One recv takes whatever has come (a record's header and body, or several records), not 5 bytes first. */
    SSL_CTX_set_read_ahead(c->ssl, 1);
    /* The peer always proves itself: a backend wants a guest's certificate (unless the guest uses a PSK); a
     * frontend checks the backend's against its CA (with no CA, only a PSK handshake can succeed). */
    SSL_CTX_set_verify(c->ssl, role == PD_TLS_SERVER ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER, NULL);
    ERR_clear_error();
    if (certificates) {
        if (SSL_CTX_use_certificate_chain_file(c->ssl, s->cert) != 1) {
            say(error, size, "cannot use the certificate %s: %s", s->cert, openssl_reason(reason, sizeof reason));
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(c->ssl, s->key, SSL_FILETYPE_PEM) != 1) {
            if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
                say(error, size, "the key %s does not belong to the certificate %s", s->key, s->cert);
                goto fail;
            }
            say(error, size, "cannot use the key %s: %s", s->key, openssl_reason(reason, sizeof reason));
            goto fail;
        }
        if (SSL_CTX_check_private_key(c->ssl) != 1) {
            say(error, size, "the key %s does not belong to the certificate %s", s->key, s->cert);
            goto fail;
        }
        if (SSL_CTX_load_verify_locations(c->ssl, s->ca, NULL) != 1) {
            say(error, size, "cannot use the CA %s: %s", s->ca, openssl_reason(reason, sizeof reason));
            goto fail;
        }
        if (role == PD_TLS_SERVER) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(s->ca);
            if (names) SSL_CTX_set_client_CA_list(c->ssl, names);
        }
    }
    if (s->psk_file) {
        if (load_psk_file(c, s->psk_file, error, size) != 0) goto fail;
        /* A PSK's suite hashes with SHA-256: the server must choose such a suite, or it drops the PSK. */
        SSL_CTX_set_ciphersuites(c->ssl, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384");
        if (role == PD_TLS_SERVER) SSL_CTX_set_options(c->ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);
        if (role == PD_TLS_SERVER) SSL_CTX_set_psk_find_session_callback(c->ssl, psk_for_server);
        else SSL_CTX_set_psk_use_session_callback(c->ssl, psk_for_client);
    }
    return c;
fail:
    pd_tls_context_free(c);
    return NULL;
}

void pd_tls_context_free(struct pd_tls_context *c) {
    if (!c) return;
    if (c->ssl) SSL_CTX_free(c->ssl);
    if (c->keys) OPENSSL_cleanse(c->keys, c->key_count * sizeof *c->keys);
    free(c->keys);
    free(c);
}

/* ---- the peer's identity ---- */

static char *subject_of(X509 *cert) {
    BIO *b = BIO_new(BIO_s_mem());
    if (!b) return strdup("");
    X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = strndup(data, n > 0 ? (size_t)n : 0);
    BIO_free(b);
    return s ? s : strdup("");
}

static void append(char **s, size_t *length, const char *kind, const char *value, size_t n) {
    size_t need = *length + (*length ? 1 : 0) + strlen(kind) + n + 1;
    char *grown = realloc(*s, need);
    if (!grown) return;
    *s = grown;
    if (*length) grown[(*length)++] = ',';
    memcpy(grown + *length, kind, strlen(kind));
    *length += strlen(kind);
    for (size_t i = 0; i < n; i++) grown[(*length)++] = isprint((unsigned char)value[i]) && value[i] != ',' ? value[i] : '?';
    grown[*length] = 0;
}

static char *names_of(X509 *cert) {
    char *s = NULL;
    size_t length = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        const ASN1_STRING *text = NULL;
        const char *kind = NULL;
        if (g->type == GEN_DNS) { text = g->d.dNSName; kind = "DNS:"; }
        else if (g->type == GEN_EMAIL) { text = g->d.rfc822Name; kind = "email:"; }
        else if (g->type == GEN_URI) { text = g->d.uniformResourceIdentifier; kind = "URI:"; }
        else if (g->type == GEN_IPADD) {
            char address[INET6_ADDRSTRLEN] = "";
            int n = ASN1_STRING_length(g->d.iPAddress);
            const unsigned char *p = ASN1_STRING_get0_data(g->d.iPAddress);
            if (n == 4) inet_ntop(AF_INET, p, address, sizeof address);
            else if (n == 16) inet_ntop(AF_INET6, p, address, sizeof address);
            if (*address) append(&s, &length, "IP:", address, strlen(address));
        }
        if (text) append(&s, &length, kind, (const char *)ASN1_STRING_get0_data(text), (size_t)ASN1_STRING_length(text));
    }
    GENERAL_NAMES_free(names);
    return s ? s : strdup("");
}

const char *pd_tls_peer_kind(const struct pd_tls *t) { return t->kind; }
const char *pd_tls_peer_subject(const struct pd_tls *t) { return t->subject ? t->subject : ""; }
const char *pd_tls_peer_names(const struct pd_tls *t) { return t->names ? t->names : ""; }
const char *pd_tls_peer_psk_identity(const struct pd_tls *t) { return t->psk_identity; }
const char *pd_tls_cipher(const struct pd_tls *t) { return SSL_get_cipher_name(t->ssl); }

/* ---- connections ---- */

static void free_connection(struct pd_tls *t) {
    if (t->ssl) SSL_free(t->ssl);
    free(t->incoming);
    pthread_mutex_destroy(&t->lock);
    free(t->subject);
    free(t->names);
    free(t);
}

static long deadline_left(const struct timespec *deadline) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
    return ms > 0 ? ms : 0;
}

struct pd_tls *pd_tls_handshake(struct pd_tls_context *c, int fd, int timeout_ms, char *error, size_t size) {
    struct pd_tls *t = calloc(1, sizeof *t);
    if (!t) { say(error, size, "out of memory%s%s", "", ""); return NULL; }
    pthread_mutex_init(&t->lock, NULL);
    t->fd = fd;
    t->context = c;
    t->handshaking = 1;
    t->incoming = malloc(PD_TLS_INCOMING);
    paradice_spin_init(&t->spin, PARADICE_SPIN_CEILING_NS);
    char reason[256];
    ERR_clear_error();
    t->ssl = SSL_new(c->ssl);
    BIO *bio = t->ssl && t->incoming ? BIO_new(socket_method) : NULL;
    if (!bio) { say(error, size, "OpenSSL: %s%s", openssl_reason(reason, sizeof reason), ""); free_connection(t); return NULL; }
    BIO_set_data(bio, t);
    BIO_set_init(bio, 1);
    SSL_set_bio(t->ssl, bio, bio);
    SSL_set_app_data(t->ssl, t);
    if (c->role == PD_TLS_SERVER) SSL_set_accept_state(t->ssl); else SSL_set_connect_state(t->ssl);
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000L; }
    for (;;) {
        errno = 0;
        int r = SSL_do_handshake(t->ssl);
        if (r == 1) break;
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (wait_for(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, (int)deadline_left(&deadline)) != 0) {
                say(error, size, "TLS handshake: %s%s", errno == ETIMEDOUT ? "no answer in time" : strerror(errno), "");
                free_connection(t);
                return NULL;
            }
            continue;
        }
        long verify = SSL_get_verify_result(t->ssl);
        if (verify != X509_V_OK)
            say(error, size, "TLS handshake: %s certificate is refused: %s", c->role == PD_TLS_SERVER ? "the guest's" : "the backend's",
                X509_verify_cert_error_string(verify));
        else
            say(error, size, "TLS handshake: %s%s", openssl_reason(reason, sizeof reason), "");
        free_connection(t);
        return NULL;
    }
    t->handshaking = 0;
    X509 *peer = SSL_get1_peer_certificate(t->ssl);
    if (peer) {
        strcpy(t->kind, "cert");
        t->subject = subject_of(peer);
        t->names = names_of(peer);
        t->psk_identity[0] = 0;
        X509_free(peer);
    } else if (t->psk_identity[0] && SSL_session_reused(t->ssl)) {
        strcpy(t->kind, "psk");
    } else {
        /* Neither proved: cannot happen with the verify mode above, and is refused if it does. */
        say(error, size, "TLS handshake: the peer proved no identity%s%s", "", "");
        free_connection(t);
        return NULL;
    }
    return t;
}

long pd_tls_read(struct pd_tls *t, void *buffer, size_t length) {
    int n = length > INT_MAX ? INT_MAX : (int)length;
    for (;;) {
        pthread_mutex_lock(&t->lock);
        ERR_clear_error();
        errno = 0;
        int r = SSL_read(t->ssl, buffer, n);
        int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
        int system = errno;
        int room = !t->incoming_ended && t->incoming_end < PD_TLS_INCOMING;
        pthread_mutex_unlock(&t->lock);
        if (r > 0) return r;
        switch (e) {
        case SSL_ERROR_ZERO_RETURN: return 0;
        case SSL_ERROR_WANT_READ: {
            if (!room) { errno = EIO; return -1; }   /* cannot happen: OpenSSL took what was there */
            /* The one reader waits for the peer here, in a receive that spins before it blocks (as a plain
             * socket's does), holding no lock. */
            unsigned char chunk[16 << 10];
            long got;
            do got = paradice_recv_spinning(t->fd, chunk, sizeof chunk, NULL, &t->spin);
            while (got < 0 && errno == EINTR);
            if (got < 0) { if (errno == EPIPE) errno = ECONNRESET; return -1; }   /* EAGAIN: the read timeout */
            pthread_mutex_lock(&t->lock);
            if (got == 0) t->incoming_ended = 1;
            else if (t->incoming_end + (size_t)got <= PD_TLS_INCOMING) {
                memcpy(t->incoming + t->incoming_end, chunk, (size_t)got);
                t->incoming_end += (size_t)got;
            } else got = -1;
            pthread_mutex_unlock(&t->lock);
            if (got < 0) { errno = EIO; return -1; }
            continue;
        }
        case SSL_ERROR_WANT_WRITE: if (wait_for(t->fd, POLLOUT, -1) != 0) return -1; continue;
        case SSL_ERROR_SYSCALL:
            if (system == 0) return 0;
            errno = system == EPIPE ? ECONNRESET : system;
            return -1;
        default:
            pthread_mutex_lock(&t->lock);
            openssl_reason(t->failure, sizeof t->failure);
            pthread_mutex_unlock(&t->lock);
            errno = EIO;
            return -1;
        }
    }
}

long pd_tls_write(struct pd_tls *t, const void *buffer, size_t length) {
    int n = length > INT_MAX ? INT_MAX : (int)length;
    if (n == 0) return 0;
    for (;;) {
        pthread_mutex_lock(&t->lock);
        ERR_clear_error();
        errno = 0;
        int r = SSL_write(t->ssl, buffer, n);
        int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
        int system = errno;
        pthread_mutex_unlock(&t->lock);
        if (r > 0) return r;
        switch (e) {
        case SSL_ERROR_WANT_WRITE: if (wait_for(t->fd, POLLOUT, -1) != 0) return -1; continue;
        case SSL_ERROR_WANT_READ: if (wait_for(t->fd, POLLIN, -1) != 0) return -1; continue;
        case SSL_ERROR_SYSCALL: errno = system ? system : EPIPE; return -1;
        default: errno = EPIPE; return -1;
        }
    }
}

const char *pd_tls_failure(const struct pd_tls *t) { return t->failure; }

void pd_tls_set_read_timeout(struct pd_tls *t, int timeout_ms) {
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    setsockopt(t->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);   /* the reader's blocking recv */
}

void pd_tls_shutdown(struct pd_tls *t) { shutdown(t->fd, SHUT_RDWR); }

void pd_tls_free(struct pd_tls *t) {
    if (t) free_connection(t);
}
