/*
 * query.c - the life of one embedded query: copy the arguments, classify,
 * ask the policy where it goes, wait for a connection on that node, run it,
 * retry a safe read once elsewhere when its node fails, and deliver the
 * reply on the next loop turn (a callback never fires inside sy_query()).
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static void waiter_ready(sy_waiter *w, sy_conn *conn, int err);
static void dispatch(sy_request *req, sy_node *failed_node);

/* ------------------------------------------------------------ allocation */

static sy_request *request_get(sy_engine *e)
{
    sy_list *l = sy_list_pop_head(&e->free_requests);
    sy_request *req;
    if (l) {
        req = sy_container_of(l, sy_request, link);
    } else {
        req = calloc(1, sizeof *req);
        if (!req)
            return NULL;
        sy_list_init(&req->link);
    }
    req->engine = e;
    return req;
}

/* Returns the request to the free list, keeping its reusable buffers. */
static void request_put(sy_request *req)
{
    sy_engine *e = req->engine;
    char *arena = req->arena;
    size_t arena_cap = req->arena_cap;
    PGresult **results = req->results;
    int results_cap = req->results_cap;
    char **notices = req->notices;
    int notices_cap = req->notices_cap;
    memset(req, 0, sizeof *req);
    req->arena = arena;
    req->arena_cap = arena_cap;
    req->results = results;
    req->results_cap = results_cap;
    req->notices = notices;
    req->notices_cap = notices_cap;
    req->engine = e;
    sy_list_init(&req->link);
    sy_list_insert_head(&e->free_requests, &req->link);
}

void sy__request_free_all(sy_engine *e)
{
    sy_list *l;
    while ((l = sy_list_pop_head(&e->free_requests)) != NULL) {
        sy_request *req = sy_container_of(l, sy_request, link);
        free(req->arena);
        free(req->results);
        free(req->notices);
        free(req);
    }
}

static size_t align8(size_t n) { return (n + 7u) & ~(size_t)7u; }

/* Copies SQL and parameters into the request's arena (one allocation,
 * reused by later requests). */
static int copy_args(sy_request *req, const sy_query_args *a, size_t sql_len)
{
    int n = a->nparams;
    size_t need = align8(sql_len + 1);
    need += align8((size_t)n * sizeof(char *));
    need += 2 * align8((size_t)n * sizeof(int));
    need += align8((size_t)n * sizeof(Oid));
    for (int i = 0; i < n; i++) {
        const char *v = a->param_values ? a->param_values[i] : NULL;
        if (!v)
            continue;
        int binary = a->param_formats && a->param_formats[i] == 1;
        if (binary && (!a->param_lengths || a->param_lengths[i] < 0))
            return SY_EINVAL;
        size_t len = binary ? (size_t)a->param_lengths[i] : strlen(v);
        need += align8(len + 1);
    }
    if (need > req->arena_cap) {
        char *p = realloc(req->arena, need);
        if (!p)
            return SY_ENOMEM;
        req->arena = p;
        req->arena_cap = need;
    }
    char *p = req->arena;
    char *sql = p;
    memcpy(sql, a->sql, sql_len);
    sql[sql_len] = '\0';
    p += align8(sql_len + 1);
    req->sql = sql;
    req->sql_len = sql_len;
    req->nparams = n;
    req->values = (const char **)(void *)p;
    p += align8((size_t)n * sizeof(char *));
    req->lengths = (int *)(void *)p;
    p += align8((size_t)n * sizeof(int));
    req->formats = (int *)(void *)p;
    p += align8((size_t)n * sizeof(int));
    req->types = (Oid *)(void *)p;
    p += align8((size_t)n * sizeof(Oid));
    for (int i = 0; i < n; i++) {
        const char *v = a->param_values ? a->param_values[i] : NULL;
        int binary = a->param_formats && a->param_formats[i] == 1;
        req->formats[i] = binary;
        req->types[i] = a->param_types ? a->param_types[i] : 0;
        if (!v) {
            req->values[i] = NULL;
            req->lengths[i] = 0;
            continue;
        }
        size_t len = binary ? (size_t)a->param_lengths[i] : strlen(v);
        memcpy(p, v, len);
        p[len] = '\0';
        req->values[i] = p;
        req->lengths[i] = (int)len;
        p += align8(len + 1);
    }
    if (n == 0) {
        req->values = NULL;
        req->lengths = req->formats = NULL;
        req->types = NULL;
    }
    return 0;
}

/* ------------------------------------------------------------ public */

