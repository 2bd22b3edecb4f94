/*
 * patroni.c - following Patroni (failover.mode = "patroni").  Patroni owns
 * failover and switchover for such a cluster; switchyard only follows it
 * and never promotes anything itself, so any number of switchyard
 * instances can follow one Patroni cluster without knowing of each other.
 *
 * Every health interval a watcher reads GET <url>/cluster from the first
 * of the cluster's Patroni REST API URLs that answers (any member's API
 * describes the whole cluster), and marks each node a member or the leader
 * (role "leader", state "running").  A node is matched to a member by name
 * (the member's name is the node's name) or by address (the member's host
 * and port are the node's conninfo host and port, written the same way).
 *
 * Patroni's word alone never makes a primary: the leader is the primary
 * only once its own health poll says pg_is_in_recovery() = false, and a
 * node that says it is primary while Patroni names another leader (an old
 * leader being demoted) gets nothing at all (roles.c).  In between, during
 * a switchover, writes wait for the new primary (park.c, write_wait).  A
 * change of Patroni's view polls the nodes it touched at once, so writes
 * move within one interval of the new leader being writable.
 *
 * Garbage, errors and silence from every URL count as one failed round;
 * health.fall of them in a row is an event (patroni_down), health.rise
 * good ones after that another (patroni_up).  Roles stay as last heard
 * meanwhile, still confirmed by polling.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Patroni's /cluster reply is a few hundred bytes per member. */
#define PATRONI_MAX_REPLY (1024 * 1024)

struct sy_patroni {
    sy_lua *lua;              /* owner */
    sy_patroni *next;
    int from, to;             /* its cluster's nodes in lua->topo */
    char **urls;              /* base URLs, owned */
    int nurls;
    int url;                  /* the one to ask next */
    int tried;                /* URLs tried in this round */
    char **hosts, **ports;    /* per node: conninfo host and port, owned */
    ev_timer tick;
    sy_http_get *get;         /* in flight, or NULL */
    int failures, successes;  /* consecutive rounds */
    int down;                 /* patroni_down said, patroni_up not yet */
    char leader[128];         /* member name of the last leader heard */
    char last_error[512];
};

static sy_engine *engine_of(const sy_patroni *w)
{
    return w->lua->engine;
}

static const char *cluster_of(const sy_patroni *w)
{
    return w->lua->topo.nodes[w->from]->cluster;
}

const char *sy__patroni_role_name(const sy_node *n)
{
    if (!n->follow_patroni)
        return NULL;
    switch (n->patroni_role) {
    case SY_PATRONI_LEADER: return "leader";
    case SY_PATRONI_MEMBER: return "member";
    default: return "none";
    }
}

static void fetch(sy_patroni *w);

static void schedule(sy_patroni *w, double after)
{
    struct ev_loop *loop = engine_of(w)->loop;
    ev_timer_stop(loop, &w->tick);
    ev_timer_set(&w->tick, after, 0.);
    ev_timer_start(loop, &w->tick);
}

/* ------------------------------------------------------------ the view */

static const char *field_string(lua_State *L, int t, const char *k, char *buf, size_t len)
{
    lua_getfield(L, t, k);
    const char *v = NULL;
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        sy__fmt(buf, len, "%s", lua_tostring(L, -1));
        v = buf;
    }
    lua_pop(L, 1);
    return v;
}

