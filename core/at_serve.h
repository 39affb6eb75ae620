/*
 * at_serve.h: the serving side, for the host's handshake and request hooks.
 *
 * Handshakes: at_serve_install() puts the live certificate(s) for a name onto
 * an SSL (all key types that are live, so OpenSSL picks the one the client
 * supports). Parsed X509 / EVP_PKEY objects are cached per process and keyed
 * by the live table's generation, so PEM is parsed once per new certificate,
 * never per handshake.
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

/* One per process. Thread-safe (Apache's event MPM calls it from many
 * threads): a short internal lock guards only the cache lookup/insert; the
 * X509/EVP_PKEY objects handed to OpenSSL are reference-counted. */
at_serve *at_serve_new(at_live *lv);
void at_serve_free(at_serve *s);

/* Install the live certificate(s) for host on ssl, replacing the SSL_CTX's
 * (placeholder) ones. Returns 1 installed, 0 nothing live for host (ssl left
 * alone), -1 error (ssl left alone). */
int at_serve_install(at_serve *s, SSL *ssl, const char *host);

/* Is any certificate live for host? (The 503 decision.) */
int at_serve_has_cert(at_serve *s, const char *host);

/* TLS-ALPN-01: install the challenge certificate for host. 1/0/-1 as above. */
int at_serve_install_alpn01(at_serve *s, SSL *ssl, const char *host);

/* Does an ALPN protocol list in wire format (as given to an alpn_select
 * callback) contain "acme-tls/1"? */
int at_serve_alpn_has_acme(const unsigned char *in, unsigned int inlen);
/* Was "acme-tls/1" selected on this connection? */
int at_serve_alpn_selected_acme(SSL *ssl);

#define AT_HTTP01_PREFIX "/.well-known/acme-challenge/"

typedef enum at_http01_result {
    AT_HTTP01_PASS = 0,   /* not a challenge path: let the server handle it */
    AT_HTTP01_ANSWER,     /* answer 200 text/plain with the key authorization */
    AT_HTTP01_NOTFOUND    /* a challenge path with a bad or unknown token: 404 */
} at_http01_result;

/* Decide for a request path (without the query string, not decoded: a
 * percent sign is simply a character outside the token alphabet). */
at_http01_result at_serve_http01(at_live *lv, const char *path, size_t pathlen,
                                 char *out, size_t outsz);

/* Cache statistics for this process. */
typedef struct at_serve_stats {
    unsigned long hits;
    unsigned long parses;
    unsigned long misses;
} at_serve_stats;
void at_serve_get_stats(const at_serve *s, at_serve_stats *st);

#endif
