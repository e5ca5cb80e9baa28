/* control: see control.h. */
#define _GNU_SOURCE /* accept4 */

#include "control.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct ctl_client {
    int fd;
    size_t len;
    int skipping; /* the line being received is too long: drop it up to its newline */
    char buf[CONTROL_LINE_MAX];
};

struct control {
    int listen_fd;
    char *path;
    control_handler handler;
    void *arg;
    struct ctl_client clients[CONTROL_MAX_CLIENTS];
    int nclients;
    char answer[CONTROL_ANSWER_MAX + 1]; /* + the newline */
};

int control_open(const char *path, control_handler h, void *arg, struct control **out)
{
    struct control *c;
    struct sockaddr_un sa;
    struct stat st;
    size_t plen = strlen(path);
    int rc;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (plen >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, plen + 1); /* the terminator included: fits, checked above */
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return -EEXIST;
        unlink(path); /* left by an earlier run */
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->path = strdup(path);
    c->handler = h;
    c->arg = arg;
    c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->path == NULL || c->listen_fd < 0) {
        rc = c->path == NULL ? -ENOMEM : -errno;
        goto fail;
    }
    if (bind(c->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(c->listen_fd, CONTROL_MAX_CLIENTS) < 0) {
        rc = -errno;
        goto fail;
    }
    *out = c;
    return 0;

fail:
    if (c->listen_fd >= 0)
        close(c->listen_fd);
    free(c->path);
    free(c);
    return rc;
}

void control_close(struct control *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < c->nclients; i++)
        close(c->clients[i].fd);
    close(c->listen_fd);
    unlink(c->path);
    free(c->path);
    free(c);
}

int control_pollfds(struct control *c, struct pollfd *fds)
{
    int n = 0;

    fds[n++] = (struct pollfd){.fd = c->listen_fd, .events = POLLIN};
    for (int i = 0; i < c->nclients; i++)
        fds[n++] = (struct pollfd){.fd = c->clients[i].fd, .events = POLLIN};
    return n;
}

/* Sends text and a newline, all of it or nothing more: a short write drops the client. */
static int send_answer(struct ctl_client *cl, const char *text, size_t len)
{
    ssize_t n = send(cl->fd, text, len, MSG_DONTWAIT | MSG_NOSIGNAL);

    if (n < 0 || (size_t)n != len) {
        log_debug("control: client %d does not take its answer; closing", cl->fd);
        close(cl->fd);
        cl->fd = -1;
        return -EIO;
    }
    return 0;
}

static void answer_line(struct control *c, struct ctl_client *cl, char *line)
{
    size_t n = strlen(line);

    if (n > 0 && line[n - 1] == '\r')
        line[n - 1] = '\0';
    c->answer[0] = '\0';
    c->handler(c->arg, line, c->answer, CONTROL_ANSWER_MAX);
    n = strnlen(c->answer, CONTROL_ANSWER_MAX - 1);
    c->answer[n++] = '\n';
    send_answer(cl, c->answer, n);
}

static void client_read(struct control *c, struct ctl_client *cl)
{
    char buf[1024];
    ssize_t n = recv(cl->fd, buf, sizeof(buf), MSG_DONTWAIT);

    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        close(cl->fd);
        cl->fd = -1;
        return;
    }
    for (ssize_t i = 0; i < n && cl->fd >= 0; i++) {
        char ch = buf[i];

        if (ch == '\n') {
            if (!cl->skipping) {
                cl->buf[cl->len] = '\0';
                answer_line(c, cl, cl->buf);
            }
            cl->len = 0;
            cl->skipping = 0;
        } else if (cl->skipping) {
            continue;
        } else if (cl->len + 1 >= sizeof(cl->buf)) {
            static const char too_long[] = "error: line too long\n";

            cl->skipping = 1;
            cl->len = 0;
            send_answer(cl, too_long, sizeof(too_long) - 1);
        } else {
            cl->buf[cl->len++] = ch;
        }
    }
}

static void accept_client(struct control *c)
{
    int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    struct ctl_client *cl;

    if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            log_warn("control: accept");
        return;
    }
    if (c->nclients >= CONTROL_MAX_CLIENTS) {
        static const char busy[] = "error: too many control clients\n";

        if (send(fd, busy, sizeof(busy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
            log_debug("control: refusing a client: %s", strerror(errno));
        close(fd);
        return;
    }
    cl = &c->clients[c->nclients++];
    memset(cl, 0, sizeof(*cl));
    cl->fd = fd;
}

void control_dispatch(struct control *c, const struct pollfd *fds, int n)
{
    /* fds[1 ..] are the clients in the order control_pollfds() listed them. */
    for (int i = 1; i < n && i - 1 < c->nclients; i++)
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR))
            client_read(c, &c->clients[i - 1]);
    for (int i = 0; i < c->nclients;) {
        if (c->clients[i].fd < 0)
            c->clients[i] = c->clients[--c->nclients];
        else
            i++;
    }
    if (n > 0 && (fds[0].revents & POLLIN))
        accept_client(c);
}
