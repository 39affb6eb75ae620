/*
 * at_acme_order.c: obtaining a certificate (RFC 8555 §7.4, RFC 8738 IP
 * identifiers, RFC 8737 tls-alpn-01, RFC 9773 "replaces", the profiles
 * extension). The order op places (or resumes) an order, pre-authorizes when
 * the CA offers newAuthz, runs every authorization concurrently (choose a
 * challenge, publish, respond, poll), finalizes with a SAN-only CSR, polls
 * while the CA processes, downloads the chain and picks the preferred one.
 * It checkpoints whenever the order URL or status changes.
 */
#include "at_acme_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "at_b64.h"
#include "at_jose.h"
#include "at_time.h"
#include "at_x509.h"

#define POLL_FIRST        1     /* seconds before the first poll */
#define POLL_MAX          10    /* the interval grows to this */
#define QUICK_POLL_BELOW  1000  /* ms: quick polls double up to here, then whole seconds */
#define NOT_READY_MAX     3     /* orderNotReady rounds before giving up */
#define DEFAULT_TIMEOUT   300
#define PEM_CHAIN         "application/pem-certificate-chain"

typedef enum az_state {
    AZ_CREATE = 0,   /* pre-authorization: POST newAuthz */
    AZ_FETCH,        /* read the authorization */
    AZ_BUSY,         /* a request for it is in flight */
    AZ_PUBLISH,      /* waiting for the host to publish the challenge */
    AZ_RESPOND,      /* tell the CA to validate */
    AZ_POLL,         /* re-read the authorization at next_poll */
    AZ_VALID,
    AZ_SKIPPED       /* pre-authorization refused: the order carries it */
} az_state;

typedef struct az {
    char      *url;
    char      *name;          /* for messages: "*.example.com", "192.0.2.1" */
    az_state   st;
    at_challenge_info chal;   /* the chosen challenge, once chosen */
    char      *chal_url;
    int        respond;       /* the challenge still needs our "{}" */
    int        published;     /* a PUBLISH went out and no WITHDRAW yet */
    unsigned   pub_tag;
    int        by_us;         /* validated through our challenge (not reused) */
    time_t     next_poll;
    long       interval;
    int        nquick;        /* quick polls made so far */
    unsigned   delay_ms;      /* hold the next poll back this long (a quick poll) */
    struct az *next_retired;
} az;

typedef enum ophase {
    P_START = 0,
    P_RESUME,      /* re-read the checkpointed order */
    P_PREAUTH,     /* newAuthz for each name, then newOrder */
    P_NEW,
    P_AUTHZ,
    P_FINALIZE,
    P_POLL,        /* re-read the order at next_poll */
    P_DOWNLOAD,
    P_ALT,         /* alternate chains, one by one */
    P_DONE
} ophase;

struct at_order_st {
    /* parameters */
    char          **names;
    size_t          nnames;
    at_key_spec     keyspec;
    at_challenge_type chal[8];
    size_t          nchal;
    char           *profile;
    char           *replaces;
    char           *preferred;
    long            poll_timeout;
    long            quick_first;   /* first quick poll delay in ms, 0 = none */
    int             preauth;
    EVP_PKEY       *key;
    char            what[320];
    /* state */
    ophase          phase;
    int             busy;          /* an order-level request is in flight */
    char           *url;
    char           *status;
    char           *finalize;
    char           *certificate;
    az            **azs;
    size_t          naz;
    az             *retired;
    time_t          authz_deadline;
    time_t          poll_deadline;
    time_t          next_poll;
    long            interval;
    int             nquick;
    unsigned        delay_ms;
    int             not_ready;
    int             finalized;
    int             replaces_dropped;
    int             send_replaces;
    char           *default_chain;
    char          **alts;
    size_t          nalt, alt_next;
    char           *chain;
    char           *used;
};

static void set_phase(at_acme_op *op, ophase p)
{
    op->order->phase = p;
    op->progress++;
}

/* ------------------------------------------------------------ helpers */

static int is_wildcard(const char *n)
{
    return n[0] == '*' && n[1] == '.';
}

static char *xstrdup(at_acme_op *op, const char *s)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
    return d;
}

static void replace_str(char **dst, char *src)
{
    free(*dst);
    *dst = src;
}

static void chal_info_clear(at_challenge_info *c)
{
    free(c->identifier);
    free(c->token);
    free(c->key_authorization);
    free(c->dns_name);
    free(c->dns_value);
    free(c->alpn_cert_pem);
    free(c->alpn_key_pem);
    memset(c, 0, sizeof(*c));
}

static void az_free(az *a)
{
    if (!a)
        return;
    free(a->url);
    free(a->name);
    free(a->chal_url);
    chal_info_clear(&a->chal);
    free(a);
}

static az *az_new(const char *url, const char *name)
{
    az *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->url = url ? strdup(url) : NULL;
    a->name = name ? strdup(name) : NULL;
    a->interval = POLL_FIRST;
    if ((url && !a->url) || (name && !a->name)) {
        az_free(a);
        return NULL;
    }
    return a;
}

/* A record that leaves the current set: kept alive until the op is freed,
 * because a queued step may still point at its challenge. */
static void az_retire(at_acme_op *op, az *a)
{
    if (a->published) {
        a->published = 0;
        at_op_push_step(op, AT_STEP_WITHDRAW, &a->chal);
    }
    a->next_retired = op->order->retired;
    op->order->retired = a;
}

static void checkpoint(at_acme_op *op)
{
    at_op_push_step(op, AT_STEP_CHECKPOINT, NULL);
}

/* Poll interval growth: 1, 2, 3, 4, 6, 9, 10, 10 ... seconds. */
static long grow(long i)
{
    long n = i + i / 2;
    if (n <= i)
        n = i + 1;
    return n > POLL_MAX ? POLL_MAX : n;
}

/* When to poll next, honouring Retry-After within the deadline. Returns -1
 * (op failed with AT_ERR_TIMEOUT) when the deadline is over or the CA asks
 * for a wait beyond it. */
static int schedule(at_acme_op *op, const at_http_resp *resp, time_t now, time_t deadline,
                    long *interval, time_t *next, const char *waiting_for)
{
    long ra = resp ? at_http_retry_after(resp, now) : -1;
    long wait = ra > 0 ? ra : *interval;

    if (now >= deadline || (ra > 0 && now + ra > deadline)) {
        at_error e = AT_ERROR_INIT;
        at_error_set(&e, AT_ERR_TIMEOUT,
                     "%s: %s after %ld s (the poll timeout)%s; the order is kept and resumes on the next attempt",
                     op->order->what, waiting_for, op->order->poll_timeout,
                     ra > 0 ? ", and the CA asks to wait longer" : "");
        e.retry_after = ra > 0 ? ra : -1;
        at_op_fail_err(op, &e);
        return -1;
    }
    *interval = grow(*interval);
    if (now + wait > deadline)
        wait = (long)(deadline - now);
    if (wait < 1)
        wait = 1;
    *next = ra > 0 ? at_time_after(now, ra) : now + wait;
    at_op_wake_at(op, *next);
    return 0;
}

