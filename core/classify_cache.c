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
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
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
    free(cc);
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
    if (s->generation == lua->generation && s->hash == (uint32_t)hash && s->len == len &&
        memcmp(s->sql, sql, len) == 0) {
        *out = s->verdict;
        return;
    }
    sy_classify(sql, len, write_functions, out);
    char *copy = s->len >= len && s->sql ? s->sql : realloc(s->sql, len ? len : 1);
    if (!copy)
        return; /* the verdict is right; it is just not remembered */
    memcpy(copy, sql, len);
    s->sql = copy;
    s->len = (uint32_t)len;
    s->hash = (uint32_t)hash;
    s->generation = lua->generation;
    s->verdict = *out;
}
