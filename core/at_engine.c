/*
 * at_engine.c: the loop. Tasks (orders, ARI checks, account operations)
 * hold sans-I/O operations; this file turns their steps into driver
 * requests, live-table writes and hook commands, and their replies back into
 * the operations. Everything runs on the calling thread; other threads may
 * only call at_engine_stop, at_engine_wake and at_engine_force.
 */
#include "at_engine_int.h"

#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>

#include "at_x509.h"
#include "at_time.h"

#define AT_ENGINE_MAX_SLEEP   3600     /* re-plan at least hourly */
#define AT_HOOK_TIMEOUT       300      /* seconds a dns-01 hook may take */
#define AT_NOTIFY_TIMEOUT     60

static void slot_free(at_slot *s);

unsigned long at_engine_random(void)
{
    unsigned long r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        r = (unsigned long)random();
    return r;
}

/* ------------------------------------------------------------------ events */

void at_engine_event(at_engine *e, const char *event, const at_cert_conf *cc, const at_error *err)
{
    const char *argv[AT_MAX_NAMES_PER_CERT + 4];
    size_t n = 0;
    at_error cerr = AT_ERROR_INIT;
    at_cmd *cmd;

    if (e->event_fn)
        e->event_fn(e->event_ud, event, cc, err);
    if (!e->conf->notify_command)
        return;
    argv[n++] = e->conf->notify_command;
    argv[n++] = event;
    argv[n++] = cc->id;
    for (size_t i = 0; i < cc->nnames && n < AT_MAX_NAMES_PER_CERT + 3; i++)
        argv[n++] = cc->names[i];
    argv[n] = NULL;
    cmd = at_cmd_start(argv, AT_NOTIFY_TIMEOUT, &cerr);
    if (!cmd) {
        at_log(&e->log, AT_LOG_ERROR, "notify command for %s (%s): %s", cc->names[0], event, cerr.msg);
        at_error_clear(&cerr);
        return;
    }
    at_hook *h = calloc(1, sizeof(*h));
    if (!h) {
        at_cmd_free(cmd);
        return;
    }
    h->cmd = cmd;
    h->what = strdup(cc->names[0]);
    h->next = e->notify;
    e->notify = h;
}

static void reap_notify(at_engine *e)
{
    at_hook **pp = &e->notify;
    while (*pp) {
        at_hook *h = *pp;
        int status;
        if (at_cmd_poll(h->cmd, &status) == 0) {
            pp = &h->next;
            continue;
        }
        if (status != 0)
            at_log(&e->log, AT_LOG_WARN, "notify command for %s exited with status %d: %s",
                   h->what ? h->what : "?", status, at_cmd_output(h->cmd));
        *pp = h->next;
        at_cmd_free(h->cmd);
        free(h->what);
        free(h);
    }
}

/* ------------------------------------------------------------------- tasks */

at_task *at_engine_task_new(at_engine *e, at_task_kind kind, size_t ca, long cert)
{
    at_task *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->kind = kind;
    t->ca = ca;
    t->cert = cert;
    t->started = at_time_now();
    at_error_init(&t->err);
    t->next = e->tasks;
    e->tasks = t;
    return t;
}

static void pub_withdraw(at_engine *e, at_task *t, at_pub *p)
{
    switch (p->type) {
    case AT_CHAL_HTTP01:
        at_live_del_http01(e->live, p->key);
        break;
    case AT_CHAL_TLSALPN01:
        at_live_del_alpn01(e->live, p->key);
        break;
    case AT_CHAL_DNS01: {
        const at_cert_conf *cc = t->cert >= 0 ? &e->conf->certs[t->cert] : NULL;
        if (cc && cc->dns01_command) {
            const char *argv[] = { cc->dns01_command, "teardown", p->key, p->value, NULL };
            at_error cerr = AT_ERROR_INIT;
            at_cmd *cmd = at_cmd_start(argv, AT_HOOK_TIMEOUT, &cerr);
            if (!cmd) {
                at_log(&e->log, AT_LOG_WARN, "dns-01 teardown of %s: %s", p->key, cerr.msg);
                at_error_clear(&cerr);
            } else {
                /* Teardown failures are logged, never block: the notify list reaps them. */
                at_hook *h = calloc(1, sizeof(*h));
                if (h) {
                    h->cmd = cmd;
                    h->what = strdup(p->key);
                    h->next = e->notify;
                    e->notify = h;
                } else {
                    at_cmd_free(cmd);
                }
            }
        }
        break;
    }
    default:
        break;
    }
}

static void task_withdraw_all(at_engine *e, at_task *t)
{
    while (t->pubs) {
        at_pub *p = t->pubs;
        t->pubs = p->next;
        pub_withdraw(e, t, p);
        free(p->key);
        free(p->value);
        free(p);
    }
}

static void task_free(at_engine *e, at_task *t)
{
    task_withdraw_all(e, t);
    while (t->hooks) {
        at_hook *h = t->hooks;
        t->hooks = h->next;
        at_cmd_free(h->cmd);
        free(h->what);
        free(h);
    }
    for (at_slot *s = e->slots; s; s = s->next)
        if (s->task == t)
            s->task = NULL;          /* the driver may still answer: orphan it */
    if (t->op)
        at_acme_op_free(t->op);
    if (t->lock)
        at_store_unlock(t->lock);
    EVP_PKEY_free(t->new_key);
    for (size_t i = 0; i < t->ncontact; i++)
        free(t->contact[i]);
    free(t->contact);
    json_decref(t->result);
    free(t->saved_url);
    at_error_clear(&t->err);
    free(t);
}

