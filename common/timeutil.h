/* timeutil: clocks and time parsing shared by every program. Times are UTC milliseconds. */
#ifndef MLK_TIMEUTIL_H
#define MLK_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

/* The last millisecond of year 9999: times are 0 .. TIME_MAX_MS. */
#define TIME_MAX_MS 253402300799999LL

int64_t now_ms(void);  /* CLOCK_REALTIME, ms since the epoch */
int64_t mono_ms(void); /* CLOCK_MONOTONIC, ms */

/* Parses a time given as ISO 8601 ("2026-12-02", "2026-12-02T13:00:00Z",
 * "2026-12-02T14:00:00.250+01:00") or as an epoch number: seconds, or milliseconds when it
 * has 13 or more digits. Returns 0 and *ms, or -EINVAL (also for a time outside
 * 1970 .. 9999 UTC). */
int time_parse(const char *s, int64_t *ms);

/* Formats ms as "2026-12-02T13:00:00.123Z" into buf (at least 25 bytes). */
char *time_format(int64_t ms, char *buf, size_t len);

/* Sleeps for ms milliseconds (restarts on EINTR until the time has passed). */
void sleep_ms(int64_t ms);

#endif
