/*
 * classify_hints.c - the classifier's reading of the text: a PostgreSQL
 * lexer, and the routing hints carried by comments.
 *
 * The lexer follows PostgreSQL's rules (scan.l) for what can hide a
 * keyword or a ';': -- line comments; nested block comments; '..' with ''
 * (with standard_conforming_strings on, the default, a backslash is an
 * ordinary byte; sy__lexer.backslash_escapes reads them the "off" way);
 * E'..' with backslash escapes; B'..', X'..', N'..', U&'..'; $$..$$ and
 * $tag$..$tag$ (a tag is an identifier without '$'; '$' inside an
 * identifier is part of it, $1 is a parameter); ".." and U&".." quoted
 * identifiers with "".  An unterminated literal, identifier or comment
 * runs to the end of the input.  Only the words classify.c looks at get a
 * keyword id.
 *
 * Hints: classify.c says where a statement starts and whether a ';' would
 * end it; the lexer reads the comments before a statement's first token,
 * and the ones after its last token, in three dialects (spans never
 * include the quotes):
 *
 *   sy           / * sy: route=primary cache='5 min' * /
 *                "sy:" then key=value pairs separated by blanks or commas,
 *                no blanks around '='; a value is bare (up to the next blank
 *                or comma, may be empty) or quoted with ' or " (no escapes:
 *                it ends at the next matching quote).
 *   sqlcommenter / * controller='users',action='index',route='primary' * /
 *                key='value' pairs separated by commas.  Values are
 *                URL-encoded and may contain \' ; the span is kept exactly
 *                as written (the Lua side decodes), only the quotes go.
 *   marginalia   / * application:Shop,controller:users,line:/a.rb:12 * /
 *                key:value pairs separated by commas; a bare value runs to
 *                the next comma (it may hold ':' and blanks; trailing blanks
 *                are trimmed).
 *
 * Line comments (-- sy: route=primary) work too; an unterminated block
 * comment carries nothing.  Keys are [A-Za-z0-9_.%-]+ (sqlcommenter keys
 * are URL-encoded too).  The sqlcommenter and marginalia forms may be
 * mixed in one comment, since a pair's separator ('=' or ':') is read per
 * pair.  A comment that does not parse completely contributes nothing, so
 * "/ * fetch the users * /" is not a hint, while "/ * TODO: tidy * /" does
 * read as key TODO (marginalia has no marker to tell them apart; policies
 * look only at keys they know).  Duplicate keys are kept in order; the
 * consumer decides which one wins.  Pairs beyond SY_MAX_HINTS, or beyond
 * 4 GiB into the text, set SY_STMT_TRUNCATED.
 */
#include "classify_internal.h"

#include <string.h>

/* ------------------------------------------------------------ hints */

static bool is_blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
           c == '\v';
}

static bool is_key_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-' ||
           c == '%';
}

static size_t skip_blanks(const char *s, size_t i, size_t end)
{
    while (i < end && is_blank((unsigned char)s[i]))
        i++;
    return i;
}

/* The key precedes the value, so checking the value's end against the
 * 32-bit span range covers both. */
static void add_pair(sy_statement *out, size_t key_off, size_t key_len,
                     size_t value_off, size_t value_len)
{
    if (out->nhints >= SY_MAX_HINTS || value_off + value_len > UINT32_MAX) {
        out->flags |= SY_STMT_TRUNCATED;
        return;
    }
    int n = out->nhints++;
    out->hint_keys[n].off = (uint32_t)key_off;
    out->hint_keys[n].len = (uint32_t)key_len;
    out->hint_values[n].off = (uint32_t)value_off;
    out->hint_values[n].len = (uint32_t)value_len;
}

/* "sy:" dialect, from just after the marker.  Returns false on anything
 * that is not key=value. */
