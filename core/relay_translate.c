/*
 * relay_translate.c - transaction pooling: one client message onto the
 * backend linked to the client.  Statement names are renamed (prepared.c),
 * statements the proxy answers itself (SET switchyard.x, DEALLOCATE,
 * DISCARD ALL, Close of a named statement) get their replies in their place
 * in the reply stream, SET / RESET are tracked for replay (params.c) and
 * session-only features pin the client to its backend.
 */
#include "proxy.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

char sy__relay_status(const sy_client *c, const sy_link *l)
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
        sy__pg_build_ready(&b, sy__relay_status(c, l));
    int rc = b.oom ? -1 : local_reply(c, l, &b);
    sy__buf_free(&b);
    return rc;
}

/* An ERROR the proxy makes for one statement of a batch.  In the extended
 * protocol the rest of the batch is dropped up to Sync, as PostgreSQL does. */
int sy__relay_refuse(sy_client *c, sy_link *l, int extended, const char *sqlstate,
                     const char *message)
{
    sy_buf b;
    sy__buf_init(&b);
    sy_pg_notice_fields f = {.severity = "ERROR", .sqlstate = sqlstate,
                             .message = message};
    sy__pg_build_error(&b, &f);
    if (!extended && !l)
        sy__pg_build_ready(&b, sy__relay_status(c, l));
    int rc = b.oom ? -1 : local_reply(c, l, &b);
    sy__buf_free(&b);
    if (extended)
        c->in_error_skip = 1;
    if (rc < 0 || !l)
        return rc;
    /* PostgreSQL fails the transaction (or the pipeline's implicit one)
     * on an error; so must the backend, or a later COMMIT would commit
     * work the client was told failed.  A statement that cannot parse does
     * it; its own error is not the client's.  In the simple protocol its
     * ReadyForQuery answers the client's Query. */
    static const char refused[] = "switchyard refused the message";
    if (extended) {
        if (sy__pg_build_parse(&l->out, "", refused, sizeof refused - 1, 0, NULL) < 0)
            return -1;
        return sy__link_expect(l, SY_X_PARSE, SY_XF_SKIP | SY_XF_SKIP_ERRORS);
    }
    if (sy__pg_build_query(&l->out, refused, sizeof refused - 1) < 0)
        return -1;
    return sy__link_expect(l, SY_X_QUERY, SY_XF_SKIP_ERRORS);
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
int sy__relay_may_be_local(const char *sql, size_t len)
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
    /* Byte by byte, not strncasecmp: this runs for every simple query. */
    const char *w = sql + i;
    size_t left = len - i;
#define LOWER_IS(k, ch) ((w[k] | 0x20) == (ch))
    switch (w[0] | 0x20) {
    case 's':
        return left >= 3 && LOWER_IS(1, 'e') && LOWER_IS(2, 't');
    case 'r':
        return left >= 3 && LOWER_IS(1, 'e') && LOWER_IS(2, 's');
    case 'd':
        return left >= 4 && ((LOWER_IS(1, 'e') && LOWER_IS(2, 'a') && LOWER_IS(3, 'l')) ||
                             (LOWER_IS(1, 'i') && LOWER_IS(2, 's') && LOWER_IS(3, 'c')));
    default:
        return 0;
    }
#undef LOWER_IS
}

/* What a statement the proxy may answer itself is. */
typedef enum local_kind {
    LOCAL_NO = 0,
    LOCAL_VARIABLE,        /* SET / RESET switchyard.<name> */
    LOCAL_DEALLOCATE,      /* of a protocol-level statement (name filled) */
    LOCAL_DEALLOCATE_ALL,
    LOCAL_DISCARD_ALL
} local_kind;

