/*
 * test_x509: names, CSRs, certificate facts, chains, RFC 9773 ids (the
 * RFC's own §4.1 example), RFC 8737 TLS-ALPN-01 and placeholder certificates.
 * Everything we produce is parsed back with OpenSSL and checked field by field.
 */
#include "at_test.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "at_b64.h"
#include "at_key.h"
#include "at_time.h"
#include "at_x509.h"

/* ------------------------------------------------------------ test tools */

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

static X509 *pem_cert(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    AT_CHECK(x != NULL);
    return x;
}

/* A certificate made here, with OpenSSL directly. aki may be NULL. */
typedef struct mk {
    const char *issuer_cn, *subject_cn, *serial_hex, *not_before, *not_after;
    const char *const *dns;
    const char *ip;         /* one IP SAN or NULL */
    const unsigned char *aki;
    size_t akilen;
} mk;

static X509 *make_cert(const mk *m, EVP_PKEY *key, EVP_PKEY *signer)
{
    X509 *x = X509_new();
    BIGNUM *bn = NULL;
    ASN1_INTEGER *serial;
    GENERAL_NAMES *gens = GENERAL_NAMES_new();
    X509_set_version(x, X509_VERSION_3);
    BN_hex2bn(&bn, m->serial_hex);
    serial = BN_to_ASN1_INTEGER(bn, NULL);
    X509_set_serialNumber(x, serial);
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    ASN1_TIME_set_string_X509(X509_getm_notBefore(x), m->not_before);
    ASN1_TIME_set_string_X509(X509_getm_notAfter(x), m->not_after);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "O", MBSTRING_ASC,
                               (const unsigned char *)"Test", -1, -1, 0);
    if (m->subject_cn)
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *)m->subject_cn, -1, -1, 0);
    X509_NAME_add_entry_by_txt(X509_get_issuer_name(x), "O", MBSTRING_ASC,
                               (const unsigned char *)"Test", -1, -1, 0);
    if (m->issuer_cn)
        X509_NAME_add_entry_by_txt(X509_get_issuer_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *)m->issuer_cn, -1, -1, 0);
    X509_set_pubkey(x, key);
    for (size_t i = 0; m->dns && m->dns[i]; i++) {
        GENERAL_NAME *gn = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        ASN1_STRING_set(s, m->dns[i], -1);
        GENERAL_NAME_set0_value(gn, GEN_DNS, s);
        sk_GENERAL_NAME_push(gens, gn);
    }
    if (m->ip) {
        unsigned char raw[16];
        int fam = strchr(m->ip, ':') ? AF_INET6 : AF_INET;
        GENERAL_NAME *gn = GENERAL_NAME_new();
        ASN1_OCTET_STRING *s = ASN1_OCTET_STRING_new();
        inet_pton(fam, m->ip, raw);
        ASN1_OCTET_STRING_set(s, raw, fam == AF_INET ? 4 : 16);
        GENERAL_NAME_set0_value(gn, GEN_IPADD, s);
        sk_GENERAL_NAME_push(gens, gn);
    }
    if (sk_GENERAL_NAME_num(gens) > 0)
        X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, 0);
    GENERAL_NAMES_free(gens);
    if (m->aki) {
        AUTHORITY_KEYID *ak = AUTHORITY_KEYID_new();
        ak->keyid = ASN1_OCTET_STRING_new();
        ASN1_OCTET_STRING_set(ak->keyid, m->aki, (int)m->akilen);
        X509_add1_ext_i2d(x, NID_authority_key_identifier, ak, 0, 0);
        AUTHORITY_KEYID_free(ak);
    }
    AT_CHECK(X509_sign(x, signer, EVP_sha256()) > 0);
    return x;
}

static void append_pem(at_buf *b, X509 *x)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *d;
    long n;
    PEM_write_bio_X509(bio, x);
    n = BIO_get_mem_data(bio, &d);
    at_buf_append(b, d, (size_t)n);
    BIO_free(bio);
}

static time_t t_of(const char *rfc3339)
{
    time_t t = 0;
    AT_CHECK(at_time_parse(rfc3339, &t) == 0);
    return t;
}

/* The extension with this OID, or NULL. */
static X509_EXTENSION *ext_by_oid(X509 *x, const char *oid_text, int *count)
{
    ASN1_OBJECT *oid = OBJ_txt2obj(oid_text, 1);
    X509_EXTENSION *found = NULL;
    *count = 0;
    for (int i = 0; i < X509_get_ext_count(x); i++) {
        X509_EXTENSION *e = X509_get_ext(x, i);
        if (OBJ_cmp(X509_EXTENSION_get_object(e), oid) == 0) {
            found = e;
            (*count)++;
        }
    }
    ASN1_OBJECT_free(oid);
    return found;
}

