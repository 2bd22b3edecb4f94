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
static int translate(sy_client *c, sy_link *l, const sy_pg_msg *m);

/* ------------------------------------------------------------ replies */

/* A reply the proxy makes: in order behind what the backend still owes,
 * or straight to the client when nothing is outstanding. */
static int local_reply(sy_client *c, sy_link *l, const sy_buf *b)
{
    c->proxy->stats.local_replies++;
    if (l)
        return sy__link_expect_fake(l, b->buf, b->len);
    return sy__buf_append(&c->out, b->buf, b->len);
}

static char current_status(const sy_client *c, const sy_link *l)
{
    return l ? l->tx_status : c->tx_status ? c->tx_status : 'I';
}

static int reply_simple(sy_client *c, sy_link *l, uint8_t type)
{
    sy_buf b;
    sy__buf_init(&b);
    sy__pg_build_empty(&b, type);
    int rc = local_reply(c, l, &b);
    sy__buf_free(&b);
    return rc;
}

static int reply_command(sy_client *c, sy_link *l, const char *tag, int ready)
{
    sy_buf b;
    sy__buf_init(&b);
    sy__pg_build_command_complete(&b, tag);
    if (ready)
        sy__pg_build_ready(&b, current_status(c, l));
    int rc = b.oom ? -1 : local_reply(c, l, &b);
    sy__buf_free(&b);
    return rc;
}

/* An ERROR the proxy makes for one statement of a batch.  In the extended
 * protocol the rest of the batch is dropped up to Sync, as PostgreSQL does. */
static int reply_error(sy_client *c, sy_link *l, int extended, const char *sqlstate,
                       const char *message)
{
    sy_buf b;
    sy__buf_init(&b);
    sy_pg_notice_fields f = {.severity = "ERROR", .sqlstate = sqlstate,
                             .message = message};
    sy__pg_build_error(&b, &f);
    if (!extended)
        sy__pg_build_ready(&b, current_status(c, l));
    int rc = b.oom ? -1 : local_reply(c, l, &b);
    sy__buf_free(&b);
    if (extended)
        c->in_error_skip = 1;
    return rc;
}

/* ------------------------------------------------------------ local statements */

static int is_switchyard_var(const sy_set_stmt *s)
{
    return strncmp(s->name, "switchyard.", 11) == 0 && s->name[11] != '\0';
}

/* A value as the client wrote it, without quotes: 'x' -> x, "x" -> x. */
static size_t unquote(const char *v, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    if (n >= 2 && (v[0] == '\'' || v[0] == '"') && v[n - 1] == v[0]) {
        char q = v[0];
        for (size_t i = 1; i + 1 < n && k + 1 < cap; i++) {
            out[k++] = v[i];
            if (v[i] == q && v[i + 1] == q)
                i++;
        }
    } else {
        for (size_t i = 0; i < n && k + 1 < cap; i++)
            out[k++] = v[i];
    }
    out[k] = '\0';
    return k;
}

/* SET switchyard.<name> = value: a routing variable for the policy, never
 * sent to PostgreSQL. */
static int set_switchyard_var(sy_client *c, const sy_set_stmt *s)
{
    const char *name = s->name + 11;
    if (s->kind == SY_SET_RESET)
        return sy_session_set(c->session, name, NULL);
    char value[512];
    unquote(s->value, s->value_len, value, sizeof value);
    return sy_session_set(c->session, name, value);
}

static int words_are(const char *sql, size_t len, const char *a, const char *b)
{
    sy_statement st;
    sy_classify(sql, len, NULL, &st);
    const char *w = sql + st.first_word.off;
    size_t wl = st.first_word.len;
    if (wl != strlen(a) || strncasecmp(w, a, wl) != 0)
        return 0;
    if (!b)
        return 1;
    const char *p = w + wl, *end = sql + len;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    size_t bl = strlen(b);
    if ((size_t)(end - p) < bl || strncasecmp(p, b, bl) != 0)
        return 0;
    p += bl;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ';'))
        p++;
    return p == end;
}