/* A quick poll: re-read at once, with the request held back by the host for
 * *delay_ms (quick_first ms, doubling while below a second). A CA that
 * validates or issues within milliseconds (a local CA, Pebble) then does not
 * cost a whole second per step; a slower one soon falls through to the
 * whole-second intervals of schedule(). A Retry-After always wins. Returns 1
 * when a quick poll was scheduled. */
static int quick_poll(at_acme_op *op, const at_http_resp *resp, time_t now, time_t deadline,
                      int *nquick, time_t *next, unsigned *delay_ms)
{
    long d = op->order->quick_first;

    if (d <= 0 || *nquick > 16 || now >= deadline || (resp && at_http_retry_after(resp, now) > 0))
        return 0;
    d <<= *nquick;
    if (d >= QUICK_POLL_BELOW)
        return 0;
    (*nquick)++;
    *delay_ms = (unsigned)d;
    *next = now;
    return 1;
}

/* "example.com" or "example.com (and 2 more names)" */
static void describe_names(at_order_st *o)
{
    if (o->nnames > 1)
        snprintf(o->what, sizeof(o->what), "order for %s (and %zu more name%s)", o->names[0],
                 o->nnames - 1, o->nnames > 2 ? "s" : "");
    else
        snprintf(o->what, sizeof(o->what), "order for %s", o->nnames ? o->names[0] : "(no name)");
}

static const char *id_type(const char *name)
{
    return at_name_is_ip(name) ? "ip" : "dns";
}

static json_t *identifier(const char *name)
{
    return json_pack("{s:s, s:s}", "type", id_type(name), "value", name);
}

/* ------------------------------------------------------------ checkpoint */

json_t *at_acme_op_checkpoint(const at_acme_op *op)
{
    const at_order_st *o = op ? op->order : NULL;
    json_t *cp, *names;
    if (!o)
        return NULL;
    names = json_array();
    for (size_t i = 0; names && i < o->nnames; i++)
        json_array_append_new(names, json_string(o->names[i]));
    cp = json_pack("{s:s?, s:s?, s:o, s:s, s:s?, s:s?, s:s?, s:s?}",
                   "order_url", o->url,
                   "status", o->status,
                   "names", names ? names : json_array(),
                   "key", at_key_spec_name(&o->keyspec),
                   "finalize", o->finalize,
                   "certificate", o->certificate,
                   "profile", o->profile,
                   "replaces", o->replaces);
    return cp;
}

EVP_PKEY *at_acme_op_cert_key(const at_acme_op *op)
{
    return op && op->order ? op->order->key : NULL;
}

const char *at_acme_op_chain_pem(const at_acme_op *op)
{
    return op && op->order && op->final == AT_STEP_DONE ? op->order->chain : NULL;
}

const char *at_acme_op_order_url(const at_acme_op *op)
{
    return op && op->order ? op->order->url : NULL;
}

const char *at_acme_op_challenge_used(const at_acme_op *op)
{
    return op && op->order ? op->order->used : NULL;
}

/* Distinct challenge types that validated something, "http-01,dns-01". */
static void compute_used(at_order_st *o)
{
    char buf[64] = "";
    static const at_challenge_type all[] = { AT_CHAL_HTTP01, AT_CHAL_TLSALPN01, AT_CHAL_DNS01 };
    for (size_t t = 0; t < sizeof(all) / sizeof(all[0]); t++) {
        int seen = 0;
        for (size_t i = 0; i < o->naz; i++)
            if (o->azs[i]->by_us && o->azs[i]->chal.type == all[t])
                seen = 1;
        for (az *a = o->retired; a; a = a->next_retired)
            if (a->by_us && a->chal.type == all[t])
                seen = 1;
        if (seen) {
            if (buf[0])
                strcat(buf, ",");
            strcat(buf, at_challenge_name(all[t]));
        }
    }
    free(o->used);
    o->used = buf[0] ? strdup(buf) : NULL;
}

/* ------------------------------------------------------------ challenges */

const char *at_challenge_name(at_challenge_type t)
{
    switch (t) {
    case AT_CHAL_HTTP01:    return "http-01";
    case AT_CHAL_TLSALPN01: return "tls-alpn-01";
    case AT_CHAL_DNS01:     return "dns-01";
    default:                return NULL;
    }
}

at_challenge_type at_challenge_parse(const char *s)
{
    if (!s)
        return AT_CHAL_NONE;
    if (strcasecmp(s, "http-01") == 0)
        return AT_CHAL_HTTP01;
    if (strcasecmp(s, "tls-alpn-01") == 0)
        return AT_CHAL_TLSALPN01;
    if (strcasecmp(s, "dns-01") == 0)
        return AT_CHAL_DNS01;
    return AT_CHAL_NONE;
}

static void list_types(char *out, size_t sz, const at_challenge_type *t, size_t n)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && len < sz; i++) {
        const char *name = at_challenge_name(t[i]);
        if (name)
            len += (size_t)snprintf(out + len, sz - len, "%s%s", len ? ", " : "", name);
    }
}

static void list_offered(char *out, size_t sz, const json_t *chals)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < json_array_size(chals) && i < AT_ACME_MAX_CHALLENGES && len < sz; i++) {
        const char *t = at_json_str(json_array_get(chals, i), "type");
        if (t && strlen(t) < 40)
            len += (size_t)snprintf(out + len, sz - len, "%s%s", len ? ", " : "", t);
    }
    if (!out[0])
        snprintf(out, sz, "none");
}

/* Fill a->chal for challenge object ch (type t). */
static int build_challenge(at_acme_op *op, az *a, const json_t *ch, at_challenge_type t,
                           const char *value, int wildcard, at_error *err)
{
    const char *token = at_json_str(ch, "token"), *url = at_json_str(ch, "url");
    at_challenge_info *c = &a->chal;
    size_t tl = token ? strlen(token) : 0;

    if (!url || !*url)
        return at_error_set(err, AT_ERR_PROTOCOL, "the %s challenge for %s has no URL",
                            at_challenge_name(t), a->name);
    if (!token || tl < 16 || tl > AT_ACME_MAX_TOKEN || !at_b64url_valid(token, tl))
        return at_error_set(err, AT_ERR_PROTOCOL,
                            "the %s challenge for %s has a missing or malformed token "
                            "(RFC 8555 requires base64url with at least 128 bits)",
                            at_challenge_name(t), a->name);
    chal_info_clear(c);
    c->type = t;
    c->wildcard = wildcard;
    c->identifier = strdup(value);
    c->token = strdup(token);
    free(a->chal_url);
    a->chal_url = at_http_resolve(a->url, url);
    if (!c->identifier || !c->token || !a->chal_url)
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    c->key_authorization = at_key_authorization(token, at_acme_client_key(op->client), err);
    if (!c->key_authorization)
        return -1;
    switch (t) {
    case AT_CHAL_HTTP01:
        break;
    case AT_CHAL_DNS01: {
        size_t l = strlen(value) + sizeof("_acme-challenge.");
        c->dns_name = malloc(l);
        if (!c->dns_name)
            return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        snprintf(c->dns_name, l, "_acme-challenge.%s", value);
        c->dns_value = at_dns01_txt_value(c->key_authorization, err);
        if (!c->dns_value)
            return -1;
        break;
    }
    case AT_CHAL_TLSALPN01: {
        at_buf cert = AT_BUF_INIT, key = AT_BUF_INIT;
        if (at_tlsalpn01_cert(value, c->key_authorization, &cert, &key, err) != 0) {
            at_buf_free(&cert);
            at_buf_free_secret(&key);
            return -1;
        }
        c->alpn_cert_pem = at_buf_detach(&cert);
        c->alpn_key_pem = at_buf_detach(&key);
        if (!c->alpn_cert_pem || !c->alpn_key_pem)
            return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        break;
    }
    default:
        return at_error_set(err, AT_ERR_INTERNAL, "unknown challenge type");
    }
    return 0;
}

