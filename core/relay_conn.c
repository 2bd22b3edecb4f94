/*
 * relay_conn.c - the first piece of the proxy's data path: a backend
 * connection that libpq opens (conninfo, .pgpass, SCRAM, TLS all stay
 * libpq's job) and then hands over, so the proxy relays protocol bytes on
 * it itself; and the non-blocking CancelRequest sender.
 *
 * Why the cancel key comes from a trace: libpq 15 keeps the BackendKeyData
 * secret inside the opaque PGcancel and PQcancel() blocks.  Its message
 * trace (PQtrace, message-level since PostgreSQL 14) prints the key, so a
 * trace into a small per-connection memory stream, read once when the
 * connect ends, gives it with public API only.  The pid is checked against
 * PQbackendPID(); anything unexpected means "no cancel key" and the caller
 * falls back to PQcancel off the loop.
 *
 * After the handover nothing may call PQconsumeInput, PQgetResult or
 * PQsend* on the PGconn: libpq's buffers are bypassed.  That is safe because
 * ReadyForQuery is the last thing the server sends at startup and it then
 * waits for us, so libpq's input buffer is empty.  The PGconn stays alive
 * until the relay connection closes: with TLS, OpenSSL's BIO reads and
 * writes the socket through it.
 */
#include "internal.h"
#include "pgproto.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define TRACE_CAP 4096

static void relay_set_state(sy_relay_conn *rc, sy_relay_state to)
{
    /* CONNECTING -> OPEN | BROKEN, OPEN -> BROKEN; BROKEN is final. */
    static const unsigned char legal[3][3] = {
        [SY_RELAY_CONNECTING] = {0, 1, 1},
        [SY_RELAY_OPEN] = {0, 0, 1},
        [SY_RELAY_BROKEN] = {0, 0, 0},
    };
    assert(legal[rc->state][to]);
    rc->state = to;
}

static int relay_fail(sy_relay_conn *rc, const char *why)
{
    if (!rc->error[0]) {
        sy__fmt(rc->error, sizeof rc->error, "%s", why ? why : "failed");
        size_t n = strlen(rc->error);
        while (n > 0 && rc->error[n - 1] == '\n')
            rc->error[--n] = '\0';
    }
    if (rc->state != SY_RELAY_BROKEN)
        relay_set_state(rc, SY_RELAY_BROKEN);
    return SY_RELAY_FAILED;
}

static void stop_trace(sy_relay_conn *rc)
{
    if (!rc->trace)
        return;
    PQuntrace(rc->pg);
    fclose(rc->trace); /* writes the stream's final NUL into trace_buf */
    rc->trace = NULL;
}

sy_relay_conn *sy__relay_connect_start(const char *conninfo,
                                       const char *application_name,
                                       const sy_conn_target *target,
                                       char *err, size_t errlen)
{
    sy_relay_conn *rc = calloc(1, sizeof *rc);
    char *tb = calloc(1, TRACE_CAP + 1);
    if (!rc || !tb) {
        free(rc);
        free(tb);
        sy__fmt(err, errlen, "out of memory");
        return NULL;
    }
    rc->trace_buf = tb;
    /* GSS encryption would put libpq's own layer between us and the
     * socket, which the raw relay cannot speak. */
    rc->pg = sy__connect_start(conninfo, application_name, target, "disable");
    if (!rc->pg || PQstatus(rc->pg) == CONNECTION_BAD) {
        sy__fmt(err, errlen, "%s",
                rc->pg ? PQerrorMessage(rc->pg) : "out of memory");
        sy__relay_close(rc);
        return NULL;
    }
    PQsetnonblocking(rc->pg, 1);
    /* Nothing has been exchanged yet: PQconnectPoll sends the first byte. */
    rc->trace = fmemopen(tb, TRACE_CAP, "w");
    if (rc->trace) {
        PQtrace(rc->pg, rc->trace);
        PQsetTraceFlags(rc->pg, PQTRACE_SUPPRESS_TIMESTAMPS);
    }
    return rc;
}

