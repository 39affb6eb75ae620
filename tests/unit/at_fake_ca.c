/*
 * at_fake_ca.c: an in-memory ACME CA for unit tests (see at_fake_ca.h).
 * It checks what a strict CA checks (nonces, the JWS "url", signatures, the
 * EAB MAC, the keyChange inner JWS, the CSR against the order) so that the
 * client cannot pass tests by accident. Objects are kept in arrays and named
 * by index in their URLs.
 */
#include "at_fake_ca.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>

#include "at_b64.h"
#include "at_buf.h"
#include "at_jose.h"
#include "at_json.h"
#include "at_key.h"
#include "at_time.h"
#include "at_x509.h"

#define URN "urn:ietf:params:acme:error:"

enum res {
    R_DIR, R_NONCE, R_NEWACCT, R_NEWORDER, R_NEWAUTHZ, R_REVOKE, R_KEYCHANGE, R_ARI,
    R_ACCT, R_ORDER, R_FINALIZE, R_AUTHZ, R_CHAL, R_CERT, R_N
};

static const char *const res_names[R_N] = {
    "directory", "newNonce", "newAccount", "newOrder", "newAuthz", "revokeCert", "keyChange",
    "renewalInfo", "account", "order", "finalize", "authz", "challenge", "cert"
};

typedef struct fk_fault {
    int    res;
    int    count;
    long   status;
    char  *type;
    char  *detail;
    long   retry_after;
    int    raw;
    char  *body;
    size_t len;
    char  *ctype;
} fk_fault;

typedef struct fk_stat {
    unsigned count;
    json_t  *payload;
    json_t  *prot;
} fk_stat;

typedef struct fk_account {
    char     *url;
    EVP_PKEY *key;
    char      thumb[64];
    json_t   *contact;
    char      status[16];
} fk_account;

typedef struct fk_chal {
    char   *url;
    char    type[16];
    char    token[64];
    char    status[16];
    json_t *error;
    size_t  authz;
    int     outcome_ok;       /* decided at "{}", applied after the polls */
    json_t *outcome_error;
} fk_chal;

typedef struct fk_authz {
    char   *url;
    size_t  account;
    char    type[8];
    char    value[256];
    int     wildcard;
    char    status[16];
    size_t  chal[3];
    size_t  nchal;
    int     polls_left;
} fk_authz;

typedef struct fk_order {
    char          *url;
    size_t         account;
    json_t        *identifiers;
    size_t        *authz;
    size_t         nauthz;
    char           status[16];
    char          *profile;
    char          *replaces;
    int            polls_left;
    long           cert;
    json_t        *error;
    unsigned char *csr;
    size_t         csr_len;
    int            forgotten;
} fk_order;

typedef struct fk_cert {
    char  *url;
    char  *pem;
    char  *alt_pem;
    X509  *leaf;
    size_t account;
    int    revoked;
    int    reason;
    int    replaced;
    char   ari_id[512];
} fk_cert;

typedef struct fk_pub {
    at_challenge_type type;
    char *identifier;
    char *token;
    char *ka;
    char *dns_name;
    char *dns_value;
    char *cert_pem;
    char *key_pem;
} fk_pub;

typedef struct fk_chalfail {
    char *identifier;   /* NULL = any */
    char *type;
    char *detail;
} fk_chalfail;

#define VEC(T, name) T *name; size_t n##name, c##name

struct at_fake_ca {
    char   *base;
    char   *dir_url;
    time_t  now;
    /* directory */
    char   *terms;
    char   *eab_kid;
    char   *eab_key;
    json_t *profiles;
    int     new_authz, renewal_info, key_change;
    /* nonces */
    unsigned long  next_nonce;
    unsigned char *nonce_used;
    size_t         nonce_cap;
    unsigned       bad_rate, bad_next;
    unsigned long long rng;
    int            omit_nonces;
    /* faults and records */
    VEC(fk_fault, faults);
    fk_stat stats[R_N];
    char    last_error[512];
    /* objects */
    VEC(fk_account, accts);
    VEC(fk_order, orders);
    VEC(fk_authz, authzs);
    VEC(fk_chal, chals);
    VEC(fk_cert, certs);
    VEC(fk_pub, pubs);
    VEC(char *, preauth);
    VEC(fk_chalfail, chalfails);
    /* knobs */
    int     offer_http, offer_alpn, offer_dns;
    int     pending_polls, processing_polls;
    long    poll_ra;
    int     alt_chain, refuse_replaces;
    time_t  ari_start, ari_end;
    long    ari_ra;
    char   *ari_expl;
    at_fake_ca_validate_fn *validator;
    void   *vud;
    /* PKI */
    EVP_PKEY *root_key, *alt_key;
    X509   *root, *alt_root, *cross;
    char   *root_pem, *cross_pem;
};

/* Grow a vector by one zeroed element; returns its index. Aborts on OOM:
 * a test helper has no better option. */
static size_t vec_push(void **arr, size_t *n, size_t *cap, size_t sz)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        void *p = realloc(*arr, nc * sz);
        if (!p)
            abort();
        *arr = p;
        *cap = nc;
    }
    memset((char *)*arr + *n * sz, 0, sz);
    return (*n)++;
}
#define PUSH(ca, name) vec_push((void **)&(ca)->name, &(ca)->n##name, &(ca)->c##name, sizeof(*(ca)->name))

static char *xstrdup(const char *s)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        abort();
    return d;
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    return s;
}

static time_t ca_now(const at_fake_ca *ca)
{
    return ca->now ? ca->now : at_time_now();
}

