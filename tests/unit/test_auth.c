/*
 * test_auth: the pure parts of cloud/auth.h: PBKDF2-HMAC-SHA256 against published vectors,
 * password hashes made and checked (also one made by Python's hashlib), session tokens
 * signed, verified, expired and tampered with (byte by byte), API tokens, the password and
 * name rules, the constant-time compare, and the failed-login limiter on a fake clock.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* RFC 7914 section 11 (PBKDF2-HMAC-SHA256) and the usual RFC 6070-style SHA-256 vector;
 * all three checked with Python's hashlib.pbkdf2_hmac. */
static void test_pbkdf2_vectors(void **state)
{
    static const struct {
        const char *p, *s;
        unsigned c;
        size_t len;
        const char *want;
    } v[] = {
        {"passwd", "salt", 1, 64,
         "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
         "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"},
        {"Password", "NaCl", 80000, 64,
         "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"
         "a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d"},
        {"password", "salt", 4096, 32,
         "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"},
    };
    uint8_t out[64];
    char got[129];

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        assert_i64_eq(
            auth_pbkdf2(v[i].p, strlen(v[i].p), v[i].s, strlen(v[i].s), v[i].c, out, v[i].len), 0);
        hex(out, v[i].len, got);
        assert_string_equal(got, v[i].want);
    }
    assert_i64_eq(auth_pbkdf2("x", 1, "salt", 4, 0, out, 32), -EINVAL);
}

static void test_password_hash(void **state)
{
    char h1[STORE_PWHASH_MAX], h2[STORE_PWHASH_MAX], bad[STORE_PWHASH_MAX];
    const char *pw = "correct horse battery";

    assert_i64_eq(auth_hash_password(pw, 1000, h1, sizeof(h1)), 0);
    assert_i64_eq(auth_hash_password(pw, 1000, h2, sizeof(h2)), 0);
    assert_true(strncmp(h1, "pbkdf2-sha256$1000$", 19) == 0);
    /* 16-byte salt and 32-byte hash in base64 */
    assert_i64_eq((long long)strlen(h1), 19 + 24 + 1 + 44);
    assert_string_not_equal(h1, h2); /* fresh salt each time */
    assert_i64_eq(auth_verify_password(pw, h1), 0);
    assert_i64_eq(auth_verify_password(pw, h2), 0);
    assert_i64_eq(auth_verify_password("correct horse batterY", h1), -EACCES);
    assert_i64_eq(auth_verify_password("", h1), -EACCES);
    /* one bit of the stored hash changed: a mismatch, not a crash */
    snprintf(bad, sizeof(bad), "%s", h1);
    bad[strlen(bad) - 3] = bad[strlen(bad) - 3] == 'A' ? 'B' : 'A';
    assert_i64_eq(auth_verify_password(pw, bad), -EACCES);
    assert_i64_eq(auth_hash_password(pw, 1000, h1, 40), -ENOSPC);
}

/* Made with Python: hashlib.pbkdf2_hmac('sha256', pw, bytes(range(16)), 1000, 32). */
static void test_password_hash_from_python(void **state)
{
    static const char py[] =
        "pbkdf2-sha256$1000$AAECAwQFBgcICQoLDA0ODw==$AhaeZ02AwPxykuhhDI8XvhQN8GKvmqM+qF6qvs/98I0=";

    assert_i64_eq(auth_verify_password("correct horse battery", py), 0);
    assert_i64_eq(auth_verify_password("correct horse batter", py), -EACCES);
}

static void test_password_hash_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        "plain",
        "pbkdf2-sha1$1000$AAECAwQFBgcICQoLDA0ODw==$AhaeZ02AwPxykuhhDI8XvhQN8GKvmqM+qF6qvs/98I0=",
        "pbkdf2-sha256$$AAECAwQFBgcICQoLDA0ODw==$AhaeZ02AwPxykuhhDI8XvhQN8GKvmqM+qF6qvs/98I0=",
        "pbkdf2-sha256$0$AAECAwQFBgcICQoLDA0ODw==$AhaeZ02AwPxykuhhDI8XvhQN8GKvmqM+qF6qvs/98I0=",
        "pbkdf2-sha256$01000$AAECAwQFBgcICQoLDA0ODw==$AhaeZ02AwPxykuhhDI8XvhQN8GKvmqM+qF6qvs/98I0=",
        "pbkdf2-sha256$-1$AAECAwQFBgcICQoLDA0ODw==$AhaeZ02AwPxykuhhDI8XvhQN8GKvmqM+qF6qvs/98I0=",
        "pbkdf2-sha256$999999999$AAECAwQFBgcICQoLDA0ODw==$AhaeZ02AwPxykuhhDI8XvhQN8GKvmqM+qF6qv=",
        "pbkdf2-sha256$1000$$AhaeZ02AwPxykuhhDI8XvhQN8GKvmqM+qF6qvs/98I0=",
        "pbkdf2-sha256$1000$AAECAwQFBgcICQoLDA0ODw==$",
        "pbkdf2-sha256$1000$AAECAwQFBgcICQoLDA0ODw==$AhaeZ02AwPxykuhhDI8XvhQN8GKvmqM+qF6q",
        "pbkdf2-sha256$1000$AAECAwQFBgcICQoLDA0ODw==$!!!!Z02AwPxykuhhDI8XvhQN8GKvmqM+qF6qvs/98I0=",
        "pbkdf2-sha256$1000$AAECAwQFBgcICQoLDA0ODw==",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = auth_verify_password("correct horse battery", bad[i]);
        if (rc != -EINVAL)
            fail_msg("\"%s\": got %d, want -EINVAL", bad[i], rc);
    }
}

