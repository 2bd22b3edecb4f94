/*
 * util.h - small building blocks every core module uses: intrusive lists,
 * container_of, growable strings, checked allocation and clock helpers.
 * Nothing here knows about PostgreSQL, Lua or the engine.
 */
#ifndef SY_UTIL_H
#define SY_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define sy_container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define SY_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Intrusive doubly linked list with a sentinel head.  A node that is on no
 * list points at itself, so sy_list_remove() is always safe to call. */
typedef struct sy_list {
    struct sy_list *prev, *next;
} sy_list;

static inline void sy_list_init(sy_list *l) { l->prev = l->next = l; }
static inline int sy_list_empty(const sy_list *l) { return l->next == l; }
static inline void sy_list_insert_tail(sy_list *head, sy_list *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}
static inline void sy_list_insert_head(sy_list *head, sy_list *n)
{
    n->next = head->next;
    n->prev = head;
    head->next->prev = n;
    head->next = n;
}
static inline void sy_list_remove(sy_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}
static inline sy_list *sy_list_pop_head(sy_list *head)
{
    if (sy_list_empty(head))
        return NULL;
    sy_list *n = head->next;
    sy_list_remove(n);
    return n;
}

/* A growable NUL-terminated byte buffer.  Owns buf; sy_buf_free releases it.
 * Appends that fail to allocate set oom and keep the old contents. */
typedef struct sy_buf {
    char *buf;
    size_t len, cap;
    int oom;
} sy_buf;

void sy__buf_init(sy_buf *b);
void sy__buf_free(sy_buf *b);
void sy__buf_reset(sy_buf *b);
int sy__buf_append(sy_buf *b, const char *s, size_t n);
int sy__buf_puts(sy_buf *b, const char *s);
int sy__buf_printf(sy_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int sy__buf_vprintf(sy_buf *b, const char *fmt, va_list ap);

/* strdup that returns NULL for NULL.  Caller owns the copy. */
char *sy__strdup(const char *s);
/* The first n bytes of s (which has at least n), NUL-terminated; malloc'd. */
char *sy__strndup(const char *s, size_t n);

/* snprintf into a fixed buffer that always NUL-terminates and never fails
 * the caller: truncation is silent (the buffers hold messages). */
void sy__fmt(char *dst, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Monotonic seconds, for durations not tied to a loop. */
double sy__monotonic(void);

/* xorshift64* step: cheap jitter without global state (seed per object). */
uint64_t sy__rand_next(uint64_t *state);

#endif
