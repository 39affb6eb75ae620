/*
 * at_x509.c: names, CSRs, certificate facts, chains, RFC 9773 ids, the
 * RFC 8737 challenge certificate and the placeholder certificate.
 */
#include "at_x509.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "at_b64.h"
#include "at_key.h"
#include "at_time.h"

#define AT_ACME_IDENTIFIER_OID "1.3.6.1.5.5.7.1.31"
#define AT_PLACEHOLDER_CN "autotls placeholder"
/* X.520 ub-common-name: a longer name cannot be a CN, only a SAN. */
#define AT_CN_MAX 64

/* ----------------------------------------------------------------- names */

int at_name_is_ip(const char *name)
{
    unsigned char a[16];
    return name && (inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1);
}

/* IP literal -> canonical text (RFC 5952 for IPv6) and raw bytes. */
static int ip_parse(const char *s, unsigned char raw[16], size_t *rawlen, char *out, size_t outsz)
{
    if (inet_pton(AF_INET, s, raw) == 1) {
        *rawlen = 4;
        return inet_ntop(AF_INET, raw, out, (socklen_t)outsz) ? 0 : -1;
    }
    if (inet_pton(AF_INET6, s, raw) == 1) {
        *rawlen = 16;
        return inet_ntop(AF_INET6, raw, out, (socklen_t)outsz) ? 0 : -1;
    }
    return -1;
}

static int check_label(const char *name, const char *l, size_t n, at_error *err)
{
    if (n == 0)
        return at_error_set(err, AT_ERR_CONFIG, "invalid name \"%s\": empty label (two dots in "
                            "a row, or a leading dot)", name);
    if (n > 63)
        return at_error_set(err, AT_ERR_CONFIG, "invalid name \"%s\": label \"%.*s...\" is longer "
                            "than 63 characters", name, 20, l);
    if (l[0] == '-' || l[n - 1] == '-')
        return at_error_set(err, AT_ERR_CONFIG, "invalid name \"%s\": label \"%.*s\" begins or ends "
                            "with '-'", name, (int)n, l);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)l[i];
        if (!(isdigit(c) || (c >= 'a' && c <= 'z') || c == '-'))
            return at_error_set(err, AT_ERR_CONFIG, "invalid name \"%s\": '%c' is not allowed "
                                "(use letters, digits, '-' and '.'; write internationalized names "
                                "in their xn-- form)", name, c);
    }
    return 0;
}

static int check_dns(const char *orig, const char *s, at_error *err)
{
    size_t n = strlen(s);
    const char *l = s, *dot, *last = s;
    int all_digits = 1;
    if (n > 253)
        return at_error_set(err, AT_ERR_CONFIG, "invalid name \"%.60s...\": longer than 253 "
                            "characters", orig);
    for (;;) {
        dot = strchr(l, '.');
        size_t len = dot ? (size_t)(dot - l) : strlen(l);
        if (check_label(orig, l, len, err) != 0)
            return -1;
        last = l;
        if (!dot)
            break;
        l = dot + 1;
    }
    for (const char *p = last; *p; p++)
        if (!isdigit((unsigned char)*p))
            all_digits = 0;
    /* "10.0.0.300" or "1.2.3": digits in the last label mean someone meant
     * an address; a top-level domain is never numeric (RFC 3696 §2). */
    if (all_digits)
        return at_error_set(err, AT_ERR_CONFIG, "invalid name \"%s\": neither a DNS name (the last "
                            "label is numeric) nor a valid IP address", orig);
    return 0;
}

