/*
 * autotls_shm.c: the shared region. The parent (root) maps it before it
 * forks, so every child (and the renewal thread in one of them) sees the
 * same memory:
 *
 *   [ renewal control block (at_renewer.h), one page ][ live table ]
 *
 * The region outlives configuration generations: it is remembered in the
 * process pool, so a graceful restart keeps serving the certificates that
 * are live (the DSO itself is unloaded and reloaded on every restart, so no
 * static variable could hold it). It is replaced only when its size must
 * change or it was made by another build of the module.
 */
#include "mod_autotls.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <apr_strings.h>

APLOG_USE_MODULE(autotls);

#define SHM_KEY      "mod_autotls.shm"
#define SHM_MAGIC    0x61745368u   /* "atSh" */
#define SHM_VERSION  2u

struct at_ap_shm {
    uint32_t      magic;           /* checked after a DSO reload */
    uint32_t      version;
    void         *base;
    size_t        total;
    size_t        live_size;
    at_renew_ctl *ctl;
    at_live      *live;
};

/* The control block, rounded up to whole pages so the live table starts on one. */
static size_t header_size(void)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t ps = page > 0 ? (size_t)page : 4096;
    return (at_renew_ctl_size() + ps - 1) / ps * ps;
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
    if (!at_renew_ctl_format(base, hs, &err) || at_live_format((char *)base + hs, live_size, &err) != 0) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, "AutoTLS: preparing the shared memory failed: %s",
                     err.msg);
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
    shm->ctl = base;
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
        g->ctl = old->ctl;
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
    g->ctl = shm->ctl;
    g->live = shm->live;
    return 0;
}
