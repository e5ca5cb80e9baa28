/* log: see log.h. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *log_name = "meterlink";
static int log_verbose;
static int log_fg = 1;

void log_init(const char *name, int verbose, int foreground)
{
    log_name = name;
    log_verbose = verbose;
    log_fg = foreground;
    if (!foreground)
        openlog(name, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_set_verbose(int verbose)
{
    log_verbose = verbose;
}

int log_get_verbose(void)
{
    return log_verbose;
}

static void vlog(int pri, const char *tag, int with_errno, const char *fmt, va_list ap)
{
    int saved = errno;
    char msg[1024];
    char line[1200];
    int n;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (log_fg) {
        struct timespec ts;
        struct tm tm;
        char stamp[32];

        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
        if (with_errno)
            n = snprintf(line, sizeof(line), "%s.%03ldZ %s %s: %s: %s\n", stamp,
                         ts.tv_nsec / 1000000, log_name, tag, msg, strerror(saved));
        else
            n = snprintf(line, sizeof(line), "%s.%03ldZ %s %s: %s\n", stamp,
                         ts.tv_nsec / 1000000, log_name, tag, msg);
        if (n > (int)sizeof(line) - 1) {
            n = (int)sizeof(line) - 1;
            line[n - 1] = '\n';
        }
        if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0) {
            /* nowhere left to report it */
        }
    } else {
        if (with_errno)
            syslog(pri, "%s: %s", msg, strerror(saved));
        else
            syslog(pri, "%s", msg);
    }
    errno = saved;
}

void log_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_WARNING, "warning", 1, fmt, ap);
    va_end(ap);
}

void log_warnx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_WARNING, "warning", 0, fmt, ap);
    va_end(ap);
}

void log_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_INFO, "info", 0, fmt, ap);
    va_end(ap);
}

void log_debug(const char *fmt, ...)
{
    va_list ap;
    if (log_verbose <= 0)
        return;
    va_start(ap, fmt);
    vlog(LOG_DEBUG, "debug", 0, fmt, ap);
    va_end(ap);
}

void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_CRIT, "fatal", 1, fmt, ap);
    va_end(ap);
    exit(1);
}

void fatalx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_CRIT, "fatal", 0, fmt, ap);
    va_end(ap);
    exit(1);
}
