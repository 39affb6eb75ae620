/*
 * autotls_tls.c: everything between the module and mod_ssl.
 *
 * - Placeholder: mod_ssl refuses an SSL vhost without a certificate, so a
 *   managed vhost without its own SSLCertificateFile gets a self-signed
 *   placeholder through ssl_add_cert_files. Not through
 *   ssl_add_fallback_cert_files: mod_ssl would then answer 503 for the life
 *   of the process, and a hot-swapped certificate could never end that. The
 *   module owns the 503 instead (autotls_http.c), ending it the moment the
 *   real certificate is live.
 * - Hot swap: mod_ssl's optional init_server hook hands over each vhost's
 *   SSL_CTX; a certificate callback puts the live certificate(s) on every
 *   handshake (at_serve caches parsed objects per generation).
 * - TLS-ALPN-01: acme-tls/1 is offered on managed vhosts (added to their
 *   Protocols, proposed when the client asks for it, switched to), and the
 *   challenge certificate comes from the live table through
 *   ssl_answer_challenge.
 */
#include "mod_autotls.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include <http_core.h>
#include <http_protocol.h>
#include <http_ssl.h>
#include <mod_ssl.h>
#include <apr_optional_hooks.h>
#include <apr_strings.h>

#include <openssl/ssl.h>

#include "at_x509.h"
#include "at_buf.h"

APLOG_USE_MODULE(autotls);

/* Exported by mod_ssl by name; Debian ships no mod_ssl_openssl.h. */
APR_DECLARE_EXTERNAL_HOOK(ssl, SSL, int, init_server,
                          (server_rec *s, apr_pool_t *p, int is_proxy, SSL_CTX *ctx))

#define PLACEHOLDER_DAYS    365
#define PLACEHOLDER_MIN_LEFT (7 * 86400)

static at_serve *serve_g;          /* this child's cache */
static const char acme_mark[] = "acme-tls/1";   /* conn_config marker */

at_serve *at_ap_serve(void)
{
    return serve_g;
}

/* ----------------------------------------------------------- placeholder */

static int write_file(const char *path, const char *data, size_t len, mode_t mode)
{
    char tmp[4096];
    int fd, ok;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return -1;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    ok = write(fd, data, len) == (ssize_t)len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static char *read_file(apr_pool_t *p, const char *path)
{
    char *data = NULL;
    apr_size_t len;
    apr_file_t *f;
    apr_finfo_t fi;

    if (apr_file_open(&f, path, APR_FOPEN_READ, 0, p) != APR_SUCCESS)
        return NULL;
    if (apr_file_info_get(&fi, APR_FINFO_SIZE, f) == APR_SUCCESS && fi.size < 1024 * 1024) {
        len = (apr_size_t)fi.size;
        data = apr_palloc(p, len + 1);
        if (apr_file_read_full(f, data, len, &len) != APR_SUCCESS)
            data = NULL;
        else
            data[len] = '\0';
    }
    apr_file_close(f);
    return data;
}

/* An existing placeholder is reused while it names the same names and has
 * a week left; otherwise a fresh one is written. */
static int placeholder_ok(apr_pool_t *p, const at_ap_site *site, const char *cert, const char *key)
{
    char *pem = read_file(p, cert);
    at_cert_info info;
    int ok = 0;

    if (!pem || access(key, R_OK) != 0)
        return 0;
    memset(&info, 0, sizeof(info));
    if (at_cert_info_pem(pem, strlen(pem), &info, NULL) != 0)
        return 0;
    if (info.not_after - time(NULL) > PLACEHOLDER_MIN_LEFT && info.nnames == (size_t)site->nnames) {
        ok = 1;
        for (int i = 0; i < site->nnames && ok; i++) {
            ok = 0;
            for (size_t k = 0; k < info.nnames; k++)
                if (strcmp(info.names[k], site->names[i]) == 0)
                    ok = 1;
        }
    }
    at_cert_info_free(&info);
    return ok;
}

/* One key per kind serves every placeholder of a configuration pass:
 * generating an RSA key per vhost made a start with 100 RSA vhosts take
 * half a minute. Freed when the pass is over (ph_keys_free). */
static EVP_PKEY *ph_keys[2];

static apr_status_t ph_keys_free(void *data)
{
    (void)data;
    for (size_t i = 0; i < sizeof(ph_keys) / sizeof(ph_keys[0]); i++) {
        EVP_PKEY_free(ph_keys[i]);
        ph_keys[i] = NULL;
    }
    return APR_SUCCESS;
}

static EVP_PKEY *ph_key(const char *spec, apr_pool_t *ptemp, at_error *err)
{
    at_key_spec ks;
    int i;

    if (at_key_spec_parse(spec, &ks, err) != 0)
        return NULL;
    i = ks.kind == AT_KEY_RSA ? 1 : 0;
    if (!ph_keys[i]) {
        if (!ph_keys[0] && !ph_keys[1])
            apr_pool_cleanup_register(ptemp, NULL, ph_keys_free, apr_pool_cleanup_null);
        ph_keys[i] = at_key_generate(&ks, err);
    }
    return ph_keys[i];
}

static int make_one(at_ap_site *site, const char *cert_path, const char *key_path,
                    const char *spec, const char *dir, int level, apr_pool_t *ptemp)
{
    at_buf cert = AT_BUF_INIT, key = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    EVP_PKEY *pk;
    int rv = -1;

    if (placeholder_ok(ptemp, site, cert_path, key_path))
        return 0;
    if (!(pk = ph_key(spec, ptemp, &err)) ||
        at_placeholder_cert_with_key(site->names, (size_t)site->nnames, pk, PLACEHOLDER_DAYS,
                                     &cert, &key, &err) != 0) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, site->s,
                     "AutoTLS: making the placeholder certificate for %s failed: %s", site->id, err.msg);
        goto out;
    }
    if (write_file(key_path, key.data, key.len, 0600) != 0 ||
        write_file(cert_path, cert.data, cert.len, 0644) != 0) {
        ap_log_error(APLOG_MARK, level, errno, site->s,
                     "AutoTLS: cannot write the placeholder certificate for %s into %s; check that "
                     "the directory is writable by root and its disk has room", site->id, dir);
        goto out;
    }
    rv = 0;
