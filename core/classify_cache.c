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
 * id = 42"), so the same statement rarely comes twice.  For plain reads a
 * second table remembers the statement's shape: the text with each number
 * and each string literal masked.  Only EXPLAIN and PREPARE TRANSACTION
 * ever read a literal's value (classify.c), so a verdict of kind read with
 * no flags, schemas or hints, for a text that begins with SELECT, holds for
 * every text of its shape.  Texts with comments (hints live there),
 * dollar quotes, backslashes or prefixed strings (E'', U&'') have no shape.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uthash.h>

sy_classify_cache *sy__classify_cache_new(void)
{
    return calloc(1, sizeof(sy_classify_cache));
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

static int ident_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '$' || c >= 0x80;
}

/* Writes sql's shape into out (room for len bytes: a shape is never
 * longer); returns its length, or -1 when the text has no shape.
 * *first_mask is the offset in sql of the first masked literal. */
static long shape_of(const char *sql, size_t len, char *out, size_t *first_mask)
{
    size_t o = 0;
    *first_mask = len;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)sql[i];
        unsigned char prev = i ? (unsigned char)sql[i - 1] : ' ';
        unsigned char next = i + 1 < len ? (unsigned char)sql[i + 1] : 0;
        if ((c == '-' && next == '-') || (c == '/' && next == '*') || c == '\\')
            return -1;
        if (c == '$' && !ident_char(prev) && !(next >= '0' && next <= '9'))
            return -1; /* a dollar quote */
        if (c == '"') {
            size_t j = i + 1;
            while (j < len && !(sql[j] == '"' && (j + 1 >= len || sql[j + 1] != '"')))
                j += sql[j] == '"' ? 2 : 1;
            if (j >= len)
                return -1;
            memcpy(out + o, sql + i, j + 1 - i);
            o += j + 1 - i;
            i = j + 1;
            continue;
        }
        if (c == '\'') {
            if (ident_char(prev) || prev == '&')
                return -1; /* E'', B'', X'', U&'' */
            size_t j = i + 1;
            while (j < len && !(sql[j] == '\'' && (j + 1 >= len || sql[j + 1] != '\'')))
                j += sql[j] == '\'' ? 2 : 1;
            if (j >= len)
                return -1;
            if (*first_mask == len)
                *first_mask = i;
            out[o++] = '\'';
            out[o++] = '\'';
            i = j + 1;
            continue;
        }
        if (c >= '0' && c <= '9' && !ident_char(prev) && prev != '.') {
            if (*first_mask == len)
                *first_mask = i;
            size_t j = i + 1;
            while (j < len && (ident_char((unsigned char)sql[j]) || sql[j] == '.'))
                j++;
            out[o++] = '0';
            i = j;
            continue;
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
    s->verdict = *verdict;
}

static int shape_holds_for_all(const char *sql, const sy_statement *v, size_t first_mask)
{
    return v->kind == SY_KIND_READ && v->flags == 0 && v->nhints == 0 && v->nschemas == 0 &&
           v->first_word.len == 6 && v->first_word.off + v->first_word.len <= first_mask &&
           strncasecmp(sql + v->first_word.off, "select", 6) == 0;
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
    unsigned hash;
    HASH_VALUE(sql, len, hash);
    struct sy_classify_slot *s = &cc->slots[hash % SY_CLASSIFY_CACHE_SLOTS];
    if (slot_holds(s, lua->generation, hash, sql, len)) {
        *out = s->verdict;
        return;
    }
    char shape[SY_CLASSIFY_CACHE_MAX_TEXT];
    size_t first_mask;
    long shape_len = shape_of(sql, len, shape, &first_mask);
    if (shape_len < 0 || first_mask == len) {
        /* No literal to mask: the text is its own shape. */
        sy_classify(sql, len, write_functions, out);
        slot_store(s, lua->generation, hash, sql, len, out);
        return;
    }
    unsigned shape_hash;
    HASH_VALUE(shape, (size_t)shape_len, shape_hash);
    struct sy_classify_slot *sh = &cc->shapes[shape_hash % SY_CLASSIFY_SHAPE_SLOTS];
    if (slot_holds(sh, lua->generation, shape_hash, shape, (size_t)shape_len)) {
        *out = sh->verdict; /* kind and first word only: no spans to move */
        return;
    }
    sy_classify(sql, len, write_functions, out);
    if (shape_holds_for_all(sql, out, first_mask))
        slot_store(sh, lua->generation, shape_hash, shape, (size_t)shape_len, out);
    else
        slot_store(s, lua->generation, hash, sql, len, out);
}
