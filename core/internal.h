/*
 * internal.h - the engine's private data model, shared by the core modules.
 *
 * Object graph (arrows are ownership):
 *   sy_engine -> sy_lua (current policy state) -> sy_topology -> sy_node*
 *   sy_node (refcounted: old and new topologies share unchanged nodes)
 *       -> sy_pool -> sy_conn*
 *   sy_request (one per query, from the engine's free list) borrows a node
 *       reference and a connection while it runs.
 * Every watcher is embedded in the object it serves and is stopped before
 * that object is freed.  Nothing here is global: two engines never share.
 */
#ifndef SY_INTERNAL_H
#define SY_INTERNAL_H

#include <ev.h>
#include <string.h>
#include <libpq-fe.h>
#include <lua.h>

#include "switchyard.h"
#include "util.h"

typedef struct sy_node sy_node;
typedef struct sy_pool sy_pool;
typedef struct sy_conn sy_conn;
typedef struct sy_request sy_request;
typedef struct sy_lua sy_lua;
typedef struct sy_topology sy_topology;

/* A node's role.  UNKNOWN: configured "auto" and not polled yet. */
enum { SY_ROLE_PRIMARY = 0, SY_ROLE_REPLICA = 1, SY_ROLE_UNKNOWN = 2 };

/* ------------------------------------------------------------ settings */

/* Pool settings of one node, read from the normalised config. */
typedef struct sy_pool_settings {
    int min, max;
    double idle_timeout, max_lifetime, acquire_timeout, connect_timeout;
    double reconnect_min, reconnect_max;
} sy_pool_settings;

/* Engine-wide settings read from the normalised config; owned by sy_lua. */
typedef struct sy_settings {
    double query_timeout;
    int retry_reads;
    int watch;
    int log_level;
    uint64_t budget_instructions;
    double budget_ms;
    double health_interval, health_timeout;
    int health_fall, health_rise;
    char **write_functions; /* NULL-terminated, owned */
} sy_settings;

/* ------------------------------------------------------------ stats */

#define SY_LAT_BUCKETS 64

/* Counters of one node.  Latency is a moving average plus a log-scale
 * histogram (buckets of 2^(i/4) * 50 us) for percentiles. */
typedef struct sy_counters {
    uint64_t queries, errors, retries, exhausted;
    int inflight;
    double latency_ewma_ms;
    double error_rate;
    uint64_t lat_hist[SY_LAT_BUCKETS];
    uint64_t lat_count;
} sy_counters;

void sy__counters_record(sy_counters *c, double seconds, int failed);
double sy__counters_percentile(const sy_counters *c, double p);

/* ------------------------------------------------------------ pool / conn */

/* A backend connection's life; only sy__conn_set_state() changes it and it
 * asserts that the step is legal:
 *   CONNECTING -> IDLE | HELD | CLOSED
 *   IDLE       -> HELD | CLOSED          (in the pool's idle list)
 *   HELD       -> ACTIVE | IDLE | CLOSED (checked out: a waiter or a session)
 *   ACTIVE     -> HELD | CLOSED          (a query is running on it) */
typedef enum sy_conn_state {
    SY_CONN_CONNECTING = 0,
    SY_CONN_IDLE,
    SY_CONN_HELD,
    SY_CONN_ACTIVE,
    SY_CONN_CLOSED
} sy_conn_state;

/* A waiter for a connection; embedded in whoever waits (a request).
 * ready() fires exactly once: with a connection, or with conn NULL and a
 * negative SY_E* code (timeout, node down, pool closing). */
typedef struct sy_waiter {
    sy_list link;
    ev_timer timeout;
    void (*ready)(struct sy_waiter *w, sy_conn *conn, int err);
    sy_pool *pool;
    int queued;
} sy_waiter;

