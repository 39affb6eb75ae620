/*
 * at_serve.c: certificates for handshakes and answers for challenges.
 *
 * The per-process cache maps a live generation to the parsed leaf, chain and
 * key. A generation names one published certificate forever, so a cache hit
 * needs no further check; an entry becomes garbage when its certificate is
 * replaced or withdrawn, which the live table's retired counter announces.
 */
#include "at_serve.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define SV_ID_MAX   256
#define SV_TRIES    4

typedef struct sv_cert {
    uint64_t        gen;
    char            id[SV_ID_MAX];
    X509           *leaf;
    STACK_OF(X509) *chain;   /* intermediates, leaf excluded */
    EVP_PKEY       *pkey;
    int             refs;    /* the table's and each handshake's in progress */
    struct sv_cert *next;
} sv_cert;

struct at_serve {
    at_live        *lv;
    pthread_mutex_t mu;
    sv_cert       **tab;
    size_t          tabsz;   /* power of two */
    size_t          n;
    uint64_t        seen_retired;
    unsigned long   hits, parses, misses, evictions;
};

static const at_key_kind kinds[] = { AT_KEY_EC, AT_KEY_RSA };

static inline void count(unsigned long *c)
{
    __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

static size_t slot(const at_serve *s, uint64_t gen)
{
    return (size_t)((gen * 0x9E3779B97F4A7C15ull) >> 32) & (s->tabsz - 1);
}

/* ------------------------------------------------------------ parsed objects */

static void cert_free(sv_cert *c)
{
    X509_free(c->leaf);
    sk_X509_pop_free(c->chain, X509_free);
    EVP_PKEY_free(c->pkey);
    free(c);
}

static void cert_release(sv_cert *c)
{
    if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
        cert_free(c);
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf; (void)size; (void)rwflag; (void)u;
    return -1;   /* live keys are never encrypted; never prompt on a terminal */
}

/* Parse a PEM chain (leaf first) and its key, and check they belong together. */
static int parse_pair(const at_buf *chain, const at_buf *key, X509 **leaf, STACK_OF(X509) **rest,
                      EVP_PKEY **pkey)
{
    BIO *b = NULL;
    X509 *x;
    int ok = 0;

    *leaf = NULL;
    *rest = NULL;
    *pkey = NULL;
    if (chain->len == 0 || key->len == 0 || chain->len > INT32_MAX || key->len > INT32_MAX)
        return -1;
    if (!(b = BIO_new_mem_buf(chain->data, (int)chain->len)) || !(*leaf = PEM_read_bio_X509(b, NULL, no_passphrase, NULL))
        || !(*rest = sk_X509_new_null()))
        goto done;
    while ((x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL)) != NULL) {
        if (!sk_X509_push(*rest, x)) {
            X509_free(x);
            goto done;
        }
    }
    BIO_free(b);
    if (!(b = BIO_new_mem_buf(key->data, (int)key->len)) || !(*pkey = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL)))
        goto done;
    ok = X509_check_private_key(*leaf, *pkey) == 1;
done:
    BIO_free(b);
    ERR_clear_error();   /* the end of the chain is reported as an error */
    if (!ok) {
        X509_free(*leaf);
        sk_X509_pop_free(*rest, X509_free);
        EVP_PKEY_free(*pkey);
        *leaf = NULL;
        *rest = NULL;
        *pkey = NULL;
        return -1;
    }
    return 0;
}

/* Copy and parse the live entry; NULL with *stale set when the entry no
 * longer holds generation gen (the caller looks the host up again). */
