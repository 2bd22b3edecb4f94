/*
 * client.c - one client connection of the proxy: its transport (plain or
 * TLS), its buffers, its timer, the startup phase (SSLRequest,
 * GSSENCRequest, CancelRequest, StartupMessage) and closing.  Logged-in
 * traffic goes to relay.c, passwords to client_auth.c.
 *
 * Closing never frees at once: the client is cut from every watcher and
 * list and its memory goes on the next loop turn, so a caller several
 * frames up can still look at c->state (SY_CLIENT_CLOSING) and stop.
 */
#include "proxy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static int tls_step(sy_client *c);
static void read_available(sy_client *c);

#define CLOSED(c) ((c)->fd < 0)

void sy__client_accept(sy_proxy *px, int fd, int unix_socket, const char *peer)
{
    sy_client *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->proxy = px;
    c->fd = fd;
    c->unix_socket = unix_socket;
    sy__fmt(c->peer, sizeof c->peer, "%s", peer);
    c->state = SY_CLIENT_STARTUP;
    c->connected_at = ev_now(px->loop);
    c->tx_status = 'I';
    sy__buf_init(&c->in);
    sy__buf_init(&c->out);
    sy__buf_init(&c->batch);
    sy__params_init(&c->startup_params);
    sy__params_init(&c->params);
    sy_list_init(&c->login_link);
    sy_list_insert_tail(&px->clients, &c->link);
    px->nclients++;
    px->stats.clients_total++;
    ev_io_init(&c->rio, read_cb, fd, EV_READ);
    ev_io_init(&c->wio, write_cb, fd, EV_WRITE);
    ev_init(&c->timer, timer_cb);
    ev_io_start(px->loop, &c->rio);
    sy__client_arm_timer(c);
}

static void free_client(sy_client *c)
{
    sy__buf_free(&c->in);
    sy__buf_free(&c->out);
    sy__buf_free(&c->batch);
    sy__params_free(&c->startup_params);
    sy__params_free(&c->params);
    sy__client_stmt_clear(c);
    sy__tracked_set_free(c->unnamed_set);
    sy__scram_free(c->scram);
    sy_session_free(c->session);
    free(c->user);
    free(c->database);
    free(c);
}

void sy__client_close(sy_client *c, const char *why)
{
    if (CLOSED(c))
        return;
    sy_proxy *px = c->proxy;
    sy__log(px->engine, SY_LOG_DEBUG, "client %u (%s) closed: %s", c->pid, c->peer,
            why ? why : "");
    /* Before the state changes: a client waiting for a backend must leave
     * the pool's wait queue (its waiter lives in this memory). */
    sy__relay_client_gone(c);
    c->state = SY_CLIENT_CLOSING;
    sy__client_auth_forget(c);
    sy_list_remove(&c->login_link);
    ev_io_stop(px->loop, &c->rio);
    ev_io_stop(px->loop, &c->wio);
    ev_timer_stop(px->loop, &c->timer);
    if (c->tls) {
        sy__tls_shutdown(c->tls); /* best effort: one try, never waits */
        sy__tls_stream_free(c->tls);
        c->tls = NULL;
    }
    close(c->fd);
    c->fd = -1;
    sy__proxy_forget_client(px, c);
    /* Freed on the next turn (proxy.c), never under a caller's feet. */
    ev_timer_set(&c->timer, 0., 0.);
    c->timer.data = c;
    ev_set_cb(&c->timer, timer_cb);
    ev_timer_start(px->loop, &c->timer);
}

static void send_error(sy_client *c, const char *severity, const char *sqlstate,
                       const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    sy_pg_notice_fields f = {.severity = severity, .sqlstate = sqlstate,
                             .message = msg};
    sy__pg_build_error(&c->out, &f);
}

void sy__client_fatal(sy_client *c, const char *sqlstate, const char *fmt, ...)
{
    if (CLOSED(c) || c->state == SY_CLIENT_CLOSING)
        return;
    va_list ap;
    va_start(ap, fmt);
    send_error(c, "FATAL", sqlstate, fmt, ap);
    va_end(ap);
    sy__relay_client_gone(c);
    sy_list_remove(&c->login_link);
    c->state = SY_CLIENT_CLOSING;
    ev_io_stop(c->proxy->loop, &c->rio);
    sy__client_flush(c);
}

void sy__client_error(sy_client *c, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_error(c, "ERROR", sqlstate, fmt, ap);
    va_end(ap);
    sy__pg_build_ready(&c->out, c->linked ? c->linked->tx_status : c->tx_status);
}

/* ------------------------------------------------------------ transport */

