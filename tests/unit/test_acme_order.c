/* Unit tests for the order, revocation and renewal-information operations,
 * driven against the fake CA: every transition of an order, the faults a CA
 * shows, checkpoints and resume, cancel, and malformed answers. */
#include "at_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "at_acme.h"
#include "at_b64.h"
#include "at_buf.h"
#include "at_json.h"
#include "at_key.h"
#include "at_x509.h"
#include "at_fake_ca.h"

#define T0 1700000000

typedef struct env {
    at_fake_ca     *ca;
    at_acme_client *c;
    time_t          now;
} env;

static void env_init(env *e, void (*knobs)(at_fake_ca *))
{
    at_error err = AT_ERROR_INIT;
    e->ca = at_fake_ca_new(NULL);
    if (knobs)
        knobs(e->ca);
    e->c = at_acme_client_new(at_fake_ca_directory_url(e->ca), &err);
    e->now = T0;
    AT_CHECK_OK(at_fake_ca_setup_client(e->ca, e->c, NULL, &e->now, &err), &err);
}

static void env_free(env *e)
{
    at_acme_client_free(e->c);
    at_fake_ca_free(e->ca);
}

static at_order_params params(const char *const *names, size_t n, const at_challenge_type *ch, size_t nch)
{
    at_order_params p;
    at_key_spec ks = AT_KEY_SPEC_DEFAULT;
    memset(&p, 0, sizeof(p));
    p.names = names;
    p.nnames = n;
    p.key = ks;
    p.challenges = ch;
    p.nchallenges = nch;
    p.poll_timeout = 300;
    p.use_preauthorization = 1;
    return p;
}

static const at_challenge_type HTTP[] = { AT_CHAL_HTTP01 };
static const at_challenge_type HTTP_DNS[] = { AT_CHAL_HTTP01, AT_CHAL_DNS01 };

typedef struct counts {
    int checkpoints, publishes, withdraws, requests, waits;
    int max_burst, burst;
    char last_status[32];
} counts;

static int count_step(void *ud, at_acme_op *op, const at_step *st)
{
    counts *k = ud;
    switch (st->kind) {
    case AT_STEP_CHECKPOINT: {
        json_t *cp = at_acme_op_checkpoint(op);
        k->checkpoints++;
        snprintf(k->last_status, sizeof(k->last_status), "%s",
                 at_json_str(cp, "status") ? at_json_str(cp, "status") : "");
        json_decref(cp);
        break;
    }
    case AT_STEP_PUBLISH: k->publishes++; break;
    case AT_STEP_WITHDRAW: k->withdraws++; break;
    case AT_STEP_REQUEST:
        k->requests++;
        if (++k->burst > k->max_burst)
            k->max_burst = k->burst;
        break;
    case AT_STEP_WAIT:
        k->waits++;
        k->burst = 0;
        break;
    default: break;
    }
    return 0;
}

static int run(env *e, at_acme_op *op, counts *k)
{
    at_fake_ca_run_opts o;
    memset(&o, 0, sizeof(o));
    if (k) {
        o.on_step = count_step;
        o.ud = k;
    }
    return at_fake_ca_run(e->ca, e->c, op, &e->now, &o);
}

/* The delivered chain is usable: parses, belongs to the key, covers names. */
static void check_chain(at_acme_op *op, const char *const *names, size_t n, const char *top)
{
    const char *pem = at_acme_op_chain_pem(op);
    at_cert_info info;
    at_error err = AT_ERROR_INIT;
    char cn[256];
    AT_CHECK(pem != NULL);
    if (!pem)
        return;
    AT_CHECK_INT(at_key_matches_cert_pem(at_acme_op_cert_key(op), pem, strlen(pem)), 1);
    memset(&info, 0, sizeof(info));
    AT_CHECK_OK(at_cert_info_pem(pem, strlen(pem), &info, &err), &err);
    AT_CHECK_INT(info.nnames, n);
    for (size_t i = 0; i < n; i++) {
        int found = 0;
        for (size_t k = 0; k < info.nnames; k++)
            found |= strcasecmp(info.names[k], names[i]) == 0;
        AT_CHECK_MSG(found, "%s missing from the certificate", names[i]);
    }
    at_cert_info_free(&info);
    AT_CHECK_OK(at_chain_top_issuer_cn(pem, strlen(pem), cn, sizeof(cn), &err), &err);
    AT_CHECK_STR(cn, top);
}

/* ------------------------------------------------------------- happy paths */

static void t_basic_http01(void)
{
    env e;
    const char *names[] = { "example.com", "www.example.com" };
    at_order_params p = params(names, 2, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    counts k;
    at_acme_op *op;
    const json_t *pl;
    json_t *cp;

    env_init(&e, NULL);
    memset(&k, 0, sizeof(k));
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK(op != NULL);
    AT_CHECK(at_acme_op_cert_key(op) != NULL);
    AT_CHECK_INT(run(&e, op, &k), AT_STEP_DONE);
    check_chain(op, names, 2, AT_FAKE_CA_ROOT_CN);
    AT_CHECK_STR(at_acme_op_challenge_used(op), "http-01");
    AT_CHECK_CONTAINS(at_acme_op_order_url(op), "https://ca.test/order/");
    AT_CHECK_INT(k.publishes, 2);
    AT_CHECK_INT(k.withdraws, 2);
    AT_CHECK_INT(at_fake_ca_published(e.ca), 0);
    AT_CHECK(k.checkpoints >= 2);          /* pending, valid */
    AT_CHECK_STR(k.last_status, "valid");
    AT_CHECK_INT(at_fake_ca_count(e.ca, "challenge"), 2);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "newAuthz"), 0);
    pl = at_fake_ca_last_payload(e.ca, "newOrder");
    AT_CHECK_INT(json_array_size(json_object_get(pl, "identifiers")), 2);
    AT_CHECK_STR(at_json_str(json_array_get(json_object_get(pl, "identifiers"), 0), "type"), "dns");
    AT_CHECK(json_object_get(pl, "profile") == NULL && json_object_get(pl, "replaces") == NULL);
    pl = at_fake_ca_last_payload(e.ca, "finalize");
    AT_CHECK(at_json_str(pl, "csr") && at_b64url_valid(at_json_str(pl, "csr"), strlen(at_json_str(pl, "csr"))));
    AT_CHECK(at_fake_ca_last_payload(e.ca, "challenge") != NULL);
    AT_CHECK_INT(json_object_size(at_fake_ca_last_payload(e.ca, "challenge")), 0);   /* "{}" */
    cp = at_acme_op_checkpoint(op);
    AT_CHECK_STR(at_json_str(cp, "order_url"), at_acme_op_order_url(op));
    AT_CHECK_STR(at_json_str(cp, "key"), "ec:P-256");
    AT_CHECK_INT(json_array_size(json_object_get(cp, "names")), 2);
    json_decref(cp);
    at_acme_op_free(op);
    env_free(&e);
}

static void t_ip_identifiers(void)
{
    env e;
    const char *names[] = { "192.0.2.1", "2001:DB8:0:0::1" };
    const char *canon[] = { "192.0.2.1", "2001:db8::1" };
    at_order_params p = params(names, 2, NULL, 0);    /* default: tls-alpn-01, http-01 */
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    const json_t *ids;

    env_init(&e, NULL);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    ids = json_object_get(at_fake_ca_last_payload(e.ca, "newOrder"), "identifiers");
    AT_CHECK_STR(at_json_str(json_array_get(ids, 0), "type"), "ip");
    AT_CHECK_STR(at_json_str(json_array_get(ids, 1), "value"), "2001:db8::1");
    AT_CHECK_STR(at_acme_op_challenge_used(op), "tls-alpn-01");
    check_chain(op, canon, 2, AT_FAKE_CA_ROOT_CN);
    at_acme_op_free(op);

    /* dns-01 alone cannot validate an IP address: said before sending. */
    {
        static const at_challenge_type DNS[] = { AT_CHAL_DNS01 };
        at_order_params q = params(names, 1, DNS, 1);
        AT_CHECK(at_acme_order_new(e.c, &q, &err) == NULL);
        AT_CHECK_INT(err.code, AT_ERR_CONFIG);
        AT_CHECK_CONTAINS(err.msg, "192.0.2.1 is an IP address");
        at_error_clear(&err);
    }
    env_free(&e);
}