static sv_cert *cert_load(at_serve *s, uint32_t entry, uint64_t gen, int *stale)
{
    at_buf chain = AT_BUF_INIT, key = AT_BUF_INIT;
    uint64_t g = 0;
    sv_cert *c = NULL;
    int r;

    *stale = 0;
    r = at_live_get_cert(s->lv, entry, &chain, &key, &g);
    if (r == 0 || (r == 1 && g != gen))
        *stale = 1;
    if (r != 1 || g != gen || !(c = calloc(1, sizeof(*c))))
        goto out;
    r = at_live_cert_id(s->lv, entry, c->id, sizeof(c->id), &g);
    if (r == 0 || (r == 1 && g != gen))
        *stale = 1;
    if (r != 1 || g != gen)
        goto fail;
    count(&s->parses);
    if (parse_pair(&chain, &key, &c->leaf, &c->chain, &c->pkey) != 0)
        goto fail;
    c->gen = gen;
    c->refs = 1;
    goto out;
fail:
    free(c);
    c = NULL;
out:
    at_buf_free(&chain);
    at_buf_free_secret(&key);
    return c;
}

/* ------------------------------------------------------------ the cache */

/* Under s->mu. */
static sv_cert *tab_get(at_serve *s, uint64_t gen)
{
    for (sv_cert *c = s->tab[slot(s, gen)]; c; c = c->next)
        if (c->gen == gen)
            return c;
    return NULL;
}

/* Under s->mu. Growing is best effort: a full table is only slower. */
static void tab_grow(at_serve *s)
{
    size_t nsz = s->tabsz * 2, old = s->tabsz;
    sv_cert **nt = calloc(nsz, sizeof(*nt)), **ot = s->tab;
    if (!nt)
        return;
    s->tab = nt;
    s->tabsz = nsz;
    for (size_t i = 0; i < old; i++) {
        sv_cert *c = ot[i], *nx;
        for (; c; c = nx) {
            size_t k = slot(s, c->gen);
            nx = c->next;
            c->next = nt[k];
            nt[k] = c;
        }
    }
    free(ot);
}

/* Under s->mu. */
static void tab_remove(at_serve *s, sv_cert *victim)
{
    sv_cert **pp = &s->tab[slot(s, victim->gen)];
    for (; *pp; pp = &(*pp)->next) {
        if (*pp == victim) {
            *pp = victim->next;
            s->n--;
            count(&s->evictions);
            cert_release(victim);
            return;
        }
    }
}

static sv_cert *cache_get(at_serve *s, uint64_t gen)
{
    sv_cert *c;
    pthread_mutex_lock(&s->mu);
    if ((c = tab_get(s, gen)) != NULL)
        __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&s->mu);
    return c;
}

/* Insert c (its one reference becomes the table's) and return it with a
 * reference for the caller; if another thread parsed the same generation
 * meanwhile, keep that one. A generation that was replaced while it was being
 * parsed serves this handshake only: the sweep for its retirement may have
 * run already, so it must not enter the table (checked under the lock that
 * sweeps take, so no retirement slips between check and insert unseen). */
static sv_cert *cache_put(at_serve *s, sv_cert *c)
{
    sv_cert *have;
    uint64_t g = 0;
    pthread_mutex_lock(&s->mu);
    if ((have = tab_get(s, c->gen)) != NULL) {
        __atomic_add_fetch(&have->refs, 1, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&s->mu);
        cert_free(c);
        return have;
    }
    if (at_live_cert_current(s->lv, c->id, &g) != 1 || g != c->gen) {
        pthread_mutex_unlock(&s->mu);
        return c;
    }
    if (s->n >= s->tabsz)
        tab_grow(s);
    c->refs = 2;
    c->next = s->tab[slot(s, c->gen)];
    s->tab[slot(s, c->gen)] = c;
    s->n++;
    pthread_mutex_unlock(&s->mu);
    return c;
}

/* Drop the entries whose certificate is no longer the one published under
 * its id. Runs only when the live table retired something since last time. */
