/*
 * classify_schemas.c - the names in a statement: which schemas it
 * touches and which functions it calls.
 *
 * classify.c feeds every token through sy__track_names() (inline in
 * classify_internal.h), which collects dotted names (a.b."c") and, from
 * the keyword before a name (sy__name_role below), tells what the name is:
 * a relation, a schema, a column, or part of an expression.  Each complete
 * name that can say something comes here.  Routing by schema needs the
 * relations; a write on a replica hides behind the calls (nextval,
 * pg_advisory_lock, a caller's own functions), so both come from the same
 * reading of names.
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
 *
 * Function calls: name( where the name is in an expression or a FROM
 * list (a table function), never a relation being defined: "INSERT INTO
 * nextval (a)" names a table.  A write function matches under any schema
 * (myschema.nextval() too), so a replica never receives one.
 */
#include "classify_internal.h"

#include <string.h>

/* ------------------------------------------------------------ functions */

enum function_class { FN_NONE, FN_WRITE, FN_ADVISORY, FN_SESSION };

struct builtin_function {
    const char *name;
    uint8_t len;
    uint8_t cls;
};

/* One list, expanded twice: into the table, and into a mask of the
 * lengths it holds, which turns most calls (count, now, coalesce) away
 * before any name is compared. */
#define BUILTIN_FUNCTIONS(X)                                                \
    X("nextval", FN_WRITE)                                                  \
    X("setval", FN_WRITE)                                                   \
    X("pg_notify", FN_WRITE)                                                \
    X("txid_current", FN_WRITE)                                             \
    X("pg_current_xact_id", FN_WRITE)                                       \
    X("pg_advisory_xact_lock", FN_WRITE)                                    \
    X("pg_advisory_xact_lock_shared", FN_WRITE)                             \
    X("pg_try_advisory_xact_lock", FN_WRITE)                                \
    X("pg_try_advisory_xact_lock_shared", FN_WRITE)                         \
    X("lo_create", FN_WRITE)                                                \
    X("lo_creat", FN_WRITE)                                                 \
    X("lo_import", FN_WRITE)                                                \
    X("lo_unlink", FN_WRITE)                                                \
    X("lo_from_bytea", FN_WRITE)                                            \
    X("lo_put", FN_WRITE)                                                   \
    X("pg_switch_wal", FN_WRITE)                                            \
    X("pg_create_restore_point", FN_WRITE)                                  \
    X("pg_advisory_lock", FN_ADVISORY)                                      \
    X("pg_advisory_lock_shared", FN_ADVISORY)                               \
    X("pg_try_advisory_lock", FN_ADVISORY)                                  \
    X("pg_try_advisory_lock_shared", FN_ADVISORY)                           \
    X("pg_advisory_unlock", FN_ADVISORY)                                    \
    X("pg_advisory_unlock_shared", FN_ADVISORY)                             \
    X("pg_advisory_unlock_all", FN_ADVISORY)                                \
    X("set_config", FN_SESSION)

#define FN_ENTRY(name, cls) {name, sizeof(name) - 1, cls},
#define FN_LENGTH_BIT(name, cls) | (uint64_t)1 << (sizeof(name) - 1)

static const struct builtin_function builtin_functions[] = {
    BUILTIN_FUNCTIONS(FN_ENTRY)
};
static const uint64_t builtin_lengths = 0 BUILTIN_FUNCTIONS(FN_LENGTH_BIT);

bool sy__span_is(const char *sql, size_t off, size_t len, bool quoted,
                 const char *w, size_t w_len)
{
    if (len != w_len)
        return false;
    const char *s = sql + off;
    for (size_t i = 0; i < w_len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((quoted ? c : sy__ascii_lower(c)) != (unsigned char)w[i])
            return false;
    }
    return true;
}

