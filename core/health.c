/*
 * health.c - the per-node health poller.  Each node has its own connection,
 * separate from the pool (a saturated pool must not look like a dead node),
 * polled every health.interval with a deadline of health.timeout.  A poll
 * measures the round trip, whether the server is in recovery, its WAL
 * position (current on a primary, replayed on a replica) and, on a
 * replica, how far replay is behind in bytes and milliseconds.  A node goes
 * down after `fall` consecutive failed polls and up after `rise` good ones.
 */
#include "internal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* One round trip gives every figure.  Lag in ms is 0 when everything
 * received is replayed (an idle primary is not "behind"), else the age of
 * the last replayed transaction (or, when none was replayed since the
 * server started, its uptime: it is at least that far behind).  The
 * timeline is the current WAL file's on a primary (pg_walfile_name() is
 * refused during recovery) and the WAL receiver's on a replica (NULL
 * without a receiver, or for a role that may not read it). */
static const char poll_sql[] =
    "SELECT pg_is_in_recovery(),"
    " ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    "   ELSE pg_current_wal_insert_lsn() END) - '0/0'::pg_lsn)::float8,"
    " (CASE WHEN NOT pg_is_in_recovery() THEN 0"
    "   WHEN pg_last_wal_receive_lsn() IS NULL"
    "     OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0"
    "   ELSE EXTRACT(epoch FROM now() - COALESCE(pg_last_xact_replay_timestamp(),"
    "     pg_postmaster_start_time())) * 1000 END)::float8,"
    " CASE WHEN pg_is_in_recovery()"
    "   THEN (SELECT received_tli FROM pg_stat_wal_receiver)"
    "   ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END";

/* The poller connection's life, changed only by set_state():
 *   IDLE [-> RESOLVING] -> CONNECTING -> QUERYING -> IDLE, and any -> IDLE
 * on failure.  RESOLVING waits for the node's name lookup (dns.c). */
enum { HEALTH_IDLE = 0, HEALTH_RESOLVING, HEALTH_CONNECTING, HEALTH_QUERYING };

static void set_state(sy_health *h, int to)
{
    assert(to == HEALTH_IDLE ||
           (to == HEALTH_RESOLVING && h->state == HEALTH_IDLE) ||
           (to == HEALTH_CONNECTING &&
            (h->state == HEALTH_IDLE || h->state == HEALTH_RESOLVING)) ||
           (to == HEALTH_QUERYING && h->state != HEALTH_QUERYING));
    h->state = to;
}

static void health_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void health_tick_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void health_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* The server's notices on the health connection (shutdown warnings, ...)
 * are not for anyone's terminal. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static struct ev_loop *node_loop(const sy_node *n) { return n->engine->loop; }

static const sy_settings *settings(const sy_node *n)
{
    return &n->engine->lua->set;
}

static void watch(sy_node *n, int events)
{
    sy_health *h = &n->health;
    int fd = PQsocket(h->pg);
    if (ev_is_active(&h->io))
        ev_io_stop(node_loop(n), &h->io);
    if (fd < 0 || events == 0)
        return;
    ev_io_set(&h->io, fd, events);
    ev_io_start(node_loop(n), &h->io);
}

static void close_conn(sy_node *n)
{
    sy_health *h = &n->health;
    if (h->state == HEALTH_RESOLVING)
        sy__dns_forget(n, SY_DNS_FOR_HEALTH);
    if (ev_is_active(&h->io))
        ev_io_stop(node_loop(n), &h->io);
    if (h->pg) {
        PQfinish(h->pg);
        h->pg = NULL;
    }
    set_state(h, HEALTH_IDLE);
}

static void schedule_next(sy_node *n)
{
    sy_health *h = &n->health;
    ev_timer_stop(node_loop(n), &h->deadline);
    ev_timer_stop(node_loop(n), &h->tick);
    ev_timer_set(&h->tick, h->poll_soon ? 0. : settings(n)->health_interval, 0.);
    h->poll_soon = 0;
    ev_timer_start(node_loop(n), &h->tick);
}

void sy__health_poll_soon(sy_node *n)
{
    sy_health *h = &n->health;
    if (!h->started_once)
        return;
    if (ev_is_active(&h->tick) && !h->cmd_running) {
        ev_timer_stop(node_loop(n), &h->tick);
        ev_timer_set(&h->tick, 0., 0.);
        ev_timer_start(node_loop(n), &h->tick);
    } else {
        h->poll_soon = 1; /* a poll or command runs: the next one follows it */
    }
}

/* ------------------------------------------------------------ commands */

/* Ends the command (running or pending) with res or err: cleared first,
 * since the callback may queue the next one. */