static bool read_sy_pairs(const char *s, size_t i, size_t end,
                          sy_statement *out)
{
    for (;;) {
        while (i < end && (is_blank((unsigned char)s[i]) || s[i] == ','))
            i++;
        if (i == end)
            return true;
        size_t key = i;
        while (i < end && is_key_char((unsigned char)s[i]))
            i++;
        if (i == key || i == end || s[i] != '=')
            return false;
        size_t key_len = i - key;
        i++;
        size_t value, value_len;
        if (i < end && (s[i] == '\'' || s[i] == '"')) {
            const char *close = memchr(s + i + 1, s[i], end - i - 1);
            if (close == NULL)
                return false;
            value = i + 1;
            value_len = (size_t)(close - (s + value));
            i = (size_t)(close - s) + 1;
            /* 'a'b is a typo, not two things; refuse the comment. */
            if (i < end && !is_blank((unsigned char)s[i]) && s[i] != ',')
                return false;
        } else {
            value = i;
            while (i < end && !is_blank((unsigned char)s[i]) && s[i] != ',')
                i++;
            value_len = i - value;
        }
        add_pair(out, key, key_len, value, value_len);
    }
}

/* sqlcommenter / marginalia: comma-separated key=value or key:value. */
static bool read_comma_pairs(const char *s, size_t i, size_t end,
                             sy_statement *out)
{
    bool any = false;
    for (;;) {
        i = skip_blanks(s, i, end);
        if (i == end)
            return any; /* an empty comment (or a lone trailing comma) */
        size_t key = i;
        while (i < end && is_key_char((unsigned char)s[i]))
            i++;
        size_t key_len = i - key;
        i = skip_blanks(s, i, end);
        if (key_len == 0 || i == end || (s[i] != '=' && s[i] != ':'))
            return false;
        i = skip_blanks(s, i + 1, end);
        size_t value, value_len;
        if (i < end && (s[i] == '\'' || s[i] == '"')) {
            /* sqlcommenter escapes a quote inside a value as \' */
            char quote = s[i];
            size_t j = i + 1;
            while (j < end && s[j] != quote)
                j += s[j] == '\\' ? 2 : 1;
            if (j >= end)
                return false;
            value = i + 1;
            value_len = j - value;
            i = j + 1;
        } else {
            value = i;
            while (i < end && s[i] != ',')
                i++;
            size_t stop = i;
            while (stop > value && is_blank((unsigned char)s[stop - 1]))
                stop--;
            value_len = stop - value;
        }
        add_pair(out, key, key_len, value, value_len);
        any = true;
        i = skip_blanks(s, i, end);
        if (i == end)
            return true;
        if (s[i] != ',')
            return false;
        i++;
    }
}

static void read_hint_comment(const char *sql, size_t off, size_t len,
                              sy_statement *out)
{
    size_t end = off + len;
    size_t i = skip_blanks(sql, off, end);
    int saved_nhints = out->nhints;
    uint32_t saved_truncated = out->flags & SY_STMT_TRUNCATED;
    bool ok;

    if (end - i >= 3 && (sql[i] == 's' || sql[i] == 'S') &&
        (sql[i + 1] == 'y' || sql[i + 1] == 'Y') && sql[i + 2] == ':')
        ok = read_sy_pairs(sql, i + 3, end, out);
    else
        ok = read_comma_pairs(sql, i, end, out);

    if (!ok) {
        /* All or nothing: forget the pairs this comment added. */
        for (int k = saved_nhints; k < out->nhints; k++) {
            out->hint_keys[k].off = out->hint_keys[k].len = 0;
            out->hint_values[k].off = out->hint_values[k].len = 0;
        }
        out->nhints = saved_nhints;
        out->flags = (out->flags & ~(uint32_t)SY_STMT_TRUNCATED) |
                     saved_truncated;
    }
}

/* ------------------------------------------------------------ keywords */

/* The words classify.c looks at.  A word is looked up by its first letter
 * and length, which leaves at most 6 candidates (usually one) to compare;
 * the lookup runs for every word of every statement. */
#define KW_KEY(letter, len) (((letter) - 'a') * 16 + (len))
#define KW_SLOT_WIDTH 6

