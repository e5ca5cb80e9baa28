/*
 * auth: meter-cloud's users, passwords, session tokens and API tokens, and the throttling
 * of failed logins. The HTTP side (api_auth.c) parses requests and calls this; this module
 * knows nothing of HTTP.
 *
 * Roles are ordered: viewer < operator < admin (docs/api.md, "Authentication").
 *
 * Passwords: PBKDF2-HMAC-SHA256 with a per-user random 16-byte salt, stored as
 * "pbkdf2-sha256$<iterations>$<salt, base64>$<32-byte hash, base64>". A hash keeps its
 * own iteration count, so raising auth.pbkdf2_iterations affects new passwords only. A
 * password has at least AUTH_PASSWORD_MIN characters (code points) and at most
 * AUTH_PASSWORD_MAX bytes of valid UTF-8 without control characters.
 *
 * Session tokens: "s1.<user id>.<session id>.<expiry>.<signature>": the user id in
 * decimal, the session id 32 hex digits (16 random bytes), the expiry in Unix seconds,
 * and the signature HMAC-SHA256(secret, everything before ".<signature>") in unpadded
 * base64url. The secret is 32 random bytes made at first start and kept in the store.
 * A token is valid while its signature checks, it has not expired, its session is still
 * in the store (logout, a new password or deleting the user end it) and its user exists;
 * its role is the user's role at the time of the request.
 *
 * API tokens: "mlk_" followed by 43 base64url characters (32 random bytes). Only their
 * SHA-256 is stored; the token is shown once, when it is made. Each has a name and a role
 * no higher than its maker's; used, it acts with the lower of that role and its owner's
 * role at the time.
 *
 * Secrets (passwords, tokens, hashes, the signing secret) are never logged. Comparisons of
 * secret values are constant-time.
 *
 * Errors: int functions return 0 or a negative errno, as each says.
 */
#ifndef MLK_CLOUD_AUTH_H
#define MLK_CLOUD_AUTH_H

#include "config.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum auth_role {
    AUTH_ROLE_NONE = 0, /* no token needed (a public endpoint) / not authenticated */
    AUTH_ROLE_VIEWER,
    AUTH_ROLE_OPERATOR,
    AUTH_ROLE_ADMIN,
};

#define AUTH_PASSWORD_MIN 12   /* characters */
#define AUTH_PASSWORD_MAX 1024 /* bytes */
#define AUTH_SALT_LEN 16
#define AUTH_HASH_LEN 32
#define AUTH_SID_HEX 32              /* a session id: 16 random bytes in hex */
#define AUTH_SESSION_TOKEN_MAX 128   /* a session token, NUL included */
#define AUTH_API_TOKEN_PREFIX "mlk_" /* marks an API token */
#define AUTH_API_TOKEN_LEN (4 + 43)  /* "mlk_" + base64url of 32 bytes */
#define AUTH_TOKEN_MAX 160           /* longest token accepted, NUL included */
#define AUTH_CLIENT_MAX 48           /* a client address, NUL included */

/* ---- pure parts (no store, no state): tested in tests/unit/test_auth.c ---- */

/* "admin", "operator", "viewer"; "none" for AUTH_ROLE_NONE. */
const char *auth_role_name(enum auth_role r);
/* -EINVAL for anything but the three role names. */
int auth_role_parse(const char *s, enum auth_role *out);

/* Whether name is a user name: 1..64 of [A-Za-z0-9_.@-], starting with a letter or digit. */
bool auth_user_name_valid(const char *name);

/* Whether pw is an acceptable new password; when not, why says so (no part of pw). */
bool auth_password_acceptable(const char *pw, char *why, size_t whylen);

/* Constant-time equality of n bytes (time depends on n only). */
bool auth_ct_equal(const void *a, const void *b, size_t n);

/* Fills buf with n bytes from the kernel's CSPRNG (getrandom). 0 or -EIO. */
int auth_random(void *buf, size_t n);

/* PBKDF2-HMAC-SHA256 of the password (pwlen bytes) and salt into out (outlen bytes). */
int auth_pbkdf2(const void *pw, size_t pwlen, const void *salt, size_t saltlen, unsigned iter,
                uint8_t *out, size_t outlen);

/* Hashes pw with a fresh random salt and iter iterations into out (the encoded form;
 * STORE_PWHASH_MAX bytes suffice). 0, -EIO, -ENOSPC. */
int auth_hash_password(const char *pw, unsigned iter, char *out, size_t outlen);

/* Checks pw against an encoded hash. 0 when it matches, -EACCES when not, -EINVAL when the
 * encoded hash is not one this module makes. The time does not depend on where pw and the
 * hash differ. */
int auth_verify_password(const char *pw, const char *encoded);

/* Makes a session token for (uid, sid, exp_s) signed with key into out
 * (AUTH_SESSION_TOKEN_MAX bytes suffice). 0 or -ENOSPC. */
