/*
 * classify_internal.h - what the classifier's files share.
 *
 * sy_classify() is four pieces, one concern each:
 *   classify_lex.c      the text: a PostgreSQL lexer handing out tokens;
 *   classify_hints.c    the routing hints carried by comments;
 *   classify.c          statements: kinds and flags, fed token by token;
 *   classify_schemas.c  names: the schemas a statement touches and the
 *                       functions it calls.
 * The statement state is declared here because classify.c changes it
 * token by token and classify_schemas.c reads it whenever a name is
 * complete; so is the name collector, inline, because it runs for every
 * token in classify.c's loop.  Nothing outside core/classify*.c includes
 * this header.
 */
#ifndef SY_CLASSIFY_INTERNAL_H
#define SY_CLASSIFY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "switchyard.h"

/* Only the words the state machine looks at; every other word is KW_NONE,
 * which is what lets arbitrary identifiers act as aliases in a FROM list. */
enum keyword_id {
    KW_NONE = 0,
    KW_ABORT, KW_ADD, KW_AGGREGATE, KW_ALTER, KW_ANALYSE, KW_ANALYZE, KW_AND,
    KW_AS, KW_ATOMIC, KW_AUTHORIZATION, KW_BEGIN, KW_BY, KW_CALL, KW_CASCADE,
    KW_CASE, KW_CHAIN, KW_CHARACTERISTICS, KW_CHECKPOINT, KW_CLOSE,
    KW_CLUSTER, KW_COLLATION, KW_COLUMN, KW_COMMENT, KW_COMMIT,
    KW_CONCURRENTLY, KW_CONSTRAINTS, KW_COPY, KW_CREATE, KW_DEALLOCATE,
    KW_DECLARE, KW_DEFAULT, KW_DELETE, KW_DISCARD, KW_DISTINCT, KW_DO,
    KW_DOMAIN, KW_DROP, KW_END, KW_EXCEPT, KW_EXECUTE, KW_EXISTS, KW_EXPLAIN,
    KW_EXTRACT, KW_FALSE, KW_FETCH, KW_FOR, KW_FROM, KW_FUNCTION, KW_GLOBAL,
    KW_GRANT, KW_GROUP, KW_HAVING, KW_IF, KW_IMPORT, KW_IN, KW_INDEX,
    KW_INSERT, KW_INTERSECT, KW_INTO, KW_IS, KW_JOIN, KW_KEY, KW_LATERAL,
    KW_LIMIT, KW_LISTEN, KW_LOAD, KW_LOCAL, KW_LOCK, KW_MATERIALIZED,
    KW_MERGE, KW_MOVE, KW_NO, KW_NOT, KW_NOTIFY, KW_OF, KW_OFF, KW_OFFSET,
    KW_ON, KW_ONLY, KW_OR, KW_ORDER, KW_OVERLAY, KW_OWNER, KW_POSITION,
    KW_PREPARE, KW_PREPARED, KW_PROCEDURE, KW_READ, KW_REASSIGN,
    KW_RECURSIVE, KW_REFERENCES, KW_REFRESH, KW_REINDEX, KW_RELEASE,
    KW_RENAME, KW_REPLACE, KW_RESET, KW_RESTRICT, KW_RETURNING, KW_RETURNS,
    KW_REVOKE, KW_ROLLBACK, KW_ROUTINE, KW_SAVEPOINT, KW_SCHEMA,
    KW_SECURITY, KW_SELECT, KW_SEQUENCE, KW_SESSION, KW_SET, KW_SHARE,
    KW_SHOW, KW_START, KW_STATISTICS, KW_SUBSTRING, KW_TABLE, KW_TEMP,
    KW_TEMPORARY, KW_THEN, KW_TO, KW_TRANSACTION, KW_TRIM, KW_TRUNCATE,
    KW_TYPE, KW_UNION, KW_UNLISTEN, KW_UNLOGGED, KW_UPDATE, KW_USING,
    KW_VACUUM, KW_VALUES, KW_VERBOSE, KW_VIEW, KW_WHEN, KW_WHERE, KW_WINDOW,
    KW_WITH, KW_WRITE,
    KW__COUNT
};

