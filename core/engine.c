/*
 * engine.c - the engine's lifecycle (create, start, run, stop, free), its
 * loop (own or the host's), logging, and the event stream that goes to the
 * host's C callback and to the policy's on_event hook, and the check that
 * tells a stall of that loop from a server's silence.
 */
#include "internal.h"

#include <assert.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SY_DEFAULT_HOME
#define SY_DEFAULT_HOME "."
#endif

const char *sy_strerror(int code)
{
    switch (code) {
    case SY_OK: return "success";
    case SY_EINVAL: return "invalid argument";
    case SY_ENOMEM: return "out of memory";
    case SY_ECONFIG: return "configuration refused";
    case SY_EPOLICY: return "policy failed";
    case SY_ENOTFOUND: return "not found";
    case SY_ESTATE: return "not allowed in the current state";
    case SY_EBUSY: return "a query is already in flight on this session";
    case SY_ETIMEOUT: return "timed out";
    case SY_ECONN: return "backend connection failed";
    case SY_ESTOPPED: return "engine stopped";
    case SY_ETOOBIG: return "argument too large";
    case SY_EIO: return "system call failed";
    default: return "unknown error";
    }
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void sy__log(sy_engine *e, int level, const char *fmt, ...)
{
    if (level < e->log_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (e->on_log) {
        e->in_callback++;
        e->on_log(e->log_user_data, level, msg);
        e->in_callback--;
        return;
    }
    int l = level < 0 ? 0 : level > 3 ? 3 : level;
    fprintf(stderr, "switchyard %s: %s\n", level_names[l], msg);
}

static const char *event_name(sy_event_type t)
{
    switch (t) {
    case SY_EVENT_NODE_UP: return "node_up";
    case SY_EVENT_NODE_DOWN: return "node_down";
    case SY_EVENT_RELOAD_OK: return "reload_ok";
    case SY_EVENT_RELOAD_FAILED: return "reload_failed";
    case SY_EVENT_POOL_EXHAUSTED: return "pool_exhausted";
    case SY_EVENT_POLICY_ERROR: return "policy_error";
    case SY_EVENT_ROLE_CHANGED: return "role_changed";
    case SY_EVENT_SPLIT_BRAIN: return "split_brain";
    case SY_EVENT_SPLIT_BRAIN_RESOLVED: return "split_brain_resolved";
    case SY_EVENT_FAILOVER_STARTED: return "failover_started";
    case SY_EVENT_FAILOVER_DONE: return "failover_done";
    case SY_EVENT_FAILOVER_FAILED: return "failover_failed";
    case SY_EVENT_PATRONI_DOWN: return "patroni_down";
    case SY_EVENT_PATRONI_UP: return "patroni_up";
    }
    return "unknown";
}

void sy__emit(sy_engine *e, sy_event_type type, const char *cluster,
              const char *node, const char *fmt, ...)
{
    if (!e)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sy_event ev = {
        .type = type,
        .name = event_name(type),
        .cluster = cluster,
        .node = node,
        .message = msg,
        .at = ev_now(e->loop),
    };
    if (e->on_event) {
        e->in_callback++;
        e->on_event(e->event_user_data, &ev);
        e->in_callback--;
    }
    if (e->lua)
        sy__lua_on_event(e->lua, &ev);
}

void sy__engine_set_state(sy_engine *e, sy_engine_state to)
{
    assert((to == SY_ENGINE_RUNNING && e->state == SY_ENGINE_CREATED) ||
           (to == SY_ENGINE_STOPPING && (e->state == SY_ENGINE_CREATED ||
                                         e->state == SY_ENGINE_RUNNING)) ||
           (to == SY_ENGINE_STOPPED && e->state == SY_ENGINE_STOPPING));
    e->state = to;
}

static void stop_done_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void reap_cb(struct ev_loop *loop, ev_timer *w, int revents);

int sy_engine_new(sy_engine **out, const sy_engine_options *o, char *err,
                  size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return SY_EINVAL;
    *out = NULL;
    if (!o || !o->config_path || !*o->config_path) {
        sy__fmt(err, errlen, "options.config_path is required");
        return SY_EINVAL;
    }
    sy_engine *e = calloc(1, sizeof *e);
    if (!e)
        return SY_ENOMEM;
    const char *home = o->home ? o->home : getenv("SWITCHYARD_HOME");
    e->home = sy__strdup(home && *home ? home : SY_DEFAULT_HOME);
    e->config_path = sy__strdup(o->config_path);
    e->on_event = o->on_event;
    e->event_user_data = o->event_user_data;
    e->on_log = o->on_log;
    e->log_user_data = o->log_user_data;
    e->log_level = o->log_level;
    e->watch_files = o->watch_files;
    e->handle_sighup = o->handle_sighup;
    e->rand_state = (uint64_t)(uintptr_t)e;
    e->classify_cache = sy__classify_cache_new();
    sy_list_init(&e->sessions);
    sy_list_init(&e->parked);
    sy__request_init_engine(e);
    ev_init(&e->stop_timer, stop_done_cb);
    ev_init(&e->reap_timer, reap_cb);
    sy_list_init(&e->graveyard_conns);
    sy_list_init(&e->graveyard_nodes);
    if (!e->home || !e->config_path) {
        sy_engine_free(e);
        return SY_ENOMEM;
    }
    if (o->loop) {
        e->loop = o->loop;
    } else {
        e->loop = ev_loop_new(EVFLAG_AUTO);
        e->own_loop = 1;
        if (!e->loop) {
            sy__fmt(err, errlen, "cannot create an event loop");
            sy_engine_free(e);
            return SY_EIO;
        }
    }
    char why[1024];
    int code = SY_ECONFIG;
    e->lua = sy__lua_load(e, e->config_path, e->home, NULL, why, sizeof why,
                          &code);
    if (!e->lua) {
        sy__fmt(err, errlen, "%s", why);
        sy_engine_free(e);
        return code;
    }
    e->log_level = o->log_level > e->lua->set.log_level ? o->log_level
                                                         : e->lua->set.log_level;
    *out = e;
    return 0;
}

int sy_engine_start(sy_engine *e)
{
    if (!e)
        return SY_EINVAL;
    if (SY_ENGINE_CLOSING(e))
        return SY_ESTOPPED;
    if (e->state == SY_ENGINE_RUNNING)
        return 0;
    sy__engine_set_state(e, SY_ENGINE_RUNNING);
    for (int i = 0; i < e->lua->topo.n; i++) {
        sy_node *n = e->lua->topo.nodes[i];
        sy__pool_start(e->relay_mode ? &n->relay_pool : &n->pool);
        sy__health_start(e->lua->topo.nodes[i]);
    }
    sy__patroni_start(e->lua);
    return sy__reload_watch(e);
}

int sy_engine_run(sy_engine *e)
{
    if (!e)
        return SY_EINVAL;
    if (!e->own_loop)
        return SY_ESTATE;
    if (e->state == SY_ENGINE_CREATED) {
        int rc = sy_engine_start(e);
        if (rc < 0)
            return rc;
    }
    /* Until stopped and the done callback (a timer) has fired. */
    while (e->state != SY_ENGINE_STOPPED || ev_is_active(&e->stop_timer))
        if (!ev_run(e->loop, EVRUN_ONCE) && e->state != SY_ENGINE_STOPPED)
            break; /* no watcher left: nothing can make progress */
    return 0;
}

void sy__engine_reap(sy_engine *e)
{
    sy_list *l;
    while ((l = sy_list_pop_head(&e->graveyard_conns)) != NULL)
        free(sy_container_of(l, sy_conn, link_all));
    while ((l = sy_list_pop_head(&e->graveyard_nodes)) != NULL)
        sy__node_free_memory(sy_container_of(l, sy_node, link_retired));
}

static void reap_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sy__engine_reap(sy_container_of(w, sy_engine, reap_timer));
}

static void schedule_reap(sy_engine *e)
{
    if (!ev_is_active(&e->reap_timer)) {
        ev_timer_set(&e->reap_timer, 0., 0.);
        ev_timer_start(e->loop, &e->reap_timer);
    }
}

void sy__engine_bury_conn(sy_engine *e, sy_conn *conn)
{
    sy_list_insert_tail(&e->graveyard_conns, &conn->link_all);
    schedule_reap(e);
}

void sy__engine_bury_node(sy_engine *e, sy_node *n)
{
    sy_list_insert_tail(&e->graveyard_nodes, &n->link_retired);
    schedule_reap(e);
}

static void stop_done_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_engine *e = sy_container_of(w, sy_engine, stop_timer);
    void (*done)(void *) = e->stop_done;
    e->stop_done = NULL;
    if (done)
        done(e->stop_done_data);
}

