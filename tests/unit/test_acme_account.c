/* Unit tests for account operations against the fake CA: new and existing
 * accounts, terms, EAB, contacts, key rollover, deactivation, and the clear
 * errors for what the administrator must configure. */
#include "at_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "at_acme.h"
#include "at_b64.h"
#include "at_buf.h"
#include "at_jose.h"
#include "at_json.h"
#include "at_key.h"
#include "at_fake_ca.h"

#define EAB_KID "kid-123"
/* 32 bytes, base64url */
#define EAB_KEY "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"

static EVP_PKEY *new_key(void)
{
    at_key_spec spec = AT_KEY_SPEC_DEFAULT;
    return at_key_generate(&spec, NULL);
}

/* A client that has read the CA's directory and holds key (no account yet). */
static at_acme_client *new_client(at_fake_ca *ca, EVP_PKEY *key)
{
    at_error err = AT_ERROR_INIT;
    at_acme_client *c = at_acme_client_new(at_fake_ca_directory_url(ca), &err);
    at_http_req q;
    at_http_resp r;
    memset(&q, 0, sizeof(q));
    q.method = AT_HTTP_GET;
    q.url = (char *)at_fake_ca_directory_url(ca);
    at_fake_ca_handle(ca, &q, &r);
    AT_CHECK_OK(at_acme_client_set_directory(c, &r, &err), &err);
    at_http_resp_free(&r);
    at_acme_client_set_account(c, key, NULL);
    return c;
}

static int run_op(at_fake_ca *ca, at_acme_client *c, at_acme_op *op)
{
    time_t now = 1700000000;
    return at_fake_ca_run(ca, c, op, &now, NULL);
}

static at_acme_op *ensure(at_acme_client *c, const char *const *contact, size_t n, int terms,
                          const char *eab_kid, const char *eab_key, at_error *err)
{
    at_account_params p;
    memset(&p, 0, sizeof(p));
    p.contact = contact;
    p.ncontact = n;
    p.accept_terms = terms;
    p.eab_kid = eab_kid;
    p.eab_hmac_key = eab_key;
    p.terms_hint = "AutoTLSAcceptTerms on";
    p.eab_hint = "AutoTLSEAB KID KEY";
    return at_acme_account_new(c, AT_ACCOUNT_ENSURE, &p, err);
}

/* Register and install the account URL in the client. */
static void register_account(at_fake_ca *ca, at_acme_client *c)
{
    at_error err = AT_ERROR_INIT;
    at_acme_op *op = ensure(c, NULL, 0, 1, NULL, NULL, &err);
    AT_CHECK(op != NULL);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_DONE);
    at_acme_client_set_account(c, at_acme_client_key(c), at_acme_op_account_url(op));
    at_acme_op_free(op);
}

static void t_ensure_new(void)
{
    at_fake_ca *ca = at_fake_ca_new(NULL);
    EVP_PKEY *k = new_key();
    at_acme_client *c = new_client(ca, k);
    const char *contact[] = { "admin@example.com", "mailto:ops@example.com" };
    at_error err = AT_ERROR_INIT;
    at_acme_op *op = ensure(c, contact, 2, 1, NULL, NULL, &err);
    const json_t *p, *h;

    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_DONE);
    AT_CHECK_INT(at_fake_ca_count(ca, "newAccount"), 2);      /* lookup, then create */
    AT_CHECK_INT(at_fake_ca_naccounts(ca), 1);
    AT_CHECK_CONTAINS(at_acme_op_account_url(op), "https://ca.test/acct/");
    AT_CHECK_STR(at_json_str(at_acme_op_account(op), "status"), "valid");
    p = at_fake_ca_last_payload(ca, "newAccount");
    AT_CHECK(json_is_true(json_object_get(p, "termsOfServiceAgreed")));
    AT_CHECK_STR(json_string_value(json_array_get(json_object_get(p, "contact"), 0)), "mailto:admin@example.com");
    AT_CHECK_STR(json_string_value(json_array_get(json_object_get(p, "contact"), 1)), "mailto:ops@example.com");
    AT_CHECK(json_object_get(p, "onlyReturnExisting") == NULL);
    AT_CHECK(json_object_get(p, "externalAccountBinding") == NULL);
    h = at_fake_ca_last_protected(ca, "newAccount");
    AT_CHECK(json_object_get(h, "jwk") != NULL && json_object_get(h, "kid") == NULL);
    at_acme_op_free(op);
    at_acme_client_free(c);
    EVP_PKEY_free(k);
    at_fake_ca_free(ca);
}

