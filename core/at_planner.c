/*
 * at_planner.c: when to renew what, and why. Pure functions of their inputs.
 */
#include "at_planner.h"

#include <string.h>
#include <strings.h>

#define AT_SHORT_LIFETIME   (10L * 86400)   /* at or below: renew at half-life */
#define AT_DEFAULT_RETRY_BASE 60L
#define AT_DEFAULT_RETRY_MAX  21600L

const char *at_plan_reason_name(at_plan_reason r)
{
    switch (r) {
    case AT_PLAN_NONE:          return "none";
    case AT_PLAN_MISSING:       return "missing";
    case AT_PLAN_RESUME:        return "resume";
    case AT_PLAN_EXPIRING:      return "expiring";
    case AT_PLAN_ARI:           return "ari";
    case AT_PLAN_NAMES_CHANGED: return "names-changed";
    case AT_PLAN_KEY_CHANGED:   return "key-changed";
    case AT_PLAN_CA_CHANGED:    return "ca-changed";
    case AT_PLAN_REVOKED:       return "revoked";
    case AT_PLAN_FORCED:        return "forced";
    }
    return "unknown";
}

time_t at_plan_renew_at(time_t not_before, time_t not_after, const at_renew_window *w)
{
    time_t life = not_after - not_before;

    if (life <= 0)
        return not_after;
    if (w && w->percent > 0 && w->percent < 100)
        return not_after - (time_t)((long long)life * w->percent / 100);
    /* A window as long as the certificate would renew right after issuance,
     * forever; fall through to the default rather than hammer the CA. */
    if (w && w->seconds > 0 && (time_t)w->seconds < life)
        return not_after - (time_t)w->seconds;
    if (life <= AT_SHORT_LIFETIME)
        return not_after - life / 2;
    return not_after - life / 3;
}

static void policy_limits(const at_plan_policy *pol, long *base, long *max)
{
    *base = pol && pol->retry_base > 0 ? pol->retry_base : AT_DEFAULT_RETRY_BASE;
    *max = pol && pol->retry_max > 0 ? pol->retry_max : AT_DEFAULT_RETRY_MAX;
    if (*max < *base)
        *max = *base;
}

long at_plan_backoff(int failures, const at_plan_policy *pol, unsigned long rnd)
{
    long base, max, d, q, j;

    if (failures < 1)
        return 0;
    policy_limits(pol, &base, &max);
    d = base;
    for (int i = 1; i < failures && d < max; i++)
        d = d > max / 2 ? max : d * 2;
    if (d > max)
        d = max;
    /* Jitter spreads the retries of many certificates (or many servers) that
     * failed together, so that they do not return to the CA in one burst. */
    q = d / 4;
    j = (long)(rnd % (unsigned long)(2 * q + 1)) - q;
    d += j;
    if (d > max)
        d = max;
    return d < 1 ? 1 : d;
}

static int name_in(const char *name, const char *const *set, size_t n)
{
    size_t len = strlen(name);

    /* A certificate may spell a name with capitals or a trailing dot. */
    if (len && name[len - 1] == '.')
        len--;
    for (size_t i = 0; i < n; i++) {
        size_t sl = set[i] ? strlen(set[i]) : 0;
        if (sl && set[i][sl - 1] == '.')
            sl--;
        if (sl == len && strncasecmp(set[i], name, len) == 0)
            return 1;
    }
    return 0;
}

static int names_differ(const at_plan_input *in)
{
    const at_cert_conf *c = in->conf;

    for (size_t i = 0; i < c->nnames; i++)
        if (!name_in(c->names[i], in->names, in->nnames))
            return 1;
    for (size_t i = 0; i < in->nnames; i++)
        if (in->names[i] && !name_in(in->names[i], (const char *const *)c->names, c->nnames))
            return 1;
    return 0;
}

/* The reason to act now that outranks the renew window, or NONE. */
static at_plan_reason urgent_reason(const at_plan_input *in)
{
    if (in->have_order)
        return AT_PLAN_RESUME;
    if (!in->have_cert)
        return AT_PLAN_MISSING;
    if (in->revoked)
        return AT_PLAN_REVOKED;
    if (in->force)
        return AT_PLAN_FORCED;
    if (in->conf) {
        if (names_differ(in))
            return AT_PLAN_NAMES_CHANGED;
        if (in->key.kind && !at_key_spec_equal(&in->key, &in->conf->key))
            return AT_PLAN_KEY_CHANGED;
    }
    if (in->conf_ca_url && in->ca_url && strcmp(in->conf_ca_url, in->ca_url) != 0)
        return AT_PLAN_CA_CHANGED;
    return AT_PLAN_NONE;
}

void at_plan_cert(const at_plan_input *in, const at_plan_policy *pol, time_t now,
                  unsigned long rnd, at_plan *out)
{
    time_t earliest = 0;

    memset(out, 0, sizeof(*out));
    if (in->have_cert) {
        out->renew_at = at_plan_renew_at(in->not_before, in->not_after,
                                         in->conf ? &in->conf->window : NULL);
        out->renew_why = AT_PLAN_EXPIRING;
        if (in->ari_pick > 0 && in->ari_pick < out->renew_at) {
            out->renew_at = in->ari_pick;
            out->renew_why = AT_PLAN_ARI;
        }
    }

    out->reason = urgent_reason(in);
    if (out->reason != AT_PLAN_NONE) {
        out->due = now;
    } else if (out->renew_at <= now) {
        out->reason = out->renew_why;
        out->due = now;
    } else {
        out->due = out->renew_at;
    }

    /* Failures and the CA's wishes delay whatever is due, never advance it. */
    if (in->failures > 0 && out->reason != AT_PLAN_NONE)
        earliest = in->last_failure + (time_t)at_plan_backoff(in->failures, pol, rnd);
    if (in->retry_after > earliest)
        earliest = in->retry_after;
    if (earliest > out->due && earliest > now) {
        out->due = earliest;
        out->in_backoff = 1;
    }
}
