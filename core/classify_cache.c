/*
 * classify_cache.c - the classifier's verdicts remembered by statement text.
 * Applications send the same few texts over and over (an ORM's statements,
 * pgbench's one SELECT); reading them again costs more than the rest of a
 * routing decision.  The cache is direct-mapped: a text hashes to one slot,
 * and a different text hashing there replaces it, so a workload with more
 * texts than slots costs one hash and compare more per statement, never
 * more memory.  Verdicts hold offsets, not pointers, so a verdict is valid
 * for every copy of its text.  Each entry records the configuration
 * generation it was made under: a reload may change write_functions.
 *
 * Clients of the simple protocol put values in the text itself ("... WHERE
 * id = 42"), so the same text rarely comes twice.  A second table remembers
 * verdicts by the statement's shape: the text with each number and each
 * string literal masked.  Only EXPLAIN and PREPARE TRANSACTION ever read a
 * literal's value (classify.c), so the verdict of a single SELECT, INSERT,
 * UPDATE or DELETE that names no schema holds for every text of its shape
 * (its first word comes before any literal, so even that span is the same).
 * Texts with comments (hints live there), dollar quotes, backslashes or
 * prefixed strings (E'', U&'') have no shape and are cached by text.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { B_OTHER, B_IDENT, B_DIGIT, B_SPECIAL };

sy_classify_cache *sy__classify_cache_new(void)
{
    sy_classify_cache *cc = calloc(1, sizeof(sy_classify_cache));
    if (!cc)
        return NULL;
    for (int c = 0; c < 256; c++) {
        unsigned char k = B_OTHER;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80)
            k = B_IDENT;
        else if (c >= '0' && c <= '9')
            k = B_DIGIT;
        else if (strchr("'\"$-/\\.", c) && c != 0)
            k = B_SPECIAL;
        cc->byte_class[c] = k;
    }
    return cc;
}

void sy__classify_cache_free(sy_classify_cache *cc)
{
    if (!cc)
        return;
    for (size_t i = 0; i < SY_CLASSIFY_CACHE_SLOTS; i++)
        free(cc->slots[i].sql);
    for (size_t i = 0; i < SY_CLASSIFY_SHAPE_SLOTS; i++)
        free(cc->shapes[i].sql);
    free(cc);
}

/* The end of a quoted run that starts at sql[i] (a quote q, doubled inside
 * to escape itself), or len when it does not end. */
static size_t quoted_end(const char *sql, size_t len, size_t i, char q)
{
    for (size_t j = i + 1; j < len; j++) {
        if (sql[j] != q)
            continue;
        if (j + 1 < len && sql[j + 1] == q)
            j++;
        else
            return j;
    }
    return len;
}

/* Whether any of the eight bytes at p may be a digit or one of the bytes
 * B_SPECIAL marks: they all lie in 0x22..0x39, except the backslash.  A
 * word with none is copied without looking at its bytes one by one (the
 * classic "has a byte between" and "has a zero byte" tricks; bytes of 0x80
 * and up are never in range). */
static int word_may_stop(const char *p)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t w;
    memcpy(&w, p, 8);
    uint64_t low7 = w & ~highs;
    uint64_t between = (ones * (127 + 0x3a) - low7) & ~w & (low7 + ones * (127 - 0x21)) & highs;
    uint64_t bs = w ^ (ones * '\\');
    return (between | ((bs - ones) & ~bs & highs)) != 0;
}

/* Writes sql's shape into out (room for len bytes: a shape is never
 * longer); returns its length, or -1 when the text has no shape.
 * *first_mask is the offset in sql of the first masked literal (len when
 * none: the shape is the text). */