/* SAN entries as "DNS:x" / "IP:y" strings joined by ",". */
static void san_text(const GENERAL_NAMES *gens, char *out, size_t size)
{
    out[0] = '\0';
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
        int type;
        const ASN1_STRING *v = GENERAL_NAME_get0_value(gn, &type);
        char item[300], ip[64];
        if (type == GEN_DNS)
            snprintf(item, sizeof(item), "DNS:%.*s", ASN1_STRING_length(v),
                     (const char *)ASN1_STRING_get0_data(v));
        else if (type == GEN_IPADD)
            snprintf(item, sizeof(item), "IP:%s",
                     inet_ntop(ASN1_STRING_length(v) == 4 ? AF_INET : AF_INET6,
                               ASN1_STRING_get0_data(v), ip, sizeof(ip)) ? ip : "?");
        else
            snprintf(item, sizeof(item), "other:%d", type);
        if (out[0])
            strncat(out, ",", size - strlen(out) - 1);
        strncat(out, item, size - strlen(out) - 1);
    }
}

/* ------------------------------------------------------------------ names */

static void t_name_normalize_valid(void)
{
    static const char *const cases[][2] = {
        { "example.com", "example.com" },
        { "Example.COM", "example.com" },
        { "example.com.", "example.com" },
        { "*.Example.com", "*.example.com" },
        { "www-1.a-b.example", "www-1.a-b.example" },
        { "xn--bcher-kva.example", "xn--bcher-kva.example" },
        { "localhost", "localhost" },
        { "192.0.2.1", "192.0.2.1" },
        { "2001:DB8::1", "2001:db8::1" },
        { "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1" },
        { "[::1]", "::1" },
        { "a1.example.com", "a1.example.com" },
        { "123.example.com", "123.example.com" },
    };
    char out[256];
    at_error err = AT_ERROR_INIT;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rv = at_name_normalize(cases[i][0], out, sizeof(out), &err);
        AT_CHECK_MSG(rv == 0, "\"%s\" rejected: %s", cases[i][0], err.msg);
        if (rv == 0)
            AT_CHECK_STR(out, cases[i][1]);
    }
    /* Limits: a 63-character label and a 253-character name are fine. */
    char name[300];
    memset(name, 'a', 63);
    strcpy(name + 63, ".com");
    AT_CHECK_OK(at_name_normalize(name, out, sizeof(out), &err), &err);
    memset(name, 0, sizeof(name));
    for (int i = 0; i < 4; i++) {
        memset(name + i * 64, 'b', 63);
        name[i * 64 + 63] = '.';
    }
    name[253] = '\0';                         /* 3 x 64 + 61 = 253 characters */
    name[252] = 'c';
    AT_CHECK_INT(strlen(name), 253);
    AT_CHECK_OK(at_name_normalize(name, out, sizeof(out), &err), &err);
    AT_CHECK_INT(strlen(out), 253);
}

static void t_name_normalize_invalid(void)
{
    static const struct { const char *name, *msg; } cases[] = {
        { "", "empty" },
        { "exa mple.com", "spaces" },
        { " example.com", "spaces" },
        { "a..b.com", "empty label" },
        { ".example.com", "empty label" },
        { "-a.com", "'-'" },
        { "a-.com", "'-'" },
        { "a_b.com", "'_'" },
        { "example.com/path", "'/'" },
        { "user@example.com", "'@'" },
        { "*.*.example.com", "wildcard" },
        { "foo.*.com", "wildcard" },
        { "*example.com", "wildcard" },
        { "*", "wildcard" },
        { "b\xc3\xbc" "cher.de", "xn--" },
        { "1.2.3", "IP address" },
        { "256.1.1.1", "IP address" },
        { "10.0.0.300", "IP address" },
        { "[example.com]", "brackets" },
        { "2001:db8::1::2", "IPv6" },
        { "example.com:443", "IPv6" },
        { "example.com..", "empty label" },
    };
    char out[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        at_error err = AT_ERROR_INIT;
        int rv = at_name_normalize(cases[i].name, out, sizeof(out), &err);
        AT_CHECK_MSG(rv == -1, "\"%s\" accepted as \"%s\"", cases[i].name, out);
        AT_CHECK_INT(err.code, AT_ERR_CONFIG);
        AT_CHECK_CONTAINS(err.msg, cases[i].msg);
        if (cases[i].name[0] && strlen(cases[i].name) < 60)
            AT_CHECK_CONTAINS(err.msg, cases[i].name);
    }
    /* Over the limits. */
    char name[300];
    at_error err = AT_ERROR_INIT;
    memset(name, 'a', 64);
    strcpy(name + 64, ".com");
    AT_CHECK(at_name_normalize(name, out, sizeof(out), &err) == -1);
    AT_CHECK_CONTAINS(err.msg, "63");
    memset(name, 0, sizeof(name));
    for (int i = 0; i < 4; i++) {
        memset(name + i * 64, 'b', 63);
        name[i * 64 + 63] = '.';
    }
    name[254] = '\0';
    name[253] = 'c';
    name[252] = 'c';
    AT_CHECK(at_name_normalize(name, out, sizeof(out), &err) == -1);
    AT_CHECK_CONTAINS(err.msg, "253");
    AT_CHECK(at_name_normalize(NULL, out, sizeof(out), &err) == -1);
}

