/*
 * at_serve.h: the serving side, for the host's handshake and request hooks.
 *
 * Handshakes: at_serve_install() puts the live certificate(s) for a name onto
 * an SSL (all key kinds that are live, so OpenSSL picks the one the client
 * supports: ECDSA for a client that offers ECDSA signature algorithms, RSA for
 * one that only offers RSA). Call it from an SSL_CTX cert_cb (it runs after
 * SNI and ALPN are known, before the cipher is chosen). Parsed X509 / EVP_PKEY
 * objects are cached per process and keyed by the live table's generation,
 * so PEM is parsed once per new certificate, never per handshake; entries of
 * replaced or withdrawn certificates are dropped when the table says some
 * certificate was retired.
 *
 * Requests: at_serve_http01() answers /.well-known/acme-challenge/TOKEN
 * from the live table after checking the token's alphabet and length.
 */
#ifndef AT_SERVE_H
#define AT_SERVE_H

#include <stddef.h>
#include <openssl/ssl.h>
#include "at_live.h"

typedef struct at_serve at_serve;

/* One per process (create it in the child, after fork). Thread-safe (Apache's
 * event MPM calls it from many threads): a short internal lock guards only the
 * cache lookup/insert; the X509/EVP_PKEY objects handed to OpenSSL are
 * reference-counted. Borrows lv, which must outlive it. NULL on OOM. */
at_serve *at_serve_new(at_live *lv);
void at_serve_free(at_serve *s);

/* Install the live certificate(s) for host on ssl, replacing the SSL_CTX's
 * (placeholder) ones. host is the SNI name (case and a trailing dot do not
 * matter); NULL means nothing is live. Returns 1 installed, 0 nothing live for
 * host (ssl left alone), -1 error (ssl left alone). */
int at_serve_install(at_serve *s, SSL *ssl, const char *host);

/* Is any certificate live for host? (The 503 decision.) */
int at_serve_has_cert(at_serve *s, const char *host);

/* TLS-ALPN-01: install the challenge certificate for host (and nothing else).
 * Not cached: only the CA's validation connections take this path.
 * 1/0/-1 as above. */
int at_serve_install_alpn01(at_serve *s, SSL *ssl, const char *host);

#define AT_ALPN_ACME "acme-tls/1"

/* Does an ALPN protocol list in wire format (as given to an alpn_select
 * callback) contain "acme-tls/1"? A malformed list contains nothing. */
int at_serve_alpn_has_acme(const unsigned char *in, unsigned int inlen);
/* Was "acme-tls/1" selected on this connection? */
int at_serve_alpn_selected_acme(SSL *ssl);

/* OpenSSL calls the ALPN callback before the certificate callback in TLS 1.3
 * but after it in TLS 1.2, so a certificate callback cannot rely on the ALPN
 * selection. Call at_serve_client_hello from an SSL_CTX client_hello callback
 * (SSL_CTX_set_client_hello_cb): it notes on the SSL (ex_data, which survives
 * an SNI switch of SSL_CTX) whether the ClientHello offers "acme-tls/1".
 * Returns 1 if it does. Then, in the certificate callback:
 *
 *     if (at_serve_is_acme(ssl))  r = at_serve_install_alpn01(s, ssl, sni);
 *     else                        r = at_serve_install(s, ssl, sni);
 *
 * and let the ALPN callback select "acme-tls/1" when at_serve_alpn_has_acme.
 * at_serve_is_acme is true when acme-tls/1 was selected or was offered in the
 * ClientHello seen by at_serve_client_hello. */
int at_serve_client_hello(SSL *ssl);
int at_serve_is_acme(SSL *ssl);

/* The whole certificate callback of a managed site whose names are
 * names[0..nnames): the SNI name is read (lowercase, no trailing dot); when
 * the ClientHello asked for acme-tls/1 (*acme = 1) the challenge
 * certificate for it is installed (nothing without an SNI name), otherwise
 * the live certificate(s) of the SNI name when the site covers it, else of
 * names[0]. host (hostsz bytes) gets the name used. 1/0/-1 as
 * at_serve_install. */
int at_serve_site(at_serve *s, SSL *ssl, const char *const *names, size_t nnames,
                  char *host, size_t hostsz, int *acme);

#define AT_HTTP01_PREFIX "/.well-known/acme-challenge/"

typedef enum at_http01_result {
    AT_HTTP01_PASS = 0,   /* not a challenge path: let the server handle it */
    AT_HTTP01_ANSWER,     /* answer 200 text/plain with the key authorization */
    AT_HTTP01_NOTFOUND    /* a challenge path with a bad or unknown token: 404 */
} at_http01_result;

/* Decide for a request path (without the query string, not decoded: a
 * percent sign is simply a character outside the token alphabet). The token
 * must be 1..AT_LIVE_TOKEN_MAX characters of [A-Za-z0-9_-]; anything else
 * ("..", "/", "%2e", NUL) is a 404 without a lookup. On ANSWER, out holds the
 * key authorization (NUL-terminated); otherwise out is "". */
at_http01_result at_serve_http01(at_live *lv, const char *path, size_t pathlen,
                                 char *out, size_t outsz);

/* Cache statistics for this process. */
typedef struct at_serve_stats {
    unsigned long hits;      /* a certificate installed from the cache */
    unsigned long parses;    /* PEM parsed into the cache (once per new certificate) */
    unsigned long misses;    /* at_serve_install found nothing live for the host */
    unsigned long evictions; /* cache entries dropped because their certificate was retired */
    unsigned long entries;   /* parsed certificates held now */
} at_serve_stats;
void at_serve_get_stats(const at_serve *s, at_serve_stats *st);

#endif