static const char *const kw_names[] = {
    [KW_ABORT] = "abort", [KW_ADD] = "add", [KW_AGGREGATE] = "aggregate",
    [KW_ALTER] = "alter", [KW_ANALYSE] = "analyse", [KW_ANALYZE] = "analyze",
    [KW_AND] = "and", [KW_AS] = "as", [KW_ATOMIC] = "atomic",
    [KW_AUTHORIZATION] = "authorization", [KW_BEGIN] = "begin", [KW_BY] = "by",
    [KW_CALL] = "call", [KW_CASCADE] = "cascade", [KW_CASE] = "case",
    [KW_CHAIN] = "chain", [KW_CHARACTERISTICS] = "characteristics",
    [KW_CHECKPOINT] = "checkpoint", [KW_CLOSE] = "close",
    [KW_CLUSTER] = "cluster", [KW_COLLATION] = "collation",
    [KW_COLUMN] = "column", [KW_COMMENT] = "comment", [KW_COMMIT] = "commit",
    [KW_CONCURRENTLY] = "concurrently", [KW_CONSTRAINTS] = "constraints",
    [KW_COPY] = "copy", [KW_CREATE] = "create", [KW_DEALLOCATE] = "deallocate",
    [KW_DECLARE] = "declare", [KW_DEFAULT] = "default", [KW_DELETE] = "delete",
    [KW_DISCARD] = "discard", [KW_DISTINCT] = "distinct", [KW_DO] = "do",
    [KW_DOMAIN] = "domain", [KW_DROP] = "drop", [KW_END] = "end",
    [KW_EXCEPT] = "except", [KW_EXECUTE] = "execute", [KW_EXISTS] = "exists",
    [KW_EXPLAIN] = "explain", [KW_EXTRACT] = "extract", [KW_FALSE] = "false",
    [KW_FETCH] = "fetch", [KW_FOR] = "for", [KW_FROM] = "from",
    [KW_FUNCTION] = "function", [KW_GLOBAL] = "global", [KW_GRANT] = "grant",
    [KW_GROUP] = "group", [KW_HAVING] = "having", [KW_IF] = "if",
    [KW_IMPORT] = "import", [KW_IN] = "in", [KW_INDEX] = "index",
    [KW_INSERT] = "insert", [KW_INTERSECT] = "intersect", [KW_INTO] = "into",
    [KW_IS] = "is", [KW_JOIN] = "join", [KW_KEY] = "key",
    [KW_LATERAL] = "lateral", [KW_LIMIT] = "limit", [KW_LISTEN] = "listen",
    [KW_LOAD] = "load", [KW_LOCAL] = "local", [KW_LOCK] = "lock",
    [KW_MATERIALIZED] = "materialized", [KW_MERGE] = "merge",
    [KW_MOVE] = "move", [KW_NO] = "no", [KW_NOT] = "not",
    [KW_NOTIFY] = "notify", [KW_OF] = "of", [KW_OFF] = "off",
    [KW_OFFSET] = "offset", [KW_ON] = "on", [KW_ONLY] = "only", [KW_OR] = "or",
    [KW_ORDER] = "order", [KW_OVERLAY] = "overlay", [KW_OWNER] = "owner",
    [KW_POSITION] = "position", [KW_PREPARE] = "prepare",
    [KW_PREPARED] = "prepared", [KW_PROCEDURE] = "procedure",
    [KW_READ] = "read", [KW_REASSIGN] = "reassign",
    [KW_RECURSIVE] = "recursive", [KW_REFERENCES] = "references",
    [KW_REFRESH] = "refresh", [KW_REINDEX] = "reindex",
    [KW_RELEASE] = "release", [KW_RENAME] = "rename", [KW_REPLACE] = "replace",
    [KW_RESET] = "reset", [KW_RESTRICT] = "restrict",
    [KW_RETURNING] = "returning", [KW_RETURNS] = "returns",
    [KW_REVOKE] = "revoke", [KW_ROLLBACK] = "rollback",
    [KW_ROUTINE] = "routine", [KW_SAVEPOINT] = "savepoint",
    [KW_SCHEMA] = "schema", [KW_SECURITY] = "security", [KW_SELECT] = "select",
    [KW_SEQUENCE] = "sequence", [KW_SESSION] = "session", [KW_SET] = "set",
    [KW_SHARE] = "share", [KW_SHOW] = "show", [KW_START] = "start",
    [KW_STATISTICS] = "statistics", [KW_SUBSTRING] = "substring",
    [KW_TABLE] = "table", [KW_TEMP] = "temp", [KW_TEMPORARY] = "temporary",
    [KW_THEN] = "then", [KW_TO] = "to", [KW_TRANSACTION] = "transaction",
    [KW_TRIM] = "trim", [KW_TRUNCATE] = "truncate", [KW_TYPE] = "type",
    [KW_UNION] = "union", [KW_UNLISTEN] = "unlisten",
    [KW_UNLOGGED] = "unlogged", [KW_UPDATE] = "update", [KW_USING] = "using",
    [KW_VACUUM] = "vacuum", [KW_VALUES] = "values", [KW_VERBOSE] = "verbose",
    [KW_VIEW] = "view", [KW_WHEN] = "when", [KW_WHERE] = "where",
    [KW_WINDOW] = "window", [KW_WITH] = "with", [KW_WRITE] = "write",
};