static void t_wildcard(void)
{
    env e;
    const char *names[] = { "*.example.com", "example.com" };
    at_order_params p = params(names, 2, HTTP_DNS, 2);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;

    env_init(&e, NULL);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_STR(at_acme_op_challenge_used(op), "http-01,dns-01");
    check_chain(op, names, 2, AT_FAKE_CA_ROOT_CN);
    AT_CHECK_STR(at_json_str(json_array_get(json_object_get(at_fake_ca_last_payload(e.ca, "newOrder"),
                                                            "identifiers"), 0), "value"), "*.example.com");
    at_acme_op_free(op);

    /* Without dns-01 a wildcard is refused up front, naming the fix. */
    p = params(names, 2, HTTP, 1);
    AT_CHECK(at_acme_order_new(e.c, &p, &err) == NULL);
    AT_CHECK_INT(err.code, AT_ERR_CONFIG);
    AT_CHECK_CONTAINS(err.msg, "*.example.com");
    AT_CHECK_CONTAINS(err.msg, "dns-01");
    at_error_clear(&err);
    env_free(&e);
}

static void offer_alpn_dns(at_fake_ca *ca) { at_fake_ca_set_challenges(ca, "dns-01,tls-alpn-01"); }
static void offer_dns(at_fake_ca *ca) { at_fake_ca_set_challenges(ca, "dns-01"); }

static void t_challenge_preference(void)
{
    env e;
    const char *names[] = { "example.com" };
    static const at_challenge_type pref[] = { AT_CHAL_HTTP01, AT_CHAL_TLSALPN01, AT_CHAL_DNS01 };
    at_order_params p = params(names, 1, pref, 3);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;

    env_init(&e, offer_alpn_dns);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_STR(at_acme_op_challenge_used(op), "tls-alpn-01");   /* http-01 not offered */
    at_acme_op_free(op);
    env_free(&e);

    env_init(&e, offer_dns);
    p = params(names, 1, HTTP, 1);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_INT(at_acme_op_error(op)->code, AT_ERR_CONFIG);
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "offers dns-01");
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "configured for http-01");
    AT_CHECK_INT(at_fake_ca_count(e.ca, "challenge"), 0);
    at_acme_op_free(op);
    env_free(&e);
}

static void with_profiles(at_fake_ca *ca)
{
    at_fake_ca_add_profile(ca, "classic", "90 days");
    at_fake_ca_add_profile(ca, "shortlived", "6 days");
}

static void t_profiles(void)
{
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;

    env_init(&e, with_profiles);
    p.profile = "shortlived";
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_STR(at_json_str(at_fake_ca_last_payload(e.ca, "newOrder"), "profile"), "shortlived");
    at_acme_op_free(op);

    p.profile = "tiny";
    AT_CHECK(at_acme_order_new(e.c, &p, &err) == NULL);
    AT_CHECK_INT(err.code, AT_ERR_CONFIG);
    AT_CHECK_CONTAINS(err.msg, "\"tiny\"");
    AT_CHECK_CONTAINS(err.msg, "classic, shortlived");
    at_error_clear(&err);
    /* With the host's spelling of the setting, the message says what to change. */
    p.profile_hint = "AutoTLSProfile NAME";
    AT_CHECK(at_acme_order_new(e.c, &p, &err) == NULL);
    AT_CHECK_CONTAINS(err.msg, "set AutoTLSProfile NAME to one of them");
    at_error_clear(&err);
    p.profile_hint = NULL;
    env_free(&e);

    /* A CA without profiles: the profile is not sent at all. */
    env_init(&e, NULL);
    p.profile = "shortlived";
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK(json_object_get(at_fake_ca_last_payload(e.ca, "newOrder"), "profile") == NULL);
    at_acme_op_free(op);
    env_free(&e);
}

static char *issue_one(env *e, const char *name)
{
    const char *names[] = { name };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op = at_acme_order_new(e->c, &p, &err);
    char *pem = NULL;
    AT_CHECK_INT(run(e, op, NULL), AT_STEP_DONE);
    if (at_acme_op_chain_pem(op))
        pem = strdup(at_acme_op_chain_pem(op));
    at_acme_op_free(op);
    return pem;
}

static void t_replaces(void)
{
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_cert_info info;
    at_acme_op *op;
    char *pem;

    env_init(&e, NULL);
    pem = issue_one(&e, "example.com");
    memset(&info, 0, sizeof(info));
    AT_CHECK_OK(at_cert_info_pem(pem, strlen(pem), &info, &err), &err);
    AT_CHECK(info.ari_id[0] != '\0');
    p.replaces = info.ari_id;
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_STR(at_json_str(at_fake_ca_last_payload(e.ca, "newOrder"), "replaces"), info.ari_id);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "newOrder"), 2);
    at_acme_op_free(op);

    /* Refused: one more try without it, and the certificate still comes. */
    at_fake_ca_refuse_replaces(e.ca, 1);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "newOrder"), 4);
    AT_CHECK(json_object_get(at_fake_ca_last_payload(e.ca, "newOrder"), "replaces") == NULL);
    at_acme_op_free(op);

    /* A refusal that is not about "replaces" (rate limit) is not retried. */
    at_fake_ca_fail_next(e.ca, "newOrder", 1, 429, "rateLimited", "too many orders", 3600);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_INT(at_acme_op_error(op)->code, AT_ERR_RATELIMIT);
    AT_CHECK_INT(at_acme_op_error(op)->retry_after, 3600);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "newOrder"), 5);
    at_acme_op_free(op);

    at_cert_info_free(&info);
    free(pem);
    env_free(&e);
}

static void with_new_authz(at_fake_ca *ca) { at_fake_ca_set_new_authz(ca, 1); }

static void t_preauthorization(void)
{
    env e;
    const char *names[] = { "a.example", "*.b.example", "c.example" };
    at_order_params p = params(names, 3, HTTP_DNS, 2);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    counts k;

    env_init(&e, with_new_authz);
    memset(&k, 0, sizeof(k));
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, &k), AT_STEP_DONE);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "newAuthz"), 2);   /* not for the wildcard */
    AT_CHECK_INT(at_fake_ca_count(e.ca, "challenge"), 3);  /* each validated once */
    AT_CHECK_INT(k.publishes, 3);
    AT_CHECK_INT(k.withdraws, 3);
    check_chain(op, names, 3, AT_FAKE_CA_ROOT_CN);
    at_acme_op_free(op);

    /* Switched off: no newAuthz. */
    p.use_preauthorization = 0;
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "newAuthz"), 2);
    at_acme_op_free(op);

    /* A refused pre-authorization falls back to the order. */
    p.use_preauthorization = 1;
    at_fake_ca_fail_next(e.ca, "newAuthz", 2, 403, "unauthorized", "no pre-authorization for you", -1);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    at_acme_op_free(op);
    env_free(&e);
}

static void preauth_example(at_fake_ca *ca) { at_fake_ca_preauthorize(ca, "example.com"); }

