/*
 * auth: see auth.h. mbedTLS does the cryptography (PBKDF2, HMAC, SHA-256, base64); the
 * kernel's getrandom() gives salts, session ids, API tokens and the signing secret.
 */
#include "auth.h"

#include "msg.h"
#include "timeutil.h"

#include <errno.h>
#include <mbedtls/base64.h>
#include <mbedtls/constant_time.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/sha256.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define HASH_SCHEME "pbkdf2-sha256"
#define ITER_MAX 100000000u /* a stored count above this is not one of ours */
#define SESSION_PREFIX "s1."
#define SIG_B64_LEN 43 /* unpadded base64url of 32 bytes */
#define LIMITER_KEYS 2048
#define LIMITER_KEY_MAX (2 + STORE_USER_NAME_MAX + AUTH_CLIENT_MAX)

static const char *const role_names[] = {"none", "viewer", "operator", "admin"};

const char *auth_role_name(enum auth_role r)
{
    return r >= AUTH_ROLE_NONE && r <= AUTH_ROLE_ADMIN ? role_names[r] : "none";
}

int auth_role_parse(const char *s, enum auth_role *out)
{
    for (int r = AUTH_ROLE_VIEWER; r <= AUTH_ROLE_ADMIN; r++)
        if (s && strcmp(s, role_names[r]) == 0) {
            *out = (enum auth_role)r;
            return 0;
        }
    return -EINVAL;
}

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool auth_user_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;

    if (n == 0 || n >= STORE_USER_NAME_MAX || !is_alnum(name[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_alnum(name[i]) && !strchr("_.@-", name[i]))
            return false;
    return true;
}

bool auth_token_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;

    if (n == 0 || n >= STORE_TOKEN_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] > 0x7e)
            return false;
    return true;
}

bool auth_password_acceptable(const char *pw, char *why, size_t whylen)
{
    size_t n = pw ? strlen(pw) : 0, chars = 0;

    if (n > AUTH_PASSWORD_MAX) {
        snprintf(why, whylen, "longer than %d bytes", AUTH_PASSWORD_MAX);
        return false;
    }
    if (!msg_utf8_valid(pw ? pw : "", n)) {
        snprintf(why, whylen, "not valid UTF-8");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)pw[i];
        if (c < 0x20 || c == 0x7f) {
            snprintf(why, whylen, "contains a control character");
            return false;
        }
        if ((c & 0xc0) != 0x80)
            chars++; /* count code points, not bytes */
    }
    if (chars < AUTH_PASSWORD_MIN) {
        snprintf(why, whylen, "shorter than %d characters", AUTH_PASSWORD_MIN);
        return false;
    }
    return true;
}

bool auth_ct_equal(const void *a, const void *b, size_t n)
{
    return mbedtls_ct_memcmp(a, b, n) == 0;
}

