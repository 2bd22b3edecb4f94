/*
 * stats.c - per-node counters (queries, errors, in flight, pool figures,
 * latency moving average and percentiles) and the C API that reads them.
 * Percentiles come from a fixed log-scale histogram, so recording a
 * latency is O(1) and allocation-free.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

#define LAT_BASE_S 50e-6 /* bucket 0 holds everything under 50 us */
#define EWMA_ALPHA 0.1
#define ERROR_ALPHA 0.05

static int bucket_of(double seconds)
{
    if (seconds <= LAT_BASE_S)
        return 0;
    int b = (int)(4.0 * log2(seconds / LAT_BASE_S)) + 1;
    return b >= SY_LAT_BUCKETS ? SY_LAT_BUCKETS - 1 : b;
}

/* Upper edge of bucket b, in seconds. */
static double bucket_edge(int b)
{
    return LAT_BASE_S * exp2((double)b / 4.0);
}

void sy__counters_record(sy_counters *c, double seconds, int failed)
{
    if (seconds < 0)
        seconds = 0;
    double ms = seconds * 1e3;
    c->latency_ewma_ms = c->lat_count == 0
                             ? ms
                             : c->latency_ewma_ms * (1 - EWMA_ALPHA) +
                                   ms * EWMA_ALPHA;
    c->error_rate = c->error_rate * (1 - ERROR_ALPHA) +
                    (failed ? ERROR_ALPHA : 0.0);
    c->lat_hist[bucket_of(seconds)]++;
    c->lat_count++;
}

double sy__counters_percentile(const sy_counters *c, double p)
{
    if (c->lat_count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(p * (double)c->lat_count);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (int b = 0; b < SY_LAT_BUCKETS; b++) {
        seen += c->lat_hist[b];
        if (seen >= rank)
            return bucket_edge(b) * 1e3;
    }
    return bucket_edge(SY_LAT_BUCKETS - 1) * 1e3;
}

int sy_node_set_enabled(sy_engine *e, const char *name, int enabled)
{
    if (!e || !e->lua || !name)
        return SY_EINVAL;
    sy_node *n = sy__topology_find(&e->lua->topo, name);
    if (!n)
        return SY_EINVAL;
    n->forced_down = !enabled;
    sy__node_routable_changed(n);
    sy__log(e, SY_LOG_INFO, "node %s %s", name, enabled ? "enabled" : "drained");
    if (enabled)
        sy__failover_unfence(n);
    return 0;
}

int sy_node_count(const sy_engine *e)
{
    if (!e || !e->lua)
        return 0;
    return e->lua->topo.n;
}

static void fill_node(const sy_node *n, sy_node_stats *out)
{
    out->name = n->full_name;
    out->cluster = n->cluster;
    out->role = sy__role_name(n->role);
    out->healthy = n->healthy;
    out->weight = n->weight;
    out->queries = n->c.queries;
    out->errors = n->c.errors;
    out->retries = n->c.retries;
    out->inflight = n->c.inflight;
    /* A node's embedded and relay pools count as one. */
    out->pool_idle = n->pool.n_idle + n->relay_pool.n_idle;
    out->pool_busy = n->pool.n_busy + n->relay_pool.n_busy;
    out->pool_connecting = n->pool.n_connecting + n->relay_pool.n_connecting;
    out->pool_waiting = n->pool.n_waiting + n->relay_pool.n_waiting;
    out->pool_exhausted = n->c.exhausted;
    out->latency_avg_ms = n->c.latency_ewma_ms;
    out->latency_p50_ms = sy__counters_percentile(&n->c, 0.50);
    out->latency_p95_ms = sy__counters_percentile(&n->c, 0.95);
    out->latency_p99_ms = sy__counters_percentile(&n->c, 0.99);
    const sy_health *h = &n->health;
    out->split_brain = n->split_brain;
    out->fenced = n->fenced;
    out->patroni = sy__patroni_role_name(n);
    out->timeline = h->timeline;
    out->wal_position = h->polls_ok ? h->wal_position : -1;
    out->lag_bytes = n->lag_bytes;
    out->lag_ms = n->lag_ms;
    out->rtt_ms = h->polls_ok ? h->rtt_ms : -1;
    out->polls_ok = h->polls_ok;
    out->polls_failed = h->polls_failed;
    out->down_for_s = n->healthy || !n->engine ? 0 : ev_now(n->engine->loop) - n->down_since;
    out->last_error = h->last_error;
}

int sy_node_stats_get(const sy_engine *e, int index, sy_node_stats *out)
{
    if (!e || !out || !e->lua)
        return SY_EINVAL;
    if (index < 0 || index >= e->lua->topo.n)
        return SY_ENOTFOUND;
    fill_node(e->lua->topo.nodes[index], out);
    return 0;
}

int sy_cluster_stats_get(const sy_engine *e, const char *cluster,
                         sy_node_stats *out)
{
    if (!e || !cluster || !out || !e->lua)
        return SY_EINVAL;
    memset(out, 0, sizeof *out);
    int found = 0;
    double weighted[4] = {0, 0, 0, 0};
    for (int i = 0; i < e->lua->topo.n; i++) {
        const sy_node *n = e->lua->topo.nodes[i];
        if (strcmp(n->cluster, cluster) != 0)
            continue;
        sy_node_stats ns;
        fill_node(n, &ns);
        if (!found)
            out->name = out->cluster = n->cluster;
        found = 1;
        out->healthy += ns.healthy;
        out->weight += ns.weight;
        out->queries += ns.queries;
        out->errors += ns.errors;
        out->retries += ns.retries;
        out->inflight += ns.inflight;
        out->pool_idle += ns.pool_idle;
        out->pool_busy += ns.pool_busy;
        out->pool_connecting += ns.pool_connecting;
        out->pool_waiting += ns.pool_waiting;
        out->pool_exhausted += ns.pool_exhausted;
        double w = (double)ns.queries;
        weighted[0] += ns.latency_avg_ms * w;
        weighted[1] += ns.latency_p50_ms * w;
        weighted[2] += ns.latency_p95_ms * w;
        weighted[3] += ns.latency_p99_ms * w;
    }
    if (!found)
        return SY_ENOTFOUND;
    if (out->queries > 0) {
        double q = (double)out->queries;
        out->latency_avg_ms = weighted[0] / q;
        out->latency_p50_ms = weighted[1] / q;
        out->latency_p95_ms = weighted[2] / q;
        out->latency_p99_ms = weighted[3] / q;
    }
    return 0;
}

int sy_engine_stats_get(const sy_engine *e, sy_engine_stats *out)
{
    if (!e || !out)
        return SY_EINVAL;
    *out = e->stats;
    return 0;
}