struct sy_conn {
    sy_pool *pool;
    PGconn *pg;
    sy_conn_state state;
    ev_io io;
    ev_timer timer;           /* connect timeout, then query timeout */
    sy_list link_all;         /* pool->all */
    sy_list link_idle;        /* pool->idle while idle */
    double created_at, idle_since;
    double idle_since_mono;   /* real clock, for the liveness check */
    int io_events;            /* what io is currently watching */
    int tainted;              /* session state leaked: close, never reuse */
    int connect_extended;     /* the connect deadline was extended once */
    sy_request *request;      /* the query running on it, if any */
    /* Relay pools only: libpq made the connection, the proxy speaks the
     * protocol on it (owns relay, which owns pg).  proxy_state is the
     * proxy's per-backend memory, freed through engine->relay_hooks. */
    struct sy_relay_conn *relay;
    void *proxy_state;
};

struct sy_pool {
    sy_node *node;
    sy_pool_settings set;
    sy_list all, idle, waiters;
    int n_total, n_idle, n_busy, n_connecting, n_waiting;
    ev_timer maintenance;     /* idle timeout, lifetime, refill to min */
    ev_timer reconnect;       /* backoff after failed connects */
    double backoff;           /* current backoff, seconds; 0 when healthy */
    uint64_t rand_state;
    int started, closing;
    /* A relay pool: its connections are handed to the proxy's raw relay
     * (conn->relay) and never see libpq's query functions. */
    int relay;
    /* Opens waiting for the node's name lookup; each is also counted in
     * n_total and n_connecting, so fill() and the probes see a connect in
     * progress and never start another while the name resolves. */
    int n_resolving;
    char last_error[256];
};

void sy__pool_init(sy_pool *pool, sy_node *node, const sy_pool_settings *s,
                   int relay);
void sy__pool_start(sy_pool *pool);
/* Starts waiting for a connection; w->ready fires once (maybe right away). */
void sy__pool_acquire(sy_pool *pool, sy_waiter *w, double timeout);
/* Removes a waiter that has not been served; ready() will not fire. */
void sy__pool_cancel(sy_pool *pool, sy_waiter *w);
/* Returns a connection after a query.  broken or tainted: it is closed. */
void sy__pool_release(sy_pool *pool, sy_conn *conn, int broken);
/* Closes every connection and fails every waiter with SY_ESTOPPED. */
void sy__pool_close(sy_pool *pool);
/* The node is up again: fills the pool at once (no backoff left). */
void sy__pool_node_up(sy_pool *pool);
/* The node went down: its waiters fail (SY_ECONN), nothing reconnects. */
void sy__pool_node_down(sy_pool *pool);
void sy__pool_apply_settings(sy_pool *pool, const sy_pool_settings *s);
/* Closes busy connections too (engine free, after failing requests). */
void sy__pool_destroy(sy_pool *pool);
/* Called by conn.c: a connect finished, failed, or an idle conn stirred. */
void sy__pool_conn_connected(sy_pool *pool, sy_conn *conn);
void sy__pool_conn_failed(sy_pool *pool, sy_conn *conn, const char *why);
void sy__pool_conn_idle_event(sy_pool *pool, sy_conn *conn);

/* Opens connections that were waiting for the node's name lookup (or fails
 * them with err, NULL on success); called once per sy__dns_target() that
 * returned 1 for SY_DNS_FOR_POOL. */
void sy__pool_dns_done(sy_pool *pool, const char *err);

/* conn.c */
/* Where to connect when dns.c resolved the conninfo's host names: each
 * replaces the conninfo's keyword of the same name; NULL keeps it. */
typedef struct sy_conn_target {
    const char *host, *port, *hostaddr;
} sy_conn_target;

/* PQconnectStart on a node's conninfo, naming the connection
 * (application_name, or NULL for the conninfo's own or "switchyard").
 * target: resolved addresses (borrowed, copied by libpq) or NULL.
 * gssencmode: overrides the conninfo's (relay connections need "disable"),
 * or NULL. */
PGconn *sy__connect_start(const char *conninfo, const char *application_name,
                          const sy_conn_target *target, const char *gssencmode);
/* A pool connection to target (see sy__dns_target; borrowed, may be NULL). */
sy_conn *sy__conn_start(sy_pool *pool, const sy_conn_target *target,
                        char *err, size_t errlen);
void sy__conn_close(sy_conn *conn);
void sy__conn_set_state(sy_conn *conn, sy_conn_state to);
/* Sends the request's query; completion goes to sy__request_conn_done(). */
int sy__conn_send(sy_conn *conn, sy_request *req);
void sy__conn_set_watch(sy_conn *conn, int events);
void sy__conn_arm_query_timer(sy_conn *conn, double seconds);