int sy_query(sy_engine *e, const sy_query_args *a, sy_query_cb cb,
             void *user_data)
{
    if (!e || !a || !a->sql || !cb || a->nparams < 0 ||
        a->nparams > SY_MAX_PARAMS || (a->nparams > 0 && !a->param_values) ||
        (a->result_format != 0 && a->result_format != 1) || a->timeout < 0)
        return SY_EINVAL;
    if (a->session && a->session->engine != e)
        return SY_EINVAL;
    size_t sql_len = strnlen(a->sql, SY_MAX_SQL_BYTES + 1);
    if (sql_len > SY_MAX_SQL_BYTES)
        return SY_ETOOBIG;
    if (SY_ENGINE_CLOSING(e))
        return SY_ESTOPPED;
    if (a->session && (a->session->inflight || a->session->freeing))
        return SY_EBUSY;
    sy_request *req = request_get(e);
    if (!req)
        return SY_ENOMEM;
    int rc = copy_args(req, a, sql_len);
    if (rc < 0) {
        request_put(req);
        return rc;
    }
    req->cb = cb;
    req->user_data = user_data;
    req->session = a->session;
    req->result_format = a->result_format;
    req->timeout = a->timeout > 0 ? a->timeout : e->lua->set.query_timeout;
    req->started = ev_now(e->loop);
    sy__classify(e, req->sql, req->sql_len, &req->stmt);
    if (req->session)
        req->session->inflight = req;
    e->inflight++;
    e->stats.queries++;
    e->in_submit++;
    dispatch(req, NULL);
    e->in_submit--;
    return 0;
}

PGresult *sy_reply_take_result(sy_reply *reply, int index)
{
    if (!reply || index < 0 || index >= reply->nresults)
        return NULL;
    PGresult *r = reply->results[index];
    reply->results[index] = NULL;
    return r;
}

/* ------------------------------------------------------------ routing */

static int read_is_retryable(const sy_request *req)
{
    const uint32_t unsafe = SY_STMT_LOCKING_READ | SY_STMT_WRITE_FUNCTION |
                            SY_STMT_WRITABLE_CTE | SY_STMT_MULTI;
    if (req->stmt.kind != SY_KIND_READ || (req->stmt.flags & unsafe))
        return 0;
    if (req->session && req->session->pinned)
        return 0;
    return req->engine->lua->set.retry_reads && !req->retried;
}

static void start_on_conn(sy_request *req, sy_conn *conn)
{
    req->conn = conn;
    /* The loop's cached time may be stale when the host submits after a
     * pause; latency needs the real clock. */
    req->sent_at = sy__monotonic();
    req->node->c.inflight++;
    req->node->c.queries++;
    if (sy__conn_send(conn, req) < 0) {
        sy__request_conn_done(req, 1);
        return;
    }
    sy__conn_arm_query_timer(conn, req->timeout);
}

void sy__route_timed(sy_engine *e, const sy_route_input *in, sy_route *out)
{
    /* The routing time is sampled (one decision in 16): two clock reads
     * per query would cost a tenth of the decision itself. */
    int sampled = (e->stats.queries & 15) == 1;
    double t0 = sampled ? sy__monotonic() : 0;
    sy__lua_route(e->lua, in, out);
    if (sampled) {
        double us = (sy__monotonic() - t0) * 1e6;
        e->stats.route_avg_us = e->stats.route_avg_us == 0
                                    ? us
                                    : e->stats.route_avg_us * 0.9 + us * 0.1;
    }
}

static void dispatch(sy_request *req, sy_node *failed_node);

static void park_retry(sy_parked *p)
{
    dispatch(sy_container_of(p, sy_request, park), NULL);
}

static void park_expired(sy_parked *p, int stopping)
{
    sy_request *req = sy_container_of(p, sy_request, park);
    if (stopping)
        sy__request_fail(req, SY_ESTOPPED, "57P01", "switchyard is shutting down");
    else
        sy__request_fail(req, SY_ECONN, "08006",
                         "switchyard: no primary took over within %.3g s", p->wait);
}

