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

APLOG_USE_MODULE(autotls);

#define STATUS_HANDLER "autotls-status"
#define RENEW_HANDLER  "autotls-renew"

/* The status model, read from the store by whichever worker is asked. */
static json_t *collect(request_rec *r)
{
    at_error err = AT_ERROR_INIT;
    json_t *status = at_status_read(at_ap_g->conf, at_ap_g->store_dir, time(NULL), &err);

    if (!status) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "AutoTLS: %s", err.msg);
        at_error_clear(&err);
    }
    return status;
}

static int status_handler(request_rec *r)
{
    at_reply rp = AT_REPLY_INIT;
    at_error err = AT_ERROR_INIT;
    at_status_server srv = { "apache", AP_SERVER_BASEREVISION, 0, 0, NULL };

    if (!r->handler || strcmp(r->handler, STATUS_HANDLER) != 0)
        return DECLINED;
    if (r->method_number != M_GET) {
        r->allowed = AP_METHOD_BIT << M_GET;
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if (!at_ap_g || !at_ap_g->conf) {
        at_reply_text(&rp, HTTP_OK, "text/plain",
                      "AutoTLS manages no virtual host (no AutoTLS on in any <VirtualHost>).\n");
    } else {
        /* What only the server knows: which process renews, and the shared memory. */
        srv.renewal_pid = at_renew_ctl_renewer(at_ap_g->ctl, &srv.renewal_since);
        srv.live = at_ap_g->live;
        if (at_reply_status(&rp, at_ap_g->conf, at_ap_g->store_dir, &srv, r->args, &err) != 0) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "AutoTLS: %s", err.msg);
            at_error_clear(&err);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    at_ap_send(r, &rp);
    at_reply_free(&rp);
    return OK;
}

static int renew_handler(request_rec *r)
{
    at_reply rp = AT_REPLY_INIT;
    char what[AT_RENEW_REQ_MAX];

    if (!r->handler || strcmp(r->handler, RENEW_HANDLER) != 0)
        return DECLINED;
    if (r->method_number != M_POST) {
        r->allowed = AP_METHOD_BIT << M_POST;
        return HTTP_METHOD_NOT_ALLOWED;
    }
    ap_discard_request_body(r);
    if (!at_ap_g || !at_ap_g->conf || !at_ap_g->ctl)
        at_reply_error(&rp, HTTP_NOT_FOUND, "AutoTLS manages no virtual host");
    else if (at_reply_renew(&rp, at_ap_g->conf, at_ap_g->ctl, r->args, what, sizeof(what)) == 0 && what[0])
        ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, "AutoTLS: renewal of %s requested", what);
    at_ap_send(r, &rp);
    at_reply_free(&rp);
    return OK;
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
