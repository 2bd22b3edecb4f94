/*
 * auth_scram.c - SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, as
 * PostgreSQL speaks it: one exchange object per login, fed the client's
 * messages and producing the server's, with no I/O of its own.
 *
 * Deliberate choices, mostly PostgreSQL's own:
 *  - no channel binding yet: gs2 flags "n" and "y" are accepted ("y" is
 *    only a downgrade signal when the server offers -PLUS, which we do not);
 *    "p=" is refused with its own code so the proxy can say why.  Once TLS
 *    offers SCRAM-SHA-256-PLUS, "y" must become an error.
 *  - the user name inside the SCRAM message is ignored: the startup
 *    packet's user is the one being authenticated (libpq sends "n=").
 *  - authorization identities (a=) and mandatory extensions (m=) are
 *    refused; optional extensions are skipped.
 *  - unknown users and md5 secrets run a mock exchange: random keys, a salt
 *    derived from the mock key and the user name (so it is the same at
 *    every attempt, like a real one), and the failure only at the final
 *    step.  Plain-password users get their salt the same way instead of a
 *    fresh random one per login, which would set them apart from the rest.
 *  - plain passwords are not SASLprep-normalised: for ASCII passwords that
 *    is exactly what PostgreSQL does; a non-ASCII plain password that NFKC
 *    would change fails (store a SCRAM secret for such users).
 */
#include "auth.h"

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "util.h"

#define RAW_NONCE_LEN 18          /* PostgreSQL's: 24 base64 characters */
#define NONCE_MAX 64
#define MOCK_SALT_LEN 16

typedef enum scram_state {
    SCRAM_INIT,          /* waiting for client-first-message */
    SCRAM_SENT_FIRST,    /* server-first sent, waiting for client-final */
    SCRAM_DONE,          /* proof verified, server-final produced */
    SCRAM_FAILED         /* any error: the exchange is over */
} scram_state;

struct sy_scram {
    scram_state state;
    int mock;                         /* fail at the end whatever the proof */
    const char *mock_why;             /* static, for the server log */
    const char *detail;               /* static, last failure in words */
    sy_scram_secret key;              /* wiped on free */
    char server_nonce[NONCE_MAX + 1]; /* set by a test or at the first step */
    char gs2_flag;                    /* 'n' or 'y' */
    char *client_first_bare;          /* owned; part of AuthMessage */
    size_t cfb_len;
    char *server_first;               /* owned; starts "r=<nonce>," */
    size_t sf_len;
    size_t nonce_len;                 /* combined nonce, at server_first + 2 */
    char server_final[2 + 4 * ((SY_SCRAM_KEY_LEN + 2) / 3) + 1];
    size_t final_len;
};

/* The only place the state changes, so illegal moves show up in tests. */
static void set_state(sy_scram *s, scram_state to)
{
    assert(to == SCRAM_FAILED
           || (s->state == SCRAM_INIT && to == SCRAM_SENT_FIRST)
           || (s->state == SCRAM_SENT_FIRST && to == SCRAM_DONE));
    assert(s->state != SCRAM_DONE && s->state != SCRAM_FAILED);
    s->state = to;
}

/* ---- base64 ---------------------------------------------------------------- */

/* EVP_DecodeBlock skips blanks and counts padding as data, so the strict
 * shape (alphabet, whole quanta, padding only at the end) is checked here
 * and the padding subtracted.  Returns the decoded size or -1. */
static long b64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    if (len == 0 || len % 4 != 0 || len > INT_MAX)
        return -1;
    size_t pad = 0;
    while (pad < 2 && in[len - 1 - pad] == '=')
        pad++;
    for (size_t i = 0; i < len - pad; i++) {
        char c = in[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
              || c == '+' || c == '/'))
            return -1;
    }
    size_t n = len / 4 * 3;
    if (n - pad > cap)
        return -1;
    uint8_t *tmp = malloc(n);
    if (tmp == NULL)
        return -1;
    int got = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)len);
    long rc = -1;
    if (got == (int)n) {
        memcpy(out, tmp, n - pad);
        rc = (long)(n - pad);
    }
    OPENSSL_cleanse(tmp, n);
    free(tmp);
    return rc;
}

