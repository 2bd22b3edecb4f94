/*
 * pgproto_build.c - writing PostgreSQL v3 wire-protocol messages into an
 * sy_buf: the server-side messages the proxy sends its clients (errors,
 * authentication requests, status) and the client-side messages it sends
 * servers when it has to rewrite what a client sent (renamed prepared
 * statements) or speak first (cancel requests).
 *
 * Each builder writes the type byte and a placeholder length, appends the
 * body, then patches the length in; a failure part way rolls the buffer
 * back to where the message began, so a caller never sends half of one.
 */
#include "pgproto.h"

#include <string.h>

typedef struct msg {
    sy_buf *b;
    size_t start;  /* b->len before the message */
    size_t lenpos; /* where the Int32 length goes */
    int bad;
} msg;

static void put(msg *m, const void *p, size_t n)
{
    if (!m->bad && sy__buf_append(m->b, p, n) < 0)
        m->bad = 1;
}

static void put_u32(msg *m, uint32_t v)
{
    unsigned char q[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 8), (unsigned char)v };
    put(m, q, 4);
}

static void put_u16(msg *m, uint16_t v)
{
    unsigned char q[2] = { (unsigned char)(v >> 8), (unsigned char)v };
    put(m, q, 2);
}

static void put_u8(msg *m, uint8_t v)
{
    put(m, &v, 1);
}

/* A protocol string: the bytes and their NUL. */
static void put_strn(msg *m, const char *s, size_t n)
{
    if (s)
        put(m, s, n);
    put_u8(m, 0);
}

static void put_str(msg *m, const char *s)
{
    put_strn(m, s, s ? strlen(s) : 0);
}

/* type 0 starts a startup-phase packet, which has no type byte. */
static void begin(msg *m, sy_buf *b, uint8_t type)
{
    m->b = b;
    m->start = b->len;
    m->bad = 0;
    if (type)
        put_u8(m, type);
    m->lenpos = b->len;
    put_u32(m, 0);
}

static int end(msg *m)
{
    size_t len = m->b->len - m->lenpos;
    if (m->bad || len > INT32_MAX) {
        /* Roll back rather than leave a torn message in the buffer. */
        m->b->len = m->start;
        if (m->b->buf)
            m->b->buf[m->start] = '\0';
        return -1;
    }
    unsigned char *q = (unsigned char *)m->b->buf + m->lenpos;
    q[0] = (unsigned char)(len >> 24);
    q[1] = (unsigned char)(len >> 16);
    q[2] = (unsigned char)(len >> 8);
    q[3] = (unsigned char)len;
    return 0;
}

/* ---- server-side messages --------------------------------------------- */

static int build_fields(sy_buf *b, uint8_t type, const sy_pg_notice_fields *f)
{
    if (!f->severity || !f->sqlstate || strlen(f->sqlstate) != 5)
        return -1;
    msg m;
    begin(&m, b, type);
    /* 'S' may be localised by a real server; 'V' (since 9.6) never is, and
     * clients such as psycopg read it, so both are sent. */
    put_u8(&m, 'S');
    put_str(&m, f->severity);
    put_u8(&m, 'V');
    put_str(&m, f->severity);
    put_u8(&m, 'C');
    put_str(&m, f->sqlstate);
    put_u8(&m, 'M');
    put_str(&m, f->message ? f->message : "");
    if (f->detail) {
        put_u8(&m, 'D');
        put_str(&m, f->detail);
    }
    if (f->hint) {
        put_u8(&m, 'H');
        put_str(&m, f->hint);
    }
    put_u8(&m, 0);
    return end(&m);
}

int sy__pg_build_error(sy_buf *b, const sy_pg_notice_fields *f)
{
    return build_fields(b, SY_PG_ERROR_RESPONSE, f);
}

int sy__pg_build_notice(sy_buf *b, const sy_pg_notice_fields *f)
{
    return build_fields(b, SY_PG_NOTICE, f);
}

static int build_auth(sy_buf *b, uint32_t code, const void *data, size_t len)
{
    msg m;
    begin(&m, b, SY_PG_AUTH);
    put_u32(&m, code);
    if (len)
        put(&m, data, len);
    return end(&m);
}

int sy__pg_build_auth_ok(sy_buf *b)
{
    return build_auth(b, 0, NULL, 0);
}

int sy__pg_build_auth_cleartext(sy_buf *b)
{
    return build_auth(b, 3, NULL, 0);
}