static const uint8_t kw_slots[26 * 16][KW_SLOT_WIDTH] = {
    [KW_KEY('a', 2)] = {KW_AS}, [KW_KEY('a', 3)] = {KW_ADD, KW_AND},
    [KW_KEY('a', 5)] = {KW_ABORT, KW_ALTER}, [KW_KEY('a', 6)] = {KW_ATOMIC},
    [KW_KEY('a', 7)] = {KW_ANALYSE, KW_ANALYZE},
    [KW_KEY('a', 9)] = {KW_AGGREGATE}, [KW_KEY('a', 13)] = {KW_AUTHORIZATION},
    [KW_KEY('b', 2)] = {KW_BY}, [KW_KEY('b', 5)] = {KW_BEGIN},
    [KW_KEY('c', 4)] = {KW_CALL, KW_CASE, KW_COPY},
    [KW_KEY('c', 5)] = {KW_CHAIN, KW_CLOSE},
    [KW_KEY('c', 6)] = {KW_COLUMN, KW_COMMIT, KW_CREATE},
    [KW_KEY('c', 7)] = {KW_CASCADE, KW_CLUSTER, KW_COMMENT},
    [KW_KEY('c', 9)] = {KW_COLLATION}, [KW_KEY('c', 10)] = {KW_CHECKPOINT},
    [KW_KEY('c', 11)] = {KW_CONSTRAINTS},
    [KW_KEY('c', 12)] = {KW_CONCURRENTLY},
    [KW_KEY('c', 15)] = {KW_CHARACTERISTICS}, [KW_KEY('d', 2)] = {KW_DO},
    [KW_KEY('d', 4)] = {KW_DROP}, [KW_KEY('d', 6)] = {KW_DELETE, KW_DOMAIN},
    [KW_KEY('d', 7)] = {KW_DECLARE, KW_DEFAULT, KW_DISCARD},
    [KW_KEY('d', 8)] = {KW_DISTINCT}, [KW_KEY('d', 10)] = {KW_DEALLOCATE},
    [KW_KEY('e', 3)] = {KW_END}, [KW_KEY('e', 6)] = {KW_EXCEPT, KW_EXISTS},
    [KW_KEY('e', 7)] = {KW_EXECUTE, KW_EXPLAIN, KW_EXTRACT},
    [KW_KEY('f', 3)] = {KW_FOR}, [KW_KEY('f', 4)] = {KW_FROM},
    [KW_KEY('f', 5)] = {KW_FALSE, KW_FETCH}, [KW_KEY('f', 8)] = {KW_FUNCTION},
    [KW_KEY('g', 5)] = {KW_GRANT, KW_GROUP}, [KW_KEY('g', 6)] = {KW_GLOBAL},
    [KW_KEY('h', 6)] = {KW_HAVING}, [KW_KEY('i', 2)] = {KW_IF, KW_IN, KW_IS},
    [KW_KEY('i', 4)] = {KW_INTO}, [KW_KEY('i', 5)] = {KW_INDEX},
    [KW_KEY('i', 6)] = {KW_IMPORT, KW_INSERT},
    [KW_KEY('i', 9)] = {KW_INTERSECT}, [KW_KEY('j', 4)] = {KW_JOIN},
    [KW_KEY('k', 3)] = {KW_KEY}, [KW_KEY('l', 4)] = {KW_LOAD, KW_LOCK},
    [KW_KEY('l', 5)] = {KW_LIMIT, KW_LOCAL}, [KW_KEY('l', 6)] = {KW_LISTEN},
    [KW_KEY('l', 7)] = {KW_LATERAL}, [KW_KEY('m', 4)] = {KW_MOVE},
    [KW_KEY('m', 5)] = {KW_MERGE}, [KW_KEY('m', 12)] = {KW_MATERIALIZED},
    [KW_KEY('n', 2)] = {KW_NO}, [KW_KEY('n', 3)] = {KW_NOT},
    [KW_KEY('n', 6)] = {KW_NOTIFY}, [KW_KEY('o', 2)] = {KW_OF, KW_ON, KW_OR},
    [KW_KEY('o', 3)] = {KW_OFF}, [KW_KEY('o', 4)] = {KW_ONLY},
    [KW_KEY('o', 5)] = {KW_ORDER, KW_OWNER}, [KW_KEY('o', 6)] = {KW_OFFSET},
    [KW_KEY('o', 7)] = {KW_OVERLAY}, [KW_KEY('p', 7)] = {KW_PREPARE},
    [KW_KEY('p', 8)] = {KW_POSITION, KW_PREPARED},
    [KW_KEY('p', 9)] = {KW_PROCEDURE}, [KW_KEY('r', 4)] = {KW_READ},
    [KW_KEY('r', 5)] = {KW_RESET}, [KW_KEY('r', 6)] = {KW_RENAME, KW_REVOKE},
    [KW_KEY('r', 7)] = {KW_REFRESH, KW_REINDEX, KW_RELEASE, KW_REPLACE, KW_RETURNS, KW_ROUTINE},
    [KW_KEY('r', 8)] = {KW_REASSIGN, KW_RESTRICT, KW_ROLLBACK},
    [KW_KEY('r', 9)] = {KW_RECURSIVE, KW_RETURNING},
    [KW_KEY('r', 10)] = {KW_REFERENCES}, [KW_KEY('s', 3)] = {KW_SET},
    [KW_KEY('s', 4)] = {KW_SHOW}, [KW_KEY('s', 5)] = {KW_SHARE, KW_START},
    [KW_KEY('s', 6)] = {KW_SCHEMA, KW_SELECT}, [KW_KEY('s', 7)] = {KW_SESSION},
    [KW_KEY('s', 8)] = {KW_SECURITY, KW_SEQUENCE},
    [KW_KEY('s', 9)] = {KW_SAVEPOINT, KW_SUBSTRING},
    [KW_KEY('s', 10)] = {KW_STATISTICS}, [KW_KEY('t', 2)] = {KW_TO},
    [KW_KEY('t', 4)] = {KW_TEMP, KW_THEN, KW_TRIM, KW_TYPE},
    [KW_KEY('t', 5)] = {KW_TABLE}, [KW_KEY('t', 8)] = {KW_TRUNCATE},
    [KW_KEY('t', 9)] = {KW_TEMPORARY}, [KW_KEY('t', 11)] = {KW_TRANSACTION},
    [KW_KEY('u', 5)] = {KW_UNION, KW_USING}, [KW_KEY('u', 6)] = {KW_UPDATE},
    [KW_KEY('u', 8)] = {KW_UNLISTEN, KW_UNLOGGED},
    [KW_KEY('v', 4)] = {KW_VIEW}, [KW_KEY('v', 6)] = {KW_VACUUM, KW_VALUES},
    [KW_KEY('v', 7)] = {KW_VERBOSE}, [KW_KEY('w', 4)] = {KW_WHEN, KW_WITH},
    [KW_KEY('w', 5)] = {KW_WHERE, KW_WRITE}, [KW_KEY('w', 6)] = {KW_WINDOW},
};

