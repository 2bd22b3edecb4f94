/*
 * auth_md5.c - PostgreSQL's md5 password method, server side.
 *
 * The client answers AuthenticationMD5Password(salt) with
 *     "md5" + md5hex(md5hex(password + user) + salt)
 * and the stored secret is "md5" + md5hex(password + user), so the server
 * never needs the password itself.  Whatever the secret (none, a SCRAM
 * secret md5 cannot use, a plain password), the same hashing happens and
 * the comparison is constant-time, so neither the answer nor its timing
 * tells a client whether the user exists.
 *
 * MD5 goes through EVP_Digest: OpenSSL 3 deprecates the MD5() shortcut.
 */
#include "auth.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define MD5_HEX 32

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
}

/* md5hex of a then b, into out[32] (not NUL-terminated). */
static int md5_hex2(const void *a, size_t alen, const void *b, size_t blen, char *out)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL
        && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1
        && EVP_DigestUpdate(ctx, a, alen) == 1
        && EVP_DigestUpdate(ctx, b, blen) == 1
        && EVP_DigestFinal_ex(ctx, digest, &dlen) == 1
        && dlen == 16;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return ctx == NULL ? SY_AUTH_ENOMEM : SY_AUTH_ECRYPTO;
    to_hex(digest, 16, out);
    return SY_AUTH_OK;
}

int sy__md5_salt(uint8_t salt[SY_AUTH_MD5_SALT_LEN])
{
    if (salt == NULL)
        return SY_AUTH_EINVAL;
    return RAND_bytes(salt, SY_AUTH_MD5_SALT_LEN) == 1 ? SY_AUTH_OK : SY_AUTH_ECRYPTO;
}

int sy__md5_hash(const char *user, const char *password, char *out)
{
    if (user == NULL || password == NULL || out == NULL)
        return SY_AUTH_EINVAL;
    memcpy(out, "md5", 3);
    int rc = md5_hex2(password, strlen(password), user, strlen(user), out + 3);
    out[rc == SY_AUTH_OK ? SY_AUTH_MD5_HASH_LEN : 0] = '\0';
    return rc;
}

static int is_md5_response(const char *resp, size_t len)
{
    if (len != SY_AUTH_MD5_HASH_LEN || memcmp(resp, "md5", 3) != 0)
        return 0;
    for (size_t i = 3; i < len; i++) {
        char c = resp[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return 1;
}

int sy__md5_verify(const char *user, const char *secret,
                   const uint8_t salt[SY_AUTH_MD5_SALT_LEN],
                   const char *resp, size_t resp_len,
                   const uint8_t mock_key[SY_AUTH_MOCK_KEY_LEN],
                   const char **detail)
{
    const char *why = NULL;
    if (detail)
        *detail = NULL;
    if (user == NULL || salt == NULL || mock_key == NULL || (resp == NULL && resp_len))
        return SY_AUTH_EINVAL;
    /* Checked before the secret is looked at: the verdict on the shape of
     * the answer must not depend on whether the user exists. */
    if (resp == NULL || !is_md5_response(resp, resp_len)) {
        if (detail)
            *detail = "password response is not \"md5\" followed by 32 hex digits";
        return SY_AUTH_EMALFORMED;
    }

    char inner[MD5_HEX];
    int mock = 1;
    int rc;
    int kind = secret ? sy__auth_secret_kind(secret) : SY_AUTH_EINVAL;
    if (kind == SY_SECRET_MD5) {
        memcpy(inner, secret + 3, MD5_HEX);
        rc = SY_AUTH_OK;
        mock = 0;
    } else if (kind == SY_SECRET_PLAIN) {
        rc = md5_hex2(secret, strlen(secret), user, strlen(user), inner);
        mock = 0;
    } else {
        /* A fake inner hash keyed by the mock key: the same work as a real
         * check, a verdict that can only be "failed". */
        rc = md5_hex2(mock_key, SY_AUTH_MOCK_KEY_LEN, user, strlen(user), inner);
        why = secret == NULL ? "no such user"
            : kind == SY_SECRET_SCRAM ? "user has a SCRAM secret; md5 cannot verify it"
            : "user has no usable password";
    }
    if (rc != SY_AUTH_OK)
        return rc;

    char expect[SY_AUTH_MD5_HASH_LEN];
    memcpy(expect, "md5", 3);
    rc = md5_hex2(inner, MD5_HEX, salt, SY_AUTH_MD5_SALT_LEN, expect + 3);
    OPENSSL_cleanse(inner, sizeof(inner));
    if (rc != SY_AUTH_OK)
        return rc;
    int same = CRYPTO_memcmp(expect, resp, SY_AUTH_MD5_HASH_LEN) == 0;
    OPENSSL_cleanse(expect, sizeof(expect));
    if (same && !mock)
        return SY_AUTH_OK;
    if (why == NULL)
        why = "wrong password";
    if (detail)
        *detail = why;
    return SY_AUTH_EFAILED;
}
