/*
 * relay_backend.c - transaction pooling, the backend half: the proxy's
 * state of each relay connection (sy_link), writing client messages to it,
 * reading its replies and relaying them as the bytes they arrived as.
 *
 * Every message sent has an entry in the link's expected-reply queue, so
 * the proxy knows which replies are the client's, which it must drop (a
 * statement it prepared, the parameters it replayed) and where the replies
 * it makes itself go (SY_X_FAKE).  Only the headers of most messages are
 * read; DataRow and CopyData larger than the buffer stream through.
 */
#include "proxy.h"

#include <stdlib.h>
#include <string.h>

/* A streamed message is relayed in pieces only past this size; smaller
 * ones wait until whole (cheaper than tracking a piece). */
#define STREAM_THRESHOLD 8192

static void backend_read(sy_link *l);
static void clear_queue(sy_link *l);
static void drop_staged(sy_link *l);
static int flush_run(sy_link *l);

sy_link *sy__link_of(sy_proxy *px, sy_conn *conn)
{
    if (conn->proxy_state)
        return conn->proxy_state;
    sy_link *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->q_cap = 16;
    l->q = malloc(l->q_cap * sizeof *l->q);
    if (!l->q) {
        free(l);
        return NULL;
    }
    l->conn = conn;
    l->proxy = px;
    l->tx_status = 'I';
    l->synced = 1;
    sy__buf_init(&l->out);
    sy__buf_init(&l->in);
    sy__buf_init(&l->fakes);
    sy__params_init(&l->params);
    sy_list_init(&l->stmt_lru);
    conn->proxy_state = l;
    return l;
}

void sy__link_closed(void *data, sy_conn *conn)
{
    sy_proxy *px = data;
    sy_link *l = conn->proxy_state;
    if (!l)
        return;
    conn->proxy_state = NULL;
    sy_client *c = l->client;
    if (c) {
        /* The pool closed it under the client (engine going away). */
        l->client = NULL;
        c->linked = NULL;
        if (c->node) {
            sy__node_unref(c->node);
            c->node = NULL;
        }
        sy__client_fatal(c, "08006", "the server connection was closed");
    }
    if (l->cancel) {
        sy__relay_cancel_abort(l->cancel);
        free(l->cancel);
    }
    clear_queue(l);
    sy__link_stmt_clear(px, l);
    drop_staged(l);
    free(l->staged);
    sy__params_free(&l->params);
    sy__buf_free(&l->out);
    sy__buf_free(&l->in);
    sy__buf_free(&l->fakes);
    free(l->q);
    free(l);
}

/* ------------------------------------------------------------ queue */

static sy_expect *head(sy_link *l)
{
    return l->q_len ? &l->q[l->q_head] : NULL;
}

/* Pops the head; a Parse that did not complete leaves its statement
 * unprepared on the backend. */
static void pop_failed(sy_link *l)
{
    sy_expect *h = &l->q[l->q_head];
    if (!h->stmt)
        return;
    if (h->kind == SY_X_PARSE)
        sy__link_stmt_forget(l->proxy, l, h->stmt);
    else if (h->kind == SY_X_CLOSE) /* the eviction did not happen */
        sy__link_stmt_restore(l->proxy, l, h->stmt);
}

/* CopyInResponse to an Execute: the server ignores the Syncs sent behind
 * it until the copy ends (the client sends its own after CopyDone), so
 * they get no reply and leave the queue. */
static void drop_syncs_after_head(sy_link *l)
{
    unsigned kept = 1;
    for (unsigned i = 1; i < l->q_len; i++) {
        sy_expect e = l->q[(l->q_head + i) % l->q_cap];
        if (e.kind == SY_X_SYNC) {
            sy__stmt_unref(l->proxy, e.stmt);
            sy__tracked_set_free(e.set);
            continue;
        }
        l->q[(l->q_head + kept) % l->q_cap] = e;
        kept++;
    }
    l->q_len = kept;
}

/* Drops what every queued entry holds (statement references). */
static void clear_queue(sy_link *l)
{
    for (unsigned i = 0; i < l->q_len; i++) {
        sy_expect *e = &l->q[(l->q_head + i) % l->q_cap];
        sy__stmt_unref(l->proxy, e->stmt);
        e->stmt = NULL;
        sy__tracked_set_free(e->set);
        e->set = NULL;
    }
    l->q_head = l->q_len = 0;
}