/* Does word (len bytes, any case) spell the lower-case keyword kw?  The
 * first letter already matched. */
static bool word_is(const char *word, const char *kw, size_t len)
{
    for (size_t i = 1; i < len; i++)
        if (sy__ascii_lower((unsigned char)word[i]) != (unsigned char)kw[i])
            return false;
    return true;
}

static uint8_t lookup_keyword(const char *word, size_t len)
{
    unsigned char first = sy__ascii_lower((unsigned char)word[0]);
    if (len < 2 || len > 15 || first < 'a' || first > 'z')
        return KW_NONE;
    const uint8_t *slot = kw_slots[KW_KEY(first, len)];
    for (int i = 0; i < KW_SLOT_WIDTH && slot[i] != KW_NONE; i++)
        if (word_is(word, kw_names[slot[i]], len))
            return slot[i];
    return KW_NONE;
}

/* ------------------------------------------------------------ lexer */

/* Character classes (PostgreSQL's: identifiers take any byte >= 0x80). */
enum { C_SPACE = 1, C_IDENT_START = 2, C_DIGIT = 4, C_DOLLAR = 8 };

#define C_ROW_HIGH                                                          \
    C_IDENT_START, C_IDENT_START, C_IDENT_START, C_IDENT_START,             \
    C_IDENT_START, C_IDENT_START, C_IDENT_START, C_IDENT_START,             \
    C_IDENT_START, C_IDENT_START, C_IDENT_START, C_IDENT_START,             \
    C_IDENT_START, C_IDENT_START, C_IDENT_START, C_IDENT_START