static void t_ensure_existing(void)
{
    at_fake_ca *ca = at_fake_ca_new(NULL);
    EVP_PKEY *k = new_key();
    at_acme_client *c = new_client(ca, k), *c2;
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    char *url;

    register_account(ca, c);
    url = strdup(at_acme_client_kid(c));
    /* Same key, fresh client (a lost account URL): found, not created again. */
    c2 = new_client(ca, k);
    op = ensure(c2, NULL, 0, 1, NULL, NULL, &err);
    AT_CHECK_INT(run_op(ca, c2, op), AT_STEP_DONE);
    AT_CHECK_STR(at_acme_op_account_url(op), url);
    AT_CHECK_INT(at_fake_ca_naccounts(ca), 1);
    AT_CHECK(json_is_true(json_object_get(at_fake_ca_last_payload(ca, "newAccount"), "onlyReturnExisting")));
    at_acme_op_free(op);
    free(url);
    at_acme_client_free(c2);
    at_acme_client_free(c);
    EVP_PKEY_free(k);
    at_fake_ca_free(ca);
}

static void t_terms_required(void)
{
    at_fake_ca *ca = at_fake_ca_new(NULL);
    EVP_PKEY *k = new_key();
    at_acme_client *c;
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;

    at_fake_ca_set_terms(ca, "https://ca.test/terms-v1.pdf");
    c = new_client(ca, k);
    op = ensure(c, NULL, 0, 0, NULL, NULL, &err);
    AT_CHECK(op == NULL);
    AT_CHECK_INT(err.code, AT_ERR_CONFIG);
    AT_CHECK_CONTAINS(err.msg, "https://ca.test/terms-v1.pdf");
    AT_CHECK_CONTAINS(err.msg, "AutoTLSAcceptTerms on");
    AT_CHECK_INT(at_fake_ca_count(ca, "newAccount"), 0);     /* nothing was sent */
    at_error_clear(&err);

    op = ensure(c, NULL, 0, 1, NULL, NULL, &err);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_DONE);
    at_acme_op_free(op);
    at_acme_client_free(c);
    EVP_PKEY_free(k);
    at_fake_ca_free(ca);
}

static void t_user_action_required(void)
{
    /* The CA introduces terms after we read its directory: its refusal names
     * the terms (Link rel="terms-of-service") and what to configure. */
    at_fake_ca *ca = at_fake_ca_new(NULL);
    EVP_PKEY *k = new_key();
    at_acme_client *c = new_client(ca, k);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op = ensure(c, NULL, 0, 0, NULL, NULL, &err);
    const at_error *e;

    at_fake_ca_set_terms(ca, "https://ca.test/terms-v2.pdf");
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_FAILED);
    e = at_acme_op_error(op);
    AT_CHECK_INT(e->code, AT_ERR_CA);
    AT_CHECK_STR(at_acme_problem_type(e), "userActionRequired");
    AT_CHECK_CONTAINS(e->msg, "visit https://ca.test/terms-v2.pdf");
    AT_CHECK_CONTAINS(e->msg, "AutoTLSAcceptTerms on");
    AT_CHECK_CONTAINS(e->msg, "registering an account at https://ca.test/dir");
    at_acme_op_free(op);
    at_acme_client_free(c);
    EVP_PKEY_free(k);
    at_fake_ca_free(ca);
}

static void t_eab(void)
{
    at_fake_ca *ca = at_fake_ca_new(NULL);
    EVP_PKEY *k = new_key();
    at_acme_client *c;
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    const json_t *eab;

    at_fake_ca_require_eab(ca, EAB_KID, EAB_KEY);
    c = new_client(ca, k);
    AT_CHECK_INT(at_acme_client_dir(c)->external_account_required, 1);

    /* Not configured: refused before sending, naming the directive. */
    op = ensure(c, NULL, 0, 1, NULL, NULL, &err);
    AT_CHECK(op == NULL);
    AT_CHECK_INT(err.code, AT_ERR_CONFIG);
    AT_CHECK_CONTAINS(err.msg, "external account binding");
    AT_CHECK_CONTAINS(err.msg, "AutoTLSEAB KID KEY");
    AT_CHECK_INT(at_fake_ca_count(ca, "newAccount"), 0);
    at_error_clear(&err);

    /* Wrong HMAC key: the CA's refusal comes through. */
    op = ensure(c, NULL, 0, 1, EAB_KID, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &err);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_FAILED);
    AT_CHECK_INT(at_acme_op_error(op)->code, AT_ERR_CA);
    AT_CHECK_STR(at_acme_problem_type(at_acme_op_error(op)), "unauthorized");
    AT_CHECK_CONTAINS(at_fake_ca_last_error(ca), "MAC");
    at_acme_op_free(op);

    /* Right key: bound, and the binding carries the account JWK. */
    op = ensure(c, NULL, 0, 1, EAB_KID, EAB_KEY, &err);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_DONE);
    eab = json_object_get(at_fake_ca_last_payload(ca, "newAccount"), "externalAccountBinding");
    AT_CHECK(json_is_object(eab));
    AT_CHECK_INT(at_fake_ca_naccounts(ca), 1);
    at_acme_op_free(op);
    at_acme_client_free(c);
    EVP_PKEY_free(k);
    at_fake_ca_free(ca);
}

