/*
 * proxy.c - the proxy object: listening sockets (TCP v4/v6 and a Unix
 * socket), accepting within max_clients, the cancel-key table, the server
 * parameters shown at login, reload, drain (SIGTERM) and close (SIGINT).
 */
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

const char *const sy__server_param_names[] = {
    "application_name", "client_encoding", "DateStyle",
    "default_transaction_read_only", "in_hot_standby", "integer_datetimes",
    "IntervalStyle", "is_superuser", "server_encoding", "server_version",
    "session_authorization", "standard_conforming_strings", "TimeZone", NULL};

#define SCRATCH_SIZE (64 * 1024)

static const sy_relay_hooks hooks = {sy__link_io, sy__link_closed};

char *sy__proxy_scratch(sy_proxy *px)
{
    return px->scratch;
}

/* ------------------------------------------------------------ listeners */

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_listener *ln = sy_container_of(w, sy_listener, io);
    sy_proxy *px = ln->proxy;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(ln->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNABORTED)
                sy__log(px->engine, SY_LOG_WARN, "accept failed: %s", strerror(errno));
            return;
        }
        char peer[64] = "unix socket";
        if (!ln->unix_socket) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            char host[48] = "?", port[8] = "?";
            getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, port, sizeof port,
                        NI_NUMERICHOST | NI_NUMERICSERV);
            sy__fmt(peer, sizeof peer, "%s:%s", host, port);
        }
        if (px->nclients >= px->set.max_clients || px->draining) {
            /* Told why in the protocol, without reading the startup packet:
             * a client library shows the message. */
            px->stats.clients_refused++;
            sy_buf b;
            sy__buf_init(&b);
            sy_pg_notice_fields f = {.severity = "FATAL",
                                     .sqlstate = px->draining ? "57P03" : "53300",
                                     .message = px->draining
                                                    ? "switchyard is shutting down"
                                                    : "too many clients already"};
            sy__pg_build_error(&b, &f);
            if (send(fd, b.buf, b.len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                (void)0; /* the client is gone already */
            sy__buf_free(&b);
            close(fd);
            continue;
        }
        sy__client_accept(px, fd, ln->unix_socket, peer);
    }
}

static int add_listener(sy_proxy *px, int fd, int unix_socket)
{
    /* Sized once (sy__proxy_new): a running watcher must never move. */
    if (px->nlisteners >= px->listeners_cap)
        return -1;
    sy_listener *n = &px->listeners[px->nlisteners++];
    memset(n, 0, sizeof *n);
    n->fd = fd;
    n->unix_socket = unix_socket;
    n->proxy = px;
    ev_io_init(&n->io, accept_cb, fd, EV_READ);
    ev_io_start(px->loop, &n->io);
    return 0;
}

static int listen_tcp(sy_proxy *px, const sy_listen_addr *a, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
                             .ai_family = a->ipv6 ? AF_INET6 : AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char port[8];
    sy__fmt(port, sizeof port, "%d", a->port);
    /* Blocking lookup: once, at start, before the loop serves anyone. */
    int rc = getaddrinfo(a->host, port, &hints, &res);
    if (rc != 0) {
        sy__fmt(err, errlen, "listen %s:%d: %s", a->host, a->port, gai_strerror(rc));
        return -1;
    }
    int made = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
            sy__fmt(err, errlen, "listen %s:%d: %s", a->host, a->port, strerror(errno));
            close(fd);
            continue;
        }
        if (add_listener(px, fd, 0) < 0) {
            close(fd);
            break;
        }
        made++;
        break; /* one socket per configured address */
    }
    freeaddrinfo(res);
    return made ? 0 : -1;
}