static ptrdiff_t transport_read(sy_client *c, char *buf, size_t cap)
{
    if (c->tls) {
        ptrdiff_t n = sy__tls_read(c->tls, buf, cap);
        return n == SY_TLS_WANT_READ || n == SY_TLS_WANT_WRITE ? -1 : n < 0 ? -2 : n;
    }
    ssize_t n = recv(c->fd, buf, cap, 0);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
    return n;
}

static ptrdiff_t transport_write(sy_client *c, const char *buf, size_t len)
{
    if (c->tls) {
        ptrdiff_t n = sy__tls_write(c->tls, buf, len);
        return n == SY_TLS_WANT_READ || n == SY_TLS_WANT_WRITE ? -1 : n < 0 ? -2 : n;
    }
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
    return n;
}

/* Idle clients keep no large buffers (5000 of them must fit in a few MB);
 * small ones stay, so a busy client does not reallocate every transaction. */
#define KEEP_BUFFER 4096

static void trim_buffer(sy_buf *b, size_t *off)
{
    if (b->len == *off && b->cap > KEEP_BUFFER) {
        sy__buf_free(b);
        *off = 0;
    }
}

static void trim_buffers(sy_client *c)
{
    if (c->state != SY_CLIENT_IDLE)
        return;
    size_t none = 0;
    trim_buffer(&c->in, &c->in_off);
    trim_buffer(&c->out, &c->out_off);
    trim_buffer(&c->batch, &none);
}

/* A backend paused for this client's output reads again once the output is
 * below half the buffer, whichever flush got it there: a link paused while
 * the client's writer is idle would wait forever. */
static void resume_backend(sy_client *c)
{
    if (c->linked && c->out.len - c->out_off < c->proxy->set.client_buffer / 2)
        sy__link_resume(c->linked);
}

int sy__client_flush(sy_client *c)
{
    if (CLOSED(c))
        return -1;
    while (c->out_off < c->out.len) {
        ptrdiff_t n = transport_write(c, c->out.buf + c->out_off, c->out.len - c->out_off);
        if (n == -1) {
            if (!ev_is_active(&c->wio))
                ev_io_start(c->proxy->loop, &c->wio);
            resume_backend(c);
            return 0;
        }
        if (n < 0) {
            sy__client_close(c, "write failed");
            return -1;
        }
        c->out_off += (size_t)n;
    }
    sy__buf_reset(&c->out);
    c->out_off = 0;
    if (ev_is_active(&c->wio))
        ev_io_stop(c->proxy->loop, &c->wio);
    resume_backend(c);
    if (c->state == SY_CLIENT_CLOSING) {
        sy__client_close(c, "closed after an error");
        return -1;
    }
    return 0;
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_client *c = sy_container_of(w, sy_client, wio);
    if (c->state == SY_CLIENT_TLS) {
        if (tls_step(c) == 0)
            read_available(c);
        return;
    }
    if (sy__client_flush(c) < 0)
        return;
    sy__client_update_reading(c);
}

/* ------------------------------------------------------------ timer */

