/*
 * pgproto.c - reading the PostgreSQL v3 wire protocol: framing of startup
 * packets and normal messages, and the parsers for the client and server
 * messages the proxy has to understand.  Builders live in pgproto_build.c.
 *
 * Nothing here allocates or copies: every result is a span into the
 * caller's buffer.  Input is hostile (any client can connect), so all
 * reads go through a bounds-checked cursor whose first failure sticks;
 * a parser checks the cursor once at the end instead of after every field,
 * which keeps each parser a straight transcription of the documented
 * message layout.
 */
#include "pgproto.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int fail(sy_pg_error *err, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(sy_pg_error *err, const char *sqlstate, const char *fmt, ...)
{
    if (err) {
        memcpy(err->sqlstate, sqlstate, 6);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return SY_PG_ERROR;
}

#define PROTOCOL_VIOLATION "08P01"


static uint16_t be16(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint16_t)(u[0] << 8 | u[1]);
}

/* ---- framing ---------------------------------------------------------- */

int sy__pg_frame(const void *buf, size_t avail, size_t max_len,
                 sy_pg_msg *out, sy_pg_error *err)
{
    const char *p = buf;
    if (max_len == 0)
        max_len = SY_PG_DEFAULT_MAX_LEN;
    if (avail < 5) {
        out->total = 5;
        return SY_PG_NEED_MORE;
    }
    uint32_t len = sy__pg_be32(p + 1);
    uint8_t type = (uint8_t)p[0];
    /* Checked from the header alone, so an oversized message is refused
     * before the caller grows a buffer for it. */
    if (len < 4)
        return fail(err, PROTOCOL_VIOLATION,
                    "invalid length %u for message type 0x%02x", len, type);
    if (len > max_len)
        return fail(err, PROTOCOL_VIOLATION,
                    "message type 0x%02x of %u bytes exceeds the limit of %zu",
                    type, len, max_len);
    out->total = (size_t)len + 1;
    if (avail < out->total)
        return SY_PG_NEED_MORE;
    out->type = type;
    out->len = len;
    out->payload = p + 5;
    out->payload_len = len - 4;
    return SY_PG_OK;
}

/* Walks key\0value\0...\0 and returns the number of pairs, or -1 when the
 * layout is broken.  *body_len receives the length without the final
 * terminator. */
static long startup_pairs(const char *p, size_t n, size_t *body_len)
{
    size_t pos = 0;
    long pairs = 0;
    for (;;) {
        const char *nul = pos < n ? memchr(p + pos, '\0', n - pos) : NULL;
        if (!nul)
            return -1;
        size_t klen = (size_t)(nul - (p + pos));
        if (klen == 0) {
            /* The terminator must be the last byte: PostgreSQL refuses
             * trailing garbage ("expected terminator as last byte"). */
            if (pos + 1 != n)
                return -1;
            *body_len = pos;
            return pairs;
        }
        pos += klen + 1;
        nul = pos < n ? memchr(p + pos, '\0', n - pos) : NULL;
        if (!nul)
            return -1;
        pos = (size_t)(nul - p) + 1;
        pairs++;
    }
}

