/* delay_relay: a loopback TCP relay that holds every chunk of data for a
 * fixed time in each direction, so a spec can make one PostgreSQL server
 * look far away (a slow or distant replica) without touching the server,
 * the kernel's network settings or root-only tools like netem.
 *
 *   delay_relay LISTEN_PORT TARGET_PORT DELAY_MS
 *
 * Listens on 127.0.0.1:LISTEN_PORT (0 picks a free port); the port actually
 * bound is printed on stdout as the first line.  Each accepted connection is
 * paired with a new connection to 127.0.0.1:TARGET_PORT.  Bytes read from one
 * side are queued with a due time (now + DELAY_MS) and written to the other
 * side, in order, once due.  An end-of-file travels through the same queue,
 * so a half-close arrives after the data that preceded it.  Exits on SIGTERM
 * or SIGINT. */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_SIZE 65536
/* Stop reading from a side while this much of its data waits, so a fast
 * sender cannot make the relay buffer without bound. */
#define QUEUE_HIGH (4u * 1024u * 1024u)

struct chunk {
    struct chunk *next;
    ev_tstamp due;
    size_t len, off;
    bool eof;
    char data[];
};

struct conn;

/* One direction: what is read from `from` is written to `to`. */
struct flow {
    struct conn *conn;
    int from, to;
    ev_io rd;       /* readable `from` */
    ev_io wr;       /* writable `to` (only while a due chunk is stuck) */
    ev_timer timer; /* the head chunk becomes due */
    struct chunk *head, *tail;
    size_t queued;
    bool read_done; /* EOF or error seen on `from` */
    bool shut;      /* EOF passed on with shutdown(to, SHUT_WR) */
};

struct relay;

struct conn {
    struct relay *relay;
    int client_fd, server_fd;
    bool connected; /* the connect() to the target has completed */
    struct flow up;   /* client -> server */
    struct flow down; /* server -> client */
    struct conn *prev, *next;
};

struct relay {
    struct ev_loop *loop;
    int listen_fd;
    struct sockaddr_in target;
    ev_tstamp delay;
    ev_io accept_w;
    ev_signal sigterm_w, sigint_w;
    struct conn *conns;
};

static void flow_pump(struct ev_loop *loop, struct flow *f);