int auth_random(void *buf, size_t n)
{
    uint8_t *p = buf;

    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -EIO;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int auth_pbkdf2(const void *pw, size_t pwlen, const void *salt, size_t saltlen, unsigned iter,
                uint8_t *out, size_t outlen)
{
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    mbedtls_md_context_t ctx;
    int rc = -EIO;

    if (!md || iter == 0 || outlen > UINT32_MAX)
        return -EINVAL;
    mbedtls_md_init(&ctx);
    if (mbedtls_md_setup(&ctx, md, 1) == 0 &&
        mbedtls_pkcs5_pbkdf2_hmac(&ctx, pw, pwlen, salt, saltlen, iter, (uint32_t)outlen, out) == 0)
        rc = 0;
    mbedtls_md_free(&ctx);
    return rc;
}

static int b64_encode(const uint8_t *in, size_t n, char *out, size_t outlen)
{
    size_t olen = 0;

    if (mbedtls_base64_encode((unsigned char *)out, outlen, &olen, in, n) != 0)
        return -ENOSPC;
    return (int)olen;
}

/* Unpadded base64url of n bytes into out; returns the length or -ENOSPC. */
static int b64url_encode(const uint8_t *in, size_t n, char *out, size_t outlen)
{
    int len = b64_encode(in, n, out, outlen);

    if (len < 0)
        return len;
    while (len > 0 && out[len - 1] == '=')
        out[--len] = '\0';
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return len;
}

int auth_hash_password(const char *pw, unsigned iter, char *out, size_t outlen)
{
    uint8_t salt[AUTH_SALT_LEN], hash[AUTH_HASH_LEN];
    char s64[32], h64[48];
    int rc, n;

    if ((rc = auth_random(salt, sizeof(salt))) < 0)
        return rc;
    if ((rc = auth_pbkdf2(pw, strlen(pw), salt, sizeof(salt), iter, hash, sizeof(hash))) < 0)
        goto done;
    if (b64_encode(salt, sizeof(salt), s64, sizeof(s64)) < 0 ||
        b64_encode(hash, sizeof(hash), h64, sizeof(h64)) < 0) {
        rc = -ENOSPC;
        goto done;
    }
    n = snprintf(out, outlen, HASH_SCHEME "$%u$%s$%s", iter, s64, h64);
    rc = n > 0 && (size_t)n < outlen ? 0 : -ENOSPC;
done:
    explicit_bzero(hash, sizeof(hash));
    return rc;
}

/* Decodes the standard base64 text of n bytes at s into out; returns the length or -1. */
static int b64_decode(const char *s, size_t n, uint8_t *out, size_t outlen)
{
    size_t olen = 0;

    if (n == 0 || mbedtls_base64_decode(out, outlen, &olen, (const unsigned char *)s, n) != 0)
        return -1;
    return (int)olen;
}

/* Parses 1..max decimal digits (no sign, no leading zero) at s, up to the first
 * non-digit; returns the number of digits or -1. */
static int parse_digits(const char *s, int max, uint64_t *v)
{
    int n = 0;

    *v = 0;
    while (s[n] >= '0' && s[n] <= '9') {
        if (n == max)
            return -1;
        *v = *v * 10 + (uint64_t)(s[n] - '0');
        n++;
    }
    if (n == 0 || (n > 1 && s[0] == '0'))
        return -1;
    return n;
}

int auth_verify_password(const char *pw, const char *encoded)
{
    uint8_t salt[64], want[AUTH_HASH_LEN + 8], got[AUTH_HASH_LEN];
    const char *p = encoded, *salt_end, *hash_s;
    uint64_t iter;
    int nsalt, nhash, d, rc;

    if (strncmp(p, HASH_SCHEME "$", sizeof(HASH_SCHEME)) != 0)
        return -EINVAL;
    p += sizeof(HASH_SCHEME);
    if ((d = parse_digits(p, 9, &iter)) < 0 || p[d] != '$' || iter == 0 || iter > ITER_MAX)
        return -EINVAL;
    p += d + 1;
    if (!(salt_end = strchr(p, '$')))
        return -EINVAL;
    hash_s = salt_end + 1;
    nsalt = b64_decode(p, (size_t)(salt_end - p), salt, sizeof(salt));
    nhash = b64_decode(hash_s, strlen(hash_s), want, sizeof(want));
    if (nsalt < 8 || nhash != AUTH_HASH_LEN)
        return -EINVAL;
    rc = auth_pbkdf2(pw, strlen(pw), salt, (size_t)nsalt, (unsigned)iter, got, sizeof(got));
    if (rc == 0)
        rc = auth_ct_equal(got, want, AUTH_HASH_LEN) ? 0 : -EACCES;
    explicit_bzero(got, sizeof(got));
    explicit_bzero(want, sizeof(want));
    return rc;
}

/* The base64url HMAC-SHA256 of n bytes of msg under key into sig (SIG_B64_LEN + 1). */
static int session_sig(const uint8_t *key, const char *msg, size_t n, char *sig)
{
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    uint8_t mac[32];
    char buf[48];
    int rc = -EIO;

    if (md && mbedtls_md_hmac(md, key, STORE_SECRET_LEN, (const unsigned char *)msg, n, mac) == 0 &&
        b64url_encode(mac, sizeof(mac), buf, sizeof(buf)) == SIG_B64_LEN) {
        memcpy(sig, buf, SIG_B64_LEN + 1);
        rc = 0;
    }
    explicit_bzero(mac, sizeof(mac));
    return rc;
}

int auth_session_sign(const uint8_t key[STORE_SECRET_LEN], int64_t uid, const char *sid,
                      int64_t exp_s, char *out, size_t outlen)
{
    char sig[SIG_B64_LEN + 1];
    int n;

    n = snprintf(out, outlen, SESSION_PREFIX "%lld.%s.%lld.", (long long)uid, sid,
                 (long long)exp_s);
    if (n < 0 || (size_t)n + SIG_B64_LEN >= outlen)
        return -ENOSPC;
    if (session_sig(key, out, (size_t)n - 1, sig) < 0)
        return -EIO;
    memcpy(out + n, sig, SIG_B64_LEN + 1);
    return 0;
}

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool is_b64url(char c)
{
    return is_alnum(c) || c == '-' || c == '_';
}

int auth_session_verify(const uint8_t key[STORE_SECRET_LEN], const char *tok, int64_t now_s,
                        int64_t *uid, char *sid, int64_t *exp_s)
{
    const char *p = tok, *sid_s, *sig_s;
    char sig[SIG_B64_LEN + 1];
    uint64_t u, e;
    int d;

    if (strncmp(p, SESSION_PREFIX, sizeof(SESSION_PREFIX) - 1) != 0)
        return -EINVAL;
    p += sizeof(SESSION_PREFIX) - 1;
    if ((d = parse_digits(p, 18, &u)) < 0 || p[d] != '.' || u == 0)
        return -EINVAL;
    sid_s = p += d + 1;
    for (d = 0; d < AUTH_SID_HEX; d++)
        if (!is_lower_hex(p[d]))
            return -EINVAL;
    if (p[AUTH_SID_HEX] != '.')
        return -EINVAL;
    p += AUTH_SID_HEX + 1;
    if ((d = parse_digits(p, 12, &e)) < 0 || p[d] != '.')
        return -EINVAL;
    sig_s = p + d + 1;
    for (d = 0; d < SIG_B64_LEN; d++)
        if (!is_b64url(sig_s[d]))
            return -EINVAL;
    if (sig_s[SIG_B64_LEN] != '\0')
        return -EINVAL;
    if (session_sig(key, tok, (size_t)(sig_s - 1 - tok), sig) < 0)
        return -EIO;
    if (!auth_ct_equal(sig, sig_s, SIG_B64_LEN))
        return -EINVAL;
    if ((int64_t)e <= now_s)
        return -ETIME;
    *uid = (int64_t)u;
    memcpy(sid, sid_s, AUTH_SID_HEX);
    sid[AUTH_SID_HEX] = '\0';
    *exp_s = (int64_t)e;
    return 0;
}

void auth_sha256_hex(const char *s, char hex[65])
{
    uint8_t h[32];

    mbedtls_sha256_ret((const unsigned char *)s, strlen(s), h, 0);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
}

int auth_api_token_new(char *tok, char *hash)
{
    uint8_t raw[32];
    char b[48];

    if (auth_random(raw, sizeof(raw)) < 0)
        return -EIO;
    if (b64url_encode(raw, sizeof(raw), b, sizeof(b)) != AUTH_API_TOKEN_LEN - 4) {
        explicit_bzero(raw, sizeof(raw));
        return -EIO;
    }
    memcpy(tok, AUTH_API_TOKEN_PREFIX, 4);
    memcpy(tok + 4, b, AUTH_API_TOKEN_LEN - 4 + 1);
    auth_sha256_hex(tok, hash);
    explicit_bzero(raw, sizeof(raw));
    explicit_bzero(b, sizeof(b));
    return 0;
}

/* ---- failed-login throttling ---- */

struct lim_entry {
    bool used;
    char key[LIMITER_KEY_MAX];
    int failures;         /* in a row */
    int lock_s;           /* the last lock's length; 0 before the first */
    int64_t locked_until; /* ms */
    int64_t last_fail;    /* ms */
};

struct auth_limiter {
    pthread_mutex_t mu;
    int max_failures, lock_s, lock_max_s;
    struct lim_entry e[LIMITER_KEYS];
};

auth_limiter_t *auth_limiter_new(int max_failures, int lock_s, int lock_max_s)
{
    auth_limiter_t *l = calloc(1, sizeof(*l));

    if (!l)
        return NULL;
    pthread_mutex_init(&l->mu, NULL);
    l->max_failures = max_failures;
    l->lock_s = lock_s;
    l->lock_max_s = lock_max_s;
    return l;
}

void auth_limiter_free(auth_limiter_t *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* The entry of key, forgetting it when stale; NULL when none. Caller holds mu. */
static struct lim_entry *lim_find(auth_limiter_t *l, const char *key, int64_t now)
{
    for (int i = 0; i < LIMITER_KEYS; i++) {
        struct lim_entry *e = &l->e[i];
        if (!e->used || strcmp(e->key, key) != 0)
            continue;
        if (now - e->last_fail > 2000LL * l->lock_max_s && now >= e->locked_until) {
            e->used = false;
            return NULL;
        }
        return e;
    }
    return NULL;
}

int auth_limiter_check(auth_limiter_t *l, const char *key, int64_t now_ms)
{
    struct lim_entry *e;
    int wait = 0;

    pthread_mutex_lock(&l->mu);
    e = lim_find(l, key, now_ms);
    if (e && now_ms < e->locked_until)
        wait = (int)((e->locked_until - now_ms + 999) / 1000);
    pthread_mutex_unlock(&l->mu);
    return wait;
}

void auth_limiter_fail(auth_limiter_t *l, const char *key, int64_t now_ms)
{
    struct lim_entry *e, *victim = NULL;

    if (strlen(key) >= LIMITER_KEY_MAX)
        return; /* cannot happen: the callers' keys are bounded */
    pthread_mutex_lock(&l->mu);
    e = lim_find(l, key, now_ms);
    if (!e) {
        for (int i = 0; i < LIMITER_KEYS && !e; i++) {
            if (!l->e[i].used)
                e = &l->e[i];
            else if (!victim || l->e[i].last_fail < victim->last_fail)
                victim = &l->e[i];
        }
        if (!e)
            e = victim; /* full: forget the key that failed least recently */
        memset(e, 0, sizeof(*e));
        e->used = true;
        snprintf(e->key, sizeof(e->key), "%s", key);
    }
    e->failures++;
    e->last_fail = now_ms;
    if (e->failures >= l->max_failures) {
        e->lock_s = e->lock_s == 0                  ? l->lock_s
                    : e->lock_s > l->lock_max_s / 2 ? l->lock_max_s
                                                    : e->lock_s * 2;
        e->locked_until = now_ms + 1000LL * e->lock_s;
    }
    pthread_mutex_unlock(&l->mu);
}

void auth_limiter_reset(auth_limiter_t *l, const char *key)
{
    struct lim_entry *e;

    pthread_mutex_lock(&l->mu);
    if ((e = lim_find(l, key, 0)))
        e->used = false;
    pthread_mutex_unlock(&l->mu);
}

/* ---- with the store ---- */

struct auth {
    struct cfg_auth cfg;
    store_t *st;
    uint8_t secret[STORE_SECRET_LEN];
    char dummy[STORE_PWHASH_MAX]; /* checked for an unknown user, to take the same time */
    auth_limiter_t *lim;
};

int auth_open(const struct cfg_auth *cfg, store_t *st, auth_t **out)
{
    uint8_t fresh[STORE_SECRET_LEN];
    char pw[33];
    auth_t *a;
    int rc;

    *out = NULL;
    if (!(a = calloc(1, sizeof(*a))))
        return -ENOMEM;
    a->cfg = *cfg;
    a->st = st;
    if (!(a->lim = auth_limiter_new(cfg->login_max_failures, cfg->lockout_s, cfg->lockout_max_s))) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = auth_random(fresh, sizeof(fresh))) < 0)
        goto fail;
    rc = store_auth_secret(st, fresh, a->secret);
    explicit_bzero(fresh, sizeof(fresh));
    if (rc < 0)
        goto fail;
    /* a hash of a random password nobody knows */
    if ((rc = auth_random(fresh, 16)) < 0)
        goto fail;
    for (int i = 0; i < 16; i++)
        snprintf(pw + 2 * i, 3, "%02x", fresh[i]);
    rc = auth_hash_password(pw, (unsigned)cfg->pbkdf2_iterations, a->dummy, sizeof(a->dummy));
    explicit_bzero(pw, sizeof(pw));
    explicit_bzero(fresh, sizeof(fresh));
    if (rc < 0)
        goto fail;
    *out = a;
    return 0;
fail:
    auth_close(a);
    return rc;
}