int sy__pg_read_startup(const void *buf, size_t avail, size_t max_len,
                        sy_pg_startup *out, sy_pg_error *err)
{
    const char *p = buf;
    if (max_len == 0)
        max_len = SY_PG_MAX_STARTUP_LEN;
    memset(out, 0, sizeof *out);
    if (avail < 4) {
        out->msg.total = 4;
        return SY_PG_NEED_MORE;
    }
    uint32_t len = sy__pg_be32(p);
    /* Eight bytes is the smallest packet: length + request code. */
    if (len < 8)
        return fail(err, PROTOCOL_VIOLATION, "invalid startup packet length %u", len);
    if (len > max_len)
        return fail(err, PROTOCOL_VIOLATION,
                    "startup packet of %u bytes exceeds the limit of %zu", len, max_len);
    out->msg.total = len;
    if (avail < len)
        return SY_PG_NEED_MORE;
    uint32_t code = sy__pg_be32(p + 4);
    out->msg.type = 0;
    out->msg.len = len;
    out->msg.payload = p + 4;
    out->msg.payload_len = len - 4;

    if (code == SY_PG_SSL_CODE || code == SY_PG_GSSENC_CODE) {
        if (len != 8)
            return fail(err, PROTOCOL_VIOLATION,
                        "invalid length %u for an encryption request", len);
        out->kind = code == SY_PG_SSL_CODE ? SY_PG_SSL_REQUEST : SY_PG_GSSENC_REQUEST;
        return SY_PG_OK;
    }
    if (code == SY_PG_CANCEL_CODE) {
        if (len != 16)
            return fail(err, PROTOCOL_VIOLATION,
                        "invalid length %u for a cancel request", len);
        out->kind = SY_PG_CANCEL_REQUEST;
        out->cancel_pid = sy__pg_be32(p + 8);
        out->cancel_key = sy__pg_be32(p + 12);
        return SY_PG_OK;
    }
    uint16_t major = (uint16_t)(code >> 16), minor = (uint16_t)(code & 0xffff);
    if (major == 1234)
        return fail(err, PROTOCOL_VIOLATION, "unknown startup request code 1234.%u", minor);
    if (major != 3)
        return fail(err, "0A000",
                    "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0",
                    major, minor);
    out->kind = SY_PG_STARTUP;
    out->major = major;
    out->minor = minor;
    out->needs_negotiate = minor > 0;
    size_t body_len = 0;
    long pairs = startup_pairs(p + 8, len - 8, &body_len);
    if (pairs < 0)
        return fail(err, PROTOCOL_VIOLATION,
                    "invalid startup packet layout: expected terminator as last byte");
    out->params = p + 8;
    out->params_len = body_len;
    out->nparams = (uint32_t)pairs;
    return SY_PG_OK;
}

int sy__pg_startup_next_param(const sy_pg_startup *s, size_t *pos,
                              sy_pg_span *key, sy_pg_span *value)
{
    if (s->kind != SY_PG_STARTUP || *pos >= s->params_len)
        return 0;
    /* Validated by sy__pg_read_startup: both strings are NUL-terminated. */
    key->p = s->params + *pos;
    key->len = strlen(key->p);
    value->p = key->p + key->len + 1;
    value->len = strlen(value->p);
    *pos += key->len + value->len + 2;
    return 1;
}

int sy__pg_startup_param(const sy_pg_startup *s, const char *key, sy_pg_span *value)
{
    size_t pos = 0, klen = strlen(key);
    sy_pg_span k;
    while (sy__pg_startup_next_param(s, &pos, &k, value))
        if (k.len == klen && memcmp(k.p, key, klen) == 0)
            return 1;
    return 0;
}

/* ---- the bounds-checked cursor ---------------------------------------- */

typedef struct cursor {
    const char *p;
    size_t pos, len;
    int bad; /* first overrun sticks; later reads return zeros */
} cursor;

static void cur_init(cursor *c, const sy_pg_msg *m)
{
    c->p = m->payload;
    c->pos = 0;
    c->len = m->payload_len;
    c->bad = 0;
}

static int cur_take(cursor *c, size_t n, const char **out)
{
    if (c->bad || c->len - c->pos < n) {
        c->bad = 1;
        *out = NULL;
        return 0;
    }
    *out = c->p + c->pos;
    c->pos += n;
    return 1;
}

static uint32_t cur_u32(cursor *c)
{
    const char *q;
    return cur_take(c, 4, &q) ? sy__pg_be32(q) : 0;
}

static uint16_t cur_u16(cursor *c)
{
    const char *q;
    return cur_take(c, 2, &q) ? be16(q) : 0;
}

static sy_pg_span cur_str(cursor *c)
{
    sy_pg_span s = { NULL, 0 };
    if (c->bad)
        return s;
    const char *start = c->p + c->pos;
    if (c->pos < c->len && *start == '\0') { /* the unnamed statement or portal */
        c->pos++;
        s.p = start;
        return s;
    }
    const char *nul = c->pos < c->len ? memchr(start, '\0', c->len - c->pos) : NULL;
    if (!nul) {
        c->bad = 1;
        return s;
    }
    s.p = start;
    s.len = (size_t)(nul - start);
    c->pos += s.len + 1;
    return s;
}