static size_t b64_len(size_t n) { return 4 * ((n + 2) / 3); }

/* out must hold b64_len(n) + 1 bytes. */
static size_t b64_encode(const uint8_t *in, size_t n, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* ---- keys ------------------------------------------------------------------ */

static int hmac256(const uint8_t *key, size_t klen, const void *d, size_t n, uint8_t *out)
{
    unsigned int len = 0;
    if (HMAC(EVP_sha256(), key, (int)klen, d, n, out, &len) == NULL || len != SY_SCRAM_KEY_LEN)
        return SY_AUTH_ECRYPTO;
    return SY_AUTH_OK;
}

static int derive_keys(const char *password, const uint8_t *salt, size_t salt_len,
                       int iterations, uint8_t *stored, uint8_t *server)
{
    uint8_t salted[SY_SCRAM_KEY_LEN], client[SY_SCRAM_KEY_LEN];
    int rc = SY_AUTH_ECRYPTO;
    if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, iterations,
                          EVP_sha256(), SY_SCRAM_KEY_LEN, salted) == 1
        && hmac256(salted, sizeof(salted), "Client Key", 10, client) == SY_AUTH_OK
        && SHA256(client, sizeof(client), stored) != NULL
        && hmac256(salted, sizeof(salted), "Server Key", 10, server) == SY_AUTH_OK)
        rc = SY_AUTH_OK;
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client, sizeof(client));
    return rc;
}

/* A salt that is stable per (mock key, user) and unguessable without the key. */
static int user_salt(const uint8_t *mock_key, const char *user, uint8_t *salt)
{
    uint8_t full[SY_SCRAM_KEY_LEN];
    int rc = hmac256(mock_key, SY_AUTH_MOCK_KEY_LEN, user, strlen(user), full);
    memcpy(salt, full, MOCK_SALT_LEN);
    return rc;
}

int sy__scram_secret_parse(const char *secret, sy_scram_secret *out)
{
    if (secret == NULL || out == NULL)
        return SY_AUTH_EINVAL;
    memset(out, 0, sizeof(*out));
    if (strncmp(secret, "SCRAM-SHA-256$", 14) != 0)
        return SY_AUTH_EMALFORMED;
    const char *p = secret + 14;
    long iter = 0;
    if (*p < '1' || *p > '9')
        return SY_AUTH_EMALFORMED;
    while (*p >= '0' && *p <= '9') {
        iter = iter * 10 + (*p++ - '0');
        if (iter > INT_MAX)
            return SY_AUTH_EMALFORMED;
    }
    if (*p++ != ':')
        return SY_AUTH_EMALFORMED;
    const char *dollar = strchr(p, '$');
    const char *colon = dollar ? strchr(dollar + 1, ':') : NULL;
    if (colon == NULL)
        return SY_AUTH_EMALFORMED;
    long salt_len = b64_decode(p, (size_t)(dollar - p), out->salt, sizeof(out->salt));
    long sk = b64_decode(dollar + 1, (size_t)(colon - dollar - 1), out->stored_key,
                         SY_SCRAM_KEY_LEN);
    long vk = b64_decode(colon + 1, strlen(colon + 1), out->server_key, SY_SCRAM_KEY_LEN);
    if (salt_len <= 0 || sk != SY_SCRAM_KEY_LEN || vk != SY_SCRAM_KEY_LEN) {
        OPENSSL_cleanse(out, sizeof(*out));
        return SY_AUTH_EMALFORMED;
    }
    out->iterations = (int)iter;
    out->salt_len = (size_t)salt_len;
    return SY_AUTH_OK;
}