static void pop(sy_link *l)
{
    sy_expect *h = &l->q[l->q_head];
    if (h->stmt) { /* most entries hold neither */
        sy__stmt_unref(l->proxy, h->stmt);
        h->stmt = NULL;
    }
    if (h->set) {
        sy__tracked_set_free(h->set);
        h->set = NULL;
    }
    if (++l->q_head == l->q_cap)
        l->q_head = 0;
    if (--l->q_len == 0) {
        l->q_head = 0;
        sy__buf_reset(&l->fakes);
    }
}

static int push(sy_link *l, sy_expect x)
{
    if (l->q_len == l->q_cap) {
        unsigned cap = l->q_cap * 2;
        sy_expect *q = malloc(cap * sizeof *q);
        if (!q)
            return -1;
        for (unsigned i = 0; i < l->q_len; i++)
            q[i] = l->q[(l->q_head + i) % l->q_cap];
        free(l->q);
        l->q = q;
        l->q_cap = cap;
        l->q_head = 0;
    }
    unsigned at = l->q_head + l->q_len;
    l->q[at < l->q_cap ? at : at - l->q_cap] = x;
    l->q_len++;
    return 0;
}

int sy__link_expect(sy_link *l, uint8_t kind, uint8_t flags)
{
    l->synced = 0;
    sy_expect x = {.kind = kind, .flags = flags};
    return push(l, x);
}

int sy__link_expect_fake(sy_link *l, const char *bytes, size_t len)
{
    if (l->q_len == 0)
        return sy__buf_append(&l->client->out, bytes, len);
    sy_expect x = {.kind = SY_X_FAKE, .fake_off = (uint32_t)l->fakes.len,
                   .fake_len = (uint32_t)len};
    if (sy__buf_append(&l->fakes, bytes, len) < 0)
        return -1;
    return push(l, x);
}

/* Replies the proxy made that are now next in line. */
static int emit_fakes(sy_link *l)
{
    sy_expect *h;
    while ((h = head(l)) != NULL && h->kind == SY_X_FAKE) {
        if (l->client && (flush_run(l) < 0 ||
                          sy__buf_append(&l->client->out, l->fakes.buf + h->fake_off,
                                         h->fake_len) < 0))
            return -1;
        pop(l);
    }
    return 0;
}

/* ------------------------------------------------------------ release */

void sy__link_release(sy_link *l, int broken)
{
    sy_client *c = l->client;
    /* The client's node reference is dropped after the connection went
     * back: the last reference closes the node's pools, this connection
     * (and so this link) included. */
    sy_node *node = l->held_node;
    l->held_node = NULL;
    if (c) {
        c->linked = NULL;
        l->client = NULL;
        node = c->node;
        c->node = NULL;
    }
    if (l->cancel && !broken) {
        /* The cancel must reach the server before anyone else's query. */
        l->release_after_cancel = 1;
        l->held_node = node;
        return;
    }
    sy_conn *conn = l->conn;
    if (!broken) {
        sy__buf_reset(&l->in);
        l->pass_remaining = 0;
        clear_queue(l);
        sy__buf_reset(&l->fakes);
        drop_staged(l);
        l->tx_failed = l->tx_rolled_back = 0;
        l->synced = 1;
        if (l->out.cap > 65536) {
            sy__buf_free(&l->out);
        } else {
            sy__buf_reset(&l->out);
        }
        l->out_off = 0;
        l->read_paused = 0;
        l->write_blocked = 0;
        sy__conn_set_watch(conn, EV_READ);
    }
    sy__pool_release(conn->pool, conn, broken); /* may free l */
    sy__node_unref(node);
}

static void backend_lost(sy_link *l, const char *reason)
{
    /* reason may be the relay's own error text, which the release below
     * frees: copy it first. */
    char why[256];
    sy__fmt(why, sizeof why, "%s", reason);
    sy_client *c = l->client;
    sy_conn *conn = l->conn;
    sy__log(conn->pool->node->engine, SY_LOG_WARN, "node %s: server connection lost: %s",
            conn->pool->node->full_name, why);
    if (l->cancel) {
        sy__relay_cancel_abort(l->cancel);
        free(l->cancel);
        l->cancel = NULL;
    }
    sy__link_release(l, 1);
    if (c)
        sy__client_fatal(c, "08006", "the server connection was lost: %s", why);
}

/* ------------------------------------------------------------ writing */

static void update_watch(sy_link *l)
{
    int ev = (l->read_paused ? 0 : EV_READ) | (l->write_blocked ? EV_WRITE : 0);
    sy__conn_set_watch(l->conn, ev);
}

