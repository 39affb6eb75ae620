/*
 * ngx_http_autotls_zone.c: the shared zone "autotls". The master creates
 * it before it forks, so every worker (and the renewal thread in worker 0)
 * sees the same memory. nginx formats a zone as a slab pool; the module
 * takes two blocks of it:
 *
 *   a header: where the other two are
 *   the renewal control block (at_renewer.h): renew requests, which
 *             process renews
 *   the live table: everything else, formatted by the core
 *
 * A reload with the same size reuses the zone as it is, so live
 * certificates and pending challenges survive; another size makes a new
 * zone, which the master fills from the store before the workers start.
 */
#include "ngx_http_autotls_module.h"

#include <string.h>

#define ZONE_MAGIC    0x61744e78u   /* "atNx" */
#define ZONE_VERSION  2u

typedef struct {
    uint32_t     magic;
    uint32_t     version;
    u_char      *ctl_mem;
    size_t       ctl_size;
    u_char      *live_mem;
    size_t       live_size;
} zone_header;

/* This cycle's view of the zone (process memory, inherited by workers). */
struct at_ngx_shared_s {
    ngx_slab_pool_t  *shpool;
    zone_header      *hdr;
    at_renew_ctl     *ctl;
    at_live          *live;
};

static ngx_str_t zone_name = ngx_string("autotls");

static void shared_cleanup(void *data)
{
    at_ngx_shared_t *sh = data;
    if (sh->live)
        at_live_detach(sh->live);
    sh->live = NULL;
}

static ngx_int_t attach(ngx_shm_zone_t *zone, at_ngx_shared_t *sh, zone_header *hdr)
{
    at_error err = AT_ERROR_INIT;

    sh->hdr = hdr;
    sh->ctl = at_renew_ctl_attach(hdr->ctl_mem, hdr->ctl_size);
    if (sh->ctl == NULL) {
        ngx_log_error(NGX_LOG_EMERG, zone->shm.log, 0, "autotls: the renewal control block in the "
                      "shared zone \"%V\" is damaged", &zone->shm.name);
        return NGX_ERROR;
    }
    sh->live = at_live_attach(hdr->live_mem, hdr->live_size, &err);
    if (sh->live == NULL) {
        ngx_log_error(NGX_LOG_EMERG, zone->shm.log, 0, "autotls: attaching the live table in the "
                      "shared zone \"%V\" failed: %s", &zone->shm.name, err.msg);
        at_error_clear(&err);
        return NGX_ERROR;
    }
    return NGX_OK;
}

static ngx_int_t zone_init(ngx_shm_zone_t *zone, void *data)
{
    at_ngx_shared_t *sh = zone->data;
    ngx_slab_pool_t *shpool = (ngx_slab_pool_t *)zone->shm.addr;
    zone_header *hdr = shpool->data;
    at_error err = AT_ERROR_INIT;
    size_t pages;

    sh->shpool = shpool;
    if (data != NULL && hdr != NULL && hdr->magic == ZONE_MAGIC && hdr->version == ZONE_VERSION) {
        /* Reload: the zone goes on as it is. */
        return attach(zone, sh, hdr);
    }

    hdr = ngx_slab_calloc(shpool, sizeof(*hdr));
    if (hdr == NULL)
        goto nomem;
    hdr->ctl_size = at_renew_ctl_size();
    hdr->ctl_mem = ngx_slab_alloc(shpool, hdr->ctl_size);
    if (hdr->ctl_mem == NULL)
        goto nomem;
    if (at_renew_ctl_format(hdr->ctl_mem, hdr->ctl_size, &err) == NULL) {
        ngx_log_error(NGX_LOG_EMERG, zone->shm.log, 0, "autotls: preparing the shared zone \"%V\" "
                      "failed: %s", &zone->shm.name, err.msg);
        at_error_clear(&err);
        return NGX_ERROR;
    }
    /* The rest of the zone, as one run of whole pages. */
    ngx_shmtx_lock(&shpool->mutex);
    pages = shpool->pfree;
    hdr->live_size = pages * ngx_pagesize;
    hdr->live_mem = hdr->live_size >= AT_LIVE_MIN_SIZE
                    ? ngx_slab_alloc_locked(shpool, hdr->live_size) : NULL;
    ngx_shmtx_unlock(&shpool->mutex);
    if (hdr->live_mem == NULL)
        goto nomem;
    if (hdr->live_size > AT_LIVE_MAX_SIZE)
        hdr->live_size = AT_LIVE_MAX_SIZE;
    if (at_live_format(hdr->live_mem, hdr->live_size, &err) != 0) {
        ngx_log_error(NGX_LOG_EMERG, zone->shm.log, 0, "autotls: preparing the shared zone \"%V\" "
                      "failed: %s", &zone->shm.name, err.msg);
        at_error_clear(&err);
        return NGX_ERROR;
    }
    hdr->magic = ZONE_MAGIC;
    hdr->version = ZONE_VERSION;
    shpool->data = hdr;
    return attach(zone, sh, hdr);

nomem:
    ngx_log_error(NGX_LOG_EMERG, zone->shm.log, 0, "autotls: the shared zone \"%V\" (%uz bytes) "
                  "is too small; raise autotls_zone", &zone->shm.name, zone->shm.size);
    return NGX_ERROR;
}

ngx_int_t at_ngx_zone_add(ngx_conf_t *cf, at_ngx_main_conf_t *amcf)
{
    at_ngx_shared_t *sh = ngx_pcalloc(cf->pool, sizeof(*sh));
    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(cf->pool, 0);
    size_t size = amcf->glob.shm_size;

    if (sh == NULL || cln == NULL)
        return NGX_ERROR;
    cln->handler = shared_cleanup;
    cln->data = sh;
    if (size == 0) {
        /* The core's estimate for the live table, plus the slab pool's
         * own bookkeeping (page descriptors, the header block). */
        size = at_conf_live_size_hint(amcf->conf);
        size += size / 32 + 16 * ngx_pagesize;
    }
    amcf->zone = ngx_shared_memory_add(cf, &zone_name, size, &ngx_http_autotls_module);
    if (amcf->zone == NULL)
        return NGX_ERROR;
    if (amcf->zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "autotls: the shared zone \"%V\" is already in use",
                           &zone_name);
        return NGX_ERROR;
    }
    amcf->zone->init = zone_init;
    amcf->zone->data = sh;
    amcf->shared = sh;
    return NGX_OK;
}

at_live *at_ngx_live(const at_ngx_main_conf_t *amcf)
{
    return amcf && amcf->shared ? amcf->shared->live : NULL;
}

at_renew_ctl *at_ngx_ctl(const at_ngx_main_conf_t *amcf)
{
    return amcf && amcf->shared ? amcf->shared->ctl : NULL;
}
