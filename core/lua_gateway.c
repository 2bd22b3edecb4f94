/*
 * lua_gateway.c - the one door into Lua.  It creates a policy state, boots
 * lua/switchyard/runtime.lua in it, builds the C topology from the config,
 * and runs every call into policy code under lua_pcall with a traceback
 * handler and a budget, restoring the stack afterwards.
 *
 * Why the JIT is off in policy states: LuaJIT's compiled traces never check
 * debug hooks (Debian builds LuaJIT without LUAJIT_ENABLE_CHECKHOOK), so an
 * endless loop that got compiled could not be stopped.  In the interpreter a
 * count hook fires reliably; a decision still costs well under 1 us (see
 * bench/core.sh).
 */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <luajit.h>
#include <lualib.h>

#define HOOK_EVERY 1000      /* instructions between budget checks */
#define LOAD_BUDGET_FACTOR 100 /* loading may do more work than a decision */

/* Its address is the registry key of the state's sy_lua (a constant, so no
 * mutable global state). */
static const char self_key = 0;

sy_lua *sy__lua_self(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&self_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    sy_lua *lua = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return lua;
}

/* Raises the budget error, naming the policy line that was running. */
static void budget_exceeded(lua_State *L, lua_Debug *ar, const char *what)
{
    char where[256] = "";
    if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
        sy__fmt(where, sizeof where, "%s:%d: ", ar->short_src, ar->currentline);
    lua_pushfstring(L, "%spolicy stopped: %s", where, what);
    lua_error(L);
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    sy_lua *lua = sy__lua_self(L);
    if (!lua)
        return;
    lua->budget_hits++;
    char what[160];
    uint64_t limit = lua->set.budget_instructions * lua->budget_factor;
    if (limit > 0 && lua->budget_hits * HOOK_EVERY > limit) {
        sy__fmt(what, sizeof what, "it ran over its budget of %llu "
                "instructions (route_budget.instructions)",
                (unsigned long long)limit);
        budget_exceeded(L, ar, what);
    }
    double ms = lua->set.budget_ms * (double)lua->budget_factor;
    /* The clock starts at the first check, HOOK_EVERY instructions in (a
     * few microseconds): most decisions finish before and never read it. */
    double now = sy__monotonic();
    if (lua->budget_started == 0)
        lua->budget_started = now;
    if (ms > 0 && (now - lua->budget_started) * 1e3 > ms) {
        sy__fmt(what, sizeof what, "it ran over its time budget of %g ms "
                "(route_budget.ms)", ms);
        budget_exceeded(L, ar, what);
    }
}

static int traceback_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        msg = lua_pushfstring(L, "(error object is a %s value)",
                              luaL_typename(L, 1));
        lua_replace(L, 1);
    }
    luaL_traceback(L, L, msg, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "switchyard.traceback");
    lua_settop(L, 1);
    return 1;
}

int sy__lua_push_handler(sy_lua *lua)
{
    lua_rawgeti(lua->L, LUA_REGISTRYINDEX, lua->ref_traceback);
    return lua_gettop(lua->L);
}

int sy__lua_pcall_handled(sy_lua *lua, int handler, int nargs, int nres, int factor,
                          char *err, size_t errlen)
{
    lua_State *L = lua->L;
    lua->budget_hits = 0;
    lua->budget_factor = (uint64_t)factor;
    lua->budget_started = 0;
    if (lua_pcall(L, nargs, nres, handler) == 0)
        return 0;
    const char *msg = lua_tostring(L, -1);
    sy__fmt(err, errlen, "%s", msg ? msg : "unknown Lua error");
    if (lua->engine) {
        lua_getfield(L, LUA_REGISTRYINDEX, "switchyard.traceback");
        const char *tb = lua_tostring(L, -1);
        sy__log(lua->engine, SY_LOG_DEBUG, "%s", tb ? tb : err);
        lua_pop(L, 1);
    }
    lua_settop(L, handler);
    return -1;
}

