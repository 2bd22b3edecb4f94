/*
 * dns.c - asynchronous name resolution for node connections.
 *
 * libpq resolves a host NAME with a blocking getaddrinfo() inside
 * PQconnectStart; a DNS server that hangs would freeze the event loop for
 * seconds.  Only `hostaddr` (or an IP literal, or a socket path) avoids it.
 * So each node resolves the names of its conninfo's host list here, with
 * glibc's getaddrinfo_a(), and hands libpq the result as `hostaddr` while
 * `host` keeps the names (libpq still uses them for TLS and passwords).
 *
 * A name with several addresses becomes several host entries (name repeated,
 * one address each, the port list expanded alongside), so libpq still tries
 * every address in order as it would have itself; a name that does not
 * resolve is left out of the list, as libpq skips a host it cannot resolve.
 * Results are cached for DNS_TTL seconds; the next connect after that
 * resolves again, so DNS changes are followed.
 *
 * Threads: glibc runs each lookup on its own thread and, when it is done,
 * starts another that runs lookup_notify().  That function touches only the
 * lookup object (its mutex, flags and refcount) and, while the node still
 * listens, calls ev_async_send(), which libev makes thread-safe.  Everything
 * else happens on the loop thread.  A node freed while a lookup runs cancels
 * it (gai_cancel); one that cannot be cancelled any more finishes on its
 * own and frees the lookup object, never the node, which it no longer sees.
 */
#include "internal.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define DNS_TTL 30.0
/* Addresses kept per name: libpq tries them one after the other, and a
 * name with dozens of records would only lengthen a failing connect. */
#define DNS_MAX_ADDRS 8
/* When the pool has no connect timeout, a resolver still may not hang a
 * node's connects for ever. */
#define DNS_DEFAULT_TIMEOUT 10.0

/* One name of the host list, resolved by one getaddrinfo_a() call (so a
 * name that could not be queued never keeps the others from notifying). */
typedef struct dns_slot {
    sy_dns_lookup *lookup;
    int entry;               /* index in the node's host list */
    int submitted;           /* queued: its notification is awaited */
    int notified;            /* lookup_notify() ran for it; under mu */
    int submit_error;        /* getaddrinfo_a()'s code when not queued */
    struct gaicb cb;         /* read by the resolver thread: lives here */
} dns_slot;

/* Shared with the resolver threads.  refs counts the node's reference and
 * one per notification that may still run; the last one frees the object.
 * alive says whether the node still listens: loop and async are only
 * touched under mu while it is set. */
struct sy_dns_lookup {
    pthread_mutex_t mu;
    int refs;
    int alive;
    struct ev_loop *loop;
    ev_async *async;
    struct addrinfo hints;   /* read by the resolver threads */
    int nslots;
    dns_slot slots[];
};

static void lookup_free(sy_dns_lookup *lk)
{
    for (int i = 0; i < lk->nslots; i++) {
        if (lk->slots[i].cb.ar_result)
            freeaddrinfo(lk->slots[i].cb.ar_result);
        free((char *)lk->slots[i].cb.ar_name);
    }
    pthread_mutex_destroy(&lk->mu);
    free(lk);
}

/* Drops n references; frees the object when they were the last. */
static void lookup_unref(sy_dns_lookup *lk, int n)
{
    pthread_mutex_lock(&lk->mu);
    lk->refs -= n;
    int last = lk->refs == 0;
    pthread_mutex_unlock(&lk->mu);
    if (last)
        lookup_free(lk);
}

/* Runs on a thread glibc starts once a lookup is done: the loop thread may
 * be anywhere, the node may be gone (alive is then 0). */
static void lookup_notify(union sigval sv)
{
    dns_slot *slot = sv.sival_ptr;
    sy_dns_lookup *lk = slot->lookup;
    pthread_mutex_lock(&lk->mu);
    slot->notified = 1;
    if (lk->alive)
        ev_async_send(lk->loop, lk->async);
    int last = --lk->refs == 0;
    pthread_mutex_unlock(&lk->mu);
    if (last)
        lookup_free(lk);
}

/* Every queued name answered.  The mutex orders the resolver's writes to
 * the gaicb before this thread's reads of it. */