int sy__scram_build_secret(const char *password, const uint8_t *salt, size_t salt_len,
                           int iterations, char *out, size_t outlen)
{
    uint8_t rnd[MOCK_SALT_LEN];
    if (password == NULL || out == NULL || iterations <= 0
        || (salt != NULL && (salt_len == 0 || salt_len > 64)))
        return SY_AUTH_EINVAL;
    if (salt == NULL) {
        if (RAND_bytes(rnd, sizeof(rnd)) != 1)
            return SY_AUTH_ECRYPTO;
        salt = rnd;
        salt_len = sizeof(rnd);
    }
    uint8_t stored[SY_SCRAM_KEY_LEN], server[SY_SCRAM_KEY_LEN];
    int rc = derive_keys(password, salt, salt_len, iterations, stored, server);
    if (rc == SY_AUTH_OK) {
        char s64[b64_len(64) + 1], k1[b64_len(SY_SCRAM_KEY_LEN) + 1], k2[sizeof(k1)];
        b64_encode(salt, salt_len, s64);
        b64_encode(stored, sizeof(stored), k1);
        b64_encode(server, sizeof(server), k2);
        int n = snprintf(out, outlen, "SCRAM-SHA-256$%d:%s$%s:%s", iterations, s64, k1, k2);
        if (n < 0 || (size_t)n >= outlen) {
            if (outlen)
                out[0] = '\0';
            rc = SY_AUTH_EINVAL;
        }
    }
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(server, sizeof(server));
    return rc;
}

/* ---- the exchange ----------------------------------------------------------- */

const char *sy__scram_mechanisms(size_t *len)
{
    static const char list[] = "SCRAM-SHA-256\0";   /* + the literal's own NUL */
    if (len)
        *len = sizeof(list);
    return list;
}

int sy__scram_check_mechanism(const char *mech)
{
    if (mech == NULL)
        return SY_AUTH_EMECH;
    if (strcmp(mech, "SCRAM-SHA-256") == 0)
        return SY_AUTH_OK;
    if (strcmp(mech, "SCRAM-SHA-256-PLUS") == 0)
        return SY_AUTH_ECHANNEL;
    return SY_AUTH_EMECH;
}

static int setup_mock(sy_scram *s, const uint8_t *mock_key, const char *user, const char *why)
{
    s->mock = 1;
    s->mock_why = why;
    s->key.iterations = SY_SCRAM_DEFAULT_ITERATIONS;
    s->key.salt_len = MOCK_SALT_LEN;
    if (RAND_bytes(s->key.stored_key, SY_SCRAM_KEY_LEN) != 1
        || RAND_bytes(s->key.server_key, SY_SCRAM_KEY_LEN) != 1)
        return SY_AUTH_ECRYPTO;
    return user_salt(mock_key, user, s->key.salt);
}

int sy__scram_new(const char *user, const char *secret,
                  const uint8_t mock_key[SY_AUTH_MOCK_KEY_LEN], sy_scram **out)
{
    if (out == NULL)
        return SY_AUTH_EINVAL;
    *out = NULL;
    if (user == NULL || mock_key == NULL)
        return SY_AUTH_EINVAL;
    sy_scram *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return SY_AUTH_ENOMEM;
    s->state = SCRAM_INIT;
    int kind = secret ? sy__auth_secret_kind(secret) : SY_AUTH_EINVAL;
    int rc;
    if (kind == SY_SECRET_SCRAM) {
        rc = sy__scram_secret_parse(secret, &s->key);
    } else if (kind == SY_SECRET_PLAIN) {
        s->key.iterations = SY_SCRAM_DEFAULT_ITERATIONS;
        s->key.salt_len = MOCK_SALT_LEN;
        rc = user_salt(mock_key, user, s->key.salt);
        if (rc == SY_AUTH_OK)
            rc = derive_keys(secret, s->key.salt, s->key.salt_len, s->key.iterations,
                             s->key.stored_key, s->key.server_key);
    } else {
        /* A broken stored secret is the operator's problem, but the client
         * must see the same as for anybody else, so it is a mock too. */
        rc = setup_mock(s, mock_key, user, secret == NULL ? "no such user"
                        : kind == SY_SECRET_MD5 ? "user has an md5 secret, not a SCRAM one"
                        : kind == SY_AUTH_EMALFORMED ? "stored SCRAM secret is malformed"
                        : "user has no usable password");
    }
    if (rc != SY_AUTH_OK) {
        sy__scram_free(s);
        return rc;
    }
    *out = s;
    return SY_AUTH_OK;
}

