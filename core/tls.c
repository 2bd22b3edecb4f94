/*
 * tls.c - the proxy's client-facing TLS: after the listener has read a
 * client's SSLRequest and answered 'S', the connection runs a server-side
 * OpenSSL stream on the same non-blocking socket.  OpenSSL does all of TLS
 * (handshake, records, alerts); this module only maps its results onto the
 * transport conventions of relay_conn.h and keeps the reasons readable.
 *
 * Plaintext that arrived after the SSLRequest but before the handshake is
 * refused outright (CVE-2021-23214): a man in the middle can append it to
 * the client's SSLRequest, and treating it as the first bytes of the
 * encrypted session would let him inject commands.
 */
#include "tls.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* Streams keep the server alive (refs): they share its BIO method.  Both
 * live on one loop's thread, so a plain counter does. */
struct sy_tls_server {
    SSL_CTX *ctx;
    BIO_METHOD *bio;
    int refs;
};

struct sy_tls_stream {
    sy_tls_server *srv;
    SSL *ssl;
    int done;   /* handshake finished */
    int broken; /* FAILED was returned: no more I/O, no shutdown */
    char error[256];
};

/* The oldest error on OpenSSL's queue as "reason" (or errno / fallback),
 * then the queue is cleared: it is per thread and shared with libpq. */
static void ssl_reason(char *dst, size_t len, const char *fallback)
{
    unsigned long code = ERR_get_error();
    if (code) {
        const char *r = ERR_reason_error_string(code);
        if (ERR_SYSTEM_ERROR(code))
            sy__fmt(dst, len, "%s", strerror(ERR_GET_REASON(code)));
        else if (r)
            sy__fmt(dst, len, "%s", r);
        else
            ERR_error_string_n(code, dst, len);
    } else if (errno) {
        sy__fmt(dst, len, "%s", strerror(errno));
    } else {
        sy__fmt(dst, len, "%s", fallback);
    }
    ERR_clear_error();
}

/* No terminal prompt for an encrypted key: a proxy must never block on it. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0;
}

/* ------------------------------------------------------ socket BIO
 * OpenSSL's socket BIO writes with write(): a client that is gone would
 * raise SIGPIPE (an alert is written on every fatal error).  This one sends
 * with MSG_NOSIGNAL, like the rest of the core, and keeps no process-wide
 * state: no SIGPIPE disposition to change in an embedding program. */

static int bio_fd(BIO *b) { return (int)(intptr_t)BIO_get_data(b); }