static void cache_sweep(at_serve *s)
{
    uint64_t r = at_live_retired(s->lv);
    if (__atomic_load_n(&s->seen_retired, __ATOMIC_ACQUIRE) == r)
        return;
    pthread_mutex_lock(&s->mu);
    if (__atomic_load_n(&s->seen_retired, __ATOMIC_RELAXED) != r) {
        int unsure = 0;
        for (size_t i = 0; i < s->tabsz; i++) {
            sv_cert *c = s->tab[i], *nx;
            for (; c; c = nx) {
                uint64_t g = 0;
                int x = at_live_cert_current(s->lv, c->id, &g);
                nx = c->next;
                if (x == 0 || (x == 1 && g != c->gen))
                    tab_remove(s, c);
                else if (x < 0)
                    unsure = 1;
            }
        }
        if (!unsure)
            __atomic_store_n(&s->seen_retired, r, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&s->mu);
}

/* The parsed certificate of kind for host, with a reference. 1/0/-1. */
static int acquire(at_serve *s, const char *host, at_key_kind kind, sv_cert **out)
{
    for (int t = 0; t < SV_TRIES; t++) {
        uint32_t entry;
        uint64_t gen;
        int r = at_live_cert_gen(s->lv, host, kind, &entry, &gen), stale;
        sv_cert *c;
        if (r <= 0)
            return r;
        if ((c = cache_get(s, gen)) != NULL) {
            count(&s->hits);
            *out = c;
            return 1;
        }
        if ((c = cert_load(s, entry, gen, &stale)) != NULL) {
            *out = cache_put(s, c);
            return 1;
        }
        if (!stale)
            return -1;
    }
    return -1;
}

/* ------------------------------------------------------------ public */

at_serve *at_serve_new(at_live *lv)
{
    at_serve *s;
    if (!lv || !(s = calloc(1, sizeof(*s))))
        return NULL;
    s->lv = lv;
    s->tabsz = 64;
    if (!(s->tab = calloc(s->tabsz, sizeof(*s->tab))) || pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s->tab);
        free(s);
        return NULL;
    }
    s->seen_retired = at_live_retired(lv);
    return s;
}

void at_serve_free(at_serve *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->tabsz; i++) {
        sv_cert *c = s->tab[i], *nx;
        for (; c; c = nx) {
            nx = c->next;
            cert_release(c);
        }
    }
    free(s->tab);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int at_serve_install(at_serve *s, SSL *ssl, const char *host)
{
    sv_cert *got[2];
    int n = 0, failed = 0, rc = 1;

    if (!s || !ssl)
        return 0;
    if (!host) {
        count(&s->misses);
        return 0;
    }
    cache_sweep(s);
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        int r = acquire(s, host, kinds[k], &got[n]);
        if (r == 1)
            n++;
        else if (r < 0)
            failed = 1;
    }
    if (n == 0) {
        if (!failed)
            count(&s->misses);
        return failed ? -1 : 0;
    }
    /* Every pair was checked when parsed, so installing cannot fail halfway
     * for a reason of ours; the placeholder goes so that only live
     * certificates are offered. */
    SSL_certs_clear(ssl);
    for (int i = 0; i < n; i++)
        if (SSL_use_cert_and_key(ssl, got[i]->leaf, got[i]->pkey, got[i]->chain, 1) != 1)
            rc = -1;
    for (int i = 0; i < n; i++)
        cert_release(got[i]);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

int at_serve_has_cert(at_serve *s, const char *host)
{
    if (!s || !host)
        return 0;
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
        if (at_live_cert_gen(s->lv, host, kinds[k], NULL, NULL) == 1)
            return 1;
    return 0;
}

int at_serve_install_alpn01(at_serve *s, SSL *ssl, const char *host)
{
    at_buf cert = AT_BUF_INIT, key = AT_BUF_INIT;
    X509 *leaf;
    STACK_OF(X509) *rest;
    EVP_PKEY *pkey;
    int r;

    if (!s || !ssl || !host)
        return 0;
    r = at_live_get_alpn01(s->lv, host, &cert, &key);
    if (r == 1) {
        if (parse_pair(&cert, &key, &leaf, &rest, &pkey) != 0) {
            r = -1;
        } else {
            SSL_certs_clear(ssl);
            if (SSL_use_cert_and_key(ssl, leaf, pkey, rest, 1) != 1) {
                ERR_clear_error();
                r = -1;
            }
            X509_free(leaf);
            sk_X509_pop_free(rest, X509_free);
            EVP_PKEY_free(pkey);
        }
    }
    at_buf_free(&cert);
    at_buf_free_secret(&key);
    return r;
}

