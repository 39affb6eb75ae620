/*
 * autotls_status.c: what the module shows and takes over HTTP, only where
 * the administrator maps it:
 *
 *   SetHandler autotls-status   the status page (HTML; ?format=json,
 *                               ?format=prometheus), read-only
 *   SetHandler autotls-renew    POST ?name=NAME|all: renew now (handed to
 *                               the renewal thread through shared memory)
 *
 * plus an AutoTLS section in mod_status's server-status page.
 */
#include "mod_autotls.h"

#include <string.h>
#include <time.h>

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <apr_optional_hooks.h>
#include <apr_strings.h>
#include <mod_status.h>

#include "at_status.h"
#include "at_time.h"

APLOG_USE_MODULE(autotls);

#define STATUS_HANDLER "autotls-status"
#define RENEW_HANDLER  "autotls-renew"

/* The status model, read from the store by whichever worker is asked. */
static json_t *collect(request_rec *r)
{
    at_error err = AT_ERROR_INIT;
    at_store *st = at_store_open_dir(at_ap_g->store_dir, &err);
    json_t *status = NULL;

    if (st) {
        status = at_status_collect(at_ap_g->conf, st, time(NULL), &err);
        at_store_close(st);
    }
    if (!status) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "AutoTLS: reading the status from %s failed: %s",
                      at_ap_g->store_dir, err.msg);
        at_error_clear(&err);
    }
    return status;
}

/* What only the server knows: which process renews, and the shared memory. */
static void add_server_info(json_t *status)
{
    time_t since = 0;
    long pid = at_renew_ctl_renewer(at_ap_g->ctl, &since);
    char when[AT_TIME_BUFSIZE];
    json_t *srv = json_object();
    at_live_stats ls;

    if (!srv)
        return;
    json_object_set_new(srv, "software", json_string("apache"));
    json_object_set_new(srv, "renewal_pid", pid ? json_integer(pid) : json_null());
    json_object_set_new(srv, "renewal_since",
                        pid ? json_string(at_time_format(since, when, sizeof(when)))
                            : json_null());
    if (at_ap_g->live) {
        json_t *shm = json_object();
        at_live_get_stats(at_ap_g->live, &ls);
        json_object_set_new(shm, "size", json_integer((json_int_t)ls.size));
        json_object_set_new(shm, "used", json_integer((json_int_t)ls.used));
        json_object_set_new(shm, "certificates", json_integer((json_int_t)ls.certs));
        json_object_set_new(shm, "pending_http01", json_integer((json_int_t)ls.http01));
        json_object_set_new(shm, "pending_tlsalpn01", json_integer((json_int_t)ls.alpn01));
        json_object_set_new(shm, "generation", json_integer((json_int_t)ls.generation));
        json_object_set_new(srv, "shared_memory", shm);
    }
    json_object_set_new(status, "server", srv);
}

