/*
 * params.c - session parameters in transaction pooling.  A client's
 * parameters (from its startup packet, its SET statements and the
 * ParameterStatus messages its backends sent) are kept per client; each
 * backend remembers what the proxy set on it.  Before a batch runs on a
 * backend, the difference goes ahead of it as one simple query of SET and
 * RESET statements whose replies the client never sees.
 */
#include "proxy.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void sy__params_init(sy_params *p)
{
    memset(p, 0, sizeof *p);
}

void sy__params_free(sy_params *p)
{
    for (int i = 0; i < p->n; i++) {
        free(p->v[i].name);
        free(p->v[i].value);
    }
    free(p->v);
    sy__params_init(p);
}

/* FNV-1a of "name=value"; the set's fingerprint is the sum, so it does not
 * depend on the order the parameters were set in. */
static uint64_t param_hash(const char *name, const char *value)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *s = name; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    h = (h ^ '=') * 1099511628211ull;
    for (const char *s = value; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int find(const sy_params *p, const char *name, size_t len)
{
    for (int i = 0; i < p->n; i++)
        if (strlen(p->v[i].name) == len && strncasecmp(p->v[i].name, name, len) == 0)
            return i;
    return -1;
}

int sy__params_name_ok(const char *name, size_t len)
{
    /* identifier or identifier.identifier: what SET accepts unquoted, and
     * nothing that could end the statement it is pasted into. */
    int parts = 0;
    size_t i = 0;
    while (i < len) {
        if (!(isalpha((unsigned char)name[i]) || name[i] == '_'))
            return 0;
        while (i < len && (isalnum((unsigned char)name[i]) || name[i] == '_' || name[i] == '$'))
            i++;
        parts++;
        if (i < len) {
            if (name[i] != '.' || parts > 1)
                return 0;
            i++;
            if (i == len)
                return 0;
        }
    }
    return parts > 0 && len < 64;
}

int sy__params_set(sy_params *p, const char *name, size_t name_len,
                   const char *value, size_t value_len)
{
    if (!sy__params_name_ok(name, name_len))
        return -2;
    int i = find(p, name, name_len);
    if (i >= 0) {
        p->fingerprint -= param_hash(p->v[i].name, p->v[i].value);
        if (!value) {
            free(p->v[i].name);
            free(p->v[i].value);
            p->v[i] = p->v[--p->n];
            return 0;
        }
        char *nv = strndup(value, value_len);
        if (!nv) {
            p->fingerprint += param_hash(p->v[i].name, p->v[i].value);
            return -1;
        }
        free(p->v[i].value);
        p->v[i].value = nv;
        p->fingerprint += param_hash(p->v[i].name, nv);
        return 0;
    }
    if (!value)
        return 0;
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 4;
        sy_param *v = realloc(p->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        p->v = v;
        p->cap = cap;
    }
    char *n = strndup(name, name_len), *v = strndup(value, value_len);
    if (!n || !v) {
        free(n);
        free(v);
        return -1;
    }
    for (char *s = n; *s; s++)
        *s = (char)tolower((unsigned char)*s);
    p->v[p->n].name = n;
    p->v[p->n].value = v;
    p->n++;
    p->fingerprint += param_hash(n, v);
    return 0;
}

int sy__params_set_literal(sy_params *p, const char *name, const char *value)
{
    sy_buf b;
    sy__buf_init(&b);
    sy__buf_puts(&b, "'");
    for (const char *s = value; *s; s++) {
        if (*s == '\'')
            sy__buf_puts(&b, "''");
        else
            sy__buf_append(&b, s, 1);
    }
    sy__buf_puts(&b, "'");
    int rc = b.oom ? -1 : sy__params_set(p, name, strlen(name), b.buf, b.len);
    sy__buf_free(&b);
    return rc;
}

const char *sy__params_get(const sy_params *p, const char *name)
{
    int i = find(p, name, strlen(name));
    return i < 0 ? NULL : p->v[i].value;
}

int sy__params_copy(sy_params *dst, const sy_params *src)
{
    sy__params_free(dst);
    for (int i = 0; i < src->n; i++)
        if (sy__params_set(dst, src->v[i].name, strlen(src->v[i].name),
                           src->v[i].value, strlen(src->v[i].value)) < 0)
            return -1;
    return 0;
}

/* Whether have holds exactly want's parameters.  Names are stored lower
 * case, and two sets made the same way list them in the same order, so each
 * is looked for at its own index first. */
static int same_params(const sy_params *have, const sy_params *want)
{
    for (int i = 0; i < want->n; i++) {
        const sy_param *w = &want->v[i];
        const sy_param *h = &have->v[i];
        if (strcmp(h->name, w->name) != 0) {
            int j = find(have, w->name, strlen(w->name));
            if (j < 0)
                return 0;
            h = &have->v[j];
        }
        if (strcmp(h->value, w->value) != 0)
            return 0;
    }
    return 1;
}

int sy__params_diff_sql(const sy_params *have, const sy_params *want, sy_buf *sql)
{
    /* Equal fingerprints say "probably equal"; a crafted set could collide,
     * so the quick exit is taken only after an exact comparison. */
    if (have->fingerprint == want->fingerprint && have->n == want->n && same_params(have, want))
        return 0;
    int n = 0;
    for (int i = 0; i < want->n; i++) {
        const char *cur = sy__params_get(have, want->v[i].name);
        if (cur && strcmp(cur, want->v[i].value) == 0)
            continue;
        sy__buf_printf(sql, "SET %s TO %s;", want->v[i].name, want->v[i].value);
        n++;
    }
    for (int i = 0; i < have->n; i++) {
        if (sy__params_get(want, have->v[i].name))
            continue;
        sy__buf_printf(sql, "RESET %s;", have->v[i].name);
        n++;
    }
    return n;
}

sy_tracked_set *sy__tracked_set_new(const sy_set_stmt *s)
{
    sy_tracked_set *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->kind = s->kind;
    memcpy(t->name, s->name, sizeof t->name);
    if (s->kind == SY_SET_VALUE && !(t->value = strndup(s->value, s->value_len))) {
        free(t);
        return NULL;
    }
    return t;
}

sy_tracked_set *sy__tracked_set_dup(const sy_tracked_set *t)
{
    if (!t)
        return NULL;
    sy_set_stmt s = {.kind = t->kind, .value = t->value,
                     .value_len = t->value ? strlen(t->value) : 0};
    memcpy(s.name, t->name, sizeof s.name);
    return sy__tracked_set_new(&s);
}

void sy__tracked_set_free(sy_tracked_set *t)
{
    if (!t)
        return;
    free(t->value);
    free(t);
}

/* ------------------------------------------------------------ SET parsing */

typedef struct lexer {
    const char *p, *end;
} lexer;

static void skip_space(lexer *lx)
{
    for (;;) {
        while (lx->p < lx->end && isspace((unsigned char)*lx->p))
            lx->p++;
        if (lx->end - lx->p >= 2 && lx->p[0] == '-' && lx->p[1] == '-') {
            while (lx->p < lx->end && *lx->p != '\n')
                lx->p++;
        } else if (lx->end - lx->p >= 2 && lx->p[0] == '/' && lx->p[1] == '*') {
            const char *close = NULL;
            for (const char *s = lx->p + 2; s + 1 < lx->end; s++)
                if (s[0] == '*' && s[1] == '/') {
                    close = s;
                    break;
                }
            lx->p = close ? close + 2 : lx->end;
        } else {
            return;
        }
    }
}

/* An unquoted identifier; its length, 0 if none. */
static size_t word(lexer *lx, const char **start)
{
    skip_space(lx);
    *start = lx->p;
    const char *s = lx->p;
    if (s < lx->end && (isalpha((unsigned char)*s) || *s == '_')) {
        while (s < lx->end && (isalnum((unsigned char)*s) || *s == '_' || *s == '$'))
            s++;
    }
    lx->p = s;
    return (size_t)(s - *start);
}

static int is_word(const char *w, size_t n, const char *kw)
{
    return strlen(kw) == n && strncasecmp(w, kw, n) == 0;
}

/* name or name.name, lower-cased into out. */
static int read_name(lexer *lx, char *out, size_t cap)
{
    const char *w;
    size_t n = word(lx, &w);
    if (n == 0)
        return -1;
    if (lx->p < lx->end && *lx->p == '.') {
        lx->p++;
        const char *w2;
        size_t n2 = word(lx, &w2);
        if (n2 == 0 || w2 != w + n + 1)
            return -1;
        n += 1 + n2;
    }
    if (n >= cap)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)w[i]);
    out[n] = '\0';
    return 0;
}