static bool part_is(const classifier *cx, const name_part *p,
                    const char *entry, size_t entry_len)
{
    return sy__span_is(cx->sql, p->off, p->len, p->quoted, entry, entry_len);
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

    if (fn->len < 64 && (builtin_lengths >> fn->len & 1u)) {
        for (size_t i = 0;
             i < sizeof builtin_functions / sizeof builtin_functions[0];
             i++) {
            const struct builtin_function *b = &builtin_functions[i];
            if (b->len == fn->len && part_is(cx, fn, b->name, b->len)) {
                cls = b->cls;
                break;
            }
        }
    }
    if (cls == FN_NONE && listed_by_caller(cx, fn, qualifier))
        cls = FN_WRITE;

    switch (cls) {
    case FN_WRITE:
        sy__escalate(st, SY_KIND_WRITE);
        sy__mark(st, SY_STMT_WRITE_FUNCTION);
        break;
    case FN_ADVISORY:
        sy__escalate(st, SY_KIND_SESSION);
        sy__mark(st, SY_STMT_ADVISORY_LOCK);
        break;
    case FN_SESSION:
        sy__escalate(st, SY_KIND_SESSION);
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------ schemas */

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

/* ------------------------------------------------------------ names */

void sy__conclude_name(classifier *cx, bool call)
{
    statement_state *st = &cx->st;
    const name_collector *nm = &st->name;
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

/* What a keyword does to the name after it.  This table is the one place
 * that says which words introduce relations. */
enum name_role {
    ROLE_NONE,         /* the keyword does not matter to names */
    ROLE_FROM,         /* FROM t, unless it is an expression's FROM */
    ROLE_REL_FROM,     /* JOIN t, USING t: a relation or a table function */
    ROLE_REL_DEF,      /* INTO t, UPDATE t, INDEX i, FUNCTION f ... */
    ROLE_DDL_REL,      /* ON t, OF t in DDL; in a query ON a.id = b.id joins */
    ROLE_DDL_COLUMN,   /* COMMENT ON COLUMN s.t.c */
    ROLE_SCHEMA,       /* SCHEMA s */
    ROLE_NOISE,        /* between a relation keyword and its name: ONLY t */
    ROLE_SCHEMA_NOISE  /* noise after SCHEMA too: IF [NOT] EXISTS */
};

const uint8_t sy__name_role[KW__COUNT] = {
    [KW_FROM] = ROLE_FROM,
    [KW_JOIN] = ROLE_REL_FROM, [KW_USING] = ROLE_REL_FROM,
    [KW_INTO] = ROLE_REL_DEF, [KW_UPDATE] = ROLE_REL_DEF,
    [KW_TABLE] = ROLE_REL_DEF, [KW_TRUNCATE] = ROLE_REL_DEF,
    [KW_COPY] = ROLE_REL_DEF, [KW_LOCK] = ROLE_REL_DEF,
    [KW_REFERENCES] = ROLE_REL_DEF, [KW_VIEW] = ROLE_REL_DEF,
    [KW_INDEX] = ROLE_REL_DEF, [KW_SEQUENCE] = ROLE_REL_DEF,
    [KW_FUNCTION] = ROLE_REL_DEF, [KW_PROCEDURE] = ROLE_REL_DEF,
    [KW_ROUTINE] = ROLE_REL_DEF, [KW_TYPE] = ROLE_REL_DEF,
    [KW_DOMAIN] = ROLE_REL_DEF, [KW_AGGREGATE] = ROLE_REL_DEF,
    [KW_COLLATION] = ROLE_REL_DEF, [KW_STATISTICS] = ROLE_REL_DEF,
    [KW_ON] = ROLE_DDL_REL, [KW_OF] = ROLE_DDL_REL,
    [KW_COLUMN] = ROLE_DDL_COLUMN,
    [KW_SCHEMA] = ROLE_SCHEMA,
    [KW_ONLY] = ROLE_NOISE, [KW_LATERAL] = ROLE_NOISE,
    [KW_CONCURRENTLY] = ROLE_NOISE, [KW_TEMP] = ROLE_NOISE,
    [KW_TEMPORARY] = ROLE_NOISE, [KW_UNLOGGED] = ROLE_NOISE,
    [KW_MATERIALIZED] = ROLE_NOISE, [KW_GLOBAL] = ROLE_NOISE,
    [KW_LOCAL] = ROLE_NOISE,
    [KW_IF] = ROLE_SCHEMA_NOISE, [KW_NOT] = ROLE_SCHEMA_NOISE,
    [KW_EXISTS] = ROLE_SCHEMA_NOISE, [KW_AUTHORIZATION] = ROLE_SCHEMA_NOISE,
};

uint8_t sy__relation_trigger(const statement_state *st, uint8_t kw,
                             size_t depth)
{
    switch (sy__name_role[kw]) {
    case ROLE_FROM:
        /* IS DISTINCT FROM x.y and EXTRACT(day FROM t.col) are expressions. */
        if (prev_kw(st, 0) == KW_DISTINCT)
            return CTX_NONE;
        if (depth < 64 && ((st->no_from_parens >> depth) & 1u))
            return CTX_NONE;
        return CTX_REL_FROM;
    case ROLE_REL_FROM:
        return CTX_REL_FROM;
    case ROLE_REL_DEF:
        return CTX_REL_DEF;
    case ROLE_DDL_REL:
        return st->ddl ? CTX_REL_DEF : CTX_NONE;
    case ROLE_DDL_COLUMN:
        return st->ddl ? CTX_COLUMN : CTX_NONE;
    case ROLE_SCHEMA:
        return CTX_SCHEMA;
    default:
        return CTX_NONE;
    }
}

/* After SCHEMA only IF [NOT] EXISTS and AUTHORIZATION are noise: CREATE
 * SCHEMA global. */
bool sy__is_noise(uint8_t kw, uint8_t armed)
{
    uint8_t role = sy__name_role[kw];
    return role == ROLE_SCHEMA_NOISE ||
           (role == ROLE_NOISE && armed != CTX_SCHEMA);
}