void sy__scram_free(sy_scram *s)
{
    if (s == NULL)
        return;
    free(s->client_first_bare);
    free(s->server_first);
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

static int nonce_char_ok(char c) { return c >= 0x21 && c <= 0x7e && c != ','; }

int sy__scram_set_server_nonce(sy_scram *s, const char *nonce)
{
    if (s == NULL || nonce == NULL || s->state != SCRAM_INIT)
        return SY_AUTH_EINVAL;
    size_t n = strlen(nonce);
    if (n == 0 || n > NONCE_MAX)
        return SY_AUTH_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!nonce_char_ok(nonce[i]))
            return SY_AUTH_EINVAL;
    memcpy(s->server_nonce, nonce, n + 1);
    return SY_AUTH_OK;
}

const char *sy__scram_detail(const sy_scram *s)
{
    return s && s->detail ? s->detail : "";
}

static int refuse(sy_scram *s, int code, const char *why)
{
    s->detail = why;
    set_state(s, SCRAM_FAILED);
    return code;
}

/* A cursor over one client message: attributes are "x=value" split by ','. */
typedef struct cursor {
    const char *p, *end;
} cursor;

/* Reads attribute `want` (0: any letter) and its value up to ',' or the end.
 * Leaves p at the ',' or the end. */
static int read_attr(cursor *c, char want, char *attr, const char **val, size_t *vlen)
{
    if (c->end - c->p < 2 || c->p[1] != '=')
        return 0;
    char a = c->p[0];
    if (want ? a != want : !((a >= 'a' && a <= 'z') || (a >= 'A' && a <= 'Z')))
        return 0;
    if (attr)
        *attr = a;
    c->p += 2;
    const char *comma = memchr(c->p, ',', (size_t)(c->end - c->p));
    const char *stop = comma ? comma : c->end;
    *val = c->p;
    *vlen = (size_t)(stop - c->p);
    c->p = stop;
    return 1;
}

static int eat_comma(cursor *c)
{
    if (c->p < c->end && *c->p == ',') {
        c->p++;
        return 1;
    }
    return 0;
}

