/*
 * at_fuzz_ops.c: the ACME scenarios shared by the op fuzz targets and the
 * seed generator (see at_fuzz_ops.h). Each builds a client from the
 * directory response, starts one operation as the engine would, drives it
 * with at_fuzz_run_op and checks what the operation promises.
 */
#include "at_fuzz_ops.h"

#include <stdlib.h>
#include <string.h>

#include "at_jose.h"
#include "at_json.h"
#include "at_key.h"
#include "at_x509.h"

#define PEM_CHAIN "application/pem-certificate-chain"

/* A client with the directory installed, or NULL if the directory was
 * refused (then the message is checked). kid may be NULL. */
static at_acme_client *client(const at_http_resp *dir, const char *kid)
{
    at_error err = AT_ERROR_INIT;
    at_acme_client *c = at_acme_client_new(AT_FUZZ_DIR_URL, &err);
    const at_acme_dir *d;

    if (!c)
        at_fuzz_fail("client: %s", err.msg);
    if (at_acme_client_set_directory(c, dir, &err) != 0) {
        if (err.code == AT_OK)
            at_fuzz_fail("directory refused without an error");
        at_fuzz_check_msg(&err, "directory");
        at_error_clear(&err);
        at_acme_client_free(c);
        return NULL;
    }
    d = at_acme_client_dir(c);
    if (!d || !d->new_nonce || !d->new_account || !d->new_order)
        at_fuzz_fail("directory accepted without newNonce, newAccount or newOrder");
    for (size_t i = 0; i < d->nprofiles; i++)
        if (!d->profiles[i].name || !d->profiles[i].description ||
            at_acme_dir_has_profile(d, d->profiles[i].name) != 1)
            at_fuzz_fail("profile %zu of the directory is not found by name", i);
    at_acme_client_set_account(c, at_fuzz_key(at_fuzz_account_key_pem), kid);
    return c;
}

/* The op refused to start: only for reasons it may give up front. */
static void check_refusal(const at_error *err, const char *what)
{
    if (err->code == AT_OK || !err->msg[0])
        at_fuzz_fail("%s refused without an error", what);
    at_fuzz_check_msg(err, what);
}

/* A finished op keeps reporting its end and ignores late replies. */
static void check_settled(at_acme_op *op, int kind, time_t now)
{
    at_step st;
    at_acme_op_response(op, 1, NULL, NULL, now);
    at_acme_op_published(op, 1, NULL);
    at_acme_op_cancel(op);
    at_acme_op_step(op, now, &st);
    if ((int)st.kind != kind)
        at_fuzz_fail("an ended op changed its final step from %d to %d", kind, (int)st.kind);
}

/* ------------------------------------------------------------ orders */

static const char *const names0[] = { "replay.example.com", "www.replay.example.com", "192.0.2.7" };
static const char *const names1[] = { "example.com" };
static const char *const names2[] = { "*.example.com", "example.com" };
static const char *const names3[] = { "2001:db8::1", "a.example.com", "b.example.com" };
static const struct { const char *const *v; size_t n; const char *resume_url; } name_sets[4] = {
    { names0, 3, "https://127.0.0.1:34013/my-order/-YEN3f03qVDoftTQgSPeeJn1o3TW-2FogSeJDDS-Zkg" },
    { names1, 1, "https://ca.test/order/0" },
    { names2, 2, "https://ca.test/order/0" },
    { names3, 3, "https://ca.test/order/1" },
};
static const at_challenge_type ch0[] = { AT_CHAL_HTTP01 };
static const at_challenge_type ch1[] = { AT_CHAL_TLSALPN01, AT_CHAL_HTTP01 };
static const at_challenge_type ch2[] = { AT_CHAL_DNS01, AT_CHAL_HTTP01 };
static const at_challenge_type ch3[] = { AT_CHAL_DNS01, AT_CHAL_TLSALPN01, AT_CHAL_HTTP01 };
static const struct { const at_challenge_type *v; size_t n; } chal_sets[4] = {
    { ch0, 1 }, { ch1, 2 }, { ch2, 2 }, { ch3, 3 },
};

typedef struct crash {
    unsigned at;        /* stop at this checkpoint (1-based), 0 = never */
    unsigned seen;
    json_t  *cp;
} crash;

