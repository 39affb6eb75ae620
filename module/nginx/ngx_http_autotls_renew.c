/*
 * ngx_http_autotls_renew.c: renewal runs in worker 0, on a thread of its
 * own, as nginx's worker user; the event loop is never blocked.
 *
 * A timer on worker 0's event loop (every TICK_MS, cancelable so it never
 * keeps an exiting worker alive) does everything that touches nginx:
 *   - starts the thread once it holds the store's renewal lock, i.e. after
 *     the previous renewer (an old worker 0 still shutting down after a
 *     reload, whichever zone it used) has stopped; the thread first
 *     republishes the store into the live table, so a certificate the old
 *     renewer saved at the last moment is served too,
 *   - hands renew requests from the shared zone to the engine,
 *   - notices a thread that died and restarts it a minute later,
 *   - stops the engine as soon as the worker starts shutting down (reload,
 *     quit) and joins the thread once it has returned; exit_process joins
 *     whatever is left (terminate, worker exit),
 *   - writes the thread's log lines.
 *
 * Logging: nginx's log functions are not thread-safe (shared buffers, the
 * cached time, a file descriptor that a log reopen replaces), so the thread
 * never calls them: its lines go into a bounded queue that the timer drains
 * into ngx_log_error. Lines arrive at most TICK_MS late, in order, with
 * nginx's own formatting, levels and error_log destinations (files, syslog,
 * memory) - a direct write() to the log file would miss the latter and
 * could race a reopen onto a reused descriptor.
 */
#include "ngx_http_autotls_module.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "at_engine.h"
#include "at_store.h"

#define TICK_MS          250
#define RESTART_DELAY    60      /* seconds after a failed start or a dead thread */
#define HANDOVER_WARN    30      /* seconds of waiting for the renewal lock before saying so */
#define RENEWAL_LOCK     "nginx-renewal"
#define MAX_TAKE         32
#define LOGQ_MAX         1024

/* ------------------------------------------------------------- logging */

static ngx_uint_t ngx_level(at_log_level level)
{
    switch (level) {
    case AT_LOG_ERROR:  return NGX_LOG_ERR;
    case AT_LOG_WARN:   return NGX_LOG_WARN;
    case AT_LOG_NOTICE: return NGX_LOG_NOTICE;
    case AT_LOG_INFO:   return NGX_LOG_INFO;
    default:            return NGX_LOG_DEBUG;
    }
}

/* The most verbose level any of the error_log destinations wants. */
static at_log_level max_level(ngx_log_t *log)
{
    ngx_uint_t lv = 0;
    for (; log; log = log->next)
        if (log->log_level > lv)
            lv = log->log_level;
    return lv >= NGX_LOG_DEBUG ? AT_LOG_DEBUG
         : lv >= NGX_LOG_INFO ? AT_LOG_INFO
         : lv >= NGX_LOG_NOTICE ? AT_LOG_NOTICE
         : lv >= NGX_LOG_WARN ? AT_LOG_WARN : AT_LOG_ERROR;
}

static const char *prefix(const char *msg)
{
    return strncmp(msg, "autotls", 7) == 0 ? "" : "autotls: ";
}

/* The master and the event loop: straight into nginx's log. */
static void log_direct(void *ud, at_log_level level, const char *msg)
{
    ngx_log_error(ngx_level(level), (ngx_log_t *)ud, 0, "%s%s", prefix(msg), msg);
}

void at_ngx_logger_direct(at_logger *lg, ngx_log_t *log)
{
    lg->fn = log_direct;
    lg->ud = log;
    lg->max = max_level(log);
}

typedef struct {
    at_log_level  level;
    char         *msg;
} logline;

static struct {
    pthread_mutex_t mu;
    logline         q[LOGQ_MAX];
    size_t          head, n;
    unsigned long   dropped;
} LQ = { PTHREAD_MUTEX_INITIALIZER, { { 0, NULL } }, 0, 0, 0 };

/* Any thread: queue the line for the event loop. */
static void log_queue(void *ud, at_log_level level, const char *msg)
{
    char *copy = strdup(msg);

    pthread_mutex_lock(&LQ.mu);
    if (copy == NULL || LQ.n == LOGQ_MAX) {
        LQ.dropped++;
        free(copy);
    } else {
        logline *l = &LQ.q[(LQ.head + LQ.n++) % LOGQ_MAX];
        l->level = level;
        l->msg = copy;
    }
    pthread_mutex_unlock(&LQ.mu);
}

