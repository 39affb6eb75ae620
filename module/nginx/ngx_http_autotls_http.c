/*
 * ngx_http_autotls_http.c: the request side, in nginx's first phase
 * (post-read, where this module's handler runs before realip's): nothing
 * configured later - a "return 301", a rewrite, auth_basic, allow/deny,
 * a location - can stand in the way.
 *
 * - HTTP-01: /.well-known/acme-challenge/TOKEN for a managed name, in any
 *   server block on any port, is answered from the live table. The token is
 *   taken from the raw request line (not nginx's decoded URI), and a bad or
 *   unknown one is a 404 written here, never looked up on disk. Other names
 *   pass untouched, so a server managed by something else keeps its files.
 * - 503: an HTTPS request to a managed server that is still on its
 *   placeholder gets a page saying the certificate is being obtained, with
 *   Retry-After; it ends the moment the certificate is live.
 */
#include "ngx_http_autotls_module.h"

#include <string.h>

static ngx_int_t add_header(ngx_http_request_t *r, const char *key, const char *value)
{
    ngx_table_elt_t *h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL)
        return NGX_ERROR;
    h->hash = 1;
    h->key.data = (u_char *)key;
    h->key.len = strlen(key);
    h->value.data = (u_char *)value;
    h->value.len = strlen(value);
    return NGX_OK;
}

/* A complete response; returns what the phase (or content) handler
 * finalizes the request with. */
ngx_int_t at_ngx_send(ngx_http_request_t *r, ngx_uint_t status, const char *ctype,
                      const u_char *body, size_t len)
{
    ngx_chain_t out;
    ngx_buf_t *b;
    ngx_int_t rc;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK)
        return rc;
    r->headers_out.status = status;
    r->headers_out.content_length_n = (off_t)len;
    r->headers_out.content_type.data = (u_char *)ctype;
    r->headers_out.content_type.len = strlen(ctype);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    if (add_header(r, "Cache-Control", "no-store") != NGX_OK)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only || len == 0)
        return rc;
    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    b->last = ngx_cpymem(b->last, body, len);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;
    out.buf = b;
    out.next = NULL;
    return ngx_http_output_filter(r, &out);
}

/* A reply the core made (at_reply.h). */
ngx_int_t at_ngx_reply(ngx_http_request_t *r, const at_reply *rp)
{
    if (rp->header && add_header(r, rp->header, rp->header_value) != NGX_OK)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    return at_ngx_send(r, (ngx_uint_t)rp->status, rp->content_type,
                       (const u_char *)at_buf_str(&rp->body), rp->body.len);
}

/* In the post-read phase a handler's NGX_OK means "go on with the next
 * phase", so a request answered here is finalized here. */
static ngx_int_t answered(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_http_finalize_request(r, rc);
    return NGX_DONE;
}

static ngx_int_t http01(ngx_http_request_t *r, const u_char *path, size_t len, const char *host)
{
    at_ngx_main_conf_t *amcf = ngx_http_get_module_main_conf(r, ngx_http_autotls_module);
    at_reply rp = AT_REPLY_INIT;
    ngx_int_t rc = NGX_DECLINED;

    switch (at_reply_http01(&rp, at_ngx_live(amcf), (const char *)path, len,
                            (r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD)) != 0)) {
    case AT_HTTP01_ANSWER:
        if (rp.status == NGX_HTTP_OK)
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "autotls: answering the http-01 challenge for %s", host[0] ? host : "(no host)");
        rc = answered(r, at_ngx_reply(r, &rp));
        break;
    case AT_HTTP01_NOTFOUND:
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "autotls: no pending http-01 challenge for \"%s\"", host);
        rc = answered(r, at_ngx_reply(r, &rp));
        break;
    case AT_HTTP01_PASS:
    default:
        break;
    }
    at_reply_free(&rp);
    return rc;
}

static ngx_int_t not_yet(ngx_http_request_t *r, const at_ngx_site_t *site, const char *host)
{
    const char *name = at_site_name_for(site->names, site->nnames, host);
    at_serve *sv = at_ngx_serve();
    at_reply rp = AT_REPLY_INIT;
    ngx_int_t rc;

    if (sv == NULL || at_serve_has_cert(sv, name))
        return NGX_DECLINED;
    at_reply_waiting(&rp, name);
    rc = answered(r, at_ngx_reply(r, &rp));
    at_reply_free(&rp);
    return rc;
}

static ngx_int_t post_read(ngx_http_request_t *r)
{
    at_ngx_main_conf_t *amcf = ngx_http_get_module_main_conf(r, ngx_http_autotls_module);
    at_ngx_srv_conf_t *ascf = ngx_http_get_module_srv_conf(r, ngx_http_autotls_module);
    const size_t plen = sizeof(AT_HTTP01_PREFIX) - 1;
    const u_char *path = r->unparsed_uri.data, *q;
    size_t len = r->unparsed_uri.len;
    char host[256];

    if (amcf->conf == NULL || r != r->main)
        return NGX_DECLINED;
    at_name_lower(host, sizeof(host), (const char *)r->headers_in.server.data,
                  r->headers_in.server.len);

    /* The raw path: percent signs and dots are characters outside the
     * token alphabet, never decoded into something that would match. */
    if (path && (q = memchr(path, '?', len)) != NULL)
        len = (size_t)(q - path);
    if (path && len >= plen && ngx_strncmp(path, AT_HTTP01_PREFIX, plen) == 0 &&
        (ascf->site || at_conf_manages(amcf->conf, host))) {
        ngx_int_t rc = http01(r, path, len, host);
        if (rc != NGX_DECLINED)
            return rc;
    }
    if (ascf->site && ascf->placeholder && r->http_connection->ssl)
        return not_yet(r, ascf->site, host);
    return NGX_DECLINED;
}

ngx_int_t at_ngx_http_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_core_main_conf_t *cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    ngx_http_handler_pt *h = ngx_array_push(&cmcf->phases[NGX_HTTP_POST_READ_PHASE].handlers);

    if (h == NULL)
        return NGX_ERROR;
    *h = post_read;
    return NGX_OK;
}
