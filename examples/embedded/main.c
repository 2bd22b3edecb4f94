/*
 * main.c - embedding libswitchyard in a C program.
 *
 * Runs a short script of queries through an engine on its own loop, with
 * the custom policy of policy.lua: a parameterised read and its round-robin
 * successor on the replicas, a write, a tenant-pinned read, a transaction
 * held on one primary connection by a sy_session, and a DELETE the policy's
 * firewall refuses.  For each query it prints the node that served it and
 * the first value (or command tag) of the result, then the per-node
 * counters, and stops the engine gracefully.
 *
 * Every step states where it must run and what it must return, so the
 * program doubles as a check of the engine: it exits 0 only when every
 * expectation held.
 *
 *   usage: embedded_example CONFIG.lua      (see config.lua for the ports)
 *
 * Build (from the repository root, after `make`):
 *   cc -std=c11 -Wall -Wextra -Werror -I core -I/usr/include/postgresql \
 *      examples/embedded/main.c build/libswitchyard.a \
 *      -lluajit-5.1 -lpq -lev -lcurl -lm -lssl -lcrypto -o build/embedded_example
 *
 * The engine calls back only from inside sy_engine_run(), never from inside
 * sy_query(), so each reply callback simply submits the next step; the last
 * one asks the engine to stop, which makes sy_engine_run() return.
 */
#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "switchyard.h"

/* Where a step must be served. */
typedef enum where {
    ON_PRIMARY,
    ON_REPLICA,       /* any replica */
    ON_OTHER_REPLICA, /* a replica, not the one the previous read used */
    ON_TENANT_REPLICA, /* the replica config.lua pins tenant acme to */
    REFUSED           /* the policy rejects it; no node runs it */
} where;

typedef struct step {
    const char *label;
    const char *sql;
    int nparams;
    const char *params[2];
    int in_session;   /* run on the app's session (the transaction) */
    where expect;
    const char *value; /* first value or command tag; NULL: any */
    const char *sqlstate; /* for REFUSED */
    int pinned_after; /* sy_session_pinned() afterwards: 0, 1, or -1 any */
} step;

/* Everything the callbacks need; main() owns it, user_data points at it. */
typedef struct app {
    sy_engine *engine;
    sy_session *session;
    const step *steps;
    int nsteps;
    int next;             /* index of the step to submit next */
    int checks, failures; /* expectations tested and broken */
    char last_replica[64];
    int stopped;
} app;

#define TENANT_REPLICA "main.replica2"
#define PRIMARY "main.primary"

static void expect(app *a, int ok, const char *what, const char *detail)
{
    a->checks++;
    if (ok)
        return;
    a->failures++;
    printf("  FAIL: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
}

/* The first value of the last result, else its command tag ("BEGIN"). */
static const char *first_value(const sy_reply *r)
{
    if (r->nresults < 1 || !r->results[r->nresults - 1])
        return "";
    PGresult *res = r->results[r->nresults - 1];
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 &&
        PQnfields(res) > 0)
        return PQgetisnull(res, 0, 0) ? "NULL" : PQgetvalue(res, 0, 0);
    return PQcmdStatus(res);
}

static void on_stopped(void *user_data)
{
    app *a = user_data;
    a->stopped = 1;
}

static void run_next(app *a);

static void check_node(app *a, const step *s, const char *node)
{
    char why[160];
    snprintf(why, sizeof why, "served by %s", node ? node : "(none)");
    int is_replica = node && strncmp(node, "main.replica", 12) == 0;
    switch (s->expect) {
    case ON_PRIMARY:
        expect(a, node && strcmp(node, PRIMARY) == 0, "expected " PRIMARY, why);
        break;
    case ON_REPLICA:
        expect(a, is_replica, "expected a replica", why);
        break;
    case ON_OTHER_REPLICA:
        expect(a, is_replica && strcmp(node, a->last_replica) != 0,
               "expected the other replica (round robin)", why);
        break;
    case ON_TENANT_REPLICA:
        expect(a, node && strcmp(node, TENANT_REPLICA) == 0,
               "expected tenant acme's replica " TENANT_REPLICA, why);
        break;
    case REFUSED:
        expect(a, node == NULL, "expected no node for a refused query", why);
        break;
    }
    if (is_replica)
        snprintf(a->last_replica, sizeof a->last_replica, "%s", node);
}

