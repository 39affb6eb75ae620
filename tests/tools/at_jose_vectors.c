/*
 * at_jose_vectors: print JSON test vectors made with the core's JOSE and
 * X.509 code, for a second implementation to check (the cross-check test
 * feeds them to josepy, python3-acme and cryptography).
 *
 *   at_jose_vectors [KEY.pem ...]
 *
 * Keys given on the command line are used in addition to freshly generated
 * ones (one of each supported type), so that the other side can supply keys
 * with properties it chose itself (coordinates with leading zero bytes, ...).
 * Output on stdout; exit 0 on success, 1 with a message on stderr otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "at_b64.h"
#include "at_jose.h"
#include "at_json.h"
#include "at_key.h"
#include "at_x509.h"

#define URL_BASE "https://ca.test/acme"
#define ACCOUNT_URL URL_BASE "/acct/1234"

__attribute__((noreturn)) static void die(const char *what, const at_error *err)
{
    fprintf(stderr, "at_jose_vectors: %s: %s\n", what, err ? err->msg : "out of memory");
    exit(1);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        !(buf = malloc((size_t)n + 1)) || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "at_jose_vectors: cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

static json_t *jws_vector(EVP_PKEY *k, const char *desc, const char *kid, const char *nonce,
                          const char *url, const char *payload)
{
    at_buf out = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    json_t *jws, *v;
    if (at_jws_sign(k, kid, nonce, url, payload, &out, &err) != 0)
        die("at_jws_sign", &err);
    if (!(jws = at_json_parse_object(out.data, out.len, "our JWS", &err)))
        die("parsing our own JWS", &err);
    v = json_pack("{s:s, s:s?, s:s?, s:s, s:s?, s:o}", "desc", desc, "kid", kid, "nonce", nonce,
                  "url", url, "payload", payload, "jws", jws);
    at_buf_free(&out);
    if (!v)
        die("json_pack", NULL);
    return v;
}

static json_t *keyauth_vectors(EVP_PKEY *acct)
{
    static const char *const tokens[] = { "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA",
                                          "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
                                          "a-_b" };
    json_t *arr = json_array();
    for (size_t i = 0; i < 3; i++) {
        at_error err = AT_ERROR_INIT;
        char *ka = at_key_authorization(tokens[i], acct, &err), *txt;
        if (!ka)
            die("at_key_authorization", &err);
        if (!(txt = at_dns01_txt_value(ka, &err)))
            die("at_dns01_txt_value", &err);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "token", tokens[i],
                                             "key_authorization", ka, "dns01", txt));
        free(ka);
        free(txt);
    }
    return arr;
}

static json_t *key_vector(EVP_PKEY *k, const char *source)
{
    at_buf pem = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    char tp[64];
    json_t *jwk, *jws, *v;
    if (at_key_to_pem(k, &pem, &err) != 0)
        die("at_key_to_pem", &err);
    if (!(jwk = at_jwk_public(k, &err)))
        die("at_jwk_public", &err);
    if (at_jwk_thumbprint(k, tp, sizeof(tp), &err) != 0)
        die("at_jwk_thumbprint", &err);
    jws = json_array();
    json_array_append_new(jws, jws_vector(k, "kid, nonce, JSON payload", ACCOUNT_URL, "nonce-1",
                                          URL_BASE "/new-order",
                                          "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"example.com\"}]}"));
    json_array_append_new(jws, jws_vector(k, "jwk (newAccount)", NULL, "nonce-2",
                                          URL_BASE "/new-account",
                                          "{\"termsOfServiceAgreed\":true,\"contact\":[\"mailto:a@example.com\"]}"));
    json_array_append_new(jws, jws_vector(k, "no nonce (keyChange inner)", NULL, NULL,
                                          URL_BASE "/key-change",
                                          "{\"account\":\"" ACCOUNT_URL "\",\"oldKey\":{}}"));
    json_array_append_new(jws, jws_vector(k, "POST-as-GET", ACCOUNT_URL, "nonce-3",
                                          URL_BASE "/order/7", NULL));
    v = json_pack("{s:s, s:s, s:s, s:o, s:s, s:o, s:o}", "source", source, "alg", at_jws_alg(k),
                  "private_pem", pem.data, "jwk", jwk, "thumbprint", tp, "jws", jws,
                  "key_authorizations", keyauth_vectors(k));
    at_buf_free_secret(&pem);
    if (!v)
        die("json_pack", NULL);
    return v;
}

static json_t *eab_vectors(EVP_PKEY *acct)
{
    static const char *const algs[] = { "HS256", "HS384", "HS512" };
    /* A fixed 32-byte key, as a CA would hand it out (base64url). */
    const char *hkey = "c2VjcmV0LWVhYi1obWFjLWtleS1mb3ItdGVzdGluZyE";
    json_t *arr = json_array();
    for (size_t i = 0; i < 3; i++) {
        at_error err = AT_ERROR_INIT;
        json_t *jws = at_eab_jws(acct, "eab-kid-1", hkey, algs[i], URL_BASE "/new-account", &err);
        if (!jws)
            die("at_eab_jws", &err);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:o}", "alg", algs[i],
                                             "kid", "eab-kid-1", "hmac_key", hkey, "url",
                                             URL_BASE "/new-account", "jws", jws));
    }
    return arr;
}

