/*
 * at_engine_cert.c: the life of one managed certificate inside the engine:
 * read what the store knows, ask the planner, start (or resume) an order,
 * and record the outcome — certificate set, live table, renewal state,
 * notify command — so that nothing is lost if the process dies at any point.
 */
#include "at_engine_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "at_time.h"
#include "at_x509.h"
#include "at_json.h"

#define AT_ARI_DEFAULT_RECHECK  (6 * 3600)
#define AT_ARI_ERROR_RECHECK    (3600)
#define AT_ARI_NONE_RECHECK     (24 * 3600)   /* the CA offers no renewalInfo */
#define AT_LOCK_RETRY           30

/* The renewal state of certificate i: what is queued for the store writer,
 * if anything, else what the store has. */
static json_t *state_load(at_engine *e, size_t i)
{
    const char *id = e->conf->certs[i].id;
    json_t *st = at_persist_state(e, i);
    at_error err = AT_ERROR_INIT;
    if (st)
        return st;
    if (at_store_state_load(e->store, id, &st, &err) != 0 || !json_is_object(st)) {
        if (err.code != AT_ERR_NOTFOUND && err.code != AT_OK)
            at_log(&e->log, AT_LOG_WARN, "renewal state of %s: %s (starting afresh)", id, err.msg);
        json_decref(st);
        st = json_object();
    }
    at_error_clear(&err);
    return st;
}

/* Written now; after whatever is queued for it, which it must not overtake. */
static void state_save(at_engine *e, size_t i, json_t *st)
{
    const char *id = e->conf->certs[i].id;
    at_error err = AT_ERROR_INIT;
    at_persist_wait(e, i);
    if (at_store_state_save(e->store, id, st, &err) != 0)
        at_log(&e->log, AT_LOG_ERROR, "saving the renewal state of %s: %s", id, err.msg);
    at_error_clear(&err);
}

static time_t jtime(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (time_t)json_integer_value(v) : 0;
}

static unsigned long backoff_salt;

static void backoff_salt_init(void)
{
    backoff_salt = at_engine_random();
}

/* The jitter of a retry is drawn once per failure. A certificate is
 * re-planned whenever its retry falls due; a fresh draw each time would
 * push the retry later again and again (to the top of the jitter range, in
 * step with every other certificate that failed with it) and the next
 * attempt already announced would not be kept. So the draw is a function
 * of the certificate and the failure's time, salted per process so that
 * servers sharing a certificate still spread out. */
static unsigned long backoff_rnd(const at_cert_conf *cc, time_t failed_at)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    uint64_t h = 1469598103934665603ULL;            /* FNV-1a, then splitmix64 */

    pthread_once(&once, backoff_salt_init);
    for (const char *p = cc->id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h ^= (uint64_t)failed_at + 0x9e3779b97f4a7c15ULL + (uint64_t)backoff_salt;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    return (unsigned long)(h ^ (h >> 31));
}

long at_engine_cert_find(const at_engine *e, const char *id_or_name)
{
    char norm[256];
    at_error err = AT_ERROR_INIT;
    for (size_t i = 0; i < e->conf->ncerts; i++)
        if (strcmp(e->conf->certs[i].id, id_or_name) == 0)
            return (long)i;
    if (at_name_normalize(id_or_name, norm, sizeof(norm), &err) != 0) {
        at_error_clear(&err);
        return -1;
    }
    for (size_t i = 0; i < e->conf->ncerts; i++)
        for (size_t k = 0; k < e->conf->certs[i].nnames; k++)
            if (strcmp(e->conf->certs[i].names[k], norm) == 0)
                return (long)i;
    return -1;
}

void at_engine_cert_record_force(at_engine *e, size_t i, time_t now)
{
    json_t *st = state_load(e, i);
    json_object_set_new(st, "force", json_integer((json_int_t)now));
    /* A forced renewal is a fresh start: earlier failures do not delay it. */
    json_object_set_new(st, "failures", json_integer(0));
    json_object_del(st, "retry_after");
    state_save(e, i, st);
    json_decref(st);
    e->certs[i].dirty = 1;
    e->certs[i].forced = 1;
    e->certs[i].mem_failures = 0;
    e->certs[i].mem_last_failure = 0;
    e->certs[i].mem_retry_after = 0;
}

