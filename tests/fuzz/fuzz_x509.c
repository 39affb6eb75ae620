/*
 * fuzz_x509: certificate and key input (core/at_x509.c, core/at_key.c):
 * chains as a CA delivers them or as they lie in the store, DER inside
 * PEM, private keys in PEM. Everything the core reads from a certificate
 * is read: validity, serial, issuer CN, SAN names (DNS and IP), the RFC
 * 9773 id from the AKI, the chain's top issuer, the fingerprint, and
 * whether a key belongs to it.
 *
 * Input: byte 0 says what the rest is:
 *   0 PEM text as is
 *   1 one DER certificate (wrapped in PEM here, so mutations reach the DER)
 *   2 one DER private key (PKCS#8, wrapped as PRIVATE KEY)
 *   3 records (at_fuzz.h) of DER certificates, a chain
 *
 * Checks: no crash, leak or undefined behaviour; what parses is
 * consistent: a serial of lowercase hex, SAN names without NUL, a key that
 * matches a chain has the spec the core names; failures carry a printable
 * message.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/x509.h>

#include "at_b64.h"
#include "at_fuzz.h"
#include "at_key.h"
#include "at_x509.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void pem_wrap(at_buf *out, const char *label, const uint8_t *der, size_t n)
{
    at_buf b = AT_BUF_INIT;
    at_b64_encode(&b, der, n);
    at_buf_printf(out, "-----BEGIN %s-----\n", label);
    for (size_t i = 0; i < b.len; i += 64)
        at_buf_printf(out, "%.*s\n", (int)(b.len - i < 64 ? b.len - i : 64), b.data + i);
    at_buf_printf(out, "-----END %s-----\n", label);
    at_buf_free(&b);
}

static void check_info(const at_cert_info *info)
{
    size_t sl = strlen(info->serial);
    if (!memchr(info->issuer_cn, '\0', sizeof(info->issuer_cn)) ||
        !memchr(info->ari_id, '\0', sizeof(info->ari_id)) || sl == 0)
        at_fuzz_fail("certificate facts not terminated, or no serial");
    for (size_t i = 0; i < sl; i++)
        if (!strchr("0123456789abcdef", info->serial[i]) && !(i == 0 && info->serial[i] == '-'))
            at_fuzz_fail("serial '%s' is not lowercase hex", info->serial);
    for (size_t i = 0; i < info->nnames; i++)
        if (!info->names[i] || !info->names[i][0])
            at_fuzz_fail("an empty SAN name");
    if (info->ari_id[0] && (!strchr(info->ari_id, '.') ||
                            !at_b64url_valid(info->ari_id, (size_t)(strchr(info->ari_id, '.') - info->ari_id))))
        at_fuzz_fail("ARI id '%s' is not <base64url>.<base64url>", info->ari_id);
}

static void check_chain(const char *pem, size_t len, EVP_PKEY *key)
{
    at_error err = AT_ERROR_INIT;
    STACK_OF(X509) *sk = NULL;
    at_cert_info info;
    char cn[256];
    int chain_ok = at_chain_parse(pem, len, &sk, &err) == 0;

    if (!chain_ok) {
        at_fuzz_check_msg(&err, "chain");
        at_error_clear(&err);
    } else {
        if (!sk || sk_X509_num(sk) < 1)
            at_fuzz_fail("a parsed chain without certificates");
        for (int i = 0; i < sk_X509_num(sk); i++) {
            X509 *x = sk_X509_value(sk, i);
            char fp[65], id[512];
            if (at_cert_info_x509(x, &info, &err) == 0) {
                check_info(&info);
                at_cert_info_free(&info);
            } else {
                at_fuzz_check_msg(&err, "certificate");
                at_error_clear(&err);
            }
            if (at_cert_sha256_hex(x, fp) != 0 || strlen(fp) != 64)
                at_fuzz_fail("no fingerprint");
            if (at_ari_cert_id(x, id, sizeof(id), &err) != 0)
                at_error_clear(&err);
        }
        sk_X509_pop_free(sk, X509_free);
    }
    if (at_cert_info_pem(pem, len, &info, &err) == 0) {
        if (!chain_ok)
            at_fuzz_fail("at_cert_info_pem reads what at_chain_parse refuses");
        check_info(&info);
        at_cert_info_free(&info);
    } else {
        at_fuzz_check_msg(&err, "certificate info");
        at_error_clear(&err);
    }
    if (at_chain_top_issuer_cn(pem, len, cn, sizeof(cn), &err) == 0) {
        if (!chain_ok || !memchr(cn, '\0', sizeof(cn)))
            at_fuzz_fail("a top issuer from a chain that does not parse");
    } else {
        at_error_clear(&err);
    }
    if (key) {
        int m = at_key_matches_cert_pem(key, pem, len);
        if (m != 0 && m != 1)
            at_fuzz_fail("at_key_matches_cert_pem gave %d", m);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    at_fuzz_in in = { data, size };
    unsigned mode = at_fuzz_byte(&in) & 3;
    at_buf pem = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    EVP_PKEY *key;

    switch (mode) {
    case 0:
        at_buf_append(&pem, in.p, in.n);
        break;
    case 1:
        pem_wrap(&pem, "CERTIFICATE", in.p, in.n);
        break;
    case 2:
        pem_wrap(&pem, "PRIVATE KEY", in.p, in.n);
        break;
    default: {
        const uint8_t *rec;
        size_t len;
        while (at_fuzz_record(&in, &rec, &len) == 0)
            pem_wrap(&pem, "CERTIFICATE", rec, len);
        break;
    }
    }
    if (!pem.data) {
        at_buf_free(&pem);
        return 0;
    }
    key = at_key_from_pem(pem.data, pem.len, &err);
    if (key) {
        at_key_spec spec;
        if (at_key_spec_of(key, &spec) == 0) {
            at_buf out = AT_BUF_INIT;
            if (!at_key_spec_name(&spec) || !at_key_spec_slug(&spec))
                at_fuzz_fail("a supported key without a spec name");
            /* What the store would write must load again. */
            if (at_key_to_pem(key, &out, &err) != 0)
                at_fuzz_fail("a supported key does not print: %s", err.msg);
            {
                EVP_PKEY *k2 = at_key_from_pem(out.data, out.len, &err);
                if (!k2 || EVP_PKEY_eq(key, k2) != 1)
                    at_fuzz_fail("a key printed by at_key_to_pem does not load back as itself");
                EVP_PKEY_free(k2);
            }
            at_buf_free_secret(&out);
        }
    } else {
        at_fuzz_check_msg(&err, "key");
        at_error_clear(&err);
    }
    check_chain(pem.data, pem.len, key ? key : at_fuzz_key(at_fuzz_cert_key_pem));
    EVP_PKEY_free(key);
    at_buf_free(&pem);
    return 0;
}
