/*
 * mod_autotls.c: automatic HTTPS for Apache httpd. The module record and the
 * configuration phases:
 *
 *   check_config  (also `apachectl configtest`): managed vhosts -> at_conf
 *   post_config   (parent, root, before mod_ssl): store, placeholders,
 *                 acme-tls/1 protocol; on the real pass (not the dry run at
 *                 startup) also the shared region, stored certificates
 *                 published to it, the store handed to the User, and the
 *                 renewal watchdog
 *   child_init    per-process certificate cache, renewal thread cleanup
 */
#include "mod_autotls.h"

#include <string.h>
#include <unistd.h>

#include <http_core.h>
#include <http_protocol.h>
#include <ap_mpm.h>
#include <unixd.h>
#include <apr_strings.h>

#include "at_engine.h"

APLOG_USE_MODULE(autotls);

at_ap_gen *at_ap_g;

/* ------------------------------------------------------------- logging */

static int apache_level(at_log_level level)
{
    switch (level) {
    case AT_LOG_ERROR:  return APLOG_ERR;
    case AT_LOG_WARN:   return APLOG_WARNING;
    case AT_LOG_NOTICE: return APLOG_NOTICE;
    case AT_LOG_INFO:   return APLOG_INFO;
    default:            return APLOG_DEBUG;
    }
}

static void log_to_apache(void *ud, at_log_level level, const char *msg)
{
    /* The log line's [autotls:...] tag already names us. */
    if (strncmp(msg, "autotls: ", 9) == 0)
        msg += 9;
    ap_log_error(APLOG_MARK, apache_level(level), 0, (server_rec *)ud, "%s", msg);
}

/* The module's own lines say "AutoTLS: " like the rest of the module's. */
static void log_marked(void *ud, at_log_level level, const char *msg)
{
    ap_log_error(APLOG_MARK, apache_level(level), 0, (server_rec *)ud, "AutoTLS: %s", msg);
}

void at_ap_logger_init(at_logger *lg, server_rec *s)
{
    int level = ap_get_server_module_loglevel(s, APLOG_MODULE_INDEX);

    lg->fn = log_to_apache;
    lg->ud = s;
    lg->max = level >= APLOG_DEBUG ? AT_LOG_DEBUG
            : level >= APLOG_INFO ? AT_LOG_INFO
            : level >= APLOG_NOTICE ? AT_LOG_NOTICE
            : level >= APLOG_WARNING ? AT_LOG_WARN : AT_LOG_ERROR;
}

void at_ap_logger_init_marked(at_logger *lg, server_rec *s)
{
    at_ap_logger_init(lg, s);
    lg->fn = log_marked;
}

/* ------------------------------------------------------- config phases */

static int check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    at_ap_gen *g = apr_pcalloc(pconf, sizeof(*g));
    (void)plog;

    g->pool = pconf;
    g->s = s;
    at_ap_logger_init(&g->logger, s);
    at_ap_g = g;
    if (at_ap_sites_build(g, ptemp) != 0) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL,
                     "AutoTLS: the configuration above cannot work; fix it and run apachectl configtest");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

/* The parent (root) prepares what the unprivileged children need. */
static int prepare_runtime(at_ap_gen *g, apr_pool_t *pconf, at_store *st)
{
    const at_ap_srv *mc = at_ap_srv_of(g->s);
    size_t size = mc->glob.shm_size ? mc->glob.shm_size : at_conf_live_size_hint(g->conf);
    at_error err = AT_ERROR_INIT;
    int n;

    if (geteuid() == 0 &&
        at_store_chown(st, ap_unixd_config.user_id, ap_unixd_config.group_id, &err) != 0) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, g->s,
                     "AutoTLS: cannot give the store %s to the server's User: %s", g->store_dir, err.msg);
        at_error_clear(&err);
        return -1;
    }
    if (at_ap_shm_setup(g, size, mc->glob.shm_size != 0) != 0)
        return -1;
    n = at_engine_preload(g->conf, st, g->live, &g->logger, &err);
    if (n < 0) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, g->s,
                     "AutoTLS: the stored certificates do not fit into the shared memory (%" APR_SIZE_T_FMT " bytes): %s",
                     size, err.msg);
        at_error_clear(&err);
        return -1;
    }
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, g->s,
                 "AutoTLS: %d stored certificate(s) served; %" APR_SIZE_T_FMT " managed, store %s, %" APR_SIZE_T_FMT " bytes of shared memory",
                 n, g->conf->ncerts, g->store_dir, size);
    return at_ap_renew_post_config(g, pconf);
}

static int post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    at_ap_gen *g = at_ap_g;
    at_error err = AT_ERROR_INIT;
    at_store *st;
    int rv;

    (void)plog;
    (void)s;
    if (!g || !g->conf)
        return OK;
    st = at_store_open_dir(g->store_dir, &err);
    if (!st) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, g->s,
                     "AutoTLS: cannot open the store: %s (set AutoTLSStore to a directory root can create)",
                     err.msg);
        at_error_clear(&err);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    rv = at_ap_tls_post_config(g, ptemp);
    /* The dry run at startup only needs what mod_ssl checks. */
    if (rv == 0 && ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_CREATE_PRE_CONFIG)
        rv = prepare_runtime(g, pconf, st);
    at_store_close(st);
    return rv == 0 ? OK : HTTP_INTERNAL_SERVER_ERROR;
}

static void child_init(apr_pool_t *pchild, server_rec *s)
{
    (void)s;
    if (!at_ap_g || !at_ap_g->conf || !at_ap_g->live)
        return;
    at_ap_tls_child_init(at_ap_g, pchild);
    at_ap_renew_child_init(at_ap_g, pchild);
}

static void register_hooks(apr_pool_t *p)
{
    static const char *const before_ssl[] = { "mod_ssl.c", NULL };
    (void)p;

    ap_hook_check_config(check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(post_config, NULL, before_ssl, APR_HOOK_MIDDLE);
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
    at_ap_tls_hooks();
    at_ap_http_hooks();
    at_ap_status_hooks();
}

module AP_MODULE_DECLARE_DATA autotls_module = {
    STANDARD20_MODULE_STUFF,
    NULL,                   /* per-directory config */
    NULL,
    at_ap_srv_create,       /* per-server config */
    at_ap_srv_merge,
    at_ap_directives,
    register_hooks,
    0                       /* flags */
};