/* ------------------------------------------------------------- planning */

void at_engine_cert_replan(at_engine *e, size_t i, time_t now)
{
    const at_cert_conf *cc = &e->conf->certs[i];
    at_cert_rt *rt = &e->certs[i];
    at_cert_rec rec;
    at_cert_info info;
    at_plan_input in;
    at_plan_policy pol;
    at_error err = AT_ERROR_INIT;
    json_t *st, *cp = NULL, *ari;
    char *okey = NULL;
    int have_info = 0;

    memset(&rec, 0, sizeof(rec));
    memset(&info, 0, sizeof(info));
    memset(&in, 0, sizeof(in));
    in.conf = cc;
    in.conf_ca_url = e->conf->cas[cc->ca].url;

    if (rt->fresh) {
        /* Just stored by this process, with this CA and key. */
        info = rt->fresh_info;
        rt->fresh = 0;
        memset(&rt->fresh_info, 0, sizeof(rt->fresh_info));
        have_info = 1;
        in.ca_url = e->conf->cas[cc->ca].url;
        in.key = cc->key;
    } else if (at_store_cert_load(e->store, cc->id, &rec, &err) == 0) {
        if (at_cert_info_pem(rec.chain_pem, strlen(rec.chain_pem), &info, &err) == 0) {
            const char *kspec = at_json_str(rec.meta, "key");
            have_info = 1;
            in.ca_url = at_json_str(rec.meta, "ca");
            if (!kspec || at_key_spec_parse(kspec, &in.key, NULL) != 0)
                in.key = cc->key;    /* unknown: do not renew for this reason alone */
        } else {
            at_log(&e->log, AT_LOG_ERROR, "certificate %s: %s", cc->id, err.msg);
        }
    } else if (err.code != AT_ERR_NOTFOUND) {
        at_log(&e->log, AT_LOG_ERROR, "certificate %s: %s", cc->id, err.msg);
    }
    at_error_clear(&err);
    if (have_info) {
        in.have_cert = 1;
        in.not_before = info.not_before;
        in.not_after = info.not_after;
        in.names = (const char *const *)info.names;
        in.nnames = info.nnames;
    }

    /* An order whose removal is queued is finished, not in flight. */
    if (!at_persist_finishing(e, i) && at_store_order_load(e->store, cc->id, &cp, &okey, &err) == 0)
        in.have_order = 1;
    json_decref(cp);
    if (okey)
        free(okey);
    at_error_clear(&err);

    st = state_load(e, i);
    in.failures = (int)jtime(st, "failures");
    in.last_failure = jtime(st, "last_attempt");
    in.retry_after = jtime(st, "retry_after");
    in.revoked = json_is_true(json_object_get(st, "revoked"));
    ari = json_object_get(st, "ari");
    in.ari_pick = jtime(ari, "pick");
    /* A force request stays in the state until an order succeeds. */
    in.force = jtime(st, "force");
    /* What this process recorded but the store did not keep (disk full). */
    if (rt->forced && !in.force)
        in.force = now;
    if (rt->mem_last_failure > in.last_failure) {
        in.failures = rt->mem_failures;
        in.last_failure = rt->mem_last_failure;
        if (rt->mem_retry_after > in.retry_after)
            in.retry_after = rt->mem_retry_after;
    }
    pol.retry_base = e->conf->retry_base > 0 ? e->conf->retry_base : 60;
    pol.retry_max = e->conf->retry_max > 0 ? e->conf->retry_max : 21600;
    at_plan_cert(&in, &pol, now, backoff_rnd(cc, in.last_failure), &rt->plan);
    rt->have_cert = in.have_cert && !in.revoked;
    rt->ari_next = rt->have_cert ? (jtime(ari, "next_check") ? jtime(ari, "next_check") : now) : 0;
    rt->dirty = 0;
    rt->planned_at = now;

    /* Keep the status page's "next attempt" truthful. */
    if (rt->plan.reason != AT_PLAN_NONE && rt->plan.due > now &&
        jtime(st, "next_attempt") != rt->plan.due && rt->plan.in_backoff) {
        json_object_set_new(st, "next_attempt", json_integer((json_int_t)rt->plan.due));
        state_save(e, i, st);
    }
    json_decref(st);
    if (have_info)
        at_cert_info_free(&info);
    at_cert_rec_free(&rec);
}