/* Called when a task's op reached DONE or FAILED (or it could not start). */
void at_engine_task_finish(at_engine *e, at_task *t)
{
    time_t now = at_time_now();
    if (t->done)
        return;
    t->done = 1;
    task_withdraw_all(e, t);
    switch (t->kind) {
    case AT_TASK_ORDER:
        at_engine_cert_done(e, t, now);
        break;
    case AT_TASK_ARI:
        at_engine_ari_done(e, t, now);
        break;
    case AT_TASK_ACCOUNT:
        at_engine_ca_account_done(e, t);
        break;
    case AT_TASK_REVOKE:
        break;
    }
}

static void reap_tasks(at_engine *e, int keep_oneshots)
{
    at_task **pp = &e->tasks;
    while (*pp) {
        at_task *t = *pp;
        /* One-shot tasks (tool operations) are freed by their caller. */
        int oneshot = (t->kind == AT_TASK_REVOKE) ||
                      (t->kind == AT_TASK_ACCOUNT && t->acct_action != AT_ACCOUNT_ENSURE);
        if (t->done && t->nreqs == 0 && !t->hooks && !(oneshot && keep_oneshots)) {
            *pp = t->next;
            task_free(e, t);
        } else {
            pp = &t->next;
        }
    }
}

/* ----------------------------------------------------------------- requests */

static void slot_driver_cb(void *ud, at_http_resp *resp, const at_error *err)
{
    at_slot *s = ud;
    time_t now = at_time_now();
    s->in_flight = 0;
    s->ready = 1;
    if (s->exch) {
        at_acme_exch_feed(s->exch, resp, err, now);
        return;
    }
    /* Directory fetch: keep the answer for at_engine_ca_directory_done. */
    if (resp) {
        at_http_resp_free(&s->resp);
        s->resp = *resp;
        at_http_resp_init(resp);
    } else if (err) {
        at_error_copy(&s->terr, err);
        s->has_terr = 1;
    }
}

static at_slot *slot_new(at_engine *e)
{
    at_slot *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    at_http_resp_init(&s->resp);
    at_error_init(&s->terr);
    s->next = e->slots;
    e->slots = s;
    return s;
}