static void finish_command(sy_node *n, PGresult *res, const char *err)
{
    sy_health *h = &n->health;
    if (h->cmd_result && h->cmd_result != res) {
        PQclear(h->cmd_result); /* a partial answer of a failed command */
    }
    h->cmd_result = NULL;
    sy_health_cmd_cb cb = h->cmd_cb;
    void *data = h->cmd_data;
    free(h->cmd_sql);
    h->cmd_sql = NULL;
    h->cmd_cb = NULL;
    h->cmd_running = 0;
    if (cb)
        cb(n, data, res, err);
}

static void start_command(sy_node *n)
{
    sy_health *h = &n->health;
    if (!PQsendQuery(h->pg, h->cmd_sql)) {
        char why[256];
        sy__fmt(why, sizeof why, "%s", PQerrorMessage(h->pg));
        finish_command(n, NULL, why);
        return;
    }
    set_state(h, HEALTH_QUERYING);
    h->cmd_running = 1;
    ev_timer_stop(node_loop(n), &h->tick);
    ev_timer_stop(node_loop(n), &h->deadline);
    h->deadline_extended = 0;
    ev_timer_set(&h->deadline, h->cmd_timeout, 0.);
    ev_timer_start(node_loop(n), &h->deadline);
    int flush = PQflush(h->pg);
    watch(n, flush ? EV_READ | EV_WRITE : EV_READ);
}

int sy__health_command(sy_node *n, const char *sql, double timeout, sy_health_cmd_cb cb,
                       void *data)
{
    sy_health *h = &n->health;
    if (h->cmd_cb || !h->started_once)
        return SY_EBUSY;
    h->cmd_sql = sy__strdup(sql);
    if (!h->cmd_sql)
        return SY_ENOMEM;
    h->cmd_cb = cb;
    h->cmd_data = data;
    h->cmd_timeout = timeout;
    if (h->state == HEALTH_IDLE && h->pg && PQstatus(h->pg) == CONNECTION_OK)
        start_command(n);
    /* else: after the poll in flight, on its connection (poll_succeeded) */
    return 0;
}

static void poll_failed(sy_node *n, const char *why)
{
    sy_health *h = &n->health;
    /* why may point into the connection's own error buffer: copy first. */
    sy__fmt(h->last_error, sizeof h->last_error, "%s", why);
    /* Marking the node down fails its pools' waiters, which may drop the
     * last reference of a node a reload removed: keep it until the end. */
    sy__node_ref(n);
    close_conn(n);
    h->successes = 0;
    h->failures++;
    h->polls_failed++;
    size_t len = strlen(h->last_error);
    while (len > 0 && (h->last_error[len - 1] == '\n' || h->last_error[len - 1] == ' '))
        h->last_error[--len] = '\0';
    if (n->healthy && h->failures >= settings(n)->health_fall) {
        char msg[sizeof h->last_error + 64];
        sy__fmt(msg, sizeof msg, "%d health checks failed: %s", h->failures,
                h->last_error);
        sy__node_set_health(n, 0, msg);
    }
    if (!n->healthy && h->failures >= settings(n)->health_fall)
        sy__failover_primary_down(n); /* managed clusters; once per outage */
    schedule_next(n);
    if (h->cmd_cb)
        finish_command(n, NULL, h->last_error);
    sy__node_unref(n); /* the last one stops the poller it just scheduled */
}

/* A replica's lag in bytes is measured against its cluster's primary's
 * latest known WAL position. */
static void update_lag(sy_node *n)
{
    if (!n->health.in_recovery) {
        n->lag_bytes = 0;
        return;
    }
    const sy_topology *t = &n->engine->lua->topo;
    for (int i = 0; i < t->n; i++) {
        const sy_node *p = t->nodes[i];
        if (p->role == SY_ROLE_PRIMARY && p->health.polls_ok > 0 &&
            !p->health.in_recovery && strcmp(p->cluster, n->cluster) == 0) {
            double d = p->health.wal_position - n->health.wal_position;
            n->lag_bytes = d > 0 ? d : 0;
            return;
        }
    }
}

/* A node that got no query since the last poll (a balancer shunned it for
 * a bad latency or error figure) would keep that figure for ever.  Without
 * traffic the poll is the freshest measure of the node, so it replaces the
 * latency and halves the error rate. */
static void decay_idle_figures(sy_node *n)
{
    sy_health *h = &n->health;
    if (n->c.queries == h->queries_at_last_poll && n->c.inflight == 0) {
        n->c.latency_ewma_ms = h->rtt_ms;
        n->c.error_rate *= 0.5;
    }
    h->queries_at_last_poll = n->c.queries;
}

