/*
 * failover.c - managed failover, for clusters whose config says
 * failover.mode = "managed".  When the primary's health polls cross the
 * fall threshold:
 *   1. the policy's failover(cluster, candidates) picks the replica to
 *      promote (runtime.choose_promotion: by default the one that replayed
 *      the most WAL, then the highest priority);
 *   2. the old primary is fenced: nothing is routed to it again, even when
 *      it comes back, until an operator enables it (admin ENABLE);
 *   3. pg_promote() runs on the chosen replica, over its health poller's
 *      connection; once it returns true the node is the primary and the
 *      writes that waited for it (park.c, up to failover.write_wait) go;
 *   4. every other replica is pointed at it: ALTER SYSTEM SET
 *      primary_conninfo (its own, with the new primary's host and port) and
 *      pg_reload_conf(); recovery_target_timeline 'latest' (PostgreSQL's
 *      default) makes it follow the new timeline.
 * Every step is asynchronous on the loop; each is an event or a log line.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static int usable_primary(const sy_node *n)
{
    return n->role == SY_ROLE_PRIMARY && n->healthy && !n->fenced && !n->forced_down;
}

static int candidate(const sy_node *n)
{
    return n->role == SY_ROLE_REPLICA && n->healthy && !n->fenced && !n->forced_down &&
           n->priority > 0;
}

/* Writes wait while a promotion runs, or while a primary is down and has
 * not had its failover yet (the threshold is still being counted), with a
 * replica to promote.  A failover that failed or found no replica does not
 * make writes wait: they fail at once until an operator steps in.  A
 * cluster following Patroni has no confirmed primary only while Patroni
 * moves the leader (or has none to give): writes wait for it. */
double sy__failover_wait(const sy_topology *t, int from, int to)
{
    if (from < to && t->nodes[from]->follow_patroni) {
        for (int i = from; i < to; i++)
            if (usable_primary(t->nodes[i]))
                return 0;
        return t->nodes[from]->write_wait;
    }
    if (from >= to || !t->nodes[from]->failover_managed)
        return 0;
    int promoting = 0, pending = 0, candidates = 0;
    for (int i = from; i < to; i++) {
        const sy_node *n = t->nodes[i];
        if (usable_primary(n))
            return 0;
        promoting |= n->promoting;
        pending |= n->role == SY_ROLE_PRIMARY && !n->healthy && !n->fenced && !n->failover_tried;
        candidates += candidate(n);
    }
    return promoting || (pending && candidates) ? t->nodes[from]->write_wait : 0;
}

/* ------------------------------------------------------------ repointing */

/* Appends keyword='value' (libpq conninfo quoting) to b. */
static void conninfo_add(sy_buf *b, const char *k, const char *v)
{
    sy__buf_printf(b, "%s%s='", b->len ? " " : "", k);
    for (const char *p = v; *p; p++) {
        if (*p == '\'' || *p == '\\')
            sy__buf_append(b, "\\", 1);
        sy__buf_append(b, p, 1);
    }
    sy__buf_append(b, "'", 1);
}

static const char *option(PQconninfoOption *opts, const char *k)
{
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, k) == 0)
            return o->val && *o->val ? o->val : NULL;
    return NULL;
}

static int is_address_key(const char *k)
{
    return strcmp(k, "host") == 0 || strcmp(k, "hostaddr") == 0 || strcmp(k, "port") == 0;
}

/* The statement that points a replica whose primary_conninfo is `old` at
 * the primary `to`: ALTER SYSTEM SET primary_conninfo = '...'.  Keeps
 * every setting of old (user, password, application_name, ...) but the
 * address.  NULL when either cannot be parsed. */
static char *repoint_sql(const char *old, const sy_node *to)
{
    PQconninfoOption *mine = PQconninfoParse(old, NULL);
    PQconninfoOption *theirs = PQconninfoParse(to->conninfo, NULL);
    char *sql = NULL;
    if (mine && theirs) {
        sy_buf ci, b;
        sy__buf_init(&ci);
        sy__buf_init(&b);
        for (PQconninfoOption *o = mine; o->keyword; o++)
            if (o->val && *o->val && !is_address_key(o->keyword))
                conninfo_add(&ci, o->keyword, o->val);
        static const char *const address[] = {"host", "hostaddr", "port"};
        for (size_t i = 0; i < SY_ARRAY_LEN(address); i++) {
            const char *v = option(theirs, address[i]);
            if (v)
                conninfo_add(&ci, address[i], v);
        }
        /* A SQL literal: standard_conforming_strings is on in every
         * supported PostgreSQL, so only quotes double. */
        sy__buf_printf(&b, "ALTER SYSTEM SET primary_conninfo = '");
        for (size_t i = 0; i < ci.len; i++) {
            if (ci.buf[i] == '\'')
                sy__buf_append(&b, "'", 1);
            sy__buf_append(&b, ci.buf + i, 1);
        }
        if (sy__buf_append(&b, "'", 2) == 0) /* the quote and a NUL */
            sql = b.buf;                       /* handed over to the caller */
        else
            sy__buf_free(&b);
        sy__buf_free(&ci);
    }
    PQconninfoFree(mine);
    PQconninfoFree(theirs);
    return sql;
}

