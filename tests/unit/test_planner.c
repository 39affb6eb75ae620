/*
 * test_planner.c: the renewal planner against a fixed clock: every reason,
 * the window edges, short-lived certificates, ARI, backoff and Retry-After.
 */
#include "at_test.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "at_planner.h"

#define NOW  ((time_t)1750000000)
#define DAY  86400L
#define CA_A "https://ca.example/directory"
#define CA_B "https://other-ca.example/directory"

static char *conf_names[] = { "example.com", "www.example.com" };

static at_cert_conf make_conf(at_renew_window w)
{
    at_cert_conf c;
    memset(&c, 0, sizeof(c));
    c.id = "example.com_ec256";
    c.site = "example.com:443";
    c.names = conf_names;
    c.nnames = 2;
    c.key.kind = AT_KEY_EC;
    c.key.bits = 256;
    c.window = w;
    return c;
}

/* One row: a situation relative to NOW and the plan it must give. */
typedef struct row {
    const char *what;
    /* input */
    int    have_cert;
    long   nb;             /* not_before - NOW */
    long   life;           /* not_after - not_before */
    int    names;          /* 0: same as conf, 1: only example.com, 2: conf + extra,
                              3: conf in another order and case, 4: conf with trailing dots */
    int    rsa;            /* stored key is rsa:2048 */
    int    unknown_key;    /* stored key kind unknown (0) */
    const char *ca;        /* issuing CA, NULL: unknown */
    int    revoked, have_order, failures;
    long   last_failure;   /* - NOW, used when failures > 0 */
    long   retry_after;    /* - NOW, 0: none */
    long   ari_pick;       /* - NOW, 0: none */
    int    force;
    int    pct;            /* window percent */
    long   secs;           /* window duration */
    unsigned long rnd;
    /* expected */
    at_plan_reason reason;
    long   due;            /* - NOW */
    long   renew_at;       /* - NOW; LONG_MIN: 0 (no certificate) */
    at_plan_reason why;
    int    backoff;
} row;

#define NORENEW LONG_MIN
/* A 90-day certificate issued 10 days ago renews 60 days after issuance. */
#define FRESH 1, -10 * DAY, 90 * DAY

