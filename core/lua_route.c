/*
 * lua_route.c - one routing decision: fill the reusable `q` table from the
 * classified statement, call the policy's route(q) through the gateway, and
 * turn what it returned into a node, a rejection or a policy failure.
 * Also the live node figures policies read (node.inflight, node.lag_ms...)
 * through a metatable, so they are always current and cost nothing until
 * read; node.healthy, read by every decision, is a plain field kept current
 * by whoever changes it.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

/* ------------------------------------------------------------ live nodes */

/* __index of one node table; its upvalue is the node, which the state's
 * topology keeps referenced for as long as the table can be reached. */
static int node_index(lua_State *L)
{
    const sy_node *n = lua_touserdata(L, lua_upvalueindex(1));
    const char *k = lua_tostring(L, 2);
    if (!k)
        return 0;
    if (strcmp(k, "inflight") == 0)
        lua_pushinteger(L, n->c.inflight);
    else if (strcmp(k, "idle") == 0)
        lua_pushinteger(L, n->pool.n_idle + n->relay_pool.n_idle);
    else if (strcmp(k, "busy") == 0)
        lua_pushinteger(L, n->pool.n_busy + n->relay_pool.n_busy);
    else if (strcmp(k, "waiting") == 0)
        lua_pushinteger(L, n->pool.n_waiting + n->relay_pool.n_waiting);
    else if (strcmp(k, "latency_ms") == 0)
        lua_pushnumber(L, n->c.latency_ewma_ms);
    else if (strcmp(k, "latency_p50_ms") == 0)
        lua_pushnumber(L, sy__counters_percentile(&n->c, 0.50));
    else if (strcmp(k, "latency_p95_ms") == 0)
        lua_pushnumber(L, sy__counters_percentile(&n->c, 0.95));
    else if (strcmp(k, "latency_p99_ms") == 0)
        lua_pushnumber(L, sy__counters_percentile(&n->c, 0.99));
    else if (strcmp(k, "rtt_ms") == 0 && n->health.polls_ok > 0)
        lua_pushnumber(L, n->health.rtt_ms);
    else if (strcmp(k, "errors") == 0)
        lua_pushnumber(L, (double)n->c.errors);
    else if (strcmp(k, "queries") == 0)
        lua_pushnumber(L, (double)n->c.queries);
    else if (strcmp(k, "error_rate") == 0)
        lua_pushnumber(L, n->c.error_rate);
    else if (strcmp(k, "lag_bytes") == 0 && n->lag_bytes >= 0)
        lua_pushnumber(L, n->lag_bytes);
    else if (strcmp(k, "lag_ms") == 0 && n->lag_ms >= 0)
        lua_pushnumber(L, n->lag_ms);
    else if (strcmp(k, "wal_position") == 0 && n->health.polls_ok > 0)
        lua_pushnumber(L, n->health.wal_position);
    else if (strcmp(k, "timeline") == 0 && n->health.timeline > 0)
        lua_pushinteger(L, n->health.timeline);
    else if (strcmp(k, "split_brain") == 0)
        lua_pushboolean(L, n->split_brain);
    else if (strcmp(k, "fenced") == 0)
        lua_pushboolean(L, n->fenced);
    else if (strcmp(k, "patroni") == 0 && n->follow_patroni)
        lua_pushstring(L, sy__patroni_role_name(n));
    else
        return 0;
    return 1;
}

void sy__lua_install_node_metatable(sy_lua *lua)
{
    lua_State *L = lua->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_node_tables);
    /* Node tables and C nodes were built in the same order (id = index). */
    for (int i = 1; i <= lua->topo.n; i++) {
        lua_rawgeti(L, -1, i);
        lua_createtable(L, 0, 1);
        lua_pushlightuserdata(L, lua->topo.nodes[i - 1]);
        lua_pushcclosure(L, node_index, 1);
        lua_setfield(L, -2, "__index");
        lua_setmetatable(L, -2);
        lua_pop(L, 1);
        sy__lua_node_routable(lua, lua->topo.nodes[i - 1]);
    }
    lua_pop(L, 1);
}