void auth_close(auth_t *a)
{
    if (!a)
        return;
    auth_limiter_free(a->lim);
    explicit_bzero(a->secret, sizeof(a->secret));
    free(a);
}

static void lim_keys(const char *user, const char *client, char *ku, char *ka)
{
    snprintf(ku, LIMITER_KEY_MAX, "u:%s", user);
    snprintf(ka, LIMITER_KEY_MAX, "a:%s", client);
}

int auth_login(auth_t *a, const char *user, const char *pw, const char *client, char *token,
               int64_t *expires_ms, struct auth_principal *who, int *retry_after_s)
{
    char ku[LIMITER_KEY_MAX], ka[LIMITER_KEY_MAX], sid[AUTH_SID_HEX + 1];
    int64_t now_s, mono = mono_ms(), now = now_ms();
    struct store_user u;
    enum auth_role role = AUTH_ROLE_NONE;
    uint8_t raw[AUTH_SID_HEX / 2];
    int rc, wu, wa;
    bool found;

    *retry_after_s = 0;
    lim_keys(user, client, ku, ka);
    wu = auth_limiter_check(a->lim, ku, mono);
    wa = auth_limiter_check(a->lim, ka, mono);
    if (wu || wa) {
        *retry_after_s = wu > wa ? wu : wa;
        return -EAGAIN;
    }
    rc = store_user_get(a->st, user, &u);
    if (rc < 0 && rc != -ENOENT)
        return rc;
    found = rc == 0 && auth_role_parse(u.role, &role) == 0;
    rc = auth_verify_password(pw, found ? u.pwhash : a->dummy);
    explicit_bzero(u.pwhash, sizeof(u.pwhash));
    if (!found || rc != 0) {
        auth_limiter_fail(a->lim, ku, mono);
        auth_limiter_fail(a->lim, ka, mono);
        return rc == -EIO ? -EIO : -EACCES;
    }
    /* A success forgives the user name, not the address: one good account must not let an
     * address try passwords of others without limit. */
    auth_limiter_reset(a->lim, ku);
    if (auth_random(raw, sizeof(raw)) < 0)
        return -EIO;
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(sid + 2 * i, 3, "%02x", raw[i]);
    now_s = now / 1000;
    *expires_ms = (now_s + a->cfg.session_ttl_s) * 1000;
    if ((rc = store_session_add(a->st, sid, u.id, now, *expires_ms)) < 0)
        return rc;
    if ((rc = auth_session_sign(a->secret, u.id, sid, now_s + a->cfg.session_ttl_s, token,
                                AUTH_SESSION_TOKEN_MAX)) < 0)
        return rc;
    memset(who, 0, sizeof(*who));
    who->user_id = u.id;
    snprintf(who->user, sizeof(who->user), "%s", u.name);
    who->role = role;
    memcpy(who->sid, sid, sizeof(sid));
    return 0;
}

