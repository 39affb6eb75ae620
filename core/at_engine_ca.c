/*
 * at_engine_ca.c: per certificate authority, the engine needs the directory
 * and an account before any order. This file gets the CA to READY:
 * directory GET, then the account from the store (or a new one, whose key is
 * stored before it is registered so a crash never orphans an account).
 */
#include "at_engine_int.h"

#include <stdlib.h>
#include <string.h>

#include "at_time.h"

int at_engine_fetch_directory(at_engine *e, at_ca_rt *ca, at_error *err);

int at_engine_ca_init(at_engine *e, at_error *err)
{
    const at_conf *conf = e->conf;
    char ua[64];

    snprintf(ua, sizeof(ua), "autotls/%s", AT_VERSION);
    e->cas = calloc(conf->ncas ? conf->ncas : 1, sizeof(*e->cas));
    if (!e->cas)
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < conf->ncas; i++) {
        at_ca_rt *ca = &e->cas[i];
        const at_ca_conf *cc = &conf->cas[i];
        at_driver_opts o;

        ca->index = i;
        ca->conf = cc;
        at_error_init(&ca->err);
        memset(&o, 0, sizeof(o));
        o.ca_trust_file = cc->trust_file;
        o.client_cert_file = cc->client_cert;
        o.client_key_file = cc->client_key;
        o.proxy = cc->proxy;
        o.request_timeout_ms = (conf->request_timeout > 0 ? conf->request_timeout : 30) * 1000;
        o.connect_timeout_ms = o.request_timeout_ms < 10000 ? o.request_timeout_ms : 10000;
        o.max_connections = conf->concurrency > 0 ? conf->concurrency : 8;
        o.user_agent = ua;
        o.trust_hint = conf->hints.ca_trust;
        ca->drv = at_driver_new(&o, err);
        if (!ca->drv)
            return at_error_prefix(err, "CA %s", cc->url);
        ca->client = at_acme_client_new(cc->url, err);
        if (!ca->client)
            return at_error_prefix(err, "CA %s", cc->url);
        /* Some CAs reject a share of nonces on purpose; five re-signs is
         * not always enough to get through a streak. */
        at_acme_client_set_nonce_retries(ca->client, 10);
    }
    return 0;
}

void at_engine_ca_free(at_engine *e)
{
    if (!e->cas)
        return;
    for (size_t i = 0; i < e->conf->ncas; i++) {
        at_ca_rt *ca = &e->cas[i];
        if (ca->drv)
            at_driver_free(ca->drv);
        if (ca->client)
            at_acme_client_free(ca->client);
        at_error_clear(&ca->err);
    }
    free(e->cas);
    e->cas = NULL;
}

/* The CA could not be made ready: every task waiting for it fails with the
 * reason now (each certificate then backs off on its own); the next task
 * that needs the CA tries again from the start. */
static void ca_fail(at_engine *e, at_ca_rt *ca, at_error *err)
{
    at_log(&e->log, AT_LOG_ERROR, "CA %s: %s", ca->conf->url, err->msg);
    ca->state = AT_CA_IDLE;
    ca->acct_task = NULL;
    for (at_task *t = e->tasks; t; t = t->next) {
        if (t->done || t->op || t->ca != ca->index)
            continue;
        at_error_copy(&t->err, err);
        at_engine_task_finish(e, t);
    }
    at_error_move(&ca->err, err);
    ca->failed_at = at_time_now();
}

void at_engine_ca_reset(at_engine *e, at_ca_rt *ca)
{
    (void)e;
    if (ca->state == AT_CA_READY)
        ca->state = AT_CA_IDLE;
}