void sy__lua_node_routable(sy_lua *lua, const sy_node *n)
{
    lua_State *L = lua->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_node_tables);
    lua_rawgeti(L, -1, n->id);
    lua_pushliteral(L, "healthy");
    lua_pushboolean(L, n->healthy && !n->forced_down && !n->fenced);
    lua_rawset(L, -3);
    lua_pop(L, 2);
}

void sy__node_routable_changed(const sy_node *n)
{
    sy_lua *lua = sy__node_current_lua(n);
    if (lua)
        sy__lua_node_routable(lua, n);
}

static void push_node_table(sy_lua *lua, const sy_node *n)
{
    lua_rawgeti(lua->L, LUA_REGISTRYINDEX, lua->ref_node_tables);
    lua_rawgeti(lua->L, -1, n->id);
    lua_remove(lua->L, -2);
}

/* ------------------------------------------------------------ q fields */

static const struct {
    uint32_t flag;
    const char *name;
} flag_names[] = {
    {SY_STMT_MULTI, "multi"},
    {SY_STMT_WRITABLE_CTE, "writable_cte"},
    {SY_STMT_LOCKING_READ, "locking_read"},
    {SY_STMT_WRITE_FUNCTION, "write_function"},
    {SY_STMT_EXPLAIN_ANALYZE, "explain_analyze"},
    {SY_STMT_READ_ONLY_TX, "read_only_tx"},
    {SY_STMT_TX_BEGIN, "tx_begin"},
    {SY_STMT_TX_END, "tx_end"},
    {SY_STMT_TEMP_TABLE, "temp_table"},
    {SY_STMT_ADVISORY_LOCK, "advisory_lock"},
};

/* The flags q.flags shows (the others are the classifier's own). */
#define SHOWN_FLAGS (~(uint32_t)(SY_STMT_HAS_HINTS | SY_STMT_TRUNCATED))

static void push_flags(sy_lua *lua, uint32_t flags)
{
    lua_State *L = lua->L;
    if ((flags & SHOWN_FLAGS) == 0) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_empty);
        return;
    }
    lua_createtable(L, 0, 4);
    for (size_t i = 0; i < SY_ARRAY_LEN(flag_names); i++) {
        if (flags & flag_names[i].flag) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, flag_names[i].name);
        }
    }
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Pushes a hint value, percent-decoded (sqlcommenter encodes values). */
static void push_decoded(lua_State *L, const char *s, size_t n)
{
    if (!memchr(s, '%', n)) {
        lua_pushlstring(L, s, n);
        return;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hex_value(s[i + 1])) >= 0 &&
            (lo = hex_value(s[i + 2])) >= 0) {
            luaL_addchar(&b, (char)(hi * 16 + lo));
            i += 2;
        } else {
            luaL_addchar(&b, s[i]);
        }
    }
    luaL_pushresult(&b);
}

static void push_hints(sy_lua *lua, const char *sql, const sy_statement *st)
{
    lua_State *L = lua->L;
    if (st->nhints == 0) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_empty);
        return;
    }
    lua_createtable(L, 0, st->nhints);
    for (int i = 0; i < st->nhints; i++) {
        lua_pushlstring(L, sql + st->hint_keys[i].off, st->hint_keys[i].len);
        push_decoded(L, sql + st->hint_values[i].off, st->hint_values[i].len);
        lua_rawset(L, -3);
    }
}

