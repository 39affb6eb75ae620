/*
 * at_renewer.c: the renewal thread's life in the process that renews (see
 * at_renewer.h). Only the ticking thread starts, joins and restarts the
 * renewal thread; the renewal thread itself only runs the engine and sets
 * `exited` when the engine returns.
 */
#include "at_renewer.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "at_engine.h"
#include "at_store.h"

#define RESTART_DELAY   60      /* seconds, unless the host says otherwise */
#define LOCK_WARN_AFTER 30      /* seconds of waiting for the store lock before saying so */

struct at_renewer {
    at_renewer_conf  rc;
    pthread_mutex_t  mu;
    at_store        *store;
    at_store_lock   *lock;      /* the store lock, while renewing */
    at_engine       *engine;
    pthread_t        thread;
    int              running;   /* created, not yet joined */
    int              exited;    /* the thread returned (atomic) */
    int              shutdown;  /* never start again */
    time_t           retry_at;
    time_t           wait_since;/* waiting for the store lock, since */
    int              warned;
};

static const at_logger *engine_log(const at_renewer *r)
{
    return r->rc.engine_log ? r->rc.engine_log : r->rc.log;
}

static void *renewal_main(void *arg)
{
    at_renewer *r = arg;
    at_error err = AT_ERROR_INIT;

    if (r->rc.republish &&
        at_engine_preload(r->rc.conf, r->store, r->rc.live, engine_log(r), &err) < 0)
        at_log(r->rc.log, AT_LOG_ERROR, "publishing the stored certificates: %s", err.msg);
    at_error_clear(&err);
    if (at_engine_run(r->engine) != 0)
        at_log(r->rc.log, AT_LOG_ERROR, "the renewal engine ended with an error");
    __atomic_store_n(&r->exited, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* With r->mu held, no thread running. */
static void release(at_renewer *r)
{
    at_engine_free(r->engine);
    r->engine = NULL;
    if (r->lock)
        at_store_unlock(r->lock);
    r->lock = NULL;
    if (r->store)
        at_store_close(r->store);
    r->store = NULL;
}

static long restart_delay(const at_renewer *r)
{
    return r->rc.restart_delay > 0 ? r->rc.restart_delay : RESTART_DELAY;
}

/* "a minute" (the default), or "N s". */
static const char *delay_text(const at_renewer *r, char *buf, size_t size)
{
    if (restart_delay(r) == 60)
        return "a minute";
    snprintf(buf, size, "%ld s", restart_delay(r));
    return buf;
}

/* 0 held, 1 someone else holds it (try again next tick), -1 error. */
static int take_lock(at_renewer *r, time_t now, at_error *err)
{
    if (!r->rc.lock)
        return 0;
    if (at_store_trylock(r->store, r->rc.lock, &r->lock, err) == 0) {
        r->wait_since = 0;
        r->warned = 0;
        return 0;
    }
    if (err->code != AT_ERR_BUSY)
        return -1;
    if (r->wait_since == 0)
        r->wait_since = now;
    if (!r->warned && now - r->wait_since >= LOCK_WARN_AFTER) {
        r->warned = 1;
        at_log(r->rc.log, AT_LOG_WARN, "another process has been renewing from the store %s for "
               "%d s; waiting for it to stop (does another server use the same %s?)",
               r->rc.conf->store_dir, LOCK_WARN_AFTER,
               r->rc.store_directive ? r->rc.store_directive : "store");
    }
    at_error_clear(err);
    return 1;
}

/* With r->mu held. */
static void start(at_renewer *r, time_t now)
{
    at_error err = AT_ERROR_INIT;
    sigset_t all, old;
    char when[32];
    int rv;

    r->store = at_store_open_dir(r->rc.conf->store_dir, &err);
    if (r->store) {
        switch (take_lock(r, now, &err)) {
        case 0:
            r->engine = at_engine_new(r->rc.conf, r->store, r->rc.live, engine_log(r), &err);
            break;
        case 1:
            release(r);     /* the previous renewer still runs: next tick */
            return;
        default:
            break;
        }
    }
    if (!r->engine) {
        at_log(r->rc.log, AT_LOG_ERROR, "cannot start renewing (trying again in %s): %s",
               delay_text(r, when, sizeof(when)), err.msg);
        goto fail;
    }
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    __atomic_store_n(&r->exited, 0, __ATOMIC_RELEASE);
    rv = pthread_create(&r->thread, NULL, renewal_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rv != 0) {
        at_log(r->rc.log, AT_LOG_ERROR, "cannot create the renewal thread (trying again in %s): %s",
               delay_text(r, when, sizeof(when)), strerror(rv));
        goto fail;
    }
    r->running = 1;
    at_renew_ctl_set_renewer(r->rc.ctl, (long)getpid(), now);
    at_log(r->rc.log, AT_LOG_INFO, "renewing %zu certificate(s) in process %ld, store %s",
           r->rc.conf->ncerts, (long)getpid(), r->rc.conf->store_dir);
    return;
fail:
    at_error_clear(&err);
    release(r);
    r->retry_at = now + restart_delay(r);
}

/* With r->mu held: join the thread (it returned, or was asked to stop). */
static void join(at_renewer *r)
{
    pthread_join(r->thread, NULL);
    r->running = 0;
    at_renew_ctl_clear_renewer(r->rc.ctl, (long)getpid());
    release(r);
}

static void hand_over_requests(at_renewer *r)
{
    char req[AT_RENEW_QUEUE][AT_RENEW_REQ_MAX];
    size_t n = at_renew_ctl_take(r->rc.ctl, req, AT_RENEW_QUEUE);

    for (size_t i = 0; i < n; i++) {
        at_error err = AT_ERROR_INIT;
        const char *what = strcmp(req[i], "all") == 0 ? NULL : req[i];
        if (at_engine_force(r->engine, what, &err) != 0) {
            at_log(r->rc.log, AT_LOG_WARN, "renew request for %s: %s", req[i], err.msg);
            at_error_clear(&err);
        } else {
            at_log(r->rc.log, AT_LOG_NOTICE, "renewing %s now, as requested", req[i]);
        }
    }
}

at_renewer *at_renewer_new(const at_renewer_conf *rc)
{
    at_renewer *r;

    if (!rc || !rc->conf || !rc->conf->store_dir || !rc->live)
        return NULL;
    r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->rc = *rc;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

int at_renewer_tick(at_renewer *r)
{
    time_t now = time(NULL);
    char when[32];
    int more;

    pthread_mutex_lock(&r->mu);
    if (r->running && __atomic_load_n(&r->exited, __ATOMIC_ACQUIRE)) {
        join(r);
        if (!r->shutdown) {
            r->retry_at = now + restart_delay(r);
            at_log(r->rc.log, AT_LOG_ERROR, "the renewal thread stopped unexpectedly; restarting it "
                   "in %s", delay_text(r, when, sizeof(when)));
        }
    }
    if (!r->shutdown) {
        if (!r->running && now >= r->retry_at)
            start(r, now);
        if (r->running)
            hand_over_requests(r);
    }
    more = !r->shutdown || r->running;
    pthread_mutex_unlock(&r->mu);
    return more;
}

void at_renewer_shutdown(at_renewer *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    if (!r->shutdown) {
        r->shutdown = 1;
        if (r->running)
            at_engine_stop(r->engine);
    }
    pthread_mutex_unlock(&r->mu);
}

void at_renewer_stop(at_renewer *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->shutdown = 1;
    if (r->running) {
        at_engine_stop(r->engine);
        join(r);
    }
    release(r);
    pthread_mutex_unlock(&r->mu);
}

void at_renewer_free(at_renewer *r)
{
    if (!r)
        return;
    at_renewer_stop(r);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void at_renewer_test_kill(at_renewer *r)
{
    pthread_mutex_lock(&r->mu);
    if (r->running)
        at_engine_stop(r->engine);
    pthread_mutex_unlock(&r->mu);
}