static long shape_of(const unsigned char *restrict cls, const char *restrict sql, size_t len,
                     char *restrict out, size_t *first_mask)
{
    size_t o = 0;
    int after_ident = 0; /* a digit here continues a name ("t1", "$1", "x.5") */
    *first_mask = len;
    for (size_t i = 0; i < len;) {
        /* Most bytes are names, keywords and punctuation, copied as they
         * are: find the run's end first and copy it whole. */
        size_t run = i;
        for (;;) {
            while (i + 8 <= len && !word_may_stop(sql + i))
                i += 8;
            size_t limit = i + 8 < len ? i + 8 : len;
            while (i < limit && cls[(unsigned char)sql[i]] <= B_IDENT)
                i++;
            if (i < limit || i >= len)
                break;
        }
        if (i > run) {
            memcpy(out + o, sql + run, i - run);
            o += i - run;
            after_ident = cls[(unsigned char)sql[i - 1]];
            if (i >= len)
                break;
        }
        unsigned char c = (unsigned char)sql[i];
        if (cls[c] == B_DIGIT) {
            if (after_ident) {
                out[o++] = (char)c;
                i++;
                continue;
            }
            if (*first_mask == len)
                *first_mask = i;
            do
                i++;
            while (i < len && (cls[(unsigned char)sql[i]] == B_IDENT ||
                               cls[(unsigned char)sql[i]] == B_DIGIT || sql[i] == '.'));
            out[o++] = '0';
            after_ident = 0;
            continue;
        }
        char next = i + 1 < len ? sql[i + 1] : 0;
        switch (c) {
        case '\\':
            return -1;
        case '-':
        case '/':
            if (next == (c == '-' ? '-' : '*'))
                return -1; /* a comment: hints live there */
            after_ident = 0;
            break;
        case '.':
            after_ident = 1;
            break;
        case '$':
            if (!after_ident && !(next >= '0' && next <= '9'))
                return -1; /* a dollar quote */
            after_ident = 1;
            break;
        case '"': {
            size_t end = quoted_end(sql, len, i, '"');
            if (end >= len)
                return -1;
            memcpy(out + o, sql + i, end + 1 - i);
            o += end + 1 - i;
            i = end + 1;
            after_ident = 1;
            continue;
        }
        case '\'': {
            if (after_ident || (i > 0 && sql[i - 1] == '&'))
                return -1; /* E'', B'', X'', U&'' */
            size_t end = quoted_end(sql, len, i, '\'');
            if (end >= len)
                return -1;
            if (*first_mask == len)
                *first_mask = i;
            out[o++] = '\'';
            out[o++] = '\'';
            i = end + 1;
            after_ident = 0;
            continue;
        }
        }
        out[o++] = (char)c;
        i++;
    }
    return (long)o;
}

static int slot_holds(const struct sy_classify_slot *s, unsigned generation, unsigned hash,
                      const char *text, size_t len)
{
    return s->generation == generation && s->hash == (uint32_t)hash && s->len == len &&
           memcmp(s->sql, text, len) == 0;
}

static void slot_store(struct sy_classify_slot *s, unsigned generation, unsigned hash,
                       const char *text, size_t len, const sy_statement *verdict)
{
    char *copy = s->len >= len && s->sql ? s->sql : realloc(s->sql, len ? len : 1);
    if (!copy)
        return; /* the verdict is right; it is just not remembered */
    memcpy(copy, text, len);
    s->sql = copy;
    s->len = (uint32_t)len;
    s->hash = (uint32_t)hash;
    s->generation = generation;
    sy__statement_copy(&s->verdict, verdict);
}

/* Whether v, the verdict for sql, holds for every text of sql's shape. */
static int shape_decides(const char *sql, const sy_statement *v, size_t first_mask)
{
    static const char *const words[] = {"select", "insert", "update", "delete"};
    if ((v->flags & SY_STMT_MULTI) || v->nhints || v->nschemas || v->first_word.len != 6 ||
        v->first_word.off + v->first_word.len > first_mask)
        return 0;
    for (size_t i = 0; i < SY_ARRAY_LEN(words); i++)
        if (strncasecmp(sql + v->first_word.off, words[i], 6) == 0)
            return 1;
    return 0;
}

/* A hash for the slots: eight bytes at a time, multiplied and folded.
 * Hits are confirmed by comparing the whole text, so it only has to spread
 * texts over slots, and it must cost less than the lookup saves (uthash's
 * byte-wise hash was 400 instructions for pgbench's SELECT). */
static unsigned text_hash(const char *p, size_t len)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ len;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, p + i, len - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return (unsigned)h;
}

void sy__classify(sy_engine *e, const char *sql, size_t len, sy_statement *out)
{
    const sy_lua *lua = e->lua;
    const char *const *write_functions = (const char *const *)lua->set.write_functions;
    sy_classify_cache *cc = e->classify_cache;
    if (!cc || !sql || len > SY_CLASSIFY_CACHE_MAX_TEXT) {
        sy_classify(sql, len, write_functions, out);
        return;
    }
    unsigned hash = text_hash(sql, len);
    struct sy_classify_slot *s = &cc->slots[hash % SY_CLASSIFY_CACHE_SLOTS];
    if (slot_holds(s, lua->generation, hash, sql, len)) {
        sy__statement_copy(out, &s->verdict);
        return;
    }
    char shape[SY_CLASSIFY_CACHE_MAX_TEXT];
    size_t first_mask;
    long shape_len = shape_of(cc->byte_class, sql, len, shape, &first_mask);
    struct sy_classify_slot *sh = NULL;
    unsigned shape_hash = 0;
    if (shape_len >= 0 && first_mask < len) {
        shape_hash = text_hash(shape, (size_t)shape_len);
        sh = &cc->shapes[shape_hash % SY_CLASSIFY_SHAPE_SLOTS];
        if (slot_holds(sh, lua->generation, shape_hash, shape, (size_t)shape_len)) {
            /* kind, flags and the first word: no other spans */
            sy__statement_copy(out, &sh->verdict);
            return;
        }
    }
    sy_classify(sql, len, write_functions, out);
    if (sh && shape_decides(sql, out, first_mask))
        slot_store(sh, lua->generation, shape_hash, shape, (size_t)shape_len, out);
    else
        slot_store(s, lua->generation, hash, sql, len, out);
}