int at_serve_alpn_has_acme(const unsigned char *in, unsigned int inlen)
{
    const size_t al = sizeof(AT_ALPN_ACME) - 1;
    unsigned int i = 0;
    if (!in)
        return 0;
    while (i < inlen) {
        unsigned int l = in[i++];
        if (l == 0 || l > inlen - i)
            return 0;
        if (l == al && memcmp(in + i, AT_ALPN_ACME, al) == 0)
            return 1;
        i += l;
    }
    return 0;
}

int at_serve_alpn_selected_acme(SSL *ssl)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;
    if (!ssl)
        return 0;
    SSL_get0_alpn_selected(ssl, &p, &len);
    return p && len == sizeof(AT_ALPN_ACME) - 1 && memcmp(p, AT_ALPN_ACME, len) == 0;
}

/* The per-SSL note that the ClientHello offered acme-tls/1. */
static pthread_once_t acme_once = PTHREAD_ONCE_INIT;
static int acme_idx = -1;
static char acme_mark;

static void acme_index(void)
{
    acme_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

int at_serve_client_hello(SSL *ssl)
{
    const unsigned char *p = NULL;
    size_t len = 0, l;

    if (!ssl || SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p, &len) != 1
        || !p || len < 2)
        return 0;
    /* extension_data: ProtocolNameList with a 16-bit length (RFC 7301 §3.1) */
    l = ((size_t)p[0] << 8) | p[1];
    if (l != len - 2 || !at_serve_alpn_has_acme(p + 2, (unsigned int)l))
        return 0;
    pthread_once(&acme_once, acme_index);
    return acme_idx >= 0 && SSL_set_ex_data(ssl, acme_idx, &acme_mark) == 1;
}

int at_serve_is_acme(SSL *ssl)
{
    if (!ssl)
        return 0;
    if (at_serve_alpn_selected_acme(ssl))
        return 1;
    pthread_once(&acme_once, acme_index);
    return acme_idx >= 0 && SSL_get_ex_data(ssl, acme_idx) == &acme_mark;
}

static int token_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

at_http01_result at_serve_http01(at_live *lv, const char *path, size_t pathlen,
                                 char *out, size_t outsz)
{
    const size_t pl = sizeof(AT_HTTP01_PREFIX) - 1;
    char tok[AT_LIVE_TOKEN_MAX + 1];
    size_t tl;

    if (out && outsz)
        out[0] = '\0';
    if (!path || pathlen < pl || memcmp(path, AT_HTTP01_PREFIX, pl) != 0)
        return AT_HTTP01_PASS;
    tl = pathlen - pl;
    if (tl == 0 || tl > AT_LIVE_TOKEN_MAX)
        return AT_HTTP01_NOTFOUND;
    for (size_t i = 0; i < tl; i++)
        if (!token_char((unsigned char)path[pl + i]))
            return AT_HTTP01_NOTFOUND;
    if (!lv || !out || outsz == 0)
        return AT_HTTP01_NOTFOUND;
    memcpy(tok, path + pl, tl);
    tok[tl] = '\0';
    if (at_live_get_http01(lv, tok, out, outsz) == 1)
        return AT_HTTP01_ANSWER;
    out[0] = '\0';
    return AT_HTTP01_NOTFOUND;
}

void at_serve_get_stats(const at_serve *s, at_serve_stats *st)
{
    memset(st, 0, sizeof(*st));
    if (!s)
        return;
    st->hits = __atomic_load_n(&s->hits, __ATOMIC_RELAXED);
    st->parses = __atomic_load_n(&s->parses, __ATOMIC_RELAXED);
    st->misses = __atomic_load_n(&s->misses, __ATOMIC_RELAXED);
    st->evictions = __atomic_load_n(&s->evictions, __ATOMIC_RELAXED);
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    st->entries = s->n;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
}