static void t_authz_already_valid(void)
{
    env e;
    const char *names[] = { "example.com", "www.example.com" };
    at_order_params p = params(names, 2, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    counts k;

    env_init(&e, preauth_example);
    memset(&k, 0, sizeof(k));
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, &k), AT_STEP_DONE);
    AT_CHECK_INT(k.publishes, 1);                        /* only www */
    AT_CHECK_INT(at_fake_ca_count(e.ca, "challenge"), 1);
    at_acme_op_free(op);

    /* Now both are valid for this account: nothing to validate at all. */
    memset(&k, 0, sizeof(k));
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, &k), AT_STEP_DONE);
    AT_CHECK_INT(k.publishes, 0);
    AT_CHECK(at_acme_op_challenge_used(op) == NULL);
    at_acme_op_free(op);
    env_free(&e);
}

/* ------------------------------------------------------------------ failures */

static void t_invalid_challenge(void)
{
    env e;
    const char *names[] = { "example.com", "bad.example.com" };
    at_order_params p = params(names, 2, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    const at_error *oe;

    env_init(&e, NULL);
    at_fake_ca_fail_challenge(e.ca, "bad.example.com", "dns", "NXDOMAIN looking up A for bad.example.com");
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    oe = at_acme_op_error(op);
    AT_CHECK_INT(oe->code, AT_ERR_CA);
    AT_CHECK_STR(at_acme_problem_type(oe), "dns");
    AT_CHECK(oe->problem && json_is_array(json_object_get(oe->problem, "subproblems")));
    AT_CHECK_CONTAINS(oe->msg, "bad.example.com");
    AT_CHECK_CONTAINS(oe->msg, "NXDOMAIN");
    AT_CHECK_CONTAINS(oe->msg, "http-01");
    AT_CHECK_CONTAINS(oe->msg, "DNS");                     /* the hint */
    AT_CHECK_INT(at_fake_ca_published(e.ca), 0);           /* everything withdrawn */
    AT_CHECK(at_acme_op_chain_pem(op) == NULL);
    at_acme_op_free(op);
    env_free(&e);
}

typedef struct vstate {
    int calls;
    int answer;
} vstate;

static int my_validator(void *ud, at_fake_ca *ca, const at_fake_ca_chal *ch, const char **detail)
{
    vstate *v = ud;
    v->calls++;
    if (!v->answer) {
        *detail = "the validator saw a 404";
        return 0;
    }
    /* really answerable: the published key authorization matches */
    return at_fake_ca_validate_published(NULL, ca, ch, detail);
}

static void t_validator(void)
{
    env e;
    const char *names[] = { "example.com" };
    static const at_challenge_type DNS[] = { AT_CHAL_DNS01 };
    at_order_params p = params(names, 1, DNS, 1);
    at_error err = AT_ERROR_INIT;
    vstate v = { 0, 1 };
    at_acme_op *op;

    env_init(&e, NULL);
    at_fake_ca_set_validator(e.ca, my_validator, &v);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_INT(v.calls, 1);
    at_acme_op_free(op);

    v.answer = 0;
    names[0] = "other.example.com";       /* example.com is valid for this account now */
    p = params(names, 1, HTTP, 1);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_INT(v.calls, 2);
    AT_CHECK_STR(at_acme_problem_type(at_acme_op_error(op)), "incorrectResponse");
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "the validator saw a 404");
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "proxy");   /* hint */
    at_acme_op_free(op);
    env_free(&e);
}

static void t_unpublished_challenge_fails(void)
{
    /* The default validator really checks the published answer: a host that
     * claims to have published but did not gets the challenge refused. */
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_fake_ca_run_opts o;
    at_acme_op *op;

    env_init(&e, NULL);
    op = at_acme_order_new(e.c, &p, &err);
    memset(&o, 0, sizeof(o));
    o.skip_publish = 1;
    AT_CHECK_INT(at_fake_ca_run(e.ca, e.c, op, &e.now, &o), AT_STEP_FAILED);
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "nothing published");
    at_acme_op_free(op);
    env_free(&e);
}

static void t_publish_error(void)
{
    env e;
    const char *names[] = { "example.com" };
    static const at_challenge_type DNS[] = { AT_CHAL_DNS01 };
    at_order_params p = params(names, 1, DNS, 1);
    at_error err = AT_ERROR_INIT, perr = AT_ERROR_INIT;
    at_fake_ca_run_opts o;
    at_acme_op *op;

    env_init(&e, NULL);
    at_error_set(&perr, AT_ERR_CONFIG, "the dns-01 hook failed (exit status 3)");
    memset(&o, 0, sizeof(o));
    o.publish_error = &perr;
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(at_fake_ca_run(e.ca, e.c, op, &e.now, &o), AT_STEP_FAILED);
    AT_CHECK_INT(at_acme_op_error(op)->code, AT_ERR_CONFIG);
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "publishing the dns-01 challenge for example.com");
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "exit status 3");
    AT_CHECK_INT(at_fake_ca_count(e.ca, "challenge"), 0);      /* never told the CA to validate */
    at_acme_op_free(op);
    at_error_clear(&perr);
    env_free(&e);
}

/* ------------------------------------------------------------------ polling */

static void slow_ca(at_fake_ca *ca)
{
    at_fake_ca_set_pending_polls(ca, 3);
    at_fake_ca_set_processing_polls(ca, 2);
}

static void t_polling(void)
{
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    counts k;
    time_t start;

    env_init(&e, slow_ca);
    memset(&k, 0, sizeof(k));
    start = e.now;
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, &k), AT_STEP_DONE);
    /* authz read once at start, then 3 polls; order polled twice */
    AT_CHECK_INT(at_fake_ca_count(e.ca, "authz"), 4);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "order"), 2);
    /* growing intervals: 1+2+3 for the authorization, 1+2 for the order */
    AT_CHECK(e.now - start >= 9);
    AT_CHECK(e.now - start <= 20);
    AT_CHECK_STR(k.last_status, "valid");
    at_acme_op_free(op);
    env_free(&e);
}

static void slow_ca_ra(at_fake_ca *ca)
{
    at_fake_ca_set_pending_polls(ca, 2);
    at_fake_ca_set_processing_polls(ca, 2);
    at_fake_ca_set_poll_retry_after(ca, 20);
}

static void t_retry_after_honoured(void)
{
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    time_t start;

    env_init(&e, slow_ca_ra);
    start = e.now;
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    /* every pending/processing answer says 20 s: 2 authz waits (the first
     * after the challenge answer has no Retry-After), 2 order waits */
    AT_CHECK(e.now - start >= 60);
    at_acme_op_free(op);
    env_free(&e);
}

/* Delays the op asked the host to hold its requests back by. */
typedef struct delays {
    unsigned d[32];
    int n;
} delays;

static int note_delay(void *ud, at_acme_op *op, const at_step *st)
{
    delays *k = ud;
    (void)op;
    if (st->kind == AT_STEP_REQUEST && st->delay_ms && k->n < 32)
        k->d[k->n++] = st->delay_ms;
    return 0;
}

static int run_noting_delays(env *e, at_acme_op *op, delays *k)
{
    at_fake_ca_run_opts o;
    memset(&o, 0, sizeof(o));
    memset(k, 0, sizeof(*k));
    o.on_step = note_delay;
    o.ud = k;
    return at_fake_ca_run(e->ca, e->c, op, &e->now, &o);
}

static void t_quick_polls(void)
{
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    delays k;
    time_t start;
    static const unsigned want[] = { 50, 100, 200, 50, 100 };

    env_init(&e, slow_ca);
    p.quick_poll_ms = 50;
    start = e.now;
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run_noting_delays(&e, op, &k), AT_STEP_DONE);
    /* the same polls as t_polling, each held back by the host for 50 ms
     * doubling (authorization, then order) instead of whole seconds */
    AT_CHECK_INT(at_fake_ca_count(e.ca, "authz"), 4);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "order"), 2);
    AT_CHECK_INT(k.n, 5);
    for (int i = 0; i < k.n && i < 5; i++)
        AT_CHECK_INT(k.d[i], want[i]);
    AT_CHECK(e.now - start <= 1);
    at_acme_op_free(op);
    env_free(&e);
}

