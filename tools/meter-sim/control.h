/*
 * control: meter-sim's run-time control channel, a UNIX stream socket that takes text lines.
 *
 * It accepts up to CONTROL_MAX_CLIENTS clients at once, cuts what they send into lines of at
 * most CONTROL_LINE_MAX - 1 bytes (a longer line is answered "error: line too long" and
 * skipped up to its newline), hands every line to the handler and sends the handler's answer
 * back followed by a newline. It never blocks: a client that does not read its answers is
 * dropped. It knows lines, not commands: what a line means is the handler's business.
 *
 * Functions that can fail return 0 or a negative errno value.
 */
#ifndef MLK_CONTROL_H
#define MLK_CONTROL_H

#include <poll.h>
#include <stddef.h>

#define CONTROL_MAX_CLIENTS 8
#define CONTROL_LINE_MAX 256
#define CONTROL_ANSWER_MAX 65536 /* answer buffer the handler gets, NUL included */

/* Answers one line (NUL-terminated, no newline, a trailing '\r' removed; the handler may
 * modify it) by writing a NUL-terminated text of at most outlen - 1 bytes, without a newline,
 * into out. */
typedef void (*control_handler)(void *arg, char *line, char *out, size_t outlen);

struct control;

/* Listens on path (a stale socket left there is replaced; anything else there is an error,
 * -EEXIST). *out is the channel; on error returns a negative errno value. */
int control_open(const char *path, control_handler h, void *arg, struct control **out);

/* Removes the socket file and closes every connection. NULL is fine. */
void control_close(struct control *c);

/* Number of pollfds control_pollfds() fills at most. */
#define CONTROL_POLLFDS (1 + CONTROL_MAX_CLIENTS)

/* Fills fds (room for CONTROL_POLLFDS) with what the channel waits for; returns how many. */
int control_pollfds(struct control *c, struct pollfd *fds);

/* Acts on the n pollfds control_pollfds() filled, after poll() set their revents. */
void control_dispatch(struct control *c, const struct pollfd *fds, int n);

#endif