static int crash_at_checkpoint(void *ud, at_acme_op *op, const at_step *st)
{
    crash *k = ud;
    at_error err = AT_ERROR_INIT;
    json_t *cp;
    char *text;

    if (st->kind != AT_STEP_CHECKPOINT || !k->at || ++k->seen != k->at)
        return 0;
    /* Saved as the store saves it (text) and read back. */
    cp = at_acme_op_checkpoint(op);
    text = cp ? at_json_pretty(cp) : NULL;
    json_decref(cp);
    if (!text)
        at_fuzz_fail("a checkpoint does not serialise");
    k->cp = at_json_parse_object(text, strlen(text), "checkpoint", &err);
    free(text);
    if (!k->cp)
        at_fuzz_fail("a checkpoint does not parse back: %s", err.msg);
    return 1;
}

void at_fuzz_order(unsigned f0, unsigned f1, const at_http_resp *dir, const at_fuzz_responder *r)
{
    at_acme_client *c = client(dir, AT_FUZZ_KID);
    at_error err = AT_ERROR_INIT;
    at_order_params p;
    at_fuzz_run_opts o;
    at_fuzz_pubs pubs = { NULL, 0, 0 };
    crash k = { (f1 >> 6) & 3, 0, NULL };
    time_t now = AT_FUZZ_T0;
    EVP_PKEY *key = at_fuzz_key(at_fuzz_cert_key_pem);
    json_t *cp0 = NULL;
    at_acme_op *op;
    size_t ns = (f0 >> 4) & 3;
    int kind;

    if (!c)
        return;
    memset(&p, 0, sizeof(p));
    p.names = name_sets[ns].v;
    p.nnames = name_sets[ns].n;
    p.key.kind = AT_KEY_EC;
    p.key.bits = 256;
    p.challenges = chal_sets[(f0 >> 6) & 3].v;
    p.nchallenges = chal_sets[(f0 >> 6) & 3].n;
    p.use_preauthorization = f1 & 1;
    p.profile = f1 & 2 ? "default" : NULL;
    p.replaces = f1 & 4 ? "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE" : NULL;
    p.preferred_chain = f1 & 8 ? (ns == 0 ? "Pebble Root CA 5ef7b7" : "Fake Alt Root X2") : NULL;
    p.poll_timeout = f1 & 32 ? 20 : 300;

    if (f0 & 8) {
        op = at_acme_order_new(c, &p, &err);
    } else {
        cp0 = json_object();
        if (f1 & 16)
            json_object_set_new(cp0, "order_url", json_string(name_sets[ns].resume_url));
        op = at_acme_order_resume(c, &p, cp0, key, &err);
    }
    if (!op) {
        /* Refused up front: a wildcard without dns-01, a profile the CA lacks. */
        if (err.code != AT_ERR_CONFIG)
            at_fuzz_fail("order refused with code %d: %s", (int)err.code, err.msg);
        check_refusal(&err, "order");
        goto out;
    }

    memset(&o, 0, sizeof(o));
    o.lifo = f0 & 1;
    o.publish_fail = (f0 >> 1) & 1;
    o.cancel_when_dry = (f0 >> 2) & 1;
    o.on_step = crash_at_checkpoint;
    o.ud = &k;
    kind = at_fuzz_run_op(c, op, &now, r, &o, &pubs);
    if (kind == 0) {
        /* The host died at a checkpoint: a new process resumes from it with
         * the saved key; what was published died with the old process. */
        EVP_PKEY *saved = at_acme_op_cert_key(op);
        EVP_PKEY_up_ref(saved);
        at_acme_op_free(op);
        at_fuzz_pubs_free(&pubs);
        op = at_acme_order_resume(c, &p, k.cp, saved, &err);
        EVP_PKEY_free(saved);
        if (!op)
            at_fuzz_fail("resuming from a checkpoint was refused: %s", err.msg);
        o.on_step = NULL;
        kind = at_fuzz_run_op(c, op, &now, r, &o, &pubs);
    }
    at_fuzz_check_end(op, kind, &pubs);
    if (kind == AT_STEP_DONE) {
        const char *chain = at_acme_op_chain_pem(op);
        if (!chain || !at_acme_op_order_url(op))
            at_fuzz_fail("order DONE without a chain or an order URL");
        if (at_key_matches_cert_pem(at_acme_op_cert_key(op), chain, strlen(chain)) != 1)
            at_fuzz_fail("order DONE with a chain that is not for the order's key");
    } else if (at_acme_op_chain_pem(op)) {
        at_fuzz_fail("a failed order offers a chain");
    }
    (void)at_acme_op_challenge_used(op);
    check_settled(op, kind, now);
    at_acme_op_free(op);
out:
    json_decref(k.cp);
    json_decref(cp0);
    at_fuzz_pubs_free(&pubs);
    at_error_clear(&err);
    at_acme_client_free(c);
}