sy_set_kind sy__params_parse_set(const char *sql, size_t len, sy_set_stmt *out)
{
    memset(out, 0, sizeof *out);
    lexer lx = {sql, sql + len};
    const char *w;
    size_t n = word(&lx, &w);
    int reset = is_word(w, n, "reset");
    if (!reset && !is_word(w, n, "set"))
        return out->kind = SY_SET_NONE;
    out->kind = SY_SET_UNTRACKED;
    if (reset) {
        lexer save = lx;
        n = word(&lx, &w);
        if (is_word(w, n, "all")) {
            out->kind = SY_SET_RESET_ALL;
        } else {
            lx = save;
            if (read_name(&lx, out->name, sizeof out->name) < 0)
                return out->kind = SY_SET_UNTRACKED;
            out->kind = SY_SET_RESET;
        }
    } else {
        lexer save = lx;
        n = word(&lx, &w);
        if (is_word(w, n, "local") || is_word(w, n, "transaction") ||
            is_word(w, n, "constraints"))
            return out->kind = SY_SET_LOCAL;
        if (is_word(w, n, "role"))
            return out->kind;
        if (is_word(w, n, "session")) {
            save = lx;
            n = word(&lx, &w);
            if (is_word(w, n, "authorization") || is_word(w, n, "characteristics"))
                return out->kind;
        }
        lx = save;
        if (read_name(&lx, out->name, sizeof out->name) < 0)
            return out->kind;
        if (strcmp(out->name, "time") == 0) {
            /* SET TIME ZONE value */
            n = word(&lx, &w);
            if (!is_word(w, n, "zone"))
                return out->kind;
            strcpy(out->name, "timezone");
        } else {
            skip_space(&lx);
            if (lx.p < lx.end && *lx.p == '=') {
                lx.p++;
            } else {
                n = word(&lx, &w);
                if (!is_word(w, n, "to"))
                    return out->kind;
            }
        }
        skip_space(&lx);
        const char *v = lx.p, *e = lx.end;
        while (e > v && (isspace((unsigned char)e[-1]) || e[-1] == ';'))
            e--;
        if (e == v)
            return out->kind = SY_SET_UNTRACKED;
        lexer val = {v, e};
        const char *dw;
        size_t dn = word(&val, &dw);
        if (is_word(dw, dn, "default") && val.p == e) {
            out->kind = SY_SET_RESET;
        } else {
            out->value = v;
            out->value_len = (size_t)(e - v);
            out->kind = SY_SET_VALUE;
        }
    }
    /* Anything after the statement (a second one) is not ours to track. */
    skip_space(&lx);
    if (out->kind == SY_SET_RESET || out->kind == SY_SET_RESET_ALL) {
        while (lx.p < lx.end && *lx.p == ';')
            lx.p++;
        skip_space(&lx);
        if (lx.p != lx.end)
            out->kind = SY_SET_UNTRACKED;
    } else if (memchr(out->value, ';', out->value_len) ||
               memmem(out->value, out->value_len, "--", 2) ||
               memmem(out->value, out->value_len, "/*", 2) || out->value_len >= 255) {
        /* Replayed as written after SET name TO: nothing that could end or
         * comment out the statement, nothing longer than the link keeps. */
        out->kind = SY_SET_UNTRACKED;
    }
    return out->kind;
}