static void repoint_failed(sy_node *r, sy_node *to, const char *step, const char *err)
{
    sy__log(r->engine, SY_LOG_ERROR, "node %s: could not follow the new primary %s (%s): %s",
            r->full_name, to->full_name, step, err ? err : "unexpected answer");
    sy__emit(r->engine, SY_EVENT_FAILOVER_FAILED, r->cluster, r->full_name,
             "replica %s does not follow the new primary %s: %s failed: %s", r->full_name,
             to->full_name, step, err ? err : "unexpected answer");
    sy__node_unref(to);
}

static void reloaded(sy_node *r, void *data, PGresult *res, const char *err)
{
    sy_node *to = data;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        repoint_failed(r, to, "pg_reload_conf()", err ? err : PQresultErrorMessage(res));
        return;
    }
    sy__log(r->engine, SY_LOG_INFO, "node %s now follows %s", r->full_name, to->full_name);
    sy__node_unref(to);
}

static void altered(sy_node *r, void *data, PGresult *res, const char *err)
{
    sy_node *to = data;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        repoint_failed(r, to, "ALTER SYSTEM", err ? err : PQresultErrorMessage(res));
        return;
    }
    if (sy__health_command(r, "SELECT pg_reload_conf()", to->promote_timeout, reloaded, to) < 0)
        repoint_failed(r, to, "pg_reload_conf()", "the poller is busy");
}

static void got_conninfo(sy_node *r, void *data, PGresult *res, const char *err)
{
    sy_node *to = data;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        repoint_failed(r, to, "reading primary_conninfo", err ? err : PQresultErrorMessage(res));
        return;
    }
    char *sql = repoint_sql(PQgetvalue(res, 0, 0), to);
    if (!sql) {
        repoint_failed(r, to, "building primary_conninfo", "a conninfo does not parse");
        return;
    }
    int rc = sy__health_command(r, sql, to->promote_timeout, altered, to);
    free(sql);
    if (rc < 0)
        repoint_failed(r, to, "ALTER SYSTEM", "the poller is busy");
}

static void repoint(sy_node *r, sy_node *to)
{
    sy__node_ref(to); /* until the last step is done */
    if (sy__health_command(r, "SELECT current_setting('primary_conninfo')", to->promote_timeout,
                           got_conninfo, to) < 0)
        repoint_failed(r, to, "reading primary_conninfo", "the poller is busy");
}

/* ------------------------------------------------------------ promotion */

static void promoted(sy_node *n, void *data, PGresult *res, const char *err)
{
    sy_node *old = data; /* referenced by sy__failover_primary_down */
    sy_engine *e = n->engine;
    n->promoting = 0;
    double took = ev_now(e->loop) - n->promote_started;
    int ok = res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
             PQgetvalue(res, 0, 0)[0] == 't';
    if (!ok) {
        const char *why = err ? err
                          : res && PQresultStatus(res) != PGRES_TUPLES_OK
                              ? PQresultErrorMessage(res)
                              : "pg_promote() returned false (not promoted within the timeout)";
        sy__log(e, SY_LOG_ERROR, "failover: promoting %s failed: %s", n->full_name, why);
        sy__emit(e, SY_EVENT_FAILOVER_FAILED, n->cluster, n->full_name,
                 "promoting %s failed after %.3f s: %s; %s is no longer fenced", n->full_name,
                 took, why, old->full_name);
        /* Nothing took its place: the old primary is the primary again if
         * it comes back (and may fail over again after that). */
        old->fenced = 0;
        sy__node_routable_changed(old);
        sy__node_unref(old);
        sy__roles_refresh(e); /* no promotion running: writes stop waiting */
        return;
    }
    sy__node_unref(old);
    sy__log(e, SY_LOG_WARN, "failover: %s promoted in %.3f s", n->full_name, took);
    sy__emit(e, SY_EVENT_FAILOVER_DONE, n->cluster, n->full_name,
             "%s is the primary of cluster %s (promoted in %.3f s)", n->full_name, n->cluster, took);
    /* The server said so: no need to wait for the next poll. */
    n->server_role = SY_ROLE_PRIMARY;
    n->role = sy__role_effective(n);
    sy__roles_refresh(e); /* parked writes go to it now */
    sy_lua *lua = sy__node_current_lua(n);
    if (!lua)
        return;
    int from, to;
    sy__cluster_range(&lua->topo, n->id - 1, &from, &to);
    for (int i = from; i < to; i++) {
        sy_node *r = lua->topo.nodes[i];
        if (r != n && r->role == SY_ROLE_REPLICA && r->healthy && !r->fenced)
            repoint(r, n);
    }
}