static void set_error(at_fake_ca *ca, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(at_fake_ca *ca, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ca->last_error, sizeof(ca->last_error), fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ PKI */

static X509 *make_cert(EVP_PKEY *pub, const char *subject_cn, X509 *issuer, EVP_PKEY *signer,
                       int is_ca, time_t nb, time_t na, X509_EXTENSION *san)
{
    X509 *x = X509_new();
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    X509_NAME *nm;

    if (!x)
        return NULL;
    RAND_bytes(serial, sizeof(serial));
    serial[0] &= 0x7f;
    serial[0] |= 0x40;      /* positive, and a fixed length */
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    X509_set_version(x, 2);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_time_adj_ex(X509_getm_notBefore(x), 0, 0, &nb);
    X509_time_adj_ex(X509_getm_notAfter(x), 0, 0, &na);
    X509_set_pubkey(x, pub);
    nm = X509_get_subject_name(x);
    if (subject_cn)
        X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8, (const unsigned char *)subject_cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : nm);
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    if ((ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints,
                                   is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE"))) {
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    if ((ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_key_identifier, "hash"))) {
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    if ((ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always"))) {
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    if (is_ca && (ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign"))) {
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    if (san)
        X509_add_ext(x, san, -1);
    if (!X509_sign(x, signer, EVP_sha256())) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static char *x509_pem(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *s;
    long n;
    PEM_write_bio_X509(b, x);
    n = BIO_get_mem_data(b, &data);
    s = malloc((size_t)n + 1);
    if (!s)
        abort();
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    BIO_free(b);
    return s;
}

static int pki_init(at_fake_ca *ca)
{
    at_key_spec spec = AT_KEY_SPEC_DEFAULT;
    time_t now = time(NULL);
    ca->root_key = at_key_generate(&spec, NULL);
    ca->alt_key = at_key_generate(&spec, NULL);
    if (!ca->root_key || !ca->alt_key)
        return -1;
    ca->root = make_cert(ca->root_key, AT_FAKE_CA_ROOT_CN, NULL, ca->root_key, 1, now - 86400,
                         now + 3650 * 86400L, NULL);
    ca->alt_root = make_cert(ca->alt_key, AT_FAKE_CA_ALT_ROOT_CN, NULL, ca->alt_key, 1, now - 86400,
                             now + 3650 * 86400L, NULL);
    /* The same root key and name, vouched for by the alternate root. */
    ca->cross = ca->alt_root ? make_cert(ca->root_key, AT_FAKE_CA_ROOT_CN, ca->alt_root, ca->alt_key, 1,
                                         now - 86400, now + 3650 * 86400L, NULL) : NULL;
    if (!ca->root || !ca->alt_root || !ca->cross)
        return -1;
    ca->root_pem = x509_pem(ca->root);
    ca->cross_pem = x509_pem(ca->cross);
    return 0;
}

/* RFC 9773 §4.1 id, computed here independently of the library's. */
static void ari_id_of(X509 *x, char *out, size_t outsz)
{
    const ASN1_OCTET_STRING *kid = X509_get0_authority_key_id(x);
    const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
    unsigned char *der = NULL;
    const unsigned char *p;
    long clen;
    int tag, cls, len;
    at_buf b = AT_BUF_INIT;

    out[0] = '\0';
    len = i2d_ASN1_INTEGER((ASN1_INTEGER *)serial, &der);
    if (!kid || len <= 0) {
        OPENSSL_free(der);
        return;
    }
    p = der;
    ASN1_get_object(&p, &clen, &tag, &cls, len);
    at_b64url_encode(&b, ASN1_STRING_get0_data(kid), (size_t)ASN1_STRING_length(kid));
    at_buf_puts(&b, ".");
    at_b64url_encode(&b, p, (size_t)clen);
    snprintf(out, outsz, "%s", at_buf_str(&b));
    at_buf_free(&b);
    OPENSSL_free(der);
}

/* ------------------------------------------------------------ lifecycle */

at_fake_ca *at_fake_ca_new(const char *base_url)
{
    at_fake_ca *ca = calloc(1, sizeof(*ca));
    if (!ca)
        return NULL;
    ca->base = xstrdup(base_url ? base_url : AT_FAKE_CA_BASE);
    ca->dir_url = xprintf("%s/dir", ca->base);
    ca->renewal_info = 1;
    ca->key_change = 1;
    ca->offer_http = ca->offer_alpn = ca->offer_dns = 1;
    ca->poll_ra = -1;
    ca->ari_ra = 21600;
    ca->rng = 0x9e3779b97f4a7c15ULL;
    ca->next_nonce = 1;
    ca->validator = at_fake_ca_validate_published;
    if (pki_init(ca) != 0) {
        at_fake_ca_free(ca);
        return NULL;
    }
    return ca;
}

static void pub_clear(fk_pub *p)
{
    free(p->identifier);
    free(p->token);
    free(p->ka);
    free(p->dns_name);
    free(p->dns_value);
    free(p->cert_pem);
    free(p->key_pem);
    memset(p, 0, sizeof(*p));
}

void at_fake_ca_free(at_fake_ca *ca)
{
    if (!ca)
        return;
    free(ca->base);
    free(ca->dir_url);
    free(ca->terms);
    free(ca->eab_kid);
    free(ca->eab_key);
    json_decref(ca->profiles);
    free(ca->nonce_used);
    for (size_t i = 0; i < ca->nfaults; i++) {
        free(ca->faults[i].type);
        free(ca->faults[i].detail);
        free(ca->faults[i].body);
        free(ca->faults[i].ctype);
    }
    free(ca->faults);
    for (int i = 0; i < R_N; i++) {
        json_decref(ca->stats[i].payload);
        json_decref(ca->stats[i].prot);
    }
    for (size_t i = 0; i < ca->naccts; i++) {
        free(ca->accts[i].url);
        EVP_PKEY_free(ca->accts[i].key);
        json_decref(ca->accts[i].contact);
    }
    free(ca->accts);
    for (size_t i = 0; i < ca->norders; i++) {
        fk_order *o = &ca->orders[i];
        free(o->url);
        json_decref(o->identifiers);
        free(o->authz);
        free(o->profile);
        free(o->replaces);
        json_decref(o->error);
        free(o->csr);
    }
    free(ca->orders);
    for (size_t i = 0; i < ca->nauthzs; i++)
        free(ca->authzs[i].url);
    free(ca->authzs);
    for (size_t i = 0; i < ca->nchals; i++) {
        free(ca->chals[i].url);
        json_decref(ca->chals[i].error);
        json_decref(ca->chals[i].outcome_error);
    }
    free(ca->chals);
    for (size_t i = 0; i < ca->ncerts; i++) {
        free(ca->certs[i].url);
        free(ca->certs[i].pem);
        free(ca->certs[i].alt_pem);
        X509_free(ca->certs[i].leaf);
    }
    free(ca->certs);
    for (size_t i = 0; i < ca->npubs; i++)
        pub_clear(&ca->pubs[i]);
    free(ca->pubs);
    for (size_t i = 0; i < ca->npreauth; i++)
        free(ca->preauth[i]);
    free(ca->preauth);
    for (size_t i = 0; i < ca->nchalfails; i++) {
        free(ca->chalfails[i].identifier);
        free(ca->chalfails[i].type);
        free(ca->chalfails[i].detail);
    }
    free(ca->chalfails);
    free(ca->ari_expl);
    EVP_PKEY_free(ca->root_key);
    EVP_PKEY_free(ca->alt_key);
    X509_free(ca->root);
    X509_free(ca->alt_root);
    X509_free(ca->cross);
    free(ca->root_pem);
    free(ca->cross_pem);
    free(ca);
}

const char *at_fake_ca_directory_url(const at_fake_ca *ca)
{
    return ca->dir_url;
}

void at_fake_ca_set_now(at_fake_ca *ca, time_t now)
{
    ca->now = now;
}

/* ---------------------------------------------------------------- knobs */

void at_fake_ca_set_terms(at_fake_ca *ca, const char *terms_url)
{
    free(ca->terms);
    ca->terms = xstrdup(terms_url);
}

void at_fake_ca_require_eab(at_fake_ca *ca, const char *kid, const char *hmac_key_b64url)
{
    free(ca->eab_kid);
    free(ca->eab_key);
    ca->eab_kid = xstrdup(kid);
    ca->eab_key = xstrdup(hmac_key_b64url);
}

void at_fake_ca_add_profile(at_fake_ca *ca, const char *name, const char *description)
{
    if (!ca->profiles)
        ca->profiles = json_object();
    json_object_set_new(ca->profiles, name, json_string(description ? description : ""));
}

void at_fake_ca_set_new_authz(at_fake_ca *ca, int on) { ca->new_authz = on; }
void at_fake_ca_set_renewal_info(at_fake_ca *ca, int on) { ca->renewal_info = on; }
void at_fake_ca_set_key_change(at_fake_ca *ca, int on) { ca->key_change = on; }
void at_fake_ca_set_bad_nonce_rate(at_fake_ca *ca, unsigned percent) { ca->bad_rate = percent > 100 ? 100 : percent; }
void at_fake_ca_bad_nonce_next(at_fake_ca *ca, unsigned n) { ca->bad_next = n; }
void at_fake_ca_omit_nonces(at_fake_ca *ca, int on) { ca->omit_nonces = on; }
void at_fake_ca_set_pending_polls(at_fake_ca *ca, int n) { ca->pending_polls = n; }
void at_fake_ca_set_processing_polls(at_fake_ca *ca, int n) { ca->processing_polls = n; }
void at_fake_ca_set_poll_retry_after(at_fake_ca *ca, long seconds) { ca->poll_ra = seconds; }
void at_fake_ca_set_alt_chain(at_fake_ca *ca, int on) { ca->alt_chain = on; }
void at_fake_ca_refuse_replaces(at_fake_ca *ca, int on) { ca->refuse_replaces = on; }

void at_fake_ca_set_validator(at_fake_ca *ca, at_fake_ca_validate_fn *fn, void *ud)
{
    ca->validator = fn ? fn : at_fake_ca_validate_published;
    ca->vud = ud;
}

static int res_by_name(const char *name)
{
    for (int i = 0; i < R_N; i++)
        if (name && strcmp(name, res_names[i]) == 0)
            return i;
    return -1;
}

void at_fake_ca_fail_next(at_fake_ca *ca, const char *resource, int count, long status,
                          const char *type, const char *detail, long retry_after)
{
    size_t i;
    int r = res_by_name(resource);
    if (r < 0 || count <= 0)
        abort();
    i = PUSH(ca, faults);
    ca->faults[i].res = r;
    ca->faults[i].count = count;
    ca->faults[i].status = status;
    ca->faults[i].type = xstrdup(type);
    ca->faults[i].detail = xstrdup(detail ? detail : "");
    ca->faults[i].retry_after = retry_after;
}

void at_fake_ca_raw_next(at_fake_ca *ca, const char *resource, long status,
                         const char *content_type, const char *body, size_t len)
{
    size_t i;
    int r = res_by_name(resource);
    if (r < 0)
        abort();
    i = PUSH(ca, faults);
    ca->faults[i].res = r;
    ca->faults[i].count = 1;
    ca->faults[i].status = status;
    ca->faults[i].raw = 1;
    ca->faults[i].retry_after = -1;
    ca->faults[i].ctype = xstrdup(content_type);
    ca->faults[i].body = malloc(len + 1);
    if (!ca->faults[i].body)
        abort();
    memcpy(ca->faults[i].body, body, len);
    ca->faults[i].body[len] = '\0';
    ca->faults[i].len = len;
}

void at_fake_ca_set_challenges(at_fake_ca *ca, const char *types)
{
    ca->offer_http = strstr(types, "http-01") != NULL;
    ca->offer_alpn = strstr(types, "tls-alpn-01") != NULL;
    ca->offer_dns = strstr(types, "dns-01") != NULL;
}

void at_fake_ca_preauthorize(at_fake_ca *ca, const char *identifier)
{
    size_t i = PUSH(ca, preauth);
    ca->preauth[i] = xstrdup(identifier);
}

void at_fake_ca_fail_challenge(at_fake_ca *ca, const char *identifier, const char *type,
                               const char *detail)
{
    size_t i = PUSH(ca, chalfails);
    ca->chalfails[i].identifier = xstrdup(identifier);
    ca->chalfails[i].type = xstrdup(type ? type : "incorrectResponse");
    ca->chalfails[i].detail = xstrdup(detail ? detail : "validation failed");
}

void at_fake_ca_forget_orders(at_fake_ca *ca)
{
    for (size_t i = 0; i < ca->norders; i++)
        ca->orders[i].forgotten = 1;
}

void at_fake_ca_invalidate_orders(at_fake_ca *ca)
{
    for (size_t i = 0; i < ca->norders; i++)
        snprintf(ca->orders[i].status, sizeof(ca->orders[i].status), "invalid");
}

void at_fake_ca_set_ari(at_fake_ca *ca, time_t start, time_t end, long retry_after,
                        const char *explanation_url)
{
    ca->ari_start = start;
    ca->ari_end = end;
    ca->ari_ra = retry_after;
    free(ca->ari_expl);
    ca->ari_expl = xstrdup(explanation_url);
}

/* ----------------------------------------------------------- inspection */

unsigned at_fake_ca_count(const at_fake_ca *ca, const char *resource)
{
    int r = res_by_name(resource);
    return r < 0 ? 0 : ca->stats[r].count;
}

const json_t *at_fake_ca_last_payload(const at_fake_ca *ca, const char *resource)
{
    int r = res_by_name(resource);
    return r < 0 ? NULL : ca->stats[r].payload;
}

const json_t *at_fake_ca_last_protected(const at_fake_ca *ca, const char *resource)
{
    int r = res_by_name(resource);
    return r < 0 ? NULL : ca->stats[r].prot;
}

const char *at_fake_ca_last_error(const at_fake_ca *ca) { return ca->last_error; }
size_t at_fake_ca_naccounts(const at_fake_ca *ca) { return ca->naccts; }
size_t at_fake_ca_norders(const at_fake_ca *ca) { return ca->norders; }
const char *at_fake_ca_root_pem(const at_fake_ca *ca) { return ca->root_pem; }
size_t at_fake_ca_ncerts(const at_fake_ca *ca) { return ca->ncerts; }

const char *at_fake_ca_account_status(const at_fake_ca *ca, const char *url)
{
    for (size_t i = 0; i < ca->naccts; i++)
        if (url && strcmp(ca->accts[i].url, url) == 0)
            return ca->accts[i].status;
    return NULL;
}

const char *at_fake_ca_cert_pem(const at_fake_ca *ca, size_t i)
{
    return i < ca->ncerts ? ca->certs[i].pem : NULL;
}

int at_fake_ca_cert_revoked(const at_fake_ca *ca, size_t i, int *reason)
{
    if (i >= ca->ncerts)
        return 0;
    if (reason)
        *reason = ca->certs[i].reason;
    return ca->certs[i].revoked;
}

/* -------------------------------------------------------------- replies */

static void body_take(at_http_resp *resp, char *s, const char *ctype)
{
    free(resp->body);
    resp->body = s;
    resp->body_len = s ? strlen(s) : 0;
    free(resp->content_type);
    resp->content_type = xstrdup(ctype);
}

static void reply_json(at_http_resp *resp, long status, json_t *j)
{
    char *s = at_json_compact(j);
    json_decref(j);
    resp->status = status;
    body_take(resp, s, "application/json");
}

static void add_link(at_http_resp *resp, const char *url, const char *rel)
{
    at_http_link *l = realloc(resp->links, (resp->nlinks + 1) * sizeof(*l));
    if (!l)
        abort();
    resp->links = l;
    l[resp->nlinks].url = xstrdup(url);
    l[resp->nlinks].rel = xstrdup(rel);
    resp->nlinks++;
}

static void set_location(at_http_resp *resp, const char *url)
{
    free(resp->location);
    resp->location = xstrdup(url);
}

static void set_retry_after(at_http_resp *resp, long secs)
{
    free(resp->retry_after);
    resp->retry_after = xprintf("%ld", secs);
}

static void add_nonce(at_fake_ca *ca, at_http_resp *resp)
{
    size_t need = (size_t)ca->next_nonce + 1;
    if (need > ca->nonce_cap) {
        size_t nc = ca->nonce_cap ? ca->nonce_cap * 2 : 256;
        unsigned char *n;
        while (nc < need)
            nc *= 2;
        n = realloc(ca->nonce_used, nc);
        if (!n)
            abort();
        memset(n + ca->nonce_cap, 0, nc - ca->nonce_cap);
        ca->nonce_used = n;
        ca->nonce_cap = nc;
    }
    free(resp->replay_nonce);
    resp->replay_nonce = xprintf("Nfake%010lu", ca->next_nonce++);
}

static json_t *problem_doc(const char *type, const char *detail, long status)
{
    char *t = xprintf(URN "%s", type);
    json_t *j = json_pack("{s:s, s:s, s:i}", "type", t, "detail", detail, "status", (int)status);
    free(t);
    return j;
}

static void problem(at_fake_ca *ca, at_http_resp *resp, long status, const char *type,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void problem(at_fake_ca *ca, at_http_resp *resp, long status, const char *type,
                    const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    set_error(ca, "%s: %s", type, detail);
    reply_json(resp, status, problem_doc(type, detail, status));
    free(resp->content_type);
    resp->content_type = xstrdup("application/problem+json");
}

/* ---------------------------------------------------------------- nonces */

static unsigned rnd100(at_fake_ca *ca)
{
    ca->rng = ca->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)((ca->rng >> 33) % 100);
}

/* 1 good, 0 bad. A nonce is spent whatever the outcome. */
static int nonce_check(at_fake_ca *ca, const char *nonce)
{
    unsigned long n;
    char *end;
    if (!nonce || strncmp(nonce, "Nfake", 5) != 0)
        return 0;
    n = strtoul(nonce + 5, &end, 10);
    if (*end || n == 0 || n >= ca->next_nonce || n >= ca->nonce_cap || ca->nonce_used[n])
        return 0;
    ca->nonce_used[n] = 1;
    if (ca->bad_next) {
        ca->bad_next--;
        return 0;
    }
    if (ca->bad_rate && rnd100(ca) < ca->bad_rate)
        return 0;
    return 1;
}

/* ------------------------------------------------------------- routing */

typedef struct route {
    int    res;
    size_t id;
    int    alt;
    const char *rest;
} route;

static int parse_id(const char *s, const char *suffix, size_t *id)
{
    char *end;
    unsigned long v;
    if (!*s || *s < '0' || *s > '9')
        return -1;
    v = strtoul(s, &end, 10);
    if (strcmp(end, suffix) != 0)
        return -1;
    *id = v;
    return 0;
}

static int route_url(const at_fake_ca *ca, const char *url, route *rt)
{
    size_t bl = strlen(ca->base);
    const char *p;
    memset(rt, 0, sizeof(*rt));
    rt->res = -1;
    if (!url || strncmp(url, ca->base, bl) != 0)
        return -1;
    p = url + bl;
    if (strcmp(p, "/dir") == 0) rt->res = R_DIR;
    else if (strcmp(p, "/nonce") == 0) rt->res = R_NONCE;
    else if (strcmp(p, "/new-acct") == 0) rt->res = R_NEWACCT;
    else if (strcmp(p, "/new-order") == 0) rt->res = R_NEWORDER;
    else if (strcmp(p, "/new-authz") == 0 && ca->new_authz) rt->res = R_NEWAUTHZ;
    else if (strcmp(p, "/revoke") == 0) rt->res = R_REVOKE;
    else if (strcmp(p, "/key-change") == 0 && ca->key_change) rt->res = R_KEYCHANGE;
    else if (strncmp(p, "/renewal-info/", 14) == 0 && ca->renewal_info) {
        rt->res = R_ARI;
        rt->rest = p + 14;
    } else if (strncmp(p, "/acct/", 6) == 0 && parse_id(p + 6, "", &rt->id) == 0) rt->res = R_ACCT;
    else if (strncmp(p, "/order/", 7) == 0 && parse_id(p + 7, "", &rt->id) == 0) rt->res = R_ORDER;
    else if (strncmp(p, "/order/", 7) == 0 && parse_id(p + 7, "/finalize", &rt->id) == 0) rt->res = R_FINALIZE;
    else if (strncmp(p, "/authz/", 7) == 0 && parse_id(p + 7, "", &rt->id) == 0) rt->res = R_AUTHZ;
    else if (strncmp(p, "/chal/", 6) == 0 && parse_id(p + 6, "", &rt->id) == 0) rt->res = R_CHAL;
    else if (strncmp(p, "/cert/", 6) == 0 && parse_id(p + 6, "", &rt->id) == 0) rt->res = R_CERT;
    else if (strncmp(p, "/cert/", 6) == 0 && parse_id(p + 6, "/alt", &rt->id) == 0) {
        rt->res = R_CERT;
        rt->alt = 1;
    }
    return rt->res;
}

/* ------------------------------------------------------------------ JWS */

typedef struct fk_jws {
    json_t   *prot;
    json_t   *payload;       /* NULL for POST-as-GET */
    EVP_PKEY *key;
    int       key_owned;
    long      acct;          /* account index for kid requests, -1 for jwk */
    json_t   *jwk;           /* borrowed from prot */
} fk_jws;

static void jws_clear(fk_jws *j)
{
    json_decref(j->prot);
    json_decref(j->payload);
    if (j->key_owned)
        EVP_PKEY_free(j->key);
    memset(j, 0, sizeof(*j));
}

static long account_by_url(const at_fake_ca *ca, const char *url)
{
    for (size_t i = 0; i < ca->naccts; i++)
        if (url && strcmp(ca->accts[i].url, url) == 0)
            return (long)i;
    return -1;
}

static long account_by_thumb(const at_fake_ca *ca, const char *thumb)
{
    for (size_t i = 0; i < ca->naccts; i++)
        if (strcmp(ca->accts[i].thumb, thumb) == 0)
            return (long)i;
    return -1;
}

/* Verify a POST: returns 0 with j filled, or -1 having answered resp. */
static int verify_post(at_fake_ca *ca, int res, const at_http_req *req, at_http_resp *resp, fk_jws *j)
{
    at_buf payload = AT_BUF_INIT;
    at_error e = AT_ERROR_INIT;
    const char *alg, *url, *nonce, *kid;
    json_t *jwk;

    memset(j, 0, sizeof(*j));
    j->acct = -1;
    if (req->method != AT_HTTP_POST) {
        problem(ca, resp, 405, "malformed", "%s needs POST", res_names[res]);
        return -1;
    }
    if (!req->content_type || strcmp(req->content_type, "application/jose+json") != 0) {
        problem(ca, resp, 415, "malformed", "Content-Type must be application/jose+json");
        return -1;
    }
    if (!req->body || at_jws_parse(req->body, req->body_len, &j->prot, &payload, &e) != 0) {
        problem(ca, resp, 400, "malformed", "not a flattened JWS: %s", e.msg);
        goto fail;
    }
    json_decref(ca->stats[res].prot);
    ca->stats[res].prot = json_incref(j->prot);
    alg = at_json_str(j->prot, "alg");
    url = at_json_str(j->prot, "url");
    nonce = at_json_str(j->prot, "nonce");
    kid = at_json_str(j->prot, "kid");
    jwk = json_object_get(j->prot, "jwk");
    if (!alg || (strcmp(alg, "ES256") != 0 && strcmp(alg, "ES384") != 0 && strcmp(alg, "RS256") != 0)) {
        problem(ca, resp, 400, "badSignatureAlgorithm", "algorithm %s is not accepted", alg ? alg : "(none)");
        goto fail;
    }
    if (!url || strcmp(url, req->url) != 0) {
        problem(ca, resp, 401, "unauthorized", "the JWS url %s is not the request URL %s",
                url ? url : "(none)", req->url);
        goto fail;
    }
    if (!nonce_check(ca, nonce)) {
        problem(ca, resp, 400, "badNonce", "nonce %s is not acceptable", nonce ? nonce : "(none)");
        goto fail;
    }
    if ((kid && jwk) || (!kid && !jwk)) {
        problem(ca, resp, 400, "malformed", "the JWS must carry exactly one of kid and jwk");
        goto fail;
    }
    if (jwk) {
        if (res != R_NEWACCT && res != R_REVOKE) {
            problem(ca, resp, 400, "malformed", "%s must be signed with a kid", res_names[res]);
            goto fail;
        }
        j->jwk = jwk;
        j->key = at_jwk_to_pkey(jwk, &e);
        j->key_owned = 1;
        if (!j->key) {
            problem(ca, resp, 400, "badPublicKey", "%s", e.msg);
            goto fail;
        }
    } else {
        if (res == R_NEWACCT) {
            problem(ca, resp, 400, "malformed", "newAccount must be signed with a jwk");
            goto fail;
        }
        j->acct = account_by_url(ca, kid);
        if (j->acct < 0) {
            problem(ca, resp, 400, "accountDoesNotExist", "no account %s", kid);
            goto fail;
        }
        if (strcmp(ca->accts[j->acct].status, "valid") != 0) {
            problem(ca, resp, 401, "unauthorized", "account %s is %s", kid, ca->accts[j->acct].status);
            goto fail;
        }
        j->key = ca->accts[j->acct].key;
    }
    if (at_jws_verify(j->key, req->body, req->body_len) != 1) {
        problem(ca, resp, 400, "malformed", "JWS signature is invalid");
        goto fail;
    }
    if (payload.len) {
        j->payload = at_json_parse_object(payload.data, payload.len, "payload", &e);
        if (!j->payload) {
            problem(ca, resp, 400, "malformed", "payload is not a JSON object");
            goto fail;
        }
    }
    json_decref(ca->stats[res].payload);
    ca->stats[res].payload = j->payload ? json_incref(j->payload) : NULL;
    at_buf_free(&payload);
    at_error_clear(&e);
    return 0;
fail:
    at_buf_free(&payload);
    at_error_clear(&e);
    jws_clear(j);
    return -1;
}

/* ------------------------------------------------------------- accounts */

static json_t *account_json(const fk_account *a)
{
    return json_pack("{s:s, s:o, s:s}", "status", a->status,
                     "contact", a->contact ? json_incref(a->contact) : json_array(), "orders", a->url);
}

static int contacts_ok(at_fake_ca *ca, at_http_resp *resp, const json_t *contact)
{
    size_t i;
    json_t *c;
    if (!contact)
        return 1;
    if (!json_is_array(contact)) {
        problem(ca, resp, 400, "malformed", "contact must be an array");
        return 0;
    }
    json_array_foreach(contact, i, c) {
        const char *s = json_string_value(c);
        if (!s || strncmp(s, "mailto:", 7) != 0) {
            problem(ca, resp, 400, "unsupportedContact", "only mailto: contacts are accepted");
            return 0;
        }
        if (!strchr(s, '@')) {
            problem(ca, resp, 400, "invalidContact", "%s is not an email address", s);
            return 0;
        }
    }
    return 1;
}

static int b64_json(const char *s, json_t **out)
{
    at_buf b = AT_BUF_INIT;
    *out = NULL;
    if (!s || at_b64url_decode(&b, s, strlen(s)) != 0) {
        at_buf_free(&b);
        return -1;
    }
    *out = at_json_parse_object(b.data ? b.data : "", b.len, "eab", NULL);
    at_buf_free(&b);
    return *out ? 0 : -1;
}

/* RFC 8555 §7.3.4, verified here by hand. */
static int eab_ok(at_fake_ca *ca, at_http_resp *resp, const json_t *eab, const json_t *jwk, const char *url)
{
    const char *ps = at_json_str(eab, "protected"), *pl = at_json_str(eab, "payload");
    const char *sig = at_json_str(eab, "signature"), *alg;
    json_t *prot = NULL, *payload = NULL;
    at_buf key = AT_BUF_INIT, sigb = AT_BUF_INIT, in = AT_BUF_INIT;
    unsigned char mac[64];
    size_t maclen = 0;
    const char *md;
    int ok = 0;

    if (!json_is_object(eab) || !ps || !pl || !sig || b64_json(ps, &prot) != 0 || b64_json(pl, &payload) != 0) {
        problem(ca, resp, 400, "malformed", "externalAccountBinding is not a flattened JWS");
        goto out;
    }
    alg = at_json_str(prot, "alg");
    md = alg && strcmp(alg, "HS256") == 0 ? "SHA256" : alg && strcmp(alg, "HS384") == 0 ? "SHA384" :
         alg && strcmp(alg, "HS512") == 0 ? "SHA512" : NULL;
    if (!md || json_object_get(prot, "nonce") || json_object_get(prot, "jwk")) {
        problem(ca, resp, 400, "malformed", "EAB header must be an HMAC alg without nonce/jwk");
        goto out;
    }
    if (!at_json_str(prot, "kid") || strcmp(at_json_str(prot, "kid"), ca->eab_kid) != 0) {
        problem(ca, resp, 401, "unauthorized", "unknown EAB key id");
        goto out;
    }
    if (!at_json_str(prot, "url") || strcmp(at_json_str(prot, "url"), url) != 0) {
        problem(ca, resp, 400, "malformed", "EAB url is not the newAccount URL");
        goto out;
    }
    if (!json_equal(payload, (json_t *)jwk)) {
        problem(ca, resp, 400, "malformed", "EAB payload is not the account JWK");
        goto out;
    }
    at_b64url_decode(&key, ca->eab_key, strlen(ca->eab_key));
    at_b64url_decode(&sigb, sig, strlen(sig));
    at_buf_printf(&in, "%s.%s", ps, pl);
    if (!EVP_Q_mac(NULL, "HMAC", NULL, md, NULL, key.data, key.len, (unsigned char *)in.data, in.len,
                   mac, sizeof(mac), &maclen) ||
        maclen != sigb.len || CRYPTO_memcmp(mac, sigb.data, maclen) != 0) {
        problem(ca, resp, 401, "unauthorized", "EAB MAC does not verify");
        goto out;
    }
    ok = 1;
out:
    json_decref(prot);
    json_decref(payload);
    at_buf_free(&key);
    at_buf_free(&sigb);
    at_buf_free(&in);
    return ok;
}

static void h_new_account(at_fake_ca *ca, const at_http_req *req, at_http_resp *resp, fk_jws *j)
{
    char thumb[64];
    long idx;
    size_t i;
    fk_account *a;
    const json_t *p = j->payload;

    if (at_jwk_thumbprint(j->key, thumb, sizeof(thumb), NULL) != 0) {
        problem(ca, resp, 400, "badPublicKey", "cannot use this key");
        return;
    }
    idx = account_by_thumb(ca, thumb);
    if (at_json_bool(p, "onlyReturnExisting") || idx >= 0) {
        if (idx < 0) {
            problem(ca, resp, 400, "accountDoesNotExist", "no account for this key");
            return;
        }
        if (strcmp(ca->accts[idx].status, "valid") != 0) {
            problem(ca, resp, 401, "unauthorized", "the account for this key is %s", ca->accts[idx].status);
            return;
        }
        reply_json(resp, 200, account_json(&ca->accts[idx]));
        set_location(resp, ca->accts[idx].url);
        return;
    }
    if (ca->terms && !at_json_bool(p, "termsOfServiceAgreed")) {
        problem(ca, resp, 403, "userActionRequired", "you must agree to the terms of service");
        add_link(resp, ca->terms, "terms-of-service");
        return;
    }
    if (!contacts_ok(ca, resp, json_object_get(p, "contact")))
        return;
    if (ca->eab_kid) {
        const json_t *eab = json_object_get(p, "externalAccountBinding");
        if (!eab) {
            problem(ca, resp, 400, "externalAccountRequired", "this CA requires external account binding");
            return;
        }
        if (!eab_ok(ca, resp, eab, j->jwk, req->url))
            return;
    }
    i = PUSH(ca, accts);
    a = &ca->accts[i];
    a->url = xprintf("%s/acct/%zu", ca->base, i);
    a->key = j->key;
    j->key_owned = 0;
    snprintf(a->thumb, sizeof(a->thumb), "%s", thumb);
    a->contact = json_object_get(p, "contact") ? json_deep_copy(json_object_get(p, "contact")) : NULL;
    snprintf(a->status, sizeof(a->status), "valid");
    reply_json(resp, 201, account_json(a));
    set_location(resp, a->url);
}

static void h_account(at_fake_ca *ca, at_http_resp *resp, fk_jws *j, size_t id)
{
    fk_account *a;
    const json_t *p = j->payload;
    const char *st;
    if (id >= ca->naccts || (size_t)j->acct != id) {
        problem(ca, resp, 403, "unauthorized", "not your account");
        return;
    }
    a = &ca->accts[id];
    if (p && json_object_get(p, "contact")) {
        if (!contacts_ok(ca, resp, json_object_get(p, "contact")))
            return;
        json_decref(a->contact);
        a->contact = json_deep_copy(json_object_get(p, "contact"));
    }
    st = p ? at_json_str(p, "status") : NULL;
    if (st) {
        if (strcmp(st, "deactivated") != 0) {
            problem(ca, resp, 400, "malformed", "an account can only be deactivated");
            return;
        }
        snprintf(a->status, sizeof(a->status), "deactivated");
    }
    reply_json(resp, 200, account_json(a));
}

static void h_key_change(at_fake_ca *ca, const at_http_req *req, at_http_resp *resp, fk_jws *j)
{
    char *inner = j->payload ? at_json_compact(j->payload) : NULL;
    json_t *prot = NULL, *ip = NULL;
    at_buf payload = AT_BUF_INIT;
    EVP_PKEY *nk = NULL, *old = NULL;
    char thumb[64], oldthumb[64];
    const char *acct;
    long other;
    fk_account *a = &ca->accts[j->acct];

    if (!inner || at_jws_parse(inner, strlen(inner), &prot, &payload, NULL) != 0) {
        problem(ca, resp, 400, "malformed", "the keyChange payload is not a JWS");
        goto out;
    }
    if (json_object_get(prot, "nonce") || json_object_get(prot, "kid") || !json_object_get(prot, "jwk")) {
        problem(ca, resp, 400, "malformed", "the inner JWS needs jwk and no nonce or kid");
        goto out;
    }
    if (!at_json_str(prot, "url") || strcmp(at_json_str(prot, "url"), req->url) != 0) {
        problem(ca, resp, 400, "malformed", "the inner JWS url differs from the outer one");
        goto out;
    }
    nk = at_jwk_to_pkey(json_object_get(prot, "jwk"), NULL);
    if (!nk || at_jws_verify(nk, inner, strlen(inner)) != 1) {
        problem(ca, resp, 400, "malformed", "the inner JWS signature is invalid");
        goto out;
    }
    ip = at_json_parse_object(payload.data ? payload.data : "", payload.len, "inner", NULL);
    acct = ip ? at_json_str(ip, "account") : NULL;
    if (!acct || strcmp(acct, a->url) != 0) {
        problem(ca, resp, 400, "malformed", "the inner payload names another account");
        goto out;
    }
    old = json_object_get(ip, "oldKey") ? at_jwk_to_pkey(json_object_get(ip, "oldKey"), NULL) : NULL;
    if (!old || at_jwk_thumbprint(old, oldthumb, sizeof(oldthumb), NULL) != 0 ||
        strcmp(oldthumb, a->thumb) != 0) {
        problem(ca, resp, 400, "malformed", "oldKey is not the account's current key");
        goto out;
    }
    at_jwk_thumbprint(nk, thumb, sizeof(thumb), NULL);
    other = account_by_thumb(ca, thumb);
    if (other >= 0) {
        problem(ca, resp, 409, "malformed", "the new key is already in use");
        set_location(resp, ca->accts[other].url);
        goto out;
    }
    EVP_PKEY_free(a->key);
    a->key = nk;
    nk = NULL;
    snprintf(a->thumb, sizeof(a->thumb), "%s", thumb);
    reply_json(resp, 200, account_json(a));
out:
    free(inner);
    json_decref(prot);
    json_decref(ip);
    at_buf_free(&payload);
    EVP_PKEY_free(nk);
    EVP_PKEY_free(old);
}

/* ------------------------------------------------------- authorizations */

static int preauthorized(const at_fake_ca *ca, const char *value, int wildcard)
{
    char name[300];
    snprintf(name, sizeof(name), "%s%s", wildcard ? "*." : "", value);
    for (size_t i = 0; i < ca->npreauth; i++)
        if (strcasecmp(ca->preauth[i], name) == 0)
            return 1;
    return 0;
}

static void add_chal(at_fake_ca *ca, size_t az, const char *type)
{
    size_t i = PUSH(ca, chals);
    fk_chal *c = &ca->chals[i];
    unsigned char rnd[32];
    at_buf tok = AT_BUF_INIT;
    c->url = xprintf("%s/chal/%zu", ca->base, i);
    snprintf(c->type, sizeof(c->type), "%s", type);
    RAND_bytes(rnd, sizeof(rnd));
    at_b64url_encode(&tok, rnd, sizeof(rnd));
    snprintf(c->token, sizeof(c->token), "%s", at_buf_str(&tok));
    at_buf_free(&tok);
    snprintf(c->status, sizeof(c->status), "pending");
    c->authz = az;
    ca->authzs[az].chal[ca->authzs[az].nchal++] = i;
}

/* An authorization for (type, value); a valid one of the account is reused. */
static size_t get_authz(at_fake_ca *ca, size_t account, const char *type, const char *value, int wildcard)
{
    size_t i;
    fk_authz *a;
    for (i = 0; i < ca->nauthzs; i++) {
        a = &ca->authzs[i];
        if (a->account == account && strcmp(a->type, type) == 0 && strcasecmp(a->value, value) == 0 &&
            a->wildcard == wildcard && strcmp(a->status, "valid") == 0)
            return i;
    }
    i = PUSH(ca, authzs);
    a = &ca->authzs[i];
    a->url = xprintf("%s/authz/%zu", ca->base, i);
    a->account = account;
    snprintf(a->type, sizeof(a->type), "%s", type);
    snprintf(a->value, sizeof(a->value), "%s", value);
    a->wildcard = wildcard;
    snprintf(a->status, sizeof(a->status), preauthorized(ca, value, wildcard) ? "valid" : "pending");
    if (wildcard) {
        add_chal(ca, i, "dns-01");
    } else {
        if (ca->offer_http)
            add_chal(ca, i, "http-01");
        if (ca->offer_alpn)
            add_chal(ca, i, "tls-alpn-01");
        if (ca->offer_dns && strcmp(type, "dns") == 0)
            add_chal(ca, i, "dns-01");
    }
    if (strcmp(a->status, "valid") == 0 && a->nchal)
        snprintf(ca->chals[a->chal[0]].status, sizeof(ca->chals[0].status), "valid");
    return i;
}

static json_t *chal_json(const fk_chal *c)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "type", c->type, "url", c->url, "token", c->token,
                          "status", c->status);
    if (c->error)
        json_object_set(j, "error", c->error);
    return j;
}

static json_t *authz_json(const at_fake_ca *ca, const fk_authz *a)
{
    json_t *chals = json_array();
    char exp[AT_TIME_BUFSIZE];
    json_t *j;
    for (size_t i = 0; i < a->nchal; i++)
        json_array_append_new(chals, chal_json(&ca->chals[a->chal[i]]));
    at_time_format(ca_now(ca) + 7 * 86400, exp, sizeof(exp));
    j = json_pack("{s:s, s:s, s:{s:s, s:s}, s:o}", "status", a->status, "expires", exp,
                  "identifier", "type", a->type, "value", a->value, "challenges", chals);
    if (a->wildcard)
        json_object_set_new(j, "wildcard", json_true());
    return j;
}

/* Apply a decided validation outcome to the challenge and its authorization. */
static void settle(at_fake_ca *ca, fk_chal *c)
{
    fk_authz *a = &ca->authzs[c->authz];
    if (c->outcome_ok) {
        snprintf(c->status, sizeof(c->status), "valid");
        snprintf(a->status, sizeof(a->status), "valid");
    } else {
        snprintf(c->status, sizeof(c->status), "invalid");
        snprintf(a->status, sizeof(a->status), "invalid");
        json_decref(c->error);
        c->error = json_incref(c->outcome_error);
    }
}

static void authz_refresh(at_fake_ca *ca, fk_authz *a)
{
    if (strcmp(a->status, "pending") != 0 || a->polls_left <= 0)
        return;
    if (--a->polls_left == 0) {
        for (size_t i = 0; i < a->nchal; i++)
            if (strcmp(ca->chals[a->chal[i]].status, "processing") == 0)
                settle(ca, &ca->chals[a->chal[i]]);
    }
}

static void h_authz(at_fake_ca *ca, at_http_resp *resp, fk_jws *j, size_t id)
{
    fk_authz *a;
    if (id >= ca->nauthzs || ca->authzs[id].account != (size_t)j->acct) {
        problem(ca, resp, 404, "malformed", "no such authorization");
        return;
    }
    a = &ca->authzs[id];
    if (j->payload) {
        problem(ca, resp, 400, "malformed", "authorizations are read with POST-as-GET");
        return;
    }
    authz_refresh(ca, a);
    reply_json(resp, 200, authz_json(ca, a));
    if (strcmp(a->status, "pending") == 0 && ca->poll_ra >= 0)
        set_retry_after(resp, ca->poll_ra);
}

static void h_new_authz(at_fake_ca *ca, at_http_resp *resp, fk_jws *j)
{
    const json_t *id = json_object_get(j->payload, "identifier");
    const char *type = at_json_str(id, "type"), *value = at_json_str(id, "value");
    size_t i;
    if (!type || !value || (strcmp(type, "dns") != 0 && strcmp(type, "ip") != 0)) {
        problem(ca, resp, 400, "malformed", "newAuthz needs an identifier");
        return;
    }
    if (strncmp(value, "*.", 2) == 0) {
        problem(ca, resp, 400, "rejectedIdentifier", "wildcards cannot be pre-authorized");
        return;
    }
    i = get_authz(ca, (size_t)j->acct, type, value, 0);
    reply_json(resp, 201, authz_json(ca, &ca->authzs[i]));
    set_location(resp, ca->authzs[i].url);
}

/* ------------------------------------------------------------ validation */

static const fk_pub *find_pub(const at_fake_ca *ca, at_challenge_type t, const char *key)
{
    for (size_t i = 0; i < ca->npubs; i++) {
        const fk_pub *p = &ca->pubs[i];
        if (p->type != t)
            continue;
        if (t == AT_CHAL_HTTP01 && p->token && strcmp(p->token, key) == 0)
            return p;
        if (t == AT_CHAL_DNS01 && p->dns_name && strcasecmp(p->dns_name, key) == 0)
            return p;
        if (t == AT_CHAL_TLSALPN01 && p->identifier && strcasecmp(p->identifier, key) == 0)
            return p;
    }
    return NULL;
}

int at_fake_ca_publish(at_fake_ca *ca, const at_challenge_info *c)
{
    size_t i;
    fk_pub *p;
    if (!c || !c->identifier)
        return -1;
    i = PUSH(ca, pubs);
    p = &ca->pubs[i];
    p->type = c->type;
    p->identifier = xstrdup(c->identifier);
    p->token = xstrdup(c->token);
    p->ka = xstrdup(c->key_authorization);
    p->dns_name = xstrdup(c->dns_name);
    p->dns_value = xstrdup(c->dns_value);
    p->cert_pem = xstrdup(c->alpn_cert_pem);
    p->key_pem = xstrdup(c->alpn_key_pem);
    return 0;
}

void at_fake_ca_withdraw(at_fake_ca *ca, const at_challenge_info *c)
{
    for (size_t i = 0; c && i < ca->npubs; i++) {
        fk_pub *p = &ca->pubs[i];
        if (p->type == c->type && p->identifier && c->identifier &&
            strcmp(p->identifier, c->identifier) == 0 &&
            ((!p->token && !c->token) || (p->token && c->token && strcmp(p->token, c->token) == 0))) {
            pub_clear(p);
            ca->pubs[i] = ca->pubs[--ca->npubs];
            return;
        }
    }
}

size_t at_fake_ca_published(const at_fake_ca *ca)
{
    return ca->npubs;
}

/* RFC 8737 §3: SAN = the identifier only; critical acmeIdentifier holding
 * the DER OCTET STRING of SHA-256(key authorization); the key matches. */
static int alpn_cert_ok(const fk_pub *p, const at_fake_ca_chal *ch, const char **detail)
{
    BIO *b = BIO_new_mem_buf(p->cert_pem, -1), *kb = BIO_new_mem_buf(p->key_pem ? p->key_pem : "", -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
    GENERAL_NAMES *gens = NULL;
    unsigned char want[34], digest[32];
    unsigned int dl = 0;
    int ok = 0, pos;

    *detail = "tls-alpn-01 certificate is malformed";
    if (!x || !oid)
        goto out;
    pos = X509_get_ext_by_OBJ(x, oid, -1);
    if (pos < 0) {
        *detail = "tls-alpn-01 certificate lacks the acmeIdentifier extension";
        goto out;
    }
    {
        X509_EXTENSION *ext = X509_get_ext(x, pos);
        const ASN1_OCTET_STRING *d = X509_EXTENSION_get_data(ext);
        EVP_Digest(ch->key_authorization, strlen(ch->key_authorization), digest, &dl, EVP_sha256(), NULL);
        want[0] = 0x04;
        want[1] = 0x20;
        memcpy(want + 2, digest, 32);
        if (!X509_EXTENSION_get_critical(ext)) {
            *detail = "acmeIdentifier is not critical";
            goto out;
        }
        if (ASN1_STRING_length(d) != 34 || memcmp(ASN1_STRING_get0_data(d), want, 34) != 0) {
            *detail = "acmeIdentifier does not hold SHA-256 of the key authorization";
            goto out;
        }
    }
    gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (!gens || sk_GENERAL_NAME_num(gens) != 1) {
        *detail = "tls-alpn-01 certificate must have exactly one SAN";
        goto out;
    }
    {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, 0);
        char ip[INET6_ADDRSTRLEN] = "";
        if (g->type == GEN_DNS) {
            if (strcasecmp((const char *)ASN1_STRING_get0_data(g->d.dNSName), ch->identifier) != 0) {
                *detail = "tls-alpn-01 certificate names another host";
                goto out;
            }
        } else if (g->type == GEN_IPADD) {
            int l = ASN1_STRING_length(g->d.iPAddress);
            inet_ntop(l == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(g->d.iPAddress), ip, sizeof(ip));
            if (strcmp(ip, ch->identifier) != 0) {
                *detail = "tls-alpn-01 certificate names another address";
                goto out;
            }
        } else {
            goto out;
        }
    }
    if (!k || X509_check_private_key(x, k) != 1) {
        *detail = "tls-alpn-01 key does not match its certificate";
        goto out;
    }
    ok = 1;
    *detail = NULL;
out:
    GENERAL_NAMES_free(gens);
    ASN1_OBJECT_free(oid);
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(b);
    BIO_free(kb);
    return ok;
}

int at_fake_ca_validate_published(void *ud, at_fake_ca *ca, const at_fake_ca_chal *ch, const char **detail)
{
    const fk_pub *p;
    (void)ud;
    if (strcmp(ch->type, "http-01") == 0) {
        p = find_pub(ca, AT_CHAL_HTTP01, ch->token);
        if (!p) {
            *detail = "nothing published for the http-01 token";
            return 0;
        }
        if (!p->ka || strcmp(p->ka, ch->key_authorization) != 0) {
            *detail = "the http-01 answer is not the key authorization";
            return 0;
        }
        return 1;
    }
    if (strcmp(ch->type, "dns-01") == 0) {
        char name[300];
        snprintf(name, sizeof(name), "_acme-challenge.%s", ch->identifier);
        p = find_pub(ca, AT_CHAL_DNS01, name);
        if (!p) {
            *detail = "no TXT record published at _acme-challenge";
            return 0;
        }
        if (!p->dns_value || strcmp(p->dns_value, ch->dns_value) != 0) {
            *detail = "the TXT record has the wrong value";
            return 0;
        }
        return 1;
    }
    if (strcmp(ch->type, "tls-alpn-01") == 0) {
        p = find_pub(ca, AT_CHAL_TLSALPN01, ch->identifier);
        if (!p || !p->cert_pem) {
            *detail = "no tls-alpn-01 certificate published";
            return 0;
        }
        return alpn_cert_ok(p, ch, detail);
    }
    *detail = "unknown challenge type";
    return 0;
}

static void h_challenge(at_fake_ca *ca, at_http_resp *resp, fk_jws *j, size_t id)
{
    fk_chal *c;
    fk_authz *a;
    at_fake_ca_chal info;
    char *ka = NULL, *dv = NULL;
    const char *detail = NULL;
    int ok;

    if (id >= ca->nchals || ca->authzs[ca->chals[id].authz].account != (size_t)j->acct) {
        problem(ca, resp, 404, "malformed", "no such challenge");
        return;
    }
    c = &ca->chals[id];
    a = &ca->authzs[c->authz];
    if (j->payload && json_object_size(j->payload) != 0) {
        problem(ca, resp, 400, "malformed", "a challenge is answered with {}");
        return;
    }
    if (j->payload && strcmp(c->status, "pending") == 0 && strcmp(a->status, "pending") == 0) {
        ka = at_key_authorization(c->token, ca->accts[j->acct].key, NULL);
        dv = ka ? at_dns01_txt_value(ka, NULL) : NULL;
        memset(&info, 0, sizeof(info));
        info.type = c->type;
        info.identifier = a->value;
        info.wildcard = a->wildcard;
        info.token = c->token;
        info.key_authorization = ka;
        info.dns_value = dv;
        ok = ka && dv && ca->validator(ca->vud, ca, &info, &detail);
        c->outcome_ok = ok;
        json_decref(c->outcome_error);
        c->outcome_error = ok ? NULL : problem_doc("incorrectResponse", detail ? detail : "wrong answer", 403);
        for (size_t i = 0; i < ca->nchalfails; i++) {
            const fk_chalfail *f = &ca->chalfails[i];
            char name[300];
            snprintf(name, sizeof(name), "%s%s", a->wildcard ? "*." : "", a->value);
            if (!f->identifier || strcasecmp(f->identifier, name) == 0 || strcasecmp(f->identifier, a->value) == 0) {
                c->outcome_ok = 0;
                json_decref(c->outcome_error);
                c->outcome_error = problem_doc(f->type, f->detail, 403);
                json_object_set_new(c->outcome_error, "subproblems",
                                    json_pack("[{s:s, s:s, s:{s:s, s:s}}]", "type", "urn:ietf:params:acme:error:dns",
                                              "detail", f->detail, "identifier", "type", a->type,
                                              "value", a->value));
                break;
            }
        }
        if (!c->outcome_ok)
            set_error(ca, "validation of %s (%s) failed: %s", a->value, c->type, detail ? detail : "knob");
        free(ka);
        free(dv);
        if (ca->pending_polls > 0) {
            snprintf(c->status, sizeof(c->status), "processing");
            a->polls_left = ca->pending_polls;
        } else {
            settle(ca, c);
        }
    }
    reply_json(resp, 200, chal_json(c));
    add_link(resp, a->url, "up");
}

/* --------------------------------------------------------------- orders */

static json_t *order_json(const at_fake_ca *ca, const fk_order *o)
{
    json_t *az = json_array(), *j;
    char exp[AT_TIME_BUFSIZE];
    char *fin = xprintf("%s/finalize", o->url);
    for (size_t i = 0; i < o->nauthz; i++)
        json_array_append_new(az, json_string(ca->authzs[o->authz[i]].url));
    at_time_format(ca_now(ca) + 7 * 86400, exp, sizeof(exp));
    j = json_pack("{s:s, s:s, s:O, s:o, s:s}", "status", o->status, "expires", exp,
                  "identifiers", o->identifiers, "authorizations", az, "finalize", fin);
    free(fin);
    if (o->cert >= 0)
        json_object_set_new(j, "certificate", json_string(ca->certs[o->cert].url));
    if (o->profile)
        json_object_set_new(j, "profile", json_string(o->profile));
    if (o->replaces)
        json_object_set_new(j, "replaces", json_string(o->replaces));
    if (o->error)
        json_object_set(j, "error", o->error);
    return j;
}

static void order_refresh(at_fake_ca *ca, fk_order *o);

/* Canonical text of an identifier value (IPv6 per RFC 5952). */
static void canon_ip(const char *in, char *out, size_t outsz)
{
    unsigned char bin[16];
    if (inet_pton(AF_INET6, in, bin) == 1 && inet_ntop(AF_INET6, bin, out, (socklen_t)outsz))
        return;
    snprintf(out, outsz, "%s", in);
}

static long cert_by_ari(const at_fake_ca *ca, const char *id)
{
    for (size_t i = 0; i < ca->ncerts; i++)
        if (id && strcmp(ca->certs[i].ari_id, id) == 0)
            return (long)i;
    return -1;
}

static void h_new_order(at_fake_ca *ca, at_http_resp *resp, fk_jws *j)
{
    const json_t *ids = json_object_get(j->payload, "identifiers"), *id;
    const char *profile = at_json_str(j->payload, "profile");
    const char *replaces = at_json_str(j->payload, "replaces");
    size_t i, k, n = json_array_size(ids);
    fk_order *o;

    if (!json_is_array(ids) || n == 0 || n > 100) {
        problem(ca, resp, 400, "malformed", "an order needs 1..100 identifiers");
        return;
    }
    json_array_foreach(ids, i, id) {
        const char *t = at_json_str(id, "type"), *v = at_json_str(id, "value");
        char c[INET6_ADDRSTRLEN + 1];
        if (!t || !v || (strcmp(t, "dns") != 0 && strcmp(t, "ip") != 0)) {
            problem(ca, resp, 400, "unsupportedIdentifier", "identifier %zu is not dns or ip", i);
            return;
        }
        if (strcmp(t, "ip") == 0) {
            canon_ip(v, c, sizeof(c));
            if (strcmp(c, v) != 0 || (!strchr(v, ':') && !strchr(v, '.'))) {
                problem(ca, resp, 400, "malformed", "IP identifier %s is not in canonical form", v);
                return;
            }
        } else if (strchr(v, ':')) {
            problem(ca, resp, 400, "rejectedIdentifier", "%s is not a DNS name", v);
            return;
        }
    }
    if (profile && ca->profiles && !json_object_get(ca->profiles, profile)) {
        problem(ca, resp, 400, "invalidProfile", "unknown profile %s", profile);
        return;
    }
    if (profile && !ca->profiles) {
        problem(ca, resp, 400, "malformed", "this CA has no profiles");
        return;
    }
    if (replaces) {
        long c = cert_by_ari(ca, replaces);
        if (ca->refuse_replaces || (c >= 0 && ca->certs[c].replaced)) {
            problem(ca, resp, 409, "alreadyReplaced", "certificate %s was already replaced", replaces);
            return;
        }
        if (c < 0 || ca->certs[c].account != (size_t)j->acct) {
            problem(ca, resp, 400, "malformed", "replaces names an unknown certificate");
            return;
        }
        ca->certs[c].replaced = 1;
    }
    i = PUSH(ca, orders);
    o = &ca->orders[i];
    o->url = xprintf("%s/order/%zu", ca->base, i);
    o->account = (size_t)j->acct;
    o->identifiers = json_deep_copy(ids);
    o->cert = -1;
    o->profile = xstrdup(profile);
    o->replaces = xstrdup(replaces);
    o->authz = calloc(n, sizeof(*o->authz));
    if (!o->authz)
        abort();
    snprintf(o->status, sizeof(o->status), "pending");
    for (k = 0; k < n; k++) {
        const json_t *idk = json_array_get(ids, k);
        const char *v = at_json_str(idk, "value");
        int wc = strncmp(v, "*.", 2) == 0;
        o->authz[o->nauthz++] = get_authz(ca, o->account, at_json_str(idk, "type"), wc ? v + 2 : v, wc);
    }
    order_refresh(ca, o);
    reply_json(resp, 201, order_json(ca, o));
    set_location(resp, o->url);
}

/* The SAN entries of a CSR as identifier strings. */
static int csr_names(X509_REQ *req, char ***names, size_t *n)
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    GENERAL_NAMES *gens = NULL;
    *names = NULL;
    *n = 0;
    for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name)
            gens = X509V3_EXT_d2i(e);
    }
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    if (!gens)
        return -1;
    *names = calloc((size_t)sk_GENERAL_NAME_num(gens) + 1, sizeof(char *));
    for (int i = 0; *names && i < sk_GENERAL_NAME_num(gens); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        char buf[INET6_ADDRSTRLEN] = "";
        if (g->type == GEN_DNS) {
            (*names)[(*n)++] = xstrdup((const char *)ASN1_STRING_get0_data(g->d.dNSName));
        } else if (g->type == GEN_IPADD) {
            int l = ASN1_STRING_length(g->d.iPAddress);
            inet_ntop(l == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(g->d.iPAddress), buf, sizeof(buf));
            (*names)[(*n)++] = xstrdup(buf);
        } else {
            (*names)[(*n)++] = xstrdup("(other)");
        }
    }
    GENERAL_NAMES_free(gens);
    return 0;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static void issue(at_fake_ca *ca, fk_order *o)
{
    const unsigned char *p = o->csr;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)o->csr_len);
    EVP_PKEY *pub = req ? X509_REQ_get0_pubkey(req) : NULL;
    STACK_OF(X509_EXTENSION) *exts = req ? X509_REQ_get_extensions(req) : NULL;
    X509_EXTENSION *san = NULL;
    time_t now = ca_now(ca);
    size_t i;
    fk_cert *c;
    X509 *leaf;

    for (int k = 0; k < sk_X509_EXTENSION_num(exts); k++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, k);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name)
            san = e;
    }
    leaf = pub ? make_cert(pub, NULL, ca->root, ca->root_key, 0, now - 3600, now + 90 * 86400L, san) : NULL;
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    if (!leaf) {
        snprintf(o->status, sizeof(o->status), "invalid");
        o->error = problem_doc("serverInternal", "issuance failed", 500);
        return;
    }
    i = PUSH(ca, certs);
    c = &ca->certs[i];
    c->url = xprintf("%s/cert/%zu", ca->base, i);
    c->leaf = leaf;
    c->account = o->account;
    {
        char *lp = x509_pem(leaf);
        c->pem = xprintf("%s%s", lp, ca->root_pem);
        c->alt_pem = xprintf("%s%s", lp, ca->cross_pem);
        free(lp);
    }
    ari_id_of(leaf, c->ari_id, sizeof(c->ari_id));
    o->cert = (long)i;
    snprintf(o->status, sizeof(o->status), "valid");
}

