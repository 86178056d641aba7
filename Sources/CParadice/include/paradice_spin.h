/* Waiting by spinning before sleeping, with how long to spin learned per kind of wait (spin.c). A wait that
 * sleeps costs the waking side a wake-up, which on a virtual CPU that halted is tens of µs, far more than a
 * forwarded call; a wait that spins costs CPU time. Shared by the shared-memory rings and socket receives. */
#ifndef PARADICE_SPIN_H
#define PARADICE_SPIN_H

#define PARADICE_SPIN_CEILING_NS 200000L   /* the longest a wait spins */

/* What one kind of wait learned; touched only by the thread that waits. */
struct paradice_spin {
    long budget;                       /* ns */
    unsigned since_probe;
    int beside;                        /* the peer seems to share this CPU: yield at every turn */
    unsigned since_pause;
};

/* One wait's spin. */
struct paradice_spin_wait {
    long until, budget, next_yield;
    int ran_someone;                   /* the last turn was a yield that let someone else run */
    int started;
};

/* A fresh kind of wait: it spins up to `ceiling` ns at first. */
void paradice_spin_init(struct paradice_spin *s, long ceiling);
/* Begins wait w (its first turn does, if this does not): whether it spins at all. */
int paradice_spin_begin(struct paradice_spin *s, struct paradice_spin_wait *w, long ceiling);
/* One turn of wait w (begun at its first turn): 1 after a pause or a yield while the spin lasts, 0 once it
 * ran out (the caller then sleeps). A spin that runs out halves the next one unless `learn` is 0 (the
 * wait holds a wake-up of a sleeping peer, which says nothing of spinning). */
int paradice_spin_turn(struct paradice_spin *s, struct paradice_spin_wait *w, long ceiling, int learn);
/* Wait w found what it waited for: a spin that found it lengthens the next one. */
void paradice_spin_found(struct paradice_spin *s, const struct paradice_spin_wait *w, long ceiling);

/* recv(2) of a connected socket, spinning first on non-blocking receives as `s` learned, then blocking;
 * with `descriptor`, as paradice_recv_with_descriptor. The result and errno are recv's. */
long paradice_recv_spinning(int fd, void *bytes, unsigned long n, int *descriptor, struct paradice_spin *s);

#endif
