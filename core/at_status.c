/*
 * at_status.c: the status model. For every configured certificate, what the
 * store knows (certificate facts, in-flight order, renewal state) and what
 * the planner makes of it, as one JSON document that the renderers show.
 * Only public facts are copied: never a key, never the EAB key.
 */
#include "at_status.h"

#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "at_json.h"
#include "at_planner.h"
#include "at_time.h"
#include "at_x509.h"

#ifndef AT_VERSION
#define AT_VERSION "0.0.0"
#endif

static json_t *time_or_null(time_t t)
{
    char buf[AT_TIME_BUFSIZE];
    if (t <= 0)
        return json_null();
    return json_string(at_time_format(t, buf, sizeof(buf)));
}

static json_t *str_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

static time_t jtime(const json_t *o, const char *key)
{
    json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
    return json_is_integer(v) ? (time_t)json_integer_value(v) : 0;
}

/* What the store holds for one certificate. */
typedef struct cert_facts {
    int           have_cert;     /* a certificate that parses */
    at_cert_info  info;
    at_key_spec   key;           /* of the stored certificate; kind 0 if unknown */
    char         *ca_url;        /* issuing CA from meta */
    char         *challenge;     /* from meta */
    int           have_order;
    json_t       *state;         /* renewal state object, or NULL */
    at_error      store_err;     /* why the certificate could not be read */
} cert_facts;

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void facts_load(at_store *st, const at_cert_conf *cc, cert_facts *f)
{
    at_cert_rec rec;
    at_error err = AT_ERROR_INIT;
    json_t *cp = NULL;
    char *okey = NULL;

    memset(f, 0, sizeof(*f));
    at_error_init(&f->store_err);
    memset(&rec, 0, sizeof(rec));
    if (at_store_cert_load_public(st, cc->id, &rec, &err) == 0) {
        if (rec.chain_pem && at_cert_info_leaf_pem(rec.chain_pem, strlen(rec.chain_pem), &f->info, &err) == 0) {
            const char *k = at_json_str(rec.meta, "key");
            f->have_cert = 1;
            if (!k || at_key_spec_parse(k, &f->key, NULL) != 0)
                f->key.kind = 0;
            f->ca_url = dup_or_null(at_json_str(rec.meta, "ca"));
            f->challenge = dup_or_null(at_json_str(rec.meta, "challenge"));
        } else {
            at_error_prefix(&err, "%s/certs/%s/chain.pem",
                            at_store_path(st) ? at_store_path(st) : at_store_describe(st), cc->id);
            at_error_move(&f->store_err, &err);
        }
        at_cert_rec_free(&rec);
    } else if (err.code != AT_ERR_NOTFOUND) {
        at_error_move(&f->store_err, &err);
    }
    at_error_clear(&err);

    if (at_store_order_load(st, cc->id, &cp, &okey, &err) == 0)
        f->have_order = 1;
    json_decref(cp);
    if (okey) {
        OPENSSL_cleanse(okey, strlen(okey));
        free(okey);
    }
    at_error_clear(&err);

    if (at_store_state_load(st, cc->id, &f->state, &err) != 0 || !json_is_object(f->state)) {
        json_decref(f->state);
        f->state = NULL;
    }
    at_error_clear(&err);
}

static void facts_free(cert_facts *f)
{
    if (f->have_cert)
        at_cert_info_free(&f->info);
    free(f->ca_url);
    free(f->challenge);
    json_decref(f->state);
    at_error_clear(&f->store_err);
}

static void plan_of(const at_conf *conf, const at_cert_conf *cc, const cert_facts *f, time_t now,
                    at_plan *plan)
{
    at_plan_input in;
    at_plan_policy pol;
    time_t force, last_ok;

    memset(&in, 0, sizeof(in));
    in.conf = cc;
    in.conf_ca_url = cc->ca < conf->ncas ? conf->cas[cc->ca].url : NULL;
    if (f->have_cert) {
        in.have_cert = 1;
        in.not_before = f->info.not_before;
        in.not_after = f->info.not_after;
        in.names = (const char *const *)f->info.names;
        in.nnames = f->info.nnames;
        in.key = f->key;
        in.ca_url = f->ca_url;
    }
    in.have_order = f->have_order;
    in.failures = (int)jtime(f->state, "failures");
    in.last_failure = jtime(f->state, "last_attempt");
    in.retry_after = jtime(f->state, "retry_after");
    in.revoked = json_is_true(json_object_get(f->state, "revoked"));
    in.ari_pick = jtime(json_object_get(f->state, "ari"), "pick");
    force = jtime(f->state, "force");
    last_ok = jtime(f->state, "last_success");
    in.force = force > last_ok ? force : 0;
    pol.retry_base = conf->retry_base;
    pol.retry_max = conf->retry_max;
    /* rnd only moves a backoff; the engine's own choice is in next_attempt */
    at_plan_cert(&in, &pol, now, 0, plan);
}

static const char *state_name(const cert_facts *f, time_t now)
{
    int usable = f->have_cert && f->info.not_after > now &&
                 !json_is_true(json_object_get(f->state, "revoked"));

    if (jtime(f->state, "failures") > 0 || f->store_err.code != AT_OK)
        return "error";
    if (usable)
        return f->have_order ? "renewing" : "valid";
    if (f->have_order || !jtime(f->state, "last_attempt"))
        return "pending";
    return "missing";
}

