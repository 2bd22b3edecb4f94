/*
 * proxy.h - the PostgreSQL server front end (`switchyard -c config.lua`).
 * Internal header shared by the proxy's files:
 *
 *   proxy.c          the proxy object: listeners, accept, limits, drain,
 *                    the cancel-key table, counters
 *   proxy_config.c   cfg.proxy (normalised by config_proxy.lua) -> settings
 *   client.c         one client connection: transport (plain or TLS),
 *                    buffers, timers, startup, login, close
 *   client_auth.c    trust / md5 / SCRAM-SHA-256 against the auth file
 *   relay.c          transaction pooling: batches, routing, linking a
 *                    backend, release, cancel
 *   relay_translate.c  client messages onto the linked backend: renaming,
 *                    local statements, SET tracking, pinning
 *   relay_backend.c  reading a backend's messages and relaying them
 *   prepared.c       prepared statements under names the proxy owns
 *   params.c         session parameters replayed on whichever backend serves
 *   admin.c          the admin console (virtual database)
 *
 * Ownership: the proxy owns its clients; a client owns its buffers, its
 * sy_session (routing context) and its statement map; a backend connection
 * (sy_conn of a node's relay pool) belongs to its pool and, while a client
 * is linked to it, is held by that client.  The proxy's per-backend state
 * (sy_link) hangs off conn->proxy_state and is freed with the connection.
 * Nothing here is global: everything hangs off the sy_proxy.
 */
#ifndef SY_PROXY_H
#define SY_PROXY_H

#include <uthash.h>

#include "auth.h"
#include "internal.h"
#include "pgproto.h"
#include "tls.h"

typedef struct sy_proxy sy_proxy;
typedef struct sy_client sy_client;
typedef struct sy_link sy_link;
typedef struct sy_stmt sy_stmt;

/* ------------------------------------------------------------ settings */

enum { SY_TLS_MODE_DISABLE = 0, SY_TLS_MODE_PREFER, SY_TLS_MODE_REQUIRE };
enum { SY_AUTH_TRUST = 0, SY_AUTH_MD5, SY_AUTH_SCRAM };

typedef struct sy_listen_addr {
    char *host;
    int port;
    int ipv6;
} sy_listen_addr;

/* cfg.proxy, read by proxy_config.c; owned by the proxy, replaced whole on
 * reload (listeners excepted: they stay as started). */
typedef struct sy_proxy_settings {
    sy_listen_addr *listen;
    int nlisten;
    char *unix_path;           /* <dir>/.s.PGSQL.<port> or NULL */
    int unix_mode;
    int max_clients;
    size_t client_buffer;      /* bytes buffered per direction per client */
    size_t max_message;
    int session_mode;          /* pool_mode = "session" */
    int tls_mode;
    char *tls_cert, *tls_key, *tls_ca;
    int auth_type;
    char *auth_file;
    char *auth_query;          /* SQL with $1 = user name, or NULL */
    char *auth_query_cluster;
    double client_idle, wait_backend, connect, idle_in_transaction, client_login;
    char *admin_database;
    char **admin_users;        /* NULL-terminated */
    int max_prepared;          /* per backend; 0: no renaming */
    double drain_timeout;
    int switchyard_variables;
    char *backend_database;    /* dbname of the first node's conninfo, or NULL */
} sy_proxy_settings;

/* Reads state.cfg.proxy of the engine's current Lua state into *out (which
 * the caller frees with sy__proxy_settings_free).  -1 with err when the
 * config has no proxy section or memory ran out. */
int sy__proxy_settings_read(sy_engine *e, sy_proxy_settings *out, char *err,
                            size_t errlen);
void sy__proxy_settings_free(sy_proxy_settings *s);

/* ------------------------------------------------------------ params */

/* Session parameters as SQL: name (lower case) and the value as it goes
 * after SET name TO (a quoted literal, or what the client wrote). */
typedef struct sy_param {
    char *name;
    char *value;
} sy_param;

