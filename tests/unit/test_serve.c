/*
 * test_serve.c: the serving side with real TLS handshakes in memory (client
 * and server SSL objects over a BIO pair), certificates made here with
 * OpenSSL, and the HTTP-01 path rules.
 */
#include "at_test.h"
#include "at_serve.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

/* ------------------------------------------------------------ certificates */

static EVP_PKEY *ec_ca_key, *rsa_ca_key, *ec_key, *rsa_key, *ph_key;
static X509 *ec_ca, *rsa_ca, *ph_cert;
static long serial_no = 1;

static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *san, X509 *issuer, EVP_PKEY *issuer_key)
{
    X509 *x = X509_new();
    X509_NAME *nm = X509_NAME_new();
    int ok = x && nm;

    ok = ok && X509_set_version(x, X509_VERSION_3);
    ok = ok && ASN1_INTEGER_set(X509_get_serialNumber(x), serial_no++);
    ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    ok = ok && X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    ok = ok && X509_set_pubkey(x, key);
    ok = ok && X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    ok = ok && X509_set_subject_name(x, nm);
    ok = ok && X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : nm);
    if (ok && san) {
        X509V3_CTX ctx;
        X509_EXTENSION *ext;
        X509V3_set_ctx_nodb(&ctx);
        X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
        ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
        ok = ext && X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    ok = ok && X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0;
    X509_NAME_free(nm);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static void add_cert_pem(at_buf *out, X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p;
    long n;
    PEM_write_bio_X509(b, x);
    n = BIO_get_mem_data(b, &p);
    at_buf_append(out, p, (size_t)n);
    BIO_free(b);
}

static void add_key_pem(at_buf *out, EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p;
    long n;
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    n = BIO_get_mem_data(b, &p);
    at_buf_append(out, p, (size_t)n);
    BIO_free(b);
}

static int setup_keys(void)
{
    if (ec_key)
        return 1;
    ec_ca_key = EVP_EC_gen("P-256");
    ec_key = EVP_EC_gen("P-256");
    ph_key = EVP_EC_gen("P-256");
    rsa_ca_key = EVP_RSA_gen(2048);
    rsa_key = EVP_RSA_gen(2048);
    if (!ec_ca_key || !ec_key || !ph_key || !rsa_ca_key || !rsa_key)
        return 0;
    ec_ca = make_cert(ec_ca_key, "Test EC CA", NULL, NULL, NULL);
    rsa_ca = make_cert(rsa_ca_key, "Test RSA CA", NULL, NULL, NULL);
    ph_cert = make_cert(ph_key, "placeholder", "DNS:placeholder.invalid", NULL, NULL);
    return ec_ca && rsa_ca && ph_cert;
}

/* Publish a certificate whose subject CN is `cn` (the marker a client sees). */
static int publish(at_live *lv, const char *id, const char *const *names, size_t n, at_key_kind kind,
                   const char *cn, uint64_t *gen)
{
    at_buf chain = AT_BUF_INIT, key = AT_BUF_INIT, san = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    X509 *leaf;
    int rc;
    for (size_t i = 0; i < n; i++)
        at_buf_printf(&san, "%sDNS:%s", i ? "," : "", names[i]);
    leaf = kind == AT_KEY_EC ? make_cert(ec_key, cn, at_buf_str(&san), ec_ca, ec_ca_key)
                             : make_cert(rsa_key, cn, at_buf_str(&san), rsa_ca, rsa_ca_key);
    if (!leaf)
        return -1;
    add_cert_pem(&chain, leaf);
    add_cert_pem(&chain, kind == AT_KEY_EC ? ec_ca : rsa_ca);
    add_key_pem(&key, kind == AT_KEY_EC ? ec_key : rsa_key);
    rc = at_live_put_cert(lv, id, names, n, kind, at_buf_str(&chain), at_buf_str(&key), gen, &err);
    if (rc != 0)
        fprintf(stderr, "  publish %s: %s\n", id, err.msg);
    X509_free(leaf);
    at_buf_free(&chain);
    at_buf_free(&key);
    at_buf_free(&san);
    at_error_clear(&err);
    return rc;
}

/* ------------------------------------------------------------ handshakes */

static __thread int cert_cb_result;   /* per thread: t_threads runs handshakes in parallel */

static int cert_cb(SSL *ssl, void *arg)
{
    at_serve *s = arg;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    int r;
    if (at_serve_is_acme(ssl)) {
        /* A validation connection gets the challenge certificate or nothing. */
        r = at_serve_install_alpn01(s, ssl, host);
        cert_cb_result = r;
        return r == 1;
    }
    r = at_serve_install(s, ssl, host);
    cert_cb_result = r;
    return r >= 0;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    (void)ssl; (void)arg;
    if (at_serve_alpn_has_acme(in, inlen)) {
        *out = (const unsigned char *)AT_ALPN_ACME;
        *outlen = (unsigned char)strlen(AT_ALPN_ACME);
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert; (void)arg;
    at_serve_client_hello(ssl);
    return SSL_CLIENT_HELLO_SUCCESS;
}

static SSL_CTX *server_ctx(at_serve *s)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    SSL_CTX_use_certificate(ctx, ph_cert);
    SSL_CTX_use_PrivateKey(ctx, ph_key);
    if (s)
        SSL_CTX_set_cert_cb(ctx, cert_cb, s);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
    return ctx;
}

typedef struct hs_opts {
    const char *sni;
    const char *sigalgs;   /* client signature algorithms, or NULL */
    const char *ciphers;   /* TLS 1.2 cipher list, or NULL */
    int         max_version;
    const unsigned char *alpn;
    unsigned    alpn_len;
} hs_opts;

typedef struct hs_result {
    int  ok;
    char cn[128];
    int  key_type;   /* EVP_PKEY_EC / EVP_PKEY_RSA */
    int  chain_len;
    int  acme_selected;
} hs_result;

static int pump(SSL *ssl, int *done)
{
    int r, e;
    if (*done)
        return 0;
    r = SSL_do_handshake(ssl);
    if (r == 1) {
        *done = 1;
        return 0;
    }
    e = SSL_get_error(ssl, r);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

static void handshake(SSL_CTX *sctx, const hs_opts *o, hs_result *res)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *c = NULL, *s = NULL;
    BIO *cb = NULL, *sb = NULL;
    int cdone = 0, sdone = 0;

    memset(res, 0, sizeof(*res));
    if (!cctx)
        return;
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    if (o->max_version)
        SSL_CTX_set_max_proto_version(cctx, o->max_version);
    if (o->sigalgs)
        SSL_CTX_set1_sigalgs_list(cctx, o->sigalgs);
    if (o->ciphers)
        SSL_CTX_set_cipher_list(cctx, o->ciphers);
    c = SSL_new(cctx);
    s = SSL_new(sctx);
    if (!c || !s || !BIO_new_bio_pair(&cb, 0, &sb, 0))
        goto out;
    SSL_set_bio(c, cb, cb);
    SSL_set_bio(s, sb, sb);
    if (o->sni)
        SSL_set_tlsext_host_name(c, o->sni);
    if (o->alpn)
        SSL_set_alpn_protos(c, o->alpn, o->alpn_len);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    for (int i = 0; i < 50 && !(cdone && sdone); i++)
        if (pump(c, &cdone) != 0 || pump(s, &sdone) != 0)
            break;
    res->ok = cdone && sdone;
    if (res->ok) {
        X509 *peer = SSL_get1_peer_certificate(c);
        STACK_OF(X509) *chain = SSL_get_peer_cert_chain(c);
        const unsigned char *p = NULL;
        unsigned int pl = 0;
        if (peer) {
            X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, res->cn, sizeof(res->cn));
            res->key_type = EVP_PKEY_get_base_id(X509_get0_pubkey(peer));
            X509_free(peer);
        }
        res->chain_len = chain ? sk_X509_num(chain) : 0;
        SSL_get0_alpn_selected(c, &p, &pl);
        res->acme_selected = p && pl == 10 && memcmp(p, "acme-tls/1", 10) == 0;
    }
out:
    ERR_clear_error();
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(cctx);
}