static void on_reply(void *user_data, sy_reply *reply)
{
    app *a = user_data;
    /* One query is in flight at a time, so this reply is the last step
     * submitted. */
    const step *s = &a->steps[a->next - 1];

    if (s->expect == REFUSED) {
        printf("%-26s -> %-14s SQLSTATE %s: %s\n", s->label, "refused",
               reply->sqlstate ? reply->sqlstate : "-",
               reply->message ? reply->message : "-");
        expect(a, reply->status == SY_EPOLICY, "expected SY_EPOLICY",
               sy_strerror(reply->status));
        expect(a, reply->sqlstate && strcmp(reply->sqlstate, s->sqlstate) == 0,
               "expected SQLSTATE", s->sqlstate);
        check_node(a, s, reply->node);
    } else {
        const char *value = first_value(reply);
        printf("%-26s -> %-14s %s\n", s->label,
               reply->node ? reply->node : "(none)", value);
        expect(a, reply->status == 0 && reply->sqlstate == NULL,
               "query failed", reply->message);
        check_node(a, s, reply->node);
        if (s->value)
            expect(a, strcmp(value, s->value) == 0, "expected the value",
                   s->value);
    }
    if (s->pinned_after >= 0)
        expect(a, sy_session_pinned(a->session) == s->pinned_after,
               s->pinned_after ? "expected the session to hold its connection"
                               : "expected the session to release its connection",
               NULL);
    run_next(a);
}

/* Submits the next step, or stops the engine after the last one. */
static void run_next(app *a)
{
    while (a->next < a->nsteps) {
        const step *s = &a->steps[a->next++];
        sy_query_args args = {
            .sql = s->sql,
            .nparams = s->nparams,
            .param_values = s->params,
            .session = s->in_session ? a->session : NULL,
        };
        int rc = sy_query(a->engine, &args, on_reply, a);
        if (rc == 0)
            return; /* on_reply continues the script */
        /* The callback will not fire for this one: count it and go on. */
        printf("%-26s -> sy_query failed: %s\n", s->label, sy_strerror(rc));
        expect(a, 0, "sy_query refused the step", sy_strerror(rc));
    }
    sy_engine_stop(a->engine, on_stopped, a);
}

static void on_event(void *user_data, const sy_event *e)
{
    (void)user_data;
    /* Node up/down and reloads arrive at any time; stderr keeps them out of
     * the script's output. */
    fprintf(stderr, "event: %s %s %s\n", e->name, e->node ? e->node : "",
            e->message ? e->message : "");
}

