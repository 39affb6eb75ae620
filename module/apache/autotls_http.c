/*
 * autotls_http.c: the request side, in the earliest phase Apache has
 * (post_read_request, first of all): nothing configured later - a Redirect,
 * a RewriteRule, authentication, an ErrorDocument - can stand in the way.
 *
 * - HTTP-01: /.well-known/acme-challenge/TOKEN for a managed name, on any
 *   port, is answered from the live table. A bad or unknown token is a 404
 *   written here, never looked up on disk. Other names pass untouched, so a
 *   vhost managed by something else keeps its own challenge files.
 * - 503: an HTTPS request to a managed vhost that is still on its
 *   placeholder gets a page saying the certificate is being obtained, with
 *   Retry-After; it ends the moment the certificate is live.
 */
#include "mod_autotls.h"

#include <string.h>

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <http_ssl.h>
#include <apr_strings.h>

APLOG_USE_MODULE(autotls);

#define RETRY_AFTER "10"

static int respond(request_rec *r, int status, const char *ctype, const char *body)
{
    apr_size_t len = strlen(body);

    r->status = status;
    ap_set_content_type(r, ctype);
    ap_set_content_length(r, len);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (!r->header_only)
        ap_rwrite(body, (int)len, r);
    return DONE;
}

static int http01(request_rec *r, const char *path)
{
    char keyauth[1024];
    at_http01_result res;
    const at_ap_srv *sc = at_ap_srv_of(r->server);

    /* Only names (or vhosts) we manage: others may have their own files. */
    if (!at_ap_is_managed_name(at_ap_g, r->hostname) && !sc->site)
        return DECLINED;
    res = at_serve_http01(at_ap_g->live, path, strlen(path), keyauth, sizeof(keyauth));
    switch (res) {
    case AT_HTTP01_ANSWER:
        if (r->method_number != M_GET) {
            apr_table_setn(r->headers_out, "Allow", "GET, HEAD");
            return respond(r, HTTP_METHOD_NOT_ALLOWED, "text/plain", "Use GET.\n");
        }
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "AutoTLS: answering the http-01 challenge for %s",
                      r->hostname ? r->hostname : r->server->server_hostname);
        return respond(r, HTTP_OK, "text/plain", keyauth);
    case AT_HTTP01_NOTFOUND:
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, "AutoTLS: no pending http-01 challenge for %s", path);
        return respond(r, HTTP_NOT_FOUND, "text/plain", "No such ACME challenge.\n");
    case AT_HTTP01_PASS:
    default:
        return DECLINED;
    }
}

static int not_yet(request_rec *r, const at_ap_site *site)
{
    const char *name = at_ap_site_name(site, r->hostname);
    const char *esc = ap_escape_html2(r->pool, name, 0);
    at_serve *sv = at_ap_serve();

    if (!sv || at_serve_has_cert(sv, name))
        return DECLINED;
    apr_table_setn(r->headers_out, "Retry-After", RETRY_AFTER);
    return respond(r, HTTP_SERVICE_UNAVAILABLE, "text/html; charset=utf-8",
                   apr_pstrcat(r->pool,
                               "<!DOCTYPE html>\n<html><head><title>Certificate being obtained</title></head>\n"
                               "<body><h1>Certificate being obtained</h1>\n"
                               "<p>The HTTPS certificate for <b>", esc, "</b> is being obtained from the "
                               "certificate authority right now. This site will be available in a "
                               "moment; please try again shortly.</p>\n"
                               "<p>The certificate you were shown for this request is a temporary "
                               "placeholder.</p>\n</body></html>\n", NULL));
}

static int post_read_request(request_rec *r)
{
    const at_ap_srv *sc;
    const char *path;

    if (!at_ap_g || !at_ap_g->conf || !at_ap_g->live || r->main || r->prev)
        return DECLINED;
    path = r->parsed_uri.path;
    if (path && strncmp(path, AT_HTTP01_PREFIX, sizeof(AT_HTTP01_PREFIX) - 1) == 0) {
        int rv = http01(r, path);
        if (rv != DECLINED)
            return rv;
    }
    sc = at_ap_srv_of(r->server);
    if (sc->site && sc->site->uses_placeholder && ap_ssl_conn_is_ssl(r->connection))
        return not_yet(r, sc->site);
    return DECLINED;
}

void at_ap_http_hooks(void)
{
    ap_hook_post_read_request(post_read_request, NULL, NULL, APR_HOOK_REALLY_FIRST);
}