static at_live *fixture(at_serve **s, SSL_CTX **sctx)
{
    at_error err = AT_ERROR_INIT;
    at_live *lv;
    *s = NULL;
    *sctx = NULL;
    if (!setup_keys()) {
        AT_CHECK_MSG(0, "could not make test keys");
        return NULL;
    }
    lv = at_live_new_private(512 * 1024, &err);
    AT_CHECK_MSG(lv != NULL, "%s", err.msg);
    if (!lv)
        return NULL;
    *s = at_serve_new(lv);
    *sctx = server_ctx(*s);
    AT_CHECK(*s && *sctx);
    return lv;
}

static void fixture_free(at_live *lv, at_serve *s, SSL_CTX *sctx)
{
    SSL_CTX_free(sctx);
    at_serve_free(s);
    at_live_free_private(lv);
}

/* ------------------------------------------------------------ cases */

static void t_install_live_cert(void)
{
    at_serve *s;
    SSL_CTX *sctx;
    at_live *lv = fixture(&s, &sctx);
    const char *names[] = { "www.example.com", "example.com" };
    hs_opts o = { "www.example.com", NULL, NULL, 0, NULL, 0 };
    hs_result r;
    at_serve_stats st;

    if (!lv)
        return;
    /* Nothing live: the placeholder answers and the cache records a miss. */
    handshake(sctx, &o, &r);
    AT_CHECK(r.ok);
    AT_CHECK_STR(r.cn, "placeholder");
    AT_CHECK_INT(cert_cb_result, 0);

    AT_CHECK_INT(publish(lv, "site-ec", names, 2, AT_KEY_EC, "live-gen-1", NULL), 0);
    handshake(sctx, &o, &r);
    AT_CHECK(r.ok);
    AT_CHECK_STR(r.cn, "live-gen-1");
    AT_CHECK_INT(r.key_type, EVP_PKEY_EC);
    AT_CHECK_INT(r.chain_len, 2);   /* leaf + intermediate sent */
    AT_CHECK_INT(cert_cb_result, 1);

    o.sni = "EXAMPLE.COM";
    handshake(sctx, &o, &r);
    AT_CHECK_STR(r.cn, "live-gen-1");
    o.sni = "other.example.org";
    handshake(sctx, &o, &r);
    AT_CHECK(r.ok);
    AT_CHECK_STR(r.cn, "placeholder");
    o.sni = NULL;
    handshake(sctx, &o, &r);
    AT_CHECK(r.ok);
    AT_CHECK_STR(r.cn, "placeholder");

    at_serve_get_stats(s, &st);
    AT_CHECK_INT(st.parses, 1);     /* once for the certificate, never per handshake */
    AT_CHECK_INT(st.hits, 1);
    AT_CHECK_INT(st.misses, 3);
    AT_CHECK_INT(st.entries, 1);
    fixture_free(lv, s, sctx);
}

