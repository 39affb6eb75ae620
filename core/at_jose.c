/*
 * at_jose.c: JWK, RFC 7638 thumbprints, flattened JWS and EAB.
 */
#include "at_jose.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "at_b64.h"
#include "at_json.h"
#include "at_key.h"

/* Longest token we turn into a key authorization. RFC 8555 §8.1 asks for at
 * least 128 bits of entropy; real CAs send 43 characters. */
#define AT_TOKEN_MAX 512

/* ------------------------------------------------------------------ keys */

typedef struct jws_alg {
    const char *name;
    const char *digest;   /* "SHA256" ... */
    size_t      coord;    /* EC field size in bytes, 0 for RSA */
    const char *crv;
} jws_alg;

static const jws_alg alg_es256 = { "ES256", "SHA256", 32, "P-256" };
static const jws_alg alg_es384 = { "ES384", "SHA384", 48, "P-384" };
static const jws_alg alg_rs256 = { "RS256", "SHA256", 0, NULL };

static const jws_alg *alg_of(EVP_PKEY *key)
{
    at_key_spec spec;
    if (!key)
        return NULL;
    /* Any RSA key of 2048 bits or more can sign RS256, even a size we would
     * not generate ourselves (an account key imported from elsewhere). */
    if (EVP_PKEY_is_a(key, "RSA"))
        return EVP_PKEY_get_bits(key) >= 2048 ? &alg_rs256 : NULL;
    if (at_key_spec_of(key, &spec) != 0 || spec.kind != AT_KEY_EC)
        return NULL;
    return spec.bits == 384 ? &alg_es384 : &alg_es256;
}

const char *at_jws_alg(EVP_PKEY *key)
{
    const jws_alg *a = alg_of(key);
    return a ? a->name : NULL;
}

/* base64url of a BIGNUM parameter: minimal big-endian bytes when pad == 0
 * (RSA, RFC 7518 §6.3.1), left-padded to pad bytes otherwise (EC, §6.2.1.2). */
static char *bn_param_b64(EVP_PKEY *key, const char *param, size_t pad)
{
    BIGNUM *bn = NULL;
    unsigned char *bin = NULL;
    char *s = NULL;
    int n;
    if (!EVP_PKEY_get_bn_param(key, param, &bn))
        return NULL;
    n = BN_num_bytes(bn);
    if (n <= 0 || (pad && (size_t)n > pad))
        goto done;
    if (!(bin = malloc(pad ? pad : (size_t)n)))
        goto done;
    if (pad)
        n = BN_bn2binpad(bn, bin, (int)pad);
    else
        n = BN_bn2bin(bn, bin);
    if (n > 0)
        s = at_b64url_encode_str(bin, (size_t)n);
done:
    free(bin);
    BN_free(bn);
    return s;
}

/* Members are added in lexicographic order, so the compact (insertion
 * order) and canonical (sorted) serialisations are the same text. */
json_t *at_jwk_public(EVP_PKEY *key, at_error *err)
{
    const jws_alg *a = alg_of(key);
    char *p1 = NULL, *p2 = NULL;
    json_t *jwk = NULL;
    if (!a) {
        at_error_set(err, AT_ERR_CRYPTO, "unsupported key for JWS: use " "an EC P-256/P-384 "
                     "or RSA (2048 bits or more) key");
        return NULL;
    }
    if (a->coord) {
        p1 = bn_param_b64(key, OSSL_PKEY_PARAM_EC_PUB_X, a->coord);
        p2 = bn_param_b64(key, OSSL_PKEY_PARAM_EC_PUB_Y, a->coord);
        if (p1 && p2)
            jwk = json_pack("{s:s, s:s, s:s, s:s}", "crv", a->crv, "kty", "EC", "x", p1, "y", p2);
    } else {
        p1 = bn_param_b64(key, OSSL_PKEY_PARAM_RSA_E, 0);
        p2 = bn_param_b64(key, OSSL_PKEY_PARAM_RSA_N, 0);
        if (p1 && p2)
            jwk = json_pack("{s:s, s:s, s:s}", "e", p1, "kty", "RSA", "n", p2);
    }
    if (!jwk)
        at_error_set_openssl(err, "cannot read the public key parameters for a JWK");
    free(p1);
    free(p2);
    return jwk;
}

