/*
 * classify_hints.c - the routing hints carried by SQL comments.
 *
 * classify.c picks the comments that may carry hints: those before a
 * statement's first token, and the ones after its last token; the lexer
 * (classify_lex.c) hands over the body of each.  Three dialects are
 * understood (spans never include the quotes):
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

/* Byte classes, so each byte of a comment costs one lookup: hints ride on
 * every query an ORM sends (sqlcommenter, marginalia). */
enum { H_BLANK = 1, H_KEY = 2, H_QUOTED_STOP = 4 };

#define H_ROW_26(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, \
                    v, v, v, v, v, v, v
static const uint8_t hint_class[256] = {
    [' '] = H_BLANK, ['\t'] = H_BLANK, ['\n'] = H_BLANK, ['\r'] = H_BLANK,
    ['\f'] = H_BLANK, ['\v'] = H_BLANK,
    ['0'] = H_KEY, H_KEY, H_KEY, H_KEY, H_KEY, H_KEY, H_KEY, H_KEY, H_KEY,
    H_KEY,
    ['A'] = H_ROW_26(H_KEY), ['a'] = H_ROW_26(H_KEY),
    ['_'] = H_KEY, ['.'] = H_KEY, ['-'] = H_KEY, ['%'] = H_KEY,
    /* where a sqlcommenter quoted value may end or escape */
    ['\''] = H_QUOTED_STOP, ['"'] = H_QUOTED_STOP, ['\\'] = H_QUOTED_STOP,
};

static bool is_blank(unsigned char c)
{
    return hint_class[c] & H_BLANK;
}

static bool is_key_char(unsigned char c)
{
    return hint_class[c] & H_KEY;
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
            unsigned char quote = (unsigned char)s[i];
            size_t j = i + 1;
            while (j < end) {
                unsigned char c = (unsigned char)s[j];
                if (!(hint_class[c] & H_QUOTED_STOP))
                    j++;
                else if (c == quote)
                    break;
                else
                    j += c == '\\' ? 2 : 1;
            }
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

void sy__read_hint_comment(const char *sql, size_t off, size_t len,
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
