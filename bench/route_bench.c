/*
 * route_bench.c - cost of one routing decision through the Lua gateway
 * (classification excluded, no network): the engine's own sy__lua_route()
 * on a state loaded from a config, as every query pays it.  Prints the
 * median and p99 of per-batch averages and decisions per second on one core.
 */
#include "../core/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 1000
#define BATCHES 1000

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: route_bench CONFIG [SQL]\n");
        return 2;
    }
    const char *sql = argc > 2 ? argv[2] : "SELECT * FROM accounts WHERE id = $1";
    char err[4096];
    const char *home = getenv("SWITCHYARD_HOME");
    sy_lua *lua = sy__lua_load(NULL, argv[1], home ? home : SY_DEFAULT_HOME,
                               NULL, err, sizeof err, NULL);
    if (!lua) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    sy_statement st;
    sy_classify(sql, strlen(sql), NULL, &st);
    const char *params[] = {"42"};
    sy_route_input in = {.sql = sql, .sql_len = strlen(sql), .stmt = &st,
                         .nparams = 1, .param_values = params};
    static double per_call_ns[BATCHES];
    sy_route r;
    for (int i = 0; i < 10000; i++) /* warm up */
        sy__lua_route(lua, &in, &r);
    if (r.failed || r.rejected || !r.node) {
        fprintf(stderr, "routing failed: %s\n", r.message);
        return 1;
    }
    /* ROUTE_BENCH_N=n: just n more decisions, no timing, for counting
     * instructions under callgrind (run twice, subtract). */
    const char *only = getenv("ROUTE_BENCH_N");
    if (only) {
        for (long i = atol(only); i > 0; i--)
            sy__lua_route(lua, &in, &r);
        sy__lua_free(lua);
        return 0;
    }
    double t_all = sy__monotonic();
    for (int b = 0; b < BATCHES; b++) {
        double t0 = sy__monotonic();
        for (int i = 0; i < BATCH; i++)
            sy__lua_route(lua, &in, &r);
        per_call_ns[b] = (sy__monotonic() - t0) * 1e9 / BATCH;
    }
    double total = sy__monotonic() - t_all;
    qsort(per_call_ns, BATCHES, sizeof(double), cmp_double);
    double t0 = sy__monotonic();
    for (int i = 0; i < BATCH * 100; i++)
        sy_classify(sql, strlen(sql), NULL, &st);
    double classify_ns = (sy__monotonic() - t0) * 1e9 / (BATCH * 100);
    printf("route_median_ns=%.0f route_p99_ns=%.0f decisions_per_sec=%.0f "
           "classify_ns=%.0f last=%s\n",
           per_call_ns[BATCHES / 2], per_call_ns[BATCHES * 99 / 100],
           BATCH * BATCHES / total, classify_ns, r.node->full_name);
    sy__lua_free(lua);
    return 0;
}
