/*
 * pool.c - the connections of one node: warm-up to a minimum, growth to a
 * maximum, a wait queue with a deadline, idle timeout and maximum lifetime,
 * reconnect with exponential backoff and jitter, and detection of broken
 * connections.  A failed connect marks the node down at once (the fast
 * path to failing over reads); marking it up is left to the health poller.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void maintenance_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void reconnect_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void waiter_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents);

#define MAINTENANCE_INTERVAL 1.0

static struct ev_loop *pool_loop(const sy_pool *pool)
{
    return pool->node->engine->loop;
}

void sy__pool_init(sy_pool *pool, sy_node *node, const sy_pool_settings *s,
                   int relay)
{
    memset(pool, 0, sizeof *pool);
    pool->node = node;
    pool->relay = relay;
    pool->set = *s;
    sy_list_init(&pool->all);
    sy_list_init(&pool->idle);
    sy_list_init(&pool->waiters);
    ev_init(&pool->maintenance, maintenance_cb);
    ev_init(&pool->reconnect, reconnect_cb);
    pool->rand_state = (uint64_t)(uintptr_t)pool ^ 0x5DEECE66Dull;
}

void sy__pool_apply_settings(sy_pool *pool, const sy_pool_settings *s)
{
    pool->set = *s;
}

/* Which of the node's name-lookup waiters this pool is. */
static int dns_waiter(const sy_pool *pool)
{
    return pool->relay ? SY_DNS_FOR_RELAY_POOL : SY_DNS_FOR_POOL;
}

static void open_one(sy_pool *pool)
{
    char err[512];
    const sy_conn_target *target;
    int rc = sy__dns_target(pool->node, dns_waiter(pool), &target, err, sizeof err);
    if (rc < 0) {
        sy__pool_conn_failed(pool, NULL, err);
        return;
    }
    if (rc > 0) {
        /* The node's name resolves off the loop; sy__pool_dns_done() opens
         * this connection then.  Until then it counts as connecting. */
        pool->n_resolving++;
        pool->n_total++;
        pool->n_connecting++;
        return;
    }
    sy_conn *conn = sy__conn_start(pool, target, err, sizeof err);
    if (!conn) {
        sy__pool_conn_failed(pool, NULL, err);
        return;
    }
    sy_list_insert_tail(&pool->all, &conn->link_all);
    pool->n_total++;
    pool->n_connecting++;
}

/* Opens connections up to the minimum, or to what waiters need, unless a
 * reconnect backoff is running. */
static void fill(sy_pool *pool)
{
    if (pool->closing || !pool->started || ev_is_active(&pool->reconnect))
        return;
    /* Behind the proxy the query pools serve only the auth query: no
     * warm connections there. */
    int want = !pool->relay && pool->node->engine->relay_mode ? 0 : pool->set.min;
    int needed = pool->n_busy + pool->n_waiting;
    if (needed > want)
        want = needed;
    if (want > pool->set.max)
        want = pool->set.max;
    /* A node that is down gets no connections: the health poller finds
     * it again, and sy__pool_node_up() fills the pool then. */
    if (!pool->node->healthy)
        return;
    while (pool->n_total < want && !ev_is_active(&pool->reconnect))
        open_one(pool);
}

void sy__pool_dns_done(sy_pool *pool, const char *err)
{
    int k = pool->n_resolving;
    pool->n_resolving = 0;
    pool->n_total -= k;
    pool->n_connecting -= k;
    if (pool->closing)
        return;
    if (err) {
        /* A name that does not resolve is a connect that failed: the node
         * goes down, waiters fail, the reconnect backs off. */
        sy__pool_conn_failed(pool, NULL, err);
        return;
    }
    /* The opens that waited, now with the fresh addresses; a connect that
     * fails at once starts the backoff, which stops the rest as fill()
     * would. */
    while (k-- > 0 && !pool->closing && !ev_is_active(&pool->reconnect))
        open_one(pool);
    fill(pool);
}

void sy__pool_start(sy_pool *pool)
{
    if (pool->started)
        return;
    pool->started = 1;
    ev_timer_set(&pool->maintenance, MAINTENANCE_INTERVAL,
                 MAINTENANCE_INTERVAL);
    ev_timer_start(pool_loop(pool), &pool->maintenance);
    fill(pool);
}

/* Gives a HELD connection to the first waiter. */
static void hand_to_waiter(sy_pool *pool, sy_conn *conn)
{
    sy_list *l = sy_list_pop_head(&pool->waiters);
    sy_waiter *w = sy_container_of(l, sy_waiter, link);
    pool->n_waiting--;
    w->queued = 0;
    ev_timer_stop(pool_loop(pool), &w->timeout);
    pool->n_busy++;
    w->ready(w, conn, 0);
}