/* DEALLOCATE [PREPARE] name | ALL for protocol-level statements. */
static int deallocate_target(sy_client *c, const char *sql, size_t len,
                             char *name, size_t cap)
{
    if (!words_are(sql, len, "deallocate", NULL))
        return 0;
    const char *p = sql, *end = sql + len;
    while (p < end && strncasecmp(p, "deallocate", 10) != 0)
        p++;
    p += 10;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\t'))
        p++;
    if (end - p >= 7 && strncasecmp(p, "prepare", 7) == 0 &&
        (p + 7 == end || p[7] == ' ' || p[7] == '\n' || p[7] == '\t')) {
        p += 7;
        while (p < end && (*p == ' ' || *p == '\n' || *p == '\t'))
            p++;
    }
    const char *e = end;
    while (e > p && (e[-1] == ' ' || e[-1] == ';' || e[-1] == '\n' || e[-1] == '\t'))
        e--;
    if (e == p)
        return 0;
    size_t n = unquote(p, (size_t)(e - p), name, cap);
    if (strcasecmp(name, "all") == 0)
        return 2;
    return sy__client_stmt_find(c, name, n) ? 1 : 0;
}

/* Whether the statement starts with a word the proxy may answer itself
 * (SET, RESET, DEALLOCATE, DISCARD): a cheap test before the real ones,
 * since nearly every query is something else. */