static int client_first(sy_scram *s, const char *in, size_t len)
{
    cursor c = { in, in + len };
    const char *v;
    size_t vlen;
    if (len >= 2 && in[0] == 'p' && in[1] == '=')
        return refuse(s, SY_AUTH_ECHANNEL, "the client requires channel binding, "
                      "but the server does not offer SCRAM-SHA-256-PLUS");
    if (len < 3 || (in[0] != 'n' && in[0] != 'y') || in[1] != ',')
        return refuse(s, SY_AUTH_EMALFORMED, "malformed SCRAM message "
                      "(expected a gs2 header starting with \"n,\" or \"y,\")");
    s->gs2_flag = in[0];
    c.p = in + 2;
    if (c.p[0] == 'a' && c.end - c.p >= 2 && c.p[1] == '=')
        return refuse(s, SY_AUTH_EMALFORMED,
                      "SCRAM authorization identity (a=) is not supported");
    if (!eat_comma(&c))
        return refuse(s, SY_AUTH_EMALFORMED, "malformed SCRAM message "
                      "(gs2 header must end with \",\")");
    const char *bare = c.p;
    if (c.end - c.p >= 2 && c.p[0] == 'm' && c.p[1] == '=')
        return refuse(s, SY_AUTH_EMALFORMED, "SCRAM mandatory extensions are not supported");
    if (!read_attr(&c, 'n', NULL, &v, &vlen) || !eat_comma(&c))
        return refuse(s, SY_AUTH_EMALFORMED, "malformed SCRAM message (expected \"n=\")");
    if (!read_attr(&c, 'r', NULL, &v, &vlen) || vlen == 0)
        return refuse(s, SY_AUTH_EMALFORMED, "malformed SCRAM message (expected \"r=\")");
    for (size_t i = 0; i < vlen; i++)
        if (!nonce_char_ok(v[i]))
            return refuse(s, SY_AUTH_EMALFORMED, "SCRAM client nonce has invalid characters");
    const char *cnonce = v;
    size_t cnonce_len = vlen;
    while (c.p < c.end) {
        if (!eat_comma(&c) || !read_attr(&c, 0, NULL, &v, &vlen))
            return refuse(s, SY_AUTH_EMALFORMED, "malformed SCRAM extension attribute");
    }

    if (s->server_nonce[0] == '\0') {
        uint8_t raw[RAW_NONCE_LEN];
        if (RAND_bytes(raw, sizeof(raw)) != 1)
            return refuse(s, SY_AUTH_ECRYPTO, "no randomness for the SCRAM nonce");
        b64_encode(raw, sizeof(raw), s->server_nonce);
    }
    size_t snonce_len = strlen(s->server_nonce);
    char salt64[b64_len(SY_SCRAM_SALT_MAX) + 1];
    size_t salt64_len = b64_encode(s->key.salt, s->key.salt_len, salt64);
    char iter[16];
    int iter_len = snprintf(iter, sizeof(iter), "%d", s->key.iterations);

    s->cfb_len = (size_t)(c.end - bare);
    s->client_first_bare = malloc(s->cfb_len + 1);
    s->nonce_len = cnonce_len + snonce_len;
    s->sf_len = 2 + s->nonce_len + 3 + salt64_len + 3 + (size_t)iter_len;
    s->server_first = malloc(s->sf_len + 1);
    if (s->client_first_bare == NULL || s->server_first == NULL)
        return refuse(s, SY_AUTH_ENOMEM, "out of memory");
    memcpy(s->client_first_bare, bare, s->cfb_len);
    s->client_first_bare[s->cfb_len] = '\0';
    snprintf(s->server_first, s->sf_len + 1, "r=%.*s%s,s=%s,i=%s",
             (int)cnonce_len, cnonce, s->server_nonce, salt64, iter);
    set_state(s, SCRAM_SENT_FIRST);
    return SY_AUTH_CONTINUE;
}

