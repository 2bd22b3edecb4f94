/*
 * pgproto.h - the PostgreSQL v3 wire-protocol codec the proxy reads and
 * writes messages with.  Internal header (not part of switchyard.h).
 *
 * Reading never copies and never allocates: framing finds one message in
 * the bytes received so far, and the parsers return spans that point into
 * that message's payload, so rows are relayed as the bytes they arrived as.
 * A span is valid as long as the caller's receive buffer is not moved or
 * overwritten.  Every length and count is checked against the payload
 * before it is trusted; malformed input is an error, never an over-read.
 *
 * Writing appends complete messages (type, length, body) to an sy_buf.
 * Builders return 0, or -1 when the buffer ran out of memory (b->oom is
 * then set and the buffer keeps what it had before the failed message) or
 * when an argument cannot be encoded (a count or length the protocol
 * cannot carry).
 *
 * Reference: PostgreSQL documentation, "Frontend/Backend Protocol",
 * sections "Message Flow" and "Message Formats" (protocol 3.0).
 */
#ifndef SY_PGPROTO_H
#define SY_PGPROTO_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* Return values of the framing and parsing functions. */
enum {
    SY_PG_OK = 0,        /* one complete message (framing) / parsed */
    SY_PG_NEED_MORE = 1, /* framing only: wait for more bytes */
    SY_PG_ERROR = -1     /* protocol violation; see sy_pg_error */
};

/* Default limits.  PostgreSQL itself refuses startup packets over 10000
 * bytes; for normal messages the caller picks its own bound (the proxy's
 * per-client buffer), this is only the value used when 0 is passed. */
#define SY_PG_MAX_STARTUP_LEN 10000u
#define SY_PG_DEFAULT_MAX_LEN (64u * 1024u * 1024u)

/* Startup-phase request codes (the "protocol version" word). */
#define SY_PG_PROTOCOL_3_0 196608u    /* 3 << 16 | 0 */
#define SY_PG_CANCEL_CODE 80877102u   /* 1234 << 16 | 5678 */
#define SY_PG_SSL_CODE 80877103u      /* 1234 << 16 | 5679 */
#define SY_PG_GSSENC_CODE 80877104u   /* 1234 << 16 | 5680 */

/* Why a read failed, ready to become the client's ErrorResponse.  The
 * message is ours (fixed text plus numbers), never raw client bytes. */
typedef struct sy_pg_error {
    char sqlstate[6]; /* "08P01" protocol_violation, "0A000", "54000" */
    char message[160];
} sy_pg_error;

/* A byte range inside a message payload.  For protocol strings p points at
 * the first byte, len excludes the terminating NUL, and the NUL is present
 * at p[len] (validated), so p is also a C string. */
typedef struct sy_pg_span {
    const char *p;
    size_t len;
} sy_pg_span;

/* ---- framing ---------------------------------------------------------- */

/* One framed message.  total is the number of buffer bytes it occupies
 * (type byte + length word + payload): consume that many.  On
 * SY_PG_NEED_MORE, total is the number of bytes the message needs in all
 * when its header has arrived, else the header size; the other fields are
 * then unset. */
typedef struct sy_pg_msg {
    uint8_t type;        /* 0 for startup-phase packets */
    uint32_t len;        /* the length word: counts itself, not the type */
    const char *payload; /* after the length word */
    size_t payload_len;  /* len - 4 */
    size_t total;
} sy_pg_msg;

/* A big-endian 32-bit field (message lengths, counts). */
static inline uint32_t sy__pg_be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* The message at p, framed without checks: only for bytes that were framed
 * (and so checked) when they arrived, such as a stored batch. */
static inline sy_pg_msg sy__pg_frame_known(const char *p)
{
    uint32_t len = sy__pg_be32(p + 1);
    sy_pg_msg m = {.type = (uint8_t)p[0], .len = len, .payload = p + 5,
                   .payload_len = len - 4, .total = (size_t)len + 1};
    return m;
}

/* Frames one normal message (type byte + Int32 length) from the first
 * avail bytes of buf.  A length below 4 or above max_len (0 selects
 * SY_PG_DEFAULT_MAX_LEN; max_len counts the length word, like the
 * protocol does) is an error as soon as the 5-byte header is in, before
 * any of the payload must be buffered.  err may be NULL. */
int sy__pg_frame(const void *buf, size_t avail, size_t max_len,
                 sy_pg_msg *out, sy_pg_error *err);