/* The challenge error of an authorization that went wrong, as the op's error. */
static void fail_authz(at_acme_op *op, az *a, const json_t *authz, const char *status)
{
    const json_t *chals = json_object_get(authz, "challenges"), *doc = NULL;
    const char *ctype = NULL;
    char what[600];

    /* Prefer the challenge we answered; else any challenge with an error. */
    for (size_t i = 0; i < json_array_size(chals) && i < AT_ACME_MAX_CHALLENGES; i++) {
        const json_t *ch = json_array_get(chals, i), *e = json_object_get(ch, "error");
        const char *u = at_json_str(ch, "url");
        if (!json_is_object(e))
            continue;
        if (!doc || (u && a->chal_url && strcmp(u, a->chal_url) == 0)) {
            doc = e;
            ctype = at_json_str(ch, "type");
        }
    }
    snprintf(what, sizeof(what), "%s: the authorization for %s is %s%s%s%s",
             op->order->what, a->name, status, ctype ? " (" : "", ctype ? ctype : "", ctype ? " challenge)" : "");
    if (doc) {
        at_error e = AT_ERROR_INIT;
        at_acme_problem_doc(&e, doc, 0, what, NULL, -1, NULL, 0);
        if (e.code == AT_ERR_CA || e.code == AT_ERR_RATELIMIT) {
            at_op_fail_err(op, &e);
            return;
        }
        at_error_clear(&e);
    }
    at_op_fail(op, AT_ERR_CA, "%s; the CA gave no reason (see %s)", what, a->url ? a->url : "the order");
}

static void az_valid(at_acme_op *op, az *a)
{
    a->st = AZ_VALID;
    if (a->published) {
        a->published = 0;
        at_op_push_step(op, AT_STEP_WITHDRAW, &a->chal);
    }
    op->progress++;
}

/* Choose among the offered challenges by the configured preference. */
static const json_t *choose(at_acme_op *op, az *a, const json_t *chals, int wildcard,
                            at_challenge_type *type)
{
    at_order_st *o = op->order;
    size_t n = json_array_size(chals);
    char offered[256], allowed[128];

    if (n > AT_ACME_MAX_CHALLENGES)
        n = AT_ACME_MAX_CHALLENGES;
    /* One already being validated (a resumed order) is kept. */
    for (size_t i = 0; i < n; i++) {
        const json_t *ch = json_array_get(chals, i);
        const char *st = at_json_str(ch, "status");
        at_challenge_type t = at_challenge_parse(at_json_str(ch, "type"));
        if (!st || strcmp(st, "processing") != 0 || t == AT_CHAL_NONE || (wildcard && t != AT_CHAL_DNS01))
            continue;
        for (size_t k = 0; k < o->nchal; k++)
            if (o->chal[k] == t) {
                *type = t;
                return ch;
            }
    }
    for (size_t k = 0; k < o->nchal; k++) {
        if (wildcard && o->chal[k] != AT_CHAL_DNS01)
            continue;
        for (size_t i = 0; i < n; i++) {
            const json_t *ch = json_array_get(chals, i);
            const char *st = at_json_str(ch, "status");
            if (at_challenge_parse(at_json_str(ch, "type")) == o->chal[k] &&
                (!st || strcmp(st, "invalid") != 0)) {
                *type = o->chal[k];
                return ch;
            }
        }
    }
    list_offered(offered, sizeof(offered), chals);
    if (wildcard) {
        at_op_fail(op, AT_ERR_CONFIG,
                   "%s: %s is a wildcard and can only be validated with dns-01, which the CA "
                   "does not offer for it (offered: %s)", o->what, a->name, offered);
    } else {
        list_types(allowed, sizeof(allowed), o->chal, o->nchal);
        at_op_fail(op, AT_ERR_CONFIG,
                   "%s: no usable challenge for %s: the CA offers %s, and autotls is configured "
                   "for %s; allow one of the offered types", o->what, a->name, offered, allowed);
    }
    return NULL;
}

static void authz_pending(at_acme_op *op, az *a, const json_t *obj, const at_http_resp *resp,
                          const char *value, int wildcard, time_t now)
{
    const json_t *chals = json_object_get(obj, "challenges"), *ch;
    at_challenge_type type = AT_CHAL_NONE;
    at_error e = AT_ERROR_INIT;
    const char *cst;
    char waiting[400];

    if (!json_is_array(chals)) {
        at_op_fail(op, AT_ERR_PROTOCOL, "%s: the authorization for %s lists no challenges (%s)",
                   op->order->what, a->name, a->url);
        return;
    }
    if (a->chal.type != AT_CHAL_NONE) {
        /* Already chosen: we are polling. A failed challenge fails the authorization. */
        for (size_t i = 0; i < json_array_size(chals) && i < AT_ACME_MAX_CHALLENGES; i++) {
            const json_t *c = json_array_get(chals, i);
            const char *u = at_json_str(c, "url"), *s = at_json_str(c, "status");
            if (u && s && a->chal_url && strcmp(u, a->chal_url) == 0 && strcmp(s, "invalid") == 0) {
                fail_authz(op, a, obj, "invalid");
                return;
            }
        }
        snprintf(waiting, sizeof(waiting), "the CA has not finished validating %s", a->name);
        if (quick_poll(op, resp, now, op->order->authz_deadline, &a->nquick, &a->next_poll, &a->delay_ms) ||
            schedule(op, resp, now, op->order->authz_deadline, &a->interval, &a->next_poll, waiting) == 0)
            a->st = AZ_POLL;
        return;
    }
    ch = choose(op, a, chals, wildcard, &type);
    if (!ch)
        return;
    if (build_challenge(op, a, ch, type, value, wildcard, &e) != 0) {
        at_error_prefix(&e, "%s", op->order->what);
        at_op_fail_err(op, &e);
        return;
    }
    cst = at_json_str(ch, "status");
    a->respond = !cst || strcmp(cst, "pending") == 0;
    a->st = AZ_PUBLISH;
    a->published = 1;
    a->pub_tag = at_op_push_step(op, AT_STEP_PUBLISH, &a->chal);
}