static int sha256_b64(const void *p, size_t n, char *out, size_t outsz)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    at_buf b = AT_BUF_INIT;
    int rv = -1;
    if (!EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) || mdlen != sizeof(md))
        return -1;
    if (at_b64url_encode(&b, md, mdlen) == 0 && b.len < outsz) {
        memcpy(out, b.data, b.len + 1);
        rv = 0;
    }
    at_buf_free(&b);
    return rv;
}

int at_jwk_thumbprint(EVP_PKEY *key, char *out, size_t outsz, at_error *err)
{
    json_t *jwk = at_jwk_public(key, err);
    char *canon;
    int rv;
    if (!jwk)
        return -1;
    canon = at_json_canonical(jwk);
    json_decref(jwk);
    if (!canon)
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory serialising a JWK");
    rv = sha256_b64(canon, strlen(canon), out, outsz);
    free(canon);
    if (rv != 0)
        return at_error_set(err, AT_ERR_INTERNAL, "JWK thumbprint does not fit in %zu bytes", outsz);
    return 0;
}

static int b64_member(const json_t *jwk, const char *name, at_buf *out)
{
    const char *s = at_json_str(jwk, name);
    return s && *s ? at_b64url_decode(out, s, strlen(s)) : -1;
}

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) > 0 &&
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *ec_from_jwk(const json_t *jwk, at_error *err)
{
    const char *crv = at_json_str(jwk, "crv");
    const jws_alg *a = crv && strcmp(crv, "P-256") == 0 ? &alg_es256 :
                       crv && strcmp(crv, "P-384") == 0 ? &alg_es384 : NULL;
    at_buf x = AT_BUF_INIT, y = AT_BUF_INIT, pt = AT_BUF_INIT;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *chk = NULL;
    if (!a) {
        at_error_set(err, AT_ERR_PARSE, "JWK curve \"%s\" is not supported (P-256, P-384)",
                     crv ? crv : "(missing)");
        return NULL;
    }
    if (b64_member(jwk, "x", &x) || b64_member(jwk, "y", &y) || x.len != a->coord ||
        y.len != a->coord) {
        at_error_set(err, AT_ERR_PARSE, "JWK x/y are not %zu-byte base64url values", a->coord);
        goto done;
    }
    if (at_buf_append(&pt, "\x04", 1) || at_buf_append(&pt, x.data, x.len) ||
        at_buf_append(&pt, y.data, y.len) || !(bld = OSSL_PARAM_BLD_new()) ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, a->crv, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt.data, pt.len)) {
        at_error_set_openssl(err, "out of memory importing a JWK");
        goto done;
    }
    pkey = pkey_from_params("EC", bld);
    /* fromdata does not check that the point is on the curve; a verifier
     * must, or an invalid-curve key could be smuggled in. */
    if (pkey && (!(chk = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL)) ||
                 EVP_PKEY_public_check(chk) != 1)) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    if (!pkey)
        at_error_set_openssl(err, "JWK is not a valid %s public key", a->crv);
done:
    EVP_PKEY_CTX_free(chk);
    OSSL_PARAM_BLD_free(bld);
    at_buf_free(&x);
    at_buf_free(&y);
    at_buf_free(&pt);
    return pkey;
}

static EVP_PKEY *rsa_from_jwk(const json_t *jwk, at_error *err)
{
    at_buf n = AT_BUF_INIT, e = AT_BUF_INIT;
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pkey = NULL;
    if (b64_member(jwk, "n", &n) || b64_member(jwk, "e", &e) || n.len > 2048 || e.len > 16) {
        at_error_set(err, AT_ERR_PARSE, "JWK n/e are not base64url integers of a usable size");
        goto done;
    }
    if (!(bn_n = BN_bin2bn((unsigned char *)n.data, (int)n.len, NULL)) ||
        !(bn_e = BN_bin2bn((unsigned char *)e.data, (int)e.len, NULL)) ||
        !(bld = OSSL_PARAM_BLD_new()) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e)) {
        at_error_set_openssl(err, "out of memory importing a JWK");
        goto done;
    }
    if (!(pkey = pkey_from_params("RSA", bld)))
        at_error_set_openssl(err, "JWK is not a valid RSA public key");
