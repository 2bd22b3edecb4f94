/*
 * classify.c - what kind of statement is this SQL, without parsing it.
 *
 * The router calls sy_classify() for every query, so it must be cheap: one
 * pass over the bytes (two when a '..' literal holds a backslash, see
 * below) with a PostgreSQL-faithful lexer (classify_hints.c) and a small
 * per-statement state machine fed token by token.  Nothing is
 * allocated and no state outlives the call.  libpg_query gives a real parse
 * tree at 10-50 us a statement; this gives the routing facts at well under
 * 1 us, and errs towards "needs the primary" when the text is ambiguous.
 *
 * Kinds and flags (flags in capitals are SY_STMT_*):
 *
 *   statement                                   kind          flags
 *   ------------------------------------------  ------------  ---------------------
 *   SELECT, VALUES, TABLE, SHOW, FETCH, MOVE    read
 *   EXPLAIN <anything>                          read          (nothing runs, no flags)
 *   EXPLAIN ANALYZE <stmt>, EXPLAIN (ANALYZE    kind of stmt  EXPLAIN_ANALYZE + stmt's
 *     [true|on|1], ...) <stmt>                    (at least read)
 *   SELECT ... FOR UPDATE | NO KEY UPDATE |     write         LOCKING_READ
 *     SHARE | KEY SHARE (any depth)
 *   WITH x AS (INSERT|UPDATE|DELETE|MERGE ..)   write         WRITABLE_CTE
 *   WITH x AS (SELECT ..) SELECT ..             read
 *   WITH x AS (SELECT ..) INSERT ..             write         (main statement, no flag)
 *   SELECT ... INTO t                           write
 *   SELECT ... INTO TEMP t                      session       TEMP_TABLE
 *   call of nextval, setval, pg_notify,         write         WRITE_FUNCTION
 *     txid_current, pg_current_xact_id,
 *     pg_[try_]advisory_xact_lock[_shared],
 *     lo_create/creat/import/unlink/from_bytea/put,
 *     pg_switch_wal, pg_create_restore_point,
 *     or a caller's write_functions entry
 *   call of pg_[try_]advisory_lock[_shared],    session       ADVISORY_LOCK
 *     pg_advisory_unlock[_shared|_all]
 *   call of set_config                          session
 *   INSERT, UPDATE, DELETE, MERGE, TRUNCATE,    write
 *     CALL, DO, LOCK, NOTIFY, REFRESH,
 *     VACUUM, ANALYZE, CLUSTER, REINDEX,
 *     CHECKPOINT
 *   COPY t FROM ..., COPY (INSERT ..) TO ...    write
 *   COPY t TO ..., COPY (SELECT ..) TO ...      read
 *   BEGIN, START TRANSACTION                    transaction   TX_BEGIN
 *     ... READ ONLY (last READ ONLY/WRITE wins)               + READ_ONLY_TX
 *   COMMIT, END, ROLLBACK, ABORT                transaction   TX_END
 *     ... AND CHAIN                                           TX_END + TX_BEGIN
 *   PREPARE TRANSACTION 'id'                    transaction   TX_END (the session
 *                                                               leaves the transaction)
 *   ROLLBACK TO [SAVEPOINT], SAVEPOINT,         transaction
 *     RELEASE, COMMIT/ROLLBACK PREPARED,
 *     SET TRANSACTION, SET CONSTRAINTS
 *   SET TRANSACTION ... READ ONLY               transaction   READ_ONLY_TX
 *   SET [SESSION|LOCAL] x, RESET, LISTEN,       session
 *     UNLISTEN, DISCARD, DEALLOCATE, LOAD,
 *     CLOSE, EXECUTE
 *   SET SESSION CHARACTERISTICS AS TRANSACTION  session       READ_ONLY_TX
 *     READ ONLY
 *   PREPARE p AS <stmt>, DECLARE c CURSOR FOR   session       + flags of <stmt>
 *     <stmt>                                                  (it runs later, on the
 *                                                               pinned session)
 *   CREATE [GLOBAL|LOCAL] TEMP|TEMPORARY        session       TEMP_TABLE
 *     TABLE|VIEW|SEQUENCE
 *   CREATE TEMP TABLE t AS <query>              session, or   TEMP_TABLE + query's
 *                                                 query's kind if stronger
 *   CREATE, ALTER, DROP, GRANT, REVOKE,         ddl           (no query flags: bodies
 *     COMMENT, SECURITY LABEL, REASSIGN,                        and defaults do not run)
 *     IMPORT FOREIGN SCHEMA
 *   anything else, or a statement not starting  unknown
 *     with a keyword (an empty string too)
 *
 * Multi-statement strings are split on ';' outside parentheses, literals,
 * comments and CREATE FUNCTION ... BEGIN ATOMIC ... END bodies.  Two or more
 * non-empty statements set MULTI; the flags are the union of the parts'
 * and the kind is the strongest part's, in this order:
 *
 *   ddl > write > session > unknown > transaction > read
 *
 * so any write makes the whole string a write (it must reach the primary),
 * an unknown part keeps the string off replicas, and "BEGIN; SELECT 1;
 * COMMIT" stays a transaction.  READ_ONLY_TX survives only if no part opens
 * a read-write transaction ("BEGIN READ ONLY; COMMIT; BEGIN" is not read
 * only).  The flags do not say which part set them.
 *
 * Conservative choices, so a replica never receives a write:
 *  - a write function matches under any schema (myschema.nextval() too) and
 *    in any position a call can appear;
 *  - NUL bytes are ordinary bytes: every byte up to len is classified;
 *  - '..' literals are read with standard_conforming_strings = on (the
 *    default since PostgreSQL 9.1).  When one holds a backslash, the
 *    string is read a second time the "off" way (backslash escapes) and
 *    the stronger kind wins, restricting flags are OR'd, and READ_ONLY_TX
 *    and TX_END are kept only if both readings set them: a session that
 *    turned the setting off cannot hide a write in 'O\'Brien'; DELETE ...
 *
 * Hints: comments before a statement's first token or after its last token
 * (before ';' or the end) are read by classify_hints.c (sy:, sqlcommenter,
 * marginalia; line comments too).  Comments inside a statement are not.
 *
 * Schemas (distinct, in order of first mention, SY_MAX_SCHEMAS at most):
 *  - a qualified name in a relation position: after FROM, JOIN, USING,
 *    INTO, UPDATE, TABLE, TRUNCATE, COPY, LOCK, REFERENCES, VIEW, INDEX,
 *    SEQUENCE, FUNCTION, PROCEDURE, ROUTINE, TYPE, DOMAIN, AGGREGATE,
 *    COLLATION, STATISTICS, and ON / OF in DDL, skipping ONLY, LATERAL,
 *    IF [NOT] EXISTS, CONCURRENTLY, TEMP, UNLOGGED; then each name of a
 *    comma list there (FROM a.x, b.y).  s.t gives s; c.s.t gives s.
 *  - every name at the top level of VACUUM, ANALYZE, CLUSTER, REINDEX;
 *  - a qualified function call: s.f( gives s, c.s.f( gives s;
 *  - the name after SCHEMA (CREATE/DROP/ALTER SCHEMA s, IN SCHEMA s,
 *    SET SCHEMA s in DDL), unqualified;
 *  - COMMENT ON COLUMN s.t.c gives s.
 *  Not reported: t.col and s.t.col in expressions (table.column is far more
 *  common than schema.table there), FROM inside EXTRACT/SUBSTRING/TRIM/
 *  OVERLAY/POSITION(...) and IS DISTINCT FROM, names inside string literals
 *  (nextval('s.seq')), and anything in SET, RESET or SHOW (SET search_path
 *  is the proxy's business).  pg_catalog and information_schema are
 *  reported like any other schema.  Spans exclude the quotes of a quoted
 *  name; a span preceded by '"' was quoted (case preserved, "" kept as
 *  written), otherwise PostgreSQL folds it to lower case.  Distinctness
 *  follows the same rule ("Sales" and sales differ, SALES and sales do not).
 */