static enum auth_role role_min(enum auth_role x, enum auth_role y)
{
    return x < y ? x : y;
}

static int check_session(auth_t *a, const char *token, struct auth_principal *who)
{
    int64_t uid, exp_s, suid, sexp;
    struct store_user u;
    enum auth_role role;
    char sid[AUTH_SID_HEX + 1];
    int rc;

    rc = auth_session_verify(a->secret, token, now_ms() / 1000, &uid, sid, &exp_s);
    if (rc == -EINVAL)
        return -EACCES;
    if (rc < 0)
        return rc;
    if ((rc = store_session_get(a->st, sid, &suid, &sexp)) < 0)
        return rc == -ENOENT ? -EACCES : rc;
    if (suid != uid || sexp != exp_s * 1000)
        return -EACCES;
    if ((rc = store_user_get_id(a->st, uid, &u)) < 0)
        return rc == -ENOENT ? -EACCES : rc;
    explicit_bzero(u.pwhash, sizeof(u.pwhash));
    if (auth_role_parse(u.role, &role) < 0)
        return -EACCES;
    who->user_id = uid;
    snprintf(who->user, sizeof(who->user), "%s", u.name);
    who->role = role;
    memcpy(who->sid, sid, sizeof(sid));
    return 0;
}

static int check_api_token(auth_t *a, const char *token, struct auth_principal *who)
{
    struct store_api_token t;
    enum auth_role r1, r2;
    char hash[65];
    int rc;

    if (strlen(token) != AUTH_API_TOKEN_LEN)
        return -EACCES;
    for (int i = 4; i < AUTH_API_TOKEN_LEN; i++)
        if (!is_b64url(token[i]))
            return -EACCES;
    /* looked up by its hash: timing can at most tell something about a SHA-256 */
    auth_sha256_hex(token, hash);
    if ((rc = store_token_find(a->st, hash, &t)) < 0)
        return rc == -ENOENT ? -EACCES : rc;
    if (auth_role_parse(t.role, &r1) < 0 || auth_role_parse(t.user_role, &r2) < 0)
        return -EACCES;
    who->user_id = t.user_id;
    snprintf(who->user, sizeof(who->user), "%s", t.user);
    who->role = role_min(r1, r2);
    who->token_id = t.id;
    store_token_touch(a->st, t.id, now_ms()); /* a failure here costs only the note */
    return 0;
}