static int listen_unix(sy_proxy *px, const char *path, int mode, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        sy__fmt(err, errlen, "unix socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sy__fmt(err, errlen, "unix socket: %s", strerror(errno));
        return -1;
    }
    /* A stale socket file from a proxy that died; a live one refuses the
     * connect below and is left alone. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
        if (connect(probe, (struct sockaddr *)&sa, sizeof sa) < 0 && errno == ECONNREFUSED)
            unlink(path);
        close(probe);
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 1024) < 0) {
        sy__fmt(err, errlen, "listen %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    chmod(path, (mode_t)mode);
    px->unix_path = strdup(path);
    return add_listener(px, fd, 1);
}

/* ------------------------------------------------------------ auth, TLS */

static int load_auth_and_tls(sy_proxy *px, const sy_proxy_settings *s,
                             sy_authfile **af, sy_tls_server **tls, char *err,
                             size_t errlen)
{
    *af = NULL;
    *tls = NULL;
    if (s->auth_file && sy__authfile_load(s->auth_file, af, err, errlen) < 0)
        return -1;
    if (s->auth_type != SY_AUTH_TRUST && !*af && !s->auth_query) {
        sy__fmt(err, errlen, "proxy.auth: %s needs an auth file",
                s->auth_type == SY_AUTH_MD5 ? "md5" : "scram-sha-256");
        return -1;
    }
    if (s->tls_mode != SY_TLS_MODE_DISABLE) {
        *tls = sy__tls_server_new(s->tls_cert, s->tls_key, s->tls_ca, err, errlen);
        if (!*tls) {
            sy__authfile_free(*af);
            *af = NULL;
            return -1;
        }
    }
    (void)px;
    return 0;
}

/* ------------------------------------------------------------ lifecycle */

/* proxy.timeouts.connect bounds the connects of the relay pools (the
 * nodes' pool.connect_timeout stays for the embedded API's pools). */
static void apply_connect_timeout(sy_proxy *px)
{
    sy_lua *lua = px->engine->lua;
    for (int i = 0; i < lua->topo.n; i++)
        lua->topo.nodes[i]->relay_pool.set.connect_timeout = px->set.connect;
}

sy_proxy *sy__proxy_new(sy_engine *e, char *err, size_t errlen)
{
    sy_proxy *px = calloc(1, sizeof *px);
    if (!px) {
        sy__fmt(err, errlen, "out of memory");
        return NULL;
    }
    px->engine = e;
    px->loop = e->loop;
    sy_list_init(&px->clients);
    sy_list_init(&px->login_waiters);
    px->scratch_cap = SCRATCH_SIZE;
    px->scratch = malloc(px->scratch_cap);
    if (!px->scratch || sy__proxy_settings_read(e, &px->set, err, errlen) < 0)
        goto fail;
    if (sy__auth_mock_key_init(px->mock_key) < 0) {
        sy__fmt(err, errlen, "no randomness for the auth mock key");
        goto fail;
    }
    uint8_t seed[8];
    memcpy(seed, px->mock_key, sizeof seed);
    memcpy(&px->rand_state, seed, sizeof seed);
    px->rand_state |= 1;
    px->next_pid = (uint32_t)(sy__rand_next(&px->rand_state) & 0x3fffffff) + 1;
    if (load_auth_and_tls(px, &px->set, &px->authfile, &px->tls, err, errlen) < 0)
        goto fail;
    px->listeners_cap = px->set.nlisten + 1;
    px->listeners = calloc((size_t)px->listeners_cap, sizeof *px->listeners);
    if (!px->listeners) {
        sy__fmt(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = 0; i < px->set.nlisten; i++)
        if (listen_tcp(px, &px->set.listen[i], err, errlen) < 0)
            goto fail;
    if (px->set.unix_path &&
        listen_unix(px, px->set.unix_path, px->set.unix_mode, err, errlen) < 0)
        goto fail;
    if (px->nlisteners == 0) {
        sy__fmt(err, errlen, "proxy: nothing to listen on");
        goto fail;
    }
    apply_connect_timeout(px);
    e->relay_mode = 1;
    e->relay_hooks = &hooks;
    e->relay_hooks_data = px;
    return px;
fail:
    sy__proxy_free(px);
    return NULL;
}

void sy__proxy_reloaded(sy_proxy *px)
{
    sy_proxy_settings s;
    char err[512];
    if (sy__proxy_settings_read(px->engine, &s, err, sizeof err) < 0) {
        sy__log(px->engine, SY_LOG_ERROR, "proxy settings after reload: %s", err);
        return;
    }
    sy_authfile *af;
    sy_tls_server *tls;
    if (load_auth_and_tls(px, &s, &af, &tls, err, sizeof err) < 0) {
        sy__log(px->engine, SY_LOG_ERROR, "proxy reload kept the old auth/TLS: %s", err);
        sy__proxy_settings_free(&s);
        return;
    }
    /* Listeners stay as started: moving them would drop clients. */
    sy__authfile_free(px->authfile);
    px->authfile = af;
    sy__tls_server_free(px->tls);
    px->tls = tls;
    sy__proxy_settings_free(&px->set);
    px->set = s;
    apply_connect_timeout(px);
}

static void stop_listening(sy_proxy *px)
{
    for (int i = 0; i < px->nlisteners; i++) {
        ev_io_stop(px->loop, &px->listeners[i].io);
        close(px->listeners[i].fd);
    }
    px->nlisteners = 0; /* the array stays until free: nothing reuses it */
    if (px->unix_path) {
        unlink(px->unix_path);
        free(px->unix_path);
        px->unix_path = NULL;
    }
}

void sy__proxy_close_all(sy_proxy *px)
{
    stop_listening(px);
    /* From the head each time: closing one client can hand its backend to
     * another, which may leave the list in the same call. */
    while (!sy_list_empty(&px->clients)) {
        sy_client *c = sy_container_of(px->clients.next, sy_client, link);
        sy__client_fatal(c, "57P01", "terminating connection due to administrator command");
        if (c->fd >= 0)
            sy__client_close(c, "proxy stopping");
    }
}

static void check_drained(sy_proxy *px)
{
    if (!px->draining || px->nclients > 0 || !px->stopped)
        return;
    ev_timer_stop(px->loop, &px->drain_timer);
    void (*done)(void *) = px->stopped;
    px->stopped = NULL;
    done(px->stopped_data);
}

static void drain_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    sy_proxy *px = sy_container_of(w, sy_proxy, drain_timer);
    if (ev_now(loop) >= px->drain_deadline) {
        sy__log(px->engine, SY_LOG_WARN, "drain timeout: closing %d clients", px->nclients);
        sy__proxy_close_all(px);
        check_drained(px);
        return;
    }
    /* Every tick: idle clients go now; clients in a transaction once it
     * ends.  Restart from the head after each: closing a client can change
     * the list under the walk. */
    int again = 1;
    while (again) {
        again = 0;
        for (sy_list *l = px->clients.next; l != &px->clients; l = l->next) {
            sy_client *c = sy_container_of(l, sy_client, link);
            if (c->state != SY_CLIENT_LINKED && c->state != SY_CLIENT_WAITING &&
                c->state != SY_CLIENT_CLOSING) {
                sy__client_fatal(c, "57P01",
                                 "terminating connection due to administrator command");
                again = 1;
                break;
            }
        }
    }
    check_drained(px);
}

void sy__proxy_drain(sy_proxy *px, void (*done)(void *), void *data)
{
    px->stopped = done;
    px->stopped_data = data;
    if (!px->draining) {
        px->draining = 1;
        stop_listening(px);
        sy__log(px->engine, SY_LOG_INFO, "draining %d clients (up to %.3g s)", px->nclients,
                px->set.drain_timeout);
        ev_init(&px->drain_timer, drain_timer_cb);
        ev_timer_set(&px->drain_timer, 0., 0.05);
        ev_timer_start(px->loop, &px->drain_timer);
        px->drain_deadline = ev_now(px->loop) + px->set.drain_timeout;
    }
    check_drained(px);
}

void sy__proxy_free(sy_proxy *px)
{
    if (!px)
        return;
    stop_listening(px);
    sy_list *l;
    while ((l = sy_list_pop_head(&px->clients)) != NULL) {
        sy_client *c = sy_container_of(l, sy_client, link);
        sy_list_init(&c->link);
        sy__client_close(c, "proxy freed");
    }
    if (px->engine && px->engine->relay_hooks == &hooks) {
        px->engine->relay_hooks = NULL;
        px->engine->relay_hooks_data = NULL;
    }
    if (px->params_fetching)
        sy__pool_cancel(px->params_waiter.pool, &px->params_waiter);
    ev_timer_stop(px->loop, &px->drain_timer);
    for (int i = 0; i < SY_SERVER_PARAMS; i++)
        free(px->server_param_values[i]);
    sy__authfile_free(px->authfile);
    sy__tls_server_free(px->tls);
    sy__proxy_settings_free(&px->set);
    free(px->listeners);
    free(px->route_values);
    free(px->route_lengths);
    free(px->scratch);
    free(px);
}

/* ------------------------------------------------------------ clients */

void sy__proxy_register_client(sy_proxy *px, sy_client *c)
{
    sy_client *other;
    do {
        c->pid = px->next_pid++ & 0x3fffffff;
        if (c->pid == 0)
            c->pid = px->next_pid++;
        HASH_FIND(hh_key, px->by_pid, &c->pid, sizeof c->pid, other);
    } while (other);
    /* Unpredictable: a key another client could guess cancels its queries. */
    if (RAND_bytes((unsigned char *)&c->key, sizeof c->key) != 1)
        c->key = (uint32_t)sy__rand_next(&px->rand_state) ^ (uint32_t)sy__monotonic();
    HASH_ADD(hh_key, px->by_pid, pid, sizeof c->pid, c);
    c->registered = 1;
}

sy_client *sy__proxy_find_pid(sy_proxy *px, uint32_t pid)
{
    sy_client *c = NULL;
    HASH_FIND(hh_key, px->by_pid, &pid, sizeof pid, c);
    return c;
}

void sy__proxy_forget_client(sy_proxy *px, sy_client *c)
{
    if (c->registered) {
        HASH_DELETE(hh_key, px->by_pid, c);
        c->registered = 0;
    }
    sy_list_remove(&c->link);
    px->nclients--;
    check_drained(px);
}

/* ------------------------------------------------------------ server params */

static void params_ready(sy_waiter *w, sy_conn *conn, int err)
{
    sy_proxy *px = sy_container_of(w, sy_proxy, params_waiter);
    px->params_fetching = 0;
    sy_node *node = px->params_node;
    px->params_node = NULL;
    if (conn) {
        for (int i = 0; sy__server_param_names[i]; i++) {
            const char *name = sy__server_param_names[i];
            const char *v = PQparameterStatus(conn->pg, name);
            /* A replica answers in_hot_standby = on; the client is told
             * about the service, which takes writes. */
            if (strcmp(name, "in_hot_standby") == 0 ||
                strcmp(name, "default_transaction_read_only") == 0)
                v = v ? "off" : NULL;
            free(px->server_param_values[i]);
            px->server_param_values[i] = v ? strdup(v) : NULL;
        }
        px->have_server_params = 1;
        sy__pool_release(conn->pool, conn, 0);
    }
    sy_list *l;
    while ((l = sy_list_pop_head(&px->login_waiters)) != NULL) {
        sy_client *c = sy_container_of(l, sy_client, login_link);
        sy_list_init(&c->login_link);
        if (conn)
            sy__client_login_finish(c);
        else
            sy__client_fatal(c, "08006", "could not reach node %s to log in: %s",
                             node ? node->full_name : "?",
                             node && node->relay_pool.last_error[0]
                                 ? node->relay_pool.last_error : sy_strerror(err));
    }
}

void sy__proxy_need_server_params(sy_proxy *px)
{
    if (px->params_fetching)
        return;
    sy_lua *lua = px->engine->lua;
    if (lua->topo.n == 0) {
        params_ready(&px->params_waiter, NULL, SY_ENOTFOUND);
        return;
    }
    /* The first primary of the topology (its reported values describe the
     * service best), else the first node. */
    sy_node *n = lua->topo.nodes[0];
    for (int i = 0; i < lua->topo.n; i++)
        if (lua->topo.nodes[i]->role == SY_ROLE_PRIMARY) {
            n = lua->topo.nodes[i];
            break;
        }
    px->params_fetching = 1;
    px->params_node = n;
    px->params_waiter.ready = params_ready;
    sy__pool_acquire(&n->relay_pool, &px->params_waiter, px->set.connect + 1);
}