static void t_name_is_ip(void)
{
    AT_CHECK(at_name_is_ip("192.0.2.1"));
    AT_CHECK(at_name_is_ip("::1"));
    AT_CHECK(at_name_is_ip("2001:db8::1"));
    AT_CHECK(at_name_is_ip("::ffff:192.0.2.1"));
    AT_CHECK(!at_name_is_ip("example.com"));
    AT_CHECK(!at_name_is_ip("1.2.3"));
    AT_CHECK(!at_name_is_ip("256.0.0.1"));
    AT_CHECK(!at_name_is_ip(""));
    AT_CHECK(!at_name_is_ip(NULL));
}

static void t_name_matches(void)
{
    AT_CHECK(at_name_matches("example.com", "example.com"));
    AT_CHECK(at_name_matches("example.com", "EXAMPLE.com"));
    AT_CHECK(at_name_matches("example.com", "example.com."));
    AT_CHECK(at_name_matches("*.example.com", "www.example.com"));
    AT_CHECK(at_name_matches("*.example.com", "WWW.Example.COM"));
    AT_CHECK(at_name_matches("*.example.com", "a-b.example.com."));
    AT_CHECK(!at_name_matches("*.example.com", "example.com"));
    AT_CHECK(!at_name_matches("*.example.com", "a.b.example.com"));
    AT_CHECK(!at_name_matches("*.example.com", ".example.com"));
    AT_CHECK(!at_name_matches("*.example.com", "wwwexample.com"));
    AT_CHECK(!at_name_matches("*.example.com", "www.example.org"));
    AT_CHECK(!at_name_matches("*.example.com", "www.notexample.com"));
    AT_CHECK(!at_name_matches("www.example.com", "example.com"));
    AT_CHECK(!at_name_matches("example.com", "www.example.com"));
    AT_CHECK(at_name_matches("192.0.2.1", "192.0.2.1"));
    AT_CHECK(!at_name_matches("192.0.2.1", "192.0.2.10"));
    AT_CHECK(!at_name_matches("*.0.2.1", "192.0.2.1"));
    AT_CHECK(!at_name_matches("", "x"));
    AT_CHECK(!at_name_matches(NULL, "x"));
}

/* -------------------------------------------------------------------- CSR */

static void check_csr(const char *spec, const char *const *names, size_t n, const char *expect_san,
                      int expect_sig_nid)
{
    EVP_PKEY *k = gen(spec);
    at_buf der = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    const unsigned char *p;
    X509_REQ *req;
    STACK_OF(X509_EXTENSION) *exts;
    GENERAL_NAMES *gens = NULL;
    char san[1024];
    AT_CHECK_OK(at_csr_der(k, names, n, &der, &err), &err);
    p = (const unsigned char *)der.data;
    req = d2i_X509_REQ(NULL, &p, (long)der.len);
    AT_CHECK(req != NULL);
    if (!req)
        goto done;
    AT_CHECK(p == (const unsigned char *)der.data + der.len);
    AT_CHECK_INT(X509_REQ_get_version(req), 0);
    AT_CHECK_INT(X509_NAME_entry_count(X509_REQ_get_subject_name(req)), 0);
    AT_CHECK(EVP_PKEY_eq(X509_REQ_get0_pubkey(req), k) == 1);
    AT_CHECK_INT(X509_REQ_verify(req, k), 1);
    AT_CHECK_INT(X509_REQ_get_signature_nid(req), expect_sig_nid);
    exts = X509_REQ_get_extensions(req);
    AT_CHECK_INT(sk_X509_EXTENSION_num(exts), 1);
    gens = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
    san_text(gens, san, sizeof(san));
    AT_CHECK_STR(san, expect_san);
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
done:
    at_buf_free(&der);
    EVP_PKEY_free(k);
}

