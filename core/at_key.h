/*
 * at_key.h: private keys. Key types are named by specs such as "ec:P-256",
 * "ec:P-384", "rsa:2048", "rsa:3072", "rsa:4096". EC P-256 is the default for
 * both certificates and accounts.
 */
#ifndef AT_KEY_H
#define AT_KEY_H

#include <stddef.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include "at_error.h"
#include "at_buf.h"

typedef enum at_key_kind {
    AT_KEY_EC = 1,
    AT_KEY_RSA = 2
} at_key_kind;

typedef struct at_key_spec {
    at_key_kind kind;
    int         bits;   /* RSA: 2048/3072/4096; EC: 256 or 384 */
} at_key_spec;

#define AT_KEY_SPEC_DEFAULT { AT_KEY_EC, 256 }

/* Parse "ec:P-256" | "ec:P-384" | "rsa:2048" | "rsa:3072" | "rsa:4096" (also
 * accepted, case-insensitive: "ecdsa", "p256", "p-256", "secp256r1", "prime256v1",
 * "rsa" = rsa:2048, "rsa2048"). On error, err says what would be accepted. */
int at_key_spec_parse(const char *s, at_key_spec *spec, at_error *err);

/* Canonical text: "ec:P-256", "rsa:2048". Static string. */
const char *at_key_spec_name(const at_key_spec *spec);

/* Short slug for file names and ids: "ec256", "ec384", "rsa2048". Static. */
const char *at_key_spec_slug(const at_key_spec *spec);

/* The spec that describes an existing key; -1 if unsupported. */
int at_key_spec_of(EVP_PKEY *pkey, at_key_spec *spec);

int at_key_spec_equal(const at_key_spec *a, const at_key_spec *b);

/* Generate a new key. Returns a new EVP_PKEY (caller frees) or NULL. */
EVP_PKEY *at_key_generate(const at_key_spec *spec, at_error *err);

/* PEM (PKCS#8, unencrypted) of a private key; appended to out. */
int at_key_to_pem(EVP_PKEY *pkey, at_buf *out, at_error *err);

/* Load a private key from PEM text. */
EVP_PKEY *at_key_from_pem(const char *pem, size_t len, at_error *err);

/* Does the private key match the public key in the certificate PEM's first cert? */
int at_key_matches_cert_pem(EVP_PKEY *pkey, const char *cert_pem, size_t len);
/* The same for a certificate already parsed. */
int at_key_matches_cert(EVP_PKEY *pkey, X509 *cert);

#endif
