/* Interrupts: a caller that got a signal while the daemon serves its call (PDK_OP_INTERRUPT) has that
 * call end early when it blocks in the backend (pd_interrupt: PD_INTERRUPT), so that the signal means
 * what it means to a local driver's wait. The module sends the interrupt as its own request, which
 * another thread of the pool may read before the serving thread has registered its call: such an early
 * interrupt is kept and applies as the call registers (ids are never reused, so a kept one is never
 * another call's). */
#define _GNU_SOURCE
#include "guestd.h"
#include <string.h>

#define CALLS 512
#define EARLY 64
static struct { uint64_t request; uint32_t handle; struct pd_interruption *interruption; } calls[CALLS];
static uint64_t early[EARLY];
static unsigned early_next;
static pthread_mutex_t interrupts_lock = PTHREAD_MUTEX_INITIALIZER;

void gd_interruptible_begin(uint64_t request, uint32_t handle, struct pd_interruption *i) {
    pd_interruption_init(i);
    pthread_mutex_lock(&interrupts_lock);
    int placed = 0;
    for (int k = 0; k < CALLS && !placed; k++)
        if (!calls[k].request) { calls[k].request = request; calls[k].handle = handle; calls[k].interruption = i; placed = 1; }
    int interrupted = 0;
    for (int k = 0; k < EARLY; k++)
        if (early[k] == request) { early[k] = 0; interrupted = 1; }
    if (interrupted) pd_interrupt(gd.connection, i);   /* applies to the call's first request */
    pthread_mutex_unlock(&interrupts_lock);
    /* Not placed (more calls than the table holds): the call cannot be interrupted and ends when the
       device answers, as before interrupts existed. */
}

void gd_interruptible_end(uint64_t request, struct pd_interruption *i) {
    pthread_mutex_lock(&interrupts_lock);
    for (int k = 0; k < CALLS; k++)
        if (calls[k].request == request && calls[k].interruption == i) { calls[k].request = 0; calls[k].interruption = NULL; }
    pthread_mutex_unlock(&interrupts_lock);
    pd_interruption_destroy(i);
}

/* Under the lock, so that the call's interruption outlives its use here. */
void gd_interrupt(uint64_t request) {
    pthread_mutex_lock(&interrupts_lock);
    int found = 0;
    for (int k = 0; k < CALLS; k++) {
        if (calls[k].request != request) continue;
        pd_interrupt(gd.connection, calls[k].interruption);
        found = 1;
    }
    if (!found) early[early_next++ % EARLY] = request;
    pthread_mutex_unlock(&interrupts_lock);
}

/* The guest's last reference to a file went: no caller waits on its calls any more (the module ended
 * their waits), so those still in the backend end now rather than hold the file (and its release) until
 * the device answers. */
void gd_interrupt_file(uint32_t handle) {
    pthread_mutex_lock(&interrupts_lock);
    for (int k = 0; k < CALLS; k++)
        if (calls[k].request && calls[k].handle == handle) pd_interrupt(gd.connection, calls[k].interruption);
    pthread_mutex_unlock(&interrupts_lock);
}