void sy__engine_check_stopped(sy_engine *e)
{
    if (e->state != SY_ENGINE_STOPPING || e->inflight > 0)
        return;
    /* Connections held by sessions (a transaction, SET, LISTEN) close too:
     * a stopped engine holds no connection.  The sessions stay valid
     * handles; their next query gets SY_ESTOPPED. */
    for (sy_list *l = e->sessions.next; l != &e->sessions; l = l->next)
        sy__session_release(sy_container_of(l, sy_session, link));
    for (int i = 0; i < e->lua->topo.n; i++) {
        for (int k = 0; k < SY_NODE_NPOOLS; k++) {
            sy_pool *p = sy__node_pool(e->lua->topo.nodes[i], k);
            if (!p->closing)
                sy__pool_close(p);
        }
        sy__health_stop(e->lua->topo.nodes[i]);
    }
    sy__patroni_stop(e->lua);
    sy__http_free(e->http); /* and its kept-alive connections to Patroni */
    e->http = NULL;
    sy__engine_set_state(e, SY_ENGINE_STOPPED);
    sy__reload_unwatch(e);
    ev_timer_stop(e->loop, &e->deferred_timer);
    /* done fires on the next loop turn, never inside sy_engine_stop(). */
    ev_timer_set(&e->stop_timer, 0., 0.);
    ev_timer_start(e->loop, &e->stop_timer);
}