int at_name_normalize(const char *name, char *out, size_t outsz, at_error *err)
{
    char buf[300], ipbuf[INET6_ADDRSTRLEN + 2];
    unsigned char raw[16];
    size_t n, rawlen;
    const char *s;
    if (!name || !*name)
        return at_error_set(err, AT_ERR_CONFIG, "empty name: give a DNS name such as "
                            "example.com, *.example.com, or an IP address");
    n = strlen(name);
    if (n >= sizeof(buf))
        return at_error_set(err, AT_ERR_CONFIG, "invalid name \"%.60s...\": longer than 253 "
                            "characters", name);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= ' ' || c >= 0x7f)
            return at_error_set(err, AT_ERR_CONFIG, "invalid name \"%s\": it contains %s", name,
                                c >= 0x80 ? "non-ASCII characters (write internationalized "
                                "names in their xn-- form)" : "spaces or control characters");
        buf[i] = (char)tolower(c);
    }
    buf[n] = '\0';

    /* IP literals, optionally bracketed as in URLs. */
    s = buf;
    if (buf[0] == '[' && n > 2 && buf[n - 1] == ']') {
        buf[n - 1] = '\0';
        s = buf + 1;
    }
    if (ip_parse(s, raw, &rawlen, ipbuf, sizeof(ipbuf)) == 0) {
        if (strlen(ipbuf) >= outsz)
            return at_error_set(err, AT_ERR_INTERNAL, "name buffer too small");
        memcpy(out, ipbuf, strlen(ipbuf) + 1);
        return 0;
    }
    if (s != buf)
        return at_error_set(err, AT_ERR_CONFIG, "invalid name \"%s\": not an IP address inside "
                            "the brackets", name);

    if (strchr(buf, ':'))
        return at_error_set(err, AT_ERR_CONFIG, "invalid name \"%s\": ':' belongs only in an IPv6 "
                            "address and this is not a valid one (give names without a port)",
                            name);
    if (n > 1 && buf[n - 1] == '.')
        buf[--n] = '\0';
    s = buf;
    if (strncmp(buf, "*.", 2) == 0)
        s = buf + 2;
    if (strchr(s, '*'))
        return at_error_set(err, AT_ERR_CONFIG, "invalid name \"%s\": a wildcard must be the whole "
                            "first label, as in *.example.com", name);
    if (check_dns(name, s, err) != 0)
        return -1;
    if (n >= outsz)
        return at_error_set(err, AT_ERR_INTERNAL, "name buffer too small");
    memcpy(out, buf, n + 1);
    return 0;
}

int at_name_matches(const char *pattern, const char *host)
{
    size_t pl, hl, rl;
    const char *dot;
    if (!pattern || !host || !*pattern || !*host)
        return 0;
    pl = strlen(pattern);
    hl = strlen(host);
    if (pl > 1 && pattern[pl - 1] == '.')
        pl--;
    if (hl > 1 && host[hl - 1] == '.')
        hl--;
    if (pl == hl && strncasecmp(pattern, host, pl) == 0)
        return 1;
    if (pl < 3 || strncmp(pattern, "*.", 2) != 0)
        return 0;
    /* "*.example.com" covers exactly one more label: "www.example.com",
     * not "example.com" nor "a.b.example.com" (RFC 6125 §6.4.3). */
    rl = pl - 1;                            /* ".example.com" */
    dot = memchr(host, '.', hl);
    if (!dot || dot == host || (size_t)(host + hl - dot) != rl)
        return 0;
    if (at_name_is_ip(host))
        return 0;
    return strncasecmp(dot, pattern + 1, rl) == 0;
}

/* ---------------------------------------------------------- SAN building */

static GENERAL_NAME *general_name(const char *name, at_error *err)
{
    char norm[256];
    unsigned char raw[16];
    size_t rawlen;
    char ipbuf[INET6_ADDRSTRLEN];
    GENERAL_NAME *gn = NULL;
    ASN1_IA5STRING *ia5 = NULL;
    ASN1_OCTET_STRING *oct = NULL;
    if (at_name_normalize(name, norm, sizeof(norm), err) != 0)
        return NULL;
    if (ip_parse(norm, raw, &rawlen, ipbuf, sizeof(ipbuf)) == 0) {
        if ((oct = ASN1_OCTET_STRING_new()) && ASN1_OCTET_STRING_set(oct, raw, (int)rawlen) &&
            (gn = GENERAL_NAME_new())) {
            GENERAL_NAME_set0_value(gn, GEN_IPADD, oct);
            return gn;
        }
        ASN1_OCTET_STRING_free(oct);
    } else {
        if ((ia5 = ASN1_IA5STRING_new()) && ASN1_STRING_set(ia5, norm, (int)strlen(norm)) &&
            (gn = GENERAL_NAME_new())) {
            GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
            return gn;
        }
        ASN1_IA5STRING_free(ia5);
    }
    at_error_set_openssl(err, "out of memory building a subjectAltName");
    return NULL;
}

