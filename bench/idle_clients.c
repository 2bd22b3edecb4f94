/* idle_clients: opens N idle client connections to a PostgreSQL endpoint (a
 * proxy under test) and holds them open until killed, so the benchmark can
 * read the proxy's memory with N clients attached.
 *
 *   idle_clients CONNINFO N [TIMEOUT_SECONDS]
 *
 * One process, libpq's non-blocking connect (PQconnectStart/PQconnectPoll)
 * driven by poll(): a thread or process per connection would cost more than
 * what is being measured.  At most MAX_IN_FLIGHT handshakes run at once, so
 * the proxy's listen backlog is never flooded (dropped SYNs retry after 1 s,
 * 3 s, ... and would turn a memory test into a timing test).
 *
 * When every connection has finished (up or failed) it prints one line
 *   connected OK of N (FAILED failed)[: first error]
 * to stdout, flushes it, and sleeps until a signal ends it.  Connections not
 * up within the timeout count as failed; the caller measures what did come
 * up, so it always waits. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define MAX_IN_FLIGHT 64

struct slot {
    PGconn *conn;
    PostgresPollingStatusType want; /* what PQconnectPoll asked to wait for */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Each connection is one fd here; the default soft limit (often 1024) is far
 * below what the test needs, the hard limit usually is not. */
static void raise_fd_limit(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            perror("idle_clients: setrlimit");
    }
    if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < need + 16)
        fprintf(stderr, "idle_clients: open file limit %ld is below %ld connections\n",
                (long)rl.rlim_cur, need);
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: idle_clients CONNINFO N [TIMEOUT_SECONDS]\n");
        return 2;
    }
    const char *conninfo = argv[1];
    long n = strtol(argv[2], NULL, 10);
    double timeout = argc > 3 ? strtod(argv[3], NULL) : 120.0;
    if (n <= 0 || n > 1000000) {
        fprintf(stderr, "idle_clients: bad N '%s'\n", argv[2]);
        return 2;
    }
    raise_fd_limit(n);

    struct slot *pending = calloc(MAX_IN_FLIGHT, sizeof *pending);
    struct pollfd *pfd = calloc(MAX_IN_FLIGHT, sizeof *pfd);
    PGconn **up = calloc((size_t)n, sizeof *up);
    if (!pending || !pfd || !up) {
        fprintf(stderr, "idle_clients: out of memory\n");
        return 2;
    }
    long started = 0, ok = 0, failed = 0;
    int npending = 0;
    char first_error[256] = "";
    double deadline = now_s() + timeout;

    while ((started < n || npending > 0) && now_s() < deadline) {
        /* Top up the in-flight set. */
        while (started < n && npending < MAX_IN_FLIGHT) {
            PGconn *c = PQconnectStart(conninfo);
            started++;
            if (c == NULL || PQstatus(c) == CONNECTION_BAD) {
                if (!first_error[0])
                    snprintf(first_error, sizeof first_error, "%s",
                             c ? PQerrorMessage(c) : "PQconnectStart: out of memory");
                failed++;
                PQfinish(c);
                continue;
            }
            pending[npending].conn = c;
            pending[npending].want = PGRES_POLLING_WRITING; /* as libpq documents */
            npending++;
        }
        for (int i = 0; i < npending; i++) {
            pfd[i].fd = PQsocket(pending[i].conn);
            pfd[i].events = pending[i].want == PGRES_POLLING_READING ? POLLIN : POLLOUT;
            pfd[i].revents = 0;
        }
        if (npending == 0)
            continue;
        int r = poll(pfd, (nfds_t)npending, 100);
        if (r < 0 && errno != EINTR) {
            perror("idle_clients: poll");
            break;
        }
        /* Advance every connection whose socket is ready; compact the set. */
        int keep = 0;
        for (int i = 0; i < npending; i++) {
            struct slot s = pending[i];
            if (pfd[i].revents) {
                s.want = PQconnectPoll(s.conn);
                if (s.want == PGRES_POLLING_OK) {
                    up[ok++] = s.conn;
                    continue;
                }
                if (s.want == PGRES_POLLING_FAILED) {
                    if (!first_error[0])
                        snprintf(first_error, sizeof first_error, "%s", PQerrorMessage(s.conn));
                    failed++;
                    PQfinish(s.conn);
                    continue;
                }
            }
            pending[keep++] = s;
        }
        npending = keep;
    }
    failed += (n - started) + npending; /* what the timeout cut short */

    /* One line, libpq's trailing newline stripped from the error. */
    first_error[strcspn(first_error, "\n")] = '\0';
    printf("connected %ld of %ld (%ld failed)%s%s\n", ok, n, failed,
           first_error[0] ? ": " : "", first_error);
    fflush(stdout);

    /* Hold the connections (and whatever is still pending) until killed. */
    for (;;)
        pause();
}