/* ----------------------------------------------------------------- orders */

/* Does a running order share a name with certificate i? Two orders for one
 * name would fight over its tls-alpn-01 certificate; run them one after the
 * other instead, which also lets the CA reuse the first one's authorization. */
static int overlaps_running(const at_engine *e, size_t i)
{
    const at_cert_conf *a = &e->conf->certs[i];
    for (size_t j = 0; j < e->conf->ncerts; j++) {
        const at_cert_conf *b = &e->conf->certs[j];
        if (j == i || !e->certs[j].running)
            continue;
        for (size_t x = 0; x < a->nnames; x++)
            for (size_t y = 0; y < b->nnames; y++)
                if (strcmp(a->names[x], b->names[y]) == 0)
                    return 1;
    }
    return 0;
}

int at_engine_cert_start(at_engine *e, size_t i, time_t now)
{
    const at_cert_conf *cc = &e->conf->certs[i];
    at_cert_rt *rt = &e->certs[i];
    at_store_lock *lk = NULL;
    at_error err = AT_ERROR_INIT;
    at_task *t;

    if (overlaps_running(e, i))
        return -1;                   /* starts when the other one ends */

    if (at_store_trylock(e->store, cc->id, &lk, &err) != 0) {
        /* Another process (an old generation during a graceful restart, or
         * the tool) works on it; look again shortly. */
        at_log(&e->log, err.code == AT_ERR_BUSY ? AT_LOG_INFO : AT_LOG_ERROR,
               "certificate %s: %s", cc->id, err.msg);
        rt->plan.due = now + AT_LOCK_RETRY;
        at_error_clear(&err);
        return -1;
    }
    t = at_engine_task_new(e, AT_TASK_ORDER, cc->ca, (long)i);
    if (!t) {
        at_store_unlock(lk);
        return -1;
    }
    t->lock = lk;
    t->reason = rt->plan.reason;
    t->is_renewal = rt->have_cert;
    rt->running = 1;
    e->orders_running++;
    at_log(&e->log, AT_LOG_NOTICE, "certificate %s (%s%s): ordering (%s)", cc->id, cc->names[0],
           cc->nnames > 1 ? " and others" : "", at_plan_reason_name(rt->plan.reason));
    return 0;
}

/* Same names (as sets) and key? Then a stored order can continue. */
static int checkpoint_matches(const at_cert_conf *cc, const json_t *cp)
{
    const json_t *names = json_object_get(cp, "names");
    const char *key = at_json_str(cp, "key");
    at_key_spec ks;
    size_t n;

    if (!json_is_array(names) || json_array_size(names) != cc->nnames)
        return 0;
    if (key && (at_key_spec_parse(key, &ks, NULL) != 0 || !at_key_spec_equal(&ks, &cc->key)))
        return 0;
    for (n = 0; n < cc->nnames; n++) {
        int found = 0;
        for (size_t k = 0; k < json_array_size(names); k++) {
            const char *s = json_string_value(json_array_get(names, k));
            if (s && strcmp(s, cc->names[n]) == 0)
                found = 1;
        }
        if (!found)
            return 0;
    }
    return 1;
}