#define C_LETTERS_26                                                        \
    C_IDENT_START, C_IDENT_START, C_IDENT_START, C_IDENT_START,             \
    C_IDENT_START, C_IDENT_START, C_IDENT_START, C_IDENT_START,             \
    C_IDENT_START, C_IDENT_START, C_IDENT_START, C_IDENT_START,             \
    C_IDENT_START, C_IDENT_START, C_IDENT_START, C_IDENT_START,             \
    C_IDENT_START, C_IDENT_START, C_IDENT_START, C_IDENT_START,             \
    C_IDENT_START, C_IDENT_START, C_IDENT_START, C_IDENT_START,             \
    C_IDENT_START, C_IDENT_START
static const uint8_t char_class[256] = {
    ['\t'] = C_SPACE, ['\n'] = C_SPACE, ['\v'] = C_SPACE, ['\f'] = C_SPACE,
    ['\r'] = C_SPACE, [' '] = C_SPACE, ['$'] = C_DOLLAR,
    ['0'] = C_DIGIT, C_DIGIT, C_DIGIT, C_DIGIT, C_DIGIT,
    C_DIGIT, C_DIGIT, C_DIGIT, C_DIGIT, C_DIGIT,
    ['A'] = C_LETTERS_26, ['_'] = C_IDENT_START, ['a'] = C_LETTERS_26,
    [0x80] = C_ROW_HIGH, C_ROW_HIGH, C_ROW_HIGH, C_ROW_HIGH,
    C_ROW_HIGH, C_ROW_HIGH, C_ROW_HIGH, C_ROW_HIGH,
};

static bool is_space(unsigned char c)
{
    return char_class[c] & C_SPACE;
}

static bool is_digit(unsigned char c)
{
    return char_class[c] & C_DIGIT;
}

static bool is_ident_start(unsigned char c)
{
    return char_class[c] & C_IDENT_START;
}

static bool is_ident_char(unsigned char c)
{
    return char_class[c] & (C_IDENT_START | C_DIGIT | C_DOLLAR);
}

/* A comment at pos: sets *end past it and the text between its delimiters.
 * *closed is false for a block comment the input never closes. */
