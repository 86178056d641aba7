/* The preload's connection to the backend: one per process, shared by its threads, made on first use
 * from PARADICE_BACKEND. The protocol itself is the frontend core's (Sources/ParadiceFrontendCore). */
#include "shim.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pd_connection pd_conn = PD_CONNECTION_INIT;
static pthread_mutex_t connect_lock = PTHREAD_MUTEX_INITIALIZER;
static int complained;
/* A PD_FORK ticket for the next handshake to claim: a forked child's (its token is then the parent's
 * connection's), or a new program's from the image before it, with that image's token. */
static uint32_t claim_ticket, claim_token;
static pid_t process_pid;      /* this process, as fork's child handler last saw it */

/* A fork while another thread connects, or holds the connection's state, would leave the child a lock
 * held for ever; a send in flight (which may block) leaves its lock to the parent's stream, not the
 * child's new one, and the threads waiting for replies are not the child's. */
static void lock_for_fork(void) {
    pthread_mutex_lock(&connect_lock);
    pthread_mutex_lock(&pd_conn.lock);
}
static void unlock_after_fork(void) {
    pthread_mutex_unlock(&pd_conn.lock);
    pthread_mutex_unlock(&connect_lock);
}
static void child_after_fork(void) {
    process_pid = getpid();
    pthread_mutex_init(&pd_conn.send_lock, NULL);
    pthread_cond_init(&pd_conn.cond, NULL);
    unlock_after_fork();
}
__attribute__((constructor)) static void guard_fork(void) {
    process_pid = getpid();
    pthread_atfork(lock_for_fork, unlock_after_fork, child_after_fork);
}

