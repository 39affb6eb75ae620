/*
 * at_time.c: RFC 3339 and HTTP dates.
 *
 * Parsed by hand instead of strptime(): strptime's month and weekday names
 * follow the process locale, and a web server's locale is not ours to choose.
 */
#include "at_time.h"

#include <ctype.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* Longest wait we report: a CA asking for more than a year is treated as a
 * year, which also keeps `now + seconds` far from overflow. */
#define AT_RETRY_AFTER_MAX (366L * 24 * 3600)

static _Atomic long long fake_now;

time_t at_time_now(void)
{
    long long f = atomic_load(&fake_now);
    return f ? (time_t)f : time(NULL);
}

void at_time_set_fake(time_t t)
{
    atomic_store(&fake_now, (long long)t);
}

time_t at_time_after(time_t now, long seconds)
{
    return now + (seconds > 0 ? (time_t)seconds : 0) + 1;
}

long long at_time_now_ms(void)
{
    long long f = atomic_load(&fake_now);
    struct timespec ts;
    if (f)
        return f * 1000;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Exactly n decimal digits at *p; advances p. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int d[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    return m == 2 && is_leap(y) ? 29 : d[m - 1];
}

/* Seconds since the epoch of a UTC calendar time, valid fields assumed.
 * Computed directly (days from civil) so that no TZ or libc state matters. */
static long long utc_seconds(int y, int mon, int d, int h, int mi, int s)
{
    long long yy = y - (mon <= 2);
    long long era = (yy >= 0 ? yy : yy - 399) / 400;
    long long yoe = yy - era * 400;
    long long doy = (153 * (mon + (mon > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long long days = era * 146097 + doe - 719468;
    return days * 86400 + h * 3600LL + mi * 60LL + s;
}

static int valid_fields(int y, int mon, int d, int h, int mi, int s)
{
    /* Second 60 is a leap second (RFC 3339 §5.7); it counts as :59. */
    return y >= 1 && mon >= 1 && mon <= 12 && d >= 1 && d <= days_in_month(y, mon) &&
           h <= 23 && mi <= 59 && s <= 60;
}

static int to_time_t(long long secs, time_t *t)
{
    if ((time_t)secs != secs)
        return -1;
    *t = (time_t)secs;
    return 0;
}

int at_time_parse(const char *s, time_t *t)
{
    int y, mon, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    const char *p = s;
    long long secs;
    if (!s || !t)
        return -1;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mon) || *p++ != '-' ||
        digits(&p, 2, &d))
        return -1;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -1;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
        digits(&p, 2, &sec))
        return -1;
    if (*p == '.') {
        /* Fractional seconds: at least one digit, truncated (never rounded
         * up: a notAfter must not move later). */
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '+' ? 1 : -1;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            return -1;
    } else {
        return -1;
    }
    if (*p != '\0' || !valid_fields(y, mon, d, h, mi, sec))
        return -1;
    if (sec == 60)
        sec = 59;
    secs = utc_seconds(y, mon, d, h, mi, sec) - sign * (oh * 3600LL + om * 60LL);
    return to_time_t(secs, t);
}

char *at_time_format(time_t t, char *buf, size_t size)
{
    struct tm tm;
    if (!buf || size == 0)
        return buf;
    if (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        buf[0] = '\0';
    return buf;
}

static int month_of(const char *p)
{
    static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++)
        if (strncmp(p, names + 3 * i, 3) == 0)
            return i + 1;
    return -1;
}

static const char *skip_sp(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* "HH:MM:SS" */
static int hms(const char **p, int *h, int *mi, int *s)
{
    if (digits(p, 2, h) || *(*p)++ != ':' || digits(p, 2, mi) || *(*p)++ != ':' || digits(p, 2, s))
        return -1;
    return 0;
}

/* The three HTTP-date forms of RFC 9110 §5.6.7: IMF-fixdate
 * ("Sun, 06 Nov 1994 08:49:37 GMT"), obsolete RFC 850
 * ("Sunday, 06-Nov-94 08:49:37 GMT") and asctime ("Sun Nov  6 08:49:37 1994").
 * The weekday is ignored: a wrong one changes nothing we act on. */
static int http_date(const char *s, time_t *t)
{
    const char *p = s, *comma = strchr(s, ',');
    int y, mon, d, h, mi, sec;
    if (comma) {
        size_t wl = (size_t)(comma - s);
        if (wl < 3 || wl > 9)
            return -1;
        for (size_t i = 0; i < wl; i++)
            if (!isalpha((unsigned char)s[i]))
                return -1;
        p = comma + 1;
        if (*p++ != ' ')
            return -1;
        if (digits(&p, 2, &d))
            return -1;
        if (*p == ' ') {                      /* IMF-fixdate */
            p++;
            if ((mon = month_of(p)) < 0)
                return -1;
            p += 3;
            if (*p++ != ' ' || digits(&p, 4, &y))
                return -1;
        } else if (*p == '-') {               /* RFC 850 */
            p++;
            if ((mon = month_of(p)) < 0)
                return -1;
            p += 3;
            if (*p++ != '-' || digits(&p, 2, &y))
                return -1;
            /* RFC 9110: a two-digit year more than 50 years ahead is in the past. */
            y += y < 70 ? 2000 : 1900;
        } else {
            return -1;
        }
        if (*p++ != ' ' || hms(&p, &h, &mi, &sec) || strcmp(p, " GMT") != 0)
            return -1;
    } else {                                  /* asctime */
        if (strlen(s) < 4 || s[3] != ' ')
            return -1;
        p = s + 4;
        if ((mon = month_of(p)) < 0)
            return -1;
        p += 3;
        if (*p++ != ' ')
            return -1;
        if (*p == ' ') {
            p++;
            if (digits(&p, 1, &d))
                return -1;
        } else if (digits(&p, 2, &d)) {
            return -1;
        }
        if (*p++ != ' ' || hms(&p, &h, &mi, &sec) || *p++ != ' ' || digits(&p, 4, &y) || *p)
            return -1;
    }
    if (!valid_fields(y, mon, d, h, mi, sec))
        return -1;
    if (sec == 60)
        sec = 59;
    return to_time_t(utc_seconds(y, mon, d, h, mi, sec), t);
}

long at_time_retry_after(const char *value, time_t now)
{
    char tmp[64];
    const char *p;
    size_t n;
    time_t t;
    if (!value)
        return -1;
    p = skip_sp(value);
    n = strlen(p);
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r' || p[n - 1] == '\n'))
        n--;
    if (n == 0 || n >= sizeof(tmp))
        return -1;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    if (isdigit((unsigned char)tmp[0])) {
        long v = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)tmp[i]))
                return -1;
            if (v < AT_RETRY_AFTER_MAX)
                v = v * 10 + (tmp[i] - '0');
        }
        return v > AT_RETRY_AFTER_MAX ? AT_RETRY_AFTER_MAX : v;
    }
    if (http_date(tmp, &t) != 0)
        return -1;
    if (t <= now)
        return 0;
    if ((long long)t - (long long)now > AT_RETRY_AFTER_MAX)
        return AT_RETRY_AFTER_MAX;
    return (long)(t - now);
}
