/*
 * auth_file.c - where the proxy's password secrets come from: PgBouncer's
 * userlist.txt format parsed into a sorted, immutable table, plus what every
 * auth method shares (classifying a secret, the mock key, result codes).
 *
 * The table is built once per config load and only read afterwards, so a
 * sorted array with binary search beats a hash table here: one allocation
 * per user, no resizing on the login path, and a reload simply swaps tables.
 * The parser is strict on purpose: a userlist that PgBouncer would half
 * accept (a stray quote, a broken SCRAM secret read as a plain password)
 * locks users out silently, so every bad line is refused with its number.
 */
#include "auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "util.h"

struct sy_authfile {
    sy_auth_entry *entries;   /* sorted by user; each user/secret pair is one
                               * allocation starting at entries[i].user */
    size_t count;
};

const char *sy__auth_strerror(int code)
{
    switch (code) {
    case SY_AUTH_OK: return "ok";
    case SY_AUTH_CONTINUE: return "continue";
    case SY_AUTH_EFAILED: return "authentication failed";
    case SY_AUTH_EMALFORMED: return "malformed authentication message";
    case SY_AUTH_ECHANNEL: return "channel binding is not supported";
    case SY_AUTH_EMECH: return "unsupported SASL mechanism";
    case SY_AUTH_ESTATE: return "authentication exchange already ended";
    case SY_AUTH_ENOMEM: return "out of memory";
    case SY_AUTH_ECRYPTO: return "cryptographic library failure";
    case SY_AUTH_EINVAL: return "invalid argument";
    case SY_AUTH_EFILE: return "auth file refused";
    default: return "unknown authentication error";
    }
}

const char *sy__auth_sqlstate(int code)
{
    switch (code) {
    case SY_AUTH_EFAILED: return "28P01";    /* invalid_password */
    case SY_AUTH_EMALFORMED:
    case SY_AUTH_EMECH:
    case SY_AUTH_ESTATE: return "08P01";     /* protocol_violation */
    case SY_AUTH_ECHANNEL: return "0A000";   /* feature_not_supported */
    case SY_AUTH_ENOMEM: return "53200";     /* out_of_memory */
    default: return "XX000";
    }
}

static int is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return 1;
}

int sy__auth_secret_kind(const char *secret)
{
    if (secret == NULL || secret[0] == '\0')
        return SY_AUTH_EINVAL;
    /* Same test as PostgreSQL's get_password_type(): anything else that
     * merely starts with "md5" is a plain password. */
    if (strncmp(secret, "md5", 3) == 0 && strlen(secret) == SY_AUTH_MD5_HASH_LEN
        && is_lower_hex(secret + 3, 32))
        return SY_SECRET_MD5;
    if (strncmp(secret, "SCRAM-SHA-256$", 14) == 0) {
        /* PostgreSQL would fall back to "plain password" here; a userlist
         * with a truncated secret is far more likely than a password that
         * starts with SCRAM-SHA-256$, so we refuse it instead. */
        sy_scram_secret parsed;
        int rc = sy__scram_secret_parse(secret, &parsed);
        OPENSSL_cleanse(&parsed, sizeof(parsed));
        return rc == SY_AUTH_OK ? SY_SECRET_SCRAM : SY_AUTH_EMALFORMED;
    }
    return SY_SECRET_PLAIN;
}

int sy__auth_mock_key_init(uint8_t key[SY_AUTH_MOCK_KEY_LEN])
{
    if (key == NULL)
        return SY_AUTH_EINVAL;
    return RAND_bytes(key, SY_AUTH_MOCK_KEY_LEN) == 1 ? SY_AUTH_OK : SY_AUTH_ECRYPTO;
}

/* ---- parser --------------------------------------------------------------- */

typedef struct parser {
    const char *p, *end;
    int line;
    const char *name;
    char *err;
    size_t errlen;
} parser;

static int fail(parser *ps, const char *what)
{
    sy__fmt(ps->err, ps->errlen, "%s:%d: %s", ps->name, ps->line, what);
    return SY_AUTH_EFILE;
}

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