static void t_eab_required_by_surprise(void)
{
    /* The directory did not say so, the CA does: the hint is added. */
    at_fake_ca *ca = at_fake_ca_new(NULL);
    EVP_PKEY *k = new_key();
    at_acme_client *c = new_client(ca, k);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op = ensure(c, NULL, 0, 1, NULL, NULL, &err);
    at_fake_ca_require_eab(ca, EAB_KID, EAB_KEY);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_FAILED);
    AT_CHECK_STR(at_acme_problem_type(at_acme_op_error(op)), "externalAccountRequired");
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "AutoTLSEAB KID KEY");
    at_acme_op_free(op);
    at_acme_client_free(c);
    EVP_PKEY_free(k);
    at_fake_ca_free(ca);
}

static at_acme_op *simple_op(at_acme_client *c, at_account_action a, const char *const *contact, size_t n,
                             EVP_PKEY *nk, at_error *err)
{
    at_account_params p;
    memset(&p, 0, sizeof(p));
    p.contact = contact;
    p.ncontact = n;
    p.new_key = nk;
    return at_acme_account_new(c, a, &p, err);
}

static void t_contacts(void)
{
    at_fake_ca *ca = at_fake_ca_new(NULL);
    EVP_PKEY *k = new_key();
    at_acme_client *c = new_client(ca, k);
    const char *two[] = { "a@example.com", "mailto:b@example.com" };
    const char *bad[] = { "mailto:nobody" };
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    const json_t *ct;

    register_account(ca, c);
    op = simple_op(c, AT_ACCOUNT_UPDATE_CONTACT, two, 2, NULL, &err);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_DONE);
    at_acme_op_free(op);

    op = simple_op(c, AT_ACCOUNT_FETCH, NULL, 0, NULL, &err);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_DONE);
    ct = json_object_get(at_acme_op_account(op), "contact");
    AT_CHECK_INT(json_array_size(ct), 2);
    AT_CHECK_STR(json_string_value(json_array_get(ct, 0)), "mailto:a@example.com");
    AT_CHECK_STR(at_acme_op_account_url(op), at_acme_client_kid(c));
    AT_CHECK(at_fake_ca_last_payload(ca, "account") == NULL);   /* POST-as-GET */
    at_acme_op_free(op);

    op = simple_op(c, AT_ACCOUNT_UPDATE_CONTACT, bad, 1, NULL, &err);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_FAILED);
    AT_CHECK_STR(at_acme_problem_type(at_acme_op_error(op)), "invalidContact");
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "mailto:nobody");
    at_acme_op_free(op);

    at_acme_client_free(c);
    EVP_PKEY_free(k);
    at_fake_ca_free(ca);
}

