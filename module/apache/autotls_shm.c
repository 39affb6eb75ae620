/*
 * autotls_shm.c: the shared region. The parent (root) maps it before it
 * forks, so every child (and the renewal thread in one of them) sees the
 * same memory:
 *
 *   [ header page: renew requests, which process renews ][ live table ]
 *
 * The region outlives configuration generations: it is remembered in the
 * process pool, so a graceful restart keeps serving the certificates that
 * are live (the DSO itself is unloaded and reloaded on every restart, so no
 * static variable could hold it). It is replaced only when its size must
 * change or it was made by another build of the module.
 */
#include "mod_autotls.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <apr_strings.h>

APLOG_USE_MODULE(autotls);

#define SHM_KEY      "mod_autotls.shm"
#define SHM_MAGIC    0x61745368u   /* "atSh" */
#define SHM_VERSION  1u
#define MAX_REQUESTS 32

typedef struct shm_header {
    uint32_t        magic;
    uint32_t        version;
    pthread_mutex_t mu;            /* process-shared, robust */
    uint32_t        nreq;
    char            req[MAX_REQUESTS][256];
    pid_t           engine_pid;    /* the child that renews, 0 if none */
    apr_time_t      engine_since;
} shm_header;

struct at_ap_shm {
    uint32_t     magic;            /* checked after a DSO reload */
    uint32_t     version;
    void        *base;
    size_t       total;
    size_t       live_size;
    shm_header  *hdr;
    at_live     *live;
};

static size_t header_size(void)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t ps = page > 0 ? (size_t)page : 4096;
    return (sizeof(shm_header) + ps - 1) / ps * ps;
}

static int lock(shm_header *h)
{
    int rv = pthread_mutex_lock(&h->mu);
    if (rv == EOWNERDEAD) {
        /* A process died holding it; the data it guards is always consistent
         * between two stores, so just take it over. */
        pthread_mutex_consistent(&h->mu);
        rv = 0;
    }
    return rv;
}

static int init_header(shm_header *h)
{
    pthread_mutexattr_t a;
    int rv;

    memset(h, 0, sizeof(*h));
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    rv = pthread_mutex_init(&h->mu, &a);
    pthread_mutexattr_destroy(&a);
    h->magic = SHM_MAGIC;
    h->version = SHM_VERSION;
    return rv;
}

static at_ap_shm *create(server_rec *s, apr_pool_t *ppool, size_t live_size)
{
    at_ap_shm *shm;
    size_t hs = header_size();
    at_error err = AT_ERROR_INIT;
    void *base = mmap(NULL, hs + live_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (base == MAP_FAILED) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, errno, s,
                     "AutoTLS: cannot map %" APR_SIZE_T_FMT " bytes of shared memory; lower AutoTLSSharedMemory "
                     "or raise the memory limits", hs + live_size);
        return NULL;
    }
    if (init_header(base) != 0 || at_live_format((char *)base + hs, live_size, &err) != 0) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, "AutoTLS: preparing the shared memory failed: %s",
                     err.code ? err.msg : "mutex initialisation failed");
        at_error_clear(&err);
        munmap(base, hs + live_size);
        return NULL;
    }
    shm = apr_pcalloc(ppool, sizeof(*shm));
    shm->magic = SHM_MAGIC;
    shm->version = SHM_VERSION;
    shm->base = base;
    shm->total = hs + live_size;
    shm->live_size = live_size;
    shm->hdr = base;
    shm->live = at_live_attach((char *)base + hs, live_size, &err);
    if (!shm->live) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, "AutoTLS: attaching the live table failed: %s", err.msg);
        at_error_clear(&err);
        munmap(base, shm->total);
        return NULL;
    }
    return shm;
}

static void destroy(at_ap_shm *shm)
{
    /* Children of older generations keep their own mapping; this only drops
     * the parent's. */
    at_live_detach(shm->live);
    munmap(shm->base, shm->total);
    shm->magic = 0;
}

int at_ap_shm_setup(at_ap_gen *g, size_t size, int exact)
{
    apr_pool_t *ppool = g->s->process->pool;
    at_ap_shm *old = NULL, *shm;
    void *data = NULL;

    apr_pool_userdata_get(&data, SHM_KEY, ppool);
    old = data;
    if (old && (old->magic != SHM_MAGIC || old->version != SHM_VERSION))
        old = NULL;   /* another build's layout: leave it alone, make ours */
    if (old && (exact ? old->live_size == size : old->live_size >= size)) {
        g->shm = old;
        g->live = old->live;
        return 0;
    }
    shm = create(g->s, ppool, size);
    if (!shm)
        return -1;
    if (old) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, g->s,
                     "AutoTLS: shared memory resized from %" APR_SIZE_T_FMT " to %" APR_SIZE_T_FMT " bytes", old->live_size, size);
        destroy(old);
    }
    apr_pool_userdata_set(shm, SHM_KEY, apr_pool_cleanup_null, ppool);
    g->shm = shm;
    g->live = shm->live;
    return 0;
}

int at_ap_shm_request(at_ap_shm *shm, const char *what)
{
    shm_header *h = shm->hdr;
    int rv = -1;

    if (strlen(what) >= sizeof(h->req[0]) || lock(h) != 0)
        return -1;
    for (uint32_t i = 0; i < h->nreq; i++)
        if (strcmp(h->req[i], what) == 0)
            rv = 0;                  /* already queued */
    if (rv != 0 && h->nreq < MAX_REQUESTS) {
        apr_cpystrn(h->req[h->nreq++], what, sizeof(h->req[0]));
        rv = 0;
    }
    pthread_mutex_unlock(&h->mu);
    return rv;
}

int at_ap_shm_take(at_ap_shm *shm, char (*out)[256], int max)
{
    shm_header *h = shm->hdr;
    int n = 0;

    if (lock(h) != 0)
        return 0;
    while (h->nreq > 0 && n < max) {
        memcpy(out[n++], h->req[0], sizeof(h->req[0]));
        memmove(h->req[0], h->req[1], (h->nreq - 1) * sizeof(h->req[0]));
        h->nreq--;
    }
    pthread_mutex_unlock(&h->mu);
    return n;
}

void at_ap_shm_engine(at_ap_shm *shm, pid_t pid)
{
    if (lock(shm->hdr) != 0)
        return;
    shm->hdr->engine_pid = pid;
    shm->hdr->engine_since = pid ? apr_time_now() : 0;
    pthread_mutex_unlock(&shm->hdr->mu);
}

pid_t at_ap_shm_engine_pid(at_ap_shm *shm, apr_time_t *since)
{
    pid_t pid = 0;
    if (lock(shm->hdr) != 0)
        return 0;
    pid = shm->hdr->engine_pid;
    if (since)
        *since = shm->hdr->engine_since;
    pthread_mutex_unlock(&shm->hdr->mu);
    return pid;
}
