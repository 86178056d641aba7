/*
 * TLS 1.3 between frontends and the backend, on OpenSSL: mutual certificates or a pre-shared key. One layer
 * for both sides (the backend imports it from Swift, the frontend core links it into the preload and the
 * guest daemon), so both speak the same protocol options and name peers the same way.
 *
 * A context holds what the side proves itself with and what it accepts (certificate, key and CA files, or
 * a PSK file); a connection is a handshake done on an already connected socket. Once made, a connection may
 * be read by one thread while others write: every OpenSSL call on it is under its own lock, and waiting for
 * the socket happens outside that lock. Its I/O uses system calls directly (no libc wrappers: inside a
 * program the preload wraps read, write and poll).
 *
 * PSK file: one `IDENTITY:HEXKEY` line per key (`#` comments and blank lines allowed); a key is at least 16
 * bytes. A backend accepts every identity in its file; a frontend's file holds exactly one.
 */
#ifndef PARADICE_TLS_H
#define PARADICE_TLS_H
#include <stddef.h>

enum pd_tls_role { PD_TLS_CLIENT = 0, PD_TLS_SERVER = 1 };

/* What a side authenticates with. Paths are NULL when not given. Certificates need cert, key and ca
 * together; a PSK needs psk_file. A backend may have both (a guest then uses either). */
struct pd_tls_settings {
    const char *cert, *key, *ca, *psk_file;
};

struct pd_tls_context;
struct pd_tls;

/* A context for `role`, or NULL with a one-line reason in `error`. */
struct pd_tls_context *pd_tls_context_new(int role, const struct pd_tls_settings *settings, char *error, size_t error_size);
void pd_tls_context_free(struct pd_tls_context *context);

/* The TLS handshake on connected socket `fd` (which it makes non-blocking; it stays the caller's to close).
 * Gives up after `timeout_ms` without progress. A connection, or NULL with a one-line reason in `error`
 * (a refused peer certificate names why). */
struct pd_tls *pd_tls_handshake(struct pd_tls_context *context, int fd, int timeout_ms, char *error, size_t error_size);

/* Like recv: bytes read (> 0), 0 at the peer's end of stream, -1 with errno (EIO for a TLS failure). */
long pd_tls_read(struct pd_tls *t, void *buffer, size_t length);
/* Like send with MSG_NOSIGNAL: bytes written (> 0, possibly fewer than `length`), or -1 with errno
 * (EPIPE once the peer has gone). */
long pd_tls_write(struct pd_tls *t, const void *buffer, size_t length);
/* Why the last read failed in TLS itself (an alert: "tlsv13 alert certificate required"), or "". A backend
 * that refuses a guest's certificate says so only after the guest's handshake has ended: its first read. */
const char *pd_tls_failure(const struct pd_tls *t);
/* How long a read waits for the peer's bytes before failing with EAGAIN (as SO_RCVTIMEO); 0: for ever. */
void pd_tls_set_read_timeout(struct pd_tls *t, int timeout_ms);
/* Wakes a thread blocked in read or write (shutdown(2) of the socket); later calls fail. */
void pd_tls_shutdown(struct pd_tls *t);
/* Frees the connection without a word on the socket (nor closing it): after a fork, or when the socket is gone. */
void pd_tls_free(struct pd_tls *t);

/* Who the peer proved to be: "cert" with the subject (RFC 2253) and subject alternative names of its
 * certificate ("DNS:a,IP:10.0.0.2", "" when none), or "psk" with its PSK identity (subject "", names ""). */
const char *pd_tls_peer_kind(const struct pd_tls *t);
const char *pd_tls_peer_subject(const struct pd_tls *t);
const char *pd_tls_peer_names(const struct pd_tls *t);
const char *pd_tls_peer_psk_identity(const struct pd_tls *t);
/* The negotiated cipher suite ("TLS_AES_256_GCM_SHA384"). */
const char *pd_tls_cipher(const struct pd_tls *t);
#endif