static void t_rollover(void)
{
    at_fake_ca *ca = at_fake_ca_new(NULL);
    EVP_PKEY *k = new_key(), *nk = new_key(), *other = new_key();
    at_acme_client *c = new_client(ca, k), *c2;
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    const json_t *outer, *inner;
    json_t *ih = NULL, *ip = NULL;
    at_buf pl = AT_BUF_INIT;
    char *s;

    register_account(ca, c);
    op = simple_op(c, AT_ACCOUNT_ROLLOVER, NULL, 0, nk, &err);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_DONE);
    AT_CHECK(at_acme_client_key(c) == nk);
    at_acme_op_free(op);

    /* What went over the wire: outer kid, inner jwk of the new key, no nonce,
     * same URL, payload {account, oldKey}. */
    outer = at_fake_ca_last_protected(ca, "keyChange");
    AT_CHECK_STR(at_json_str(outer, "kid"), at_acme_client_kid(c));
    inner = at_fake_ca_last_payload(ca, "keyChange");
    s = at_json_compact(inner);
    AT_CHECK_OK(at_jws_parse(s, strlen(s), &ih, &pl, &err), &err);
    AT_CHECK(json_object_get(ih, "nonce") == NULL && json_object_get(ih, "kid") == NULL);
    AT_CHECK_STR(at_json_str(ih, "url"), at_acme_client_dir(c)->key_change);
    AT_CHECK_STR(at_json_str(ih, "url"), at_json_str(outer, "url"));
    AT_CHECK_INT(at_jws_verify(nk, s, strlen(s)), 1);
    AT_CHECK_INT(at_jws_verify(k, s, strlen(s)), 0);
    ip = at_json_parse_object(pl.data, pl.len, "inner", &err);
    AT_CHECK_STR(at_json_str(ip, "account"), at_acme_client_kid(c));
    {
        json_t *oldjwk = at_jwk_public(k, &err);
        AT_CHECK(json_equal(oldjwk, json_object_get(ip, "oldKey")));
        json_decref(oldjwk);
    }
    free(s);
    json_decref(ih);
    json_decref(ip);
    at_buf_free(&pl);

    /* The CA knows only the new key now. */
    op = simple_op(c, AT_ACCOUNT_FETCH, NULL, 0, NULL, &err);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_DONE);
    at_acme_op_free(op);

    /* Rolling over to a key another account uses: 409, a clear message. */
    c2 = new_client(ca, other);
    register_account(ca, c2);
    op = simple_op(c, AT_ACCOUNT_ROLLOVER, NULL, 0, other, &err);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_FAILED);
    AT_CHECK_INT(at_acme_op_error(op)->http_status, 409);
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "already belongs to another account");
    AT_CHECK(at_acme_client_key(c) == nk);
    at_acme_op_free(op);

    at_acme_client_free(c2);
    at_acme_client_free(c);
    EVP_PKEY_free(k);
    EVP_PKEY_free(nk);
    EVP_PKEY_free(other);
    at_fake_ca_free(ca);
}

static void t_rollover_unsupported(void)
{
    at_fake_ca *ca = at_fake_ca_new(NULL);
    EVP_PKEY *k = new_key(), *nk = new_key();
    at_acme_client *c;
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    at_fake_ca_set_key_change(ca, 0);
    c = new_client(ca, k);
    register_account(ca, c);
    op = simple_op(c, AT_ACCOUNT_ROLLOVER, NULL, 0, nk, &err);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_FAILED);
    AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "keyChange");
    AT_CHECK(at_acme_client_key(c) == k);
    at_acme_op_free(op);
    /* Missing new key: refused at once. */
    op = simple_op(c, AT_ACCOUNT_ROLLOVER, NULL, 0, NULL, &err);
    AT_CHECK(op == NULL);
    AT_CHECK_CONTAINS(err.msg, "new key");
    at_error_clear(&err);
    at_acme_client_free(c);
    EVP_PKEY_free(k);
    EVP_PKEY_free(nk);
    at_fake_ca_free(ca);
}

static void t_deactivate(void)
{
    at_fake_ca *ca = at_fake_ca_new(NULL);
    EVP_PKEY *k = new_key();
    at_acme_client *c = new_client(ca, k), *c2;
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;

    register_account(ca, c);
    op = simple_op(c, AT_ACCOUNT_DEACTIVATE, NULL, 0, NULL, &err);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_DONE);
    AT_CHECK_STR(at_json_str(at_acme_op_account(op), "status"), "deactivated");
    AT_CHECK_STR(at_json_str(at_fake_ca_last_payload(ca, "account"), "status"), "deactivated");
    AT_CHECK_STR(at_fake_ca_account_status(ca, at_acme_client_kid(c)), "deactivated");
    at_acme_op_free(op);

    /* Afterwards the account cannot be used... */
    op = simple_op(c, AT_ACCOUNT_FETCH, NULL, 0, NULL, &err);
    AT_CHECK_INT(run_op(ca, c, op), AT_STEP_FAILED);
    AT_CHECK_STR(at_acme_problem_type(at_acme_op_error(op)), "unauthorized");
    at_acme_op_free(op);
    /* ... nor found again by key. */
    c2 = new_client(ca, k);
    op = ensure(c2, NULL, 0, 1, NULL, NULL, &err);
    AT_CHECK_INT(run_op(ca, c2, op), AT_STEP_FAILED);
    AT_CHECK(at_acme_op_error(op)->msg[0] != '\0');
    at_acme_op_free(op);
    at_acme_client_free(c2);
    at_acme_client_free(c);
    EVP_PKEY_free(k);
    at_fake_ca_free(ca);
}