/* The single check every parser ends with: no overrun, nothing left over
 * (PostgreSQL's pq_getmsgend refuses trailing bytes too). */
static int cur_end(const cursor *c, const sy_pg_msg *m, sy_pg_error *err)
{
    if (c->bad)
        return fail(err, PROTOCOL_VIOLATION,
                    "invalid message format: message type 0x%02x is truncated", m->type);
    if (c->pos != c->len)
        return fail(err, PROTOCOL_VIOLATION,
                    "invalid message format: %zu extra bytes in message type 0x%02x",
                    c->len - c->pos, m->type);
    return SY_PG_OK;
}

/* ---- client messages -------------------------------------------------- */

int sy__pg_frontend_type_known(uint8_t type)
{
    switch (type) {
    case 'Q': case 'P': case 'B': case 'D': case 'C': case 'E': case 'S':
    case 'H': case 'X': case 'd': case 'c': case 'f': case 'p': case 'F':
        return 1;
    default:
        return 0;
    }
}

int sy__pg_parse_query(const sy_pg_msg *m, sy_pg_span *sql, sy_pg_error *err)
{
    cursor c;
    cur_init(&c, m);
    *sql = cur_str(&c);
    return cur_end(&c, m, err);
}

int sy__pg_parse_parse(const sy_pg_msg *m, sy_pg_parse *out, sy_pg_error *err)
{
    cursor c;
    cur_init(&c, m);
    out->name = cur_str(&c);
    out->query = cur_str(&c);
    out->nparams = cur_u16(&c);
    cur_take(&c, (size_t)out->nparams * 4, &out->param_types);
    return cur_end(&c, m, err);
}

uint32_t sy__pg_parse_param_type(const sy_pg_parse *p, uint16_t i)
{
    return i < p->nparams ? sy__pg_be32(p->param_types + (size_t)i * 4) : 0;
}

static int formats_valid(const char *codes, uint16_t n)
{
    for (uint16_t i = 0; i < n; i++) {
        uint16_t f = be16(codes + (size_t)i * 2);
        if (f != 0 && f != 1)
            return 0;
    }
    return 1;
}

int sy__pg_parse_bind(const sy_pg_msg *m, sy_pg_bind *out, sy_pg_error *err)
{
    cursor c;
    cur_init(&c, m);
    out->portal = cur_str(&c);
    out->statement = cur_str(&c);
    out->tail = c.bad ? NULL : c.p + c.pos;
    out->nformats = cur_u16(&c);
    cur_take(&c, (size_t)out->nformats * 2, &out->formats);
    out->nparams = cur_u16(&c);
    size_t values_start = c.pos;
    out->values = c.bad ? NULL : c.p + c.pos;
    for (uint16_t i = 0; i < out->nparams && !c.bad; i++) {
        int32_t vlen = (int32_t)cur_u32(&c);
        if (vlen < -1) {
            return fail(err, PROTOCOL_VIOLATION,
                        "invalid length %d for bind parameter %u", vlen, i + 1);
        }
        if (vlen > 0) {
            const char *skip;
            cur_take(&c, (size_t)vlen, &skip);
        }
    }
    out->values_len = c.pos - values_start;
    out->nresults = cur_u16(&c);
    cur_take(&c, (size_t)out->nresults * 2, &out->result_formats);
    int rc = cur_end(&c, m, err);
    if (rc != SY_PG_OK)
        return rc;
    out->tail_len = (size_t)(c.p + c.len - out->tail);
    if (out->nformats > 1 && out->nformats != out->nparams)
        return fail(err, PROTOCOL_VIOLATION,
                    "bind message has %u parameter formats but %u parameters",
                    out->nformats, out->nparams);
    if (!formats_valid(out->formats, out->nformats) ||
        !formats_valid(out->result_formats, out->nresults))
        return fail(err, PROTOCOL_VIOLATION, "unsupported format code in bind message");
    return SY_PG_OK;
}