int auth_session_sign(const uint8_t key[STORE_SECRET_LEN], int64_t uid, const char *sid,
                      int64_t exp_s, char *out, size_t outlen);

/* Checks a session token's form, signature and expiry (at now_s). 0 with *uid, sid
 * (AUTH_SID_HEX + 1 bytes) and *exp_s filled; -EINVAL when malformed or the signature is
 * wrong; -ETIME when it is well signed but expired. */
int auth_session_verify(const uint8_t key[STORE_SECRET_LEN], const char *tok, int64_t now_s,
                        int64_t *uid, char *sid, int64_t *exp_s);

/* Makes a new API token into tok (AUTH_API_TOKEN_LEN + 1 bytes) and its SHA-256 in hex into
 * hash (STORE_TOKEN_HASH_MAX bytes). 0 or -EIO. */
int auth_api_token_new(char *tok, char *hash);

/* The SHA-256 of s in lowercase hex into hex (65 bytes). */
void auth_sha256_hex(const char *s, char hex[65]);

/* Failed-login throttling, in memory, per key (a user name, a client address). After
 * max_failures failures of a key in a row, the key is locked for lock_s seconds; each
 * failure after that (once the lock has run out) locks it again for twice as long, up to
 * lock_max_s. A key that has not failed for 2 * lock_max_s is forgotten. The table holds
 * a bounded number of keys (the least recently failed are forgotten first). Thread-safe.
 * now_ms is any monotonic clock. */
typedef struct auth_limiter auth_limiter_t;
auth_limiter_t *auth_limiter_new(int max_failures, int lock_s, int lock_max_s);
void auth_limiter_free(auth_limiter_t *l);
/* 0 when key may try now, else the seconds until it may (>= 1). */
int auth_limiter_check(auth_limiter_t *l, const char *key, int64_t now_ms);
void auth_limiter_fail(auth_limiter_t *l, const char *key, int64_t now_ms);
void auth_limiter_reset(auth_limiter_t *l, const char *key);

/* ---- with the store ---- */

typedef struct auth auth_t;

/* Who is calling: the result of auth_check. */
struct auth_principal {
    int64_t user_id;
    char user[STORE_USER_NAME_MAX];
    enum auth_role role;        /* effective role for this request */
    char sid[AUTH_SID_HEX + 1]; /* the session, when called with a session token */
    int64_t token_id;           /* the API token, when called with one; else 0 */
};

/* Loads (or makes, at first start) the signing secret. cfg is copied; st must outlive a. */
int auth_open(const struct cfg_auth *cfg, store_t *st, auth_t **out);
void auth_close(auth_t *a);

/* Checks a user name and password from client (an address, for throttling). On success
 * makes a session: token (AUTH_SESSION_TOKEN_MAX bytes), its expiry and the user.
 * -EACCES: wrong name or password (the same answer for both, and about the same time);
 * -EAGAIN: too many failures, *retry_after_s says when to try again; -EIO, -ENOMEM. */
int auth_login(auth_t *a, const char *user, const char *pw, const char *client, char *token,
               int64_t *expires_ms, struct auth_principal *who, int *retry_after_s);

/* Checks a bearer token (session or API token). 0 with *who filled; -EACCES when it is not
 * valid (malformed, bad signature, unknown, ended); -ETIME when a session token has expired;
 * -EIO. */
int auth_check(auth_t *a, const char *token, struct auth_principal *who);

/* Ends who's session (no-op for an API token). */
int auth_logout(auth_t *a, const struct auth_principal *who);

/* Adds a user. -EINVAL (why says which field and why; never quotes the password),
 * -EEXIST (name taken, or with only_if_none: there are users already), -EIO. */
int auth_add_user(auth_t *a, const char *name, enum auth_role role, const char *pw,
                  bool only_if_none, char *why, size_t whylen);

/* Changes a user's role (role != AUTH_ROLE_NONE) and/or password (pw != NULL). A new
 * password ends the user's sessions. -EINVAL (why), -ENOENT, -EBUSY (last admin), -EIO. */
int auth_update_user(auth_t *a, const char *name, enum auth_role role, const char *pw, char *why,
                     size_t whylen);

/* Makes an API token called name for user owner with role (AUTH_ROLE_NONE: the owner's
 * role) on behalf of by. Only an admin may make one for someone else; the role may not
 * exceed by's role nor the owner's. On success tok (AUTH_API_TOKEN_LEN + 1 bytes) holds the
 * token, to be shown once, and *out its record. -EINVAL (why), -EPERM (why), -ENOENT (no
 * such owner), -EEXIST (owner has a token of that name), -EIO. */
int auth_make_token(auth_t *a, const struct auth_principal *by, const char *owner, const char *name,
                    enum auth_role role, char *tok, struct store_api_token *out, char *why,
                    size_t whylen);

/* Whether name is a token name: 1..64 printable ASCII characters. */
bool auth_token_name_valid(const char *name);

#endif
