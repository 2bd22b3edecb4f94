/*
 * switchyard.h - the one public header of libswitchyard.
 *
 * switchyard routes PostgreSQL queries over clusters of primaries and
 * replicas.  The C core owns sockets, pools, timers and counters; a Lua
 * policy decides where each query goes.  This header is everything an
 * embedding program needs.
 *
 * Conventions (they hold for every function below):
 *  - Handles are opaque.  sy_x_new() pairs with sy_x_free(); sy_x_free(NULL)
 *    is a no-op.
 *  - Functions return 0 or a negative SY_E* code; sy_strerror() names it.
 *  - A call that takes a callback and returns 0 fires that callback exactly
 *    once; a call that returns an error never fires it.
 *  - Strings passed in are copied unless a comment says otherwise.  Pointers
 *    handed to callbacks are valid only during the callback.
 *  - Everything is single-threaded: call the engine from the thread that runs
 *    its libev loop.  Two engines in one process are independent.
 *
 * The header is also read by LuaJIT's FFI (the specs do): when SY_FFI is
 * defined it includes nothing and uses only plain C declarations.
 */
#ifndef SWITCHYARD_H
#define SWITCHYARD_H

#ifndef SY_FFI
#include <stddef.h>
#include <stdint.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Types owned by libev and libpq; only pointers cross this API. */
struct ev_loop;
typedef struct pg_result PGresult;

typedef struct sy_engine sy_engine;
typedef struct sy_session sy_session;

/* ---------------------------------------------------------------- errors */

enum {
    SY_OK = 0,
    SY_EINVAL = -1,     /* a NULL, empty or out-of-range argument */
    SY_ENOMEM = -2,     /* allocation failed */
    SY_ECONFIG = -3,    /* the configuration was refused (see last error) */
    SY_EPOLICY = -4,    /* the policy failed to load or to decide */
    SY_ENOTFOUND = -5,  /* no such node, cluster or file */
    SY_ESTATE = -6,     /* not allowed in the object's current state */
    SY_EBUSY = -7,      /* the session already has a query in flight */
    SY_ETIMEOUT = -8,   /* a deadline passed */
    SY_ECONN = -9,      /* a backend connection failed */
    SY_ESTOPPED = -10,  /* the engine is stopping or stopped */
    SY_ETOOBIG = -11,   /* an argument exceeds a documented limit */
    SY_EIO = -12        /* an operating-system call failed */
};

/* Returns a static, human-readable name for an SY_E* code (never NULL). */
const char *sy_strerror(int code);

/* Largest SQL text sy_query() accepts (bytes) and most parameters. */
#define SY_MAX_SQL_BYTES (64u * 1024u * 1024u)
#define SY_MAX_PARAMS 65535

/* ---------------------------------------------------------------- events */

typedef enum sy_event_type {
    SY_EVENT_NODE_UP = 1,
    SY_EVENT_NODE_DOWN = 2,
    SY_EVENT_RELOAD_OK = 3,
    SY_EVENT_RELOAD_FAILED = 4,
    SY_EVENT_POOL_EXHAUSTED = 5,
    SY_EVENT_POLICY_ERROR = 6,
    /* Health polling saw a node's role change (pg_is_in_recovery()). */
    SY_EVENT_ROLE_CHANGED = 7,
    /* Two or more healthy nodes of one cluster claim to be primary: writes
     * to that cluster are refused until it is resolved. */
    SY_EVENT_SPLIT_BRAIN = 8,
    SY_EVENT_SPLIT_BRAIN_RESOLVED = 9,
    /* Managed failover: the primary is down, a replica is being promoted
     * (and the old primary fenced); the promotion succeeded or failed. */
    SY_EVENT_FAILOVER_STARTED = 10,
    SY_EVENT_FAILOVER_DONE = 11,
    SY_EVENT_FAILOVER_FAILED = 12,
    /* A cluster following Patroni: its REST API gave no usable answer
     * (health.fall rounds in a row, every URL tried), or answers again
     * (health.rise rounds).  Roles stay as last heard meanwhile. */
    SY_EVENT_PATRONI_DOWN = 13,
    SY_EVENT_PATRONI_UP = 14
} sy_event_type;