static void slower_ca(at_fake_ca *ca)
{
    at_fake_ca_set_pending_polls(ca, 7);
}

static void t_quick_polls_fall_back_to_seconds(void)
{
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    delays k;
    time_t start;

    env_init(&e, slower_ca);
    p.quick_poll_ms = 50;
    start = e.now;
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run_noting_delays(&e, op, &k), AT_STEP_DONE);
    /* 50..800 ms stay below a second; after them, whole-second intervals */
    AT_CHECK_INT(k.n, 5);
    AT_CHECK_INT(k.d[4], 800);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "authz"), 8);
    AT_CHECK(e.now - start >= 1 + 2);
    at_acme_op_free(op);
    env_free(&e);
}

static void t_quick_polls_yield_to_retry_after(void)
{
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    delays k;
    time_t start;

    env_init(&e, slow_ca_ra);
    p.quick_poll_ms = 50;
    start = e.now;
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run_noting_delays(&e, op, &k), AT_STEP_DONE);
    /* the CA's Retry-After (20 s) wins over quick polls; only the first
     * authorization poll, after a challenge answer without Retry-After, is quick */
    AT_CHECK_INT(k.n, 1);
    AT_CHECK(e.now - start >= 20 * 3);
    at_acme_op_free(op);
    env_free(&e);
}

static void never_valid(at_fake_ca *ca) { at_fake_ca_set_pending_polls(ca, 100000); }

static void t_poll_timeout(void)
{
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    time_t start;

    env_init(&e, never_valid);
    p.poll_timeout = 30;
    start = e.now;
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_INT(at_acme_op_error(op)->code, AT_ERR_TIMEOUT);
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "30 s");
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "validating example.com");
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "resumes");
    AT_CHECK(e.now - start >= 30 && e.now - start <= 45);
    AT_CHECK(at_fake_ca_count(e.ca, "authz") < 20);       /* the interval grew */
    AT_CHECK_INT(at_fake_ca_published(e.ca), 0);
    at_acme_op_free(op);

    /* The CA asks for more than the timeout allows: stop at once, keep its wish. */
    at_fake_ca_set_poll_retry_after(e.ca, 3600);
    op = at_acme_order_new(e.c, &p, &err);
    start = e.now;
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_INT(at_acme_op_error(op)->code, AT_ERR_TIMEOUT);
    AT_CHECK_INT(at_acme_op_error(op)->retry_after, 3600);
    AT_CHECK(e.now - start < 30);
    at_acme_op_free(op);
    env_free(&e);
}

static void t_order_not_ready(void)
{
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;

    env_init(&e, NULL);
    at_fake_ca_fail_next(e.ca, "finalize", 2, 403, "orderNotReady", "not yet", -1);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "finalize"), 3);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "order"), 2);     /* re-read after each refusal */
    at_acme_op_free(op);

    at_fake_ca_fail_next(e.ca, "finalize", 10, 403, "orderNotReady", "never", -1);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_STR(at_acme_problem_type(at_acme_op_error(op)), "orderNotReady");
    at_acme_op_free(op);
    env_free(&e);
}

static void t_transient_errors(void)
{
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;

    env_init(&e, NULL);
    at_fake_ca_fail_next(e.ca, "authz", 2, 503, NULL, "<html>maintenance</html>", 2);
    at_fake_ca_set_bad_nonce_rate(e.ca, 30);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    at_acme_op_free(op);

    /* A 500 on finalize (not repeatable) fails with the CA's words. */
    at_fake_ca_fail_next(e.ca, "finalize", 1, 500, "serverInternal", "database on fire", -1);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "database on fire");
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "finalizing");
    at_acme_op_free(op);
    env_free(&e);
}

/* -------------------------------------------------------------- chains */

static void alt_chain(at_fake_ca *ca) { at_fake_ca_set_alt_chain(ca, 1); }

static void t_alternate_chains(void)
{
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;

    env_init(&e, alt_chain);
    p.preferred_chain = "fake alt root x2";      /* case-insensitive */
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    check_chain(op, names, 1, AT_FAKE_CA_ALT_ROOT_CN);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "cert"), 2);
    AT_CHECK_STR(at_json_str(at_fake_ca_last_protected(e.ca, "cert"), "url") +
                 strlen(at_json_str(at_fake_ca_last_protected(e.ca, "cert"), "url")) - 4, "/alt");
    at_acme_op_free(op);

    p.preferred_chain = AT_FAKE_CA_ROOT_CN;       /* the default matches: no extra download */
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    check_chain(op, names, 1, AT_FAKE_CA_ROOT_CN);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "cert"), 3);
    at_acme_op_free(op);

    p.preferred_chain = "No Such Root";           /* none matches: the default */
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    check_chain(op, names, 1, AT_FAKE_CA_ROOT_CN);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "cert"), 5);
    at_acme_op_free(op);

    p.preferred_chain = NULL;
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    check_chain(op, names, 1, AT_FAKE_CA_ROOT_CN);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "cert"), 6);
    at_acme_op_free(op);
    env_free(&e);
}

/* ------------------------------------------------------ checkpoint, resume */

typedef struct stopper {
    at_step_kind kind;
    const char  *status;    /* stop at a CHECKPOINT with this status */
    json_t      *cp;
    int          seen;
} stopper;

static int stop_at(void *ud, at_acme_op *op, const at_step *st)
{
    stopper *s = ud;
    if (st->kind != s->kind)
        return 0;
    if (s->kind == AT_STEP_CHECKPOINT) {
        json_t *cp = at_acme_op_checkpoint(op);
        if (!s->status || strcmp(at_json_str(cp, "status") ? at_json_str(cp, "status") : "", s->status) != 0) {
            json_decref(cp);
            return 0;
        }
        json_decref(s->cp);
        s->cp = cp;
    }
    s->seen++;
    return 1;
}

/* Run an order until it checkpoints `status`, then drop it (a crash). */
static json_t *crash_at(env *e, at_order_params *p, const char *status, EVP_PKEY **key)
{
    at_error err = AT_ERROR_INIT;
    at_acme_op *op = at_acme_order_new(e->c, p, &err);
    at_fake_ca_run_opts o;
    stopper s = { AT_STEP_CHECKPOINT, status, NULL, 0 };
    memset(&o, 0, sizeof(o));
    o.on_step = stop_at;
    o.ud = &s;
    AT_CHECK_INT(at_fake_ca_run(e->ca, e->c, op, &e->now, &o), AT_STEP_CHECKPOINT);
    *key = at_acme_op_cert_key(op);
    EVP_PKEY_up_ref(*key);
    at_acme_op_free(op);
    return s.cp;
}

