/*
 * at_renew_ctl.c: the renewer's control block in shared memory (see
 * at_renewer.h): a queue of renew requests from any worker, and the record of
 * which process renews. Everything in it is consistent between any two
 * stores under the mutex, so a process that died holding the mutex leaves
 * nothing to repair: the next one takes the mutex over.
 */
#include "at_renewer.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define CTL_MAGIC    0x61745263u   /* "atRc" */
#define CTL_VERSION  1u

struct at_renew_ctl {
    uint32_t        magic;
    uint32_t        version;
    uint64_t        size;          /* sizeof(at_renew_ctl) of the build that formatted it */
    pthread_mutex_t mu;            /* process-shared, robust */
    uint32_t        nreq;
    char            req[AT_RENEW_QUEUE][AT_RENEW_REQ_MAX];
    int64_t         renewer_pid;   /* 0: none */
    int64_t         renewer_since;
};

size_t at_renew_ctl_size(void)
{
    return sizeof(at_renew_ctl);
}

at_renew_ctl *at_renew_ctl_format(void *mem, size_t size, at_error *err)
{
    at_renew_ctl *c = mem;
    pthread_mutexattr_t a;
    int rv;

    if (!mem || size < sizeof(*c) || ((uintptr_t)mem & 7)) {
        at_error_set(err, AT_ERR_INTERNAL, "the renewal control block needs %zu bytes of aligned "
                     "shared memory, got %zu", sizeof(*c), size);
        return NULL;
    }
    memset(c, 0, sizeof(*c));
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    rv = pthread_mutex_init(&c->mu, &a);
    pthread_mutexattr_destroy(&a);
    if (rv != 0) {
        at_error_set(err, AT_ERR_INTERNAL, "making the renewal control block's mutex failed: %s",
                     strerror(rv));
        return NULL;
    }
    c->size = sizeof(*c);
    c->version = CTL_VERSION;
    __atomic_store_n(&c->magic, CTL_MAGIC, __ATOMIC_RELEASE);
    return c;
}

at_renew_ctl *at_renew_ctl_attach(void *mem, size_t size)
{
    at_renew_ctl *c = mem;

    if (!mem || size < sizeof(*c) || ((uintptr_t)mem & 7))
        return NULL;
    if (__atomic_load_n(&c->magic, __ATOMIC_ACQUIRE) != CTL_MAGIC || c->version != CTL_VERSION
        || c->size != sizeof(*c))
        return NULL;
    return c;
}

static int lock(at_renew_ctl *c)
{
    int rv = pthread_mutex_lock(&c->mu);
    if (rv == EOWNERDEAD) {
        /* Its holder died between two consistent states: take it over. */
        pthread_mutex_consistent(&c->mu);
        rv = 0;
    }
    return rv;
}

int at_renew_ctl_request(at_renew_ctl *c, const char *what)
{
    size_t len = what ? strlen(what) : 0;
    int rv = -1;

    if (!c || len == 0 || len >= AT_RENEW_REQ_MAX || lock(c) != 0)
        return -1;
    for (uint32_t i = 0; i < c->nreq && i < AT_RENEW_QUEUE; i++)
        if (strcmp(c->req[i], what) == 0)
            rv = 0;                       /* waiting already */
    if (rv != 0 && c->nreq < AT_RENEW_QUEUE) {
        memcpy(c->req[c->nreq++], what, len + 1);
        rv = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return rv;
}

size_t at_renew_ctl_take(at_renew_ctl *c, char (*out)[AT_RENEW_REQ_MAX], size_t max)
{
    size_t n = 0;

    if (!c || lock(c) != 0)
        return 0;
    if (c->nreq > AT_RENEW_QUEUE)
        c->nreq = AT_RENEW_QUEUE;
    while (c->nreq > 0 && n < max) {
        memcpy(out[n++], c->req[0], AT_RENEW_REQ_MAX);
        memmove(c->req[0], c->req[1], (c->nreq - 1) * sizeof(c->req[0]));
        c->nreq--;
    }
    pthread_mutex_unlock(&c->mu);
    return n;
}

void at_renew_ctl_set_renewer(at_renew_ctl *c, long pid, time_t since)
{
    if (!c || lock(c) != 0)
        return;
    c->renewer_pid = pid;
    c->renewer_since = pid ? (int64_t)since : 0;
    pthread_mutex_unlock(&c->mu);
}

void at_renew_ctl_clear_renewer(at_renew_ctl *c, long pid)
{
    if (!c || lock(c) != 0)
        return;
    if (c->renewer_pid == pid) {
        c->renewer_pid = 0;
        c->renewer_since = 0;
    }
    pthread_mutex_unlock(&c->mu);
}

long at_renew_ctl_renewer(at_renew_ctl *c, time_t *since)
{
    long pid = 0;

    if (since)
        *since = 0;
    if (!c || lock(c) != 0)
        return 0;
    pid = (long)c->renewer_pid;
    if (since)
        *since = (time_t)c->renewer_since;
    pthread_mutex_unlock(&c->mu);
    return pid;
}