/* ------------------------------------------------------------ accounts */

void at_fuzz_account(unsigned f0, unsigned f1, const at_http_resp *dir, const at_fuzz_responder *r,
                     int answers_hold_key)
{
    static const char *const contacts[] = { "admin@example.com", "mailto:ops@example.com" };
    static const char *const algs[] = { NULL, "HS256", "HS384", "HS512" };
    static const at_account_action actions[8] = {
        AT_ACCOUNT_ENSURE, AT_ACCOUNT_FETCH, AT_ACCOUNT_UPDATE_CONTACT, AT_ACCOUNT_ROLLOVER,
        AT_ACCOUNT_DEACTIVATE, AT_ACCOUNT_ENSURE, AT_ACCOUNT_ENSURE, AT_ACCOUNT_ENSURE
    };
    at_account_action action = actions[f0 & 7];
    at_acme_client *c = client(dir, f0 & 64 || action != AT_ACCOUNT_ENSURE ? AT_FUZZ_KID : NULL);
    EVP_PKEY *new_key = at_fuzz_key(at_fuzz_other_key_pem);
    at_error err = AT_ERROR_INIT;
    at_account_params p;
    at_fuzz_run_opts o;
    at_fuzz_pubs pubs = { NULL, 0, 0 };
    time_t now = AT_FUZZ_T0;
    at_acme_op *op;
    int kind;

    if (!c)
        return;
    memset(&p, 0, sizeof(p));
    p.accept_terms = (f0 >> 3) & 1;
    if (f0 & 16) {
        p.eab_kid = AT_FUZZ_EAB_KID;
        p.eab_hmac_key = AT_FUZZ_EAB_KEY;
        p.eab_alg = algs[(f1 >> 1) & 3];
    }
    if (f0 & 32) {
        p.contact = contacts;
        p.ncontact = 2;
    }
    if (f1 & 8) {
        p.terms_hint = "AutoTLSAcceptTerms on";
        p.eab_hint = "AutoTLSEAB KID KEY";
    }
    p.new_key = action == AT_ACCOUNT_ROLLOVER ? new_key : NULL;

    op = at_acme_account_new(c, action, &p, &err);
    if (!op) {
        /* Up front: EAB or terms the directory requires and are not configured. */
        if (err.code != AT_ERR_CONFIG)
            at_fuzz_fail("account op refused with code %d: %s", (int)err.code, err.msg);
        check_refusal(&err, "account op");
        goto out;
    }
    memset(&o, 0, sizeof(o));
    o.lifo = f1 & 1;
    o.cancel_when_dry = (f0 >> 7) & 1;
    kind = at_fuzz_run_op(c, op, &now, r, &o, &pubs);
    at_fuzz_check_end(op, kind, &pubs);
    if (!answers_hold_key && strstr(at_acme_op_error(op)->msg, AT_FUZZ_EAB_KEY))
        at_fuzz_fail("an account error quotes the EAB key: %s", at_acme_op_error(op)->msg);
    if (kind == AT_STEP_DONE) {
        /* (after a rollover the caller keeps the URL it has) */
        if (!at_acme_op_account_url(op) && action != AT_ACCOUNT_ROLLOVER)
            at_fuzz_fail("account op DONE without an account URL");
        if (action == AT_ACCOUNT_ROLLOVER && at_acme_client_key(c) != new_key)
            at_fuzz_fail("key rollover DONE but the client still has the old key");
    }
    (void)at_acme_op_account(op);
    check_settled(op, kind, now);
    at_acme_op_free(op);
out:
    at_error_clear(&err);
    at_acme_client_free(c);
}

/* ------------------------------------------------------------ revocation */

