/*
 * at_planner.h: the renewal planner. Pure: (stored state, configuration,
 * clock) -> what is due and when. No I/O, no randomness of its own (the
 * caller passes a random number), so every decision is unit-testable.
 *
 * The rules, in order of precedence:
 *   - an order in flight is resumed; no certificate means obtain one;
 *   - a revoked certificate, a forced renewal, or a configuration that no
 *     longer matches the certificate (names as a set, key type, CA URL) means
 *     renew now;
 *   - otherwise renew when the window opens: when 1/3 of the lifetime remains
 *     (1/2 for lifetimes of 10 days or less), or per the configured window
 *     (a percentage, or a duration shorter than the lifetime); earlier if the
 *     CA's renewalInfo (ARI) picked an earlier moment.
 * Whatever the reason, after consecutive failures work waits for an
 * exponential backoff with jitter, and never starts before a CA's Retry-After.
 */
#ifndef AT_PLANNER_H
#define AT_PLANNER_H

#include <time.h>
#include "at_conf.h"
#include "at_x509.h"

typedef enum at_plan_reason {
    AT_PLAN_NONE = 0,        /* nothing to do before `due` (the renew time) */
    AT_PLAN_MISSING,         /* no certificate yet */
    AT_PLAN_RESUME,          /* an order is in flight (staging) */
    AT_PLAN_EXPIRING,        /* inside the renew window */
    AT_PLAN_ARI,             /* the CA's renewalInfo window says renew */
    AT_PLAN_NAMES_CHANGED,   /* configured names differ from the certificate's */
    AT_PLAN_KEY_CHANGED,     /* configured key type differs */
    AT_PLAN_CA_CHANGED,      /* configured CA differs from the issuing one */
    AT_PLAN_REVOKED,
    AT_PLAN_FORCED           /* the administrator asked */
} at_plan_reason;

const char *at_plan_reason_name(at_plan_reason r);   /* "missing", "expiring", ... */

/* What is known about one managed certificate. */
typedef struct at_plan_input {
    const at_cert_conf *conf;
    const char   *conf_ca_url;     /* URL of the configured CA */
    /* the stored certificate (have_cert = 0 if none) */
    int           have_cert;
    time_t        not_before;
    time_t        not_after;
    const char *const *names;      /* names on the stored certificate */
    size_t        nnames;
    at_key_spec   key;
    const char   *ca_url;          /* CA that issued it (NULL: unknown, not a change) */
    int           revoked;
    /* in-flight order in staging */
    int           have_order;
    /* renewal state */
    int           failures;        /* consecutive failed attempts */
    time_t        last_failure;
    time_t        retry_after;     /* absolute: the CA asked us not to come back before this, or 0 */
    time_t        ari_pick;        /* chosen moment inside the ARI window, or 0 */
    time_t        force;           /* admin asked for renewal at this time (> last success), or 0 */
} at_plan_input;

typedef struct at_plan_policy {
    long retry_base;   /* seconds, first backoff (<= 0: 60) */
    long retry_max;    /* cap (<= 0: 21600; never below retry_base) */
} at_plan_policy;

typedef struct at_plan {
    at_plan_reason reason;   /* why work is needed; NONE while waiting for renew_at */
    time_t due;              /* when to start: <= now means now; with NONE, the renew time */
    time_t renew_at;         /* when the certificate is renewed absent other reasons:
                                the window or an earlier ARI pick (for status), 0 if no cert */
    at_plan_reason renew_why;/* EXPIRING or ARI: what set renew_at (NONE if no cert) */
    int    in_backoff;       /* due was pushed out by failures / Retry-After */
} at_plan;

/* Decide for one certificate. rnd is a uniformly random number used for
 * jitter (the same rnd gives the same plan). in->conf may be NULL (then no
 * configuration change is detected). */
void at_plan_cert(const at_plan_input *in, const at_plan_policy *pol, time_t now,
                  unsigned long rnd, at_plan *out);

/* When the renew window opens for a certificate valid [nb, na). A duration
 * window as long as the lifetime or longer would renew continuously; the
 * default applies instead. */
time_t at_plan_renew_at(time_t not_before, time_t not_after, const at_renew_window *w);

/* Backoff after `failures` consecutive failures (>= 1): base * 2^(n-1),
 * capped, with jitter in [-25%, +25%] from rnd, never above the cap.
 * 0 when failures < 1. */
long at_plan_backoff(int failures, const at_plan_policy *pol, unsigned long rnd);

#endif