int sy__link_flush(sy_link *l)
{
    while (l->out_off < l->out.len) {
        ptrdiff_t n = sy__relay_write(l->conn->relay, l->out.buf + l->out_off,
                                      l->out.len - l->out_off);
        if (n == SY_RELAY_WANT_READ || n == SY_RELAY_WANT_WRITE) {
            if (!l->write_blocked) {
                l->write_blocked = 1;
                update_watch(l);
            }
            return 0;
        }
        if (n <= 0) {
            backend_lost(l, sy__relay_error(l->conn->relay)[0]
                                ? sy__relay_error(l->conn->relay) : "write failed");
            return -1;
        }
        l->out_off += (size_t)n;
    }
    sy__buf_reset(&l->out);
    l->out_off = 0;
    if (l->write_blocked) {
        l->write_blocked = 0;
        update_watch(l);
        if (l->client)
            sy__client_update_reading(l->client); /* it may have been paused */
    }
    return 0;
}

/* ------------------------------------------------------------ reading */

/* Parameters a client may set and the server reports as they change;
 * recorded so the next backend gets them too. */
static int reported_settable(const char *name)
{
    static const char *const names[] = {
        "application_name", "client_encoding", "datestyle", "intervalstyle",
        "timezone", "standard_conforming_strings", NULL};
    for (int i = 0; names[i]; i++)
        if (strcasecmp(name, names[i]) == 0)
            return 1;
    return 0;
}

/* A whole message of total bytes (type, length, payload) as the codec's
 * framed view, for its parsers. */
static sy_pg_msg framed(const char *msg, size_t total)
{
    sy_pg_msg m = {.type = (uint8_t)msg[0], .len = (uint32_t)(total - 1),
                   .payload = msg + 5, .payload_len = total - 5, .total = total};
    return m;
}

static void record_parameter(sy_link *l, const char *msg, size_t total)
{
    sy_pg_msg m = framed(msg, total);
    sy_pg_span name, value;
    if (sy__pg_parse_parameter_status(&m, &name, &value, NULL) < 0 ||
        !reported_settable(name.p))
        return;
    sy__params_set_literal(&l->client->params, name.p, value.p);
    sy__params_set_literal(&l->params, name.p, value.p);
}

/* A client SET / RESET took effect on the backend (client and backend
 * alike now have it). */
static void apply_set(sy_link *l, const sy_tracked_set *t)
{
    sy_client *c = l->client;
    size_t nl = strlen(t->name);
    if (t->kind == SY_SET_VALUE) {
        sy__params_set(&c->params, t->name, nl, t->value, strlen(t->value));
        sy__params_set(&l->params, t->name, nl, t->value, strlen(t->value));
    } else if (t->kind == SY_SET_RESET) {
        sy__params_set(&c->params, t->name, nl, NULL, 0);
        sy__params_set(&l->params, t->name, nl, NULL, 0);
    } else if (t->kind == SY_SET_RESET_ALL) {
        sy__params_copy(&c->params, &c->startup_params);
        sy__params_free(&l->params);
    }
}

static void drop_staged(sy_link *l)
{
    for (int i = 0; i < l->nstaged; i++)
        sy__tracked_set_free(l->staged[i]);
    l->nstaged = 0;
}

/* A SET's CommandComplete: staged until its transaction's outcome. */
static void stage_set(sy_link *l, sy_expect *h)
{
    if (l->nstaged == l->staged_cap) {
        int cap = l->staged_cap ? l->staged_cap * 2 : 4;
        sy_tracked_set **v = realloc(l->staged, (size_t)cap * sizeof *v);
        if (!v)
            return; /* dropped: the next backend may not get this SET */
        l->staged = v;
        l->staged_cap = cap;
    }
    l->staged[l->nstaged++] = h->set;
    h->set = NULL;
}

/* ReadyForQuery: at 'I' the transaction (explicit, or the implicit one of
 * a pipeline) is over: its SETs hold if it committed. */
static void transaction_outcome(sy_link *l, char status)
{
    if (status != 'I')
        return;
    if (!l->tx_failed && !l->tx_rolled_back && l->client)
        for (int i = 0; i < l->nstaged; i++)
            apply_set(l, l->staged[i]);
    drop_staged(l);
    l->tx_failed = l->tx_rolled_back = 0;
}

