/*
 * prepared.c - named prepared statements in transaction pooling.
 *
 * A client's statement names mean nothing on the backend that serves its
 * next transaction.  So the proxy keeps one entry per distinct (query,
 * parameter types), prepared on backends under a name it owns ("sy_<n>");
 * each client maps its own names to entries; each backend remembers which
 * entries it has prepared (bounded, least recently used evicted with a
 * Close whose reply the client never sees).  A client's Parse becomes a
 * ParseComplete the proxy makes when the backend already has the
 * statement, a Bind is renamed, and a statement the backend lacks is
 * prepared in front of the Bind that needs it.
 */
#include "proxy.h"

#include <stdlib.h>
#include <string.h>

static void stmt_free(sy_stmt *st)
{
    free(st->key);
    free(st->types);
    free(st);
}

sy_stmt *sy__stmt_get(sy_proxy *px, const sy_pg_parse *parse)
{
    size_t tl = (size_t)parse->nparams * 4;
    size_t kl = parse->query.len + 1 + tl;
    char *key = malloc(kl);
    if (!key)
        return NULL;
    memcpy(key, parse->query.p, parse->query.len);
    key[parse->query.len] = '\0';
    if (tl)
        memcpy(key + parse->query.len + 1, parse->param_types, tl);
    sy_stmt *st = NULL;
    HASH_FIND(hh, px->stmts, key, kl, st);
    if (st) {
        free(key);
        st->refs++;
        return st;
    }
    st = calloc(1, sizeof *st);
    if (!st || (parse->nparams && !(st->types = malloc(tl)))) {
        free(st);
        free(key);
        return NULL;
    }
    st->key = key;
    st->key_len = kl;
    st->query = key;
    st->query_len = parse->query.len;
    st->nparams = parse->nparams;
    for (uint16_t i = 0; i < parse->nparams; i++)
        st->types[i] = sy__pg_parse_param_type(parse, i);
    st->refs = 1;
    sy__fmt(st->server_name, sizeof st->server_name, "sy_%llu",
            (unsigned long long)++px->next_stmt_id);
    HASH_ADD_KEYPTR(hh, px->stmts, st->key, st->key_len, st);
    px->nstmts++;
    return st;
}

void sy__stmt_unref(sy_proxy *px, sy_stmt *st)
{
    if (!st || --st->refs > 0)
        return;
    HASH_DELETE(hh, px->stmts, st);
    px->nstmts--;
    stmt_free(st);
}

/* ------------------------------------------------------------ client map */

sy_stmt *sy__client_stmt_find(const sy_client *c, const char *name, size_t len)
{
    sy_client_stmt *cs = NULL;
    HASH_FIND(hh, c->stmts, name, len, cs);
    return cs ? cs->stmt : NULL;
}

int sy__client_stmt_put(sy_client *c, const char *name, size_t len, sy_stmt *st)
{
    sy_client_stmt *cs = NULL;
    HASH_FIND(hh, c->stmts, name, len, cs);
    if (cs) {
        sy__stmt_unref(c->proxy, cs->stmt);
        cs->stmt = st;
        return 0;
    }
    cs = calloc(1, sizeof *cs);
    if (!cs || !(cs->name = strndup(name, len))) {
        free(cs);
        return -1;
    }
    cs->stmt = st;
    HASH_ADD_KEYPTR(hh, c->stmts, cs->name, len, cs);
    return 0;
}

static void client_stmt_free(sy_client *c, sy_client_stmt *cs)
{
    HASH_DELETE(hh, c->stmts, cs);
    sy__stmt_unref(c->proxy, cs->stmt);
    free(cs->name);
    free(cs);
}

int sy__client_stmt_drop(sy_client *c, const char *name, size_t len)
{
    sy_client_stmt *cs = NULL;
    HASH_FIND(hh, c->stmts, name, len, cs);
    if (!cs)
        return 0;
    client_stmt_free(c, cs);
    return 1;
}

void sy__client_stmt_clear(sy_client *c)
{
    sy_client_stmt *cs, *tmp;
    HASH_ITER(hh, c->stmts, cs, tmp)
        client_stmt_free(c, cs);
}

/* ------------------------------------------------------------ backend cache */

int sy__link_stmt_has(sy_link *l, sy_stmt *st)
{
    sy_link_stmt *ls = NULL;
    HASH_FIND_PTR(l->stmts, &st, ls);
    if (!ls)
        return 0;
    sy_list_remove(&ls->lru);
    sy_list_insert_head(&l->stmt_lru, &ls->lru);
    return 1;
}

static void link_stmt_free(sy_proxy *px, sy_link *l, sy_link_stmt *ls)
{
    HASH_DEL(l->stmts, ls);
    sy_list_remove(&ls->lru);
    l->nstmts--;
    sy__stmt_unref(px, ls->stmt);
    free(ls);
}

static sy_link_stmt *cache_insert(sy_link *l, sy_stmt *st)
{
    sy_link_stmt *ls = calloc(1, sizeof *ls);
    if (!ls)
        return NULL;
    ls->stmt = st;
    st->refs++;
    HASH_ADD_PTR(l->stmts, stmt, ls);
    sy_list_insert_head(&l->stmt_lru, &ls->lru);
    l->nstmts++;
    return ls;
}

/* The last queued entry takes a reference to st. */
static void entry_holds(sy_link *l, sy_stmt *st)
{
    l->q[(l->q_head + l->q_len - 1) % l->q_cap].stmt = st;
    st->refs++;
}

void sy__link_stmt_restore(sy_proxy *px, sy_link *l, sy_stmt *st)
{
    (void)px;
    sy_link_stmt *ls = NULL;
    HASH_FIND_PTR(l->stmts, &st, ls);
    if (!ls)
        cache_insert(l, st); /* out of memory: it is re-prepared, 42P05 */
}

int sy__link_stmt_add(sy_proxy *px, sy_link *l, sy_stmt *st, sy_buf *out)
{
    sy_link_stmt *ls = cache_insert(l, st);
    if (!ls)
        return -1;
    while (l->nstmts > px->set.max_prepared && l->stmt_lru.prev != &ls->lru) {
        sy_link_stmt *old = sy_container_of(l->stmt_lru.prev, sy_link_stmt, lru);
        if (sy__pg_build_close(out, 'S', old->stmt->server_name) < 0 ||
            sy__link_expect(l, SY_X_CLOSE, SY_XF_SKIP) < 0)
            return -1;
        entry_holds(l, old->stmt);
        px->stats.evictions++;
        link_stmt_free(px, l, old);
    }
    return 0;
}

void sy__link_stmt_forget(sy_proxy *px, sy_link *l, sy_stmt *st)
{
    sy_link_stmt *ls = NULL;
    HASH_FIND_PTR(l->stmts, &st, ls);
    if (ls)
        link_stmt_free(px, l, ls);
}

int sy__link_prepare(sy_proxy *px, sy_link *l, sy_stmt *st, int skip)
{
    px->stats.prepares++;
    if (sy__pg_build_parse(&l->out, st->server_name, st->query, st->query_len,
                           st->nparams, st->types) < 0 ||
        sy__link_expect(l, SY_X_PARSE, skip ? SY_XF_SKIP : 0) < 0)
        return -1;
    entry_holds(l, st);
    return sy__link_stmt_add(px, l, st, &l->out);
}

void sy__link_stmt_clear(sy_proxy *px, sy_link *l)
{
    sy_link_stmt *ls, *tmp;
    HASH_ITER(hh, l->stmts, ls, tmp)
        link_stmt_free(px, l, ls);
}
