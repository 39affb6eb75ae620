/*
 * at_engine_int.h: the engine's internal structures, shared by
 * at_engine.c (loop, tasks, requests), at_engine_ca.c (directory and
 * account per CA) and at_engine_cert.c (planning and the life of an order).
 */
#ifndef AT_ENGINE_INT_H
#define AT_ENGINE_INT_H

#include <pthread.h>
#include <time.h>
#include "at_engine.h"
#include "at_driver.h"
#include "at_planner.h"
#include "at_cmd.h"
#include "at_buf.h"
#include "at_store.h"

/* First quick poll of an order (ms; then doubling below a second, see
 * at_order_params.quick_poll_ms): a CA that answers within milliseconds is
 * not kept waiting a whole second per step. 20 ms rather than 50 ms: a
 * local CA validates and issues in 5-20 ms, and the two waits per order
 * were most of its latency (100 names on Pebble: 2.9 s -> 2.0 s); a remote
 * CA pays one more POST-as-GET per step before whole-second polls. */
#define AT_ENGINE_QUICK_POLL_MS 20

typedef struct at_task at_task;
typedef struct at_slot at_slot;
typedef struct at_ca_rt at_ca_rt;

/* What a task is doing. */
typedef enum at_task_kind {
    AT_TASK_ORDER = 1,   /* obtain a certificate */
    AT_TASK_ARI,         /* ask the CA's renewalInfo */
    AT_TASK_ACCOUNT,     /* ensure / fetch / update / rollover / deactivate */
    AT_TASK_REVOKE
} at_task_kind;

/* One published challenge, remembered so that it is withdrawn whatever happens. */
typedef struct at_pub {
    at_challenge_type type;
    char  *key;            /* token (http-01), name (tls-alpn-01), record name (dns-01) */
    char  *value;          /* dns-01 TXT value (for teardown) */
    struct at_pub *next;
} at_pub;

/* A dns-01 hook command in flight for a PUBLISH step. */
typedef struct at_hook {
    at_cmd   *cmd;
    unsigned  tag;
    int       setup;       /* 1 setup (answer the op), 0 teardown (fire and forget) */
    char     *what;        /* for messages */
    struct at_hook *next;
} at_hook;

struct at_task {
    at_task_kind kind;
    size_t       ca;            /* index into e->cas */
    long         cert;          /* index into conf->certs, -1 if none */
    at_acme_op  *op;            /* NULL while waiting for the CA to be ready */
    at_store_lock *lock;        /* orders hold the certificate's lock */
    at_pub      *pubs;
    at_hook     *hooks;
    int          nreqs;         /* requests in flight for this task */
    int          done;          /* finished; freed once nreqs == 0 and hooks done */
    time_t       wait_until;    /* from the op's WAIT step */
    time_t       started;
    int          is_renewal;    /* a certificate existed when the order began */
    char        *saved_url;     /* order URL of the last checkpoint saved, or NULL */
    at_plan_reason reason;
    /* account tasks */
    at_account_action acct_action;
    EVP_PKEY    *new_key;       /* rollover */
    char       **contact;
    size_t       ncontact;
    json_t      *result;        /* account object for the tool */
    /* outcome */
    at_error     err;
    int          ok;
    at_task     *next;
};

/* One logical ACME request (or the plain directory GET) in flight. */
struct at_slot {
    at_task     *task;          /* NULL: orphaned (task gone) or a CA directory fetch */
    at_ca_rt    *ca;            /* for the directory fetch */
    unsigned     tag;
    at_acme_exch *exch;         /* NULL for the directory fetch */
    int          in_flight;     /* submitted to the driver, no answer yet */
    int          ready;         /* an answer arrived: advance me */
    time_t       wait_until;
    long long    not_before_ms; /* a quick poll held back until then (at_time_now_ms), 0 = none */
    at_http_resp resp;          /* directory fetch answer */
    at_error     terr;          /* directory fetch transport error */
    int          has_terr;
    at_slot     *next;
};

typedef enum at_ca_state {
    AT_CA_IDLE = 0,      /* nothing known yet (or reset after a failure) */
    AT_CA_DIRECTORY,     /* fetching the directory */
    AT_CA_ACCOUNT,       /* ensuring the account */
    AT_CA_READY
} at_ca_state;

struct at_ca_rt {
    size_t          index;
    const at_ca_conf *conf;
    at_acme_client *client;
    at_driver      *drv;
    at_ca_state     state;
    at_task        *acct_task;  /* the ENSURE task while state == ACCOUNT */
    at_error        err;        /* why the last attempt to get ready failed */
    time_t          failed_at;
};