/* An authorization object arrived (newAuthz or a read). */
static void handle_authz(at_acme_op *op, az *a, const json_t *obj, const at_http_resp *resp, time_t now)
{
    const json_t *id = json_object_get(obj, "identifier");
    const char *status = at_json_str(obj, "status");
    const char *value = json_is_object(id) ? at_json_str(id, "value") : NULL;
    const char *itype = json_is_object(id) ? at_json_str(id, "type") : NULL;
    int wildcard = at_json_bool(obj, "wildcard");

    if (!status || !value || !itype || !*value || strlen(value) > 255) {
        at_op_fail(op, AT_ERR_PROTOCOL,
                   "%s: the authorization %s lacks a status or identifier", op->order->what, a->url);
        return;
    }
    if (!a->name) {
        size_t l = strlen(value) + 3;
        a->name = malloc(l);
        if (!a->name) {
            at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
            return;
        }
        snprintf(a->name, l, "%s%s", wildcard ? "*." : "", value);
    }
    if (strcmp(status, "valid") == 0) {
        if (a->chal.type != AT_CHAL_NONE)
            a->by_us = 1;
        az_valid(op, a);
    } else if (strcmp(status, "pending") == 0) {
        authz_pending(op, a, obj, resp, value, wildcard, now);
    } else if (strcmp(status, "invalid") == 0 || strcmp(status, "deactivated") == 0 ||
               strcmp(status, "expired") == 0 || strcmp(status, "revoked") == 0) {
        fail_authz(op, a, obj, status);
    } else {
        at_op_fail(op, AT_ERR_PROTOCOL, "%s: the authorization for %s has an unknown status \"%.40s\"",
                   op->order->what, a->name, status);
    }
}

static az *az_at(at_acme_op *op, at_op_req *r)
{
    return r->idx < op->order->naz ? op->order->azs[r->idx] : NULL;
}

static void on_authz(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                     const at_error *terr, time_t now)
{
    az *a = az_at(op, r);
    at_error e = AT_ERROR_INIT;
    char what[600];
    json_t *obj;

    if (!a)
        return;
    if (a->name)
        snprintf(what, sizeof(what), "%s: reading the authorization for %s (%s)", op->order->what,
                 a->name, a->url);
    else
        snprintf(what, sizeof(what), "%s: reading the authorization %s", op->order->what, a->url);
    if (at_op_check(resp, terr, what, now, &e) != 0 || !(obj = at_op_json(resp, what, &e))) {
        at_op_fail_err(op, &e);
        return;
    }
    handle_authz(op, a, obj, resp, now);
    json_decref(obj);
}

static void on_newauthz(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                        const at_error *terr, time_t now)
{
    az *a = az_at(op, r);
    at_error e = AT_ERROR_INIT;
    char what[600];
    json_t *obj;

    if (!a)
        return;
    snprintf(what, sizeof(what), "%s: pre-authorizing %s", op->order->what, a->name);
    if (at_op_check(resp, terr, what, now, &e) != 0) {
        /* Not every name can be pre-authorized; the order will carry it.
         * A rate limit or a network failure would hit the order too. */
        if (e.code == AT_ERR_RATELIMIT || e.code == AT_ERR_NETWORK || e.code == AT_ERR_TIMEOUT) {
            at_op_fail_err(op, &e);
            return;
        }
        at_error_clear(&e);
        a->st = AZ_SKIPPED;
        return;
    }
    if (!resp->location || !(obj = at_op_json(resp, what, &e))) {
        at_error_clear(&e);
        a->st = AZ_SKIPPED;
        return;
    }
    free(a->url);
    a->url = xstrdup(op, resp->location);
    if (a->url)
        handle_authz(op, a, obj, resp, now);
    json_decref(obj);
}

static void on_challenge(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                         const at_error *terr, time_t now)
{
    az *a = az_at(op, r);
    at_error e = AT_ERROR_INIT;
    char what[600];
    json_t *obj;
    const char *st;

    if (!a)
        return;
    snprintf(what, sizeof(what), "%s: asking the CA to validate %s with %s", op->order->what,
             a->name, at_challenge_name(a->chal.type));
    if (at_op_check(resp, terr, what, now, &e) != 0) {
        at_op_fail_err(op, &e);
        return;
    }
    a->respond = 0;
    obj = at_op_json(resp, what, &e);
    st = obj ? at_json_str(obj, "status") : NULL;
    at_error_clear(&e);
    if (st && strcmp(st, "valid") == 0) {
        a->by_us = 1;
        az_valid(op, a);
    } else if (st && strcmp(st, "invalid") == 0 && json_is_object(json_object_get(obj, "error"))) {
        char w[600];
        snprintf(w, sizeof(w), "%s: the %s challenge for %s failed", op->order->what,
                 at_challenge_name(a->chal.type), a->name);
        at_acme_problem_doc(&e, json_object_get(obj, "error"), 0, w, NULL, -1, NULL, 0);
        at_op_fail_err(op, &e);
    } else if (quick_poll(op, resp, now, op->order->authz_deadline, &a->nquick, &a->next_poll, &a->delay_ms) ||
               (snprintf(what, sizeof(what), "the CA has not finished validating %s", a->name) > 0 &&
                schedule(op, resp, now, op->order->authz_deadline, &a->interval, &a->next_poll, what) == 0)) {
        /* The authorization tells the outcome (RFC 8555 §7.5.1). */
        a->st = AZ_POLL;
    }
    json_decref(obj);
}

static void order_published(at_acme_op *op, unsigned tag, const at_error *err)
{
    at_order_st *o = op->order;
    for (size_t i = 0; i < o->naz; i++) {
        az *a = o->azs[i];
        if (a->st != AZ_PUBLISH || a->pub_tag != tag)
            continue;
        if (err) {
            at_error e = AT_ERROR_INIT;
            at_error_copy(&e, err);
            if (e.code == AT_OK)
                at_error_set(&e, AT_ERR_INTERNAL, "publishing failed");
            at_error_prefix(&e, "%s: publishing the %s challenge for %s", o->what,
                            at_challenge_name(a->chal.type), a->name);
            at_op_fail_err(op, &e);
            return;
        }
        if (a->respond) {
            a->st = AZ_RESPOND;
        } else {
            a->st = AZ_POLL;
            a->next_poll = 0;          /* already answered (resumed): read it now */
        }
        return;
    }
}

/* Drive every authorization; returns 1 when all are settled. */
static int authz_advance(at_acme_op *op, time_t now)
{
    at_order_st *o = op->order;
    const at_acme_dir *dir = at_acme_client_dir(op->client);
    int settled = 1;

    for (size_t i = 0; i < o->naz && at_op_running(op); i++) {
        az *a = o->azs[i];
        switch (a->st) {
        case AZ_CREATE: {
            json_t *p = json_pack("{s:o}", "identifier", identifier(a->name));
            char *s = p ? at_json_compact(p) : NULL;
            json_decref(p);
            if (!s || !dir || !dir->new_authz) {
                free(s);
                at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
                return 0;
            }
            a->st = AZ_BUSY;
            at_op_request(op, AT_AREQ_POST_KID, dir->new_authz, s, NULL, on_newauthz, i);
            break;
        }
        case AZ_FETCH:
            a->st = AZ_BUSY;
            at_op_request(op, AT_AREQ_POST_KID, a->url, NULL, NULL, on_authz, i);
            break;
        case AZ_RESPOND: {
            char *s = strdup("{}");
            a->st = AZ_BUSY;
            if (!s) {
                at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
                return 0;
            }
            at_op_request(op, AT_AREQ_POST_KID, a->chal_url, s, NULL, on_challenge, i);
            break;
        }
        case AZ_POLL:
            if (now >= a->next_poll) {
                at_op_req *r;
                a->st = AZ_BUSY;
                r = at_op_request(op, AT_AREQ_POST_KID, a->url, NULL, NULL, on_authz, i);
                if (r)
                    r->delay_ms = a->delay_ms;
                a->delay_ms = 0;
            } else {
                at_op_wake_at(op, a->next_poll);
            }
            break;
        case AZ_VALID:
        case AZ_SKIPPED:
            continue;
        case AZ_BUSY:
        case AZ_PUBLISH:
            break;
        }
        settled = 0;
    }
    return settled;
}