/* The ARI id of the certificate being replaced, when the CA has renewalInfo. */
static char *replaces_id(at_engine *e, const at_cert_conf *cc, at_acme_client *client)
{
    const at_acme_dir *dir = at_acme_client_dir(client);
    at_cert_rec rec;
    at_cert_info info;
    at_error err = AT_ERROR_INIT;
    char *id = NULL;

    if (!dir || !dir->renewal_info)
        return NULL;
    memset(&rec, 0, sizeof(rec));
    if (at_store_cert_load(e->store, cc->id, &rec, &err) == 0) {
        const char *ca = at_json_str(rec.meta, "ca");
        if (ca && strcmp(ca, e->conf->cas[cc->ca].url) == 0 &&
            at_cert_info_pem(rec.chain_pem, strlen(rec.chain_pem), &info, &err) == 0) {
            if (info.ari_id[0])
                id = strdup(info.ari_id);
            at_cert_info_free(&info);
        }
    }
    at_cert_rec_free(&rec);
    at_error_clear(&err);
    return id;
}

int at_engine_cert_start_op(at_engine *e, at_task *t, time_t now)
{
    const at_cert_conf *cc = &e->conf->certs[t->cert];
    at_acme_client *client = e->cas[t->ca].client;
    at_order_params p;
    json_t *cp = NULL;
    char *key_pem = NULL, *replaces;
    at_error err = AT_ERROR_INIT;
    (void)now;

    memset(&p, 0, sizeof(p));
    p.names = (const char *const *)cc->names;
    p.nnames = cc->nnames;
    p.key = cc->key;
    p.challenges = cc->challenges;
    p.nchallenges = cc->nchallenges;
    p.profile = cc->profile;
    p.profile_hint = e->conf->hints.profile;
    p.preferred_chain = cc->preferred_chain;
    p.poll_timeout = e->conf->poll_timeout > 0 ? e->conf->poll_timeout : 300;
    p.use_preauthorization = 1;
    p.quick_poll_ms = AT_ENGINE_QUICK_POLL_MS;
    /* The store as this certificate's last writes left it. */
    at_persist_wait(e, (size_t)t->cert);
    replaces = t->is_renewal ? replaces_id(e, cc, client) : NULL;
    p.replaces = replaces;

    if (at_store_order_load(e->store, cc->id, &cp, &key_pem, &err) == 0) {
        EVP_PKEY *key = NULL;
        if (checkpoint_matches(cc, cp) &&
            (key = at_key_from_pem(key_pem, strlen(key_pem), &err)) != NULL) {
            t->op = at_acme_order_resume(client, &p, cp, key, &err);
            if (t->op)
                at_log(&e->log, AT_LOG_NOTICE, "certificate %s: resuming the order %s", cc->id,
                       at_json_str(cp, "order_url") ? at_json_str(cp, "order_url") : "");
        } else {
            at_log(&e->log, AT_LOG_INFO, "certificate %s: the stored order no longer matches the configuration; ordering afresh", cc->id);
        }
        EVP_PKEY_free(key);
        at_error_clear(&err);
    }
    json_decref(cp);
    free(key_pem);
    if (!t->op)
        t->op = at_acme_order_new(client, &p, &err);
    free(replaces);
    if (!t->op) {
        at_error_move(&t->err, &err);
        at_error_prefix(&t->err, "ordering %s", cc->names[0]);
        return -1;
    }
    return 0;
}