static void t_resume(void)
{
    env e;
    const char *names[] = { "example.com", "www.example.com" };
    at_order_params p = params(names, 2, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    EVP_PKEY *key;
    json_t *cp;

    /* Crash while the order is pending: the same order is resumed. */
    env_init(&e, NULL);
    cp = crash_at(&e, &p, "pending", &key);
    AT_CHECK(at_json_str(cp, "order_url") != NULL);
    op = at_acme_order_resume(e.c, &p, cp, key, &err);
    AT_CHECK(op != NULL);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "newOrder"), 1);
    AT_CHECK(at_acme_op_cert_key(op) == key);
    AT_CHECK_STR(at_acme_op_order_url(op), at_json_str(cp, "order_url"));
    check_chain(op, names, 2, AT_FAKE_CA_ROOT_CN);
    at_acme_op_free(op);
    json_decref(cp);
    EVP_PKEY_free(key);
    env_free(&e);

    /* Crash once the order is valid: only the download is left. */
    env_init(&e, NULL);
    cp = crash_at(&e, &p, "valid", &key);
    op = at_acme_order_resume(e.c, &p, cp, key, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "finalize"), 1);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "newOrder"), 1);
    AT_CHECK_INT(at_key_matches_cert_pem(key, at_acme_op_chain_pem(op), strlen(at_acme_op_chain_pem(op))), 1);
    at_acme_op_free(op);
    json_decref(cp);
    EVP_PKEY_free(key);
    env_free(&e);

    /* The CA forgot the order (404): a fresh order with the same key. */
    env_init(&e, NULL);
    cp = crash_at(&e, &p, "pending", &key);
    at_fake_ca_forget_orders(e.ca);
    op = at_acme_order_resume(e.c, &p, cp, key, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "newOrder"), 2);
    AT_CHECK(strcmp(at_acme_op_order_url(op), at_json_str(cp, "order_url")) != 0);
    AT_CHECK_INT(at_key_matches_cert_pem(key, at_acme_op_chain_pem(op), strlen(at_acme_op_chain_pem(op))), 1);
    at_acme_op_free(op);
    json_decref(cp);
    EVP_PKEY_free(key);
    env_free(&e);

    /* The order went invalid meanwhile: fresh order too. */
    env_init(&e, NULL);
    cp = crash_at(&e, &p, "pending", &key);
    at_fake_ca_invalidate_orders(e.ca);
    op = at_acme_order_resume(e.c, &p, cp, key, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "newOrder"), 2);
    at_acme_op_free(op);

    /* A checkpoint without an order URL: simply a new order. */
    json_object_del(cp, "order_url");
    op = at_acme_order_resume(e.c, &p, cp, key, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "newOrder"), 3);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "order"), 1);     /* only the first resume re-read */
    at_acme_op_free(op);
    json_decref(cp);
    EVP_PKEY_free(key);
    env_free(&e);

    /* A rate limit while re-reading is a failure, not a new order. */
    env_init(&e, NULL);
    cp = crash_at(&e, &p, "pending", &key);
    at_fake_ca_fail_next(e.ca, "order", 1, 429, "rateLimited", "slow down", 60);
    op = at_acme_order_resume(e.c, &p, cp, key, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_INT(at_acme_op_error(op)->code, AT_ERR_RATELIMIT);
    AT_CHECK_INT(at_fake_ca_count(e.ca, "newOrder"), 1);
    at_acme_op_free(op);
    json_decref(cp);
    EVP_PKEY_free(key);

    AT_CHECK(at_acme_order_resume(e.c, &p, NULL, NULL, &err) == NULL);
    at_error_clear(&err);
    env_free(&e);
}

static int cancel_after_publish(void *ud, at_acme_op *op, const at_step *st)
{
    int *seen = ud;
    if (st->kind == AT_STEP_PUBLISH)
        (*seen)++;
    else if (*seen && st->kind == AT_STEP_REQUEST)
        at_acme_op_cancel(op);     /* the request still goes out; then teardown */
    return 0;
}

static void t_cancel(void)
{
    env e;
    const char *names[] = { "example.com", "www.example.com" };
    at_order_params p = params(names, 2, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_fake_ca_run_opts o;
    at_acme_op *op;
    int seen = 0;
    at_step st;

    env_init(&e, never_valid);
    op = at_acme_order_new(e.c, &p, &err);
    memset(&o, 0, sizeof(o));
    o.on_step = cancel_after_publish;
    o.ud = &seen;
    AT_CHECK_INT(at_fake_ca_run(e.ca, e.c, op, &e.now, &o), AT_STEP_FAILED);
    AT_CHECK(seen >= 1);
    AT_CHECK_INT(at_acme_op_error(op)->code, AT_ERR_CANCELLED);
    AT_CHECK_INT(at_fake_ca_published(e.ca), 0);
    /* Finished for good: steps stay FAILED, late replies are ignored. */
    at_acme_op_step(op, e.now, &st);
    AT_CHECK_INT(st.kind, AT_STEP_FAILED);
    at_acme_op_response(op, 12345, NULL, NULL, e.now);
    at_acme_op_published(op, 12345, NULL);
    at_acme_op_step(op, e.now, &st);
    AT_CHECK_INT(st.kind, AT_STEP_FAILED);
    at_acme_op_free(op);

    /* Cancel before anything happened. */
    op = at_acme_order_new(e.c, &p, &err);
    at_acme_op_cancel(op);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_INT(at_acme_op_error(op)->code, AT_ERR_CANCELLED);
    at_acme_op_free(op);
    env_free(&e);
}

/* ------------------------------------------------------------ robustness */

static void resume_with_order_body(env *e, const char *body, const char *want)
{
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    json_t *cp = json_pack("{s:s, s:s}", "order_url", "https://ca.test/order/0", "status", "pending");
    at_key_spec ks = AT_KEY_SPEC_DEFAULT;
    EVP_PKEY *k = at_key_generate(&ks, &err);
    at_acme_op *op = at_acme_order_resume(e->c, &p, cp, k, &err);
    at_fake_ca_raw_next(e->ca, "order", 200, "application/json", body, strlen(body));
    AT_CHECK_INT(run(e, op, NULL), AT_STEP_FAILED);
    AT_CHECK(at_acme_op_error(op)->code != AT_OK);
    AT_CHECK_MSG(strstr(at_acme_op_error(op)->msg, want) != NULL, "\"%s\" lacks \"%s\"",
                 at_acme_op_error(op)->msg, want);
    at_acme_op_free(op);
    json_decref(cp);
    EVP_PKEY_free(k);
}

static void t_malformed_orders(void)
{
    env e;
    at_buf huge = AT_BUF_INIT;
    env_init(&e, NULL);
    at_buf_puts(&huge, "{\"status\":\"pending\",\"finalize\":\"https://ca.test/f\",\"authorizations\":[");
    for (int i = 0; i < 5000; i++)
        at_buf_printf(&huge, "%s\"https://ca.test/authz/%d\"", i ? "," : "", i);
    at_buf_puts(&huge, "]}");
    resume_with_order_body(&e, at_buf_str(&huge), "too many");
    resume_with_order_body(&e, "{\"status\":\"pending\",\"authorizations\":\"x\"}", "no authorizations");
    resume_with_order_body(&e, "{\"status\":\"pending\",\"authorizations\":[5]}", "not a URL");
    resume_with_order_body(&e, "{\"status\":\"valid\"}", "no certificate URL");
    resume_with_order_body(&e, "{\"status\":\"ready\"}", "no finalize URL");
    resume_with_order_body(&e, "{\"status\":\"weird\"}", "unknown status");
    resume_with_order_body(&e, "{\"status\":\"pending\",\"authorizations\":[\"https://ca.test/authz/999\"]}",
                           "authorization");
    at_buf_free(&huge);
    env_free(&e);
}

static void authz_garbage(env *e, const char *body, const char *want)
{
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op = at_acme_order_new(e->c, &p, &err);
    at_fake_ca_raw_next(e->ca, "authz", 200, "application/json", body, strlen(body));
    AT_CHECK_INT(run(e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_MSG(strstr(at_acme_op_error(op)->msg, want) != NULL, "\"%s\" lacks \"%s\"",
                 at_acme_op_error(op)->msg, want);
    AT_CHECK_INT(at_fake_ca_published(e->ca), 0);
    at_acme_op_free(op);
}

static void t_malformed_authz(void)
{
    env e;
    at_buf many = AT_BUF_INIT;
    env_init(&e, NULL);
    authz_garbage(&e, "not json", "JSON");
    authz_garbage(&e, "{\"status\":5}", "lacks a status");
    authz_garbage(&e, "{\"status\":\"pending\",\"identifier\":{\"type\":\"dns\",\"value\":\"example.com\"}}",
                  "lists no challenges");
    authz_garbage(&e, "{\"status\":\"pending\",\"identifier\":{\"type\":\"dns\",\"value\":\"example.com\"},"
                      "\"challenges\":[{\"type\":\"http-01\",\"url\":\"https://ca.test/chal/1\",\"token\":\"../../etc/passwd\"}]}",
                  "malformed token");
    authz_garbage(&e, "{\"status\":\"pending\",\"identifier\":{\"type\":\"dns\",\"value\":\"example.com\"},"
                      "\"challenges\":[{\"type\":\"http-01\",\"token\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}",
                  "has no URL");
    authz_garbage(&e, "{\"status\":\"revoked\",\"identifier\":{\"type\":\"dns\",\"value\":\"example.com\"}}",
                  "is revoked");
    authz_garbage(&e, "{\"status\":\"invalid\",\"identifier\":{\"type\":\"dns\",\"value\":\"example.com\"},"
                      "\"challenges\":[{\"type\":\"http-01\",\"status\":\"invalid\",\"error\":{\"type\":"
                      "\"urn:ietf:params:acme:error:connection\",\"detail\":\"timeout\"}}]}",
                  "timeout");
    /* thousands of challenges: only the first ones are looked at */
    at_buf_puts(&many, "{\"status\":\"pending\",\"identifier\":{\"type\":\"dns\",\"value\":\"example.com\"},\"challenges\":[");
    for (int i = 0; i < 3000; i++)
        at_buf_printf(&many, "%s{\"type\":\"x-%d\",\"url\":\"https://ca.test/c/%d\",\"token\":\"AAAAAAAAAAAAAAAAAAAAAAAA\"}",
                      i ? "," : "", i, i);
    at_buf_puts(&many, "]}");
    authz_garbage(&e, at_buf_str(&many), "no usable challenge");
    at_buf_free(&many);
    env_free(&e);
}

static void t_bad_certificate(void)
{
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    env_init(&e, NULL);

    at_fake_ca_raw_next(e.ca, "cert", 200, "application/pem-certificate-chain", "garbage", 7);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "no usable PEM");
    at_acme_op_free(op);

    /* A certificate for another key (the CA's own root): refused. */
    at_fake_ca_raw_next(e.ca, "cert", 200, "application/pem-certificate-chain",
                        at_fake_ca_root_pem(e.ca), strlen(at_fake_ca_root_pem(e.ca)));
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "not for this order's key");
    at_acme_op_free(op);

    /* newOrder without Location */
    at_fake_ca_raw_next(e.ca, "newOrder", 201, "application/json", "{\"status\":\"pending\"}", 20);
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "Location");
    at_acme_op_free(op);
    env_free(&e);
}

