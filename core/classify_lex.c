/*
 * classify_lex.c - the classifier's lexer: the tokens of a SQL string.
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
 * The lexer knows nothing about statements: a token only records where
 * the comments before it start (token.comments), and classify.c, which
 * knows where a statement starts and ends, has sy__read_comments() hand
 * the ones that may carry hints to classify_hints.c.  That is what lets
 * the lexer fill a batch of tokens in one call.
 *
 * sy_classify() runs on every query, so this is the hottest code of the
 * classifier: one table lookup dispatches each token, blanks and words
 * are scanned with byte-class tables, a token's fields are stored once,
 * and a keyword is compared 8 bytes at a time.
 */
#include "classify_internal.h"

#include <string.h>

/* ------------------------------------------------------------ keywords */

/* The words classify.c looks at, NUL-padded to 16 bytes so that a word
 * compares as two 8-byte loads.  A word is looked up by its first letter
 * and length, which leaves at most 6 candidates (usually none or one);
 * the lookup runs for every word of every statement. */
#define KW_KEY(letter, len) (((letter) - 'a') * 16 + (len))
#define KW_SLOT_WIDTH 6
#define KW_MAX_LEN 15

static const char kw_text[KW__COUNT][KW_MAX_LEN + 1] = {
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

/* 0xff for each byte of a word of len bytes, from the offset 16 - len;
 * and from the offset len, 0xff for the last len of 8 bytes.  Masks built
 * by a load stay right on either byte order. */
static const unsigned char word_mask[32] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
};
static const unsigned char tail_mask[16] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
};

static uint64_t load64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Eight bytes of keyword id's text from byte at (at may be negative: the
 * bytes before belong to the previous entry, and the caller masks them
 * out).  Indexing the table as one char array keeps that inside it. */
static uint64_t kw_load(uint8_t id, ptrdiff_t at)
{
    const char *table = (const char *)kw_text;
    return load64(table + (ptrdiff_t)id * (KW_MAX_LEN + 1) + at);
}

/* word[0..len) is an identifier (letters, digits, '_', '$', bytes >= 0x80)
 * with `before` bytes of input before it and `after` from it to the end.
 * OR-ing 0x20 into every byte folds A-Z to a-z and maps no other
 * identifier byte onto a lower-case letter ('_' becomes DEL, digits and '$'
 * keep their value, high bytes stay high), so the folded word equals a
 * keyword exactly when PostgreSQL would read the word as that keyword.
 * The word is read 8 bytes at a time, never outside the input. */