static void record_success(at_engine *e, at_task *t, time_t now)
{
    const at_cert_conf *cc = &e->conf->certs[t->cert];
    at_cert_rt *rt = &e->certs[t->cert];
    const char *chain = at_acme_op_chain_pem(t->op);
    at_buf key = AT_BUF_INIT;
    at_cert_info info;
    at_cert_rec rec;
    at_error err = AT_ERROR_INIT;
    json_t *meta, *st, *names;
    char tb[AT_TIME_BUFSIZE];
    uint64_t gen = 0;

    memset(&info, 0, sizeof(info));
    /* The chain was parsed and matched against the key when it was
     * downloaded; only the leaf is read again here. */
    if (!chain || at_key_to_pem(at_acme_op_cert_key(t->op), &key, &err) != 0 ||
        at_cert_info_leaf_pem(chain, strlen(chain), &info, &err) != 0) {
        t->ok = 0;
        if (err.code == AT_OK)
            at_error_set(&err, AT_ERR_PROTOCOL, "the CA delivered no certificate");
        at_error_move(&t->err, &err);
        at_buf_free_secret(&key);
        return;
    }
    names = json_array();
    for (size_t k = 0; k < cc->nnames; k++)
        json_array_append_new(names, json_string(cc->names[k]));
    meta = json_pack("{s:o, s:s, s:s, s:I, s:I, s:s, s:s, s:I, s:s?, s:s?, s:s}",
                     "names", names,
                     "key", at_key_spec_name(&cc->key),
                     "ca", e->conf->cas[cc->ca].url,
                     "not_before", (json_int_t)info.not_before,
                     "not_after", (json_int_t)info.not_after,
                     "serial", info.serial,
                     "issuer", info.issuer_cn,
                     "issued_at", (json_int_t)now,
                     "challenge", at_acme_op_challenge_used(t->op),
                     "order_url", at_acme_op_order_url(t->op),
                     "ari_id", info.ari_id);
    memset(&rec, 0, sizeof(rec));
    rec.id = cc->id;
    rec.chain_pem = (char *)chain;
    rec.key_pem = (char *)at_buf_str(&key);
    rec.meta = meta;
    if (!meta || at_store_cert_save_checked(e->store, &rec, &err) != 0) {
        /* Without a stored copy the certificate would be lost at the next
         * restart; keep the order so that it can be downloaded again. */
        t->ok = 0;
        if (err.code == AT_OK)
            at_error_set(&err, AT_ERR_INTERNAL, "out of memory");
        at_error_move(&t->err, &err);
        at_error_prefix(&t->err, "storing the new certificate for %s", cc->names[0]);
        json_decref(meta);
        at_cert_info_free(&info);
        at_buf_free_secret(&key);
        return;
    }
    json_decref(meta);

    /* Serve it: under the names it really covers. */
    if (at_live_put_cert(e->live, cc->id, (const char *const *)info.names, info.nnames, cc->key.kind,
                         chain, at_buf_str(&key), &gen, &err) != 0)
        at_log(&e->log, AT_LOG_ERROR, "certificate %s is stored but cannot be served yet: %s",
               cc->id, err.msg);
    at_error_clear(&err);

    rt->forced = 0;
    rt->mem_failures = 0;
    rt->mem_last_failure = 0;
    rt->mem_retry_after = 0;
    st = state_load(e, (size_t)t->cert);
    json_object_set_new(st, "failures", json_integer(0));
    json_object_set_new(st, "last_attempt", json_integer((json_int_t)now));
    json_object_set_new(st, "last_success", json_integer((json_int_t)now));
    json_object_set_new(st, "last_error", json_null());
    json_object_del(st, "next_attempt");
    json_object_del(st, "retry_after");
    json_object_del(st, "ari");
    json_object_del(st, "force");
    json_object_set_new(st, "revoked", json_false());
    /* The certificate is stored and served: removing the finished order
     * and recording the success need not hold up the other orders. The
     * store lock goes with them and is released once they are written. */
    at_persist_finish(e, (size_t)t->cert, st, t->lock);
    t->lock = NULL;

    at_log(&e->log, AT_LOG_NOTICE, "certificate %s (%s): %s, serial %s, valid until %s, served now (generation %llu)",
           cc->id, cc->names[0], t->is_renewal ? "renewed" : "issued", info.serial,
           at_time_format(info.not_after, tb, sizeof(tb)), (unsigned long long)gen);
    if (rt->fresh)
        at_cert_info_free(&rt->fresh_info);
    rt->fresh_info = info;           /* for the next plan */
    rt->fresh = 1;
    at_buf_free_secret(&key);
    at_engine_event(e, t->is_renewal ? "renewed" : "issued", cc, NULL);
}

