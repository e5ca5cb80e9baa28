/*
 * web: the dashboard's static files (cloud/web.h). Loading from a folder, the allow-list
 * as the only way to a file, Accept-Encoding and If-None-Match parsing. Serving over HTTP
 * is tested against the real server in tests/integration/test_dashboard.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "testutil.h"

#include "web.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void put(const char *dir, const char *name, const char *text)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *tmpdir(void)
{
    static char tmpl[64];

    snprintf(tmpl, sizeof(tmpl), "/tmp/mlk-web-XXXXXX");
    assert_non_null(mkdtemp(tmpl));
    return tmpl;
}

static void rmdir_all(const char *dir)
{
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_allow_list_only(void **state)
{
    char *dir = tmpdir(), err[256];
    web_t *w = NULL;

    put(dir, "index.html", "<!doctype html><title>x</title>");
    put(dir, "app.js", "export {};");
    put(dir, "secret.txt", "not in the list");
    mkdir(strcat(strcpy(err, dir), "/sub"), 0700);
    assert_int_equal(web_open(dir, &w, err, sizeof(err)), 0);
    assert_string_equal(web_root(w), dir);
    assert_true(web_path(w, "/"));
    assert_true(web_path(w, "/static/app.js"));
    assert_true(web_path(w, "/static/index.html"));
    /* not in the allow-list, or not there, or not a name of it */
    assert_false(web_path(w, "/static/secret.txt"));
    assert_false(web_path(w, "/static/style.css")); /* listed, but missing from the folder */
    assert_false(web_path(w, "/static/"));
    assert_false(web_path(w, "/static//app.js"));
    assert_false(web_path(w, "/static/./app.js"));
    assert_false(web_path(w, "/static/../static/app.js"));
    assert_false(web_path(w, "/static/sub/../app.js"));
    assert_false(web_path(w, "/static/app.js/"));
    assert_false(web_path(w, "/static/APP.JS"));
    assert_false(web_path(w, "/app.js"));
    assert_false(web_path(w, "/index.html"));
    assert_false(web_path(w, "/api/v1/meters"));
    assert_false(web_path(w, ""));
    web_close(w);
    assert_false(web_path(NULL, "/"));
    rmdir_all(dir);
}

static void test_root_errors(void **state)
{
    char *dir = tmpdir(), err[256];
    web_t *w = (web_t *)1;

    /* a root given explicitly must have index.html */
    assert_int_equal(web_open(dir, &w, err, sizeof(err)), -ENOENT);
    assert_null(w);
    assert_non_null(strstr(err, "index.html"));
    assert_int_equal(web_open("/nonexistent/mlk", &w, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "http.web_root"));
    rmdir_all(dir);
}

static void test_accept_encoding(void **state)
{
    assert_true(web_accepts_gzip("gzip"));
    assert_true(web_accepts_gzip("gzip, deflate, br"));
    assert_true(web_accepts_gzip("br;q=1.0, gzip;q=0.8, *;q=0.1"));
    assert_true(web_accepts_gzip("deflate, x-gzip"));
    assert_true(web_accepts_gzip("*"));
    assert_true(web_accepts_gzip(" GZIP "));
    assert_true(web_accepts_gzip("gzip ; q=0.5"));
    assert_false(web_accepts_gzip(""));
    assert_false(web_accepts_gzip("identity"));
    assert_false(web_accepts_gzip("br, deflate"));
    assert_false(web_accepts_gzip("gzip;q=0"));
    assert_false(web_accepts_gzip("gzip;q=0.000"));
    assert_false(web_accepts_gzip("gzipx, xgzip"));
    assert_false(web_accepts_gzip("*;q=0"));
}

static void test_if_none_match(void **state)
{
    const char *e = "\"0123456789abcdef\"";

    assert_true(web_etag_matches("\"0123456789abcdef\"", e));
    assert_true(web_etag_matches("W/\"0123456789abcdef\"", e));
    assert_true(web_etag_matches("\"x\", \"0123456789abcdef\"", e));
    assert_true(web_etag_matches("*", e));
    assert_false(web_etag_matches("\"0123456789abcde\"", e));
    assert_false(web_etag_matches("\"0123456789abcdef0\"", e));
    assert_false(web_etag_matches("0123456789abcdef", e));
    assert_false(web_etag_matches("", e));
    assert_false(web_etag_matches(", ,", e));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allow_list_only),
        cmocka_unit_test(test_root_errors),
        cmocka_unit_test(test_accept_encoding),
        cmocka_unit_test(test_if_none_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