int sy__pg_build_auth_md5(sy_buf *b, const uint8_t salt[4])
{
    return build_auth(b, 5, salt, 4);
}

int sy__pg_build_auth_sasl(sy_buf *b, const char *const *mechanisms)
{
    msg m;
    begin(&m, b, SY_PG_AUTH);
    put_u32(&m, 10);
    for (size_t i = 0; mechanisms && mechanisms[i]; i++) {
        if (!mechanisms[i][0])
            m.bad = 1; /* an empty name would end the list early */
        put_str(&m, mechanisms[i]);
    }
    put_u8(&m, 0);
    return end(&m);
}

int sy__pg_build_auth_sasl_continue(sy_buf *b, const void *data, size_t len)
{
    return build_auth(b, 11, data, len);
}

int sy__pg_build_auth_sasl_final(sy_buf *b, const void *data, size_t len)
{
    return build_auth(b, 12, data, len);
}

int sy__pg_build_parameter_status(sy_buf *b, const char *name, const char *value)
{
    msg m;
    begin(&m, b, SY_PG_PARAMETER_STATUS);
    put_str(&m, name);
    put_str(&m, value);
    return end(&m);
}

int sy__pg_build_backend_key(sy_buf *b, uint32_t pid, uint32_t key)
{
    msg m;
    begin(&m, b, SY_PG_BACKEND_KEY);
    put_u32(&m, pid);
    put_u32(&m, key);
    return end(&m);
}

int sy__pg_build_ready(sy_buf *b, char status)
{
    if (status != 'I' && status != 'T' && status != 'E')
        return -1;
    msg m;
    begin(&m, b, SY_PG_READY);
    put_u8(&m, (uint8_t)status);
    return end(&m);
}

int sy__pg_build_command_complete(sy_buf *b, const char *tag)
{
    msg m;
    begin(&m, b, SY_PG_COMMAND_COMPLETE);
    put_str(&m, tag);
    return end(&m);
}

int sy__pg_build_row_description_text(sy_buf *b, const char *const *names, uint16_t n)
{
    msg m;
    begin(&m, b, SY_PG_ROW_DESCRIPTION);
    put_u16(&m, n);
    for (uint16_t i = 0; i < n; i++) {
        put_str(&m, names[i]);
        put_u32(&m, 0);      /* no table */
        put_u16(&m, 0);      /* no column number */
        put_u32(&m, 25);     /* text */
        put_u16(&m, 0xffff); /* typlen -1 */
        put_u32(&m, 0xffffffffu); /* typmod -1 */
        put_u16(&m, 0);      /* text format */
    }
    return end(&m);
}

int sy__pg_build_data_row_text(sy_buf *b, const char *const *values, uint16_t n)
{
    msg m;
    begin(&m, b, SY_PG_DATA_ROW);
    put_u16(&m, n);
    for (uint16_t i = 0; i < n; i++) {
        if (!values[i]) {
            put_u32(&m, 0xffffffffu);
            continue;
        }
        size_t len = strlen(values[i]);
        put_u32(&m, (uint32_t)len);
        put(&m, values[i], len);
    }
    return end(&m);
}

int sy__pg_build_empty(sy_buf *b, uint8_t type)
{
    if (type == 0)
        return -1;
    msg m;
    begin(&m, b, type);
    return end(&m);
}

int sy__pg_build_startup_reply(sy_buf *b, int accept)
{
    return sy__buf_append(b, accept ? "S" : "N", 1);
}

