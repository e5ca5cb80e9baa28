/*
 * web: see web.h. The allow-list is web_files[] from web_files.h, which CMake writes from
 * the list in cloud/web/CMakeLists.txt; MLK_WEB_DIST and MLK_WEB_SHARE are the default
 * folders (build tree, installed), also set by CMake.
 */
#include "web.h"

#include "log.h"
#include "web_files.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mbedtls/sha256.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MLK_WEB_DIST
#define MLK_WEB_DIST ""
#endif
#ifndef MLK_WEB_SHARE
#define MLK_WEB_SHARE "/usr/local/share/meterlink/web"
#endif

#define WEB_FILE_MAX (16 * 1024 * 1024) /* a dashboard file larger than this is a mistake */
#define STATIC_PREFIX "/static/"

/* No inline scripts or styles, nothing from elsewhere, no framing. ECharts draws on a
 * canvas and sets styles through the DOM (allowed); the app builds its markup without
 * style attributes. */
static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data:; font-src 'self'; connect-src 'self'; "
                          "manifest-src 'self'; base-uri 'none'; form-action 'self'; "
                          "frame-ancestors 'none'";

struct variant {
    char *data; /* NULL: not there */
    size_t len;
    char etag[20]; /* "\"" + 16 hex digits + "\"" */
};

struct web_file {
    const char *name; /* from web_files[] */
    const char *type; /* Content-Type */
    bool loaded;
    struct variant plain, gz;
    char last_modified[40]; /* IMF-fixdate of the file's mtime */
};

struct web {
    char root[PATH_MAX];
    size_t n;
    struct web_file *f;
};

static const struct {
    const char *ext;
    const char *type;
} types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".json", "application/json"},
    {".webmanifest", "application/manifest+json"},
    {".txt", "text/plain; charset=utf-8"},
};

static const char *content_type(const char *name)
{
    size_t n = strlen(name);

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        size_t e = strlen(types[i].ext);
        if (n > e && strcmp(name + n - e, types[i].ext) == 0)
            return types[i].type;
    }
    return "application/octet-stream";
}

/* Reads root/name into *data (malloc'd) and its mtime. -ENOENT when it is not there;
 * another negative errno with err filled when it cannot be read. */
static int read_file(const char *root, const char *name, char **data, size_t *len, time_t *mtime,
                     char *err, size_t errlen)
{
    char path[PATH_MAX];
    struct stat sb;
    size_t got = 0;
    char *buf = NULL;
    int fd, rc;

    *data = NULL;
    if (snprintf(path, sizeof(path), "%s/%s", root, name) >= (int)sizeof(path)) {
        snprintf(err, errlen, "%s/%s: path too long", root, name);
        return -ENAMETOOLONG;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        if (rc != -ENOENT)
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return rc;
    }
    if (fstat(fd, &sb) < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size > WEB_FILE_MAX) {
        rc = S_ISREG(sb.st_mode) ? -EFBIG : -EINVAL;
        snprintf(err, errlen, "%s: not a regular file of at most %d bytes", path, WEB_FILE_MAX);
        goto fail;
    }
    if (!(buf = malloc((size_t)sb.st_size + 1))) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    while (got < (size_t)sb.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : -EIO;
            snprintf(err, errlen, "%s: %s", path,
                     r < 0 ? strerror(errno) : "shorter than its size");
            goto fail;
        }
        got += (size_t)r;
    }
    close(fd);
    *data = buf;
    *len = got;
    *mtime = sb.st_mtime;
    return 0;
fail:
    free(buf);
    close(fd);
    return rc;
}

/* A strong entity tag: the first 8 bytes of the SHA-256 of what is sent, in hex. */
static void make_etag(struct variant *v)
{
    unsigned char h[32];

    mbedtls_sha256_ret((const unsigned char *)v->data, v->len, h, 0);
    snprintf(v->etag, sizeof(v->etag), "\"%02x%02x%02x%02x%02x%02x%02x%02x\"", h[0], h[1], h[2],
             h[3], h[4], h[5], h[6], h[7]);
}