static void make_idle(sy_pool *pool, sy_conn *conn)
{
    sy__conn_set_state(conn, SY_CONN_IDLE);
    conn->idle_since = ev_now(pool_loop(pool));
    conn->idle_since_mono = sy__monotonic();
    /* LIFO: the most recently used connection is reused first, so surplus
     * connections stay idle long enough to reach idle_timeout. */
    sy_list_insert_head(&pool->idle, &conn->link_idle);
    pool->n_idle++;
    /* Watch idle connections so a server-side close is noticed now, not
     * when the next query fails. */
    sy__conn_set_watch(conn, EV_READ);
}

static void remove_conn(sy_pool *pool, sy_conn *conn)
{
    if (conn->state == SY_CONN_IDLE && !sy_list_empty(&conn->link_idle)) {
        sy_list_remove(&conn->link_idle);
        pool->n_idle--;
    } else if (conn->state == SY_CONN_CONNECTING) {
        pool->n_connecting--;
    }
    sy_list_remove(&conn->link_all);
    pool->n_total--;
    sy__conn_close(conn);
}

static void fail_waiters(sy_pool *pool, int err)
{
    sy_list *l;
    while ((l = sy_list_pop_head(&pool->waiters)) != NULL) {
        sy_waiter *w = sy_container_of(l, sy_waiter, link);
        pool->n_waiting--;
        w->queued = 0;
        ev_timer_stop(pool_loop(pool), &w->timeout);
        w->ready(w, NULL, err);
    }
}

void sy__pool_conn_connected(sy_pool *pool, sy_conn *conn)
{
    pool->n_connecting--;
    pool->backoff = 0;
    pool->last_error[0] = '\0';
    /* A connect that succeeds says little during a shutdown or a flap;
     * marking the node up again is the health poller's call (rise). */
    if (pool->closing) {
        sy_list_remove(&conn->link_all);
        pool->n_total--;
        sy__conn_close(conn);
        return;
    }
    if (!sy_list_empty(&pool->waiters)) {
        sy__conn_set_state(conn, SY_CONN_HELD); /* fresh from connecting */
        hand_to_waiter(pool, conn);
    } else {
        make_idle(pool, conn);
    }
}

static void schedule_reconnect(sy_pool *pool)
{
    double lo = pool->set.reconnect_min > 0 ? pool->set.reconnect_min : 0.1;
    double hi = pool->set.reconnect_max > lo ? pool->set.reconnect_max : lo;
    pool->backoff = pool->backoff > 0 ? pool->backoff * 2 : lo;
    if (pool->backoff > hi)
        pool->backoff = hi;
    /* Full jitter on the upper half keeps many proxies from reconnecting in
     * lock step after a shared outage. */
    double r = (double)(sy__rand_next(&pool->rand_state) >> 11) / 9007199254740992.0;
    double delay = pool->backoff * (0.5 + 0.5 * r);
    ev_timer_stop(pool_loop(pool), &pool->reconnect);
    ev_timer_set(&pool->reconnect, delay, 0.);
    ev_timer_start(pool_loop(pool), &pool->reconnect);
}

static void conn_failed(sy_pool *pool, sy_conn *conn, const char *why);

void sy__pool_conn_failed(sy_pool *pool, sy_conn *conn, const char *why)
{
    /* Marking the node down fails waiters, which may drop the last
     * reference of a node a reload removed (and destroy this pool). */
    sy_node *node = pool->node;
    sy__node_ref(node);
    conn_failed(pool, conn, why);
    sy__node_unref(node);
}

static void conn_failed(sy_pool *pool, sy_conn *conn, const char *why)
{
    char msg[sizeof pool->last_error];
    sy__fmt(msg, sizeof msg, "%s", why);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    memcpy(pool->last_error, msg, sizeof msg);
    if (conn)
        remove_conn(pool, conn);
    if (pool->closing) {
        sy__engine_check_stopped(pool->node->engine);
        return;
    }
    sy__log(pool->node->engine, SY_LOG_WARN, "node %s: connect failed: %s",
            pool->node->full_name, msg);
    sy__node_set_health(pool->node, 0, msg);
    /* Waiters would only sit out their timeout on a node that refuses
     * connections: fail them now so reads can be retried elsewhere. */
    if (pool->n_connecting == 0)
        fail_waiters(pool, SY_ECONN);
    if (!pool->closing)
        schedule_reconnect(pool);
}