/* Messages relayed as they are go to the client's buffer in one copy per
 * run of them: relay_out only extends the run while the next message
 * follows the last in the same read, and the run is copied before
 * anything else is written to the client and before process() returns
 * (the bytes live in the read buffer). */
static int flush_run(sy_link *l)
{
    size_t n = l->run_len;
    l->run_len = 0;
    return n ? sy__buf_append(&l->client->out, l->run, n) : 0;
}

static int relay_out(sy_link *l, const char *p, size_t n)
{
    if (l->run_len && l->run + l->run_len == p) {
        l->run_len += n;
        return 0;
    }
    if (flush_run(l) < 0)
        return -1;
    l->run = p;
    l->run_len = n;
    return 0;
}

/* One whole backend message. */
static int handle_message(sy_link *l, const char *msg, size_t total)
{
    uint8_t type = (uint8_t)msg[0];
    sy_expect *h = head(l);
    int skip = h && (h->flags & SY_XF_SKIP);
    switch (type) {
    case SY_PG_READY:
        if (total >= 6) {
            l->tx_status = msg[5];
            transaction_outcome(l, l->tx_status);
        }
        l->synced = l->q_len <= 1;
        if (!skip && relay_out(l, msg, total) < 0)
            return -1;
        if (h)
            pop(l);
        return emit_fakes(l);
    case SY_PG_ERROR_RESPONSE:
        if (!(h && (h->flags & SY_XF_SKIP_ERRORS)) && relay_out(l, msg, total) < 0)
            return -1;
        if (!(h && (h->flags & SY_XF_SKIP_ERRORS)))
            l->tx_failed = 1;
        if (h && (h->flags & SY_XF_REPLAY)) {
            /* Some SET of the replay failed (a bad startup value...): what
             * this backend now has is unknown, so it is not reused. */
            sy_pg_msg em = framed(msg, total);
            sy_pg_span why = {"", 0};
            sy__pg_find_field(&em, 'M', &why);
            sy__log(l->proxy->engine, SY_LOG_WARN,
                    "node %s: session parameters of client %u not applied: %.*s",
                    l->conn->pool->node->full_name, l->client ? l->client->pid : 0,
                    (int)why.len, why.p);
            l->conn->tainted = 1;
        }
        if (!h)
            return 0;
        if (h->kind == SY_X_QUERY || h->kind == SY_X_SYNC)
            return 0;
        /* The server skips everything up to Sync: so do the replies the
         * proxy would have made there, and Parses there never happened. */
        while ((h = head(l)) != NULL && h->kind != SY_X_SYNC) {
            pop_failed(l);
            pop(l);
        }
        return 0;
    case SY_PG_PARSE_COMPLETE:
    case SY_PG_BIND_COMPLETE:
    case SY_PG_CLOSE_COMPLETE:
        if (!skip && relay_out(l, msg, total) < 0)
            return -1;
        if (h)
            pop(l);
        return emit_fakes(l);
    case SY_PG_ROW_DESCRIPTION:
    case SY_PG_NO_DATA:
        if (!skip && relay_out(l, msg, total) < 0)
            return -1;
        if (h && h->kind == SY_X_DESCRIBE) {
            pop(l);
            return emit_fakes(l);
        }
        return 0;
    case SY_PG_COMMAND_COMPLETE:
        if (!skip && relay_out(l, msg, total) < 0)
            return -1;
        if (h && h->set)
            stage_set(l, h);
        if (total >= 14 && memcmp(msg + 5, "ROLLBACK", 8) == 0)
            l->tx_rolled_back = 1;
        if (h && h->kind == SY_X_EXECUTE) {
            pop(l);
            return emit_fakes(l);
        }
        return 0;
    case SY_PG_EMPTY_QUERY:
    case SY_PG_PORTAL_SUSPENDED:
        if (!skip && relay_out(l, msg, total) < 0)
            return -1;
        if (h && h->kind == SY_X_EXECUTE) {
            pop(l);
            return emit_fakes(l);
        }
        return 0;
    case SY_PG_PARAMETER_STATUS:
        record_parameter(l, msg, total);
        return relay_out(l, msg, total);
    case 'G': /* CopyInResponse */
        if (h && h->kind == SY_X_EXECUTE)
            drop_syncs_after_head(l);
        return skip ? 0 : relay_out(l, msg, total);
    default:
        return skip ? 0 : relay_out(l, msg, total);
    }
}