int sy__pg_bind_next_value(const sy_pg_bind *b, size_t *pos, sy_pg_span *value)
{
    if (*pos + 4 > b->values_len)
        return 0;
    int32_t vlen = (int32_t)sy__pg_be32(b->values + *pos);
    *pos += 4;
    if (vlen < 0) {
        value->p = NULL;
        value->len = 0;
        return 1;
    }
    value->p = b->values + *pos;
    value->len = (size_t)vlen;
    *pos += (size_t)vlen;
    return 1;
}

/* The protocol's format-code list: none means text for all, one applies
 * to all, otherwise one per column or parameter. */
static int format_code(const char *codes, uint16_t n, uint16_t i)
{
    if (n == 0)
        return 0;
    if (n == 1)
        return be16(codes);
    return i < n ? be16(codes + (size_t)i * 2) : 0;
}

int sy__pg_bind_param_format(const sy_pg_bind *b, uint16_t i)
{
    return format_code(b->formats, b->nformats, i);
}

int sy__pg_bind_result_format(const sy_pg_bind *b, uint16_t i)
{
    return format_code(b->result_formats, b->nresults, i);
}

static int parse_target(const sy_pg_msg *m, sy_pg_target *out, sy_pg_error *err)
{
    cursor c;
    cur_init(&c, m);
    const char *k;
    out->kind = cur_take(&c, 1, &k) ? *k : 0;
    out->name = cur_str(&c);
    int rc = cur_end(&c, m, err);
    if (rc == SY_PG_OK && out->kind != 'S' && out->kind != 'P')
        return fail(err, PROTOCOL_VIOLATION,
                    "invalid %s message subtype %d",
                    m->type == SY_PG_CLOSE ? "CLOSE" : "DESCRIBE", (unsigned char)out->kind);
    return rc;
}

int sy__pg_parse_describe(const sy_pg_msg *m, sy_pg_target *out, sy_pg_error *err)
{
    return parse_target(m, out, err);
}

int sy__pg_parse_close(const sy_pg_msg *m, sy_pg_target *out, sy_pg_error *err)
{
    return parse_target(m, out, err);
}

int sy__pg_parse_execute(const sy_pg_msg *m, sy_pg_execute *out, sy_pg_error *err)
{
    cursor c;
    cur_init(&c, m);
    out->portal = cur_str(&c);
    out->max_rows = (int32_t)cur_u32(&c);
    return cur_end(&c, m, err);
}

int sy__pg_parse_empty(const sy_pg_msg *m, sy_pg_error *err)
{
    cursor c;
    cur_init(&c, m);
    return cur_end(&c, m, err);
}

int sy__pg_parse_copy_data(const sy_pg_msg *m, sy_pg_span *data, sy_pg_error *err)
{
    (void)err;
    data->p = m->payload;
    data->len = m->payload_len;
    return SY_PG_OK;
}

int sy__pg_parse_copy_fail(const sy_pg_msg *m, sy_pg_span *reason, sy_pg_error *err)
{
    return sy__pg_parse_query(m, reason, err);
}

int sy__pg_parse_password(const sy_pg_msg *m, sy_pg_span *password, sy_pg_error *err)
{
    return sy__pg_parse_query(m, password, err);
}

int sy__pg_parse_sasl_initial(const sy_pg_msg *m, sy_pg_sasl_initial *out,
                              sy_pg_error *err)
{
    cursor c;
    cur_init(&c, m);
    out->mechanism = cur_str(&c);
    int32_t dlen = (int32_t)cur_u32(&c);
    out->data.p = NULL;
    out->data.len = 0;
    if (dlen < -1)
        return fail(err, PROTOCOL_VIOLATION, "invalid SASL initial response length %d", dlen);
    if (dlen >= 0 && cur_take(&c, (size_t)dlen, &out->data.p))
        out->data.len = (size_t)dlen;
    return cur_end(&c, m, err);
}

int sy__pg_parse_sasl_response(const sy_pg_msg *m, sy_pg_span *data, sy_pg_error *err)
{
    return sy__pg_parse_copy_data(m, data, err);
}

/* ---- server messages -------------------------------------------------- */