/* One event.  Every pointer is borrowed for the duration of the callback;
 * node and cluster are NULL when the event is not about one. */
typedef struct sy_event {
    sy_event_type type;
    const char *name;    /* "node_up", "reload_failed", ... */
    const char *cluster;
    const char *node;
    const char *message; /* why, in words (file:line for policy errors) */
    double at;           /* ev_now() of the engine's loop, seconds */
} sy_event;

typedef void (*sy_event_cb)(void *user_data, const sy_event *event);

/* Log levels for sy_log_cb; the engine logs nothing below its level. */
enum { SY_LOG_DEBUG = 0, SY_LOG_INFO = 1, SY_LOG_WARN = 2, SY_LOG_ERROR = 3 };
typedef void (*sy_log_cb)(void *user_data, int level, const char *message);

/* ---------------------------------------------------------------- engine */

typedef struct sy_engine_options {
    /* Path of the Lua configuration file (required).  Copied. */
    const char *config_path;
    /* The loop to run on.  NULL: the engine creates and owns its own loop,
     * driven by sy_engine_run().  Non-NULL: borrowed; the host runs it and
     * must keep it alive until sy_engine_free() returns. */
    struct ev_loop *loop;
    /* Events (node up/down, reloads, ...).  May be NULL. */
    sy_event_cb on_event;
    void *event_user_data;
    /* Log sink.  NULL: messages at log_level and above go to stderr. */
    sy_log_cb on_log;
    void *log_user_data;
    int log_level;
    /* Directory holding lua/ and policies/.  NULL: the SWITCHYARD_HOME
     * environment variable, then the directory the library was built in. */
    const char *home;
    /* watch_files: reload when the config or any Lua file it loaded
     * changes.  handle_sighup: reload on SIGHUP; at most one engine per
     * process may (libev lets one loop own a signal); with several, the
     * host handles SIGHUP and calls sy_engine_reload() on each.  0: only
     * sy_engine_reload() reloads. */
    int watch_files;
    int handle_sighup;
} sy_engine_options;

/* Creates an engine from the configuration: loads and validates the config
 * and the policy, builds the topology.  Opens no connection yet.
 * On success *out is a new engine the caller owns (sy_engine_free).  On
 * failure *out is NULL and, if error_buf is non-NULL, the reason (with the
 * file, line or key path) is written there, truncated to error_len; the
 * code is SY_ECONFIG for the config, SY_EPOLICY for the policy. */
int sy_engine_new(sy_engine **out, const sy_engine_options *options,
                  char *error_buf, size_t error_len);

/* Starts pools (minimum connections are opened asynchronously), watchers
 * and timers on the engine's loop.  Queries may be submitted before the
 * warm-up completes; they wait for a connection.  SY_EBUSY when
 * handle_sighup is set but SIGHUP is already handled in the process (libev
 * lets one loop own a signal): the engine is started all the same, without
 * the SIGHUP watcher. */
int sy_engine_start(sy_engine *engine);

/* Runs the engine's own loop until sy_engine_stop() completes.
 * SY_ESTATE if the engine was created on a host loop. */
int sy_engine_run(sy_engine *engine);

/* Stops gracefully: no new queries are accepted (they fail with
 * SY_ESTOPPED), in-flight queries finish, then every connection closes
 * (also those sessions hold) and every watcher stops.  Idempotent.
 * done(user_data), if not NULL, fires exactly once on a later loop turn
 * when the engine is fully stopped, never inside this call; SY_EBUSY if an
 * earlier call's done has not fired yet (this one's never will). */
int sy_engine_stop(sy_engine *engine, void (*done)(void *user_data),
                   void *user_data);

/* Frees the engine.  If it is not stopped, in-flight queries are failed with
 * SY_ESTOPPED (their callbacks fire) and connections are closed at once.
 * Must not be called from inside one of the engine's callbacks. */
void sy_engine_free(sy_engine *engine);

