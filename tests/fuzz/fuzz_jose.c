/*
 * fuzz_jose: JWS and JWK input (core/at_jose.c, core/at_b64.c): flattened
 * JWS as a CA (or the fake CA in the tests) verifies them, public JWKs as
 * they arrive in a JWS header, RFC 7638 thumbprints, and the strict
 * base64url decoder every protected part goes through.
 *
 * Input: JSON text, read both as a flattened JWS and as a bare JWK.
 *
 * Checks: no crash, leak or undefined behaviour; a JWK that imports
 * exports (at_jwk_public) to the same key and has a thumbprint; a JWS that
 * verifies with a key parses; base64url is canonical: what decodes encodes
 * back to the same text; failures carry a printable message.
 */
#include <stdlib.h>
#include <string.h>

#include "at_b64.h"
#include "at_fuzz.h"
#include "at_jose.h"
#include "at_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decoding is strict, so encoding the bytes gives the text back. */
static void check_b64(const char *s)
{
    at_buf dec = AT_BUF_INIT, enc = AT_BUF_INIT;
    size_t n = strlen(s), m = n;
    while (m && s[m - 1] == '=')
        m--;
    if (at_b64url_decode(&dec, s, n) == 0) {
        at_b64url_encode(&enc, dec.data ? dec.data : "", dec.len);
        if (enc.len != m || (m && memcmp(enc.data, s, m) != 0))
            at_fuzz_fail("base64url '%.80s' decodes, but encodes back as '%.80s'", s, at_buf_str(&enc));
    } else if (dec.len) {
        at_fuzz_fail("a failed base64url decode appended %zu bytes", dec.len);
    }
    at_buf_free(&dec);
    at_buf_free(&enc);
}

static void check_jwk(const json_t *jwk)
{
    at_error err = AT_ERROR_INIT;
    EVP_PKEY *k = at_jwk_to_pkey(jwk, &err), *k2;
    json_t *pub;
    char tp[64];

    if (!k) {
        if (err.code == AT_OK)
            at_fuzz_fail("a JWK refused without an error");
        at_fuzz_check_msg(&err, "jwk");
        at_error_clear(&err);
        return;
    }
    if (at_jwk_thumbprint(k, tp, sizeof(tp), &err) != 0)
        at_error_clear(&err);        /* an RSA key of an unusual size may not be supported */
    pub = at_jwk_public(k, &err);
    if (pub) {
        k2 = at_jwk_to_pkey(pub, &err);
        if (!k2 || EVP_PKEY_eq(k, k2) != 1)
            at_fuzz_fail("a JWK exported by at_jwk_public does not import as the same key: %s", err.msg);
        EVP_PKEY_free(k2);
        json_decref(pub);
    }
    (void)at_jws_alg(k);
    at_error_clear(&err);
    EVP_PKEY_free(k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *txt = (const char *)data;
    at_error err = AT_ERROR_INIT;
    json_t *hdr = NULL, *doc;
    at_buf payload = AT_BUF_INIT;

    if (at_jws_parse(txt, size, &hdr, &payload, &err) == 0) {
        const json_t *jwk = json_object_get(hdr, "jwk");
        if (!json_is_object(hdr))
            at_fuzz_fail("a parsed JWS without a protected header object");
        if (json_is_object(jwk)) {
            EVP_PKEY *k = at_jwk_to_pkey(jwk, NULL);
            check_jwk(jwk);
            if (k)
                (void)at_jws_verify(k, txt, size);
            EVP_PKEY_free(k);
        }
    } else {
        if (at_jws_verify(at_fuzz_key(at_fuzz_account_key_pem), txt, size) == 1)
            at_fuzz_fail("a JWS verifies that does not parse: %s", err.msg);
        at_fuzz_check_msg(&err, "jws");
    }
    (void)at_jws_verify(at_fuzz_key(at_fuzz_account_key_pem), txt, size);
    (void)at_jws_verify(at_fuzz_key(at_fuzz_other_key_pem), txt, size);
    json_decref(hdr);
    at_buf_free(&payload);
    at_error_clear(&err);

    doc = at_json_parse(txt, size, "jwk", NULL);
    if (json_is_object(doc)) {
        const char *k;
        json_t *v;
        check_jwk(doc);
        json_object_foreach(doc, k, v)
            if (json_is_string(v))
                check_b64(json_string_value(v));
    }
    json_decref(doc);
    return 0;
}
