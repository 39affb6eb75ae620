/*
 * at_key.c: key specs, generation and PEM (PKCS#8).
 */
#include "at_key.h"

#include <ctype.h>
#include <limits.h>
#include <string.h>
#include <strings.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define AT_KEY_ACCEPTED "ec:P-256 (the default), ec:P-384, rsa:2048, rsa:3072 or rsa:4096"

/* What follows an "ec" prefix or stands alone as a curve name. */
static int curve_bits(const char *s)
{
    static const char *const p256[] = { "p-256", "p256", "256", "secp256r1", "prime256v1", NULL };
    static const char *const p384[] = { "p-384", "p384", "384", "secp384r1", NULL };
    for (int i = 0; p256[i]; i++)
        if (strcmp(s, p256[i]) == 0)
            return 256;
    for (int i = 0; p384[i]; i++)
        if (strcmp(s, p384[i]) == 0)
            return 384;
    return -1;
}

static int rsa_bits(const char *s)
{
    if (!*s)
        return 2048;
    if (strcmp(s, "2048") == 0)
        return 2048;
    if (strcmp(s, "3072") == 0)
        return 3072;
    if (strcmp(s, "4096") == 0)
        return 4096;
    return -1;
}

int at_key_spec_parse(const char *s, at_key_spec *spec, at_error *err)
{
    char low[32];
    const char *rest;
    size_t n;
    int bits;
    if (!s || !*s)
        return at_error_set(err, AT_ERR_CONFIG, "empty key type: use " AT_KEY_ACCEPTED);
    n = strlen(s);
    if (n >= sizeof(low))
        return at_error_set(err, AT_ERR_CONFIG, "unsupported key type \"%.40s...\": use "
                            AT_KEY_ACCEPTED, s);
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)tolower((unsigned char)s[i]);

    if (strncmp(low, "rsa", 3) == 0) {
        rest = low + 3;
        if (*rest == ':' || *rest == '-')
            rest++;
        if ((bits = rsa_bits(rest)) < 0 || (rest != low + 3 && !*rest))
            goto bad;
        spec->kind = AT_KEY_RSA;
        spec->bits = bits;
        return 0;
    }
    rest = low;
    if (strncmp(rest, "ecdsa", 5) == 0)
        rest += 5;
    else if (strncmp(rest, "ec", 2) == 0)
        rest += 2;
    if (rest != low) {
        if (!*rest) {
            spec->kind = AT_KEY_EC;
            spec->bits = 256;
            return 0;
        }
        if (*rest == ':' || *rest == '-')
            rest++;
    }
    if ((bits = curve_bits(rest)) < 0 || (rest == low && strcmp(rest, "256") == 0) ||
        (rest == low && strcmp(rest, "384") == 0))
        goto bad;
    spec->kind = AT_KEY_EC;
    spec->bits = bits;
    return 0;
bad:
    return at_error_set(err, AT_ERR_CONFIG, "unsupported key type \"%s\": use " AT_KEY_ACCEPTED, s);
}

const char *at_key_spec_name(const at_key_spec *spec)
{
    if (spec->kind == AT_KEY_EC)
        return spec->bits == 384 ? "ec:P-384" : spec->bits == 256 ? "ec:P-256" : "ec:unsupported";
    if (spec->kind == AT_KEY_RSA) {
        switch (spec->bits) {
        case 2048: return "rsa:2048";
        case 3072: return "rsa:3072";
        case 4096: return "rsa:4096";
        }
        return "rsa:unsupported";
    }
    return "unsupported";
}

const char *at_key_spec_slug(const at_key_spec *spec)
{
    if (spec->kind == AT_KEY_EC)
        return spec->bits == 384 ? "ec384" : spec->bits == 256 ? "ec256" : "ecx";
    if (spec->kind == AT_KEY_RSA) {
        switch (spec->bits) {
        case 2048: return "rsa2048";
        case 3072: return "rsa3072";
        case 4096: return "rsa4096";
        }
        return "rsax";
    }
    return "x";
}

static int valid_spec(const at_key_spec *spec)
{
    if (spec->kind == AT_KEY_EC)
        return spec->bits == 256 || spec->bits == 384;
    if (spec->kind == AT_KEY_RSA)
        return spec->bits == 2048 || spec->bits == 3072 || spec->bits == 4096;
    return 0;
}

int at_key_spec_of(EVP_PKEY *pkey, at_key_spec *spec)
{
    char group[64];
    size_t glen = 0;
    if (!pkey)
        return -1;
    if (EVP_PKEY_is_a(pkey, "EC")) {
        int nid;
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                            sizeof(group), &glen)) {
            ERR_clear_error();
            return -1;
        }
        nid = OBJ_txt2nid(group);
        if (nid == NID_undef)
            nid = EC_curve_nist2nid(group);
        ERR_clear_error();
        if (nid == NID_X9_62_prime256v1)
            spec->bits = 256;
        else if (nid == NID_secp384r1)
            spec->bits = 384;
        else
            return -1;
        spec->kind = AT_KEY_EC;
        return 0;
    }
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        at_key_spec s = { AT_KEY_RSA, EVP_PKEY_get_bits(pkey) };
        if (!valid_spec(&s))
            return -1;
        *spec = s;
        return 0;
    }
    return -1;
}