static bool comment_at(const char *s, size_t len, size_t pos, size_t *end,
                       size_t *body, size_t *body_len, bool *closed)
{
    if (pos + 1 >= len)
        return false;
    if (s[pos] == '-' && s[pos + 1] == '-') {
        size_t i = pos + 2;
        while (i < len && s[i] != '\n' && s[i] != '\r')
            i++;
        *end = i;
        *body = pos + 2;
        *body_len = i - *body;
        *closed = true;
        return true;
    }
    if (s[pos] == '/' && s[pos + 1] == '*') {
        /* PostgreSQL nests block comments. */
        size_t depth = 1, i = pos + 2;
        while (i < len) {
            if (s[i] == '*' && i + 1 < len && s[i + 1] == '/') {
                i += 2;
                if (--depth == 0) {
                    *end = i;
                    *body = pos + 2;
                    *body_len = i - 2 - *body;
                    *closed = true;
                    return true;
                }
            } else if (s[i] == '/' && i + 1 < len && s[i + 1] == '*') {
                depth++;
                i += 2;
            } else {
                i++;
            }
        }
        *end = len;
        *body = pos + 2;
        *body_len = len - *body;
        *closed = false;
        return true;
    }
    return false;
}

/* '..' or "..": the quote doubled is the quote itself; E'..' also takes
 * backslash escapes.  Returns the position after the closing quote (len if
 * unterminated) and the contents' end in *content_end. */
static size_t scan_quoted(const char *s, size_t len, size_t pos, char quote,
                          bool backslash, size_t *content_end)
{
    size_t i = pos;
    while (i < len) {
        if (!backslash) {
            const char *q = memchr(s + i, quote, len - i);
            if (q == NULL)
                break;
            i = (size_t)(q - s);
        }
        if (s[i] == quote) {
            if (i + 1 < len && s[i + 1] == quote) {
                i += 2;
                continue;
            }
            *content_end = i;
            return i + 1;
        }
        i += (s[i] == '\\') ? 2 : 1;
    }
    *content_end = len;
    return len;
}

/* $tag$ at pos (tag: an identifier without '$', or empty): the position of
 * the delimiter's closing '$', or 0 when pos starts no dollar quote. */
static size_t dollar_tag_close(const char *s, size_t len, size_t pos)
{
    size_t i = pos + 1;
    if (i < len && s[i] == '$')
        return i;
    if (i >= len || !is_ident_start((unsigned char)s[i]))
        return 0;
    while (i < len && (is_ident_start((unsigned char)s[i]) ||
                       is_digit((unsigned char)s[i])))
        i++;
    return (i < len && s[i] == '$') ? i : 0;
}

static size_t scan_dollar_body(const char *s, size_t len, size_t open,
                               size_t tag_len, size_t body,
                               size_t *content_end)
{
    size_t i = body;
    while (i < len) {
        const char *d = memchr(s + i, '$', len - i);
        if (d == NULL)
            break;
        i = (size_t)(d - s);
        if (len - i >= tag_len && memcmp(s + i, s + open, tag_len) == 0) {
            *content_end = i;
            return i + tag_len;
        }
        i++;
    }
    *content_end = len;
    return len;
}

/* Skips blanks and comments.  Comments before a statement's first token
 * are read for hints at once; comments after a token are read only if the
 * statement turns out to end right after them. */
static size_t skip_trivia(sy__lexer *lx, size_t pos, bool at_statement_start,
                          bool semicolon_ends)
{
    const char *s = lx->sql;
    size_t len = lx->len, deferred = SIZE_MAX;
    size_t end, body, body_len;
    bool closed;

    while (pos < len) {
        if (is_space((unsigned char)s[pos])) {
            pos++;
            continue;
        }
        if ((s[pos] != '-' && s[pos] != '/') ||
            !comment_at(s, len, pos, &end, &body, &body_len, &closed))
            break;
        if (at_statement_start) {
            if (closed)
                read_hint_comment(s, body, body_len, lx->out);
        } else if (deferred == SIZE_MAX) {
            deferred = pos;
        }
        pos = end;
    }
    if (deferred != SIZE_MAX &&
        (pos >= len || (s[pos] == ';' && semicolon_ends))) {
        for (size_t i = deferred; i < pos;) {
            if (comment_at(s, len, i, &end, &body, &body_len, &closed)) {
                if (closed)
                    read_hint_comment(s, body, body_len, lx->out);
                i = end;
            } else {
                i++;
            }
        }
    }
    return pos;
}