static const row rows[] = {
    { "missing", 0, 0, 0, 0, 0, 0, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_MISSING, 0, NORENEW, AT_PLAN_NONE, 0 },
    { "missing with an order in flight", 0, 0, 0, 0, 0, 0, NULL, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_RESUME, 0, NORENEW, AT_PLAN_NONE, 0 },
    { "renewal order in flight", FRESH, 0, 0, 0, CA_A, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_RESUME, 0, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "fresh: wait for the window", FRESH, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_NONE, 50 * DAY, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "exactly at the window edge", 1, -60 * DAY, 90 * DAY, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_EXPIRING, 0, 0, AT_PLAN_EXPIRING, 0 },
    { "one second before the edge", 1, -60 * DAY + 1, 90 * DAY, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_NONE, 1, 1, AT_PLAN_EXPIRING, 0 },
    { "one second after the edge", 1, -60 * DAY - 1, 90 * DAY, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_EXPIRING, 0, -1, AT_PLAN_EXPIRING, 0 },
    { "expired", 1, -100 * DAY, 90 * DAY, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_EXPIRING, 0, -40 * DAY, AT_PLAN_EXPIRING, 0 },
    /* short-lived: renew at half-life */
    { "6-day cert before half-life", 1, -2 * DAY, 6 * DAY, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_NONE, 1 * DAY, 1 * DAY, AT_PLAN_EXPIRING, 0 },
    { "6-day cert at half-life", 1, -3 * DAY, 6 * DAY, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_EXPIRING, 0, 0, AT_PLAN_EXPIRING, 0 },
    { "10-day cert is short-lived", 1, -4 * DAY, 10 * DAY, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_NONE, 1 * DAY, 1 * DAY, AT_PLAN_EXPIRING, 0 },
    { "10-day-and-3-second cert renews at 2/3", 1, -4 * DAY, 10 * DAY + 3, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_NONE, (10 * DAY + 3) * 2 / 3 - 4 * DAY, (10 * DAY + 3) * 2 / 3 - 4 * DAY, AT_PLAN_EXPIRING, 0 },
    /* configured windows */
    { "window 50%", FRESH, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 50, 0, 0,
      AT_PLAN_NONE, 35 * DAY, 35 * DAY, AT_PLAN_EXPIRING, 0 },
    { "window 90% is already open", FRESH, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 90, 0, 0,
      AT_PLAN_EXPIRING, 0, -1 * DAY, AT_PLAN_EXPIRING, 0 },
    { "window 7d", FRESH, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 7 * DAY, 0,
      AT_PLAN_NONE, 73 * DAY, 73 * DAY, AT_PLAN_EXPIRING, 0 },
    { "window 80d is open", FRESH, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 80 * DAY, 0,
      AT_PLAN_EXPIRING, 0, 0, AT_PLAN_EXPIRING, 0 },
    { "window longer than the lifetime: default", FRESH, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 90 * DAY, 0,
      AT_PLAN_NONE, 50 * DAY, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    /* ARI */
    { "ARI pick in the past", FRESH, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, -60, 0, 0, 0, 0,
      AT_PLAN_ARI, 0, -60, AT_PLAN_ARI, 0 },
    { "ARI earlier than the window", FRESH, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 5 * DAY, 0, 0, 0, 0,
      AT_PLAN_NONE, 5 * DAY, 5 * DAY, AT_PLAN_ARI, 0 },
    { "ARI later than the window", FRESH, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 55 * DAY, 0, 0, 0, 0,
      AT_PLAN_NONE, 50 * DAY, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "ARI later, window open", 1, -70 * DAY, 90 * DAY, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 10 * DAY, 0, 0, 0, 0,
      AT_PLAN_EXPIRING, 0, -10 * DAY, AT_PLAN_EXPIRING, 0 },
    /* configuration changes */
    { "a name was added", FRESH, 1, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_NAMES_CHANGED, 0, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "a name was removed", FRESH, 2, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_NAMES_CHANGED, 0, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "same names, other order and case", FRESH, 3, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_NONE, 50 * DAY, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "same names with trailing dots", FRESH, 4, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_NONE, 50 * DAY, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "key type changed", FRESH, 0, 1, 0, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_KEY_CHANGED, 0, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "stored key type unknown", FRESH, 0, 0, 1, CA_A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_NONE, 50 * DAY, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "CA changed", FRESH, 0, 0, 0, CA_B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_CA_CHANGED, 0, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "issuing CA unknown", FRESH, 0, 0, 0, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_NONE, 50 * DAY, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "revoked", FRESH, 0, 0, 0, CA_A, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_REVOKED, 0, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "forced", FRESH, 0, 0, 0, CA_A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
      AT_PLAN_FORCED, 0, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "order in flight outranks revoked", FRESH, 0, 0, 0, CA_A, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_RESUME, 0, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    /* backoff: base 60, cap 21600; rnd = q gives zero jitter */
    { "1 failure 10 s ago", 0, 0, 0, 0, 0, 0, NULL, 0, 0, 1, -10, 0, 0, 0, 0, 0, 15,
      AT_PLAN_MISSING, 50, NORENEW, AT_PLAN_NONE, 1 },
    { "1 failure, jitter -25%", 0, 0, 0, 0, 0, 0, NULL, 0, 0, 1, -10, 0, 0, 0, 0, 0, 0,
      AT_PLAN_MISSING, 35, NORENEW, AT_PLAN_NONE, 1 },
    { "1 failure, jitter +25%", 0, 0, 0, 0, 0, 0, NULL, 0, 0, 1, -10, 0, 0, 0, 0, 0, 30,
      AT_PLAN_MISSING, 65, NORENEW, AT_PLAN_NONE, 1 },
    { "1 failure long ago", 0, 0, 0, 0, 0, 0, NULL, 0, 0, 1, -1000, 0, 0, 0, 0, 0, 15,
      AT_PLAN_MISSING, 0, NORENEW, AT_PLAN_NONE, 0 },
    { "3 failures: 240 s", 1, -70 * DAY, 90 * DAY, 0, 0, 0, CA_A, 0, 0, 3, 0, 0, 0, 0, 0, 0, 60,
      AT_PLAN_EXPIRING, 240, -10 * DAY, AT_PLAN_EXPIRING, 1 },
    { "20 failures: capped at 6 h", 1, -70 * DAY, 90 * DAY, 0, 0, 0, CA_A, 0, 0, 20, 0, 0, 0, 0, 0, 0, 5400,
      AT_PLAN_EXPIRING, 21600, -10 * DAY, AT_PLAN_EXPIRING, 1 },
    { "failures do not delay a plan that waits anyway", FRESH, 0, 0, 0, CA_A, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0,
      AT_PLAN_NONE, 50 * DAY, 50 * DAY, AT_PLAN_EXPIRING, 0 },
    { "Retry-After beyond the backoff", 0, 0, 0, 0, 0, 0, NULL, 0, 0, 1, 0, 3600, 0, 0, 0, 0, 15,
      AT_PLAN_MISSING, 3600, NORENEW, AT_PLAN_NONE, 1 },
    { "backoff beyond Retry-After", 0, 0, 0, 0, 0, 0, NULL, 0, 0, 1, 0, 30, 0, 0, 0, 0, 15,
      AT_PLAN_MISSING, 60, NORENEW, AT_PLAN_NONE, 1 },
    { "Retry-After in the past", 0, 0, 0, 0, 0, 0, NULL, 0, 0, 1, -500, -5, 0, 0, 0, 0, 15,
      AT_PLAN_MISSING, 0, NORENEW, AT_PLAN_NONE, 0 },
    { "Retry-After without failures", 0, 0, 0, 0, 0, 0, NULL, 0, 0, 0, 0, 120, 0, 0, 0, 0, 0,
      AT_PLAN_MISSING, 120, NORENEW, AT_PLAN_NONE, 1 },
    { "Retry-After delays a forced renewal", FRESH, 0, 0, 0, CA_A, 0, 0, 0, 0, 900, 0, 1, 0, 0, 0,
      AT_PLAN_FORCED, 900, 50 * DAY, AT_PLAN_EXPIRING, 1 },
    { "Retry-After beyond the renew time", FRESH, 0, 0, 0, CA_A, 0, 0, 0, 0, 60 * DAY, 0, 0, 0, 0, 0,
      AT_PLAN_NONE, 60 * DAY, 50 * DAY, AT_PLAN_EXPIRING, 1 },
    { "Retry-After before the renew time", FRESH, 0, 0, 0, CA_A, 0, 0, 0, 0, 2 * DAY, 0, 0, 0, 0, 0,
      AT_PLAN_NONE, 50 * DAY, 50 * DAY, AT_PLAN_EXPIRING, 0 },
};

static void run_row(const row *r)
{
    static const char *one[] = { "example.com" };
    static const char *extra[] = { "example.com", "www.example.com", "old.example.com" };
    static const char *reorder[] = { "WWW.Example.com", "example.COM" };
    static const char *dots[] = { "example.com.", "www.example.com." };
    at_cert_conf cc;
    at_renew_window w = { r->pct, r->secs };
    at_plan_input in;
    at_plan_policy pol = { 60, 21600 };
    at_plan p;

    cc = make_conf(w);
    memset(&in, 0, sizeof(in));
    in.conf = &cc;
    in.conf_ca_url = CA_A;
    in.have_cert = r->have_cert;
    if (r->have_cert) {
        in.not_before = NOW + r->nb;
        in.not_after = NOW + r->nb + r->life;
        switch (r->names) {
        case 0: in.names = (const char *const *)conf_names; in.nnames = 2; break;
        case 1: in.names = one; in.nnames = 1; break;
        case 2: in.names = extra; in.nnames = 3; break;
        case 3: in.names = reorder; in.nnames = 2; break;
        default: in.names = dots; in.nnames = 2; break;
        }
        in.key = cc.key;
        if (r->rsa) {
            in.key.kind = AT_KEY_RSA;
            in.key.bits = 2048;
        }
        if (r->unknown_key)
            in.key.kind = 0;
        in.ca_url = r->ca;
    }
    in.revoked = r->revoked;
    in.have_order = r->have_order;
    in.failures = r->failures;
    in.last_failure = r->failures ? NOW + r->last_failure : 0;
    in.retry_after = r->retry_after ? NOW + r->retry_after : 0;
    in.ari_pick = r->ari_pick ? NOW + r->ari_pick : 0;
    in.force = r->force ? NOW - 5 : 0;

    at_plan_cert(&in, &pol, NOW, r->rnd, &p);
    AT_CHECK_MSG(p.reason == r->reason, "%s: reason %s, expected %s", r->what,
                 at_plan_reason_name(p.reason), at_plan_reason_name(r->reason));
    AT_CHECK_MSG(p.due == NOW + r->due, "%s: due NOW%+lld, expected NOW%+ld", r->what,
                 (long long)(p.due - NOW), r->due);
    if (r->renew_at == NORENEW)
        AT_CHECK_MSG(p.renew_at == 0, "%s: renew_at %lld, expected 0", r->what, (long long)p.renew_at);
    else
        AT_CHECK_MSG(p.renew_at == NOW + r->renew_at, "%s: renew_at NOW%+lld, expected NOW%+ld",
                     r->what, (long long)(p.renew_at - NOW), r->renew_at);
    AT_CHECK_MSG(p.renew_why == r->why, "%s: renew_why %s, expected %s", r->what,
                 at_plan_reason_name(p.renew_why), at_plan_reason_name(r->why));
    AT_CHECK_MSG(p.in_backoff == r->backoff, "%s: in_backoff %d, expected %d", r->what,
                 p.in_backoff, r->backoff);
    /* Whatever the case, "nothing to do" never means "due already". */
    AT_CHECK_MSG(p.reason != AT_PLAN_NONE || p.due > NOW, "%s: NONE but due now", r->what);
}

static void t_table(void)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        run_row(&rows[i]);
}

/* An ARI pick exactly now (the table cannot say "NOW + 0": 0 means none). */
static void t_ari_pick_exactly_now(void)
{
    at_cert_conf cc = make_conf((at_renew_window){ 0, 0 });
    at_plan_input in;
    at_plan p;

    memset(&in, 0, sizeof(in));
    in.conf = &cc;
    in.have_cert = 1;
    in.not_before = NOW - 10 * DAY;
    in.not_after = NOW + 80 * DAY;
    in.names = (const char *const *)conf_names;
    in.nnames = 2;
    in.key = cc.key;
    in.ari_pick = NOW;
    at_plan_cert(&in, NULL, NOW, 0, &p);
    AT_CHECK_INT(p.reason, AT_PLAN_ARI);
    AT_CHECK_INT(p.due, NOW);
    AT_CHECK_INT(p.renew_at, NOW);
    in.ari_pick = NOW + 1;
    at_plan_cert(&in, NULL, NOW, 0, &p);
    AT_CHECK_INT(p.reason, AT_PLAN_NONE);
    AT_CHECK_INT(p.due, NOW + 1);
}

static void t_no_conf(void)
{
    at_plan_input in;
    at_plan p;
    static const char *names[] = { "a.example" };

    memset(&in, 0, sizeof(in));
    in.have_cert = 1;
    in.not_before = NOW - DAY;
    in.not_after = NOW + 89 * DAY;
    in.names = names;
    in.nnames = 1;
    in.key.kind = AT_KEY_RSA;
    in.key.bits = 4096;
    at_plan_cert(&in, NULL, NOW, 0, &p);
    AT_CHECK_INT(p.reason, AT_PLAN_NONE);
    AT_CHECK_INT(p.renew_at, NOW + 59 * DAY);
}

static void t_renew_at(void)
{
    at_renew_window none = { 0, 0 }, pct = { 25, 0 }, dur = { 0, 3 * DAY }, huge = { 0, 400 * DAY };
    time_t nb = NOW, na = NOW + 90 * DAY;

    AT_CHECK_INT(at_plan_renew_at(nb, na, NULL), na - 30 * DAY);
    AT_CHECK_INT(at_plan_renew_at(nb, na, &none), na - 30 * DAY);
    AT_CHECK_INT(at_plan_renew_at(nb, na, &pct), na - (90 * DAY) / 4);
    AT_CHECK_INT(at_plan_renew_at(nb, na, &dur), na - 3 * DAY);
    AT_CHECK_INT(at_plan_renew_at(nb, na, &huge), na - 30 * DAY);
    /* Let's Encrypt's 6-day certificates and 160-hour ones. */
    AT_CHECK_INT(at_plan_renew_at(nb, nb + 6 * DAY, NULL), nb + 3 * DAY);
    AT_CHECK_INT(at_plan_renew_at(nb, nb + 160 * 3600, NULL), nb + 80 * 3600);
    /* A 3-day window on a 6-day certificate is allowed; 6 days is not. */
    AT_CHECK_INT(at_plan_renew_at(nb, nb + 6 * DAY, &dur), nb + 3 * DAY);
    dur.seconds = 6 * DAY;
    AT_CHECK_INT(at_plan_renew_at(nb, nb + 6 * DAY, &dur), nb + 3 * DAY);
    dur.seconds = 2 * DAY;
    AT_CHECK_INT(at_plan_renew_at(nb, nb + 6 * DAY, &dur), nb + 4 * DAY);
    /* Nonsense validity: renew at its end rather than crash or wait forever. */
    AT_CHECK_INT(at_plan_renew_at(na, nb, NULL), nb);
    AT_CHECK_INT(at_plan_renew_at(nb, nb, &pct), nb);
}

static void t_backoff_growth_and_cap(void)
{
    at_plan_policy pol = { 60, 21600 };
    long prev = 0;

    AT_CHECK_INT(at_plan_backoff(0, &pol, 123), 0);
    AT_CHECK_INT(at_plan_backoff(-3, &pol, 123), 0);
    for (int n = 1; n <= 40; n++) {
        long nominal = n <= 30 && (60L << (n - 1)) < 21600 ? 60L << (n - 1) : 21600;
        long q = nominal / 4;
        /* rnd == q: no jitter, the exact doubling and the cap */
        long d = at_plan_backoff(n, &pol, (unsigned long)q);
        AT_CHECK_MSG(d == nominal, "failures %d: %ld, expected %ld", n, d, nominal);
        AT_CHECK_MSG(d >= prev, "failures %d: %ld shrank from %ld", n, d, prev);
        prev = d;
    }
    AT_CHECK_INT(at_plan_backoff(1, &pol, 15), 60);
    AT_CHECK_INT(at_plan_backoff(2, &pol, 30), 120);
    AT_CHECK_INT(at_plan_backoff(9, &pol, 3840), 15360);
    AT_CHECK_INT(at_plan_backoff(10, &pol, 5400), 21600);
    AT_CHECK_INT(at_plan_backoff(INT_MAX, &pol, 5400), 21600);
}

static void t_backoff_jitter_bounds(void)
{
    at_plan_policy pol = { 60, 21600 };
    static const int ns[] = { 1, 2, 3, 5, 8, 9, 10, 50 };

    for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
        int n = ns[k];
        long nominal = n < 10 ? 60L << (n - 1) : 21600;
        long lo = nominal - nominal / 4;
        long hi = nominal + nominal / 4 > 21600 ? 21600 : nominal + nominal / 4;
        long seen_lo = LONG_MAX, seen_hi = 0;
        unsigned long x = 88172645463325252UL;
        for (int i = 0; i < 20000; i++) {
            unsigned long rnd;
            long d;
            /* the band's ends first, then many values, the same in every run */
            if (i == 0)
                rnd = 0;
            else if (i == 1)
                rnd = (unsigned long)(2 * (nominal / 4));
            else if (i == 2)
                rnd = ULONG_MAX;
            else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                rnd = x;
            }
            d = at_plan_backoff(n, &pol, rnd);
            AT_CHECK_MSG(d >= lo && d <= hi, "failures %d rnd %lu: %ld outside [%ld, %ld]", n, rnd, d, lo, hi);
            AT_CHECK_MSG(d == at_plan_backoff(n, &pol, rnd), "failures %d: not deterministic", n);
            if (d < seen_lo)
                seen_lo = d;
            if (d > seen_hi)
                seen_hi = d;
        }
        /* The jitter really spreads over the whole band. */
        AT_CHECK_MSG(seen_lo == lo, "failures %d: lowest %ld, band starts at %ld", n, seen_lo, lo);
        AT_CHECK_MSG(seen_hi == hi, "failures %d: highest %ld, band ends at %ld", n, seen_hi, hi);
    }
}