static void push_schemas(sy_lua *lua, const char *sql, const sy_statement *st)
{
    lua_State *L = lua->L;
    if (st->nschemas == 0) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_empty);
        return;
    }
    lua_createtable(L, st->nschemas, 0);
    for (int i = 0; i < st->nschemas; i++) {
        const char *s = sql + st->schemas[i].off;
        size_t n = st->schemas[i].len;
        /* Unquoted identifiers fold to lower case, as PostgreSQL does; a
         * quoted one keeps its case (the span excludes the quotes). */
        int quoted = st->schemas[i].off > 0 && s[-1] == '"';
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (size_t j = 0; j < n; j++) {
            char c = s[j];
            if (!quoted && c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            luaL_addchar(&b, c);
        }
        luaL_pushresult(&b);
        lua_rawseti(L, -2, i + 1);
    }
}

static void push_params(sy_lua *lua, const sy_route_input *in)
{
    lua_State *L = lua->L;
    if (in->nparams == 0) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_empty);
        return;
    }
    lua_createtable(L, in->nparams, 0);
    for (int i = 0; i < in->nparams; i++) {
        const char *v = in->param_values[i];
        if (!v)
            lua_pushboolean(L, 0);
        else if (in->param_lengths) /* copied lengths: binary values whole */
            lua_pushlstring(L, v, (size_t)in->param_lengths[i]);
        else
            lua_pushstring(L, v);
        lua_rawseti(L, -2, i + 1);
    }
}

static void push_opt_string(lua_State *L, const char *k, const char *v)
{
    if (!v)
        return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

/* q.session.write_lsn: nil when the session never wrote, -1 while its last
 * write has no known bound (read it on the primary), else the WAL position
 * a replica must have replayed (sy__session_write_lsn).  Set only when it
 * changed: most decisions leave the cached table alone. */
static void update_write_lsn(lua_State *L, sy_session *s)
{
    double lsn = sy__session_write_lsn(s);
    if (lsn == s->write_lsn_shown)
        return;
    s->write_lsn_shown = lsn;
    if (lsn < -1)
        lua_pushnil(L);
    else
        lua_pushnumber(L, lsn);
    lua_setfield(L, -2, "write_lsn");
}

/* q.session: the session's table, kept in the registry under a ref of its
 * own and made again only after a SET changed its variables. */
static void push_session(sy_lua *lua, sy_session *s)
{
    lua_State *L = lua->L;
    if (!s) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_session_default);
        return;
    }
    if (s->lua_generation == lua->generation) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->lua_ref);
        update_write_lsn(L, s);
        return;
    }
    s->write_lsn_shown = -2;
    lua_createtable(L, 0, 5);
    push_opt_string(L, "user", s->user);
    push_opt_string(L, "database", s->database);
    push_opt_string(L, "application_name", s->application_name);
    lua_createtable(L, 0, s->nvars);
    for (int i = 0; i < s->nvars; i++) {
        lua_pushstring(L, s->var_values[i]);
        lua_setfield(L, -2, s->var_names[i]);
    }
    lua_setfield(L, -2, "vars");
    lua_pushvalue(L, -1);
    if (s->lua_ref_generation == lua->generation) {
        lua_rawseti(L, LUA_REGISTRYINDEX, s->lua_ref); /* replaces the stale one */
    } else {
        s->lua_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        s->lua_ref_generation = lua->generation;
    }
    s->lua_generation = lua->generation;
    update_write_lsn(L, s);
}

void sy__lua_forget_session(sy_lua *lua, sy_session *s)
{
    /* A ref of an older state went with that state. */
    if (s->lua_ref_generation == lua->generation)
        luaL_unref(lua->L, LUA_REGISTRYINDEX, s->lua_ref);
    s->lua_ref_generation = 0;
    s->lua_generation = 0;
}

/* q.sql and q.params are made when the policy first reads them in a
 * decision (most never do): a Lua string of every statement's text would
 * be the largest part of a decision's cost and of the garbage it leaves. */
static int q_index(lua_State *L)
{
    sy_lua *lua = lua_touserdata(L, lua_upvalueindex(1));
    const sy_route_input *in = lua->current_input;
    const char *k = lua_tostring(L, 2);
    if (!in || !k)
        return 0;
    if (strcmp(k, "sql") == 0)
        lua_pushlstring(L, in->sql, in->sql_len);
    else if (strcmp(k, "params") == 0)
        push_params(lua, in);
    else
        return 0;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1); /* the rest of this decision reads the field itself */
    lua->q_fields_made = 1;
    return 1;
}