/* A backslash in a '..' literal: its extent depends on
 * standard_conforming_strings (see sy__lexer). */
static void note_backslash(sy__lexer *lx, size_t from, size_t to)
{
    if (!lx->saw_backslash && !lx->backslash_escapes &&
        memchr(lx->sql + from, '\\', to - from) != NULL)
        lx->saw_backslash = true;
}

void sy__next_token(sy__lexer *lx, token *t, bool at_statement_start,
                    bool semicolon_ends)
{
    const char *s = lx->sql;
    size_t len = lx->len;
    size_t pos = skip_trivia(lx, lx->pos, at_statement_start, semicolon_ends);
    size_t end, content_end;

    t->kw = KW_NONE;
    t->off = pos;
    t->len = 0;
    if (pos >= len) {
        t->type = T_EOF;
        lx->pos = len;
        return;
    }

    unsigned char c = (unsigned char)s[pos];
    unsigned char next = pos + 1 < len ? (unsigned char)s[pos + 1] : 0;
    unsigned char lower = sy__ascii_lower(c);

    if (next == '\'' && (lower == 'e' || lower == 'b' || lower == 'x' ||
                         lower == 'n')) {
        /* E'..' takes backslash escapes; B'..', X'..', N'..' do not. */
        bool escapes = lower == 'e' || (lower == 'n' && lx->backslash_escapes);
        end = scan_quoted(s, len, pos + 2, '\'', escapes, &content_end);
        if (lower == 'n')
            note_backslash(lx, pos + 2, content_end);
        t->type = T_STRING;
        t->off = pos + 2;
        t->len = content_end - t->off;
    } else if (lower == 'u' && next == '&' && pos + 2 < len &&
               (s[pos + 2] == '\'' || s[pos + 2] == '"')) {
        char quote = s[pos + 2];
        end = scan_quoted(s, len, pos + 3, quote, false, &content_end);
        t->type = quote == '"' ? T_QIDENT : T_STRING;
        t->off = pos + 3;
        t->len = content_end - t->off;
    } else if (is_ident_start(c)) {
        end = pos + 1;
        while (end < len && is_ident_char((unsigned char)s[end]))
            end++;
        t->type = T_WORD;
        t->len = end - pos;
        t->kw = lookup_keyword(s + pos, t->len);
    } else if (c == '"' || c == '\'') {
        bool escapes = c == '\'' && lx->backslash_escapes;
        end = scan_quoted(s, len, pos + 1, (char)c, escapes, &content_end);
        if (c == '\'')
            note_backslash(lx, pos + 1, content_end);
        t->type = c == '"' ? T_QIDENT : T_STRING;
        t->off = pos + 1;
        t->len = content_end - t->off;
    } else if (c == '$') {
        size_t close;
        if (is_digit(next)) {
            end = pos + 1;
            while (end < len && is_digit((unsigned char)s[end]))
                end++;
            t->type = T_PARAM;
        } else if ((close = dollar_tag_close(s, len, pos)) != 0) {
            end = scan_dollar_body(s, len, pos, close - pos + 1, close + 1,
                                   &content_end);
            t->type = T_STRING;
            t->off = close + 1;
            t->len = content_end - t->off;
        } else {
            end = pos + 1;
            t->type = T_OTHER;
        }
    } else if (is_digit(c) || (c == '.' && is_digit(next))) {
        end = pos + 1;
        while (end < len && (is_ident_char((unsigned char)s[end]) ||
                             s[end] == '.') && s[end] != '$')
            end++;
        t->type = T_NUMBER;
        t->len = end - pos;
    } else {
        end = pos + 1;
        switch (c) {
        case '(': t->type = T_LPAREN; break;
        case ')': t->type = T_RPAREN; break;
        case ',': t->type = T_COMMA; break;
        case ';': t->type = T_SEMI; break;
        case '.': t->type = T_DOT; break;
        default: t->type = T_OTHER; break;
        }
        t->len = 1;
    }
    lx->pos = end;
}
