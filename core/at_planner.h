/*
 * at_planner.h: the renewal planner. Pure: (stored state, configuration,
 * clock) -> what is due and when. No I/O, no randomness of its own (the
 * caller passes a random number), so every decision is unit-testable.
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
    const char   *ca_url;          /* CA that issued it */
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
    long retry_base;   /* seconds, first backoff */
    long retry_max;    /* cap */
} at_plan_policy;

typedef struct at_plan {
    at_plan_reason reason;   /* why work is (or will be) needed */
    time_t due;              /* when to start: <= now means now */
    time_t renew_at;         /* when the normal renew window opens (for status), 0 if no cert */
    int    in_backoff;       /* due was pushed out by failures / Retry-After */
} at_plan;

/* Decide for one certificate. rnd is a uniformly random number used for
 * jitter (the same rnd gives the same plan). */
void at_plan_cert(const at_plan_input *in, const at_plan_policy *pol, time_t now,
                  unsigned long rnd, at_plan *out);

/* When the renew window opens for a certificate valid [nb, na). */
time_t at_plan_renew_at(time_t not_before, time_t not_after, const at_renew_window *w);

/* Backoff after `failures` consecutive failures (>= 1): base * 2^(n-1),
 * capped, with jitter in [-25%, +25%] from rnd. */
long at_plan_backoff(int failures, const at_plan_policy *pol, unsigned long rnd);

#endif
