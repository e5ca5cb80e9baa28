/*
 * board_identity: the gateway id from the board file, /etc/machine-id or a serial number
 * file, in the wire protocol's id charset. See board.h.
 */
#include "board_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ID_FILE_MAX 4096 /* a serial number or machine-id file is a line, not a document */

static int id_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

static int blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* The first line of raw without surrounding white space: sets *start and returns its
 * length. */
static size_t first_line(const char *raw, size_t rawlen, const char **start)
{
    size_t i = 0, n = 0;

    while (i < rawlen && blank((unsigned char)raw[i]))
        i++;
    *start = raw + i;
    while (i + n < rawlen && raw[i + n] != '\0' && raw[i + n] != '\n' && raw[i + n] != '\r')
        n++;
    while (n > 0 && blank((unsigned char)(*start)[n - 1]))
        n--;
    return n;
}

int board_id_sanitize(const char *prefix, const char *raw, size_t rawlen, char *buf, size_t len)
{
    const size_t max = BOARD_ID_MAX - 1;
    const char *line;
    size_t n = 0, linelen, added = 0;
    int pending = 0;

    if (len < BOARD_ID_MAX)
        return -ENOSPC;
    for (; prefix && *prefix && n < max; prefix++)
        buf[n++] = *prefix;
    linelen = first_line(raw, rawlen, &line);
    for (size_t i = 0; i < linelen && n < max; i++) {
        unsigned char c = (unsigned char)line[i];
        if (!id_char(c)) {
            pending = added > 0; /* a run inside the id becomes one '_'; at the ends none */
            continue;
        }
        if (pending) {
            if (n + 1 >= max)
                break; /* no room for '_' and a character: cut here */
            buf[n++] = '_';
            pending = 0;
        }
        buf[n++] = (char)c;
        added++;
    }
    buf[n] = '\0';
    return added ? (int)n : -EINVAL;
}

/* Reads up to len bytes of path into buf. Returns the count or a negative errno. */
static ssize_t read_small(const char *path, char *buf, size_t len)
{
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    return (ssize_t)got;
}

/* machine-id(5): 32 lowercase hex digits. Anything else (empty before first boot,
 * "uninitialized" while it runs) is not an identity. */
static int machine_id_valid(const char *s, size_t n)
{
    if (n != 32)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

int board_identity(const board_t *b, char *buf, size_t len)
{
    char raw[ID_FILE_MAX];
    const char *line;
    ssize_t n;
    int rc;

    if (len < BOARD_ID_MAX)
        return -ENOSPC;
    switch (b->id_source) {
    case BOARD_ID_CONFIG:
        return -ENODATA;
    case BOARD_ID_FIXED:
        snprintf(buf, len, "%s", b->id_fixed);
        return 0;
    case BOARD_ID_MACHINE_ID:
    case BOARD_ID_FILE:
        break;
    }
    n = read_small(b->id_path, raw, sizeof(raw));
    if (n < 0)
        return (int)n;
    if (b->id_source == BOARD_ID_MACHINE_ID) {
        size_t linelen = first_line(raw, (size_t)n, &line);
        if (!machine_id_valid(line, linelen))
            return -EINVAL;
    }
    rc = board_id_sanitize(b->id_prefix, raw, (size_t)n, buf, len);
    return rc < 0 ? rc : 0;
}