/* What the member list at stack index list says of node i of w. */
static int role_of(const sy_patroni *w, lua_State *L, int list, int i)
{
    const sy_node *n = w->lua->topo.nodes[i];
    int k = i - w->from;
    int count = (int)lua_objlen(L, list);
    for (int m = 1; m <= count; m++) {
        lua_rawgeti(L, list, m);
        int t = lua_gettop(L);
        char name[128], host[256], port[32];
        const char *mn = field_string(L, t, "name", name, sizeof name);
        const char *mh = field_string(L, t, "host", host, sizeof host);
        const char *mp = field_string(L, t, "port", port, sizeof port);
        int match = (mn && strcmp(mn, n->name) == 0) ||
                    (mh && mp && w->hosts[k] && strcmp(mh, w->hosts[k]) == 0 &&
                     strcmp(mp, w->ports[k]) == 0);
        lua_getfield(L, t, "leader");
        int leads = lua_toboolean(L, -1);
        lua_pop(L, 2);
        if (match)
            return leads ? SY_PATRONI_LEADER : SY_PATRONI_MEMBER;
    }
    return SY_PATRONI_NONE;
}

/* Applies runtime.patroni_members' results, above top (the member list,
 * then the running leader's name or nil), to the nodes, and leaves the
 * stack at top. */
static void apply_members(sy_patroni *w, lua_State *L, int top)
{
    sy_engine *e = engine_of(w);
    char leader[128];
    sy__fmt(leader, sizeof leader, "%s", lua_isstring(L, top + 2) ? lua_tostring(L, top + 2) : "");
    int changed = 0, ours = 0;
    for (int i = w->from; i < w->to; i++) {
        sy_node *n = w->lua->topo.nodes[i];
        int role = role_of(w, L, top + 1, i);
        ours |= role == SY_PATRONI_LEADER;
        if (n->patroni_role == role)
            continue;
        n->patroni_role = role;
        changed = 1;
        sy__health_poll_soon(n); /* confirm what the server says, now */
    }
    lua_settop(L, top);
    if (strcmp(leader, w->leader) != 0) {
        sy__log(e, SY_LOG_WARN, "cluster %s: Patroni's leader is %s%s", cluster_of(w),
                leader[0] ? leader : "none (no running leader)",
                leader[0] && !ours ? ", which is none of this cluster's nodes "
                                     "(match by node name or conninfo host and port)"
                                   : "");
        sy__fmt(w->leader, sizeof w->leader, "%s", leader);
    }
    if (changed) {
        char why[200];
        sy__fmt(why, sizeof why, "Patroni's leader is %s", leader[0] ? leader : "none");
        sy__roles_recompute(e, w->from, w->to, why); /* may run parked writes */
    }
}

/* ------------------------------------------------------------ rounds */

static void round_over(sy_patroni *w, int ok)
{
    sy_engine *e = engine_of(w);
    const sy_settings *set = &w->lua->set;
    w->tried = 0;
    schedule(w, set->health_interval);
    if (ok) {
        w->failures = 0;
        w->successes++;
        if (w->down && w->successes >= set->health_rise) {
            w->down = 0;
            sy__log(e, SY_LOG_INFO, "cluster %s: Patroni answers again", cluster_of(w));
            sy__emit(e, SY_EVENT_PATRONI_UP, cluster_of(w), NULL,
                     "cluster %s: Patroni's REST API answers again", cluster_of(w));
        }
        return;
    }
    w->successes = 0;
    w->failures++;
    if (!w->down && w->failures >= set->health_fall) {
        w->down = 1;
        sy__log(e, SY_LOG_ERROR, "cluster %s: Patroni gave no usable answer %d times: %s",
                cluster_of(w), w->failures, w->last_error);
        sy__emit(e, SY_EVENT_PATRONI_DOWN, cluster_of(w), NULL,
                 "cluster %s: Patroni's REST API gave no usable answer %d times in a row "
                 "(last: %s); roles stay as last heard, confirmed by health polling",
                 cluster_of(w), w->failures, w->last_error);
    }
}

/* One URL failed: the next one is asked at once, until all were. */
static void url_failed(sy_patroni *w, const char *why)
{
    sy__fmt(w->last_error, sizeof w->last_error, "%s/cluster: %s", w->urls[w->url], why);
    sy__log(engine_of(w), SY_LOG_DEBUG, "cluster %s: %s", cluster_of(w), w->last_error);
    w->url = (w->url + 1) % w->nurls;
    if (++w->tried < w->nurls)
        fetch(w);
    else
        round_over(w, 0);
}