int sy__lua_pcall(sy_lua *lua, int nargs, int nres, int factor, char *err,
                  size_t errlen)
{
    lua_State *L = lua->L;
    int base = lua_gettop(L) - nargs;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_traceback);
    lua_insert(L, base);
    int rc = sy__lua_pcall_handled(lua, base, nargs, nres, factor, err, errlen);
    lua_remove(L, base);
    return rc;
}

/* ------------------------------------------------------------ facade */

static int facade_log(lua_State *L)
{
    sy_lua *lua = lua_touserdata(L, lua_upvalueindex(1));
    const char *level = luaL_checkstring(L, 1);
    const char *msg = luaL_checkstring(L, 2);
    int lv = strcmp(level, "debug") == 0  ? SY_LOG_DEBUG
             : strcmp(level, "warn") == 0 ? SY_LOG_WARN
             : strcmp(level, "error") == 0 ? SY_LOG_ERROR
                                          : SY_LOG_INFO;
    if (lua->engine)
        sy__log(lua->engine, lv, "policy: %s", msg);
    return 0;
}

static int facade_now(lua_State *L)
{
    sy_lua *lua = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushnumber(L, lua->engine ? ev_now(lua->engine->loop) : sy__monotonic());
    return 1;
}

/* ------------------------------------------------------------ settings */