static void t_params_checked(void)
{
    env e;
    at_order_params p;
    at_error err = AT_ERROR_INIT;
    const char *empty[] = { "" };
    env_init(&e, NULL);
    p = params(NULL, 0, HTTP, 1);
    AT_CHECK(at_acme_order_new(e.c, &p, &err) == NULL);
    AT_CHECK_CONTAINS(err.msg, "at least one name");
    at_error_clear(&err);
    p = params(empty, 1, HTTP, 1);
    AT_CHECK(at_acme_order_new(e.c, &p, &err) == NULL);
    at_error_clear(&err);
    AT_CHECK(at_acme_order_new(e.c, NULL, &err) == NULL);
    at_error_clear(&err);
    env_free(&e);
}

static void t_many_names_concurrent(void)
{
    env e;
    char buf[20][32];
    const char *names[20];
    at_order_params p;
    at_error err = AT_ERROR_INIT;
    at_fake_ca_run_opts o;
    at_acme_op *op;
    counts k;
    for (int i = 0; i < 20; i++) {
        snprintf(buf[i], sizeof(buf[i]), "host%d.example.com", i);
        names[i] = buf[i];
    }
    p = params(names, 20, HTTP, 1);
    env_init(&e, NULL);
    memset(&k, 0, sizeof(k));
    memset(&o, 0, sizeof(o));
    o.on_step = count_step;
    o.ud = &k;
    o.lifo = 1;                  /* replies in the other order */
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(at_fake_ca_run(e.ca, e.c, op, &e.now, &o), AT_STEP_DONE);
    AT_CHECK(k.max_burst >= 20);     /* all authorizations fetched at once */
    AT_CHECK_INT(k.publishes, 20);
    AT_CHECK_INT(k.withdraws, 20);
    check_chain(op, names, 20, AT_FAKE_CA_ROOT_CN);
    at_acme_op_free(op);
    env_free(&e);
}

