/*
 * ngx_http_autotls_zone.c: the shared zone "autotls". The master creates
 * it before it forks, so every worker (and the renewal thread in worker 0)
 * sees the same memory. nginx formats a zone as a slab pool; the module
 * takes two blocks of it:
 *
 *   a header: renew requests, which process renews (nginx's slab mutex,
 *             which the master releases if a worker dies holding it)
 *   the live table: everything else, formatted by the core
 *
 * A reload with the same size reuses the zone as it is, so live
 * certificates and pending challenges survive; another size makes a new
 * zone, which the master fills from the store before the workers start.
 */
#include "ngx_http_autotls_module.h"

#include <string.h>

#define ZONE_MAGIC    0x61744e78u   /* "atNx" */
#define ZONE_VERSION  1u
#define MAX_REQUESTS  32

typedef struct {
    uint32_t     magic;
    uint32_t     version;
    u_char      *live_mem;
    size_t       live_size;
    ngx_pid_t    engine_pid;        /* the worker that renews, 0 if none */
    time_t       engine_since;
    ngx_uint_t   nreq;
    char         req[MAX_REQUESTS][256];
} zone_header;

/* This cycle's view of the zone (process memory, inherited by workers). */
struct at_ngx_shared_s {
    ngx_slab_pool_t  *shpool;
    zone_header      *hdr;
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

static size_t total_names(const at_conf *conf)
{
    size_t n = 0;
    for (size_t i = 0; i < conf->ncerts; i++)
        n += conf->certs[i].nnames;
    return n;
}

ngx_int_t at_ngx_zone_add(ngx_conf_t *cf, at_ngx_main_conf_t *amcf)
{
    at_ngx_shared_t *sh = ngx_pcalloc(cf->pool, sizeof(*sh));
    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(cf->pool, 0);
    size_t size = amcf->zone_size;

    if (sh == NULL || cln == NULL)
        return NGX_ERROR;
    cln->handler = shared_cleanup;
    cln->data = sh;
    if (size == 0) {
        /* The core's estimate for the live table, plus the slab pool's
         * own bookkeeping (page descriptors, the header block). */
        size = at_live_size_hint(total_names(amcf->conf));
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

ngx_int_t at_ngx_zone_request(at_ngx_shared_t *sh, const char *what)
{
    zone_header *h = sh->hdr;
    ngx_int_t rv = NGX_ERROR;

    if (h == NULL || strlen(what) >= sizeof(h->req[0]))
        return NGX_ERROR;
    ngx_shmtx_lock(&sh->shpool->mutex);
    for (ngx_uint_t i = 0; i < h->nreq; i++)
        if (strcmp(h->req[i], what) == 0)
            rv = NGX_OK;                       /* already queued */
    if (rv != NGX_OK && h->nreq < MAX_REQUESTS) {
        ngx_cpystrn((u_char *)h->req[h->nreq++], (u_char *)what, sizeof(h->req[0]));
        rv = NGX_OK;
    }
    ngx_shmtx_unlock(&sh->shpool->mutex);
    return rv;
}

ngx_uint_t at_ngx_zone_take(at_ngx_shared_t *sh, char (*out)[256], ngx_uint_t max)
{
    zone_header *h = sh->hdr;
    ngx_uint_t n = 0;

    if (h == NULL)
        return 0;
    ngx_shmtx_lock(&sh->shpool->mutex);
    while (h->nreq > 0 && n < max) {
        ngx_memcpy(out[n++], h->req[0], sizeof(h->req[0]));
        ngx_memmove(h->req[0], h->req[1], (h->nreq - 1) * sizeof(h->req[0]));
        h->nreq--;
    }
    ngx_shmtx_unlock(&sh->shpool->mutex);
    return n;
}

void at_ngx_zone_set_engine(at_ngx_shared_t *sh, ngx_pid_t expect, ngx_pid_t pid)
{
    if (sh->hdr == NULL)
        return;
    ngx_shmtx_lock(&sh->shpool->mutex);
    if (expect == (ngx_pid_t)-1 || sh->hdr->engine_pid == expect) {
        sh->hdr->engine_pid = pid;
        sh->hdr->engine_since = pid ? ngx_time() : 0;
    }
    ngx_shmtx_unlock(&sh->shpool->mutex);
}

ngx_pid_t at_ngx_zone_engine(at_ngx_shared_t *sh, time_t *since)
{
    ngx_pid_t pid;
    if (sh->hdr == NULL)
        return 0;
    ngx_shmtx_lock(&sh->shpool->mutex);
    pid = sh->hdr->engine_pid;
    if (since)
        *since = sh->hdr->engine_since;
    ngx_shmtx_unlock(&sh->shpool->mutex);
    return pid;
}