static GENERAL_NAMES *general_names(const char *const *names, size_t nnames, at_error *err)
{
    GENERAL_NAMES *gens = GENERAL_NAMES_new();
    if (!gens) {
        at_error_set_openssl(err, "out of memory building a subjectAltName");
        return NULL;
    }
    for (size_t i = 0; i < nnames; i++) {
        GENERAL_NAME *gn = general_name(names[i], err);
        if (!gn || !sk_GENERAL_NAME_push(gens, gn)) {
            if (gn) {
                GENERAL_NAME_free(gn);
                at_error_set_openssl(err, "out of memory building a subjectAltName");
            }
            GENERAL_NAMES_free(gens);
            return NULL;
        }
    }
    return gens;
}

static const EVP_MD *digest_for(EVP_PKEY *key)
{
    at_key_spec spec;
    if (at_key_spec_of(key, &spec) == 0 && spec.kind == AT_KEY_EC && spec.bits == 384)
        return EVP_sha384();
    return EVP_sha256();
}

/* -------------------------------------------------------------------- CSR */

int at_csr_der(EVP_PKEY *key, const char *const *names, size_t nnames, at_buf *der, at_error *err)
{
    X509_REQ *req = NULL;
    GENERAL_NAMES *gens = NULL;
    X509_EXTENSION *ext = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    unsigned char *out = NULL;
    int len, rv = -1;
    if (!key || nnames == 0)
        return at_error_set(err, AT_ERR_INTERNAL, "a CSR needs a key and at least one name");
    if (!(gens = general_names(names, nnames, err)))
        return -1;
    /* Subject left empty: RFC 8555 §7.4 takes the names from the SAN, and
     * a CN is limited to 64 characters that a DNS name may exceed. */
    if (!(req = X509_REQ_new()) || !X509_REQ_set_version(req, X509_REQ_VERSION_1) ||
        !X509_REQ_set_pubkey(req, key) ||
        !(ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens)) ||
        !(exts = sk_X509_EXTENSION_new_null()) || !sk_X509_EXTENSION_push(exts, ext)) {
        at_error_set_openssl(err, "cannot build the certificate request");
        X509_EXTENSION_free(ext);
        goto done;
    }
    if (!X509_REQ_add_extensions(req, exts) || !X509_REQ_sign(req, key, digest_for(key))) {
        at_error_set_openssl(err, "cannot sign the certificate request");
        goto done;
    }
    if ((len = i2d_X509_REQ(req, &out)) <= 0) {
        at_error_set_openssl(err, "cannot encode the certificate request");
        goto done;
    }
    if (at_buf_append(der, out, (size_t)len) != 0) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        goto done;
    }
    rv = 0;
done:
    OPENSSL_free(out);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    GENERAL_NAMES_free(gens);
    X509_REQ_free(req);
    return rv;
}

/* ----------------------------------------------------------- certificates */

void at_cert_info_free(at_cert_info *info)
{
    if (!info)
        return;
    for (size_t i = 0; i < info->nnames; i++)
        free(info->names[i]);
    free(info->names);
    info->names = NULL;
    info->nnames = 0;
}

static int asn1_time_t(const ASN1_TIME *a, time_t *t)
{
    struct tm tm;
    char buf[AT_TIME_BUFSIZE];
    if (!a || !ASN1_TIME_to_tm(a, &tm))
        return -1;
    /* Through RFC 3339 text: at_time_parse is TZ-independent, timegm is
     * a GNU extension and mktime depends on the process time zone. */
    if (strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return -1;
    return at_time_parse(buf, t);
}

static int cn_of(const X509_NAME *nm, char *out, size_t outsz)
{
    int idx = X509_NAME_get_index_by_NID(nm, NID_commonName, -1);
    X509_NAME_ENTRY *e;
    unsigned char *utf8 = NULL;
    int n;
    out[0] = '\0';
    if (idx < 0)
        return 0;
    e = X509_NAME_get_entry(nm, idx);
    if (!e || (n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e))) < 0)
        return -1;
    if (memchr(utf8, '\0', (size_t)n) || (size_t)n >= outsz) {
        OPENSSL_free(utf8);
        return -1;
    }
    memcpy(out, utf8, (size_t)n);
    out[n] = '\0';
    OPENSSL_free(utf8);
    return 0;
}

static int push_name(at_cert_info *info, const char *s, size_t n)
{
    char **nn = realloc(info->names, (info->nnames + 1) * sizeof(*nn));
    if (!nn)
        return -1;
    info->names = nn;
    if (!(nn[info->nnames] = strndup(s, n)))
        return -1;
    info->nnames++;
    return 0;
}