static void reply_cb(void *data, long status, const char *body, size_t len, const char *err)
{
    sy_patroni *w = data;
    w->get = NULL;
    if (err) {
        url_failed(w, err);
        return;
    }
    if (status != 200) {
        char why[64];
        sy__fmt(why, sizeof why, "HTTP status %ld", status);
        url_failed(w, why);
        return;
    }
    sy_lua *lua = w->lua;
    lua_State *L = lua->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_patroni_members);
    lua_pushlstring(L, body, len);
    char why[256];
    if (sy__lua_pcall(lua, 1, 2, 1, why, sizeof why) < 0) {
        lua_settop(L, top);
        url_failed(w, why);
        return;
    }
    round_over(w, 1);
    apply_members(w, L, top); /* last: it may run callbacks that reload */
}

static void fetch(sy_patroni *w)
{
    sy_engine *e = engine_of(w);
    if (!e->http && !(e->http = sy__http_new(e->loop))) {
        url_failed(w, "no HTTP client (out of memory, or libcurl without an asynchronous resolver)");
        return;
    }
    char url[1100], err[256];
    sy__fmt(url, sizeof url, "%s/cluster", w->urls[w->url]);
    w->get = sy__http_get(e->http, url, w->lua->set.health_timeout, PATRONI_MAX_REPLY, reply_cb,
                          w, err, sizeof err);
    if (!w->get)
        url_failed(w, err);
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    sy_patroni *w = sy_container_of(t, sy_patroni, tick);
    if (!w->get)
        fetch(w);
}

/* ------------------------------------------------------------ lifecycle */

static void free_watcher(sy_patroni *w)
{
    for (int i = 0; i < w->nurls; i++)
        free(w->urls[i]);
    for (int i = 0; w->hosts && i < w->to - w->from; i++) {
        free(w->hosts[i]);
        free(w->ports[i]);
    }
    free(w->urls);
    free(w->hosts);
    free(w->ports);
    free(w);
}

/* The conninfo's first host (or hostaddr) and port ("5432" by default). */
static int node_address(const sy_node *n, char **host, char **port)
{
    PQconninfoOption *opts = PQconninfoParse(n->conninfo, NULL);
    sy_conninfo_address addr;
    sy__conninfo_address(opts, &addr);
    const char *h = addr.host ? addr.host : addr.hostaddr, *p = addr.port;
    int tcp = h && h[0] != '/'; /* a socket directory matches no member */
    *host = tcp ? sy__strndup(h, strcspn(h, ",")) : NULL;
    *port = sy__strndup(p ? p : "5432", p ? strcspn(p, ",") : 4);
    PQconninfoFree(opts); /* h and p pointed into it */
    return (tcp && !*host) || !*port ? -1 : 0;
}

/* Reads failover.patroni (an array of URLs) of node table t. */
static int read_urls(sy_patroni *w, lua_State *L, int t)
{
    lua_getfield(L, t, "failover");
    lua_getfield(L, -1, "patroni");
    int list = lua_gettop(L);
    int n = lua_istable(L, list) ? (int)lua_objlen(L, list) : 0;
    w->urls = calloc((size_t)(n > 0 ? n : 1), sizeof(char *));
    if (!w->urls) {
        lua_pop(L, 2);
        return -1;
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        size_t len = 0;
        const char *u = lua_tolstring(L, -1, &len);
        while (u && len > 0 && u[len - 1] == '/')
            len--; /* "http://h:8008/" and "http://h:8008" are one */
        w->urls[w->nurls] = u ? sy__strndup(u, len) : NULL;
        lua_pop(L, 1);
        if (!w->urls[w->nurls])
            break;
        w->nurls++;
    }
    lua_pop(L, 2);
    return w->nurls == n && n > 0 ? 0 : -1;
}