int auth_check(auth_t *a, const char *token, struct auth_principal *who)
{
    memset(who, 0, sizeof(*who));
    if (!token || strlen(token) >= AUTH_TOKEN_MAX)
        return -EACCES;
    if (strncmp(token, SESSION_PREFIX, sizeof(SESSION_PREFIX) - 1) == 0)
        return check_session(a, token, who);
    if (strncmp(token, AUTH_API_TOKEN_PREFIX, sizeof(AUTH_API_TOKEN_PREFIX) - 1) == 0)
        return check_api_token(a, token, who);
    return -EACCES;
}

int auth_logout(auth_t *a, const struct auth_principal *who)
{
    if (!who->sid[0])
        return 0;
    return store_session_delete(a->st, who->sid);
}

int auth_add_user(auth_t *a, const char *name, enum auth_role role, const char *pw,
                  bool only_if_none, char *why, size_t whylen)
{
    char hash[STORE_PWHASH_MAX], reason[96];
    int rc;

    if (!auth_user_name_valid(name)) {
        snprintf(why, whylen,
                 "name: not a user name (1..64 of [A-Za-z0-9_.@-], starting with a "
                 "letter or digit)");
        return -EINVAL;
    }
    if (role == AUTH_ROLE_NONE) {
        snprintf(why, whylen, "role: not admin, operator or viewer");
        return -EINVAL;
    }
    if (!auth_password_acceptable(pw, reason, sizeof(reason))) {
        snprintf(why, whylen, "password: %s", reason);
        return -EINVAL;
    }
    if ((rc = auth_hash_password(pw, (unsigned)a->cfg.pbkdf2_iterations, hash, sizeof(hash))) < 0)
        return rc;
    rc = store_user_add(a->st, name, auth_role_name(role), hash, now_ms(), only_if_none);
    explicit_bzero(hash, sizeof(hash));
    if (rc == -EEXIST)
        snprintf(why, whylen, only_if_none ? "there are users already" : "user \"%s\" exists",
                 name);
    return rc;
}