static void skip_blanks(parser *ps)
{
    while (ps->p < ps->end && is_blank(*ps->p))
        ps->p++;
}

/* Reads one "quoted" field into dst (cap bytes incl. NUL).  A doubled ""
 * stands for one quote, as PgBouncer writes them. */
static int read_quoted(parser *ps, char *dst, size_t cap, size_t *len, const char *what)
{
    char msg[96];
    if (ps->p >= ps->end || *ps->p != '"') {
        sy__fmt(msg, sizeof(msg), "expected a quoted %s", what);
        return fail(ps, msg);
    }
    ps->p++;
    size_t n = 0;
    for (;;) {
        if (ps->p >= ps->end || *ps->p == '\n') {
            sy__fmt(msg, sizeof(msg), "unterminated quoted %s", what);
            return fail(ps, msg);
        }
        char c = *ps->p++;
        if (c == '\0') {
            sy__fmt(msg, sizeof(msg), "NUL byte in %s", what);
            return fail(ps, msg);
        }
        if (c == '"') {
            if (ps->p < ps->end && *ps->p == '"')
                ps->p++;
            else
                break;
        }
        if (n + 1 >= cap) {
            sy__fmt(msg, sizeof(msg), "%s longer than %zu bytes", what, cap - 1);
            return fail(ps, msg);
        }
        dst[n++] = c;
    }
    dst[n] = '\0';
    *len = n;
    if (n == 0) {
        sy__fmt(msg, sizeof(msg), "empty %s", what);
        return fail(ps, msg);
    }
    return SY_AUTH_OK;
}

static int add_entry(sy_authfile *af, size_t *cap, const char *user, size_t ulen,
                     const char *secret, size_t slen, sy_secret_kind kind, int line)
{
    if (af->count == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        sy_auth_entry *ne = realloc(af->entries, ncap * sizeof(*ne));
        if (ne == NULL)
            return SY_AUTH_ENOMEM;
        af->entries = ne;
        *cap = ncap;
    }
    char *mem = malloc(ulen + slen + 2);
    if (mem == NULL)
        return SY_AUTH_ENOMEM;
    memcpy(mem, user, ulen + 1);
    memcpy(mem + ulen + 1, secret, slen + 1);
    af->entries[af->count++] = (sy_auth_entry){
        .user = mem, .secret = mem + ulen + 1, .kind = kind, .line = line
    };
    return SY_AUTH_OK;
}

/* Parses the line at ps->p (already past leading blanks, not a comment). */
static int parse_line(parser *ps, sy_authfile *af, size_t *cap)
{
    char user[SY_AUTH_NAME_MAX + 1];
    char secret[SY_AUTH_SECRET_MAX + 1];
    size_t ulen, slen;
    int rc = read_quoted(ps, user, sizeof(user), &ulen, "user name");
    if (rc == SY_AUTH_OK) {
        const char *before = ps->p;
        skip_blanks(ps);
        if (ps->p == before && ps->p < ps->end && *ps->p != '\n')
            rc = fail(ps, "expected blanks between the user name and the secret");
        else
            rc = read_quoted(ps, secret, sizeof(secret), &slen, "secret");
    }
    if (rc == SY_AUTH_OK) {
        skip_blanks(ps);
        if (ps->p < ps->end && *ps->p != '\n' && *ps->p != ';')
            rc = fail(ps, "unexpected text after the secret");
    }
    if (rc == SY_AUTH_OK) {
        int kind = sy__auth_secret_kind(secret);
        if (kind == SY_AUTH_EMALFORMED)
            rc = fail(ps, "malformed SCRAM-SHA-256 secret (expected "
                          "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)");
        else if (kind < 0)
            rc = fail(ps, "unusable secret");
        else
            rc = add_entry(af, cap, user, ulen, secret, slen, (sy_secret_kind)kind, ps->line);
    }
    OPENSSL_cleanse(secret, sizeof(secret));
    return rc;
}