static int san_names(X509 *x, at_cert_info *info, at_error *err)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int rv = 0;
    for (int i = 0; gens && rv == 0 && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
        int type;
        const ASN1_STRING *v = GENERAL_NAME_get0_value(gn, &type);
        const unsigned char *d = ASN1_STRING_get0_data(v);
        int len = ASN1_STRING_length(v);
        char ip[INET6_ADDRSTRLEN];
        if (type == GEN_DNS) {
            /* An embedded NUL would make "good.com\0.evil" look like good.com. */
            if (len <= 0 || memchr(d, '\0', (size_t)len))
                continue;
            rv = push_name(info, (const char *)d, (size_t)len);
        } else if (type == GEN_IPADD && (len == 4 || len == 16)) {
            if (inet_ntop(len == 4 ? AF_INET : AF_INET6, d, ip, sizeof(ip)))
                rv = push_name(info, ip, strlen(ip));
        }
    }
    GENERAL_NAMES_free(gens);
    ERR_clear_error();
    if (rv != 0)
        at_error_set(err, AT_ERR_INTERNAL, "out of memory reading certificate names");
    return rv;
}

int at_cert_info_x509(X509 *x, at_cert_info *info, at_error *err)
{
    BIGNUM *bn = NULL;
    char *hex = NULL;
    memset(info, 0, sizeof(*info));
    if (!x)
        return at_error_set(err, AT_ERR_INTERNAL, "no certificate");
    if (asn1_time_t(X509_get0_notBefore(x), &info->not_before) != 0 ||
        asn1_time_t(X509_get0_notAfter(x), &info->not_after) != 0)
        return at_error_set(err, AT_ERR_PARSE, "certificate has an unreadable validity period");
    if (!(bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL)) || !(hex = BN_bn2hex(bn)) ||
        strlen(hex) >= sizeof(info->serial)) {
        BN_free(bn);
        OPENSSL_free(hex);
        ERR_clear_error();
        return at_error_set(err, AT_ERR_PARSE, "certificate has an unreadable serial number");
    }
    for (size_t i = 0; hex[i]; i++)
        info->serial[i] = (char)tolower((unsigned char)hex[i]);
    info->serial[strlen(hex)] = '\0';
    BN_free(bn);
    OPENSSL_free(hex);
    if (cn_of(X509_get_issuer_name(x), info->issuer_cn, sizeof(info->issuer_cn)) != 0) {
        ERR_clear_error();
        return at_error_set(err, AT_ERR_PARSE, "certificate has an unreadable issuer name");
    }
    if (san_names(x, info, err) != 0) {
        at_cert_info_free(info);
        return -1;
    }
    if (at_ari_cert_id(x, info->ari_id, sizeof(info->ari_id), NULL) != 0)
        info->ari_id[0] = '\0';
    return 0;
}

/* A memory BIO over PEM text that may hold a chain; NULL (err set) when it
 * is empty or too large. */
static BIO *chain_bio(const char *pem, size_t len, at_error *err)
{
    BIO *bio;

    if (!pem || len == 0) {
        at_error_set(err, AT_ERR_PARSE, "empty certificate chain");
        return NULL;
    }
    if (len > INT_MAX) {
        at_error_set(err, AT_ERR_PARSE, "certificate chain is too large");
        return NULL;
    }
    if (!(bio = BIO_new_mem_buf(pem, (int)len)))
        at_error_set_openssl(err, "out of memory reading a certificate chain");
    return bio;
}

/* One PEM block at a time, insisting that each is a certificate: a key or
 * anything else pasted into a chain file is an error, not silently skipped. */