static void dispatch(sy_request *req, sy_node *failed_node)
{
    sy_engine *e = req->engine;
    sy_session *s = req->session;
    sy_route_input in = {
        .sql = req->sql,
        .sql_len = req->sql_len,
        .stmt = &req->stmt,
        .nparams = req->nparams,
        .param_values = req->values,
        .param_lengths = req->lengths,
        .session = s,
        .in_tx = s && s->in_tx,
        .failed_node = failed_node,
    };
    sy_route route;
    sy__route_timed(e, &in, &route);
    if (route.failed) {
        e->stats.policy_errors++;
        sy__emit(e, SY_EVENT_POLICY_ERROR, NULL, NULL, "%s", route.message);
        sy__request_fail(req, SY_EPOLICY, "XX000", "switchyard: policy error: %s",
                         route.message);
        return;
    }
    if (route.rejected) {
        e->stats.rejected++;
        sy__request_fail(req, SY_EPOLICY, route.sqlstate, "%s", route.message);
        return;
    }
    if (s && s->pinned) {
        /* A transaction or pinned session keeps its connection whatever the
         * policy would pick: the policy may refuse, never move it. */
        req->node = s->pinned_node;
        sy__node_ref(req->node);
        sy_conn *conn = s->pinned;
        start_on_conn(req, conn);
        return;
    }
    if (route.wait > 0) {
        req->park.retry = park_retry;
        req->park.expired = park_expired;
        double wait = route.wait;
        if (req->timeout > 0) {
            /* The query's own timeout covers its wait too. */
            double left = req->timeout - (ev_now(e->loop) - req->started);
            wait = left < wait ? (left > 0 ? left : 0) : wait;
        }
        sy__park(e, &req->park, wait);
        return;
    }
    sy__park_done(e, &req->park);
    if (failed_node && route.node == failed_node) {
        sy__request_fail(req, SY_ECONN, "08006",
                         "node %s failed and the policy chose no other node",
                         failed_node->full_name);
        return;
    }
    req->node = route.node;
    sy__node_ref(req->node);
    req->waiter.ready = waiter_ready;
    sy__pool_acquire(&req->node->pool, &req->waiter, 0);
}

static void retry_elsewhere(sy_request *req)
{
    sy_node *failed = req->node;
    req->retried = 1;
    req->node = NULL;
    failed->c.retries++;
    dispatch(req, failed);
    sy__node_unref(failed);
}

static void waiter_ready(sy_waiter *w, sy_conn *conn, int err)
{
    sy_request *req = sy_container_of(w, sy_request, waiter);
    sy_node *node = req->node;
    if (conn) {
        start_on_conn(req, conn);
        return;
    }
    if (err == SY_ECONN && read_is_retryable(req)) {
        retry_elsewhere(req);
        return;
    }
    if (err == SY_ECONN && !req->rerouted && !node->healthy) {
        /* Never sent, and its node went down: route it again once, so a
         * write can wait for a failover instead of failing. */
        req->rerouted = 1;
        req->node = NULL;
        dispatch(req, NULL);
        sy__node_unref(node);
        return;
    }
    node->c.errors++;
    switch (err) {
    case SY_ETIMEOUT:
        sy__request_fail(req, err, "53300",
                         "no connection to node %s became free within %.3g s",
                         node->full_name, node->pool.set.acquire_timeout);
        break;
    case SY_ESTOPPED:
        sy__request_fail(req, err, "57P01", "switchyard is shutting down");
        break;
    default:
        sy__request_fail(req, err, "08006", "node %s is unreachable: %s",
                         node->full_name,
                         node->pool.last_error[0] ? node->pool.last_error
                                                  : "connection failed");
        break;
    }
}

/* ------------------------------------------------------------ completion */

/* Whether the server answered the statement: a connection that dies
 * during a shutdown first sends FATAL 57P01, which is no answer. */
static int got_answer(const sy_request *req)
{
    for (int i = 0; i < req->nresults; i++)
        if (PQresultStatus(req->results[i]) != PGRES_FATAL_ERROR)
            return 1;
    return 0;
}

void sy__request_conn_done(sy_request *req, int broken)
{
    sy_node *node = req->node;
    sy_conn *conn = req->conn;
    req->conn = NULL;
    node->c.inflight--;
    /* The node's latency is its own: time spent waiting for a pool
     * connection is not held against it. */
    double secs = sy__monotonic() - req->sent_at;
    sy__counters_record(&node->c, secs, broken);
    int retry = broken && !req->timed_out && !got_answer(req) &&
                read_is_retryable(req);
    if (req->session) {
        sy__session_after_query(req->session, req, conn, broken);
    } else {
        if (req->stmt.kind == SY_KIND_SESSION)
            conn->tainted = 1; /* its SET/LISTEN must not leak to others */
        sy__pool_release(&node->pool, conn, broken);
    }
    if (retry) {
        for (int i = 0; i < req->nresults; i++)
            PQclear(req->results[i]);
        req->nresults = 0;
        retry_elsewhere(req);
        return;
    }
    if (req->timed_out) {
        node->c.errors++;
        sy__request_fail(req, SY_ETIMEOUT, "57014",
                         "canceling statement due to switchyard query timeout "
                         "(%.3g s) on node %s; its connection was closed",
                         req->timeout, node->full_name);
        return;
    }
    if (broken) {
        node->c.errors++;
        sy__request_fail(req, SY_ECONN, "08006",
                         "connection to node %s was lost during the query",
                         node->full_name);
        return;
    }
    for (int i = 0; i < req->nresults; i++) {
        if (PQresultStatus(req->results[i]) == PGRES_FATAL_ERROR) {
            node->c.errors++;
            break;
        }
    }
    sy__request_finish(req);
}

