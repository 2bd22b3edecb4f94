/*
 * dry_run.c - policy authors' tools that never touch the network: checking
 * a config and routing one statement through the policy with a trace of
 * why.  They load the same Lua state the engine would, with no engine:
 * nodes have no pools and count as healthy unless told otherwise.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#ifndef SY_DEFAULT_HOME
#define SY_DEFAULT_HOME "."
#endif

static const char *resolve_home(const char *home)
{
    if (home && *home)
        return home;
    const char *env = getenv("SWITCHYARD_HOME");
    return env && *env ? env : SY_DEFAULT_HOME;
}

static void copy_out(char *out, size_t out_len, const sy_buf *b)
{
    sy__fmt(out, out_len, "%s", b->buf ? b->buf : "");
}

/* Loads a config and its policy with no engine; on failure writes why to
 * out and returns NULL. */
static sy_lua *load_offline(const char *config_path, const char *home,
                            char *out, size_t out_len)
{
    char err[4096];
    sy_lua *lua = sy__lua_load(NULL, config_path, resolve_home(home), NULL,
                               err, sizeof err, NULL);
    if (!lua)
        sy__fmt(out, out_len, "%s", err);
    return lua;
}

int sy_config_check(const char *config_path, const char *home, char *out,
                    size_t out_len)
{
    if (!config_path)
        return SY_EINVAL;
    sy_lua *lua = load_offline(config_path, home, out, out_len);
    if (!lua)
        return SY_ECONFIG;
    sy_buf b;
    sy__buf_init(&b);
    int clusters = 0;
    for (int i = 0; i < lua->topo.n; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= strcmp(lua->topo.nodes[j]->cluster, lua->topo.nodes[i]->cluster) == 0;
        clusters += !seen;
    }
    lua_State *L = lua->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_state);
    lua_getfield(L, -1, "cfg");
    lua_getfield(L, -1, "policy_path");
    sy__buf_printf(&b, "%s: ok (%d cluster%s, %d node%s, policy %s)",
                   lua->config_path, clusters, clusters == 1 ? "" : "s",
                   lua->topo.n, lua->topo.n == 1 ? "" : "s",
                   lua_tostring(L, -1));
    lua_settop(L, 0);
    copy_out(out, out_len, &b);
    sy__buf_free(&b);
    sy__lua_free(lua);
    return 0;
}

static void describe_statement(sy_buf *b, const char *sql,
                               const sy_statement *st)
{
    static const char *const names[] = {
        "multi", "writable_cte", "locking_read", "write_function",
        "explain_analyze", "read_only_tx", "tx_begin", "tx_end",
        "temp_table", "advisory_lock", "has_hints", "truncated"};
    sy__buf_printf(b, "statement: %s", sy_kind_name(st->kind));
    for (size_t i = 0; i < SY_ARRAY_LEN(names); i++)
        if (st->flags & (1u << i))
            sy__buf_printf(b, " +%s", names[i]);
    sy__buf_puts(b, "\n");
    for (int i = 0; i < st->nhints; i++)
        sy__buf_printf(b, "hint: %.*s = %.*s\n", (int)st->hint_keys[i].len,
                       sql + st->hint_keys[i].off, (int)st->hint_values[i].len,
                       sql + st->hint_values[i].off);
    for (int i = 0; i < st->nschemas; i++)
        sy__buf_printf(b, "schema: %.*s\n", (int)st->schemas[i].len,
                       sql + st->schemas[i].off);
}

/* Points facade.trace at a collector so policies can explain themselves. */
static void install_tracer(sy_lua *lua)
{
    lua_State *L = lua->L;
    luaL_loadstring(L, "local sy, t = ... sy.tracing = true "
                       "sy.trace = function(m) t[#t + 1] = tostring(m) end");
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_facade);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "switchyard.trace");
    lua_call(L, 2, 0);
}

static void append_trace(sy_lua *lua, sy_buf *b)
{
    lua_State *L = lua->L;
    lua_getfield(L, LUA_REGISTRYINDEX, "switchyard.trace");
    int n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        sy__buf_printf(b, "trace: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* A session that exists only for the dry run: "user=", "database=" and
 * "application_name=" set its identity, other k=v its variables. */
static int fake_session(sy_session *s, const char *const *vars)
{
    memset(s, 0, sizeof *s);
    for (const char *const *v = vars; v && *v; v++) {
        const char *eq = strchr(*v, '=');
        if (!eq)
            return -1;
        char name[128];
        sy__fmt(name, sizeof name, "%.*s", (int)(eq - *v), *v);
        if (strcmp(name, "user") == 0)
            s->user = sy__strdup(eq + 1);
        else if (strcmp(name, "database") == 0)
            s->database = sy__strdup(eq + 1);
        else if (strcmp(name, "application_name") == 0)
            s->application_name = sy__strdup(eq + 1);
        else if (sy_session_set(s, name, eq + 1) < 0)
            return -1;
    }
    return 0;
}


int sy_route_dry_run(const char *config_path, const char *home,
                     const char *sql, const char *const *params,
                     const char *const *session_vars,
                     const char *const *down_nodes, char *out, size_t out_len)
{
    if (!config_path || !sql || !out || out_len == 0)
        return SY_EINVAL;
    sy_lua *lua = load_offline(config_path, home, out, out_len);
    if (!lua)
        return SY_ECONFIG;
    sy_buf b;
    sy__buf_init(&b);
    int rc = 0;
    for (const char *const *d = down_nodes; d && *d; d++) {
        sy_node *n = sy__topology_find(&lua->topo, *d);
        if (n) {
            n->forced_down = 1;
            sy__lua_node_routable(lua, n);
        } else {
            sy__buf_printf(&b, "--down %s: no such node (use cluster.node)\n", *d);
            rc = SY_ENOTFOUND;
        }
    }
    sy_session session;
    if (fake_session(&session, session_vars) < 0) {
        sy__buf_puts(&b, "--session expects name=value\n");
        rc = SY_EINVAL;
    }
    if (rc == 0) {
        int nparams = 0;
        while (params && params[nparams])
            nparams++;
        sy_statement st;
        size_t len = strlen(sql);
        sy_classify(sql, len, (const char *const *)lua->set.write_functions, &st);
        describe_statement(&b, sql, &st);
        install_tracer(lua);
        sy_route_input in = {
            .sql = sql, .sql_len = len, .stmt = &st, .nparams = nparams,
            .param_values = params, .session = &session,
        };
        sy_route r;
        sy__lua_route(lua, &in, &r);
        append_trace(lua, &b);
        if (r.failed) {
            sy__buf_printf(&b, "policy error: %s\n", r.message);
            rc = SY_EPOLICY;
        } else if (r.rejected) {
            sy__buf_printf(&b, "rejected: ERROR %s: %s\n", r.sqlstate, r.message);
            rc = SY_EPOLICY;
        } else if (r.wait > 0) {
            sy__buf_printf(&b, "wait: up to %.3g s for the roles to change, then route again\n",
                           r.wait);
        } else {
            sy__buf_printf(&b, "route: %s (%s%s)\n", r.node->full_name,
                           sy__role_name(r.node->role), r.node->forced_down ? ", down" : "");
        }
    }
    sy__session_free_identity(&session);
    copy_out(out, out_len, &b);
    sy__buf_free(&b);
    sy__lua_free(lua);
    return rc;
}