static void t_rsa_key(void)
{
    env e;
    const char *names[] = { "example.com" };
    at_order_params p = params(names, 1, HTTP, 1);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    json_t *cp;
    env_init(&e, NULL);
    p.key.kind = AT_KEY_RSA;
    p.key.bits = 2048;
    op = at_acme_order_new(e.c, &p, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    check_chain(op, names, 1, AT_FAKE_CA_ROOT_CN);
    cp = at_acme_op_checkpoint(op);
    AT_CHECK_STR(at_json_str(cp, "key"), "rsa:2048");
    json_decref(cp);
    at_acme_op_free(op);
    env_free(&e);
}

/* -------------------------------------------------------- revocation, ARI */

static void t_revoke(void)
{
    env e;
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    char *pem;
    int reason = -1;

    AT_CHECK_INT(at_revoke_reason_parse("keyCompromise"), 1);
    AT_CHECK_INT(at_revoke_reason_parse("SUPERSEDED"), 4);
    AT_CHECK_INT(at_revoke_reason_parse("5"), 5);
    AT_CHECK_INT(at_revoke_reason_parse("7"), -1);
    AT_CHECK_INT(at_revoke_reason_parse("bogus"), -1);
    AT_CHECK_INT(at_revoke_reason_parse(""), -1);

    env_init(&e, NULL);
    pem = issue_one(&e, "example.com");
    op = at_acme_revoke_new(e.c, pem, 4, &err);
    AT_CHECK(op != NULL);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK_INT(at_fake_ca_cert_revoked(e.ca, 0, &reason), 1);
    AT_CHECK_INT(reason, 4);
    AT_CHECK_INT(json_integer_value(json_object_get(at_fake_ca_last_payload(e.ca, "revokeCert"), "reason")), 4);
    at_acme_op_free(op);

    /* Again: the CA says alreadyRevoked, which is what we wanted. */
    op = at_acme_revoke_new(e.c, pem, -1, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    AT_CHECK(json_object_get(at_fake_ca_last_payload(e.ca, "revokeCert"), "reason") == NULL);
    at_acme_op_free(op);

    AT_CHECK(at_acme_revoke_new(e.c, pem, 7, &err) == NULL);
    AT_CHECK_INT(err.code, AT_ERR_CONFIG);
    at_error_clear(&err);
    AT_CHECK(at_acme_revoke_new(e.c, "not a pem", 0, &err) == NULL);
    AT_CHECK(err.code != AT_OK);
    at_error_clear(&err);

    /* A certificate the CA does not know. */
    op = at_acme_revoke_new(e.c, at_fake_ca_root_pem(e.ca), 0, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "revoking the certificate");
    at_acme_op_free(op);
    free(pem);
    env_free(&e);
}

static void t_ari(void)
{
    env e;
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    const at_ari_result *r;
    char *pem;
    at_cert_info info;

    env_init(&e, NULL);
    pem = issue_one(&e, "example.com");
    memset(&info, 0, sizeof(info));
    at_cert_info_pem(pem, strlen(pem), &info, &err);

    at_fake_ca_set_ari(e.ca, e.now + 1000, e.now + 5000, 7200, "https://ca.test/incident/42");
    op = at_acme_ari_new(e.c, pem, &err);
    AT_CHECK(op != NULL);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    r = at_acme_op_ari(op);
    AT_CHECK(r != NULL);
    if (r) {
        AT_CHECK_INT(r->start, e.now + 1000);
        AT_CHECK_INT(r->end, e.now + 5000);
        AT_CHECK_INT(r->retry_after, e.now + 7200 + 1);   /* a whole second more: never early */
        AT_CHECK_STR(r->explanation_url, "https://ca.test/incident/42");
    }
    AT_CHECK_INT(at_fake_ca_count(e.ca, "renewalInfo"), 1);
    at_acme_op_free(op);

    /* Derived window, no explanation, no Retry-After. */
    at_fake_ca_set_ari(e.ca, 0, 0, -1, NULL);
    op = at_acme_ari_new(e.c, pem, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_DONE);
    r = at_acme_op_ari(op);
    AT_CHECK(r && r->start > info.not_before && r->end < info.not_after && r->start < r->end);
    AT_CHECK(r && r->retry_after == 0 && r->explanation_url[0] == '\0');
    at_acme_op_free(op);

    /* A window that ends before it starts is refused. */
    at_fake_ca_set_ari(e.ca, e.now + 5000, e.now + 1000, -1, NULL);
    op = at_acme_ari_new(e.c, pem, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_INT(at_acme_op_error(op)->code, AT_ERR_PROTOCOL);
    AT_CHECK(at_acme_op_ari(op) == NULL);
    at_acme_op_free(op);

    /* Malformed body, 404, 503. */
    at_fake_ca_raw_next(e.ca, "renewalInfo", 200, "application/json", "{\"suggestedWindow\":{\"start\":5}}", 31);
    op = at_acme_ari_new(e.c, pem, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "suggestedWindow");
    at_acme_op_free(op);
    at_fake_ca_fail_next(e.ca, "renewalInfo", 1, 404, "malformed", "unknown", -1);
    op = at_acme_ari_new(e.c, pem, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_INT(at_acme_op_error(op)->code, AT_ERR_NOTFOUND);
    at_acme_op_free(op);
    at_fake_ca_fail_next(e.ca, "renewalInfo", 5, 503, NULL, "down", 600);
    op = at_acme_ari_new(e.c, pem, &err);
    AT_CHECK_INT(run(&e, op, NULL), AT_STEP_FAILED);
    AT_CHECK_INT(at_acme_op_error(op)->retry_after, 600);
    at_acme_op_free(op);

    at_cert_info_free(&info);
    free(pem);
    env_free(&e);
}

static void no_ari(at_fake_ca *ca) { at_fake_ca_set_renewal_info(ca, 0); }

static void t_ari_unavailable(void)
{
    env e;
    at_error err = AT_ERROR_INIT;
    char *pem;
    env_init(&e, no_ari);
    pem = issue_one(&e, "example.com");
    AT_CHECK(at_acme_ari_new(e.c, pem, &err) == NULL);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    AT_CHECK_CONTAINS(err.msg, "renewalInfo");
    at_error_clear(&err);
    free(pem);
    env_free(&e);
}

static void t_ari_pick(void)
{
    at_ari_result r;
    time_t lo = 0, hi = 0;
    memset(&r, 0, sizeof(r));
    r.start = 1000;
    r.end = 2000;
    for (unsigned long i = 0; i < 5000; i++) {
        time_t t = at_ari_pick(&r, i * 2654435761UL);
        AT_CHECK(t >= 1000 && t < 2000);
        if (t < 1100)
            lo++;
        if (t >= 1900)
            hi++;
    }
    AT_CHECK(lo > 300 && hi > 300);          /* spread over the window */
    r.end = 1000;
    AT_CHECK_INT(at_ari_pick(&r, 12345), 1000);
    AT_CHECK_INT(at_ari_pick(NULL, 1), 0);
}

static void t_challenge_names(void)
{
    AT_CHECK_STR(at_challenge_name(AT_CHAL_HTTP01), "http-01");
    AT_CHECK_STR(at_challenge_name(AT_CHAL_TLSALPN01), "tls-alpn-01");
    AT_CHECK_STR(at_challenge_name(AT_CHAL_DNS01), "dns-01");
    AT_CHECK(at_challenge_name(AT_CHAL_NONE) == NULL);
    AT_CHECK_INT(at_challenge_parse("DNS-01"), AT_CHAL_DNS01);
    AT_CHECK_INT(at_challenge_parse("tls-alpn-01"), AT_CHAL_TLSALPN01);
    AT_CHECK_INT(at_challenge_parse("http-02"), AT_CHAL_NONE);
    AT_CHECK_INT(at_challenge_parse(NULL), AT_CHAL_NONE);
}

/* ------------------------------------------------- replay of a real Pebble */

/* Exchanges recorded from Debian's Pebble (data/acme/record_pebble.py), served
 * back by URL in recorded order: the op must understand a real CA's objects,
 * headers and problem documents, not only the fake CA's. */
typedef struct replay {
    json_t *doc;
    json_t *ex;
    char   *used;
} replay;

static int replay_load(replay *rp)
{
    char path[1024];
    char *text;
    size_t len;
    at_error err = AT_ERROR_INIT;
    memset(rp, 0, sizeof(*rp));
    snprintf(path, sizeof(path), "%s/acme/pebble-order.json", AT_TEST_DATA_DIR);
    text = at_test_read_file(path, &len);
    AT_CHECK_MSG(text != NULL, "cannot read %s", path);
    if (!text)
        return -1;
    rp->doc = at_json_parse_object(text, len, path, &err);
    free(text);
    AT_CHECK_OK(rp->doc ? 0 : -1, &err);
    rp->ex = json_object_get(rp->doc, "exchanges");
    rp->used = calloc(json_array_size(rp->ex) + 1, 1);
    return rp->doc && rp->used ? 0 : -1;
}

static void replay_free(replay *rp)
{
    json_decref(rp->doc);
    free(rp->used);
}

static void replay_fill(const json_t *e, at_http_resp *r)
{
    size_t i;
    json_t *h;
    const char *body = at_json_str(e, "body");
    at_http_resp_init(r);
    r->status = (long)json_integer_value(json_object_get(e, "status"));
    json_array_foreach(json_object_get(e, "headers"), i, h) {
        char line[2048];
        snprintf(line, sizeof(line), "%s: %s\r\n", json_string_value(json_array_get(h, 0)),
                 json_string_value(json_array_get(h, 1)));
        at_http_resp_header(r, line, strlen(line), at_json_str(e, "url"));
    }
    if (body && *body) {
        r->body = strdup(body);
        r->body_len = strlen(body);
    }
}

/* The next recorded answer for this request (the last one again when used up). */
static void replay_answer(replay *rp, const at_http_req *q, at_http_resp *r)
{
    const char *m = q->method == AT_HTTP_HEAD ? "HEAD" : q->method == AT_HTTP_GET ? "GET" : "POST";
    long last = -1;
    for (size_t i = 0; i < json_array_size(rp->ex); i++) {
        const json_t *e = json_array_get(rp->ex, i);
        if (strcmp(at_json_str(e, "method"), m) != 0 || strcmp(at_json_str(e, "url"), q->url) != 0)
            continue;
        if (!rp->used[i]) {
            rp->used[i] = 1;
            replay_fill(e, r);
            return;
        }
        last = (long)i;
    }
    if (last >= 0) {
        replay_fill(json_array_get(rp->ex, (size_t)last), r);
        return;
    }
    at_http_resp_init(r);
    r->status = 404;
    AT_CHECK_MSG(0, "no recorded answer for %s %s", m, q->url);
}

static int replay_run(replay *rp, at_acme_client *c, at_acme_op *op, time_t *now)
{
    for (int n = 0; n < 2000; n++) {
        at_step st;
        at_acme_op_step(op, *now, &st);
        if (st.kind == AT_STEP_REQUEST) {
            at_acme_exch *x = at_acme_exch_new(c, st.req);
            at_error err = AT_ERROR_INIT;
            for (int i = 0; i < 50; i++) {
                at_http_req q;
                at_http_resp r;
                time_t until;
                at_exch_state s = at_acme_exch_next(x, *now, &q, &until, &err);
                if (s == AT_EXCH_SEND) {
                    replay_answer(rp, &q, &r);
                    at_http_req_free(&q);
                    at_acme_exch_feed(x, &r, NULL, *now);
                    at_http_resp_free(&r);
                } else if (s == AT_EXCH_WAIT) {
                    *now = until > *now ? until : *now + 1;
                } else {
                    at_acme_op_response(op, st.tag, s == AT_EXCH_DONE ? at_acme_exch_response(x) : NULL,
                                        s == AT_EXCH_DONE ? NULL : &err, *now);
                    break;
                }
            }
            at_error_clear(&err);
            at_acme_exch_free(x);
        } else if (st.kind == AT_STEP_PUBLISH) {
            at_acme_op_published(op, st.tag, NULL);
        } else if (st.kind == AT_STEP_WAIT) {
            if (st.until <= *now)
                return -1;
            *now = st.until;
        } else if (st.kind == AT_STEP_DONE || st.kind == AT_STEP_FAILED) {
            return (int)st.kind;
        }
    }
    return -1;
}

static at_acme_client *replay_client(replay *rp)
{
    at_error err = AT_ERROR_INIT;
    const char *dir = at_json_str(rp->doc, "directory_url");
    at_acme_client *c = at_acme_client_new(dir, &err);
    at_http_req q;
    at_http_resp r;
    at_key_spec ks = AT_KEY_SPEC_DEFAULT;
    EVP_PKEY *k = at_key_generate(&ks, &err);
    memset(&q, 0, sizeof(q));
    q.method = AT_HTTP_GET;
    q.url = (char *)dir;
    replay_answer(rp, &q, &r);
    AT_CHECK_OK(at_acme_client_set_directory(c, &r, &err), &err);
    at_http_resp_free(&r);
    at_acme_client_set_account(c, k, NULL);
    EVP_PKEY_free(k);
    return c;
}

static void t_pebble_replay(void)
{
    replay rp;
    at_acme_client *c;
    at_error err = AT_ERROR_INIT;
    at_account_params ap;
    at_order_params p;
    const json_t *jn;
    const char *names[8];
    size_t n = 0, i;
    json_t *v, *cp;
    EVP_PKEY *key;
    at_acme_op *op;
    time_t now = T0;
    const char *alt_pem = NULL;
    char alt_cn[256] = "";

    if (replay_load(&rp) != 0)
        return;
    c = replay_client(&rp);
    AT_CHECK_CONTAINS(at_acme_client_dir(c)->key_change, "/rollover-account-key");
    AT_CHECK(at_acme_client_dir(c)->new_authz == NULL);

    /* Account: Pebble's 201 with Location and Link headers. */
    memset(&ap, 0, sizeof(ap));
    ap.accept_terms = 1;
    op = at_acme_account_new(c, AT_ACCOUNT_ENSURE, &ap, &err);
    AT_CHECK_INT(replay_run(&rp, c, op, &now), AT_STEP_DONE);
    AT_CHECK_STR(at_acme_op_account_url(op), at_json_str(rp.doc, "account_url"));
    AT_CHECK_STR(at_json_str(at_acme_op_account(op), "status"), "valid");
    at_acme_client_set_account(c, at_acme_client_key(c), at_acme_op_account_url(op));
    at_acme_op_free(op);

    /* The order, two DNS names and an IP address, choosing the alternate chain. */
    jn = json_object_get(rp.doc, "names");
    json_array_foreach(jn, i, v)
        if (n < 8)
            names[n++] = json_string_value(v);
    json_array_foreach(rp.ex, i, v)
        if (strstr(at_json_str(v, "url"), "/alternate/"))
            alt_pem = at_json_str(v, "body");
    AT_CHECK(alt_pem != NULL);
    if (alt_pem)
        AT_CHECK_OK(at_chain_top_issuer_cn(alt_pem, strlen(alt_pem), alt_cn, sizeof(alt_cn), &err), &err);
    key = at_key_from_pem(at_json_str(rp.doc, "cert_key"), strlen(at_json_str(rp.doc, "cert_key")), &err);
    AT_CHECK(key != NULL);
    p = params(names, n, HTTP, 1);
    p.preferred_chain = alt_cn;
    cp = json_object();                  /* a checkpoint without an order: a new one, this key */
    op = at_acme_order_resume(c, &p, cp, key, &err);
    AT_CHECK(op != NULL);
    AT_CHECK_INT(replay_run(&rp, c, op, &now), AT_STEP_DONE);
    if (at_acme_op_error(op)->code != AT_OK)
        fprintf(stderr, "  replay: %s\n", at_acme_op_error(op)->msg);
    check_chain(op, names, n, alt_cn);
    AT_CHECK_STR(at_acme_op_chain_pem(op), alt_pem);
    AT_CHECK_STR(at_acme_op_challenge_used(op), "http-01");
    AT_CHECK_CONTAINS(at_acme_op_order_url(op), "/my-order/");
    at_acme_op_free(op);
    json_decref(cp);
    EVP_PKEY_free(key);

    /* Pebble's problem documents. */
    json_array_foreach(rp.ex, i, v) {
        at_http_resp r;
        if (json_integer_value(json_object_get(v, "status")) < 400)
            continue;
        replay_fill(v, &r);
        AT_CHECK_STR(r.content_type, "application/problem+json");
        AT_CHECK_INT(at_acme_problem(&r, "new order", now, &err), -1);
        AT_CHECK(at_acme_problem_type(&err) != NULL);
        AT_CHECK_CONTAINS(err.msg, "HTTP 400");
        if (strcmp(at_acme_problem_type(&err), "badNonce") == 0)
            AT_CHECK_CONTAINS(err.msg, "anti-replay nonce");
        at_error_clear(&err);
        at_http_resp_free(&r);
    }
    at_acme_client_free(c);
    replay_free(&rp);
}

static const at_test_case cases[] = {
    AT_CASE(t_basic_http01),
    AT_CASE(t_ip_identifiers),
    AT_CASE(t_wildcard),
    AT_CASE(t_challenge_preference),
    AT_CASE(t_profiles),
    AT_CASE(t_replaces),
    AT_CASE(t_preauthorization),
    AT_CASE(t_authz_already_valid),
    AT_CASE(t_invalid_challenge),
    AT_CASE(t_validator),
    AT_CASE(t_unpublished_challenge_fails),
    AT_CASE(t_publish_error),
    AT_CASE(t_polling),
    AT_CASE(t_retry_after_honoured),
    AT_CASE(t_quick_polls),
    AT_CASE(t_quick_polls_fall_back_to_seconds),
    AT_CASE(t_quick_polls_yield_to_retry_after),
    AT_CASE(t_poll_timeout),
    AT_CASE(t_order_not_ready),
    AT_CASE(t_transient_errors),
    AT_CASE(t_alternate_chains),
    AT_CASE(t_resume),
    AT_CASE(t_cancel),
    AT_CASE(t_malformed_orders),
    AT_CASE(t_malformed_authz),
    AT_CASE(t_bad_certificate),
    AT_CASE(t_params_checked),
    AT_CASE(t_many_names_concurrent),
    AT_CASE(t_rsa_key),
    AT_CASE(t_revoke),
    AT_CASE(t_ari),
    AT_CASE(t_ari_unavailable),
    AT_CASE(t_ari_pick),
    AT_CASE(t_challenge_names),
    AT_CASE(t_pebble_replay),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    return at_test_main(argc, argv, cases);
}
