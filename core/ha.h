/*
 * ha.h - high availability inside the core: the per-node health poller
 * (health.c), roles from what servers and Patroni say (roles.c,
 * patroni.c, over http.c), managed failover (failover.c) and work parked
 * until the roles change (park.c).  Included by internal.h, which defines
 * the types these take by pointer; nothing else includes it.
 */
#ifndef SY_HA_H
#define SY_HA_H

/* ------------------------------------------------------------ health */

/* The health poller's state, embedded in its node (health.c). */
typedef struct sy_health {
    PGconn *pg;
    PGresult *pending;        /* the figures, while later results drain */
    int state;
    int started_once;
    ev_io io;
    ev_timer tick;            /* next poll */
    ev_timer deadline;        /* the running poll's timeout */
    int deadline_extended;    /* once per poll, after a stall of ours */
    double started;           /* when the running poll began */
    double sent_at;           /* when its query was sent (monotonic) */
    double ok_sent_at;        /* sent_at of the last poll that succeeded */
    int failures, successes;  /* consecutive, for fall/rise */
    uint64_t polls_ok, polls_failed;
    uint64_t queries_at_last_poll;
    double caught_up_at;      /* last poll that saw replay caught up */
    int in_recovery;
    int timeline;             /* 0: unknown (a replica with no WAL receiver) */
    double wal_position;      /* bytes: current (primary) or replayed */
    double rtt_ms;
    char last_error[256];
    /* One command at a time on the poller's connection (failover): */
    char *cmd_sql;            /* owned; NULL when none */
    void (*cmd_cb)(sy_node *n, void *data, PGresult *res, const char *err);
    void *cmd_data;
    double cmd_timeout;
    int cmd_running;          /* sent; otherwise waits behind the poll */
    int poll_soon;            /* the next poll follows this one at once */
    PGresult *cmd_result;     /* its first result, while the rest drain */
} sy_health;

typedef void (*sy_health_cmd_cb)(sy_node *n, void *data, PGresult *res, const char *err);
/* Runs sql on n's health connection, now or right after the poll in
 * flight, with its own timeout; cb fires once with the first result
 * (borrowed for the call; NULL with err when the command or the connection
 * failed).  SY_EBUSY while another command is queued or polling is off. */
int sy__health_command(sy_node *n, const char *sql, double timeout, sy_health_cmd_cb cb,
                       void *data);
void sy__health_start(sy_node *n);
void sy__health_stop(sy_node *n);
/* Polls n now, or right after the poll or command in flight (its role
 * may have just changed: patroni.c). */
void sy__health_poll_soon(sy_node *n);
/* The lookup the poller waited for finished (err NULL) or failed. */
void sy__health_dns_done(sy_node *n, const char *err);

/* ------------------------------------------------------------ http */

/* HTTP GETs on an engine's loop through libcurl (http.c). */
typedef struct sy_http sy_http;
typedef struct sy_http_get sy_http_get;
/* A GET ended: status is the HTTP status (0 when none came), body is
 * borrowed for the call, err is NULL or why it failed (the transfer, the
 * timeout, a body past max_body).  The request is already freed. */
typedef void (*sy_http_cb)(void *data, long status, const char *body, size_t len,
                           const char *err);
/* The engine's HTTP client on loop; NULL when out of memory or when this
 * libcurl has no asynchronous resolver.  The engine owns it;
 * sy__http_free() cancels what is in flight (no callbacks). */
sy_http *sy__http_new(struct ev_loop *loop);
void sy__http_free(sy_http *h);
/* Starts GET url (copied), giving up after timeout seconds; cb fires once
 * from the loop unless the request is cancelled first.  NULL with err on
 * failure to start.  The returned handle is valid until cb or cancel. */
sy_http_get *sy__http_get(sy_http *h, const char *url, double timeout, size_t max_body,
                          sy_http_cb cb, void *data, char *err, size_t errlen);
void sy__http_cancel(sy_http_get *g);

/* ------------------------------------------------------------ patroni */

