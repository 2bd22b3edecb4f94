/*
 * roles.c - who is primary, from what the servers say.  The config gives
 * each node a role, or "auto"; once health polling has read
 * pg_is_in_recovery() from a node, its effective role follows the server,
 * so an external failover or a switchover re-routes writes within one
 * poll interval.  Per cluster:
 *   - one healthy node claims primary: it is the primary;
 *   - two or more do: split brain.  The cluster has no primary (writes are
 *     refused) until all but one are down or demoted; an event says so
 *     when it starts and when it ends;
 *   - none does: the last known primary (down), or none at all.
 * In a cluster following Patroni (patroni.c) a server's claim counts only
 * while Patroni names it the leader; otherwise its role is UNKNOWN and
 * nothing is routed to it (sy__role_effective).
 * The outcome is pushed into the policy's topology tables through
 * runtime.apply_roles(), so policies see it from the next decision on.
 * Nodes of one cluster are contiguous in the topology (runtime.lua builds
 * them cluster by cluster), which the walk below relies on.
 */
#include "internal.h"

#include <string.h>

const char *sy__role_name(int role)
{
    switch (role) {
    case SY_ROLE_PRIMARY: return "primary";
    case SY_ROLE_REPLICA: return "replica";
    default: return "unknown";
    }
}

void sy__cluster_range(const sy_topology *t, int i, int *from, int *to)
{
    const char *cluster = t->nodes[i]->cluster;
    int a = i, b = i + 1;
    while (a > 0 && strcmp(t->nodes[a - 1]->cluster, cluster) == 0)
        a--;
    while (b < t->n && strcmp(t->nodes[b]->cluster, cluster) == 0)
        b++;
    *from = a;
    *to = b;
}

static int claims_primary(const sy_node *n)
{
    return n->role == SY_ROLE_PRIMARY && n->healthy && !n->fenced;
}

/* The primary of nodes [from, to): its index, -1 for none or a split. */
static int cluster_primary(const sy_topology *t, int from, int to)
{
    int claim = -1, claims = 0, last_known = -1;
    for (int i = from; i < to; i++) {
        if (claims_primary(t->nodes[i])) {
            claims++;
            claim = i;
        } else if (t->nodes[i]->role == SY_ROLE_PRIMARY && !t->nodes[i]->fenced &&
                   last_known < 0) {
            last_known = i;
        }
    }
    if (claims > 1)
        return -1;
    return claims == 1 ? claim : last_known;
}

int sy__roles_push(sy_lua *lua)
{
    lua_State *L = lua->L;
    const sy_topology *t = &lua->topo;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_apply_roles);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_state);
    lua_createtable(L, t->n, 0);
    for (int i = 0; i < t->n; i++) {
        lua_pushstring(L, sy__role_name(t->nodes[i]->role));
        lua_rawseti(L, -2, i + 1);
    }
    lua_newtable(L);
    for (int from = 0, to; from < t->n; from = to) {
        sy__cluster_range(t, from, &from, &to);
        lua_createtable(L, 0, 2);
        int p = cluster_primary(t, from, to);
        if (p >= 0) {
            lua_pushinteger(L, t->nodes[p]->id);
            lua_setfield(L, -2, "primary");
        }
        int n = 0;
        for (int i = from; i < to; i++) {
            if (!t->nodes[i]->split_brain)
                continue;
            if (n == 0)
                lua_newtable(L);
            lua_pushstring(L, t->nodes[i]->full_name);
            lua_rawseti(L, -2, ++n);
        }
        if (n > 0)
            lua_setfield(L, -2, "split_brain");
        double wait = sy__failover_wait(t, from, to);
        if (wait > 0) {
            lua_pushnumber(L, wait);
            lua_setfield(L, -2, "wait");
        }
        lua_setfield(L, -2, t->nodes[from]->cluster);
    }
    char err[256];
    int rc = sy__lua_pcall(lua, 3, 0, 1, err, sizeof err);
    lua_settop(L, top);
    if (rc < 0 && lua->engine)
        sy__log(lua->engine, SY_LOG_ERROR, "applying node roles: %s", err);
    return rc;
}

