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

#include "at_reply.h"

APLOG_USE_MODULE(autotls);

/* Send a reply the core made. The caller returns DONE (a request answered
 * before any handler) or OK (a handler). */
void at_ap_send(request_rec *r, const at_reply *rp)
{
    r->status = rp->status;
    ap_set_content_type(r, rp->content_type);
    ap_set_content_length(r, rp->body.len);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (rp->header)
        apr_table_setn(r->headers_out, rp->header, rp->header_value);
    if (!r->header_only && rp->body.len)
        ap_rwrite(at_buf_str(&rp->body), (int)rp->body.len, r);
}

static int http01(request_rec *r, const char *path)
{
    at_reply rp = AT_REPLY_INIT;
    const at_ap_srv *sc = at_ap_srv_of(r->server);
    int rv = DONE;

    /* Only names (or vhosts) we manage: others may have their own files. */
    if (!at_conf_manages(at_ap_g->conf, r->hostname) && !sc->site)
        return DECLINED;
    switch (at_reply_http01(&rp, at_ap_g->live, path, strlen(path), r->method_number == M_GET)) {
    case AT_HTTP01_ANSWER:
        if (rp.status == HTTP_OK)
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "AutoTLS: answering the http-01 challenge for %s",
                          r->hostname ? r->hostname : r->server->server_hostname);
        at_ap_send(r, &rp);
        break;
    case AT_HTTP01_NOTFOUND:
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, "AutoTLS: no pending http-01 challenge for %s", path);
        at_ap_send(r, &rp);
        break;
    case AT_HTTP01_PASS:
    default:
        rv = DECLINED;
        break;
    }
    at_reply_free(&rp);
    return rv;
}

static int not_yet(request_rec *r, const at_ap_site *site)
{
    const char *name = at_site_name_for(site->names, (size_t)site->nnames, r->hostname);
    at_serve *sv = at_ap_serve();
    at_reply rp = AT_REPLY_INIT;

    if (!sv || at_serve_has_cert(sv, name))
        return DECLINED;
    at_reply_waiting(&rp, name);
    at_ap_send(r, &rp);
    at_reply_free(&rp);
    return DONE;
}

static int under_prefix(const char *path)
{
    return path && strncmp(path, AT_HTTP01_PREFIX, sizeof(AT_HTTP01_PREFIX) - 1) == 0;
}

/* The challenge path this request asks for, or NULL. This hook sees the
 * path before Apache decodes and normalises it; compared only as sent,
 * "/.well-known/acme%2Dchallenge/T", "//.well-known/acme-challenge/T" or
 * "/.well-known/x/../acme-challenge/T" would pass and be looked up in the
 * DocumentRoot. So the path is also read the way Apache will map it, and a
 * request that is under the prefix either way is ours (a path that is not
 * a plain token then gets a 404, and nothing touches the disk). */
static const char *challenge_path(request_rec *r)
{
    const char *raw = r->parsed_uri.path;
    char *mapped;

    if (!raw)
        return NULL;
    mapped = apr_pstrdup(r->pool, raw);
    if (!ap_normalize_path(mapped, AP_NORMALIZE_DECODE_UNRESERVED | AP_NORMALIZE_MERGE_SLASHES) ||
        ap_unescape_url(mapped) != OK)
        mapped = NULL;              /* Apache refuses it; judge what was sent */
    if (under_prefix(mapped))
        return mapped;
    return under_prefix(raw) ? raw : NULL;
}

static int post_read_request(request_rec *r)
{
    const at_ap_srv *sc;
    const char *path;

    if (!at_ap_g || !at_ap_g->conf || !at_ap_g->live || r->main || r->prev)
        return DECLINED;
    if ((path = challenge_path(r)) != NULL) {
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