#include "ha.h" /* health, roles, failover, Patroni, parked work */

/* ------------------------------------------------------------ dns */

/* Who waits for a node's name lookup (bits of sy_dns.wake). */
enum { SY_DNS_FOR_POOL = 1, SY_DNS_FOR_HEALTH = 2, SY_DNS_FOR_RELAY_POOL = 4 };

/* A lookup in flight: shared with glibc's resolver threads, refcounted
 * under its own mutex (dns.c); the node holds one reference. */
typedef struct sy_dns_lookup sy_dns_lookup;

/* The resolver state of one node, embedded in it (dns.c).  libpq resolves
 * a host name with a blocking getaddrinfo(); dns.c resolves the names of
 * the conninfo's host list off the loop and hands libpq addresses.
 * Everything here is touched by the loop thread only. */
typedef struct sy_dns {
    int needed;              /* some host entry is a name to resolve here */
    int nhosts;
    char **hosts;            /* the host list's entries, owned */
    char **ports;            /* the port list's entries when it has one per
                                host (owned), else NULL: port is kept */
    char *host, *port, *hostaddr; /* the resolved target's lists, owned */
    sy_conn_target target;   /* points at the three above */
    int cached;              /* target holds a lookup's result */
    double resolved_at;      /* ev_now of that result, for the TTL */
    sy_dns_lookup *lookup;   /* running lookup (a reference) or NULL */
    int wake;                /* SY_DNS_FOR_* bits to call back when done */
    ev_async async;          /* resolver threads wake the loop with it */
    ev_timer timeout;        /* gives up on a resolver that hangs */
} sy_dns;

/* The address keywords of a parsed conninfo (borrowed from opts; NULL when
 * absent), with libpq's environment defaults (PGHOST, PGHOSTADDR, PGPORT)
 * for those it leaves out. */
typedef struct sy_conninfo_address {
    const char *host, *hostaddr, *port, *service;
} sy_conninfo_address;
void sy__conninfo_address(const PQconninfoOption *opts, sy_conninfo_address *out);
/* Reads the node's conninfo (no network).  0, or SY_ENOMEM. */
int sy__dns_init(sy_node *n);
/* Abandons a running lookup safely and frees the state. */
void sy__dns_cleanup(sy_node *n);
/* Where a new connection of node n goes.
 *   0: ready; *target is NULL (connect with the conninfo as it is) or the
 *      node's cached result (owned by the node, valid until the next call);
 *   1: a lookup runs; who's callback (sy__pool_dns_done or
 *      sy__health_dns_done) fires once, from the loop, with the outcome;
 *  <0: the lookup could not start; err says why. */
int sy__dns_target(sy_node *n, int who, const sy_conn_target **target,
                   char *err, size_t errlen);
/* who no longer waits: its callback will not fire. */
void sy__dns_forget(sy_node *n, int who);

/* ------------------------------------------------------------ nodes */

struct sy_node {
    sy_engine *engine;
    int refcount;
    int id;                  /* 1-based index in the current topology */
    char *full_name;         /* "cluster.node" */
    char *name;
    char *cluster;
    char *conninfo;
    int role;                /* effective: what routing goes by (roles.c) */
    int server_role;         /* pg_is_in_recovery(), else configured_role */
    int configured_role;     /* from the config; UNKNOWN for "auto" */
    int follow_patroni;      /* its cluster's failover.mode = "patroni" */
    int patroni_role;        /* SY_PATRONI_*: Patroni's word on it */
    int weight;
    int healthy;
    int split_brain;         /* one of several healthy primaries (roles.c) */
    /* Managed failover (failover.c); the cluster's settings on each node. */
    int failover_managed;    /* its cluster's failover.mode = "managed" */
    double write_wait;       /* s writes wait for a new primary */
    double promote_timeout;  /* s pg_promote() may take */
    int priority;            /* 0: never promoted */
    int fenced;              /* an old primary: never routed to until enabled */
    int promoting;           /* pg_promote() runs on it */
    double promote_started;  /* ev_now when it began */
    int failover_tried;      /* this primary's outage already tried one */
    int forced_down;         /* dry run: told to treat as down */
    double down_since;
    double lag_bytes, lag_ms; /* < 0: unknown */
    sy_counters c;
    sy_pool pool;             /* libpq query connections (embedded API) */
    sy_pool relay_pool;       /* raw relay connections (the proxy) */
    sy_health health;
    sy_dns dns;
    sy_list link_retired;
};