/* ------------------------------------------------------------- the order */

static void fail_order_invalid(at_acme_op *op, const json_t *obj)
{
    const json_t *doc = json_object_get(obj, "error");
    char what[600];
    snprintf(what, sizeof(what), "%s: the CA marked the order invalid", op->order->what);
    if (json_is_object(doc)) {
        at_error e = AT_ERROR_INIT;
        at_acme_problem_doc(&e, doc, 0, what, NULL, -1, NULL, 0);
        at_op_fail_err(op, &e);
    } else {
        at_op_fail(op, AT_ERR_CA, "%s without saying why (%s)", what, op->order->url ? op->order->url : "");
    }
}

/* Take the order's authorization list as the current set. */
static int set_authorizations(at_acme_op *op, const json_t *list)
{
    at_order_st *o = op->order;
    size_t n = json_array_size(list);
    az **set;

    if (!json_is_array(list) || n > AT_ACME_MAX_AUTHZ) {
        at_op_fail(op, AT_ERR_PROTOCOL, "%s: the order lists %s authorizations (%s)", o->what,
                   json_is_array(list) ? "too many" : "no", o->url);
        return -1;
    }
    set = calloc(n ? n : 1, sizeof(*set));
    if (!set) {
        at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *u = json_string_value(json_array_get(list, i));
        char *abs;
        if (!u || !*u) {
            free(set);
            at_op_fail(op, AT_ERR_PROTOCOL, "%s: authorization %zu of the order is not a URL (%s)",
                       o->what, i, o->url);
            return -1;
        }
        abs = at_http_resolve(o->url, u);
        for (size_t k = 0; abs && k < o->naz; k++) {
            if (o->azs[k] && o->azs[k]->url && strcmp(o->azs[k]->url, abs) == 0) {
                set[i] = o->azs[k];        /* keep what we know (pre-authorized, polled) */
                o->azs[k] = NULL;
                break;
            }
        }
        if (!set[i] && abs) {
            set[i] = az_new(abs, NULL);
            if (set[i])
                set[i]->st = AZ_FETCH;
        }
        free(abs);
        if (!set[i]) {
            for (size_t k = 0; k < i; k++)
                if (set[k])
                    az_retire(op, set[k]);
            free(set);
            at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
            return -1;
        }
        /* A record kept from before settles again by reading it. */
        if (set[i]->st == AZ_SKIPPED)
            set[i]->st = AZ_FETCH;
    }
    for (size_t k = 0; k < o->naz; k++)
        if (o->azs[k])
            az_retire(op, o->azs[k]);
    free(o->azs);
    o->azs = set;
    o->naz = n;
    return 0;
}

static void set_status(at_acme_op *op, const char *status)
{
    at_order_st *o = op->order;
    if (o->status && strcmp(o->status, status) == 0)
        return;
    replace_str(&o->status, xstrdup(op, status));
    checkpoint(op);
}

/* An order object arrived: act on its status. */
static void apply_order(at_acme_op *op, const json_t *obj, const at_http_resp *resp, time_t now)
{
    at_order_st *o = op->order;
    const char *status = at_json_str(obj, "status");
    const char *fin = at_json_str(obj, "finalize"), *cert = at_json_str(obj, "certificate");

    if (!status) {
        at_op_fail(op, AT_ERR_PROTOCOL, "%s: the order %s has no status", o->what, o->url);
        return;
    }
    if (fin)
        replace_str(&o->finalize, at_http_resolve(o->url, fin));
    if (cert)
        replace_str(&o->certificate, at_http_resolve(o->url, cert));

    if (strcmp(status, "invalid") == 0) {
        set_status(op, status);
        fail_order_invalid(op, obj);
        return;
    }
    if (strcmp(status, "pending") == 0) {
        set_status(op, status);
        if (set_authorizations(op, json_object_get(obj, "authorizations")) != 0)
            return;
        if (!o->authz_deadline)
            o->authz_deadline = now + o->poll_timeout;
        set_phase(op, P_AUTHZ);
    } else if (strcmp(status, "ready") == 0 && !o->finalized) {
        set_status(op, status);
        if (!o->finalize) {
            at_op_fail(op, AT_ERR_PROTOCOL, "%s: the order %s has no finalize URL", o->what, o->url);
            return;
        }
        set_phase(op, P_FINALIZE);
    } else if (strcmp(status, "processing") == 0 || strcmp(status, "ready") == 0) {
        /* "ready" after our finalize: the CA has not started yet. */
        set_status(op, status);
        if (!o->poll_deadline)
            o->poll_deadline = now + o->poll_timeout;
        if (quick_poll(op, resp, now, o->poll_deadline, &o->nquick, &o->next_poll, &o->delay_ms) ||
            schedule(op, resp, now, o->poll_deadline, &o->interval, &o->next_poll,
                     "the CA is still issuing the certificate") == 0)
            set_phase(op, P_POLL);
    } else if (strcmp(status, "valid") == 0) {
        set_status(op, status);
        if (!o->certificate) {
            at_op_fail(op, AT_ERR_PROTOCOL, "%s: the order %s is valid but names no certificate URL",
                       o->what, o->url);
            return;
        }
        set_phase(op, P_DOWNLOAD);
    } else {
        at_op_fail(op, AT_ERR_PROTOCOL, "%s: the order %s has an unknown status \"%.40s\"", o->what,
                   o->url, status);
    }
}

static void on_order(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                     const at_error *terr, time_t now)
{
    at_order_st *o = op->order;
    at_error e = AT_ERROR_INIT;
    char what[600];
    json_t *obj;
    (void)r;

    o->busy = 0;
    snprintf(what, sizeof(what), "%s: reading the order %s", o->what, o->url);
    if (at_op_check(resp, terr, what, now, &e) != 0 || !(obj = at_op_json(resp, what, &e))) {
        at_op_fail_err(op, &e);
        return;
    }
    apply_order(op, obj, resp, now);
    json_decref(obj);
}

/* Forget the old order and place a new one with the same key. */
static void start_fresh(at_acme_op *op)
{
    at_order_st *o = op->order;
    const at_acme_dir *dir = at_acme_client_dir(op->client);
    replace_str(&o->url, NULL);
    replace_str(&o->status, NULL);
    replace_str(&o->finalize, NULL);
    replace_str(&o->certificate, NULL);
    o->finalized = 0;
    o->not_ready = 0;
    o->authz_deadline = o->poll_deadline = 0;
    o->interval = POLL_FIRST;
    o->nquick = 0;
    o->delay_ms = 0;
    for (size_t k = 0; k < o->naz; k++)
        az_retire(op, o->azs[k]);
    o->naz = 0;
    set_phase(op, o->preauth && dir && dir->new_authz ? P_PREAUTH : P_NEW);
    if (o->phase == P_PREAUTH) {
        free(o->azs);
        o->azs = calloc(o->nnames ? o->nnames : 1, sizeof(*o->azs));
        if (!o->azs) {
            at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
            return;
        }
        for (size_t i = 0; i < o->nnames; i++) {
            az *a = az_new(NULL, o->names[i]);
            if (!a) {
                at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
                return;
            }
            /* Wildcards cannot be pre-authorized (RFC 8555 §7.4.1). */
            a->st = is_wildcard(o->names[i]) ? AZ_SKIPPED : AZ_CREATE;
            o->azs[o->naz++] = a;
        }
    }
}