typedef struct sy_params {
    sy_param *v;
    int n, cap;
    uint64_t fingerprint;      /* equal sets have equal fingerprints */
} sy_params;

void sy__params_init(sy_params *p);
void sy__params_free(sy_params *p);
int sy__params_copy(sy_params *dst, const sy_params *src);
/* 1 when name is an identifier or identifier.identifier (< 64 bytes). */
int sy__params_name_ok(const char *name, size_t len);
/* Sets (value NULL: removes) a parameter.  0, -1 on ENOMEM, -2 for a name
 * sy__params_name_ok refuses. */
int sy__params_set(sy_params *p, const char *name, size_t name_len,
                   const char *value, size_t value_len);
/* A plain string value, quoted as a literal. */
int sy__params_set_literal(sy_params *p, const char *name, const char *value);
const char *sy__params_get(const sy_params *p, const char *name);
/* Appends to sql the statements that turn the parameters `have` into
 * `want` (SET ...; RESET ...;).  Returns how many statements it wrote. */
int sy__params_diff_sql(const sy_params *have, const sy_params *want, sy_buf *sql);

/* What a client statement does to session parameters. */
typedef enum sy_set_kind {
    SY_SET_NONE = 0,     /* not a SET/RESET we track */
    SY_SET_VALUE,        /* SET name TO value */
    SY_SET_RESET,        /* RESET name / SET name TO DEFAULT */
    SY_SET_RESET_ALL,
    SY_SET_LOCAL,        /* SET LOCAL / TRANSACTION / CONSTRAINTS: ends
                            with the transaction */
    SY_SET_UNTRACKED     /* SET ROLE, a value we cannot replay, ...: pins */
} sy_set_kind;

typedef struct sy_set_stmt {
    sy_set_kind kind;
    char name[64];
    const char *value;   /* into the SQL; value_len bytes */
    size_t value_len;
} sy_set_stmt;

/* Parses one SQL statement (no ';' inside besides a trailing one). */
sy_set_kind sy__params_parse_set(const char *sql, size_t len, sy_set_stmt *out);

/* ------------------------------------------------------------ prepared */

/* A statement text + parameter types the proxy prepared somewhere, under
 * its own name.  Refcounted by client maps and backend caches. */
struct sy_stmt {
    UT_hash_handle hh;         /* proxy->stmts, keyed by key */
    char *key;                 /* query \0 types (binary) */
    size_t key_len;
    const char *query;         /* into key */
    size_t query_len;
    uint16_t nparams;
    uint32_t *types;           /* host order */
    int refs;
    char server_name[24];      /* "sy_<n>" */
};

/* A client's name for a statement. */
typedef struct sy_client_stmt {
    UT_hash_handle hh;
    char *name;
    sy_stmt *stmt;
} sy_client_stmt;

/* A statement prepared on one backend. */
typedef struct sy_link_stmt {
    UT_hash_handle hh;         /* keyed by stmt pointer */
    sy_stmt *stmt;
    sy_list lru;
} sy_link_stmt;

/* The statement for (query, types), created or shared; a new reference. */
sy_stmt *sy__stmt_get(sy_proxy *px, const sy_pg_parse *parse);
void sy__stmt_unref(sy_proxy *px, sy_stmt *st);
/* Client map: bind name -> stmt (takes a reference; replaces). */
int sy__client_stmt_put(sy_client *c, const char *name, size_t len, sy_stmt *st);
sy_stmt *sy__client_stmt_find(const sy_client *c, const char *name, size_t len);
int sy__client_stmt_drop(sy_client *c, const char *name, size_t len);
void sy__client_stmt_clear(sy_client *c);
/* Backend cache: 1 when st is prepared on the link (touches its LRU). */
int sy__link_stmt_has(sy_link *l, sy_stmt *st);
/* Records st as prepared on the link; evicts the least recently used
 * beyond max (appending a Close for it to out, whose reply is skipped). */