sy_node *sy__node_new(sy_engine *e, const char *cluster, const char *name,
                      const char *conninfo, int role, int weight,
                      const sy_pool_settings *ps);
void sy__node_ref(sy_node *n);
void sy__node_unref(sy_node *n);
void sy__node_set_health(sy_node *n, int healthy, const char *why);
/* The state whose topology n is in now (borrowed), or NULL: a node a
 * reload dropped (still draining) changes nothing anyone routes by. */
sy_lua *sy__node_current_lua(const sy_node *n);
/* The node named full_name ("main.replica1") in t (borrowed), or NULL. */
sy_node *sy__topology_find(const sy_topology *t, const char *full_name);

struct sy_topology {
    sy_node **nodes;  /* owned references */
    int n;
};

/* ------------------------------------------------------------ lua */

/* One loaded configuration and policy: a Lua state, the topology built
 * from it and the settings C read out of it.  Replaced whole on reload. */
struct sy_lua {
    sy_engine *engine;       /* NULL for a dry run (no pools, no network) */
    lua_State *L;
    int ref_state, ref_on_event, ref_q, ref_traceback, ref_facade;
    int ref_route_entry;     /* runtime's door to route(q) (lua_route.c) */
    int ref_route_entry_plain; /* the same for a statement without flags,
                                * hints or schemas that is not a retry */
    int ref_session_default; /* q.session when the query has no session */
    int ref_kind[6];         /* interned kind names, by sy_kind */
    int ref_empty;           /* a shared empty table for absent fields */
    int ref_apply_roles;     /* runtime.apply_roles */
    int ref_choose_promotion; /* runtime.choose_promotion */
    int ref_patroni_members; /* runtime.patroni_members */
    sy_patroni *patroni;     /* watchers of Patroni clusters, owned */
    unsigned char *follow_patroni; /* per node: its cluster follows Patroni */
    int ref_node_tables;     /* array: node id -> node table */
    int ref_loaded_files;    /* array of file paths the state loaded */
    unsigned generation;     /* distinguishes states for cached refs */
    sy_topology topo;
    sy_settings set;
    char *config_path;
    char *config_dir;
    char *policy_path;
    /* runaway protection, reset before each call into the policy */
    uint64_t budget_hits;
    uint64_t budget_factor;
    double budget_started;
    unsigned rr;             /* round robin for {cluster=, role=} targets */
    int in_hook_call;        /* inside on_event: do not recurse */
    const struct sy_route_input *current_input; /* during a decision only */
    int q_fields_made;        /* q.sql or q.params was made this decision */
};

/* Loads config and policy into a fresh state.  previous: the serving state
 * (or NULL) whose unchanged nodes (same name and conninfo) are kept and
 * whose sy.shared is copied in before the policy loads (scalars and nested
 * tables).  On error returns NULL, writes the reason (file:line or key
 * path) to err and, if code is not NULL, SY_ECONFIG (the config), SY_EPOLICY
 * (the policy file or its selftest) or SY_ENOMEM to *code; previous is
 * untouched either way. */
sy_lua *sy__lua_load(sy_engine *e, const char *config_path, const char *home,
                     sy_lua *previous, char *err, size_t errlen, int *code);
void sy__lua_free(sy_lua *lua);

/* The routing decision for one query. */
typedef struct sy_route {
    sy_node *node;           /* chosen node (borrowed from the topology) */
    int rejected;            /* the policy refused the query */
    double wait;             /* > 0: park it for up to this many seconds */
    int failed;              /* the policy raised or ran over budget */
    char sqlstate[6];
    char message[512];
} sy_route;

