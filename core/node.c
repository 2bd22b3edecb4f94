/*
 * node.c - one PostgreSQL server as the engine sees it: identity, role,
 * weight, health, counters and its pool.  Nodes are refcounted because a
 * reload builds a new topology that keeps the unchanged nodes (and their
 * warm pools) while in-flight requests still hold the old ones.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sy_node *sy__node_new(sy_engine *e, const char *cluster, const char *name,
                      const char *conninfo, int role, int weight,
                      const sy_pool_settings *ps)
{
    sy_node *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->engine = e;
    n->refcount = 1;
    n->cluster = sy__strdup(cluster);
    n->name = sy__strdup(name);
    n->conninfo = sy__strdup(conninfo);
    size_t fl = strlen(cluster) + strlen(name) + 2;
    n->full_name = malloc(fl);
    if (!n->cluster || !n->name || !n->conninfo || !n->full_name)
        goto fail;
    snprintf(n->full_name, fl, "%s.%s", cluster, name);
    n->role = n->server_role = n->configured_role = role;
    n->weight = weight;
    n->healthy = 1;
    n->lag_bytes = n->lag_ms = -1;
    sy_list_init(&n->link_retired);
    sy__pool_init(&n->pool, n, ps, 0);
    sy__pool_init(&n->relay_pool, n, ps, 1);
    if (sy__dns_init(n) < 0)
        goto fail;
    return n;
fail:
    free(n->cluster);
    free(n->name);
    free(n->conninfo);
    free(n->full_name);
    free(n);
    return NULL;
}

void sy__node_ref(sy_node *n)
{
    n->refcount++;
}

void sy__node_unref(sy_node *n)
{
    if (!n || --n->refcount > 0)
        return;
    /* Nobody routes to it or holds one of its connections any more. */
    if (n->engine) {
        sy__health_stop(n);
        sy__pool_destroy(&n->pool);
        sy__pool_destroy(&n->relay_pool);
        /* After both stopped waiting for it: a lookup still running is
         * cancelled or cut loose from the node (dns.c). */
        sy__dns_cleanup(n);
        /* Possibly inside a callback of one of its connections. */
        sy__engine_bury_node(n->engine, n);
        return;
    }
    sy__node_free_memory(n);
}

void sy__node_free_memory(sy_node *n)
{
    free(n->cluster);
    free(n->name);
    free(n->conninfo);
    free(n->full_name);
    free(n);
}

void sy__node_set_health(sy_node *n, int healthy, const char *why)
{
    if (n->healthy == healthy)
        return;
    sy_engine *e = n->engine;
    double now = e ? ev_now(e->loop) : 0;
    n->healthy = healthy;
    if (!e)
        return;
    sy__node_routable_changed(n);
    if (healthy) {
        if (!n->fenced)
            n->failover_tried = 0; /* a later outage may fail over again */
        /* The figures earned while failing describe an outage that is
         * over; a balancer that trusted them would shun the node for good. */
        n->c.error_rate = 0;
        if (n->health.polls_ok > 0)
            n->c.latency_ewma_ms = n->health.rtt_ms;
        double down_for = now - n->down_since;
        sy__log(e, SY_LOG_INFO, "node %s is up after %.1f s", n->full_name,
                down_for);
        sy__emit(e, SY_EVENT_NODE_UP, n->cluster, n->full_name,
                 "node %s is up (%s) after %.1f s down", n->full_name, why,
                 down_for);
    } else {
        n->down_since = now;
        sy__log(e, SY_LOG_WARN, "node %s is down: %s", n->full_name, why);
        sy__emit(e, SY_EVENT_NODE_DOWN, n->cluster, n->full_name,
                 "node %s is down: %s", n->full_name, why);
    }
    /* A primary going down or coming back may end or start a split. */
    if (n->role == SY_ROLE_PRIMARY || n->split_brain)
        sy__roles_refresh(e);
    if (healthy) {
        sy__pool_node_up(&n->pool);
        sy__pool_node_up(&n->relay_pool);
    } else {
        sy__pool_node_down(&n->pool);
        sy__pool_node_down(&n->relay_pool);
    }
}

sy_lua *sy__node_current_lua(const sy_node *n)
{
    sy_engine *e = n->engine;
    if (!e || !e->lua || n->id < 1 || n->id > e->lua->topo.n || e->lua->topo.nodes[n->id - 1] != n)
        return NULL;
    return e->lua;
}

sy_node *sy__topology_find(const sy_topology *t, const char *full_name)
{
    for (int i = 0; t && i < t->n; i++)
        if (strcmp(t->nodes[i]->full_name, full_name) == 0)
            return t->nodes[i];
    return NULL;
}