static void t_backoff_policy_defaults(void)
{
    at_plan_policy zero = { 0, 0 }, small = { 10, 100 }, inverted = { 500, 100 }, tiny = { 1, 1 };

    AT_CHECK_INT(at_plan_backoff(1, NULL, 15), 60);
    AT_CHECK_INT(at_plan_backoff(1, &zero, 15), 60);
    AT_CHECK_INT(at_plan_backoff(30, &zero, 5400), 21600);
    AT_CHECK_INT(at_plan_backoff(1, &small, 2), 10);
    AT_CHECK_INT(at_plan_backoff(4, &small, 20), 80);
    AT_CHECK_INT(at_plan_backoff(5, &small, 25), 100);
    /* A cap below the base: the base wins, never a zero or negative wait. */
    AT_CHECK_INT(at_plan_backoff(3, &inverted, 125), 500);
    for (unsigned long r = 0; r < 10; r++)
        AT_CHECK_INT(at_plan_backoff(7, &tiny, r), 1);
}

/* The same failure state planned with many rnd values stays inside the band
 * and after Retry-After. */
static void t_plan_jitter_and_retry_after(void)
{
    at_plan_input in;
    at_plan_policy pol = { 60, 21600 };
    at_plan p;

    memset(&in, 0, sizeof(in));
    in.failures = 4;                  /* nominal 480 s */
    in.last_failure = NOW;
    for (unsigned long r = 0; r < 5000; r += 7) {
        at_plan_cert(&in, &pol, NOW, r * 2654435761UL, &p);
        AT_CHECK_INT(p.reason, AT_PLAN_MISSING);
        AT_CHECK(p.due >= NOW + 360 && p.due <= NOW + 600);
        AT_CHECK_INT(p.in_backoff, 1);
    }
    in.retry_after = NOW + 601;
    for (unsigned long r = 0; r < 5000; r += 7) {
        at_plan_cert(&in, &pol, NOW, r * 2654435761UL, &p);
        AT_CHECK_INT(p.due, NOW + 601);
    }
}