static void t_new_generation(void)
{
    at_serve *s;
    SSL_CTX *sctx;
    at_live *lv = fixture(&s, &sctx);
    const char *names[] = { "www.example.com" };
    hs_opts o = { "www.example.com", NULL, NULL, 0, NULL, 0 };
    hs_result r;
    at_serve_stats st;
    uint64_t g1 = 0, g2 = 0;

    if (!lv)
        return;
    AT_CHECK_INT(publish(lv, "site-ec", names, 1, AT_KEY_EC, "gen-A", &g1), 0);
    for (int i = 0; i < 5; i++) {
        handshake(sctx, &o, &r);
        AT_CHECK_STR(r.cn, "gen-A");
    }
    AT_CHECK_INT(publish(lv, "site-ec", names, 1, AT_KEY_EC, "gen-B", &g2), 0);
    AT_CHECK(g2 > g1);
    for (int i = 0; i < 5; i++) {
        handshake(sctx, &o, &r);
        AT_CHECK(r.ok);
        AT_CHECK_STR(r.cn, "gen-B");
    }
    at_serve_get_stats(s, &st);
    AT_CHECK_INT(st.parses, 2);
    AT_CHECK_INT(st.hits, 8);
    AT_CHECK_INT(st.evictions, 1);   /* gen-A released */
    AT_CHECK_INT(st.entries, 1);

    /* Withdrawn: back to the placeholder, and the cache lets go. */
    AT_CHECK_INT(at_live_del_cert(lv, "site-ec"), 1);
    handshake(sctx, &o, &r);
    AT_CHECK(r.ok);
    AT_CHECK_STR(r.cn, "placeholder");
    at_serve_get_stats(s, &st);
    AT_CHECK_INT(st.entries, 0);
    AT_CHECK_INT(st.evictions, 2);
    fixture_free(lv, s, sctx);
}

