/*
 * tls.h - the proxy's client-facing TLS layer (core/tls.c): a server
 * context built from a certificate, its key and an optional CA, and a
 * per-connection stream over a non-blocking socket, run after the proxy
 * has answered a client's SSLRequest with 'S'.
 *
 * This header uses only plain C types so the specs can declare it to
 * LuaJIT's FFI (sy.cdef_internal("tls")).  Results follow relay_conn.h:
 * bytes, 0 for an orderly end, or a negative WANT_* / FAILED.
 */
#ifndef SY_TLS_H
#define SY_TLS_H

#include <stddef.h>

typedef struct sy_tls_server sy_tls_server;
typedef struct sy_tls_stream sy_tls_stream;

/* Handshake / shutdown steps and transport results.  The WANT_* values say
 * which readiness to wait for: a TLS read can need the socket writable
 * (and a write readable). */
enum {
    SY_TLS_DONE = 0,        /* handshake / shutdown: finished */
    SY_TLS_WANT_READ = -1,  /* would block: wait until readable */
    SY_TLS_WANT_WRITE = -2, /* would block: wait until writable */
    SY_TLS_FAILED = -3      /* broken; the reason is in sy__tls_error() */
};

/* A server context: TLS 1.2 or later, no compression, no renegotiation.
 * cert_path: PEM chain (leaf first); key_path: its PEM private key, which
 * must match the certificate; ca_path: PEM CA bundle for client
 * certificates or NULL (with it, a client certificate is asked for and
 * verified when presented; whether one is required is the caller's
 * decision, see sy__tls_peer_verified).  NULL on failure, with a reason
 * naming the file in err. */
sy_tls_server *sy__tls_server_new(const char *cert_path, const char *key_path,
                                  const char *ca_path, char *err,
                                  size_t errlen);
/* NULL is a no-op.  Streams hold their own reference: free in any order. */
void sy__tls_server_free(sy_tls_server *srv);

/* A server stream on fd (non-blocking; the caller keeps owning it and
 * closes it after sy__tls_stream_free).  buffered_plaintext: how many bytes
 * the caller had already read past the SSLRequest.  They arrived before the
 * handshake, unencrypted, so a man in the middle could have injected them
 * (CVE-2021-23214): nonzero refuses the connection (NULL, reason in err).
 * sy__tls_plaintext_injected tells the same thing on its own. */
sy_tls_stream *sy__tls_stream_new(sy_tls_server *srv, int fd,
                                  size_t buffered_plaintext, char *err,
                                  size_t errlen);
int sy__tls_plaintext_injected(size_t buffered_plaintext);

/* One handshake step: SY_TLS_DONE (and again on later calls), WANT_* to
 * wait for that on fd and call again, or SY_TLS_FAILED with OpenSSL's
 * reason in sy__tls_error(). */
int sy__tls_handshake(sy_tls_stream *st);

/* After DONE.  read: > 0 bytes, 0 when the client closed in order
 * (close_notify), or WANT_* / FAILED (an EOF without close_notify is
 * FAILED: the stream may have been truncated).  Keep reading until it
 * returns a WANT_*: bytes OpenSSL has already decrypted
 * (sy__tls_pending) never make the socket readable again, so libev would
 * not report them.
 * write: > 0 bytes taken (maybe fewer than len: partial writes are on),
 * or WANT_* / FAILED.  After a WANT_* retry with the same bytes; the buffer
 * may move (moving-buffer mode is on). */
ptrdiff_t sy__tls_read(sy_tls_stream *st, void *buf, size_t cap);
ptrdiff_t sy__tls_write(sy_tls_stream *st, const void *buf, size_t len);
/* Decrypted bytes waiting inside OpenSSL. */
int sy__tls_pending(const sy_tls_stream *st);

/* Sends close_notify: SY_TLS_DONE once sent, WANT_WRITE to retry, or
 * FAILED.  It does not wait for the client's: free the stream after. */
int sy__tls_shutdown(sy_tls_stream *st);

/* Why the handshake or the transport failed ("" if it did not). */
const char *sy__tls_error(const sy_tls_stream *st);
/* "TLSv1.3" etc. after the handshake, "" before. */
const char *sy__tls_version(const sy_tls_stream *st);
/* 1 when the client presented a certificate that verified against the
 * server's CA, else 0. */
int sy__tls_peer_verified(const sy_tls_stream *st);

/* Frees the stream (NULL is a no-op); does not close fd. */
void sy__tls_stream_free(sy_tls_stream *st);

#endif