void sy__request_fail(sy_request *req, int status, const char *sqlstate,
                      const char *fmt, ...)
{
    req->status = status;
    memcpy(req->sqlstate, sqlstate, 5);
    req->sqlstate[5] = '\0';
    sy_buf b;
    sy__buf_init(&b);
    va_list ap;
    va_start(ap, fmt);
    sy__buf_vprintf(&b, fmt, ap);
    va_end(ap);
    free(req->message);
    req->message = b.buf; /* NULL on OOM: the reply then has no message */
    sy__request_finish(req);
}

static void deferred_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void deliver(sy_request *req);

void sy__request_finish(sy_request *req)
{
    sy_engine *e = req->engine;
    /* Outside sy_query() (an io or timer callback) the reply goes out now:
     * waiting a loop turn would cost every query a turn of latency.
     * Inside it, the callback must not fire yet. */
    if (e->in_submit == 0) {
        deliver(req);
        return;
    }
    sy_list_insert_tail(&e->deferred, &req->link);
    if (!ev_is_active(&e->deferred_timer)) {
        ev_timer_set(&e->deferred_timer, 0., 0.);
        ev_timer_start(e->loop, &e->deferred_timer);
    }
}

static void deliver(sy_request *req)
{
    sy_engine *e = req->engine;
    sy_session *s = req->session;
    sy_reply reply;
    memset(&reply, 0, sizeof reply);
    reply.status = req->status;
    reply.results = req->results;
    reply.nresults = req->nresults;
    reply.node = req->node ? req->node->full_name : NULL;
    reply.retried = req->retried;
    reply.notices = (const char *const *)req->notices;
    reply.nnotices = req->nnotices;
    if (req->status != 0) {
        reply.sqlstate = req->sqlstate;
        reply.message = req->message ? req->message : sy_strerror(req->status);
    } else {
        for (int i = 0; i < req->nresults; i++) {
            const PGresult *r = req->results[i];
            if (PQresultStatus(r) == PGRES_FATAL_ERROR) {
                reply.sqlstate = PQresultErrorField(r, PG_DIAG_SQLSTATE);
                reply.message = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
                reply.detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
                break;
            }
        }
    }
    if (s)
        s->inflight = NULL;
    e->in_callback++;
    req->cb(req->user_data, &reply);
    e->in_callback--;
    for (int i = 0; i < req->nresults; i++)
        if (req->results[i])
            PQclear(req->results[i]);
    for (int i = 0; i < req->nnotices; i++)
        free(req->notices[i]);
    free(req->message);
    if (req->node)
        sy__node_unref(req->node);
    request_put(req);
    e->inflight--;
    if (s && s->freeing)
        sy__session_destroy(s);
    sy__engine_check_stopped(e);
}

static void deferred_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_engine *e = sy_container_of(w, sy_engine, deferred_timer);
    /* Detach the batch first: callbacks may submit queries whose errors
     * land on the list again; those wait for the next turn. */
    sy_list batch;
    sy_list_init(&batch);
    if (!sy_list_empty(&e->deferred)) {
        batch.next = e->deferred.next;
        batch.prev = e->deferred.prev;
        batch.next->prev = &batch;
        batch.prev->next = &batch;
        sy_list_init(&e->deferred);
    }
    sy_list *l;
    while ((l = sy_list_pop_head(&batch)) != NULL)
        deliver(sy_container_of(l, sy_request, link));
}

void sy__request_init_engine(sy_engine *e)
{
    sy_list_init(&e->free_requests);
    sy_list_init(&e->deferred);
    ev_init(&e->deferred_timer, deferred_cb);
}

/* Fails every request still waiting for delivery or a connection; used by
 * sy_engine_free() so every accepted callback fires exactly once. */
void sy__request_flush_deferred(sy_engine *e)
{
    deferred_cb(e->loop, &e->deferred_timer, 0);
}