static void t_reason_names(void)
{
    AT_CHECK_STR(at_plan_reason_name(AT_PLAN_NONE), "none");
    AT_CHECK_STR(at_plan_reason_name(AT_PLAN_MISSING), "missing");
    AT_CHECK_STR(at_plan_reason_name(AT_PLAN_RESUME), "resume");
    AT_CHECK_STR(at_plan_reason_name(AT_PLAN_EXPIRING), "expiring");
    AT_CHECK_STR(at_plan_reason_name(AT_PLAN_ARI), "ari");
    AT_CHECK_STR(at_plan_reason_name(AT_PLAN_NAMES_CHANGED), "names-changed");
    AT_CHECK_STR(at_plan_reason_name(AT_PLAN_KEY_CHANGED), "key-changed");
    AT_CHECK_STR(at_plan_reason_name(AT_PLAN_CA_CHANGED), "ca-changed");
    AT_CHECK_STR(at_plan_reason_name(AT_PLAN_REVOKED), "revoked");
    AT_CHECK_STR(at_plan_reason_name(AT_PLAN_FORCED), "forced");
    AT_CHECK_STR(at_plan_reason_name((at_plan_reason)99), "unknown");
}

static const at_test_case cases[] = {
    AT_CASE(t_table),
    AT_CASE(t_ari_pick_exactly_now),
    AT_CASE(t_no_conf),
    AT_CASE(t_renew_at),
    AT_CASE(t_backoff_growth_and_cap),
    AT_CASE(t_backoff_jitter_bounds),
    AT_CASE(t_backoff_policy_defaults),
    AT_CASE(t_plan_jitter_and_retry_after),
    AT_CASE(t_reason_names),
    AT_CASE_END
};

int main(int argc, char **argv) { return at_test_main(argc, argv, cases); }
