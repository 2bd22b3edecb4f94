/*
 * session.c - sy_session: the identity a policy sees (user, database,
 * application name, custom variables) and the connection a transaction or
 * session-level state pins.  A transaction is tracked with libpq's
 * PQtransactionStatus after each statement, so BEGIN inside a multi-statement
 * string or a function is followed as faithfully as an explicit BEGIN.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int sy_session_new(sy_engine *e, sy_session **out, const char *user,
                   const char *database, const char *application_name)
{
    if (!out)
        return SY_EINVAL;
    *out = NULL;
    if (!e)
        return SY_EINVAL;
    if (SY_ENGINE_CLOSING(e))
        return SY_ESTOPPED;
    sy_session *s = calloc(1, sizeof *s);
    if (!s)
        return SY_ENOMEM;
    s->engine = e;
    s->write_lsn = -1;
    s->write_lsn_shown = -2; /* a fresh q.session has no write_lsn */
    s->user = sy__strdup(user);
    s->database = sy__strdup(database);
    s->application_name = sy__strdup(application_name);
    if ((user && !s->user) || (database && !s->database) ||
        (application_name && !s->application_name)) {
        sy__session_destroy(s);
        return SY_ENOMEM;
    }
    sy_list_init(&s->link);
    sy_list_insert_tail(&e->sessions, &s->link);
    *out = s;
    return 0;
}

int sy_session_set(sy_session *s, const char *name, const char *value)
{
    if (!s || !name || !*name)
        return SY_EINVAL;
    for (int i = 0; i < s->nvars; i++) {
        if (strcmp(s->var_names[i], name) != 0)
            continue;
        if (!value) {
            free(s->var_names[i]);
            free(s->var_values[i]);
            s->nvars--;
            s->var_names[i] = s->var_names[s->nvars];
            s->var_values[i] = s->var_values[s->nvars];
        } else {
            char *v = sy__strdup(value);
            if (!v)
                return SY_ENOMEM;
            free(s->var_values[i]);
            s->var_values[i] = v;
        }
        s->lua_generation = 0; /* the cached q.session is stale */
        return 0;
    }
    if (!value)
        return 0;
    if (s->nvars == s->vars_cap) {
        int cap = s->vars_cap ? s->vars_cap * 2 : 4;
        char **n = realloc(s->var_names, (size_t)cap * sizeof *n);
        if (!n)
            return SY_ENOMEM;
        s->var_names = n;
        char **v = realloc(s->var_values, (size_t)cap * sizeof *v);
        if (!v)
            return SY_ENOMEM;
        s->var_values = v;
        s->vars_cap = cap;
    }
    char *n = sy__strdup(name), *v = sy__strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return SY_ENOMEM;
    }
    s->var_names[s->nvars] = n;
    s->var_values[s->nvars] = v;
    s->nvars++;
    s->lua_generation = 0;
    return 0;
}

int sy_session_pinned(const sy_session *s)
{
    return s && s->pinned != NULL;
}

/* Gives conn back to its pool (node's) and forgets it if the session held
 * it.  The session's reference on the node goes last: the pool lives in it. */
static void let_go(sy_session *s, sy_conn *conn, sy_node *node, int broken)
{
    sy_node *held = s->pinned == conn ? s->pinned_node : NULL;
    if (held) {
        s->pinned = NULL;
        s->pinned_node = NULL;
    }
    s->in_tx = 0;
    s->sticky = 0;
    sy__pool_release(&node->pool, conn, broken);
    sy__node_unref(held);
}

static void unpin(sy_session *s, int close_conn)
{
    if (!s->pinned)
        return;
    if (close_conn)
        s->pinned->tainted = 1;
    let_go(s, s->pinned, s->pinned_node, 0);
}

void sy__session_statement(sy_session *s, sy_node *node, int may_write, int in_tx)
{
    /* Only a primary takes writes: a transaction a policy sent to a
     * replica (BEGIN READ ONLY) wrote nothing anyone must wait for. */
    if (node->role != SY_ROLE_PRIMARY) {
        s->write_open = 0;
        return;
    }
    s->write_open |= may_write || in_tx;
    if (in_tx || !s->write_open)
        return;
    s->write_open = 0;
    s->write_at = sy__monotonic();
    s->write_lsn = -1;
    if (!s->write_node || strcmp(s->write_node, node->full_name) != 0) {
        free(s->write_node);
        s->write_node = sy__strdup(node->full_name); /* NULL: forgotten, reads stay safe */
    }
}

double sy__session_write_lsn(sy_session *s)
{
    if (!s->write_node)
        return s->write_at > 0 ? -1 : -2;
    if (s->write_lsn < 0) {
        /* Polls see positions no later than the server's, so a poll sent
         * after the commit bounds it from above: replicas that replayed
         * that far have the write.  A node a reload dropped bounds
         * nothing: its reads stay on the primary until the next write. */
        const sy_node *n = s->engine && s->engine->lua
                               ? sy__topology_find(&s->engine->lua->topo, s->write_node)
                               : NULL;
        const sy_health *h = n ? &n->health : NULL;
        if (h && h->polls_ok > 0 && h->ok_sent_at > s->write_at && !h->in_recovery)
            s->write_lsn = h->wal_position;
    }
    return s->write_lsn;
}

void sy__session_after_query(sy_session *s, sy_request *req, sy_conn *conn,
                             int broken)
{
    sy_node *node = req->node;
    int may_write = req->stmt.kind != SY_KIND_READ;
    if (broken) {
        /* Whether it committed is unknown: count it as a write. */
        sy__session_statement(s, node, may_write, 0);
        let_go(s, conn, node, 1);
        return;
    }
    PGTransactionStatusType ts = PQtransactionStatus(conn->pg);
    s->in_tx = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
    sy__session_statement(s, node, may_write, s->in_tx);
    if (req->stmt.kind == SY_KIND_SESSION ||
        (req->stmt.flags & (SY_STMT_TEMP_TABLE | SY_STMT_ADVISORY_LOCK)))
        s->sticky = 1;
    if (s->in_tx || s->sticky) {
        if (!s->pinned) {
            s->pinned = conn;
            s->pinned_node = node;
            sy__node_ref(node);
        }
        return;
    }
    let_go(s, conn, node, 0);
}

void sy__session_release(sy_session *s)
{
    unpin(s, 1);
}

void sy__session_detach(sy_session *s)
{
    if (!s->engine)
        return;
    /* An open transaction or session state must never reach another user:
     * the connection is closed rather than returned. */
    unpin(s, 1);
    if (s->engine->lua)
        sy__lua_forget_session(s->engine->lua, s);
    sy_list_remove(&s->link);
    s->engine = NULL;
}

void sy__session_free_identity(sy_session *s)
{
    for (int i = 0; i < s->nvars; i++) {
        free(s->var_names[i]);
        free(s->var_values[i]);
    }
    free(s->var_names);
    free(s->var_values);
    free(s->user);
    free(s->database);
    free(s->application_name);
    free(s->write_node);
}

void sy__session_destroy(sy_session *s)
{
    sy__session_detach(s);
    sy__session_free_identity(s);
    free(s);
}

void sy_session_free(sy_session *s)
{
    if (!s)
        return;
    if (s->inflight) {
        s->freeing = 1; /* finished after its callback fires */
        return;
    }
    sy__session_destroy(s);
}
