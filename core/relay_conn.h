/*
 * relay_conn.h - a backend connection the proxy speaks the protocol on
 * itself (core/relay_conn.c): libpq opens it (conninfo, .pgpass, SCRAM,
 * TLS), then hands the socket over; plus the CancelRequest sender.
 *
 * This header uses only plain C types so the specs can declare it to
 * LuaJIT's FFI (sy.cdef_internal("relay_conn")).  The structs and the
 * functions that need libev/libpq/internal types are in the relay_conn
 * section at the end of internal.h.
 */
#ifndef SY_RELAY_CONN_H
#define SY_RELAY_CONN_H

#include <stddef.h>
#include <stdint.h>

typedef struct sy_relay_conn sy_relay_conn;
typedef struct sy_relay_cancel sy_relay_cancel;

/* Connect steps (sy__relay_connect_poll) and transport results
 * (sy__relay_read / sy__relay_write).  The WANT_* values say which readiness
 * to wait for: a TLS read can need the socket writable and vice versa. */
enum {
    SY_RELAY_READY = 0,       /* connect: done, the socket is ours now */
    SY_RELAY_WANT_READ = -1,  /* would block: wait until readable */
    SY_RELAY_WANT_WRITE = -2, /* would block: wait until writable */
    SY_RELAY_FAILED = -3      /* connect failed / transport broken */
};

/* The socket to watch (libpq may switch it while connecting), or -1. */
int sy__relay_fd(const sy_relay_conn *rc);

/* One connect step (PQconnectPoll).  SY_RELAY_WANT_READ / _WRITE: wait for
 * that on sy__relay_fd() and call again; SY_RELAY_READY once (the cancel key
 * is captured then; later calls keep returning READY); SY_RELAY_FAILED with
 * the reason in sy__relay_error(). */
int sy__relay_connect_poll(sy_relay_conn *rc);

/* Why the connect or the transport failed ("" if it did not). */
const char *sy__relay_error(const sy_relay_conn *rc);
/* PQbackendPID of a ready connection (0 before). */
int sy__relay_backend_pid(const sy_relay_conn *rc);
/* 1 with *pid / *key set when the BackendKeyData was captured and checked
 * (and the server's address is known), else 0: "no cancel key", the caller
 * falls back to PQcancel off the loop. */
int sy__relay_cancel_key(const sy_relay_conn *rc, uint32_t *pid, uint32_t *key);
/* Where a CancelRequest goes, for logs: "127.0.0.1:5432", "/run/x/.s.PGSQL.5432". */
const char *sy__relay_cancel_address(const sy_relay_conn *rc);
/* 1 when the connection runs TLS (the transport uses SSL_read/SSL_write). */
int sy__relay_tls(const sy_relay_conn *rc);

/* Raw transport on a READY connection; non-blocking only.
 * read: > 0 bytes read, 0 end of stream, or SY_RELAY_WANT_READ / _WRITE /
 * SY_RELAY_FAILED.  With TLS, keep reading until it returns a WANT_*:
 * bytes already decrypted inside OpenSSL (sy__relay_pending) never make
 * the socket readable again, so libev would not report them.
 * write: > 0 bytes taken (maybe fewer than len), or WANT_* / FAILED.  After
 * a WANT_* the caller must retry with the same bytes (OpenSSL's rule; the
 * moving-buffer mode libpq sets lets them move in memory). */
ptrdiff_t sy__relay_read(sy_relay_conn *rc, void *buf, size_t cap);
ptrdiff_t sy__relay_write(sy_relay_conn *rc, const void *buf, size_t len);
/* Decrypted bytes waiting inside OpenSSL (always 0 without TLS). */
int sy__relay_pending(const sy_relay_conn *rc);

/* Closes the socket and frees rc (NULL is a no-op).  Call it at a message
 * boundary: libpq sends its Terminate on the raw stream. */
void sy__relay_close(sy_relay_conn *rc);

/* ---- spec helpers: block the calling thread, for specs only ---------- */

/* Opens a relay connection and drives its connect with poll() until READY
 * (returns it) or failure / timeout (NULL, reason in err). */
sy_relay_conn *sy__relay_test_connect(const char *conninfo, double timeout,
                                      char *err, size_t errlen);
/* Sends a CancelRequest for rc's backend through sy__relay_cancel_start on
 * a private libev loop and runs it to completion: its result (0 or SY_E*),
 * or SY_EINVAL when rc has no cancel key. */
int sy__relay_test_cancel(const sy_relay_conn *rc, double timeout);

#endif