typedef enum sy_pg_startup_kind {
    SY_PG_STARTUP = 1, /* StartupMessage: version + parameters */
    SY_PG_SSL_REQUEST,
    SY_PG_GSSENC_REQUEST,
    SY_PG_CANCEL_REQUEST
} sy_pg_startup_kind;

typedef struct sy_pg_startup {
    sy_pg_startup_kind kind;
    sy_pg_msg msg;             /* the framed packet (type 0) */
    uint16_t major, minor;     /* StartupMessage only */
    /* StartupMessage with a minor version above the newest we speak (0):
     * like PostgreSQL, the caller answers NegotiateProtocolVersion (see
     * sy__pg_build_negotiate) and carries on in 3.0. */
    int needs_negotiate;
    uint32_t cancel_pid, cancel_key; /* CancelRequest only */
    /* StartupMessage: key\0value\0... (validated pairs, final terminator
     * excluded), walked with sy__pg_startup_next_param. */
    const char *params;
    size_t params_len;
    uint32_t nparams;
} sy_pg_startup;

/* Frames and parses one startup-phase packet (no type byte).  max_len
 * bounds the packet (0 selects SY_PG_MAX_STARTUP_LEN).  Protocol majors
 * other than 3 and unknown 1234.x request codes are errors (0A000 /
 * 08P01).  Fixed-size requests must have their exact size. */
int sy__pg_read_startup(const void *buf, size_t avail, size_t max_len,
                        sy_pg_startup *out, sy_pg_error *err);

/* Iterates the startup parameters: *pos starts at 0; returns 1 with key
 * and value set, or 0 at the end. */
int sy__pg_startup_next_param(const sy_pg_startup *s, size_t *pos,
                              sy_pg_span *key, sy_pg_span *value);
/* The value of a startup parameter, or 0 when absent. */
int sy__pg_startup_param(const sy_pg_startup *s, const char *key,
                         sy_pg_span *value);

/* ---- client (frontend) messages --------------------------------------- */

enum {
    SY_PG_QUERY = 'Q', SY_PG_PARSE = 'P', SY_PG_BIND = 'B',
    SY_PG_DESCRIBE = 'D', SY_PG_CLOSE = 'C', SY_PG_EXECUTE = 'E',
    SY_PG_SYNC = 'S', SY_PG_FLUSH = 'H', SY_PG_TERMINATE = 'X',
    SY_PG_COPY_DATA = 'd', SY_PG_COPY_DONE = 'c', SY_PG_COPY_FAIL = 'f',
    SY_PG_PASSWORD = 'p', SY_PG_FUNCTION_CALL = 'F'
};

/* 1 when type is a message a v3 client may send after startup. */
int sy__pg_frontend_type_known(uint8_t type);

/* Query: the SQL text (NUL-terminated inside the message). */
int sy__pg_parse_query(const sy_pg_msg *m, sy_pg_span *sql, sy_pg_error *err);

typedef struct sy_pg_parse {
    sy_pg_span name, query;
    uint16_t nparams;
    const char *param_types; /* nparams big-endian Int32 OIDs */
} sy_pg_parse;
int sy__pg_parse_parse(const sy_pg_msg *m, sy_pg_parse *out, sy_pg_error *err);
uint32_t sy__pg_parse_param_type(const sy_pg_parse *p, uint16_t i);

/* Bind.  The parser checks that the format-code count is 0, 1 or nparams,
 * that format codes are 0 or 1, and that every value length (-1 = NULL)
 * fits, so the accessors below trust the message. */
typedef struct sy_pg_bind {
    sy_pg_span portal, statement;
    uint16_t nformats;
    const char *formats;      /* nformats Int16 */
    uint16_t nparams;
    const char *values;       /* nparams (Int32 len, bytes) pairs */
    size_t values_len;
    uint16_t nresults;
    const char *result_formats; /* nresults Int16 */
    /* Everything after the statement name, up to the end: what a renamed
     * copy reuses verbatim. */
    const char *tail;
    size_t tail_len;
} sy_pg_bind;
int sy__pg_parse_bind(const sy_pg_msg *m, sy_pg_bind *out, sy_pg_error *err);
/* Walks the parameter values: *pos starts at 0; returns 1 with value set
 * (value->p == NULL for SQL NULL), 0 after the last. */
int sy__pg_bind_next_value(const sy_pg_bind *b, size_t *pos, sy_pg_span *value);
/* The format code of parameter i (applies the 0/1/n rule). */
int sy__pg_bind_param_format(const sy_pg_bind *b, uint16_t i);
int sy__pg_bind_result_format(const sy_pg_bind *b, uint16_t i);