/* After a decision that made q.sql or q.params: the next one makes its own. */
static void clear_made_q_fields(sy_lua *lua)
{
    lua_State *L = lua->L;
    lua->q_fields_made = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_q);
    static const char *const made[] = {"sql", "params"};
    for (size_t i = 0; i < SY_ARRAY_LEN(made); i++) {
        /* Only a field that is there: storing nil under a missing key
         * would add the key. */
        lua_pushstring(L, made[i]);
        lua_rawget(L, -2);
        int present = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (present) {
            lua_pushstring(L, made[i]);
            lua_pushnil(L);
            lua_rawset(L, -3);
        }
    }
    lua_pop(L, 1);
}

void sy__lua_install_q_metatable(sy_lua *lua)
{
    lua_State *L = lua->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_q);
    lua_createtable(L, 0, 1);
    lua_pushlightuserdata(L, lua);
    lua_pushcclosure(L, q_index, 1);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_pop(L, 1);
}

/* Pushes one of runtime's route entries and q's fields, its arguments:
 * kind, in_tx, flags, hints, schemas, session, retry for the full entry;
 * kind, in_tx, session for the plain one (nothing else to say).  Returns
 * how many arguments. */
static int push_entry_and_q_fields(sy_lua *lua, const sy_route_input *in)
{
    lua_State *L = lua->L;
    const sy_statement *st = in->stmt;
    if ((st->flags & SHOWN_FLAGS) == 0 && st->nhints == 0 && st->nschemas == 0 && !in->failed_node) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_route_entry_plain);
        lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_kind[st->kind]);
        lua_pushboolean(L, in->in_tx);
        push_session(lua, in->session);
        return 3;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_route_entry);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_kind[st->kind]);
    lua_pushboolean(L, in->in_tx);
    push_flags(lua, st->flags);
    push_hints(lua, in->sql, st);
    push_schemas(lua, in->sql, st);
    push_session(lua, in->session);
    if (in->failed_node) {
        lua_createtable(L, 0, 1);
        push_node_table(lua, in->failed_node);
        lua_setfield(L, -2, "failed");
    } else {
        lua_pushboolean(L, 0); /* a plain field: no __index call on reading it */
    }
    return 7;
}

/* ------------------------------------------------------------ decisions */

/* {cluster=, role=}: the engine's own round robin over healthy nodes. */
static sy_node *pick_in_cluster(sy_lua *lua, const char *cluster, int role,
                                const sy_node *avoid)
{
    int n = lua->topo.n;
    for (int step = 0; step < n; step++) {
        sy_node *node = lua->topo.nodes[(lua->rr + (unsigned)step) % (unsigned)n];
        if (node->role == role && node->healthy && !node->forced_down &&
            node != avoid && strcmp(node->cluster, cluster) == 0) {
            lua->rr += (unsigned)step + 1;
            return node;
        }
    }
    return NULL;
}