static void reconnect_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_pool *pool = sy_container_of(w, sy_pool, reconnect);
    if (pool->closing)
        return;
    fill(pool);
}

void sy__pool_node_down(sy_pool *pool)
{
    if (pool->closing)
        return;
    /* Nothing connects to a node that is down, so nothing would serve
     * them: fail the waiters now, so reads can be retried elsewhere. */
    ev_timer_stop(pool_loop(pool), &pool->reconnect);
    fail_waiters(pool, SY_ECONN);
}

void sy__pool_node_up(sy_pool *pool)
{
    if (pool->closing || !pool->started)
        return;
    /* The poller just got through: no reason to wait out a backoff. */
    ev_timer_stop(pool_loop(pool), &pool->reconnect);
    pool->backoff = 0;
    fill(pool);
}

static void waiter_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_waiter *wt = sy_container_of(w, sy_waiter, timeout);
    sy_pool *pool = wt->pool;
    sy_list_remove(&wt->link);
    pool->n_waiting--;
    wt->queued = 0;
    pool->node->c.exhausted++;
    sy__emit(pool->node->engine, SY_EVENT_POOL_EXHAUSTED, pool->node->cluster,
             pool->node->full_name,
             "no connection to %s became free within %.3g s (max %d)",
             pool->node->full_name, pool->set.acquire_timeout, pool->set.max);
    wt->ready(wt, NULL, SY_ETIMEOUT);
}

/* A relay connection is read only by the proxy while it holds it; idle,
 * whatever arrives (a ParameterStatus after a reload, a FATAL before the
 * server closes) is read here and dropped.  0 when the stream ended. */
static int relay_drain_idle(sy_conn *conn)
{
    char buf[512];
    for (;;) {
        ptrdiff_t n = sy__relay_read(conn->relay, buf, sizeof buf);
        if (n == SY_RELAY_WANT_READ || n == SY_RELAY_WANT_WRITE)
            return 1;
        if (n <= 0)
            return 0;
    }
}

/* The server may have closed an idle connection since the loop last looked
 * (a terminated backend, a restart): its last words and the end of the
 * stream sit unread in the socket.  One non-blocking peek tells, and costs
 * far less than failing a write that can never be retried. */
static int idle_conn_alive(sy_conn *conn)
{
    /* A connection reused within a few milliseconds (the normal case under
     * load) had no time to be closed unnoticed: skip the system call. */
    if (sy__monotonic() - conn->idle_since_mono < 0.005)
        return conn->relay || PQstatus(conn->pg) == CONNECTION_OK;
    if (conn->relay)
        return relay_drain_idle(conn);
    char byte;
    ssize_t n = recv(PQsocket(conn->pg), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) &&
               PQstatus(conn->pg) == CONNECTION_OK;
    if (n == 0)
        return 0;
    /* Something arrived while idle: let libpq read it (a notice, or a
     * FATAL before the close) and read again to see the end of stream. */
    PQconsumeInput(conn->pg);
    PQconsumeInput(conn->pg);
    return PQstatus(conn->pg) == CONNECTION_OK;
}

void sy__pool_acquire(sy_pool *pool, sy_waiter *w, double timeout)
{
    w->pool = pool;
    w->queued = 0;
    if (pool->closing) {
        w->ready(w, NULL, SY_ESTOPPED);
        return;
    }
    sy_list *l;
    while ((l = sy_list_pop_head(&pool->idle)) != NULL) {
        sy_conn *conn = sy_container_of(l, sy_conn, link_idle);
        pool->n_idle--;
        if (!idle_conn_alive(conn)) {
            sy_list_remove(&conn->link_all);
            pool->n_total--;
            sy__conn_close(conn);
            continue;
        }
        /* The read watch stays on: toggling it costs an epoll_ctl per
         * query, and conn.c tells idle, busy and held apart. */
        sy__conn_set_state(conn, SY_CONN_HELD);
        pool->n_busy++;
        w->ready(w, conn, 0);
        return;
    }
    if (!pool->node->healthy) {
        w->ready(w, NULL, SY_ECONN); /* down: nothing connects until it is up */
        return;
    }
    sy_list_insert_tail(&pool->waiters, &w->link);
    pool->n_waiting++;
    w->queued = 1;
    ev_init(&w->timeout, waiter_timeout_cb);
    if (timeout <= 0)
        timeout = pool->set.acquire_timeout;
    if (timeout > 0) {
        ev_timer_set(&w->timeout, timeout, 0.);
        ev_timer_start(pool_loop(pool), &w->timeout);
    }
    if (!pool->started)
        sy__pool_start(pool);
    else
        fill(pool);
}