/* Processes bytes read from the backend; keeps an incomplete message. */
static int process(sy_link *l, const char *data, size_t n)
{
    l->run_len = 0; /* a run never outlives the call that gathered it */
    const char *p = data;
    size_t len = n;
    int from_in = l->in.len > 0;
    if (from_in) {
        if (sy__buf_append(&l->in, data, n) < 0)
            return -1;
        p = l->in.buf;
        len = l->in.len;
    }
    size_t pos = 0;
    while (pos < len) {
        if (l->pass_remaining > 0) {
            size_t k = len - pos < l->pass_remaining ? len - pos : l->pass_remaining;
            if (l->pass_forward && relay_out(l, p + pos, k) < 0)
                return -1;
            pos += k;
            l->pass_remaining -= k;
            continue;
        }
        if (len - pos < 5)
            break;
        uint8_t type = (uint8_t)p[pos];
        uint32_t mlen = sy__pg_be32(p + pos + 1);
        if (mlen < 4) {
            if (flush_run(l) < 0)
                return -1;
            backend_lost(l, "malformed message from the server");
            return -2;
        }
        size_t total = (size_t)mlen + 1;
        if (len - pos < total) {
            if ((type == SY_PG_DATA_ROW || type == SY_PG_COPY_DATA) &&
                total > STREAM_THRESHOLD) {
                sy_expect *h = head(l);
                l->pass_forward = !(h && (h->flags & SY_XF_SKIP));
                if (l->pass_forward && relay_out(l, p + pos, len - pos) < 0)
                    return -1;
                l->pass_remaining = total - (len - pos);
                pos = len;
            }
            break;
        }
        if (handle_message(l, p + pos, total) < 0)
            return -1;
        pos += total;
    }
    if (flush_run(l) < 0)
        return -1;
    if (from_in) {
        memmove(l->in.buf, l->in.buf + pos, len - pos);
        l->in.len = len - pos;
    } else if (pos < len && sy__buf_append(&l->in, p + pos, len - pos) < 0) {
        return -1;
    }
    return 0;
}

static void backend_read(sy_link *l)
{
    sy_proxy *px = l->proxy;
    char *buf = sy__proxy_scratch(px);
    size_t cap = px->scratch_cap;
    while (!l->read_paused) {
        ptrdiff_t n = sy__relay_read(l->conn->relay, buf, cap);
        if (n == SY_RELAY_WANT_READ || n == SY_RELAY_WANT_WRITE)
            break;
        if (n <= 0) {
            backend_lost(l, n == 0 ? "the server closed the connection"
                                   : sy__relay_error(l->conn->relay));
            return;
        }
        if (!l->client)
            continue; /* released while a cancel is in flight: drop */
        int rc = process(l, buf, (size_t)n);
        if (rc == -2)
            return;
        int drained = (size_t)n < cap && !sy__relay_pending(l->conn->relay);
        if (rc < 0) {
            sy_client *c = l->client;
            sy__link_release(l, 1);
            sy__client_close(c, "out of memory");
            return;
        }
        sy_client *c = l->client;
        if (c->out.len - c->out_off > px->set.client_buffer) {
            /* Past the client's buffer: hand it over now; if the client
             * cannot take it, stop reading the server until it has (the
             * client's write watcher resumes us). */
            if (sy__client_flush(c) < 0)
                return; /* the client is gone, and with it this link */
            if (c->out.len - c->out_off > px->set.client_buffer) {
                l->read_paused = 1;
                update_watch(l);
            }
        }
        if (drained)
            break; /* a short read emptied the socket: skip the EAGAIN call */
    }
    sy_client *c = l->client;
    if (!c)
        return;
    if (sy__client_flush(c) < 0)
        return;
    sy__relay_ready(l);
}

void sy__link_resume(sy_link *l)
{
    if (!l->read_paused)
        return;
    l->read_paused = 0;
    update_watch(l);
    /* Read on the next loop pass, not here: the caller may be inside this
     * link's own read (its final client flush), and TLS may hold bytes the
     * socket no longer signals. */
    ev_feed_event(l->proxy->loop, &l->conn->io, EV_READ);
}

void sy__link_io(void *data, sy_conn *conn, int revents)
{
    (void)data;
    sy_link *l = conn->proxy_state;
    if (!l) {
        /* Held without proxy state cannot happen; never spin on it. */
        sy__conn_set_watch(conn, 0);
        return;
    }
    if ((revents & EV_WRITE) && sy__link_flush(l) < 0)
        return;
    if (revents & EV_READ)
        backend_read(l);
}
