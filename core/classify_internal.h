/*
 * classify_internal.h - what core/classify.c and core/classify_hints.c share.
 *
 * The classifier is two halves: classify_hints.c reads the text (the
 * PostgreSQL lexer, comments and the routing hints they carry) and hands
 * classify.c a stream of tokens; classify.c understands statements (kinds,
 * flags, schemas).  Nothing outside core/classify*.c includes this header.
 */
#ifndef SY_CLASSIFY_INTERNAL_H
#define SY_CLASSIFY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
    KW_WITH, KW_WRITE
};

enum token_type {
    T_EOF, T_WORD, T_QIDENT, T_STRING, T_NUMBER, T_PARAM,
    T_LPAREN, T_RPAREN, T_COMMA, T_SEMI, T_DOT, T_OTHER
};

/* off/len: the word; a quoted identifier's or a literal's contents.
 * kw is KW_NONE for everything but a word, so kw tests alone suffice. */
typedef struct token {
    uint8_t type;
    uint8_t kw;
    size_t off;
    size_t len;
} token;

/* Where the lexer is in one SQL string; hints are written to out. */
typedef struct sy__lexer {
    const char *sql;
    size_t len;
    size_t pos;
    sy_statement *out;
    /* Read '..' and N'..' as with standard_conforming_strings = off:
     * a backslash escapes the next byte, so '\'' does not end there. */
    bool backslash_escapes;
    /* Set when a '..' or N'..' literal held a backslash: only then can the
     * two settings read the text differently. */
    bool saw_backslash;
} sy__lexer;

/* Reads the next token into *t (T_EOF at the end of the input), skipping
 * blanks and comments.  Comments that may carry hints are read into
 * lx->out: those before a statement's first token (at_statement_start) and
 * those the statement ends right after: at the end of the input, or before
 * a ';' when semicolon_ends (the caller knows whether a ';' here would end
 * the statement: not inside parentheses or a BEGIN ATOMIC body). */
void sy__next_token(sy__lexer *lx, token *t, bool at_statement_start,
                    bool semicolon_ends);

static inline unsigned char sy__ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

#endif /* SY_CLASSIFY_INTERNAL_H */
