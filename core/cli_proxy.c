/*
 * cli_proxy.c - `switchyard -c config.lua`: the engine on its own loop with
 * the proxy in front.  SIGHUP reloads (the engine's watcher; the proxy
 * re-reads its section after), SIGTERM drains (no new clients, open
 * transactions finish up to proxy.shutdown.drain_timeout), SIGINT stops at
 * once.
 */
#include "proxy.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

typedef struct cli {
    sy_engine *engine;
    sy_proxy *proxy;
    ev_signal sigterm, sigint;
    int stopping;
} cli;

static void on_event(void *data, const sy_event *ev)
{
    cli *c = data;
    if (ev->type == SY_EVENT_RELOAD_OK && c->proxy)
        sy__proxy_reloaded(c->proxy);
}

static void engine_stopped(void *data)
{
    cli *c = data;
    ev_break(sy_engine_loop(c->engine), EVBREAK_ALL);
}

static void proxy_drained(void *data)
{
    cli *c = data;
    sy_engine_stop(c->engine, engine_stopped, c);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    cli *c = w->data;
    if (w->signum == SIGTERM && !c->stopping) {
        c->stopping = 1;
        sy__proxy_drain(c->proxy, proxy_drained, c);
        return;
    }
    /* SIGINT, or a second SIGTERM: now. */
    c->stopping = 1;
    sy__proxy_close_all(c->proxy);
    sy_engine_stop(c->engine, engine_stopped, c);
}

/* Thousands of clients need as many descriptors as the hard limit allows. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int sy__cli_proxy(const char *config_path, const char *home)
{
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    cli c;
    memset(&c, 0, sizeof c);
    char err[2048];
    sy_engine_options o = {.config_path = config_path,
                           .on_event = on_event,
                           .event_user_data = &c,
                           .log_level = SY_LOG_INFO,
                           .home = home,
                           .watch_files = 1,
                           .handle_sighup = 1};
    if (sy_engine_new(&c.engine, &o, err, sizeof err) < 0) {
        fprintf(stderr, "switchyard: %s\n", err);
        return 1;
    }
    c.engine->log_level = c.engine->lua->set.log_level;
    c.proxy = sy__proxy_new(c.engine, err, sizeof err);
    if (!c.proxy) {
        fprintf(stderr, "switchyard: %s\n", err);
        sy_engine_free(c.engine);
        return 1;
    }
    struct ev_loop *loop = sy_engine_loop(c.engine);
    ev_signal_init(&c.sigterm, signal_cb, SIGTERM);
    ev_signal_init(&c.sigint, signal_cb, SIGINT);
    c.sigterm.data = c.sigint.data = &c;
    ev_signal_start(loop, &c.sigterm);
    ev_signal_start(loop, &c.sigint);
    int rc = sy_engine_start(c.engine);
    if (rc < 0 && rc != SY_EBUSY) {
        fprintf(stderr, "switchyard: start failed: %s\n", sy_strerror(rc));
        sy__proxy_free(c.proxy);
        sy_engine_free(c.engine);
        return 1;
    }
    sy__log(c.engine, SY_LOG_INFO, "switchyard proxy ready (%d listeners)",
            c.proxy->nlisteners);
    sy_engine_run(c.engine);
    ev_signal_stop(loop, &c.sigterm);
    ev_signal_stop(loop, &c.sigint);
    sy__proxy_free(c.proxy);
    sy_engine_free(c.engine);
    return 0;
}