/* Asks the policy (runtime.choose_promotion) which candidate to promote. */
static sy_node *choose(sy_lua *lua, const sy_node *old, int from, int to, char *err, size_t errlen)
{
    lua_State *L = lua->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_choose_promotion);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_state);
    lua_pushstring(L, old->cluster);
    lua_newtable(L);
    int n = 0;
    for (int i = from; i < to; i++) {
        if (candidate(lua->topo.nodes[i])) {
            lua_pushinteger(L, lua->topo.nodes[i]->id);
            lua_rawseti(L, -2, ++n);
        }
    }
    sy_node *chosen = NULL;
    if (n == 0) {
        sy__fmt(err, errlen, "no healthy replica with priority > 0 to promote");
    } else if (sy__lua_pcall(lua, 3, 1, 1, err, errlen) == 0) {
        int id = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
        if (id >= 1 && id <= lua->topo.n)
            chosen = lua->topo.nodes[id - 1];
        else
            sy__fmt(err, errlen, "the failover policy chose no replica");
    }
    lua_settop(L, top);
    return chosen;
}

void sy__failover_primary_down(sy_node *old)
{
    sy_lua *lua = sy__node_current_lua(old);
    if (!lua || !old->failover_managed || old->fenced || old->failover_tried ||
        old->role != SY_ROLE_PRIMARY)
        return;
    sy_engine *e = old->engine;
    int from, to;
    sy__cluster_range(&lua->topo, old->id - 1, &from, &to);
    for (int i = from; i < to; i++)
        if (lua->topo.nodes[i]->promoting || usable_primary(lua->topo.nodes[i]))
            return; /* under way, or someone else already has a primary */
    old->failover_tried = 1;
    char err[256];
    sy_node *n = choose(lua, old, from, to, err, sizeof err);
    if (!n) {
        sy__log(e, SY_LOG_ERROR, "failover of cluster %s: %s", old->cluster, err);
        sy__emit(e, SY_EVENT_FAILOVER_FAILED, old->cluster, old->full_name,
                 "primary %s is down and nothing was promoted: %s", old->full_name, err);
        sy__roles_refresh(e);
        return;
    }
    old->fenced = 1;
    sy__node_routable_changed(old);
    n->promoting = 1;
    n->promote_started = ev_now(e->loop);
    for (int i = from; i < to; i++) {
        const sy_node *r = lua->topo.nodes[i];
        if (candidate(r))
            sy__log(e, SY_LOG_INFO, "failover: candidate %s replayed %.0f bytes of WAL, priority %d",
                    r->full_name, r->health.wal_position, r->priority);
    }
    sy__log(e, SY_LOG_WARN, "failover: primary %s is down (%s); fencing it and promoting %s",
            old->full_name, old->health.last_error, n->full_name);
    sy__emit(e, SY_EVENT_FAILOVER_STARTED, old->cluster, n->full_name,
             "primary %s is down (%s): promoting %s; %s is fenced until enabled",
             old->full_name, old->health.last_error, n->full_name, old->full_name);
    char sql[96];
    sy__fmt(sql, sizeof sql, "SELECT pg_promote(true, %d)", (int)(n->promote_timeout + 0.5));
    sy__node_ref(old); /* until promoted() */
    if (sy__health_command(n, sql, n->promote_timeout + 5, promoted, old) < 0)
        promoted(n, old, NULL, "its health poller is busy");
    else
        sy__roles_refresh(e); /* fenced, and writes wait */
}

void sy__failover_unfence(sy_node *n)
{
    if (!n->fenced)
        return;
    n->fenced = 0;
    n->failover_tried = 0;
    sy__node_routable_changed(n);
    if (n->engine)
        sy__roles_refresh(n->engine);
}
