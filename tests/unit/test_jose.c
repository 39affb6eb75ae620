/*
 * test_jose: JWK, thumbprints (RFC 7638 §3.1 vector), flattened JWS
 * (ES256, ES384, RS256) checked by at_jws_verify and by an independent
 * verifier written here, EAB (HS256/384/512) checked by recomputing the
 * HMAC, key authorizations and dns-01 values.
 */
#include "at_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "at_b64.h"
#include "at_jose.h"
#include "at_json.h"
#include "at_key.h"

/* ------------------------------------------------------------ test tools */

/* base64url decoding that shares no code with at_b64: translate to the
 * standard alphabet, pad, and let OpenSSL decode. Returns malloc'd bytes. */
static unsigned char *ind_b64url_decode(const char *s, size_t *outlen)
{
    size_t n = strlen(s), padded = (n + 3) / 4 * 4;
    char *tmp = malloc(padded + 1);
    unsigned char *out = malloc(padded / 4 * 3 + 1);
    int len;
    size_t pad = padded - n;
    for (size_t i = 0; i < n; i++)
        tmp[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    for (size_t i = n; i < padded; i++)
        tmp[i] = '=';
    tmp[padded] = '\0';
    len = EVP_DecodeBlock(out, (unsigned char *)tmp, (int)padded);
    free(tmp);
    if (len < 0 || (size_t)len < pad) {
        free(out);
        return NULL;
    }
    *outlen = (size_t)len - pad;
    return out;
}

static char *ind_b64url_encode(const unsigned char *p, size_t n)
{
    char *out = malloc(n / 3 * 4 + 8);
    int len = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return out;
}

static EVP_PKEY *gen(const char *spec_text)
{
    at_key_spec spec;
    at_error err = AT_ERROR_INIT;
    EVP_PKEY *k = NULL;
    if (at_key_spec_parse(spec_text, &spec, &err) == 0)
        k = at_key_generate(&spec, &err);
    AT_CHECK_MSG(k != NULL, "generate %s: %s", spec_text, err.msg);
    return k;
}

static EVP_PKEY *from_pem(const char *pem)
{
    at_error err = AT_ERROR_INIT;
    EVP_PKEY *k = at_key_from_pem(pem, strlen(pem), &err);
    AT_CHECK_MSG(k != NULL, "key from PEM: %s", err.msg);
    return k;
}

/* An RSA public key from base64url n and e, built here with OSSL_PARAM. */
static EVP_PKEY *rsa_pub(const char *n_b64, const char *e_b64)
{
    size_t nl, el;
    unsigned char *n = ind_b64url_decode(n_b64, &nl), *e = ind_b64url_decode(e_b64, &el);
    BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn);
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be);
    params = OSSL_PARAM_BLD_to_param(bld);
    if (EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    AT_CHECK(pkey != NULL);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return pkey;
}

/* The uncompressed public point 04||X||Y, straight from OpenSSL. */
static size_t ec_point(EVP_PKEY *k, unsigned char *buf, size_t size)
{
    size_t len = 0;
    AT_CHECK(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, buf, size,
                                             &len) == 1);
    AT_CHECK(len > 0 && buf[0] == 0x04);
    return len;
}

static int thumb_of_text(const char *canon, char out[64])
{
    unsigned char md[32];
    unsigned int n = 0;
    char *s;
    EVP_Digest(canon, strlen(canon), md, &n, EVP_sha256(), NULL);
    s = ind_b64url_encode(md, n);
    snprintf(out, 64, "%s", s);
    free(s);
    return 0;
}

/* An independent verifier of a flattened JWS: jansson for the JSON, OpenSSL
 * for everything else, the algorithm taken from the header and mapped here. */
