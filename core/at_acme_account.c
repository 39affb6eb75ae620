/*
 * at_acme_account.c: accounts (RFC 8555 §7.3): find by key or create (with
 * terms agreement, contacts and external account binding), read, update
 * contacts, roll the key over (§7.3.5) and deactivate (§7.3.6). Settings the
 * CA is known to require are checked before anything is sent, so that the
 * administrator gets a message naming the directive to set.
 */
#include "at_acme_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "at_jose.h"

typedef enum aphase {
    A_START = 0,
    A_LOOKUP,      /* newAccount with onlyReturnExisting */
    A_CREATE,      /* newAccount */
    A_FETCH,
    A_UPDATE,
    A_ROLLOVER,
    A_DEACTIVATE,
    A_DONE
} aphase;

struct at_account_st {
    at_account_action action;
    aphase   phase;
    int      busy;
    json_t  *contact;       /* array, or NULL */
    int      accept_terms;
    char    *eab_kid;
    char    *eab_key;
    char    *eab_alg;
    EVP_PKEY *new_key;
    char    *terms_hint;
    char    *eab_hint;
};

static void set_phase(at_acme_op *op, aphase p)
{
    op->acct->phase = p;
    op->progress++;
}

static const char *ca_url(const at_acme_op *op)
{
    return at_acme_client_url(op->client);
}

/* Append words to an error message (kept within the message size). */
static void err_append(at_error *e, const char *a, const char *b, const char *c)
{
    size_t len = strlen(e->msg);
    if (len + 4 < sizeof(e->msg))
        snprintf(e->msg + len, sizeof(e->msg) - len, "%s%s%s", a, b ? b : "", c ? c : "");
}

/* Settings the directory says the CA requires, checked before sending. */
static int precheck(at_acme_op *op, at_error *err)
{
    at_account_st *a = op->acct;
    const at_acme_dir *dir = at_acme_client_dir(op->client);

    if (!dir)
        return 0;    /* checked again once the directory is known */
    if (dir->external_account_required && (!a->eab_kid || !a->eab_key))
        return at_error_set(err, AT_ERR_CONFIG,
                            "the CA %s requires external account binding (EAB): get a key id and an "
                            "HMAC key from the CA and configure them%s%s",
                            ca_url(op), a->eab_hint ? " with " : "", a->eab_hint ? a->eab_hint : "");
    if (dir->terms_of_service && !a->accept_terms)
        return at_error_set(err, AT_ERR_CONFIG,
                            "the CA %s requires agreeing to its terms of service at %s; read them, "
                            "then agree%s%s",
                            ca_url(op), dir->terms_of_service, a->terms_hint ? " with " : "",
                            a->terms_hint ? a->terms_hint : "");
    return 0;
}

/* Keep the account object and URL from a reply. */
static int take_account(at_acme_op *op, const at_http_resp *resp, const char *what, int need_body,
                        at_error *err)
{
    json_t *obj = NULL;
    const char *status;

    if (resp->body_len || need_body) {
        obj = at_op_json(resp, what, err);
        if (!obj)
            return -1;
    }
    if (obj) {
        json_decref(op->account);
        op->account = obj;
    }
    if (resp->location) {
        char *u = strdup(resp->location);
        if (!u)
            return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        free(op->account_url);
        op->account_url = u;
    } else if (!op->account_url && at_acme_client_kid(op->client)) {
        op->account_url = strdup(at_acme_client_kid(op->client));
    }
    status = op->account ? at_json_str(op->account, "status") : NULL;
    if (status && (strcmp(status, "deactivated") == 0 || strcmp(status, "revoked") == 0) &&
        op->acct->action != AT_ACCOUNT_DEACTIVATE)
        return at_error_set(err, AT_ERR_CA,
                            "%s: the account %s at %s is %s and can no longer be used; a new account "
                            "(with a new account key) is needed",
                            what, op->account_url ? op->account_url : "", ca_url(op), status);
    return 0;
}