void sy__client_arm_timer(sy_client *c)
{
    sy_proxy *px = c->proxy;
    double t = 0;
    switch (c->state) {
    case SY_CLIENT_STARTUP:
    case SY_CLIENT_TLS:
    case SY_CLIENT_AUTH:
    case SY_CLIENT_LOGIN_WAIT:
        if (ev_is_active(&c->timer))
            return; /* one deadline for the whole login */
        t = px->set.client_login;
        break;
    case SY_CLIENT_IDLE:
        t = px->set.client_idle;
        break;
    case SY_CLIENT_LINKED:
        /* Idle in a transaction, or in an unsynced pipeline (a portal a
         * Flush left open): the backend is the client's until it moves. */
        if (c->linked && c->linked->q_len == 0 &&
            (c->linked->tx_status != 'I' || !c->linked->synced))
            t = px->set.idle_in_transaction;
        break;
    default:
        break;
    }
    if (t <= 0) {
        if (ev_is_active(&c->timer))
            ev_timer_stop(px->loop, &c->timer);
        return;
    }
    ev_timer_stop(px->loop, &c->timer);
    ev_timer_set(&c->timer, t, 0.);
    ev_timer_start(px->loop, &c->timer);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_client *c = sy_container_of(w, sy_client, timer);
    if (CLOSED(c)) {
        free_client(c);
        return;
    }
    switch (c->state) {
    case SY_CLIENT_STARTUP:
    case SY_CLIENT_TLS:
    case SY_CLIENT_AUTH:
    case SY_CLIENT_LOGIN_WAIT:
        if (c->state == SY_CLIENT_STARTUP || c->state == SY_CLIENT_TLS)
            sy__client_close(c, "login timeout");
        else
            sy__client_fatal(c, "08006", "login timed out after %.3g s",
                             c->proxy->set.client_login);
        break;
    case SY_CLIENT_IDLE:
        sy__client_fatal(c, "57P05", "terminating connection due to idle timeout (%.3g s)",
                         c->proxy->set.client_idle);
        break;
    case SY_CLIENT_LINKED:
        sy__client_fatal(c, "25P03",
                         "terminating connection due to idle-in-transaction timeout (%.3g s)",
                         c->proxy->set.idle_in_transaction);
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------ startup */

static int add_startup_option(sy_client *c, const char *opt, size_t len)
{
    /* "-c name=value" or "--name=value" */
    const char *eq = memchr(opt, '=', len);
    if (!eq || eq == opt)
        return 0;
    char value[512];
    size_t vl = (size_t)(opt + len - eq - 1);
    if (vl >= sizeof value)
        return 0;
    memcpy(value, eq + 1, vl);
    value[vl] = '\0';
    char name[64];
    size_t nl = (size_t)(eq - opt);
    if (nl >= sizeof name)
        return 0;
    memcpy(name, opt, nl);
    name[nl] = '\0';
    for (char *s = name; *s; s++)
        if (*s == '-')
            *s = '_';
    return sy__params_set_literal(&c->startup_params, name, value);
}

/* "options": -c a=b -c x=y / --a=b, separated by blanks. */
static int parse_options(sy_client *c, const char *s)
{
    while (*s) {
        while (*s == ' ')
            s++;
        if (!*s)
            break;
        const char *e = s;
        while (*e && *e != ' ')
            e++;
        if (e - s == 2 && s[0] == '-' && s[1] == 'c') {
            s = e;
            while (*s == ' ')
                s++;
            e = s;
            while (*e && *e != ' ')
                e++;
            if (add_startup_option(c, s, (size_t)(e - s)) < 0)
                return -1;
        } else if (e - s > 2 && s[0] == '-' && s[1] == '-') {
            if (add_startup_option(c, s + 2, (size_t)(e - s - 2)) < 0)
                return -1;
        } else {
            sy__client_fatal(c, "42601", "invalid option in the options startup parameter");
            return -1;
        }
        s = e;
    }
    return 0;
}

static int handle_startup_params(sy_client *c, const sy_pg_startup *st)
{
    size_t pos = 0;
    sy_pg_span k, v;
    while (sy__pg_startup_next_param(st, &pos, &k, &v)) {
        if (strcmp(k.p, "user") == 0) {
            free(c->user);
            c->user = strndup(v.p, v.len);
        } else if (strcmp(k.p, "database") == 0) {
            free(c->database);
            c->database = strndup(v.p, v.len);
        } else if (strcmp(k.p, "options") == 0) {
            if (parse_options(c, v.p) < 0) {
                if (c->state != SY_CLIENT_CLOSING)
                    sy__client_fatal(c, "42704", "unrecognized configuration parameter in options");
                return -1;
            }
        } else if (strcmp(k.p, "replication") == 0) {
            if (strcmp(v.p, "false") != 0 && strcmp(v.p, "0") != 0 &&
                strcmp(v.p, "off") != 0 && strcmp(v.p, "no") != 0) {
                sy__client_fatal(c, "0A000",
                                 "switchyard does not relay replication connections");
                return -1;
            }
        } else if (strncmp(k.p, "_pq_.", 5) != 0) {
            int rc = sy__params_set_literal(&c->startup_params, k.p, v.p);
            if (rc == -2) {
                sy__client_fatal(c, "42704", "unrecognized configuration parameter \"%.64s\"",
                                 k.p);
                return -1;
            }
            if (rc < 0)
                return -1;
        }
    }
    if (!c->user || !c->user[0]) {
        sy__client_fatal(c, "28000", "no PostgreSQL user name specified in startup packet");
        return -1;
    }
    if (!c->database || !c->database[0]) {
        free(c->database);
        c->database = sy__strdup(c->user);
    }
    return sy__params_copy(&c->params, &c->startup_params);
}

static void handle_cancel(sy_client *c, const sy_pg_startup *st)
{
    sy_client *target = sy__proxy_find_pid(c->proxy, st->cancel_pid);
    /* A wrong key is ignored silently, as PostgreSQL does. */
    if (target && target->key == st->cancel_key)
        sy__relay_cancel_client(target);
    sy__client_close(c, "cancel request");
}

static int start_tls(sy_client *c, size_t buffered)
{
    char err[256];
    c->tls = sy__tls_stream_new(c->proxy->tls, c->fd, buffered, err, sizeof err);
    if (!c->tls) {
        sy__log(c->proxy->engine, SY_LOG_WARN, "client %s: TLS refused: %s", c->peer, err);
        sy__client_close(c, err);
        return -1;
    }
    c->state = SY_CLIENT_TLS;
    return 0;
}

/* One startup-phase packet; returns -1 when the client is gone or must
 * stop reading (TLS starts). */
static int handle_startup(sy_client *c, const sy_pg_startup *st, size_t left_after)
{
    sy_proxy *px = c->proxy;
    switch (st->kind) {
    case SY_PG_SSL_REQUEST: {
        int accept = px->tls != NULL && !c->tls;
        char reply = accept ? 'S' : 'N';
        if (send(c->fd, &reply, 1, MSG_NOSIGNAL) != 1) {
            sy__client_close(c, "write failed");
            return -1;
        }
        if (accept)
            return start_tls(c, left_after) < 0 ? -1 : 1;
        return 0;
    }
    case SY_PG_GSSENC_REQUEST: {
        char reply = 'N';
        if (send(c->fd, &reply, 1, MSG_NOSIGNAL) != 1) {
            sy__client_close(c, "write failed");
            return -1;
        }
        return 0;
    }
    case SY_PG_CANCEL_REQUEST:
        handle_cancel(c, st);
        return -1;
    case SY_PG_STARTUP:
        if (px->set.tls_mode == SY_TLS_MODE_REQUIRE && !c->tls && !c->unix_socket) {
            sy__client_fatal(c, "28000",
                             "switchyard requires TLS: connect with sslmode=require");
            return -1;
        }
        if (px->draining) {
            sy__client_fatal(c, "57P03", "switchyard is shutting down");
            return -1;
        }
        if (st->needs_negotiate) {
            static const char *const none[] = {NULL};
            sy__pg_build_negotiate(&c->out, 0, none);
        }
        if (handle_startup_params(c, st) < 0)
            return -1;
        c->admin = strcmp(c->database, px->set.admin_database) == 0;
        if (!c->admin && px->set.backend_database &&
            strcmp(c->database, px->set.backend_database) != 0) {
            sy__client_fatal(c, "3D000", "database \"%s\" does not exist",
                             c->database);
            return -1;
        }
        c->state = SY_CLIENT_AUTH;
        sy__client_auth_start(c);
        return CLOSED(c) || c->state == SY_CLIENT_CLOSING ? -1 : 0;
    }
    return 0;
}

/* ------------------------------------------------------------ input */

static int tls_step(sy_client *c)
{
    int r = sy__tls_handshake(c->tls);
    if (r == SY_TLS_DONE) {
        c->state = SY_CLIENT_STARTUP;
        if (ev_is_active(&c->wio))
            ev_io_stop(c->proxy->loop, &c->wio);
        return 0;
    }
    if (r == SY_TLS_WANT_WRITE) {
        if (!ev_is_active(&c->wio))
            ev_io_start(c->proxy->loop, &c->wio);
        return 1;
    }
    if (r == SY_TLS_WANT_READ) {
        if (ev_is_active(&c->wio))
            ev_io_stop(c->proxy->loop, &c->wio);
        return 1;
    }
    sy__log(c->proxy->engine, SY_LOG_INFO, "client %s: TLS handshake failed: %s", c->peer,
            sy__tls_error(c->tls));
    sy__client_close(c, "TLS handshake failed");
    return -1;
}

/* Handles whole messages in p[0..len); returns how many bytes it used, or
 * -1 when the client is gone. */
static ptrdiff_t handle_input(sy_client *c, const char *p, size_t len)
{
    sy_proxy *px = c->proxy;
    size_t pos = 0;
    while (pos < len && !CLOSED(c)) {
        sy_pg_error err;
        if (c->state == SY_CLIENT_STARTUP) {
            sy_pg_startup st;
            int r = sy__pg_read_startup(p + pos, len - pos, 0, &st, &err);
            if (r == SY_PG_NEED_MORE)
                break;
            if (r == SY_PG_ERROR) {
                sy__client_fatal(c, err.sqlstate, "%s", err.message);
                return -1;
            }
            pos += st.msg.total;
            int h = handle_startup(c, &st, len - pos);
            if (h < 0)
                return -1;
            if (h > 0) /* TLS: nothing may follow the SSLRequest in clear */
                return (ptrdiff_t)pos;
            continue;
        }
        if (c->state != SY_CLIENT_AUTH && c->state != SY_CLIENT_IDLE &&
            c->state != SY_CLIENT_LINKED)
            break; /* waiting for a backend or the login: keep the rest */
        sy_pg_msg m;
        int r = sy__pg_frame(p + pos, len - pos, px->set.max_message, &m, &err);
        if (r == SY_PG_NEED_MORE)
            break;
        if (r == SY_PG_ERROR || !sy__pg_frontend_type_known(m.type)) {
            if (r != SY_PG_ERROR)
                sy__fmt(err.message, sizeof err.message,
                        "invalid frontend message type %d", m.type),
                    memcpy(err.sqlstate, "08P01", 6);
            sy__client_fatal(c, err.sqlstate, "%s", err.message);
            return -1;
        }
        pos += m.total;
        if (m.type == SY_PG_TERMINATE) {
            sy__client_close(c, "client terminated");
            return -1;
        }
        if (c->state == SY_CLIENT_AUTH) {
            sy__client_auth_message(c, &m);
        } else if (sy__relay_client_message(c, &m) < 0) {
            sy__client_close(c, "out of memory");
            return -1;
        }
        if (CLOSED(c) || c->state == SY_CLIENT_CLOSING)
            return -1;
    }
    return (ptrdiff_t)pos;
}

/* Runs what is buffered in c->in (after a pause, a login or a backend). */
void sy__client_process(sy_client *c)
{
    if (CLOSED(c) || c->in_process)
        return;
    c->in_process = 1;
    ptrdiff_t used = handle_input(c, c->in.buf + c->in_off, c->in.len - c->in_off);
    c->in_process = 0;
    if (used < 0)
        return;
    c->in_off += (size_t)used;
    if (c->in_off == c->in.len) {
        sy__buf_reset(&c->in);
        c->in_off = 0;
    }
    if (c->linked && sy__link_flush(c->linked) < 0)
        return;
    if (sy__client_flush(c) < 0)
        return;
    sy__client_arm_timer(c);
    trim_buffers(c);
    sy__client_update_reading(c);
}

/* Reads everything the transport has (with TLS, also what OpenSSL
 * already decrypted) and processes it. */
static void read_available(sy_client *c)
{
    sy_proxy *px = c->proxy;
    char *buf = sy__proxy_scratch(px);
    /* A chunk at a time, each processed before the next is read, so a
     * client sending faster than its backend (or itself) reads is paused
     * (sy__client_update_reading) rather than buffered without bound. */
    while (!CLOSED(c) && !c->read_paused) {
        ptrdiff_t n = transport_read(c, buf, px->scratch_cap);
        if (n == -1)
            break;
        if (n <= 0) {
            sy__client_close(c, n == 0 ? "client disconnected" : "read failed");
            return;
        }
        if (c->in.len - c->in_off + (size_t)n > px->set.max_message + px->set.client_buffer) {
            sy__client_fatal(c, "54000", "client sent more than the proxy buffers");
            return;
        }
        if (sy__buf_append(&c->in, buf, (size_t)n) < 0) {
            sy__client_close(c, "out of memory");
            return;
        }
        sy__client_process(c);
        if ((size_t)n < px->scratch_cap && (!c->tls || sy__tls_pending(c->tls) == 0))
            break;
    }
}

/* Reading stops while the client's output or its backend's input is past
 * client_buffer, while input waits unprocessed (for a backend or the login)
 * past client_buffer, or while its batch is past max_message; it starts
 * again when they drained.  Otherwise input holds at most one incomplete
 * message, which max_message bounds. */
static int input_blocked(const sy_client *c)
{
    const sy_proxy_settings *s = &c->proxy->set;
    const sy_link *l = c->linked;
    int waiting = c->state == SY_CLIENT_WAITING || c->state == SY_CLIENT_LOGIN_WAIT;
    return c->out.len - c->out_off > s->client_buffer ||
           (l && l->out.len - l->out_off > s->client_buffer) ||
           (waiting && c->in.len - c->in_off > s->client_buffer) ||
           c->batch.len > s->max_message;
}

void sy__client_update_reading(sy_client *c)
{
    if (CLOSED(c) || c->state == SY_CLIENT_CLOSING)
        return;
    int blocked = input_blocked(c);
    if (blocked && !c->read_paused) {
        c->read_paused = 1;
        ev_io_stop(c->proxy->loop, &c->rio);
    } else if (!blocked && c->read_paused) {
        c->read_paused = 0;
        ev_io_start(c->proxy->loop, &c->rio);
        if (c->in.len > c->in_off)
            sy__client_process(c);
    }
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_client *c = sy_container_of(w, sy_client, rio);
    if (c->state == SY_CLIENT_TLS && tls_step(c) != 0)
        return;
    read_available(c);
}