static void on_resume(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                      const at_error *terr, time_t now)
{
    at_order_st *o = op->order;
    at_error e = AT_ERROR_INIT;
    char what[600];
    json_t *obj = NULL;
    const char *st;
    (void)r;

    o->busy = 0;
    snprintf(what, sizeof(what), "%s: re-reading the saved order %s", o->what, o->url);
    if (at_op_check(resp, terr, what, now, &e) != 0) {
        /* The CA no longer knows it (or will not show it): start over. A
         * network failure or a rate limit says nothing about the order. */
        if (terr || e.code == AT_ERR_RATELIMIT || (resp && resp->status >= 500)) {
            at_op_fail_err(op, &e);
            return;
        }
        at_error_clear(&e);
        start_fresh(op);
        return;
    }
    obj = at_op_json(resp, what, &e);
    st = obj ? at_json_str(obj, "status") : NULL;
    at_error_clear(&e);
    if (!st || strcmp(st, "invalid") == 0) {
        json_decref(obj);
        start_fresh(op);
        return;
    }
    apply_order(op, obj, resp, now);
    json_decref(obj);
}

static char *new_order_payload(at_acme_op *op)
{
    at_order_st *o = op->order;
    const at_acme_dir *dir = at_acme_client_dir(op->client);
    json_t *ids = json_array(), *p;
    char *s;

    for (size_t i = 0; ids && i < o->nnames; i++)
        json_array_append_new(ids, identifier(o->names[i]));
    p = json_pack("{s:o*}", "identifiers", ids);
    if (p && o->profile && at_acme_dir_has_profile(dir, o->profile))
        json_object_set_new(p, "profile", json_string(o->profile));
    if (p && o->replaces && o->send_replaces && !o->replaces_dropped)
        json_object_set_new(p, "replaces", json_string(o->replaces));
    s = p ? at_json_compact(p) : NULL;
    json_decref(p);
    return s;
}

static void on_new_order(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                         const at_error *terr, time_t now)
{
    at_order_st *o = op->order;
    at_error e = AT_ERROR_INIT;
    char what[600];
    json_t *obj;
    (void)r;

    o->busy = 0;
    snprintf(what, sizeof(what), "new %s", o->what);
    if (at_op_check(resp, terr, what, now, &e) != 0) {
        /* A CA may refuse "replaces" (already replaced, unknown certificate,
         * not supported): the order matters more, try once without it. */
        if (!terr && o->send_replaces && !o->replaces_dropped && resp && resp->status >= 400 &&
            resp->status < 500 && e.code != AT_ERR_RATELIMIT) {
            o->replaces_dropped = 1;
            at_error_clear(&e);
            set_phase(op, P_NEW);
            return;
        }
        at_op_fail_err(op, &e);
        return;
    }
    if (!resp->location) {
        at_op_fail(op, AT_ERR_PROTOCOL, "%s: the CA created the order without telling its URL (no Location header)",
                   what);
        return;
    }
    if (!(obj = at_op_json(resp, what, &e))) {
        at_op_fail_err(op, &e);
        return;
    }
    replace_str(&o->url, xstrdup(op, resp->location));
    replace_str(&o->status, NULL);    /* a new URL: checkpoint in any case */
    if (o->url)
        apply_order(op, obj, resp, now);
    json_decref(obj);
}

static void on_finalize(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                        const at_error *terr, time_t now)
{
    at_order_st *o = op->order;
    at_error e = AT_ERROR_INIT;
    char what[600];
    json_t *obj;
    const char *pt;
    (void)r;

    o->busy = 0;
    snprintf(what, sizeof(what), "%s: finalizing", o->what);
    if (at_op_check(resp, terr, what, now, &e) != 0) {
        pt = at_acme_problem_type(&e);
        if (pt && strcmp(pt, "orderNotReady") == 0 && o->not_ready < NOT_READY_MAX) {
            /* Re-read the order and act on what it says. */
            o->not_ready++;
            at_error_clear(&e);
            o->next_poll = now + POLL_FIRST;
            at_op_wake_at(op, o->next_poll);
            set_phase(op, P_POLL);
            return;
        }
        at_op_fail_err(op, &e);
        return;
    }
    o->finalized = 1;
    if (!(obj = at_op_json(resp, what, &e))) {
        at_op_fail_err(op, &e);
        return;
    }
    apply_order(op, obj, resp, now);
    json_decref(obj);
}

/* ------------------------------------------------------------- download */

static int chain_matches(const char *pem, const char *preferred)
{
    char cn[256];
    at_error e = AT_ERROR_INIT;
    int ok = at_chain_top_issuer_cn(pem, strlen(pem), cn, sizeof(cn), &e) == 0 &&
             strcasecmp(cn, preferred) == 0;
    at_error_clear(&e);
    return ok;
}

/* A downloaded chain is usable: it parses, its leaf belongs to our key and
 * covers every name we asked for. */
static int check_chain(at_acme_op *op, const at_http_resp *resp, const char *what, at_error *err)
{
    at_order_st *o = op->order;
    STACK_OF(X509) *certs = NULL;
    at_cert_info info;

    if (!resp->body || !resp->body_len)
        return at_error_set(err, AT_ERR_PROTOCOL, "%s: the CA sent an empty certificate", what);
    /* Checked as body_len bytes, kept and used as a C string: a NUL would
     * make the chain checked differ from the chain served. PEM is text. */
    if (memchr(resp->body, '\0', resp->body_len))
        return at_error_set(err, AT_ERR_PROTOCOL, "%s: the CA sent a certificate chain holding a NUL byte", what);
    /* Parsed once: with OpenSSL 3.0 each certificate decoded costs a
     * public-key decode through the provider decoders. */
    if (at_chain_parse(resp->body, resp->body_len, &certs, err) != 0)
        return at_error_prefix(err, "%s: the CA sent no usable PEM certificate chain", what);
    if (at_key_matches_cert(o->key, sk_X509_value(certs, 0)) != 1) {
        sk_X509_pop_free(certs, X509_free);
        return at_error_set(err, AT_ERR_PROTOCOL,
                            "%s: the certificate the CA sent is not for this order's key", what);
    }
    memset(&info, 0, sizeof(info));
    if (at_cert_info_x509(sk_X509_value(certs, 0), &info, err) != 0) {
        sk_X509_pop_free(certs, X509_free);
        return at_error_prefix(err, "%s", what);
    }
    sk_X509_pop_free(certs, X509_free);
    for (size_t i = 0; i < o->nnames; i++) {
        int found = 0;
        for (size_t k = 0; k < info.nnames && !found; k++)
            found = strcasecmp(info.names[k], o->names[i]) == 0;
        if (!found) {
            at_error_set(err, AT_ERR_PROTOCOL, "%s: the certificate the CA sent does not cover %s",
                         what, o->names[i]);
            at_cert_info_free(&info);
            return -1;
        }
    }
    at_cert_info_free(&info);
    return 0;
}

