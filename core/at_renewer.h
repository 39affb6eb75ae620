/*
 * at_renewer.h: how renewal lives inside a web server, the same for every
 * host. Two parts:
 *
 * The control block (at_renew_ctl): a small piece of shared memory the host
 * maps before it forks, next to the live table. Any worker queues renew
 * requests in it (the renew handler); the renewer takes them. It also
 * records which process renews, and since when (the status page). It is
 * not part of the live table on purpose: the live table is the handshake
 * path's structure, and a worker that died while queueing a request must
 * not look like a writer that died mid-write (which makes the table rebuild
 * itself and the engine republish everything). It has its own robust mutex,
 * magic and version, so a host can keep it across a reload.
 *
 * The renewer (at_renewer): in the one process chosen to renew, it owns the
 * thread that runs at_engine_run and everything around it - opening the
 * store, optionally holding a store lock so one renewer per store runs (the
 * previous generation's renewer may still be stopping after a reload),
 * starting the thread with every signal blocked (signals belong to the
 * server's own threads), noticing that it died and starting it again after
 * a delay, handing queued requests to at_engine_force, stopping and joining
 * it. The host calls at_renewer_tick periodically from its own thread
 * (Apache: the watchdog callback; nginx: a timer on worker 0's event loop)
 * and at_renewer_shutdown / at_renewer_stop when the process ends.
 */
#ifndef AT_RENEWER_H
#define AT_RENEWER_H

#include <stddef.h>
#include <time.h>
#include "at_error.h"
#include "at_buf.h"
#include "at_conf.h"
#include "at_live.h"
#include "at_log.h"

/* --------------------------------------------------------- control block */

#define AT_RENEW_REQ_MAX  256   /* longest request ("all", an id or a name) + NUL */
#define AT_RENEW_QUEUE    32    /* requests waiting at most */

typedef struct at_renew_ctl at_renew_ctl;

/* Bytes the block needs (a host may give it more, e.g. a whole page). */
size_t at_renew_ctl_size(void);

/* Format mem[0..size) as an empty block and return it. mem must be
 * MAP_SHARED memory (any memory for one process), 8-byte aligned, and no
 * process may be using it. NULL with err if size is too small or the mutex
 * cannot be made. */
at_renew_ctl *at_renew_ctl_format(void *mem, size_t size, at_error *err);

/* A block formatted earlier (kept across a reload), or NULL if mem does not
 * hold one of this layout. */
at_renew_ctl *at_renew_ctl_attach(void *mem, size_t size);

/* Queue a request: "all", a certificate id or a managed name (1 to
 * AT_RENEW_REQ_MAX - 1 bytes). A request already waiting is not queued
 * twice. 0 queued (or waiting already), -1 the queue is full or what is
 * empty or too long. */
int at_renew_ctl_request(at_renew_ctl *c, const char *what);

/* Take up to max requests, oldest first; returns how many. */
size_t at_renew_ctl_take(at_renew_ctl *c, char (*out)[AT_RENEW_REQ_MAX], size_t max);

/* The renewer record: pid renews since `since`. Clearing only clears when
 * pid is still the one recorded (a new renewer may have taken over). */
void at_renew_ctl_set_renewer(at_renew_ctl *c, long pid, time_t since);
void at_renew_ctl_clear_renewer(at_renew_ctl *c, long pid);
/* The recorded renewer (0: none), and since when (may be NULL). */
long at_renew_ctl_renewer(at_renew_ctl *c, time_t *since);

/* ------------------------------------------------------------- renewer */

typedef struct at_renewer at_renewer;

typedef struct at_renewer_conf {
    const at_conf   *conf;           /* borrowed: must outlive the renewer */
    at_live         *live;           /* where the engine publishes */
    at_renew_ctl    *ctl;            /* requests and the renewer record, or NULL */
    const at_logger *log;            /* the renewer's own lines; called from the
                                        ticking thread and from the renewal
                                        thread, so it must be thread-safe */
    const at_logger *engine_log;     /* the engine's lines; NULL: log */
    const char      *lock;           /* store lock held while renewing, or NULL */
    const char      *store_directive;/* named when waiting long for the lock */
    int              republish;      /* publish the store to live before running:
                                        a renewer that stopped since the host
                                        published it may have saved more */
    long             restart_delay;  /* seconds after a failed start or a dead
                                        thread; 0: 60 */
} at_renewer_conf;

/* Nothing starts yet. Copies rc (the pointers in it are borrowed). NULL on
 * out of memory. */
at_renewer *at_renewer_new(const at_renewer_conf *rc);

/* The periodic call (every second or faster; never blocks on the engine):
 * joins a renewal thread that has returned (and, unless shut down, logs it
 * and schedules a restart), starts the thread when it is due (the store
 * opened, the lock held, the engine made; a failure is logged and retried
 * after the restart delay), and hands up to AT_RENEW_QUEUE queued requests
 * to the engine. The first tick starts at once. Returns 1 while the host
 * should keep ticking (not shut down, or a thread still to be joined), 0
 * when there is nothing left to do. */
int at_renewer_tick(at_renewer *r);

/* Ask the engine to stop and never start again; does not wait (a later tick
 * or at_renewer_stop joins the thread). For a worker that starts shutting
 * down, so the next renewer can take over as soon as this one returns. */
void at_renewer_shutdown(at_renewer *r);

/* Shut down and join the thread; releases the store and its lock and
 * clears the renewer record if it is still this process. */
void at_renewer_stop(at_renewer *r);

/* at_renewer_stop, then free. NULL is fine. */
void at_renewer_free(at_renewer *r);

/* Every function above is thread-safe (one internal lock, never held while
 * waiting for the engine except to join a thread asked to stop). */

/* For tests only: stop the engine as if the renewal thread had died, without
 * shutting the renewer down, so the next ticks restart it. */
void at_renewer_test_kill(at_renewer *r);

#endif