/* Event loop only. */
static void log_drain(ngx_log_t *log)
{
    for (;;) {
        logline batch[64];
        size_t n = 0;
        unsigned long dropped;

        pthread_mutex_lock(&LQ.mu);
        while (LQ.n > 0 && n < sizeof(batch) / sizeof(batch[0])) {
            batch[n++] = LQ.q[LQ.head];
            LQ.head = (LQ.head + 1) % LOGQ_MAX;
            LQ.n--;
        }
        dropped = LQ.dropped;
        LQ.dropped = 0;
        pthread_mutex_unlock(&LQ.mu);

        if (dropped)
            ngx_log_error(NGX_LOG_WARN, log, 0, "autotls: %ul log lines of the renewal thread "
                          "were dropped (the queue was full)", dropped);
        for (size_t i = 0; i < n; i++) {
            ngx_log_error(ngx_level(batch[i].level), log, 0, "%s%s", prefix(batch[i].msg), batch[i].msg);
            free(batch[i].msg);
        }
        if (n == 0)
            return;
    }
}

/* ------------------------------------------------------------- the thread */

/* One renewal thread per process at most; only the event loop touches
 * these fields, except `exited`, which the thread sets. */
static struct {
    at_ngx_main_conf_t *amcf;
    ngx_cycle_t        *cycle;
    at_logger           logger;
    at_store           *store;
    at_store_lock      *lock;         /* the store's renewal lock, while renewing */
    at_engine          *engine;
    pthread_t           thread;
    int                 running;      /* created, not yet joined */
    int                 exited;       /* the thread returned (atomic) */
    int                 stopping;     /* the worker is shutting down: never start again */
    time_t              retry_at;
    time_t              wait_since;   /* waiting for the renewal lock, since */
    int                 warned;
    ngx_event_t         timer;
} R;

