/*
 * autotls_renew.c: renewal runs in one child process at a time, as the
 * server's User, on a thread of our own started from a mod_watchdog
 * singleton. The watchdog callback never blocks: STARTING starts the
 * thread, RUNNING (twice a second) hands over renew requests and restarts a
 * thread that died, STOPPING (child exit, graceful restart, stop) stops the
 * engine and joins it. Orders in flight stay in the store and resume in the
 * next generation; the store's locks keep two generations from renewing
 * the same certificate during a graceful restart.
 */
#include "mod_autotls.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <apr_optional.h>
#include <apr_strings.h>
#include <mod_watchdog.h>

#include "at_engine.h"

APLOG_USE_MODULE(autotls);

#define WATCHDOG_NAME     "autotls"
#define CALLBACK_INTERVAL apr_time_from_msec(500)
#define RESTART_DELAY     apr_time_from_sec(60)
#define MAX_TAKE          32

/* One renewal thread per process at most. */
static struct {
    pthread_mutex_t mu;
    at_ap_gen  *g;
    at_store   *store;
    at_engine  *engine;
    pthread_t   thread;
    int         running;     /* thread created, not yet joined */
    int         exited;      /* the thread returned (atomic) */
    int         finished;    /* stopping for good: never start again */
    apr_time_t  retry_at;
} R = { PTHREAD_MUTEX_INITIALIZER, NULL, NULL, NULL, 0, 0, 0, 0, 0 };

static void *engine_main(void *arg)
{
    at_engine *e = arg;
    if (at_engine_run(e) != 0)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, R.g->s, "AutoTLS: the renewal engine ended with an error");
    __atomic_store_n(&R.exited, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void release(void)
{
    if (R.engine)
        at_engine_free(R.engine);
    R.engine = NULL;
    if (R.store)
        at_store_close(R.store);
    R.store = NULL;
}

/* With R.mu held. */
static void start(at_ap_gen *g)
{
    at_error err = AT_ERROR_INIT;
    sigset_t all, old;
    int rv;

    R.g = g;
    R.store = at_store_open_dir(g->store_dir, &err);
    if (R.store)
        R.engine = at_engine_new(g->conf, R.store, g->live, &g->logger, &err);
    if (!R.engine) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, g->s,
                     "AutoTLS: cannot start renewing (trying again in a minute): %s", err.msg);
        goto fail;
    }
    /* Signals belong to Apache's own threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    __atomic_store_n(&R.exited, 0, __ATOMIC_RELEASE);
    rv = pthread_create(&R.thread, NULL, engine_main, R.engine);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rv != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, g->s,
                     "AutoTLS: cannot create the renewal thread (trying again in a minute)");
        goto fail;
    }
    R.running = 1;
    at_ap_shm_engine(g->shm, getpid());
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, g->s,
                 "AutoTLS: renewing %" APR_SIZE_T_FMT " certificate(s) in process %ld, store %s",
                 g->conf->ncerts, (long)getpid(), g->store_dir);
    return;
fail:
    at_error_clear(&err);
    release();
    R.retry_at = apr_time_now() + RESTART_DELAY;
}

/* With R.mu held. */
static void stop(void)
{
    if (!R.running)
        return;
    at_engine_stop(R.engine);
    pthread_join(R.thread, NULL);
    R.running = 0;
    if (R.g && R.g->shm && at_ap_shm_engine_pid(R.g->shm, NULL) == getpid())
        at_ap_shm_engine(R.g->shm, 0);
    release();
}

static void hand_over_requests(void)
{
    char req[MAX_TAKE][256];
    int n = at_ap_shm_take(R.g->shm, req, MAX_TAKE);

    for (int i = 0; i < n; i++) {
        at_error err = AT_ERROR_INIT;
        const char *what = strcmp(req[i], "all") == 0 ? NULL : req[i];
        if (at_engine_force(R.engine, what, &err) != 0) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, R.g->s, "AutoTLS: renew request for %s: %s",
                         req[i], err.msg);
            at_error_clear(&err);
        } else {
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, R.g->s, "AutoTLS: renewing %s now, as requested",
                         req[i]);
        }
    }
}

static apr_status_t wd_callback(int state, void *data, apr_pool_t *pool)
{
    at_ap_gen *g = data;
    (void)pool;

    pthread_mutex_lock(&R.mu);
    switch (state) {
    case AP_WATCHDOG_STATE_STARTING:
        if (!R.finished && !R.running)
            start(g);
        break;
    case AP_WATCHDOG_STATE_RUNNING:
        if (R.finished)
            break;
        if (R.running && __atomic_load_n(&R.exited, __ATOMIC_ACQUIRE)) {
            pthread_join(R.thread, NULL);
            R.running = 0;
            release();
            R.retry_at = apr_time_now() + RESTART_DELAY;
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, g->s,
                         "AutoTLS: the renewal thread stopped unexpectedly; restarting it in a minute");
        }
        if (!R.running && apr_time_now() >= R.retry_at)
            start(g);
        if (R.running)
            hand_over_requests();
        break;
    case AP_WATCHDOG_STATE_STOPPING:
        R.finished = 1;
        stop();
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&R.mu);
    return APR_SUCCESS;
}

/* Child exit does not always reach the watchdog's STOPPING (its pool
 * belongs to the configuration, not to the child), so the child's own pool
 * stops the engine too. */
static apr_status_t child_cleanup(void *data)
{
    (void)data;
    pthread_mutex_lock(&R.mu);
    R.finished = 1;
    stop();
    pthread_mutex_unlock(&R.mu);
    return APR_SUCCESS;
}

void at_ap_renew_child_init(at_ap_gen *g, apr_pool_t *pchild)
{
    (void)g;
    apr_pool_cleanup_register(pchild, NULL, child_cleanup, apr_pool_cleanup_null);
}

int at_ap_renew_post_config(at_ap_gen *g, apr_pool_t *pconf)
{
    APR_OPTIONAL_FN_TYPE(ap_watchdog_get_instance) *get_instance;
    APR_OPTIONAL_FN_TYPE(ap_watchdog_register_callback) *register_callback;
    ap_watchdog_t *wd = NULL;
    apr_status_t rv;

    get_instance = APR_RETRIEVE_OPTIONAL_FN(ap_watchdog_get_instance);
    register_callback = APR_RETRIEVE_OPTIONAL_FN(ap_watchdog_register_callback);
    if (!get_instance || !register_callback) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, g->s,
                     "AutoTLS: mod_watchdog is not loaded and certificates would never be obtained; "
                     "load it (a2enmod watchdog)");
        return -1;
    }
    rv = get_instance(&wd, WATCHDOG_NAME, 0, 1, pconf);
    if (rv == APR_SUCCESS)
        rv = register_callback(wd, CALLBACK_INTERVAL, g, wd_callback);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, g->s, "AutoTLS: cannot set up the renewal watchdog");
        return -1;
    }
    return 0;
}