static void decide_from_table(sy_lua *lua, int t, const sy_route_input *in,
                              sy_route *out)
{
    lua_State *L = lua->L;
    /* Raw: a node table's __index (node_index) would run for the miss. */
    lua_pushliteral(L, "wait");
    lua_rawget(L, t);
    if (lua_isnumber(L, -1) && lua_tonumber(L, -1) > 0) {
        /* {wait = seconds}: no node yet, route again when the roles change */
        out->wait = lua_tonumber(L, -1);
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_getfield(L, t, "node");
    const char *name = lua_tostring(L, -1);
    if (name) {
        out->node = sy__topology_find(&lua->topo, name);
        if (!out->node) {
            out->failed = 1;
            sy__fmt(out->message, sizeof out->message,
                    "route() returned {node = \"%s\"}, which is not in the "
                    "topology", name);
        }
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_getfield(L, t, "cluster");
    lua_getfield(L, t, "role");
    const char *cluster = lua_tostring(L, -2);
    const char *role = lua_tostring(L, -1);
    if (!cluster || !role ||
        (strcmp(role, "primary") != 0 && strcmp(role, "replica") != 0)) {
        out->failed = 1;
        sy__fmt(out->message, sizeof out->message,
                "route() returned a table that is neither a node, {node = "
                "name} nor {cluster = name, role = \"primary\"|\"replica\"}");
    } else {
        int r = strcmp(role, "primary") == 0 ? SY_ROLE_PRIMARY : SY_ROLE_REPLICA;
        out->node = pick_in_cluster(lua, cluster, r, in->failed_node);
        if (!out->node) {
            out->rejected = 1;
            memcpy(out->sqlstate, "08006", 6);
            sy__fmt(out->message, sizeof out->message,
                    "no healthy %s in cluster \"%s\"", role, cluster);
        }
    }
    lua_pop(L, 2);
}

static void decide(sy_lua *lua, int r1, const sy_route_input *in, sy_route *out);

void sy__lua_route(sy_lua *lua, const sy_route_input *in, sy_route *out)
{
    lua_State *L = lua->L;
    int top = lua_gettop(L);
    out->node = NULL;
    out->rejected = out->failed = 0;
    out->wait = 0;
    out->sqlstate[0] = '\0';
    out->message[0] = '\0';
    lua->current_input = in; /* for q.sql and q.params, made on demand */
    int handler = sy__lua_push_handler(lua);
    int nargs = push_entry_and_q_fields(lua, in);
    int rc = sy__lua_pcall_handled(lua, handler, nargs, 4, 1, out->message,
                                   sizeof out->message);
    lua->current_input = NULL;
    if (lua->q_fields_made)
        clear_made_q_fields(lua);
    if (rc < 0) {
        out->failed = 1;
        lua_settop(L, top);
        return;
    }
    int r1 = handler + 1;
    if (lua_type(L, r1 + 3) == LUA_TNUMBER) {
        /* A node table: the entry read its id (runtime.lua). */
        int id = (int)lua_tointeger(L, r1 + 3);
        if (id >= 1 && id <= lua->topo.n) {
            out->node = lua->topo.nodes[id - 1];
            lua_settop(L, top);
            return;
        }
        out->failed = 1;
        sy__fmt(out->message, sizeof out->message,
                "route() returned a node with an unknown id %d", id);
    } else {
        decide(lua, r1, in, out);
    }
    if (out->failed && lua->policy_path) {
        /* What route() returned is wrong, not where it raised: name the
         * policy file so the author knows which one. */
        char msg[sizeof out->message];
        sy__fmt(msg, sizeof msg, "%s: %s", lua->policy_path, out->message);
        memcpy(out->message, msg, sizeof msg);
    }
    lua_settop(L, top);
}

static void decide(sy_lua *lua, int r1, const sy_route_input *in, sy_route *out)
{
    lua_State *L = lua->L;
    if (lua_istable(L, r1)) {
        decide_from_table(lua, r1, in, out);
    } else if (lua_isnil(L, r1) || (lua_isboolean(L, r1) && !lua_toboolean(L, r1))) {
        out->rejected = 1;
        const char *msg = lua_tostring(L, r1 + 1);
        sy__fmt(out->message, sizeof out->message, "%s",
                msg ? msg : "query refused by the routing policy");
        size_t n = 0;
        const char *state = lua_tolstring(L, r1 + 2, &n);
        memcpy(out->sqlstate, state && n == 5 ? state : "42501", 5);
        out->sqlstate[5] = '\0';
    } else {
        out->failed = 1;
        sy__fmt(out->message, sizeof out->message,
                "route() returned a %s; expected a node, {cluster = ..., "
                "role = ...} or nil, message", luaL_typename(L, r1));
    }
}