out:
    at_error_clear(&err);
    at_buf_free(&cert);
    at_buf_free_secret(&key);
    return rv;
}

/* One placeholder per key kind the site's certificates use, so a client
 * that only speaks RSA still reaches the 503 page. */
static int make_placeholders(at_ap_gen *g, at_ap_site *site, const char *dir, int level,
                             apr_pool_t *ptemp)
{
    at_key_kind kinds[2];
    size_t n = at_site_placeholder_kinds(g->conf, site->names[0], kinds);
    char id[256];

    at_store_id(site->id, id, sizeof(id));
    site->nph = 0;
    for (size_t i = 0; i < n; i++) {
        const char *kind = kinds[i] == AT_KEY_RSA ? "rsa" : "ec";
        site->ph_cert[i] = apr_psprintf(g->pool, "%s/%s.%s.cert.pem", dir, id, kind);
        site->ph_key[i] = apr_psprintf(g->pool, "%s/%s.%s.key.pem", dir, id, kind);
        if (make_one(site, site->ph_cert[i], site->ph_key[i],
                     kinds[i] == AT_KEY_RSA ? "rsa:2048" : "ec:P-256", dir, level, ptemp) != 0)
            return -1;
        site->nph++;
    }
    return 0;
}

/* acme-tls/1 must be among a vhost's Protocols, or ap_select_protocol never
 * picks it; add it so the administrator need not. An empty list means
 * "http/1.1 only", so that is kept explicitly. */
static void allow_acme_tls(at_ap_gen *g, server_rec *s)
{
    core_server_config *core = ap_get_core_module_config(s->module_config);
    apr_array_header_t *list;

    if (ap_array_str_contains(core->protocols, AT_AP_ACME_TLS))
        return;
    /* The array may be shared with the main server: copy before adding. */
    list = apr_array_copy(g->pool, core->protocols);
    if (list->nelts == 0)
        APR_ARRAY_PUSH(list, const char *) = AP_PROTOCOL_HTTP1;
    APR_ARRAY_PUSH(list, const char *) = AT_AP_ACME_TLS;
    core->protocols = list;
}