int sy__pg_parse_ready(const sy_pg_msg *m, char *status, sy_pg_error *err)
{
    cursor c;
    cur_init(&c, m);
    const char *s;
    *status = cur_take(&c, 1, &s) ? *s : 0;
    int rc = cur_end(&c, m, err);
    if (rc == SY_PG_OK && *status != 'I' && *status != 'T' && *status != 'E')
        return fail(err, PROTOCOL_VIOLATION, "invalid transaction status %d",
                    (unsigned char)*status);
    return rc;
}

int sy__pg_parse_fields(const sy_pg_msg *m, sy_pg_error *err)
{
    cursor c;
    cur_init(&c, m);
    for (;;) {
        const char *code;
        if (!cur_take(&c, 1, &code) || *code == '\0')
            break;
        cur_str(&c);
    }
    return cur_end(&c, m, err);
}

int sy__pg_next_field(const sy_pg_msg *m, size_t *pos, char *code, sy_pg_span *value)
{
    /* Bounds are still checked: a caller may walk an unvalidated message
     * and must then get a short walk, not an over-read. */
    if (*pos >= m->payload_len || m->payload[*pos] == '\0')
        return 0;
    const char *start = m->payload + *pos + 1;
    size_t left = m->payload_len - *pos - 1;
    const char *nul = left ? memchr(start, '\0', left) : NULL;
    if (!nul)
        return 0;
    *code = m->payload[*pos];
    value->p = start;
    value->len = (size_t)(nul - start);
    *pos += value->len + 2;
    return 1;
}

int sy__pg_find_field(const sy_pg_msg *m, char code, sy_pg_span *value)
{
    size_t pos = 0;
    char c;
    while (sy__pg_next_field(m, &pos, &c, value))
        if (c == code)
            return 1;
    return 0;
}

int sy__pg_parse_parameter_status(const sy_pg_msg *m, sy_pg_span *name,
                                  sy_pg_span *value, sy_pg_error *err)
{
    cursor c;
    cur_init(&c, m);
    *name = cur_str(&c);
    *value = cur_str(&c);
    return cur_end(&c, m, err);
}

int sy__pg_parse_backend_key(const sy_pg_msg *m, uint32_t *pid, uint32_t *key,
                             sy_pg_error *err)
{
    cursor c;
    cur_init(&c, m);
    *pid = cur_u32(&c);
    *key = cur_u32(&c);
    return cur_end(&c, m, err);
}

int sy__pg_parse_command_complete(const sy_pg_msg *m, sy_pg_span *tag, sy_pg_error *err)
{
    return sy__pg_parse_query(m, tag, err);
}

/* A list of strings ended by an empty one, with nothing after it. */
static void cur_string_list(cursor *c)
{
    for (;;) {
        sy_pg_span s = cur_str(c);
        if (c->bad || s.len == 0)
            return;
    }
}

int sy__pg_parse_auth(const sy_pg_msg *m, sy_pg_auth *out, sy_pg_error *err)
{
    cursor c;
    cur_init(&c, m);
    memset(out, 0, sizeof *out);
    out->code = cur_u32(&c);
    const char *q;
    switch (out->code) {
    case 0: /* Ok */
    case 3: /* CleartextPassword */
        break;
    case 5: /* MD5Password */
        if (cur_take(&c, 4, &q))
            memcpy(out->salt, q, 4);
        break;
    case 10: /* SASL */
        out->data.p = c.p + c.pos;
        cur_string_list(&c);
        out->data.len = c.pos - (size_t)(out->data.p - c.p);
        break;
    case 11: /* SASLContinue */
    case 12: /* SASLFinal */
        out->data.p = c.p + c.pos;
        out->data.len = c.len - c.pos;
        c.pos = c.len;
        break;
    default:
        if (c.bad)
            break;
        return fail(err, "0A000", "unsupported authentication request %u", out->code);
    }
    return cur_end(&c, m, err);
}

int sy__pg_next_string(const sy_pg_span *list, size_t *pos, sy_pg_span *s)
{
    if (*pos >= list->len)
        return 0;
    const char *start = list->p + *pos;
    const char *nul = memchr(start, '\0', list->len - *pos);
    if (!nul || nul == start)
        return 0;
    s->p = start;
    s->len = (size_t)(nul - start);
    *pos += s->len + 1;
    return 1;
}