static int may_be_local(const char *sql, size_t len)
{
    size_t i = 0;
    for (;;) {
        while (i < len && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r'))
            i++;
        if (i + 1 < len && sql[i] == '-' && sql[i + 1] == '-') {
            while (i < len && sql[i] != '\n')
                i++;
        } else if (i + 1 < len && sql[i] == '/' && sql[i + 1] == '*') {
            const char *end = memmem(sql + i + 2, len - i - 2, "*/", 2);
            i = end ? (size_t)(end - sql) + 2 : len;
        } else {
            break;
        }
    }
    if (i >= len)
        return 0;
    char ch = (char)(sql[i] | 0x20);
    if (ch == 's' || ch == 'r')
        return len - i >= 3 && strncasecmp(sql + i, ch == 's' ? "set" : "res", 3) == 0;
    return ch == 'd' && len - i >= 4 &&
           (strncasecmp(sql + i, "deal", 4) == 0 || strncasecmp(sql + i, "disc", 4) == 0);
}

/* A simple query the proxy answers itself; 1 if it did, 0 if the backend
 * must run it, -1 on error. */
static int try_local_query(sy_client *c, sy_link *l, const char *sql, size_t len)
{
    sy_proxy *px = c->proxy;
    if (!may_be_local(sql, len))
        return 0;
    sy_set_stmt s;
    sy_set_kind k = sy__params_parse_set(sql, len, &s);
    if ((k == SY_SET_VALUE || k == SY_SET_RESET) && is_switchyard_var(&s) &&
        px->set.switchyard_variables) {
        if (set_switchyard_var(c, &s) < 0)
            return -1;
        return reply_command(c, l, k == SY_SET_RESET ? "RESET" : "SET", 1) < 0 ? -1 : 1;
    }
    if (px->set.max_prepared > 0 && !c->sticky) {
        char name[256];
        int d = deallocate_target(c, sql, len, name, sizeof name);
        if (d == 2) {
            sy__client_stmt_clear(c);
            return reply_command(c, l, "DEALLOCATE ALL", 1) < 0 ? -1 : 1;
        }
        if (d == 1) {
            sy__client_stmt_drop(c, name, strlen(name));
            return reply_command(c, l, "DEALLOCATE", 1) < 0 ? -1 : 1;
        }
        if (words_are(sql, len, "discard", "all") &&
            current_status(c, l) == 'I') {
            sy__client_stmt_clear(c);
            if (sy__params_copy(&c->params, &c->startup_params) < 0)
                return -1;
            return reply_command(c, l, "DISCARD ALL", 1) < 0 ? -1 : 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ stickiness */

/* Copies a tracked SET (its value points into a message) into storage
 * that outlives the message. */
static void keep_set(sy_set_stmt *dst, char *value_buf, size_t cap, const sy_set_stmt *s)
{
    *dst = *s;
    size_t vl = s->value_len < cap - 1 ? s->value_len : cap - 1;
    if (s->value)
        memcpy(value_buf, s->value, vl);
    value_buf[vl] = '\0';
    dst->value = value_buf;
    dst->value_len = vl;
}

/* DECLARE ... WITH HOLD: the cursor outlives its transaction. */
static int declares_with_hold(const char *sql, size_t len)
{
    for (size_t i = 0; i + 9 <= len; i++) {
        if (strncasecmp(sql + i, "with", 4) != 0 || (i > 0 && sql[i - 1] != ' ' &&
                                                    sql[i - 1] != '\n' && sql[i - 1] != '\t'))
            continue;
        size_t j = i + 4;
        if (j >= len || (sql[j] != ' ' && sql[j] != '\n' && sql[j] != '\t'))
            continue;
        while (j < len && (sql[j] == ' ' || sql[j] == '\n' || sql[j] == '\t'))
            j++;
        if (len - j >= 4 && strncasecmp(sql + j, "hold", 4) == 0)
            return 1;
    }
    return 0;
}

static int first_word_is(const char *sql, const sy_statement *st, const char *w)
{
    return st->first_word.len == strlen(w) &&
           strncasecmp(sql + st->first_word.off, w, st->first_word.len) == 0;
}

/* What a statement means for the client's session:
 *   0  nothing to keep
 *   1  a SET / RESET the proxy tracks: *set is filled; recorded when it
 *      completes and replayed on later backends
 *   2  session-only state (LISTEN, WITH HOLD cursors, temporary tables,
 *      session advisory locks, PREPARE, SET ROLE, ...): pin the client */
static int session_effect(const char *sql, size_t len, sy_set_stmt *set)
{
    sy_statement st;
    sy_classify(sql, len, NULL, &st);
    if (st.flags & (SY_STMT_TEMP_TABLE | SY_STMT_ADVISORY_LOCK))
        return 2;
    if (st.kind != SY_KIND_SESSION)
        return 0;
    if (first_word_is(sql, &st, "set") || first_word_is(sql, &st, "reset")) {
        switch (sy__params_parse_set(sql, len, set)) {
        case SY_SET_VALUE:
        case SY_SET_RESET:
        case SY_SET_RESET_ALL:
            return 1;
        case SY_SET_LOCAL:
            return 0;
        default:
            return 2;
        }
    }
    if (first_word_is(sql, &st, "declare"))
        return declares_with_hold(sql, len) ? 2 : 0;
    if (first_word_is(sql, &st, "prepare"))
        return (st.flags & SY_STMT_TX_END) ? 0 : 2; /* PREPARE TRANSACTION ends it */
    static const char *const harmless[] = {"unlisten", "discard", "deallocate", "close",
                                           "execute", "fetch", "move", NULL};
    for (int i = 0; harmless[i]; i++)
        if (first_word_is(sql, &st, harmless[i]))
            return 0;
    return 2; /* LISTEN, LOAD, SELECT set_config(...), ... */
}

static void pin(sy_client *c, const char *sql, size_t len)
{
    if (c->sticky)
        return;
    c->sticky = 1;
    c->proxy->stats.pins++;
    sy__log(c->proxy->engine, SY_LOG_DEBUG,
            "client %u pinned to its backend (session state: %.*s)", c->pid,
            (int)(len > 60 ? 60 : len), sql);
}

/* A tracked SET goes out: its CommandComplete makes it the session's. */
static void expect_set(sy_link *l, const sy_set_stmt *s)
{
    keep_set(&l->pending_set, l->pending_set_value, sizeof l->pending_set_value, s);
    l->has_pending_set = 1;
}

/* ------------------------------------------------------------ translation */

static int ensure_prepared(sy_client *c, sy_link *l, sy_stmt *st)
{
    sy_proxy *px = c->proxy;
    if (sy__link_stmt_has(l, st)) {
        px->stats.prepare_hits++;
        return 0;
    }
    return sy__link_prepare(px, l, st, 1);
}

static int forward(sy_link *l, const sy_pg_msg *m, uint8_t expect)
{
    l->synced = 0;
    if (sy__buf_append(&l->out, (const char *)m->payload - 5, m->total) < 0)
        return -1;
    return expect ? sy__link_expect(l, expect, 0) : 0;
}

static int unknown_statement(sy_client *c, sy_link *l, const sy_pg_span *name)
{
    char msg[200];
    sy__fmt(msg, sizeof msg, "prepared statement \"%.*s\" does not exist",
            (int)(name->len > 100 ? 100 : name->len), name->p);
    return reply_error(c, l, 1, "26000", msg);
}

static int translate_parse(sy_client *c, sy_link *l, const sy_pg_msg *m)
{
    sy_proxy *px = c->proxy;
    sy_pg_parse p;
    sy_pg_error err;
    if (sy__pg_parse_parse(m, &p, &err) < 0)
        return reply_error(c, l, 1, err.sqlstate, err.message);
    sy_set_stmt set;
    int effect = session_effect(p.query.p, p.query.len, &set);
    if (effect == 2 || (effect == 1 && p.name.len > 0))
        pin(c, p.query.p, p.query.len); /* named SETs are rare: not tracked */
    if (p.name.len == 0) {
        c->unnamed_is_set = effect == 1;
        if (effect == 1)
            keep_set(&c->unnamed_set, c->unnamed_set_value, sizeof c->unnamed_set_value,
                     &set);
    }
    if (p.name.len == 0 || px->set.max_prepared == 0) {
        if (p.name.len)
            c->sticky = 1; /* renaming is off: names live on one backend */
        return forward(l, m, SY_X_PARSE);
    }
    if (sy__client_stmt_find(c, p.name.p, p.name.len))
        sy__client_stmt_drop(c, p.name.p, p.name.len);
    sy_stmt *st = sy__stmt_get(px, &p);
    if (!st || sy__client_stmt_put(c, p.name.p, p.name.len, st) < 0) {
        sy__stmt_unref(px, st);
        return -1;
    }
    if (sy__link_stmt_has(l, st)) {
        px->stats.prepare_hits++;
        return reply_simple(c, l, SY_PG_PARSE_COMPLETE);
    }
    return sy__link_prepare(px, l, st, 0);
}

static int translate_bind(sy_client *c, sy_link *l, const sy_pg_msg *m)
{
    sy_pg_bind b;
    sy_pg_error err;
    if (sy__pg_parse_bind(m, &b, &err) < 0)
        return reply_error(c, l, 1, err.sqlstate, err.message);
    if (b.portal.len == 0)
        c->portal_is_set = b.statement.len == 0 && c->unnamed_is_set;
    if (b.statement.len == 0 || c->proxy->set.max_prepared == 0)
        return forward(l, m, SY_X_BIND);
    sy_stmt *st = sy__client_stmt_find(c, b.statement.p, b.statement.len);
    if (!st)
        return unknown_statement(c, l, &b.statement);
    if (ensure_prepared(c, l, st) < 0 ||
        sy__pg_build_bind_renamed(&l->out, &b, st->server_name,
                                  strlen(st->server_name)) < 0)
        return -1;
    return sy__link_expect(l, SY_X_BIND, 0);
}

static int translate_describe(sy_client *c, sy_link *l, const sy_pg_msg *m)
{
    sy_pg_target t;
    sy_pg_error err;
    if (sy__pg_parse_describe(m, &t, &err) < 0)
        return reply_error(c, l, 1, err.sqlstate, err.message);
    if (t.kind != 'S' || t.name.len == 0 || c->proxy->set.max_prepared == 0)
        return forward(l, m, SY_X_DESCRIBE);
    sy_stmt *st = sy__client_stmt_find(c, t.name.p, t.name.len);
    if (!st)
        return unknown_statement(c, l, &t.name);
    if (ensure_prepared(c, l, st) < 0 ||
        sy__pg_build_describe(&l->out, 'S', st->server_name) < 0)
        return -1;
    return sy__link_expect(l, SY_X_DESCRIBE, 0);
}

static int translate_close(sy_client *c, sy_link *l, const sy_pg_msg *m)
{
    sy_pg_target t;
    sy_pg_error err;
    if (sy__pg_parse_close(m, &t, &err) < 0)
        return reply_error(c, l, 1, err.sqlstate, err.message);
    if (t.kind == 'S' && t.name.len > 0 && c->proxy->set.max_prepared > 0) {
        /* The backend keeps it (cached for other clients). */
        sy__client_stmt_drop(c, t.name.p, t.name.len);
        return reply_simple(c, l, SY_PG_CLOSE_COMPLETE);
    }
    if (!l) /* a portal or unnamed statement with no backend: gone already */
        return reply_simple(c, l, SY_PG_CLOSE_COMPLETE);
    return forward(l, m, SY_X_CLOSE);
}

static int translate_query(sy_client *c, sy_link *l, const sy_pg_msg *m)
{
    sy_pg_span sql;
    sy_pg_error err;
    if (sy__pg_parse_query(m, &sql, &err) < 0)
        return reply_error(c, l, 0, err.sqlstate, err.message);
    int local = try_local_query(c, l, sql.p, sql.len);
    if (local != 0)
        return local < 0 ? -1 : 0;
    sy_set_stmt set;
    int effect = session_effect(sql.p, sql.len, &set);
    if (effect == 2)
        pin(c, sql.p, sql.len);
    if (forward(l, m, 0) < 0)
        return -1;
    if (effect == 1)
        expect_set(l, &set);
    return sy__link_expect(l, SY_X_QUERY, effect == 1 ? SY_XF_SET : 0);
}

/* One client message onto linked backend l (NULL: a batch the proxy
 * answers alone, see batch_is_local). */
static int translate(sy_client *c, sy_link *l, const sy_pg_msg *m)
{
    if (c->in_error_skip && m->type != SY_PG_SYNC)
        return 0;
    switch (m->type) {
    case SY_PG_QUERY:
        c->proxy->stats.queries++;
        c->queries++;
        return translate_query(c, l, m);
    case SY_PG_PARSE:
        return translate_parse(c, l, m);
    case SY_PG_BIND:
        return translate_bind(c, l, m);
    case SY_PG_DESCRIBE:
        return translate_describe(c, l, m);
    case SY_PG_EXECUTE: {
        c->proxy->stats.queries++;
        c->queries++;
        sy_pg_execute ex;
        int set = c->portal_is_set && sy__pg_parse_execute(m, &ex, NULL) == 0 &&
                  ex.portal.len == 0;
        if (forward(l, m, 0) < 0)
            return -1;
        if (set)
            expect_set(l, &c->unnamed_set);
        return sy__link_expect(l, SY_X_EXECUTE, set ? SY_XF_SET : 0);
    }
    case SY_PG_CLOSE:
        return translate_close(c, l, m);
    case SY_PG_SYNC:
        c->in_error_skip = 0;
        if (!l) {
            sy_buf b;
            sy__buf_init(&b);
            sy__pg_build_ready(&b, current_status(c, l));
            int rc = local_reply(c, l, &b);
            sy__buf_free(&b);
            return rc;
        }
        return forward(l, m, SY_X_SYNC);
    case SY_PG_FLUSH:
        return l ? forward(l, m, 0) : 0;
    default: /* CopyData / CopyDone / CopyFail */
        return l ? forward(l, m, 0) : 0;
    }
}

/* ------------------------------------------------------------ batches */

/* Walks the messages stored in a batch buffer. */
static int next_msg(const sy_buf *b, size_t *pos, sy_pg_msg *m)
{
    if (*pos >= b->len)
        return 0;
    if (sy__pg_frame(b->buf + *pos, b->len - *pos, 0, m, NULL) != SY_PG_OK)
        return 0;
    *pos += m->total;
    return 1;
}

/* Whether the proxy can answer the whole batch without a backend. */
static int batch_is_local(sy_client *c)
{
    size_t pos = 0;
    sy_pg_msg m;
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
            if (!may_be_local(sql.p, sql.len))
                return 0;
            sy_set_stmt s;
            sy_set_kind k = sy__params_parse_set(sql.p, sql.len, &s);
            if ((k == SY_SET_VALUE || k == SY_SET_RESET) && is_switchyard_var(&s) &&
                c->proxy->set.switchyard_variables)
                break;
            char name[256];
            if (c->proxy->set.max_prepared > 0 &&
                (deallocate_target(c, sql.p, sql.len, name, sizeof name) ||
                 words_are(sql.p, sql.len, "discard", "all")))
                break;
            return 0;
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

static void consider(sy_client *c, batch_route *r, const char *sql, size_t len)
{
    sy_statement st;
    sy_classify(sql, len,
                (const char *const *)c->proxy->engine->lua->set.write_functions, &st);
    if (!r->sql || (r->stmt.kind == SY_KIND_READ && st.kind != SY_KIND_READ &&
                    !(r->stmt.flags & SY_STMT_MULTI))) {
        r->sql = sql;
        r->len = len;
        r->stmt = st;
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

static void find_route_sql(sy_client *c, batch_route *r)
{
    memset(r, 0, sizeof *r);
    size_t pos = 0;
    sy_pg_msg m;
    sy_pg_span unnamed = {NULL, 0};
    int have_params = 0;
    while (next_msg(&c->batch, &pos, &m)) {
        if (m.type == SY_PG_QUERY) {
            sy_pg_span sql;
            if (sy__pg_parse_query(&m, &sql, NULL) == 0)
                consider(c, r, sql.p, sql.len);
        } else if (m.type == SY_PG_PARSE) {
            sy_pg_parse p;
            if (sy__pg_parse_parse(&m, &p, NULL) == 0) {
                if (p.name.len == 0)
                    unnamed = p.query;
                consider(c, r, p.query.p, p.query.len);
            }
        } else if (m.type == SY_PG_BIND) {
            sy_pg_bind b;
            if (sy__pg_parse_bind(&m, &b, NULL) < 0)
                continue;
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
    if (readies == 0)
        readies = 1;
    while (readies-- > 0)
        sy__pg_build_ready(&b, current_status(c, NULL));
    int rc = sy__buf_append(&c->out, b.buf, b.len);
    sy__buf_free(&b);
    sy__buf_reset(&c->batch);
    c->batch_ready = 0;
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
        rc = translate(c, l, &m);
    sy__buf_reset(&c->batch);
    c->batch_ready = 0;
    return rc;
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
    c->node = route.node;
    sy__node_ref(c->node);
    c->state = SY_CLIENT_WAITING;
    c->wait_started = ev_now(px->loop);
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
            rc = sy__link_expect(l, SY_X_QUERY, SY_XF_SKIP | SY_XF_SKIP_ERRORS);
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
    if (c->state == SY_CLIENT_WAITING) {
        sy__pool_cancel(&c->node->relay_pool, &c->waiter);
        sy__node_unref(c->node);
        c->node = NULL;
    }
    sy_link *l = c->linked;
    if (!l)
        return;
    /* A backend in a transaction, owing replies or carrying the client's
     * session state is not fit for anyone else. */
    int dirty = l->q_len > 0 || l->tx_status != 'I' || c->sticky ||
                l->out.len > l->out_off;
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
        sy__client_error(c, "0A000",
                         "the function call protocol message is not supported by "
                         "switchyard; call the function with SELECT instead");
        return 0;
    case SY_PG_COPY_DATA:
    case SY_PG_COPY_DONE:
    case SY_PG_COPY_FAIL:
        /* Outside COPY PostgreSQL ignores these too. */
        return c->linked ? translate(c, c->linked, m) : 0;
    default:
        break;
    }
    if (c->linked) {
        if (translate(c, c->linked, m) < 0)
            return -1;
        return 0;
    }
    if (sy__buf_append(&c->batch, (const char *)m->payload - 5, m->total) < 0)
        return -1;
    if (m->type == SY_PG_SYNC || m->type == SY_PG_QUERY || m->type == SY_PG_FLUSH) {
        c->batch_ready = 1;
        return dispatch_batch(c);
    }
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