static json_t *error_json(const cert_facts *f)
{
    json_t *le = json_object_get(f->state, "last_error"), *p;
    const char *code, *msg;

    if (!json_is_object(le)) {
        if (f->store_err.code == AT_OK)
            return json_null();
        return json_pack("{s:s, s:s, s:n}", "code", at_errcode_name(f->store_err.code),
                         "message", f->store_err.msg, "problem");
    }
    code = at_json_str(le, "code");
    msg = at_json_str(le, "message");
    p = json_object_get(le, "problem");
    return json_pack("{s:s, s:s, s:O}", "code", code ? code : "unknown",
                     "message", msg ? msg : "unknown error",
                     "problem", json_is_object(p) ? p : json_null());
}

static json_t *ari_json(const cert_facts *f)
{
    json_t *ari = json_object_get(f->state, "ari");

    if (!json_is_object(ari) || !jtime(ari, "start") || !jtime(ari, "end"))
        return json_null();
    return json_pack("{s:o, s:o, s:o}", "start", time_or_null(jtime(ari, "start")),
                     "end", time_or_null(jtime(ari, "end")),
                     "explanation", str_or_null(at_json_str(ari, "explanation")));
}

static time_t next_attempt(const cert_facts *f, const at_plan *plan, time_t now)
{
    time_t t = plan->due, recorded = jtime(f->state, "next_attempt"),
           retry = jtime(f->state, "retry_after");

    if (!f->have_cert && !f->have_order && plan->reason == AT_PLAN_NONE)
        return 0;
    /* After a failure the engine drew its own jittered moment; show that. */
    if (jtime(f->state, "failures") > 0 && recorded > 0)
        t = recorded;
    if (retry > t)
        t = retry;
    return t < now ? now : t;
}

static json_t *cert_json(const at_conf *conf, const at_cert_conf *cc, at_store *st, time_t now)
{
    cert_facts f;
    at_plan plan;
    json_t *c, *names;
    const char *reason = NULL;

    facts_load(st, cc, &f);
    plan_of(conf, cc, &f, now, &plan);
    if (plan.reason != AT_PLAN_NONE)
        reason = at_plan_reason_name(plan.reason);
    else if (f.have_cert)
        reason = at_plan_reason_name(plan.renew_why);

    names = json_array();
    for (size_t i = 0; names && i < cc->nnames; i++)
        json_array_append_new(names, json_string(cc->names[i]));
    c = json_pack("{s:s, s:s, s:o, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:o, s:o}",
                  "id", cc->id,
                  "site", cc->site ? cc->site : "",
                  "names", names ? names : json_array(),
                  "key_type", at_key_spec_name(&cc->key),
                  "state", state_name(&f, now),
                  "ca", str_or_null(cc->ca < conf->ncas ? conf->cas[cc->ca].url : NULL),
                  "not_before", f.have_cert ? time_or_null(f.info.not_before) : json_null(),
                  "not_after", f.have_cert ? time_or_null(f.info.not_after) : json_null(),
                  "renew_at", f.have_cert ? time_or_null(plan.renew_at) : json_null(),
                  "renew_reason", str_or_null(reason),
                  "next_attempt", time_or_null(next_attempt(&f, &plan, now)),
                  "serial", f.have_cert ? str_or_null(f.info.serial) : json_null(),
                  "issuer", f.have_cert ? str_or_null(f.info.issuer_cn) : json_null(),
                  "challenge", f.have_cert ? str_or_null(f.challenge) : json_null(),
                  "failures", (json_int_t)jtime(f.state, "failures"),
                  "ari", ari_json(&f),
                  "last_error", error_json(&f));
    facts_free(&f);
    return c;
}

json_t *at_status_collect(const at_conf *conf, at_store *st, time_t now, at_error *err)
{
    json_t *root, *certs;

    if (!conf || !st) {
        at_error_set(err, AT_ERR_INTERNAL, "status: no configuration or store");
        return NULL;
    }
    certs = json_array();
    root = json_pack("{s:s, s:o, s:o}", "version", AT_VERSION, "generated_at", time_or_null(now),
                     "certificates", certs ? certs : json_array());
    if (!root || !certs) {
        json_decref(root);
        at_error_set(err, AT_ERR_INTERNAL, "status: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < conf->ncerts; i++) {
        json_t *c = cert_json(conf, &conf->certs[i], st, now);
        if (!c || json_array_append_new(certs, c) != 0) {
            json_decref(root);
            at_error_set(err, AT_ERR_INTERNAL, "status: out of memory");
            return NULL;
        }
    }
    return root;
}

/* ---------------------------------------------------------------- query */

/* The value of `key` in a query string ("a=1&format=json"), copied. */
static int query_param(const char *q, const char *key, char *out, size_t size)
{
    size_t kl = strlen(key);

    while (q && *q) {
        const char *amp = strchr(q, '&'), *end = amp ? amp : q + strlen(q);
        if ((size_t)(end - q) > kl && strncmp(q, key, kl) == 0 && q[kl] == '=') {
            size_t vl = (size_t)(end - q) - kl - 1;
            if (vl >= size)
                return -1;
            memcpy(out, q + kl + 1, vl);
            out[vl] = '\0';
            return 0;
        }
        q = amp ? amp + 1 : NULL;
    }
    return -1;
}

int at_status_render_query(const json_t *status, const char *query, at_buf *out,
                           const char **content_type)
{
    char fmt[32];

    if (query_param(query, "format", fmt, sizeof(fmt)) == 0) {
        if (strcmp(fmt, "json") == 0) {
            *content_type = "application/json";
            return at_status_render_json(status, out);
        }
        if (strcmp(fmt, "prometheus") == 0 || strcmp(fmt, "metrics") == 0) {
            *content_type = "text/plain; version=0.0.4; charset=utf-8";
            return at_status_render_prometheus(status, out);
        }
    }
    *content_type = "text/html; charset=utf-8";
    return at_status_render_html(status, out);
}
