/*
 * at_time.h: RFC 3339 timestamps (UTC) and durations.
 */
#ifndef AT_TIME_H
#define AT_TIME_H

#include <time.h>
#include <stddef.h>

/* Parse "2025-01-02T03:04:05Z", fractional seconds and numeric offsets
 * accepted ("...05.123+02:00"; fractions are truncated, a leap second :60
 * counts as :59). Returns 0 and sets *t, or -1. */
int at_time_parse(const char *s, time_t *t);

/* Format as "YYYY-MM-DDTHH:MM:SSZ" into buf (at least 21 bytes). */
char *at_time_format(time_t t, char *buf, size_t size);
#define AT_TIME_BUFSIZE 32

/* Parse an HTTP Retry-After value: delta-seconds or an HTTP-date.
 * Returns seconds to wait from `now` (>= 0; a date in the past gives 0; capped
 * at one year), or -1 if unparsable. All three HTTP-date forms of RFC 9110
 * are read, independent of the locale. */
long at_time_retry_after(const char *value, time_t now);

/* When a wait of `seconds` that a server asked for (Retry-After) is over,
 * on this whole-second clock. `now` is up to a second behind the instant
 * the answer arrived (12:00:00.9 reads as 12:00:00), so the end is rounded
 * up: a wait a CA asked for never ends early. */
time_t at_time_after(time_t now, long seconds);

/* Wall clock, overridable for tests via at_time_set_fake(). */
time_t at_time_now(void);
void   at_time_set_fake(time_t t);   /* 0 to return to the real clock */

/* The same clock in milliseconds (the fake clock, when set, in whole
 * seconds): for waits shorter than a second, and for sleeping until a
 * whole-second deadline without overshooting it by up to a second. */
long long at_time_now_ms(void);

#endif
