/*
 * conn.c - one backend connection driven by libev through libpq's
 * non-blocking interface: PQconnectStart/PQconnectPoll to connect (with our
 * own timer, since libpq's connect_timeout only works in blocking mode),
 * then PQsendQuery, PQconsumeInput and PQgetResult for each query.
 *
 * A connection belongs to its pool, which decides when it is created,
 * handed out and closed; this file only moves bytes and tells the pool and
 * the running request what happened.
 */
#include "internal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

static struct ev_loop *conn_loop(const sy_conn *conn)
{
    return conn->pool->node->engine->loop;
}

/* (Re)arms the io watcher on libpq's current socket for events.  libpq may
 * switch sockets while connecting (another host, a retry without TLS). */
void sy__conn_set_watch(sy_conn *conn, int events)
{
    int fd = PQsocket(conn->pg);
    if (ev_is_active(&conn->io) &&
        (conn->io.fd != fd || conn->io_events != events))
        ev_io_stop(conn_loop(conn), &conn->io);
    if (fd < 0 || events == 0) {
        conn->io_events = 0;
        return;
    }
    if (!ev_is_active(&conn->io)) {
        ev_io_set(&conn->io, fd, events);
        ev_io_start(conn_loop(conn), &conn->io);
    }
    conn->io_events = events;
}

static void notice_receiver(void *arg, const PGresult *res)
{
    sy_conn *conn = arg;
    sy_request *req = conn->request;
    const char *msg = PQresultErrorMessage(res);
    if (!req || !msg)
        return;
    if (req->nnotices == req->notices_cap) {
        int cap = req->notices_cap ? req->notices_cap * 2 : 4;
        char **p = realloc(req->notices, (size_t)cap * sizeof *p);
        if (!p)
            return; /* a notice is advisory: dropping it beats failing */
        req->notices = p;
        req->notices_cap = cap;
    }
    char *copy = sy__strdup(msg);
    if (copy) {
        size_t n = strlen(copy);
        while (n > 0 && copy[n - 1] == '\n')
            copy[--n] = '\0';
        req->notices[req->nnotices++] = copy;
    }
}

void sy__conn_set_state(sy_conn *conn, sy_conn_state to)
{
    static const unsigned char legal[5][5] = {
        /* to:            CONN IDLE HELD ACTV CLSD */
        [SY_CONN_CONNECTING] = {0, 1, 1, 0, 1},
        [SY_CONN_IDLE] = {0, 0, 1, 0, 1},
        [SY_CONN_HELD] = {0, 1, 0, 1, 1},
        [SY_CONN_ACTIVE] = {0, 0, 1, 0, 1},
        [SY_CONN_CLOSED] = {0, 0, 0, 0, 0},
    };
    assert(legal[conn->state][to]);
    conn->state = to;
}

PGconn *sy__connect_start(const char *conninfo, const char *application_name,
                          const sy_conn_target *target, const char *gssencmode)
{
    /* The node's conninfo (a key=value string or a URI) is expanded in
     * place of dbname; later keywords override it, fallback_application_name
     * only fills a gap.  A resolved target overrides host, port and
     * hostaddr: libpq connects to hostaddr without a lookup of its own (a
     * blocking getaddrinfo) and keeps host for TLS and the password file.
     * NULL or empty values are skipped by libpq. */
    const char *keys[9], *values[9];
    int k = 0;
    keys[k] = "dbname", values[k++] = conninfo;
    if (target) {
        keys[k] = "host", values[k++] = target->host;
        keys[k] = "port", values[k++] = target->port;
        keys[k] = "hostaddr", values[k++] = target->hostaddr;
    }
    keys[k] = "fallback_application_name", values[k++] = "switchyard";
    if (application_name)
        keys[k] = "application_name", values[k++] = application_name;
    if (gssencmode)
        keys[k] = "gssencmode", values[k++] = gssencmode;
    keys[k] = NULL, values[k] = NULL;
    return PQconnectStartParams(keys, values, 1);
}