static const uint8_t KEY[STORE_SECRET_LEN] = {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
                                              7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7};
#define SID "0123456789abcdef0123456789abcdef"
#define EXP 4102444800LL /* 2100-01-01 */
/* HMAC-SHA256 made with Python's hmac module over the token's first four fields */
#define PY_TOKEN "s1.42." SID ".4102444800.TaPFU0yO1OAAAIgRn86GnEk3TgULyjLi4K1ceZxD0qA"

static void test_session_sign_verify(void **state)
{
    char tok[AUTH_SESSION_TOKEN_MAX], sid[AUTH_SID_HEX + 1];
    int64_t uid = 0, exp = 0;

    assert_i64_eq(auth_session_sign(KEY, 42, SID, EXP, tok, sizeof(tok)), 0);
    assert_string_equal(tok, PY_TOKEN);
    assert_i64_eq(auth_session_verify(KEY, tok, 1764000000, &uid, sid, &exp), 0);
    assert_i64_eq(uid, 42);
    assert_string_equal(sid, SID);
    assert_i64_eq(exp, EXP);
    assert_i64_eq(auth_session_sign(KEY, 42, SID, EXP, tok, 60), -ENOSPC);
}

static void test_session_expiry(void **state)
{
    char tok[AUTH_SESSION_TOKEN_MAX], sid[AUTH_SID_HEX + 1];
    int64_t uid, exp;

    assert_i64_eq(auth_session_sign(KEY, 1, SID, 1000, tok, sizeof(tok)), 0);
    assert_i64_eq(auth_session_verify(KEY, tok, 999, &uid, sid, &exp), 0);
    assert_i64_eq(auth_session_verify(KEY, tok, 1000, &uid, sid, &exp), -ETIME);
    assert_i64_eq(auth_session_verify(KEY, tok, 5000, &uid, sid, &exp), -ETIME);
}