/* The server's figure (age of the last replayed transaction while WAL
 * waits to be replayed) overstates lag when a write arrives after a quiet
 * spell: the last replayed transaction is old although the replica is
 * only a moment behind.  A replica cannot be further behind than the time
 * since a poll last saw it fully caught up, so that bounds the figure. */
static double bounded_lag_ms(sy_node *n, double server_ms)
{
    sy_health *h = &n->health;
    double now = ev_now(node_loop(n));
    if (server_ms <= 0) {
        h->caught_up_at = now;
        return 0;
    }
    if (h->caught_up_at > 0) {
        double since = (now - h->caught_up_at) * 1e3;
        if (since < server_ms)
            return since;
    }
    return server_ms;
}

static void poll_succeeded(sy_node *n, const PGresult *res)
{
    sy_health *h = &n->health;
    sy__node_ref(n); /* as in poll_failed: set_health may drop the last */
    h->rtt_ms = (sy__monotonic() - h->sent_at) * 1e3;
    h->ok_sent_at = h->sent_at;
    h->in_recovery = PQgetvalue(res, 0, 0)[0] == 't';
    h->wal_position = atof(PQgetvalue(res, 0, 1));
    n->lag_ms = bounded_lag_ms(n, atof(PQgetvalue(res, 0, 2)));
    h->timeline = PQgetisnull(res, 0, 3) ? 0 : atoi(PQgetvalue(res, 0, 3));
    update_lag(n);
    h->failures = 0;
    h->successes++;
    h->polls_ok++;
    decay_idle_figures(n);
    if (!n->healthy && h->successes >= settings(n)->health_rise)
        sy__node_set_health(n, 1, "health checks pass");
    schedule_next(n);
    if (h->cmd_cb && !h->cmd_running)
        start_command(n); /* a command queued behind this poll */
    sy__roles_observed(n, h->in_recovery);
    sy__node_unref(n);
}

static void send_poll(sy_node *n)
{
    sy_health *h = &n->health;
    if (!PQsendQuery(h->pg, poll_sql)) {
        poll_failed(n, PQerrorMessage(h->pg));
        return;
    }
    set_state(h, HEALTH_QUERYING);
    /* The round trip starts here: connecting is not the node's latency. */
    h->sent_at = sy__monotonic();
    int flush = PQflush(h->pg);
    if (flush < 0) {
        poll_failed(n, PQerrorMessage(h->pg));
        return;
    }
    watch(n, flush ? EV_READ | EV_WRITE : EV_READ);
}

static void connect_step(sy_node *n)
{
    sy_health *h = &n->health;
    switch (PQconnectPoll(h->pg)) {
    case PGRES_POLLING_READING:
        watch(n, EV_READ);
        break;
    case PGRES_POLLING_WRITING:
        watch(n, EV_WRITE);
        break;
    case PGRES_POLLING_OK:
        send_poll(n);
        break;
    default:
        poll_failed(n, PQerrorMessage(h->pg));
        break;
    }
}

/* The command's results: the first is its answer, the rest drain. */
static void command_step(sy_node *n)
{
    sy_health *h = &n->health;
    PGresult *res;
    while (!PQisBusy(h->pg) && (res = PQgetResult(h->pg)) != NULL) {
        if (!h->cmd_result)
            h->cmd_result = res;
        else
            PQclear(res);
    }
    if (PQisBusy(h->pg))
        return;
    set_state(h, HEALTH_IDLE);
    watch(n, 0);
    schedule_next(n);
    PGresult *answer = h->cmd_result;
    h->cmd_result = NULL;
    finish_command(n, answer, answer ? NULL : "the command returned nothing");
    PQclear(answer);
}

static void query_step(sy_node *n, int revents)
{
    sy_health *h = &n->health;
    if ((revents & EV_WRITE) && PQflush(h->pg) == 0)
        watch(n, EV_READ);
    if ((revents & EV_READ) && !PQconsumeInput(h->pg)) {
        poll_failed(n, PQerrorMessage(h->pg));
        return;
    }
    if (h->cmd_running) {
        command_step(n);
        return;
    }
    PGresult *res, *ok = NULL;
    char why[256] = "";
    while (!PQisBusy(h->pg) && (res = PQgetResult(h->pg)) != NULL) {
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
            PQnfields(res) == 4 && !ok) {
            ok = res;
            continue;
        }
        if (!why[0])
            sy__fmt(why, sizeof why, "%s", PQresultErrorMessage(res));
        PQclear(res);
    }
    if (PQisBusy(h->pg)) {
        if (ok)
            h->pending = ok; /* keep it until the end of the results */
        return;
    }
    if (!ok) {
        ok = h->pending;
        h->pending = NULL;
    }
    set_state(h, HEALTH_IDLE);
    watch(n, 0);
    if (ok) {
        poll_succeeded(n, ok);
        PQclear(ok);
    } else {
        poll_failed(n, why[0] ? why : "health query returned no row");
    }
}

