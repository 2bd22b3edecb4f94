/*
 * util.c - growable buffers, string helpers, clocks and a per-object random
 * generator.  Kept separate so each engine module stays about one concern.
 */
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void sy__buf_init(sy_buf *b)
{
    b->buf = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

void sy__buf_free(sy_buf *b)
{
    free(b->buf);
    sy__buf_init(b);
}

void sy__buf_reset(sy_buf *b)
{
    b->len = 0;
    b->oom = 0;
    if (b->buf)
        b->buf[0] = '\0';
}

static int buf_reserve(sy_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->buf, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->buf = p;
    b->cap = cap;
    return 0;
}

int sy__buf_append(sy_buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
    return 0;
}

int sy__buf_puts(sy_buf *b, const char *s)
{
    return sy__buf_append(b, s, strlen(s));
}

int sy__buf_vprintf(sy_buf *b, const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0 || buf_reserve(b, (size_t)n) < 0)
        return -1;
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int sy__buf_printf(sy_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = sy__buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

char *sy__strdup(const char *s)
{
    return s ? sy__strndup(s, strlen(s)) : NULL;
}

char *sy__strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

void sy__fmt(char *dst, size_t len, const char *fmt, ...)
{
    if (!dst || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, len, fmt, ap);
    va_end(ap);
}

double sy__monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t sy__rand_next(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}