/* Marks the split of nodes [from, to) and says when one starts or ends. */
static void update_split(sy_engine *e, const sy_topology *t, int from, int to)
{
    int claims = 0, was = 0;
    for (int i = from; i < to; i++) {
        claims += claims_primary(t->nodes[i]);
        was |= t->nodes[i]->split_brain;
    }
    int split = claims > 1;
    char names[512] = "";
    size_t used = 0;
    for (int i = from; i < to; i++) {
        sy_node *n = t->nodes[i];
        n->split_brain = split && claims_primary(n);
        if (n->split_brain && used + 1 < sizeof names) {
            sy__fmt(names + used, sizeof names - used, "%s%s", used ? ", " : "",
                    n->full_name);
            used += strlen(names + used);
        }
    }
    const char *cluster = t->nodes[from]->cluster;
    if (split && !was) {
        sy__log(e, SY_LOG_ERROR,
                "cluster %s: split brain: %s all claim to be primary; writes are refused",
                cluster, names);
        sy__emit(e, SY_EVENT_SPLIT_BRAIN, cluster, NULL,
                 "cluster %s: %s all claim to be primary; writes are refused until "
                 "one remains", cluster, names);
    } else if (!split && was) {
        int p = cluster_primary(t, from, to);
        sy__log(e, SY_LOG_WARN, "cluster %s: split brain over, primary %s", cluster,
                p >= 0 ? t->nodes[p]->full_name : "none");
        sy__emit(e, SY_EVENT_SPLIT_BRAIN_RESOLVED, cluster,
                 p >= 0 ? t->nodes[p]->full_name : NULL,
                 "cluster %s: one primary again (%s)", cluster,
                 p >= 0 ? t->nodes[p]->full_name : "none");
    }
}

void sy__roles_refresh(sy_engine *e)
{
    sy_lua *lua = e->lua;
    if (!lua)
        return;
    const sy_topology *t = &lua->topo;
    for (int from = 0, to; from < t->n; from = to) {
        sy__cluster_range(t, from, &from, &to);
        update_split(e, t, from, to);
    }
    sy__roles_push(lua);
    sy__park_wake_all(e); /* writes waiting for a primary may have one now */
}

int sy__role_effective(const sy_node *n)
{
    if (n->follow_patroni && n->server_role == SY_ROLE_PRIMARY &&
        n->patroni_role != SY_PATRONI_LEADER)
        return SY_ROLE_UNKNOWN; /* a demoting old leader, or a rogue */
    return n->server_role;
}

void sy__roles_recompute(sy_engine *e, int from, int to, const char *why)
{
    int changed = 0;
    for (int i = from; i < to; i++) {
        sy_node *n = e->lua->topo.nodes[i];
        int role = sy__role_effective(n);
        if (n->role == role)
            continue;
        int was = n->role;
        n->role = role;
        changed = 1;
        sy__log(e, SY_LOG_WARN, "node %s is now %s (was %s)", n->full_name,
                sy__role_name(role), sy__role_name(was));
        sy__emit(e, SY_EVENT_ROLE_CHANGED, n->cluster, n->full_name,
                 "node %s is now %s (was %s): %s", n->full_name, sy__role_name(role),
                 sy__role_name(was), why);
    }
    if (changed)
        sy__roles_refresh(e);
}

void sy__roles_observed(sy_node *n, int in_recovery)
{
    int role = in_recovery ? SY_ROLE_REPLICA : SY_ROLE_PRIMARY;
    if (n->server_role == role)
        return;
    n->server_role = role;
    if (!sy__node_current_lua(n)) {
        n->role = sy__role_effective(n);
        return;
    }
    char why[160];
    sy__fmt(why, sizeof why, "pg_is_in_recovery() = %s%s", in_recovery ? "true" : "false",
            n->follow_patroni && !in_recovery && n->patroni_role != SY_PATRONI_LEADER
                ? ", but Patroni does not name it the leader"
                : "");
    sy__roles_recompute(n->engine, n->id - 1, n->id, why);
}