/* A problem reply: add what the administrator can configure. */
static void explain(at_acme_op *op, at_error *e, const at_http_resp *resp)
{
    at_account_st *a = op->acct;
    const char *t = at_acme_problem_type(e);
    if (!t)
        return;
    if (strcmp(t, "externalAccountRequired") == 0 && a->eab_hint)
        err_append(e, " (", a->eab_hint, ")");
    else if (strcmp(t, "userActionRequired") == 0 && a->terms_hint && resp &&
             at_http_link_rel(resp, "terms-of-service"))
        err_append(e, "; after reading the terms, agree with ", a->terms_hint, NULL);
    else if ((strcmp(t, "invalidContact") == 0 || strcmp(t, "unsupportedContact") == 0) && a->contact) {
        char *c = at_json_compact(a->contact);
        if (c)
            err_append(e, " (sent: ", c, ")");
        free(c);
    }
}

static void on_reply(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                     const at_error *terr, time_t now);

static void send_json(at_acme_op *op, at_acme_req_kind kind, const char *url, json_t *payload)
{
    char *s = NULL;
    if (payload) {
        s = at_json_compact(payload);
        json_decref(payload);
        if (!s) {
            at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
            return;
        }
    }
    op->acct->busy = 1;
    at_op_request(op, kind, url, s, NULL, on_reply, 0);
}

static json_t *create_payload(at_acme_op *op, at_error *err)
{
    at_account_st *a = op->acct;
    const at_acme_dir *dir = at_acme_client_dir(op->client);
    json_t *p = json_object();

    if (!p)
        goto oom;
    if (a->accept_terms && json_object_set_new(p, "termsOfServiceAgreed", json_true()) != 0)
        goto oom;
    if (a->contact && json_array_size(a->contact) &&
        json_object_set_new(p, "contact", json_deep_copy(a->contact)) != 0)
        goto oom;
    if (a->eab_kid && a->eab_key) {
        json_t *eab = at_eab_jws(at_acme_client_key(op->client), a->eab_kid, a->eab_key,
                                 a->eab_alg ? a->eab_alg : "HS256", dir->new_account, err);
        if (!eab) {
            json_decref(p);
            at_error_prefix(err, "external account binding for %s", ca_url(op));
            return NULL;
        }
        json_object_set_new(p, "externalAccountBinding", eab);
    }
    return p;
oom:
    json_decref(p);
    at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    return NULL;
}

static json_t *rollover_payload(at_acme_op *op, at_error *err)
{
    at_account_st *a = op->acct;
    const at_acme_dir *dir = at_acme_client_dir(op->client);
    json_t *old = at_jwk_public(at_acme_client_key(op->client), err), *inner_p, *inner;
    at_buf jws = AT_BUF_INIT;
    char *ps;

    if (!old)
        return NULL;
    inner_p = json_pack("{s:s, s:o}", "account", at_acme_client_kid(op->client), "oldKey", old);
    ps = inner_p ? at_json_compact(inner_p) : NULL;
    json_decref(inner_p);
    if (!ps) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    /* RFC 8555 §7.3.5: the inner JWS is signed by the new key, carries it as
     * "jwk", has no nonce, and names the same URL as the outer one. */
    if (at_jws_sign(a->new_key, NULL, NULL, dir->key_change, ps, &jws, err) != 0) {
        free(ps);
        at_buf_free(&jws);
        return NULL;
    }
    free(ps);
    inner = at_json_parse_object(jws.data, jws.len, "the keyChange inner JWS", err);
    at_buf_free(&jws);
    return inner;
}