done:
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    at_buf_free(&n);
    at_buf_free(&e);
    return pkey;
}

EVP_PKEY *at_jwk_to_pkey(const json_t *jwk, at_error *err)
{
    const char *kty = at_json_str(jwk, "kty");
    if (kty && strcmp(kty, "EC") == 0)
        return ec_from_jwk(jwk, err);
    if (kty && strcmp(kty, "RSA") == 0)
        return rsa_from_jwk(jwk, err);
    at_error_set(err, AT_ERR_PARSE, "JWK key type \"%s\" is not supported (EC, RSA)",
                 kty ? kty : "(missing)");
    return NULL;
}

/* ----------------------------------------------------- key authorization */

char *at_key_authorization(const char *token, EVP_PKEY *account_key, at_error *err)
{
    char tp[64];
    at_buf b = AT_BUF_INIT;
    size_t n = token ? strlen(token) : 0;
    /* The token comes from the CA and ends up in URL paths and in the live
     * table: only the base64url alphabet is safe to carry along. */
    if (!at_b64url_valid(token, n) || n > AT_TOKEN_MAX) {
        at_error_set(err, AT_ERR_PROTOCOL, "challenge token \"%.60s\" is not a base64url string "
                     "of at most %d characters", token ? token : "", AT_TOKEN_MAX);
        return NULL;
    }
    if (at_jwk_thumbprint(account_key, tp, sizeof(tp), err) != 0)
        return NULL;
    if (at_buf_printf(&b, "%s.%s", token, tp) != 0) {
        at_buf_free(&b);
        at_error_set(err, AT_ERR_INTERNAL, "out of memory building a key authorization");
        return NULL;
    }
    return at_buf_detach(&b);
}

char *at_dns01_txt_value(const char *key_authorization, at_error *err)
{
    char v[64];
    if (!key_authorization || !*key_authorization) {
        at_error_set(err, AT_ERR_INTERNAL, "empty key authorization for dns-01");
        return NULL;
    }
    if (sha256_b64(key_authorization, strlen(key_authorization), v, sizeof(v)) != 0) {
        at_error_set_openssl(err, "cannot hash the key authorization for dns-01");
        return NULL;
    }
    char *s = strdup(v);
    if (!s)
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    return s;
}

/* ------------------------------------------------------------------ JWS */

/* "<b64url(header)>.<b64url(payload)>" into in; *dot is the index of '.'.
 * These exact characters are signed and, split at the dot, sent. */
static int signing_input(const json_t *hdr, const void *payload, size_t plen, at_buf *in,
                         size_t *dot)
{
    char *h = at_json_compact(hdr);
    int rv = -1;
    if (!h)
        return -1;
    if (at_b64url_encode(in, h, strlen(h)) == 0) {
        *dot = in->len;
        if (at_buf_append(in, ".", 1) == 0 && at_b64url_encode(in, payload, plen) == 0)
            rv = 0;
    }
    free(h);
    return rv;
}

/* DER ECDSA-Sig-Value -> fixed-size R||S (RFC 7518 §3.4). */
static int ecdsa_der_to_raw(const unsigned char *der, size_t derlen, size_t coord,
                            unsigned char *raw)
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
    const BIGNUM *r, *s;
    int rv = -1;
    if (!sig)
        return -1;
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2binpad(r, raw, (int)coord) == (int)coord &&
        BN_bn2binpad(s, raw + coord, (int)coord) == (int)coord)
        rv = 0;
    ECDSA_SIG_free(sig);
    return rv;
}