static int lookup_finished(sy_dns_lookup *lk)
{
    int done = 1;
    pthread_mutex_lock(&lk->mu);
    for (int i = 0; i < lk->nslots && done; i++)
        if (lk->slots[i].submitted && !lk->slots[i].notified)
            done = 0;
    pthread_mutex_unlock(&lk->mu);
    return done;
}

/* The node lets go of a lookup, finished or not.  A queued name that
 * gai_cancel() takes back will never notify: its reference goes too.  One
 * already running (EAI_NOTCANCELED) or done (EAI_ALLDONE, its notification
 * started) keeps the object alive until its notification has run, and
 * alive = 0 keeps that notification away from the node and the loop. */
static void lookup_release(sy_dns_lookup *lk)
{
    int cancelled = 0;
    for (int i = 0; i < lk->nslots; i++)
        if (lk->slots[i].submitted && gai_cancel(&lk->slots[i].cb) == EAI_CANCELED)
            cancelled++;
    pthread_mutex_lock(&lk->mu);
    lk->alive = 0;
    lk->loop = NULL;
    lk->async = NULL;
    pthread_mutex_unlock(&lk->mu);
    lookup_unref(lk, 1 + cancelled);
}

/* ------------------------------------------------------------ conninfo */

static void free_list(char **v, int n)
{
    if (!v)
        return;
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Splits libpq's comma-separated list (no quoting inside: libpq has none
 * for these lists).  NULL on allocation failure; *n is the entry count. */
static char **split_list(const char *s, int *n)
{
    int count = 1;
    for (const char *p = s; *p; p++)
        if (*p == ',')
            count++;
    char **v = calloc((size_t)count, sizeof *v);
    if (!v)
        return NULL;
    const char *start = s;
    for (int i = 0; i < count; i++) {
        const char *end = strchr(start, ',');
        size_t len = end ? (size_t)(end - start) : strlen(start);
        v[i] = malloc(len + 1);
        if (!v[i]) {
            free_list(v, count);
            return NULL;
        }
        memcpy(v[i], start, len);
        v[i][len] = '\0';
        start = end ? end + 1 : start + len;
    }
    *n = count;
    return v;
}

/* What libpq connects to without a name lookup: the default socket (empty),
 * a socket directory or abstract socket ('/', '@'), an IP literal. */
static int is_name(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (!host[0] || host[0] == '/' || host[0] == '@')
        return 0;
    return inet_pton(AF_INET, host, buf) != 1 &&
           inet_pton(AF_INET6, host, buf) != 1;
}

void sy__conninfo_address(const PQconninfoOption *opts, sy_conninfo_address *out)
{
    memset(out, 0, sizeof *out);
    for (const PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (!o->val || !o->val[0])
            continue;
        if (strcmp(o->keyword, "host") == 0)
            out->host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            out->hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            out->port = o->val;
        else if (strcmp(o->keyword, "service") == 0)
            out->service = o->val;
    }
    /* libpq fills what the conninfo leaves out from the environment. */
    if (!out->host)
        out->host = getenv("PGHOST");
    if (!out->hostaddr)
        out->hostaddr = getenv("PGHOSTADDR");
    if (!out->port)
        out->port = getenv("PGPORT");
}