/* "B\t12\tBackendKeyData\t <pid> <key>" (fields printed as signed Int32). */
static int parse_key(const char *buf, uint32_t *pid, uint32_t *key)
{
    const char *tag = "BackendKeyData";
    const char *p = strstr(buf, tag);
    if (!p)
        return -1;
    const char *line = p;
    while (line > buf && line[-1] != '\n')
        line--;
    char *end;
    if (*line != 'B')
        return -1;
    long len = strtol(line + 1, &end, 10);
    if (len != 12 || end >= p)
        return -1;
    const char *q = p + strlen(tag);
    errno = 0;
    long long v1 = strtoll(q, &end, 10);
    if (end == q || errno)
        return -1;
    q = end;
    long long v2 = strtoll(q, &end, 10);
    if (end == q || errno || (*end != '\n' && *end != '\0'))
        return -1;
    if (v1 <= 0 || v1 > INT32_MAX || v2 < INT32_MIN || v2 > INT32_MAX)
        return -1;
    *pid = (uint32_t)v1;
    *key = (uint32_t)(int32_t)v2;
    return 0;
}

/* Where a CancelRequest for this backend goes: the address libpq actually
 * connected to (numeric, so no lookup), or the Unix socket's path. */
static int find_cancel_address(sy_relay_conn *rc)
{
    const char *host = PQhost(rc->pg), *port = PQport(rc->pg);
    sy_relay_cancel_target *t = &rc->cancel;
    if (!host || !port || !port[0])
        return -1;
    if (host[0] == '/') {
        struct sockaddr_un *un = (struct sockaddr_un *)&t->addr;
        int n = snprintf(un->sun_path, sizeof un->sun_path, "%s/.s.PGSQL.%s",
                         host, port);
        if (n < 0 || (size_t)n >= sizeof un->sun_path)
            return -1;
        un->sun_family = AF_UNIX;
        t->addrlen = (socklen_t)sizeof *un;
        sy__fmt(rc->cancel_where, sizeof rc->cancel_where, "%s", un->sun_path);
        return 0;
    }
    const char *ip = PQhostaddr(rc->pg);
    if (!ip || !ip[0])
        return -1;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(ip, port, &hints, &res) != 0 || !res)
        return -1;
    int ok = res->ai_addrlen <= sizeof t->addr;
    if (ok) {
        memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
        t->addrlen = res->ai_addrlen;
        sy__fmt(rc->cancel_where, sizeof rc->cancel_where,
                strchr(ip, ':') ? "[%s]:%s" : "%s:%s", ip, port);
    }
    freeaddrinfo(res);
    return ok ? 0 : -1;
}

static int handover(sy_relay_conn *rc)
{
    stop_trace(rc);
    uint32_t pid, key;
    if (parse_key(rc->trace_buf, &pid, &key) == 0 &&
        (int)pid == PQbackendPID(rc->pg) && find_cancel_address(rc) == 0) {
        rc->cancel.pid = pid;
        rc->cancel.key = key;
        rc->have_key = 1;
    }
    free(rc->trace_buf); /* the key is all we wanted from it */
    rc->trace_buf = NULL;
    if (PQsslInUse(rc->pg)) {
        SSL *ssl = PQsslStruct(rc->pg, "OpenSSL");
        if (!ssl)
            return relay_fail(rc, "TLS is on but not OpenSSL's");
        /* libpq sets moving-buffer and auto-retry; a relay wants a write
         * to take what fits and return. */
        SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE);
        rc->ssl = ssl;
    }
    relay_set_state(rc, SY_RELAY_OPEN);
    return SY_RELAY_READY;
}

int sy__relay_connect_poll(sy_relay_conn *rc)
{
    if (rc->state == SY_RELAY_OPEN)
        return SY_RELAY_READY;
    if (rc->state == SY_RELAY_BROKEN)
        return SY_RELAY_FAILED;
    switch (PQconnectPoll(rc->pg)) {
    case PGRES_POLLING_READING:
        return SY_RELAY_WANT_READ;
    case PGRES_POLLING_WRITING:
        return SY_RELAY_WANT_WRITE;
    case PGRES_POLLING_OK:
        return handover(rc);
    default:
        return relay_fail(rc, PQerrorMessage(rc->pg));
    }
}

int sy__relay_fd(const sy_relay_conn *rc)
{
    return rc->pg ? PQsocket(rc->pg) : -1;
}

const char *sy__relay_error(const sy_relay_conn *rc) { return rc->error; }

int sy__relay_backend_pid(const sy_relay_conn *rc)
{
    return rc->state == SY_RELAY_CONNECTING ? 0 : PQbackendPID(rc->pg);
}