/* Fixed-size R||S -> DER, for verification. Malloc'd *der. */
static int ecdsa_raw_to_der(const unsigned char *raw, size_t coord, unsigned char **der,
                            size_t *derlen)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, (int)coord, NULL), *s = BN_bin2bn(raw + coord, (int)coord, NULL);
    int n = -1;
    *der = NULL;
    if (sig && r && s && ECDSA_SIG_set0(sig, r, s)) {
        r = s = NULL;
        n = i2d_ECDSA_SIG(sig, der);
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    if (n <= 0)
        return -1;
    *derlen = (size_t)n;
    return 0;
}

static int sign_bytes(EVP_PKEY *key, const jws_alg *a, const void *in, size_t inlen,
                      at_buf *sig_b64, at_error *err)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *sig = NULL, raw[2 * 66];
    size_t siglen = 0;
    int rv = -1;
    if (!md || EVP_DigestSignInit_ex(md, NULL, a->digest, NULL, NULL, key, NULL) != 1 ||
        EVP_DigestSign(md, NULL, &siglen, in, inlen) != 1 || !(sig = malloc(siglen)) ||
        EVP_DigestSign(md, sig, &siglen, in, inlen) != 1) {
        at_error_set_openssl(err, "signing a JWS with %s failed", a->name);
        goto done;
    }
    if (a->coord) {
        if (ecdsa_der_to_raw(sig, siglen, a->coord, raw) != 0) {
            at_error_set(err, AT_ERR_CRYPTO, "unexpected ECDSA signature from OpenSSL");
            goto done;
        }
        rv = at_b64url_encode(sig_b64, raw, 2 * a->coord);
    } else {
        rv = at_b64url_encode(sig_b64, sig, siglen);
    }
    if (rv != 0)
        at_error_set(err, AT_ERR_INTERNAL, "out of memory encoding a signature");
done:
    free(sig);
    EVP_MD_CTX_free(md);
    return rv;
}

/* Assemble {"protected":..,"payload":..,"signature":..} from the signing
 * input split at its dot: the very characters that were signed. */
static int flattened(const at_buf *in, size_t dot, const at_buf *sig, at_buf *out)
{
    return at_buf_puts(out, "{\"protected\":\"") || at_buf_append(out, in->data, dot) ||
           at_buf_puts(out, "\",\"payload\":\"") ||
           at_buf_append(out, in->data + dot + 1, in->len - dot - 1) ||
           at_buf_puts(out, "\",\"signature\":\"") || at_buf_append(out, sig->data, sig->len) ||
           at_buf_puts(out, "\"}") ? -1 : 0;
}

static json_t *jws_header(EVP_PKEY *key, const jws_alg *a, const char *kid, const char *nonce,
                          const char *url, at_error *err)
{
    json_t *hdr = json_object(), *jwk = NULL;
    if (!hdr)
        goto oom;
    if (json_object_set_new(hdr, "alg", json_string(a->name)))
        goto oom;
    if (kid) {
        if (json_object_set_new(hdr, "kid", json_string(kid)))
            goto oom;
    } else {
        if (!(jwk = at_jwk_public(key, err)))
            goto fail;
        if (json_object_set_new(hdr, "jwk", jwk))
            goto oom;
    }
    if (nonce && json_object_set_new(hdr, "nonce", json_string(nonce)))
        goto oom;
    if (json_object_set_new(hdr, "url", json_string(url)))
        goto oom;
    return hdr;
oom:
    /* json_string() returns NULL for invalid UTF-8 as well as OOM. */
    at_error_set(err, AT_ERR_INTERNAL, "cannot build a JWS header (out of memory or a "
                 "kid/nonce/URL that is not UTF-8)");
fail:
    json_decref(hdr);
    return NULL;
}

int at_jws_sign(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
                const char *payload, at_buf *out, at_error *err)
{
    const jws_alg *a = alg_of(key);
    at_buf in = AT_BUF_INIT, sig = AT_BUF_INIT;
    json_t *hdr;
    size_t dot = 0;
    int rv = -1;
    if (!a)
        return at_error_set(err, AT_ERR_CRYPTO, "cannot sign a JWS with this key: use an EC "
                            "P-256/P-384 or RSA (2048 bits or more) account key");
    if (!url || !*url)
        return at_error_set(err, AT_ERR_INTERNAL, "JWS without a URL");
    if (!(hdr = jws_header(key, a, kid, nonce, url, err)))
        return -1;
    if (!payload)
        payload = "";
    if (signing_input(hdr, payload, strlen(payload), &in, &dot) != 0) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory encoding a JWS");
        goto done;
    }
    if (sign_bytes(key, a, in.data, in.len, &sig, err) != 0)
        goto done;
    if (flattened(&in, dot, &sig, out) != 0) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory assembling a JWS");
        goto done;
    }
    rv = 0;