#include "classify_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------ functions */

enum function_class { FN_NONE, FN_WRITE, FN_ADVISORY, FN_SESSION };

struct builtin_function {
    const char *name;
    uint8_t len;
    uint8_t cls;
};

#define FN(name, cls) {name, sizeof(name) - 1, cls}
static const struct builtin_function builtin_functions[] = {
    FN("nextval", FN_WRITE),
    FN("setval", FN_WRITE),
    FN("pg_notify", FN_WRITE),
    FN("txid_current", FN_WRITE),
    FN("pg_current_xact_id", FN_WRITE),
    FN("pg_advisory_xact_lock", FN_WRITE),
    FN("pg_advisory_xact_lock_shared", FN_WRITE),
    FN("pg_try_advisory_xact_lock", FN_WRITE),
    FN("pg_try_advisory_xact_lock_shared", FN_WRITE),
    FN("lo_create", FN_WRITE),
    FN("lo_creat", FN_WRITE),
    FN("lo_import", FN_WRITE),
    FN("lo_unlink", FN_WRITE),
    FN("lo_from_bytea", FN_WRITE),
    FN("lo_put", FN_WRITE),
    FN("pg_switch_wal", FN_WRITE),
    FN("pg_create_restore_point", FN_WRITE),
    FN("pg_advisory_lock", FN_ADVISORY),
    FN("pg_advisory_lock_shared", FN_ADVISORY),
    FN("pg_try_advisory_lock", FN_ADVISORY),
    FN("pg_try_advisory_lock_shared", FN_ADVISORY),
    FN("pg_advisory_unlock", FN_ADVISORY),
    FN("pg_advisory_unlock_shared", FN_ADVISORY),
    FN("pg_advisory_unlock_all", FN_ADVISORY),
    FN("set_config", FN_SESSION),
};

/* ------------------------------------------------------------ state */

/* What a name starting here would be: decides what a qualified name
 * says about schemas and whether name( can be a function call. */
enum name_context {
    CTX_NONE,     /* an expression */
    CTX_REL_FROM, /* a relation that may also be a table function */
    CTX_REL_DEF,  /* a relation being named, created or altered: t (cols) */
    CTX_SCHEMA,   /* a schema name itself */
    CTX_COLUMN    /* COMMENT ON COLUMN s.t.c */
};

#define MAX_NAME_PARTS 4

typedef struct name_part {
    size_t off, len;
    bool quoted;
} name_part;

/* A dotted name being read: a.b."c" */
typedef struct name_collector {
    name_part part[MAX_NAME_PARTS];
    size_t nparts; /* may exceed MAX_NAME_PARTS; such names are ignored */
    size_t depth;
    uint8_t ctx;
    bool active;
    bool expect_part; /* the last token was the dot */
    bool noise;       /* starts with a noise word: alone, it is no name */
} name_collector;

typedef struct recent_token {
    uint8_t type;
    uint8_t kw;
} recent_token;

