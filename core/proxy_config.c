/*
 * proxy_config.c - reads the proxy section of the normalised config
 * (state.cfg.proxy, filled and checked by lua/switchyard/config_proxy.lua)
 * into the C settings the proxy runs with.
 */
#include "proxy.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

/* The index of field k's value in names (NULL-terminated), or dflt. */
static int choice(lua_State *L, int t, const char *k, const char *const *names, int dflt)
{
    const char *v = sy__lua_field_string(L, t, k);
    for (int i = 0; v && names[i]; i++)
        if (strcmp(v, names[i]) == 0)
            return i;
    return dflt;
}

static char *dup_field(lua_State *L, int t, const char *k)
{
    const char *s = sy__lua_field_string(L, t, k);
    return s ? strdup(s) : NULL;
}

/* The dbname of a conninfo (key=value or URI), or NULL. */
static char *conninfo_dbname(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    PQfreemem(err);
    char *db = NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "dbname") == 0 && o->val && o->val[0])
            db = strdup(o->val);
    PQconninfoFree(opts);
    return db;
}

int sy__proxy_settings_read(sy_engine *e, sy_proxy_settings *out, char *err,
                            size_t errlen)
{
    memset(out, 0, sizeof *out);
    sy_lua *lua = e->lua;
    lua_State *L = lua->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_state);
    lua_getfield(L, -1, "cfg");
    lua_getfield(L, -1, "proxy");
    if (!lua_istable(L, -1)) {
        lua_settop(L, top);
        sy__fmt(err, errlen, "the config has no proxy section (proxy = { ... })");
        return -1;
    }
    int p = lua_gettop(L);
    out->max_clients = (int)sy__lua_field_number(L, p, "max_clients", 1000);
    out->client_buffer = (size_t)sy__lua_field_number(L, p, "client_buffer", 65536);
    out->max_message = (size_t)sy__lua_field_number(L, p, "max_message", 16777216);
    const char *mode = sy__lua_field_string(L, p, "pool_mode");
    out->session_mode = mode && strcmp(mode, "session") == 0;
    out->unix_path = dup_field(L, p, "unix_socket_path");
    const char *um = sy__lua_field_string(L, p, "unix_socket_mode");
    out->unix_mode = um ? (int)strtol(um, NULL, 8) : 0777;
    out->switchyard_variables = sy__lua_field_bool(L, p, "switchyard_variables", 1);

    lua_getfield(L, p, "listeners");
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    out->listen = calloc((size_t)n + 1, sizeof *out->listen);
    for (int i = 0; out->listen && i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        int t = lua_gettop(L);
        out->listen[i].host = dup_field(L, t, "host");
        out->listen[i].port = (int)sy__lua_field_number(L, t, "port", 6432);
        out->listen[i].ipv6 = sy__lua_field_bool(L, t, "ipv6", 0);
        out->nlisten++;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);

    lua_getfield(L, p, "tls");
    int t = lua_gettop(L);
    /* In the order of the SY_TLS_MODE_* and SY_AUTH_* values. */
    static const char *const tls_modes[] = {"disable", "prefer", "require", NULL};
    static const char *const auth_types[] = {"trust", "md5", "scram-sha-256", NULL};
    out->tls_mode = choice(L, t, "mode", tls_modes, SY_TLS_MODE_DISABLE);
    out->tls_cert = dup_field(L, t, "cert");
    out->tls_key = dup_field(L, t, "key");
    out->tls_ca = dup_field(L, t, "ca");
    lua_pop(L, 1);

    lua_getfield(L, p, "auth");
    t = lua_gettop(L);
    out->auth_type = choice(L, t, "type", auth_types, SY_AUTH_TRUST);
    out->auth_file = dup_field(L, t, "file");
    out->auth_query = dup_field(L, t, "query");
    out->auth_query_cluster = dup_field(L, t, "query_cluster");
    lua_pop(L, 1);

    lua_getfield(L, p, "timeouts");
    t = lua_gettop(L);
    out->client_idle = sy__lua_field_number(L, t, "client_idle", 0);
    out->wait_backend = sy__lua_field_number(L, t, "wait_backend", 5);
    out->connect = sy__lua_field_number(L, t, "connect", 5);
    out->idle_in_transaction = sy__lua_field_number(L, t, "idle_in_transaction", 0);
    out->client_login = sy__lua_field_number(L, t, "client_login", 60);
    lua_pop(L, 1);

    lua_getfield(L, p, "admin");
    t = lua_gettop(L);
    out->admin_database = dup_field(L, t, "database");
    lua_getfield(L, t, "users");
    n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    out->admin_users = calloc((size_t)n + 1, sizeof(char *));
    for (int i = 0; out->admin_users && i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        out->admin_users[i] = sy__strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 2);

    lua_getfield(L, p, "prepared_statements");
    out->max_prepared = (int)sy__lua_field_number(L, lua_gettop(L), "max_per_backend", 256);
    lua_pop(L, 1);
    lua_getfield(L, p, "shutdown");
    out->drain_timeout = sy__lua_field_number(L, lua_gettop(L), "drain_timeout", 30);
    lua_pop(L, 1);
    lua_settop(L, top);

    if (lua->topo.n > 0)
        out->backend_database = conninfo_dbname(lua->topo.nodes[0]->conninfo);
    if (!out->listen || !out->admin_database || !out->admin_users) {
        sy__proxy_settings_free(out);
        sy__fmt(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

void sy__proxy_settings_free(sy_proxy_settings *s)
{
    for (int i = 0; s->listen && i < s->nlisten; i++)
        free(s->listen[i].host);
    free(s->listen);
    free(s->unix_path);
    free(s->tls_cert);
    free(s->tls_key);
    free(s->tls_ca);
    free(s->auth_file);
    free(s->auth_query);
    free(s->auth_query_cluster);
    free(s->admin_database);
    for (int i = 0; s->admin_users && s->admin_users[i]; i++)
        free(s->admin_users[i]);
    free(s->admin_users);
    free(s->backend_database);
    memset(s, 0, sizeof *s);
}
