/*
 * classify.c - what kind of statement is this SQL, without parsing it.
 *
 * The router calls sy_classify() for every query, so it must be cheap: one
 * pass over the bytes (two when a '..' literal holds a backslash, see
 * below) with a PostgreSQL-faithful lexer (classify_lex.c) and a small
 * per-statement state machine fed token by token.  Nothing is
 * allocated and no state outlives the call.  libpg_query gives a real parse
 * tree at 10-50 us a statement; this gives the routing facts in about
 * 0.1 us for a short SELECT, and errs towards "needs the primary" when the
 * text is ambiguous.
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
 * Schemas and function calls are read from the statement's names by
 * classify_schemas.c, which documents what is and is not reported.
 */
#include "classify_internal.h"

#include <stddef.h>
#include <string.h>

/* ------------------------------------------------------------ kinds */

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

/* ------------------------------------------------------------ commands */

static void begin_command(classifier *cx, const token *t, size_t depth,
                          bool top)
{
    statement_state *st = &cx->st;
    uint8_t kw = t->kw;
    sy_kind base = command_kind(kw);

    st->cmd = kw;
    st->cmd_depth = depth;
    /* feed()'s ++ for this very token wraps it to 0: the command's own
     * keyword does not count. */
    st->cmd_ntok = SIZE_MAX;
    if (top) {
        st->kind = base;
        st->live_kind = st->live_flags = command_runs_query(kw);
    } else {
        sy__escalate(st, base);
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
    st->awaiting = AWAIT_INNER;
    st->inner_live = live_kind;
    st->inner_live_flags = live_flags;
}

static bool token_is_false(const classifier *cx, const token *t)
{
    static const char *const falsy[] = {"false", "off", "no", "0"};
    if (t->type != T_WORD && t->type != T_STRING && t->type != T_NUMBER)
        return false;
    for (size_t i = 0; i < sizeof falsy / sizeof falsy[0]; i++)
        if (sy__span_is(cx->sql, t->off, t->len, false, falsy[i],
                        strlen(falsy[i])))
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
            if (t->type == T_WORD && (prev_type(st, 0) == T_LPAREN ||
                                      prev_type(st, 0) == T_COMMA)) {
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
            sy__escalate(st, SY_KIND_SESSION);
            sy__mark(st, SY_STMT_TEMP_TABLE);
        } else {
            sy__escalate(st, SY_KIND_WRITE);
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
    if (is_dml(t->kw) && prev_type(st, 0) == T_LPAREN &&
        prev_kw(st, 1) == KW_COPY)
        sy__escalate(st, SY_KIND_WRITE);
    if (!st->copy_decided && depth == st->cmd_depth) {
        if (t->kw == KW_FROM) {
            st->copy_decided = true;
            sy__escalate(st, SY_KIND_WRITE);
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
    else if (t->kw == KW_CHAIN && prev_kw(st, 0) == KW_AND)
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

/* READ ONLY / READ WRITE in BEGIN, START TRANSACTION, SET TRANSACTION and
 * SET SESSION CHARACTERISTICS: the last one wins. */
static void read_only_token(statement_state *st, const token *t)
{
    if (st->tracks_read_only && prev_kw(st, 0) == KW_READ) {
        if (t->kw == KW_ONLY)
            st->read_only = true;
        else if (t->kw == KW_WRITE)
            st->read_only = false;
    }
}

static void command_token(classifier *cx, const token *t, size_t depth)
{
    statement_state *st = &cx->st;
    /* Only BEGIN, START and SET track READ ONLY, and nothing inside them
     * begins another command, so their cases alone look at it. */
    switch (st->cmd) {
    case KW_SELECT: select_token(cx, t, depth); break;
    case KW_WITH: with_token(cx, t, depth); break;
    case KW_COPY: copy_token(cx, t, depth); break;
    case KW_EXPLAIN: explain_token(cx, t, depth); break;
    case KW_CREATE: create_token(cx, t, depth); break;
    case KW_PREPARE: prepare_token(cx, t, depth); break;
    case KW_BEGIN: case KW_START:
        read_only_token(st, t);
        break;
    case KW_SET:
        read_only_token(st, t);
        set_token(cx, t);
        break;
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

/* Checks that hold in any statement whose text runs now; t is a keyword. */
static void query_token(classifier *cx, const token *t)
{
    statement_state *st = &cx->st;
    if (!(st->live_kind || st->live_flags))
        return;
    if (t->kw == KW_UPDATE || t->kw == KW_SHARE) {
        /* FOR UPDATE | FOR SHARE | FOR KEY SHARE | FOR NO KEY UPDATE */
        if (prev_kw(st, 0) == KW_FOR ||
            (prev_kw(st, 0) == KW_KEY &&
             (prev_kw(st, 1) == KW_FOR ||
              (prev_kw(st, 1) == KW_NO && prev_kw(st, 2) == KW_FOR)))) {
            sy__escalate(st, SY_KIND_WRITE);
            sy__mark(st, SY_STMT_LOCKING_READ);
        }
    }
    if (is_dml(t->kw) && prev_type(st, 0) == T_LPAREN &&
        (prev_kw(st, 1) == KW_AS || prev_kw(st, 1) == KW_MATERIALIZED)) {
        sy__escalate(st, SY_KIND_WRITE);
        sy__mark(st, SY_STMT_WRITABLE_CTE);
    }
}

/* ------------------------------------------------------------ statements */

/* Has the statement a token yet?  Every token fed leaves its type, never
 * 0 (T_EOF), in st->recent, which only a reset clears. */
static bool statement_started(const statement_state *st)
{
    return st->recent != 0;
}

static void reset_statement(statement_state *st)
{
    /* A name's parts are written before they are read: clearing the rest
     * is enough, and a third cheaper. */
    sy__zero(st, offsetof(statement_state, name) +
                     offsetof(name_collector, part));
    st->awaiting = AWAIT_HEAD;
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
            uint8_t fn = prev_kw(st, 0);
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

    if (sy__track_names(cx, t, depth)) {
        /* s.update is a name, not the keyword */
        st->recent = st->recent << 16 | (uint64_t)t->type << 8;
        st->cmd_ntok++;
        return;
    }

    if (st->awaiting == AWAIT_NONE) {
        command_token(cx, t, depth);
    } else if (st->awaiting == AWAIT_HEAD) {
        if (t->type == T_WORD) {
            st->awaiting = AWAIT_NONE;
            if (cx->nstatements == 0 && t->off + t->len <= UINT32_MAX) {
                cx->out->first_word.off = (uint32_t)t->off;
                cx->out->first_word.len = (uint32_t)t->len;
            }
            begin_command(cx, t, depth, true);
        } else if (t->type != T_LPAREN) {
            /* Not a command we know how to start: unknown, and live. */
            st->awaiting = AWAIT_NONE;
            st->kind = SY_KIND_UNKNOWN;
            st->live_kind = st->live_flags = true;
        }
    } else if (t->type != T_LPAREN) { /* AWAIT_INNER */
        st->awaiting = AWAIT_NONE;
        if (t->type == T_WORD) {
            st->live_kind = st->inner_live;
            st->live_flags = st->inner_live_flags;
            begin_command(cx, t, depth, false);
        }
    }

    /* What follows acts on keywords only; most tokens are not. */
    if (t->kw != KW_NONE) {
        query_token(cx, t);
        if (st->atomic_depth > 0) {
            if (t->kw == KW_CASE)
                st->atomic_depth++;
            else if (t->kw == KW_END)
                st->atomic_depth--;
        } else if (st->ddl && t->kw == KW_ATOMIC &&
                   prev_kw(st, 0) == KW_BEGIN) {
            /* CREATE FUNCTION ... BEGIN ATOMIC ...; ...; END: its ';' do
             * not end the statement. */
            st->atomic_depth = 1;
        }
    }

    st->recent = st->recent << 16 | (uint64_t)t->type << 8 | t->kw;
    st->cmd_ntok++;
}

/* The statement ends here; more says whether another may follow (at the
 * end of the input, the state is not needed again). */
static void end_statement(classifier *cx, bool more)
{
    statement_state *st = &cx->st;
    sy__finish_name(cx, false);
    if (statement_started(st)) {
        if (st->into_pending)
            sy__escalate(st, SY_KIND_WRITE);
        if (st->cmd == KW_COPY && !st->copy_decided)
            sy__escalate(st, SY_KIND_WRITE);
        if (st->tx_end)
            st->flags |= SY_STMT_TX_END;
        if (st->tx_chain)
            st->flags |= SY_STMT_TX_BEGIN;
        if (st->read_only)
            st->flags |= SY_STMT_READ_ONLY_TX;
        else if (st->flags & SY_STMT_TX_BEGIN)
            cx->read_write_begin = true;

        cx->kind = cx->nstatements == 0 ? st->kind
                                        : sy__stronger(cx->kind, st->kind);
        cx->flags |= st->flags;
        cx->nstatements++;
    }
    if (more)
        reset_statement(st);
}

/* One reading of the whole string; *saw_backslash tells whether a '..'
 * literal held a backslash (the other reading could differ). */
static void classify_once(const char *sql, size_t len,
                          const char *const *write_functions,
                          bool backslash_escapes, sy_statement *out,
                          bool *saw_backslash)
{
    sy__zero(out, sizeof *out);

    classifier cx;
    cx.lex.sql = sql;
    cx.lex.len = len;
    cx.lex.pos = 0;
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

    token toks[SY__LEX_BATCH];
    const token *t = toks, *batch_end = toks;
    for (;; t++) {
        if (t == batch_end) {
            batch_end = toks + sy__lex(&cx.lex, toks, SY__LEX_BATCH);
            t = toks;
        }
        /* The usual token can neither end a statement nor follow a
         * comment: one test lets it through. */
        if (t->type <= T_SEMI || t->comments != SY__NO_COMMENTS) {
            /* A ';' ends the statement outside parentheses and BEGIN
             * ATOMIC. */
            bool ends = t->type == T_EOF ||
                        (t->type == T_SEMI && cx.st.depth == 0 &&
                         cx.st.atomic_depth == 0);
            /* Hints sit before a statement's first token or right before
             * its end; comments inside a statement are not read. */
            if (t->comments != SY__NO_COMMENTS &&
                (!statement_started(&cx.st) || ends))
                sy__read_comments(sql, len, t->comments, t->off, out);
            if (ends) {
                end_statement(&cx, t->type != T_EOF);
                if (t->type == T_EOF)
                    break;
                continue;
            }
        }
        feed(&cx, t);
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
        out->kind = sy__stronger(out->kind, other.kind);
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