int sy__pg_build_negotiate(sy_buf *b, uint32_t newest_minor,
                           const char *const *unrecognised)
{
    size_t n = 0;
    while (unrecognised && unrecognised[n])
        n++;
    if (n > INT32_MAX)
        return -1;
    msg m;
    begin(&m, b, SY_PG_NEGOTIATE);
    put_u32(&m, newest_minor);
    put_u32(&m, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        put_str(&m, unrecognised[i]);
    return end(&m);
}

/* ---- client-side messages --------------------------------------------- */

int sy__pg_build_query(sy_buf *b, const char *sql, size_t len)
{
    /* An embedded NUL would silently cut the statement on the server. */
    if (sql && memchr(sql, '\0', len))
        return -1;
    msg m;
    begin(&m, b, SY_PG_QUERY);
    put_strn(&m, sql, len);
    return end(&m);
}

int sy__pg_build_parse(sy_buf *b, const char *name, const char *query,
                       size_t query_len, uint16_t nparams, const uint32_t *oids)
{
    if (query && memchr(query, '\0', query_len))
        return -1;
    msg m;
    begin(&m, b, SY_PG_PARSE);
    put_str(&m, name);
    put_strn(&m, query, query_len);
    put_u16(&m, nparams);
    for (uint16_t i = 0; i < nparams; i++)
        put_u32(&m, oids ? oids[i] : 0);
    return end(&m);
}

int sy__pg_build_bind(sy_buf *b, const char *portal, const char *statement,
                      uint16_t nformats, const int16_t *formats,
                      uint16_t nparams, const char *const *values,
                      const int32_t *lens, uint16_t nresults,
                      const int16_t *result_formats)
{
    msg m;
    begin(&m, b, SY_PG_BIND);
    put_str(&m, portal);
    put_str(&m, statement);
    put_u16(&m, nformats);
    for (uint16_t i = 0; i < nformats; i++)
        put_u16(&m, (uint16_t)formats[i]);
    put_u16(&m, nparams);
    for (uint16_t i = 0; i < nparams; i++) {
        const char *v = values ? values[i] : NULL;
        if (!v || (lens && lens[i] < 0)) {
            put_u32(&m, UINT32_MAX); /* -1: SQL NULL */
            continue;
        }
        size_t n = lens ? (size_t)lens[i] : strlen(v);
        if (n > INT32_MAX)
            m.bad = 1;
        put_u32(&m, (uint32_t)n);
        put(&m, v, n);
    }
    put_u16(&m, nresults);
    for (uint16_t i = 0; i < nresults; i++)
        put_u16(&m, (uint16_t)result_formats[i]);
    return end(&m);
}

int sy__pg_build_bind_renamed(sy_buf *b, const sy_pg_bind *src,
                              const char *name, size_t name_len)
{
    if (name_len && memchr(name, '\0', name_len))
        return -1;
    msg m;
    begin(&m, b, SY_PG_BIND);
    put_strn(&m, src->portal.p, src->portal.len);
    put_strn(&m, name, name_len);
    /* Formats, values and result formats as the client sent them: the
     * parser already validated them, and copying keeps binary values
     * untouched. */
    put(&m, src->tail, src->tail_len);
    return end(&m);
}

static int build_target(sy_buf *b, uint8_t type, char kind, const char *name)
{
    if (kind != 'S' && kind != 'P')
        return -1;
    msg m;
    begin(&m, b, type);
    put_u8(&m, (uint8_t)kind);
    put_str(&m, name);
    return end(&m);
}

int sy__pg_build_describe(sy_buf *b, char kind, const char *name)
{
    return build_target(b, SY_PG_DESCRIBE, kind, name);
}

int sy__pg_build_close(sy_buf *b, char kind, const char *name)
{
    return build_target(b, SY_PG_CLOSE, kind, name);
}

int sy__pg_build_execute(sy_buf *b, const char *portal, int32_t max_rows)
{
    msg m;
    begin(&m, b, SY_PG_EXECUTE);
    put_str(&m, portal);
    put_u32(&m, (uint32_t)max_rows);
    return end(&m);
}

int sy__pg_build_sync(sy_buf *b)
{
    return sy__pg_build_empty(b, SY_PG_SYNC);
}

int sy__pg_build_flush(sy_buf *b)
{
    return sy__pg_build_empty(b, SY_PG_FLUSH);
}

int sy__pg_build_terminate(sy_buf *b)
{
    return sy__pg_build_empty(b, SY_PG_TERMINATE);
}

int sy__pg_build_startup(sy_buf *b, const char *const *keys,
                         const char *const *values, size_t n)
{
    msg m;
    begin(&m, b, 0);
    put_u32(&m, SY_PG_PROTOCOL_3_0);
    for (size_t i = 0; i < n; i++) {
        if (!keys[i] || !keys[i][0])
            m.bad = 1; /* an empty key would end the list early */
        put_str(&m, keys[i]);
        put_str(&m, values[i]);
    }
    put_u8(&m, 0);
    return end(&m);
}

int sy__pg_build_ssl_request(sy_buf *b)
{
    msg m;
    begin(&m, b, 0);
    put_u32(&m, SY_PG_SSL_CODE);
    return end(&m);
}

int sy__pg_build_cancel_request(sy_buf *b, uint32_t pid, uint32_t key)
{
    msg m;
    begin(&m, b, 0);
    put_u32(&m, SY_PG_CANCEL_CODE);
    put_u32(&m, pid);
    put_u32(&m, key);
    return end(&m);
}