static void t_ecdsa_and_rsa_clients(void)
{
    at_serve *s;
    SSL_CTX *sctx;
    at_live *lv = fixture(&s, &sctx);
    const char *names[] = { "dual.example.com" };
    hs_result r;

    if (!lv)
        return;
    AT_CHECK_INT(publish(lv, "dual-ec", names, 1, AT_KEY_EC, "dual-ec", NULL), 0);
    AT_CHECK_INT(publish(lv, "dual-rsa", names, 1, AT_KEY_RSA, "dual-rsa", NULL), 0);
    {
        hs_opts o = { "dual.example.com", NULL, NULL, 0, NULL, 0 };
        handshake(sctx, &o, &r);
        AT_CHECK(r.ok);
        AT_CHECK(strcmp(r.cn, "dual-ec") == 0 || strcmp(r.cn, "dual-rsa") == 0);
    }
    {   /* TLS 1.3, ECDSA signatures only */
        hs_opts o = { "dual.example.com", "ECDSA+SHA256:ECDSA+SHA384", NULL, 0, NULL, 0 };
        handshake(sctx, &o, &r);
        AT_CHECK(r.ok);
        AT_CHECK_STR(r.cn, "dual-ec");
        AT_CHECK_INT(r.key_type, EVP_PKEY_EC);
    }
    {   /* TLS 1.3, RSA signatures only */
        hs_opts o = { "dual.example.com", "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:RSA+SHA256", NULL, 0, NULL, 0 };
        handshake(sctx, &o, &r);
        AT_CHECK(r.ok);
        AT_CHECK_STR(r.cn, "dual-rsa");
        AT_CHECK_INT(r.key_type, EVP_PKEY_RSA);
    }
    {   /* TLS 1.2, ECDSA cipher suites only */
        hs_opts o = { "dual.example.com", NULL, "ECDHE-ECDSA-AES128-GCM-SHA256", TLS1_2_VERSION, NULL, 0 };
        handshake(sctx, &o, &r);
        AT_CHECK(r.ok);
        AT_CHECK_STR(r.cn, "dual-ec");
    }
    {   /* TLS 1.2, RSA cipher suites only */
        hs_opts o = { "dual.example.com", NULL, "ECDHE-RSA-AES128-GCM-SHA256", TLS1_2_VERSION, NULL, 0 };
        handshake(sctx, &o, &r);
        AT_CHECK(r.ok);
        AT_CHECK_STR(r.cn, "dual-rsa");
    }
    {   /* Only an RSA certificate is live: an ECDSA-only client cannot be served by it. */
        const char *rn[] = { "rsa-only.example.com" };
        hs_opts o = { "rsa-only.example.com", NULL, "ECDHE-RSA-AES128-GCM-SHA256", TLS1_2_VERSION, NULL, 0 };
        AT_CHECK_INT(publish(lv, "rsa-only", rn, 1, AT_KEY_RSA, "rsa-only", NULL), 0);
        handshake(sctx, &o, &r);
        AT_CHECK(r.ok);
        AT_CHECK_STR(r.cn, "rsa-only");
        o.ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256";
        handshake(sctx, &o, &r);
        AT_CHECK(!r.ok);   /* and not the placeholder: it was replaced */
    }
    fixture_free(lv, s, sctx);
}

static void t_wildcard_install(void)
{
    at_serve *s;
    SSL_CTX *sctx;
    at_live *lv = fixture(&s, &sctx);
    const char *names[] = { "*.wild.example" };
    hs_opts o = { "a.wild.example", NULL, NULL, 0, NULL, 0 };
    hs_result r;

    if (!lv)
        return;
    AT_CHECK_INT(publish(lv, "wild", names, 1, AT_KEY_EC, "wildcard", NULL), 0);
    handshake(sctx, &o, &r);
    AT_CHECK_STR(r.cn, "wildcard");
    AT_CHECK(at_serve_has_cert(s, "B.wild.example"));
    AT_CHECK(!at_serve_has_cert(s, "wild.example"));
    AT_CHECK(!at_serve_has_cert(s, "x.y.wild.example"));
    AT_CHECK(!at_serve_has_cert(s, NULL));
    o.sni = "x.y.wild.example";
    handshake(sctx, &o, &r);
    AT_CHECK_STR(r.cn, "placeholder");
    fixture_free(lv, s, sctx);
}

static const unsigned char alpn_acme_only[] = "\x0a" "acme-tls/1";
static const unsigned char alpn_web[] = "\x02" "h2" "\x08" "http/1.1";