int sy__relay_cancel_key(const sy_relay_conn *rc, uint32_t *pid, uint32_t *key)
{
    if (!rc->have_key)
        return 0;
    *pid = rc->cancel.pid;
    *key = rc->cancel.key;
    return 1;
}

int sy__relay_cancel_target(const sy_relay_conn *rc, sy_relay_cancel_target *t)
{
    if (!rc->have_key)
        return -1;
    *t = rc->cancel;
    return 0;
}

const char *sy__relay_cancel_address(const sy_relay_conn *rc)
{
    return rc->cancel_where;
}

int sy__relay_tls(const sy_relay_conn *rc) { return rc->ssl != NULL; }

/* ------------------------------------------------------------ transport */

static ptrdiff_t tls_result(sy_relay_conn *rc, int n, const char *what)
{
    int e = SSL_get_error(rc->ssl, n);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return SY_RELAY_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return SY_RELAY_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return 0; /* close_notify: a clean end of stream */
    default: {
        char why[160];
        unsigned long code = ERR_get_error();
        if (code)
            ERR_error_string_n(code, why, sizeof why);
        else
            sy__fmt(why, sizeof why, "%s", errno ? strerror(errno) : "EOF");
        ERR_clear_error();
        char msg[200];
        sy__fmt(msg, sizeof msg, "TLS %s: %s", what, why);
        return relay_fail(rc, msg);
    }
    }
}

static ptrdiff_t sock_result(sy_relay_conn *rc, int events, const char *what)
{
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return events;
    char msg[200];
    sy__fmt(msg, sizeof msg, "%s: %s", what, strerror(errno));
    return relay_fail(rc, msg);
}

ptrdiff_t sy__relay_read(sy_relay_conn *rc, void *buf, size_t cap)
{
    if (rc->state != SY_RELAY_OPEN)
        return SY_RELAY_FAILED;
    if (cap == 0)
        return SY_RELAY_FAILED;
    if (rc->ssl) {
        ERR_clear_error(); /* the queue is per thread, shared with libpq */
        errno = 0;
        int n = SSL_read(rc->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
        return n > 0 ? n : tls_result(rc, n, "read");
    }
    ssize_t n = recv(PQsocket(rc->pg), buf, cap, MSG_DONTWAIT);
    if (n >= 0)
        return n;
    return sock_result(rc, SY_RELAY_WANT_READ, "recv");
}

ptrdiff_t sy__relay_write(sy_relay_conn *rc, const void *buf, size_t len)
{
    if (rc->state != SY_RELAY_OPEN || len == 0)
        return SY_RELAY_FAILED;
    if (rc->ssl) {
        ERR_clear_error();
        errno = 0;
        int n = SSL_write(rc->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
        return n > 0 ? n : tls_result(rc, n, "write");
    }
    ssize_t n = send(PQsocket(rc->pg), buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0)
        return n;
    return sock_result(rc, SY_RELAY_WANT_WRITE, "send");
}

int sy__relay_pending(const sy_relay_conn *rc)
{
    return rc->ssl ? SSL_pending(rc->ssl) : 0;
}

void sy__relay_close(sy_relay_conn *rc)
{
    if (!rc)
        return;
    if (rc->pg) {
        stop_trace(rc);
        PQfinish(rc->pg); /* Terminate, TLS shutdown, close */
    }
    free(rc->trace_buf);
    free(rc);
}

/* ------------------------------------------------------------ cancel */

static void cancel_finish(sy_relay_cancel *c, int err)
{
    ev_io_stop(c->loop, &c->io);
    ev_timer_stop(c->loop, &c->timer);
    close(c->fd);
    c->fd = -1;
    c->active = 0;
    c->done(c, err); /* last: the owner may reuse c from here */
}

static void cancel_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    sy_relay_cancel *c = sy_container_of(w, sy_relay_cancel, io);
    if (c->sent < sizeof c->packet) {
        /* The first writable event also ends the connect: a refused one
         * shows up as send()'s error. */
        ssize_t n = send(c->fd, c->packet + c->sent, sizeof c->packet - c->sent,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                cancel_finish(c, SY_ECONN);
            return;
        }
        c->sent += (size_t)n;
        if (c->sent == sizeof c->packet) {
            ev_io_stop(loop, &c->io);
            ev_io_set(&c->io, c->fd, EV_READ);
            ev_io_start(loop, &c->io);
        }
        return;
    }
    /* The server answers nothing: it acts, then closes.  That close is
     * what tells the proxy the backend may go back to its pool. */
    char sink[64];
    ssize_t n = recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno == ECONNRESET))
        cancel_finish(c, 0);
    else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        cancel_finish(c, SY_EIO);
}