static int entry_cmp(const void *a, const void *b)
{
    const sy_auth_entry *x = a, *y = b;
    int c = strcmp(x->user, y->user);
    /* Ties keep file order so the duplicate reported is the later line. */
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

int sy__authfile_parse(const char *text, size_t len, const char *name,
                       sy_authfile **out, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (out == NULL || (text == NULL && len > 0)) {
        sy__fmt(err, errlen, "invalid argument");
        return SY_AUTH_EINVAL;
    }
    *out = NULL;
    sy_authfile *af = calloc(1, sizeof(*af));
    if (af == NULL)
        return SY_AUTH_ENOMEM;
    parser ps = { .p = text, .end = text + len, .line = 0,
                  .name = name ? name : "auth file", .err = err, .errlen = errlen };
    size_t cap = 0;
    int rc = SY_AUTH_OK;
    while (rc == SY_AUTH_OK && ps.p < ps.end) {
        ps.line++;
        skip_blanks(&ps);
        if (ps.p < ps.end && *ps.p != '\n' && *ps.p != ';')
            rc = parse_line(&ps, af, &cap);
        if (rc != SY_AUTH_OK)
            break;
        /* The rest of the line is blank or a comment (checked above). */
        const char *nl = memchr(ps.p, '\n', (size_t)(ps.end - ps.p));
        ps.p = nl ? nl + 1 : ps.end;
    }
    if (rc == SY_AUTH_OK && af->count > 1) {
        qsort(af->entries, af->count, sizeof(*af->entries), entry_cmp);
        for (size_t i = 1; i < af->count; i++) {
            if (strcmp(af->entries[i - 1].user, af->entries[i].user) == 0) {
                ps.line = af->entries[i].line;
                char msg[SY_AUTH_NAME_MAX + 64];
                sy__fmt(msg, sizeof(msg), "duplicate user \"%s\" (first on line %d)",
                        af->entries[i].user, af->entries[i - 1].line);
                rc = fail(&ps, msg);
                break;
            }
        }
    }
    if (rc != SY_AUTH_OK) {
        if (rc == SY_AUTH_ENOMEM)
            sy__fmt(err, errlen, "%s: out of memory", ps.name);
        sy__authfile_free(af);
        return rc;
    }
    *out = af;
    return SY_AUTH_OK;
}

int sy__authfile_load(const char *path, sy_authfile **out, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    if (path == NULL || out == NULL) {
        sy__fmt(err, errlen, "invalid argument");
        return SY_AUTH_EINVAL;
    }
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        sy__fmt(err, errlen, "%s: %s", path, strerror(errno));
        return SY_AUTH_EFILE;
    }
    sy_buf b;
    sy__buf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        sy__buf_append(&b, chunk, n);
    int read_err = ferror(f);
    fclose(f);
    OPENSSL_cleanse(chunk, sizeof(chunk));
    int rc;
    if (read_err) {
        sy__fmt(err, errlen, "%s: read error", path);
        rc = SY_AUTH_EFILE;
    } else if (b.oom) {
        sy__fmt(err, errlen, "%s: out of memory", path);
        rc = SY_AUTH_ENOMEM;
    } else {
        rc = sy__authfile_parse(b.buf, b.len, path, out, err, errlen);
    }
    if (b.buf)
        OPENSSL_cleanse(b.buf, b.cap);
    sy__buf_free(&b);
    return rc;
}

void sy__authfile_free(sy_authfile *af)
{
    if (af == NULL)
        return;
    for (size_t i = 0; i < af->count; i++) {
        char *mem = (char *)af->entries[i].user;
        OPENSSL_cleanse(mem, strlen(mem) + strlen(af->entries[i].secret) + 2);
        free(mem);
    }
    free(af->entries);
    free(af);
}

static int key_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const sy_auth_entry *)elem)->user);
}

const sy_auth_entry *sy__authfile_lookup(const sy_authfile *af, const char *user)
{
    if (af == NULL || user == NULL || af->count == 0)
        return NULL;
    return bsearch(user, af->entries, af->count, sizeof(*af->entries), key_cmp);
}

size_t sy__authfile_count(const sy_authfile *af)
{
    return af ? af->count : 0;
}