static void t_tls_alpn01(void)
{
    at_serve *s;
    SSL_CTX *sctx;
    at_live *lv = fixture(&s, &sctx);
    const char *names[] = { "www.example.com" };
    at_error err = AT_ERROR_INIT;
    at_buf cp = AT_BUF_INIT, kp = AT_BUF_INIT;
    EVP_PKEY *k;
    X509 *x;
    hs_result r;

    if (!lv)
        return;
    AT_CHECK_INT(publish(lv, "site", names, 1, AT_KEY_EC, "regular", NULL), 0);
    k = EVP_EC_gen("P-256");
    x = k ? make_cert(k, "acme-challenge", "DNS:www.example.com", NULL, NULL) : NULL;
    AT_CHECK(x != NULL);
    if (x) {
        add_cert_pem(&cp, x);
        add_key_pem(&kp, k);
    }
    AT_CHECK_OK(at_live_put_alpn01(lv, "www.example.com", at_buf_str(&cp), at_buf_str(&kp), &err), &err);
    {
        hs_opts o = { "www.example.com", NULL, NULL, 0, alpn_acme_only, sizeof(alpn_acme_only) - 1 };
        handshake(sctx, &o, &r);
        AT_CHECK(r.ok);
        AT_CHECK(r.acme_selected);
        AT_CHECK_STR(r.cn, "acme-challenge");
        AT_CHECK_INT(r.chain_len, 1);
        o.max_version = TLS1_2_VERSION;   /* some validators still speak TLS 1.2 */
        handshake(sctx, &o, &r);
        AT_CHECK(r.ok && r.acme_selected);
        AT_CHECK_STR(r.cn, "acme-challenge");
    }
    {   /* TLS 1.3 alone needs no client_hello callback: ALPN is decided before the certificate. */
        SSL_CTX *plain = server_ctx(s);
        hs_opts o = { "www.example.com", NULL, NULL, TLS1_3_VERSION, alpn_acme_only, sizeof(alpn_acme_only) - 1 };
        SSL_CTX_set_client_hello_cb(plain, NULL, NULL);
        handshake(plain, &o, &r);
        AT_CHECK(r.ok && r.acme_selected);
        AT_CHECK_STR(r.cn, "acme-challenge");
        SSL_CTX_free(plain);
    }
    {   /* Ordinary clients of the same name are not affected. */
        hs_opts o = { "www.example.com", NULL, NULL, 0, alpn_web, sizeof(alpn_web) - 1 };
        handshake(sctx, &o, &r);
        AT_CHECK(r.ok);
        AT_CHECK(!r.acme_selected);
        AT_CHECK_STR(r.cn, "regular");
    }
    {   /* No challenge for this name: the validation connection fails. */
        hs_opts o = { "other.example.com", NULL, NULL, 0, alpn_acme_only, sizeof(alpn_acme_only) - 1 };
        handshake(sctx, &o, &r);
        AT_CHECK(!r.ok);
        AT_CHECK_INT(cert_cb_result, 0);
    }
    AT_CHECK_INT(at_live_del_alpn01(lv, "www.example.com"), 1);
    {
        hs_opts o = { "www.example.com", NULL, NULL, 0, alpn_acme_only, sizeof(alpn_acme_only) - 1 };
        handshake(sctx, &o, &r);
        AT_CHECK(!r.ok);
    }
    X509_free(x);
    EVP_PKEY_free(k);
    at_buf_free(&cp);
    at_buf_free(&kp);
    at_error_clear(&err);
    fixture_free(lv, s, sctx);
}

/* at_serve_site: the certificate callback a module installs for a site. */
typedef struct site_cb {
    at_serve          *s;
    const char *const *names;
    size_t             nnames;
    char               host[256];
    int                acme;
    int                rv;
} site_cb;

static int site_cert_cb(SSL *ssl, void *arg)
{
    site_cb *a = arg;
    a->rv = at_serve_site(a->s, ssl, a->names, a->nnames, a->host, sizeof(a->host), &a->acme);
    return a->acme ? a->rv == 1 : 1;
}

