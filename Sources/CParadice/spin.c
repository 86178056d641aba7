/* Spinning before sleeping (paradice_spin.h).
 *
 * How long: a spin that found its bytes lengthens the next one (to twice the last, and at least four times
 * what this one took, up to the ceiling), one that ran out halves it. On a loaded machine a side that spins
 * can keep its peer off the core it needs, and every spin runs out: the spin falls to nothing and the side
 * sleeps at once, probing with a short spin every 128th wait to learn when spinning pays again.
 *
 * Yielding: the peer may be waiting for this very CPU. The scheduler's wake-affine placement puts a woken
 * peer beside its waker, and a spin that never yields keeps it off the core until the spin runs out, so
 * every spin fails and both sides learn to sleep (measured on a 2-core VM: 65-75 µs a round trip of a 30 µs
 * call instead of 31). So a spin yields after PARADICE_SPIN_YIELD_NS; and once the bytes came right after a
 * yield that ran someone else (it took more than a µs), the spins of that kind yield at every turn
 * (`beside`), which turns a round trip on one core into two context switches (2 µs instead of 11 with the
 * other core busy). Every 16th spin pauses first again, to find out whether the peer moved to another core,
 * where pausing is faster. BENCHMARKS.md ("Shared-memory rings") has the figures. */
#define _GNU_SOURCE
#include "paradice_spin.h"
#include "cparadice.h"
#include <errno.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PARADICE_SPIN_YIELD_NS 4000L
#define PARADICE_SPIN_PROBE_NS 10000L

static void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

void paradice_spin_init(struct paradice_spin *s, long ceiling) {
    s->budget = ceiling;
    s->since_probe = s->since_pause = 0;
    s->beside = 0;
}

static void learn(struct paradice_spin *s, int found, long waited, long ceiling) {
    if (found) {
        long longer = s->budget == 0 ? 2000 : s->budget * 2;
        s->budget = longer > 4 * waited ? longer : 4 * waited;
    } else {
        s->budget /= 2;
    }
    if (s->budget > ceiling) s->budget = ceiling;
    if (s->budget < 1000 && !found) s->budget = 0;
}

static long begin(struct paradice_spin *s, struct paradice_spin_wait *w, long ceiling, long now) {
    w->started = 1;
    w->budget = s->budget;
    if (w->budget == 0 && (++s->since_probe & 127) == 0) w->budget = ceiling < PARADICE_SPIN_PROBE_NS ? ceiling : PARADICE_SPIN_PROBE_NS;
    w->until = now + w->budget;
    w->next_yield = s->beside && (s->since_pause++ & 15) != 0 ? now : now + PARADICE_SPIN_YIELD_NS;
    w->ran_someone = 0;
    return w->budget;
}

int paradice_spin_begin(struct paradice_spin *s, struct paradice_spin_wait *w, long ceiling) {
    return w->started ? w->budget > 0 : begin(s, w, ceiling, now_ns()) > 0;
}

int paradice_spin_turn(struct paradice_spin *s, struct paradice_spin_wait *w, long ceiling, int learns) {
    long now = now_ns();
    if (!w->started) (void)begin(s, w, ceiling, now);
    if (w->budget == 0) return 0;
    if (now >= w->until) {
        if (learns) learn(s, 0, w->budget, ceiling);
        w->budget = 0;
        return 0;
    }
    if (now < w->next_yield) {
        relax();
        w->ran_someone = 0;
        return 1;
    }
    syscall(SYS_sched_yield);
    long after = now_ns();
    w->ran_someone = after - now > 1000;
    w->next_yield = s->beside ? after : after + PARADICE_SPIN_YIELD_NS;
    return 1;
}

void paradice_spin_found(struct paradice_spin *s, const struct paradice_spin_wait *w, long ceiling) {
    if (!w->started || w->budget == 0) return;   /* found at once, or after sleeping */
    learn(s, 1, w->budget - (w->until - now_ns()), ceiling);
    s->beside = w->ran_someone;
}

long paradice_recv_spinning(int fd, void *bytes, unsigned long n, int *descriptor, struct paradice_spin *s) {
    struct paradice_spin_wait w = { 0 };
    /* A wait that does not spin (the spin fell to nothing, and this is no probe) sleeps at once. */
    if (!paradice_spin_begin(s, &w, PARADICE_SPIN_CEILING_NS))
        return descriptor ? paradice_recv_with_descriptor(fd, bytes, n, descriptor) : (long)recv(fd, bytes, n, 0);
    for (;;) {
        long k = descriptor ? paradice_recv_with_descriptor_flags(fd, bytes, n, descriptor, MSG_DONTWAIT)
                            : (long)recv(fd, bytes, n, MSG_DONTWAIT);
        if (k >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            paradice_spin_found(s, &w, PARADICE_SPIN_CEILING_NS);
            return k;
        }
        if (!paradice_spin_turn(s, &w, PARADICE_SPIN_CEILING_NS, 1)) break;
    }
    return descriptor ? paradice_recv_with_descriptor(fd, bytes, n, descriptor) : (long)recv(fd, bytes, n, 0);
}