static void t_needs_account(void)
{
    at_fake_ca *ca = at_fake_ca_new(NULL);
    EVP_PKEY *k = new_key();
    at_acme_client *c = new_client(ca, k);
    at_error err = AT_ERROR_INIT;
    at_account_action acts[] = { AT_ACCOUNT_FETCH, AT_ACCOUNT_UPDATE_CONTACT, AT_ACCOUNT_DEACTIVATE };
    for (size_t i = 0; i < sizeof(acts) / sizeof(acts[0]); i++) {
        at_acme_op *op = simple_op(c, acts[i], NULL, 0, NULL, &err);
        AT_CHECK(op == NULL);
        AT_CHECK_CONTAINS(err.msg, "no registered account");
        at_error_clear(&err);
    }
    at_acme_client_set_account(c, NULL, NULL);
    AT_CHECK(ensure(c, NULL, 0, 1, NULL, NULL, &err) == NULL);
    AT_CHECK_CONTAINS(err.msg, "without an account key");
    at_error_clear(&err);
    at_acme_client_free(c);
    EVP_PKEY_free(k);
    at_fake_ca_free(ca);
}

static void t_nonce_storm(void)
{
    /* Half the nonces refused: every operation still goes through. */
    at_fake_ca *ca = at_fake_ca_new(NULL);
    EVP_PKEY *k = new_key();
    at_acme_client *c = new_client(ca, k);
    at_error err = AT_ERROR_INIT;
    at_acme_op *op;
    at_fake_ca_set_bad_nonce_rate(ca, 40);
    register_account(ca, c);
    for (int i = 0; i < 5; i++) {
        op = simple_op(c, AT_ACCOUNT_FETCH, NULL, 0, NULL, &err);
        AT_CHECK_INT(run_op(ca, c, op), AT_STEP_DONE);
        at_acme_op_free(op);
    }
    at_acme_client_free(c);
    EVP_PKEY_free(k);
    at_fake_ca_free(ca);
}

static void t_malformed_replies(void)
{
    static const struct { long status; const char *ctype, *body; const char *want; } v[] = {
        { 201, "application/json", "{\"status\":", "JSON" },
        { 201, "application/json", "[]", "" },
        { 200, "application/json", "{\"status\":\"valid\"}", "Location" },
        { 500, "text/html", "<h1>oops</h1>", "HTTP 500" },
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        at_fake_ca *ca = at_fake_ca_new(NULL);
        EVP_PKEY *k = new_key();
        at_acme_client *c = new_client(ca, k);
        at_error err = AT_ERROR_INIT;
        at_acme_op *op = ensure(c, NULL, 0, 1, NULL, NULL, &err);
        /* The lookup says "no account", the creation gets the broken reply. */
        at_fake_ca_fail_next(ca, "newAccount", 1, 400, "accountDoesNotExist", "none", -1);
        at_fake_ca_raw_next(ca, "newAccount", v[i].status, v[i].ctype, v[i].body, strlen(v[i].body));
        AT_CHECK_INT(run_op(ca, c, op), AT_STEP_FAILED);
        AT_CHECK(at_acme_op_error(op)->code != AT_OK);
        AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, v[i].want);
        AT_CHECK_CONTAINS(at_acme_op_error(op)->msg, "registering an account");
        at_acme_op_free(op);
        at_acme_client_free(c);
        EVP_PKEY_free(k);
        at_fake_ca_free(ca);
    }
}

static const at_test_case cases[] = {
    AT_CASE(t_ensure_new),
    AT_CASE(t_ensure_existing),
    AT_CASE(t_terms_required),
    AT_CASE(t_user_action_required),
    AT_CASE(t_eab),
    AT_CASE(t_eab_required_by_surprise),
    AT_CASE(t_contacts),
    AT_CASE(t_rollover),
    AT_CASE(t_rollover_unsupported),
    AT_CASE(t_deactivate),
    AT_CASE(t_needs_account),
    AT_CASE(t_nonce_storm),
    AT_CASE(t_malformed_replies),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    return at_test_main(argc, argv, cases);
}