static void account_advance(at_acme_op *op, time_t now)
{
    at_account_st *a = op->acct;
    const at_acme_dir *dir = at_acme_client_dir(op->client);
    const char *kid = at_acme_client_kid(op->client);
    at_error e = AT_ERROR_INIT;
    json_t *p;
    (void)now;

    if (a->busy)
        return;
    if (!dir) {
        at_op_fail(op, AT_ERR_INTERNAL, "account at %s: the CA's directory has not been read", ca_url(op));
        return;
    }
    switch (a->phase) {
    case A_START:
        if (a->action == AT_ACCOUNT_ENSURE) {
            if (precheck(op, &e) != 0) {
                at_op_fail_err(op, &e);
                return;
            }
            set_phase(op, A_LOOKUP);
            return;
        }
        if (!kid) {
            at_op_fail(op, AT_ERR_CONFIG, "there is no registered account at %s yet", ca_url(op));
            return;
        }
        if (a->action == AT_ACCOUNT_ROLLOVER && !dir->key_change) {
            at_op_fail(op, AT_ERR_CA, "the CA %s does not support key rollover (no keyChange in its directory)",
                       ca_url(op));
            return;
        }
        set_phase(op, a->action == AT_ACCOUNT_FETCH ? A_FETCH :
                      a->action == AT_ACCOUNT_UPDATE_CONTACT ? A_UPDATE :
                      a->action == AT_ACCOUNT_ROLLOVER ? A_ROLLOVER : A_DEACTIVATE);
        return;
    case A_LOOKUP:
        send_json(op, AT_AREQ_POST_JWK, dir->new_account, json_pack("{s:b}", "onlyReturnExisting", 1));
        return;
    case A_CREATE:
        if (!(p = create_payload(op, &e))) {
            at_op_fail_err(op, &e);
            return;
        }
        send_json(op, AT_AREQ_POST_JWK, dir->new_account, p);
        return;
    case A_FETCH:
        send_json(op, AT_AREQ_POST_KID, kid, NULL);
        return;
    case A_UPDATE:
        send_json(op, AT_AREQ_POST_KID, kid,
                  json_pack("{s:o}", "contact", a->contact ? json_incref(a->contact) : json_array()));
        return;
    case A_DEACTIVATE:
        send_json(op, AT_AREQ_POST_KID, kid, json_pack("{s:s}", "status", "deactivated"));
        return;
    case A_ROLLOVER:
        if (!(p = rollover_payload(op, &e))) {
            at_error_prefix(&e, "account key rollover at %s", ca_url(op));
            at_op_fail_err(op, &e);
            return;
        }
        send_json(op, AT_AREQ_POST_KID, dir->key_change, p);
        return;
    case A_DONE:
        at_op_succeed(op);
        return;
    }
}

static void on_reply(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                     const at_error *terr, time_t now)
{
    at_account_st *a = op->acct;
    at_error e = AT_ERROR_INIT;
    char what[600];
    const char *pt;
    (void)r;

    a->busy = 0;
    switch (a->phase) {
    case A_LOOKUP:   snprintf(what, sizeof(what), "looking up the account at %s", ca_url(op)); break;
    case A_CREATE:   snprintf(what, sizeof(what), "registering an account at %s", ca_url(op)); break;
    case A_FETCH:    snprintf(what, sizeof(what), "reading the account at %s", ca_url(op)); break;
    case A_UPDATE:   snprintf(what, sizeof(what), "updating the account contacts at %s", ca_url(op)); break;
    case A_ROLLOVER: snprintf(what, sizeof(what), "rolling the account key over at %s", ca_url(op)); break;
    default:         snprintf(what, sizeof(what), "deactivating the account at %s", ca_url(op)); break;
    }
    if (at_op_check(resp, terr, what, now, &e) != 0) {
        pt = at_acme_problem_type(&e);
        if (a->phase == A_LOOKUP && pt && strcmp(pt, "accountDoesNotExist") == 0) {
            at_error_clear(&e);
            set_phase(op, A_CREATE);
            return;
        }
        if (a->phase == A_ROLLOVER && resp && resp->status == 409)
            err_append(&e, "; the new key already belongs to another account", NULL, NULL);
        explain(op, &e, resp);
        at_op_fail_err(op, &e);
        return;
    }
    switch (a->phase) {
    case A_LOOKUP:
    case A_CREATE:
        if (take_account(op, resp, what, a->phase == A_CREATE, &e) != 0) {
            at_op_fail_err(op, &e);
            return;
        }
        if (!resp->location) {
            at_op_fail(op, AT_ERR_PROTOCOL, "%s: the CA did not say the account URL (no Location header)", what);
            return;
        }
        break;
    case A_ROLLOVER:
        /* The CA now knows only the new key. */
        at_acme_client_set_account(op->client, a->new_key, at_acme_client_kid(op->client));
        if (take_account(op, resp, what, 0, &e) != 0)
            at_error_clear(&e);    /* the rollover happened; the body is a bonus */
        break;
    default:
        if (take_account(op, resp, what, a->phase == A_FETCH, &e) != 0) {
            at_op_fail_err(op, &e);
            return;
        }
        break;
    }
    set_phase(op, A_DONE);
}

