/*
 * at_engine_persist.c: the store writes the engine does not wait for.
 *
 * Every store write is fsynced, and on a disk an fsync costs a fraction of
 * a millisecond to several. The engine thread also drives every exchange
 * with the CA, so each write it waited for held up every order in flight.
 * Two writes need not be waited for:
 *
 *   - an order's checkpoint (resuming after a restart needs it, the order
 *     itself does not);
 *   - what follows a certificate that is stored and served: removing the
 *     finished order and recording the success in the renewal state.
 *
 * They go to one writer thread, in the order they were queued, so writes
 * for one certificate never overtake each other. The engine keeps its own
 * view consistent: a state write still queued is what it reads back
 * (at_persist_state), an order whose removal is queued is gone
 * (at_persist_finishing), and before any other write or read of that
 * certificate's files it waits for its queue (at_persist_wait). The
 * certificate's store lock is held until its last queued write is done, so
 * no other process sees the set half-finished. Failures are logged by the
 * engine thread (at_persist_reap), with the same words as before.
 *
 * If the thread cannot be started, the writes are made at once, as before.
 */
#include "at_engine_int.h"

#include <stdlib.h>
#include <string.h>

typedef enum { PJ_ORDER, PJ_FINISH } pj_kind;

typedef struct pjob {
    pj_kind        kind;
    size_t         cert;
    json_t        *json;        /* PJ_ORDER: the checkpoint; PJ_FINISH: the state */
    at_buf         key;         /* PJ_ORDER: the order's key, PEM */
    at_store_lock *lock;        /* PJ_FINISH: released once done */
    at_error       err;         /* the write that failed */
    at_error       err2;        /* PJ_FINISH: the state write, if that failed too */
    struct pjob   *next;
} pjob;

struct at_persist {
    pthread_mutex_t mu;
    pthread_cond_t  cond;       /* a job queued, a job done, or stop */
    pthread_t       thread;
    int             running;    /* the thread exists */
    int             stop;
    pjob           *head, *tail, *done;
    size_t          ncerts;
    unsigned       *pending;    /* per certificate: queued or being written */
    unsigned       *finishing;  /* per certificate: PJ_FINISH queued or being written */
    json_t        **state;      /* per certificate: the last state queued, until written */
};

static void job_clear(pjob *j)
{
    json_decref(j->json);
    at_buf_free_secret(&j->key);
    at_error_clear(&j->err);
    at_error_clear(&j->err2);
}

static void job_free(pjob *j)
{
    job_clear(j);
    free(j);
}

/* The write itself; on whichever thread runs it. */
static void job_run(at_engine *e, pjob *j)
{
    const char *id = e->conf->certs[j->cert].id;

    if (j->kind == PJ_ORDER) {
        at_store_order_save(e->store, id, j->json, at_buf_str(&j->key), &j->err);
        return;
    }
    if (at_store_order_remove(e->store, id, &j->err) != 0 && j->err.code == AT_ERR_NOTFOUND)
        at_error_clear(&j->err);
    at_store_state_save(e->store, id, j->json, &j->err2);
    if (j->lock)
        at_store_unlock(j->lock);
    j->lock = NULL;
}

static void log_job(at_engine *e, pjob *j)
{
    const at_cert_conf *cc = &e->conf->certs[j->cert];

    if (j->kind == PJ_ORDER && j->err.code != AT_OK)
        at_log(&e->log, AT_LOG_ERROR, "saving the order for %s: %s (it cannot resume after a restart)",
               cc->names[0], j->err.msg);
    if (j->kind == PJ_FINISH && j->err.code != AT_OK)
        at_log(&e->log, AT_LOG_WARN, "certificate %s: removing the finished order: %s", cc->id, j->err.msg);
    if (j->kind == PJ_FINISH && j->err2.code != AT_OK)
        at_log(&e->log, AT_LOG_ERROR, "saving the renewal state of %s: %s", cc->id, j->err2.msg);
}

/* With p->mu held: the job is written; account for it. */
static void job_done(struct at_persist *p, pjob *j)
{
    if (p->pending[j->cert] > 0)
        p->pending[j->cert]--;
    if (j->kind == PJ_FINISH && p->finishing[j->cert] > 0)
        p->finishing[j->cert]--;
    if (p->pending[j->cert] == 0) {
        json_decref(p->state[j->cert]);
        p->state[j->cert] = NULL;
    }
    j->next = p->done;
    p->done = j;
    pthread_cond_broadcast(&p->cond);
}

static void *writer_main(void *arg)
{
    at_engine *e = arg;
    struct at_persist *p = e->persist;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        pjob *j = p->head;
        if (!j) {
            if (p->stop)
                break;
            pthread_cond_wait(&p->cond, &p->mu);
            continue;
        }
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        job_run(e, j);
        pthread_mutex_lock(&p->mu);
        job_done(p, j);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int at_persist_init(at_engine *e, at_error *err)
{
    struct at_persist *p = calloc(1, sizeof(*p));
    size_t n = e->conf->ncerts ? e->conf->ncerts : 1;

    if (!p || !(p->pending = calloc(n, sizeof(*p->pending))) ||
        !(p->finishing = calloc(n, sizeof(*p->finishing))) || !(p->state = calloc(n, sizeof(*p->state)))) {
        if (p) {
            free(p->pending);
            free(p->finishing);
        }
        free(p);
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    }
    p->ncerts = e->conf->ncerts;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cond, NULL);
    e->persist = p;
    return 0;
}