static void health_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    sy_node *n = sy_container_of(w, sy_node, health.io);
    if (n->health.state == HEALTH_CONNECTING)
        connect_step(n);
    else if (n->health.state == HEALTH_QUERYING)
        query_step(n, revents);
}

static void connect_to(sy_node *n, const sy_conn_target *target)
{
    sy_health *h = &n->health;
    h->pg = sy__connect_start(n->conninfo, "switchyard health", target, NULL);
    if (!h->pg || PQstatus(h->pg) == CONNECTION_BAD) {
        poll_failed(n, h->pg ? PQerrorMessage(h->pg) : "out of memory");
        return;
    }
    PQsetnonblocking(h->pg, 1);
    PQsetNoticeProcessor(h->pg, ignore_notice, NULL);
    set_state(h, HEALTH_CONNECTING);
    watch(n, EV_WRITE);
}

static void health_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    sy_node *n = sy_container_of(w, sy_node, health.tick);
    sy_health *h = &n->health;
    if (h->cmd_running) {
        schedule_next(n); /* the command has the connection: poll after it */
        return;
    }
    h->started = ev_now(loop);
    h->deadline_extended = 0;
    ev_timer_set(&h->deadline, settings(n)->health_timeout, 0.);
    ev_timer_start(loop, &h->deadline);
    if (h->pg && PQstatus(h->pg) == CONNECTION_OK) {
        send_poll(n);
        return;
    }
    close_conn(n);
    const sy_conn_target *target;
    char err[512];
    int rc = sy__dns_target(n, SY_DNS_FOR_HEALTH, &target, err, sizeof err);
    if (rc < 0) {
        poll_failed(n, err);
        return;
    }
    if (rc > 0) {
        /* The deadline keeps running: a slow lookup is a slow poll. */
        set_state(h, HEALTH_RESOLVING);
        return;
    }
    connect_to(n, target);
}

void sy__health_dns_done(sy_node *n, const char *err)
{
    sy_health *h = &n->health;
    if (h->state != HEALTH_RESOLVING)
        return;
    if (err) {
        poll_failed(n, err);
        return;
    }
    const sy_conn_target *target;
    char why[512];
    int rc = sy__dns_target(n, SY_DNS_FOR_HEALTH, &target, why, sizeof why);
    if (rc < 0)
        poll_failed(n, why);
    else if (rc == 0)
        connect_to(n, target);
    /* rc > 0: another lookup started (cannot happen on a fresh result);
     * the poller stays RESOLVING and is called again. */
}

static void health_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    sy_node *n = sy_container_of(w, sy_node, health.deadline);
    sy_health *h = &n->health;
    double timeout = h->cmd_running ? h->cmd_timeout : settings(n)->health_timeout;
    if (!h->deadline_extended && sy__io_run_if_ready(loop, &h->io)) {
        /* The server had answered: the time went by in our own stall.  A
         * poll with steps to go gets one more period, once. */
        if ((h->state == HEALTH_CONNECTING || h->state == HEALTH_QUERYING) &&
            !ev_is_active(&h->deadline)) {
            h->deadline_extended = 1;
            ev_timer_set(&h->deadline, timeout, 0.);
            ev_timer_start(loop, &h->deadline);
        }
        return;
    }
    char why[96];
    sy__fmt(why, sizeof why, "no answer within %.3g s", timeout);
    poll_failed(n, why);
}

void sy__health_start(sy_node *n)
{
    sy_health *h = &n->health;
    if (h->started_once || !n->engine)
        return;
    h->started_once = 1;
    ev_init(&h->io, health_io_cb);
    ev_init(&h->tick, health_tick_cb);
    ev_init(&h->deadline, health_deadline_cb);
    /* First poll right away so lag and role are known early. */
    ev_timer_set(&h->tick, 0., 0.);
    ev_timer_start(node_loop(n), &h->tick);
}

void sy__health_stop(sy_node *n)
{
    sy_health *h = &n->health;
    if (!h->started_once)
        return;
    ev_timer_stop(node_loop(n), &h->tick);
    ev_timer_stop(node_loop(n), &h->deadline);
    close_conn(n);
    if (h->pending) {
        PQclear(h->pending);
        h->pending = NULL;
    }
    if (h->cmd_result) {
        PQclear(h->cmd_result);
        h->cmd_result = NULL;
    }
    if (h->cmd_cb)
        finish_command(n, NULL, "health polling stopped");
    h->started_once = 0;
}