int at_key_spec_equal(const at_key_spec *a, const at_key_spec *b)
{
    return a->kind == b->kind && a->bits == b->bits;
}

EVP_PKEY *at_key_generate(const at_key_spec *spec, at_error *err)
{
    EVP_PKEY *pkey;
    if (!spec || !valid_spec(spec)) {
        at_error_set(err, AT_ERR_CONFIG, "cannot generate a key of type %s: use " AT_KEY_ACCEPTED,
                     spec ? at_key_spec_name(spec) : "(none)");
        return NULL;
    }
    if (spec->kind == AT_KEY_EC)
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", spec->bits == 384 ? "P-384" : "P-256");
    else
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)spec->bits);
    if (!pkey)
        at_error_set_openssl(err, "generating a %s key failed", at_key_spec_name(spec));
    return pkey;
}

int at_key_to_pem(EVP_PKEY *pkey, at_buf *out, at_error *err)
{
    /* A secure-memory BIO is wiped when freed: the key text does not linger
     * in freed heap. */
    BIO *bio;
    char *data;
    long n;
    int rv = -1;
    if (!pkey)
        return at_error_set(err, AT_ERR_INTERNAL, "no key to write as PEM");
    if (!(bio = BIO_new(BIO_s_secmem())))
        return at_error_set_openssl(err, "cannot allocate a buffer for a private key");
    if (!PEM_write_bio_PKCS8PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL)) {
        at_error_set_openssl(err, "cannot write the private key as PKCS#8 PEM");
        goto done;
    }
    n = BIO_get_mem_data(bio, &data);
    if (n <= 0 || at_buf_append(out, data, (size_t)n) != 0) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory writing a private key");
        goto done;
    }
    rv = 0;
done:
    BIO_free(bio);
    return rv;
}

/* Never prompt on a terminal for a pass phrase (OpenSSL's default callback
 * would, from inside a web server); note that one was wanted instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    *(int *)u = 1;
    return -1;
}

/* OpenSSL 3.0 tries every decoder it has on a key of unknown type, which
 * costs 0.3-0.5 ms per key; naming the type makes it about four times
 * cheaper. The store reads a key on every load of a certificate or order,
 * and every key autotls writes is EC or RSA, so those are tried by name
 * first; anything else (another type, an encrypted key, which is refused
 * with its own message) takes the generic path. */
static EVP_PKEY *key_from_pem_typed(const char *pem, size_t len, const char *type)
{
    EVP_PKEY *pkey = NULL;
    const unsigned char *p = (const unsigned char *)pem;
    size_t left = len;
    int wanted_pass = 0;
    OSSL_DECODER_CTX *dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, type,
                                                           EVP_PKEY_KEYPAIR, NULL, NULL);

    if (!dctx)
        return NULL;
    if (OSSL_DECODER_CTX_set_pem_password_cb(dctx, no_passphrase, &wanted_pass) != 1 ||
        OSSL_DECODER_from_data(dctx, &p, &left) != 1) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    OSSL_DECODER_CTX_free(dctx);
    return pkey;
}

EVP_PKEY *at_key_from_pem(const char *pem, size_t len, at_error *err)
{
    BIO *bio;
    EVP_PKEY *pkey;
    int wanted_pass = 0;
    if (!pem || len == 0) {
        at_error_set(err, AT_ERR_PARSE, "empty private key PEM");
        return NULL;
    }
    if (len > INT_MAX) {
        at_error_set(err, AT_ERR_PARSE, "private key PEM is too large");
        return NULL;
    }
    if ((pkey = key_from_pem_typed(pem, len, "EC")) != NULL ||
        (pkey = key_from_pem_typed(pem, len, "RSA")) != NULL)
        return pkey;
    ERR_clear_error();
    if (!(bio = BIO_new_mem_buf(pem, (int)len))) {
        at_error_set_openssl(err, "cannot read private key PEM");
        return NULL;
    }
    pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, &wanted_pass);
    BIO_free(bio);
    if (!pkey) {
        if (wanted_pass)
            at_error_set(err, AT_ERR_PARSE, "the private key is encrypted with a pass phrase, "
                         "which is not supported: store it unencrypted (mode 0600)");
        else
            at_error_set_openssl(err, "no private key found in the PEM text "
                                 "(expected -----BEGIN PRIVATE KEY-----)");
        ERR_clear_error();
    }
    return pkey;
}

int at_key_matches_cert_pem(EVP_PKEY *pkey, const char *cert_pem, size_t len)
{
    BIO *bio;
    X509 *x;
    int rv;
    if (!pkey || !cert_pem || len == 0 || len > INT_MAX)
        return 0;
    if (!(bio = BIO_new_mem_buf(cert_pem, (int)len)))
        return 0;
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    rv = at_key_matches_cert(pkey, x);
    X509_free(x);
    ERR_clear_error();
    return rv;
}

int at_key_matches_cert(EVP_PKEY *pkey, X509 *cert)
{
    int rv = pkey && cert && X509_get0_pubkey(cert) && EVP_PKEY_eq(pkey, X509_get0_pubkey(cert)) == 1;
    ERR_clear_error();
    return rv;
}