/* The placeholders live in the store; when it cannot take them (its disk
 * is full, it is read-only), they go to the runtime directory instead: a
 * placeholder only has to be somewhere mod_ssl can read it at startup, and
 * a store in trouble must not keep the whole server from (re)starting. */
static const char *spare_dir(at_ap_gen *g, apr_pool_t *ptemp)
{
    const char *spare = ap_runtime_dir_relative(ptemp, "autotls-placeholders");

    if (!spare || (mkdir(spare, 0700) != 0 && errno != EEXIST)) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, errno, g->s,
                     "AutoTLS: cannot create %s for placeholder certificates either",
                     spare ? spare : "a directory in the runtime directory");
        return NULL;
    }
    return spare;
}

int at_ap_tls_post_config(at_ap_gen *g, apr_pool_t *ptemp)
{
    const char *dir = apr_pstrcat(ptemp, g->store_dir, "/placeholders", NULL), *spare = NULL;
    int in_store = 1;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, errno, g->s,
                     "AutoTLS: cannot create %s for placeholder certificates", dir);
        in_store = 0;
    }
    for (int i = 0; i < g->sites->nelts; i++) {
        at_ap_site *site = APR_ARRAY_IDX(g->sites, i, at_ap_site *);
        if (!in_store || make_placeholders(g, site, dir, APLOG_WARNING, ptemp) != 0) {
            if (!spare && !(spare = spare_dir(g, ptemp)))
                return -1;
            if (make_placeholders(g, site, spare, APLOG_EMERG, ptemp) != 0)
                return -1;
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, site->s,
                         "AutoTLS: the placeholder certificate for %s is in %s, as the store "
                         "cannot take it", site->id, spare);
        }
        allow_acme_tls(g, site->s);
    }
    return 0;
}

/* -------------------------------------------------------- mod_ssl hooks */

static at_ap_site *site_of(server_rec *s)
{
    return at_ap_g && at_ap_g->conf && s ? at_ap_srv_of(s)->site : NULL;
}

static int add_cert_files(server_rec *s, apr_pool_t *p, apr_array_header_t *cert_files,
                          apr_array_header_t *key_files)
{
    at_ap_site *site = site_of(s);
    (void)p;
    /* The administrator's own SSLCertificateFile is served until ours is live. */
    if (!site || site->nph == 0 || cert_files->nelts > 0)
        return DECLINED;
    for (int i = 0; i < site->nph; i++) {
        APR_ARRAY_PUSH(cert_files, const char *) = site->ph_cert[i];
        APR_ARRAY_PUSH(key_files, const char *) = site->ph_key[i];
    }
    site->uses_placeholder = 1;
    return OK;
}

/* Runs on every full handshake of a managed vhost, after SNI picked the
 * vhost's SSL_CTX: put the live certificate(s) on the connection.
 *
 * TLS 1.3 selects ALPN before this callback. For acme-tls/1 mod_ssl has put
 * the challenge certificate into one slot (ssl_answer_challenge), but a
 * placeholder of the other key kind would still be offered, and a validator
 * preferring RSA-PSS would get it: at_serve_site leaves only the challenge
 * certificate. TLS 1.2 selects ALPN after this callback; mod_ssl then swaps
 * in the challenge certificate itself. */
static int cert_cb(SSL *ssl, void *arg)
{
    at_ap_site *site = arg;
    conn_rec *c = SSL_get_app_data(ssl);
    char host[256];
    int acme;

    if (!serve_g)
        return 1;
    if (at_serve_site(serve_g, ssl, site->names, (size_t)site->nnames, host, sizeof(host), &acme) < 0 && c)
        ap_log_cerror(APLOG_MARK, APLOG_WARNING, 0, c, acme
                      ? "AutoTLS: installing the tls-alpn-01 certificate for %s failed"
                      : "AutoTLS: installing the live certificate for %s failed; the handshake "
                        "goes on with the configured one", host);
    return 1;   /* never fail a handshake here */
}

static int init_server(server_rec *s, apr_pool_t *p, int is_proxy, SSL_CTX *ctx)
{
    at_ap_site *site = site_of(s);
    (void)p;
    if (is_proxy || !site || !ctx)
        return DECLINED;
    SSL_CTX_set_cert_cb(ctx, cert_cb, site);
    return OK;
}