int at_chain_parse(const char *pem, size_t len, STACK_OF(X509) **certs, at_error *err)
{
    BIO *bio;
    STACK_OF(X509) *sk;
    int rv = -1;
    *certs = NULL;
    if (!(bio = chain_bio(pem, len, err)))
        return -1;
    if (!(sk = sk_X509_new_null())) {
        BIO_free(bio);
        return at_error_set_openssl(err, "out of memory reading a certificate chain");
    }
    for (;;) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        const unsigned char *p;
        long dlen = 0;
        int is_cert;
        X509 *x;
        if (!PEM_read_bio(bio, &name, &header, &data, &dlen)) {
            unsigned long e = ERR_peek_last_error();
            if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE &&
                sk_X509_num(sk) > 0) {
                ERR_clear_error();
                rv = 0;
            } else if (sk_X509_num(sk) == 0) {
                ERR_clear_error();
                at_error_set(err, AT_ERR_PARSE, "no certificate found (expected -----BEGIN "
                             "CERTIFICATE-----)");
            } else {
                at_error_set_openssl(err, "certificate %d of the chain is damaged",
                                     sk_X509_num(sk) + 1);
            }
            break;
        }
        p = data;
        is_cert = strcmp(name, "CERTIFICATE") == 0;
        x = is_cert ? d2i_X509(NULL, &p, dlen) : NULL;
        if (x && p != data + dlen) {
            X509_free(x);
            x = NULL;
        }
        if (!x) {
            ERR_clear_error();
            if (is_cert)
                at_error_set(err, AT_ERR_PARSE, "certificate %d of the chain is damaged",
                             sk_X509_num(sk) + 1);
            else
                at_error_set(err, AT_ERR_PARSE, "block %d of the chain is a %s, not a "
                             "CERTIFICATE", sk_X509_num(sk) + 1, name);
        } else if (!sk_X509_push(sk, x)) {
            X509_free(x);
            x = NULL;
            at_error_set(err, AT_ERR_INTERNAL, "out of memory reading a certificate chain");
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
        if (!x)
            break;
    }
    BIO_free(bio);
    if (rv != 0) {
        sk_X509_pop_free(sk, X509_free);
        return -1;
    }
    *certs = sk;
    return 0;
}

int at_cert_info_pem(const char *pem, size_t len, at_cert_info *info, at_error *err)
{
    STACK_OF(X509) *sk;
    int rv;
    memset(info, 0, sizeof(*info));
    if (at_chain_parse(pem, len, &sk, err) != 0)
        return -1;
    rv = at_cert_info_x509(sk_X509_value(sk, 0), info, err);
    sk_X509_pop_free(sk, X509_free);
    return rv;
}

/* Only the leaf (the first certificate) is decoded: with OpenSSL 3.0 every
 * certificate parsed costs a public-key decode through the provider
 * decoders, and a status page of a thousand certificates needs only the
 * leaves. */
int at_cert_info_leaf_pem(const char *pem, size_t len, at_cert_info *info, at_error *err)
{
    BIO *bio;
    X509 *x = NULL;
    int rv;

    memset(info, 0, sizeof(*info));
    if (!(bio = chain_bio(pem, len, err)))
        return -1;
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!x) {
        ERR_clear_error();
        return at_error_set(err, AT_ERR_PARSE, "no readable certificate found (expected -----BEGIN "
                            "CERTIFICATE-----)");
    }
    rv = at_cert_info_x509(x, info, err);
    X509_free(x);
    return rv;
}

int at_pem_has_cert(const char *pem, size_t len, at_error *err)
{
    BIO *bio;
    char *name = NULL, *header = NULL;
    unsigned char *data = NULL;
    long dlen = 0;
    int ok;

    if (!(bio = chain_bio(pem, len, err)))
        return -1;
    ok = PEM_read_bio(bio, &name, &header, &data, &dlen) == 1 && strcmp(name, "CERTIFICATE") == 0 &&
         dlen > 0;
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
    BIO_free(bio);
    ERR_clear_error();
    if (!ok)
        return at_error_set(err, AT_ERR_PARSE, "no complete certificate found (expected -----BEGIN "
                            "CERTIFICATE----- ... -----END CERTIFICATE-----)");
    return 0;
}

int at_chain_top_issuer_cn(const char *pem, size_t len, char *out, size_t outsz, at_error *err)
{
    STACK_OF(X509) *sk;
    int rv;
    if (outsz == 0)
        return at_error_set(err, AT_ERR_INTERNAL, "no room for an issuer name");
    out[0] = '\0';
    if (at_chain_parse(pem, len, &sk, err) != 0)
        return -1;
    rv = cn_of(X509_get_issuer_name(sk_X509_value(sk, sk_X509_num(sk) - 1)), out, outsz);
    sk_X509_pop_free(sk, X509_free);
    if (rv != 0) {
        ERR_clear_error();
        return at_error_set(err, AT_ERR_PARSE, "the chain's top issuer name is unreadable");
    }
    return 0;
}