static void slot_unlink(at_engine *e, at_slot *s)
{
    for (at_slot **pp = &e->slots; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    slot_free(s);
}

static void slot_free(at_slot *s)
{
    if (s->exch)
        at_acme_exch_free(s->exch);
    at_http_resp_free(&s->resp);
    at_error_clear(&s->terr);
    free(s);
}

/* Fetch a CA's directory (plain GET, no exchange: there is no client state yet). */
int at_engine_fetch_directory(at_engine *e, at_ca_rt *ca, at_error *err);
int at_engine_fetch_directory(at_engine *e, at_ca_rt *ca, at_error *err)
{
    at_http_req req;
    at_slot *s = slot_new(e);
    if (!s)
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    memset(&req, 0, sizeof(req));
    req.method = AT_HTTP_GET;
    req.url = (char *)ca->conf->url;
    s->ca = ca;
    s->in_flight = 1;
    if (at_driver_submit(ca->drv, &req, slot_driver_cb, s, err) != 0) {
        slot_unlink(e, s);
        return -1;
    }
    return 0;
}

/* Advance an exchange as far as it goes without waiting. */
static void slot_advance(at_engine *e, at_slot *s, time_t now)
{
    at_task *t = s->task;
    at_http_req req;
    at_error err = AT_ERROR_INIT;
    time_t until = 0;
    at_ca_rt *ca;
    at_exch_state st;

    s->ready = 0;
    if (!t) {                       /* orphan: nobody wants the answer */
        slot_unlink(e, s);
        return;
    }
    ca = &e->cas[t->ca];
    memset(&req, 0, sizeof(req));
    st = at_acme_exch_next(s->exch, now, &req, &until, &err);
    switch (st) {
    case AT_EXCH_SEND:
        if (at_driver_submit(ca->drv, &req, slot_driver_cb, s, &err) != 0) {
            at_http_req_free(&req);
            t->nreqs--;
            if (t->op)
                at_acme_op_response(t->op, s->tag, NULL, &err, now);
            slot_unlink(e, s);
            break;
        }
        at_http_req_free(&req);
        s->in_flight = 1;
        break;
    case AT_EXCH_WAIT:
        s->wait_until = until > now ? until : now + 1;
        break;
    case AT_EXCH_DONE:
        t->nreqs--;
        if (t->op && !t->done)
            at_acme_op_response(t->op, s->tag, at_acme_exch_response(s->exch), NULL, now);
        slot_unlink(e, s);
        break;
    case AT_EXCH_FAILED:
        t->nreqs--;
        if (t->op && !t->done)
            at_acme_op_response(t->op, s->tag, NULL, &err, now);
        slot_unlink(e, s);
        break;
    }
    at_error_clear(&err);
}

static void task_request(at_engine *e, at_task *t, const at_step *st, time_t now)
{
    at_slot *s = slot_new(e);
    at_error err = AT_ERROR_INIT;
    if (!s || !(s->exch = at_acme_exch_new(e->cas[t->ca].client, st->req))) {
        at_error_set(&err, AT_ERR_INTERNAL, "out of memory");
        at_acme_op_response(t->op, st->tag, NULL, &err, now);
        if (s)
            slot_unlink(e, s);
        at_error_clear(&err);
        return;
    }
    s->task = t;
    s->tag = st->tag;
    t->nreqs++;
    if (st->delay_ms > 0) {
        /* A quick poll: engine_turn sends it when the delay is over. */
        s->not_before_ms = at_time_now_ms() + st->delay_ms;
        return;
    }
    slot_advance(e, s, now);
}

/* ----------------------------------------------------------- publication */

static void pub_remember(at_task *t, at_challenge_type type, const char *key, const char *value)
{
    at_pub *p = calloc(1, sizeof(*p));
    if (!p)
        return;
    p->type = type;
    p->key = strdup(key);
    p->value = value ? strdup(value) : NULL;
    p->next = t->pubs;
    t->pubs = p;
}

static void pub_forget(at_engine *e, at_task *t, at_challenge_type type, const char *key,
                       const char *value)
{
    /* "*.example.com" and "example.com" both use _acme-challenge.example.com,
     * with different values: match the value too, or one teardown removes
     * the other's record. */
    for (at_pub **pp = &t->pubs; *pp; pp = &(*pp)->next) {
        at_pub *p = *pp;
        if (p->type == type && strcmp(p->key, key) == 0 &&
            (!value || !p->value || strcmp(p->value, value) == 0)) {
            *pp = p->next;
            pub_withdraw(e, t, p);
            free(p->key);
            free(p->value);
            free(p);
            return;
        }
    }
}

static void task_publish(at_engine *e, at_task *t, const at_step *st, time_t now)
{
    const at_challenge_info *c = st->chal;
    at_error err = AT_ERROR_INIT;
    const at_cert_conf *cc = t->cert >= 0 ? &e->conf->certs[t->cert] : NULL;
    (void)now;

    switch (c->type) {
    case AT_CHAL_HTTP01:
        if (at_live_put_http01(e->live, c->token, c->key_authorization, &err) == 0)
            pub_remember(t, c->type, c->token, NULL);
        break;
    case AT_CHAL_TLSALPN01:
        if (at_live_put_alpn01(e->live, c->identifier, c->alpn_cert_pem, c->alpn_key_pem, &err) == 0)
            pub_remember(t, c->type, c->identifier, NULL);
        break;
    case AT_CHAL_DNS01: {
        if (!cc || !cc->dns01_command) {
            at_error_set(&err, AT_ERR_CONFIG,
                         "dns-01 for %s needs a DNS hook command (%s)", c->identifier,
                         e->conf->hints.dns01_command ? e->conf->hints.dns01_command : "dns01 command");
            break;
        }
        const char *argv[] = { cc->dns01_command, "setup", c->dns_name, c->dns_value, NULL };
        at_cmd *cmd = at_cmd_start(argv, AT_HOOK_TIMEOUT, &err);
        if (!cmd)
            break;
        at_hook *h = calloc(1, sizeof(*h));
        if (!h) {
            at_cmd_free(cmd);
            at_error_set(&err, AT_ERR_INTERNAL, "out of memory");
            break;
        }
        h->cmd = cmd;
        h->tag = st->tag;
        h->setup = 1;
        h->what = strdup(c->dns_name);
        h->next = t->hooks;
        t->hooks = h;
        /* Remember now so that a teardown runs even if setup half-succeeded. */
        pub_remember(t, c->type, c->dns_name, c->dns_value);
        at_log(&e->log, AT_LOG_INFO, "dns-01: running %s setup %s", cc->dns01_command, c->dns_name);
        return;                     /* answered when the hook exits */
    }
    default:
        at_error_set(&err, AT_ERR_INTERNAL, "unknown challenge type %d", (int)c->type);
        break;
    }
    if (err.code != AT_OK)
        at_log(&e->log, AT_LOG_ERROR, "publishing %s challenge for %s: %s",
               at_challenge_name(c->type) ? at_challenge_name(c->type) : "?", c->identifier, err.msg);
    at_acme_op_published(t->op, st->tag, err.code == AT_OK ? NULL : &err);
    at_error_clear(&err);
}

static void task_withdraw(at_engine *e, at_task *t, const at_step *st)
{
    const at_challenge_info *c = st->chal;
    switch (c->type) {
    case AT_CHAL_HTTP01:    pub_forget(e, t, c->type, c->token, NULL); break;
    case AT_CHAL_TLSALPN01: pub_forget(e, t, c->type, c->identifier, NULL); break;
    case AT_CHAL_DNS01:     pub_forget(e, t, c->type, c->dns_name, c->dns_value); break;
    default: break;
    }
}

static void poll_hooks(at_engine *e, at_task *t)
{
    at_hook **pp = &t->hooks;
    while (*pp) {
        at_hook *h = *pp;
        int status;
        if (at_cmd_poll(h->cmd, &status) == 0) {
            pp = &h->next;
            continue;
        }
        *pp = h->next;
        if (h->setup && t->op && !t->done) {
            if (status == 0) {
                at_acme_op_published(t->op, h->tag, NULL);
            } else {
                at_error err = AT_ERROR_INIT;
                at_error_set(&err, AT_ERR_CONFIG,
                             "the dns-01 hook failed for %s (exit status %d): %s",
                             h->what, status, at_cmd_output(h->cmd));
                at_acme_op_published(t->op, h->tag, &err);
                at_error_clear(&err);
            }
        }
        at_cmd_free(h->cmd);
        free(h->what);
        free(h);
    }
}

static void task_checkpoint(at_engine *e, at_task *t)
{
    at_error err = AT_ERROR_INIT;
    at_buf key = AT_BUF_INIT;
    json_t *cp;
    const at_cert_conf *cc;
    const char *url;

    if (t->kind != AT_TASK_ORDER || t->cert < 0)
        return;
    cc = &e->conf->certs[t->cert];
    /* What resuming needs is the order URL (and the key): a resumed order
     * re-reads its status, authorizations, finalize and certificate URLs
     * from the CA. So a checkpoint that only moves the status on (ready,
     * processing, valid) is not written again: each is a set of files with
     * five fsyncs. */
    url = at_acme_op_order_url(t->op);
    if (url && t->saved_url && strcmp(url, t->saved_url) == 0)
        return;
    cp = at_acme_op_checkpoint(t->op);
    if (!cp)
        return;
    if (at_key_to_pem(at_acme_op_cert_key(t->op), &key, &err) != 0) {
        at_log(&e->log, AT_LOG_ERROR, "saving the order for %s: %s (it cannot resume after a restart)",
               cc->names[0], err.msg);
        json_decref(cp);
        at_buf_free_secret(&key);
        at_error_clear(&err);
        return;
    }
    /* Written by the store writer, which logs a failure. */
    at_persist_order(e, (size_t)t->cert, cp, &key);
    free(t->saved_url);
    t->saved_url = url ? strdup(url) : NULL;
}

/* Run a task's op until it has to wait. */
static void task_advance(at_engine *e, at_task *t, time_t now)
{
    at_step st;
    int guard;

    if (t->done || !t->op)
        return;
    if (t->wait_until && now < t->wait_until && t->nreqs == 0 && !t->hooks)
        return;
    t->wait_until = 0;
    for (guard = 0; guard < 1000 && !t->done; guard++) {
        memset(&st, 0, sizeof(st));
        at_acme_op_step(t->op, now, &st);
        switch (st.kind) {
        case AT_STEP_REQUEST:
            task_request(e, t, &st, now);
            continue;
        case AT_STEP_PUBLISH:
            task_publish(e, t, &st, now);
            continue;
        case AT_STEP_WITHDRAW:
            task_withdraw(e, t, &st);
            continue;
        case AT_STEP_CHECKPOINT:
            task_checkpoint(e, t);
            continue;
        case AT_STEP_WAIT:
            t->wait_until = st.until;
            return;
        case AT_STEP_DONE:
            t->ok = 1;
            at_engine_task_finish(e, t);
            return;
        case AT_STEP_FAILED:
            t->ok = 0;
            at_error_copy(&t->err, at_acme_op_error(t->op));
            if (t->err.code == AT_OK)
                at_error_set(&t->err, AT_ERR_INTERNAL, "the operation failed without a reason");
            at_engine_task_finish(e, t);
            return;
        default:
            at_error_set(&t->err, AT_ERR_INTERNAL, "unexpected step %d", (int)st.kind);
            at_engine_task_finish(e, t);
            return;
        }
    }
    if (!t->done) {
        /* An op that never waits would spin; treat it as a bug, not a hang. */
        at_error_set(&t->err, AT_ERR_INTERNAL, "the protocol state machine did not settle");
        at_engine_task_finish(e, t);
    }
}

/* ------------------------------------------------------------------ engine */

at_engine *at_engine_new(const at_conf *conf, at_store *store, at_live *live,
                         const at_logger *log, at_error *err)
{
    at_engine *e = calloc(1, sizeof(*e));
    if (!e) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    e->conf = conf;
    e->store = store;
    e->live = live;
    if (log)
        e->log = *log;
    pthread_mutex_init(&e->mu, NULL);
    e->certs = calloc(conf->ncerts ? conf->ncerts : 1, sizeof(*e->certs));
    if (!e->certs) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        at_engine_free(e);
        return NULL;
    }
    for (size_t i = 0; i < conf->ncerts; i++)
        e->certs[i].dirty = 1;
    if (at_persist_init(e, err) != 0 || at_engine_ca_init(e, err) != 0) {
        at_engine_free(e);
        return NULL;
    }
    if (live) {
        at_live_stats ls;
        at_live_get_stats(live, &ls);
        e->live_repairs = ls.repairs;
    }
    return e;
}

