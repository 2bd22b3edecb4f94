/*
 * auth.h - the server side of PostgreSQL password authentication, for the
 * proxy's front end: the auth file (PgBouncer's userlist.txt), md5 and
 * SCRAM-SHA-256 (RFC 5802 / RFC 7677 as PostgreSQL speaks them).
 *
 * Everything here is pure and non-blocking: no sockets, no loop.  The proxy
 * parses the wire messages, hands the payloads in and sends what comes out.
 * Only sy__authfile_load() touches the file system (at config load, like the
 * config file itself).  Nothing here keeps process-global state: the mock
 * key that hides which users exist is created by the caller (once per
 * engine) and passed in.
 *
 * Failed logins must not tell a client whether the user exists: an unknown
 * user (secret NULL), a secret of the wrong kind and a wrong password all end
 * in SY_AUTH_EFAILED at the same step, after the same work, and a SCRAM run
 * for an unknown user shows a salt that is stable per user name, as a real
 * one would be.  The proxy must then send the same ErrorResponse (28P01,
 * "password authentication failed for user ...") for all of them; the
 * reasons a caller may log are in sy__scram_detail() / the md5 detail out.
 *
 * Needs libcrypto (OpenSSL 3): link with -lcrypto.
 */
#ifndef SY_AUTH_H
#define SY_AUTH_H

#include <stddef.h>
#include <stdint.h>

/* Result codes of this module (disjoint from the public SY_E* codes). */
enum {
    SY_AUTH_OK = 0,
    SY_AUTH_CONTINUE = 1,        /* a SCRAM step produced a message; more to come */
    SY_AUTH_EFAILED = -101,      /* wrong password, unknown user, unusable secret */
    SY_AUTH_EMALFORMED = -102,   /* the client's message does not parse */
    SY_AUTH_ECHANNEL = -103,     /* client demands channel binding (p=...) */
    SY_AUTH_EMECH = -104,        /* unknown SASL mechanism */
    SY_AUTH_ESTATE = -105,       /* step after the exchange ended or failed */
    SY_AUTH_ENOMEM = -106,
    SY_AUTH_ECRYPTO = -107,      /* OpenSSL failed (no randomness, ...) */
    SY_AUTH_EINVAL = -108,       /* a bad argument from the caller */
    SY_AUTH_EFILE = -109         /* the auth file was refused (see err text) */
};

/* A static name for a code above (never NULL). */
const char *sy__auth_strerror(int code);
/* The SQLSTATE the proxy should send for a failing code: 28P01 for
 * EFAILED, 08P01 for protocol errors, 0A000 for channel binding, 53200
 * for ENOMEM, XX000 otherwise.  Static string. */
const char *sy__auth_sqlstate(int code);

/* ---- secrets ------------------------------------------------------------ */

typedef enum sy_secret_kind {
    SY_SECRET_PLAIN = 1,   /* a password in clear */
    SY_SECRET_MD5 = 2,     /* "md5" + 32 lowercase hex digits */
    SY_SECRET_SCRAM = 3    /* SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey> */
} sy_secret_kind;

/* Classifies a stored secret as PostgreSQL does (pg_authid.rolpassword or a
 * userlist entry).  Text that starts like a SCRAM secret but does not parse
 * is SY_AUTH_EMALFORMED (not silently taken as a plain password); an empty
 * secret is SY_AUTH_EINVAL. */
int sy__auth_secret_kind(const char *secret);

#define SY_AUTH_MOCK_KEY_LEN 32
/* Fills a fresh random mock key.  The engine makes one at creation and
 * passes it to every md5/SCRAM call: it derives the stable fake salts shown
 * for unknown users and the salts of plain-password users. */
int sy__auth_mock_key_init(uint8_t key[SY_AUTH_MOCK_KEY_LEN]);

/* ---- auth file (userlist.txt) ------------------------------------------ */

/* One line per user:  "name" "secret"  (a " inside is written "");
 * blank lines and lines starting with ; are ignored; text after the secret
 * may only be blanks or a ; comment.  Duplicate and empty names, empty
 * secrets and malformed SCRAM secrets are errors that name the line. */
typedef struct sy_authfile sy_authfile;

#define SY_AUTH_NAME_MAX 128      /* bytes of a user name */
#define SY_AUTH_SECRET_MAX 1024   /* bytes of a secret */

typedef struct sy_auth_entry {
    const char *user;             /* owned by the table */
    const char *secret;           /* owned by the table; wiped on free */
    sy_secret_kind kind;
    int line;                     /* where it came from, for messages */
} sy_auth_entry;

/* Parses text (len bytes, need not be NUL-terminated).  name labels error
 * messages ("userlist.txt:3: ...").  On success *out is a new table the
 * caller owns (sy__authfile_free).  On failure returns SY_AUTH_EFILE (or
 * ENOMEM), *out is NULL and err holds the first problem with its line. */
int sy__authfile_parse(const char *text, size_t len, const char *name,
                       sy_authfile **out, char *err, size_t errlen);
/* Reads path (blocking: call at config load, not on the loop) and parses
 * it as above.  Unreadable files are SY_AUTH_EFILE with errno's text. */
int sy__authfile_load(const char *path, sy_authfile **out, char *err, size_t errlen);
/* Frees the table, wiping the secrets.  NULL is a no-op. */
void sy__authfile_free(sy_authfile *af);
/* The entry for user, or NULL.  Borrowed: valid until the table is freed. */
const sy_auth_entry *sy__authfile_lookup(const sy_authfile *af, const char *user);
/* Number of users in the table. */
size_t sy__authfile_count(const sy_authfile *af);

