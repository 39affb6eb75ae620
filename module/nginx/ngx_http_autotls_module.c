/*
 * ngx_http_autotls_module.c: automatic HTTPS for nginx. The module record
 * and nginx's phases:
 *
 *   "autotls on" (parsing)   a placeholder certificate for the server's ssl
 *   postconfiguration        managed servers -> at_conf, the shared zone,
 *                            SSL_CTX callbacks, the post-read handler
 *   zone init (master)       the live table, new or kept across a reload
 *   init_module (master,     the store (given to the worker user) and its
 *     root, before workers)  certificates published, so they serve at once
 *   init_process (workers)   per-process certificate cache; in worker 0
 *                            the renewal thread
 *   exit_process             the thread stopped and joined, cache freed
 */
#include "ngx_http_autotls_module.h"

#include <unistd.h>

#include "at_engine.h"
#include "at_store.h"

static ngx_int_t postconfiguration(ngx_conf_t *cf)
{
    at_ngx_main_conf_t *amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_autotls_module);

    if (at_ngx_sites_build(cf, amcf) != NGX_OK)
        return NGX_ERROR;
    if (amcf->conf == NULL)
        return NGX_OK;
    if (at_ngx_zone_add(cf, amcf) != NGX_OK)
        return NGX_ERROR;
    if (at_ngx_tls_postconfiguration(cf, amcf) != NGX_OK)
        return NGX_ERROR;
    return at_ngx_http_postconfiguration(cf);
}

static at_ngx_main_conf_t *main_conf(ngx_cycle_t *cycle)
{
    at_ngx_main_conf_t *amcf;

    if (cycle->conf_ctx == NULL || cycle->conf_ctx[ngx_http_module.index] == NULL)
        return NULL;
    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_autotls_module);
    return amcf && amcf->conf ? amcf : NULL;
}

/* The master, as root, before any worker runs: the store belongs to the
 * worker user, and what it holds is served from the first request on. */
static ngx_int_t prepare_store(ngx_cycle_t *cycle, at_ngx_main_conf_t *amcf)
{
    ngx_core_conf_t *ccf = (ngx_core_conf_t *)ngx_get_conf(cycle->conf_ctx, ngx_core_module);
    at_error err = AT_ERROR_INIT;
    at_store *st;
    int n;

    at_ngx_logger_direct(&amcf->logger, cycle->log);
    st = at_store_open_dir(amcf->store, &err);
    if (st == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, "autotls: cannot open the store: %s (set "
                      "autotls_store to a directory root can create)", err.msg);
        at_error_clear(&err);
        return NGX_ERROR;
    }
    if (geteuid() == 0 && ccf->user != (ngx_uid_t)NGX_CONF_UNSET_UINT &&
        at_store_chown(st, ccf->user, ccf->group, &err) != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, "autotls: cannot give the store %s to the "
                      "worker user: %s", amcf->store, err.msg);
        goto fail;
    }
    n = at_engine_preload(amcf->conf, st, at_ngx_live(amcf), &amcf->logger, &err);
    if (n < 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, "autotls: the stored certificates do not fit "
                      "into the shared zone (%uz bytes; raise autotls_zone): %s",
                      amcf->zone->shm.size, err.msg);
        goto fail;
    }
    ngx_log_error(NGX_LOG_INFO, cycle->log, 0, "autotls: %d stored certificate(s) served; %uz "
                  "managed, store %s, shared zone of %uz bytes", n, amcf->conf->ncerts,
                  amcf->store, amcf->zone->shm.size);
    at_store_close(st);
    return NGX_OK;
fail:
    at_error_clear(&err);
    at_store_close(st);
    return NGX_ERROR;
}

static ngx_int_t init_module(ngx_cycle_t *cycle)
{
    at_ngx_main_conf_t *amcf = main_conf(cycle);

    if (amcf == NULL || ngx_test_config || at_ngx_live(amcf) == NULL)
        return NGX_OK;
    if (prepare_store(cycle, amcf) == NGX_OK)
        return NGX_OK;
    /* nginx exits when a module fails here: refuse to start, but never
     * take a running server down on reload (the renewal thread retries
     * and reports). */
    if (ngx_is_init_cycle(cycle->old_cycle))
        return NGX_ERROR;
    return NGX_OK;
}

static ngx_int_t init_process(ngx_cycle_t *cycle)
{
    at_ngx_main_conf_t *amcf = main_conf(cycle);

    if (amcf == NULL)
        return NGX_OK;
    if (at_ngx_tls_init_process(cycle, amcf) != NGX_OK)
        return NGX_ERROR;
    return at_ngx_renew_init_process(cycle, amcf);
}

static void exit_process(ngx_cycle_t *cycle)
{
    at_ngx_renew_exit_process(cycle);
    at_ngx_tls_exit_process();
}

static ngx_http_module_t module_ctx = {
    NULL,                        /* preconfiguration */
    postconfiguration,
    at_ngx_create_main_conf,
    NULL,                        /* init main configuration */
    at_ngx_create_srv_conf,
    at_ngx_merge_srv_conf,
    at_ngx_create_loc_conf,
    at_ngx_merge_loc_conf
};

ngx_module_t ngx_http_autotls_module = {
    NGX_MODULE_V1,
    &module_ctx,
    at_ngx_commands,
    NGX_HTTP_MODULE,
    NULL,                        /* init master */
    init_module,
    init_process,
    NULL,                        /* init thread */
    NULL,                        /* exit thread */
    exit_process,
    NULL,                        /* exit master */
    NGX_MODULE_V1_PADDING
};