int sy__dns_init(sy_node *n)
{
    sy_dns *d = &n->dns;
    memset(d, 0, sizeof *d);
    /* A dry run never connects: nothing to resolve. */
    if (!n->engine)
        return 0;
    ev_init(&d->async, NULL);
    ev_init(&d->timeout, NULL);

    /* PQconninfoParse only parses (no defaults, no network).  A conninfo it
     * refuses is either a bare database name (the host comes from the
     * environment) or an error libpq reports at connect. */
    PQconninfoOption *opts = PQconninfoParse(n->conninfo, NULL);
    sy_conninfo_address a;
    sy__conninfo_address(opts, &a);
    const char *host = a.host, *hostaddr = a.hostaddr, *port = a.port, *service = a.service;
    int rc = 0;
    /* hostaddr given: libpq resolves nothing.  A service file may set host
     * or hostaddr behind our back: leave such nodes to libpq. */
    if (!host || !host[0] || (hostaddr && hostaddr[0]) || service)
        goto out;
    d->hosts = split_list(host, &d->nhosts);
    if (!d->hosts) {
        rc = SY_ENOMEM;
        goto out;
    }
    for (int i = 0; i < d->nhosts; i++)
        if (is_name(d->hosts[i]))
            d->needed = 1;
    if (d->needed && port && strchr(port, ',')) {
        int nports = 0;
        char **ports = split_list(port, &nports);
        if (!ports) {
            rc = SY_ENOMEM;
            goto out;
        }
        if (nports == d->nhosts) {
            d->ports = ports;
        } else {
            /* libpq refuses the mismatch before it resolves anything. */
            free_list(ports, nports);
            d->needed = 0;
        }
    }
out:
    PQconninfoFree(opts);
    if (rc < 0 || !d->needed) {
        free_list(d->hosts, d->nhosts);
        d->hosts = NULL;
        d->nhosts = 0;
        d->needed = 0;
    }
    return rc;
}

/* ------------------------------------------------------------ results */

static void clear_target(sy_dns *d)
{
    free(d->host);
    free(d->port);
    free(d->hostaddr);
    d->host = d->port = d->hostaddr = NULL;
    memset(&d->target, 0, sizeof d->target);
    d->cached = 0;
}

/* Appends one entry (host, port, hostaddr) to the three lists. */
static void add_entry(sy_buf *h, sy_buf *p, sy_buf *a, int first,
                      const char *host, const char *port, const char *addr)
{
    if (!first) {
        sy__buf_puts(h, ",");
        sy__buf_puts(p, ",");
        sy__buf_puts(a, ",");
    }
    sy__buf_puts(h, host);
    sy__buf_puts(p, port ? port : "");
    sy__buf_puts(a, addr);
}

/* Builds the target from a finished lookup.  0, or -1 with err set when no
 * entry is left to connect to (or memory ran out). */
static int build_target(sy_node *n, sy_dns_lookup *lk, char *err, size_t errlen)
{
    sy_dns *d = &n->dns;
    sy_buf h, p, a;
    sy__buf_init(&h);
    sy__buf_init(&p);
    sy__buf_init(&a);
    int entries = 0, failures = 0;
    err[0] = '\0';
    for (int i = 0; i < d->nhosts; i++) {
        const char *port = d->ports ? d->ports[i] : NULL;
        dns_slot *slot = NULL;
        for (int s = 0; s < lk->nslots; s++)
            if (lk->slots[s].entry == i)
                slot = &lk->slots[s];
        if (!slot) {
            /* A socket path or an IP literal: libpq needs no lookup, and
             * an empty hostaddr entry tells it to use host as it is. */
            add_entry(&h, &p, &a, entries++ == 0, d->hosts[i], port, "");
            continue;
        }
        int code = slot->submitted ? gai_error(&slot->cb) : slot->submit_error;
        if (code != 0) {
            failures++;
            if (!err[0])
                sy__fmt(err, errlen, "could not resolve host \"%s\": %s",
                        d->hosts[i], gai_strerror(code));
            continue;
        }
        char seen[DNS_MAX_ADDRS][NI_MAXHOST];
        int nseen = 0;
        for (struct addrinfo *ai = slot->cb.ar_result; ai && nseen < DNS_MAX_ADDRS;
             ai = ai->ai_next) {
            char addr[NI_MAXHOST];
            /* Numeric output only: no reverse lookup (a link-local scope is
             * named through a local ioctl), nothing waits on the network. */
            if (getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr, NULL,
                            0, NI_NUMERICHOST) != 0)
                continue;
            int dup = 0;
            for (int k = 0; k < nseen && !dup; k++)
                dup = strcmp(seen[k], addr) == 0;
            if (dup)
                continue;
            memcpy(seen[nseen++], addr, sizeof addr);
            add_entry(&h, &p, &a, entries++ == 0, d->hosts[i], port, addr);
            sy__log(n->engine, SY_LOG_DEBUG, "node %s: host \"%s\" is %s",
                    n->full_name, d->hosts[i], addr);
        }
        if (nseen == 0) {
            failures++;
            if (!err[0])
                sy__fmt(err, errlen, "could not resolve host \"%s\": %s",
                        d->hosts[i], "no usable address");
        }
    }
    int rc = 0;
    if (h.oom || p.oom || a.oom) {
        sy__fmt(err, errlen, "could not resolve host \"%s\": out of memory",
                d->hosts[0]);
        rc = -1;
    } else if (entries == 0) {
        rc = -1; /* err names the first name that failed */
    } else {
        if (failures > 0)
            /* libpq would skip such a host too; say so once per lookup. */
            sy__log(n->engine, SY_LOG_WARN, "node %s: %s; trying the other hosts",
                    n->full_name, err);
        clear_target(d);
        d->host = h.buf;
        d->hostaddr = a.buf;
        d->port = d->ports ? p.buf : NULL;
        if (!d->ports)
            sy__buf_free(&p);
        d->target.host = d->host;
        d->target.port = d->port;
        d->target.hostaddr = d->hostaddr;
        d->cached = 1;
        d->resolved_at = ev_now(n->engine->loop);
        return 0;
    }
    sy__buf_free(&h);
    sy__buf_free(&p);
    sy__buf_free(&a);
    return rc;
}