/* Inputs to a routing decision besides the statement itself. */
typedef struct sy_route_input sy_route_input;
struct sy_route_input {
    const char *sql;
    size_t sql_len;
    const sy_statement *stmt;
    int nparams;
    const char *const *param_values;
    const int *param_lengths; /* or NULL: values are C strings */
    sy_session *session;     /* may be NULL */
    int in_tx;
    sy_node *failed_node;    /* set when retrying a read */
    sy_buf *trace;           /* dry run: filled with a short trace; or NULL */
};

void sy__lua_route(sy_lua *lua, const sy_route_input *in, sy_route *out);
/* sy__lua_route on the engine's state, timing a sample of the decisions
 * into stats.route_avg_us (query.c). */
void sy__route_timed(sy_engine *e, const sy_route_input *in, sy_route *out);
/* Drops the cached q.session table of a session being freed. */
void sy__lua_forget_session(sy_lua *lua, sy_session *s);
/* Calls the policy's on_event hook, if any; errors are logged. */
void sy__lua_on_event(sy_lua *lua, const sy_event *ev);
/* Calls the function below nargs arguments with the traceback handler and
 * the budget (times factor).  -1 and the message in err on error. */
int sy__lua_pcall(sy_lua *lua, int nargs, int nres, int factor, char *err,
                  size_t errlen);
/* The same, for a caller that pushed the handler first (its index, from
 * sy__lua_push_handler) and saves moving it: on success the results sit
 * above the handler, on error the stack is cut back to it.  The handler
 * stays for the caller to pop either way. */
int sy__lua_push_handler(sy_lua *lua);
int sy__lua_pcall_handled(sy_lua *lua, int handler, int nargs, int nres, int factor,
                          char *err, size_t errlen);
sy_lua *sy__lua_self(lua_State *L);
/* Field k of the table at stack index t: a number (dflt when absent or not
 * a number), a string (NULL when absent; kept alive by the table) or a
 * boolean (dflt when nil).  The stack is left as it was. */
double sy__lua_field_number(lua_State *L, int t, const char *k, double dflt);
const char *sy__lua_field_string(lua_State *L, int t, const char *k);
int sy__lua_field_bool(lua_State *L, int t, const char *k, int dflt);
/* Gives every node table the metatable that reads live figures, and its
 * plain `healthy` field. */
void sy__lua_install_node_metatable(sy_lua *lua);
/* node.healthy is read by every decision, so it is a plain field of the
 * node table instead of a metatable figure: whoever changes n->healthy,
 * n->forced_down or n->fenced calls this (lua: the state whose node table
 * to write; n borrowed). */
void sy__lua_node_routable(sy_lua *lua, const sy_node *n);
/* The same on the engine's running state, if n is in its topology. */
void sy__node_routable_changed(const sy_node *n);
/* Gives q the metatable that makes q.sql and q.params on first read. */
void sy__lua_install_q_metatable(sy_lua *lua);

/* ------------------------------------------------------------ requests */

struct sy_request {
    sy_engine *engine;
    sy_session *session;
    sy_list link;             /* engine free list / deferred list */
    sy_query_cb cb;
    void *user_data;
    /* one block holding copies of the SQL and parameters, reused */
    char *arena;
    size_t arena_cap;
    const char *sql;
    size_t sql_len;
    int nparams;
    const char **values;
    int *lengths, *formats;
    Oid *types;
    int result_format;
    double timeout;
    sy_statement stmt;
    sy_node *node;            /* referenced while the request uses it */
    sy_conn *conn;
    sy_waiter waiter;
    PGresult **results;
    int nresults, results_cap;
    int status;
    char sqlstate[6];
    char *message, *detail;   /* owned copies for engine-made errors */
    char **notices;
    int nnotices, notices_cap;
    int retried;
    int rerouted;             /* routed again after its node went down */
    int timed_out;
    double started;           /* submitted */
    double sent_at;           /* handed to its connection */
    sy_parked park;           /* waiting for a primary (park.c) */
};

void sy__request_conn_done(sy_request *req, int conn_broken);
void sy__request_init_engine(sy_engine *e);
void sy__request_free_all(sy_engine *e);
void sy__request_flush_deferred(sy_engine *e);

/* ------------------------------------------------------------ sessions */