static void record_failure(at_engine *e, at_task *t, time_t now)
{
    const at_cert_conf *cc = &e->conf->certs[t->cert];
    at_cert_rt *rt = &e->certs[t->cert];
    json_t *st = state_load(e, (size_t)t->cert), *ej;
    int stored = (int)jtime(st, "failures");
    int failures = (rt->mem_last_failure > jtime(st, "last_attempt") ? rt->mem_failures : stored) + 1;
    at_plan_policy pol;
    long delay;
    const char *ptype = at_acme_problem_type(&t->err);

    pol.retry_base = e->conf->retry_base > 0 ? e->conf->retry_base : 60;
    pol.retry_max = e->conf->retry_max > 0 ? e->conf->retry_max : 21600;
    delay = at_plan_backoff(failures, &pol, backoff_rnd(cc, now));
    json_object_set_new(st, "failures", json_integer(failures));
    json_object_set_new(st, "last_attempt", json_integer((json_int_t)now));
    ej = at_error_to_json(&t->err);
    json_object_set_new(st, "last_error", ej ? ej : json_null());
    if (t->err.retry_after >= 0) {
        time_t not_before = at_time_after(now, t->err.retry_after);
        json_object_set_new(st, "retry_after", json_integer((json_int_t)not_before));
        if (not_before - now > delay)
            delay = (long)(not_before - now);
    } else {
        json_object_del(st, "retry_after");
    }
    json_object_set_new(st, "next_attempt", json_integer((json_int_t)(now + delay)));
    rt->mem_failures = failures;
    rt->mem_last_failure = now;
    rt->mem_retry_after = jtime(st, "retry_after");
    state_save(e, (size_t)t->cert, st);
    json_decref(st);

    if (ptype && (strcmp(ptype, "accountDoesNotExist") == 0 || strcmp(ptype, "unauthorized") == 0)) {
        /* The stored account may be gone (deactivated elsewhere, CA reset):
         * look it up again before the next order. */
        at_engine_ca_reset(e, &e->cas[cc->ca]);
    }
    at_log(&e->log, AT_LOG_ERROR, "certificate %s (%s): %s; next attempt in %ld s (failure %d)",
           cc->id, cc->names[0], t->err.msg, delay, failures);
    at_engine_event(e, "failed", cc, &t->err);
}

void at_engine_cert_done(at_engine *e, at_task *t, time_t now)
{
    at_cert_rt *rt = &e->certs[t->cert];

    if (t->ok)
        record_success(e, t, now);   /* may turn into a failure (store full) */
    if (!t->ok) {
        if (t->err.code == AT_ERR_CANCELLED) {
            at_log(&e->log, AT_LOG_INFO, "certificate %s: order interrupted; it resumes on the next start",
                   e->conf->certs[t->cert].id);
        } else {
            record_failure(e, t, now);
            rt->failed_now = 1;
        }
    }
    rt->running = 0;
    rt->dirty = 1;
    if (e->orders_running > 0)
        e->orders_running--;
    if (t->lock) {
        at_store_unlock(t->lock);
        t->lock = NULL;
    }
}

/* ------------------------------------------------------------------ ARI */

void at_engine_ari_start(at_engine *e, size_t i, time_t now)
{
    const at_acme_dir *dir = at_acme_client_dir(e->cas[e->conf->certs[i].ca].client);
    at_task *t;

    /* A CA whose directory has no renewalInfo has nothing to ask: look at
     * the directory again in a day, without a task or a state write for
     * every certificate just obtained. */
    if (dir && !dir->renewal_info) {
        e->certs[i].ari_next = now + AT_ARI_NONE_RECHECK;
        return;
    }
    t = at_engine_task_new(e, AT_TASK_ARI, e->conf->certs[i].ca, (long)i);
    if (t)
        e->certs[i].ari_running = 1;
}