/* Load the stored account, or create and store a key for a new one. */
static int ca_account_key(at_engine *e, at_ca_rt *ca, at_account_rec *rec, at_error *err)
{
    at_error lerr = AT_ERROR_INIT;

    memset(rec, 0, sizeof(*rec));
    if (at_store_account_load(e->store, ca->conf->url, rec, &lerr) == 0) {
        const char *status = rec->account ? json_string_value(json_object_get(rec->account, "status")) : NULL;
        at_error_clear(&lerr);
        if (!status || strcmp(status, "deactivated") != 0)
            return 0;
        /* A deactivated account can never order again: start a new one. */
        at_log(&e->log, AT_LOG_NOTICE, "the account at %s is deactivated; registering a new one",
               ca->conf->url);
        at_account_rec_free(rec);
    } else if (lerr.code != AT_ERR_NOTFOUND && lerr.code != AT_ERR_CORRUPT) {
        at_error_move(err, &lerr);
        return -1;
    }
    if (lerr.code == AT_ERR_CORRUPT)
        at_log(&e->log, AT_LOG_ERROR, "%s; registering a new account", lerr.msg);
    at_error_clear(&lerr);

    at_key_spec spec = AT_KEY_SPEC_DEFAULT;
    EVP_PKEY *key = at_key_generate(&spec, err);
    at_buf pem = AT_BUF_INIT;
    if (!key)
        return -1;
    if (at_key_to_pem(key, &pem, err) != 0) {
        EVP_PKEY_free(key);
        return -1;
    }
    EVP_PKEY_free(key);
    memset(rec, 0, sizeof(*rec));
    rec->ca_url = strdup(ca->conf->url);
    rec->key_pem = at_buf_detach(&pem);
    if (!rec->ca_url || !rec->key_pem) {
        at_account_rec_free(rec);
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    }
    if (at_store_account_save(e->store, rec, err) != 0) {
        at_account_rec_free(rec);
        return -1;
    }
    return 0;
}

static int ca_start_account(at_engine *e, at_ca_rt *ca, at_error *err)
{
    at_account_rec rec;
    EVP_PKEY *key;
    at_account_params p;
    at_task *t;

    if (ca_account_key(e, ca, &rec, err) != 0)
        return -1;
    key = at_key_from_pem(rec.key_pem, strlen(rec.key_pem), err);
    if (!key) {
        at_account_rec_free(&rec);
        return at_error_prefix(err, "the account key for %s in %s", ca->conf->url,
                               at_store_describe(e->store));
    }
    at_acme_client_set_account(ca->client, key, rec.url);
    EVP_PKEY_free(key);
    if (rec.url) {
        /* Known account: trust it until the CA says otherwise. */
        at_account_rec_free(&rec);
        ca->state = AT_CA_READY;
        return 0;
    }
    at_account_rec_free(&rec);

    t = at_engine_task_new(e, AT_TASK_ACCOUNT, ca->index, -1);
    if (!t)
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    t->acct_action = AT_ACCOUNT_ENSURE;
    memset(&p, 0, sizeof(p));
    p.contact = (const char *const *)ca->conf->contact;
    p.ncontact = ca->conf->ncontact;
    p.accept_terms = ca->conf->accept_terms;
    p.eab_kid = ca->conf->eab_kid;
    p.eab_hmac_key = ca->conf->eab_key;
    p.eab_alg = ca->conf->eab_alg;
    p.terms_hint = e->conf->hints.accept_terms;
    p.eab_hint = e->conf->hints.eab;
    t->op = at_acme_account_new(ca->client, AT_ACCOUNT_ENSURE, &p, err);
    if (!t->op) {
        t->done = 1;                 /* reaped by the loop */
        return -1;
    }
    ca->acct_task = t;
    ca->state = AT_CA_ACCOUNT;
    return 0;
}

at_ca_state at_engine_ca_advance(at_engine *e, at_ca_rt *ca, time_t now)
{
    at_error err = AT_ERROR_INIT;
    (void)now;

    if (ca->state == AT_CA_IDLE) {
        at_error_clear(&ca->err);
        if (at_acme_client_dir(ca->client)) {
            if (ca_start_account(e, ca, &err) != 0)
                ca_fail(e, ca, &err);
        } else if (at_engine_fetch_directory(e, ca, &err) != 0) {
            ca_fail(e, ca, &err);
        } else {
            ca->state = AT_CA_DIRECTORY;
        }
    }
    at_error_clear(&err);
    return ca->state;
}