/* Everything about the statement being read; reset at each ';'. */
typedef struct statement_state {
    size_t ntok;  /* significant tokens so far */
    size_t depth; /* parenthesis depth */
    sy_kind kind;
    uint32_t flags;

    /* The command being read: the statement's own, or the one nested in
     * EXPLAIN, PREPARE, DECLARE, WITH, CREATE TEMP TABLE AS. */
    uint8_t cmd;
    size_t cmd_depth;
    size_t cmd_ntok; /* tokens since the command's keyword */
    bool cmd_started;   /* this token began a command: do not count it */
    bool head_pending;  /* no command keyword seen yet */
    bool inner_pending; /* the next word starts a nested command */
    bool inner_live;
    bool inner_live_flags;
    bool live_kind;  /* what runs now can raise the kind ... */
    bool live_flags; /* ... and set query flags */
    bool ddl;
    bool record_schemas;
    bool relations_everywhere; /* VACUUM t1, t2 / ANALYZE s.t */

    /* per command */
    bool into_pending;
    bool copy_decided;
    bool tx_end;
    bool tx_chain;
    bool tracks_read_only;
    bool read_only;
    bool prepare_transaction;
    bool set_session;
    bool cte_name_next;
    bool explain_analyze;
    bool explain_in_options;
    bool explain_option_analyze;
    bool create_done;
    bool create_temp;
    uint8_t create_object;
    size_t atomic_depth; /* inside BEGIN ATOMIC ... END */

    recent_token prev[3]; /* the last tokens, newest first */

    /* schemas */
    name_collector name;
    uint8_t armed;        /* context of the next name, if one starts now */
    uint8_t list_ctx;     /* a comma at list_depth arms list_ctx again */
    bool list_active;
    size_t list_depth;
    uint64_t no_from_parens; /* bit d: depth d is EXTRACT(... FROM ...) */
} statement_state;

typedef struct classifier {
    sy__lexer lex;
    const char *sql;
    const char *const *write_functions;
    sy_statement *out;
    statement_state st;
    size_t nstatements; /* non-empty statements finished */
    sy_kind kind;
    uint32_t flags;
    bool read_write_begin; /* some BEGIN was not READ ONLY */
    uint32_t schema_quoted; /* bit i: out->schemas[i] was a quoted name */
} classifier;

/* ------------------------------------------------------------ kinds */

/* The order multi-statement strings (and escalations) resolve by. */
static int kind_strength(sy_kind kind)
{
    switch (kind) {
    case SY_KIND_READ: return 0;
    case SY_KIND_TRANSACTION: return 1;
    case SY_KIND_UNKNOWN: return 2;
    case SY_KIND_SESSION: return 3;
    case SY_KIND_WRITE: return 4;
    case SY_KIND_DDL: return 5;
    }
    return 2;
}

static sy_kind stronger(sy_kind a, sy_kind b)
{
    return kind_strength(b) > kind_strength(a) ? b : a;
}

static sy_kind command_kind(uint8_t kw)
{
    switch (kw) {
    case KW_SELECT: case KW_WITH: case KW_VALUES: case KW_TABLE:
    case KW_SHOW: case KW_EXPLAIN: case KW_FETCH: case KW_MOVE:
    case KW_COPY: /* until FROM says otherwise */
        return SY_KIND_READ;
    case KW_INSERT: case KW_UPDATE: case KW_DELETE: case KW_MERGE:
    case KW_TRUNCATE: case KW_CALL: case KW_DO: case KW_REFRESH:
    case KW_VACUUM: case KW_ANALYZE: case KW_ANALYSE: case KW_CLUSTER:
    case KW_REINDEX: case KW_CHECKPOINT: case KW_LOCK: case KW_NOTIFY:
        return SY_KIND_WRITE;
    case KW_BEGIN: case KW_START: case KW_COMMIT: case KW_END:
    case KW_ROLLBACK: case KW_ABORT: case KW_SAVEPOINT: case KW_RELEASE:
        return SY_KIND_TRANSACTION;
    case KW_SET: case KW_RESET: case KW_LISTEN: case KW_UNLISTEN:
    case KW_PREPARE: case KW_EXECUTE: case KW_DEALLOCATE: case KW_DISCARD:
    case KW_DECLARE: case KW_LOAD: case KW_CLOSE:
        return SY_KIND_SESSION;
    case KW_CREATE: case KW_ALTER: case KW_DROP: case KW_GRANT:
    case KW_REVOKE: case KW_COMMENT: case KW_SECURITY: case KW_REASSIGN:
    case KW_IMPORT:
        return SY_KIND_DDL;
    default:
        return SY_KIND_UNKNOWN;
    }
}

/* Commands whose own text runs as a query now, so a function call or a
 * locking clause in it counts.  An unknown command is taken as live too:
 * better a needless trip to the primary than a write on a replica. */
static bool command_runs_query(uint8_t kw)
{
    switch (kw) {
    case KW_SELECT: case KW_WITH: case KW_VALUES: case KW_TABLE:
    case KW_INSERT: case KW_UPDATE: case KW_DELETE: case KW_MERGE:
    case KW_COPY: case KW_CALL: case KW_EXECUTE:
        return true;
    default:
        return command_kind(kw) == SY_KIND_UNKNOWN;
    }
}

static bool is_dml(uint8_t kw)
{
    return kw == KW_INSERT || kw == KW_UPDATE || kw == KW_DELETE ||
           kw == KW_MERGE;
}

static void escalate(statement_state *st, sy_kind kind)
{
    if (st->live_kind)
        st->kind = stronger(st->kind, kind);
}

static void mark(statement_state *st, uint32_t flag)
{
    if (st->live_flags)
        st->flags |= flag;
}

/* ------------------------------------------------------------ names */

/* Compares two identifiers as PostgreSQL would: unquoted ones fold to
 * lower case, quoted ones are exact. */
static bool same_identifier(const char *s, size_t a, size_t alen,
                            bool aquoted, size_t b, size_t blen, bool bquoted)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        unsigned char ca = (unsigned char)s[a + i];
        unsigned char cb = (unsigned char)s[b + i];
        if (!aquoted)
            ca = sy__ascii_lower(ca);
        if (!bquoted)
            cb = sy__ascii_lower(cb);
        if (ca != cb)
            return false;
    }
    return true;
}