void at_engine_free(at_engine *e)
{
    if (!e)
        return;
    at_persist_free(e);              /* queued writes are made first */
    while (e->tasks) {
        at_task *t = e->tasks;
        e->tasks = t->next;
        task_free(e, t);
    }
    /* Drivers cancel without calling back; only then can slots go. */
    at_engine_ca_free(e);
    while (e->slots) {
        at_slot *s = e->slots;
        e->slots = s->next;
        slot_free(s);
    }
    while (e->notify) {
        at_hook *h = e->notify;
        e->notify = h->next;
        at_cmd_wait(h->cmd);
        at_cmd_free(h->cmd);
        free(h->what);
        free(h);
    }
    for (size_t i = 0; i < e->nforce; i++)
        free(e->force_ids[i]);
    free(e->force_ids);
    for (size_t i = 0; e->certs && i < e->conf->ncerts; i++)
        if (e->certs[i].fresh)
            at_cert_info_free(&e->certs[i].fresh_info);
    free(e->certs);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

void at_engine_on_event(at_engine *e, at_engine_event_fn *fn, void *ud)
{
    e->event_fn = fn;
    e->event_ud = ud;
}

static void wake_drivers(at_engine *e)
{
    for (size_t i = 0; i < e->conf->ncas; i++)
        if (e->cas && e->cas[i].drv)
            at_driver_wakeup(e->cas[i].drv);
}

void at_engine_stop(at_engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_mutex_unlock(&e->mu);
    wake_drivers(e);
}

void at_engine_wake(at_engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->wake = 1;
    pthread_mutex_unlock(&e->mu);
    wake_drivers(e);
}

int at_engine_force(at_engine *e, const char *id_or_name, at_error *err)
{
    char **nf;
    if (id_or_name && at_engine_cert_find(e, id_or_name) < 0)
        return at_error_set(err, AT_ERR_NOTFOUND, "no managed certificate is called or covers '%s'",
                            id_or_name);
    pthread_mutex_lock(&e->mu);
    nf = realloc(e->force_ids, (e->nforce + 1) * sizeof(*nf));
    if (nf) {
        e->force_ids = nf;
        nf[e->nforce] = strdup(id_or_name ? id_or_name : "*");
        if (nf[e->nforce])
            e->nforce++;
    }
    e->wake = 1;
    pthread_mutex_unlock(&e->mu);
    wake_drivers(e);
    return nf ? 0 : at_error_set(err, AT_ERR_INTERNAL, "out of memory");
}

/* Take the flags other threads set. Returns 1 if asked to stop. */
static int take_flags(at_engine *e, time_t now)
{
    int stop, wake;
    char **ids;
    size_t n;

    pthread_mutex_lock(&e->mu);
    stop = e->stop;
    wake = e->wake;
    e->wake = 0;
    ids = e->force_ids;
    n = e->nforce;
    e->force_ids = NULL;
    e->nforce = 0;
    pthread_mutex_unlock(&e->mu);

    for (size_t k = 0; k < n; k++) {
        if (strcmp(ids[k], "*") == 0) {
            for (size_t i = 0; i < e->conf->ncerts; i++)
                at_engine_cert_record_force(e, i, now);
        } else {
            long i = at_engine_cert_find(e, ids[k]);
            if (i >= 0)
                at_engine_cert_record_force(e, (size_t)i, now);
        }
        free(ids[k]);
    }
    free(ids);
    if (wake)
        for (size_t i = 0; i < e->conf->ncerts; i++)
            e->certs[i].dirty = 1;
    return stop;
}

/* One turn of the loop: plan, start, advance. Returns the time of the next
 * thing that is due (for the sleep). */
static time_t engine_turn(at_engine *e, time_t now, int start_new)
{
    time_t next = now + AT_ENGINE_MAX_SLEEP;
    size_t ncerts = e->conf->ncerts;
    at_live_stats ls;

    at_persist_reap(e);
    /* A writer that died mid-compaction can cost records: put every stored
     * certificate back (cheap, and only after such a rare event). */
    at_live_get_stats(e->live, &ls);
    if (ls.repairs != e->live_repairs) {
        at_error perr = AT_ERROR_INIT;
        e->live_repairs = ls.repairs;
        at_log(&e->log, AT_LOG_WARN, "the shared certificate table was repaired; republishing the stored certificates");
        if (at_engine_preload(e->conf, e->store, e->live, &e->log, &perr) < 0)
            at_log(&e->log, AT_LOG_ERROR, "republishing: %s", perr.msg);
        at_error_clear(&perr);
    }

    /* Answers that arrived, exchanges whose backoff or delay ended. */
    long long now_ms = at_time_now_ms();
    for (at_slot *s = e->slots, *nx; s; s = nx) {
        nx = s->next;
        if (s->not_before_ms) {
            if (s->not_before_ms > now_ms)
                continue;
            s->not_before_ms = 0;
            if (s->task && s->task->done) {
                s->task->nreqs--;          /* a poll nobody waits for: never sent */
                slot_unlink(e, s);
                continue;
            }
            slot_advance(e, s, now);
        } else if (s->ready && !s->exch) {
            s->ready = 0;
            at_engine_ca_directory_done(e, s, now);
            slot_unlink(e, s);
        } else if (s->ready || (!s->in_flight && s->wait_until && s->wait_until <= now)) {
            s->wait_until = 0;
            slot_advance(e, s, now);
        }
    }

    for (at_task *t = e->tasks; t; t = t->next)
        if (t->hooks)
            poll_hooks(e, t);
    reap_notify(e);

    /* Plan and start orders. */
    for (size_t i = 0; i < ncerts; i++) {
        at_cert_rt *rt = &e->certs[i];
        if (rt->running)
            continue;
        /* Re-plan what changed, or whose planned moment has come since it
         * was planned; not, on every turn, each certificate that is due and
         * only waits for a free order slot (with 1,000 of them that cost a
         * store read per certificate per turn). */
        if (rt->dirty || (rt->plan.due <= now && rt->planned_at < rt->plan.due))
            at_engine_cert_replan(e, i, now);
        /* A fresh look at the store before ordering: another process may
         * have renewed it while it waited for a slot. */
        if (start_new && rt->plan.reason != AT_PLAN_NONE && rt->plan.due <= now &&
            e->orders_running < (e->conf->concurrency > 0 ? e->conf->concurrency : 8) &&
            rt->planned_at < now)
            at_engine_cert_replan(e, i, now);
        if (start_new && rt->plan.reason != AT_PLAN_NONE && rt->plan.due <= now &&
            e->orders_running < (e->conf->concurrency > 0 ? e->conf->concurrency : 8)) {
            if (at_engine_cert_start(e, i, now) != 0) {
                /* Deferred (another order holds one of its names, or another
                 * process holds its lock): look again soon. */
                time_t again = rt->plan.due > now ? rt->plan.due : now + 1;
                if (again < next)
                    next = again;
                continue;
            }
        }
        if (!rt->running && rt->plan.due > now && rt->plan.due < next &&
            (rt->plan.reason != AT_PLAN_NONE || rt->plan.due > 0))
            next = rt->plan.due;
        if (start_new && rt->have_cert && !rt->running && !rt->ari_running) {
            if (rt->ari_next && rt->ari_next <= now)
                at_engine_ari_start(e, i, now);
            else if (rt->ari_next && rt->ari_next < next)
                next = rt->ari_next;
        }
    }

    /* Tasks waiting for their CA, and ops. */
    for (at_task *t = e->tasks; t; t = t->next) {
        if (t->done)
            continue;
        if (!t->op) {
            at_ca_state cs = at_engine_ca_advance(e, &e->cas[t->ca], now);
            if (cs == AT_CA_READY) {
                int rv = 0;
                if (t->kind == AT_TASK_ORDER)
                    rv = at_engine_cert_start_op(e, t, now);
                else if (t->kind == AT_TASK_ARI)
                    rv = at_engine_ari_start_op(e, t, now);
                if (rv != 0) {
                    at_engine_task_finish(e, t);
                    continue;
                }
            } else {
                continue;            /* failures reach waiting tasks through ca_fail */
            }
        }
        task_advance(e, t, now);
        if (!t->done && t->wait_until && t->wait_until < next)
            next = t->wait_until;
    }

    for (at_slot *s = e->slots; s; s = s->next)
        if (!s->in_flight && s->wait_until && s->wait_until < next)
            next = s->wait_until;
    /* An order or check that just ended leaves its certificate to re-plan
     * (and maybe another one waiting for its names): turn again at once. */
    for (size_t i = 0; i < ncerts; i++)
        if (e->certs[i].dirty && !e->certs[i].running)
            next = now;
    reap_tasks(e, 1);
    return next;
}

static int engine_busy(const at_engine *e)
{
    for (at_task *t = e->tasks; t; t = t->next)
        if (!t->done)
            return 1;
    for (at_slot *s = e->slots; s; s = s->next)
        if (s->in_flight || s->ready || s->wait_until || s->not_before_ms)
            return 1;
    return 0;
}

/* Sleep in the drivers until `until`, an answer, or a wake-up. */
static void engine_wait(at_engine *e, time_t now, time_t until)
{
    /* To the millisecond: `now` is whole seconds, and counting from it would
     * oversleep a deadline by up to a second. */
    long long now_ms = at_time_now_ms();
    long ms = until > now ? (long)((long long)until * 1000 - now_ms) : 0;
    int hooks = e->notify != NULL;
    size_t ncas = e->conf->ncas, busy = 0;

    if (ms < 0)
        ms = 0;
    for (at_task *t = e->tasks; t; t = t->next)
        if (t->hooks)
            hooks = 1;
    for (at_slot *s = e->slots; s; s = s->next) {
        if (s->ready)
            ms = 0;
        else if (s->not_before_ms && s->not_before_ms - now_ms < ms)
            ms = s->not_before_ms > now_ms ? (long)(s->not_before_ms - now_ms) : 0;
    }
    if (hooks && ms > 200)
        ms = 200;                    /* commands are polled, not signalled */
    if (ms > 1000L * AT_ENGINE_MAX_SLEEP)
        ms = 1000L * AT_ENGINE_MAX_SLEEP;
    for (size_t i = 0; i < ncas; i++)
        if (at_driver_pending(e->cas[i].drv) > 0)
            busy++;
    if (ncas == 1 || busy <= 1) {
        /* Wait in the one driver that has work (or the first one). */
        size_t w = 0;
        for (size_t i = 0; i < ncas; i++)
            if (at_driver_pending(e->cas[i].drv) > 0)
                w = i;
        for (size_t i = 0; i < ncas; i++)
            at_driver_run(e->cas[i].drv, i == w ? ms : 0);
        return;
    }
    /* Several CAs busy: share the wait in short slices. */
    long slice = ms < 50 ? ms : 50;
    for (size_t i = 0; i < ncas; i++)
        at_driver_run(e->cas[i].drv, slice);
}

int at_engine_run(at_engine *e)
{
    at_log(&e->log, AT_LOG_INFO, "autotls: renewal engine started for %zu certificate(s)", e->conf->ncerts);
    at_persist_start(e);
    for (;;) {
        time_t now = at_time_now();
        if (take_flags(e, now))
            break;
        time_t next = engine_turn(e, now, 1);
        pthread_mutex_lock(&e->mu);
        int flagged = e->stop || e->wake || e->nforce;
        pthread_mutex_unlock(&e->mu);
        if (flagged)
            continue;
        engine_wait(e, at_time_now(), next);
    }
    /* Leave in-flight orders in the store: the next start resumes them. */
    for (at_task *t = e->tasks; t; t = t->next)
        if (!t->done && t->op)
            at_acme_op_cancel(t->op);
    while (e->tasks) {
        at_task *t = e->tasks;
        e->tasks = t->next;
        task_free(e, t);
    }
    at_persist_drain(e);
    at_log(&e->log, AT_LOG_INFO, "autotls: renewal engine stopped");
    return 0;
}

int at_engine_run_once(at_engine *e, long max_seconds, at_error *err)
{
    time_t start = at_time_now(), deadline = start + (max_seconds > 0 ? max_seconds : 600);
    size_t first_failed;

    for (size_t i = 0; i < e->conf->ncerts; i++)
        e->certs[i].failed_now = 0;
    at_persist_start(e);
    for (;;) {
        time_t now = at_time_now();
        if (take_flags(e, now)) {
            at_persist_drain(e);
            return at_error_set(err, AT_ERR_CANCELLED, "stopped");
        }
        engine_turn(e, now, 1);
        /* Done when nothing runs and nothing is due now. */
        int due = 0;
        for (size_t i = 0; i < e->conf->ncerts; i++) {
            at_cert_rt *rt = &e->certs[i];
            if (!rt->failed_now && !rt->running &&
                (rt->dirty || (rt->plan.reason != AT_PLAN_NONE && rt->plan.due <= now)))
                due = 1;
        }
        int busy = 0;
        for (at_task *t = e->tasks; t; t = t->next)
            if (!t->done && (t->kind == AT_TASK_ORDER || t->kind == AT_TASK_ARI))
                busy = 1;
        if (!busy && !due)
            break;
        if (now >= deadline) {
            at_persist_drain(e);
            return at_error_set(err, AT_ERR_TIMEOUT,
                                "gave up after %ld seconds with orders still in flight (they resume on the next run)",
                                (long)(now - start));
        }
        engine_wait(e, now, now + 1);
    }
    /* What the store says from here on is complete. */
    at_persist_drain(e);
    /* Success means every certificate is valid now: one that failed in
     * this run, or that is still waiting out an earlier failure, is not. */
    first_failed = e->conf->ncerts;
    for (size_t i = 0; i < e->conf->ncerts && first_failed == e->conf->ncerts; i++)
        if (e->certs[i].failed_now)
            first_failed = i;
    for (size_t i = 0; i < e->conf->ncerts && first_failed == e->conf->ncerts; i++) {
        at_engine_cert_replan(e, i, at_time_now());
        if (!e->certs[i].have_cert)
            first_failed = i;
    }
    if (first_failed < e->conf->ncerts) {
        json_t *state = NULL;
        const at_cert_conf *cc = &e->conf->certs[first_failed];
        at_error lerr = AT_ERROR_INIT;
        if (at_store_state_load(e->store, cc->id, &state, &lerr) == 0 &&
            json_is_object(json_object_get(state, "last_error"))) {
            at_error_from_json(err, json_object_get(state, "last_error"));
        } else {
            char tb[AT_TIME_BUFSIZE];
            at_error_set(err, AT_ERR_INTERNAL, "no certificate for %s yet (next attempt at %s)",
                         cc->names[0], at_time_format(e->certs[first_failed].plan.due, tb, sizeof(tb)));
        }
        json_decref(state);
        at_error_clear(&lerr);
        return -1;
    }
    (void)engine_busy;
    return 0;
}

/* ---------------------------------------------------- one-shot operations */

/* Run the loop (without starting orders) until task t is done. */
static int run_task(at_engine *e, at_task *t, long max_seconds, at_error *err)
{
    time_t deadline = at_time_now() + max_seconds;
    while (!t->done) {
        time_t now = at_time_now();
        if (now >= deadline) {
            at_error_set(err, AT_ERR_TIMEOUT, "the CA did not answer within %ld seconds", max_seconds);
            return -1;
        }
        if (!t->op && t->kind != AT_TASK_ACCOUNT) {
            /* wait for the CA */
        }
        time_t next = engine_turn(e, now, 0);
        if (t->done)
            break;
        engine_wait(e, now, next < now + 1 ? next : now + 1);
    }
    if (!t->ok) {
        at_error_copy(err, &t->err);
        return -1;
    }
    return 0;
}

static void unlink_task(at_engine *e, at_task *t)
{
    for (at_task **pp = &e->tasks; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
}

/* Wait until the CA is ready (directory + account) without an order. */
static int ensure_ca(at_engine *e, size_t ca_index, long max_seconds, at_error *err)
{
    at_ca_rt *ca = &e->cas[ca_index];
    time_t start = at_time_now(), deadline = start + max_seconds;
    for (;;) {
        time_t now = at_time_now();
        at_ca_state st = at_engine_ca_advance(e, ca, now);
        if (st == AT_CA_READY)
            return 0;
        if (st == AT_CA_IDLE && ca->err.code != AT_OK) {
            at_error_copy(err, &ca->err);
            return -1;
        }
        if (now >= deadline)
            return at_error_set(err, AT_ERR_TIMEOUT, "the CA %s did not answer within %ld seconds",
                                ca->conf->url, max_seconds);
        time_t next = engine_turn(e, now, 0);
        if (ca->state == AT_CA_IDLE && ca->err.code != AT_OK) {
            at_error_copy(err, &ca->err);
            return -1;
        }
        engine_wait(e, now, next < now + 1 ? next : now + 1);
    }
}

int at_engine_revoke(at_engine *e, const char *id, int reason, at_error *err)
{
    long i = at_engine_cert_find(e, id);
    at_cert_rec rec = { 0 };
    at_task *t;
    int rv = -1;
    const at_cert_conf *cc;

    if (i < 0)
        return at_error_set(err, AT_ERR_NOTFOUND, "no managed certificate is called or covers '%s'", id);
    cc = &e->conf->certs[i];
    if (at_store_cert_load(e->store, cc->id, &rec, err) != 0)
        return at_error_prefix(err, "revoking %s", cc->names[0]);
    if (ensure_ca(e, cc->ca, e->conf->request_timeout * 4 + 30, err) != 0)
        goto done;
    t = at_engine_task_new(e, AT_TASK_REVOKE, cc->ca, i);
    if (!t) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        goto done;
    }
    t->op = at_acme_revoke_new(e->cas[cc->ca].client, rec.chain_pem, reason, err);
    if (!t->op) {
        t->done = 1;
        unlink_task(e, t);
        task_free(e, t);
        goto done;
    }
    rv = run_task(e, t, e->conf->request_timeout * 4 + 30, err);
    unlink_task(e, t);
    task_free(e, t);
    if (rv == 0) {
        json_t *state = NULL;
        at_error lerr = AT_ERROR_INIT;
        at_persist_wait(e, (size_t)i);
        if (at_store_state_load(e->store, cc->id, &state, &lerr) != 0)
            state = json_object();
        json_object_set_new(state, "revoked", json_true());
        e->certs[i].dirty = 1;
        if (at_store_state_save(e->store, cc->id, state, &lerr) != 0)
            at_log(&e->log, AT_LOG_WARN, "recording the revocation of %s: %s", cc->names[0], lerr.msg);
        json_decref(state);
        at_error_clear(&lerr);
        at_log(&e->log, AT_LOG_NOTICE, "certificate %s (%s) revoked", cc->id, cc->names[0]);
    }
done:
    at_cert_rec_free(&rec);
    return rv;
}

int at_engine_account(at_engine *e, size_t ca_index, at_account_action action,
                      const char *const *contact, size_t ncontact,
                      json_t **account_out, at_error *err)
{
    at_task *t;
    at_account_params p;
    int rv;
    long timeout = e->conf->request_timeout * 4 + 30;

    if (account_out)
        *account_out = NULL;
    if (ca_index >= e->conf->ncas)
        return at_error_set(err, AT_ERR_CONFIG, "no CA is configured");
    if (ensure_ca(e, ca_index, timeout, err) != 0)
        return -1;
    t = at_engine_task_new(e, AT_TASK_ACCOUNT, ca_index, -1);
    if (!t)
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    t->acct_action = action;
    memset(&p, 0, sizeof(p));
    p.contact = contact;
    p.ncontact = ncontact;
    p.accept_terms = e->cas[ca_index].conf->accept_terms;
    p.terms_hint = e->conf->hints.accept_terms;
    p.eab_hint = e->conf->hints.eab;
    if (action == AT_ACCOUNT_ROLLOVER) {
        at_key_spec spec = AT_KEY_SPEC_DEFAULT;
        t->new_key = at_key_generate(&spec, err);
        if (!t->new_key) {
            unlink_task(e, t);
            task_free(e, t);
            return -1;
        }
        p.new_key = t->new_key;
    }
    if (contact && ncontact) {
        t->contact = calloc(ncontact, sizeof(char *));
        for (size_t k = 0; t->contact && k < ncontact; k++)
            t->contact[t->ncontact++] = strdup(contact[k]);
    }
    t->op = at_acme_account_new(e->cas[ca_index].client, action, &p, err);
    if (!t->op) {
        unlink_task(e, t);
        task_free(e, t);
        return -1;
    }
    rv = run_task(e, t, timeout, err);
    if (rv == 0 && account_out && t->result)
        *account_out = json_incref(t->result);
    unlink_task(e, t);
    task_free(e, t);
    return rv;
}

/* ----------------------------------------------------------------- preload */

int at_engine_preload(const at_conf *conf, at_store *store, at_live *live,
                      const at_logger *log, at_error *err)
{
    int published = 0;
    for (size_t i = 0; i < conf->ncerts; i++) {
        const at_cert_conf *cc = &conf->certs[i];
        at_cert_rec rec;
        at_cert_info info;
        at_error lerr = AT_ERROR_INIT;
        uint64_t gen;

        memset(&rec, 0, sizeof(rec));
        if (at_store_cert_load(store, cc->id, &rec, &lerr) != 0) {
            if (lerr.code != AT_ERR_NOTFOUND)
                at_log(log, AT_LOG_ERROR, "certificate %s: %s", cc->id, lerr.msg);
            at_error_clear(&lerr);
            continue;
        }
        if (at_cert_info_pem(rec.chain_pem, strlen(rec.chain_pem), &info, &lerr) != 0) {
            at_log(log, AT_LOG_ERROR, "certificate %s: %s", cc->id, lerr.msg);
            at_error_clear(&lerr);
            at_cert_rec_free(&rec);
            continue;
        }
        if (at_live_put_cert(live, cc->id, (const char *const *)info.names, info.nnames, cc->key.kind,
                             rec.chain_pem, rec.key_pem, &gen, &lerr) != 0) {
            at_error_move(err, &lerr);
            at_error_prefix(err, "publishing the stored certificate %s", cc->id);
            at_cert_info_free(&info);
            at_cert_rec_free(&rec);
            return -1;
        }
        published++;
        at_cert_info_free(&info);
        at_cert_rec_free(&rec);
    }
    return published;
}