static int ind_verify(EVP_PKEY *key, const char *jws, json_t **hdr_out)
{
    json_error_t je;
    json_t *doc = json_loads(jws, 0, &je), *hdr = NULL;
    const char *prot, *payload, *sig, *alg;
    unsigned char *hbytes = NULL, *sbytes = NULL, *der = NULL;
    size_t hlen = 0, slen = 0, coord = 0;
    const char *md = NULL;
    char *input = NULL;
    EVP_MD_CTX *ctx = NULL;
    int ok = 0, derlen;
    if (!doc || json_object_size(doc) != 3)
        goto done;
    prot = json_string_value(json_object_get(doc, "protected"));
    payload = json_string_value(json_object_get(doc, "payload"));
    sig = json_string_value(json_object_get(doc, "signature"));
    if (!prot || !payload || !sig)
        goto done;
    if (!(hbytes = ind_b64url_decode(prot, &hlen)) ||
        !(hdr = json_loadb((char *)hbytes, hlen, 0, &je)))
        goto done;
    alg = json_string_value(json_object_get(hdr, "alg"));
    if (!alg)
        goto done;
    if (strcmp(alg, "ES256") == 0)
        md = "SHA256", coord = 32;
    else if (strcmp(alg, "ES384") == 0)
        md = "SHA384", coord = 48;
    else if (strcmp(alg, "RS256") == 0)
        md = "SHA256";
    else
        goto done;
    if (!(sbytes = ind_b64url_decode(sig, &slen)))
        goto done;
    if (coord) {
        ECDSA_SIG *es = ECDSA_SIG_new();
        if (slen != 2 * coord) {
            ECDSA_SIG_free(es);
            goto done;
        }
        ECDSA_SIG_set0(es, BN_bin2bn(sbytes, (int)coord, NULL),
                       BN_bin2bn(sbytes + coord, (int)coord, NULL));
        derlen = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es);
        free(sbytes);
        sbytes = malloc((size_t)derlen);
        memcpy(sbytes, der, (size_t)derlen);
        slen = (size_t)derlen;
    }
    input = malloc(strlen(prot) + strlen(payload) + 2);
    sprintf(input, "%s.%s", prot, payload);
    ctx = EVP_MD_CTX_new();
    ok = EVP_DigestVerifyInit_ex(ctx, NULL, md, NULL, NULL, key, NULL) == 1 &&
         EVP_DigestVerify(ctx, sbytes, slen, (unsigned char *)input, strlen(input)) == 1;
done:
    if (hdr_out) {
        *hdr_out = hdr;
        hdr = NULL;
    }
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    free(input);
    free(hbytes);
    free(sbytes);
    json_decref(hdr);
    json_decref(doc);
    return ok;
}

static char *sign(EVP_PKEY *k, const char *kid, const char *nonce, const char *url,
                  const char *payload)
{
    at_buf out = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    int rv = at_jws_sign(k, kid, nonce, url, payload, &out, &err);
    AT_CHECK_MSG(rv == 0, "at_jws_sign: %s", err.msg);
    if (rv != 0) {
        at_buf_free(&out);
        return NULL;
    }
    return at_buf_detach(&out);
}

/* ---------------------------------------------------------------- vectors */

/* RFC 7638 §3.1. */
static const char rfc7638_n[] =
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
static const char rfc7638_thumb[] = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

/* EC keys whose public coordinates begin with a zero byte (found by
 * searching small private scalars; x/y as computed by Python cryptography). */
static const char p256_x0_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgAAAAAAAAAAAAAAAA\n"
    "AAAAAAAAAAAAAAAAAAAAAAAABEahRANCAAQA2f4Aa5RRutoETVvzC62mJjuNnyHc\n"
    "sGR3fDwsjSbI+yEJXewI/cVSWjWgNsp3sOcDChDKcJ+Q463ooEzT2t39\n"
    "-----END PRIVATE KEY-----\n";
static const char p256_x0_x[] = "ANn-AGuUUbraBE1b8wutpiY7jZ8h3LBkd3w8LI0myPs";
static const char p256_x0_y[] = "IQld7Aj9xVJaNaA2ynew5wMKEMpwn5DjreigTNPa3f0";
static const char p256_y0_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgAAAAAAAAAAAAAAAA\n"
    "AAAAAAAAAAAAAAAAAAAAAAAABRuhRANCAATcU0CyboJA1IWe2hlrddSFj4+ueAYh\n"
    "AE2biCO6pGP8tQBzRuMBDg44OwHkr3LOV/EPxTaElAqYY6x+LTZjxp3z\n"
    "-----END PRIVATE KEY-----\n";
