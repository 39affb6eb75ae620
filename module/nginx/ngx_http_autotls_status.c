/*
 * ngx_http_autotls_status.c: what the module shows and takes over HTTP,
 * only in the locations the administrator names:
 *
 *   autotls_status;   the status page: HTML, ?format=json, ?format=prometheus
 *   autotls_renew;    POST ?name=NAME|all: renew now (handed to the
 *                     renewal thread in worker 0 through the shared zone)
 *
 * Protect both like stub_status (allow/deny, auth_basic).
 */
#include "ngx_http_autotls_module.h"

#include <stdlib.h>
#include <string.h>

#include "at_status.h"

static ngx_int_t status_handler(ngx_http_request_t *r)
{
    static const char none[] = "autotls manages no server (no \"autotls on;\" in any server block).\n";
    at_ngx_main_conf_t *amcf = ngx_http_get_module_main_conf(r, ngx_http_autotls_module);
    at_status_server srv = { "nginx", NGINX_VERSION, 0, 0, NULL };
    at_reply rp = AT_REPLY_INIT;
    at_error err = AT_ERROR_INIT;
    const char *query = "";
    ngx_int_t rc;

    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD)))
        return NGX_HTTP_NOT_ALLOWED;
    if (amcf->conf == NULL) {
        at_reply_text(&rp, NGX_HTTP_OK, "text/plain", none);
    } else {
        if (r->args.len && (query = at_ngx_cstr(r->pool, r->args.data, r->args.len)) == NULL)
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        /* What only the server knows: which process renews, and the shared zone. */
        srv.renewal_pid = at_renew_ctl_renewer(at_ngx_ctl(amcf), &srv.renewal_since);
        srv.live = at_ngx_live(amcf);
        if (at_reply_status(&rp, amcf->conf, amcf->store, &srv, query, &err) != 0) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "autotls: %s", err.msg);
            at_error_clear(&err);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    rc = at_ngx_reply(r, &rp);
    at_reply_free(&rp);
    return rc;
}

static ngx_int_t renew_handler(ngx_http_request_t *r)
{
    at_ngx_main_conf_t *amcf = ngx_http_get_module_main_conf(r, ngx_http_autotls_module);
    at_reply rp = AT_REPLY_INIT;
    char what[AT_RENEW_REQ_MAX];
    const char *query = "";
    ngx_int_t rc;

    if (!(r->method & NGX_HTTP_POST))
        return NGX_HTTP_NOT_ALLOWED;
    if (r->args.len && (query = at_ngx_cstr(r->pool, r->args.data, r->args.len)) == NULL)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    if (amcf->conf == NULL || at_ngx_ctl(amcf) == NULL)
        at_reply_error(&rp, NGX_HTTP_NOT_FOUND, "autotls manages no server");
    else if (at_reply_renew(&rp, amcf->conf, at_ngx_ctl(amcf), query, what, sizeof(what)) == 0 && what[0])
        ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0, "autotls: renewal of %s requested", what);
    rc = at_ngx_reply(r, &rp);
    at_reply_free(&rp);
    return rc;
}

/* The location answers with handler (one of the two, once). */
static char *set_handler(ngx_conf_t *cf, ngx_uint_t *flag, ngx_http_handler_pt handler)
{
    ngx_http_core_loc_conf_t *clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (*flag)
        return "is duplicate";
    *flag = 1;
    clcf->handler = handler;
    return NGX_CONF_OK;
}

char *at_ngx_status_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    return set_handler(cf, &((at_ngx_loc_conf_t *)conf)->status, status_handler);
}

char *at_ngx_renew_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    return set_handler(cf, &((at_ngx_loc_conf_t *)conf)->renew, renew_handler);
}