static local_kind local_query_kind(sy_client *c, sy_link *l, const char *sql, size_t len,
                                   sy_set_stmt *set, char *name, size_t cap)
{
    sy_proxy *px = c->proxy;
    if (!sy__relay_may_be_local(sql, len))
        return LOCAL_NO;
    sy_set_kind k = sy__params_parse_set(sql, len, set);
    if (k == SY_SET_VALUE || k == SY_SET_RESET)
        return is_switchyard_var(set) && px->set.switchyard_variables ? LOCAL_VARIABLE
                                                                      : LOCAL_NO;
    if (px->set.max_prepared == 0)
        return LOCAL_NO;
    int d = deallocate_target(c, sql, len, name, cap);
    if (d == 1)
        return LOCAL_DEALLOCATE; /* a protocol-level name: the proxy's */
    /* A pinned client may have SQL-level statements and state on its
     * backend: DEALLOCATE ALL and DISCARD ALL go there (see
     * forget_prepared). */
    if (c->sticky)
        return LOCAL_NO;
    if (d == 2)
        return LOCAL_DEALLOCATE_ALL;
    if (words_are(sql, len, "discard", "all") && sy__relay_status(c, l) == 'I')
        return LOCAL_DISCARD_ALL;
    return LOCAL_NO;
}

int sy__relay_query_is_local(sy_client *c, const char *sql, size_t len)
{
    sy_set_stmt s;
    char name[256];
    return local_query_kind(c, NULL, sql, len, &s, name, sizeof name) != LOCAL_NO;
}

/* A simple query the proxy answers itself; 1 if it did, 0 if the backend
 * must run it, -1 on error. */
static int try_local_query(sy_client *c, sy_link *l, const char *sql, size_t len)
{
    sy_set_stmt s;
    char name[256];
    switch (local_query_kind(c, l, sql, len, &s, name, sizeof name)) {
    case LOCAL_VARIABLE:
        if (set_switchyard_var(c, &s) < 0)
            return -1;
        return reply_command(c, l, s.kind == SY_SET_RESET ? "RESET" : "SET", 1) < 0 ? -1 : 1;
    case LOCAL_DEALLOCATE:
        sy__client_stmt_drop(c, name, strlen(name));
        return reply_command(c, l, "DEALLOCATE", 1) < 0 ? -1 : 1;
    case LOCAL_DEALLOCATE_ALL:
        sy__client_stmt_clear(c);
        return reply_command(c, l, "DEALLOCATE ALL", 1) < 0 ? -1 : 1;
    case LOCAL_DISCARD_ALL:
        sy__client_stmt_clear(c);
        if (sy__params_copy(&c->params, &c->startup_params) < 0)
            return -1;
        return reply_command(c, l, "DISCARD ALL", 1) < 0 ? -1 : 1;
    default:
        return 0;
    }
}

