/*
 * admin.c - the admin console: a client that logs in to the virtual
 * database (proxy.admin.database, "switchyard") talks to the proxy itself:
 *
 *   SHOW NODES | POOLS | CLIENTS | STATS | CONFIG | HELP
 *   RELOAD                 config and policies, like SIGHUP
 *   DRAIN cluster.node     route nothing new there (open transactions end)
 *   ENABLE cluster.node    route there again
 *
 * Results are text columns, so psql and any driver show them.
 */
#include "proxy.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct result {
    sy_buf *out;
    uint16_t ncols;
    int nrows;
} result;

static void begin(result *r, sy_client *c, const char *const *cols, uint16_t n)
{
    r->out = &c->out;
    r->ncols = n;
    r->nrows = 0;
    sy__pg_build_row_description_text(r->out, cols, n);
}

static void row(result *r, const char *const *values)
{
    sy__pg_build_data_row_text(r->out, values, r->ncols);
    r->nrows++;
}

static void finish(result *r, const char *tag)
{
    char t[64];
    sy__fmt(t, sizeof t, "%s %d", tag, r->nrows);
    sy__pg_build_command_complete(r->out, t);
}

static const char *num(char *buf, size_t n, double v)
{
    sy__fmt(buf, n, "%.6g", v);
    return buf;
}

static const char *u64(char *buf, size_t n, uint64_t v)
{
    sy__fmt(buf, n, "%llu", (unsigned long long)v);
    return buf;
}

static void show_nodes(sy_client *c)
{
    static const char *const cols[] = {"node", "cluster", "role", "healthy",
                                       "drained", "split_brain", "timeline", "lag_bytes",
                                       "lag_ms", "rtt_ms", "queries", "errors",
                                       "latency_ms", "last_error", "fenced", "patroni"};
    result r;
    begin(&r, c, cols, 16);
    sy_engine *e = c->proxy->engine;
    for (int i = 0; i < sy_node_count(e); i++) {
        sy_node_stats st;
        sy_node_stats_get(e, i, &st);
        const sy_node *n = e->lua->topo.nodes[i];
        char b[7][32];
        const char *err = st.last_error[0] ? st.last_error : n->relay_pool.last_error;
        const char *v[16] = {
            st.name, st.cluster, st.role, st.healthy ? "yes" : "no",
            n->forced_down ? "yes" : "no", st.split_brain ? "yes" : "no",
            st.timeline ? num(b[0], 32, st.timeline) : NULL,
            st.lag_bytes < 0 ? NULL : num(b[1], 32, st.lag_bytes),
            st.lag_ms < 0 ? NULL : num(b[2], 32, st.lag_ms),
            st.rtt_ms < 0 ? NULL : num(b[3], 32, st.rtt_ms), u64(b[4], 32, st.queries),
            u64(b[5], 32, st.errors), num(b[6], 32, st.latency_avg_ms),
            err[0] ? err : NULL, st.fenced ? "yes" : "no", st.patroni};
        row(&r, v);
    }
    finish(&r, "SHOW");
}

static void show_pools(sy_client *c)
{
    static const char *const cols[] = {"node", "mode", "total", "idle", "busy",
                                       "connecting", "waiting", "exhausted", "max"};
    result r;
    begin(&r, c, cols, 9);
    sy_lua *lua = c->proxy->engine->lua;
    for (int i = 0; i < lua->topo.n; i++) {
        sy_node *n = lua->topo.nodes[i];
        for (int k = 0; k < SY_NODE_NPOOLS; k++) {
            sy_pool *p = sy__node_pool(n, k);
            if (!p->started && p->n_total == 0)
                continue;
            char b[7][24];
            const char *v[9] = {n->full_name, p->relay ? "relay" : "query",
                                u64(b[0], 24, (uint64_t)p->n_total),
                                u64(b[1], 24, (uint64_t)p->n_idle),
                                u64(b[2], 24, (uint64_t)p->n_busy),
                                u64(b[3], 24, (uint64_t)p->n_connecting),
                                u64(b[4], 24, (uint64_t)p->n_waiting),
                                u64(b[5], 24, n->c.exhausted),
                                u64(b[6], 24, (uint64_t)p->set.max)};
            row(&r, v);
        }
    }
    finish(&r, "SHOW");
}

static const char *state_name(const sy_client *c)
{
    switch (c->state) {
    case SY_CLIENT_STARTUP: return "startup";
    case SY_CLIENT_TLS: return "tls";
    case SY_CLIENT_AUTH: return "auth";
    case SY_CLIENT_LOGIN_WAIT: return "login";
    case SY_CLIENT_IDLE: return "idle";
    case SY_CLIENT_WAITING: return "waiting";
    case SY_CLIENT_LINKED: return "active";
    default: return "closing";
    }
}