/* T_EOF and T_SEMI come first: one comparison tells the classifier's loop
 * that a token cannot end a statement. */
enum token_type {
    T_EOF, T_SEMI, T_WORD, T_QIDENT, T_STRING, T_NUMBER, T_PARAM,
    T_LPAREN, T_RPAREN, T_COMMA, T_DOT, T_OTHER
};

/* off/len: the word; a quoted identifier's or a literal's contents.
 * kw is KW_NONE for everything but a word, so kw tests alone suffice.
 * comments: where the first comment between the previous token and this
 * one starts, or SY__NO_COMMENTS (only blanks, or nothing, between). */
typedef struct token {
    uint8_t type;
    uint8_t kw;
    size_t off;
    size_t len;
    size_t comments;
} token;

#define SY__NO_COMMENTS SIZE_MAX

/* ------------------------------------------------------------ lexer */

/* Where the lexer is in one SQL string. */
typedef struct sy__lexer {
    const char *sql;
    size_t len;
    size_t pos;
    /* Read '..' and N'..' as with standard_conforming_strings = off:
     * a backslash escapes the next byte, so '\'' does not end there. */
    bool backslash_escapes;
    /* Set when a '..' or N'..' literal held a backslash: only then can the
     * two settings read the text differently. */
    bool saw_backslash;
} sy__lexer;

/* How many tokens one sy__lex() call reads: most statements fit in one
 * call, so the lexer runs as one tight loop over the text. */
#define SY__LEX_BATCH 32

/* Reads the next tokens into toks[0..max) and returns how many it read
 * (at least one).  The last one is T_EOF when the input is used up; the
 * lexer is not called again after that.  The lexer knows nothing about
 * statements, so reading a statement's hints is the caller's decision
 * (see sy__read_comments). */
size_t sy__lex(sy__lexer *lx, token *toks, size_t max);

/* Reads the hints of every closed comment in sql[from..to), a stretch of
 * blanks and comments such as [t->comments, t->off), into out. */
void sy__read_comments(const char *sql, size_t len, size_t from, size_t to,
                       sy_statement *out);

/* classify_hints.c: reads the body of one closed comment,
 * sql[off..off+len), into out's hints, all or nothing. */
void sy__read_hint_comment(const char *sql, size_t off, size_t len,
                           sy_statement *out);

static inline unsigned char sy__ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* memset(p, 0, n) for the classifier's few-hundred-byte structs.  GCC
 * turns one such memset into "rep stosq", whose start-up alone costs
 * 15-20 ns on AMD EPYC: more than the rest of classifying a short SELECT.
 * 64-byte pieces compile to plain vector stores (clang calls memset, whose
 * small sizes are vector stores too). */
static inline void sy__zero(void *p, size_t n)
{
    unsigned char *b = p;
    for (; n >= 64; b += 64, n -= 64)
        memset(b, 0, 64);
    memset(b, 0, n);
}

/* ------------------------------------------------------------ statements */

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

enum name_state {
    NAME_NONE, /* no name in progress */
    NAME_OPEN, /* its last token was a part */
    NAME_DOT   /* its last token was the dot: a part must follow */
};

/* A dotted name being read: a.b."c" */
typedef struct name_collector {
    uint8_t state; /* enum name_state */
    uint8_t ctx;
    bool noise;    /* starts with a noise word: alone, it is no name */
    size_t nparts; /* may exceed MAX_NAME_PARTS; such names are ignored */
    size_t depth;
    name_part part[MAX_NAME_PARTS];
} name_collector;

enum awaiting {
    AWAIT_NONE,  /* inside a command */
    AWAIT_HEAD,  /* no command keyword seen yet */
    AWAIT_INNER  /* the next word starts a nested command */
};