void sy__pool_cancel(sy_pool *pool, sy_waiter *w)
{
    if (!w->queued)
        return;
    sy_list_remove(&w->link);
    pool->n_waiting--;
    w->queued = 0;
    ev_timer_stop(pool_loop(pool), &w->timeout);
}

void sy__pool_release(sy_pool *pool, sy_conn *conn, int broken)
{
    pool->n_busy--;
    double now = ev_now(pool_loop(pool));
    int expired = pool->set.max_lifetime > 0 &&
                  now - conn->created_at >= pool->set.max_lifetime;
    /* A relay connection's libpq state is frozen at the handover: the
     * proxy says broken when it is not idle. */
    int dirty = !conn->relay && (PQstatus(conn->pg) != CONNECTION_OK ||
                                 PQtransactionStatus(conn->pg) != PQTRANS_IDLE);
    if (broken || conn->tainted || pool->closing || expired || dirty) {
        if (broken && !conn->relay)
            sy__log(pool->node->engine, SY_LOG_INFO,
                    "node %s: connection broken: %s", pool->node->full_name,
                    PQerrorMessage(conn->pg));
        sy_list_remove(&conn->link_all);
        pool->n_total--;
        sy__conn_close(conn);
        if (pool->closing) {
            sy__engine_check_stopped(pool->node->engine);
            return;
        }
        /* A broken connection may mean the node went away: a fresh connect
         * tells, and marks the node down if it fails. */
        if (broken && pool->n_connecting == 0 && !ev_is_active(&pool->reconnect))
            open_one(pool);
        fill(pool);
        return;
    }
    if (!sy_list_empty(&pool->waiters)) {
        hand_to_waiter(pool, conn);
        return;
    }
    make_idle(pool, conn);
}

void sy__pool_conn_idle_event(sy_pool *pool, sy_conn *conn)
{
    if (conn->relay) {
        if (relay_drain_idle(conn))
            return;
    } else if (PQconsumeInput(conn->pg) && PQstatus(conn->pg) == CONNECTION_OK) {
        PGnotify *n;
        while ((n = PQnotifies(conn->pg)) != NULL)
            PQfreemem(n);
        return;
    }
    sy__log(pool->node->engine, SY_LOG_INFO,
            "node %s: idle connection closed by the server",
            pool->node->full_name);
    remove_conn(pool, conn);
    if (pool->n_connecting == 0 && !ev_is_active(&pool->reconnect))
        open_one(pool);
}

static void maintenance_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    sy_pool *pool = sy_container_of(w, sy_pool, maintenance);
    double now = ev_now(loop);
    sy_list *l = pool->idle.prev;
    /* Walk from the tail: the least recently used are there. */
    while (l != &pool->idle) {
        sy_list *prev = l->prev;
        sy_conn *conn = sy_container_of(l, sy_conn, link_idle);
        int surplus = pool->n_total > pool->set.min;
        int idle_too_long = pool->set.idle_timeout > 0 &&
                            now - conn->idle_since >= pool->set.idle_timeout;
        int too_old = pool->set.max_lifetime > 0 &&
                      now - conn->created_at >= pool->set.max_lifetime;
        if ((surplus && idle_too_long) || too_old)
            remove_conn(pool, conn);
        l = prev;
    }
    fill(pool);
}

void sy__pool_close(sy_pool *pool)
{
    pool->closing = 1;
    struct ev_loop *loop = pool_loop(pool);
    /* Opens that waited for the name lookup are dropped, not started. */
    pool->n_total -= pool->n_resolving;
    pool->n_connecting -= pool->n_resolving;
    pool->n_resolving = 0;
    sy__dns_forget(pool->node, dns_waiter(pool));
    ev_timer_stop(loop, &pool->maintenance);
    ev_timer_stop(loop, &pool->reconnect);
    fail_waiters(pool, SY_ESTOPPED);
    sy_list *l = pool->all.next;
    while (l != &pool->all) {
        sy_list *next = l->next;
        sy_conn *conn = sy_container_of(l, sy_conn, link_all);
        if (conn->state != SY_CONN_HELD && conn->state != SY_CONN_ACTIVE)
            remove_conn(pool, conn);
        l = next;
    }
}

/* Closes busy connections too: only for sy_engine_free(), after their
 * requests have been failed. */
void sy__pool_destroy(sy_pool *pool)
{
    sy__pool_close(pool);
    sy_list *l;
    while ((l = sy_list_pop_head(&pool->all)) != NULL) {
        sy_conn *conn = sy_container_of(l, sy_conn, link_all);
        pool->n_total--;
        sy__conn_close(conn);
    }
}