struct sy_session {
    sy_engine *engine;
    char *user, *database, *application_name;
    char **var_names, **var_values;
    int nvars, vars_cap;
    sy_conn *pinned;          /* held between queries */
    sy_node *pinned_node;     /* referenced while pinned */
    int sticky;               /* pinned for the rest of the session */
    int in_tx;                /* a transaction is open on pinned */
    sy_request *inflight;
    int freeing;              /* freed by the user while a query ran */
    unsigned lua_generation;  /* state whose cached q.session is current */
    int lua_ref;              /* registry ref of q.session in the state of */
    unsigned lua_ref_generation; /* this generation (0: none) */
    sy_list link;             /* engine->sessions */
    /* Read-your-writes: the session's last write (sy__session_wrote). */
    int write_open;           /* a write or a transaction since the last mark */
    double write_at;          /* monotonic time it was done */
    char *write_node;         /* owned full name of the primary it ran on:
                               * a name, so a reload can drop the node */
    double write_lsn;         /* bound found for it; < 0 not yet */
    double write_lsn_shown;   /* what q.session.write_lsn holds (lua_route.c) */
};

/* Notes a statement that ran on node for s: a write, or anything inside
 * a transaction, opens a write; the end of the transaction (in_tx 0)
 * marks it done (sy__session_wrote).  Shared by the embedded path and the
 * proxy's relay. */
void sy__session_statement(sy_session *s, sy_node *node, int may_write, int in_tx);
/* The WAL position a replica must have replayed to show s its last write:
 * -2 when it never wrote, -1 while no bound is known yet (its primary has
 * not been polled since: reads must go to the primary), else a position
 * no lower than the write's commit (a poll of that node sent after it). */
double sy__session_write_lsn(sy_session *s);

/* Releases or keeps the connection after a query on the session. */
void sy__session_after_query(sy_session *s, sy_request *req, sy_conn *conn,
                             int broken);
/* Closes the connection a session holds, if any (engine stopping). */
void sy__session_release(sy_session *s);
/* Releases a session's connection and cuts it from its engine. */
void sy__session_detach(sy_session *s);
/* Frees the identity strings and variables a session owns. */
void sy__session_free_identity(sy_session *s);
/* Frees a session whose owner already called sy_session_free(). */
void sy__session_destroy(sy_session *s);

/* ------------------------------------------------------------ classify_cache */

/* Copies a verdict's used part: the struct is 400 bytes, mostly span
 * arrays that hold nothing, and verdicts are copied several times a
 * statement. */
static inline void sy__statement_copy(sy_statement *dst, const sy_statement *src)
{
    dst->kind = src->kind;
    dst->flags = src->flags;
    dst->nhints = src->nhints;
    dst->nschemas = src->nschemas;
    dst->first_word = src->first_word;
    if (src->nhints > 0) {
        memcpy(dst->hint_keys, src->hint_keys, (size_t)src->nhints * sizeof(sy_span));
        memcpy(dst->hint_values, src->hint_values, (size_t)src->nhints * sizeof(sy_span));
    }
    if (src->nschemas > 0)
        memcpy(dst->schemas, src->schemas, (size_t)src->nschemas * sizeof(sy_span));
}

#define SY_CLASSIFY_CACHE_SLOTS 256
#define SY_CLASSIFY_CACHE_MAX_TEXT 4096 /* longer texts are read every time */

struct sy_classify_slot {
    unsigned generation; /* the sy_lua generation it was made under; 0: empty */
    uint32_t hash;
    uint32_t len;
    char *sql;           /* owned copy of the text, len bytes */
    sy_statement verdict;
};

#define SY_CLASSIFY_SHAPE_SLOTS 64

/* Verdicts by statement text, one per engine (classify_cache.c); shapes
 * hold statements whose literals were masked (sql is the shape). */
typedef struct sy_classify_cache {
    struct sy_classify_slot slots[SY_CLASSIFY_CACHE_SLOTS];
    struct sy_classify_slot shapes[SY_CLASSIFY_SHAPE_SLOTS];
    unsigned char byte_class[256]; /* for the shape scan */
} sy_classify_cache;