static void show_clients(sy_client *c)
{
    static const char *const cols[] = {"pid", "user", "database", "address", "state",
                                       "tls", "backend", "sticky", "transactions",
                                       "queries", "connected_s"};
    result r;
    begin(&r, c, cols, 11);
    sy_proxy *px = c->proxy;
    double now = ev_now(px->loop);
    for (sy_list *l = px->clients.next; l != &px->clients; l = l->next) {
        sy_client *x = sy_container_of(l, sy_client, link);
        char b[5][24];
        const char *v[11] = {
            u64(b[0], 24, x->pid), x->user, x->database, x->peer, state_name(x),
            x->tls ? sy__tls_version(x->tls) : "no",
            x->linked ? x->linked->conn->pool->node->full_name : NULL,
            x->sticky ? "yes" : "no", u64(b[1], 24, x->transactions),
            u64(b[2], 24, x->queries), num(b[3], 24, now - x->connected_at)};
        row(&r, v);
    }
    finish(&r, "SHOW");
}

static void show_stats(sy_client *c)
{
    static const char *const cols[] = {"name", "value"};
    result r;
    begin(&r, c, cols, 2);
    sy_proxy *px = c->proxy;
    sy_engine *e = px->engine;
    int pinned = 0;
    for (sy_list *l = px->clients.next; l != &px->clients; l = l->next)
        pinned += sy_container_of(l, sy_client, link)->sticky;
    struct { const char *name; double v; } s[] = {
        {"clients", px->nclients},
        {"clients_pinned", pinned},
        {"clients_total", (double)px->stats.clients_total},
        {"clients_refused", (double)px->stats.clients_refused},
        {"logins_failed", (double)px->stats.logins_failed},
        {"transactions", (double)px->stats.transactions},
        {"queries", (double)px->stats.queries},
        {"batches_routed", (double)px->stats.batches},
        {"pins", (double)px->stats.pins},
        {"cancels", (double)px->stats.cancels},
        {"local_replies", (double)px->stats.local_replies},
        {"statements", px->nstmts},
        {"statement_prepares", (double)px->stats.prepares},
        {"statement_cache_hits", (double)px->stats.prepare_hits},
        {"statement_evictions", (double)px->stats.evictions},
        {"wait_timeouts", (double)px->stats.wait_timeouts},
        {"policy_rejected", (double)e->stats.rejected},
        {"policy_errors", (double)e->stats.policy_errors},
        {"reloads", (double)e->stats.reloads},
        {"reload_failures", (double)e->stats.reload_failures},
        {"route_avg_us", e->stats.route_avg_us},
    };
    for (size_t i = 0; i < SY_ARRAY_LEN(s); i++) {
        char b[32];
        const char *v[2] = {s[i].name, num(b, sizeof b, s[i].v)};
        row(&r, v);
    }
    finish(&r, "SHOW");
}

static void show_config(sy_client *c)
{
    static const char *const cols[] = {"key", "value"};
    result r;
    begin(&r, c, cols, 2);
    sy_proxy *px = c->proxy;
    const sy_proxy_settings *s = &px->set;
    char b[12][32];
    const char *kv[][2] = {
        {"config", px->engine->config_path},
        {"policy", px->engine->lua->policy_path},
        {"pool_mode", s->session_mode ? "session" : "transaction"},
        {"max_clients", u64(b[0], 32, (uint64_t)s->max_clients)},
        {"client_buffer", u64(b[1], 32, s->client_buffer)},
        {"max_message", u64(b[2], 32, s->max_message)},
        {"tls", s->tls_mode == SY_TLS_MODE_REQUIRE ? "require"
                : s->tls_mode == SY_TLS_MODE_PREFER ? "prefer" : "disable"},
        {"auth", s->auth_type == SY_AUTH_MD5 ? "md5"
                 : s->auth_type == SY_AUTH_SCRAM ? "scram-sha-256" : "trust"},
        {"timeouts.client_idle", num(b[3], 32, s->client_idle)},
        {"timeouts.wait_backend", num(b[4], 32, s->wait_backend)},
        {"timeouts.connect", num(b[5], 32, s->connect)},
        {"timeouts.idle_in_transaction", num(b[6], 32, s->idle_in_transaction)},
        {"timeouts.client_login", num(b[7], 32, s->client_login)},
        {"prepared_statements.max_per_backend", u64(b[8], 32, (uint64_t)s->max_prepared)},
        {"shutdown.drain_timeout", num(b[9], 32, s->drain_timeout)},
        {"admin.database", s->admin_database},
    };
    for (size_t i = 0; i < SY_ARRAY_LEN(kv); i++)
        row(&r, kv[i]);
    finish(&r, "SHOW");
}

