/*
 * web: the dashboard's static files (cloud/web/), served by meter-cloud next to the API.
 *
 * Only the names of a fixed allow-list are ever served: the list is made by CMake from
 * cloud/web/CMakeLists.txt (web_files.h in the build tree), and a request path is compared
 * with those names as whole strings, so no path from a request ever reaches the file
 * system (no "..", no symlink games, no directory listing). "/" is index.html, and
 * "/static/NAME" is NAME. Everything is read into memory once, at web_open(); a changed
 * file on disk is seen at the next start.
 *
 * Each file may have a pre-compressed NAME.gz next to it (gzip -9, made by the build); it
 * is sent with Content-Encoding: gzip to a client whose Accept-Encoding allows gzip.
 * Every response has Vary: Accept-Encoding, a strong ETag (a SHA-256 prefix of what is
 * sent), Last-Modified, and Cache-Control: no-cache (the browser revalidates and gets a
 * 304 while nothing changed), and the security headers: a Content-Security-Policy that
 * allows only this origin's scripts and styles (no inline scripts) and no framing,
 * X-Content-Type-Options: nosniff, Referrer-Policy: no-referrer.
 *
 * Not here: templating, directory listings, range requests, anything but GET and HEAD.
 *
 * Errors: int functions return 0 or a negative errno.
 */
#ifndef MLK_CLOUD_WEB_H
#define MLK_CLOUD_WEB_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct web web_t;

/* Loads the allow-listed files from folder root. root NULL or "": the build tree's
 * cloud/web/dist when it has index.html, else the installed share folder
 * (<prefix>/share/meterlink/web); when neither has index.html, *out is a web_t that
 * serves nothing (web_path() is false for every path) and 0 is returned, so that the API
 * runs without the dashboard (log says so). A root given explicitly must have index.html:
 * else -ENOENT with the reason in err. A file of the list missing from root is logged and
 * answers 404. -ENOMEM, -EIO (a file that cannot be read; err names it). */
int web_open(const char *root, web_t **out, char *err, size_t errlen);

/* The folder the files were loaded from ("" when none). */
const char *web_root(const web_t *w);

/* Whether url is one of the dashboard's paths: "/" or "/static/NAME" for a NAME of the
 * allow-list that was loaded. w NULL: false. */
bool web_path(const web_t *w, const char *url);

/* Answers a request for url (web_path() true) with method ("GET", "HEAD"; anything else
 * gets a 405 with Allow: GET, HEAD). Reads If-None-Match and Accept-Encoding from c. */
enum MHD_Result web_serve(const web_t *w, struct MHD_Connection *c, const char *url,
                          const char *method);

/* Whether an Accept-Encoding value accepts gzip: a "gzip", "x-gzip" or "*" coding whose q
 * is not 0 (RFC 9110, 12.5.3). */
bool web_accepts_gzip(const char *accept_encoding);

/* Whether an If-None-Match value names etag (a quoted tag; weak comparison; "*" matches). */
bool web_etag_matches(const char *if_none_match, const char *etag);

/* Frees w (NULL is allowed). Only after the HTTP server is stopped: responses point into
 * its memory. */
void web_close(web_t *w);

#endif