/* An empty cache (NULL when out of memory: callers then classify every
 * time); the caller owns it and frees it with sy__classify_cache_free(). */
sy_classify_cache *sy__classify_cache_new(void);
void sy__classify_cache_free(sy_classify_cache *cc);
/* sy_classify() under e's current write_functions, answered from e's
 * cache when the same text was read under the same configuration.  The
 * verdict's spans are offsets, valid for sql. */
void sy__classify(sy_engine *e, const char *sql, size_t len, sy_statement *out);

/* ------------------------------------------------------------ engine */

/* The engine's life, changed only by sy__engine_set_state(), which asserts
 * the step:  CREATED -> RUNNING -> STOPPING -> STOPPED, and CREATED ->
 * STOPPING (stopped before it was started). */
typedef enum sy_engine_state {
    SY_ENGINE_CREATED = 0,
    SY_ENGINE_RUNNING,
    SY_ENGINE_STOPPING,
    SY_ENGINE_STOPPED
} sy_engine_state;

void sy__engine_set_state(sy_engine *e, sy_engine_state to);
/* Stopping or stopped: no new work is accepted. */
#define SY_ENGINE_CLOSING(e) ((e)->state >= SY_ENGINE_STOPPING)

struct sy_engine {
    struct ev_loop *loop;
    int own_loop;
    char *config_path;
    char *home;
    sy_event_cb on_event;
    void *event_user_data;
    sy_log_cb on_log;
    void *log_user_data;
    int log_level;
    int watch_files, handle_sighup;

    sy_lua *lua;
    unsigned next_generation;
    char last_error[1024];

    sy_engine_state state;     /* only sy__engine_set_state() changes it */
    void (*stop_done)(void *);
    void *stop_done_data;
    ev_timer stop_timer;       /* fires stop_done on the turn after */
    /* Closed connections and dropped nodes wait here until the next loop
     * turn, so nothing is freed inside its own callback. */
    sy_list graveyard_conns, graveyard_nodes;
    ev_timer reap_timer;

    sy_list free_requests;
    sy_list deferred;          /* requests whose callback fires next turn */
    int in_submit;             /* inside sy_query(): replies must wait */
    ev_timer deferred_timer;
    sy_list retired_nodes;     /* dropped by a reload, draining */
    sy_list sessions;
    sy_list parked;            /* sy_parked waiting for the roles (park.c) */
    int inflight;

    ev_signal sighup;
    ev_stat *stats_watch;
    int nstats_watch;
    ev_timer reload_debounce;

    sy_engine_stats stats;
    uint64_t rand_state;
    sy_classify_cache *classify_cache; /* owned; may be NULL */
    sy_http *http;             /* owned; made on first use (Patroni) */
    int in_callback;           /* inside a host callback: reloads wait */

    /* Set by the proxy before sy_engine_start(): start the nodes' relay
     * pools (not the query pools, which then open on first use). */
    int relay_mode;
    const struct sy_relay_hooks *relay_hooks;
    void *relay_hooks_data;
};

/* How the proxy hears about its backend connections (relay pools). */
typedef struct sy_relay_hooks {
    /* A HELD relay connection's socket is ready (revents: EV_READ/WRITE). */
    void (*io)(void *data, sy_conn *conn, int revents);
    /* The connection is closing: free conn->proxy_state. */
    void (*closed)(void *data, sy_conn *conn);
} sy_relay_hooks;

/* Both pools of a node, for code that treats them alike. */
#define SY_NODE_NPOOLS 2
static inline sy_pool *sy__node_pool(sy_node *n, int i)
{
    return i == 0 ? &n->pool : &n->relay_pool;
}

