/*
 * at_acme_client.c: the per-CA context (directory, account key and URL, nonce
 * pool) and the exchange, one logical ACME request: it fetches a nonce when
 * the pool is empty, signs, re-signs and resends on badNonce, and retries
 * idempotent requests on transport errors and 5xx, always a bounded number
 * of times.
 */
#include "at_acme_int.h"

#include <stdlib.h>
#include <string.h>

#include "at_b64.h"
#include "at_jose.h"
#include "at_time.h"

#define AT_EXCH_DEFAULT_NONCE_RETRIES 5
#define AT_EXCH_MAX_TRANSIENT         3   /* retries of idempotent requests */
#define AT_EXCH_MAX_NONCE_FETCHES     3   /* newNonce answers without a nonce */
#define AT_EXCH_MAX_RETRY_AFTER       30  /* seconds; longer waits are the op's business */

struct at_acme_client {
    char       *url;
    at_acme_dir dir;
    int         have_dir;
    EVP_PKEY   *key;
    char       *kid;
    char       *nonces[AT_ACME_NONCE_POOL];
    size_t      nnonces;
    int         nonce_retries;
};

at_acme_client *at_acme_client_new(const char *directory_url, at_error *err)
{
    at_acme_client *c;
    if (!directory_url || !*directory_url) {
        at_error_set(err, AT_ERR_CONFIG, "no ACME directory URL given");
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c || !(c->url = strdup(directory_url))) {
        free(c);
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    c->nonce_retries = AT_EXCH_DEFAULT_NONCE_RETRIES;
    return c;
}

void at_acme_client_free(at_acme_client *c)
{
    if (!c)
        return;
    free(c->url);
    at_acme_dir_free(&c->dir);
    EVP_PKEY_free(c->key);
    free(c->kid);
    for (size_t i = 0; i < c->nnonces; i++)
        free(c->nonces[i]);
    free(c);
}

const char *at_acme_client_url(const at_acme_client *c)
{
    return c ? c->url : NULL;
}

int at_acme_client_set_directory(at_acme_client *c, const at_http_resp *resp, at_error *err)
{
    at_acme_dir d;
    if (at_acme_dir_parse(&d, c->url, resp, err) != 0)
        return -1;
    at_acme_dir_free(&c->dir);
    c->dir = d;
    c->have_dir = 1;
    return 0;
}

const at_acme_dir *at_acme_client_dir(const at_acme_client *c)
{
    return c && c->have_dir ? &c->dir : NULL;
}

void at_acme_client_set_account(at_acme_client *c, EVP_PKEY *key, const char *kid)
{
    char *k = kid ? strdup(kid) : NULL;
    if (key)
        EVP_PKEY_up_ref(key);
    EVP_PKEY_free(c->key);
    c->key = key;
    free(c->kid);
    c->kid = k;
}

EVP_PKEY *at_acme_client_key(const at_acme_client *c)
{
    return c ? c->key : NULL;
}

const char *at_acme_client_kid(const at_acme_client *c)
{
    return c ? c->kid : NULL;
}

void at_acme_client_nonce_push(at_acme_client *c, const char *nonce)
{
    char *n;
    /* A nonce is base64url (RFC 8555 §6.5.1); anything else would only earn
     * a badNonce, and it must stay small. */
    if (!c || !nonce || strlen(nonce) > 256 || !at_b64url_valid(nonce, strlen(nonce)))
        return;
    if (!(n = strdup(nonce)))
        return;
    if (c->nnonces == AT_ACME_NONCE_POOL) {
        free(c->nonces[0]);
        memmove(c->nonces, c->nonces + 1, (AT_ACME_NONCE_POOL - 1) * sizeof(char *));
        c->nnonces--;
    }
    c->nonces[c->nnonces++] = n;
}

/* The newest nonce (the least likely to have expired), or NULL. */
static char *nonce_pop(at_acme_client *c)
{
    if (!c->nnonces)
        return NULL;
    return c->nonces[--c->nnonces];
}

size_t at_acme_client_nonce_count(const at_acme_client *c)
{
    return c ? c->nnonces : 0;
}

void at_acme_client_set_nonce_retries(at_acme_client *c, int n)
{
    if (c)
        c->nonce_retries = n < 0 ? 0 : n;
}

/* ------------------------------------------------------------------ exchange */

typedef enum xstate {
    X_READY = 0,     /* next() produces the nonce fetch or the request */
    X_NONCE_SENT,
    X_REQ_SENT,
    X_WAIT,          /* backoff before the next attempt */
    X_DONE,
    X_FAILED
} xstate;

struct at_acme_exch {
    at_acme_client *c;
    at_acme_req     req;
    xstate          st;
    int             bad_nonces;
    int             transient;
    int             nonce_fetches;
    time_t          until;
    at_http_resp    resp;
    at_error        err;
};

static void req_clear(at_acme_req *r)
{
    free(r->url);
    free(r->payload);
    free(r->accept);
    memset(r, 0, sizeof(*r));
}

at_acme_exch *at_acme_exch_new(at_acme_client *c, const at_acme_req *req)
{
    at_acme_exch *x;
    if (!c || !req || !req->url)
        return NULL;
    x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    x->c = c;
    x->req.kind = req->kind;
    x->req.url = strdup(req->url);
    x->req.payload = req->payload ? strdup(req->payload) : NULL;
    x->req.accept = req->accept ? strdup(req->accept) : NULL;
    at_http_resp_init(&x->resp);
    at_error_init(&x->err);
    if (!x->req.url || (req->payload && !x->req.payload) || (req->accept && !x->req.accept)) {
        at_acme_exch_free(x);
        return NULL;
    }
    return x;
}

void at_acme_exch_free(at_acme_exch *x)
{
    if (!x)
        return;
    req_clear(&x->req);
    at_http_resp_free(&x->resp);
    at_error_clear(&x->err);
    free(x);
}

static int is_post(const at_acme_exch *x)
{
    return x->req.kind == AT_AREQ_POST_KID || x->req.kind == AT_AREQ_POST_JWK;
}

/* Safe to send twice: the CA's state cannot change because of it. */
static int idempotent(const at_acme_exch *x)
{
    return !is_post(x) || !x->req.payload || !*x->req.payload;
}

static at_exch_state fail(at_acme_exch *x, at_error *err)
{
    x->st = X_FAILED;
    at_error_copy(err, &x->err);
    return AT_EXCH_FAILED;
}

static int build_plain(at_acme_exch *x, at_http_method m, const char *url, at_http_req *out)
{
    memset(out, 0, sizeof(*out));
    out->method = m;
    out->url = strdup(url);
    if (x->req.accept && m != AT_HTTP_HEAD)
        out->accept = strdup(x->req.accept);
    if (!out->url || (x->req.accept && m != AT_HTTP_HEAD && !out->accept)) {
        at_http_req_free(out);
        return at_error_set(&x->err, AT_ERR_INTERNAL, "out of memory");
    }
    return 0;
}

static int build_signed(at_acme_exch *x, at_http_req *out)
{
    at_acme_client *c = x->c;
    at_buf body = AT_BUF_INIT;
    char *nonce = nonce_pop(c);
    const char *kid = x->req.kind == AT_AREQ_POST_KID ? c->kid : NULL;
    int rv;

    rv = at_jws_sign(c->key, kid, nonce, x->req.url, x->req.payload, &body, &x->err);
    free(nonce);
    if (rv != 0) {
        at_buf_free(&body);
        return at_error_prefix(&x->err, "signing the request to %s", x->req.url);
    }
    memset(out, 0, sizeof(*out));
    out->method = AT_HTTP_POST;
    out->body_len = body.len;
    out->body = at_buf_detach(&body);
    out->url = strdup(x->req.url);
    out->content_type = strdup("application/jose+json");
    if (x->req.accept)
        out->accept = strdup(x->req.accept);
    if (!out->body || !out->url || !out->content_type || (x->req.accept && !out->accept)) {
        at_http_req_free(out);
        return at_error_set(&x->err, AT_ERR_INTERNAL, "out of memory");
    }
    return 0;
}

at_exch_state at_acme_exch_next(at_acme_exch *x, time_t now, at_http_req *out,
                                time_t *until, at_error *err)
{
    const at_acme_dir *dir;

    if (until)
        *until = 0;
    memset(out, 0, sizeof(*out));
    switch (x->st) {
    case X_DONE:
        return AT_EXCH_DONE;
    case X_FAILED:
        at_error_copy(err, &x->err);
        return AT_EXCH_FAILED;
    case X_NONCE_SENT:
    case X_REQ_SENT:
        return AT_EXCH_WAIT;        /* a reply is due; nothing to do before it */
    case X_WAIT:
        if (now < x->until) {
            if (until)
                *until = x->until;
            return AT_EXCH_WAIT;
        }
        x->st = X_READY;
        break;
    case X_READY:
        break;
    }

    if (!is_post(x)) {
        if (build_plain(x, x->req.kind == AT_AREQ_HEAD ? AT_HTTP_HEAD : AT_HTTP_GET, x->req.url, out) != 0)
            return fail(x, err);
        x->st = X_REQ_SENT;
        return AT_EXCH_SEND;
    }
    dir = at_acme_client_dir(x->c);
    if (!dir) {
        at_error_set(&x->err, AT_ERR_INTERNAL, "request to %s before the CA's directory was read", x->req.url);
        return fail(x, err);
    }
    if (!x->c->key) {
        at_error_set(&x->err, AT_ERR_INTERNAL, "request to %s without an account key", x->req.url);
        return fail(x, err);
    }
    if (x->req.kind == AT_AREQ_POST_KID && !x->c->kid) {
        at_error_set(&x->err, AT_ERR_INTERNAL,
                     "request to %s needs a registered account, and there is none yet", x->req.url);
        return fail(x, err);
    }
    if (!x->c->nnonces) {
        if (x->nonce_fetches >= AT_EXCH_MAX_NONCE_FETCHES) {
            at_error_set(&x->err, AT_ERR_PROTOCOL,
                         "the CA's newNonce resource %s gave no usable Replay-Nonce after %d tries",
                         dir->new_nonce, x->nonce_fetches);
            return fail(x, err);
        }
        x->nonce_fetches++;
        if (build_plain(x, AT_HTTP_HEAD, dir->new_nonce, out) != 0)
            return fail(x, err);
        free(out->accept);
        out->accept = NULL;
        x->st = X_NONCE_SENT;
        return AT_EXCH_SEND;
    }
    if (build_signed(x, out) != 0)
        return fail(x, err);
    x->st = X_REQ_SENT;
    return AT_EXCH_SEND;
}

static long backoff(int attempt)
{
    return attempt <= 1 ? 1 : (attempt == 2 ? 2 : 4);
}

/* A transient failure: wait and try again, or give up with why. */
static void transient(at_acme_exch *x, const char *what, const at_error *terr,
                      at_http_resp *resp, time_t now)
{
    long ra = resp ? at_http_retry_after(resp, now) : -1;
    if (x->transient < AT_EXCH_MAX_TRANSIENT && (x->st == X_NONCE_SENT || idempotent(x)) &&
        ra <= AT_EXCH_MAX_RETRY_AFTER) {
        x->transient++;
        x->until = ra > 0 ? at_time_after(now, ra) : now + backoff(x->transient);
        x->st = X_WAIT;
        at_http_resp_free(resp);
        return;
    }
    if (terr) {
        at_error_copy(&x->err, terr);
        if (x->st == X_NONCE_SENT)
            at_error_prefix(&x->err, "%s", what);
        x->st = X_FAILED;
        return;
    }
    /* The CA's own answer is final: hand it on so the op can explain it. */
    at_http_resp_free(&x->resp);
    x->resp = *resp;
    at_http_resp_init(resp);
    x->st = X_DONE;
}

static int is_bad_nonce(const at_http_resp *resp)
{
    at_error e = AT_ERROR_INIT;
    int bad;
    if (resp->status != 400)
        return 0;
    at_acme_problem(resp, "", 0, &e);
    bad = at_acme_problem_type(&e) && strcmp(at_acme_problem_type(&e), "badNonce") == 0;
    at_error_clear(&e);
    return bad;
}

void at_acme_exch_feed(at_acme_exch *x, at_http_resp *resp, const at_error *transport_err, time_t now)
{
    at_http_resp none;
    char what[600];

    at_http_resp_init(&none);
    if (!resp)
        resp = &none;
    if (x->st != X_NONCE_SENT && x->st != X_REQ_SENT) {
        at_http_resp_free(resp);    /* not expected: drop it */
        return;
    }
    if (resp->replay_nonce)
        at_acme_client_nonce_push(x->c, resp->replay_nonce);
    snprintf(what, sizeof(what), "getting a nonce from %s",
             x->c->have_dir && x->c->dir.new_nonce ? x->c->dir.new_nonce : "the CA");

    if (transport_err || resp->status == 0) {
        at_error t = AT_ERROR_INIT;
        if (!transport_err)
            at_error_set(&t, AT_ERR_NETWORK, "no HTTP response from %s", x->req.url);
        transient(x, what, transport_err ? transport_err : &t, NULL, now);
        at_error_clear(&t);
        at_http_resp_free(resp);
        return;
    }
    if (x->st == X_NONCE_SENT) {
        if (resp->status >= 200 && resp->status < 300) {
            /* The nonce (if any) is in the pool; next() checks how many tries remain. */
            x->st = X_READY;
        } else if (resp->status >= 500) {
            transient(x, what, NULL, resp, now);
            if (x->st == X_DONE) {
                at_acme_problem(&x->resp, what, now, &x->err);
                x->st = X_FAILED;
            }
        } else {
            /* 1xx/3xx are not problems to at_acme_problem: say what went wrong. */
            if (at_acme_problem(resp, what, now, &x->err) == 0)
                at_error_set(&x->err, AT_ERR_PROTOCOL, "%s: the CA answered HTTP %ld instead of a nonce",
                             what, resp->status);
            x->st = X_FAILED;
        }
        at_http_resp_free(resp);
        return;
    }
    if (is_bad_nonce(resp) && x->bad_nonces < x->c->nonce_retries) {
        x->bad_nonces++;
        x->st = X_READY;            /* re-sign with the error's nonce (now in the pool) */
        x->nonce_fetches = 0;
        at_http_resp_free(resp);
        return;
    }
    if (resp->status >= 500 && resp->status <= 599) {
        transient(x, what, NULL, resp, now);
        return;
    }
    at_http_resp_free(&x->resp);
    x->resp = *resp;
    at_http_resp_init(resp);
    x->st = X_DONE;
}

const at_http_resp *at_acme_exch_response(const at_acme_exch *x)
{
    return x && x->st == X_DONE ? &x->resp : NULL;
}
