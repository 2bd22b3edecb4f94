/*
 * main.c - the `switchyard` binary: the proxy (-c, cli_proxy.c) and the
 * policy authors' tools (check a config, dry-run the routing of a
 * statement).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard.h"

#define OUT_SIZE (64 * 1024)

int sy__cli_proxy(const char *config_path, const char *home);

static int usage(FILE *to)
{
    fprintf(to,
            "usage: switchyard -c CONFIG\n"
            "       switchyard check CONFIG\n"
            "       switchyard route CONFIG SQL [--param V]... [--session k=v]...\n"
            "                        [--down cluster.node]...\n"
            "\n"
            "-c      runs the proxy: a PostgreSQL server on proxy.listen that\n"
            "        routes every query through the policy (SIGHUP reloads,\n"
            "        SIGTERM drains, SIGINT stops)\n"
            "check   validates the config and its policy; exit 0 if valid,\n"
            "        1 with every problem listed otherwise\n"
            "route   prints the decision the policy makes for SQL and a short\n"
            "        trace, without touching the network (every node counts as\n"
            "        healthy unless named with --down)\n"
            "\n"
            "SWITCHYARD_HOME locates lua/ and policies/ (default: the build tree)\n");
    return to == stdout ? 0 : 2;
}

static int cmd_check(int argc, char **argv)
{
    if (argc != 3)
        return usage(stderr);
    char *out = malloc(OUT_SIZE);
    if (!out)
        return 2;
    int rc = sy_config_check(argv[2], NULL, out, OUT_SIZE);
    fprintf(rc == 0 ? stdout : stderr, "%s\n", out);
    free(out);
    return rc == 0 ? 0 : 1;
}

/* Collects the values of a repeated option into a NULL-terminated list. */
static int push_opt(const char ***list, int *n, const char *v)
{
    const char **p = realloc(*list, (size_t)(*n + 2) * sizeof *p);
    if (!p)
        return -1;
    p[(*n)++] = v;
    p[*n] = NULL;
    *list = p;
    return 0;
}

static int cmd_route(int argc, char **argv)
{
    if (argc < 4)
        return usage(stderr);
    const char **params = NULL, **session = NULL, **down = NULL;
    int np = 0, ns = 0, nd = 0, bad = 0;
    for (int i = 4; i < argc && !bad; i++) {
        if (i + 1 >= argc) {
            bad = 1;
        } else if (strcmp(argv[i], "--param") == 0) {
            bad = push_opt(&params, &np, argv[++i]) < 0;
        } else if (strcmp(argv[i], "--session") == 0) {
            bad = push_opt(&session, &ns, argv[++i]) < 0;
        } else if (strcmp(argv[i], "--down") == 0) {
            bad = push_opt(&down, &nd, argv[++i]) < 0;
        } else {
            bad = 1;
        }
    }
    int rc = 2;
    char *out = malloc(OUT_SIZE);
    if (bad || !out) {
        if (bad)
            usage(stderr);
    } else {
        int r = sy_route_dry_run(argv[2], NULL, argv[3], params, session, down,
                                 out, OUT_SIZE);
        fputs(out, r == 0 ? stdout : stderr);
        rc = r == 0 ? 0 : 1;
    }
    free(out);
    free(params);
    free(session);
    free(down);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (strcmp(argv[1], "-c") == 0) {
        if (argc != 3)
            return usage(stderr);
        return sy__cli_proxy(argv[2], NULL);
    }
    if (strcmp(argv[1], "check") == 0)
        return cmd_check(argc, argv);
    if (strcmp(argv[1], "route") == 0)
        return cmd_route(argc, argv);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0)
        return usage(stdout);
    fprintf(stderr, "switchyard: unknown command \"%s\"\n", argv[1]);
    return usage(stderr);
}