int sy__link_stmt_add(sy_proxy *px, sy_link *l, sy_stmt *st, sy_buf *out);
/* The server refused (or skipped) the Parse of st: not prepared there. */
void sy__link_stmt_forget(sy_proxy *px, sy_link *l, sy_stmt *st);
/* The server skipped the Close that evicted st: still prepared there. */
void sy__link_stmt_restore(sy_proxy *px, sy_link *l, sy_stmt *st);
/* Appends a Parse of st under its proxy name to l->out, expecting its
 * ParseComplete (skipped when skip), and records it in the cache. */
int sy__link_prepare(sy_proxy *px, sy_link *l, sy_stmt *st, int skip);
void sy__link_stmt_clear(sy_proxy *px, sy_link *l);

/* ------------------------------------------------------------ link */

/* What the proxy expects back for a message it sent to a backend. */
typedef enum sy_expect_kind {
    SY_X_PARSE = 1, SY_X_BIND, SY_X_DESCRIBE, SY_X_EXECUTE, SY_X_CLOSE,
    SY_X_SYNC, SY_X_QUERY,
    SY_X_FAKE               /* a reply the proxy makes; no message sent */
} sy_expect_kind;

enum {
    SY_XF_SKIP = 1,         /* the reply is not the client's: drop it */
    SY_XF_SKIP_ERRORS = 2,  /* ...and its errors too */
    SY_XF_REPLAY = 4        /* the session-parameter replay: if it fails,
                               the backend's state is unknown */
};

/* A client SET / RESET on its way: owned by its expected-reply entry until
 * its CommandComplete, then staged on the link until the transaction it
 * ran in commits (or dropped when it rolls back). */
typedef struct sy_tracked_set {
    sy_set_kind kind;
    char name[64];
    char *value;              /* owned; NULL for RESET / RESET ALL */
} sy_tracked_set;

/* A copy the caller owns (NULL in, or out of memory: NULL). */
sy_tracked_set *sy__tracked_set_new(const sy_set_stmt *s);
sy_tracked_set *sy__tracked_set_dup(const sy_tracked_set *t);
void sy__tracked_set_free(sy_tracked_set *t);

typedef struct sy_expect {
    uint8_t kind;
    uint8_t flags;
    uint32_t fake_off, fake_len;  /* SY_X_FAKE: bytes in link->fakes */
    sy_tracked_set *set;          /* owned: completes a client SET / RESET */
    sy_stmt *stmt;                /* a reference, for SY_X_PARSE (not prepared
                                     after all if it fails) and SY_X_CLOSE of
                                     an eviction (still prepared if skipped) */
} sy_expect;

/* The proxy's state of one backend connection (conn->proxy_state). */
struct sy_link {
    sy_conn *conn;
    sy_proxy *proxy;
    sy_client *client;        /* linked client, or NULL when pooled */
    sy_buf out;               /* bytes for the backend not yet written */
    size_t out_off;
    sy_buf in;                /* an incomplete message from the backend */
    size_t pass_remaining;    /* bytes of a streamed message still to relay */
    int pass_forward;         /* relay them (1) or drop them (0) */
    const char *run;          /* bytes of the read being processed that go to */
    size_t run_len;           /* the client as they are, not copied yet */
    sy_expect *q;             /* ring of expected replies */
    unsigned q_head, q_len, q_cap;
    sy_buf fakes;             /* bytes of SY_X_FAKE replies */
    char tx_status;           /* last ReadyForQuery status */
    int synced;               /* nothing sent since that ReadyForQuery (a
                                 portal suspended after Flush stays open) */
    int write_blocked;
    int read_paused;          /* client's output full: backpressure */
    sy_params params;         /* what we set on this backend */
    sy_link_stmt *stmts;      /* uthash by stmt */
    sy_list stmt_lru;         /* most recent at head */
    int nstmts;
    sy_tracked_set **staged;  /* completed SETs of the open transaction */
    int nstaged, staged_cap;
    int tx_failed;            /* an error since the last ReadyForQuery 'I' */
    int tx_rolled_back;       /* a ROLLBACK since then */
    sy_relay_cancel *cancel;  /* a CancelRequest in flight, or NULL */
    sy_node *held_node;       /* released with the connection after it */
    int release_after_cancel;
};