static char *body_dup(const at_http_resp *resp)
{
    char *s = malloc(resp->body_len + 1);
    if (!s)
        return NULL;
    memcpy(s, resp->body, resp->body_len);
    s[resp->body_len] = '\0';
    return s;
}

static void finish_with(at_acme_op *op, const char *pem)
{
    at_order_st *o = op->order;
    replace_str(&o->chain, xstrdup(op, pem));
    if (o->chain) {
        compute_used(o);
        set_phase(op, P_DONE);
    }
}

static void on_cert(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                    const at_error *terr, time_t now)
{
    at_order_st *o = op->order;
    at_error e = AT_ERROR_INIT;
    char what[600];
    (void)r;

    o->busy = 0;
    snprintf(what, sizeof(what), "%s: downloading the certificate %s", o->what, o->certificate);
    if (at_op_check(resp, terr, what, now, &e) != 0 || check_chain(op, resp, what, &e) != 0) {
        at_op_fail_err(op, &e);
        return;
    }
    replace_str(&o->default_chain, body_dup(resp));
    if (!o->default_chain) {
        at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
        return;
    }
    if (o->preferred && !chain_matches(o->default_chain, o->preferred)) {
        for (size_t i = 0; i < resp->nlinks && o->nalt < AT_ACME_MAX_ALT_CHAINS; i++) {
            char **n;
            if (!resp->links[i].rel || strcmp(resp->links[i].rel, "alternate") != 0)
                continue;
            n = realloc(o->alts, (o->nalt + 1) * sizeof(*n));
            if (!n || !(n[o->nalt] = strdup(resp->links[i].url))) {
                if (n)
                    o->alts = n;
                at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
                return;
            }
            o->alts = n;
            o->nalt++;
        }
        if (o->nalt) {
            set_phase(op, P_ALT);
            return;
        }
    }
    finish_with(op, o->default_chain);
}

static void on_alt(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                   const at_error *terr, time_t now)
{
    at_order_st *o = op->order;
    at_error e = AT_ERROR_INIT;
    char what[600];

    o->busy = 0;
    o->alt_next = r->idx + 1;
    snprintf(what, sizeof(what), "%s: downloading the alternate chain %s", o->what, r->req.url);
    /* A bad alternate is skipped: the default chain is still good. */
    if (at_op_check(resp, terr, what, now, &e) == 0 && check_chain(op, resp, what, &e) == 0) {
        char *pem = body_dup(resp);
        if (pem && chain_matches(pem, o->preferred)) {
            finish_with(op, pem);
            free(pem);
            return;
        }
        free(pem);
    }
    at_error_clear(&e);
    if (o->alt_next >= o->nalt)
        finish_with(op, o->default_chain);  /* none matched: the CA's default */
    else
        op->progress++;
}

/* ------------------------------------------------------------- advance */

static char *csr_payload(at_acme_op *op, at_error *err)
{
    at_order_st *o = op->order;
    at_buf der = AT_BUF_INIT;
    json_t *p;
    char *b64, *s;

    if (at_csr_der(o->key, (const char *const *)o->names, o->nnames, &der, err) != 0) {
        at_buf_free(&der);
        return NULL;
    }
    b64 = at_b64url_encode_str(der.data, der.len);
    at_buf_free(&der);
    p = b64 ? json_pack("{s:s}", "csr", b64) : NULL;
    free(b64);
    s = p ? at_json_compact(p) : NULL;
    json_decref(p);
    if (!s)
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    return s;
}

static void order_advance(at_acme_op *op, time_t now)
{
    at_order_st *o = op->order;
    const at_acme_dir *dir = at_acme_client_dir(op->client);

    if (o->busy)
        return;
    if (!dir && o->phase != P_DONE) {
        at_op_fail(op, AT_ERR_INTERNAL, "%s: the CA's directory has not been read", o->what);
        return;
    }
    switch (o->phase) {
    case P_START:
        if (o->url) {
            set_phase(op, P_RESUME);
        } else {
            start_fresh(op);
        }
        break;
    case P_RESUME:
        o->busy = 1;
        at_op_request(op, AT_AREQ_POST_KID, o->url, NULL, NULL, on_resume, 0);
        break;
    case P_PREAUTH:
        if (!o->authz_deadline)
            o->authz_deadline = now + o->poll_timeout;
        if (authz_advance(op, now) && at_op_running(op))
            set_phase(op, P_NEW);
        break;
    case P_NEW: {
        char *p = new_order_payload(op);
        if (!p) {
            at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
            break;
        }
        o->busy = 1;
        at_op_request(op, AT_AREQ_POST_KID, dir->new_order, p, NULL, on_new_order, 0);
        break;
    }
    case P_AUTHZ:
        if (authz_advance(op, now) && at_op_running(op))
            set_phase(op, P_FINALIZE);
        break;
    case P_FINALIZE: {
        at_error e = AT_ERROR_INIT;
        char *p;
        if (!o->finalize) {
            /* Known after the next read of the order. */
            o->next_poll = now;
            set_phase(op, P_POLL);
            break;
        }
        p = csr_payload(op, &e);
        if (!p) {
            at_error_prefix(&e, "%s: building the certificate request", o->what);
            at_op_fail_err(op, &e);
            break;
        }
        o->busy = 1;
        at_op_request(op, AT_AREQ_POST_KID, o->finalize, p, NULL, on_finalize, 0);
        break;
    }
    case P_POLL: {
        at_op_req *r;
        if (now < o->next_poll) {
            at_op_wake_at(op, o->next_poll);
            break;
        }
        o->busy = 1;
        r = at_op_request(op, AT_AREQ_POST_KID, o->url, NULL, NULL, on_order, 0);
        if (r)
            r->delay_ms = o->delay_ms;
        o->delay_ms = 0;
        break;
    }
    case P_DOWNLOAD:
        o->busy = 1;
        at_op_request(op, AT_AREQ_POST_KID, o->certificate, NULL, PEM_CHAIN, on_cert, 0);
        break;
    case P_ALT:
        o->busy = 1;
        at_op_request(op, AT_AREQ_POST_KID, o->alts[o->alt_next], NULL, PEM_CHAIN, on_alt, o->alt_next);
        break;
    case P_DONE:
        at_op_succeed(op);
        break;
    }
}

static void order_teardown(at_acme_op *op)
{
    at_order_st *o = op->order;
    for (size_t i = 0; i < o->naz; i++) {
        if (o->azs[i]->published) {
            o->azs[i]->published = 0;
            at_op_push_step(op, AT_STEP_WITHDRAW, &o->azs[i]->chal);
        }
    }
}