static const char p256_y0_x[] = "3FNAsm6CQNSFntoZa3XUhY-PrngGIQBNm4gjuqRj_LU";
static const char p256_y0_y[] = "AHNG4wEODjg7AeSvcs5X8Q_FNoSUCphjrH4tNmPGnfM";
static const char p384_x0_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDAAAAAAAAAAAAAAAAAA\n"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABC2hZANiAAQAv7EqeoPX\n"
    "AKCD5yz08c3orEAnuFduD5KopSEsdPbB5AT7DRFFtOur8QueGEXS+4D/QzE+MjfF\n"
    "D7xlwrmMv5Yv49A7lm4jUGr5YVoMZf3fDfdnR1CZs311Lygr9pZA5uk=\n"
    "-----END PRIVATE KEY-----\n";
static const char p384_x0_x[] = "AL-xKnqD1wCgg-cs9PHN6KxAJ7hXbg-SqKUhLHT2weQE-w0RRbTrq_ELnhhF0vuA";
static const char p384_x0_y[] = "_0MxPjI3xQ-8ZcK5jL-WL-PQO5ZuI1Bq-WFaDGX93w33Z0dQmbN9dS8oK_aWQObp";

/* ------------------------------------------------------------------ cases */

static void t_alg(void)
{
    EVP_PKEY *p256 = gen("ec:P-256"), *p384 = gen("ec:P-384"), *rsa = gen("rsa:2048");
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    EVP_PKEY *p521 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
    at_buf out = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    AT_CHECK_STR(at_jws_alg(p256), "ES256");
    AT_CHECK_STR(at_jws_alg(p384), "ES384");
    AT_CHECK_STR(at_jws_alg(rsa), "RS256");
    AT_CHECK(at_jws_alg(ed) == NULL);
    AT_CHECK(at_jws_alg(p521) == NULL);
    AT_CHECK(at_jws_alg(NULL) == NULL);
    AT_CHECK(at_jws_sign(ed, NULL, "n", "https://ca/x", "{}", &out, &err) == -1);
    AT_CHECK_CONTAINS(err.msg, "P-256");
    AT_CHECK(at_jwk_public(p521, NULL) == NULL);
    at_buf_free(&out);
    EVP_PKEY_free(p256);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ed);
    EVP_PKEY_free(p521);
}

static void t_rfc7638_thumbprint(void)
{
    EVP_PKEY *k = rsa_pub(rfc7638_n, "AQAB"), *back;
    at_error err = AT_ERROR_INIT;
    char tp[64], canon_expect[600];
    json_t *jwk;
    char *canon;
    AT_CHECK_OK(at_jwk_thumbprint(k, tp, sizeof(tp), &err), &err);
    AT_CHECK_STR(tp, rfc7638_thumb);
    jwk = at_jwk_public(k, &err);
    AT_CHECK(jwk != NULL);
    canon = at_json_canonical(jwk);
    snprintf(canon_expect, sizeof(canon_expect), "{\"e\":\"AQAB\",\"kty\":\"RSA\",\"n\":\"%s\"}",
             rfc7638_n);
    AT_CHECK_STR(canon, canon_expect);
    free(canon);
    /* Insertion order equals canonical order: the compact form is the same. */
    canon = at_json_compact(jwk);
    AT_CHECK_STR(canon, canon_expect);
    free(canon);
    /* Round trip through at_jwk_to_pkey. */
    back = at_jwk_to_pkey(jwk, &err);
    AT_CHECK(back != NULL && EVP_PKEY_eq(back, k) == 1);
    memset(tp, 0, sizeof(tp));
    AT_CHECK_OK(at_jwk_thumbprint(back, tp, sizeof(tp), &err), &err);
    AT_CHECK_STR(tp, rfc7638_thumb);
    /* Too small an output buffer is an error, not a truncation. */
    AT_CHECK(at_jwk_thumbprint(k, tp, 43, &err) == -1);
    json_decref(jwk);
    EVP_PKEY_free(back);
    EVP_PKEY_free(k);
}