static void t_serve_site(void)
{
    at_serve *s;
    SSL_CTX *sctx, *site_ctx;
    at_live *lv = fixture(&s, &sctx);
    const char *names[] = { "site.test", "www.site.test" };
    at_error err = AT_ERROR_INIT;
    at_buf cp = AT_BUF_INIT, kp = AT_BUF_INIT;
    site_cb a;
    hs_result r;
    EVP_PKEY *k;
    X509 *x;

    if (!lv)
        return;
    memset(&a, 0, sizeof(a));
    a.s = s;
    a.names = names;
    a.nnames = 2;
    site_ctx = server_ctx(NULL);
    SSL_CTX_set_cert_cb(site_ctx, site_cert_cb, &a);
    AT_CHECK_INT(publish(lv, "site", names, 2, AT_KEY_EC, "site-cert", NULL), 0);
    {   /* The SNI name in any case, with a trailing dot. */
        hs_opts o = { "WWW.Site.Test.", NULL, NULL, 0, NULL, 0 };
        handshake(site_ctx, &o, &r);
        AT_CHECK(r.ok);
        AT_CHECK_STR(r.cn, "site-cert");
        AT_CHECK_STR(a.host, "www.site.test");
        AT_CHECK_INT(a.acme, 0);
        AT_CHECK_INT(a.rv, 1);
    }
    {   /* A name the site does not cover, and no SNI: its first name's certificate. */
        hs_opts o = { "elsewhere.test", NULL, NULL, 0, NULL, 0 };
        handshake(site_ctx, &o, &r);
        AT_CHECK(r.ok);
        AT_CHECK_STR(r.cn, "site-cert");
        AT_CHECK_STR(a.host, "site.test");
        o.sni = NULL;
        handshake(site_ctx, &o, &r);
        AT_CHECK(r.ok);
        AT_CHECK_STR(a.host, "site.test");
        AT_CHECK_INT(a.rv, 1);
    }
    /* acme-tls/1: the challenge certificate of the SNI name, or nothing. */
    k = EVP_EC_gen("P-256");
    x = k ? make_cert(k, "site-challenge", "DNS:site.test", NULL, NULL) : NULL;
    AT_CHECK(x != NULL);
    if (x) {
        add_cert_pem(&cp, x);
        add_key_pem(&kp, k);
    }
    AT_CHECK_OK(at_live_put_alpn01(lv, "site.test", at_buf_str(&cp), at_buf_str(&kp), &err), &err);
    {
        hs_opts o = { "SITE.test", NULL, NULL, 0, alpn_acme_only, sizeof(alpn_acme_only) - 1 };
        handshake(site_ctx, &o, &r);
        AT_CHECK(r.ok && r.acme_selected);
        AT_CHECK_STR(r.cn, "site-challenge");
        AT_CHECK_INT(a.acme, 1);
        AT_CHECK_STR(a.host, "site.test");
        o.sni = "www.site.test";
        handshake(site_ctx, &o, &r);
        AT_CHECK(!r.ok);
        AT_CHECK_INT(a.acme, 1);
        AT_CHECK_INT(a.rv, 0);
        o.sni = NULL;
        handshake(site_ctx, &o, &r);
        AT_CHECK(!r.ok);
        AT_CHECK_INT(a.rv, 0);
        AT_CHECK_STR(a.host, "");
    }
    /* Nothing live for the site: the placeholder stays. */
    AT_CHECK_INT(at_live_del_cert(lv, "site"), 1);
    {
        hs_opts o = { "site.test", NULL, NULL, 0, NULL, 0 };
        handshake(site_ctx, &o, &r);
        AT_CHECK(r.ok);
        AT_CHECK_STR(r.cn, "placeholder");
        AT_CHECK_INT(a.rv, 0);
    }
    X509_free(x);
    EVP_PKEY_free(k);
    at_buf_free(&cp);
    at_buf_free(&kp);
    at_error_clear(&err);
    SSL_CTX_free(site_ctx);
    fixture_free(lv, s, sctx);
}

static void t_alpn_helpers(void)
{
    static const unsigned char both[] = "\x02" "h2" "\x0a" "acme-tls/1";
    static const unsigned char longer[] = "\x0b" "acme-tls/10";
    static const unsigned char truncated[] = "\x02" "h2" "\x0b" "acme-tls/1";
    static const unsigned char zero[] = "\x00" "\x0a" "acme-tls/1";
    AT_CHECK(at_serve_alpn_has_acme(alpn_acme_only, sizeof(alpn_acme_only) - 1));
    AT_CHECK(at_serve_alpn_has_acme(both, sizeof(both) - 1));
    AT_CHECK(!at_serve_alpn_has_acme(alpn_web, sizeof(alpn_web) - 1));
    AT_CHECK(!at_serve_alpn_has_acme(longer, sizeof(longer) - 1));
    AT_CHECK(!at_serve_alpn_has_acme(truncated, sizeof(truncated) - 1));
    AT_CHECK(!at_serve_alpn_has_acme(zero, sizeof(zero) - 1));
    AT_CHECK(!at_serve_alpn_has_acme(alpn_acme_only, 5));
    AT_CHECK(!at_serve_alpn_has_acme(NULL, 0));
    AT_CHECK(!at_serve_alpn_selected_acme(NULL));
}

static void t_install_errors(void)
{
    at_serve *s;
    SSL_CTX *sctx;
    at_live *lv = fixture(&s, &sctx);
    at_error err = AT_ERROR_INIT;
    const char *n1[] = { "garbage.example" }, *n2[] = { "mismatch.example" };
    at_buf chain = AT_BUF_INIT, key = AT_BUF_INIT;
    SSL *ssl;

    if (!lv)
        return;
    ssl = SSL_new(sctx);
    AT_CHECK_OK(at_live_put_cert(lv, "garbage", n1, 1, AT_KEY_EC, "-----BEGIN CERTIFICATE-----\nnope\n",
                                 "-----BEGIN PRIVATE KEY-----\nnope\n", NULL, &err), &err);
    AT_CHECK_INT(at_serve_install(s, ssl, "garbage.example"), -1);
    AT_CHECK(SSL_get_certificate(ssl) == ph_cert);   /* left alone */

    /* A key that does not belong to the certificate is refused, not served. */
    {
        X509 *leaf = make_cert(ec_key, "mismatch", "DNS:mismatch.example", ec_ca, ec_ca_key);
        add_cert_pem(&chain, leaf);
        add_key_pem(&key, ph_key);
        X509_free(leaf);
    }
    AT_CHECK_OK(at_live_put_cert(lv, "mismatch", n2, 1, AT_KEY_EC, at_buf_str(&chain), at_buf_str(&key), NULL, &err),
                &err);
    AT_CHECK_INT(at_serve_install(s, ssl, "mismatch.example"), -1);
    AT_CHECK(SSL_get_certificate(ssl) == ph_cert);
    AT_CHECK_INT(at_serve_install(s, ssl, "nothing.example"), 0);
    AT_CHECK_INT(at_serve_install(s, ssl, NULL), 0);
    AT_CHECK_INT(at_serve_install_alpn01(s, ssl, "nothing.example"), 0);
    AT_CHECK(SSL_get_certificate(ssl) == ph_cert);
    AT_CHECK(!at_serve_alpn_selected_acme(ssl));
    SSL_free(ssl);
    at_buf_free(&chain);
    at_buf_free(&key);
    at_error_clear(&err);
    fixture_free(lv, s, sctx);
}

