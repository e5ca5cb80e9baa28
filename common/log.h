/*
 * log: one logging module for every Meterlink program.
 *
 * Foreground programs log to stderr (one line per message, with a level tag);
 * background ones to syslog. log_warn() appends strerror(errno). errno is
 * preserved across every call, so a log call never hides the cause of an error.
 * Thread-safe: each message is written with a single write(2)/syslog(3) call.
 */
#ifndef MLK_LOG_H
#define MLK_LOG_H

#include <stdnoreturn.h>

#define MLK_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* name: program name used as prefix and syslog ident; verbose: >0 enables log_debug;
 * foreground: 1 logs to stderr, 0 to syslog. */
void log_init(const char *name, int verbose, int foreground);
void log_set_verbose(int verbose);
int log_get_verbose(void);

void log_warn(const char *fmt, ...) MLK_PRINTF(1, 2);
void log_warnx(const char *fmt, ...) MLK_PRINTF(1, 2);
void log_info(const char *fmt, ...) MLK_PRINTF(1, 2);
void log_debug(const char *fmt, ...) MLK_PRINTF(1, 2);
noreturn void fatal(const char *fmt, ...) MLK_PRINTF(1, 2);
noreturn void fatalx(const char *fmt, ...) MLK_PRINTF(1, 2);

#endif