/* Loads every allow-listed file from root into w. */
static int load(web_t *w, const char *root, char *err, size_t errlen)
{
    char gzname[PATH_MAX];
    time_t mtime, gz_mtime;
    struct tm tm;
    int rc;

    snprintf(w->root, sizeof(w->root), "%s", root);
    for (size_t i = 0; i < w->n; i++) {
        struct web_file *f = &w->f[i];
        rc = read_file(root, f->name, &f->plain.data, &f->plain.len, &mtime, err, errlen);
        if (rc == -ENOENT) {
            log_warnx("web: %s/%s is missing: it answers 404", root, f->name);
            continue;
        }
        if (rc < 0)
            return rc;
        make_etag(&f->plain);
        snprintf(gzname, sizeof(gzname), "%s.gz", f->name);
        rc = read_file(root, gzname, &f->gz.data, &f->gz.len, &gz_mtime, err, errlen);
        if (rc < 0 && rc != -ENOENT)
            return rc;
        /* a stale .gz (older than its file) or one that saves nothing is not used */
        if (f->gz.data && (gz_mtime < mtime || f->gz.len >= f->plain.len)) {
            if (gz_mtime < mtime)
                log_warnx("web: %s/%s is older than %s: not used", root, gzname, f->name);
            free(f->gz.data);
            f->gz.data = NULL;
        }
        if (f->gz.data)
            make_etag(&f->gz);
        gmtime_r(&mtime, &tm);
        strftime(f->last_modified, sizeof(f->last_modified), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        f->loaded = true;
    }
    return 0;
}

static bool has_index(const char *root)
{
    char path[PATH_MAX];

    if (!root[0] || snprintf(path, sizeof(path), "%s/index.html", root) >= (int)sizeof(path))
        return false;
    return access(path, R_OK) == 0;
}

int web_open(const char *root, web_t **out, char *err, size_t errlen)
{
    const char *dir = NULL;
    web_t *w;
    int rc;

    *out = NULL;
    err[0] = '\0';
    if (!(w = calloc(1, sizeof(*w))))
        return -ENOMEM;
    for (const char *const *p = web_files; *p; p++)
        w->n++;
    if (!(w->f = calloc(w->n ? w->n : 1, sizeof(*w->f)))) {
        free(w);
        return -ENOMEM;
    }
    for (size_t i = 0; i < w->n; i++) {
        w->f[i].name = web_files[i];
        w->f[i].type = content_type(web_files[i]);
    }
    if (root && root[0]) {
        if (!has_index(root)) {
            snprintf(err, errlen, "http.web_root: %s has no readable index.html", root);
            web_close(w);
            return -ENOENT;
        }
        dir = root;
    } else if (has_index(MLK_WEB_DIST)) {
        dir = MLK_WEB_DIST;
    } else if (has_index(MLK_WEB_SHARE)) {
        dir = MLK_WEB_SHARE;
    }
    if (!dir) {
        log_warnx("web: no dashboard files in %s%s%s; serving the API only (set http.web_root)",
                  MLK_WEB_DIST, MLK_WEB_DIST[0] ? " or " : "", MLK_WEB_SHARE);
        *out = w;
        return 0;
    }
    if ((rc = load(w, dir, err, errlen)) < 0) {
        web_close(w);
        return rc;
    }
    log_info("web: dashboard from %s", dir);
    *out = w;
    return 0;
}

const char *web_root(const web_t *w)
{
    return w ? w->root : "";
}

static const struct web_file *find(const web_t *w, const char *url)
{
    const char *name;

    if (!w || !w->root[0])
        return NULL;
    if (strcmp(url, "/") == 0)
        name = "index.html";
    else if (strncmp(url, STATIC_PREFIX, strlen(STATIC_PREFIX)) == 0)
        name = url + strlen(STATIC_PREFIX);
    else
        return NULL;
    /* whole-name comparison with the allow-list: nothing else reaches a file */
    for (size_t i = 0; i < w->n; i++)
        if (w->f[i].loaded && strcmp(w->f[i].name, name) == 0)
            return &w->f[i];
    return NULL;
}

bool web_path(const web_t *w, const char *url)
{
    return find(w, url) != NULL;
}

bool web_accepts_gzip(const char *ae)
{
    const char *p = ae;

    while (p && *p) {
        const char *end = p + strcspn(p, ","), *semi;
        size_t n;
        double q = 1.0;

        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        semi = memchr(p, ';', (size_t)(end - p));
        n = (size_t)((semi ? semi : end) - p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (semi) {
            const char *qs = semi + 1;
            while (qs < end && (*qs == ' ' || *qs == '\t'))
                qs++;
            if (qs + 2 <= end && (qs[0] == 'q' || qs[0] == 'Q') && qs[1] == '=')
                q = strtod(qs + 2, NULL);
        }
        if (((n == 4 && strncasecmp(p, "gzip", 4) == 0) ||
             (n == 6 && strncasecmp(p, "x-gzip", 6) == 0) || (n == 1 && *p == '*')) &&
            q > 0)
            return true;
        p = *end ? end + 1 : end;
    }
    return false;
}

bool web_etag_matches(const char *inm, const char *etag)
{
    size_t elen = strlen(etag);
    const char *p = inm;

    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (strncmp(p, etag, elen) == 0 &&
            (p[elen] == '\0' || p[elen] == ',' || p[elen] == ' ' || p[elen] == '\t'))
            return true;
        p += strcspn(p, ",");
    }
    return false;
}

static void add_common(struct MHD_Response *r)
{
    MHD_add_response_header(r, "Content-Security-Policy", csp);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Cross-Origin-Opener-Policy", "same-origin");
    MHD_add_response_header(r, "Cross-Origin-Resource-Policy", "same-origin");
}

static enum MHD_Result queue(struct MHD_Connection *c, unsigned int status, struct MHD_Response *r)
{
    enum MHD_Result ret;

    if (!r)
        return MHD_NO;
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result web_serve(const web_t *w, struct MHD_Connection *c, const char *url,
                          const char *method)
{
    static const char not_allowed[] =
        "{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"only GET and HEAD\"}}";
    static const char not_found[] =
        "{\"error\":{\"code\":\"not_found\",\"message\":\"no such file\"}}";
    const struct web_file *f = find(w, url);
    const struct variant *v;
    const char *ae, *inm, *ims;
    struct MHD_Response *r;
    bool not_modified;

    if (!f) {
        r = MHD_create_response_from_buffer(strlen(not_found), (void *)not_found,
                                            MHD_RESPMEM_PERSISTENT);
        if (r)
            MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        return queue(c, MHD_HTTP_NOT_FOUND, r);
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        r = MHD_create_response_from_buffer(strlen(not_allowed), (void *)not_allowed,
                                            MHD_RESPMEM_PERSISTENT);
        if (r) {
            MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
            MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
            MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        }
        return queue(c, MHD_HTTP_METHOD_NOT_ALLOWED, r);
    }
    ae = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    v = f->gz.data && ae && web_accepts_gzip(ae) ? &f->gz : &f->plain;
    inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    ims = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_MODIFIED_SINCE);
    /* If-None-Match wins over If-Modified-Since (RFC 9110, 13.2.2); the date is compared
     * as we sent it, which is what a browser sends back */
    not_modified = inm ? web_etag_matches(inm, v->etag) : ims && strcmp(ims, f->last_modified) == 0;
    if (not_modified)
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    else
        r = MHD_create_response_from_buffer(v->len, v->data, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    if (!not_modified)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, f->type);
    if (v == &f->gz)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
    MHD_add_response_header(r, MHD_HTTP_HEADER_VARY, "Accept-Encoding");
    MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, v->etag);
    MHD_add_response_header(r, MHD_HTTP_HEADER_LAST_MODIFIED, f->last_modified);
    /* no-cache: stored, but revalidated before each use, so a new build is seen at once
     * and an unchanged file costs a 304 */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    add_common(r);
    return queue(c, not_modified ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK, r);
}

void web_close(web_t *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->f[i].plain.data);
        free(w->f[i].gz.data);
    }
    free(w->f);
    free(w);
}