int at_ari_cert_id(X509 *cert, char *out, size_t outsz, at_error *err)
{
    AUTHORITY_KEYID *akid;
    unsigned char *der = NULL;
    const unsigned char *p;
    long clen = 0;
    int tag, cls, len, rv = -1;
    at_buf b = AT_BUF_INIT;
    if (outsz)
        out[0] = '\0';
    if (!cert)
        return at_error_set(err, AT_ERR_INTERNAL, "no certificate");
    akid = X509_get_ext_d2i(cert, NID_authority_key_identifier, NULL, NULL);
    if (!akid || !akid->keyid || akid->keyid->length <= 0) {
        AUTHORITY_KEYID_free(akid);
        ERR_clear_error();
        return at_error_set(err, AT_ERR_NOTFOUND, "the certificate has no authority key "
                            "identifier, so it has no renewal information id (RFC 9773)");
    }
    /* The serial goes in as its DER contents octets (with the leading zero
     * a positive integer with the high bit set carries), not as a bare
     * magnitude: RFC 9773 §4.1. */
    if ((len = i2d_ASN1_INTEGER(X509_get0_serialNumber(cert), &der)) <= 0)
        goto fail;
    p = der;
    if ((ASN1_get_object(&p, &clen, &tag, &cls, len) & 0x80) || tag != V_ASN1_INTEGER || clen <= 0)
        goto fail;
    if (at_b64url_encode(&b, akid->keyid->data, (size_t)akid->keyid->length) != 0 ||
        at_buf_append(&b, ".", 1) != 0 || at_b64url_encode(&b, p, (size_t)clen) != 0)
        goto fail;
    if (b.len >= outsz) {
        at_error_set(err, AT_ERR_INTERNAL, "renewal information id does not fit");
        goto done;
    }
    memcpy(out, b.data, b.len + 1);
    rv = 0;
    goto done;
fail:
    ERR_clear_error();
    at_error_set(err, AT_ERR_PARSE, "cannot encode the certificate's renewal information id");
done:
    OPENSSL_free(der);
    AUTHORITY_KEYID_free(akid);
    at_buf_free(&b);
    return rv;
}

int at_cert_sha256_hex(X509 *x, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    out[0] = '\0';
    if (!x || !X509_digest(x, EVP_sha256(), md, &n) || n != sizeof(md))
        return -1;
    for (unsigned int i = 0; i < n; i++) {
        out[2 * i] = "0123456789abcdef"[md[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[md[i] & 15];
    }
    out[64] = '\0';
    return 0;
}

/* ------------------------------------------------- self-made certificates */

static int random_serial(X509 *x)
{
    unsigned char r[16];
    BIGNUM *bn = NULL;
    ASN1_INTEGER *ai = NULL;
    int ok;
    if (RAND_bytes(r, sizeof(r)) != 1)
        return 0;
    r[0] = (unsigned char)((r[0] & 0x7f) | 0x40);   /* positive, full length */
    ok = (bn = BN_bin2bn(r, sizeof(r), NULL)) && (ai = BN_to_ASN1_INTEGER(bn, NULL)) &&
         X509_set_serialNumber(x, ai);
    ASN1_INTEGER_free(ai);
    BN_free(bn);
    return ok;
}

static int add_cn(X509_NAME *nm, const char *cn)
{
    return X509_NAME_add_entry_by_NID(nm, NID_commonName, MBSTRING_UTF8,
                                      (const unsigned char *)cn, -1, -1, 0);
}

/* A certificate skeleton: v3, random serial, validity [now - 1 h, now + days],
 * public key, subject CN (or empty), issuer CN (or = subject), SAN. */
static X509 *cert_new(EVP_PKEY *key, const char *subject_cn, const char *issuer_cn,
                      const char *const *names, size_t nnames, long days, at_error *err)
{
    X509 *x = X509_new();
    GENERAL_NAMES *gens = NULL;
    time_t now = at_time_now();
    int san_critical = !subject_cn || !*subject_cn;
    if (nnames && !(gens = general_names(names, nnames, err))) {
        X509_free(x);
        return NULL;
    }
    if (!x || !X509_set_version(x, X509_VERSION_3) || !random_serial(x) ||
        !ASN1_TIME_set(X509_getm_notBefore(x), now - 3600) ||
        !ASN1_TIME_set(X509_getm_notAfter(x), now + days * 86400L) ||
        !X509_set_pubkey(x, key) ||
        (subject_cn && *subject_cn && !add_cn(X509_get_subject_name(x), subject_cn)) ||
        (issuer_cn ? !add_cn(X509_get_issuer_name(x), issuer_cn) :
                     !X509_set_issuer_name(x, X509_get_subject_name(x))) ||
        /* RFC 5280 §4.2.1.6: with an empty subject the SAN must be critical. */
        (gens && !X509_add1_ext_i2d(x, NID_subject_alt_name, gens, san_critical, 0))) {
        at_error_set_openssl(err, "cannot build a certificate");
        X509_free(x);
        x = NULL;
    }
    GENERAL_NAMES_free(gens);
    return x;
}

static int cert_out(X509 *x, EVP_PKEY *key, at_buf *cert_pem, at_buf *key_pem, at_error *err)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    long n;
    int rv = -1;
    if (!bio || !PEM_write_bio_X509(bio, x) || (n = BIO_get_mem_data(bio, &data)) <= 0) {
        at_error_set_openssl(err, "cannot write a certificate as PEM");
        goto done;
    }
    if (at_buf_append(cert_pem, data, (size_t)n) != 0) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        goto done;
    }
    rv = at_key_to_pem(key, key_pem, err);
done:
    BIO_free(bio);
    return rv;
}