/* Reloads config and policies now.  A fresh Lua state loads and validates
 * them (syntax, schema, hooks, the policy's selftest()); on success it
 * replaces the current one between queries and 0 is returned.  On failure
 * the old state keeps serving, SY_ECONFIG or SY_EPOLICY is returned and the
 * reason is in sy_engine_last_error().  Called from inside one of the
 * engine's callbacks (a reply, an event, a log line), where the state in
 * use cannot be replaced, the reload runs on the next loop turn instead and
 * 0 only means it is scheduled (its outcome is a reload_ok or
 * reload_failed event). */
int sy_engine_reload(sy_engine *engine);

/* The last configuration or reload error, "" if none.  Borrowed; valid until
 * the next reload or sy_engine_free(). */
const char *sy_engine_last_error(const sy_engine *engine);

/* The loop the engine runs on (its own or the host's).  Borrowed. */
struct ev_loop *sy_engine_loop(sy_engine *engine);

/* ---------------------------------------------------------------- queries */

/* What a query callback receives.  status is 0 when PostgreSQL answered
 * (its errors arrive as PGRES_FATAL_ERROR results, mirrored in sqlstate and
 * message); SY_EPOLICY when the policy refused the query (sqlstate is the
 * policy's, 42501 by default) or failed (sqlstate XX000); SY_ECONN,
 * SY_ETIMEOUT or SY_ESTOPPED when the engine could not run it.
 * Everything is borrowed for the duration
 * of the callback, except results taken with sy_reply_take_result(). */
typedef struct sy_reply {
    int status;             /* 0, or SY_E* when the engine itself failed */
    PGresult **results;     /* one per statement, in order; entries may be
                               NULL once taken */
    int nresults;
    const char *node;       /* "cluster.node" that served it, or NULL */
    /* Set when the engine (not PostgreSQL) failed the query, or copied
     * from the first error result PostgreSQL sent: */
    const char *sqlstate;   /* five characters, or NULL when no error */
    const char *message;    /* primary message, or NULL */
    const char *detail;     /* may be NULL */
    int retried;            /* 1 if the read was retried on another node */
    const char *const *notices; /* NOTICE/WARNING messages, in order */
    int nnotices;
} sy_reply;

typedef void (*sy_query_cb)(void *user_data, sy_reply *reply);

/* Takes ownership of reply->results[index]: the caller must PQclear() it.
 * Returns NULL if index is out of range or the result was already taken. */
PGresult *sy_reply_take_result(sy_reply *reply, int index);

/* One query.  Everything is copied by sy_query(); nothing needs to outlive
 * the call. */
typedef struct sy_query_args {
    const char *sql;                 /* required, NUL-terminated */
    int nparams;                     /* 0..SY_MAX_PARAMS */
    const char *const *param_values; /* NULL entries are SQL NULLs */
    const int *param_lengths;        /* for binary parameters; may be NULL */
    const int *param_formats;        /* 0 text, 1 binary; may be NULL */
    const unsigned int *param_types; /* Oids; may be NULL */
    int result_format;               /* 0 text, 1 binary */
    sy_session *session;             /* NULL: no session (autocommit) */
    double timeout;                  /* seconds; 0: the configured default */
} sy_query_args;

/* Classifies, routes through the policy and runs the query.  0: cb fires
 * exactly once, later (never inside this call).  Error: cb never fires.
 * SY_EBUSY if the session already has a query in flight. */
int sy_query(sy_engine *engine, const sy_query_args *args, sy_query_cb cb,
             void *user_data);

/* ---------------------------------------------------------------- sessions */

/* A session groups queries: a transaction (BEGIN .. COMMIT/ROLLBACK) runs on
 * one pinned connection and statements that set session state (SET, LISTEN,
 * PREPARE, temporary tables, session advisory locks) pin it for the rest of
 * the session.  user, database and application_name are copied and shown to
 * the policy as q.session.  Any may be NULL.  *out is owned by the caller. */
int sy_session_new(sy_engine *engine, sy_session **out, const char *user,
                   const char *database, const char *application_name);