int sy_engine_stop(sy_engine *e, void (*done)(void *), void *user_data)
{
    if (!e)
        return SY_EINVAL;
    if (e->stop_done && done)
        return SY_EBUSY; /* one done callback at a time */
    if (done) {
        e->stop_done = done;
        e->stop_done_data = user_data;
    }
    if (e->state == SY_ENGINE_STOPPED) {
        if (done) {
            ev_timer_set(&e->stop_timer, 0., 0.);
            ev_timer_start(e->loop, &e->stop_timer);
        }
        return 0;
    }
    if (e->state != SY_ENGINE_STOPPING)
        sy__engine_set_state(e, SY_ENGINE_STOPPING);
    sy__park_fail_all(e); /* nothing waits for a primary past the stop */
    sy__engine_check_stopped(e);
    return 0;
}

/* Fails every request still in flight so its callback fires once. */
static void abort_inflight(sy_engine *e)
{
    sy__park_fail_all(e);
    sy__patroni_stop(e->lua);
    for (int i = 0; e->lua && i < e->lua->topo.n; i++) {
        sy_pool *p = &e->lua->topo.nodes[i]->pool;
        sy__health_stop(e->lua->topo.nodes[i]);
        sy_list *l = p->all.next;
        while (l != &p->all) {
            sy_list *next = l->next;
            sy_conn *conn = sy_container_of(l, sy_conn, link_all);
            if (conn->state == SY_CONN_ACTIVE) {
                sy_request *req = conn->request;
                conn->request = NULL;
                sy__conn_set_state(conn, SY_CONN_HELD);
                sy__request_conn_done(req, 1);
            }
            l = next;
        }
        sy__pool_close(p);
        sy__pool_close(&e->lua->topo.nodes[i]->relay_pool);
    }
    sy__request_flush_deferred(e);
}

void sy_engine_free(sy_engine *e)
{
    if (!e)
        return;
    /* Free skips the graceful path: mark it closing whatever it was. */
    if (e->state < SY_ENGINE_STOPPING)
        sy__engine_set_state(e, SY_ENGINE_STOPPING);
    if (e->lua) {
        abort_inflight(e);
        sy_list *l;
        while ((l = sy_list_pop_head(&e->sessions)) != NULL) {
            sy_session *s = sy_container_of(l, sy_session, link);
            sy_list_init(&s->link);
            /* The host still owns the handle; sy_session_free() later only
             * releases its memory. */
            sy__session_detach(s);
        }
        sy__reload_unwatch(e);
        ev_timer_stop(e->loop, &e->deferred_timer);
        ev_timer_stop(e->loop, &e->stop_timer);
        sy__lua_free(e->lua);
        e->lua = NULL;
    }
    if (e->loop)
        ev_timer_stop(e->loop, &e->reap_timer);
    sy__engine_reap(e);
    sy__request_free_all(e);
    sy__http_free(e->http); /* its watchers are on the loop */
    e->http = NULL;
    if (e->own_loop && e->loop)
        ev_loop_destroy(e->loop);
    sy__classify_cache_free(e->classify_cache);
    free(e->home);
    free(e->config_path);
    free(e);
}

const char *sy_engine_last_error(const sy_engine *e)
{
    return e ? e->last_error : "";
}

struct ev_loop *sy_engine_loop(sy_engine *e)
{
    return e ? e->loop : NULL;
}

int sy_engine_reload(sy_engine *e)
{
    if (!e)
        return SY_EINVAL;
    if (SY_ENGINE_CLOSING(e))
        return SY_ESTOPPED;
    if (e->in_callback > 0)
        return sy__reload_soon(e);
    return sy__reload_now(e);
}

int sy__io_run_if_ready(struct ev_loop *loop, ev_io *w)
{
    if (!ev_is_active(w))
        return 0;
    struct pollfd p = {.fd = w->fd, .events = 0};
    if (w->events & EV_READ)
        p.events |= POLLIN;
    if (w->events & EV_WRITE)
        p.events |= POLLOUT;
    if (poll(&p, 1, 0) <= 0)
        return 0;
    int revents = 0;
    if (p.revents & (POLLIN | POLLERR | POLLHUP))
        revents |= w->events & EV_READ;
    if (p.revents & (POLLOUT | POLLERR | POLLHUP))
        revents |= w->events & EV_WRITE;
    if (!revents)
        return 0;
    ev_clear_pending(loop, w);
    ev_invoke(loop, w, revents);
    return 1;
}