/* What the engine knows about each configured certificate. */
typedef struct at_cert_rt {
    at_plan   plan;
    int       dirty;         /* re-read the store and re-plan */
    time_t    planned_at;    /* when the plan was last made */
    int       running;       /* an order task exists */
    int       ari_running;
    time_t    ari_next;      /* when to ask renewalInfo again (0 = unknown) */
    int       have_cert;
    int       forced;        /* force requested, until an order succeeds */
    int       failed_now;    /* failed during this run_once */
    /* The last failure as this process recorded it, in case the store could
     * not keep it (disk full): planning must not lose a failure's backoff
     * (or a renew request, above), or it would order again at once. */
    int       mem_failures;
    time_t    mem_last_failure;
    time_t    mem_retry_after;
    /* The certificate this process has just stored and served (checked
     * when it was downloaded): the next plan takes it from here rather than
     * reading it back and decoding chain and key once more. */
    int          fresh;
    at_cert_info fresh_info;
} at_cert_rt;

struct at_engine {
    const at_conf *conf;
    at_store      *store;
    at_live       *live;
    at_logger      log;
    at_ca_rt      *cas;
    at_cert_rt    *certs;
    at_task       *tasks;
    at_slot       *slots;
    at_hook       *notify;       /* notify commands being reaped */
    unsigned       next_tag;
    int            orders_running;
    uint64_t       live_repairs;  /* at_live repairs seen; a change means republish */
    at_engine_event_fn *event_fn;
    void          *event_ud;

    pthread_mutex_t mu;          /* guards the flags below (other threads) */
    int            stop;
    int            wake;
    char         **force_ids;    /* pending force requests from other threads */
    size_t         nforce;

    struct at_persist *persist;  /* store writes off this thread (at_engine_persist.c) */
};

/* at_engine.c */
at_task *at_engine_task_new(at_engine *e, at_task_kind kind, size_t ca, long cert);
void     at_engine_task_finish(at_engine *e, at_task *t);
unsigned long at_engine_random(void);
void     at_engine_event(at_engine *e, const char *event, const at_cert_conf *cc, const at_error *err);

/* at_engine_ca.c */
int   at_engine_ca_init(at_engine *e, at_error *err);
void  at_engine_ca_free(at_engine *e);
/* Move the CA towards READY; returns its state. */
at_ca_state at_engine_ca_advance(at_engine *e, at_ca_rt *ca, time_t now);
void  at_engine_ca_directory_done(at_engine *e, at_slot *s, time_t now);
void  at_engine_ca_account_done(at_engine *e, at_task *t);
void  at_engine_ca_reset(at_engine *e, at_ca_rt *ca);

/* at_engine_cert.c */
void  at_engine_cert_replan(at_engine *e, size_t i, time_t now);
int   at_engine_cert_start(at_engine *e, size_t i, time_t now);
int   at_engine_cert_start_op(at_engine *e, at_task *t, time_t now);
void  at_engine_cert_done(at_engine *e, at_task *t, time_t now);
void  at_engine_ari_start(at_engine *e, size_t i, time_t now);
int   at_engine_ari_start_op(at_engine *e, at_task *t, time_t now);
void  at_engine_ari_done(at_engine *e, at_task *t, time_t now);
long  at_engine_cert_find(const at_engine *e, const char *id_or_name);
void  at_engine_cert_record_force(at_engine *e, size_t i, time_t now);

/* at_engine_persist.c: the writes the engine thread does not wait for. */
int     at_persist_init(at_engine *e, at_error *err);
void    at_persist_start(at_engine *e);      /* on the engine's thread, before running it */
void    at_persist_stop(at_engine *e);       /* every queued write made, the thread gone */
void    at_persist_free(at_engine *e);
/* Queue an order's checkpoint; takes both. */
void    at_persist_order(at_engine *e, size_t cert, json_t *checkpoint, at_buf *key_pem);
/* Queue what follows a stored and served certificate: remove its order,
 * save this state, then release its lock. Takes all three. */
void    at_persist_finish(at_engine *e, size_t cert, json_t *state, at_store_lock *lock);
/* Until the certificate's queued writes are made. */
void    at_persist_wait(at_engine *e, size_t cert);
void    at_persist_drain(at_engine *e);
/* A copy of the state still queued for the certificate, or NULL. */
json_t *at_persist_state(at_engine *e, size_t cert);
/* Its finished order's removal is still queued. */
int     at_persist_finishing(at_engine *e, size_t cert);
/* Log the queued writes that failed (engine thread). */
void    at_persist_reap(at_engine *e);

#endif