/* Sets a custom session variable the policy sees in q.session.vars.
 * value NULL removes it.  Both strings are copied. */
int sy_session_set(sy_session *session, const char *name, const char *value);

/* 1 while the session holds a connection (open transaction or pinned). */
int sy_session_pinned(const sy_session *session);

/* Frees the session.  An open transaction is rolled back (the connection is
 * closed, never returned dirty to the pool).  A query still in flight is
 * completed first; its callback still fires.  Sessions should be freed
 * before their engine; one that outlives it is detached by
 * sy_engine_free() and this call then only releases its memory. */
void sy_session_free(sy_session *session);

/* ---------------------------------------------------------------- classifier */

typedef enum sy_kind {
    SY_KIND_UNKNOWN = 0,
    SY_KIND_READ = 1,
    SY_KIND_WRITE = 2,
    SY_KIND_TRANSACTION = 3, /* BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ... */
    SY_KIND_SESSION = 4,     /* SET, LISTEN, PREPARE, temp tables, locks */
    SY_KIND_DDL = 5
} sy_kind;

/* Flags in sy_statement.flags. */
enum {
    SY_STMT_MULTI = 1 << 0,          /* more than one statement */
    SY_STMT_WRITABLE_CTE = 1 << 1,   /* WITH ... INSERT/UPDATE/DELETE */
    SY_STMT_LOCKING_READ = 1 << 2,   /* SELECT ... FOR UPDATE/SHARE */
    SY_STMT_WRITE_FUNCTION = 1 << 3, /* calls nextval, setval, ... */
    SY_STMT_EXPLAIN_ANALYZE = 1 << 4,
    SY_STMT_READ_ONLY_TX = 1 << 5,   /* BEGIN/START TRANSACTION READ ONLY */
    SY_STMT_TX_BEGIN = 1 << 6,
    SY_STMT_TX_END = 1 << 7,         /* COMMIT, ROLLBACK, END, ABORT */
    SY_STMT_TEMP_TABLE = 1 << 8,
    SY_STMT_ADVISORY_LOCK = 1 << 9,
    SY_STMT_HAS_HINTS = 1 << 10,
    SY_STMT_TRUNCATED = 1 << 11      /* more hints/schemas than fit */
};

#define SY_MAX_HINTS 16
#define SY_MAX_SCHEMAS 16

/* A span of the classified SQL text (offset and length in bytes). */
typedef struct sy_span {
    uint32_t off;
    uint32_t len;
} sy_span;

/* The classifier's verdict.  Spans point into the SQL given to
 * sy_classify(); nothing is allocated. */
typedef struct sy_statement {
    sy_kind kind;
    uint32_t flags;
    int nhints;
    sy_span hint_keys[SY_MAX_HINTS];
    sy_span hint_values[SY_MAX_HINTS]; /* without surrounding quotes */
    int nschemas;
    sy_span schemas[SY_MAX_SCHEMAS];   /* distinct, in order of mention */
    sy_span first_word;                /* the statement's leading keyword */
} sy_statement;

/* Classifies sql[0..len) without allocating.  write_functions is an
 * optional NULL-terminated list of extra function names (lower case) that
 * make a statement a write, besides the built-in ones (nextval, setval,
 * pg_advisory_xact_lock, ...); borrowed for the call.  Returns 0, or SY_EINVAL
 * for NULL sql/out. */
int sy_classify(const char *sql, size_t len,
                const char *const *write_functions, sy_statement *out);

/* "read", "write", "transaction", "session", "ddl" or "unknown": a static
 * string, never freed. */
const char *sy_kind_name(sy_kind kind);

/* ---------------------------------------------------------------- stats */

/* Strings in sy_node_stats are borrowed from the engine: name and cluster
 * stay valid until the next reload or sy_engine_free(), role is static. */