/* ------------------------------------------------------------ client */

typedef enum sy_client_state {
    SY_CLIENT_STARTUP = 0,    /* waiting for the startup packet */
    SY_CLIENT_TLS,            /* TLS handshake */
    SY_CLIENT_AUTH,           /* password exchange */
    SY_CLIENT_LOGIN_WAIT,     /* waiting for server parameters */
    SY_CLIENT_IDLE,           /* logged in, no backend */
    SY_CLIENT_WAITING,        /* a batch waits for a backend */
    SY_CLIENT_LINKED,         /* a backend serves it */
    SY_CLIENT_CLOSING         /* flushing a last error, then closed */
} sy_client_state;

struct sy_client {
    sy_proxy *proxy;
    sy_list link;              /* proxy->clients */
    UT_hash_handle hh_key;     /* proxy->by_pid */
    uint32_t pid, key;         /* the BackendKeyData we gave it */
    int fd;
    sy_tls_stream *tls;
    int unix_socket;
    char peer[64];
    sy_client_state state;
    ev_io rio, wio;
    ev_timer timer;            /* login, idle, idle in transaction, wait */
    double connected_at;
    sy_buf in;                 /* received, not yet processed */
    size_t in_off;
    sy_buf out;                /* for the client, not yet written */
    size_t out_off;
    sy_buf batch;              /* messages waiting for a backend */
    int read_paused;
    int in_process;            /* inside sy__client_process: no re-entry */
    int registered;            /* in proxy->by_pid */
    sy_list login_link;        /* proxy->login_waiters while LOGIN_WAIT */
    char *user, *database;
    int admin;
    sy_session *session;       /* routing context (q.session) */
    sy_params startup_params, params;
    sy_client_stmt *stmts;     /* uthash by name */
    /* A tracked SET sent with the extended protocol: the unnamed statement
     * holds one, then the unnamed portal bound to it. */
    sy_tracked_set *unnamed_set;  /* owned, or NULL */
    int portal_is_set;
    /* SET switchyard.x sent with the extended protocol: the unnamed
     * statement / portal is the proxy's own, answered locally. */
    int unnamed_local, portal_local;
    /* The last statement routing classified (the text in the batch being
     * translated), so translation need not classify it again. */
    int batch_may_write;      /* the routed batch was not a plain read */
    int rerouted;             /* the batch was routed again after its node went down */
    sy_parked park;           /* the batch waits for a primary (park.c) */
    const char *cls_sql;
    size_t cls_len;
    sy_statement cls_stmt;
    /* The batch's first Parse, Bind and Query as routing parsed them, for
     * the translation to reuse (sy__relay_parsed): valid while the batch is
     * in the buffer parsed_in; *_at are their payloads' offsets (0: none). */
    const char *parsed_in;
    size_t parse_at, bind_at, query_at;
    sy_pg_parse parsed_parse;
    sy_pg_bind parsed_bind;
    sy_pg_span parsed_query;
    int query_not_local;      /* its text starts with no word the proxy answers */
    /* login */
    char *secret;              /* the user's stored secret, NULL if unknown */
    struct sy_auth_lookup *lookup; /* an auth query in flight */
    int auth_step;
    uint8_t md5_salt[4];
    sy_scram *scram;
    /* backend */
    sy_waiter waiter;
    sy_node *node;             /* referenced while linked or waiting */
    sy_link *linked;
    int sticky;                /* pinned to its backend for the session */
    int in_error_skip;         /* a local error: drop until Sync */
    char tx_status;            /* what the client was last told */
    uint64_t queries, transactions;
};