static void t_reverse_names(void)
{
    char out[64];
    AT_CHECK_INT(at_name_from_reverse("1.0.0.127.in-addr.arpa", out, sizeof(out)), 1);
    AT_CHECK_STR(out, "127.0.0.1");
    AT_CHECK_INT(at_name_from_reverse("4.3.2.192.IN-ADDR.ARPA.", out, sizeof(out)), 1);
    AT_CHECK_STR(out, "192.2.3.4");
    /* 2001:db8::1 reversed, per RFC 8738 §6 */
    AT_CHECK_INT(at_name_from_reverse(
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", out, sizeof(out)), 1);
    AT_CHECK_STR(out, "2001:db8::1");
    AT_CHECK_INT(at_name_from_reverse("example.com", out, sizeof(out)), 0);
    AT_CHECK_INT(at_name_from_reverse("1.0.0.256.in-addr.arpa", out, sizeof(out)), -1);
    AT_CHECK_INT(at_name_from_reverse("1.0.127.in-addr.arpa", out, sizeof(out)), -1);
    AT_CHECK_INT(at_name_from_reverse("x.0.0.127.in-addr.arpa", out, sizeof(out)), -1);
    AT_CHECK_INT(at_name_from_reverse("1.0.ip6.arpa", out, sizeof(out)), -1);
    AT_CHECK_INT(at_name_alpn_key("0:0:0:0:0:0:0:1", out, sizeof(out)), 0);
    AT_CHECK_STR(out, "::1");
    AT_CHECK_INT(at_name_alpn_key("www.example.com", out, sizeof(out)), 0);
    AT_CHECK_STR(out, "www.example.com");
}

static void t_csr(void)
{
    static const char *const names[] = { "example.com", "*.Example.com", "192.0.2.1",
                                         "2001:DB8::1", "www.example.com." };
    check_csr("ec:P-256", names, 5,
              "DNS:example.com,DNS:*.example.com,IP:192.0.2.1,IP:2001:db8::1,DNS:www.example.com",
              NID_ecdsa_with_SHA256);
    check_csr("ec:P-384", names, 1, "DNS:example.com", NID_ecdsa_with_SHA384);
    check_csr("rsa:2048", names + 2, 1, "IP:192.0.2.1", NID_sha256WithRSAEncryption);

    /* A long name that could never be a CN still goes into the SAN. */
    char longname[200];
    const char *ln[1] = { longname };
    char expect[220];
    memset(longname, 'a', 60);
    strcpy(longname + 60, ".");
    memset(longname + 61, 'b', 60);
    strcpy(longname + 121, ".example.com");
    snprintf(expect, sizeof(expect), "DNS:%s", longname);
    check_csr("ec:P-256", ln, 1, expect, NID_ecdsa_with_SHA256);

    /* Errors. */
    EVP_PKEY *k = gen("ec:P-256");
    at_buf der = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    static const char *const bad[] = { "example.com", "bad name" };
    AT_CHECK(at_csr_der(k, bad, 2, &der, &err) == -1);
    AT_CHECK_CONTAINS(err.msg, "bad name");
    AT_CHECK(at_csr_der(k, bad, 0, &der, &err) == -1);
    AT_CHECK(at_csr_der(NULL, bad, 1, &der, &err) == -1);
    AT_CHECK_INT(der.len, 0);
    at_buf_free(&der);
    EVP_PKEY_free(k);
}

/* ---------------------------------------------------- certificate facts */

static const unsigned char rfc9773_aki[] = {
    0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3,
    0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4,
};

static void t_ari_cert_id_rfc9773(void)
{
    /* RFC 9773 §4.1: AKI keyIdentifier 69:88:5B:..:D4 and serial
     * 0x87654321 (DER 02 05 00 87 65 43 21) give this identifier. */
    EVP_PKEY *k = gen("ec:P-256");
    static const char *const dns[] = { "example.com", NULL };
    mk m = { "Issuer", NULL, "87654321", "20250101000000Z", "20250401000000Z", dns, NULL,
             rfc9773_aki, sizeof(rfc9773_aki) };
    X509 *x = make_cert(&m, k, k);
    char id[128];
    at_error err = AT_ERROR_INIT;
    at_cert_info info;
    AT_CHECK_OK(at_ari_cert_id(x, id, sizeof(id), &err), &err);
    AT_CHECK_STR(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    AT_CHECK_OK(at_cert_info_x509(x, &info, &err), &err);
    AT_CHECK_STR(info.ari_id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    AT_CHECK_STR(info.serial, "87654321");
    at_cert_info_free(&info);
    /* Too small a buffer fails cleanly. */
    AT_CHECK(at_ari_cert_id(x, id, 10, &err) == -1);
    AT_CHECK_STR(id, "");
    X509_free(x);

    /* A serial without the high bit set carries no leading zero. */
    m.serial_hex = "0A1B";
    x = make_cert(&m, k, k);
    AT_CHECK_OK(at_ari_cert_id(x, id, sizeof(id), &err), &err);
    AT_CHECK_STR(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.Chs");
    X509_free(x);

    /* No AKI: no id, and at_cert_info still works. */
    m.aki = NULL;
    x = make_cert(&m, k, k);
    AT_CHECK(at_ari_cert_id(x, id, sizeof(id), &err) == -1);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    AT_CHECK_OK(at_cert_info_x509(x, &info, &err), &err);
    AT_CHECK_STR(info.ari_id, "");
    at_cert_info_free(&info);
    X509_free(x);
    EVP_PKEY_free(k);
}

/* root -> intermediate -> leaf, PEM leaf first. */
static void build_chain(at_buf *pem, int with_root, EVP_PKEY **leaf_key_out)
{
    EVP_PKEY *rk = gen("ec:P-256"), *ik = gen("ec:P-256"), *lk = gen("ec:P-256");
    static const char *const dns[] = { "example.com", "www.example.com", NULL };
    mk root = { "Test Root X1", "Test Root X1", "01", "20240101000000Z", "20340101000000Z",
                NULL, NULL, NULL, 0 };
    mk inter = { "Test Root X1", "Test Intermediate E9", "02", "20240101000000Z",
                 "20290101000000Z", NULL, NULL, NULL, 0 };
    mk leaf = { "Test Intermediate E9", "example.com", "00FA0102030405060708090A0B0C0D0E0F101112",
                "20250102030405Z", "20250402030404Z", dns, "2001:db8::7", rfc9773_aki,
                sizeof(rfc9773_aki) };
    X509 *r = make_cert(&root, rk, rk), *i = make_cert(&inter, ik, rk), *l = make_cert(&leaf, lk, ik);
    append_pem(pem, l);
    at_buf_puts(pem, "Explanatory text between blocks is allowed by RFC 7468.\n");
    append_pem(pem, i);
    if (with_root)
        append_pem(pem, r);
    X509_free(r);
    X509_free(i);
    X509_free(l);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(ik);
    if (leaf_key_out)
        *leaf_key_out = lk;
    else
        EVP_PKEY_free(lk);
}

static void t_cert_info(void)
{
    at_buf pem = AT_BUF_INIT;
    at_cert_info info;
    at_error err = AT_ERROR_INIT;
    EVP_PKEY *lk = NULL, *other = gen("ec:P-256");
    build_chain(&pem, 0, &lk);
    AT_CHECK_OK(at_cert_info_pem(pem.data, pem.len, &info, &err), &err);
    AT_CHECK_INT(info.not_before, t_of("2025-01-02T03:04:05Z"));
    AT_CHECK_INT(info.not_after, t_of("2025-04-02T03:04:04Z"));
    AT_CHECK_STR(info.serial, "fa0102030405060708090a0b0c0d0e0f101112");
    AT_CHECK_STR(info.issuer_cn, "Test Intermediate E9");
    AT_CHECK_INT(info.nnames, 3);
    if (info.nnames == 3) {
        AT_CHECK_STR(info.names[0], "example.com");
        AT_CHECK_STR(info.names[1], "www.example.com");
        AT_CHECK_STR(info.names[2], "2001:db8::7");
    }
    AT_CHECK_STR(info.ari_id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.APoBAgMEBQYHCAkKCwwNDg8QERI");
    at_cert_info_free(&info);
    AT_CHECK_INT(info.nnames, 0);
    /* Key matching against the leaf. */
    AT_CHECK_INT(at_key_matches_cert_pem(lk, pem.data, pem.len), 1);
    AT_CHECK_INT(at_key_matches_cert_pem(other, pem.data, pem.len), 0);
    AT_CHECK_INT(at_key_matches_cert_pem(lk, "junk", 4), 0);
    {
        STACK_OF(X509) *sk = NULL;
        AT_CHECK_OK(at_chain_parse(pem.data, pem.len, &sk, &err), &err);
        if (sk) {
            AT_CHECK_INT(at_key_matches_cert(lk, sk_X509_value(sk, 0)), 1);
            AT_CHECK_INT(at_key_matches_cert(other, sk_X509_value(sk, 0)), 0);
            /* The intermediate is not the leaf's key either. */
            AT_CHECK_INT(at_key_matches_cert(lk, sk_X509_value(sk, 1)), 0);
            sk_X509_pop_free(sk, X509_free);
        }
        AT_CHECK_INT(at_key_matches_cert(lk, NULL), 0);
        AT_CHECK_INT(at_key_matches_cert(NULL, NULL), 0);
    }
    /* Errors. */
    AT_CHECK(at_cert_info_pem("", 0, &info, &err) == -1);
    AT_CHECK(at_cert_info_pem("hello", 5, &info, &err) == -1);
    AT_CHECK_CONTAINS(err.msg, "BEGIN CERTIFICATE");
    at_buf_free(&pem);
    EVP_PKEY_free(lk);
    EVP_PKEY_free(other);
}

static void t_chain(void)
{
    at_buf pem = AT_BUF_INIT, bad = AT_BUF_INIT;
    STACK_OF(X509) *sk = NULL;
    at_error err = AT_ERROR_INIT;
    char cn[256];
    EVP_PKEY *k;
    build_chain(&pem, 1, NULL);
    AT_CHECK_OK(at_chain_parse(pem.data, pem.len, &sk, &err), &err);
    AT_CHECK_INT(sk_X509_num(sk), 3);
    sk_X509_pop_free(sk, X509_free);
    AT_CHECK_OK(at_chain_top_issuer_cn(pem.data, pem.len, cn, sizeof(cn), &err), &err);
    AT_CHECK_STR(cn, "Test Root X1");
    at_buf_free(&pem);
    build_chain(&pem, 0, NULL);
    AT_CHECK_OK(at_chain_top_issuer_cn(pem.data, pem.len, cn, sizeof(cn), &err), &err);
    AT_CHECK_STR(cn, "Test Root X1");
    AT_CHECK_OK(at_chain_parse(pem.data, pem.len, &sk, &err), &err);
    AT_CHECK_INT(sk_X509_num(sk), 2);
    sk_X509_pop_free(sk, X509_free);

    /* A private key block inside a chain is an error, not skipped. */
    k = gen("ec:P-256");
    at_buf_append(&bad, pem.data, pem.len);
    at_key_to_pem(k, &bad, &err);
    sk = (STACK_OF(X509) *)1;
    AT_CHECK(at_chain_parse(bad.data, bad.len, &sk, &err) == -1);
    AT_CHECK(sk == NULL);
    AT_CHECK_CONTAINS(err.msg, "PRIVATE KEY");
    /* A damaged certificate. */
    at_buf_reset(&bad);
    at_buf_append(&bad, pem.data, pem.len);
    {
        char *p = strstr(bad.data, "-----BEGIN CERTIFICATE-----\n") + 28 + 10;
        memcpy(p, "AAAAAAAA", 8);
    }
    AT_CHECK(at_chain_parse(bad.data, bad.len, &sk, &err) == -1);
    AT_CHECK_CONTAINS(err.msg, "damaged");
    /* Empty / nothing. */
    AT_CHECK(at_chain_parse("", 0, &sk, &err) == -1);
    AT_CHECK(at_chain_parse("no pem here\n", 12, &sk, &err) == -1);
    AT_CHECK(at_chain_top_issuer_cn("x", 1, cn, sizeof(cn), &err) == -1);
    AT_CHECK_STR(cn, "");
    at_buf_free(&bad);
    at_buf_free(&pem);
    EVP_PKEY_free(k);
}

static void t_cert_sha256(void)
{
    EVP_PKEY *k = gen("ec:P-256");
    mk m = { "I", "S", "05", "20250101000000Z", "20250201000000Z", NULL, NULL, NULL, 0 };
    X509 *x = make_cert(&m, k, k);
    unsigned char *der = NULL, md[32];
    unsigned int mdl = 0;
    int len = i2d_X509(x, &der);
    char hex[65], expect[65];
    EVP_Digest(der, (size_t)len, md, &mdl, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        sprintf(expect + 2 * i, "%02x", md[i]);
    AT_CHECK_INT(at_cert_sha256_hex(x, hex), 0);
    AT_CHECK_STR(hex, expect);
    AT_CHECK_INT(at_cert_sha256_hex(NULL, hex), -1);
    OPENSSL_free(der);
    X509_free(x);
    EVP_PKEY_free(k);
}

/* ------------------------------------------------------------ TLS-ALPN-01 */

static void check_alpn(const char *name, const char *expect_san, const char *expect_cn)
{
    const char *ka = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
    at_buf cert = AT_BUF_INIT, key = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    X509 *x;
    EVP_PKEY *k;
    X509_EXTENSION *ext;
    GENERAL_NAMES *gens;
    const ASN1_OCTET_STRING *val;
    unsigned char expect[34];
    unsigned int mdl = 0;
    int count = 0, crit = -1;
    char san[512], cn[300];
    at_key_spec spec;
    AT_CHECK_OK(at_tlsalpn01_cert(name, ka, &cert, &key, &err), &err);
    if (!cert.len)
        return;
    x = pem_cert(cert.data);
    k = at_key_from_pem(key.data, key.len, &err);
    AT_CHECK(k != NULL && x != NULL);
    /* Key: fresh P-256, matching the certificate; self-signed. */
    AT_CHECK(at_key_spec_of(k, &spec) == 0 && spec.kind == AT_KEY_EC && spec.bits == 256);
    AT_CHECK(EVP_PKEY_eq(X509_get0_pubkey(x), k) == 1);
    AT_CHECK_INT(X509_verify(x, k), 1);
    AT_CHECK_INT(X509_get_version(x), X509_VERSION_3);
    /* SAN = exactly the name. */
    gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    san_text(gens, san, sizeof(san));
    AT_CHECK_STR(san, expect_san);
    AT_CHECK_INT(crit, expect_cn ? 0 : 1);
    GENERAL_NAMES_free(gens);
    cn[0] = '\0';
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    AT_CHECK_STR(cn, expect_cn ? expect_cn : "");
    /* id-pe-acmeIdentifier: once, critical, DER OCTET STRING of SHA-256(ka). */
    ext = ext_by_oid(x, "1.3.6.1.5.5.7.1.31", &count);
    AT_CHECK_INT(count, 1);
    AT_CHECK(ext && X509_EXTENSION_get_critical(ext) == 1);
    expect[0] = 0x04;
    expect[1] = 0x20;
    EVP_Digest(ka, strlen(ka), expect + 2, &mdl, EVP_sha256(), NULL);
    val = ext ? X509_EXTENSION_get_data(ext) : NULL;
    AT_CHECK(val && ASN1_STRING_length(val) == 34 &&
             memcmp(ASN1_STRING_get0_data(val), expect, 34) == 0);
    /* Nothing but the two extensions (some validators are strict). */
    AT_CHECK_INT(X509_get_ext_count(x), 2);
    /* Currently valid. */
    AT_CHECK(X509_cmp_time(X509_get0_notBefore(x), NULL) < 0);
    AT_CHECK(X509_cmp_time(X509_get0_notAfter(x), NULL) > 0);
    X509_free(x);
    EVP_PKEY_free(k);
    at_buf_free(&cert);
    at_buf_free(&key);
}

static void t_tlsalpn01(void)
{
    char longname[200], san[220];
    check_alpn("example.com", "DNS:example.com", "example.com");
    check_alpn("WWW.Example.com", "DNS:www.example.com", "www.example.com");
    check_alpn("192.0.2.1", "IP:192.0.2.1", "192.0.2.1");
    check_alpn("2001:db8::1", "IP:2001:db8::1", "2001:db8::1");
    memset(longname, 'a', 60);
    strcpy(longname + 60, ".example.com");   /* 72 characters: no CN */
    snprintf(san, sizeof(san), "DNS:%s", longname);
    check_alpn(longname, san, NULL);

    at_buf cert = AT_BUF_INIT, key = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    AT_CHECK(at_tlsalpn01_cert("*.example.com", "a.b", &cert, &key, &err) == -1);
    AT_CHECK_CONTAINS(err.msg, "dns-01");
    AT_CHECK(at_tlsalpn01_cert("bad name", "a.b", &cert, &key, &err) == -1);
    AT_CHECK(at_tlsalpn01_cert("example.com", "", &cert, &key, &err) == -1);
    AT_CHECK_INT(cert.len, 0);
    AT_CHECK_INT(key.len, 0);
}

/* ------------------------------------------------------------ placeholder */

static void t_placeholder(void)
{
    static const char *const names[] = { "Example.com", "*.example.com", "192.0.2.9" };
    at_buf cert = AT_BUF_INIT, key = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    X509 *x;
    EVP_PKEY *k;
    GENERAL_NAMES *gens;
    BASIC_CONSTRAINTS *bc;
    at_cert_info info;
    at_key_spec spec;
    char san[300], cn[100];
    time_t now = time(NULL);
    AT_CHECK_OK(at_placeholder_cert(names, 3, "rsa:2048", 30, &cert, &key, &err), &err);
    x = pem_cert(cert.data);
    k = at_key_from_pem(key.data, key.len, &err);
    AT_CHECK(at_key_spec_of(k, &spec) == 0 && spec.kind == AT_KEY_RSA && spec.bits == 2048);
    AT_CHECK(EVP_PKEY_eq(X509_get0_pubkey(x), k) == 1);
    AT_CHECK_INT(X509_verify(x, k), 1);
    AT_CHECK_INT(at_key_matches_cert_pem(k, cert.data, cert.len), 1);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    AT_CHECK_STR(cn, "example.com");
    AT_CHECK_OK(at_cert_info_pem(cert.data, cert.len, &info, &err), &err);
    AT_CHECK_STR(info.issuer_cn, "autotls placeholder");
    AT_CHECK(info.not_before <= now && info.not_before > now - 2 * 3600);
    AT_CHECK(info.not_after >= now + 30 * 86400 - 60 && info.not_after <= now + 30 * 86400 + 60);
    at_cert_info_free(&info);
    gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    san_text(gens, san, sizeof(san));
    AT_CHECK_STR(san, "DNS:example.com,DNS:*.example.com,IP:192.0.2.9");
    GENERAL_NAMES_free(gens);
    bc = X509_get_ext_d2i(x, NID_basic_constraints, NULL, NULL);
    AT_CHECK(bc && !bc->ca);
    BASIC_CONSTRAINTS_free(bc);
    X509_free(x);
    EVP_PKEY_free(k);
    at_buf_free(&cert);
    at_buf_free(&key);

    /* Default key type, no names. */
    AT_CHECK_OK(at_placeholder_cert(NULL, 0, NULL, 1, &cert, &key, &err), &err);
    x = pem_cert(cert.data);
    k = at_key_from_pem(key.data, key.len, &err);
    AT_CHECK(at_key_spec_of(k, &spec) == 0 && spec.kind == AT_KEY_EC && spec.bits == 256);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    AT_CHECK_STR(cn, "autotls placeholder");
    X509_free(x);
    EVP_PKEY_free(k);
    at_buf_free(&cert);
    at_buf_free(&key);

    AT_CHECK(at_placeholder_cert(names, 1, "dsa:1024", 1, &cert, &key, &err) == -1);
    AT_CHECK_CONTAINS(err.msg, "ec:P-256");
    static const char *const bad[] = { "bad..name" };
    AT_CHECK(at_placeholder_cert(bad, 1, NULL, 1, &cert, &key, &err) == -1);
    AT_CHECK_CONTAINS(err.msg, "bad..name");
    AT_CHECK_INT(cert.len, 0);
}

/* Placeholders for two sites from one key the caller keeps: each names its
 * own site and verifies with that key; the key is borrowed, not consumed. */
static void t_placeholder_with_key(void)
{
    static const char *const a[] = { "a.example" }, *const b[] = { "b.example", "www.b.example" };
    at_key_spec ks = { AT_KEY_RSA, 2048 };
    at_buf ca = AT_BUF_INIT, ka = AT_BUF_INIT, cb = AT_BUF_INIT, kb = AT_BUF_INIT;
    at_error err = AT_ERROR_INIT;
    at_cert_info ia, ib;
    EVP_PKEY *k = at_key_generate(&ks, &err), *back;
    X509 *xa, *xb;

    AT_CHECK(k != NULL);
    AT_CHECK_OK(at_placeholder_cert_with_key(a, 1, k, 30, &ca, &ka, &err), &err);
    AT_CHECK_OK(at_placeholder_cert_with_key(b, 2, k, 30, &cb, &kb, &err), &err);
    xa = pem_cert(ca.data);
    xb = pem_cert(cb.data);
    AT_CHECK_INT(X509_verify(xa, k), 1);
    AT_CHECK_INT(X509_verify(xb, k), 1);
    AT_CHECK_OK(at_cert_info_pem(ca.data, ca.len, &ia, &err), &err);
    AT_CHECK_OK(at_cert_info_pem(cb.data, cb.len, &ib, &err), &err);
    AT_CHECK_INT(ia.nnames, 1);
    AT_CHECK_INT(ib.nnames, 2);
    AT_CHECK_STR(ia.names[0], "a.example");
    AT_CHECK_STR(ib.issuer_cn, "autotls placeholder");
    at_cert_info_free(&ia);
    at_cert_info_free(&ib);
    back = at_key_from_pem(kb.data, kb.len, &err);
    AT_CHECK(back && EVP_PKEY_eq(back, k) == 1);
    AT_CHECK_INT(at_key_matches_cert_pem(back, ca.data, ca.len), 1);
    EVP_PKEY_free(back);
    AT_CHECK(at_placeholder_cert_with_key(a, 1, NULL, 30, &ca, &ka, &err) == -1);
    X509_free(xa);
    X509_free(xb);
    EVP_PKEY_free(k);
    at_buf_free(&ca);
    at_buf_free(&cb);
    at_buf_free_secret(&ka);
    at_buf_free_secret(&kb);
    at_error_clear(&err);
}

static const at_test_case cases[] = {
    AT_CASE(t_name_normalize_valid),
    AT_CASE(t_name_normalize_invalid),
    AT_CASE(t_name_is_ip),
    AT_CASE(t_name_matches),
    AT_CASE(t_reverse_names),
    AT_CASE(t_csr),
    AT_CASE(t_ari_cert_id_rfc9773),
    AT_CASE(t_cert_info),
    AT_CASE(t_chain),
    AT_CASE(t_cert_sha256),
    AT_CASE(t_tlsalpn01),
    AT_CASE(t_placeholder),
    AT_CASE(t_placeholder_with_key),
    AT_CASE_END
};

int main(int argc, char **argv) { return at_test_main(argc, argv, cases); }