static uint8_t lookup_keyword(const char *word, size_t len, size_t before,
                              size_t after)
{
    unsigned first = (unsigned char)word[0] | 0x20u;
    if (len < 2 || len > KW_MAX_LEN || first < 'a' || first > 'z')
        return KW_NONE;
    const uint8_t *slot = kw_slots[KW_KEY(first, len)];
    if (slot[0] == KW_NONE)
        return KW_NONE;

    const uint64_t fold = 0x2020202020202020u;
    if (len <= 8 && after >= 8) {
        /* A keyword of up to 8 letters is NUL beyond them. */
        uint64_t w = (load64(word) | fold) & load64(word_mask + 16 - len);
        for (int i = 0; i < KW_SLOT_WIDTH && slot[i] != KW_NONE; i++)
            if (w == kw_load(slot[i], 0))
                return slot[i];
        return KW_NONE;
    }
    if (len <= 8 && before + len >= 8) {
        /* Near the end of the input: the 8 bytes that end with the word. */
        ptrdiff_t at = (ptrdiff_t)len - 8;
        uint64_t m = load64(tail_mask + len);
        uint64_t w = (load64(word + at) | fold) & m;
        for (int i = 0; i < KW_SLOT_WIDTH && slot[i] != KW_NONE; i++)
            if (w == (kw_load(slot[i], at) & m))
                return slot[i];
        return KW_NONE;
    }
    if (len > 8) {
        /* 9 to 15 bytes: the first 8 and the last 8, which overlap. */
        ptrdiff_t at = (ptrdiff_t)len - 8;
        uint64_t lo = load64(word) | fold, hi = load64(word + at) | fold;
        for (int i = 0; i < KW_SLOT_WIDTH && slot[i] != KW_NONE; i++)
            if (lo == kw_load(slot[i], 0) && hi == kw_load(slot[i], at))
                return slot[i];
        return KW_NONE;
    }
    /* A short word in a short input: neither window fits. */
    for (int i = 0; i < KW_SLOT_WIDTH && slot[i] != KW_NONE; i++) {
        const char *kw = kw_text[slot[i]];
        size_t k = 0;
        while (k < len &&
               ((unsigned char)word[k] | 0x20u) == (unsigned char)kw[k])
            k++;
        if (k == len)
            return slot[i];
    }
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

/* Where the identifier characters from i end: four at a time while the
 * input lasts (one bounds check per four bytes), since words are most of
 * the bytes the lexer reads. */
static size_t ident_end(const char *s, size_t len, size_t i)
{
    for (; len - i >= 4; i += 4) {
        if (!is_ident_char((unsigned char)s[i]))
            return i;
        if (!is_ident_char((unsigned char)s[i + 1]))
            return i + 1;
        if (!is_ident_char((unsigned char)s[i + 2]))
            return i + 2;
        if (!is_ident_char((unsigned char)s[i + 3]))
            return i + 3;
    }
    while (i < len && is_ident_char((unsigned char)s[i]))
        i++;
    return i;
}

/* What a token starting with this byte can be: one lookup and one switch
 * instead of a chain of tests per token.  L_PREFIX letters start a word
 * unless a quote follows (E'..', B'..', X'..', N'..', U&'..'). */
enum lex_start {
    L_OTHER, L_SPACE, L_WORD, L_PREFIX, L_DIGIT, L_QUOTE, L_DQUOTE,
    L_DOLLAR, L_DOT, L_LPAREN, L_RPAREN, L_COMMA, L_SEMI, L_DASH, L_SLASH
};

#define L_ROW_HIGH                                                          \
    L_WORD, L_WORD, L_WORD, L_WORD, L_WORD, L_WORD, L_WORD, L_WORD,         \
    L_WORD, L_WORD, L_WORD, L_WORD, L_WORD, L_WORD, L_WORD, L_WORD
/* a..z: b, e, n, u and x may start a literal */
#define L_LETTERS_26                                                        \
    L_WORD, L_PREFIX, L_WORD, L_WORD, L_PREFIX, L_WORD, L_WORD, L_WORD,     \
    L_WORD, L_WORD, L_WORD, L_WORD, L_WORD, L_PREFIX, L_WORD, L_WORD,       \
    L_WORD, L_WORD, L_WORD, L_WORD, L_PREFIX, L_WORD, L_WORD, L_PREFIX,     \
    L_WORD, L_WORD
static const uint8_t lex_start[256] = {
    ['\t'] = L_SPACE, ['\n'] = L_SPACE, ['\v'] = L_SPACE, ['\f'] = L_SPACE,
    ['\r'] = L_SPACE, [' '] = L_SPACE,
    ['0'] = L_DIGIT, L_DIGIT, L_DIGIT, L_DIGIT, L_DIGIT,
    L_DIGIT, L_DIGIT, L_DIGIT, L_DIGIT, L_DIGIT,
    ['\''] = L_QUOTE, ['"'] = L_DQUOTE, ['$'] = L_DOLLAR, ['.'] = L_DOT,
    ['('] = L_LPAREN, [')'] = L_RPAREN, [','] = L_COMMA, [';'] = L_SEMI,
    ['-'] = L_DASH, ['/'] = L_SLASH,
    ['A'] = L_LETTERS_26, ['_'] = L_WORD, ['a'] = L_LETTERS_26,
    [0x80] = L_ROW_HIGH, L_ROW_HIGH, L_ROW_HIGH, L_ROW_HIGH,
    L_ROW_HIGH, L_ROW_HIGH, L_ROW_HIGH, L_ROW_HIGH,
};

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
        /* PostgreSQL nests block comments.  Both delimiters hold a '*', so
         * the scan jumps from one '*' to the next (sqlcommenter comments
         * are long and have none inside); a '/' just before a '*' opens
         * unless an earlier delimiter already used it. */
        size_t depth = 1, i = pos + 2;
        const char *star;
        while (i < len && (star = memchr(s + i, '*', len - i)) != NULL) {
            size_t j = (size_t)(star - s);
            if (j > i && s[j - 1] == '/') {
                depth++;
                i = j + 1;
            } else if (j + 1 < len && s[j + 1] == '/') {
                i = j + 2;
                if (--depth == 0) {
                    *end = i;
                    *body = pos + 2;
                    *body_len = i - 2 - *body;
                    *closed = true;
                    return true;
                }
            } else {
                i = j + 1;
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

/* Skips blanks and comments from pos. */
static size_t skip_trivia(const char *s, size_t len, size_t pos)
{
    size_t end, body, body_len;
    bool closed;
    while (pos < len) {
        if (is_space((unsigned char)s[pos]))
            pos++;
        else if ((s[pos] == '-' || s[pos] == '/') &&
                 comment_at(s, len, pos, &end, &body, &body_len, &closed))
            pos = end;
        else
            break;
    }
    return pos;
}

void sy__read_comments(const char *sql, size_t len, size_t from, size_t to,
                       sy_statement *out)
{
    size_t end, body, body_len;
    bool closed;
    for (size_t i = from; i < to;) {
        if (comment_at(sql, len, i, &end, &body, &body_len, &closed)) {
            if (closed)
                sy__read_hint_comment(sql, body, body_len, out);
            i = end;
        } else {
            i++;
        }
    }
}

/* A backslash in a '..' literal: its extent depends on
 * standard_conforming_strings (see sy__lexer). */
static void note_backslash(sy__lexer *lx, size_t from, size_t to)
{
    if (!lx->saw_backslash && !lx->backslash_escapes &&
        memchr(lx->sql + from, '\\', to - from) != NULL)
        lx->saw_backslash = true;
}

size_t sy__lex(sy__lexer *lx, token *toks, size_t max)
{
    const char *s = lx->sql;
    size_t len = lx->len;
    size_t pos = lx->pos;
    size_t n = 0;

    while (n < max) {
        token *t = &toks[n++];
        size_t end, content_end;
        unsigned cls = L_SPACE;

        /* Blanks are the usual trivia; comments take skip_trivia(). */
        t->comments = SY__NO_COMMENTS;
        while (pos < len &&
               (cls = lex_start[(unsigned char)s[pos]]) == L_SPACE)
            pos++;
        if ((cls == L_DASH || cls == L_SLASH) && pos + 1 < len &&
            s[pos + 1] == (cls == L_DASH ? '-' : '*')) {
            t->comments = pos;
            pos = skip_trivia(s, len, pos);
            if (pos < len)
                cls = lex_start[(unsigned char)s[pos]];
        }

        /* Each field is written once, below: a token costs few stores. */
        uint8_t type, kw = KW_NONE;
        size_t off = pos, tlen = 0;
        if (pos >= len) {
            t->type = T_EOF;
            t->kw = KW_NONE;
            t->off = pos;
            t->len = 0;
            pos = len;
            break;
        }

        unsigned char c = (unsigned char)s[pos];
        switch (cls) {
        case L_PREFIX: {
            unsigned char lower = c | 0x20;
            unsigned char next = pos + 1 < len ? (unsigned char)s[pos + 1] : 0;
            if (next == '\'' && lower != 'u') {
                /* E'..' takes backslash escapes; B'..', X'..', N'..' do
                 * not. */
                bool escapes = lower == 'e' ||
                               (lower == 'n' && lx->backslash_escapes);
                end = scan_quoted(s, len, pos + 2, '\'', escapes,
                                  &content_end);
                if (lower == 'n')
                    note_backslash(lx, pos + 2, content_end);
                type = T_STRING;
                off = pos + 2;
                tlen = content_end - off;
                break;
            }
            if (lower == 'u' && next == '&' && pos + 2 < len &&
                (s[pos + 2] == '\'' || s[pos + 2] == '"')) {
                char quote = s[pos + 2];
                end = scan_quoted(s, len, pos + 3, quote, false,
                                  &content_end);
                type = quote == '"' ? T_QIDENT : T_STRING;
                off = pos + 3;
                tlen = content_end - off;
                break;
            }
            /* otherwise a word */
        }
            /* fall through */
        case L_WORD:
            end = ident_end(s, len, pos + 1);
            type = T_WORD;
            tlen = end - pos;
            kw = lookup_keyword(s + pos, tlen, pos, len - pos);
            break;
        case L_QUOTE:
        case L_DQUOTE: {
            bool escapes = c == '\'' && lx->backslash_escapes;
            end = scan_quoted(s, len, pos + 1, (char)c, escapes,
                              &content_end);
            if (c == '\'')
                note_backslash(lx, pos + 1, content_end);
            type = c == '"' ? T_QIDENT : T_STRING;
            off = pos + 1;
            tlen = content_end - off;
            break;
        }
        case L_DOLLAR: {
            size_t close;
            if (pos + 1 < len && is_digit((unsigned char)s[pos + 1])) {
                end = pos + 1;
                while (end < len && is_digit((unsigned char)s[end]))
                    end++;
                type = T_PARAM;
            } else if ((close = dollar_tag_close(s, len, pos)) != 0) {
                end = scan_dollar_body(s, len, pos, close - pos + 1,
                                       close + 1, &content_end);
                type = T_STRING;
                off = close + 1;
                tlen = content_end - off;
            } else {
                end = pos + 1;
                type = T_OTHER;
            }
            break;
        }
        case L_DOT:
            if (!(pos + 1 < len && is_digit((unsigned char)s[pos + 1]))) {
                end = pos + 1;
                type = T_DOT;
                tlen = 1;
                break;
            }
            /* a number: .5 */
            /* fall through */
        case L_DIGIT:
            end = pos + 1;
            while (end < len && (is_ident_char((unsigned char)s[end]) ||
                                 s[end] == '.') && s[end] != '$')
                end++;
            type = T_NUMBER;
            tlen = end - pos;
            break;
        default: {
            /* indexed by enum lex_start, from L_LPAREN on */
            static const uint8_t single[] = {T_LPAREN, T_RPAREN, T_COMMA,
                                             T_SEMI};
            end = pos + 1;
            type = cls >= L_LPAREN && cls <= L_SEMI
                          ? single[cls - L_LPAREN] : T_OTHER;
            tlen = 1;
            break;
        }
        }
        t->type = type;
        t->kw = kw;
        t->off = off;
        t->len = tlen;
        pos = end;
    }
    lx->pos = pos;
    return n;
}