/* JWK of an EC key checked against the raw point and the expected text. */
static void check_ec_jwk(EVP_PKEY *k, const char *crv, size_t coord, const char *ex,
                         const char *ey)
{
    at_error err = AT_ERROR_INIT;
    unsigned char pt[1 + 2 * 66];
    size_t plen = ec_point(k, pt, sizeof(pt));
    json_t *jwk = at_jwk_public(k, &err);
    char *x_exp = ind_b64url_encode(pt + 1, coord), *y_exp = ind_b64url_encode(pt + 1 + coord, coord);
    char canon_expect[400], tp_expect[64], tp[64];
    char *canon;
    AT_CHECK_INT(plen, 1 + 2 * coord);
    AT_CHECK(jwk != NULL);
    AT_CHECK_INT(json_object_size(jwk), 4);
    AT_CHECK_STR(at_json_str(jwk, "kty"), "EC");
    AT_CHECK_STR(at_json_str(jwk, "crv"), crv);
    AT_CHECK_STR(at_json_str(jwk, "x"), x_exp);
    AT_CHECK_STR(at_json_str(jwk, "y"), y_exp);
    if (ex)
        AT_CHECK_STR(at_json_str(jwk, "x"), ex);
    if (ey)
        AT_CHECK_STR(at_json_str(jwk, "y"), ey);
    AT_CHECK_INT(strlen(at_json_str(jwk, "x")), (coord * 8 + 5) / 6);
    snprintf(canon_expect, sizeof(canon_expect),
             "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", crv, x_exp, y_exp);
    canon = at_json_canonical(jwk);
    AT_CHECK_STR(canon, canon_expect);
    thumb_of_text(canon_expect, tp_expect);
    AT_CHECK_OK(at_jwk_thumbprint(k, tp, sizeof(tp), &err), &err);
    AT_CHECK_STR(tp, tp_expect);
    free(canon);
    free(x_exp);
    free(y_exp);
    json_decref(jwk);
}

static void t_jwk_ec_leading_zero_vectors(void)
{
    EVP_PKEY *a = from_pem(p256_x0_pem), *b = from_pem(p256_y0_pem), *c = from_pem(p384_x0_pem);
    check_ec_jwk(a, "P-256", 32, p256_x0_x, p256_x0_y);
    check_ec_jwk(b, "P-256", 32, p256_y0_x, p256_y0_y);
    check_ec_jwk(c, "P-384", 48, p384_x0_x, p384_x0_y);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
    EVP_PKEY_free(c);
}

/* Generate until a coordinate begins with 0x00 (1 in 128 per key; bounded). */
static void t_jwk_ec_leading_zero_generated(void)
{
    int found = 0;
    for (int i = 0; i < 4000 && !found; i++) {
        EVP_PKEY *k = gen("ec:P-256");
        unsigned char pt[65];
        ec_point(k, pt, sizeof(pt));
        if (pt[1] == 0 || pt[33] == 0) {
            found = 1;
            check_ec_jwk(k, "P-256", 32, NULL, NULL);
        }
        EVP_PKEY_free(k);
    }
    AT_CHECK(found);
    /* And ordinary keys of both curves. */
    EVP_PKEY *k = gen("ec:P-256");
    check_ec_jwk(k, "P-256", 32, NULL, NULL);
    EVP_PKEY_free(k);
    k = gen("ec:P-384");
    check_ec_jwk(k, "P-384", 48, NULL, NULL);
    EVP_PKEY_free(k);
}

static void check_rsa_jwk(EVP_PKEY *k, size_t nbytes, const char *e_expect)
{
    at_error err = AT_ERROR_INIT;
    json_t *jwk = at_jwk_public(k, &err);
    BIGNUM *n = NULL, *back;
    unsigned char *nb, *eb;
    size_t nl = 0, el = 0;
    AT_CHECK(jwk != NULL);
    AT_CHECK_INT(json_object_size(jwk), 3);
    AT_CHECK_STR(at_json_str(jwk, "kty"), "RSA");
    AT_CHECK_STR(at_json_str(jwk, "e"), e_expect);
    nb = ind_b64url_decode(at_json_str(jwk, "n"), &nl);
    eb = ind_b64url_decode(at_json_str(jwk, "e"), &el);
    AT_CHECK(nb && eb);
    AT_CHECK_INT(nl, nbytes);
    AT_CHECK(nl > 0 && nb[0] != 0);
    AT_CHECK(el > 0 && eb[0] != 0);
    EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n);
    back = BN_bin2bn(nb, (int)nl, NULL);
    AT_CHECK(n && back && BN_cmp(n, back) == 0);
    BN_free(n);
    BN_free(back);
    free(nb);
    free(eb);
    json_decref(jwk);
}