static json_t *alpn_vectors(EVP_PKEY *acct)
{
    static const char *const names[] = { "example.com", "www.example.org", "192.0.2.1",
                                         "2001:db8::1" };
    json_t *arr = json_array();
    at_error err = AT_ERROR_INIT;
    char *ka = at_key_authorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", acct, &err);
    if (!ka)
        die("at_key_authorization", &err);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        at_buf cert = AT_BUF_INIT, key = AT_BUF_INIT;
        if (at_tlsalpn01_cert(names[i], ka, &cert, &key, &err) != 0)
            die("at_tlsalpn01_cert", &err);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s}", "name", names[i],
                                             "key_authorization", ka, "cert_pem", cert.data,
                                             "key_pem", key.data));
        at_buf_free(&cert);
        at_buf_free_secret(&key);
    }
    free(ka);
    return arr;
}

static json_t *csr_vectors(EVP_PKEY *const *keys, size_t nkeys)
{
    static const char *const names[] = { "example.com", "*.example.com", "www.example.com",
                                         "192.0.2.1", "2001:db8::1" };
    json_t *arr = json_array(), *jn = json_array();
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        json_array_append_new(jn, json_string(names[i]));
    for (size_t k = 0; k < nkeys; k++) {
        at_buf der = AT_BUF_INIT;
        at_error err = AT_ERROR_INIT;
        char *b64;
        if (at_csr_der(keys[k], names, sizeof(names) / sizeof(names[0]), &der, &err) != 0)
            die("at_csr_der", &err);
        b64 = at_b64url_encode_str(der.data, der.len);
        json_array_append_new(arr, json_pack("{s:s, s:O, s:s}", "alg", at_jws_alg(keys[k]),
                                             "names", jn, "der_b64url", b64));
        free(b64);
        at_buf_free(&der);
    }
    json_decref(jn);
    return arr;
}

int main(int argc, char **argv)
{
    static const char *const specs[] = { "ec:P-256", "ec:P-384", "rsa:2048" };
    EVP_PKEY *keys[64];
    size_t nkeys = 0;
    json_t *out, *jkeys = json_array();
    char *text;
    for (size_t i = 0; i < 3; i++) {
        at_key_spec spec;
        at_error err = AT_ERROR_INIT;
        if (at_key_spec_parse(specs[i], &spec, &err) != 0 ||
            !(keys[nkeys] = at_key_generate(&spec, &err)))
            die(specs[i], &err);
        json_array_append_new(jkeys, key_vector(keys[nkeys], specs[i]));
        nkeys++;
    }
    for (int a = 1; a < argc; a++) {
        at_error err = AT_ERROR_INIT;
        size_t len;
        char *pem = read_file(argv[a], &len);
        if (nkeys >= sizeof(keys) / sizeof(keys[0])) {
            fprintf(stderr, "at_jose_vectors: too many keys\n");
            return 1;
        }
        if (!(keys[nkeys] = at_key_from_pem(pem, len, &err)))
            die(argv[a], &err);
        free(pem);
        json_array_append_new(jkeys, key_vector(keys[nkeys], argv[a]));
        nkeys++;
    }
    out = json_pack("{s:o, s:o, s:o, s:o}", "keys", jkeys, "eab", eab_vectors(keys[0]),
                    "tlsalpn01", alpn_vectors(keys[0]), "csr", csr_vectors(keys, nkeys));
    if (!out || !(text = at_json_pretty(out)))
        die("json", NULL);
    puts(text);
    free(text);
    json_decref(out);
    for (size_t i = 0; i < nkeys; i++)
        EVP_PKEY_free(keys[i]);
    return 0;
}