static void show_help(sy_client *c)
{
    static const char *const cols[] = {"command", "does"};
    static const char *const rows[][2] = {
        {"SHOW NODES", "nodes: role, health, lag, counters"},
        {"SHOW POOLS", "backend connections per node"},
        {"SHOW CLIENTS", "client connections"},
        {"SHOW STATS", "proxy and routing counters"},
        {"SHOW CONFIG", "the proxy settings in force"},
        {"RELOAD", "reload config and policies (like SIGHUP)"},
        {"DRAIN cluster.node", "route nothing new to the node"},
        {"ENABLE cluster.node", "route to the node again"},
    };
    result r;
    begin(&r, c, cols, 2);
    for (size_t i = 0; i < SY_ARRAY_LEN(rows); i++)
        row(&r, rows[i]);
    finish(&r, "SHOW");
}

static void set_drained(sy_client *c, const char *name, int drained)
{
    if (sy_node_set_enabled(c->proxy->engine, name, !drained) < 0) {
        sy_pg_notice_fields f = {.severity = "ERROR", .sqlstate = "42704",
                                 .message = "no such node (see SHOW NODES)"};
        sy__pg_build_error(&c->out, &f);
        return;
    }
    sy__pg_build_command_complete(&c->out, drained ? "DRAIN" : "ENABLE");
}

/* Words of the command, lower-cased except the argument. */
static int split(const char *sql, size_t len, char words[3][128])
{
    int n = 0;
    size_t i = 0;
    memset(words, 0, 3 * 128);
    while (i < len && n < 3) {
        while (i < len && (isspace((unsigned char)sql[i]) || sql[i] == ';'))
            i++;
        if (i >= len)
            break;
        size_t k = 0;
        while (i < len && !isspace((unsigned char)sql[i]) && sql[i] != ';') {
            if (k + 1 < 128)
                words[n][k++] = n == 0 ? (char)tolower((unsigned char)sql[i]) : sql[i];
            i++;
        }
        n++;
    }
    while (i < len && (isspace((unsigned char)sql[i]) || sql[i] == ';'))
        i++;
    return i < len ? -1 : n;
}

void sy__admin_query(sy_client *c, const char *sql, size_t len)
{
    char w[3][128];
    int n = split(sql, len, w);
    sy_engine *e = c->proxy->engine;
    if (n == 2 && strcmp(w[0], "show") == 0 && strcasecmp(w[1], "nodes") == 0)
        show_nodes(c);
    else if (n == 2 && strcmp(w[0], "show") == 0 && strcasecmp(w[1], "pools") == 0)
        show_pools(c);
    else if (n == 2 && strcmp(w[0], "show") == 0 && strcasecmp(w[1], "clients") == 0)
        show_clients(c);
    else if (n == 2 && strcmp(w[0], "show") == 0 && strcasecmp(w[1], "stats") == 0)
        show_stats(c);
    else if (n == 2 && strcmp(w[0], "show") == 0 && strcasecmp(w[1], "config") == 0)
        show_config(c);
    else if (n == 2 && strcmp(w[0], "show") == 0 && strcasecmp(w[1], "help") == 0)
        show_help(c);
    else if (n == 1 && strcmp(w[0], "reload") == 0) {
        if (sy_engine_reload(e) == 0) {
            sy__proxy_reloaded(c->proxy);
            sy__pg_build_command_complete(&c->out, "RELOAD");
        } else {
            sy_pg_notice_fields f = {.severity = "ERROR", .sqlstate = "F0000",
                                     .message = "reload failed; the old config keeps serving",
                                     .detail = sy_engine_last_error(e)};
            sy__pg_build_error(&c->out, &f);
        }
    } else if (n == 2 && (strcmp(w[0], "drain") == 0 || strcmp(w[0], "enable") == 0)) {
        char name[128];
        sy__fmt(name, sizeof name, "%s", w[1]);
        set_drained(c, name, strcmp(w[0], "drain") == 0);
    } else if (n == 0) {
        sy__pg_build_empty(&c->out, SY_PG_EMPTY_QUERY);
    } else {
        sy_pg_notice_fields f = {.severity = "ERROR", .sqlstate = "42601",
                                 .message = "unknown admin command",
                                 .hint = "SHOW HELP lists the commands"};
        sy__pg_build_error(&c->out, &f);
    }
    sy__pg_build_ready(&c->out, 'I');
}
