/*
 * relay.c - transaction pooling, the client half.  A logged-in client's
 * messages collect into a batch up to Sync, Query or Flush; the batch is
 * routed by the policy, a backend of the chosen node is linked to the
 * client, and the messages are translated onto it: statement names
 * renamed (prepared.c), parameters replayed first (params.c), local
 * statements (SET switchyard.x, DISCARD ALL, DEALLOCATE, Close of a named
 * statement) answered by the proxy in their place in the reply stream.
 * The backend stays linked until it is idle with nothing outstanding
 * (sy__relay_ready), or for the whole session once the client used
 * session-only features.
 */
#include "proxy.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void waiter_ready(sy_waiter *w, sy_conn *conn, int err);

/* ------------------------------------------------------------ batches */

/* Walks the messages stored in a batch buffer (whole messages, framed and
 * checked as they arrived). */
static int next_msg(const sy_buf *b, size_t *pos, sy_pg_msg *m)
{
    if (*pos >= b->len)
        return 0;
    *m = sy__pg_frame_known(b->buf + *pos);
    *pos += m->total;
    return 1;
}

/* Whether the proxy can answer the whole batch without a backend.  Runs
 * first on every batch, so it starts the batch's parse cache. */
static int batch_is_local(sy_client *c)
{
    size_t pos = 0;
    sy_pg_msg m;
    c->parsed_in = c->batch.buf;
    c->parse_at = c->bind_at = c->query_at = 0;
    while (next_msg(&c->batch, &pos, &m)) {
        switch (m.type) {
        case SY_PG_SYNC:
        case SY_PG_FLUSH:
            break;
        case SY_PG_CLOSE: {
            sy_pg_target t;
            if (sy__pg_parse_close(&m, &t, NULL) < 0 || t.kind != 'S' ||
                t.name.len == 0 || c->proxy->set.max_prepared == 0)
                return 0;
            break;
        }
        case SY_PG_QUERY: {
            sy_pg_span sql;
            if (sy__pg_parse_query(&m, &sql, NULL) < 0)
                return 1; /* answered with the parse error */
            int maybe = sy__relay_may_be_local(sql.p, sql.len);
            int local = maybe && sy__relay_query_is_local(c, sql.p, sql.len);
            if (!c->query_at) {
                c->query_at = (size_t)((const char *)m.payload - c->batch.buf);
                c->parsed_query = sql;
                c->query_not_local = !maybe;
            }
            if (!local)
                return 0;
            break;
        }
        default:
            return 0;
        }
    }
    return 1;
}

/* The SQL the batch is routed on: its first statement, or the first one
 * that is not a plain read (a write anywhere sends the batch to a primary). */
typedef struct batch_route {
    const char *sql;
    size_t len;
    sy_statement stmt;
    int nparams;
} batch_route;

void sy__relay_classify(sy_client *c, const char *sql, size_t len, sy_statement *out,
                        int remember)
{
    if (c->cls_sql == sql && c->cls_len == len && sql) {
        /* valid until the batch is done (cls_sql reset) */
        sy__statement_copy(out, &c->cls_stmt);
        return;
    }
    sy__classify(c->proxy->engine, sql, len, out);
    if (remember) {
        sy__statement_copy(&c->cls_stmt, out);
        c->cls_sql = sql;
        c->cls_len = len;
    }
}

static void consider(sy_client *c, batch_route *r, const char *sql, size_t len)
{
    sy_statement st;
    sy__relay_classify(c, sql, len, &st, 1);
    if (!r->sql || (r->stmt.kind == SY_KIND_READ && st.kind != SY_KIND_READ &&
                    !(r->stmt.flags & SY_STMT_MULTI))) {
        r->sql = sql;
        r->len = len;
        sy__statement_copy(&r->stmt, &st);
    }
}