static void record_schema(classifier *cx, const name_part *p)
{
    sy_statement *out = cx->out;
    if (p->len == 0)
        return;
    for (int i = 0; i < out->nschemas; i++)
        if (same_identifier(cx->sql, out->schemas[i].off, out->schemas[i].len,
                            (cx->schema_quoted >> i) & 1u, p->off, p->len,
                            p->quoted))
            return;
    if (out->nschemas >= SY_MAX_SCHEMAS || p->off + p->len > UINT32_MAX) {
        out->flags |= SY_STMT_TRUNCATED;
        return;
    }
    if (p->quoted)
        cx->schema_quoted |= 1u << out->nschemas;
    out->schemas[out->nschemas].off = (uint32_t)p->off;
    out->schemas[out->nschemas].len = (uint32_t)p->len;
    out->nschemas++;
}

/* Does identifier part p spell entry[0..entry_len) (lower case)? */
static bool part_is(const classifier *cx, const name_part *p,
                    const char *entry, size_t entry_len)
{
    if (p->len != entry_len)
        return false;
    const char *s = cx->sql + p->off;
    for (size_t i = 0; i < entry_len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((p->quoted ? c : sy__ascii_lower(c)) != (unsigned char)entry[i])
            return false;
    }
    return true;
}

/* A caller's entry is "name" (any schema) or "schema.name" (that one). */
static bool listed_by_caller(const classifier *cx, const name_part *fn,
                             const name_part *qualifier)
{
    const char *const *list = cx->write_functions;
    if (list == NULL)
        return false;
    for (; *list != NULL; list++) {
        const char *entry = *list;
        const char *dot = strchr(entry, '.');
        if (dot == NULL) {
            if (part_is(cx, fn, entry, strlen(entry)))
                return true;
        } else if (qualifier != NULL &&
                   part_is(cx, qualifier, entry, (size_t)(dot - entry)) &&
                   part_is(cx, fn, dot + 1, strlen(dot + 1))) {
            return true;
        }
    }
    return false;
}

static void check_function_call(classifier *cx, const name_collector *nm)
{
    statement_state *st = &cx->st;
    const name_part *fn = &nm->part[nm->nparts - 1];
    const name_part *qualifier = nm->nparts >= 2 ? &nm->part[nm->nparts - 2]
                                                 : NULL;
    uint8_t cls = FN_NONE;

    for (size_t i = 0;
         i < sizeof builtin_functions / sizeof builtin_functions[0]; i++) {
        const struct builtin_function *b = &builtin_functions[i];
        if (part_is(cx, fn, b->name, b->len)) {
            cls = b->cls;
            break;
        }
    }
    if (cls == FN_NONE && listed_by_caller(cx, fn, qualifier))
        cls = FN_WRITE;

    switch (cls) {
    case FN_WRITE:
        escalate(st, SY_KIND_WRITE);
        mark(st, SY_STMT_WRITE_FUNCTION);
        break;
    case FN_ADVISORY:
        escalate(st, SY_KIND_SESSION);
        mark(st, SY_STMT_ADVISORY_LOCK);
        break;
    case FN_SESSION:
        escalate(st, SY_KIND_SESSION);
        break;
    default:
        break;
    }
}

/* The name in progress is complete; call says "(" follows it. */
static void finish_name(classifier *cx, bool call)
{
    statement_state *st = &cx->st;
    name_collector *nm = &st->name;
    if (!nm->active)
        return;
    nm->active = false;
    call = call && !nm->expect_part;
    size_t n = nm->nparts;
    if (n > MAX_NAME_PARTS || (n == 1 && nm->noise))
        return;

    if (st->record_schemas) {
        const name_part *schema = NULL;
        if (nm->ctx == CTX_SCHEMA) {
            if (n <= 2)
                schema = &nm->part[n - 1]; /* [catalog.]schema */
        } else if (nm->ctx == CTX_COLUMN) {
            if (n >= 3)
                schema = &nm->part[n - 3]; /* [catalog.]schema.table.column */
        } else if ((nm->ctx != CTX_NONE || call) && (n == 2 || n == 3)) {
            /* s.t, c.s.t in a relation position; s.f(, c.s.f( anywhere */
            schema = &nm->part[n - 2];
        }
        if (schema != NULL)
            record_schema(cx, schema);
    }
    /* "INSERT INTO nextval (a)" names a table, not a call. */
    if (call && (st->live_kind || st->live_flags) &&
        (nm->ctx == CTX_NONE || nm->ctx == CTX_REL_FROM))
        check_function_call(cx, nm);
    if (nm->ctx == CTX_REL_FROM || nm->ctx == CTX_REL_DEF ||
        nm->ctx == CTX_SCHEMA) {
        st->list_active = true;
        st->list_depth = nm->depth;
        st->list_ctx = nm->ctx;
    }
}

static void start_name(statement_state *st, const token *t, uint8_t ctx,
                       size_t depth, bool noise)
{
    name_collector *nm = &st->name;
    nm->active = true;
    nm->noise = noise;
    nm->expect_part = false;
    nm->ctx = ctx;
    nm->depth = depth;
    nm->nparts = 1;
    nm->part[0].off = t->off;
    nm->part[0].len = t->len;
    nm->part[0].quoted = t->type == T_QIDENT;
}

static void append_name_part(statement_state *st, const token *t)
{
    name_collector *nm = &st->name;
    if (nm->nparts < MAX_NAME_PARTS) {
        name_part *p = &nm->part[nm->nparts];
        p->off = t->off;
        p->len = t->len;
        p->quoted = t->type == T_QIDENT;
    }
    nm->nparts++;
    nm->expect_part = false;
}