/* Ends the running lookup and tells whoever waits, err NULL on success. */
static void finish(sy_node *n, const char *err)
{
    sy_dns *d = &n->dns;
    struct ev_loop *loop = n->engine->loop;
    ev_async_stop(loop, &d->async);
    ev_timer_stop(loop, &d->timeout);
    lookup_release(d->lookup);
    d->lookup = NULL;
    int wake = d->wake;
    d->wake = 0;
    /* A waiter may drop the last reference to the node (a pool failing its
     * waiters fails their requests); keep it until both are told. */
    sy__node_ref(n);
    if (wake & SY_DNS_FOR_POOL)
        sy__pool_dns_done(&n->pool, err);
    if (wake & SY_DNS_FOR_RELAY_POOL)
        sy__pool_dns_done(&n->relay_pool, err);
    if (wake & SY_DNS_FOR_HEALTH)
        sy__health_dns_done(n, err);
    sy__node_unref(n);
}

static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_node *n = sy_container_of(w, sy_node, dns.async);
    sy_dns *d = &n->dns;
    /* One wake-up per name; act when the last one has answered. */
    if (!d->lookup || !lookup_finished(d->lookup))
        return;
    char err[256];
    if (build_target(n, d->lookup, err, sizeof err) < 0)
        finish(n, err);
    else
        finish(n, NULL);
}

/* Connects wait for the lookup: the pool's connect timeout bounds it. */
static double lookup_timeout(const sy_node *n)
{
    return n->pool.set.connect_timeout > 0 ? n->pool.set.connect_timeout
                                           : DNS_DEFAULT_TIMEOUT;
}

static void timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_node *n = sy_container_of(w, sy_node, dns.timeout);
    sy_dns *d = &n->dns;
    sy_dns_lookup *lk = d->lookup;
    const char *name = d->hosts[lk->slots[0].entry];
    pthread_mutex_lock(&lk->mu);
    for (int i = 0; i < lk->nslots; i++)
        if (lk->slots[i].submitted && !lk->slots[i].notified) {
            name = d->hosts[lk->slots[i].entry];
            break;
        }
    pthread_mutex_unlock(&lk->mu);
    char err[256];
    sy__fmt(err, sizeof err, "could not resolve host \"%s\": no answer within %.3g s",
            name, lookup_timeout(n));
    finish(n, err);
}

