/*
 * paradice_vchan.h — a Xen vchan (libxenvchan: two rings in pages granted between two domains, an event
 * channel for notification) as a blocking byte stream, for the backend (a server per guest domain) and the
 * frontend core (a client in the guest). libxenvchan is loaded when a vchan is first opened
 * (libxenvchan.so.4.17, from Debian's libxenmisc4.17), so that nothing else needs the Xen libraries.
 * Several threads may use one stream: sends and receives are serialized inside.
 */
#ifndef PARADICE_VCHAN_H
#define PARADICE_VCHAN_H
#include <stddef.h>

struct paradice_vchan;

/* `vchan:DOMID:PATH` (the "vchan:" already taken off): the peer's domain id and the xenstore path the
 * server publishes its rings under. 0, or -1 with *why (a static string). */
int paradice_vchan_parse(const char *rest, int *domain, char *path, size_t path_size, const char **why);

/* Whether vchans can be opened here (libxenvchan loaded, Xen's devices present): 0, or -1 with errno and
 * *why as paradice_vchan_open gives them. */
int paradice_vchan_probe(int server, const char **why);

/* A server for domain `domain` at `path` (the backend: it waits for the guest to connect), or a client of
 * the server in `domain` at `path` (a guest). NULL with errno and *why: ENOSYS (no libxenvchan here),
 * ENODEV (Xen is not running here), or the library's error. */
struct paradice_vchan *paradice_vchan_open(int server, int domain, const char *path, const char **why);

/* Some of the n bytes (at least one): how many; 0 at the end of the stream (receive only); -1 with errno
 * (EPIPE: the peer closed; ESHUTDOWN: paradice_vchan_shutdown; EIO: the rings broke). Blocks meanwhile. */
long paradice_vchan_send(struct paradice_vchan *v, const void *bytes, size_t n);
long paradice_vchan_receive(struct paradice_vchan *v, void *bytes, size_t n);

/* Bounds each blocked receive (0: no bound): one that waits that long fails with EAGAIN. */
void paradice_vchan_set_receive_timeout(struct paradice_vchan *v, int milliseconds);

/* A server: waits until its client has connected. 0, or -1 with errno (ESHUTDOWN, EPIPE: it came and went). */
int paradice_vchan_wait_connected(struct paradice_vchan *v);

/* Wakes every blocked call, which then fails with ESHUTDOWN; the stream stays until paradice_vchan_close. */
void paradice_vchan_shutdown(struct paradice_vchan *v);
/* Closes it (the peer is told), or in a forked child only lets its copy go (the parent's goes on). */
void paradice_vchan_close(struct paradice_vchan *v);
#endif