/* Which context a keyword gives the name after it (CTX_NONE: none). */
static uint8_t relation_trigger(const statement_state *st, uint8_t kw,
                                size_t depth)
{
    switch (kw) {
    case KW_FROM:
        /* IS DISTINCT FROM x.y and EXTRACT(day FROM t.col) are expressions. */
        if (st->prev[0].kw == KW_DISTINCT)
            return CTX_NONE;
        if (depth < 64 && ((st->no_from_parens >> depth) & 1u))
            return CTX_NONE;
        return CTX_REL_FROM;
    case KW_JOIN: case KW_USING:
        return CTX_REL_FROM;
    case KW_INTO: case KW_UPDATE: case KW_TABLE: case KW_TRUNCATE:
    case KW_COPY: case KW_LOCK: case KW_REFERENCES: case KW_VIEW:
    case KW_INDEX: case KW_SEQUENCE: case KW_FUNCTION: case KW_PROCEDURE:
    case KW_ROUTINE: case KW_TYPE: case KW_DOMAIN: case KW_AGGREGATE:
    case KW_COLLATION: case KW_STATISTICS:
        return CTX_REL_DEF;
    case KW_ON: case KW_OF:
        /* In a query, ON starts a join condition: ON a.id = b.id. */
        return st->ddl ? CTX_REL_DEF : CTX_NONE;
    case KW_COLUMN:
        return st->ddl ? CTX_COLUMN : CTX_NONE;
    case KW_SCHEMA:
        return CTX_SCHEMA;
    default:
        return CTX_NONE;
    }
}

/* Words between a relation keyword and the name it introduces.  After
 * SCHEMA only IF [NOT] EXISTS and AUTHORIZATION are: CREATE SCHEMA global. */
static bool is_noise(uint8_t kw, uint8_t armed)
{
    if (armed == CTX_SCHEMA)
        return kw == KW_IF || kw == KW_NOT || kw == KW_EXISTS ||
               kw == KW_AUTHORIZATION;
    switch (kw) {
    case KW_ONLY: case KW_LATERAL: case KW_IF: case KW_NOT: case KW_EXISTS:
    case KW_CONCURRENTLY: case KW_TEMP: case KW_TEMPORARY: case KW_UNLOGGED:
    case KW_MATERIALIZED: case KW_AUTHORIZATION: case KW_GLOBAL:
    case KW_LOCAL:
        return true;
    default:
        return false;
    }
}

/* Tracks names for schemas and calls; returns true when t only continued a
 * dotted name (a keyword after a dot is just a name: s.table). */
static bool track_names(classifier *cx, const token *t, size_t depth)
{
    statement_state *st = &cx->st;
    name_collector *nm = &st->name;

    if (t->type == T_WORD || t->type == T_QIDENT) {
        if (nm->active && nm->expect_part) {
            append_name_part(st, t);
            st->armed = CTX_NONE; /* a dotted name took the position */
            return true;
        }
        finish_name(cx, false);
        uint8_t kw = t->type == T_WORD ? t->kw : KW_NONE;
        uint8_t trigger = st->record_schemas ? relation_trigger(st, kw, depth)
                                             : CTX_NONE;
        bool noise = is_noise(kw, st->armed);
        /* Every name takes the armed context, keywords too: in FROM
         * global.config or FROM statistics.daily the keyword is a schema.
         * Only a plain word uses the arm up; a noise word (ONLY, IF EXISTS)
         * passes it on and a trigger word replaces it. */
        uint8_t ctx = st->armed;
        if (ctx == CTX_NONE && st->relations_everywhere &&
            depth == st->cmd_depth && st->record_schemas)
            ctx = CTX_REL_DEF;
        if (trigger == CTX_NONE && !noise) {
            st->armed = CTX_NONE;
            /* A clause keyword ends a FROM list; an alias does not. */
            if (st->list_active && depth == st->list_depth &&
                kw != KW_NONE && kw != KW_AS)
                st->list_active = false;
        }
        start_name(st, t, ctx, depth, noise);
        if (trigger != CTX_NONE)
            st->armed = trigger;
        return false;
    }
    if (t->type == T_DOT) {
        if (nm->active && !nm->expect_part)
            nm->expect_part = true;
        else
            finish_name(cx, false);
        return false;
    }
    finish_name(cx, t->type == T_LPAREN);
    if (t->type == T_COMMA) {
        st->armed = (st->list_active && depth == st->list_depth)
                        ? st->list_ctx : CTX_NONE;
    } else {
        st->armed = CTX_NONE;
        if (st->list_active && depth == st->list_depth &&
            t->type != T_LPAREN && t->type != T_RPAREN)
            st->list_active = false;
    }
    return false;
}

/* ------------------------------------------------------------ commands */

static void begin_command(classifier *cx, const token *t, size_t depth,
                          bool top)
{
    statement_state *st = &cx->st;
    uint8_t kw = t->kw;
    sy_kind base = command_kind(kw);

    st->cmd = kw;
    st->cmd_depth = depth;
    st->cmd_ntok = 0;
    st->cmd_started = true;
    if (top) {
        st->kind = base;
        st->live_kind = st->live_flags = command_runs_query(kw);
    } else {
        escalate(st, base);
    }
    if (base == SY_KIND_DDL)
        st->ddl = true;

    switch (kw) {
    case KW_BEGIN: case KW_START:
        st->flags |= SY_STMT_TX_BEGIN;
        st->tracks_read_only = true;
        break;
    case KW_COMMIT: case KW_END: case KW_ROLLBACK: case KW_ABORT:
        st->tx_end = true;
        break;
    case KW_SET: case KW_RESET: case KW_SHOW:
        st->record_schemas = false;
        break;
    case KW_VACUUM: case KW_ANALYZE: case KW_ANALYSE: case KW_CLUSTER:
    case KW_REINDEX:
        st->relations_everywhere = true;
        break;
    case KW_WITH:
        st->cte_name_next = true;
        break;
    default:
        break;
    }
}

/* The next word starts a command nested in this one. */
static void expect_inner_command(statement_state *st, bool live_kind,
                                 bool live_flags)
{
    st->inner_pending = true;
    st->inner_live = live_kind;
    st->inner_live_flags = live_flags;
}

