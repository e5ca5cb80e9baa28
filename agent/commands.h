/*
 * commands: the agent's command protocol (docs/protocol.md, "Commands"). Parses a message
 * of <prefix>/<gw>/cmd, checks the command and its arguments, runs it through operations
 * the daemon supplies, and builds the reply for <prefix>/<gw>/reply.
 *
 * It knows nothing of MQTT, buses or files: the daemon (main.c) implements the operations
 * and publishes the replies, so parsing, argument rules and the reply format live here
 * alone. Commands run one at a time on the module's own thread, in arrival order; at most
 * CMD_QUEUE_MAX wait, more are refused ("busy").
 *
 * Errors: functions returning int return 0 or a negative errno value unless they say
 * otherwise.
 */
#ifndef MLK_AGENT_COMMANDS_H
#define MLK_AGENT_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>

#define CMD_MAX_PAYLOAD 65536 /* larger cmd messages are refused unread */
#define CMD_QUEUE_MAX 16
#define CMD_ID_MAX 128    /* a string id is 1..128 bytes */
#define CMD_REPLY_MAX 256 /* room for an immediate error reply (commands_submit) */

struct cJSON;

/* What an operation reports when it fails: code is one of the protocol's error codes
 * ("bad_args", "not_found", "invalid_config", "modbus", "failed", ...), message one line;
 * errors an optional array of strings (every message of an invalid configuration), which
 * the reply takes over. */
struct cmd_error {
    const char *code;
    char message[512];
    struct cJSON *errors;
};

/* read_registers' checked arguments. */
struct cmd_read {
    char bus[64];
    int unit;  /* 1..247 */
    int fc;    /* 3 or 4 */
    int addr;  /* 0..65535 */
    int count; /* 1..125, addr + count <= 65536 */
};

/* The daemon's side. Each operation runs on the command thread, fills result (an empty
 * JSON object the reply carries) and returns 0, or fills err and returns -1. */
struct cmd_ops {
    int (*ping)(void *arg, struct cJSON *result, struct cmd_error *err);
    /* meter NULL: every meter */
    int (*poll_now)(void *arg, const char *meter, struct cJSON *result, struct cmd_error *err);
    int (*get_config)(void *arg, struct cJSON *result, struct cmd_error *err);
    /* config: the whole new configuration (an object) */
    int (*set_config)(void *arg, const struct cJSON *config, struct cJSON *result,
                      struct cmd_error *err);
    int (*read_registers)(void *arg, const struct cmd_read *rq, struct cJSON *result,
                          struct cmd_error *err);
    int (*maintenance)(void *arg, bool on, struct cJSON *result, struct cmd_error *err);
    int (*reboot)(void *arg, struct cJSON *result, struct cmd_error *err);
    /* Publishes a reply (len bytes of JSON). */
    void (*reply)(void *arg, const char *payload, size_t len);
    void *arg;
};

/* Parses and runs one command message synchronously; returns the reply (malloc'd,
 * NUL-terminated JSON; the caller frees it), or NULL when the message has no usable id
 * (nothing can be answered; the reason is logged) or memory ran out. */
char *commands_run(const struct cmd_ops *ops, const char *payload, size_t len);

typedef struct commands commands_t;

/* Starts the command thread. ops is copied. */
int commands_start(const struct cmd_ops *ops, commands_t **out);
/* Queues a message for the command thread; any thread, never blocks for long. Returns 0
 * when queued (the reply goes out through ops->reply later), or a positive length when the
 * message is refused at once (too large, not JSON, bad id, queue full) and reply (of
 * CMD_REPLY_MAX bytes) holds the error reply to publish; or -1 when it is refused and
 * cannot be answered (no usable id). */
int commands_submit(commands_t *c, const char *payload, size_t len, char *reply);
/* Waits for the command that runs, drops those still queued (unanswered), stops the
 * thread and frees c. NULL is fine. */
void commands_stop(commands_t *c);

#endif