/* client.c */
void sy__client_accept(sy_proxy *px, int fd, int unix_socket, const char *peer);
/* Closes the client now (its backend, if linked, is released or closed). */
void sy__client_close(sy_client *c, const char *why);
/* Sends FATAL (or ERROR) and closes after the bytes are written. */
void sy__client_fatal(sy_client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sy__client_error(sy_client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Writes as much of c->out as the socket takes; arms the write watcher for
 * the rest.  -1 when the client is gone (it was closed). */
int sy__client_flush(sy_client *c);
/* Re-arms the client's timer for its current state. */
void sy__client_arm_timer(sy_client *c);
/* Stops or restarts reading the client as its buffers fill and drain. */
void sy__client_update_reading(sy_client *c);
/* Processes buffered input (after a pause or a backend was linked). */
void sy__client_process(sy_client *c);
/* client_auth.c: starts authentication after the startup packet; the
 * exchange continues in sy__client_auth_message(). */
void sy__client_auth_start(sy_client *c);
void sy__client_auth_message(sy_client *c, const sy_pg_msg *m);
/* The client leaves: an auth query in flight forgets it; the secret goes. */
void sy__client_auth_forget(sy_client *c);
/* Login succeeded: parameters, key, ReadyForQuery (maybe after the proxy
 * fetched the server's parameters: then sy__client_login_finish). */
void sy__client_login_done(sy_client *c);
void sy__client_login_finish(sy_client *c);

/* relay.c */
/* One framed client message after login; 0, or -1 when the client was
 * closed. */
int sy__relay_client_message(sy_client *c, const sy_pg_msg *m);
/* relay_translate.c: one client message onto linked backend l (NULL: the
 * proxy answers it alone); 0 or -1 (out of memory). */
int sy__relay_translate(sy_client *c, sy_link *l, const sy_pg_msg *m);
/* An ERROR the proxy makes for one message, in its place in the reply
 * stream; the backend's transaction fails with it, as PostgreSQL's would.
 * extended: the rest of the batch is skipped up to Sync; otherwise a
 * ReadyForQuery follows.  0 or -1 (out of memory). */
int sy__relay_refuse(sy_client *c, sy_link *l, int extended, const char *sqlstate,
                     const char *message);
/* A simple query the proxy answers itself (SET switchyard.x, ...). */
int sy__relay_query_is_local(sy_client *c, const char *sql, size_t len);
/* Whether sql starts with a word the proxy may answer itself (SET, RESET,
 * DEALLOCATE, DISCARD): when not, it never answers it, whatever state. */
int sy__relay_may_be_local(const char *sql, size_t len);
/* Classifies sql (with the config's write functions).  remember: keep the
 * result for one later call with the same text at the same address (the
 * batch's statement, classified to route, then to translate). */
void sy__relay_classify(sy_client *c, const char *sql, size_t len, sy_statement *out,
                        int remember);
/* Whether m is the batch message routing parsed at offset at (c->parse_at,
 * c->bind_at or c->query_at), so its parse in c can stand for parsing it
 * again. */
int sy__relay_parsed(const sy_client *c, const sy_pg_msg *m, size_t at);
/* The transaction status the client should be told ('I', 'T', 'E'). */
char sy__relay_status(const sy_client *c, const sy_link *l);
/* The client goes away: unlink and release or close its backend. */
void sy__relay_client_gone(sy_client *c);
/* Starts a CancelRequest for c's running query (no-op when idle). */
void sy__relay_cancel_client(sy_client *c);
/* relay_backend.c */
void sy__link_io(void *data, sy_conn *conn, int revents);
void sy__link_closed(void *data, sy_conn *conn);
sy_link *sy__link_of(sy_proxy *px, sy_conn *conn);
int sy__link_flush(sy_link *l);
/* The client's output fell below half its buffer: read the backend again
 * from the next loop pass (never re-entered from inside a read). */
void sy__link_resume(sy_link *l);
/* Queue helpers. */
int sy__link_expect(sy_link *l, uint8_t kind, uint8_t flags);
int sy__link_expect_fake(sy_link *l, const char *bytes, size_t len);
/* Ends the link with the client: back to the pool, or closed if broken. */
void sy__link_release(sy_link *l, int broken);
/* relay.c: the backend finished a ReadyForQuery: may release. */
void sy__relay_ready(sy_link *l);

/* admin.c: a simple query on the admin console. */
void sy__admin_query(sy_client *c, const char *sql, size_t len);

/* ------------------------------------------------------------ proxy */

/* The parameters a client is told at login (NULL-terminated; proxy.c). */
#define SY_SERVER_PARAMS 16
extern const char *const sy__server_param_names[];

typedef struct sy_proxy_stats {
    uint64_t clients_total, clients_refused, logins_failed;
    uint64_t transactions, queries, batches;
    uint64_t pins, cancels, local_replies;
    uint64_t prepares, prepare_hits, evictions;
    uint64_t wait_timeouts;
} sy_proxy_stats;

typedef struct sy_listener {
    ev_io io;
    int fd;
    int unix_socket;
    sy_proxy *proxy;
} sy_listener;

struct sy_proxy {
    sy_engine *engine;
    struct ev_loop *loop;
    sy_proxy_settings set;
    sy_listener *listeners;    /* listeners_cap entries, never moved */
    int nlisteners, listeners_cap;
    char *unix_path;           /* the socket file we created (unlinked at free) */
    sy_tls_server *tls;
    sy_authfile *authfile;
    uint8_t mock_key[SY_AUTH_MOCK_KEY_LEN];
    sy_list clients;
    int nclients;
    sy_client *by_pid;         /* uthash (hh_key) by pid */
    uint32_t next_pid;
    uint64_t rand_state;
    sy_stmt *stmts;            /* uthash by key */
    uint64_t next_stmt_id;
    int nstmts;
    /* Reported at login: a backend's values of sy__server_param_names. */
    char *server_param_values[SY_SERVER_PARAMS];
    int have_server_params;
    sy_list login_waiters;     /* clients in LOGIN_WAIT */
    sy_waiter params_waiter;
    sy_node *params_node;      /* the node asked (borrowed while fetching) */
    int params_fetching;
    char *scratch;             /* one read buffer shared by every socket */
    size_t scratch_cap;
    const char **route_values; /* Bind parameters for the policy */
    int *route_lengths;
    int route_cap;
    int draining;
    ev_timer drain_timer;
    double drain_deadline;
    void (*stopped)(void *data);
    void *stopped_data;
    sy_proxy_stats stats;
};

/* Creates the proxy on a running engine (before sy_engine_start: it puts
 * the engine in relay mode) and starts listening.  NULL with err. */
sy_proxy *sy__proxy_new(sy_engine *e, char *err, size_t errlen);
/* After a reload: re-reads settings (listeners stay), auth file, TLS. */
void sy__proxy_reloaded(sy_proxy *px);
/* SIGTERM: stop accepting; clients leave after their transaction; after
 * drain_timeout everything closes; done() fires once when no client is
 * left.  SIGINT: sy__proxy_close_all at once. */
void sy__proxy_drain(sy_proxy *px, void (*done)(void *), void *data);
void sy__proxy_close_all(sy_proxy *px);
void sy__proxy_free(sy_proxy *px);
/* Removes c from the proxy's lists (client.c frees it). */
void sy__proxy_forget_client(sy_proxy *px, sy_client *c);
sy_client *sy__proxy_find_pid(sy_proxy *px, uint32_t pid);
/* Gives a logged-in client its cancel key and files it. */
void sy__proxy_register_client(sy_proxy *px, sy_client *c);
/* The scratch buffer (size px->scratch_cap). */
char *sy__proxy_scratch(sy_proxy *px);
/* Asks a backend for the parameters reported at login (once). */
void sy__proxy_need_server_params(sy_proxy *px);

#endif
