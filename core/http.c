/*
 * http.c - HTTP GET requests on the engine's loop.  libcurl does the
 * protocol, TLS and name lookups (its threaded resolver, so a slow DNS
 * server never blocks the loop); its multi interface is driven by libev
 * through curl_multi_socket_action(): the loop watches the sockets libcurl
 * names and runs libcurl's one timer.  Used to read Patroni's REST API
 * (patroni.c).  Nothing here is process-global: each engine has its own
 * multi handle (libcurl 7.84+ initialises itself thread-safely).
 */
#include "internal.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

struct sy_http {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;
    sy_list gets;       /* sy_http_get in flight */
};

struct sy_http_get {
    sy_http *http;
    CURL *easy;
    sy_buf body;
    size_t max_body;
    int too_large;
    char errbuf[CURL_ERROR_SIZE];
    sy_http_cb cb;
    void *data;
    sy_list link;
};

/* One socket libcurl asked the loop to watch. */
typedef struct http_socket {
    ev_io io;
    sy_http *http;
} http_socket;

static void check_done(sy_http *h)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        sy_http_get *g = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&g);
        CURLcode result = msg->data.result;
        long status = 0;
        curl_easy_getinfo(g->easy, CURLINFO_RESPONSE_CODE, &status);
        char err[CURL_ERROR_SIZE + 64] = "";
        if (g->too_large)
            sy__fmt(err, sizeof err, "reply larger than %zu bytes", g->max_body);
        else if (g->body.oom)
            sy__fmt(err, sizeof err, "out of memory");
        else if (result != CURLE_OK)
            sy__fmt(err, sizeof err, "%s", g->errbuf[0] ? g->errbuf : curl_easy_strerror(result));
        /* The request is over before its callback runs: the callback may
         * start the next one, or cancel others. */
        sy_buf body = g->body;
        sy_http_cb cb = g->cb;
        void *data = g->data;
        sy_list_remove(&g->link);
        curl_multi_remove_handle(h->multi, g->easy);
        curl_easy_cleanup(g->easy);
        free(g);
        cb(data, status, body.buf ? body.buf : "", body.len, err[0] ? err : NULL);
        sy__buf_free(&body);
    }
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    http_socket *s = sy_container_of(w, http_socket, io);
    sy_http *h = s->http;
    int flags = (revents & EV_READ ? CURL_CSELECT_IN : 0) |
                (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(h->multi, w->fd, flags, &running); /* may free s */
    check_done(h);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_http *h = sy_container_of(w, sy_http, timer);
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    sy_http *h = userp;
    http_socket *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            ev_io_stop(h->loop, &s->io);
            free(s);
        }
        curl_multi_assign(h->multi, fd, NULL);
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return -1;
        s->http = h;
        ev_init(&s->io, io_cb);
        curl_multi_assign(h->multi, fd, s);
    }
    int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    ev_io_stop(h->loop, &s->io);
    ev_io_set(&s->io, fd, events);
    ev_io_start(h->loop, &s->io);
    return 0;
}

static int timerfunction_cb(CURLM *multi, long ms, void *userp)
{
    (void)multi;
    sy_http *h = userp;
    ev_timer_stop(h->loop, &h->timer);
    if (ms >= 0) {
        /* 0 means "now"; the loop runs it on its next turn, outside
         * libcurl's own call stack. */
        ev_timer_set(&h->timer, (double)ms / 1000.0, 0.);
        ev_timer_start(h->loop, &h->timer);
    }
    return 0;
}

sy_http *sy__http_new(struct ev_loop *loop)
{
    /* Without an asynchronous resolver, a name lookup would block the
     * loop: refuse (Debian's libcurl has the threaded one). */
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (!v || !(v->features & CURL_VERSION_ASYNCHDNS))
        return NULL;
    sy_http *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->loop = loop;
    h->multi = curl_multi_init();
    if (!h->multi) {
        free(h);
        return NULL;
    }
    sy_list_init(&h->gets);
    ev_init(&h->timer, timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timerfunction_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
}

void sy__http_free(sy_http *h)
{
    if (!h)
        return;
    sy_list *l;
    while ((l = sy_list_pop_head(&h->gets)) != NULL) {
        sy_http_get *g = sy_container_of(l, sy_http_get, link);
        sy_list_init(&g->link);
        sy__http_cancel(g);
    }
    curl_multi_cleanup(h->multi); /* removes the sockets' watchers */
    ev_timer_stop(h->loop, &h->timer);
    free(h);
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    sy_http_get *g = userdata;
    size_t n = size * nmemb;
    if (g->body.len + n > g->max_body) {
        g->too_large = 1;
        return 0; /* aborts the transfer */
    }
    return sy__buf_append(&g->body, ptr, n) == 0 ? n : 0;
}

sy_http_get *sy__http_get(sy_http *h, const char *url, double timeout, size_t max_body,
                          sy_http_cb cb, void *data, char *err, size_t errlen)
{
    sy_http_get *g = calloc(1, sizeof *g);
    CURL *easy = g ? curl_easy_init() : NULL;
    if (!easy) {
        free(g);
        sy__fmt(err, errlen, "out of memory");
        return NULL;
    }
    g->http = h;
    g->easy = easy;
    g->max_body = max_body;
    g->cb = cb;
    g->data = data;
    sy__buf_init(&g->body);
    long ms = (long)(timeout * 1000.0);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, g);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, g->errbuf);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, g);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, ms > 0 ? ms : 1L);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    /* Ending a request whose name lookup still runs must not wait for the
     * resolver thread (libcurl would join it, on the loop). */
    curl_easy_setopt(easy, CURLOPT_QUICK_EXIT, 1L);
    /* Patroni sits next to the databases: an http_proxy meant for the
     * outside world must not come between. */
    curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85 */
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "switchyard");
    CURLMcode rc = curl_multi_add_handle(h->multi, easy);
    if (rc != CURLM_OK) {
        sy__fmt(err, errlen, "%s", curl_multi_strerror(rc));
        curl_easy_cleanup(easy);
        free(g);
        return NULL;
    }
    sy_list_insert_tail(&h->gets, &g->link);
    return g;
}

void sy__http_cancel(sy_http_get *g)
{
    if (!g)
        return;
    sy_list_remove(&g->link);
    curl_multi_remove_handle(g->http->multi, g->easy);
    curl_easy_cleanup(g->easy);
    sy__buf_free(&g->body);
    free(g);
}