done:
    json_decref(hdr);
    at_buf_free(&in);
    at_buf_free(&sig);
    return rv;
}

/* ------------------------------------------------------------------ EAB */

static const char *hmac_digest(const char *mac_alg)
{
    if (!mac_alg || strcmp(mac_alg, "HS256") == 0)
        return "SHA256";
    if (strcmp(mac_alg, "HS384") == 0)
        return "SHA384";
    if (strcmp(mac_alg, "HS512") == 0)
        return "SHA512";
    return NULL;
}

json_t *at_eab_jws(EVP_PKEY *account_key, const char *eab_kid, const char *hmac_key_b64url,
                   const char *mac_alg, const char *new_account_url, at_error *err)
{
    const char *digest = hmac_digest(mac_alg);
    at_buf key = AT_BUF_INIT, in = AT_BUF_INIT, sig = AT_BUF_INIT;
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0, dot = 0;
    json_t *hdr = NULL, *jwk = NULL, *jws = NULL;
    char *jwk_text = NULL;
    if (!mac_alg)
        mac_alg = "HS256";
    if (!digest) {
        at_error_set(err, AT_ERR_CONFIG, "external account binding algorithm \"%s\" is not "
                     "supported: use HS256, HS384 or HS512", mac_alg);
        return NULL;
    }
    if (!eab_kid || !*eab_kid) {
        at_error_set(err, AT_ERR_CONFIG, "external account binding needs the key identifier "
                     "(kid) the CA gave you");
        return NULL;
    }
    if (!hmac_key_b64url || !*hmac_key_b64url ||
        at_b64url_decode(&key, hmac_key_b64url, strlen(hmac_key_b64url)) != 0 || key.len == 0) {
        at_error_set(err, AT_ERR_CONFIG, "external account binding HMAC key for kid \"%s\" is "
                     "not base64url: paste the key exactly as the CA shows it", eab_kid);
        goto done;
    }
    if (!(jwk = at_jwk_public(account_key, err)))
        goto done;
    if (!(hdr = json_pack("{s:s, s:s, s:s}", "alg", mac_alg, "kid", eab_kid, "url",
                          new_account_url ? new_account_url : "")) ||
        !(jwk_text = at_json_compact(jwk)) ||
        signing_input(hdr, jwk_text, strlen(jwk_text), &in, &dot) != 0) {
        at_error_set(err, AT_ERR_INTERNAL, "cannot build the external account binding JWS");
        goto done;
    }
    if (!EVP_Q_mac(NULL, "HMAC", NULL, digest, NULL, key.data, key.len,
                   (unsigned char *)in.data, in.len, mac, sizeof(mac), &maclen)) {
        at_error_set_openssl(err, "computing the external account binding %s failed", mac_alg);
        goto done;
    }
    in.data[dot] = '\0';
    if (at_b64url_encode(&sig, mac, maclen) != 0 ||
        !(jws = json_pack("{s:s, s:s, s:s}", "protected", in.data, "payload", in.data + dot + 1,
                          "signature", sig.data)))
        at_error_set(err, AT_ERR_INTERNAL, "out of memory building the external account binding");
done:
    OPENSSL_cleanse(mac, sizeof(mac));
    at_buf_free_secret(&key);
    at_buf_free(&in);
    at_buf_free(&sig);
    json_decref(hdr);
    json_decref(jwk);
    free(jwk_text);
    return jws;
}

/* ------------------------------------------------------------ verify/parse */

typedef struct jws_parts {
    json_t     *doc;
    const char *prot, *payload, *sig;
} jws_parts;