static int small_cn(const char *name)
{
    return strlen(name) <= AT_CN_MAX;
}

int at_tlsalpn01_cert(const char *name, const char *key_authorization,
                      at_buf *cert_pem, at_buf *key_pem, at_error *err)
{
    at_key_spec spec = AT_KEY_SPEC_DEFAULT;
    char norm[256];
    unsigned char ext_val[2 + 32];
    unsigned int mdlen = 0;
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    ASN1_OBJECT *oid = NULL;
    ASN1_OCTET_STRING *oct = NULL;
    X509_EXTENSION *ext = NULL;
    const char *nm[1];
    int rv = -1;
    if (!key_authorization || !*key_authorization)
        return at_error_set(err, AT_ERR_INTERNAL, "tls-alpn-01 certificate without a key "
                            "authorization");
    if (at_name_normalize(name, norm, sizeof(norm), err) != 0)
        return -1;
    if (strncmp(norm, "*.", 2) == 0)
        return at_error_set(err, AT_ERR_CONFIG, "tls-alpn-01 cannot validate the wildcard %s: "
                            "use dns-01", norm);
    /* extnValue = DER OCTET STRING { SHA-256(key authorization) } (RFC 8737 §3). */
    ext_val[0] = V_ASN1_OCTET_STRING;
    ext_val[1] = 32;
    if (!EVP_Digest(key_authorization, strlen(key_authorization), ext_val + 2, &mdlen,
                    EVP_sha256(), NULL) || mdlen != 32)
        return at_error_set_openssl(err, "cannot hash the key authorization");
    if (!(key = at_key_generate(&spec, err)))
        return -1;
    nm[0] = norm;
    if (!(x = cert_new(key, small_cn(norm) ? norm : NULL, NULL, nm, 1, 7, err)))
        goto done;
    if (!(oid = OBJ_txt2obj(AT_ACME_IDENTIFIER_OID, 1)) || !(oct = ASN1_OCTET_STRING_new()) ||
        !ASN1_OCTET_STRING_set(oct, ext_val, sizeof(ext_val)) ||
        !(ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, oct)) || !X509_add_ext(x, ext, -1) ||
        !X509_sign(x, key, EVP_sha256())) {
        at_error_set_openssl(err, "cannot build the tls-alpn-01 certificate for %s", norm);
        goto done;
    }
    rv = cert_out(x, key, cert_pem, key_pem, err);
done:
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(oct);
    ASN1_OBJECT_free(oid);
    X509_free(x);
    EVP_PKEY_free(key);
    return rv;
}

int at_placeholder_cert(const char *const *names, size_t nnames, const char *key_spec,
                        int days, at_buf *cert_pem, at_buf *key_pem, at_error *err)
{
    at_key_spec spec = AT_KEY_SPEC_DEFAULT;
    EVP_PKEY *key;
    int rv;
    if (key_spec && at_key_spec_parse(key_spec, &spec, err) != 0)
        return -1;
    if (!(key = at_key_generate(&spec, err)))
        return -1;
    rv = at_placeholder_cert_with_key(names, nnames, key, days, cert_pem, key_pem, err);
    EVP_PKEY_free(key);
    return rv;
}

