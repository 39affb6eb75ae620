/*
 * at_x509.h: certificates, chains and CSRs.
 *
 * Identifiers: a name is either a DNS name ("example.com", "*.example.com")
 * or an IP address literal ("192.0.2.1", "2001:db8::1") per RFC 8738.
 */
#ifndef AT_X509_H
#define AT_X509_H

#include <stddef.h>
#include <time.h>
#include <openssl/x509.h>
#include <openssl/evp.h>
#include "at_error.h"
#include "at_buf.h"

/* True if name is an IPv4 or IPv6 literal. */
int at_name_is_ip(const char *name);

/* Validate a managed name: a DNS name of letters, digits, '-' and '.'
 * (labels 1..63, total <= 253, lowercase after normalisation, optional
 * leading "*." for wildcards) or an IP literal. Writes the normalised form
 * (lowercase, no trailing dot) into out (size >= 256). On error, err explains. */
int at_name_normalize(const char *name, char *out, size_t outsz, at_error *err);

/* RFC 8738 §6: a TLS-ALPN-01 validation of an IP identifier arrives with the
 * reverse-DNS name as SNI ("1.0.0.127.in-addr.arpa", 32 nibbles + ".ip6.arpa").
 * Writes the IP literal (inet_ntop form) into out and returns 1; returns 0 if
 * name is not a reverse-DNS name, -1 if it is one but malformed. */
int at_name_from_reverse(const char *name, char *out, size_t outsz);

/* Canonical key for a TLS-ALPN-01 name: reverse-DNS names become their IP,
 * IP literals their inet_ntop form, anything else is copied. 0 or -1. */
int at_name_alpn_key(const char *name, char *out, size_t outsz);

/* Does the pattern (possibly "*.example.com") cover host? Single-label wildcard. */
int at_name_matches(const char *pattern, const char *host);

/* DER CSR with the names in subjectAltName only (DNS and IP entries), empty
 * subject, signed by key. Appended to der. */
int at_csr_der(EVP_PKEY *key, const char *const *names, size_t nnames, at_buf *der, at_error *err);

/* What we need to know about a certificate. */
typedef struct at_cert_info {
    time_t  not_before;
    time_t  not_after;
    char    serial[128];      /* lowercase hex, no separators */
    char    issuer_cn[256];   /* issuer commonName ("" if none) */
    char  **names;            /* SAN DNS/IP entries, malloc'd array of malloc'd strings */
    size_t  nnames;
    char    ari_id[512];      /* RFC 9773 certificate identifier, "" if no AKI */
} at_cert_info;

void at_cert_info_free(at_cert_info *info);

/* Information about the first (leaf) certificate of a PEM chain. */
int at_cert_info_pem(const char *pem, size_t len, at_cert_info *info, at_error *err);
/* The same for the leaf alone (the first certificate), the rest unparsed. */
int at_cert_info_leaf_pem(const char *pem, size_t len, at_cert_info *info, at_error *err);
/* 0 when the text starts with a complete PEM CERTIFICATE block (base64 and
 * framing only; nothing is decoded). */
int at_pem_has_cert(const char *pem, size_t len, at_error *err);
int at_cert_info_x509(X509 *x, at_cert_info *info, at_error *err);

/* Split a PEM chain into certificates. *certs is a new STACK_OF(X509) that the
 * caller frees with sk_X509_pop_free(certs, X509_free). Fails on an empty
 * chain or any block that is not a certificate. */
int at_chain_parse(const char *pem, size_t len, STACK_OF(X509) **certs, at_error *err);

/* Common name of the issuer of the last certificate in the chain (the root-most
 * one), used to choose among alternate chains. Writes "" when absent. */
int at_chain_top_issuer_cn(const char *pem, size_t len, char *out, size_t outsz, at_error *err);

/* RFC 9773 §4.1 certificate identifier: base64url(AKI keyIdentifier) "."
 * base64url(serial DER integer bytes). AT_ERR_NOTFOUND when the certificate
 * has no authority key identifier. */
int at_ari_cert_id(X509 *cert, char *out, size_t outsz, at_error *err);

/* RFC 8737 TLS-ALPN-01 challenge certificate: self-signed, SAN = name (DNS or
 * IP), critical id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31) holding the DER
 * OCTET STRING of SHA-256(key_authorization). The key is a fresh P-256 key.
 * Subject CN = the name when it fits in 64 characters (else empty, and the
 * SAN is critical); no other extensions. Wildcards are refused (RFC 8737
 * validates only plain names). Both outputs are PEM, appended. */
int at_tlsalpn01_cert(const char *name, const char *key_authorization,
                      at_buf *cert_pem, at_buf *key_pem, at_error *err);

/* A self-signed placeholder certificate for names (used until the first real
 * certificate exists; the host server answers 503 meanwhile). Valid for
 * `days` days, subject CN = first name, issuer CN "autotls placeholder". */
int at_placeholder_cert(const char *const *names, size_t nnames, const char *key_spec,
                        int days, at_buf *cert_pem, at_buf *key_pem, at_error *err);

/* The same with a key the caller already has (borrowed; its PEM goes to
 * key_pem): a host making placeholders for many sites generates one key per
 * kind instead of one per site (an RSA key costs tens of milliseconds). */
int at_placeholder_cert_with_key(const char *const *names, size_t nnames, EVP_PKEY *key,
                                 int days, at_buf *cert_pem, at_buf *key_pem, at_error *err);

/* SHA-256 fingerprint of the leaf in lowercase hex (65 bytes). */
int at_cert_sha256_hex(X509 *x, char out[65]);

#endif