double sy__lua_field_number(lua_State *L, int t, const char *k, double dflt)
{
    lua_getfield(L, t, k);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

const char *sy__lua_field_string(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    const char *v = lua_tostring(L, -1); /* kept alive by the table */
    lua_pop(L, 1);
    return v;
}

int sy__lua_field_bool(lua_State *L, int t, const char *k, int dflt)
{
    lua_getfield(L, t, k);
    int v = lua_isnil(L, -1) ? dflt : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static int read_settings(sy_lua *lua, int cfg, char *err, size_t errlen)
{
    lua_State *L = lua->L;
    sy_settings *s = &lua->set;
    s->query_timeout = sy__lua_field_number(L, cfg, "query_timeout", 0);
    s->retry_reads = sy__lua_field_bool(L, cfg, "retry_reads", 1);
    s->watch = sy__lua_field_bool(L, cfg, "watch", 1);
    const char *lv = sy__lua_field_string(L, cfg, "log_level");
    s->log_level = !lv                          ? SY_LOG_INFO
                   : strcmp(lv, "debug") == 0   ? SY_LOG_DEBUG
                   : strcmp(lv, "warn") == 0    ? SY_LOG_WARN
                   : strcmp(lv, "error") == 0   ? SY_LOG_ERROR
                                                : SY_LOG_INFO;
    lua_getfield(L, cfg, "route_budget");
    if (lua_istable(L, -1)) {
        int b = lua_gettop(L);
        s->budget_instructions =
            (uint64_t)sy__lua_field_number(L, b, "instructions", 1000000);
        s->budget_ms = sy__lua_field_number(L, b, "ms", 50);
    }
    lua_pop(L, 1);
    lua_getfield(L, cfg, "health");
    if (lua_istable(L, -1)) {
        int h = lua_gettop(L);
        s->health_interval = sy__lua_field_number(L, h, "interval", 1);
        s->health_timeout = sy__lua_field_number(L, h, "timeout", 2);
        s->health_fall = (int)sy__lua_field_number(L, h, "fall", 3);
        s->health_rise = (int)sy__lua_field_number(L, h, "rise", 2);
    }
    lua_pop(L, 1);
    lua_getfield(L, cfg, "write_functions");
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    free(s->write_functions);
    s->write_functions = calloc((size_t)n + 1, sizeof(char *));
    if (!s->write_functions) {
        lua_pop(L, 1);
        sy__fmt(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        s->write_functions[i] = sy__strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
        if (!s->write_functions[i]) {
            lua_pop(L, 1);
            sy__fmt(err, errlen, "write_functions[%d]: expected a string", i + 1);
            return -1;
        }
    }
    lua_pop(L, 1);
    return 0;
}

static void read_pool_settings(lua_State *L, int t, sy_pool_settings *p)
{
    p->min = (int)sy__lua_field_number(L, t, "min", 1);
    p->max = (int)sy__lua_field_number(L, t, "max", 10);
    p->idle_timeout = sy__lua_field_number(L, t, "idle_timeout", 60);
    p->max_lifetime = sy__lua_field_number(L, t, "max_lifetime", 3600);
    p->acquire_timeout = sy__lua_field_number(L, t, "acquire_timeout", 5);
    p->connect_timeout = sy__lua_field_number(L, t, "connect_timeout", 5);
    p->reconnect_min = sy__lua_field_number(L, t, "reconnect_min", 0.1);
    p->reconnect_max = sy__lua_field_number(L, t, "reconnect_max", 10);
}

static sy_node *find_reusable(const sy_topology *reuse, const char *full_name,
                              const char *conninfo)
{
    for (int i = 0; reuse && i < reuse->n; i++) {
        sy_node *n = reuse->nodes[i];
        if (strcmp(n->full_name, full_name) == 0 &&
            strcmp(n->conninfo, conninfo) == 0)
            return n;
    }
    return NULL;
}

/* Builds the C nodes from state.nodes (stack index flat), keeping the
 * nodes of reuse whose name and conninfo did not change. */
static int build_nodes(sy_lua *lua, int flat, const sy_topology *reuse,
                       char *err, size_t errlen)
{
    lua_State *L = lua->L;
    int n = (int)lua_objlen(L, flat);
    lua->topo.nodes = calloc((size_t)(n > 0 ? n : 1), sizeof(sy_node *));
    lua->follow_patroni = calloc((size_t)(n > 0 ? n : 1), 1);
    if (!lua->topo.nodes || !lua->follow_patroni) {
        sy__fmt(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, flat, i);
        int t = lua_gettop(L);
        const char *full = sy__lua_field_string(L, t, "full_name");
        const char *name = sy__lua_field_string(L, t, "name");
        const char *cluster = sy__lua_field_string(L, t, "cluster");
        const char *conninfo = sy__lua_field_string(L, t, "conninfo");
        const char *role = sy__lua_field_string(L, t, "role");
        int weight = (int)sy__lua_field_number(L, t, "weight", 1);
        int priority = (int)sy__lua_field_number(L, t, "priority", 1);
        lua_getfield(L, t, "failover");
        int fo = lua_gettop(L);
        const char *fo_mode = lua_istable(L, fo) ? sy__lua_field_string(L, fo, "mode") : NULL;
        int managed = fo_mode && strcmp(fo_mode, "managed") == 0;
        int patroni = fo_mode && strcmp(fo_mode, "patroni") == 0;
        double write_wait = lua_istable(L, fo) ? sy__lua_field_number(L, fo, "write_wait", 5) : 5;
        double promote_timeout =
            lua_istable(L, fo) ? sy__lua_field_number(L, fo, "promote_timeout", 30) : 30;
        lua_pop(L, 1);
        sy_pool_settings ps;
        lua_getfield(L, t, "pool");
        read_pool_settings(L, lua_gettop(L), &ps);
        lua_pop(L, 1);
        if (!full || !name || !cluster || !conninfo) {
            lua_pop(L, 1);
            sy__fmt(err, errlen, "node %d: name, cluster and conninfo are required", i);
            return -1;
        }
        int r = !role || strcmp(role, "auto") == 0 ? SY_ROLE_UNKNOWN
                 : strcmp(role, "primary") == 0    ? SY_ROLE_PRIMARY
                                                   : SY_ROLE_REPLICA;
        sy_node *node = find_reusable(reuse, full, conninfo);
        int reused = node != NULL;
        if (node) {
            sy__node_ref(node);
            node->configured_role = r;
            if (node->health.polls_ok == 0)
                node->server_role = r; /* what the server said outranks the config */
            node->weight = weight;
            sy__pool_apply_settings(&node->pool, &ps);
            sy__pool_apply_settings(&node->relay_pool, &ps);
        } else {
            node = sy__node_new(lua->engine, cluster, name, conninfo, r,
                                weight, &ps);
            if (!node) {
                lua_pop(L, 1);
                sy__fmt(err, errlen, "out of memory");
                return -1;
            }
        }
        node->id = i;
        node->priority = priority;
        node->failover_managed = managed;
        /* Whether the node follows Patroni decides whether it may be
         * primary: a node the serving state shares changes only once this
         * state serves (sy__patroni_adopt), never by a reload that fails. */
        lua->follow_patroni[i - 1] = (unsigned char)patroni;
        if (!reused) {
            node->follow_patroni = patroni;
            node->role = sy__role_effective(node);
        }
        node->write_wait = write_wait;
        node->promote_timeout = promote_timeout;
        lua->topo.nodes[lua->topo.n++] = node;
        lua_pop(L, 1);
    }
    return 0;
}

static int take_ref(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

static void set_package_path(lua_State *L, const char *home)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/policies/?.lua;%s",
                    home, home, home, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

static void intern_kinds(sy_lua *lua)
{
    for (int k = 0; k < 6; k++) {
        lua_pushstring(lua->L, sy_kind_name((sy_kind)k));
        lua->ref_kind[k] = luaL_ref(lua->L, LUA_REGISTRYINDEX);
    }
}

static void merge_table(lua_State *F, int from_idx, lua_State *T, int to_idx,
                        int depth);

/* Pushes the new state's sy.shared: a copy of previous's, so a policy sees
 * its kept state already while it loads. */
static void push_shared_seed(lua_State *L, sy_lua *previous)
{
    lua_newtable(L);
    if (!previous)
        return;
    lua_State *F = previous->L;
    lua_rawgeti(F, LUA_REGISTRYINDEX, previous->ref_facade);
    lua_getfield(F, -1, "shared");
    if (lua_istable(F, -1))
        merge_table(F, lua_gettop(F), L, lua_gettop(L), 0);
    lua_pop(F, 2);
}

sy_lua *sy__lua_load(sy_engine *e, const char *config_path, const char *home,
                     sy_lua *previous, char *err, size_t errlen, int *code)
{
    int policy_phase = 0; /* errors past this point are the policy's */
    const sy_topology *reuse = previous ? &previous->topo : NULL;
    sy_lua *lua = calloc(1, sizeof *lua);
    if (!lua) {
        sy__fmt(err, errlen, "out of memory");
        if (code)
            *code = SY_ENOMEM;
        return NULL;
    }
    lua->engine = e;
    lua->generation = e ? ++e->next_generation : 1;
    lua->set.budget_instructions = 1000000;
    lua->set.budget_ms = 50;
    lua->set.health_interval = 1;
    lua->set.health_timeout = 2;
    lua->set.health_fall = 3;
    lua->set.health_rise = 2;
    lua->ref_route_entry = lua->ref_route_entry_plain = LUA_NOREF;
    lua->ref_on_event = lua->ref_state = LUA_NOREF;
    lua->ref_apply_roles = lua->ref_choose_promotion = lua->ref_patroni_members = LUA_NOREF;
    char resolved[PATH_MAX];
    const char *path = realpath(config_path, resolved) ? resolved : config_path;
    lua->config_path = sy__strdup(path);
    lua_State *L = lua->L = luaL_newstate();
    if (!L || !lua->config_path) {
        sy__fmt(err, errlen, "out of memory");
        sy__lua_free(lua);
        return NULL;
    }
    luaL_openlibs(L);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    lua_pushlightuserdata(L, (void *)&self_key);
    lua_pushlightuserdata(L, lua);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
    lua_pushcfunction(L, traceback_handler);
    lua->ref_traceback = luaL_ref(L, LUA_REGISTRYINDEX);
    set_package_path(L, home);
    intern_kinds(lua);

    /* runtime = require("switchyard.runtime"); state = runtime.load(...) */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "switchyard.runtime");
    if (sy__lua_pcall(lua, 1, 1, LOAD_BUDGET_FACTOR, err, errlen) < 0)
        goto fail;
    int runtime = lua_gettop(L);
    lua_getfield(L, runtime, "load");
    lua_pushstring(L, lua->config_path);
    lua_pushstring(L, home);
    lua_createtable(L, 0, 2);
    lua_pushlightuserdata(L, lua);
    lua_pushcclosure(L, facade_log, 1);
    lua_setfield(L, -2, "log");
    lua_pushlightuserdata(L, lua);
    lua_pushcclosure(L, facade_now, 1);
    lua_setfield(L, -2, "now");
    push_shared_seed(L, previous);
    if (sy__lua_pcall(lua, 4, 1, LOAD_BUDGET_FACTOR, err, errlen) < 0)
        goto fail;
    int state = lua_gettop(L);
    lua_pushvalue(L, state);
    lua->ref_state = luaL_ref(L, LUA_REGISTRYINDEX);

    lua->ref_apply_roles = take_ref(L, runtime, "apply_roles");
    lua->ref_choose_promotion = take_ref(L, runtime, "choose_promotion");
    lua->ref_patroni_members = take_ref(L, runtime, "patroni_members");
    lua->ref_q = take_ref(L, state, "q");
    lua->ref_empty = take_ref(L, state, "empty");
    lua->ref_session_default = take_ref(L, state, "session_default");
    lua->ref_loaded_files = take_ref(L, state, "files");
    lua->ref_facade = take_ref(L, state, "facade");
    lua_getfield(L, state, "topology");
    lua->ref_node_tables = take_ref(L, lua_gettop(L), "nodes");
    lua_pop(L, 1);

    lua_getfield(L, state, "cfg");
    lua_getfield(L, -1, "config_dir");
    lua->config_dir = sy__strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, -1, "policy_path");
    lua->policy_path = sy__strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    if (read_settings(lua, lua_gettop(L), err, errlen) < 0)
        goto fail;
    lua_pop(L, 1);

    policy_phase = 1;
    lua_getfield(L, runtime, "load_policy");
    lua_pushvalue(L, state);
    if (sy__lua_pcall(lua, 1, 0, LOAD_BUDGET_FACTOR, err, errlen) < 0)
        goto fail;
    lua->ref_route_entry = take_ref(L, state, "route_entry");
    lua->ref_route_entry_plain = take_ref(L, state, "route_entry_plain");
    lua_getfield(L, state, "policy");
    lua->ref_on_event = take_ref(L, lua_gettop(L), "on_event");
    lua_pop(L, 1);

    policy_phase = 0;
    lua_getfield(L, state, "nodes");
    if (build_nodes(lua, lua_gettop(L), reuse, err, errlen) < 0)
        goto fail;
    lua_pop(L, 1);
    if (sy__patroni_build(lua, previous, err, errlen) < 0)
        goto fail;
    sy__lua_install_node_metatable(lua);
    sy__lua_install_q_metatable(lua);
    if (sy__roles_push(lua) < 0) {
        sy__fmt(err, errlen, "applying node roles failed");
        goto fail;
    }

    policy_phase = 1;
    lua_getfield(L, runtime, "selftest");
    lua_pushvalue(L, state);
    if (sy__lua_pcall(lua, 1, 0, LOAD_BUDGET_FACTOR, err, errlen) < 0) {
        char inner[900];
        sy__fmt(inner, sizeof inner, "%s", err);
        sy__fmt(err, errlen, "policy selftest failed: %s", inner);
        goto fail;
    }
    lua_settop(L, 0);
    return lua;
fail:
    if (code)
        *code = policy_phase ? SY_EPOLICY : SY_ECONFIG;
    sy__lua_free(lua);
    return NULL;
}

void sy__lua_free(sy_lua *lua)
{
    if (!lua)
        return;
    sy__patroni_free(lua);
    if (lua->L)
        lua_close(lua->L);
    for (int i = 0; i < lua->topo.n; i++)
        sy__node_unref(lua->topo.nodes[i]);
    free(lua->topo.nodes);
    free(lua->follow_patroni);
    if (lua->set.write_functions)
        for (char **w = lua->set.write_functions; *w; w++)
            free(*w);
    free(lua->set.write_functions);
    free(lua->config_path);
    free(lua->config_dir);
    free(lua->policy_path);
    free(lua);
}

/* ------------------------------------------------------------ shared */

#define SHARED_MAX_DEPTH 16

/* Merges the table at from_idx (in F) into the table at to_idx (in T). */
static void merge_table(lua_State *F, int from_idx, lua_State *T, int to_idx,
                        int depth)
{
    if (depth > SHARED_MAX_DEPTH)
        return;
    lua_pushnil(F);
    while (lua_next(F, from_idx)) {
        int kt = lua_type(F, -2), vt = lua_type(F, -1);
        int key_ok = kt == LUA_TSTRING || kt == LUA_TNUMBER || kt == LUA_TBOOLEAN;
        if (key_ok) {
            if (kt == LUA_TSTRING) {
                size_t n;
                const char *k = lua_tolstring(F, -2, &n);
                lua_pushlstring(T, k, n);
            } else if (kt == LUA_TNUMBER) {
                lua_pushnumber(T, lua_tonumber(F, -2));
            } else {
                lua_pushboolean(T, lua_toboolean(F, -2));
            }
            int tk = lua_gettop(T);
            switch (vt) {
            case LUA_TSTRING: {
                size_t n;
                const char *v = lua_tolstring(F, -1, &n);
                lua_pushlstring(T, v, n);
                lua_rawset(T, to_idx);
                break;
            }
            case LUA_TNUMBER:
                lua_pushnumber(T, lua_tonumber(F, -1));
                lua_rawset(T, to_idx);
                break;
            case LUA_TBOOLEAN:
                lua_pushboolean(T, lua_toboolean(F, -1));
                lua_rawset(T, to_idx);
                break;
            case LUA_TTABLE:
                lua_pushvalue(T, tk);
                lua_rawget(T, to_idx);
                if (!lua_istable(T, -1)) {
                    lua_pop(T, 1);
                    lua_newtable(T);
                    lua_pushvalue(T, tk);
                    lua_pushvalue(T, -2);
                    lua_rawset(T, to_idx);
                }
                merge_table(F, lua_gettop(F), T, lua_gettop(T), depth + 1);
                lua_pop(T, 2);
                break;
            default: /* functions, userdata: meaningless in another state */
                lua_pop(T, 1);
                break;
            }
        }
        lua_pop(F, 1);
    }
}

/* ------------------------------------------------------------ events */

void sy__lua_on_event(sy_lua *lua, const sy_event *ev)
{
    if (lua->ref_on_event == LUA_NOREF || lua->in_hook_call)
        return;
    lua_State *L = lua->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_on_event);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_createtable(L, 0, 6);
    lua_pushstring(L, ev->name);
    lua_setfield(L, -2, "type");
    if (ev->cluster) {
        lua_pushstring(L, ev->cluster);
        lua_setfield(L, -2, "cluster");
    }
    if (ev->node) {
        lua_pushstring(L, ev->node);
        lua_setfield(L, -2, "node");
    }
    lua_pushstring(L, ev->message ? ev->message : "");
    lua_setfield(L, -2, "message");
    lua_pushnumber(L, ev->at);
    lua_setfield(L, -2, "at");
    char err[512];
    lua->in_hook_call = 1;
    if (sy__lua_pcall(lua, 1, 0, 1, err, sizeof err) < 0 && lua->engine)
        sy__log(lua->engine, SY_LOG_WARN, "policy on_event failed: %s", err);
    lua->in_hook_call = 0;
}