/* ---- md5 ---------------------------------------------------------------- */

#define SY_AUTH_MD5_SALT_LEN 4
#define SY_AUTH_MD5_HASH_LEN 35   /* "md5" + 32 hex */

/* Fresh random salt for AuthenticationMD5Password. */
int sy__md5_salt(uint8_t salt[SY_AUTH_MD5_SALT_LEN]);

/* Verifies the PasswordMessage payload resp (resp_len bytes, without the
 * trailing NUL) that answered salt, against the stored secret of user
 * (md5 hash or plain password; NULL when the user is unknown).  Returns
 * SY_AUTH_OK, SY_AUTH_EFAILED (also for unknown users and SCRAM secrets,
 * after the same hashing work) or SY_AUTH_EMALFORMED when resp is not
 * "md5" + 32 hex digits.  *detail (optional) gets a static reason for the
 * server log only. */
int sy__md5_verify(const char *user, const char *secret,
                   const uint8_t salt[SY_AUTH_MD5_SALT_LEN],
                   const char *resp, size_t resp_len,
                   const uint8_t mock_key[SY_AUTH_MOCK_KEY_LEN],
                   const char **detail);

/* Builds the stored form "md5" + md5hex(password + user) into
 * out[SY_AUTH_MD5_HASH_LEN + 1]. */
int sy__md5_hash(const char *user, const char *password, char *out);

/* ---- SCRAM-SHA-256 ------------------------------------------------------ */

typedef struct sy_scram sy_scram;

#define SY_SCRAM_KEY_LEN 32
#define SY_SCRAM_SALT_MAX 128        /* decoded salt bytes we accept */
#define SY_SCRAM_MESSAGE_MAX 4096    /* bytes of a client message we accept */
#define SY_SCRAM_DEFAULT_ITERATIONS 4096

/* Starts an exchange for user (the startup packet's user) with its stored
 * secret: a SCRAM secret, or a plain password (keys derived here with
 * PBKDF2, 4096 iterations: about a millisecond of CPU).  secret NULL (no
 * such user), an md5 secret or a SCRAM secret that does not parse runs a
 * mock exchange that fails at the final step exactly like a wrong password
 * (sy__scram_detail() says which, for the log).  The caller owns *out
 * (sy__scram_free).  Fails only for ENOMEM, ECRYPTO and EINVAL (NULL user,
 * mock_key or out). */
int sy__scram_new(const char *user, const char *secret,
                  const uint8_t mock_key[SY_AUTH_MOCK_KEY_LEN], sy_scram **out);
/* Frees the exchange, wiping its keys.  NULL is a no-op. */
void sy__scram_free(sy_scram *s);

/* The body of AuthenticationSASL: the mechanism names, each NUL-terminated,
 * then an empty name ("SCRAM-SHA-256\0\0").  Static; *len gets its size. */
const char *sy__scram_mechanisms(size_t *len);
/* Checks the mechanism a SASLInitialResponse chose: SY_AUTH_OK for
 * SCRAM-SHA-256, SY_AUTH_ECHANNEL for SCRAM-SHA-256-PLUS (not offered
 * yet), SY_AUTH_EMECH otherwise. */
int sy__scram_check_mechanism(const char *mech);

/* Tests only: use this server nonce part (printable ASCII without ',',
 * 1..64 bytes) instead of a random one.  Before the first step. */
int sy__scram_set_server_nonce(sy_scram *s, const char *nonce);

/* Feeds one client message (in, in_len bytes; no NUL needed):
 *  1st call, client-first-message (SASLInitialResponse data): returns
 *    SY_AUTH_CONTINUE with the server-first-message in *out
 *    (send it as AuthenticationSASLContinue);
 *  2nd call, client-final-message (SASLResponse data): returns SY_AUTH_OK
 *    with the server-final-message in *out (send AuthenticationSASLFinal,
 *    then AuthenticationOk), or SY_AUTH_EFAILED (wrong proof or mock run).
 * Malformed input gives EMALFORMED/ECHANNEL at once; any error ends the
 * exchange and later steps return ESTATE.  out and out_len are borrowed from
 * s, valid until the next step or free; NULL/0 on error. */
int sy__scram_step(sy_scram *s, const char *in, size_t in_len,
                   const char **out, size_t *out_len);

/* Why the last step failed, in words.  For EMALFORMED/ECHANNEL/EMECH it is
 * fit for the client's ErrorResponse; for EFAILED it is for the server log
 * only ("no such user", "wrong password", ...).  Static or owned by s. */
const char *sy__scram_detail(const sy_scram *s);

/* Builds a stored SCRAM secret for password with the given salt and
 * iterations into out (outlen bytes; 256 suffice for salts up to 64 bytes).
 * salt NULL: 16 random bytes.  For tooling and tests. */
int sy__scram_build_secret(const char *password, const uint8_t *salt, size_t salt_len,
                           int iterations, char *out, size_t outlen);

/* Parses a stored SCRAM secret.  Used by the classifier and the exchange. */
typedef struct sy_scram_secret {
    int iterations;
    size_t salt_len;
    uint8_t salt[SY_SCRAM_SALT_MAX];
    uint8_t stored_key[SY_SCRAM_KEY_LEN];
    uint8_t server_key[SY_SCRAM_KEY_LEN];
} sy_scram_secret;
int sy__scram_secret_parse(const char *secret, sy_scram_secret *out);

#endif