/* Everything about the statement being read; reset at each ';'. */
typedef struct statement_state {
    size_t depth; /* parenthesis depth */
    sy_kind kind;
    uint32_t flags;

    /* The command being read: the statement's own, or the one nested in
     * EXPLAIN, PREPARE, DECLARE, WITH, CREATE TEMP TABLE AS. */
    uint8_t cmd;
    size_t cmd_depth;
    size_t cmd_ntok; /* tokens since the command's keyword */
    uint8_t awaiting; /* a command keyword to come: enum awaiting */
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

    /* The last tokens, 16 bits each, newest in the low bits: type << 8 |
     * kw (kw is KW_NONE for a word that continued a dotted name).  One
     * shift records a token; see prev_type() and prev_kw().  Zero until
     * the statement's first token. */
    uint64_t recent;

    /* names (collected by classify.c, read by classify_schemas.c) */
    uint8_t armed;        /* context of the next name, if one starts now */
    uint8_t list_ctx;     /* a comma at list_depth arms list_ctx again */
    bool list_active;
    size_t list_depth;
    uint64_t no_from_parens; /* bit d: depth d is EXTRACT(... FROM ...) */
    name_collector name;  /* last, its parts last: see reset_statement() */
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

/* The type and keyword of the token i places back (0: the last one). */
static inline uint8_t prev_type(const statement_state *st, unsigned i)
{
    return (uint8_t)(st->recent >> (16 * i + 8));
}

static inline uint8_t prev_kw(const statement_state *st, unsigned i)
{
    return (uint8_t)(st->recent >> (16 * i));
}

/* The order multi-statement strings (and escalations) resolve by:
 * read < transaction < unknown < session < write < ddl. */
static inline sy_kind sy__stronger(sy_kind a, sy_kind b)
{
    /* indexed by sy_kind: UNKNOWN READ WRITE TRANSACTION SESSION DDL */
    static const uint8_t strength[] = {2, 0, 4, 1, 3, 5};
    unsigned ia = (unsigned)a < 6 ? strength[a] : 2;
    unsigned ib = (unsigned)b < 6 ? strength[b] : 2;
    return ib > ia ? b : a;
}

/* Only what runs now may raise the kind or set query flags: the statement
 * under a plain EXPLAIN, or a PREPAREd body, does not run here. */
static inline void sy__escalate(statement_state *st, sy_kind kind)
{
    if (st->live_kind)
        st->kind = sy__stronger(st->kind, kind);
}

static inline void sy__mark(statement_state *st, uint32_t flag)
{
    if (st->live_flags)
        st->flags |= flag;
}

/* ------------------------------------------------------------ names */

/* classify_schemas.c says what names mean: it receives, once a name is
 * complete, each one that can say something (call: "(" follows it). */
void sy__conclude_name(classifier *cx, bool call);

/* Zero for the keywords that do not matter to names (SELECT, WHERE, AND
 * ...): only the others need the two calls below. */
extern const uint8_t sy__name_role[KW__COUNT];

/* The context a keyword gives the name after it (CTX_NONE: none): FROM t,
 * INTO t, SCHEMA s ... */
uint8_t sy__relation_trigger(const statement_state *st, uint8_t kw,
                             size_t depth);

/* Is kw a word that may sit between a relation keyword and its name
 * (FROM ONLY t, DROP TABLE IF EXISTS t), given the armed context? */
bool sy__is_noise(uint8_t kw, uint8_t armed);

/* Does sql[off..off+len) spell the lower-case word w (w_len bytes)?  An
 * unquoted span folds to lower case first, a quoted one must match. */
bool sy__span_is(const char *sql, size_t off, size_t len, bool quoted,
                 const char *w, size_t w_len);

/* Collecting the names, below, runs for every token of every statement
 * (each word starts a name, any token may end one), so it is inline here,
 * in classify.c's token loop, and stores only what changes. */

/* The name in progress is complete; call says "(" follows it. */
static inline void sy__finish_name(classifier *cx, bool call)
{
    name_collector *nm = &cx->st.name;
    if (nm->state == NAME_NONE)
        return;
    call = call && nm->state == NAME_OPEN;
    nm->state = NAME_NONE;
    /* Most names are one word in an expression, not called: a column, an
     * alias, a keyword.  Such a name says nothing. */
    if (nm->nparts == 1 && nm->ctx == CTX_NONE && !call)
        return;
    sy__conclude_name(cx, call);
}

static inline void sy__name_part(name_part *p, const token *t)
{
    p->off = t->off;
    p->len = t->len;
    p->quoted = t->type == T_QIDENT;
}

static inline void sy__start_name(statement_state *st, const token *t,
                                  uint8_t ctx, size_t depth, bool noise)
{
    name_collector *nm = &st->name;
    nm->state = NAME_OPEN;
    nm->ctx = ctx;
    nm->noise = noise;
    nm->nparts = 1;
    nm->depth = depth;
    sy__name_part(&nm->part[0], t);
}

/* Returns true when t only continued a dotted name (a keyword after a dot
 * is just a name: s.table), so the statement must not read it as a
 * keyword. */
static inline bool sy__track_names(classifier *cx, const token *t,
                                   size_t depth)
{
    statement_state *st = &cx->st;
    name_collector *nm = &st->name;
    uint8_t armed = st->armed;

    if (t->type == T_WORD || t->type == T_QIDENT) {
        if (nm->state == NAME_DOT) {
            if (nm->nparts < MAX_NAME_PARTS)
                sy__name_part(&nm->part[nm->nparts], t);
            nm->nparts++;
            nm->state = NAME_OPEN;
            st->armed = CTX_NONE; /* a dotted name took the position */
            return true;
        }
        /* This word completes the name before it (not a call); the new
         * name replaces its state. */
        if (nm->state == NAME_OPEN &&
            !(nm->nparts == 1 && nm->ctx == CTX_NONE))
            sy__conclude_name(cx, false);
        uint8_t kw = t->kw; /* KW_NONE for a quoted name */
        uint8_t trigger = CTX_NONE;
        bool noise = false;
        if (sy__name_role[kw] != 0) {
            trigger = st->record_schemas ? sy__relation_trigger(st, kw, depth)
                                         : CTX_NONE;
            noise = sy__is_noise(kw, armed);
        }
        /* Every name takes the armed context, keywords too: in FROM
         * global.config or FROM statistics.daily the keyword is a schema.
         * Only a plain word uses the arm up; a noise word (ONLY, IF EXISTS)
         * passes it on and a trigger word replaces it. */
        uint8_t ctx = armed;
        if (ctx == CTX_NONE && st->relations_everywhere &&
            depth == st->cmd_depth && st->record_schemas)
            ctx = CTX_REL_DEF;
        if (trigger == CTX_NONE && !noise) {
            if (armed != CTX_NONE)
                st->armed = CTX_NONE;
            /* A clause keyword ends a FROM list; an alias does not. */
            if (st->list_active && depth == st->list_depth &&
                kw != KW_NONE && kw != KW_AS)
                st->list_active = false;
        }
        sy__start_name(st, t, ctx, depth, noise);
        if (trigger != CTX_NONE)
            st->armed = trigger;
        return false;
    }
    if (t->type == T_DOT) {
        if (nm->state == NAME_OPEN)
            nm->state = NAME_DOT;
        else
            sy__finish_name(cx, false);
        return false;
    }
    sy__finish_name(cx, t->type == T_LPAREN);
    if (t->type == T_COMMA) {
        st->armed = (st->list_active && depth == st->list_depth)
                        ? st->list_ctx : CTX_NONE;
    } else {
        if (armed != CTX_NONE)
            st->armed = CTX_NONE;
        if (st->list_active && depth == st->list_depth &&
            t->type != T_LPAREN && t->type != T_RPAREN)
            st->list_active = false;
    }
    return false;
}

#endif /* SY_CLASSIFY_INTERNAL_H */