static at_http01_result h01(at_live *lv, const char *path, char *out, size_t outsz)
{
    return at_serve_http01(lv, path, strlen(path), out, outsz);
}

static void t_http01_paths(void)
{
    at_error err = AT_ERROR_INIT;
    at_live *lv = at_live_new_private(64 * 1024, &err);
    char out[256], path[512], tok[AT_LIVE_TOKEN_MAX + 2];
    static const char *bad[] = {
        "/.well-known/acme-challenge/",
        "/.well-known/acme-challenge/..",
        "/.well-known/acme-challenge/../etc/passwd",
        "/.well-known/acme-challenge/tok/en",
        "/.well-known/acme-challenge/tok%2Fen",
        "/.well-known/acme-challenge/%2e%2e",
        "/.well-known/acme-challenge/tok.en",
        "/.well-known/acme-challenge/tok en",
        "/.well-known/acme-challenge/tok+en",
        "/.well-known/acme-challenge/tok=",
        "/.well-known/acme-challenge/t\xc3\xa9",
        "/.well-known/acme-challenge/unknown_token",
    };

    AT_CHECK(lv != NULL);
    if (!lv)
        return;
    AT_CHECK_OK(at_live_put_http01(lv, "Valid-Token_123", "Valid-Token_123.thumbprint", &err), &err);
    AT_CHECK_INT(h01(lv, "/.well-known/acme-challenge/Valid-Token_123", out, sizeof(out)), AT_HTTP01_ANSWER);
    AT_CHECK_STR(out, "Valid-Token_123.thumbprint");

    /* Not a challenge path: the server handles it. */
    AT_CHECK_INT(h01(lv, "/", out, sizeof(out)), AT_HTTP01_PASS);
    AT_CHECK_INT(h01(lv, "/index.html", out, sizeof(out)), AT_HTTP01_PASS);
    AT_CHECK_INT(h01(lv, "/.well-known/acme-challenge", out, sizeof(out)), AT_HTTP01_PASS);
    AT_CHECK_INT(h01(lv, "/.well-known/acme-challengeX/Valid-Token_123", out, sizeof(out)), AT_HTTP01_PASS);
    AT_CHECK_INT(h01(lv, "/.WELL-KNOWN/acme-challenge/Valid-Token_123", out, sizeof(out)), AT_HTTP01_PASS);
    AT_CHECK_INT(h01(lv, "//.well-known/acme-challenge/Valid-Token_123", out, sizeof(out)), AT_HTTP01_PASS);
    AT_CHECK_INT(at_serve_http01(lv, NULL, 0, out, sizeof(out)), AT_HTTP01_PASS);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        strcpy(out, "junk");
        AT_CHECK_MSG(h01(lv, bad[i], out, sizeof(out)) == AT_HTTP01_NOTFOUND, "%s was not a 404", bad[i]);
        AT_CHECK_STR(out, "");
    }
    /* A NUL inside the path is a character outside the alphabet, not an end. */
    {
        static const char withnul[] = "/.well-known/acme-challenge/Valid-Token_123\0x";
        AT_CHECK_INT(at_serve_http01(lv, withnul, sizeof(withnul) - 1, out, sizeof(out)), AT_HTTP01_NOTFOUND);
        AT_CHECK_INT(at_serve_http01(lv, withnul, sizeof(withnul) - 3, out, sizeof(out)), AT_HTTP01_ANSWER);
    }
    /* Length: 128 is served, 129 is refused before any lookup. */
    memset(tok, 'x', AT_LIVE_TOKEN_MAX);
    tok[AT_LIVE_TOKEN_MAX] = '\0';
    AT_CHECK_OK(at_live_put_http01(lv, tok, "long.key.authorization", &err), &err);
    snprintf(path, sizeof(path), "%s%s", AT_HTTP01_PREFIX, tok);
    AT_CHECK_INT(h01(lv, path, out, sizeof(out)), AT_HTTP01_ANSWER);
    AT_CHECK_STR(out, "long.key.authorization");
    snprintf(path, sizeof(path), "%s%sx", AT_HTTP01_PREFIX, tok);
    AT_CHECK_INT(h01(lv, path, out, sizeof(out)), AT_HTTP01_NOTFOUND);
    /* An answer that does not fit is a 404, never a truncated answer. */
    AT_CHECK_INT(h01(lv, "/.well-known/acme-challenge/Valid-Token_123", out, 8), AT_HTTP01_NOTFOUND);
    AT_CHECK_INT(h01(lv, "/.well-known/acme-challenge/Valid-Token_123", NULL, 0), AT_HTTP01_NOTFOUND);
    /* Withdrawn: 404. */
    at_live_del_http01(lv, "Valid-Token_123");
    AT_CHECK_INT(h01(lv, "/.well-known/acme-challenge/Valid-Token_123", out, sizeof(out)), AT_HTTP01_NOTFOUND);
    at_live_free_private(lv);
    at_error_clear(&err);
}