int auth_update_user(auth_t *a, const char *name, enum auth_role role, const char *pw, char *why,
                     size_t whylen)
{
    char hash[STORE_PWHASH_MAX], reason[96];
    int rc;

    if (pw && !auth_password_acceptable(pw, reason, sizeof(reason))) {
        snprintf(why, whylen, "password: %s", reason);
        return -EINVAL;
    }
    if (pw &&
        (rc = auth_hash_password(pw, (unsigned)a->cfg.pbkdf2_iterations, hash, sizeof(hash))) < 0)
        return rc;
    rc = store_user_update(a->st, name, role != AUTH_ROLE_NONE ? auth_role_name(role) : NULL,
                           pw ? hash : NULL, now_ms());
    explicit_bzero(hash, sizeof(hash));
    if (rc == -EBUSY)
        snprintf(why, whylen, "\"%s\" is the last admin", name);
    return rc;
}

int auth_make_token(auth_t *a, const struct auth_principal *by, const char *owner, const char *name,
                    enum auth_role role, char *tok, struct store_api_token *out, char *why,
                    size_t whylen)
{
    char hash[STORE_TOKEN_HASH_MAX];
    struct store_user u;
    enum auth_role owner_role;
    int64_t id, now = now_ms();
    int rc;

    if (!auth_token_name_valid(name)) {
        snprintf(why, whylen, "name: not a token name (1..64 printable ASCII characters)");
        return -EINVAL;
    }
    if (strcmp(owner, by->user) != 0 && by->role < AUTH_ROLE_ADMIN) {
        snprintf(why, whylen, "only an admin may make tokens for other users");
        return -EPERM;
    }
    if ((rc = store_user_get(a->st, owner, &u)) < 0)
        return rc;
    explicit_bzero(u.pwhash, sizeof(u.pwhash));
    if (auth_role_parse(u.role, &owner_role) < 0)
        return -EIO;
    if (role == AUTH_ROLE_NONE)
        role = role_min(owner_role, by->role);
    if (role > by->role) {
        snprintf(why, whylen, "role: %s is above your role (%s)", auth_role_name(role),
                 auth_role_name(by->role));
        return -EPERM;
    }
    if (role > owner_role) {
        snprintf(why, whylen, "role: %s is above the role of %s (%s)", auth_role_name(role), u.name,
                 auth_role_name(owner_role));
        return -EINVAL;
    }
    if ((rc = auth_api_token_new(tok, hash)) < 0)
        return rc;
    rc = store_token_add(a->st, u.id, name, auth_role_name(role), hash, now, &id);
    if (rc == -EEXIST)
        snprintf(why, whylen, "%s already has a token called \"%s\"", u.name, name);
    if (rc < 0) {
        explicit_bzero(tok, AUTH_API_TOKEN_LEN + 1);
        return rc;
    }
    memset(out, 0, sizeof(*out));
    out->id = id;
    out->user_id = u.id;
    snprintf(out->user, sizeof(out->user), "%s", u.name);
    snprintf(out->user_role, sizeof(out->user_role), "%s", u.role);
    snprintf(out->name, sizeof(out->name), "%s", name);
    snprintf(out->role, sizeof(out->role), "%s", auth_role_name(role));
    out->created_ms = now;
    return 0;
}
