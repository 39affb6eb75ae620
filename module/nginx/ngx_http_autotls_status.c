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
#include "at_store.h"
#include "at_time.h"

static const char *pool_cstr(ngx_pool_t *p, const u_char *s, size_t len)
{
    char *r = ngx_pnalloc(p, len + 1);
    if (r) {
        ngx_memcpy(r, s, len);
        r[len] = '\0';
    }
    return r;
}

/* The status model, read from the store by whichever worker is asked. */
static json_t *collect(ngx_http_request_t *r, at_ngx_main_conf_t *amcf)
{
    at_error err = AT_ERROR_INIT;
    at_store *st = at_store_open_dir(amcf->store, &err);
    json_t *status = NULL;

    if (st) {
        status = at_status_collect(amcf->conf, st, time(NULL), &err);
        at_store_close(st);
    }
    if (status == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "autotls: reading the status from %s "
                      "failed: %s", amcf->store, err.msg);
        at_error_clear(&err);
    }
    return status;
}

/* What only the server knows: which process renews, and the shared zone. */
static void add_server_info(json_t *status, at_ngx_main_conf_t *amcf)
{
    json_t *srv = json_object(), *zone;
    char when[AT_TIME_BUFSIZE];
    time_t since = 0;
    long pid = at_renew_ctl_renewer(at_ngx_ctl(amcf), &since);
    at_live *live = at_ngx_live(amcf);
    at_live_stats ls;

    if (srv == NULL)
        return;
    json_object_set_new(srv, "software", json_string("nginx"));
    json_object_set_new(srv, "version", json_string(NGINX_VERSION));
    json_object_set_new(srv, "renewal_pid", pid ? json_integer(pid) : json_null());
    json_object_set_new(srv, "renewal_since",
                        pid ? json_string(at_time_format(since, when, sizeof(when))) : json_null());
    if (live && (zone = json_object()) != NULL) {
        at_live_get_stats(live, &ls);
        json_object_set_new(zone, "size", json_integer((json_int_t)ls.size));
        json_object_set_new(zone, "used", json_integer((json_int_t)ls.used));
        json_object_set_new(zone, "certificates", json_integer((json_int_t)ls.certs));
        json_object_set_new(zone, "pending_http01", json_integer((json_int_t)ls.http01));
        json_object_set_new(zone, "pending_tlsalpn01", json_integer((json_int_t)ls.alpn01));
        json_object_set_new(zone, "generation", json_integer((json_int_t)ls.generation));
        json_object_set_new(srv, "shared_memory", zone);
    }
    json_object_set_new(status, "server", srv);
}

static ngx_int_t status_handler(ngx_http_request_t *r)
{
    static const char none[] = "autotls manages no server (no \"autotls on;\" in any server block).\n";
    at_ngx_main_conf_t *amcf = ngx_http_get_module_main_conf(r, ngx_http_autotls_module);
    at_buf out = AT_BUF_INIT;
    const char *ctype = "text/html", *query = "";
    json_t *status;
    ngx_int_t rc;

    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD)))
        return NGX_HTTP_NOT_ALLOWED;
    if (amcf->conf == NULL)
        return at_ngx_send(r, NGX_HTTP_OK, "text/plain", (const u_char *)none, sizeof(none) - 1);
    if (r->args.len && (query = pool_cstr(r->pool, r->args.data, r->args.len)) == NULL)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    if ((status = collect(r, amcf)) == NULL)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    add_server_info(status, amcf);
    if (at_status_render_query(status, query, &out, &ctype) != 0) {
        json_decref(status);
        at_buf_free(&out);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    json_decref(status);
    rc = at_ngx_send(r, NGX_HTTP_OK, ctype, (const u_char *)at_buf_str(&out), out.len);
    at_buf_free(&out);
    return rc;
}

static ngx_int_t send_json(ngx_http_request_t *r, ngx_uint_t status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    const char *body;
    ngx_int_t rc;

    json_decref(j);
    if (text == NULL)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    body = pool_cstr(r->pool, (const u_char *)text, strlen(text));
    free(text);
    if (body == NULL)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    rc = at_ngx_send(r, status, "application/json", (const u_char *)body, strlen(body));
    return rc;
}

static ngx_int_t renew_handler(ngx_http_request_t *r)
{
    at_ngx_main_conf_t *amcf = ngx_http_get_module_main_conf(r, ngx_http_autotls_module);
    ngx_str_t arg;
    u_char *dst, *src;
    char name[256], lower[256];
    const char *what;

    if (!(r->method & NGX_HTTP_POST))
        return NGX_HTTP_NOT_ALLOWED;
    if (amcf->conf == NULL || at_ngx_ctl(amcf) == NULL)
        return send_json(r, NGX_HTTP_NOT_FOUND, json_pack("{s:s}", "error", "autotls manages no server"));
    if (ngx_http_arg(r, (u_char *)"name", 4, &arg) != NGX_OK || arg.len == 0 || arg.len >= sizeof(name))
        return send_json(r, NGX_HTTP_BAD_REQUEST, json_pack("{s:s}", "error",
                         "say what to renew: ?name=NAME (a managed name or certificate id) or ?name=all"));
    src = arg.data;
    dst = (u_char *)name;
    ngx_unescape_uri(&dst, &src, arg.len, 0);
    *dst = '\0';
    at_ngx_lower(lower, sizeof(lower), (const u_char *)name, strlen(name));
    if (strcmp(lower, "all") == 0)
        what = "all";
    else if (at_conf_cert(amcf->conf, name))
        what = name;
    else if (at_ngx_is_managed_name(amcf, lower))
        what = lower;
    else
        return send_json(r, NGX_HTTP_NOT_FOUND, json_pack("{s:s,s:s}", "error",
                         "no managed certificate has this name or id", "name", name));
    if (at_renew_ctl_request(at_ngx_ctl(amcf), what) != 0)
        return send_json(r, NGX_HTTP_SERVICE_UNAVAILABLE, json_pack("{s:s}", "error",
                         "too many renew requests are waiting; try again shortly"));
    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0, "autotls: renewal of %s requested", what);
    return send_json(r, NGX_HTTP_ACCEPTED, json_pack("{s:s,s:s}", "renew", what, "status", "queued"));
}

char *at_ngx_status_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t *clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    at_ngx_loc_conf_t *alcf = conf;

    if (alcf->status)
        return "is duplicate";
    alcf->status = 1;
    clcf->handler = status_handler;
    return NGX_CONF_OK;
}

char *at_ngx_renew_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t *clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    at_ngx_loc_conf_t *alcf = conf;

    if (alcf->renew)
        return "is duplicate";
    alcf->renew = 1;
    clcf->handler = renew_handler;
    return NGX_CONF_OK;
}