static void t_jwk_rsa_no_leading_zero(void)
{
    /* A generated modulus has its top bit set, so its DER INTEGER carries a
     * leading 0x00 that the JWK must not. */
    EVP_PKEY *k = gen("rsa:2048");
    unsigned char der_n[300];
    BIGNUM *n = NULL;
    check_rsa_jwk(k, 256, "AQAB");
    EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n);
    AT_CHECK(BN_bn2binpad(n, der_n, 257) == 257 && der_n[0] == 0 && der_n[1] >= 0x80);
    BN_free(n);
    EVP_PKEY_free(k);

    /* Constructed: a 2049-bit modulus (top byte 0x01) and e = 3. Fixed-width
     * encoders get these wrong in both directions. */
    unsigned char raw[257];
    char *nb64;
    RAND_bytes(raw, sizeof(raw));
    raw[0] = 0x01;
    raw[256] |= 1;
    nb64 = ind_b64url_encode(raw, sizeof(raw));
    k = rsa_pub(nb64, "Aw");
    check_rsa_jwk(k, 257, "Aw");
    free(nb64);
    EVP_PKEY_free(k);
}

static void check_jws(EVP_PKEY *k, const char *kid, const char *nonce, const char *payload,
                      size_t siglen)
{
    const char *url = "https://ca.example/acme/new-order";
    char *jws = sign(k, kid, nonce, url, payload);
    json_t *hdr = NULL, *doc, *jwk, *phdr = NULL;
    at_buf pl = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    size_t slen = 0, plen = 0;
    unsigned char *sig, *pbytes;
    if (!jws)
        return;
    AT_CHECK_INT(at_jws_verify(k, jws, strlen(jws)), 1);
    AT_CHECK_INT(ind_verify(k, jws, &hdr), 1);
    AT_CHECK(hdr != NULL);
    /* Header members: alg, exactly one of kid/jwk, nonce only when given, url. */
    AT_CHECK_STR(at_json_str(hdr, "alg"), at_jws_alg(k));
    AT_CHECK_STR(at_json_str(hdr, "url"), url);
    if (kid) {
        AT_CHECK_STR(at_json_str(hdr, "kid"), kid);
        AT_CHECK(json_object_get(hdr, "jwk") == NULL);
    } else {
        AT_CHECK(json_object_get(hdr, "kid") == NULL);
        jwk = at_jwk_public(k, NULL);
        AT_CHECK(json_equal(json_object_get(hdr, "jwk"), jwk));
        json_decref(jwk);
    }
    if (nonce)
        AT_CHECK_STR(at_json_str(hdr, "nonce"), nonce);
    else
        AT_CHECK(json_object_get(hdr, "nonce") == NULL);
    AT_CHECK_INT(json_object_size(hdr), 3 + (nonce != NULL));
    /* Payload: exactly the bytes given; "" for POST-as-GET. */
    doc = json_loads(jws, 0, NULL);
    pbytes = ind_b64url_decode(json_string_value(json_object_get(doc, "payload")), &plen);
    AT_CHECK(pbytes != NULL);
    AT_CHECK_INT(plen, payload ? strlen(payload) : 0);
    if (payload && pbytes)
        AT_CHECK(memcmp(pbytes, payload, plen) == 0);
    if (!payload || !*payload)
        AT_CHECK_STR(json_string_value(json_object_get(doc, "payload")), "");
    sig = ind_b64url_decode(json_string_value(json_object_get(doc, "signature")), &slen);
    AT_CHECK_INT(slen, siglen);
    /* at_jws_parse agrees. */
    AT_CHECK_OK(at_jws_parse(jws, strlen(jws), &phdr, &pl, &err), &err);
    AT_CHECK(json_equal(phdr, hdr));
    AT_CHECK_INT(pl.len, plen);
    free(sig);
    free(pbytes);
    json_decref(phdr);
    at_buf_free(&pl);
    json_decref(doc);
    json_decref(hdr);
    free(jws);
}