void sy__log(sy_engine *e, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sy__emit(sy_engine *e, sy_event_type type, const char *cluster,
              const char *node, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Finishes a request: its callback fires on the next loop turn. */
void sy__request_finish(sy_request *req);
/* Fails a request with an engine-made error and finishes it. */
void sy__request_fail(sy_request *req, int status, const char *sqlstate,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void sy__engine_check_stopped(sy_engine *e);
/* Frees a closed connection / a dropped node on the next loop turn. */
void sy__engine_bury_conn(sy_engine *e, sy_conn *conn);
void sy__engine_bury_node(sy_engine *e, sy_node *n);
/* Frees everything buried (engine free, or the reap timer). */
void sy__engine_reap(sy_engine *e);
/* Releases the memory of a node whose pool, health and DNS are stopped. */
void sy__node_free_memory(sy_node *n);
/* For deadlines on a socket.  libev runs the expired timers of a loop turn
 * before that turn's io callbacks, so after a stall (a host callback that
 * blocked, a paused VM) a deadline can fire while the answer it waits for
 * sits unread.  If w is active and its fd is ready now (poll, 0 ms: never
 * waits), runs w's callback at once, clearing its pending event, and
 * returns 1; else 0.  The caller owns w; the callback may close what owns
 * it, so the caller re-checks its state afterwards. */
int sy__io_run_if_ready(struct ev_loop *loop, ev_io *w);
/* reload.c */
int sy__reload_watch(sy_engine *e);
void sy__reload_unwatch(sy_engine *e);
int sy__reload_now(sy_engine *e);
/* Reloads on the next loop turn (from inside a host callback).  0. */
int sy__reload_soon(sy_engine *e);

/* ------------------------------------------------------------ relay_conn
 * (core/relay_conn.c; the FFI-friendly half is core/relay_conn.h) */

#include <stdio.h>
#include <sys/socket.h>

#include "relay_conn.h"

/* Where and what a CancelRequest sends: a copy, so a cancel can outlive the
 * relay connection it was taken from. */
typedef struct sy_relay_cancel_target {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t pid, key;
} sy_relay_cancel_target;

typedef enum sy_relay_state {
    SY_RELAY_CONNECTING = 0,  /* libpq drives the socket */
    SY_RELAY_OPEN,            /* handed over: only the raw transport */
    SY_RELAY_BROKEN           /* connect failed or the transport broke */
} sy_relay_state;

struct sy_relay_conn {
    PGconn *pg;               /* owned; kept until close even when open:
                                 libpq's TLS BIO reads through it */
    void *ssl;                /* SSL*, borrowed from pg, when TLS is on */
    sy_relay_state state;     /* changed only by relay_set_state() */
    FILE *trace;              /* PQtrace target while connecting */
    char *trace_buf;          /* its memory (fmemopen), owned */
    int have_key;
    sy_relay_cancel_target cancel;
    char cancel_where[128];
    char error[256];
};

/* A sender of one CancelRequest, embedded in whoever cancels (the object
 * that must stay out of the pool until the server closed).  done() fires
 * once, from the loop, with 0 (the server read the request and closed) or
 * SY_ECONN / SY_ETIMEOUT / SY_EIO. */
struct sy_relay_cancel {
    struct ev_loop *loop;
    ev_io io;
    ev_timer timer;
    int fd;
    int active;
    unsigned char packet[16];
    size_t sent;
    void (*done)(sy_relay_cancel *c, int err);
    void *done_data;          /* the owner's, untouched here */
};

/* PQconnectStart for a relay connection: like sy__connect_start() plus
 * gssencmode=disable (a GSS-encrypted stream cannot be handed over), with
 * the trace that captures the cancel key set before the first message.
 * target may be NULL.  NULL (reason in err) on failure; caller owns rc. */
sy_relay_conn *sy__relay_connect_start(const char *conninfo,
                                       const char *application_name,
                                       const sy_conn_target *target,
                                       char *err, size_t errlen);
/* The cancel target of a ready connection; 0, or -1 with no cancel key. */
int sy__relay_cancel_target(const sy_relay_conn *rc, sy_relay_cancel_target *t);
/* Starts sending a CancelRequest (c is caller memory, zeroed or reused after
 * done).  timeout > 0 bounds the whole exchange.  0: done() will fire once;
 * < 0 (SY_E*): it will not. */
int sy__relay_cancel_start(sy_relay_cancel *c, struct ev_loop *loop,
                           const sy_relay_cancel_target *t, double timeout,
                           void (*done)(sy_relay_cancel *c, int err));
/* Stops a running cancel without calling done() (owner going away). */
void sy__relay_cancel_abort(sy_relay_cancel *c);

/* ------------------------------------------------------------ end relay_conn */

#endif