/* Prints every node's counters; returns how many nodes served nothing. */
static int print_stats(app *a)
{
    int idle_nodes = 0;
    printf("\n%-16s %-8s %-8s %8s %7s %9s\n", "node", "role", "healthy",
           "queries", "errors", "avg ms");
    for (int i = 0; i < sy_node_count(a->engine); i++) {
        sy_node_stats st;
        if (sy_node_stats_get(a->engine, i, &st) != 0)
            continue;
        printf("%-16s %-8s %-8s %8llu %7llu %9.2f\n", st.name, st.role,
               st.healthy ? "yes" : "no", (unsigned long long)st.queries,
               (unsigned long long)st.errors, st.latency_avg_ms);
        if (st.queries == 0)
            idle_nodes++;
    }
    sy_engine_stats es;
    if (sy_engine_stats_get(a->engine, &es) == 0) {
        printf("engine: %llu queries, %llu refused by the policy, "
               "routing %.1f us on average\n",
               (unsigned long long)es.queries, (unsigned long long)es.rejected,
               es.route_avg_us);
        expect(a, es.rejected == 1, "expected exactly one refused query", NULL);
    }
    return idle_nodes;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG.lua\n", argv[0]);
        return 2;
    }

    /* The script.  Reads that must run on a replica ask the server
     * (pg_is_in_recovery) so a wrong route shows as a wrong value too. */
    const step steps[] = {
        {"create table", "CREATE TABLE IF NOT EXISTS sy_example_orders ("
                         "id serial PRIMARY KEY, tenant text NOT NULL, "
                         "total numeric NOT NULL)",
         0, {NULL, NULL}, 0, ON_PRIMARY, NULL, NULL, -1},
        {"write", "INSERT INTO sy_example_orders (tenant, total) "
                  "VALUES ($1, $2) RETURNING tenant",
         2, {"acme", "12.50"}, 0, ON_PRIMARY, "acme", NULL, -1},
        {"parameterised read", "SELECT format('hello, %s', $1::text)",
         1, {"embedded", NULL}, 0, ON_REPLICA, "hello, embedded", NULL, -1},
        {"next read (round robin)", "SELECT pg_is_in_recovery()",
         0, {NULL, NULL}, 0, ON_OTHER_REPLICA, "t", NULL, -1},
        {"tenant read (hint)", "/* sy: tenant=acme */ SELECT pg_is_in_recovery()",
         0, {NULL, NULL}, 0, ON_TENANT_REPLICA, "t", NULL, -1},
        {"tx: BEGIN", "BEGIN", 0, {NULL, NULL}, 1, ON_PRIMARY, "BEGIN", NULL, 1},
        {"tx: INSERT", "INSERT INTO sy_example_orders (tenant, total) "
                       "VALUES ($1, $2)",
         2, {"globex", "99.90"}, 1, ON_PRIMARY, "INSERT 0 1", NULL, 1},
        /* currval() is per connection: it answers only on the connection
         * that ran the INSERT, which the session keeps pinned. */
        {"tx: SELECT", "SELECT total FROM sy_example_orders "
                       "WHERE id = currval('sy_example_orders_id_seq')",
         0, {NULL, NULL}, 1, ON_PRIMARY, "99.90", NULL, 1},
        {"tx: COMMIT", "COMMIT", 0, {NULL, NULL}, 1, ON_PRIMARY, "COMMIT", NULL, 0},
        {"bounded update", "UPDATE sy_example_orders SET total = total + 1 "
                           "WHERE tenant = $1",
         1, {"acme", NULL}, 0, ON_PRIMARY, NULL, NULL, -1},
        {"unbounded delete", "DELETE FROM sy_example_orders",
         0, {NULL, NULL}, 0, REFUSED, NULL, "42501", -1},
    };

    app a = {.steps = steps, .nsteps = (int)(sizeof steps / sizeof steps[0])};
    char err[1024];
    sy_engine_options opts = {
        .config_path = argv[1],
        .loop = NULL, /* the engine creates, owns and runs its loop */
        .on_event = on_event,
        .event_user_data = &a,
        .log_level = SY_LOG_WARN,
    };
    int rc = sy_engine_new(&a.engine, &opts, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "sy_engine_new: %s: %s\n", sy_strerror(rc), err);
        return 1;
    }
    rc = sy_session_new(a.engine, &a.session, "example", NULL,
                        "embedded_example");
    if (rc != 0) {
        fprintf(stderr, "sy_session_new: %s\n", sy_strerror(rc));
        sy_engine_free(a.engine);
        return 1;
    }

    run_next(&a);
    rc = sy_engine_run(a.engine);
    expect(&a, rc == 0, "sy_engine_run failed", sy_strerror(rc));
    expect(&a, a.stopped, "the engine did not report that it stopped", NULL);

    int idle_nodes = print_stats(&a);
    expect(&a, idle_nodes == 0, "expected every node to serve a query", NULL);

    /* Sessions go before their engine.  The transaction was committed, so
     * there is nothing to roll back. */
    sy_session_free(a.session);
    sy_engine_free(a.engine);

    if (a.failures == 0) {
        printf("\nok: all %d expectations held\n", a.checks);
        return 0;
    }
    printf("\nFAILED: %d of %d expectations did not hold\n", a.failures,
           a.checks);
    return 1;
}