void pd_log(const char *format, ...) {
    char line[512];
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(line, sizeof line - 1, format, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    ssize_t ignored = pd_real.write ? pd_real.write(2, line, n) : -1;
    (void)ignored;
}

static void log_line(void *unused, const char *line) {
    (void)unused;
    pd_log("%s", line);
}

static void on_event(void *unused, uint32_t handle, short revents) {
    (void)unused;
    pd_event(handle, revents);
}

uint32_t pd_session_token(void) { return pd_conn_token(&pd_conn); }

/* Connects (once per process) and shakes hands. */
int pd_connect(void) {
    if (pd_conn_live(&pd_conn)) return 0;
    pthread_mutex_lock(&connect_lock);
    if (pd_conn_live(&pd_conn)) { pthread_mutex_unlock(&connect_lock); return 0; }
    pd_conn.log = log_line;
    pd_conn.on_event = on_event;
    uint32_t join_session = 0, join_token = 0;
    if (pd_conn_inherited(&pd_conn)) {
        /* Inherited across fork: the parent's connection is not ours to use, but its files are: the child
         * joins the parent's session with a connection of its own. */
        pd_conn_forget(&pd_conn, &join_session, &join_token);
    }
    if (claim_ticket) {   /* what the parent held at the fork, or the image before this one at its exec */
        join_session = claim_ticket;
        if (claim_token) join_token = claim_token;
    }
    claim_ticket = claim_token = 0;
    const char *url = getenv("PARADICE_BACKEND");
    if (!url) { pthread_mutex_unlock(&connect_lock); errno = ENOENT; return -1; }
    pd_conn.address = url;   /* the environment's string: it outlives the connection */
    struct pd_stream stream;
    struct pd_security security = pd_security_from_environment();
    if (pd_conn_dial_secure(&pd_conn, url, &security, &stream) != 0) {
        int e = errno;
        if (!complained) pd_log("paradice: cannot reach the backend at %s: %s", url, pd_conn.why[0] ? pd_conn.why : strerror(e));
        complained = 1;
        pthread_mutex_unlock(&connect_lock);
        errno = e;
        return -1;
    }
    struct pd_hello hello = { PD_MAGIC, PD_VERSION_MAJOR, PD_VERSION_MINOR, PD_CAP_FD_SLOTS, (uint32_t)getpid(),
                              join_session, join_token };
    const char *name = program_invocation_short_name;
    struct pd_frame reply;
    const char *why = NULL;
    if (pd_conn_start(&pd_conn, &stream, &hello, name, strlen(name), &reply, &why) != 0) {
        int refused = errno == EACCES;   /* TLS: the backend refused this frontend's credentials */
        if (!complained) {
            pd_log("paradice: the backend at %s: %s", url, why);
            if (!refused) pd_log("paradice: the backend at %s does not speak protocol %d", url, PD_VERSION_MAJOR);
        }
        complained = 1;
        pthread_mutex_unlock(&connect_lock);
        errno = refused ? EACCES : EPROTO;
        return -1;
    }
    pd_frame_release(&pd_conn, &reply);
    pthread_mutex_unlock(&connect_lock);
    return 0;
}

/* As the process exits (exit(), a return from main), say goodbye and wait for the answer: the backend
 * drops this process's references first, as the kernel closes an exiting process's descriptors before
 * its parent's wait returns (a parent that reopens a device its child used finds it released). After
 * _exit or a kill the backend releases them when it sees the connection close, a little later. */
__attribute__((destructor)) static void pd_goodbye(void) {
    if (!pd_conn_live(&pd_conn)) return;
    fflush(NULL);   /* stdio streams over forwarded files write while their session lives */
    pd_conn_goodbye(&pd_conn);
}

/* Transports that carry one session at a time: a child cannot connect beside its parent. */
static int one_session_at_a_time(const char *address) {
    static const char *const schemes[] = { "serial:", "ivshmem:", "vchan:" };
    for (size_t i = 0; i < sizeof schemes / sizeof *schemes; i++)
        if (address && strncmp(address, schemes[i], strlen(schemes[i])) == 0) return 1;
    return 0;
}

/* A PD_FORK: 0 asks a ticket, a ticket gives it back. Returns the ticket asked, or 0; errno is kept. */
static uint32_t fork_call(uint32_t ticket) {
    if (!pd_conn_live(&pd_conn)) return 0;   /* a ticket is of the live connection's session: never reconnect */
    int e = errno;
    int64_t r = pd_call_without_body(PD_FORK, ticket);
    errno = e;
    return ticket == 0 && r > 0 && r <= UINT32_MAX ? (uint32_t)r : 0;
}

/* As the process forks (the parent, before): a ticket that holds every file of the process's table for
 * the child, whatever the parent closes or opens meanwhile; 0 without files, over a transport the child
 * cannot connect by, or from a backend that has no PD_FORK (the child then joins the parent's session as
 * it is when it connects). */
uint32_t pd_fork_ticket(void) {
    if (!pd_conn_live(&pd_conn) || !pd_has_files() || one_session_at_a_time(pd_conn.address)) return 0;
    return fork_call(0);
}

/* A child of vfork (or of clone with CLONE_VM, as posix_spawn makes) runs in its parent's memory until it
 * execs, without fork's handlers: to the connection it is one more thread of the parent. */
int pd_in_parents_memory(void) { return getpid() != process_pid; }

uint32_t pd_exec_ticket(uint32_t *token) {
    pid_t owner = pd_conn_owner(&pd_conn, token);
    if (!owner || owner != process_pid || one_session_at_a_time(pd_conn.address)) return 0;
    return fork_call(0);
}

void pd_return_ticket(uint32_t ticket) { (void)fork_call(ticket); }

int pd_claim_exec_ticket(uint32_t ticket, uint32_t token) {
    claim_ticket = ticket;
    claim_token = token;
    int connected = pd_connect() == 0;
    claim_ticket = claim_token = 0;   /* claimed, or gone: a later connection starts afresh */
    return connected && pd_session_token() == token;
}

/* The child, just forked: it claims its ticket at once, since the backend keeps it only so long. */
void pd_claim_fork_ticket(uint32_t ticket) {
    int e = errno;
    claim_ticket = ticket;
    (void)pd_connect();
    errno = e;
}

int pd_call(uint16_t op, uint16_t flags, uint32_t handle, struct pd_buffer *request, struct pd_frame *reply) {
    if (pd_connect() != 0) return -1;
    return pd_conn_call(&pd_conn, op, flags, handle, request, reply);
}

int64_t pd_call_without_body(uint16_t op, uint32_t handle) {
    struct pd_buffer b;
    pd_buffer_init(&b, 0);
    struct pd_frame reply = { .descriptor = -1 };
    int64_t r = -1;
    if (pd_call(op, 0, handle, &b, &reply) == 0) {
        r = pd_reply_result(&reply, NULL, NULL);
        pd_frame_release(&pd_conn, &reply);
    }
    pd_buffer_free(&b);
    return r;
}

void pd_frame_free(struct pd_frame *f) { pd_frame_release(&pd_conn, f); }

void pd_start_event_reader(void) {
    if (pd_connect() != 0) return;
    pd_conn_start_event_reader(&pd_conn);
}