static int status_handler(request_rec *r)
{
    at_buf out = AT_BUF_INIT;
    const char *ctype = "text/html";
    json_t *status;

    if (!r->handler || strcmp(r->handler, STATUS_HANDLER) != 0)
        return DECLINED;
    if (r->method_number != M_GET) {
        r->allowed = AP_METHOD_BIT << M_GET;
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if (!at_ap_g || !at_ap_g->conf) {
        ap_set_content_type(r, "text/plain");
        ap_rputs("AutoTLS manages no virtual host (no AutoTLS on in any <VirtualHost>).\n", r);
        return OK;
    }
    status = collect(r);
    if (!status)
        return HTTP_INTERNAL_SERVER_ERROR;
    add_server_info(status);
    if (at_status_render_query(status, r->args, &out, &ctype) != 0) {
        json_decref(status);
        at_buf_free(&out);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    json_decref(status);
    ap_set_content_type(r, ctype);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    ap_set_content_length(r, out.len);
    if (!r->header_only)
        ap_rwrite(at_buf_str(&out), (int)out.len, r);
    at_buf_free(&out);
    return OK;
}

static int send_json(request_rec *r, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    r->status = status;
    ap_set_content_type(r, "application/json");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (text) {
        ap_rputs(text, r);
        ap_rputs("\n", r);
        free(text);
    }
    return OK;
}

static const char *query_arg(request_rec *r, const char *key)
{
    size_t klen = strlen(key);
    char *args = r->args ? apr_pstrdup(r->pool, r->args) : NULL;
    char *tok, *save = NULL;

    for (tok = args ? apr_strtok(args, "&", &save) : NULL; tok; tok = apr_strtok(NULL, "&", &save)) {
        if (strncmp(tok, key, klen) == 0 && tok[klen] == '=') {
            char *v = tok + klen + 1;
            for (char *p = v; *p; p++)
                if (*p == '+')
                    *p = ' ';
            if (ap_unescape_url(v) != OK)
                return NULL;
            return v;
        }
    }
    return NULL;
}

static int renew_handler(request_rec *r)
{
    const char *name;
    char lower[256];
    size_t i;

    if (!r->handler || strcmp(r->handler, RENEW_HANDLER) != 0)
        return DECLINED;
    if (r->method_number != M_POST) {
        r->allowed = AP_METHOD_BIT << M_POST;
        return HTTP_METHOD_NOT_ALLOWED;
    }
    ap_discard_request_body(r);
    if (!at_ap_g || !at_ap_g->conf || !at_ap_g->ctl)
        return send_json(r, HTTP_NOT_FOUND,
                         json_pack("{s:s}", "error", "AutoTLS manages no virtual host"));
    name = query_arg(r, "name");
    if (!name || !*name)
        return send_json(r, HTTP_BAD_REQUEST,
                         json_pack("{s:s}", "error",
                                   "say what to renew: ?name=NAME (a managed name or certificate id) or ?name=all"));
    for (i = 0; name[i] && i + 1 < sizeof(lower); i++)
        lower[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    lower[i] = '\0';
    if (strcmp(lower, "all") != 0 && !at_conf_cert(at_ap_g->conf, name) &&
        !at_ap_is_managed_name(at_ap_g, lower))
        return send_json(r, HTTP_NOT_FOUND,
                         json_pack("{s:s,s:s}", "error", "no managed certificate has this name or id",
                                   "name", name));
    if (at_renew_ctl_request(at_ap_g->ctl, at_conf_cert(at_ap_g->conf, name) ? name : lower) != 0)
        return send_json(r, HTTP_SERVICE_UNAVAILABLE,
                         json_pack("{s:s}", "error", "too many renew requests are waiting; try again shortly"));
    ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, "AutoTLS: renewal of %s requested", name);
    return send_json(r, HTTP_ACCEPTED, json_pack("{s:s,s:s}", "renew", name, "status", "queued"));
}

/* ------------------------------------------------------------ mod_status */

static const char *jstr(const json_t *o, const char *k, const char *dflt)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : dflt;
}

static void status_short(request_rec *r, const json_t *certs)
{
    size_t n = json_array_size(certs), valid = 0, errors = 0, pending = 0;
    for (size_t i = 0; i < n; i++) {
        const char *state = jstr(json_array_get(certs, i), "state", "");
        if (strcmp(state, "valid") == 0 || strcmp(state, "renewing") == 0)
            valid++;
        else if (strcmp(state, "error") == 0)
            errors++;
        else
            pending++;
    }
    ap_rprintf(r, "AutoTLSCertificates: %" APR_SIZE_T_FMT "\nAutoTLSValid: %" APR_SIZE_T_FMT "\nAutoTLSPending: %" APR_SIZE_T_FMT "\nAutoTLSErrors: %" APR_SIZE_T_FMT "\n",
               n, valid, pending, errors);
}

static void status_html(request_rec *r, const json_t *certs)
{
    size_t n = json_array_size(certs);
    long pid = at_renew_ctl_renewer(at_ap_g->ctl, NULL);

    ap_rputs("<hr />\n<h2>AutoTLS</h2>\n", r);
    if (pid)
        ap_rprintf(r, "<p>Renewal runs in process %ld.</p>\n", pid);
    else
        ap_rputs("<p>Renewal is not running yet.</p>\n", r);
    ap_rputs("<table border=\"1\"><tr><th>Certificate</th><th>Names</th><th>Key</th><th>State</th>"
             "<th>Valid until</th><th>Renews</th><th>Last error</th></tr>\n", r);
    for (size_t i = 0; i < n; i++) {
        const json_t *c = json_array_get(certs, i);
        const json_t *names = json_object_get(c, "names");
        const json_t *le = json_object_get(c, "last_error");
        const char *joined = "";
        for (size_t k = 0; k < json_array_size(names); k++)
            joined = apr_pstrcat(r->pool, joined, k ? " " : "",
                                 json_string_value(json_array_get(names, k)), NULL);
        ap_rprintf(r, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>\n",
                   ap_escape_html(r->pool, jstr(c, "id", "")),
                   ap_escape_html(r->pool, joined),
                   ap_escape_html(r->pool, jstr(c, "key_type", "")),
                   ap_escape_html(r->pool, jstr(c, "state", "")),
                   ap_escape_html(r->pool, jstr(c, "not_after", "-")),
                   ap_escape_html(r->pool, jstr(c, "renew_at", "-")),
                   ap_escape_html(r->pool, json_is_object(le) ? jstr(le, "message", "") : ""));
    }
    ap_rputs("</table>\n", r);
}

static int status_hook(request_rec *r, int flags)
{
    json_t *status;
    const json_t *certs;

    if (!at_ap_g || !at_ap_g->conf)
        return DECLINED;
    status = collect(r);
    if (!status)
        return DECLINED;
    certs = json_object_get(status, "certificates");
    if (flags & AP_STATUS_SHORT)
        status_short(r, certs);
    else
        status_html(r, certs);
    json_decref(status);
    return OK;
}

void at_ap_status_hooks(void)
{
    ap_hook_handler(status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(renew_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}