/* Every single-byte change of a good token, and every truncation, is refused. */
static void test_session_tampering(void **state)
{
    static const char subst[] = "019afAZ._-x";
    char tok[AUTH_SESSION_TOKEN_MAX], bad[AUTH_SESSION_TOKEN_MAX + 2], sid[AUTH_SID_HEX + 1];
    uint8_t other[STORE_SECRET_LEN];
    int64_t uid, exp;
    size_t n;

    assert_i64_eq(auth_session_sign(KEY, 42, SID, EXP, tok, sizeof(tok)), 0);
    n = strlen(tok);
    for (size_t i = 0; i < n; i++)
        for (const char *c = subst; *c; c++) {
            if (*c == tok[i])
                continue;
            memcpy(bad, tok, n + 1);
            bad[i] = *c;
            if (auth_session_verify(KEY, bad, 0, &uid, sid, &exp) != -EINVAL)
                fail_msg("accepted %s (byte %zu changed to %c)", bad, i, *c);
        }
    for (size_t i = 0; i < n; i++) {
        memcpy(bad, tok, i);
        bad[i] = '\0';
        assert_i64_eq(auth_session_verify(KEY, bad, 0, &uid, sid, &exp), -EINVAL);
    }
    snprintf(bad, sizeof(bad), "%sA", tok);
    assert_i64_eq(auth_session_verify(KEY, bad, 0, &uid, sid, &exp), -EINVAL);
    /* another secret */
    memcpy(other, KEY, sizeof(other));
    other[31] ^= 1;
    assert_i64_eq(auth_session_verify(other, tok, 0, &uid, sid, &exp), -EINVAL);
    /* a well-formed token with a made-up signature, and an expired one with a bad one: the
     * signature is checked first */
    assert_i64_eq(auth_session_verify(
                      KEY, "s1.42." SID ".4102444800.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                      0, &uid, sid, &exp),
                  -EINVAL);
    assert_i64_eq(auth_session_verify(KEY,
                                      "s1.42." SID ".1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                      5, &uid, sid, &exp),
                  -EINVAL);
}

static void test_api_token(void **state)
{
    char t1[AUTH_API_TOKEN_LEN + 1], t2[AUTH_API_TOKEN_LEN + 1];
    char h1[STORE_TOKEN_HASH_MAX], h2[STORE_TOKEN_HASH_MAX], again[65];

    assert_i64_eq(auth_api_token_new(t1, h1), 0);
    assert_i64_eq(auth_api_token_new(t2, h2), 0);
    assert_i64_eq((long long)strlen(t1), AUTH_API_TOKEN_LEN);
    assert_true(strncmp(t1, "mlk_", 4) == 0);
    for (int i = 4; i < AUTH_API_TOKEN_LEN; i++)
        assert_true(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                           t1[i]) != NULL);
    assert_string_not_equal(t1, t2);
    auth_sha256_hex(t1, again);
    assert_string_equal(again, h1);
    auth_sha256_hex("abc", again);
    assert_string_equal(again, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_password_rules(void **state)
{
    char why[96], big[AUTH_PASSWORD_MAX + 2];

    assert_false(auth_password_acceptable("elevenchars", why, sizeof(why)));
    assert_non_null(strstr(why, "shorter than 12"));
    assert_true(auth_password_acceptable("twelve chars", why, sizeof(why)));
    /* characters, not bytes: 11 two-byte characters are too few, 12 are enough */
    assert_false(auth_password_acceptable("\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4"
                                          "\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4",
                                          why, sizeof(why)));
    assert_true(auth_password_acceptable("\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4"
                                         "\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4",
                                         why, sizeof(why)));
    assert_false(auth_password_acceptable("twelve\tchars!", why, sizeof(why)));
    assert_non_null(strstr(why, "control"));
    assert_false(auth_password_acceptable("twelve chars\xff", why, sizeof(why)));
    assert_non_null(strstr(why, "UTF-8"));
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_false(auth_password_acceptable(big, why, sizeof(why)));
    big[AUTH_PASSWORD_MAX] = '\0';
    assert_true(auth_password_acceptable(big, why, sizeof(why)));
}

static void test_names_and_roles(void **state)
{
    enum auth_role r;
    char long_name[80];

    assert_true(auth_user_name_valid("admin"));
    assert_true(auth_user_name_valid("jane.doe@example-1_x"));
    assert_false(auth_user_name_valid(""));
    assert_false(auth_user_name_valid(".hidden"));
    assert_false(auth_user_name_valid("with space"));
    assert_false(auth_user_name_valid("semi;colon"));
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    assert_true(auth_user_name_valid(long_name));
    long_name[64] = 'a';
    long_name[65] = '\0';
    assert_false(auth_user_name_valid(long_name));

    assert_i64_eq(auth_role_parse("viewer", &r), 0);
    assert_i64_eq(r, AUTH_ROLE_VIEWER);
    assert_i64_eq(auth_role_parse("operator", &r), 0);
    assert_i64_eq(r, AUTH_ROLE_OPERATOR);
    assert_i64_eq(auth_role_parse("admin", &r), 0);
    assert_i64_eq(r, AUTH_ROLE_ADMIN);
    assert_i64_eq(auth_role_parse("Admin", &r), -EINVAL);
    assert_i64_eq(auth_role_parse("none", &r), -EINVAL);
    assert_i64_eq(auth_role_parse(NULL, &r), -EINVAL);
    assert_true(AUTH_ROLE_VIEWER < AUTH_ROLE_OPERATOR && AUTH_ROLE_OPERATOR < AUTH_ROLE_ADMIN);
    assert_string_equal(auth_role_name(AUTH_ROLE_OPERATOR), "operator");
    assert_true(auth_token_name_valid("ci deploy"));
    assert_false(auth_token_name_valid(""));
    assert_false(auth_token_name_valid("tab\there"));
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The fastest of several runs of n compares of a and b. */
static double time_compare(const uint8_t *a, const uint8_t *b, size_t len, int n)
{
    double best = 1e9;
    volatile bool sink = false;

    for (int run = 0; run < 7; run++) {
        double t0 = now_s();
        for (int i = 0; i < n; i++)
            sink = sink ^ auth_ct_equal(a, b, len);
        double t = now_s() - t0;
        if (t < best)
            best = t;
    }
    (void)sink;
    return best;
}

static void test_ct_equal(void **state)
{
    enum { LEN = 1 << 20 };
    uint8_t *a = malloc(LEN), *b = malloc(LEN);
    double first, last;

    assert_non_null(a);
    assert_non_null(b);
    memset(a, 0x5a, LEN);
    memcpy(b, a, LEN);
    assert_true(auth_ct_equal(a, b, LEN));
    assert_true(auth_ct_equal(a, b, 0));
    for (size_t i = 0; i < 64; i++) {
        b[i] ^= 0x01;
        assert_false(auth_ct_equal(a, b, 64));
        b[i] ^= 0x01;
    }
    b[LEN - 1] ^= 0x80;
    assert_false(auth_ct_equal(a, b, LEN));
    /* A compare that stops at the first difference would be ~10^6 times faster with the
     * difference in the first byte than in the last. A constant-time one takes the same
     * time; the bounds leave room for a noisy machine. */
    last = time_compare(a, b, LEN, 20);
    b[LEN - 1] ^= 0x80;
    b[0] ^= 0x80;
    first = time_compare(a, b, LEN, 20);
    if (first < last / 4 || first > last * 4)
        fail_msg("difference in the first byte: %.6f s, in the last: %.6f s", first, last);
    free(a);
    free(b);
}

static void test_limiter(void **state)
{
    auth_limiter_t *l = auth_limiter_new(3, 1, 4);
    int64_t t = 1000000;

    assert_non_null(l);
    assert_i64_eq(auth_limiter_check(l, "u:bob", t), 0);
    auth_limiter_fail(l, "u:bob", t);
    auth_limiter_fail(l, "u:bob", t);
    assert_i64_eq(auth_limiter_check(l, "u:bob", t), 0);
    auth_limiter_fail(l, "u:bob", t); /* the third: locked for 1 s */
    assert_i64_eq(auth_limiter_check(l, "u:bob", t), 1);
    assert_i64_eq(auth_limiter_check(l, "u:bob", t + 999), 1);
    assert_i64_eq(auth_limiter_check(l, "u:alice", t), 0); /* keys are separate */
    assert_i64_eq(auth_limiter_check(l, "u:bob", t + 1000), 0);
    t += 1000;
    auth_limiter_fail(l, "u:bob", t); /* doubles: 2 s */
    assert_i64_eq(auth_limiter_check(l, "u:bob", t), 2);
    assert_i64_eq(auth_limiter_check(l, "u:bob", t + 1001), 1);
    t += 2000;
    auth_limiter_fail(l, "u:bob", t); /* 4 s */
    assert_i64_eq(auth_limiter_check(l, "u:bob", t), 4);
    t += 4000;
    auth_limiter_fail(l, "u:bob", t); /* capped at 4 s */
    assert_i64_eq(auth_limiter_check(l, "u:bob", t), 4);
    auth_limiter_reset(l, "u:bob");
    assert_i64_eq(auth_limiter_check(l, "u:bob", t), 0);
    auth_limiter_fail(l, "u:bob", t); /* counting starts again */
    assert_i64_eq(auth_limiter_check(l, "u:bob", t), 0);

    /* a key that has not failed for 2 * lock_max_s is forgotten */
    auth_limiter_fail(l, "a:10.0.0.1", t);
    auth_limiter_fail(l, "a:10.0.0.1", t);
    auth_limiter_fail(l, "a:10.0.0.1", t);
    assert_i64_eq(auth_limiter_check(l, "a:10.0.0.1", t), 1);
    t += 8001;
    assert_i64_eq(auth_limiter_check(l, "a:10.0.0.1", t), 0);
    auth_limiter_fail(l, "a:10.0.0.1", t);
    assert_i64_eq(auth_limiter_check(l, "a:10.0.0.1", t), 0); /* one failure, not four */

    /* many keys: the table stays bounded and the newest keys still count */
    for (int i = 0; i < 5000; i++) {
        char k[32];
        snprintf(k, sizeof(k), "a:192.0.2.%d", i);
        auth_limiter_fail(l, k, t + i);
    }
    for (int i = 0; i < 3; i++)
        auth_limiter_fail(l, "u:last", t + 6000);
    assert_i64_eq(auth_limiter_check(l, "u:last", t + 6000), 1);
    auth_limiter_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pbkdf2_vectors),
        cmocka_unit_test(test_password_hash),
        cmocka_unit_test(test_password_hash_from_python),
        cmocka_unit_test(test_password_hash_malformed),
        cmocka_unit_test(test_session_sign_verify),
        cmocka_unit_test(test_session_expiry),
        cmocka_unit_test(test_session_tampering),
        cmocka_unit_test(test_api_token),
        cmocka_unit_test(test_password_rules),
        cmocka_unit_test(test_names_and_roles),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_limiter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