static void order_refresh(at_fake_ca *ca, fk_order *o)
{
    if (strcmp(o->status, "pending") == 0) {
        int all = 1;
        for (size_t i = 0; i < o->nauthz; i++) {
            fk_authz *a = &ca->authzs[o->authz[i]];
            if (strcmp(a->status, "invalid") == 0) {
                snprintf(o->status, sizeof(o->status), "invalid");
                json_decref(o->error);
                o->error = problem_doc("unauthorized", "an authorization failed", 403);
                return;
            }
            if (strcmp(a->status, "valid") != 0)
                all = 0;
        }
        if (all)
            snprintf(o->status, sizeof(o->status), "ready");
    } else if (strcmp(o->status, "processing") == 0 && o->polls_left > 0) {
        if (--o->polls_left == 0)
            issue(ca, o);
    }
}

static void h_order(at_fake_ca *ca, at_http_resp *resp, fk_jws *j, size_t id)
{
    fk_order *o;
    if (id >= ca->norders || ca->orders[id].forgotten || ca->orders[id].account != (size_t)j->acct) {
        problem(ca, resp, 404, "malformed", "no such order");
        return;
    }
    o = &ca->orders[id];
    if (j->payload) {
        problem(ca, resp, 400, "malformed", "orders are read with POST-as-GET");
        return;
    }
    order_refresh(ca, o);
    reply_json(resp, 200, order_json(ca, o));
    if (strcmp(o->status, "processing") == 0 && ca->poll_ra >= 0)
        set_retry_after(resp, ca->poll_ra);
}