static void *engine_main(void *arg)
{
    at_engine *e = arg;
    at_error err = AT_ERROR_INIT;

    /* What the store holds goes live first: the master published it before
     * the workers started, but a renewer that stopped since may have saved
     * more (or, after a reload that resized the zone, into the old zone). */
    if (at_engine_preload(R.amcf->conf, R.store, at_ngx_live(R.amcf), &R.logger, &err) < 0)
        at_log(&R.logger, AT_LOG_ERROR, "publishing the stored certificates: %s", err.msg);
    at_error_clear(&err);
    if (at_engine_run(e) != 0)
        at_log(&R.logger, AT_LOG_ERROR, "the renewal engine ended with an error");
    __atomic_store_n(&R.exited, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void release(void)
{
    if (R.engine)
        at_engine_free(R.engine);
    R.engine = NULL;
    if (R.lock)
        at_store_unlock(R.lock);
    R.lock = NULL;
    if (R.store)
        at_store_close(R.store);
    R.store = NULL;
}

/* One renewer per store: the lock is held while the engine runs and
 * released when it is joined, or by the kernel when the worker dies. Busy
 * means the previous renewer has not stopped yet (or another server shares
 * the store). */
static int take_renewal_lock(at_error *err)
{
    if (at_store_trylock(R.store, RENEWAL_LOCK, &R.lock, err) == 0) {
        R.wait_since = 0;
        R.warned = 0;
        return 0;
    }
    if (err->code != AT_ERR_BUSY)
        return -1;
    if (R.wait_since == 0)
        R.wait_since = ngx_time();
    if (!R.warned && ngx_time() - R.wait_since >= HANDOVER_WARN) {
        R.warned = 1;
        ngx_log_error(NGX_LOG_WARN, R.cycle->log, 0, "autotls: another process has been renewing "
                      "from the store %s for %d s; waiting for it to stop (does another server "
                      "use the same autotls_store?)", R.amcf->store, HANDOVER_WARN);
    }
    at_error_clear(err);
    return 1;
}

static void start(void)
{
    at_error err = AT_ERROR_INIT;
    sigset_t all, old;
    int rv;

    R.store = at_store_open_dir(R.amcf->store, &err);
    if (R.store) {
        switch (take_renewal_lock(&err)) {
        case 0:
            R.engine = at_engine_new(R.amcf->conf, R.store, at_ngx_live(R.amcf), &R.logger, &err);
            break;
        case 1:
            release();     /* the previous renewer still runs: next tick */
            return;
        default:
            break;
        }
    }
    if (R.engine == NULL) {
        ngx_log_error(NGX_LOG_ERR, R.cycle->log, 0, "autotls: cannot start renewing (trying again "
                      "in a minute): %s", err.msg);
        goto fail;
    }
    /* Signals belong to nginx's own thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    __atomic_store_n(&R.exited, 0, __ATOMIC_RELEASE);
    rv = pthread_create(&R.thread, NULL, engine_main, R.engine);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rv != 0) {
        ngx_log_error(NGX_LOG_ERR, R.cycle->log, rv, "autotls: cannot create the renewal thread "
                      "(trying again in a minute)");
        goto fail;
    }
    R.running = 1;
    at_ngx_zone_set_engine(R.amcf->shared, (ngx_pid_t)-1, ngx_pid);
    ngx_log_error(NGX_LOG_INFO, R.cycle->log, 0, "autotls: renewing %uz certificate(s) in process "
                  "%P, store %s", R.amcf->conf->ncerts, ngx_pid, R.amcf->store);
    return;
fail:
    at_error_clear(&err);
    release();
    R.retry_at = ngx_time() + RESTART_DELAY;
}

/* Join a thread that has returned; never waits for one that has not. */
static void reap(void)
{
    if (!R.running || !__atomic_load_n(&R.exited, __ATOMIC_ACQUIRE))
        return;
    pthread_join(R.thread, NULL);
    R.running = 0;
    at_ngx_zone_set_engine(R.amcf->shared, ngx_pid, 0);
    release();
    if (!R.stopping) {
        R.retry_at = ngx_time() + RESTART_DELAY;
        ngx_log_error(NGX_LOG_ERR, R.cycle->log, 0, "autotls: the renewal thread stopped "
                      "unexpectedly; restarting it in a minute");
    }
}

static void hand_over_requests(void)
{
    char req[MAX_TAKE][256];
    ngx_uint_t n = at_ngx_zone_take(R.amcf->shared, req, MAX_TAKE);

    for (ngx_uint_t i = 0; i < n; i++) {
        at_error err = AT_ERROR_INIT;
        const char *what = strcmp(req[i], "all") == 0 ? NULL : req[i];
        if (at_engine_force(R.engine, what, &err) != 0) {
            ngx_log_error(NGX_LOG_WARN, R.cycle->log, 0, "autotls: renew request for %s: %s",
                          req[i], err.msg);
            at_error_clear(&err);
        } else {
            ngx_log_error(NGX_LOG_NOTICE, R.cycle->log, 0, "autotls: renewing %s now, as requested",
                          req[i]);
        }
    }
}

static void tick(ngx_event_t *ev)
{
    log_drain(R.cycle->log);
    if ((ngx_exiting || ngx_quit || ngx_terminate) && !R.stopping) {
        /* Reload or quit: let the next worker 0 take over at once. */
        R.stopping = 1;
        if (R.running)
            at_engine_stop(R.engine);
    }
    reap();
    if (!R.stopping) {
        if (!R.running && ngx_time() >= R.retry_at)
            start();
        if (R.running)
            hand_over_requests();
    }
    if (!R.stopping || R.running)
        ngx_add_timer(ev, TICK_MS);
}

ngx_int_t at_ngx_renew_init_process(ngx_cycle_t *cycle, at_ngx_main_conf_t *amcf)
{
    if (amcf == NULL || amcf->conf == NULL || at_ngx_live(amcf) == NULL)
        return NGX_OK;
    if ((ngx_process != NGX_PROCESS_WORKER && ngx_process != NGX_PROCESS_SINGLE) || ngx_worker != 0)
        return NGX_OK;
    ngx_memzero(&R, sizeof(R));
    R.amcf = amcf;
    R.cycle = cycle;
    R.logger.fn = log_queue;
    R.logger.ud = NULL;
    R.logger.max = max_level(cycle->log);
    R.timer.handler = tick;
    R.timer.log = cycle->log;
    R.timer.data = &R;
    R.timer.cancelable = 1;
    ngx_add_timer(&R.timer, 1);
    return NGX_OK;
}

void at_ngx_renew_exit_process(ngx_cycle_t *cycle)
{
    if (R.amcf == NULL)
        return;
    R.stopping = 1;
    if (R.running) {
        at_engine_stop(R.engine);
        pthread_join(R.thread, NULL);
        R.running = 0;
        at_ngx_zone_set_engine(R.amcf->shared, ngx_pid, 0);
    }
    release();
    log_drain(cycle->log);
    if (R.timer.timer_set)
        ngx_del_timer(&R.timer);
    R.amcf = NULL;
}