static bool token_is_false(const classifier *cx, const token *t)
{
    static const char *const falsy[] = {"false", "off", "no", "0"};
    if (t->type != T_WORD && t->type != T_STRING && t->type != T_NUMBER)
        return false;
    name_part p = {t->off, t->len, false};
    for (size_t i = 0; i < sizeof falsy / sizeof falsy[0]; i++)
        if (part_is(cx, &p, falsy[i], strlen(falsy[i])))
            return true;
    return false;
}

static void explain_token(classifier *cx, const token *t, size_t depth)
{
    statement_state *st = &cx->st;
    if (st->explain_in_options) {
        if (t->type == T_RPAREN && depth == st->cmd_depth) {
            st->explain_in_options = false;
        } else if (depth == st->cmd_depth + 1) {
            if (t->type == T_WORD && (st->prev[0].type == T_LPAREN ||
                                      st->prev[0].type == T_COMMA)) {
                st->explain_option_analyze =
                    t->kw == KW_ANALYZE || t->kw == KW_ANALYSE;
                if (st->explain_option_analyze)
                    st->explain_analyze = true;
            } else if (st->explain_option_analyze) {
                if (token_is_false(cx, t))
                    st->explain_analyze = false;
                st->explain_option_analyze = false;
            }
        }
        return;
    }
    if (t->type == T_LPAREN && st->cmd_ntok == 0) {
        st->explain_in_options = true;
        return;
    }
    if (depth != st->cmd_depth ||
        (t->type != T_WORD && t->type != T_LPAREN))
        return;
    if (t->kw == KW_ANALYZE || t->kw == KW_ANALYSE) {
        st->explain_analyze = true;
    } else if (t->kw != KW_VERBOSE) {
        /* The explained statement, maybe parenthesised, starts here.  Plain
         * EXPLAIN plans without running: nothing inside counts. */
        bool analyze = st->explain_analyze;
        if (analyze)
            st->flags |= SY_STMT_EXPLAIN_ANALYZE;
        if (t->type == T_LPAREN) {
            expect_inner_command(st, analyze, analyze);
        } else {
            st->live_kind = st->live_flags = analyze;
            begin_command(cx, t, depth, false);
        }
    }
}

static void create_token(classifier *cx, const token *t, size_t depth)
{
    statement_state *st = &cx->st;
    if (st->create_done) {
        /* CREATE TEMP TABLE t AS <query> runs the query now. */
        if (st->create_temp && st->create_object == KW_TABLE &&
            t->kw == KW_AS && depth == st->cmd_depth)
            expect_inner_command(st, true, true);
        return;
    }
    if (t->type != T_WORD) {
        st->create_done = true;
        return;
    }
    switch (t->kw) {
    case KW_OR: case KW_REPLACE: case KW_GLOBAL: case KW_LOCAL:
    case KW_UNLOGGED: case KW_RECURSIVE:
        return;
    case KW_TEMP: case KW_TEMPORARY:
        st->create_temp = true;
        return;
    case KW_TABLE: case KW_VIEW: case KW_SEQUENCE:
        st->create_object = t->kw;
        st->create_done = true;
        if (st->create_temp) {
            if (st->kind == SY_KIND_DDL)
                st->kind = SY_KIND_SESSION;
            st->flags |= SY_STMT_TEMP_TABLE;
        }
        return;
    default:
        st->create_done = true;
        return;
    }
}

static void with_token(classifier *cx, const token *t, size_t depth)
{
    statement_state *st = &cx->st;
    if (depth != st->cmd_depth)
        return;
    if (t->type == T_COMMA) {
        st->cte_name_next = true;
        return;
    }
    if (t->type != T_WORD && t->type != T_QIDENT)
        return;
    if (st->cte_name_next) {
        /* INSERT, UPDATE, DELETE and MERGE are fine CTE names. */
        if (!(t->kw == KW_RECURSIVE && st->cmd_ntok == 0))
            st->cte_name_next = false;
        return;
    }
    switch (t->kw) {
    case KW_SELECT: case KW_INSERT: case KW_UPDATE: case KW_DELETE:
    case KW_MERGE: case KW_VALUES: case KW_TABLE:
        begin_command(cx, t, depth, false);
        break;
    default:
        break;
    }
}

static void select_token(classifier *cx, const token *t, size_t depth)
{
    statement_state *st = &cx->st;
    if (st->into_pending) {
        if (t->kw == KW_LOCAL || t->kw == KW_GLOBAL)
            return;
        st->into_pending = false;
        if ((t->kw == KW_TEMP || t->kw == KW_TEMPORARY)) {
            escalate(st, SY_KIND_SESSION);
            mark(st, SY_STMT_TEMP_TABLE);
        } else {
            escalate(st, SY_KIND_WRITE);
        }
        return;
    }
    if (t->kw == KW_INTO && depth == st->cmd_depth)
        st->into_pending = true;
}

static void copy_token(classifier *cx, const token *t, size_t depth)
{
    statement_state *st = &cx->st;
    if (t->type != T_WORD)
        return;
    /* COPY (INSERT ... RETURNING ...) TO STDOUT writes. */
    if (is_dml(t->kw) && st->prev[0].type == T_LPAREN &&
        st->prev[1].kw == KW_COPY)
        escalate(st, SY_KIND_WRITE);
    if (!st->copy_decided && depth == st->cmd_depth) {
        if (t->kw == KW_FROM) {
            st->copy_decided = true;
            escalate(st, SY_KIND_WRITE);
        } else if (t->kw == KW_TO) {
            st->copy_decided = true;
        }
    }
}