static void t_jws_algorithms(void)
{
    static const struct { const char *spec; size_t siglen; } algs[] = {
        { "ec:P-256", 64 }, { "ec:P-384", 96 }, { "rsa:2048", 256 },
    };
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        EVP_PKEY *k = gen(algs[i].spec);
        const char *kid = "https://ca.example/acme/acct/42";
        /* Many signatures so that short R or S values (padded to the fixed
         * size) occur for ECDSA. */
        for (int j = 0; j < 20; j++)
            check_jws(k, kid, "nonce-abc_DEF", "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"a\"}]}",
                      algs[i].siglen);
        check_jws(k, NULL, "n1", "{\"termsOfServiceAgreed\":true}", algs[i].siglen);
        check_jws(k, kid, NULL, "{\"x\":1}", algs[i].siglen);
        check_jws(k, kid, "n2", NULL, algs[i].siglen);
        check_jws(k, kid, "n3", "", algs[i].siglen);
        EVP_PKEY_free(k);
    }
    /* Leading-zero EC keys sign and verify as well. */
    EVP_PKEY *k = from_pem(p256_x0_pem);
    check_jws(k, NULL, "n", "{}", 64);
    EVP_PKEY_free(k);
    k = from_pem(p384_x0_pem);
    check_jws(k, NULL, "n", "{}", 96);
    EVP_PKEY_free(k);
}

/* The signed characters are the sent characters: rebuilding the signing
 * input from the body verifies; any change to the body does not. */
static void t_jws_tamper(void)
{
    EVP_PKEY *k = gen("ec:P-256"), *other = gen("ec:P-256"), *rsa = gen("rsa:2048");
    char *jws = sign(k, "https://ca/acct/1", "nonce", "https://ca/x", "{\"a\":1}");
    char *p, *copy;
    AT_CHECK_INT(at_jws_verify(k, jws, strlen(jws)), 1);
    AT_CHECK_INT(at_jws_verify(other, jws, strlen(jws)), 0);
    AT_CHECK_INT(ind_verify(other, jws, NULL), 0);
    AT_CHECK_INT(at_jws_verify(rsa, jws, strlen(jws)), 0);
    /* Flip one character of the payload. */
    copy = strdup(jws);
    p = strstr(copy, "\"payload\":\"") + 11;
    *p = *p == 'e' ? 'f' : 'e';
    AT_CHECK_INT(at_jws_verify(k, copy, strlen(copy)), 0);
    AT_CHECK_INT(ind_verify(k, copy, NULL), 0);
    free(copy);
    /* Flip one character of the protected header. */
    copy = strdup(jws);
    p = strstr(copy, "\"protected\":\"") + 20;
    *p = *p == 'A' ? 'B' : 'A';
    AT_CHECK_INT(at_jws_verify(k, copy, strlen(copy)), 0);
    free(copy);
    /* Truncated signature, garbage, missing members. */
    copy = strdup(jws);
    p = strstr(copy, "\"signature\":\"") + 13;
    memmove(p, p + 4, strlen(p + 4) + 1);
    AT_CHECK_INT(at_jws_verify(k, copy, strlen(copy)), 0);
    free(copy);
    AT_CHECK_INT(at_jws_verify(k, "not json", 8), 0);
    AT_CHECK_INT(at_jws_verify(k, "{\"protected\":\"e30\",\"payload\":\"\"}", 33), 0);
    AT_CHECK_INT(at_jws_verify(NULL, jws, strlen(jws)), 0);
    free(jws);

    /* A header whose alg does not match the key is refused (here "none"). */
    {
        at_buf b = AT_BUF_INIT;
        char *h = at_b64url_encode_str("{\"alg\":\"none\",\"url\":\"u\"}", 25);
        at_buf_printf(&b, "{\"protected\":\"%s\",\"payload\":\"\",\"signature\":\"\"}", h);
        AT_CHECK_INT(at_jws_verify(k, b.data, b.len), 0);
        free(h);
        at_buf_free(&b);
    }
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
    EVP_PKEY_free(rsa);
}

static void t_jws_errors(void)
{
    EVP_PKEY *k = gen("ec:P-256");
    at_buf out = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    AT_CHECK(at_jws_sign(k, NULL, "n", NULL, "{}", &out, &err) == -1);
    AT_CHECK(err.code != AT_OK);
    /* A kid that is not UTF-8 cannot go into a JSON header. */
    at_error_clear(&err);
    AT_CHECK(at_jws_sign(k, "\xff\xfe", "n", "https://ca/x", "{}", &out, &err) == -1);
    AT_CHECK_CONTAINS(err.msg, "UTF-8");
    AT_CHECK_INT(out.len, 0);
    at_buf_free(&out);
    EVP_PKEY_free(k);
}