sy_conn *sy__conn_start(sy_pool *pool, const sy_conn_target *target,
                        char *err, size_t errlen)
{
    sy_conn *conn = calloc(1, sizeof *conn);
    if (!conn) {
        sy__fmt(err, errlen, "out of memory");
        return NULL;
    }
    conn->pool = pool;
    if (pool->relay) {
        conn->relay = sy__relay_connect_start(pool->node->conninfo, NULL,
                                              target, err, errlen);
        if (!conn->relay) {
            free(conn);
            return NULL;
        }
        conn->pg = conn->relay->pg;
    } else {
        conn->pg = sy__connect_start(pool->node->conninfo, NULL, target, NULL);
    }
    if (!conn->pg) {
        sy__fmt(err, errlen, "out of memory");
        free(conn);
        return NULL;
    }
    if (!conn->relay && PQstatus(conn->pg) == CONNECTION_BAD) {
        sy__fmt(err, errlen, "%s", PQerrorMessage(conn->pg));
        PQfinish(conn->pg);
        free(conn);
        return NULL;
    }
    PQsetnonblocking(conn->pg, 1);
    PQsetNoticeReceiver(conn->pg, notice_receiver, conn);
    /* calloc left state at SY_CONN_CONNECTING, where every life starts. */
    sy_list_init(&conn->link_all);
    sy_list_init(&conn->link_idle);
    struct ev_loop *loop = conn_loop(conn);
    conn->created_at = ev_now(loop);
    ev_init(&conn->io, conn_io_cb);
    ev_init(&conn->timer, conn_timer_cb);
    /* libpq's contract: behave as if PQconnectPoll returned WRITING. */
    sy__conn_set_watch(conn, EV_WRITE);
    if (pool->set.connect_timeout > 0) {
        ev_timer_set(&conn->timer, pool->set.connect_timeout, 0.);
        ev_timer_start(loop, &conn->timer);
    }
    return conn;
}

void sy__conn_close(sy_conn *conn)
{
    struct ev_loop *loop = conn_loop(conn);
    ev_io_stop(loop, &conn->io);
    ev_timer_stop(loop, &conn->timer);
    sy__conn_set_state(conn, SY_CONN_CLOSED);
    if (conn->relay) {
        sy_engine *e = conn->pool->node->engine;
        if (conn->proxy_state && e->relay_hooks)
            e->relay_hooks->closed(e->relay_hooks_data, conn);
        conn->proxy_state = NULL;
        sy__relay_close(conn->relay); /* closes pg too */
        conn->relay = NULL;
        conn->pg = NULL;
    } else if (conn->pg) {
        /* PQfinish sends Terminate with a non-blocking write attempt; it
         * never waits for the server. */
        PQfinish(conn->pg);
        conn->pg = NULL;
    }
    /* Often called from this connection's own io or timer callback: the
     * memory goes on the next loop turn. */
    sy__engine_bury_conn(conn->pool->node->engine, conn);
}

/* A relay connection's connect step: relay_conn.c polls libpq and captures
 * the cancel key; the pool sees the same four outcomes. */
static PostgresPollingStatusType relay_connect_poll(sy_conn *conn)
{
    switch (sy__relay_connect_poll(conn->relay)) {
    case SY_RELAY_READY: return PGRES_POLLING_OK;
    case SY_RELAY_WANT_READ: return PGRES_POLLING_READING;
    case SY_RELAY_WANT_WRITE: return PGRES_POLLING_WRITING;
    default: return PGRES_POLLING_FAILED;
    }
}

