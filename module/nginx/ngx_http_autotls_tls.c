/*
 * ngx_http_autotls_tls.c: everything between the module and nginx's ssl
 * module.
 *
 * - Placeholder: nginx refuses an ssl listener without a certificate, so a
 *   managed server without its own ssl_certificate gets a self-signed
 *   placeholder, kept in memory and handed to nginx as "data:" PEM (nginx
 *   loads certificates from such strings), so nothing is written to disk
 *   while the configuration is parsed and `nginx -t` needs no store.
 * - Hot swap: a certificate callback on each managed server's SSL_CTX puts
 *   the live certificate(s) on every full handshake (at_serve caches the
 *   parsed objects per generation).
 * - TLS-ALPN-01: OpenSSL selects ALPN after the certificate callback in
 *   TLS 1.2, so a ClientHello callback notes whether acme-tls/1 is offered.
 *   It runs on the SSL_CTX a connection starts with (its address's default
 *   server), before nginx switches SSL_CTX by SNI, so it goes on every
 *   server's context; the certificate and ALPN callbacks belong to the
 *   managed servers' contexts, which nginx switches to.
 * - ALPN: nginx's own selection is replaced on managed servers' contexts:
 *   "acme-tls/1" when offered, otherwise what nginx does (h2 when the
 *   listen socket has http2, http/1.1, http/1.0, http/0.9; no overlap is a
 *   fatal alert).
 */
#include "ngx_http_autotls_module.h"

#include <string.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "at_buf.h"
#include "at_key.h"
#include "at_x509.h"

#if !(NGX_HTTP_SSL)
#error "ngx_http_autotls_module needs nginx built --with-http_ssl_module"
#endif

#define PLACEHOLDER_NAME "autotls-placeholder.invalid"
#define PLACEHOLDER_DAYS 3650

static at_serve *serve_g;          /* this process's cache */

at_serve *at_ngx_serve(void)
{
    return serve_g;
}

/* ----------------------------------------------------------- placeholder */

static ngx_int_t data_str(ngx_pool_t *p, ngx_str_t *out, const at_buf *pem)
{
    static const char prefix[] = "data:";
    out->len = sizeof(prefix) - 1 + pem->len;
    out->data = ngx_pnalloc(p, out->len + 1);
    if (out->data == NULL)
        return NGX_ERROR;
    ngx_memcpy(out->data, prefix, sizeof(prefix) - 1);
    ngx_memcpy(out->data + sizeof(prefix) - 1, pem->data, pem->len);
    out->data[out->len] = '\0';
    return NGX_OK;
}

ngx_int_t at_ngx_placeholder(ngx_conf_t *cf, at_ngx_main_conf_t *amcf)
{
    static const char *const names[] = { PLACEHOLDER_NAME };
    at_buf cert = AT_BUF_INIT, key = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    ngx_int_t rv = NGX_ERROR;

    if (amcf->ph_cert.len)
        return NGX_OK;
    if (at_placeholder_cert(names, 1, "ec:P-256", PLACEHOLDER_DAYS, &cert, &key, &err) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "autotls: making the placeholder certificate "
                           "failed: %s", err.msg);
        at_error_clear(&err);
        goto out;
    }
    if (data_str(cf->pool, &amcf->ph_cert, &cert) != NGX_OK ||
        data_str(cf->pool, &amcf->ph_key, &key) != NGX_OK) {
        ngx_str_null(&amcf->ph_cert);
        goto out;
    }
    rv = NGX_OK;
out:
    at_buf_free(&cert);
    at_buf_free_secret(&key);
    return rv;
}

/* An RSA placeholder beside the EC one, for servers that are to get an
 * RSA certificate: a client that speaks only RSA suites then sees the 503
 * page instead of a failed handshake until the certificate is live. Added to
 * the SSL_CTX directly (nginx has created it by now), made once per
 * configuration and only when some server wants RSA. */
static void rsa_placeholder_free(void *data)
{
    at_ngx_main_conf_t *amcf = data;
    X509_free(amcf->ph_rsa_cert);
    EVP_PKEY_free(amcf->ph_rsa_key);
    amcf->ph_rsa_cert = NULL;
    amcf->ph_rsa_key = NULL;
}

static ngx_int_t rsa_placeholder(ngx_conf_t *cf, at_ngx_main_conf_t *amcf)
{
    static const char *const names[] = { PLACEHOLDER_NAME };
    at_buf cert = AT_BUF_INIT, key = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    STACK_OF(X509) *chain = NULL;
    ngx_pool_cleanup_t *cln;

    if (amcf->ph_rsa_cert)
        return NGX_OK;
    if ((cln = ngx_pool_cleanup_add(cf->pool, 0)) == NULL)
        return NGX_ERROR;
    cln->handler = rsa_placeholder_free;
    cln->data = amcf;
    if (at_placeholder_cert(names, 1, "rsa:2048", PLACEHOLDER_DAYS, &cert, &key, &err) == 0 &&
        at_chain_parse(cert.data, cert.len, &chain, &err) == 0 &&
        (amcf->ph_rsa_key = at_key_from_pem(key.data, key.len, &err)) != NULL) {
        amcf->ph_rsa_cert = sk_X509_value(chain, 0);
        X509_up_ref(amcf->ph_rsa_cert);
    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "autotls: making the RSA placeholder certificate "
                           "failed: %s", err.msg);
        at_error_clear(&err);
    }
    sk_X509_pop_free(chain, X509_free);
    at_buf_free(&cert);
    at_buf_free_secret(&key);
    return amcf->ph_rsa_cert ? NGX_OK : NGX_ERROR;
}