static void order_free(at_acme_op *op)
{
    at_order_st *o = op->order;
    if (!o)
        return;
    for (size_t i = 0; i < o->nnames; i++)
        free(o->names[i]);
    free(o->names);
    free(o->profile);
    free(o->replaces);
    free(o->preferred);
    EVP_PKEY_free(o->key);
    free(o->url);
    free(o->status);
    free(o->finalize);
    free(o->certificate);
    for (size_t i = 0; i < o->naz; i++)
        az_free(o->azs[i]);
    free(o->azs);
    while (o->retired) {
        az *a = o->retired;
        o->retired = a->next_retired;
        az_free(a);
    }
    free(o->default_chain);
    for (size_t i = 0; i < o->nalt; i++)
        free(o->alts[i]);
    free(o->alts);
    free(o->chain);
    free(o->used);
    free(o);
    op->order = NULL;
}

static const at_op_vt order_vt = {
    order_advance,
    order_published,
    order_teardown,
    order_free
};

/* ------------------------------------------------------------- creation */

/* RFC 8738 §3: IPv6 in the RFC 5952 text form; DNS names as given. */
static char *canonical_name(const char *name)
{
    unsigned char bin[16];
    char txt[INET6_ADDRSTRLEN];
    if (strchr(name, ':') && inet_pton(AF_INET6, name, bin) == 1 &&
        inet_ntop(AF_INET6, bin, txt, sizeof(txt)))
        return strdup(txt);
    return strdup(name);
}

static int allowed(const at_order_st *o, at_challenge_type t)
{
    for (size_t i = 0; i < o->nchal; i++)
        if (o->chal[i] == t)
            return 1;
    return 0;
}

/* Everything that can be said before talking to the CA. */
static int check_params(at_acme_op *op, const at_order_params *p, at_error *err)
{
    at_order_st *o = op->order;
    const at_acme_dir *dir = at_acme_client_dir(op->client);
    char list[128];

    if (!p->names || p->nnames == 0)
        return at_error_set(err, AT_ERR_CONFIG, "an order needs at least one name");
    if (p->nnames > AT_ACME_MAX_AUTHZ)
        return at_error_set(err, AT_ERR_CONFIG, "an order may hold at most %d names (%zu given)",
                            AT_ACME_MAX_AUTHZ, p->nnames);
    list_types(list, sizeof(list), o->chal, o->nchal);
    for (size_t i = 0; i < p->nnames; i++) {
        const char *n = p->names[i];
        if (!n || !*n || strlen(n) > 255)
            return at_error_set(err, AT_ERR_CONFIG, "name %zu of the order is empty or too long", i + 1);
        if (is_wildcard(n) && !allowed(o, AT_CHAL_DNS01))
            return at_error_set(err, AT_ERR_CONFIG,
                                "%s is a wildcard, which only the dns-01 challenge can validate, but the "
                                "allowed challenges are %s; add dns-01 (with a DNS hook command) or list "
                                "the names one by one", n, list);
        if (at_name_is_ip(n) && !allowed(o, AT_CHAL_HTTP01) && !allowed(o, AT_CHAL_TLSALPN01))
            return at_error_set(err, AT_ERR_CONFIG,
                                "%s is an IP address, which needs http-01 or tls-alpn-01 (dns-01 cannot "
                                "validate IP addresses), but the allowed challenges are %s", n, list);
    }
    if (p->profile && *p->profile && dir && dir->nprofiles && !at_acme_dir_has_profile(dir, p->profile)) {
        at_buf b = AT_BUF_INIT;
        for (size_t i = 0; i < dir->nprofiles; i++) {
            at_buf_puts(&b, i ? ", " : "");
            at_acme_append_clean(&b, dir->profiles[i].name, strlen(dir->profiles[i].name), 64);
        }
        at_error_set(err, AT_ERR_CONFIG, "the CA %s has no profile \"%s\"; it offers: %s%s%s%s",
                     at_acme_client_url(op->client), p->profile, at_buf_str(&b),
                     p->profile_hint ? " (set " : "", p->profile_hint ? p->profile_hint : "",
                     p->profile_hint ? " to one of them, or remove it)" : "");
        at_buf_free(&b);
        return -1;
    }
    return 0;
}

static at_acme_op *order_create(at_acme_client *c, const at_order_params *p, EVP_PKEY *key, at_error *err)
{
    at_acme_op *op;
    at_order_st *o;

    if (!c || !p) {
        at_error_set(err, AT_ERR_INTERNAL, "no client or parameters for the order");
        return NULL;
    }
    op = at_op_new(c, AT_OP_ORDER, &order_vt);
    if (!op || !(op->order = o = calloc(1, sizeof(*o)))) {
        free(op);
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (p->nchallenges) {
        for (size_t i = 0; i < p->nchallenges && o->nchal < sizeof(o->chal) / sizeof(o->chal[0]); i++)
            if (at_challenge_name(p->challenges[i]))
                o->chal[o->nchal++] = p->challenges[i];
    } else {
        o->chal[o->nchal++] = AT_CHAL_TLSALPN01;
        o->chal[o->nchal++] = AT_CHAL_HTTP01;
    }
    o->interval = POLL_FIRST;
    o->poll_timeout = p->poll_timeout > 0 ? p->poll_timeout : DEFAULT_TIMEOUT;
    o->quick_first = p->quick_poll_ms > 0 ? p->quick_poll_ms : 0;
    o->preauth = p->use_preauthorization;
    o->keyspec = p->key;
    if (check_params(op, p, err) != 0)
        goto fail;
    o->names = calloc(p->nnames, sizeof(*o->names));
    if (!o->names)
        goto oom;
    for (size_t i = 0; i < p->nnames; i++) {
        if (!(o->names[i] = canonical_name(p->names[i])))
            goto oom;
        o->nnames++;
    }
    if ((p->profile && *p->profile && !(o->profile = strdup(p->profile))) ||
        (p->replaces && *p->replaces && !(o->replaces = strdup(p->replaces))) ||
        (p->preferred_chain && *p->preferred_chain && !(o->preferred = strdup(p->preferred_chain))))
        goto oom;
    o->send_replaces = o->replaces != NULL;
    describe_names(o);
    if (key) {
        EVP_PKEY_up_ref(key);
        o->key = key;
        if (at_key_spec_of(key, &o->keyspec) != 0) {
            at_error_set(err, AT_ERR_CONFIG, "%s: the saved certificate key is of an unsupported type", o->what);
            goto fail;
        }
    } else if (!(o->key = at_key_generate(&o->keyspec, err))) {
        at_error_prefix(err, "%s: generating the %s certificate key", o->what, at_key_spec_name(&o->keyspec));
        goto fail;
    }
    return op;
oom:
    at_error_set(err, AT_ERR_INTERNAL, "out of memory");
fail:
    at_acme_op_free(op);
    return NULL;
}

at_acme_op *at_acme_order_new(at_acme_client *c, const at_order_params *p, at_error *err)
{
    return order_create(c, p, NULL, err);
}

at_acme_op *at_acme_order_resume(at_acme_client *c, const at_order_params *p,
                                 const json_t *checkpoint, EVP_PKEY *cert_key, at_error *err)
{
    at_acme_op *op;
    const char *url = json_is_object(checkpoint) ? at_json_str(checkpoint, "order_url") : NULL;

    if (!cert_key) {
        at_error_set(err, AT_ERR_INTERNAL, "resuming an order needs its saved key");
        return NULL;
    }
    op = order_create(c, p, cert_key, err);
    if (!op)
        return NULL;
    if (url && *url && !(op->order->url = strdup(url))) {
        at_acme_op_free(op);
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    return op;
}
