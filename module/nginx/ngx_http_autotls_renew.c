/*
 * ngx_http_autotls_renew.c: renewal runs in worker 0, on the thread of the
 * core's renewer (at_renewer.h), as nginx's worker user; the event loop is
 * never blocked.
 *
 * A timer on worker 0's event loop (every TICK_MS, cancelable so it never
 * keeps an exiting worker alive) ticks the renewer, which
 *   - starts the thread once it holds the store's renewal lock, i.e. after
 *     the previous renewer (an old worker 0 still shutting down after a
 *     reload, whichever zone it used) has stopped; the thread first
 *     republishes the store into the live table, so a certificate the old
 *     renewer saved at the last moment is served too,
 *   - hands renew requests from the shared zone to the engine,
 *   - notices a thread that died and restarts it a minute later.
 * The timer also shuts the renewer down as soon as the worker starts
 * shutting down (reload, quit), keeps ticking until the thread is joined
 * (exit_process joins whatever is left: terminate, worker exit), and writes
 * the renewer's log lines.
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
#include <stdlib.h>
#include <string.h>

#define TICK_MS          250
#define RENEWAL_LOCK     "nginx-renewal"
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

/* ------------------------------------------------------------- the renewer */

/* Worker 0's renewer; only the event loop touches these. */
static struct {
    ngx_cycle_t   *cycle;
    at_logger      logger;       /* the queue: the thread's lines and the renewer's */
    at_renewer    *renewer;
    int            stopping;     /* the worker is shutting down */
    ngx_event_t    timer;
} R;

static void tick(ngx_event_t *ev)
{
    int more;

    if ((ngx_exiting || ngx_quit || ngx_terminate) && !R.stopping) {
        /* Reload or quit: let the next worker 0 take over at once. */
        R.stopping = 1;
        at_renewer_shutdown(R.renewer);
    }
    more = at_renewer_tick(R.renewer);
    log_drain(R.cycle->log);
    if (more)
        ngx_add_timer(ev, TICK_MS);
}

ngx_int_t at_ngx_renew_init_process(ngx_cycle_t *cycle, at_ngx_main_conf_t *amcf)
{
    at_renewer_conf rc;

    if (amcf == NULL || amcf->conf == NULL || at_ngx_live(amcf) == NULL)
        return NGX_OK;
    if ((ngx_process != NGX_PROCESS_WORKER && ngx_process != NGX_PROCESS_SINGLE) || ngx_worker != 0)
        return NGX_OK;
    ngx_memzero(&R, sizeof(R));
    R.cycle = cycle;
    R.logger.fn = log_queue;
    R.logger.ud = NULL;
    R.logger.max = max_level(cycle->log);
    ngx_memzero(&rc, sizeof(rc));
    rc.conf = amcf->conf;
    rc.live = at_ngx_live(amcf);
    rc.ctl = at_ngx_ctl(amcf);
    rc.log = &R.logger;
    rc.lock = RENEWAL_LOCK;
    rc.store_directive = "autotls_store";
    rc.republish = 1;
    R.renewer = at_renewer_new(&rc);
    if (R.renewer == NULL) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0, "autotls: out of memory for the renewer");
        return NGX_OK;
    }
    R.timer.handler = tick;
    R.timer.log = cycle->log;
    R.timer.data = &R;
    R.timer.cancelable = 1;
    ngx_add_timer(&R.timer, 1);
    return NGX_OK;
}

void at_ngx_renew_exit_process(ngx_cycle_t *cycle)
{
    if (R.renewer == NULL)
        return;
    at_renewer_free(R.renewer);
    R.renewer = NULL;
    log_drain(cycle->log);
    if (R.timer.timer_set)
        ngx_del_timer(&R.timer);
}