int at_engine_ari_start_op(at_engine *e, at_task *t, time_t now)
{
    const at_cert_conf *cc = &e->conf->certs[t->cert];
    at_acme_client *client = e->cas[t->ca].client;
    const at_acme_dir *dir = at_acme_client_dir(client);
    at_cert_rec rec;
    at_error err = AT_ERROR_INIT;
    (void)now;

    if (!dir || !dir->renewal_info) {
        at_error_set(&t->err, AT_ERR_NOTFOUND, "the CA has no renewalInfo");
        return -1;
    }
    /* The chain names the certificate; the key is not needed. */
    memset(&rec, 0, sizeof(rec));
    if (at_store_cert_load_public(e->store, cc->id, &rec, &err) != 0) {
        at_error_move(&t->err, &err);
        return -1;
    }
    t->op = at_acme_ari_new(client, rec.chain_pem, &err);
    at_cert_rec_free(&rec);
    if (!t->op) {
        at_error_move(&t->err, &err);
        return -1;
    }
    return 0;
}

/* When we obtained the current certificate (CAs backdate notBefore, so
 * that is no guide). */
static time_t cert_obtained_at(at_engine *e, const at_cert_conf *cc)
{
    at_cert_rec rec;
    at_error err = AT_ERROR_INIT;
    time_t at = 0;
    memset(&rec, 0, sizeof(rec));
    if (at_store_cert_load_public(e->store, cc->id, &rec, &err) == 0)
        at = jtime(rec.meta, "issued_at");
    at_cert_rec_free(&rec);
    at_error_clear(&err);
    return at;
}

void at_engine_ari_done(at_engine *e, at_task *t, time_t now)
{
    const at_cert_conf *cc = &e->conf->certs[t->cert];
    at_cert_rt *rt = &e->certs[t->cert];
    json_t *st = state_load(e, (size_t)t->cert), *ari = json_object_get(st, "ari");
    const at_ari_result *r = t->ok && t->op ? at_acme_op_ari(t->op) : NULL;

    rt->ari_running = 0;
    if (!json_is_object(ari)) {
        ari = json_object();
        json_object_set_new(st, "ari", ari);
    }
    if (r && r->end <= cert_obtained_at(e, cc)) {
        /* A window that closed before we obtained this certificate cannot
         * be about it (a CA answering for the predecessor); acting on it
         * would renew in a loop. */
        at_log(&e->log, AT_LOG_INFO, "renewal information for %s closed before the certificate was obtained; ignored", cc->id);
        json_object_set_new(ari, "next_check", json_integer((json_int_t)(r->retry_after > now ? r->retry_after : now + AT_ARI_DEFAULT_RECHECK)));
    } else if (r) {
        time_t pick = jtime(ari, "pick");
        /* Keep an earlier pick while the window is unchanged, so repeated
         * checks do not keep moving the renewal moment. */
        if (jtime(ari, "start") != r->start || jtime(ari, "end") != r->end || !pick)
            pick = at_ari_pick(r, at_engine_random());
        json_object_set_new(ari, "start", json_integer((json_int_t)r->start));
        json_object_set_new(ari, "end", json_integer((json_int_t)r->end));
        json_object_set_new(ari, "pick", json_integer((json_int_t)pick));
        if (r->explanation_url[0])
            json_object_set_new(ari, "explanation", json_string(r->explanation_url));
        json_object_set_new(ari, "next_check", json_integer((json_int_t)(r->retry_after > now ? r->retry_after : now + AT_ARI_DEFAULT_RECHECK)));
        rt->dirty = 1;
    } else {
        long wait = t->err.code == AT_ERR_NOTFOUND ? AT_ARI_NONE_RECHECK : AT_ARI_ERROR_RECHECK;
        if (t->err.retry_after >= 0 && at_time_after(now, t->err.retry_after) - now > wait)
            wait = (long)(at_time_after(now, t->err.retry_after) - now);
        json_object_set_new(ari, "next_check", json_integer((json_int_t)(now + wait)));
        if (t->err.code != AT_ERR_NOTFOUND)
            at_log(&e->log, AT_LOG_INFO, "renewal information for %s: %s", cc->id, t->err.msg);
    }
    rt->ari_next = jtime(ari, "next_check");
    state_save(e, (size_t)t->cert, st);
    json_decref(st);
}