static int wants_rsa(const at_ngx_main_conf_t *amcf, const at_ngx_site_t *site)
{
    const at_ngx_srv_conf_t *ascf = site->cscf->ctx->srv_conf[ngx_http_autotls_module.ctx_index];
    at_key_kind kinds[2];
    size_t n;

    if (!ascf->placeholder)
        return 0;
    n = at_site_placeholder_kinds(amcf->conf, site->names[0], kinds);
    return n > 0 && kinds[n - 1] == AT_KEY_RSA;
}

/* ------------------------------------------------------------ callbacks */

static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
    (void)at_serve_client_hello(ssl);
    return SSL_CLIENT_HELLO_SUCCESS;
}

static ngx_log_t *conn_log(SSL *ssl)
{
    ngx_connection_t *c = ngx_ssl_get_connection(ssl);
    return c ? c->log : ngx_cycle->log;
}

/* Runs on every full handshake of a managed server, after SNI chose its
 * SSL_CTX: put the live certificate(s), or the challenge certificate, on
 * the connection. */
static int cert_cb(SSL *ssl, void *arg)
{
    at_ngx_site_t *site = arg;
    char host[256];
    int rv, acme;

    if (serve_g == NULL)
        return 1;
    rv = at_serve_site(serve_g, ssl, site->names, site->nnames, host, sizeof(host), &acme);
    if (acme) {
        if (rv == 1) {
            ngx_log_error(NGX_LOG_INFO, conn_log(ssl), 0,
                          "autotls: answering the tls-alpn-01 challenge for %s", host);
            return 1;
        }
        /* Nothing to prove: a real certificate on acme-tls/1 would only
         * fail the validation later. */
        ngx_log_error(NGX_LOG_INFO, conn_log(ssl), 0, "autotls: tls-alpn-01 connection for \"%s\", "
                      "but no challenge is pending for it", host);
        return 0;
    }
    if (rv < 0)
        ngx_log_error(NGX_LOG_WARN, conn_log(ssl), 0, "autotls: installing the live certificate for "
                      "%s failed; the handshake goes on with the configured one", host);
    return 1;   /* never fail a normal handshake here */
}

#define HTTP1_PROTOS "\x08http/1.1\x08http/1.0\x08http/0.9"

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char h1[] = HTTP1_PROTOS;
    static const unsigned char h2[] = "\x02h2" HTTP1_PROTOS;
    ngx_connection_t *c = ngx_ssl_get_connection(ssl);
    ngx_http_connection_t *hc = c ? c->data : NULL;
    const unsigned char *srv = h1;
    unsigned int srvlen = sizeof(h1) - 1;

    if (at_serve_alpn_has_acme(in, inlen)) {
        *out = (const unsigned char *)AT_ALPN_ACME;
        *outlen = (unsigned char)(sizeof(AT_ALPN_ACME) - 1);
        return SSL_TLSEXT_ERR_OK;
    }
    if (hc && hc->addr_conf && hc->addr_conf->http2) {
        srv = h2;
        srvlen = sizeof(h2) - 1;
    }
    if (SSL_select_next_proto((unsigned char **)out, outlen, srv, srvlen, in, inlen)
        != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_OK;
}

/* ------------------------------------------------------------- lifecycle */

ngx_int_t at_ngx_tls_postconfiguration(ngx_conf_t *cf, at_ngx_main_conf_t *amcf)
{
    ngx_http_core_main_conf_t *cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    ngx_http_core_srv_conf_t **cscfp = cmcf->servers.elts;
    at_ngx_site_t **sites = amcf->sites.elts;

    for (ngx_uint_t s = 0; s < cmcf->servers.nelts; s++) {
        ngx_http_ssl_srv_conf_t *sscf = cscfp[s]->ctx->srv_conf[ngx_http_ssl_module.ctx_index];
        if (sscf->ssl.ctx)
            SSL_CTX_set_client_hello_cb(sscf->ssl.ctx, client_hello_cb, NULL);
    }
    for (ngx_uint_t i = 0; i < amcf->sites.nelts; i++) {
        ngx_http_ssl_srv_conf_t *sscf = sites[i]->cscf->ctx->srv_conf[ngx_http_ssl_module.ctx_index];
        if (sscf->ssl.ctx == NULL)
            continue;   /* a plain-HTTP server: the certificate serves its https twin */
        /* (`nginx -s` only signals: it needs no handshakes, so no RSA key) */
        if (wants_rsa(amcf, sites[i]) && ngx_process != NGX_PROCESS_SIGNALLER) {
            if (rsa_placeholder(cf, amcf) != NGX_OK)
                return NGX_ERROR;
            if (SSL_CTX_use_cert_and_key(sscf->ssl.ctx, amcf->ph_rsa_cert, amcf->ph_rsa_key, NULL, 1) != 1) {
                ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0, "autotls: installing the RSA placeholder "
                              "for %s failed", sites[i]->id);
                return NGX_ERROR;
            }
        }
        SSL_CTX_set_cert_cb(sscf->ssl.ctx, cert_cb, sites[i]);
        SSL_CTX_set_alpn_select_cb(sscf->ssl.ctx, alpn_cb, sites[i]);
    }
    return NGX_OK;
}

ngx_int_t at_ngx_tls_init_process(ngx_cycle_t *cycle, at_ngx_main_conf_t *amcf)
{
    at_live *live = at_ngx_live(amcf);

    if (live == NULL)
        return NGX_OK;
    serve_g = at_serve_new(live);
    if (serve_g == NULL)
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0, "autotls: out of memory for the certificate "
                      "cache; placeholders will be served");
    return NGX_OK;
}

void at_ngx_tls_exit_process(void)
{
    at_serve_free(serve_g);
    serve_g = NULL;
}