/* Started by the thread that runs the engine, in the process that runs it
 * (a server may make the engine before it forks), with that thread's
 * signal mask. */
void at_persist_start(at_engine *e)
{
    struct at_persist *p = e->persist;

    if (!p || p->running)
        return;
    p->stop = 0;
    if (pthread_create(&p->thread, NULL, writer_main, e) == 0)
        p->running = 1;
    else
        at_log(&e->log, AT_LOG_WARN, "cannot start the store writer thread; writing on the engine thread");
}

void at_persist_reap(at_engine *e)
{
    struct at_persist *p = e->persist;
    pjob *list;

    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    list = p->done;
    p->done = NULL;
    pthread_mutex_unlock(&p->mu);
    /* Oldest first, as they were written. */
    pjob *rev = NULL;
    while (list) {
        pjob *j = list;
        list = j->next;
        j->next = rev;
        rev = j;
    }
    while (rev) {
        pjob *j = rev;
        rev = j->next;
        log_job(e, j);
        job_free(j);
    }
}

/* Queue a copy of *tmpl (whose contents it takes), or, without a writer
 * thread or the memory for a job, write it now. */
static void enqueue(at_engine *e, pjob *tmpl)
{
    struct at_persist *p = e->persist;
    pjob *j = p && p->running ? malloc(sizeof(*j)) : NULL;

    if (!j) {
        job_run(e, tmpl);
        log_job(e, tmpl);
        job_clear(tmpl);
        return;
    }
    *j = *tmpl;
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    p->pending[j->cert]++;
    if (j->kind == PJ_FINISH) {
        p->finishing[j->cert]++;
        json_decref(p->state[j->cert]);
        p->state[j->cert] = json_deep_copy(j->json);
    }
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
}

static void job_init(pjob *j, pj_kind kind, size_t cert, json_t *json)
{
    memset(j, 0, sizeof(*j));
    at_error_init(&j->err);
    at_error_init(&j->err2);
    j->kind = kind;
    j->cert = cert;
    j->json = json;
}

void at_persist_order(at_engine *e, size_t cert, json_t *checkpoint, at_buf *key_pem)
{
    pjob j;

    job_init(&j, PJ_ORDER, cert, checkpoint);
    j.key = *key_pem;
    memset(key_pem, 0, sizeof(*key_pem));
    enqueue(e, &j);
}

void at_persist_finish(at_engine *e, size_t cert, json_t *state, at_store_lock *lock)
{
    pjob j;

    job_init(&j, PJ_FINISH, cert, state);
    j.lock = lock;
    enqueue(e, &j);
}

void at_persist_wait(at_engine *e, size_t cert)
{
    struct at_persist *p = e->persist;

    if (!p || !p->running || cert >= p->ncerts)
        return;
    pthread_mutex_lock(&p->mu);
    while (p->pending[cert] > 0)
        pthread_cond_wait(&p->cond, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void at_persist_drain(at_engine *e)
{
    struct at_persist *p = e->persist;

    if (!p)
        return;
    if (p->running) {
        pthread_mutex_lock(&p->mu);
        while (p->head || p->tail)
            pthread_cond_wait(&p->cond, &p->mu);
        for (size_t i = 0; i < p->ncerts; i++)
            while (p->pending[i] > 0)
                pthread_cond_wait(&p->cond, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    at_persist_reap(e);
}

json_t *at_persist_state(at_engine *e, size_t cert)
{
    struct at_persist *p = e->persist;
    json_t *copy = NULL;

    if (!p || !p->running || cert >= p->ncerts)
        return NULL;
    pthread_mutex_lock(&p->mu);
    if (p->pending[cert] > 0 && p->state[cert])
        copy = json_deep_copy(p->state[cert]);
    pthread_mutex_unlock(&p->mu);
    return copy;
}

int at_persist_finishing(at_engine *e, size_t cert)
{
    struct at_persist *p = e->persist;
    int f = 0;

    if (!p || !p->running || cert >= p->ncerts)
        return 0;
    pthread_mutex_lock(&p->mu);
    f = p->finishing[cert] > 0;
    pthread_mutex_unlock(&p->mu);
    return f;
}

/* Every queued write is made before the thread ends. */
void at_persist_stop(at_engine *e)
{
    struct at_persist *p = e->persist;

    if (!p || !p->running)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    p->running = 0;
    at_persist_reap(e);
}

void at_persist_free(at_engine *e)
{
    struct at_persist *p = e->persist;

    if (!p)
        return;
    at_persist_stop(e);
    while (p->head) {              /* only without a thread: nothing is left */
        pjob *j = p->head;
        p->head = j->next;
        job_free(j);
    }
    for (size_t i = 0; i < p->ncerts; i++)
        json_decref(p->state[i]);
    free(p->state);
    free(p->pending);
    free(p->finishing);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mu);
    free(p);
    e->persist = NULL;
}