/* Many threads handshake while the main thread keeps publishing: every
 * handshake gets a whole certificate of some published generation. */
#define TH_THREADS 4
#define TH_ROUNDS  60

typedef struct th_arg {
    SSL_CTX *sctx;
    int      bad;
    int      last_seen;
} th_arg;

static void *th_main(void *p)
{
    th_arg *a = p;
    hs_opts o = { "busy.example.com", NULL, NULL, 0, NULL, 0 };
    for (int i = 0; i < TH_ROUNDS; i++) {
        hs_result r;
        int g = -1;
        handshake(a->sctx, &o, &r);
        if (!r.ok || sscanf(r.cn, "busy-%d", &g) != 1 || g < a->last_seen)
            a->bad++;
        else
            a->last_seen = g;
    }
    return NULL;
}

static void t_threads(void)
{
    at_serve *s;
    SSL_CTX *sctx;
    at_live *lv = fixture(&s, &sctx);
    const char *names[] = { "busy.example.com" };
    pthread_t th[TH_THREADS];
    th_arg args[TH_THREADS];
    int started = 0, pubs = 1;
    at_serve_stats st;

    if (!lv)
        return;
    AT_CHECK_INT(publish(lv, "busy", names, 1, AT_KEY_EC, "busy-0", NULL), 0);
    for (int i = 0; i < TH_THREADS; i++) {
        memset(&args[i], 0, sizeof(args[i]));
        args[i].sctx = sctx;
        if (pthread_create(&th[i], NULL, th_main, &args[i]) == 0)
            started++;
    }
    AT_CHECK_INT(started, TH_THREADS);
    for (; pubs < 20; pubs++) {
        char cn[32];
        snprintf(cn, sizeof(cn), "busy-%d", pubs);
        AT_CHECK_INT(publish(lv, "busy", names, 1, AT_KEY_EC, cn, NULL), 0);
    }
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        AT_CHECK_MSG(args[i].bad == 0, "thread %d: %d bad handshakes", i, args[i].bad);
    }
    {
        hs_opts o = { "busy.example.com", NULL, NULL, 0, NULL, 0 };
        hs_result r;
        char want[32];
        handshake(sctx, &o, &r);
        snprintf(want, sizeof(want), "busy-%d", pubs - 1);
        AT_CHECK_STR(r.cn, want);
    }
    at_serve_get_stats(s, &st);
    AT_CHECK(st.parses >= 1 && st.parses <= (unsigned long)pubs * TH_THREADS);
    AT_CHECK(st.hits + st.parses >= TH_ROUNDS * TH_THREADS);
    AT_CHECK_INT(st.entries, 1);
    fixture_free(lv, s, sctx);
}

static void cleanup(void)
{
    EVP_PKEY_free(ec_ca_key);
    EVP_PKEY_free(rsa_ca_key);
    EVP_PKEY_free(ec_key);
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(ph_key);
    X509_free(ec_ca);
    X509_free(rsa_ca);
    X509_free(ph_cert);
}

static const at_test_case cases[] = {
    AT_CASE(t_install_live_cert),
    AT_CASE(t_new_generation),
    AT_CASE(t_ecdsa_and_rsa_clients),
    AT_CASE(t_wildcard_install),
    AT_CASE(t_tls_alpn01),
    AT_CASE(t_serve_site),
    AT_CASE(t_alpn_helpers),
    AT_CASE(t_install_errors),
    AT_CASE(t_http01_paths),
    AT_CASE(t_threads),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    int rc = at_test_main(argc, argv, cases);
    cleanup();
    return rc;
}