static sy_patroni *new_watcher(sy_lua *lua, int from, int to, lua_State *L, int flat)
{
    sy_patroni *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->lua = lua;
    w->from = from;
    w->to = to;
    ev_init(&w->tick, tick_cb);
    w->hosts = calloc((size_t)(to - from), sizeof(char *));
    w->ports = calloc((size_t)(to - from), sizeof(char *));
    int ok = w->hosts && w->ports;
    for (int i = from; ok && i < to; i++)
        ok = node_address(lua->topo.nodes[i], &w->hosts[i - from], &w->ports[i - from]) == 0;
    lua_rawgeti(L, flat, from + 1);
    if (ok)
        ok = read_urls(w, L, lua_gettop(L)) == 0;
    lua_pop(L, 1);
    if (!ok) {
        free_watcher(w);
        return NULL;
    }
    return w;
}

/* What the watcher of the same cluster in previous knew: a reload
 * neither forgets an outage (patroni_up still follows it) nor re-logs the
 * leader. */
static void inherit(sy_patroni *w, const sy_lua *previous)
{
    for (const sy_patroni *p = previous ? previous->patroni : NULL; p; p = p->next) {
        if (strcmp(cluster_of(p), cluster_of(w)) != 0)
            continue;
        w->down = p->down;
        w->failures = p->failures;
        sy__fmt(w->leader, sizeof w->leader, "%s", p->leader);
        sy__fmt(w->last_error, sizeof w->last_error, "%s", p->last_error);
    }
}

int sy__patroni_build(sy_lua *lua, const sy_lua *previous, char *err, size_t errlen)
{
    const sy_topology *t = &lua->topo;
    if (!lua->engine)
        return 0; /* a dry run watches nothing */
    lua_State *L = lua->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->ref_state);
    lua_getfield(L, -1, "nodes");
    int flat = lua_gettop(L);
    for (int from = 0, to; from < t->n; from = to) {
        sy__cluster_range(t, from, &from, &to);
        if (!t->nodes[from]->follow_patroni)
            continue;
        sy_patroni *w = new_watcher(lua, from, to, L, flat);
        if (!w) {
            lua_pop(L, 2);
            sy__fmt(err, errlen, "cluster %s: failover.patroni: out of memory or no URL",
                    t->nodes[from]->cluster);
            return -1;
        }
        inherit(w, previous);
        w->next = lua->patroni;
        lua->patroni = w;
    }
    lua_pop(L, 2);
    return 0;
}

void sy__patroni_adopt(sy_lua *lua)
{
    sy_engine *e = lua->engine;
    int changed = 0;
    for (int i = 0; i < lua->topo.n; i++) {
        sy_node *n = lua->topo.nodes[i];
        if (n->follow_patroni == lua->follow_patroni[i])
            continue;
        n->follow_patroni = lua->follow_patroni[i];
        n->patroni_role = SY_PATRONI_NONE; /* nothing heard yet */
        changed = 1;
    }
    if (changed && e && e->lua == lua)
        sy__roles_recompute(e, 0, lua->topo.n, "failover.mode changed by a reload");
}

void sy__patroni_start(sy_lua *lua)
{
    for (sy_patroni *w = lua ? lua->patroni : NULL; w; w = w->next)
        if (!w->get && !ev_is_active(&w->tick))
            schedule(w, 0.); /* the first round right away */
}

void sy__patroni_stop(sy_lua *lua)
{
    for (sy_patroni *w = lua ? lua->patroni : NULL; w; w = w->next) {
        ev_timer_stop(engine_of(w)->loop, &w->tick);
        sy__http_cancel(w->get);
        w->get = NULL;
    }
}

void sy__patroni_free(sy_lua *lua)
{
    sy__patroni_stop(lua);
    while (lua->patroni) {
        sy_patroni *w = lua->patroni;
        lua->patroni = w->next;
        free_watcher(w);
    }
}