static void transaction_end_token(classifier *cx, const token *t)
{
    statement_state *st = &cx->st;
    if (t->type != T_WORD)
        return;
    if (t->kw == KW_TO || t->kw == KW_PREPARED)
        st->tx_end = false; /* ROLLBACK TO SAVEPOINT, COMMIT PREPARED 'x' */
    else if (t->kw == KW_CHAIN && st->prev[0].kw == KW_AND)
        st->tx_chain = true;
}

static void set_token(classifier *cx, const token *t)
{
    statement_state *st = &cx->st;
    if (t->type != T_WORD)
        return;
    if (st->cmd_ntok == 0) {
        if (t->kw == KW_TRANSACTION || t->kw == KW_CONSTRAINTS) {
            st->kind = SY_KIND_TRANSACTION;
            st->tracks_read_only = true;
        } else if (t->kw == KW_SESSION) {
            st->set_session = true;
        }
    } else if (st->cmd_ntok == 1 && st->set_session &&
               t->kw == KW_CHARACTERISTICS) {
        st->tracks_read_only = true;
    }
}

static void prepare_token(classifier *cx, const token *t, size_t depth)
{
    statement_state *st = &cx->st;
    if (st->cmd_ntok == 0) {
        st->prepare_transaction = t->type == T_WORD &&
                                  t->kw == KW_TRANSACTION;
        return;
    }
    if (st->cmd_ntok == 1 && st->prepare_transaction) {
        /* PREPARE TRANSACTION 'id' (not a statement named "transaction") */
        st->prepare_transaction = false;
        if (t->type == T_STRING) {
            st->kind = SY_KIND_TRANSACTION;
            st->tx_end = true;
            st->cmd = KW_NONE;
            return;
        }
    }
    if (t->kw == KW_AS && depth == st->cmd_depth)
        expect_inner_command(st, false, true);
}

static void command_token(classifier *cx, const token *t, size_t depth)
{
    statement_state *st = &cx->st;
    if (st->tracks_read_only && t->type == T_WORD &&
        st->prev[0].kw == KW_READ) {
        if (t->kw == KW_ONLY)
            st->read_only = true;
        else if (t->kw == KW_WRITE)
            st->read_only = false;
    }
    switch (st->cmd) {
    case KW_SELECT: select_token(cx, t, depth); break;
    case KW_WITH: with_token(cx, t, depth); break;
    case KW_COPY: copy_token(cx, t, depth); break;
    case KW_EXPLAIN: explain_token(cx, t, depth); break;
    case KW_CREATE: create_token(cx, t, depth); break;
    case KW_PREPARE: prepare_token(cx, t, depth); break;
    case KW_SET: set_token(cx, t); break;
    case KW_COMMIT: case KW_END: case KW_ROLLBACK: case KW_ABORT:
        transaction_end_token(cx, t);
        break;
    case KW_DECLARE:
        if (t->kw == KW_FOR && depth == st->cmd_depth)
            expect_inner_command(st, false, true);
        break;
    default:
        break;
    }
}

/* Checks that hold in any statement whose text runs now. */
static void query_token(classifier *cx, const token *t)
{
    statement_state *st = &cx->st;
    const recent_token *p = st->prev;
    if (t->type != T_WORD || !(st->live_kind || st->live_flags))
        return;
    if (t->kw == KW_UPDATE || t->kw == KW_SHARE) {
        /* FOR UPDATE | FOR SHARE | FOR KEY SHARE | FOR NO KEY UPDATE */
        if (p[0].kw == KW_FOR ||
            (p[0].kw == KW_KEY &&
             (p[1].kw == KW_FOR || (p[1].kw == KW_NO && p[2].kw == KW_FOR)))) {
            escalate(st, SY_KIND_WRITE);
            mark(st, SY_STMT_LOCKING_READ);
        }
    }
    if (is_dml(t->kw) && p[0].type == T_LPAREN &&
        (p[1].kw == KW_AS || p[1].kw == KW_MATERIALIZED)) {
        escalate(st, SY_KIND_WRITE);
        mark(st, SY_STMT_WRITABLE_CTE);
    }
}

/* ------------------------------------------------------------ statements */

static void reset_statement(statement_state *st)
{
    memset(st, 0, sizeof *st);
    st->head_pending = true;
    st->record_schemas = true;
}

static void feed(classifier *cx, const token *t)
{
    statement_state *st = &cx->st;
    size_t depth = st->depth;

    if (t->type == T_LPAREN) {
        st->depth++;
        /* FROM inside EXTRACT(...) & co. names no relation. */
        if (st->depth < 64) {
            uint64_t bit = (uint64_t)1 << st->depth;
            uint8_t fn = st->prev[0].kw;
            if (fn == KW_EXTRACT || fn == KW_SUBSTRING || fn == KW_TRIM ||
                fn == KW_OVERLAY || fn == KW_POSITION)
                st->no_from_parens |= bit;
            else
                st->no_from_parens &= ~bit;
        }
    } else if (t->type == T_RPAREN) {
        if (st->depth > 0)
            st->depth--;
        depth = st->depth;
        if (st->list_active && depth < st->list_depth)
            st->list_active = false;
    }

    if (track_names(cx, t, depth)) {
        /* s.update is a name, not the keyword */
        st->prev[2] = st->prev[1];
        st->prev[1] = st->prev[0];
        st->prev[0].type = t->type;
        st->prev[0].kw = KW_NONE;
        st->ntok++;
        st->cmd_ntok++;
        return;
    }

    if (st->head_pending) {
        if (t->type == T_WORD) {
            st->head_pending = false;
            if (cx->nstatements == 0 && t->off + t->len <= UINT32_MAX) {
                cx->out->first_word.off = (uint32_t)t->off;
                cx->out->first_word.len = (uint32_t)t->len;
            }
            begin_command(cx, t, depth, true);
        } else if (t->type != T_LPAREN) {
            /* Not a command we know how to start: unknown, and live. */
            st->head_pending = false;
            st->kind = SY_KIND_UNKNOWN;
            st->live_kind = st->live_flags = true;
        }
    } else if (st->inner_pending) {
        if (t->type != T_LPAREN) {
            st->inner_pending = false;
            if (t->type == T_WORD) {
                st->live_kind = st->inner_live;
                st->live_flags = st->inner_live_flags;
                begin_command(cx, t, depth, false);
            }
        }
    } else {
        command_token(cx, t, depth);
    }

    query_token(cx, t);

    if (t->type == T_WORD) {
        if (st->atomic_depth > 0) {
            if (t->kw == KW_CASE)
                st->atomic_depth++;
            else if (t->kw == KW_END)
                st->atomic_depth--;
        } else if (st->ddl && t->kw == KW_ATOMIC &&
                   st->prev[0].kw == KW_BEGIN) {
            /* CREATE FUNCTION ... BEGIN ATOMIC ...; ...; END: its ';' do
             * not end the statement. */
            st->atomic_depth = 1;
        }
    }

    st->prev[2] = st->prev[1];
    st->prev[1] = st->prev[0];
    st->prev[0].type = t->type;
    st->prev[0].kw = t->type == T_WORD ? t->kw : KW_NONE;
    st->ntok++;
    if (st->cmd_started)
        st->cmd_started = false;
    else
        st->cmd_ntok++;
}