static void account_free(at_acme_op *op)
{
    at_account_st *a = op->acct;
    if (!a)
        return;
    json_decref(a->contact);
    free(a->eab_kid);
    if (a->eab_key) {
        memset(a->eab_key, 0, strlen(a->eab_key));
        free(a->eab_key);
    }
    free(a->eab_alg);
    EVP_PKEY_free(a->new_key);
    free(a->terms_hint);
    free(a->eab_hint);
    free(a);
    op->acct = NULL;
}

static const at_op_vt account_vt = {
    account_advance,
    NULL,
    NULL,
    account_free
};

static int copy_opt(char **dst, const char *src)
{
    *dst = NULL;
    if (!src || !*src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

at_acme_op *at_acme_account_new(at_acme_client *c, at_account_action action,
                                const at_account_params *p, at_error *err)
{
    at_account_params none;
    at_acme_op *op;
    at_account_st *a;

    if (!p) {
        memset(&none, 0, sizeof(none));
        p = &none;
    }
    if (!c || action < AT_ACCOUNT_ENSURE || action > AT_ACCOUNT_DEACTIVATE) {
        at_error_set(err, AT_ERR_INTERNAL, "bad account operation");
        return NULL;
    }
    if (!at_acme_client_key(c)) {
        at_error_set(err, AT_ERR_INTERNAL, "account operation at %s without an account key",
                     at_acme_client_url(c));
        return NULL;
    }
    if (action == AT_ACCOUNT_ROLLOVER && !p->new_key) {
        at_error_set(err, AT_ERR_CONFIG, "account key rollover at %s needs the new key", at_acme_client_url(c));
        return NULL;
    }
    if (action != AT_ACCOUNT_ENSURE && !at_acme_client_kid(c)) {
        at_error_set(err, AT_ERR_CONFIG, "there is no registered account at %s yet", at_acme_client_url(c));
        return NULL;
    }
    op = at_op_new(c, AT_OP_ACCOUNT, &account_vt);
    if (!op || !(op->acct = a = calloc(1, sizeof(*a)))) {
        free(op);
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    a->action = action;
    a->accept_terms = p->accept_terms;
    if ((p->ncontact && !(a->contact = at_acme_contact_array(p->contact, p->ncontact))) ||
        copy_opt(&a->eab_kid, p->eab_kid) != 0 || copy_opt(&a->eab_key, p->eab_hmac_key) != 0 ||
        copy_opt(&a->eab_alg, p->eab_alg) != 0 || copy_opt(&a->terms_hint, p->terms_hint) != 0 ||
        copy_opt(&a->eab_hint, p->eab_hint) != 0) {
        at_acme_op_free(op);
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (action == AT_ACCOUNT_UPDATE_CONTACT && !a->contact && !(a->contact = json_array())) {
        at_acme_op_free(op);
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (p->new_key) {
        EVP_PKEY_up_ref(p->new_key);
        a->new_key = p->new_key;
    }
    if (action == AT_ACCOUNT_ENSURE && precheck(op, err) != 0) {
        at_acme_op_free(op);
        return NULL;
    }
    return op;
}