void at_engine_ca_directory_done(at_engine *e, at_slot *s, time_t now)
{
    at_ca_rt *ca = s->ca;
    at_error err = AT_ERROR_INIT;
    (void)now;

    if (!ca || ca->state != AT_CA_DIRECTORY)
        return;
    if (s->has_terr) {
        at_error_copy(&err, &s->terr);
        at_error_prefix(&err, "fetching the directory");
        ca_fail(e, ca, &err);
    } else if (at_acme_problem(&s->resp, "directory", now, &err) != 0 ||
               at_acme_client_set_directory(ca->client, &s->resp, &err) != 0) {
        ca_fail(e, ca, &err);
    } else if (ca_start_account(e, ca, &err) != 0) {
        ca_fail(e, ca, &err);
    }
    at_error_clear(&err);
}

/* Save what an account operation changed. */
static void save_account(at_engine *e, at_ca_rt *ca, at_task *t)
{
    at_account_rec rec;
    at_error err = AT_ERROR_INIT;
    at_buf pem = AT_BUF_INIT;
    const json_t *acct = at_acme_op_account(t->op);
    const char *url = at_acme_op_account_url(t->op);

    memset(&rec, 0, sizeof(rec));
    rec.ca_url = (char *)ca->conf->url;
    rec.url = (char *)(url ? url : at_acme_client_kid(ca->client));
    rec.account = (json_t *)acct;
    if (at_key_to_pem(t->new_key ? t->new_key : at_acme_client_key(ca->client), &pem, &err) != 0 ||
        (rec.key_pem = (char *)at_buf_str(&pem), at_store_account_save(e->store, &rec, &err) != 0))
        at_log(&e->log, AT_LOG_ERROR, "saving the account for %s: %s", ca->conf->url, err.msg);
    at_buf_free_secret(&pem);
    at_error_clear(&err);
}

void at_engine_ca_account_done(at_engine *e, at_task *t)
{
    at_ca_rt *ca = &e->cas[t->ca];
    const json_t *acct = t->op ? at_acme_op_account(t->op) : NULL;

    if (t->acct_action == AT_ACCOUNT_ENSURE && ca->acct_task == t) {
        ca->acct_task = NULL;
        if (!t->ok) {
            at_error err = AT_ERROR_INIT;
            at_error_copy(&err, &t->err);
            ca_fail(e, ca, &err);
            return;
        }
        at_acme_client_set_account(ca->client, at_acme_client_key(ca->client),
                                   at_acme_op_account_url(t->op));
        save_account(e, ca, t);
        ca->state = AT_CA_READY;
        at_log(&e->log, AT_LOG_NOTICE, "account %s at %s ready", at_acme_op_account_url(t->op),
               ca->conf->url);
        return;
    }
    if (!t->ok)
        return;
    if (acct)
        t->result = json_deep_copy(acct);
    switch (t->acct_action) {
    case AT_ACCOUNT_ROLLOVER:
        /* The CA now knows only the new key: store it before anything else. */
        save_account(e, ca, t);
        at_acme_client_set_account(ca->client, t->new_key, at_acme_client_kid(ca->client));
        at_log(&e->log, AT_LOG_NOTICE, "account key for %s rolled over", ca->conf->url);
        break;
    case AT_ACCOUNT_DEACTIVATE:
        save_account(e, ca, t);
        ca->state = AT_CA_IDLE;
        at_log(&e->log, AT_LOG_NOTICE, "account at %s deactivated", ca->conf->url);
        break;
    default:
        save_account(e, ca, t);
        break;
    }
}