/* What a cluster's Patroni says of a node (patroni.c). */
enum { SY_PATRONI_NONE = 0, SY_PATRONI_MEMBER = 1, SY_PATRONI_LEADER = 2 };
/* One watcher per cluster with failover.mode = "patroni", owned by the
 * sy_lua it was built from. */
typedef struct sy_patroni sy_patroni;
/* Builds lua's watchers from its config (none for a dry run), carrying
 * over what previous's (NULL or the state being replaced; borrowed) knew.
 * 0, or -1 with err. */
int sy__patroni_build(sy_lua *lua, const sy_lua *previous, char *err, size_t errlen);
/* Starts and stops lua's watchers; free also stops. */
void sy__patroni_start(sy_lua *lua);
void sy__patroni_stop(sy_lua *lua);
void sy__patroni_free(sy_lua *lua);
/* lua now serves: its nodes follow Patroni or not as its config says
 * (a change resets what Patroni said and recomputes the roles). */
void sy__patroni_adopt(sy_lua *lua);
/* "leader", "member", "none" (static); NULL when n does not follow Patroni. */
const char *sy__patroni_role_name(const sy_node *n);

/* ------------------------------------------------------------ failover */

/* A primary's health polls crossed the fall threshold: in a cluster with
 * failover.mode = "managed", promote a replica (once per outage). */
void sy__failover_primary_down(sy_node *old);
/* Whether writes to the cluster of nodes[from, to) should wait for a
 * primary: managed, no usable primary, and a promotion running or
 * possible.  Returns the wait in seconds, or 0. */
double sy__failover_wait(const sy_topology *t, int from, int to);
/* An operator re-enabled a fenced node. */
void sy__failover_unfence(sy_node *n);

/* ------------------------------------------------------------ roles */

/* The nodes [*from, *to) of the cluster of t->nodes[i] (a cluster's nodes
 * are contiguous: runtime.lua builds them cluster by cluster). */
void sy__cluster_range(const sy_topology *t, int i, int *from, int *to);
/* The role routing goes by: the server's own (pg_is_in_recovery()),
 * except that in a cluster following Patroni a server that says primary is
 * one only while Patroni names it the leader (UNKNOWN otherwise). */
int sy__role_effective(const sy_node *n);
/* "primary", "replica" or "unknown": static. */
const char *sy__role_name(int role);
/* A poll read pg_is_in_recovery() from n: its role follows. */
void sy__roles_observed(sy_node *n, int in_recovery);
/* Recomputes the effective roles of t->nodes[from, to) after their
 * server_role or patroni_role changed; each change is an event saying
 * why; then the policy is told (sy__roles_refresh). */
void sy__roles_recompute(sy_engine *e, int from, int to, const char *why);
/* Recomputes every cluster's primary and split brain of e's topology,
 * emits the split-brain events, and hands the roles to the policy. */
void sy__roles_refresh(sy_engine *e);
/* Hands the roles of lua's nodes to its policy tables (no events). */
int sy__roles_push(sy_lua *lua);

/* ------------------------------------------------------------ park */

/* Something waiting for the topology to change (park.c), embedded in its
 * owner (a request, a proxy client), which sets the two callbacks. */
typedef struct sy_parked sy_parked;
struct sy_parked {
    sy_list link;            /* engine->parked while parked */
    ev_timer deadline;
    double until;            /* ev_now deadline of this wait; 0: none */
    double wait;             /* the wait it was first parked for, seconds */
    int parked;
    void (*retry)(sy_parked *p);                 /* roles changed: route again */
    void (*expired)(sy_parked *p, int stopping); /* waited too long, or engine stops */
};

/* Parks p until the roles change or `wait` seconds after it was first
 * parked (a second park keeps the first deadline); calls expired at once
 * if that has passed. */
void sy__park(sy_engine *e, sy_parked *p, double wait);
/* p was routed, or its owner goes away: not parked any more. */
void sy__park_done(sy_engine *e, sy_parked *p);
/* The roles changed: every parked item's retry runs. */
void sy__park_wake_all(sy_engine *e);
/* The engine stops: every parked item's expired runs (stopping = 1). */
void sy__park_fail_all(sy_engine *e);

#endif