static void check_eab(EVP_PKEY *acct, const char *alg, const char *md, size_t maclen)
{
    unsigned char hkey[32];
    char *hkey_b64, *input;
    const char *prot, *payload, *sigs;
    json_t *eab, *hdr, *jwk, *pjwk;
    unsigned char *hb, *pb, *sb, mac[EVP_MAX_MD_SIZE];
    size_t hl = 0, pl = 0, sl = 0;
    unsigned int ml = 0;
    at_error err = AT_ERROR_INIT;
    RAND_bytes(hkey, sizeof(hkey));
    hkey_b64 = ind_b64url_encode(hkey, sizeof(hkey));
    eab = at_eab_jws(acct, "kid-123", hkey_b64, alg, "https://ca/acme/new-acct", &err);
    AT_CHECK_MSG(eab != NULL, "at_eab_jws %s: %s", alg ? alg : "(default)", err.msg);
    if (!eab) {
        free(hkey_b64);
        return;
    }
    AT_CHECK_INT(json_object_size(eab), 3);
    prot = at_json_str(eab, "protected");
    payload = at_json_str(eab, "payload");
    sigs = at_json_str(eab, "signature");
    AT_CHECK(prot && payload && sigs);
    hb = ind_b64url_decode(prot, &hl);
    hdr = json_loadb((char *)hb, hl, 0, NULL);
    AT_CHECK_INT(json_object_size(hdr), 3);
    AT_CHECK_STR(at_json_str(hdr, "alg"), alg ? alg : "HS256");
    AT_CHECK_STR(at_json_str(hdr, "kid"), "kid-123");
    AT_CHECK_STR(at_json_str(hdr, "url"), "https://ca/acme/new-acct");
    /* Payload: the account's public JWK. */
    pb = ind_b64url_decode(payload, &pl);
    pjwk = json_loadb((char *)pb, pl, 0, NULL);
    jwk = at_jwk_public(acct, NULL);
    AT_CHECK(pjwk && jwk && json_equal(pjwk, jwk));
    /* Signature: HMAC recomputed here over the sent strings. */
    input = malloc(strlen(prot) + strlen(payload) + 2);
    sprintf(input, "%s.%s", prot, payload);
    AT_CHECK(HMAC(EVP_get_digestbyname(md), hkey, sizeof(hkey), (unsigned char *)input,
                  strlen(input), mac, &ml) != NULL);
    sb = ind_b64url_decode(sigs, &sl);
    AT_CHECK_INT(sl, maclen);
    AT_CHECK_INT(ml, maclen);
    AT_CHECK(sb && sl == ml && memcmp(sb, mac, ml) == 0);
    free(input);
    free(hb);
    free(pb);
    free(sb);
    free(hkey_b64);
    json_decref(hdr);
    json_decref(jwk);
    json_decref(pjwk);
    json_decref(eab);
}

static void t_eab(void)
{
    EVP_PKEY *ec = gen("ec:P-256"), *rsa = gen("rsa:2048");
    at_error err = AT_ERROR_INIT;
    check_eab(ec, "HS256", "SHA256", 32);
    check_eab(ec, "HS384", "SHA384", 48);
    check_eab(ec, "HS512", "SHA512", 64);
    check_eab(ec, NULL, "SHA256", 32);
    check_eab(rsa, "HS256", "SHA256", 32);
    /* Errors name what to do. */
    AT_CHECK(at_eab_jws(ec, "kid", "c2VjcmV0", "HS1", "https://ca/n", &err) == NULL);
    AT_CHECK_CONTAINS(err.msg, "HS256, HS384 or HS512");
    at_error_clear(&err);
    AT_CHECK(at_eab_jws(ec, "kid", "not base64!", "HS256", "https://ca/n", &err) == NULL);
    AT_CHECK_CONTAINS(err.msg, "base64url");
    at_error_clear(&err);
    AT_CHECK(at_eab_jws(ec, "kid", "", "HS256", "https://ca/n", &err) == NULL);
    AT_CHECK(err.code == AT_ERR_CONFIG);
    at_error_clear(&err);
    AT_CHECK(at_eab_jws(ec, "", "c2VjcmV0", "HS256", "https://ca/n", &err) == NULL);
    AT_CHECK_CONTAINS(err.msg, "kid");
    EVP_PKEY_free(ec);
    EVP_PKEY_free(rsa);
}