/* ------------------------------------------------------------ stickiness */

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
static int session_effect(sy_client *c, const char *sql, size_t len, sy_set_stmt *set)
{
    sy_statement st;
    sy__relay_classify(c, sql, len, &st, 0);
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

/* Expects the reply to a tracked SET / RESET; the entry takes t. */
static int expect_set(sy_link *l, uint8_t kind, sy_tracked_set *t)
{
    if (!t || sy__link_expect(l, kind, 0) < 0) {
        sy__tracked_set_free(t);
        return -1;
    }
    l->q[(l->q_head + l->q_len - 1) % l->q_cap].set = t;
    return 0;
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
    return sy__relay_refuse(c, l, 1, "26000", msg);
}

static int translate_parse(sy_client *c, sy_link *l, const sy_pg_msg *m)
{
    sy_proxy *px = c->proxy;
    sy_pg_parse p;
    sy_pg_error err;
    if (sy__relay_parsed(c, m, c->parse_at))
        p = c->parsed_parse;
    else if (sy__pg_parse_parse(m, &p, &err) < 0)
        return sy__relay_refuse(c, l, 1, err.sqlstate, err.message);
    if (p.name.len == 0) {
        sy_set_stmt s;
        char name[8];
        c->unnamed_local = local_query_kind(c, l, p.query.p, p.query.len, &s, name,
                                            sizeof name) == LOCAL_VARIABLE;
        if (c->unnamed_local)
            return set_switchyard_var(c, &s) < 0 ? -1
                                                 : reply_simple(c, l, SY_PG_PARSE_COMPLETE);
    }
    sy_set_stmt set;
    int effect = session_effect(c, p.query.p, p.query.len, &set);
    if (effect == 2 || (effect == 1 && p.name.len > 0))
        pin(c, p.query.p, p.query.len); /* named SETs are rare: not tracked */
    if (p.name.len == 0) {
        sy__tracked_set_free(c->unnamed_set);
        c->unnamed_set = NULL;
        if (effect == 1 && !(c->unnamed_set = sy__tracked_set_new(&set)))
            return -1;
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
    if (sy__relay_parsed(c, m, c->bind_at))
        b = c->parsed_bind;
    else if (sy__pg_parse_bind(m, &b, &err) < 0)
        return sy__relay_refuse(c, l, 1, err.sqlstate, err.message);
    if (b.portal.len == 0)
        c->portal_is_set = b.statement.len == 0 && c->unnamed_set;
    if (b.statement.len == 0 && c->unnamed_local) {
        if (b.portal.len == 0)
            c->portal_local = 1;
        return reply_simple(c, l, SY_PG_BIND_COMPLETE);
    }
    if (b.portal.len == 0)
        c->portal_local = 0;
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
        return sy__relay_refuse(c, l, 1, err.sqlstate, err.message);
    if (t.name.len == 0 && (t.kind == 'S' ? c->unnamed_local : c->portal_local)) {
        /* No parameters, no rows. */
        static const char no_params[] = {'t', 0, 0, 0, 6, 0, 0};
        sy_buf b = {.buf = (char *)no_params, .len = sizeof no_params};
        if (t.kind == 'S' && local_reply(c, l, &b) < 0)
            return -1;
        return reply_simple(c, l, SY_PG_NO_DATA);
    }
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
        return sy__relay_refuse(c, l, 1, err.sqlstate, err.message);
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
    int not_local = 0;
    if (sy__relay_parsed(c, m, c->query_at)) {
        sql = c->parsed_query;
        not_local = c->query_not_local;
    } else if (sy__pg_parse_query(m, &sql, &err) < 0) {
        return sy__relay_refuse(c, l, 0, err.sqlstate, err.message);
    }
    int local = not_local ? 0 : try_local_query(c, l, sql.p, sql.len);
    if (local != 0)
        return local < 0 ? -1 : 0;
    sy_set_stmt set;
    int effect = session_effect(c, sql.p, sql.len, &set);
    if (effect == 2)
        pin(c, sql.p, sql.len);
    if (c->sticky && !not_local && sy__relay_may_be_local(sql.p, sql.len)) {
        /* DEALLOCATE ALL / DISCARD ALL on a pinned backend drop the
         * statements the proxy prepared there too. */
        char name[8];
        if (deallocate_target(c, sql.p, sql.len, name, sizeof name) == 2 ||
            words_are(sql.p, sql.len, "discard", "all")) {
            sy__client_stmt_clear(c);
            sy__link_stmt_clear(c->proxy, l);
        }
    }
    if (forward(l, m, 0) < 0)
        return -1;
    if (effect == 1)
        return expect_set(l, SY_X_QUERY, sy__tracked_set_new(&set));
    return sy__link_expect(l, SY_X_QUERY, 0);
}

/* One client message onto linked backend l (NULL: a batch the proxy
 * answers alone, see batch_is_local). */
int sy__relay_translate(sy_client *c, sy_link *l, const sy_pg_msg *m)
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
        int unnamed = sy__pg_parse_execute(m, &ex, NULL) == 0 && ex.portal.len == 0;
        if (unnamed && c->portal_local)
            return reply_command(c, l, "SET", 0);
        int set = c->portal_is_set && unnamed;
        if (forward(l, m, 0) < 0)
            return -1;
        if (set)
            return expect_set(l, SY_X_EXECUTE, sy__tracked_set_dup(c->unnamed_set));
        return sy__link_expect(l, SY_X_EXECUTE, 0);
    }
    case SY_PG_CLOSE:
        return translate_close(c, l, m);
    case SY_PG_SYNC:
        c->in_error_skip = 0;
        if (!l) {
            sy_buf b;
            sy__buf_init(&b);
            sy__pg_build_ready(&b, sy__relay_status(c, l));
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