static void cancel_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    cancel_finish(sy_container_of(w, sy_relay_cancel, timer), SY_ETIMEOUT);
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

int sy__relay_cancel_start(sy_relay_cancel *c, struct ev_loop *loop,
                           const sy_relay_cancel_target *t, double timeout,
                           void (*done)(sy_relay_cancel *c, int err))
{
    if (!c || !loop || !t || !done || t->addrlen == 0)
        return SY_EINVAL;
    if (c->active)
        return SY_ESTATE;
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return SY_EIO;
    if (connect(fd, (const struct sockaddr *)&t->addr, t->addrlen) != 0 &&
        errno != EINPROGRESS && errno != EINTR) {
        close(fd);
        return SY_ECONN;
    }
    /* CancelRequest: Int32 16, Int32 80877102, Int32 pid, Int32 key. */
    put32(c->packet, 16);
    put32(c->packet + 4, SY_PG_CANCEL_CODE);
    put32(c->packet + 8, t->pid);
    put32(c->packet + 12, t->key);
    c->sent = 0;
    c->loop = loop;
    c->fd = fd;
    c->done = done;
    c->active = 1;
    ev_io_init(&c->io, cancel_io_cb, fd, EV_WRITE);
    ev_io_start(loop, &c->io);
    ev_timer_init(&c->timer, cancel_timer_cb, timeout > 0 ? timeout : 0., 0.);
    if (timeout > 0)
        ev_timer_start(loop, &c->timer);
    return 0;
}

void sy__relay_cancel_abort(sy_relay_cancel *c)
{
    if (!c || !c->active)
        return;
    ev_io_stop(c->loop, &c->io);
    ev_timer_stop(c->loop, &c->timer);
    close(c->fd);
    c->fd = -1;
    c->active = 0;
}

/* ------------------------------------------------------------ spec helpers
 * Blocking on purpose: only the specs call these, never the engine. */

sy_relay_conn *sy__relay_test_connect(const char *conninfo, double timeout,
                                      char *err, size_t errlen)
{
    sy_relay_conn *rc = sy__relay_connect_start(conninfo, NULL, NULL, err, errlen);
    if (!rc)
        return NULL;
    double deadline = sy__monotonic() + timeout;
    int want = SY_RELAY_WANT_WRITE; /* libpq's contract for the first step */
    while (want == SY_RELAY_WANT_READ || want == SY_RELAY_WANT_WRITE) {
        double left = deadline - sy__monotonic();
        if (left <= 0) {
            sy__fmt(err, errlen, "connect timed out");
            sy__relay_close(rc);
            return NULL;
        }
        struct pollfd p = {.fd = sy__relay_fd(rc),
                           .events = want == SY_RELAY_WANT_READ ? POLLIN : POLLOUT};
        if (poll(&p, 1, (int)(left * 1000) + 1) < 0 && errno != EINTR) {
            sy__fmt(err, errlen, "poll: %s", strerror(errno));
            sy__relay_close(rc);
            return NULL;
        }
        want = sy__relay_connect_poll(rc);
    }
    if (want != SY_RELAY_READY) {
        sy__fmt(err, errlen, "%s", sy__relay_error(rc));
        sy__relay_close(rc);
        return NULL;
    }
    return rc;
}

typedef struct test_cancel {
    sy_relay_cancel c;
    int fired, err;
} test_cancel;

static void test_cancel_done(sy_relay_cancel *c, int err)
{
    test_cancel *t = sy_container_of(c, test_cancel, c);
    t->fired = 1;
    t->err = err;
}

int sy__relay_test_cancel(const sy_relay_conn *rc, double timeout)
{
    sy_relay_cancel_target target;
    if (sy__relay_cancel_target(rc, &target) != 0)
        return SY_EINVAL;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop)
        return SY_ENOMEM;
    test_cancel t;
    memset(&t, 0, sizeof t);
    int rv = sy__relay_cancel_start(&t.c, loop, &target, timeout, test_cancel_done);
    if (rv == 0) {
        ev_run(loop, 0); /* returns once the sender stopped its watchers */
        rv = t.fired ? t.err : SY_ESTATE;
    }
    ev_loop_destroy(loop);
    return rv;
}