static int jws_split(const char *jws_json, size_t len, jws_parts *p, at_error *err)
{
    memset(p, 0, sizeof(*p));
    if (!(p->doc = at_json_parse_object(jws_json, len, "JWS", err)))
        return -1;
    p->prot = at_json_str(p->doc, "protected");
    p->payload = at_json_str(p->doc, "payload");
    p->sig = at_json_str(p->doc, "signature");
    if (!p->prot || !p->payload || !p->sig || !at_b64url_valid(p->prot, strlen(p->prot)) ||
        !at_b64url_valid(p->sig, strlen(p->sig)) ||
        (*p->payload && !at_b64url_valid(p->payload, strlen(p->payload)))) {
        json_decref(p->doc);
        p->doc = NULL;
        return at_error_set(err, AT_ERR_PARSE, "JWS lacks base64url protected, payload or "
                            "signature members");
    }
    return 0;
}

int at_jws_parse(const char *jws_json, size_t len, json_t **protected_hdr, at_buf *payload,
                 at_error *err)
{
    jws_parts p;
    at_buf h = AT_BUF_INIT;
    json_t *hdr = NULL;
    int rv = -1;
    if (jws_split(jws_json, len, &p, err) != 0)
        return -1;
    if (at_b64url_decode(&h, p.prot, strlen(p.prot)) != 0 ||
        !(hdr = at_json_parse_object(h.data, h.len, "JWS protected header", err)))
        goto done;
    if (payload && at_b64url_decode(payload, p.payload, strlen(p.payload)) != 0) {
        at_error_set(err, AT_ERR_PARSE, "JWS payload is not base64url");
        goto done;
    }
    if (protected_hdr) {
        *protected_hdr = hdr;
        hdr = NULL;
    }
    rv = 0;
done:
    if (rv != 0 && err && err->code == AT_OK)
        at_error_set(err, AT_ERR_PARSE, "JWS protected header is not base64url JSON");
    json_decref(hdr);
    at_buf_free(&h);
    json_decref(p.doc);
    return rv;
}

static int verify_bytes(EVP_PKEY *key, const jws_alg *a, const char *in, size_t inlen,
                        const unsigned char *sig, size_t siglen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *der = NULL;
    size_t derlen = 0;
    int ok = 0;
    if (a->coord) {
        if (siglen != 2 * a->coord || ecdsa_raw_to_der(sig, a->coord, &der, &derlen) != 0)
            goto done;
        sig = der;
        siglen = derlen;
    }
    ok = md && EVP_DigestVerifyInit_ex(md, NULL, a->digest, NULL, NULL, key, NULL) == 1 &&
         EVP_DigestVerify(md, sig, siglen, (const unsigned char *)in, inlen) == 1;
done:
    OPENSSL_free(der);
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return ok;
}

int at_jws_verify(EVP_PKEY *key, const char *jws_json, size_t len)
{
    const jws_alg *a = alg_of(key);
    jws_parts p;
    json_t *hdr = NULL;
    at_buf h = AT_BUF_INIT, in = AT_BUF_INIT, sig = AT_BUF_INIT;
    const char *alg;
    int ok = 0;
    if (!a || jws_split(jws_json, len, &p, NULL) != 0)
        return 0;
    if (at_b64url_decode(&h, p.prot, strlen(p.prot)) != 0 ||
        !(hdr = at_json_parse_object(h.data, h.len, "JWS protected header", NULL)))
        goto done;
    /* The header names the algorithm; it must be the key's own (no "none",
     * no RSA/HMAC confusion). */
    alg = at_json_str(hdr, "alg");
    if (!alg || strcmp(alg, a->name) != 0)
        goto done;
    if (at_b64url_decode(&sig, p.sig, strlen(p.sig)) != 0 ||
        at_buf_printf(&in, "%s.%s", p.prot, p.payload) != 0)
        goto done;
    ok = verify_bytes(key, a, in.data, in.len, (unsigned char *)sig.data, sig.len);
done:
    json_decref(hdr);
    json_decref(p.doc);
    at_buf_free(&h);
    at_buf_free(&in);
    at_buf_free(&sig);
    return ok;
}