static int collect_params(sy_proxy *px, const sy_pg_bind *b)
{
    if (b->nparams > px->route_cap) {
        int cap = b->nparams;
        const char **v = realloc(px->route_values, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        px->route_values = v;
        int *ln = realloc(px->route_lengths, (size_t)cap * sizeof *ln);
        if (!ln)
            return -1;
        px->route_lengths = ln;
        px->route_cap = cap;
    }
    size_t pos = 0;
    sy_pg_span v;
    int i = 0;
    while (sy__pg_bind_next_value(b, &pos, &v)) {
        px->route_values[i] = v.p;
        px->route_lengths[i] = v.p ? (int)v.len : 0;
        i++;
    }
    return i;
}

int sy__relay_parsed(const sy_client *c, const sy_pg_msg *m, size_t at)
{
    /* Offsets, not pointers, were kept: the batch is only appended to
     * while it waits, so an offset holds even if the buffer moved; the
     * check on the buffer itself makes sure. */
    return at && c->parsed_in == c->batch.buf && (const char *)m->payload == c->batch.buf + at;
}

static void find_route_sql(sy_client *c, batch_route *r)
{
    r->sql = NULL; /* r->stmt is read only once sql is set */
    r->len = 0;
    r->nparams = 0;
    size_t pos = 0;
    sy_pg_msg m;
    sy_pg_span unnamed = {NULL, 0};
    int have_params = 0;
    while (next_msg(&c->batch, &pos, &m)) {
        if (m.type == SY_PG_QUERY) {
            sy_pg_span sql;
            if (sy__relay_parsed(c, &m, c->query_at))
                consider(c, r, c->parsed_query.p, c->parsed_query.len);
            else if (sy__pg_parse_query(&m, &sql, NULL) == 0)
                consider(c, r, sql.p, sql.len);
        } else if (m.type == SY_PG_PARSE) {
            sy_pg_parse p;
            if (sy__pg_parse_parse(&m, &p, NULL) == 0) {
                if (!c->parse_at) {
                    c->parse_at = (size_t)((const char *)m.payload - c->batch.buf);
                    c->parsed_parse = p;
                }
                if (p.name.len == 0)
                    unnamed = p.query;
                consider(c, r, p.query.p, p.query.len);
            }
        } else if (m.type == SY_PG_BIND) {
            sy_pg_bind b;
            if (sy__pg_parse_bind(&m, &b, NULL) < 0)
                continue;
            if (!c->bind_at) {
                c->bind_at = (size_t)((const char *)m.payload - c->batch.buf);
                c->parsed_bind = b;
            }
            sy_stmt *st = b.statement.len
                              ? sy__client_stmt_find(c, b.statement.p, b.statement.len)
                              : NULL;
            if (st)
                consider(c, r, st->query, st->query_len);
            else if (!b.statement.len && unnamed.p)
                consider(c, r, unnamed.p, unnamed.len);
            if (!have_params) {
                int n = collect_params(c->proxy, &b);
                r->nparams = n < 0 ? 0 : n;
                have_params = 1;
            }
        } else if (m.type == SY_PG_DESCRIBE) {
            sy_pg_target t;
            if (sy__pg_parse_describe(&m, &t, NULL) == 0 && t.kind == 'S' && t.name.len) {
                sy_stmt *st = sy__client_stmt_find(c, t.name.p, t.name.len);
                if (st)
                    consider(c, r, st->query, st->query_len);
            }
        }
    }
    if (!r->sql)
        consider(c, r, "", 0);
}

/* The batch is done: empty it, and with it what was remembered of it (its
 * classified statement, its parsed messages). */
static void forget_batch(sy_client *c)
{
    c->cls_sql = NULL;
    c->parsed_in = NULL;
    sy__buf_reset(&c->batch);
}

/* Answers a batch the policy refused (or that found no backend): the
 * error, then ReadyForQuery for each Sync / Query in it. */
static int fail_batch(sy_client *c, const char *sqlstate, const char *message)
{
    sy_buf b;
    sy__buf_init(&b);
    sy_pg_notice_fields f = {.severity = "ERROR", .sqlstate = sqlstate,
                             .message = message};
    sy__pg_build_error(&b, &f);
    size_t pos = 0;
    sy_pg_msg m;
    int readies = 0;
    while (next_msg(&c->batch, &pos, &m))
        if (m.type == SY_PG_SYNC || m.type == SY_PG_QUERY)
            readies++;
    /* A batch that ended with Flush is answered up to the error; the rest
     * of it, up to the client's Sync, is skipped as PostgreSQL would. */
    if (readies == 0)
        c->in_error_skip = 1;
    while (readies-- > 0)
        sy__pg_build_ready(&b, sy__relay_status(c, NULL));
    int rc = sy__buf_append(&c->out, b.buf, b.len);
    sy__buf_free(&b);
    /* The batch is done with: a later one parks or reroutes afresh. */
    sy__park_done(c->proxy->engine, &c->park);
    c->rerouted = 0;
    forget_batch(c);
    c->state = SY_CLIENT_IDLE;
    return rc < 0 || sy__client_flush(c) < 0 ? -1 : 0;
}

/* Runs every stored message of the batch on l (or locally). */
static int translate_batch(sy_client *c, sy_link *l)
{
    size_t pos = 0;
    sy_pg_msg m;
    int rc = 0;
    while (rc == 0 && next_msg(&c->batch, &pos, &m))
        rc = sy__relay_translate(c, l, &m);
    forget_batch(c);
    return rc;
}

static int dispatch_batch(sy_client *c);

/* Routes the batch still in c->batch again (parked for a primary, or its
 * node went down before it was sent); a batch answered at once lets the
 * client's input go on. */
static void route_again(sy_client *c)
{
    if (dispatch_batch(c) < 0)
        sy__client_close(c, "out of memory");
    else if (c->state == SY_CLIENT_IDLE)
        sy__client_process(c);
}

static void park_retry(sy_parked *p)
{
    route_again(sy_container_of(p, sy_client, park));
}

static void park_expired(sy_parked *p, int stopping)
{
    sy_client *c = sy_container_of(p, sy_client, park);
    char msg[128];
    sy__fmt(msg, sizeof msg, "switchyard: no primary took over within %.3g s", p->wait);
    int rc = stopping ? fail_batch(c, "57P01", "switchyard is shutting down")
                      : fail_batch(c, "08006", msg);
    if (rc == 0)
        sy__client_process(c);
}

static int dispatch_batch(sy_client *c)
{
    sy_proxy *px = c->proxy;
    sy_engine *e = px->engine;
    px->stats.batches++;
    if (batch_is_local(c)) {
        if (translate_batch(c, NULL) < 0)
            return -1;
        return sy__client_flush(c);
    }
    if (SY_ENGINE_CLOSING(e))
        return fail_batch(c, "57P01", "switchyard is shutting down");
    batch_route r;
    find_route_sql(c, &r);
    sy_route_input in = {
        .sql = r.sql,
        .sql_len = r.len,
        .stmt = &r.stmt,
        .nparams = r.nparams,
        .param_values = px->route_values,
        .param_lengths = px->route_lengths,
        .session = c->session,
        .in_tx = 0,
    };
    sy_route route;
    e->stats.queries++;
    sy__route_timed(e, &in, &route);
    if (route.failed) {
        e->stats.policy_errors++;
        sy__emit(e, SY_EVENT_POLICY_ERROR, NULL, NULL, "%s", route.message);
        char msg[600];
        sy__fmt(msg, sizeof msg, "switchyard: policy error: %s", route.message);
        return fail_batch(c, "XX000", msg);
    }
    if (route.rejected) {
        e->stats.rejected++;
        return fail_batch(c, route.sqlstate, route.message);
    }
    if (route.wait > 0) {
        c->state = SY_CLIENT_WAITING; /* no node: parked until the roles change */
        c->park.retry = park_retry;
        c->park.expired = park_expired;
        sy__park(e, &c->park, route.wait);
        return 0;
    }
    sy__park_done(e, &c->park);
    c->node = route.node;
    sy__node_ref(c->node);
    c->batch_may_write = r.stmt.kind != SY_KIND_READ;
    c->state = SY_CLIENT_WAITING;
    c->waiter.ready = waiter_ready;
    sy__pool_acquire(&c->node->relay_pool, &c->waiter, px->set.wait_backend);
    return 0;
}

/* ------------------------------------------------------------ linking */

static int link_client(sy_client *c, sy_conn *conn)
{
    sy_link *l = sy__link_of(c->proxy, conn);
    if (!l)
        return -1;
    l->client = c;
    c->linked = l;
    c->state = SY_CLIENT_LINKED;
    sy_buf sql;
    sy__buf_init(&sql);
    int n = sy__params_diff_sql(&l->params, &c->params, &sql);
    int rc = 0;
    if (n > 0) {
        rc = sy__pg_build_query(&l->out, sql.buf, sql.len);
        if (rc == 0)
            rc = sy__link_expect(l, SY_X_QUERY, SY_XF_SKIP | SY_XF_SKIP_ERRORS | SY_XF_REPLAY);
        if (rc == 0)
            rc = sy__params_copy(&l->params, &c->params);
    }
    sy__buf_free(&sql);
    return rc;
}

static void waiter_ready(sy_waiter *w, sy_conn *conn, int err)
{
    sy_client *c = sy_container_of(w, sy_client, waiter);
    sy_proxy *px = c->proxy;
    if (!conn) {
        sy_node *node = c->node;
        c->node = NULL;
        if (err == SY_ECONN && !c->rerouted && !node->healthy) {
            /* Never sent, and its node went down: route it again once, so
             * a write can wait for a failover instead of failing. */
            c->rerouted = 1;
            sy__node_unref(node);
            route_again(c);
            return;
        }
        char msg[512];
        const char *state = "08006";
        if (err == SY_ETIMEOUT) {
            px->stats.wait_timeouts++;
            state = "53300";
            sy__fmt(msg, sizeof msg,
                    "no connection to node %s became free within %.3g s",
                    node->full_name, px->set.wait_backend);
        } else if (err == SY_ESTOPPED) {
            state = "57P01";
            sy__fmt(msg, sizeof msg, "switchyard is shutting down");
        } else {
            sy__fmt(msg, sizeof msg, "node %s is unreachable: %s", node->full_name,
                    node->relay_pool.last_error[0] ? node->relay_pool.last_error
                                                   : "connection failed");
        }
        node->c.errors++;
        sy__node_unref(node);
        if (fail_batch(c, state, msg) == 0)
            sy__client_process(c);
        return;
    }
    c->node->c.queries++;
    c->rerouted = 0;
    if (link_client(c, conn) < 0 || translate_batch(c, c->linked) < 0) {
        sy__client_close(c, "out of memory");
        return;
    }
    if (sy__link_flush(c->linked) < 0)
        return;
    if (sy__client_flush(c) < 0)
        return;
    sy__client_process(c);
}

void sy__relay_ready(sy_link *l)
{
    sy_client *c = l->client;
    if (!c || l->q_len > 0)
        return;
    c->tx_status = l->tx_status;
    if (c->session) /* read-your-writes: a write ends with its transaction */
        sy__session_statement(c->session, l->conn->pool->node, c->batch_may_write,
                              l->tx_status != 'I');
    c->batch_may_write = 0;
    sy__client_arm_timer(c); /* idle in transaction, or no timer */
    if (l->tx_status != 'I' || !l->synced || c->sticky || c->proxy->set.session_mode ||
        c->batch.len > 0 || c->in_error_skip || l->out.len > l->out_off)
        return;
    c->transactions++;
    c->proxy->stats.transactions++;
    sy__link_release(l, 0);
    c->state = SY_CLIENT_IDLE;
    if (c->proxy->draining) {
        /* Shutting down: its transaction is done, so is the client. */
        sy__client_fatal(c, "57P01", "terminating connection due to administrator command");
        return;
    }
    sy__client_arm_timer(c);
    if (c->in.len > c->in_off)
        sy__client_process(c);
}

void sy__relay_client_gone(sy_client *c)
{
    sy__park_done(c->proxy->engine, &c->park);
    if (c->state == SY_CLIENT_WAITING && c->node) {
        sy__pool_cancel(&c->node->relay_pool, &c->waiter);
        sy__node_unref(c->node);
        c->node = NULL;
    }
    sy_link *l = c->linked;
    if (!l)
        return;
    /* A backend in a transaction, owing replies or carrying the client's
     * session state is not fit for anyone else. */
    int dirty = l->q_len > 0 || l->tx_status != 'I' || !l->synced || c->sticky ||
                c->in_error_skip || l->out.len > l->out_off;
    sy__link_release(l, dirty);
}

/* ------------------------------------------------------------ entry */

int sy__relay_client_message(sy_client *c, const sy_pg_msg *m)
{
    if (c->admin) {
        if (m->type == SY_PG_QUERY) {
            sy_pg_span sql;
            if (sy__pg_parse_query(m, &sql, NULL) < 0) {
                sy__client_fatal(c, "08P01", "malformed Query message");
                return -1;
            }
            sy__admin_query(c, sql.p, sql.len);
            return sy__client_flush(c);
        }
        if (m->type == SY_PG_SYNC) {
            sy__pg_build_ready(&c->out, 'I');
            return 0;
        }
        if (m->type == SY_PG_FLUSH)
            return 0;
        sy__client_error(c, "0A000",
                         "the admin console supports simple queries only");
        return 0;
    }
    switch (m->type) {
    case SY_PG_FUNCTION_CALL:
        return sy__relay_refuse(c, c->linked, 0, "0A000",
                                "the function call protocol message is not supported by "
                                "switchyard; call the function with SELECT instead");
    case SY_PG_COPY_DATA:
    case SY_PG_COPY_DONE:
    case SY_PG_COPY_FAIL:
        /* Outside COPY PostgreSQL ignores these too. */
        return c->linked ? sy__relay_translate(c, c->linked, m) : 0;
    default:
        break;
    }
    if (c->linked) {
        /* Not routed, so not classified here: for read-your-writes any
         * statement a linked client sends may have written. */
        if (m->type == SY_PG_QUERY || m->type == SY_PG_SYNC)
            c->batch_may_write = 1;
        if (sy__relay_translate(c, c->linked, m) < 0)
            return -1;
        return 0;
    }
    if (sy__buf_append(&c->batch, (const char *)m->payload - 5, m->total) < 0)
        return -1;
    if (m->type == SY_PG_SYNC || m->type == SY_PG_QUERY || m->type == SY_PG_FLUSH)
        return dispatch_batch(c);
    return 0;
}

/* ------------------------------------------------------------ cancel */

static void cancel_done(sy_relay_cancel *rc, int err)
{
    sy_link *l = rc->done_data;
    (void)err;
    free(rc);
    l->cancel = NULL;
    if (l->release_after_cancel) {
        l->release_after_cancel = 0;
        sy__link_release(l, 0);
    }
}

void sy__relay_cancel_client(sy_client *c)
{
    sy_link *l = c->linked;
    if (!l || l->cancel || l->q_len == 0)
        return;
    sy_relay_cancel_target t;
    if (sy__relay_cancel_target(l->conn->relay, &t) < 0)
        return;
    sy_relay_cancel *rc = calloc(1, sizeof *rc);
    if (!rc)
        return;
    rc->done_data = l;
    if (sy__relay_cancel_start(rc, c->proxy->loop, &t, 5.0, cancel_done) < 0) {
        free(rc);
        return;
    }
    l->cancel = rc;
    c->proxy->stats.cancels++;
}
