/*
 * tz: IANA time zones for bucket boundaries in local time (GLib's GTimeZone underneath).
 *
 * Thread-safe and free of process state: nothing here reads or sets the TZ environment
 * variable or calls localtime(), so HTTP threads and the ingest thread may use it at once.
 * A tz_t is immutable once opened. tz_get() hands out shared, cached zones that live until
 * tz_cache_clear() (called once at exit); tz_open()/tz_free() give a private one.
 *
 * Times are UTC milliseconds. A "bucket" is a local calendar interval [start, next): a local
 * day starts at local midnight (or, where midnight does not exist because of a DST jump,
 * at the first local time that does), so a day lasts 23, 24 or 25 hours; weeks start on
 * Monday (ISO 8601). 5-minute, 30-minute and hourly buckets start where the local clock
 * shows a multiple of that unit, so with a +05:45 offset an hour starts at hh:15 UTC, and
 * on the day clocks go back there are two different buckets labelled 02:00.
 *
 * Errors: int functions return 0 or a negative errno (-EINVAL: not a known zone).
 */
#ifndef MLK_CLOUD_TZ_H
#define MLK_CLOUD_TZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TZ_NAME_MAX 64 /* "America/Argentina/ComodRivadavia" and the like, with room */
#define TZ_ISO_MAX 32  /* "2026-03-29T00:00:00+01:00" */

typedef struct tz tz_t;

enum tz_unit { TZ_5MIN, TZ_30MIN, TZ_HOUR, TZ_DAY, TZ_WEEK, TZ_MONTH, TZ_YEAR };

/* Whether name is a zone this machine knows (loads it; "UTC" included). Rejects names
 * that are not of the IANA form (offsets such as "+05:30", empty, too long). */
bool tz_valid(const char *name);

/* Opens zone name. Returns 0 and *out, -EINVAL, or -ENOMEM. Free with tz_free(). */
int tz_open(const char *name, tz_t **out);
void tz_free(tz_t *tz);

/* A shared zone from a process-wide cache (at most 512 different names; further names
 * are -ENOSPC). Never free it. NULL or "" gives UTC. */
int tz_get(const char *name, const tz_t **out);
/* Frees every cached zone. No tz_get() result may be used after it. */
void tz_cache_clear(void);

const char *tz_name(const tz_t *tz);

/* Offset of local time from UTC at instant ms, in seconds (+3600 for CET). */
int tz_offset_s(const tz_t *tz, int64_t ms);

/* Whether every offset the zone has between from_ms and to_ms is a whole number of hours
 * (then UTC-aligned hourly rollups are its local hours). */
bool tz_whole_hours(const tz_t *tz, int64_t from_ms, int64_t to_ms);

/* The start of the local bucket of unit u that contains ms. */
int64_t tz_floor(const tz_t *tz, int64_t ms, enum tz_unit u);
/* The start of the bucket after the one that starts at start (a tz_floor() result). */
int64_t tz_next(const tz_t *tz, int64_t start, enum tz_unit u);

/* The UTC instant of local civil time y-mo-d h:mi (seconds 0); a time inside a DST gap
 * is moved to the first local time after the gap, an ambiguous one is the earlier. */
int64_t tz_local(const tz_t *tz, int y, int mo, int d, int h, int mi);

/* Local civil date and time of ms; wday 0 = Monday. */
struct tz_civil {
    int y, mo, d, h, mi, s, ms, wday;
};
void tz_civil(const tz_t *tz, int64_t ms, struct tz_civil *out);

/* Formats ms as local ISO 8601 with the offset: "2026-03-29T03:00:00+02:00" (seconds
 * always, milliseconds only when not 0). buf: at least TZ_ISO_MAX bytes. Returns buf. */
char *tz_format(const tz_t *tz, int64_t ms, char *buf, size_t len);

#endif
