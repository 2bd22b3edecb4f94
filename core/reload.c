/*
 * reload.c - live reload of config and policies: on SIGHUP, when a watched
 * file changes (libev stat watchers, debounced because editors write in
 * several steps), or through sy_engine_reload().  A fresh Lua state is
 * loaded and validated beside the serving one and swapped in between
 * queries; on any error the serving state stays and the error is logged,
 * counted and emitted.
 */
#include "internal.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#define DEBOUNCE_SECONDS 0.05
#define STAT_INTERVAL 0.25

static void reload_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_engine *e = sy_container_of(w, sy_engine, reload_debounce);
    if (!SY_ENGINE_CLOSING(e))
        sy__reload_now(e);
}

static void stat_cb(struct ev_loop *loop, ev_stat *w, int revents)
{
    (void)revents;
    sy_engine *e = w->data;
    /* Restart the debounce: a burst of writes reloads once. */
    ev_timer_stop(loop, &e->reload_debounce);
    ev_timer_set(&e->reload_debounce, DEBOUNCE_SECONDS, 0.);
    ev_timer_start(loop, &e->reload_debounce);
}

static void sighup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_engine *e = sy_container_of(w, sy_engine, sighup);
    sy__log(e, SY_LOG_INFO, "SIGHUP: reloading %s", e->config_path);
    if (!SY_ENGINE_CLOSING(e))
        sy__reload_now(e);
}

static void unwatch_files(sy_engine *e)
{
    for (int i = 0; i < e->nstats_watch; i++) {
        ev_stat_stop(e->loop, &e->stats_watch[i]);
        free((char *)e->stats_watch[i].path);
    }
    free(e->stats_watch);
    e->stats_watch = NULL;
    e->nstats_watch = 0;
}

static void watch_files(sy_engine *e)
{
    unwatch_files(e);
    if (!e->watch_files || !e->lua->set.watch)
        return;
    lua_State *L = e->lua->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->lua->ref_loaded_files);
    int n = (int)lua_objlen(L, -1);
    e->stats_watch = calloc((size_t)(n > 0 ? n : 1), sizeof *e->stats_watch);
    if (!e->stats_watch) {
        lua_pop(L, 1);
        return;
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        char *path = sy__strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
        if (!path)
            continue;
        ev_stat *w = &e->stats_watch[e->nstats_watch++];
        ev_stat_init(w, stat_cb, path, STAT_INTERVAL);
        w->data = e;
        ev_stat_start(e->loop, w);
    }
    lua_pop(L, 1);
}

/* libev lets one loop per process own a signal and aborts on a second.
 * When SIGHUP already has a handler or is blocked (libev's signalfd blocks
 * it), another engine or the host owns it: refuse instead of aborting. */
static int sighup_taken(void)
{
    struct sigaction sa;
    sigset_t mask;
    if (sigaction(SIGHUP, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL &&
        sa.sa_handler != SIG_IGN)
        return 1;
    return pthread_sigmask(SIG_BLOCK, NULL, &mask) == 0 &&
           sigismember(&mask, SIGHUP) == 1;
}

int sy__reload_watch(sy_engine *e)
{
    ev_init(&e->reload_debounce, reload_cb);
    watch_files(e);
    if (e->handle_sighup && !ev_is_active(&e->sighup)) {
        if (sighup_taken()) {
            sy__log(e, SY_LOG_ERROR,
                    "handle_sighup: SIGHUP is already handled in this process "
                    "(another engine or the host); reload this engine with "
                    "sy_engine_reload() from that handler");
            return SY_EBUSY;
        }
        ev_signal_init(&e->sighup, sighup_cb, SIGHUP);
        ev_signal_start(e->loop, &e->sighup);
    }
    return 0;
}

void sy__reload_unwatch(sy_engine *e)
{
    if (ev_is_active(&e->sighup))
        ev_signal_stop(e->loop, &e->sighup);
    ev_timer_stop(e->loop, &e->reload_debounce);
    unwatch_files(e);
}

int sy__reload_soon(sy_engine *e)
{
    if (!ev_is_active(&e->reload_debounce)) {
        ev_timer_init(&e->reload_debounce, reload_cb, 0., 0.);
        ev_timer_start(e->loop, &e->reload_debounce);
    }
    return 0;
}

int sy__reload_now(sy_engine *e)
{
    char err[1024];
    int code = 0;
    sy_lua *fresh = sy__lua_load(e, e->config_path, e->home, e->lua, err,
                                 sizeof err, &code);
    if (!fresh) {
        e->stats.reload_failures++;
        sy__fmt(e->last_error, sizeof e->last_error, "%s", err);
        sy__log(e, SY_LOG_ERROR, "reload refused, keeping the running policy: %s",
                err);
        sy__emit(e, SY_EVENT_RELOAD_FAILED, NULL, NULL, "%s", err);
        return code;
    }
    sy_lua *old = e->lua;
    e->lua = fresh;
    sy__patroni_adopt(fresh);
    if (e->state == SY_ENGINE_RUNNING) {
        for (int i = 0; i < fresh->topo.n; i++) {
            sy__pool_start(e->relay_mode ? &fresh->topo.nodes[i]->relay_pool
                                         : &fresh->topo.nodes[i]->pool);
            sy__health_start(fresh->topo.nodes[i]);
        }
        sy__patroni_start(fresh);
    }
    sy__lua_free(old);
    e->log_level = fresh->set.log_level;
    e->last_error[0] = '\0';
    e->stats.reloads++;
    if (e->state == SY_ENGINE_RUNNING)
        watch_files(e);
    sy__log(e, SY_LOG_INFO, "reloaded %s", e->config_path);
    sy__emit(e, SY_EVENT_RELOAD_OK, NULL, NULL, "reloaded %s", e->config_path);
    return 0;
}
