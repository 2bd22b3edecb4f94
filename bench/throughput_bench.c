/*
 * throughput_bench.c - `SELECT 1` with N queries in flight, side by side:
 * a plain asynchronous libpq loop on libev with N connections, and the
 * embedded engine (classifier + Lua policy + pool) with a pool of N on the
 * same server.  Rounds alternate so both see the same machine state.
 *
 *   throughput_bench CONNINFO CONFIG [seconds-per-round] [rounds] [inflight]
 */
#include <ev.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/switchyard.h"

#define MAX_INFLIGHT 64

typedef struct plain_conn {
    PGconn *pg;
    ev_io io;
    unsigned long *done;
} plain_conn;

static void plain_send(plain_conn *c)
{
    if (!PQsendQuery(c->pg, "SELECT 1")) {
        fprintf(stderr, "send: %s", PQerrorMessage(c->pg));
        exit(1);
    }
    PQflush(c->pg);
}

static void plain_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    plain_conn *c = (plain_conn *)((char *)w - offsetof(plain_conn, io));
    if (!PQconsumeInput(c->pg)) {
        fprintf(stderr, "consume: %s", PQerrorMessage(c->pg));
        exit(1);
    }
    while (!PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            (*c->done)++;
            plain_send(c);
            return;
        }
        PQclear(r);
    }
}

static void stop_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static double run_plain(const char *conninfo, int inflight, double seconds)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    plain_conn conns[MAX_INFLIGHT];
    unsigned long done = 0;
    for (int i = 0; i < inflight; i++) {
        conns[i].pg = PQconnectdb(conninfo); /* setup, before timing */
        if (PQstatus(conns[i].pg) != CONNECTION_OK) {
            fprintf(stderr, "connect: %s", PQerrorMessage(conns[i].pg));
            exit(1);
        }
        PQsetnonblocking(conns[i].pg, 1);
        conns[i].done = &done;
        ev_io_init(&conns[i].io, plain_io_cb, PQsocket(conns[i].pg), EV_READ);
        ev_io_start(loop, &conns[i].io);
    }
    ev_timer stop;
    ev_timer_init(&stop, stop_cb, seconds, 0.);
    ev_now_update(loop);
    double t0 = ev_now(loop);
    ev_timer_start(loop, &stop);
    for (int i = 0; i < inflight; i++)
        plain_send(&conns[i]);
    ev_run(loop, 0);
    ev_now_update(loop);
    double elapsed = ev_now(loop) - t0;
    for (int i = 0; i < inflight; i++) {
        ev_io_stop(loop, &conns[i].io);
        PQfinish(conns[i].pg);
    }
    ev_loop_destroy(loop);
    return (double)done / elapsed;
}

typedef struct engine_run {
    sy_engine *e;
    unsigned long done, failed;
    int stopping, outstanding;
} engine_run;

static void engine_submit(engine_run *r);

static void engine_cb(void *ud, sy_reply *reply)
{
    engine_run *r = ud;
    r->outstanding--;
    if (reply->status != 0 || reply->sqlstate) {
        r->failed++;
        if (r->failed < 5)
            fprintf(stderr, "query failed: %s\n", reply->message);
    } else {
        r->done++;
    }
    if (!r->stopping)
        engine_submit(r);
}

static void engine_submit(engine_run *r)
{
    sy_query_args a = {.sql = "SELECT 1"};
    if (sy_query(r->e, &a, engine_cb, r) == 0)
        r->outstanding++;
}

static void warm_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ONE);
}

static double run_engine(const char *config, int inflight, double seconds)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    sy_engine_options o = {.config_path = config, .loop = loop,
                           .log_level = SY_LOG_WARN};
    char err[1024];
    engine_run r = {0};
    if (sy_engine_new(&r.e, &o, err, sizeof err) != 0) {
        fprintf(stderr, "engine: %s\n", err);
        exit(1);
    }
    sy_engine_start(r.e);
    /* Let the pool warm up (min connections) before timing. */
    ev_timer warm;
    ev_timer_init(&warm, warm_cb, 1.0, 0.);
    ev_timer_start(loop, &warm);
    ev_run(loop, 0);
    ev_timer stop;
    ev_timer_init(&stop, stop_cb, seconds, 0.);
    ev_now_update(loop);
    double t0 = ev_now(loop);
    ev_timer_start(loop, &stop);
    for (int i = 0; i < inflight; i++)
        engine_submit(&r);
    ev_run(loop, 0);
    ev_now_update(loop);
    double elapsed = ev_now(loop) - t0;
    r.stopping = 1;
    while (r.outstanding > 0)
        ev_run(loop, EVRUN_ONCE);
    sy_engine_free(r.e);
    ev_loop_destroy(loop);
    if (r.failed) {
        fprintf(stderr, "%lu queries failed\n", r.failed);
        exit(1);
    }
    return (double)r.done / elapsed;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: throughput_bench CONNINFO CONFIG [seconds] [rounds] [inflight]\n");
        return 2;
    }
    double seconds = argc > 3 ? atof(argv[3]) : 3;
    int rounds = argc > 4 ? atoi(argv[4]) : 3;
    int inflight = argc > 5 ? atoi(argv[5]) : 16;
    if (inflight < 1 || inflight > MAX_INFLIGHT)
        inflight = 16;
    double plain = 0, engine = 0;
    for (int i = 0; i < rounds; i++) {
        double p = run_plain(argv[1], inflight, seconds);
        double e = run_engine(argv[2], inflight, seconds);
        printf("round %d: libpq %.0f qps, engine %.0f qps (%.3fx)\n", i + 1, p,
               e, e / p);
        plain += p;
        engine += e;
    }
    printf("select1_inflight=%d libpq_qps=%.0f engine_qps=%.0f ratio=%.3f\n",
           inflight, plain / rounds, engine / rounds, engine / plain);
    return 0;
}