static void connect_step(sy_conn *conn)
{
    PostgresPollingStatusType st =
        conn->relay ? relay_connect_poll(conn) : PQconnectPoll(conn->pg);
    switch (st) {
    case PGRES_POLLING_READING:
        sy__conn_set_watch(conn, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        sy__conn_set_watch(conn, EV_WRITE);
        return;
    case PGRES_POLLING_OK:
        ev_timer_stop(conn_loop(conn), &conn->timer);
        sy__pool_conn_connected(conn->pool, conn);
        return;
    case PGRES_POLLING_FAILED:
    default: {
        char why[512];
        sy__fmt(why, sizeof why, "%s",
                conn->relay ? sy__relay_error(conn->relay) : PQerrorMessage(conn->pg));
        sy__pool_conn_failed(conn->pool, conn, why);
        return;
    }
    }
}

int sy__conn_send(sy_conn *conn, sy_request *req)
{
    int ok;
    conn->request = req;
    if (req->nparams == 0 && req->result_format == 0)
        /* The simple protocol allows several statements in one string. */
        ok = PQsendQuery(conn->pg, req->sql);
    else
        ok = PQsendQueryParams(conn->pg, req->sql, req->nparams, req->types,
                               req->values, req->lengths, req->formats,
                               req->result_format);
    if (!ok) {
        conn->request = NULL;
        return SY_ECONN;
    }
    sy__conn_set_state(conn, SY_CONN_ACTIVE);
    int flush = PQflush(conn->pg);
    if (flush < 0) {
        conn->request = NULL;
        sy__conn_set_state(conn, SY_CONN_HELD);
        return SY_ECONN;
    }
    sy__conn_set_watch(conn, flush ? (EV_READ | EV_WRITE) : EV_READ);
    return 0;
}

static int append_result(sy_request *req, PGresult *res)
{
    if (req->nresults == req->results_cap) {
        int cap = req->results_cap ? req->results_cap * 2 : 4;
        PGresult **p = realloc(req->results, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        req->results = p;
        req->results_cap = cap;
    }
    req->results[req->nresults++] = res;
    return 0;
}

/* COPY is not part of the embedded API: a COPY FROM STDIN is ended with an
 * error so the server rolls it back, COPY TO STDOUT is drained. */
static int handle_copy(sy_conn *conn, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COPY_IN) {
        PQputCopyEnd(conn->pg, "COPY FROM STDIN is not supported by sy_query");
        return 1;
    }
    if (st == PGRES_COPY_OUT) {
        char *buf;
        int n;
        while ((n = PQgetCopyData(conn->pg, &buf, 1)) > 0)
            PQfreemem(buf);
        return n == 0 ? 2 : 1; /* 2: wait for more data */
    }
    return 0;
}

static void query_step(sy_conn *conn, int revents)
{
    sy_request *req = conn->request;
    if (revents & EV_WRITE) {
        int flush = PQflush(conn->pg);
        if (flush < 0)
            goto broken;
        if (flush == 0)
            sy__conn_set_watch(conn, EV_READ);
    }
    if (revents & EV_READ) {
        if (!PQconsumeInput(conn->pg))
            goto broken;
    }
    while (!PQisBusy(conn->pg)) {
        PGresult *res = PQgetResult(conn->pg);
        if (!res) {
            if (PQstatus(conn->pg) == CONNECTION_BAD)
                goto broken;
            ev_timer_stop(conn_loop(conn), &conn->timer);
            conn->request = NULL;
            sy__conn_set_state(conn, SY_CONN_HELD);
            sy__request_conn_done(req, 0);
            return;
        }
        int copy = handle_copy(conn, res);
        if (copy == 2) {
            PQclear(res);
            return;
        }
        if (copy == 1) {
            PQclear(res);
            continue;
        }
        if (append_result(req, res) < 0) {
            PQclear(res);
            req->status = SY_ENOMEM;
        }
    }
    return;
broken:
    ev_timer_stop(conn_loop(conn), &conn->timer);
    conn->request = NULL;
    sy__conn_set_state(conn, SY_CONN_HELD);
    sy__request_conn_done(req, 1);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    sy_conn *conn = sy_container_of(w, sy_conn, io);
    if (conn->relay && (conn->state == SY_CONN_HELD || conn->state == SY_CONN_ACTIVE)) {
        sy_engine *e = conn->pool->node->engine;
        if (e->relay_hooks)
            e->relay_hooks->io(e->relay_hooks_data, conn, revents);
        else
            sy__conn_set_watch(conn, 0);
        return;
    }
    switch (conn->state) {
    case SY_CONN_CONNECTING:
        connect_step(conn);
        break;
    case SY_CONN_ACTIVE:
        query_step(conn, revents);
        break;
    case SY_CONN_HELD:
        if (!PQconsumeInput(conn->pg)) {
            /* Held by a session between queries and closed by the server:
             * stop watching a dead socket; the next send reports it. */
            sy__conn_set_watch(conn, 0);
        }
        break;
    case SY_CONN_IDLE:
        /* An idle connection became readable: the server closed it or sent
         * an asynchronous message.  The pool decides. */
        sy__pool_conn_idle_event(conn->pool, conn);
        break;
    case SY_CONN_CLOSED:
        break;
    }
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    sy_conn *conn = sy_container_of(w, sy_conn, timer);
    sy_request *req = conn->request;
    if (sy__io_run_if_ready(loop, &conn->io)) {
        /* The server had answered: the time went by in our own stall.  A
         * connect that still has steps to go gets one more period, once;
         * a query that is still running has had its time. */
        if (conn->state == SY_CONN_CONNECTING && !conn->connect_extended) {
            conn->connect_extended = 1;
            ev_timer_set(&conn->timer, conn->pool->set.connect_timeout, 0.);
            ev_timer_start(loop, &conn->timer);
            return;
        }
        if (conn->state == SY_CONN_ACTIVE && conn->request != req)
            return;
    }
    if (conn->state == SY_CONN_CONNECTING) {
        char why[128];
        sy__fmt(why, sizeof why, "connection timed out after %.1f s",
                conn->pool->set.connect_timeout);
        sy__pool_conn_failed(conn->pool, conn, why);
    } else if (conn->state == SY_CONN_ACTIVE) {
        /* libpq 15 has no non-blocking cancel; closing the connection is
         * the only way to stop waiting without blocking the loop. */
        sy_request *req = conn->request;
        conn->request = NULL;
        sy__conn_set_state(conn, SY_CONN_HELD);
        req->timed_out = 1;
        sy__request_conn_done(req, 1);
    }
}

void sy__conn_arm_query_timer(sy_conn *conn, double seconds)
{
    if (seconds <= 0)
        return;
    struct ev_loop *loop = conn_loop(conn);
    ev_timer_stop(loop, &conn->timer);
    ev_timer_set(&conn->timer, seconds, 0.);
    ev_timer_start(loop, &conn->timer);
}