/* Describe and Close: kind is 'S' (statement) or 'P' (portal). */
typedef struct sy_pg_target {
    char kind;
    sy_pg_span name;
} sy_pg_target;
int sy__pg_parse_describe(const sy_pg_msg *m, sy_pg_target *out, sy_pg_error *err);
int sy__pg_parse_close(const sy_pg_msg *m, sy_pg_target *out, sy_pg_error *err);

typedef struct sy_pg_execute {
    sy_pg_span portal;
    int32_t max_rows; /* 0 (or below): no limit */
} sy_pg_execute;
int sy__pg_parse_execute(const sy_pg_msg *m, sy_pg_execute *out, sy_pg_error *err);

/* Sync, Flush, Terminate, CopyDone, ParseComplete, BindComplete and other
 * messages without a body: checks the payload is empty. */
int sy__pg_parse_empty(const sy_pg_msg *m, sy_pg_error *err);

/* CopyData: the whole payload, opaque. */
int sy__pg_parse_copy_data(const sy_pg_msg *m, sy_pg_span *data, sy_pg_error *err);
/* CopyFail: the client's error message. */
int sy__pg_parse_copy_fail(const sy_pg_msg *m, sy_pg_span *reason, sy_pg_error *err);

/* 'p' means one of three things depending on what the server asked for;
 * the caller knows which and picks the parser. */
int sy__pg_parse_password(const sy_pg_msg *m, sy_pg_span *password, sy_pg_error *err);
typedef struct sy_pg_sasl_initial {
    sy_pg_span mechanism;
    sy_pg_span data; /* data.p == NULL when the client sent length -1 */
} sy_pg_sasl_initial;
int sy__pg_parse_sasl_initial(const sy_pg_msg *m, sy_pg_sasl_initial *out,
                              sy_pg_error *err);
int sy__pg_parse_sasl_response(const sy_pg_msg *m, sy_pg_span *data, sy_pg_error *err);

/* ---- server (backend) messages ---------------------------------------- */

enum {
    SY_PG_AUTH = 'R', SY_PG_PARAMETER_STATUS = 'S', SY_PG_BACKEND_KEY = 'K',
    SY_PG_READY = 'Z', SY_PG_ERROR_RESPONSE = 'E', SY_PG_NOTICE = 'N',
    SY_PG_PARSE_COMPLETE = '1', SY_PG_BIND_COMPLETE = '2',
    SY_PG_CLOSE_COMPLETE = '3', SY_PG_COMMAND_COMPLETE = 'C',
    SY_PG_ROW_DESCRIPTION = 'T', SY_PG_DATA_ROW = 'D', SY_PG_NO_DATA = 'n',
    SY_PG_PORTAL_SUSPENDED = 's', SY_PG_EMPTY_QUERY = 'I',
    SY_PG_PARAMETER_DESCRIPTION = 't', SY_PG_NOTIFICATION = 'A',
    SY_PG_NEGOTIATE = 'v'
};

/* ReadyForQuery: 'I' idle, 'T' in a transaction, 'E' failed transaction. */
int sy__pg_parse_ready(const sy_pg_msg *m, char *status, sy_pg_error *err);

/* ErrorResponse / NoticeResponse: validates the field list (code byte +
 * string, ended by a zero byte, nothing after it). */
int sy__pg_parse_fields(const sy_pg_msg *m, sy_pg_error *err);
/* Walks validated fields: *pos starts at 0; returns 1 with code and value,
 * 0 at the end. */
int sy__pg_next_field(const sy_pg_msg *m, size_t *pos, char *code, sy_pg_span *value);
/* The first field with this code (e.g. 'C' for the SQLSTATE); 0 if none. */
int sy__pg_find_field(const sy_pg_msg *m, char code, sy_pg_span *value);

int sy__pg_parse_parameter_status(const sy_pg_msg *m, sy_pg_span *name,
                                  sy_pg_span *value, sy_pg_error *err);
int sy__pg_parse_backend_key(const sy_pg_msg *m, uint32_t *pid, uint32_t *key,
                             sy_pg_error *err);
/* CommandComplete: the tag ("SELECT 1", "INSERT 0 5", ...). */
int sy__pg_parse_command_complete(const sy_pg_msg *m, sy_pg_span *tag, sy_pg_error *err);

/* Authentication ('R'): code 0 ok, 3 cleartext, 5 md5 (salt), 10 SASL
 * (mechanism list in data, walk with sy__pg_next_string), 11 SASLContinue
 * and 12 SASLFinal (data opaque). */