static void set_nodelay(int fd)
{
    int one = 1;
    /* Small protocol messages must not wait for Nagle on top of the delay. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void flow_free_chunks(struct flow *f)
{
    struct chunk *k = f->head;
    while (k) {
        struct chunk *next = k->next;
        free(k);
        k = next;
    }
    f->head = f->tail = NULL;
    f->queued = 0;
}

static void flow_stop(struct ev_loop *loop, struct flow *f)
{
    ev_io_stop(loop, &f->rd);
    ev_io_stop(loop, &f->wr);
    ev_timer_stop(loop, &f->timer);
    flow_free_chunks(f);
}

/* Closes both sockets and frees the connection.  libev allows freeing a
 * watcher's memory from its own callback once it is stopped; every caller
 * returns right after this. */
static void conn_close(struct ev_loop *loop, struct conn *c)
{
    flow_stop(loop, &c->up);
    flow_stop(loop, &c->down);
    close(c->client_fd);
    close(c->server_fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->relay->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

static bool flow_can_read(const struct flow *f)
{
    if (f->read_done || f->queued >= QUEUE_HIGH)
        return false;
    /* Nothing comes from the server before the connect completes. */
    return f == &f->conn->up || f->conn->connected;
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct flow *f = w->data;
    char buf[READ_SIZE];
    (void)revents;

    ssize_t n = recv(f->from, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    /* An error (a reset) is passed on like an end of file: what was read
     * before still arrives, then the other side sees the close. */
    size_t len = n > 0 ? (size_t)n : 0;
    struct chunk *k = malloc(sizeof *k + len);
    if (!k) {
        conn_close(loop, f->conn);
        return;
    }
    k->next = NULL;
    k->due = ev_now(loop) + f->conn->relay->delay;
    k->len = len;
    k->off = 0;
    k->eof = n <= 0;
    if (len)
        memcpy(k->data, buf, len);
    bool was_empty = f->head == NULL;
    if (f->tail)
        f->tail->next = k;
    else
        f->head = k;
    f->tail = k;
    f->queued += len;
    if (k->eof)
        f->read_done = true;
    if (!flow_can_read(f))
        ev_io_stop(loop, &f->rd);
    if (was_empty) {
        ev_timer_set(&f->timer, f->conn->relay->delay, 0.);
        ev_timer_start(loop, &f->timer);
    }
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    flow_pump(loop, w->data);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct flow *f = w->data;
    struct conn *c = f->conn;
    (void)revents;

    if (!c->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->server_fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
            conn_close(loop, c);
            return;
        }
        c->connected = true;
        if (flow_can_read(&c->down))
            ev_io_start(loop, &c->down.rd);
    }
    flow_pump(loop, f);
}

/* Writes every due chunk it can, then arms whatever must wake it next. */
static void flow_pump(struct ev_loop *loop, struct flow *f)
{
    struct conn *c = f->conn;
    ev_tstamp now = ev_now(loop);

    ev_timer_stop(loop, &f->timer);
    while (f->head && f->head->due <= now) {
        struct chunk *k = f->head;
        if (!c->connected) {
            /* Due before the target accepted us: wait for the connect. */
            ev_io_start(loop, &f->wr);
            return;
        }
        if (k->eof) {
            shutdown(f->to, SHUT_WR);
            f->shut = true;
        } else {
            while (k->off < k->len) {
                ssize_t n = send(f->to, k->data + k->off, k->len - k->off, MSG_NOSIGNAL);
                if (n < 0) {
                    if (errno == EINTR)
                        continue;
                    if (errno == EAGAIN || errno == EWOULDBLOCK) {
                        ev_io_start(loop, &f->wr);
                        return;
                    }
                    conn_close(loop, c);
                    return;
                }
                k->off += (size_t)n;
            }
        }
        f->head = k->next;
        if (!f->head)
            f->tail = NULL;
        f->queued -= k->len;
        free(k);
    }
    ev_io_stop(loop, &f->wr);
    if (f->head) {
        ev_timer_set(&f->timer, f->head->due - now, 0.);
        ev_timer_start(loop, &f->timer);
    }
    if (flow_can_read(f))
        ev_io_start(loop, &f->rd);
    if (c->up.shut && c->down.shut)
        conn_close(loop, c);
}

static void flow_init(struct flow *f, struct conn *c, int from, int to)
{
    memset(f, 0, sizeof *f);
    f->conn = c;
    f->from = from;
    f->to = to;
    ev_io_init(&f->rd, on_read, from, EV_READ);
    ev_io_init(&f->wr, on_writable, to, EV_WRITE);
    ev_timer_init(&f->timer, on_timer, 0., 0.);
    f->rd.data = f->wr.data = f->timer.data = f;
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct relay *r = w->data;
    (void)revents;

    for (;;) {
        int cfd = accept4(r->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN, or out of descriptors: try on the next event */
        }
        int sfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct conn *c = sfd >= 0 ? calloc(1, sizeof *c) : NULL;
        if (!c) {
            if (sfd >= 0)
                close(sfd);
            close(cfd);
            continue;
        }
        set_nodelay(cfd);
        set_nodelay(sfd);
        c->relay = r;
        c->client_fd = cfd;
        c->server_fd = sfd;
        flow_init(&c->up, c, cfd, sfd);
        flow_init(&c->down, c, sfd, cfd);
        c->next = r->conns;
        if (r->conns)
            r->conns->prev = c;
        r->conns = c;

        if (connect(sfd, (struct sockaddr *)&r->target, sizeof r->target) == 0) {
            c->connected = true;
            ev_io_start(loop, &c->down.rd);
        } else if (errno == EINPROGRESS) {
            ev_io_start(loop, &c->up.wr); /* on_writable finishes the connect */
        } else {
            conn_close(loop, c);
            continue;
        }
        ev_io_start(loop, &c->up.rd);
    }
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static int parse_num(const char *s, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > max)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    long listen_port, target_port, delay_ms;
    if (argc != 4 || parse_num(argv[1], 65535, &listen_port) || parse_num(argv[2], 65535, &target_port)
        || parse_num(argv[3], 3600L * 1000L, &delay_ms) || target_port == 0) {
        fprintf(stderr, "usage: %s LISTEN_PORT TARGET_PORT DELAY_MS\n"
                        "  LISTEN_PORT 0 picks a free port; the bound port is printed first on stdout\n",
                argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    struct relay r;
    memset(&r, 0, sizeof r);
    r.delay = (ev_tstamp)delay_ms / 1000.0;
    r.target.sin_family = AF_INET;
    r.target.sin_port = htons((uint16_t)target_port);
    r.target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    r.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (r.listen_fd < 0) {
        perror("delay_relay: socket");
        return 1;
    }
    int one = 1;
    (void)setsockopt(r.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)listen_port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(r.listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(r.listen_fd, 128) < 0) {
        perror("delay_relay: bind/listen");
        return 1;
    }
    socklen_t alen = sizeof addr;
    if (getsockname(r.listen_fd, (struct sockaddr *)&addr, &alen) < 0) {
        perror("delay_relay: getsockname");
        return 1;
    }
    printf("%u\n", (unsigned)ntohs(addr.sin_port));
    fflush(stdout);

    r.loop = ev_default_loop(0);
    ev_io_init(&r.accept_w, on_accept, r.listen_fd, EV_READ);
    r.accept_w.data = &r;
    ev_io_start(r.loop, &r.accept_w);
    ev_signal_init(&r.sigterm_w, on_signal, SIGTERM);
    ev_signal_start(r.loop, &r.sigterm_w);
    ev_signal_init(&r.sigint_w, on_signal, SIGINT);
    ev_signal_start(r.loop, &r.sigint_w);

    ev_run(r.loop, 0);

    while (r.conns)
        conn_close(r.loop, r.conns);
    ev_io_stop(r.loop, &r.accept_w);
    close(r.listen_fd);
    return 0;
}