int at_placeholder_cert_with_key(const char *const *names, size_t nnames, EVP_PKEY *key,
                                 int days, at_buf *cert_pem, at_buf *key_pem, at_error *err)
{
    char cn[256];
    X509 *x = NULL;
    BASIC_CONSTRAINTS *bc = NULL;
    int rv = -1;
    if (!key)
        return at_error_set(err, AT_ERR_INTERNAL, "no key for the placeholder certificate");
    if (days <= 0)
        days = 1;
    snprintf(cn, sizeof(cn), "%s", AT_PLACEHOLDER_CN);
    if (nnames > 0) {
        if (at_name_normalize(names[0], cn, sizeof(cn), err) != 0)
            return -1;
        if (!small_cn(cn))
            snprintf(cn, sizeof(cn), "%s", AT_PLACEHOLDER_CN);
    }
    if (!(x = cert_new(key, cn, AT_PLACEHOLDER_CN, names, nnames, days, err)))
        goto done;
    if (!(bc = BASIC_CONSTRAINTS_new()) ||
        !X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, 0) ||
        !X509_sign(x, key, digest_for(key))) {
        at_error_set_openssl(err, "cannot build the placeholder certificate");
        goto done;
    }
    rv = cert_out(x, key, cert_pem, key_pem, err);
done:
    BASIC_CONSTRAINTS_free(bc);
    X509_free(x);
    return rv;
}

/* ------------------------------------------------------ reverse-DNS names */

static int ends_with_ci(const char *s, size_t n, const char *suffix)
{
    size_t m = strlen(suffix);
    return n >= m && strncasecmp(s + n - m, suffix, m) == 0;
}

int at_name_from_reverse(const char *name, char *out, size_t outsz)
{
    size_t n = name ? strlen(name) : 0;
    unsigned char addr[16];
    int af;

    if (n && name[n - 1] == '.')
        n--;
    if (ends_with_ci(name, n, ".in-addr.arpa")) {
        /* d.c.b.a.in-addr.arpa -> a.b.c.d */
        unsigned long oct[4];
        const char *p = name;
        size_t body = n - strlen(".in-addr.arpa");
        for (int i = 0; i < 4; i++) {
            char *end;
            if (p >= name + body || *p < '0' || *p > '9')
                return -1;
            oct[i] = strtoul(p, &end, 10);
            if (oct[i] > 255 || end - p > 3 || (end - p > 1 && *p == '0'))
                return -1;
            p = end;
            if (i < 3) {
                if (*p != '.')
                    return -1;
                p++;
            }
        }
        if (p != name + body)
            return -1;
        for (int i = 0; i < 4; i++)
            addr[i] = (unsigned char)oct[3 - i];
        af = AF_INET;
    } else if (ends_with_ci(name, n, ".ip6.arpa")) {
        /* 32 nibbles, least significant first, each followed by a dot */
        if (n != 64 + strlen("ip6.arpa"))
            return -1;
        memset(addr, 0, sizeof(addr));
        for (int i = 0; i < 32; i++) {
            int c = name[2 * i], v;
            if (name[2 * i + 1] != '.')
                return -1;
            if (c >= '0' && c <= '9')
                v = c - '0';
            else if (c >= 'a' && c <= 'f')
                v = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F')
                v = c - 'A' + 10;
            else
                return -1;
            int nib = 31 - i;            /* position from the most significant nibble */
            addr[nib / 2] |= (unsigned char)(nib % 2 ? v : v << 4);
        }
        af = AF_INET6;
    } else {
        return 0;
    }
    if (!inet_ntop(af, addr, out, (socklen_t)outsz))
        return -1;
    return 1;
}

int at_name_alpn_key(const char *name, char *out, size_t outsz)
{
    unsigned char addr[16];
    int r = at_name_from_reverse(name, out, outsz);
    if (r != 0)
        return r == 1 ? 0 : -1;
    if (!name || strlen(name) >= outsz)
        return -1;
    if (inet_pton(AF_INET6, name, addr) == 1)
        return inet_ntop(AF_INET6, addr, out, (socklen_t)outsz) ? 0 : -1;
    strcpy(out, name);
    return 0;
}