typedef struct sy_pg_auth {
    uint32_t code;
    uint8_t salt[4];
    sy_pg_span data;
} sy_pg_auth;
int sy__pg_parse_auth(const sy_pg_msg *m, sy_pg_auth *out, sy_pg_error *err);
/* Walks a validated list of strings ended by an empty one (SASL mechanisms). */
int sy__pg_next_string(const sy_pg_span *list, size_t *pos, sy_pg_span *s);

/* ---- builders (pgproto_build.c) --------------------------------------- */

/* Fields of an ErrorResponse / NoticeResponse the proxy creates.  NULL
 * fields are left out; severity and sqlstate are required. */
typedef struct sy_pg_notice_fields {
    const char *severity; /* "ERROR", "FATAL", "WARNING", "NOTICE", ... */
    const char *sqlstate; /* five characters */
    const char *message;
    const char *detail;
    const char *hint;
} sy_pg_notice_fields;

int sy__pg_build_error(sy_buf *b, const sy_pg_notice_fields *f);
int sy__pg_build_notice(sy_buf *b, const sy_pg_notice_fields *f);

int sy__pg_build_auth_ok(sy_buf *b);
int sy__pg_build_auth_cleartext(sy_buf *b);
int sy__pg_build_auth_md5(sy_buf *b, const uint8_t salt[4]);
/* mechanisms: NULL-terminated array, e.g. {"SCRAM-SHA-256", NULL}. */
int sy__pg_build_auth_sasl(sy_buf *b, const char *const *mechanisms);
int sy__pg_build_auth_sasl_continue(sy_buf *b, const void *data, size_t len);
int sy__pg_build_auth_sasl_final(sy_buf *b, const void *data, size_t len);

int sy__pg_build_parameter_status(sy_buf *b, const char *name, const char *value);
int sy__pg_build_backend_key(sy_buf *b, uint32_t pid, uint32_t key);
int sy__pg_build_ready(sy_buf *b, char status);
int sy__pg_build_command_complete(sy_buf *b, const char *tag);
/* A result of text columns (type text, no table), as the admin console
 * answers: RowDescription, then one DataRow per row (NULL values are SQL
 * NULLs). */
int sy__pg_build_row_description_text(sy_buf *b, const char *const *names, uint16_t n);
int sy__pg_build_data_row_text(sy_buf *b, const char *const *values, uint16_t n);
/* A message whose body is empty: ParseComplete, BindComplete, Sync, ... */
int sy__pg_build_empty(sy_buf *b, uint8_t type);
/* The single byte answering SSLRequest / GSSENCRequest: 'S' or 'N'. */
int sy__pg_build_startup_reply(sy_buf *b, int accept);
/* NegotiateProtocolVersion: newest minor we speak and the _pq_. options
 * we did not recognise (NULL-terminated, may be NULL). */
int sy__pg_build_negotiate(sy_buf *b, uint32_t newest_minor,
                           const char *const *unrecognised);

/* Client-side messages, sent to servers. */
int sy__pg_build_query(sy_buf *b, const char *sql, size_t len);
int sy__pg_build_parse(sy_buf *b, const char *name, const char *query,
                       size_t query_len, uint16_t nparams, const uint32_t *oids);
/* Bind from parts: values[i] == NULL (or lens[i] < 0) sends SQL NULL. */
int sy__pg_build_bind(sy_buf *b, const char *portal, const char *statement,
                      uint16_t nformats, const int16_t *formats,
                      uint16_t nparams, const char *const *values,
                      const int32_t *lens, uint16_t nresults,
                      const int16_t *result_formats);
/* A client's parsed Bind re-targeted at another statement name (the proxy
 * renames prepared statements); formats, values and result formats are
 * copied verbatim.  name need not be NUL-terminated. */
int sy__pg_build_bind_renamed(sy_buf *b, const sy_pg_bind *src,
                              const char *name, size_t name_len);
int sy__pg_build_describe(sy_buf *b, char kind, const char *name);
int sy__pg_build_close(sy_buf *b, char kind, const char *name);
int sy__pg_build_execute(sy_buf *b, const char *portal, int32_t max_rows);
int sy__pg_build_sync(sy_buf *b);
int sy__pg_build_flush(sy_buf *b);
int sy__pg_build_terminate(sy_buf *b);
/* Startup-phase packets a client sends (the proxy cancels backend queries
 * itself, without blocking; the specs use the others). */
int sy__pg_build_startup(sy_buf *b, const char *const *keys,
                         const char *const *values, size_t n);
int sy__pg_build_ssl_request(sy_buf *b);
int sy__pg_build_cancel_request(sy_buf *b, uint32_t pid, uint32_t key);

#endif