static void t_key_authorization(void)
{
    /* The token of RFC 8555 §8.3's example. */
    const char *token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    EVP_PKEY *k = rsa_pub(rfc7638_n, "AQAB");
    at_error err = AT_ERROR_INIT;
    char expect[200], tp_expect[64];
    char *ka = at_key_authorization(token, k, &err), *txt;
    unsigned char md[32];
    unsigned int mdl = 0;
    snprintf(expect, sizeof(expect), "%s.%s", token, rfc7638_thumb);
    AT_CHECK_STR(ka, expect);
    /* dns-01: base64url(SHA-256(key authorization)), computed independently. */
    txt = at_dns01_txt_value(ka, &err);
    EVP_Digest(expect, strlen(expect), md, &mdl, EVP_sha256(), NULL);
    {
        char *e = ind_b64url_encode(md, mdl);
        snprintf(tp_expect, sizeof(tp_expect), "%s", e);
        free(e);
    }
    AT_CHECK_STR(txt, tp_expect);
    AT_CHECK_INT(strlen(txt), 43);
    free(txt);
    free(ka);
    /* Tokens outside the base64url alphabet never become key authorizations. */
    static const char *const bad[] = { "", "a/b", "a.b", "../x", "tok en", "a%2e", NULL };
    for (int i = 0; bad[i]; i++) {
        at_error_clear(&err);
        ka = at_key_authorization(bad[i], k, &err);
        AT_CHECK_MSG(ka == NULL, "token \"%s\" accepted", bad[i]);
        AT_CHECK_INT(err.code, AT_ERR_PROTOCOL);
        free(ka);
    }
    AT_CHECK(at_key_authorization(NULL, k, &err) == NULL);
    AT_CHECK(at_dns01_txt_value("", &err) == NULL);
    EVP_PKEY_free(k);
}

static void t_jwk_import_errors(void)
{
    at_error err = AT_ERROR_INIT;
    EVP_PKEY *k = from_pem(p256_x0_pem), *back;
    json_t *jwk = at_jwk_public(k, NULL), *bad;
    char tp1[64], tp2[64];
    back = at_jwk_to_pkey(jwk, &err);
    AT_CHECK(back && EVP_PKEY_eq(back, k) == 1);
    at_jwk_thumbprint(k, tp1, sizeof(tp1), NULL);
    at_jwk_thumbprint(back, tp2, sizeof(tp2), NULL);
    AT_CHECK_STR(tp1, tp2);
    /* A point that is not on the curve. */
    bad = json_deep_copy(jwk);
    json_object_set_new(bad, "y", json_string(p256_y0_y));
    AT_CHECK(at_jwk_to_pkey(bad, &err) == NULL);
    json_decref(bad);
    /* x without its leading zero (31 bytes). */
    bad = json_deep_copy(jwk);
    json_object_set_new(bad, "x", json_string(p256_x0_x + 2));
    AT_CHECK(at_jwk_to_pkey(bad, &err) == NULL);
    json_decref(bad);
    bad = json_pack("{s:s,s:s,s:s,s:s}", "kty", "EC", "crv", "P-521", "x", "AA", "y", "AA");
    AT_CHECK(at_jwk_to_pkey(bad, &err) == NULL);
    AT_CHECK_CONTAINS(err.msg, "P-521");
    json_decref(bad);
    bad = json_pack("{s:s,s:s}", "kty", "oct", "k", "AAAA");
    AT_CHECK(at_jwk_to_pkey(bad, &err) == NULL);
    AT_CHECK_CONTAINS(err.msg, "oct");
    json_decref(bad);
    json_decref(jwk);
    EVP_PKEY_free(back);
    EVP_PKEY_free(k);
}

static const at_test_case cases[] = {
    AT_CASE(t_alg),
    AT_CASE(t_rfc7638_thumbprint),
    AT_CASE(t_jwk_ec_leading_zero_vectors),
    AT_CASE(t_jwk_ec_leading_zero_generated),
    AT_CASE(t_jwk_rsa_no_leading_zero),
    AT_CASE(t_jws_algorithms),
    AT_CASE(t_jws_tamper),
    AT_CASE(t_jws_errors),
    AT_CASE(t_eab),
    AT_CASE(t_key_authorization),
    AT_CASE(t_jwk_import_errors),
    AT_CASE_END
};

int main(int argc, char **argv) { return at_test_main(argc, argv, cases); }