static int client_final(sy_scram *s, const char *in, size_t len)
{
    cursor c = { in, in + len };
    const char *v;
    size_t vlen;
    uint8_t cbind[8];
    if (!read_attr(&c, 'c', NULL, &v, &vlen) || !eat_comma(&c))
        return refuse(s, SY_AUTH_EMALFORMED, "malformed SCRAM message (expected \"c=\")");
    /* Without channel binding the client echoes its gs2 header exactly. */
    const char gs2[3] = { s->gs2_flag, ',', ',' };
    if (b64_decode(v, vlen, cbind, sizeof(cbind)) != 3 || memcmp(cbind, gs2, 3) != 0)
        return refuse(s, SY_AUTH_EMALFORMED, "SCRAM channel binding check failed");
    if (!read_attr(&c, 'r', NULL, &v, &vlen))
        return refuse(s, SY_AUTH_EMALFORMED, "malformed SCRAM message (expected \"r=\")");
    if (vlen != s->nonce_len || memcmp(v, s->server_first + 2, vlen) != 0)
        return refuse(s, SY_AUTH_EMALFORMED, "SCRAM nonce does not match");
    const char *proof = NULL, *without_proof_end = NULL;
    size_t proof_len = 0;
    while (c.p < c.end) {
        const char *comma = c.p;
        char attr;
        if (!eat_comma(&c) || !read_attr(&c, 0, &attr, &v, &vlen))
            return refuse(s, SY_AUTH_EMALFORMED, "malformed SCRAM attribute");
        if (attr == 'p') {
            without_proof_end = comma;
            proof = v;
            proof_len = vlen;
            break;
        }
    }
    if (proof == NULL || c.p != c.end)
        return refuse(s, SY_AUTH_EMALFORMED, "SCRAM proof (p=) missing or not last");
    uint8_t client_proof[SY_SCRAM_KEY_LEN];
    if (b64_decode(proof, proof_len, client_proof, sizeof(client_proof)) != SY_SCRAM_KEY_LEN)
        return refuse(s, SY_AUTH_EMALFORMED, "malformed SCRAM proof");

    /* AuthMessage = client-first-bare "," server-first "," final-without-proof */
    size_t wp_len = (size_t)(without_proof_end - in);
    size_t am_len = s->cfb_len + 1 + s->sf_len + 1 + wp_len;
    char *am = malloc(am_len);
    if (am == NULL)
        return refuse(s, SY_AUTH_ENOMEM, "out of memory");
    memcpy(am, s->client_first_bare, s->cfb_len);
    am[s->cfb_len] = ',';
    memcpy(am + s->cfb_len + 1, s->server_first, s->sf_len);
    am[s->cfb_len + 1 + s->sf_len] = ',';
    memcpy(am + s->cfb_len + 2 + s->sf_len, in, wp_len);

    uint8_t sig[SY_SCRAM_KEY_LEN], client_key[SY_SCRAM_KEY_LEN], h[SY_SCRAM_KEY_LEN];
    uint8_t server_sig[SY_SCRAM_KEY_LEN];
    int rc = hmac256(s->key.stored_key, SY_SCRAM_KEY_LEN, am, am_len, sig);
    if (rc == SY_AUTH_OK)
        rc = hmac256(s->key.server_key, SY_SCRAM_KEY_LEN, am, am_len, server_sig);
    free(am);
    if (rc != SY_AUTH_OK)
        return refuse(s, rc, "HMAC failed");
    for (size_t i = 0; i < SY_SCRAM_KEY_LEN; i++)
        client_key[i] = client_proof[i] ^ sig[i];
    SHA256(client_key, sizeof(client_key), h);
    int same = CRYPTO_memcmp(h, s->key.stored_key, SY_SCRAM_KEY_LEN) == 0;
    OPENSSL_cleanse(client_key, sizeof(client_key));
    OPENSSL_cleanse(sig, sizeof(sig));
    if (!same || s->mock) {
        OPENSSL_cleanse(server_sig, sizeof(server_sig));
        return refuse(s, SY_AUTH_EFAILED, s->mock ? s->mock_why : "wrong password");
    }
    memcpy(s->server_final, "v=", 2);
    s->final_len = 2 + b64_encode(server_sig, sizeof(server_sig), s->server_final + 2);
    OPENSSL_cleanse(server_sig, sizeof(server_sig));
    set_state(s, SCRAM_DONE);
    return SY_AUTH_OK;
}

int sy__scram_step(sy_scram *s, const char *in, size_t in_len,
                   const char **out, size_t *out_len)
{
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (s == NULL || out == NULL || out_len == NULL || (in == NULL && in_len))
        return SY_AUTH_EINVAL;
    if (s->state == SCRAM_DONE || s->state == SCRAM_FAILED) {
        s->detail = "the SCRAM exchange has already ended";
        return SY_AUTH_ESTATE;
    }
    if (in_len == 0)
        return refuse(s, SY_AUTH_EMALFORMED, "empty SCRAM message");
    if (in_len > SY_SCRAM_MESSAGE_MAX)
        return refuse(s, SY_AUTH_EMALFORMED, "SCRAM message too long");
    if (memchr(in, '\0', in_len) != NULL)
        return refuse(s, SY_AUTH_EMALFORMED, "NUL byte in SCRAM message");
    if (s->state == SCRAM_INIT) {
        int rc = client_first(s, in, in_len);
        if (rc == SY_AUTH_CONTINUE) {
            *out = s->server_first;
            *out_len = s->sf_len;
        }
        return rc;
    }
    int rc = client_final(s, in, in_len);
    if (rc == SY_AUTH_OK) {
        *out = s->server_final;
        *out_len = s->final_len;
    }
    return rc;
}
