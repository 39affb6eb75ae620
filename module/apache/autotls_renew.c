/*
 * autotls_renew.c: renewal runs in one child process at a time, as the
 * server's User, on a thread of the core's renewer (at_renewer.h), ticked by
 * a mod_watchdog singleton. The watchdog callback never blocks: STARTING and
 * RUNNING (twice a second) tick the renewer (start, hand over renew
 * requests, restart a thread that died); STOPPING (child exit, graceful
 * restart, stop) stops the engine and joins it. Orders in flight stay in the
 * store and resume in the next generation; the store's locks keep two
 * generations from renewing the same certificate during a graceful restart.
 */
#include "mod_autotls.h"

#include <pthread.h>

#include <apr_optional.h>
#include <mod_watchdog.h>

APLOG_USE_MODULE(autotls);

#define WATCHDOG_NAME     "autotls"
#define CALLBACK_INTERVAL apr_time_from_msec(500)

/* One renewer per process at most, made by the first callback. The mutex
 * orders that against the child's cleanup, which runs on another thread. */
static struct {
    pthread_mutex_t mu;
    at_renewer     *renewer;
    at_logger       log;         /* the renewer's lines, "AutoTLS: ..." */
    int             finished;    /* stopping for good: never start again */
} R = { PTHREAD_MUTEX_INITIALIZER, NULL, { NULL, NULL, AT_LOG_ERROR }, 0 };

/* With R.mu held. */
static at_renewer *renewer(at_ap_gen *g)
{
    at_renewer_conf rc = { 0 };

    if (R.renewer || R.finished)
        return R.renewer;
    at_ap_logger_init_marked(&R.log, g->s);
    rc.conf = g->conf;
    rc.live = g->live;
    rc.ctl = g->ctl;
    rc.log = &R.log;
    rc.engine_log = &g->logger;
    R.renewer = at_renewer_new(&rc);
    if (!R.renewer)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, g->s, "AutoTLS: out of memory for the renewer");
    return R.renewer;
}

static apr_status_t wd_callback(int state, void *data, apr_pool_t *pool)
{
    at_ap_gen *g = data;
    at_renewer *r;
    (void)pool;

    pthread_mutex_lock(&R.mu);
    switch (state) {
    case AP_WATCHDOG_STATE_STARTING:
    case AP_WATCHDOG_STATE_RUNNING:
        if ((r = renewer(g)) != NULL)
            at_renewer_tick(r);
        break;
    case AP_WATCHDOG_STATE_STOPPING:
        R.finished = 1;
        at_renewer_stop(R.renewer);
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
    at_renewer_free(R.renewer);
    R.renewer = NULL;
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