void at_fuzz_revoke(unsigned f0, const at_http_resp *dir, const char *cert_pem, const at_fuzz_responder *r)
{
    static const int reasons[16] = { -1, 0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 7, 11, -2, 1, 4 };
    at_acme_client *c = client(dir, f0 & 0x80 ? NULL : AT_FUZZ_KID);
    at_error err = AT_ERROR_INIT;
    at_fuzz_run_opts o;
    at_fuzz_pubs pubs = { NULL, 0, 0 };
    time_t now = AT_FUZZ_T0;
    int reason = reasons[f0 & 15];
    at_acme_op *op;
    int kind;

    if (!c)
        return;
    op = at_acme_revoke_new(c, cert_pem, reason, &err);
    if (!op) {
        check_refusal(&err, "revocation");
        if (reason >= -1 && reason <= 10 && reason != 7 && !(f0 & 0x80) && err.code != AT_ERR_PARSE &&
            err.code != AT_ERR_CRYPTO)
            at_fuzz_fail("revocation refused with code %d: %s", (int)err.code, err.msg);
        goto out;
    }
    if (reason < -1 || reason > 10 || reason == 7)
        at_fuzz_fail("revocation accepted reason %d", reason);
    memset(&o, 0, sizeof(o));
    o.cancel_when_dry = (f0 >> 4) & 1;
    kind = at_fuzz_run_op(c, op, &now, r, &o, &pubs);
    at_fuzz_check_end(op, kind, &pubs);
    check_settled(op, kind, now);
    at_acme_op_free(op);
out:
    at_error_clear(&err);
    at_acme_client_free(c);
}

/* ------------------------------------------------------------ ARI */

void at_fuzz_ari(unsigned f0, const at_http_resp *dir, const char *cert_pem, const at_fuzz_responder *r)
{
    at_acme_client *c = client(dir, NULL);
    at_error err = AT_ERROR_INIT;
    at_fuzz_run_opts o;
    at_fuzz_pubs pubs = { NULL, 0, 0 };
    time_t now = AT_FUZZ_T0;
    const at_ari_result *res;
    at_acme_op *op;
    int kind;

    if (!c)
        return;
    op = at_acme_ari_new(c, cert_pem, &err);
    if (!op) {
        check_refusal(&err, "renewal information");
        goto out;
    }
    memset(&o, 0, sizeof(o));
    o.cancel_when_dry = f0 & 1;
    kind = at_fuzz_run_op(c, op, &now, r, &o, &pubs);
    at_fuzz_check_end(op, kind, &pubs);
    res = at_acme_op_ari(op);
    if (kind == AT_STEP_DONE) {
        time_t pick;
        if (!res)
            at_fuzz_fail("ARI DONE without a result");
        if (res->end <= res->start)
            at_fuzz_fail("ARI window ends (%lld) before it starts (%lld)", (long long)res->end,
                         (long long)res->start);
        if (res->retry_after && res->retry_after < now)
            at_fuzz_fail("ARI Retry-After in the past");
        if (!memchr(res->explanation_url, '\0', sizeof(res->explanation_url)))
            at_fuzz_fail("ARI explanation URL not terminated");
        pick = at_ari_pick(res, (unsigned long)f0 * 2654435761u);
        if (pick < res->start || pick >= res->end)
            at_fuzz_fail("at_ari_pick outside the window");
    }
    check_settled(op, kind, now);
    at_acme_op_free(op);
out:
    at_error_clear(&err);
    at_acme_client_free(c);
}

/* ------------------------------------------------------------ exchanges */

#define NX 4

/* What a signed request promises: the JWS verifies with the account key,
 * and its protected header names the URL, a nonce, and kid or jwk. */
static void check_signed(at_acme_client *c, const at_acme_req *req, const at_http_req *q)
{
    json_t *hdr = NULL;
    at_error err = AT_ERROR_INIT;
    const char *u;

    if (q->method != AT_HTTP_POST || !q->body || !q->content_type ||
        strcmp(q->content_type, "application/jose+json") != 0)
        at_fuzz_fail("a signed request is not a JOSE POST");
    if (at_jws_verify(at_acme_client_key(c), q->body, q->body_len) != 1)
        at_fuzz_fail("a signed request does not verify with the account key");
    if (at_jws_parse(q->body, q->body_len, &hdr, NULL, &err) != 0)
        at_fuzz_fail("a signed request does not parse: %s", err.msg);
    u = at_json_str(hdr, "url");
    if (!u || strcmp(u, q->url) != 0 || strcmp(q->url, req->url) != 0)
        at_fuzz_fail("a signed request's header names another URL");
    if (!at_json_str(hdr, "nonce"))
        at_fuzz_fail("a signed request without a nonce");
    if (req->kind == AT_AREQ_POST_KID ? !at_json_str(hdr, "kid") : !json_is_object(json_object_get(hdr, "jwk")))
        at_fuzz_fail("a signed request without its kid or jwk");
    json_decref(hdr);
}