/* --------------------------------------------------------- acme-tls/1 */

static int is_acme_conn(const conn_rec *c)
{
    return ap_get_module_config(c->conn_config, &autotls_module) == acme_mark;
}

/* acme-tls/1 is proposed only for a name with a tls-alpn-01 challenge
 * pending. Otherwise the client gets no acme-tls/1 (a validator then fails
 * the handshake), instead of a finished acme-tls/1 handshake with the
 * site's ordinary certificate. */
static int protocol_propose(conn_rec *c, request_rec *r, server_rec *s,
                            const apr_array_header_t *offers, apr_array_header_t *proposals)
{
    const char *sni;
    char name[256];

    if (r || !site_of(s) || !ap_ssl_conn_is_ssl(c) || !at_ap_g || !at_ap_g->live)
        return DECLINED;
    if (!ap_array_str_contains(offers, AT_AP_ACME_TLS))
        return DECLINED;
    sni = ap_ssl_var_lookup(c->pool, s, c, NULL, "SSL_TLS_SNI");
    if (!sni || !*sni)
        return DECLINED;
    at_name_lower(name, sizeof(name), sni, strlen(sni));
    if (at_live_get_alpn01(at_ap_g->live, name, NULL, NULL) == 0)
        return DECLINED;              /* (-1, a busy table: let the handshake decide) */
    APR_ARRAY_PUSH(proposals, const char *) = AT_AP_ACME_TLS;
    return OK;
}

static int protocol_switch(conn_rec *c, request_rec *r, server_rec *s, const char *protocol)
{
    if (r || !site_of(s) || strcmp(protocol, AT_AP_ACME_TLS) != 0)
        return DECLINED;
    /* The handshake answers the challenge; no request follows on it. */
    ap_set_module_config(c->conn_config, &autotls_module, (void *)acme_mark);
    return DONE;
}

static const char *protocol_get(const conn_rec *c)
{
    return is_acme_conn(c) ? AT_AP_ACME_TLS : NULL;
}

static int answer_challenge(conn_rec *c, const char *server_name, const char **pcert_pem,
                            const char **pkey_pem)
{
    at_buf cert = AT_BUF_INIT, key = AT_BUF_INIT;
    char name[256];
    int rv;

    if (!server_name || !is_acme_conn(c) || !at_ap_g || !at_ap_g->live)
        return DECLINED;
    at_name_lower(name, sizeof(name), server_name, strlen(server_name));
    rv = at_live_get_alpn01(at_ap_g->live, name, &cert, &key);
    if (rv == 1) {
        *pcert_pem = apr_pstrmemdup(c->pool, cert.data, cert.len);
        *pkey_pem = apr_pstrmemdup(c->pool, key.data, key.len);
        ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, c,
                      "AutoTLS: answering the tls-alpn-01 challenge for %s", name);
    } else {
        ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, c,
                      "AutoTLS: tls-alpn-01 connection for %s, but no challenge is pending for it", name);
    }
    at_buf_free(&cert);
    at_buf_free_secret(&key);
    return rv == 1 ? OK : DECLINED;
}

/* ------------------------------------------------------------ lifecycle */

static apr_status_t serve_cleanup(void *data)
{
    (void)data;
    at_serve_free(serve_g);
    serve_g = NULL;
    return APR_SUCCESS;
}

void at_ap_tls_child_init(at_ap_gen *g, apr_pool_t *pchild)
{
    if (!g->live)
        return;
    serve_g = at_serve_new(g->live);
    if (!serve_g) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, g->s,
                     "AutoTLS: out of memory for the certificate cache; placeholders will be served");
        return;
    }
    apr_pool_cleanup_register(pchild, NULL, serve_cleanup, apr_pool_cleanup_null);
}

void at_ap_tls_hooks(void)
{
    ap_hook_ssl_add_cert_files(add_cert_files, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ssl, init_server, init_server, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_ssl_answer_challenge(answer_challenge, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_protocol_propose(protocol_propose, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_protocol_switch(protocol_switch, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_protocol_get(protocol_get, NULL, NULL, APR_HOOK_MIDDLE);
}