typedef struct sy_node_stats {
    const char *name;      /* "cluster.node" */
    const char *cluster;
    const char *role;      /* "primary", "replica" or "unknown": the
                            * polled role (the configured one until the
                            * first poll; "unknown" for an unpolled "auto",
                            * and, following Patroni, for a server that says
                            * primary while Patroni names another leader) */
    int healthy;
    int weight;
    uint64_t queries;
    uint64_t errors;
    uint64_t retries;
    int inflight;
    int pool_idle;
    int pool_busy;
    int pool_connecting;
    int pool_waiting;
    uint64_t pool_exhausted;  /* waits that timed out */
    /* Latency runs from sending a query on a connection to its last
     * result: time spent waiting for a pool connection is not included. */
    double latency_avg_ms;    /* moving average */
    double latency_p50_ms;
    double latency_p95_ms;
    double latency_p99_ms;
    /* Health polling's figures; negative or 0 when not known yet. */
    int split_brain;          /* one of several healthy nodes claiming primary */
    int fenced;               /* an old primary after a managed failover */
    int timeline;             /* 0: unknown */
    double wal_position;      /* bytes: current (primary) or replayed (replica) */
    double lag_bytes;         /* replay behind the cluster's primary; < 0 unknown */
    double lag_ms;            /* < 0 unknown */
    double rtt_ms;            /* the last poll's round trip */
    uint64_t polls_ok, polls_failed;
    double down_for_s;        /* how long it has been down; 0 when up */
    const char *last_error;   /* the last failed poll's reason ("" if none) */
    const char *patroni;      /* failover.mode = "patroni": what Patroni says
                               * ("leader", "member", "none": not a member);
                               * NULL otherwise */
} sy_node_stats;

/* Drains (enabled = 0: no query is routed there, what runs finishes) or
 * enables a node by its full name ("main.replica1").  Enabling also lifts
 * the fence a managed failover put on an old primary.  0, SY_EINVAL for a
 * name not in the current topology. */
int sy_node_set_enabled(sy_engine *engine, const char *name, int enabled);

/* Number of nodes in the current topology. */
int sy_node_count(const sy_engine *engine);

/* Copies node index's counters into *out (0 <= index < sy_node_count). */
int sy_node_stats_get(const sy_engine *engine, int index, sy_node_stats *out);

/* Sums a cluster's node counters into *out (name = cluster = the cluster's
 * name, borrowed like sy_node_stats' strings; role = NULL; healthy = the
 * number of healthy nodes; latency figures = the query-weighted average of
 * its nodes). */
int sy_cluster_stats_get(const sy_engine *engine, const char *cluster,
                         sy_node_stats *out);

/* Engine-wide counters. */
typedef struct sy_engine_stats {
    uint64_t queries;
    uint64_t rejected;        /* refused by the policy */
    uint64_t policy_errors;   /* raised or ran over budget */
    uint64_t reloads;
    uint64_t reload_failures;
    double route_avg_us;      /* Lua routing time, moving average */
} sy_engine_stats;

int sy_engine_stats_get(const sy_engine *engine, sy_engine_stats *out);

/* ---------------------------------------------------------------- tools */

/* Validates a config and its policy (syntax, schema, hooks, selftest)
 * without touching the network.  Writes a summary, or every problem found
 * (one per line, with file:line or the key path), to out.  Returns 0 when
 * valid, SY_ECONFIG otherwise. */
int sy_config_check(const char *config_path, const char *home, char *out,
                    size_t out_len);

/* Dry-runs the routing of one statement without touching the network:
 * the topology comes from the config and every node is taken as healthy
 * unless listed in down_nodes (NULL-terminated, may be NULL).  params and
 * session_vars ("k=v" strings, NULL-terminated) may be NULL.  Writes a
 * human-readable decision and trace to out (truncated to out_len).
 * Returns 0 when the policy chose a target, SY_EPOLICY when it rejected or
 * failed (the reason is in out), SY_ECONFIG when the config is bad. */
int sy_route_dry_run(const char *config_path, const char *home,
                     const char *sql, const char *const *params,
                     const char *const *session_vars,
                     const char *const *down_nodes, char *out,
                     size_t out_len);

#ifdef __cplusplus
}
#endif

#endif /* SWITCHYARD_H */