/* One step of exchange x. Returns 1 when it has finished (freed by the caller). */
static int exch_step(at_acme_client *c, at_acme_exch *x, const at_acme_req *req, time_t *now,
                     const at_fuzz_responder *r)
{
    at_error err = AT_ERROR_INIT;
    at_http_req q;
    at_http_resp resp;
    time_t until;
    int a;

    switch (at_acme_exch_next(x, *now, &q, &until, &err)) {
    case AT_EXCH_SEND:
        if (!q.url)
            at_fuzz_fail("an exchange sends without a URL");
        if (q.method == AT_HTTP_HEAD) {
            if (strcmp(q.url, at_acme_client_dir(c)->new_nonce) != 0 && req->kind != AT_AREQ_HEAD)
                at_fuzz_fail("a HEAD to %s, not to newNonce", q.url);
        } else if (req->kind == AT_AREQ_POST_KID || req->kind == AT_AREQ_POST_JWK) {
            check_signed(c, req, &q);
        }
        a = r->answer(r->ud, &q, &resp);
        at_http_req_free(&q);
        if (a == 0) {
            at_acme_exch_feed(x, &resp, NULL, *now);
            at_http_resp_free(&resp);
        } else {
            at_error t = AT_ERROR_INIT;
            at_error_set(&t, AT_ERR_NETWORK, "no answer");
            at_acme_exch_feed(x, NULL, &t, *now);
            at_error_clear(&t);
        }
        return 0;
    case AT_EXCH_WAIT:
        if (until == 0 || until <= *now)
            at_fuzz_fail("an exchange waits for nothing");
        *now = until;
        return 0;
    case AT_EXCH_DONE:
        if (!at_acme_exch_response(x))
            at_fuzz_fail("a finished exchange has no response");
        return 1;
    case AT_EXCH_FAILED:
        if (err.code == AT_OK || at_acme_exch_response(x))
            at_fuzz_fail("a failed exchange without an error, or with a response");
        at_fuzz_check_msg(&err, "exchange");
        at_error_clear(&err);
        return 1;
    }
    at_fuzz_fail("unknown exchange state");
}

void at_fuzz_exch(unsigned f0, const at_http_resp *dir, const uint8_t *script, size_t slen,
                  const at_fuzz_responder *r)
{
    at_acme_client *c = client(dir, f0 & 8 ? NULL : AT_FUZZ_KID);
    at_acme_exch *xs[NX] = { NULL };
    at_acme_req reqs[NX];
    time_t now = AT_FUZZ_T0;

    if (!c)
        return;
    memset(reqs, 0, sizeof(reqs));
    at_acme_client_set_nonce_retries(c, (int)(f0 & 7));
    for (size_t i = 0; i < slen; i++) {
        unsigned b = script[i], slot = b & 3;
        switch (b >> 6) {
        case 0: {                                   /* a new exchange in slot */
            const at_acme_dir *d = at_acme_client_dir(c);
            at_acme_req *q = &reqs[slot];
            at_acme_exch_free(xs[slot]);
            memset(q, 0, sizeof(*q));
            q->kind = (at_acme_req_kind)((b >> 2) & 3);
            switch (q->kind) {
            case AT_AREQ_GET:      q->url = (char *)"https://ca.test/renewal-info/aYhba4dG.AIdlQyE"; break;
            case AT_AREQ_HEAD:     q->url = d->new_nonce; break;
            case AT_AREQ_POST_KID: q->url = (char *)"https://ca.test/order/0"; break;
            case AT_AREQ_POST_JWK: q->url = d->new_account; break;
            }
            if (b & 16)
                q->payload = (char *)(q->kind == AT_AREQ_POST_JWK ? "{\"onlyReturnExisting\":true}" : "{}");
            q->accept = b & 32 ? (char *)PEM_CHAIN : NULL;
            if (!(xs[slot] = at_acme_exch_new(c, q)))
                at_fuzz_fail("at_acme_exch_new refused a request");
            break;
        }
        case 1:                                     /* step it */
            if (xs[slot] && exch_step(c, xs[slot], &reqs[slot], &now, r)) {
                at_acme_exch_free(xs[slot]);
                xs[slot] = NULL;
            }
            break;
        case 2:                                     /* time passes */
            now += (time_t)(b & 63);
            break;
        default:                                    /* abandon it */
            at_acme_exch_free(xs[slot]);
            xs[slot] = NULL;
            break;
        }
        if (at_acme_client_nonce_count(c) > 16)
            at_fuzz_fail("the nonce pool grew to %zu", at_acme_client_nonce_count(c));
    }
    for (int i = 0; i < NX; i++)
        at_acme_exch_free(xs[i]);
    at_acme_client_free(c);
}