static int bio_write(BIO *b, const char *buf, int len)
{
    BIO_clear_retry_flags(b);
    ssize_t n = send(bio_fd(b), buf, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_write(b);
    return (int)n;
}

static int bio_read(BIO *b, char *buf, int len)
{
    BIO_clear_retry_flags(b);
    if (!buf || len <= 0)
        return 0;
    ssize_t n = recv(bio_fd(b), buf, (size_t)len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_read(b);
    else if (n == 0)
        BIO_set_flags(b, BIO_FLAGS_IN_EOF); /* OpenSSL tells truncation by it */
    return (int)n;
}

static int bio_puts(BIO *b, const char *s)
{
    return bio_write(b, s, (int)strlen(s));
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_EOF:
        return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
    case BIO_C_GET_FD:
        if (ptr)
            *(int *)ptr = bio_fd(b);
        return bio_fd(b);
    default:
        return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_data(b, (void *)(intptr_t)-1);
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *bio_method_new(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOCKET, "switchyard socket");
    if (m && (!BIO_meth_set_write(m, bio_write) ||
              !BIO_meth_set_read(m, bio_read) ||
              !BIO_meth_set_puts(m, bio_puts) ||
              !BIO_meth_set_ctrl(m, bio_ctrl) ||
              !BIO_meth_set_create(m, bio_create))) {
        BIO_meth_free(m);
        m = NULL;
    }
    return m;
}

/* ------------------------------------------------------------ server */

static void server_unref(sy_tls_server *srv)
{
    if (--srv->refs > 0)
        return;
    SSL_CTX_free(srv->ctx);
    BIO_meth_free(srv->bio);
    free(srv);
}

sy_tls_server *sy__tls_server_new(const char *cert_path, const char *key_path,
                                  const char *ca_path, char *err,
                                  size_t errlen)
{
    char why[160];
    if (!cert_path || !key_path) {
        sy__fmt(err, errlen, "TLS needs a certificate file and a key file");
        return NULL;
    }
    sy_tls_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        sy__fmt(err, errlen, "out of memory");
        return NULL;
    }
    srv->refs = 1;
    ERR_clear_error();
    errno = 0;
    srv->ctx = SSL_CTX_new(TLS_server_method());
    srv->bio = bio_method_new();
    if (!srv->ctx || !srv->bio) {
        ssl_reason(why, sizeof why, "SSL_CTX_new failed");
        sy__fmt(err, errlen, "TLS: %s", why);
        goto fail;
    }
    SSL_CTX *ctx = srv->ctx;
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        ssl_reason(why, sizeof why, "cannot set the minimum version");
        sy__fmt(err, errlen, "TLS: %s", why);
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_clear_mode(ctx, SSL_MODE_AUTO_RETRY);
    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    /* No session cache: nothing process-global, no tickets to rotate. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);

    errno = 0;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        ssl_reason(why, sizeof why, "unreadable");
        sy__fmt(err, errlen, "TLS certificate file \"%s\": %s", cert_path, why);
        goto fail;
    }
    errno = 0;
    if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1) {
        unsigned long last = ERR_peek_last_error();
        if (ERR_GET_LIB(last) == ERR_LIB_X509 &&
            ERR_GET_REASON(last) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            sy__fmt(err, errlen,
                    "TLS key file \"%s\" does not match certificate file "
                    "\"%s\"",
                    key_path, cert_path);
            goto fail;
        }
        ssl_reason(why, sizeof why, "unreadable");
        sy__fmt(err, errlen, "TLS key file \"%s\": no usable private key (%s)",
                key_path, why);
        goto fail;
    }
    /* A key that does not match makes OpenSSL drop the certificate quietly;
     * this check is what notices. */
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        sy__fmt(err, errlen,
                "TLS key file \"%s\" does not match certificate file \"%s\"",
                key_path, cert_path);
        goto fail;
    }
    if (ca_path) {
        errno = 0;
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_path);
        if (!names || SSL_CTX_load_verify_locations(ctx, ca_path, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            ssl_reason(why, sizeof why, "no certificates in it");
            sy__fmt(err, errlen, "TLS CA file \"%s\": %s", ca_path, why);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names); /* takes ownership */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    ERR_clear_error();
    return srv;
fail:
    ERR_clear_error();
    sy__tls_server_free(srv);
    return NULL;
}

void sy__tls_server_free(sy_tls_server *srv)
{
    if (srv)
        server_unref(srv); /* live streams keep their own reference */
}

int sy__tls_plaintext_injected(size_t buffered_plaintext)
{
    return buffered_plaintext != 0;
}

sy_tls_stream *sy__tls_stream_new(sy_tls_server *srv, int fd,
                                  size_t buffered_plaintext, char *err,
                                  size_t errlen)
{
    if (!srv || fd < 0) {
        sy__fmt(err, errlen, "TLS stream needs a server context and a socket");
        return NULL;
    }
    if (sy__tls_plaintext_injected(buffered_plaintext)) {
        sy__fmt(err, errlen,
                "received %zu unencrypted byte%s after the SSLRequest, before "
                "the TLS handshake: refusing the connection (possible "
                "man-in-the-middle injection)",
                buffered_plaintext, buffered_plaintext == 1 ? "" : "s");
        return NULL;
    }
    sy_tls_stream *st = calloc(1, sizeof *st);
    if (!st) {
        sy__fmt(err, errlen, "out of memory");
        return NULL;
    }
    ERR_clear_error();
    errno = 0;
    st->srv = srv;
    srv->refs++;
    st->ssl = SSL_new(srv->ctx);
    BIO *bio = st->ssl ? BIO_new(srv->bio) : NULL;
    if (bio)
        BIO_set_data(bio, (void *)(intptr_t)fd);
    if (!bio) {
        char why[160];
        ssl_reason(why, sizeof why, "out of memory");
        sy__fmt(err, errlen, "TLS: %s", why);
        sy__tls_stream_free(st);
        return NULL;
    }
    SSL_set_bio(st->ssl, bio, bio); /* the SSL owns the one BIO */
    SSL_set_accept_state(st->ssl);
    return st;
}

static int stream_fail(sy_tls_stream *st, const char *what, const char *why)
{
    if (!st->error[0])
        sy__fmt(st->error, sizeof st->error, "TLS %s: %s", what, why);
    st->broken = 1;
    return SY_TLS_FAILED;
}

/* Maps an SSL_* return <= 0 onto WANT_* / 0 / FAILED. */
static int ssl_result(sy_tls_stream *st, int n, const char *what)
{
    char why[160];
    switch (SSL_get_error(st->ssl, n)) {
    case SSL_ERROR_WANT_READ:
        return SY_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return SY_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        return 0; /* close_notify: an orderly end */
    case SSL_ERROR_SYSCALL: /* a socket error (EAGAIN is a WANT_* above) */
        ssl_reason(why, sizeof why, "connection closed");
        return stream_fail(st, what, why);
    default:
        ssl_reason(why, sizeof why, "protocol error");
        return stream_fail(st, what, why);
    }
}

int sy__tls_handshake(sy_tls_stream *st)
{
    if (st->broken)
        return SY_TLS_FAILED;
    if (st->done)
        return SY_TLS_DONE;
    ERR_clear_error();
    errno = 0;
    int n = SSL_do_handshake(st->ssl);
    if (n == 1) {
        st->done = 1;
        return SY_TLS_DONE;
    }
    int r = ssl_result(st, n, "handshake");
    return r == 0 ? stream_fail(st, "handshake", "closed by the client") : r;
}

ptrdiff_t sy__tls_read(sy_tls_stream *st, void *buf, size_t cap)
{
    if (!st->done || st->broken || cap == 0)
        return SY_TLS_FAILED;
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(st->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
    return n > 0 ? n : ssl_result(st, n, "read");
}

ptrdiff_t sy__tls_write(sy_tls_stream *st, const void *buf, size_t len)
{
    if (!st->done || st->broken || len == 0)
        return SY_TLS_FAILED;
    ERR_clear_error();
    errno = 0;
    int n = SSL_write(st->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0)
        return n;
    int r = ssl_result(st, n, "write");
    /* A write cannot end in order: the peer's close_notify came first. */
    return r == 0 ? stream_fail(st, "write", "closed by the client") : r;
}

int sy__tls_pending(const sy_tls_stream *st)
{
    return st->ssl ? SSL_pending(st->ssl) : 0;
}

int sy__tls_shutdown(sy_tls_stream *st)
{
    if (st->broken)
        return SY_TLS_FAILED;
    if (!st->done)
        return stream_fail(st, "shutdown", "handshake not finished");
    ERR_clear_error();
    errno = 0;
    int n = SSL_shutdown(st->ssl);
    if (n >= 0)
        return SY_TLS_DONE; /* 0: ours sent, theirs not awaited */
    int r = ssl_result(st, n, "shutdown");
    return r == 0 ? SY_TLS_DONE : r;
}

const char *sy__tls_error(const sy_tls_stream *st) { return st->error; }

const char *sy__tls_version(const sy_tls_stream *st)
{
    return st->done ? SSL_get_version(st->ssl) : "";
}

int sy__tls_peer_verified(const sy_tls_stream *st)
{
    if (!st->done)
        return 0;
    X509 *peer = SSL_get1_peer_certificate(st->ssl);
    if (!peer)
        return 0;
    X509_free(peer);
    return SSL_get_verify_result(st->ssl) == X509_V_OK;
}

void sy__tls_stream_free(sy_tls_stream *st)
{
    if (!st)
        return;
    SSL_free(st->ssl);
    if (st->srv)
        server_unref(st->srv);
    free(st);
}
