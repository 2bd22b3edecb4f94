/*
 * lua_watchdog.c - the route budget without a cost on every instruction.
 *
 * A count hook makes LuaJIT's interpreter stop at every bytecode to count
 * it: about a quarter of a routing decision's instructions, paid by every
 * decision for the sake of the rare one that runs away.  So a state's
 * calls run without a hook, and a thread per state watches them: it wakes
 * every WATCH_TICK, and when it finds the same call still running that it
 * saw at its previous wake, it arms the count hook (budget_hook in
 * lua_gateway.c), which enforces route_budget from then on.  LuaJIT's
 * lua_sethook() may be called asynchronously (its own profiler does so from
 * a timer); the watchdog and the loop thread never call it at the same
 * time (mu).  The call's end disarms the hook.
 *
 * The loop thread's cost per call is two stores and two loads.  After
 * IDLE_TICKS wakes without a call the watchdog sleeps until the next call
 * wakes it, so an idle engine costs no wakeups.
 *
 * Without a thread (pthread_create failed) the hook stays armed for good:
 * slower decisions, the same protection.
 */
#include "internal.h"

#include <time.h>

#define WATCH_TICK_NS 5000000L /* 5 ms */
#define IDLE_TICKS 200         /* about a second without calls */

static void deadline_in(struct timespec *ts, long ns)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_nsec += ns;
    while (ts->tv_nsec >= 1000000000L) {
        ts->tv_nsec -= 1000000000L;
        ts->tv_sec++;
    }
}

static void *watch(void *arg)
{
    sy_watchdog *w = arg;
    unsigned long last = 0;
    int idle = 0;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        unsigned long calls = atomic_load(&w->calls);
        if (calls != last) {
            idle = 0;
            if (calls & 1)
                atomic_store_explicit(&w->noticed_at, sy__monotonic(),
                                      memory_order_relaxed);
        } else if (calls & 1) {
            /* The same call as a tick ago: arm the hook for it. */
            if (!atomic_load_explicit(&w->armed, memory_order_relaxed)) {
                atomic_store_explicit(&w->armed_for, calls, memory_order_relaxed);
                lua_sethook(w->L, w->hook, LUA_MASKCOUNT, w->hook_every);
                atomic_store_explicit(&w->armed, 1, memory_order_relaxed);
            }
        } else if (++idle >= IDLE_TICKS) {
            /* Idle: sleep until sy__watchdog_enter() signals.  The store
             * and load below pair with its store and load (both seq_cst),
             * so a call that starts now is either seen here or signals. */
            atomic_store(&w->sleeping, 1);
            if (atomic_load(&w->calls) == last && !w->stop)
                pthread_cond_wait(&w->wake, &w->mu);
            atomic_store(&w->sleeping, 0);
            idle = 0;
            continue;
        }
        last = calls;
        struct timespec ts;
        deadline_in(&ts, WATCH_TICK_NS);
        int rc;
        do {
            rc = pthread_cond_timedwait(&w->wake, &w->mu, &ts);
        } while (rc == 0 && !w->stop && atomic_load(&w->calls) == last);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int sy__watchdog_start(sy_watchdog *w, lua_State *L, lua_Hook hook, int every)
{
    w->L = L;
    w->hook = hook;
    w->hook_every = every;
    atomic_init(&w->calls, 0);
    atomic_init(&w->armed, 0);
    atomic_init(&w->sleeping, 0);
    atomic_init(&w->noticed_at, 0.);
    atomic_init(&w->armed_for, 0);
    w->depth = 0;
    w->stop = 0;
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        goto no_thread;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int ok = pthread_cond_init(&w->wake, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (!ok)
        goto no_thread;
    if (pthread_mutex_init(&w->mu, NULL) != 0) {
        pthread_cond_destroy(&w->wake);
        goto no_thread;
    }
    if (pthread_create(&w->thread, NULL, watch, w) != 0) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->wake);
        goto no_thread;
    }
    w->running = 1;
    return 0;
no_thread:
    w->running = 0;
    lua_sethook(L, hook, LUA_MASKCOUNT, every);
    atomic_store_explicit(&w->armed, 1, memory_order_relaxed);
    return -1;
}

void sy__watchdog_stop(sy_watchdog *w)
{
    if (!w->running)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->wake);
    w->running = 0;
}

void sy__watchdog_enter(sy_watchdog *w)
{
    if (w->depth++ > 0 || !w->running)
        return; /* a nested call is part of the outer one */
    atomic_store(&w->calls, atomic_load_explicit(&w->calls, memory_order_relaxed) + 1);
    if (atomic_load(&w->sleeping)) {
        pthread_mutex_lock(&w->mu);
        pthread_cond_signal(&w->wake);
        pthread_mutex_unlock(&w->mu);
    }
}

void sy__watchdog_leave(sy_watchdog *w)
{
    if (--w->depth > 0 || !w->running)
        return;
    atomic_store_explicit(&w->calls,
                          atomic_load_explicit(&w->calls, memory_order_relaxed) + 1,
                          memory_order_release);
    if (atomic_load_explicit(&w->armed, memory_order_relaxed)) {
        pthread_mutex_lock(&w->mu);
        lua_sethook(w->L, NULL, 0, 0);
        atomic_store_explicit(&w->armed, 0, memory_order_relaxed);
        pthread_mutex_unlock(&w->mu);
    }
}

double sy__watchdog_call_started(const sy_watchdog *w, double now)
{
    /* The hook may also have been armed for a call that ended just before
     * (the watchdog read the counter, then the call ended): this call then
     * starts its clock now. */
    if (!w->running || atomic_load_explicit(&w->armed_for, memory_order_relaxed) !=
                           atomic_load_explicit(&w->calls, memory_order_relaxed))
        return now;
    return atomic_load_explicit(&w->noticed_at, memory_order_relaxed);
}