/* Queues one getaddrinfo_a() per name.  -1 when none could be queued. */
static int start_lookup(sy_node *n, char *err, size_t errlen)
{
    sy_dns *d = &n->dns;
    int names = 0;
    for (int i = 0; i < d->nhosts; i++)
        names += is_name(d->hosts[i]);
    sy_dns_lookup *lk = calloc(1, sizeof *lk + (size_t)names * sizeof(dns_slot));
    if (!lk) {
        sy__fmt(err, errlen, "could not resolve host \"%s\": out of memory",
                d->hosts[0]);
        return -1;
    }
    pthread_mutex_init(&lk->mu, NULL);
    lk->refs = 1;
    lk->alive = 1;
    lk->loop = n->engine->loop;
    lk->async = &d->async;
    /* What libpq asks for itself. */
    lk->hints.ai_family = AF_UNSPEC;
    lk->hints.ai_socktype = SOCK_STREAM;
    for (int i = 0; i < d->nhosts; i++) {
        if (!is_name(d->hosts[i]))
            continue;
        dns_slot *s = &lk->slots[lk->nslots++];
        s->lookup = lk;
        s->entry = i;
        s->cb.ar_name = sy__strdup(d->hosts[i]);
        s->cb.ar_request = &lk->hints;
        if (!s->cb.ar_name)
            s->submit_error = EAI_MEMORY;
    }
    /* Started before the first name is queued, so a wake-up sent by a fast
     * answer is never lost. */
    ev_async_init(&d->async, async_cb);
    ev_async_start(n->engine->loop, &d->async);
    int queued = 0;
    for (int i = 0; i < lk->nslots; i++) {
        dns_slot *s = &lk->slots[i];
        if (s->submit_error)
            continue;
        struct sigevent sev;
        memset(&sev, 0, sizeof sev);
        sev.sigev_notify = SIGEV_THREAD;
        sev.sigev_notify_function = lookup_notify;
        sev.sigev_value.sival_ptr = s;
        struct gaicb *list[1] = {&s->cb};
        /* The notification can run before getaddrinfo_a() returns: its
         * reference must exist first.  A call that fails may still notify
         * (glibc does when nothing could be queued), so the reference
         * stays; at worst the object leaks, it is never freed early. */
        pthread_mutex_lock(&lk->mu);
        lk->refs++;
        pthread_mutex_unlock(&lk->mu);
        int rc = getaddrinfo_a(GAI_NOWAIT, list, 1, &sev);
        if (rc != 0) {
            s->submit_error = rc;
            continue;
        }
        s->submitted = 1; /* the loop thread alone reads and writes it */
        queued++;
    }
    d->lookup = lk;
    if (queued == 0) {
        const dns_slot *s = &lk->slots[0];
        sy__fmt(err, errlen, "could not resolve host \"%s\": %s",
                d->hosts[s->entry], gai_strerror(s->submit_error));
        ev_async_stop(n->engine->loop, &d->async);
        lookup_release(lk);
        d->lookup = NULL;
        return -1;
    }
    ev_timer_init(&d->timeout, timeout_cb, lookup_timeout(n), 0.);
    ev_timer_start(n->engine->loop, &d->timeout);
    return 0;
}

int sy__dns_target(sy_node *n, int who, const sy_conn_target **target,
                   char *err, size_t errlen)
{
    sy_dns *d = &n->dns;
    *target = NULL;
    if (!d->needed || !n->engine)
        return 0;
    if (d->lookup) {
        d->wake |= who;
        return 1;
    }
    if (d->cached && ev_now(n->engine->loop) - d->resolved_at < DNS_TTL) {
        *target = &d->target;
        return 0;
    }
    if (start_lookup(n, err, errlen) < 0)
        return -1;
    d->wake |= who;
    return 1;
}

void sy__dns_forget(sy_node *n, int who)
{
    sy_dns *d = &n->dns;
    d->wake &= ~who;
    /* The engine is stopping and nobody waits: a lookup left running would
     * keep the loop alive (async and timer) for nothing. */
    if (d->lookup && !d->wake && n->pool.closing && n->relay_pool.closing) {
        ev_async_stop(n->engine->loop, &d->async);
        ev_timer_stop(n->engine->loop, &d->timeout);
        lookup_release(d->lookup);
        d->lookup = NULL;
    }
}

void sy__dns_cleanup(sy_node *n)
{
    sy_dns *d = &n->dns;
    if (d->lookup) {
        ev_async_stop(n->engine->loop, &d->async);
        ev_timer_stop(n->engine->loop, &d->timeout);
        lookup_release(d->lookup);
        d->lookup = NULL;
    }
    d->wake = 0;
    clear_target(d);
    free_list(d->hosts, d->nhosts);
    free_list(d->ports, d->nhosts);
    d->hosts = d->ports = NULL;
    d->nhosts = 0;
    d->needed = 0;
}