static void h_finalize(at_fake_ca *ca, at_http_resp *resp, fk_jws *j, size_t id)
{
    fk_order *o;
    const char *csr = at_json_str(j->payload, "csr");
    at_buf der = AT_BUF_INIT;
    const unsigned char *p;
    X509_REQ *req = NULL;
    EVP_PKEY *pub;
    char **names = NULL;
    size_t nnames = 0, n;
    char thumb[64];

    if (id >= ca->norders || ca->orders[id].forgotten || ca->orders[id].account != (size_t)j->acct) {
        problem(ca, resp, 404, "malformed", "no such order");
        return;
    }
    o = &ca->orders[id];
    order_refresh(ca, o);
    if (strcmp(o->status, "ready") != 0) {
        problem(ca, resp, 403, "orderNotReady", "the order is %s", o->status);
        return;
    }
    if (!csr || at_b64url_decode(&der, csr, strlen(csr)) != 0 || !der.len) {
        problem(ca, resp, 400, "badCSR", "csr is not base64url DER");
        goto out;
    }
    p = (const unsigned char *)der.data;
    req = d2i_X509_REQ(NULL, &p, (long)der.len);
    if (!req || p != (const unsigned char *)der.data + der.len || X509_REQ_verify(req, X509_REQ_get0_pubkey(req)) != 1) {
        problem(ca, resp, 400, "badCSR", "the CSR does not parse or verify");
        goto out;
    }
    pub = X509_REQ_get0_pubkey(req);
    if (at_jwk_thumbprint(pub, thumb, sizeof(thumb), NULL) == 0 && strcmp(thumb, ca->accts[o->account].thumb) == 0) {
        problem(ca, resp, 400, "badCSR", "the certificate key must not be the account key");
        goto out;
    }
    if (csr_names(req, &names, &nnames) != 0) {
        problem(ca, resp, 400, "badCSR", "the CSR has no subjectAltName");
        goto out;
    }
    n = json_array_size(o->identifiers);
    if (nnames != n) {
        problem(ca, resp, 400, "badCSR", "the CSR has %zu names, the order %zu", nnames, n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const char *v = at_json_str(json_array_get(o->identifiers, i), "value");
        int found = 0;
        for (size_t k = 0; k < nnames && !found; k++)
            found = strcasecmp(names[k], v) == 0;
        if (!found) {
            problem(ca, resp, 400, "badCSR", "the CSR lacks %s", v);
            goto out;
        }
    }
    free(o->csr);
    o->csr = malloc(der.len);
    if (!o->csr)
        abort();
    memcpy(o->csr, der.data, der.len);
    o->csr_len = der.len;
    if (ca->processing_polls > 0) {
        snprintf(o->status, sizeof(o->status), "processing");
        o->polls_left = ca->processing_polls;
    } else {
        issue(ca, o);
    }
    reply_json(resp, 200, order_json(ca, o));
    if (strcmp(o->status, "processing") == 0 && ca->poll_ra >= 0)
        set_retry_after(resp, ca->poll_ra);
out:
    free_names(names, nnames);
    X509_REQ_free(req);
    at_buf_free(&der);
}

static void h_cert(at_fake_ca *ca, const at_http_req *req, at_http_resp *resp, fk_jws *j, size_t id, int alt)
{
    fk_cert *c;
    char *other;
    if (!req->accept || strcmp(req->accept, "application/pem-certificate-chain") != 0) {
        problem(ca, resp, 406, "malformed", "ask for application/pem-certificate-chain");
        return;
    }
    if (id >= ca->ncerts || ca->certs[id].account != (size_t)j->acct) {
        problem(ca, resp, 404, "malformed", "no such certificate");
        return;
    }
    if (j->payload) {
        problem(ca, resp, 400, "malformed", "certificates are fetched with POST-as-GET");
        return;
    }
    c = &ca->certs[id];
    resp->status = 200;
    body_take(resp, xstrdup(alt ? c->alt_pem : c->pem), "application/pem-certificate-chain");
    if (alt) {
        add_link(resp, c->url, "alternate");
    } else if (ca->alt_chain) {
        other = xprintf("%s/alt", c->url);
        add_link(resp, other, "alternate");
        free(other);
    }
}

static void h_revoke(at_fake_ca *ca, at_http_resp *resp, fk_jws *j)
{
    const char *b64 = at_json_str(j->payload, "certificate");
    json_t *rj = json_object_get(j->payload, "reason");
    at_buf der = AT_BUF_INIT;
    const unsigned char *p;
    X509 *x = NULL;
    long idx = -1;
    int reason = json_is_integer(rj) ? (int)json_integer_value(rj) : 0;

    if (!b64 || at_b64url_decode(&der, b64, strlen(b64)) != 0) {
        problem(ca, resp, 400, "malformed", "certificate is not base64url");
        goto out;
    }
    p = (const unsigned char *)der.data;
    x = d2i_X509(NULL, &p, (long)der.len);
    for (size_t i = 0; x && i < ca->ncerts; i++)
        if (X509_cmp(x, ca->certs[i].leaf) == 0)
            idx = (long)i;
    if (idx < 0) {
        problem(ca, resp, 404, "malformed", "unknown certificate");
        goto out;
    }
    if (rj && (!json_is_integer(rj) || reason < 0 || reason > 10 || reason == 7 || reason == 2)) {
        problem(ca, resp, 400, "badRevocationReason", "reason %d is not allowed", reason);
        goto out;
    }
    if (j->acct >= 0 ? ca->certs[idx].account != (size_t)j->acct
                     : EVP_PKEY_eq(j->key, X509_get0_pubkey(ca->certs[idx].leaf)) != 1) {
        problem(ca, resp, 403, "unauthorized", "not allowed to revoke this certificate");
        goto out;
    }
    if (ca->certs[idx].revoked) {
        problem(ca, resp, 400, "alreadyRevoked", "the certificate is already revoked");
        goto out;
    }
    ca->certs[idx].revoked = 1;
    ca->certs[idx].reason = reason;
    resp->status = 200;
out:
    X509_free(x);
    at_buf_free(&der);
}

static void h_ari(at_fake_ca *ca, at_http_resp *resp, const char *id)
{
    long c = cert_by_ari(ca, id);
    time_t start, end, now = ca_now(ca);
    char s[AT_TIME_BUFSIZE], e[AT_TIME_BUFSIZE];
    json_t *j;

    if (c < 0) {
        problem(ca, resp, 404, "malformed", "no certificate with id %s", id);
        return;
    }
    if (ca->certs[c].revoked) {
        start = now - 2 * 86400;
        end = now - 86400;
    } else if (ca->ari_start || ca->ari_end) {
        start = ca->ari_start;
        end = ca->ari_end;
    } else {
        const ASN1_TIME *na = X509_get0_notAfter(ca->certs[c].leaf), *nb = X509_get0_notBefore(ca->certs[c].leaf);
        struct tm ta, tb;
        time_t tna, tnb;
        ASN1_TIME_to_tm(na, &ta);
        ASN1_TIME_to_tm(nb, &tb);
        tna = timegm(&ta);
        tnb = timegm(&tb);
        start = tna - (tna - tnb) / 3;
        end = start + (tna - tnb) / 10;
    }
    j = json_pack("{s:{s:s, s:s}}", "suggestedWindow", "start", at_time_format(start, s, sizeof(s)),
                  "end", at_time_format(end, e, sizeof(e)));
    if (ca->ari_expl)
        json_object_set_new(j, "explanationURL", json_string(ca->ari_expl));
    reply_json(resp, 200, j);
    if (ca->ari_ra >= 0)
        set_retry_after(resp, ca->ari_ra);
}

static void h_directory(at_fake_ca *ca, at_http_resp *resp)
{
    json_t *d = json_object(), *meta = json_object();
    char *u;
#define URL(key, path) (u = xprintf("%s" path, ca->base), json_object_set_new(d, key, json_string(u)), free(u))
    URL("newNonce", "/nonce");
    URL("newAccount", "/new-acct");
    URL("newOrder", "/new-order");
    URL("revokeCert", "/revoke");
    if (ca->key_change)
        URL("keyChange", "/key-change");
    if (ca->new_authz)
        URL("newAuthz", "/new-authz");
    if (ca->renewal_info)
        URL("renewalInfo", "/renewal-info");
#undef URL
    if (ca->terms)
        json_object_set_new(meta, "termsOfService", json_string(ca->terms));
    json_object_set_new(meta, "website", json_string("https://ca.test/about"));
    if (ca->eab_kid)
        json_object_set_new(meta, "externalAccountRequired", json_true());
    if (ca->profiles)
        json_object_set(meta, "profiles", ca->profiles);
    json_object_set_new(d, "meta", meta);
    reply_json(resp, 200, d);
}

/* -------------------------------------------------------------- dispatch */

static int take_fault(at_fake_ca *ca, int res, at_http_resp *resp)
{
    for (size_t i = 0; i < ca->nfaults; i++) {
        fk_fault *f = &ca->faults[i];
        if (f->res != res || f->count <= 0)
            continue;
        f->count--;
        resp->status = f->status;
        if (f->raw) {
            char *b = malloc(f->len + 1);
            if (!b)
                abort();
            memcpy(b, f->body, f->len + 1);
            body_take(resp, b, f->ctype);
            resp->body_len = f->len;
        } else if (f->type) {
            problem(ca, resp, f->status, f->type, "%s", f->detail);
        } else {
            body_take(resp, xstrdup(f->detail), "text/plain");
        }
        if (f->retry_after >= 0)
            set_retry_after(resp, f->retry_after);
        set_error(ca, "injected fault on %s: HTTP %ld", res_names[res], f->status);
        return 1;
    }
    return 0;
}

int at_fake_ca_handle(at_fake_ca *ca, const at_http_req *req, at_http_resp *resp)
{
    route rt;
    fk_jws j;

    at_http_resp_init(resp);
    if (route_url(ca, req->url, &rt) < 0) {
        problem(ca, resp, 404, "malformed", "no resource at %s", req->url ? req->url : "(null)");
        if (!ca->omit_nonces)
            add_nonce(ca, resp);
        return 0;
    }
    ca->stats[rt.res].count++;
    if (take_fault(ca, rt.res, resp)) {
        if (!ca->omit_nonces || rt.res == R_NONCE)
            add_nonce(ca, resp);
        return 0;
    }
    switch (rt.res) {
    case R_DIR:
        if (req->method != AT_HTTP_GET)
            problem(ca, resp, 405, "malformed", "GET the directory");
        else
            h_directory(ca, resp);
        return 0;
    case R_NONCE:
        resp->status = req->method == AT_HTTP_HEAD ? 200 : 204;
        add_nonce(ca, resp);
        return 0;
    case R_ARI:
        if (req->method != AT_HTTP_GET)
            problem(ca, resp, 405, "malformed", "GET renewalInfo");
        else
            h_ari(ca, resp, rt.rest);
        return 0;
    default:
        break;
    }
    if (verify_post(ca, rt.res, req, resp, &j) != 0) {
        if (!ca->omit_nonces)
            add_nonce(ca, resp);
        return 0;
    }
    switch (rt.res) {
    case R_NEWACCT:   h_new_account(ca, req, resp, &j); break;
    case R_ACCT:      h_account(ca, resp, &j, rt.id); break;
    case R_KEYCHANGE: h_key_change(ca, req, resp, &j); break;
    case R_NEWORDER:  h_new_order(ca, resp, &j); break;
    case R_NEWAUTHZ:  h_new_authz(ca, resp, &j); break;
    case R_ORDER:     h_order(ca, resp, &j, rt.id); break;
    case R_FINALIZE:  h_finalize(ca, resp, &j, rt.id); break;
    case R_AUTHZ:     h_authz(ca, resp, &j, rt.id); break;
    case R_CHAL:      h_challenge(ca, resp, &j, rt.id); break;
    case R_CERT:      h_cert(ca, req, resp, &j, rt.id, rt.alt); break;
    case R_REVOKE:    h_revoke(ca, resp, &j); break;
    default:          problem(ca, resp, 404, "malformed", "no handler"); break;
    }
    jws_clear(&j);
    if (!ca->omit_nonces)
        add_nonce(ca, resp);
    return 0;
}

/* ---------------------------------------------------------------- driver */

typedef struct pend {
    unsigned      tag;
    at_acme_exch *x;
} pend;

static void run_exchange(at_fake_ca *ca, at_acme_client *c, at_acme_op *op, pend *p, time_t *now)
{
    at_error err = AT_ERROR_INIT;
    for (int i = 0; i < 100; i++) {
        at_http_req req;
        at_http_resp resp;
        time_t until = 0;
        at_exch_state s = at_acme_exch_next(p->x, *now, &req, &until, &err);
        if (s == AT_EXCH_SEND) {
            at_fake_ca_set_now(ca, *now);
            at_fake_ca_handle(ca, &req, &resp);
            at_http_req_free(&req);
            at_acme_exch_feed(p->x, &resp, NULL, *now);
            at_http_resp_free(&resp);
        } else if (s == AT_EXCH_WAIT) {
            *now = until > *now ? until : *now + 1;
        } else if (s == AT_EXCH_DONE) {
            at_acme_op_response(op, p->tag, at_acme_exch_response(p->x), NULL, *now);
            break;
        } else {
            at_acme_op_response(op, p->tag, NULL, &err, *now);
            break;
        }
    }
    (void)c;
    at_error_clear(&err);
    at_acme_exch_free(p->x);
    p->x = NULL;
}

int at_fake_ca_run(at_fake_ca *ca, at_acme_client *c, at_acme_op *op, time_t *now,
                   const at_fake_ca_run_opts *opts)
{
    at_fake_ca_run_opts none;
    pend *pending = NULL;
    size_t npend = 0, cap = 0;
    int max, rv = -1;

    if (!opts) {
        memset(&none, 0, sizeof(none));
        opts = &none;
    }
    max = opts->max_steps > 0 ? opts->max_steps : 10000;
    for (int n = 0; n < max; n++) {
        at_step st;
        at_acme_op_step(op, *now, &st);
        if (opts->on_step && opts->on_step(opts->ud, op, &st)) {
            rv = (int)st.kind;
            goto out;
        }
        switch (st.kind) {
        case AT_STEP_REQUEST:
            if (npend == cap) {
                cap = cap ? cap * 2 : 8;
                pending = realloc(pending, cap * sizeof(*pending));
                if (!pending)
                    abort();
            }
            pending[npend].tag = st.tag;
            pending[npend].x = at_acme_exch_new(c, st.req);
            if (!pending[npend].x)
                abort();
            npend++;
            break;
        case AT_STEP_PUBLISH:
            if (opts->publish_error) {
                at_acme_op_published(op, st.tag, opts->publish_error);
            } else if (opts->skip_publish) {
                at_acme_op_published(op, st.tag, NULL);
            } else {
                at_fake_ca_publish(ca, st.chal);
                at_acme_op_published(op, st.tag, NULL);
            }
            break;
        case AT_STEP_WITHDRAW:
            at_fake_ca_withdraw(ca, st.chal);
            break;
        case AT_STEP_CHECKPOINT:
            break;
        case AT_STEP_WAIT:
            if (npend) {
                /* Answer everything queued, in the chosen order. */
                pend *batch = pending;
                size_t nb = npend;
                pending = NULL;
                npend = cap = 0;
                for (size_t i = 0; i < nb; i++)
                    run_exchange(ca, c, op, &batch[opts->lifo ? nb - 1 - i : i], now);
                free(batch);
            } else if (st.until > *now) {
                *now = st.until;
            } else {
                rv = -1;          /* waiting for nothing: a stall */
                goto out;
            }
            break;
        case AT_STEP_DONE:
        case AT_STEP_FAILED:
            rv = (int)st.kind;
            goto out;
        }
    }
out:
    for (size_t i = 0; i < npend; i++)
        at_acme_exch_free(pending[i].x);
    free(pending);
    return rv;
}

int at_fake_ca_setup_client(at_fake_ca *ca, at_acme_client *c, EVP_PKEY *key, time_t *now,
                            at_error *err)
{
    at_http_req req;
    at_http_resp resp;
    at_account_params p;
    at_acme_op *op;
    EVP_PKEY *k = key;
    int rv;

    memset(&req, 0, sizeof(req));
    req.method = AT_HTTP_GET;
    req.url = ca->dir_url;
    at_fake_ca_handle(ca, &req, &resp);
    rv = at_acme_client_set_directory(c, &resp, err);
    at_http_resp_free(&resp);
    if (rv != 0)
        return -1;
    if (!k) {
        at_key_spec spec = AT_KEY_SPEC_DEFAULT;
        if (!(k = at_key_generate(&spec, err)))
            return -1;
    }
    at_acme_client_set_account(c, k, NULL);
    if (!key)
        EVP_PKEY_free(k);
    memset(&p, 0, sizeof(p));
    p.accept_terms = 1;
    p.eab_kid = ca->eab_kid;
    p.eab_hmac_key = ca->eab_key;
    op = at_acme_account_new(c, AT_ACCOUNT_ENSURE, &p, err);
    if (!op)
        return -1;
    rv = at_fake_ca_run(ca, c, op, now, NULL);
    if (rv != AT_STEP_DONE) {
        at_error_copy(err, at_acme_op_error(op));
        at_acme_op_free(op);
        return -1;
    }
    at_acme_client_set_account(c, at_acme_client_key(c), at_acme_op_account_url(op));
    at_acme_op_free(op);
    return 0;
}