static void end_statement(classifier *cx)
{
    statement_state *st = &cx->st;
    finish_name(cx, false);
    if (st->ntok > 0) {
        if (st->into_pending)
            escalate(st, SY_KIND_WRITE);
        if (st->cmd == KW_COPY && !st->copy_decided)
            escalate(st, SY_KIND_WRITE);
        if (st->tx_end)
            st->flags |= SY_STMT_TX_END;
        if (st->tx_chain)
            st->flags |= SY_STMT_TX_BEGIN;
        if (st->read_only)
            st->flags |= SY_STMT_READ_ONLY_TX;
        else if (st->flags & SY_STMT_TX_BEGIN)
            cx->read_write_begin = true;

        cx->kind = cx->nstatements == 0 ? st->kind
                                        : stronger(cx->kind, st->kind);
        cx->flags |= st->flags;
        cx->nstatements++;
    }
    reset_statement(st);
}

/* One reading of the whole string; *saw_backslash tells whether a '..'
 * literal held a backslash (the other reading could differ). */
static void classify_once(const char *sql, size_t len,
                          const char *const *write_functions,
                          bool backslash_escapes, sy_statement *out,
                          bool *saw_backslash)
{
    memset(out, 0, sizeof *out);

    classifier cx;
    cx.lex.sql = sql;
    cx.lex.len = len;
    cx.lex.pos = 0;
    cx.lex.out = out;
    cx.lex.backslash_escapes = backslash_escapes;
    cx.lex.saw_backslash = false;
    cx.sql = sql;
    cx.write_functions = write_functions;
    cx.out = out;
    cx.nstatements = 0;
    cx.kind = SY_KIND_UNKNOWN;
    cx.flags = 0;
    cx.read_write_begin = false;
    cx.schema_quoted = 0;
    reset_statement(&cx.st);

    token t;
    for (;;) {
        /* A ';' ends the statement outside parentheses and BEGIN ATOMIC. */
        bool semicolon_ends = cx.st.depth == 0 && cx.st.atomic_depth == 0;
        sy__next_token(&cx.lex, &t, cx.st.ntok == 0, semicolon_ends);
        if (t.type == T_EOF) {
            end_statement(&cx);
            break;
        }
        if (t.type == T_SEMI && semicolon_ends) {
            end_statement(&cx);
            continue;
        }
        feed(&cx, &t);
    }

    uint32_t flags = cx.flags;
    if (cx.read_write_begin)
        flags &= ~(uint32_t)SY_STMT_READ_ONLY_TX;
    if (cx.nstatements > 1)
        flags |= SY_STMT_MULTI;
    if (out->nhints > 0)
        flags |= SY_STMT_HAS_HINTS;
    out->flags |= flags; /* keeps the TRUNCATED the hint reader set */
    out->kind = cx.kind;
    *saw_backslash = cx.lex.saw_backslash;
}

int sy_classify(const char *sql, size_t len,
                const char *const *write_functions, sy_statement *out)
{
    if (sql == NULL || out == NULL)
        return SY_EINVAL;

    bool ambiguous;
    classify_once(sql, len, write_functions, false, out, &ambiguous);
    if (ambiguous) {
        /* A session with standard_conforming_strings = off ends '\'' at a
         * different quote, so text we read as inside a literal may run
         * (SELECT 'O\'Brien'; DELETE ...).  Take the safer of both
         * readings: the stronger kind and every restricting flag; a
         * flag that relaxes routing (READ_ONLY_TX) or unpins (TX_END) only
         * if both readings agree.  Hints and schemas stay the first
         * reading's. */
        sy_statement other;
        bool unused;
        classify_once(sql, len, write_functions, true, &other, &unused);
        const uint32_t both = SY_STMT_READ_ONLY_TX | SY_STMT_TX_END;
        const uint32_t own = SY_STMT_HAS_HINTS | SY_STMT_TRUNCATED;
        out->kind = stronger(out->kind, other.kind);
        out->flags = (out->flags & ~both) | (out->flags & other.flags & both) |
                     (other.flags & ~(both | own));
    }
    return SY_OK;
}

const char *sy_kind_name(sy_kind kind)
{
    switch (kind) {
    case SY_KIND_READ: return "read";
    case SY_KIND_WRITE: return "write";
    case SY_KIND_TRANSACTION: return "transaction";
    case SY_KIND_SESSION: return "session";
    case SY_KIND_DDL: return "ddl";
    case SY_KIND_UNKNOWN: return "unknown";
    }
    return "unknown";
}
