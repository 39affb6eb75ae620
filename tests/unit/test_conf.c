/*
 * test_conf.c: every directive value parser with good and bad values (and
 * the words of its message), and the configuration model: defaults, one
 * certificate per key type, CA sharing, merging and conflicts.
 */
#include "at_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "at_conf.h"
#include "at_conf_int.h"
#include "at_b64.h"

/* The call fails with AT_ERR_CONFIG and a message holding every fragment. */
#define CHECK_BAD(call, ...) do { \
        at_error _e = AT_ERROR_INIT; \
        at_error *err = &_e; \
        const char *_frags[] = { __VA_ARGS__, NULL }; \
        AT_CHECK_MSG((call) != 0, "%s succeeded", #call); \
        AT_CHECK_MSG(_e.code == AT_ERR_CONFIG, "%s: code %s (%s)", #call, at_errcode_name(_e.code), _e.msg); \
        for (int _i = 0; _frags[_i]; _i++) \
            AT_CHECK_CONTAINS(_e.msg, _frags[_i]); \
        at_error_clear(&_e); \
    } while (0)

#define CHECK_GOOD(call) do { \
        at_error _e = AT_ERROR_INIT; \
        at_error *err = &_e; \
        AT_CHECK_OK(call, &_e); \
        at_error_clear(&_e); \
    } while (0)

/* ------------------------------------------------------------- parsers */

static void t_onoff(void)
{
    int on = -1;
    CHECK_GOOD(at_parse_onoff("on", &on, err));
    AT_CHECK_INT(on, 1);
    CHECK_GOOD(at_parse_onoff("Off", &on, err));
    AT_CHECK_INT(on, 0);
    CHECK_GOOD(at_parse_onoff("ON", &on, err));
    AT_CHECK_INT(on, 1);
    CHECK_BAD(at_parse_onoff("maybe", &on, err), "'maybe' is neither on nor off; use on or off");
    CHECK_BAD(at_parse_onoff("", &on, err), "'' is neither on nor off");
    CHECK_BAD(at_parse_onoff(NULL, &on, err), "use on or off");
    CHECK_BAD(at_parse_onoff("1", &on, err), "'1'");
}

static void t_ca(void)
{
    static const struct { const char *in, *out; } good[] = {
        { "letsencrypt", AT_CA_LETSENCRYPT },
        { "LetsEncrypt", AT_CA_LETSENCRYPT },
        { "letsencrypt-staging", AT_CA_LETSENCRYPT_STAGING },
        { "https://acme.example.com/directory", "https://acme.example.com/directory" },
        { "https://ca.internal:8443/acme/acme/directory", "https://ca.internal:8443/acme/acme/directory" },
        { "https://127.0.0.1:14000/dir", "https://127.0.0.1:14000/dir" },
        { "http://127.0.0.1:14000/dir", "http://127.0.0.1:14000/dir" },
        { "http://localhost:4001/directory", "http://localhost:4001/directory" },
        { "http://[::1]:14000/dir", "http://[::1]:14000/dir" },
    };
    char *url;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        url = NULL;
        CHECK_GOOD(at_parse_ca(good[i].in, &url, err));
        AT_CHECK_STR(url, good[i].out);
        free(url);
    }
    CHECK_BAD(at_parse_ca("http://ca.example.com/dir", &url, err), "'http://ca.example.com/dir'",
              "ACME runs over https://", "only for a CA on this machine");
    AT_CHECK(url == NULL);
    CHECK_BAD(at_parse_ca("http://127.0.0.1.example.com/dir", &url, err), "ACME runs over https://");
    CHECK_BAD(at_parse_ca("letsencrypt-prod", &url, err), "'letsencrypt-prod' is not a CA",
              "use letsencrypt, letsencrypt-staging or the https:// URL");
    CHECK_BAD(at_parse_ca("ftp://ca.example/dir", &url, err), "'ftp://ca.example/dir' is not a CA");
    CHECK_BAD(at_parse_ca("acme.example.com/directory", &url, err), "is not a CA", "https://");
    CHECK_BAD(at_parse_ca("https://", &url, err), "'https://' is not a CA: the URL does not parse");
    CHECK_BAD(at_parse_ca("https://exa mple.com/dir", &url, err), "cannot contain spaces");
    CHECK_BAD(at_parse_ca("https://example.com/\ndir", &url, err), "'https://example.com/?dir'",
              "control characters");
    CHECK_BAD(at_parse_ca("", &url, err), "an empty value is not a CA");
}

static void t_key_spec(void)
{
    static const struct { const char *in; at_key_kind kind; int bits; } good[] = {
        { "ec:P-256", AT_KEY_EC, 256 }, { "ec:P-384", AT_KEY_EC, 384 },
        { "rsa:2048", AT_KEY_RSA, 2048 }, { "rsa:3072", AT_KEY_RSA, 3072 },
        { "rsa:4096", AT_KEY_RSA, 4096 }, { "RSA:4096", AT_KEY_RSA, 4096 },
        { "EC:p-384", AT_KEY_EC, 384 },
    };
    at_key_spec k;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        memset(&k, 0, sizeof(k));
        CHECK_GOOD(at_parse_key_spec(good[i].in, &k, err));
        AT_CHECK_INT(k.kind, good[i].kind);
        AT_CHECK_INT(k.bits, good[i].bits);
    }
    CHECK_BAD(at_parse_key_spec("ec:P-999", &k, err),
              "'ec:P-999' is not a key type; use ec:P-256, ec:P-384, rsa:2048, rsa:3072 or rsa:4096");
    CHECK_BAD(at_parse_key_spec("rsa:1024", &k, err), "'rsa:1024' is not a key type; use ec:P-256");
    CHECK_BAD(at_parse_key_spec("ed25519", &k, err), "'ed25519' is not a key type");
    CHECK_BAD(at_parse_key_spec("", &k, err), "'' is not a key type");
}

static void t_challenge(void)
{
    at_challenge_type t = AT_CHAL_NONE;

    CHECK_GOOD(at_parse_challenge("http-01", &t, err));
    AT_CHECK_INT(t, AT_CHAL_HTTP01);
    CHECK_GOOD(at_parse_challenge("tls-alpn-01", &t, err));
    AT_CHECK_INT(t, AT_CHAL_TLSALPN01);
    CHECK_GOOD(at_parse_challenge("DNS-01", &t, err));
    AT_CHECK_INT(t, AT_CHAL_DNS01);
    CHECK_BAD(at_parse_challenge("http", &t, err),
              "'http' is not a challenge type; use http-01, tls-alpn-01 or dns-01");
    CHECK_BAD(at_parse_challenge("tls-sni-01", &t, err), "'tls-sni-01' is not a challenge type");
    AT_CHECK_INT(t, AT_CHAL_DNS01);
}

static void t_duration(void)
{
    static const struct { const char *in; long v; } good[] = {
        { "90", 90 }, { "45s", 45 }, { "30m", 1800 }, { "12h", 43200 }, { "30d", 2592000 },
        { "2w", 1209600 }, { "1", 1 }, { "3650d", 3650L * 86400 }, { "007m", 420 },
    };
    long v;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = -1;
        CHECK_GOOD(at_parse_duration(good[i].in, &v, err));
        AT_CHECK_MSG(v == good[i].v, "'%s' -> %ld, expected %ld", good[i].in, v, good[i].v);
    }
    CHECK_BAD(at_parse_duration("30x", &v, err), "'30x' is not a duration",
              "use a whole number followed by s, m, h, d or w (e.g. 45s, 30m, 12h, 30d, 2w)",
              "a number alone means seconds");
    CHECK_BAD(at_parse_duration("d", &v, err), "'d' is not a duration");
    CHECK_BAD(at_parse_duration("30dd", &v, err), "'30dd' is not a duration");
    CHECK_BAD(at_parse_duration("30D", &v, err), "'30D' is not a duration");
    CHECK_BAD(at_parse_duration("1.5h", &v, err), "'1.5h' is not a duration");
    CHECK_BAD(at_parse_duration("-5", &v, err), "'-5' is not a duration");
    CHECK_BAD(at_parse_duration(" 30d", &v, err), "' 30d' is not a duration");
    CHECK_BAD(at_parse_duration("", &v, err), "'' is not a duration");
    CHECK_BAD(at_parse_duration("0", &v, err), "'0' is not a duration: it must be longer than zero");
    CHECK_BAD(at_parse_duration("0d", &v, err), "longer than zero");
    CHECK_BAD(at_parse_duration("3651d", &v, err), "'3651d' is too long a duration; use at most 3650d");
    CHECK_BAD(at_parse_duration("99999999999999999999999", &v, err), "too long a duration");
    CHECK_BAD(at_parse_duration("1000000000w", &v, err), "too long a duration");
    AT_CHECK_INT(v, 420);
}

static void t_renew_window(void)
{
    at_renew_window w;

    CHECK_GOOD(at_parse_renew_window("33%", &w, err));
    AT_CHECK_INT(w.percent, 33);
    AT_CHECK_INT(w.seconds, 0);
    CHECK_GOOD(at_parse_renew_window("1%", &w, err));
    AT_CHECK_INT(w.percent, 1);
    CHECK_GOOD(at_parse_renew_window("99%", &w, err));
    AT_CHECK_INT(w.percent, 99);
    CHECK_GOOD(at_parse_renew_window("30d", &w, err));
    AT_CHECK_INT(w.percent, 0);
    AT_CHECK_INT(w.seconds, 30 * 86400);
    CHECK_GOOD(at_parse_renew_window("36h", &w, err));
    AT_CHECK_INT(w.seconds, 36 * 3600);
    CHECK_BAD(at_parse_renew_window("150%", &w, err),
              "'150%' is not a renew window; use a percentage of the lifetime from 1% to 99% (e.g. 33%) "
              "or a duration such as 30d");
    CHECK_BAD(at_parse_renew_window("0%", &w, err), "'0%' is not a renew window");
    CHECK_BAD(at_parse_renew_window("100%", &w, err), "'100%' is not a renew window");
    CHECK_BAD(at_parse_renew_window("%", &w, err), "'%' is not a renew window");
    CHECK_BAD(at_parse_renew_window("33.3%", &w, err), "'33.3%' is not a renew window");
    CHECK_BAD(at_parse_renew_window("33%%", &w, err), "'33%%' is not a renew window");
    CHECK_BAD(at_parse_renew_window("soon", &w, err), "'soon' is not a renew window");
    CHECK_BAD(at_parse_renew_window("0d", &w, err), "'0d' is not a renew window");
    AT_CHECK_INT(w.seconds, 36 * 3600);
}

static void t_size(void)
{
    const size_t lo = 256 * 1024, hi = (size_t)1024 * 1024 * 1024;
    static const struct { const char *in; size_t v; } good[] = {
        { "262144", 262144 }, { "256k", 262144 }, { "256K", 262144 }, { "64M", 64u << 20 },
        { "64m", 64u << 20 }, { "1G", 1u << 30 }, { "1g", 1u << 30 }, { "1024M", 1u << 30 },
    };
    size_t v;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = 0;
        CHECK_GOOD(at_parse_size(good[i].in, lo, hi, &v, err));
        AT_CHECK_MSG(v == good[i].v, "'%s' -> %zu, expected %zu", good[i].in, v, good[i].v);
    }
    CHECK_BAD(at_parse_size("1k", lo, hi, &v, err), "'1k' is too small; use a size from 256k to 1G");
    CHECK_BAD(at_parse_size("262143", lo, hi, &v, err), "'262143' is too small");
    CHECK_BAD(at_parse_size("2G", lo, hi, &v, err), "'2G' is too large; use a size from 256k to 1G");
    CHECK_BAD(at_parse_size("1025M", lo, hi, &v, err), "'1025M' is too large");
    CHECK_BAD(at_parse_size("99999999999999999999999", lo, hi, &v, err), "is too large");
    CHECK_BAD(at_parse_size("99999999999G", lo, hi, &v, err), "is too large");
    CHECK_BAD(at_parse_size("12x", lo, hi, &v, err), "'12x' is not a size",
              "optionally followed by k, M or G (e.g. 256k or 64M), from 256k to 1G");
    CHECK_BAD(at_parse_size("64MB", lo, hi, &v, err), "'64MB' is not a size");
    CHECK_BAD(at_parse_size("", lo, hi, &v, err), "'' is not a size");
    CHECK_BAD(at_parse_size("300", 1000, 5000, &v, err), "use a size from 1000 to 5000");
    CHECK_BAD(at_parse_size("1", 3072, 1 << 20, &v, err), "use a size from 3k to 1M");
    AT_CHECK_INT(v, 1u << 30);
}

static void t_int(void)
{
    long v = 0;

    CHECK_GOOD(at_parse_int("8", 1, 100, &v, err));
    AT_CHECK_INT(v, 8);
    CHECK_GOOD(at_parse_int("100", 1, 100, &v, err));
    AT_CHECK_INT(v, 100);
    CHECK_GOOD(at_parse_int("-3", -5, 5, &v, err));
    AT_CHECK_INT(v, -3);
    CHECK_BAD(at_parse_int("0", 1, 100, &v, err), "'0' is out of range; use a whole number from 1 to 100");
    CHECK_BAD(at_parse_int("101", 1, 100, &v, err), "'101' is out of range");
    CHECK_BAD(at_parse_int("99999999999999999999999", 1, 100, &v, err), "is out of range");
    CHECK_BAD(at_parse_int("abc", 1, 100, &v, err), "'abc' is not a whole number; use a number from 1 to 100");
    CHECK_BAD(at_parse_int("5x", 1, 100, &v, err), "'5x' is not a whole number");
    CHECK_BAD(at_parse_int("2.5", 1, 100, &v, err), "'2.5' is not a whole number");
    CHECK_BAD(at_parse_int("", 1, 100, &v, err), "'' is not a whole number");
    CHECK_BAD(at_parse_int(" 5", 1, 100, &v, err), "' 5' is not a whole number");
    AT_CHECK_INT(v, -3);
}

static void t_contact(void)
{
    static const struct { const char *in, *out; } good[] = {
        { "admin@example.com", "mailto:admin@example.com" },
        { "mailto:admin@example.com", "mailto:admin@example.com" },
        { "MAILTO:A.B+tag@Example.COM", "mailto:A.B+tag@example.com" },
        { "x_y-z@mail.sub.example.org", "mailto:x_y-z@mail.sub.example.org" },
    };
    static const char *bad[] = {
        "admin", "admin@", "@example.com", "admin@localhost", "a@b@example.com", "a..b@example.com",
        ".a@example.com", "a.@example.com", "a@example..com", "a@-example.com", "a@example-.com",
        "a b@example.com", "a@exa_mple.com", "a%b@example.com", "a?subject=x@example.com",
        "a@example.com.", "mailto:", "<a@example.com>",
    };
    char *uri;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uri = NULL;
        CHECK_GOOD(at_parse_contact(good[i].in, &uri, err));
        AT_CHECK_STR(uri, good[i].out);
        free(uri);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char frag[128];
        snprintf(frag, sizeof(frag), "'%s' is not an email address; use an address such as admin@example.com",
                 bad[i]);
        uri = (char *)"untouched";
        CHECK_BAD(at_parse_contact(bad[i], &uri, err), frag);
        AT_CHECK(uri == NULL);
    }
    CHECK_BAD(at_parse_contact("a@example.com,b@example.com", &uri, err),
              "'a@example.com,b@example.com' is not one email address; give each address as its own value");
    CHECK_BAD(at_parse_contact("a@example.com b@example.com", &uri, err), "is not one email address");
}

static void t_name(void)
{
    static const struct { const char *in, *out; } good[] = {
        { "Example.COM.", "example.com" }, { "*.Example.com", "*.example.com" },
        { "xn--bcher-kva.example", "xn--bcher-kva.example" }, { "192.0.2.1", "192.0.2.1" },
        { "2001:DB8::1", "2001:db8::1" },
    };
    char out[256];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        CHECK_GOOD(at_parse_name(good[i].in, out, sizeof(out), err));
        AT_CHECK_STR(out, good[i].out);
    }
    CHECK_BAD(at_parse_name("ex ample.com", out, sizeof(out), err),
              "'ex ample.com' is not a name that can be certified: ", "spaces",
              "; use a DNS name such as www.example.com, a wildcard such as *.example.com, or an IP address");
    CHECK_BAD(at_parse_name("a.*.example.com", out, sizeof(out), err),
              "'a.*.example.com' is not a name that can be certified: ", "wildcard", "*.example.com");
    CHECK_BAD(at_parse_name("-bad.example.com", out, sizeof(out), err),
              "'-bad.example.com' is not a name that can be certified: ", "'-'", "www.example.com");
    CHECK_BAD(at_parse_name("b\xc3\xbc" "cher.example", out, sizeof(out), err), "is not a name", "xn--");
    CHECK_BAD(at_parse_name("", out, sizeof(out), err), "example.com");
}

static char *b64url(const unsigned char *p, size_t n)
{
    at_buf b = AT_BUF_INIT;
    at_b64url_encode(&b, p, n);
    return at_buf_detach(&b);
}

static void t_eab(void)
{
    unsigned char raw[32];
    char *key, *short_key;

    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (unsigned char)(i * 37 + 251);  /* gives '-' and '_' in the text */
    key = b64url(raw, sizeof(raw));
    short_key = b64url(raw, 8);
    CHECK_GOOD(at_parse_eab("kid-1", key, err));
    CHECK_GOOD(at_parse_eab("f_7QfB1yD3J-P9YZ", key, err));
    CHECK_BAD(at_parse_eab("", key, err), "needs a key ID and an HMAC key");
    CHECK_BAD(at_parse_eab(NULL, key, err), "needs a key ID and an HMAC key");
    CHECK_BAD(at_parse_eab("kid 1", key, err), "'kid 1' is not an EAB key ID", "contains spaces");
    CHECK_BAD(at_parse_eab("kid-1", "", err), "the EAB HMAC key for key ID 'kid-1' is empty");
    CHECK_BAD(at_parse_eab("kid-1", short_key, err), "decodes to only 8 bytes", "at least 16",
              "swapped");
    CHECK_BAD(at_parse_eab("kid-1", "abc+def/ghijklmnopqrstuvwxyz0123==", err), "standard base64",
              "replace '+' with '-' and '/' with '_'");
    {
        /* A secret is never repeated in a message, even when it is wrong. */
        at_error e = AT_ERROR_INIT;
        AT_CHECK(at_parse_eab("kid-1", "SECRET!value.not.base64url.xyz", &e) != 0);
        AT_CHECK_CONTAINS(e.msg, "is not base64url text");
        AT_CHECK(strstr(e.msg, "SECRET") == NULL);
        at_error_clear(&e);
        AT_CHECK(at_parse_eab("kid-1", short_key, &e) != 0);
        AT_CHECK(strstr(e.msg, short_key) == NULL);
        at_error_clear(&e);
    }
    free(key);
    free(short_key);
}

static void t_profile(void)
{
    char long_name[80];

    CHECK_GOOD(at_parse_profile("classic", err));
    CHECK_GOOD(at_parse_profile("tlsserver", err));
    CHECK_GOOD(at_parse_profile("short-lived_v1.2", err));
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    CHECK_GOOD(at_parse_profile(long_name, err));
    long_name[64] = 'a';
    long_name[65] = '\0';
    CHECK_BAD(at_parse_profile(long_name, err), "is not a profile name; use 1 to 64 letters");
    CHECK_BAD(at_parse_profile("short lived", err), "'short lived' is not a profile name",
              "letters, digits, '.', '_' or '-'", "e.g. classic, tlsserver or shortlived");
    CHECK_BAD(at_parse_profile("", err), "'' is not a profile name");
    CHECK_BAD(at_parse_profile("a/b", err), "'a/b' is not a profile name");
}

/* ---------------------------------------------------- file parsers */

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    AT_CHECK(f != NULL);
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

/* A throwaway self-signed certificate and key, written as PEM files. */
static void make_pem_files(const char *dir, char *cert, char *key, char *enc_key, size_t size)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f;

    AT_CHECK(pk && x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"test", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, pk);
    AT_CHECK(X509_sign(x, pk, EVP_sha256()) > 0);

    snprintf(cert, size, "%s/cert.pem", dir);
    snprintf(key, size, "%s/key.pem", dir);
    snprintf(enc_key, size, "%s/enc-key.pem", dir);
    if ((f = fopen(cert, "w"))) {
        PEM_write_X509(f, x);
        PEM_write_X509(f, x);
        fclose(f);
    }
    if ((f = fopen(key, "w"))) {
        PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
        fclose(f);
    }
    if ((f = fopen(enc_key, "w"))) {
        PEM_write_PKCS8PrivateKey(f, pk, EVP_aes_256_cbc(), NULL, 0, NULL, (void *)"passphrase");
        fclose(f);
    }
    X509_free(x);
    EVP_PKEY_free(pk);
}

static void t_cert_and_key_files(void)
{
    const char *dir = at_test_tmpdir();
    char cert[512], key[512], enc[512], junk[512], damaged[512], missing[512];
    char *text;

    make_pem_files(dir, cert, key, enc, sizeof(cert));
    snprintf(junk, sizeof(junk), "%s/junk.pem", dir);
    write_file(junk, "hello, not a PEM file\n", 0644);
    snprintf(missing, sizeof(missing), "%s/nope.pem", dir);
    snprintf(damaged, sizeof(damaged), "%s/damaged.pem", dir);
    /* A certificate whose base64 was cut in the middle. */
    if ((text = at_test_read_file(cert, NULL))) {
        char *cut = strstr(text, "-----END CERTIFICATE-----");
        if (cut) {
            memmove(cut - 40, cut, strlen(cut) + 1);
            write_file(damaged, text, 0644);
        }
        free(text);
    }

    CHECK_GOOD(at_parse_cert_file(cert, err));
    CHECK_GOOD(at_parse_key_file(key, err));
    CHECK_BAD(at_parse_cert_file(key, err), "holds no PEM certificate", "-----BEGIN CERTIFICATE-----");
    CHECK_BAD(at_parse_cert_file(junk, err), "junk.pem' holds no PEM certificate");
    CHECK_BAD(at_parse_cert_file(damaged, err), "damaged.pem' holds a damaged certificate (certificate 1");
    CHECK_BAD(at_parse_cert_file(missing, err), "nope.pem' cannot be used: No such file or directory");
    CHECK_BAD(at_parse_cert_file(dir, err), "is a directory, not a file");
    CHECK_BAD(at_parse_cert_file("", err), "an empty value is not a file");
    CHECK_BAD(at_parse_key_file(cert, err), "cert.pem' holds no usable private key",
              "-----BEGIN PRIVATE KEY-----");
    CHECK_BAD(at_parse_key_file(enc, err), "enc-key.pem' holds a private key protected by a passphrase");
    CHECK_BAD(at_parse_key_file(junk, err), "holds no usable private key");
    CHECK_BAD(at_parse_key_file(missing, err), "cannot be used: No such file or directory");
    CHECK_BAD(at_parse_key_file("/dev/null", err), "is a special file, not a file");
}

static void t_command(void)
{
    const char *dir = at_test_tmpdir();
    char script[512], plain[512], spaced[600];

    snprintf(script, sizeof(script), "%s/hook.sh", dir);
    snprintf(plain, sizeof(plain), "%s/plain.sh", dir);
    snprintf(spaced, sizeof(spaced), "%s --flag", script);
    write_file(script, "#!/bin/sh\nexit 0\n", 0755);
    write_file(plain, "#!/bin/sh\nexit 0\n", 0644);

    CHECK_GOOD(at_parse_command(script, err));
    CHECK_GOOD(at_parse_command("/bin/sh", err));
    CHECK_BAD(at_parse_command("hook.sh", err), "'hook.sh' is not an absolute path",
              "give the full path of the program");
    CHECK_BAD(at_parse_command(plain, err), "plain.sh' is not executable", "chmod +x");
    CHECK_BAD(at_parse_command(dir, err), "is a directory, not a program");
    CHECK_BAD(at_parse_command(spaced, err), "--flag' cannot be used", "takes no arguments");
    CHECK_BAD(at_parse_command("/nonexistent/hook", err), "'/nonexistent/hook' cannot be used: No such file");
    CHECK_BAD(at_parse_command("", err), "an empty value is not a program");
}

static void t_quote(void)
{
    char buf[AT_CONF_QUOTE_SIZE], longv[300];

    AT_CHECK_STR(at_conf_quote("a\tb\nc\x7f", buf, sizeof(buf)), "a?b?c?");
    AT_CHECK_STR(at_conf_quote(NULL, buf, sizeof(buf)), "");
    memset(longv, 'x', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    at_conf_quote(longv, buf, sizeof(buf));
    AT_CHECK_INT(strlen(buf), 103);
    AT_CHECK(strcmp(buf + 100, "...") == 0);
    at_conf_quote(longv, buf, 16);
    AT_CHECK_INT(strlen(buf), 15);
}

/* --------------------------------------------------------------- sites */

typedef struct site_args {
    const char *site;
    const char *names[8];
    at_key_spec keys[4];
    size_t nkeys;
    at_challenge_type chal[3];
    size_t nchal;
    const char *ca;
    const char *contact[2];
    const char *profile;
    const char *dns01;
    at_renew_window window;
} site_args;

static int add(at_conf *c, const site_args *a, at_error *err)
{
    at_site_conf s;
    size_t n = 0, nc = 0;

    while (n < 8 && a->names[n])
        n++;
    while (nc < 2 && a->contact[nc])
        nc++;
    memset(&s, 0, sizeof(s));
    s.site = a->site;
    s.names = a->names;
    s.nnames = n;
    s.keys = a->keys;
    s.nkeys = a->nkeys;
    s.challenges = a->chal;
    s.nchallenges = a->nchal;
    s.ca.url = (char *)a->ca;
    s.ca.contact = (char **)a->contact;
    s.ca.ncontact = nc;
    s.ca.accept_terms = 1;
    s.profile = a->profile;
    s.window = a->window;
    s.dns01_command = a->dns01;
    return at_conf_add_site(c, &s, err);
}

#define EC256 { AT_KEY_EC, 256 }
#define EC384 { AT_KEY_EC, 384 }
#define RSA2048 { AT_KEY_RSA, 2048 }

static void t_defaults(void)
{
    at_conf *c = at_conf_new();
    site_args a = { .site = "example.com:443", .names = { "Example.COM", "www.example.com." } };
    at_error e = AT_ERROR_INIT;

    AT_CHECK(c != NULL);
    if (!c)
        return;
    AT_CHECK_INT(c->concurrency, 8);
    AT_CHECK_INT(c->retry_base, 60);
    AT_CHECK_INT(c->retry_max, 21600);
    AT_CHECK_INT(c->poll_timeout, 300);
    AT_CHECK_INT(c->request_timeout, 30);
    AT_CHECK_OK(add(c, &a, &e), &e);
    AT_CHECK_INT(c->ncerts, 1);
    AT_CHECK_INT(c->ncas, 1);
    if (c->ncerts == 1) {
        const at_cert_conf *cc = &c->certs[0];
        AT_CHECK_STR(cc->id, "example.com_ec256");
        AT_CHECK_STR(cc->site, "example.com:443");
        AT_CHECK_INT(cc->nnames, 2);
        AT_CHECK_STR(cc->names[0], "example.com");
        AT_CHECK_STR(cc->names[1], "www.example.com");
        AT_CHECK_INT(cc->key.kind, AT_KEY_EC);
        AT_CHECK_INT(cc->key.bits, 256);
        AT_CHECK_INT(cc->nchallenges, 2);
        AT_CHECK_INT(cc->challenges[0], AT_CHAL_TLSALPN01);
        AT_CHECK_INT(cc->challenges[1], AT_CHAL_HTTP01);
        AT_CHECK_INT(cc->ca, 0);
        AT_CHECK(cc->profile == NULL && cc->dns01_command == NULL && cc->preferred_chain == NULL);
        AT_CHECK(at_conf_cert(c, "example.com_ec256") == cc);
        AT_CHECK(at_conf_cert(c, "example.com_rsa2048") == NULL);
    }
    AT_CHECK_STR(c->cas[0].url, AT_CA_LETSENCRYPT);
    AT_CHECK_INT(c->cas[0].accept_terms, 1);
    at_conf_free(c);
}

static void t_keys_expand(void)
{
    at_conf *c = at_conf_new();
    site_args a = { .site = "s1", .names = { "*.Example.org", "example.org" },
                    .keys = { EC384, RSA2048, EC384 }, .nkeys = 3,
                    .chal = { AT_CHAL_DNS01, AT_CHAL_HTTP01, AT_CHAL_DNS01 }, .nchal = 3,
                    .ca = "https://ca.example/dir", .dns01 = "/bin/true", .profile = "shortlived",
                    .window = { 0, 86400 } };
    at_error e = AT_ERROR_INIT;

    AT_CHECK_OK(add(c, &a, &e), &e);
    AT_CHECK_INT(c->ncerts, 2);
    if (c->ncerts == 2) {
        AT_CHECK(strncmp(c->certs[0].id, "_wildcard_.example.org_ec384", 28) == 0);
        AT_CHECK(strncmp(c->certs[1].id, "_wildcard_.example.org_rsa2048", 30) == 0);
        AT_CHECK(strcmp(c->certs[0].id, c->certs[1].id) != 0);
        AT_CHECK_STR(c->certs[1].names[0], "*.example.org");
        AT_CHECK_INT(c->certs[1].key.kind, AT_KEY_RSA);
        AT_CHECK_INT(c->certs[0].nchallenges, 2);
        AT_CHECK_INT(c->certs[0].challenges[0], AT_CHAL_DNS01);
        AT_CHECK_STR(c->certs[1].dns01_command, "/bin/true");
        AT_CHECK_STR(c->certs[1].profile, "shortlived");
        AT_CHECK_INT(c->certs[1].window.seconds, 86400);
        AT_CHECK_STR(c->certs[0].site, "s1");
        AT_CHECK_INT(c->certs[0].ca, c->certs[1].ca);
    }
    AT_CHECK_STR(c->cas[0].url, "https://ca.example/dir");
    at_conf_free(c);
}

static void t_key_kinds(void)
{
    at_conf *c = at_conf_new();
    site_args a = { .site = "s1", .names = { "example.com" }, .keys = { EC256, EC384 }, .nkeys = 2 };
    CHECK_BAD(add(c, &a, err), "site s1 asks for both ec:P-256 and ec:P-384",
              "one certificate per key kind (EC and RSA)");
    AT_CHECK_INT(c->ncerts, 0);
    AT_CHECK_INT(c->ncas, 0);
    at_conf_free(c);
}

static void t_merge(void)
{
    at_conf *c = at_conf_new();
    site_args a = { .site = "example.com:443", .names = { "example.com", "www.example.com" },
                    .keys = { EC256, RSA2048 }, .nkeys = 2 };
    site_args b = { .site = "example.com:80", .names = { "WWW.example.com", "example.com", "example.com" },
                    .keys = { RSA2048, EC256 }, .nkeys = 2 };
    at_error e = AT_ERROR_INIT;

    AT_CHECK_OK(add(c, &a, &e), &e);
    AT_CHECK_OK(add(c, &b, &e), &e);
    AT_CHECK_INT(c->ncerts, 2);
    AT_CHECK_INT(c->ncas, 1);
    AT_CHECK_STR(c->certs[0].site, "example.com:443");
    AT_CHECK_STR(c->certs[1].site, "example.com:443");

    /* Same names and keys but another profile: the two cannot share. */
    b.profile = "shortlived";
    CHECK_BAD(add(c, &b, err), "site example.com:80 certifies the same names as site example.com:443",
              "different profile", "give both the same settings");
    c->hints.profile = "AutoTLSProfile NAME";
    CHECK_BAD(add(c, &b, err), "different AutoTLSProfile NAME");
    b.profile = NULL;
    b.chal[0] = AT_CHAL_HTTP01;
    b.nchal = 1;
    CHECK_BAD(add(c, &b, err), "different challenge list");
    b.nchal = 0;
    b.window.percent = 50;
    CHECK_BAD(add(c, &b, err), "different renew window");
    b.window.percent = 0;
    b.ca = "https://other.example/dir";
    CHECK_BAD(add(c, &b, err), "different CA");
    b.ca = NULL;
    /* the :80 vhost without the RSA key: the same names, other key types */
    b.nkeys = 1;
    b.keys[0] = (at_key_spec)EC256;
    CHECK_BAD(add(c, &b, err), "site example.com:80 certifies the same names as site example.com:443 but "
              "with other key types; give both the same key types");
    AT_CHECK_INT(c->ncerts, 2);
    AT_CHECK_INT(c->ncas, 1);
    at_conf_free(c);
}

static void t_overlap(void)
{
    at_conf *c = at_conf_new();
    site_args a = { .site = "siteA", .names = { "a.example", "b.example" } };
    site_args b = { .site = "siteB", .names = { "c.example", "B.example" } };
    site_args r = { .site = "siteR", .names = { "c.example", "b.example" }, .keys = { RSA2048 }, .nkeys = 1 };
    site_args p = { .site = "siteP", .names = { "a.example", "b.example" }, .keys = { EC384 }, .nkeys = 1 };
    site_args sub = { .site = "siteS", .names = { "a.example" } };
    at_error e = AT_ERROR_INIT;

    AT_CHECK_OK(add(c, &a, &e), &e);
    CHECK_BAD(add(c, &b, err), "site siteA and site siteB both certify 'b.example' with an EC key",
              "(ec:P-256 and ec:P-256)", "remove it from one of them");
    /* Another key kind for the same name is a different certificate. */
    AT_CHECK_OK(add(c, &r, &e), &e);
    /* Another EC curve is still the EC certificate of those names. */
    CHECK_BAD(add(c, &p, err), "site siteP certifies the same names as site siteA but with other key types");
    p.names[1] = "p.example";
    CHECK_BAD(add(c, &p, err), "site siteA and site siteP both certify 'a.example' with an EC key",
              "(ec:P-256 and ec:P-384)");
    /* A subset of a site's names is not that site. */
    CHECK_BAD(add(c, &sub, err), "site siteA and site siteS both certify 'a.example'");
    AT_CHECK_INT(c->ncerts, 2);
    AT_CHECK_STR(c->certs[1].id, "c.example_rsa2048");
    AT_CHECK_INT(c->ncas, 1);
    at_conf_free(c);
}

static void t_wildcards_and_challenges(void)
{
    at_conf *c = at_conf_new();
    site_args w = { .site = "wild", .names = { "*.example.net" } };
    site_args red = { .site = "red", .names = { "*.example.io", "www.example.io", "example.io" },
                      .chal = { AT_CHAL_DNS01 }, .nchal = 1, .dns01 = "/bin/true" };
    site_args dns = { .site = "dns", .names = { "example.biz" }, .chal = { AT_CHAL_HTTP01, AT_CHAL_DNS01 },
                      .nchal = 2 };
    site_args ip = { .site = "ip", .names = { "192.0.2.7" }, .chal = { AT_CHAL_DNS01 }, .nchal = 1,
                     .dns01 = "/bin/true" };
    site_args bad = { .site = "bad", .names = { "ok.example", "bad..example" } };
    at_error e = AT_ERROR_INIT;

    CHECK_BAD(add(c, &w, err), "site wild: the wildcard name '*.example.net' can only be validated with "
              "dns-01, which is not among its challenges (tls-alpn-01, http-01)", "a dns-01 command");
    w.chal[0] = AT_CHAL_DNS01;
    w.nchal = 1;
    CHECK_BAD(add(c, &w, err), "site wild: the wildcard name '*.example.net' needs a dns-01 command");
    c->hints.dns01_command = "AutoTLSDNS01Command PATH";
    CHECK_BAD(add(c, &w, err), "set AutoTLSDNS01Command PATH");
    w.dns01 = "/bin/true";
    AT_CHECK_OK(add(c, &w, &e), &e);
    AT_CHECK_INT(c->ncerts, 1);

    CHECK_BAD(add(c, &red, err), "site red lists both '*.example.io' and 'www.example.io'",
              "remove 'www.example.io'");
    CHECK_BAD(add(c, &dns, err), "site dns lists dns-01 among its challenges but has no dns-01 command");
    CHECK_BAD(add(c, &ip, err), "site ip: the IP address '192.0.2.7' cannot be validated with dns-01");
    ip.chal[1] = AT_CHAL_HTTP01;
    ip.nchal = 2;
    AT_CHECK_OK(add(c, &ip, &e), &e);
    CHECK_BAD(add(c, &bad, err), "site bad", "bad..example");
    AT_CHECK_INT(c->ncerts, 2);
    at_conf_free(c);
}

static void t_names_limits(void)
{
    at_conf *c = at_conf_new();
    const char *many[AT_MAX_NAMES_PER_CERT + 1];
    char bufs[AT_MAX_NAMES_PER_CERT + 1][32];
    at_site_conf s;
    site_args none = { .site = "empty" };
    at_error e = AT_ERROR_INIT;

    for (int i = 0; i <= AT_MAX_NAMES_PER_CERT; i++) {
        snprintf(bufs[i], sizeof(bufs[i]), "n%d.example.com", i);
        many[i] = bufs[i];
    }
    memset(&s, 0, sizeof(s));
    s.site = "big";
    s.names = many;
    s.nnames = AT_MAX_NAMES_PER_CERT + 1;
    CHECK_BAD(at_conf_add_site(c, &s, err), "site big lists 101 names; a certificate holds at most 100");
    s.nnames = AT_MAX_NAMES_PER_CERT;
    AT_CHECK_OK(at_conf_add_site(c, &s, &e), &e);
    AT_CHECK_INT(c->ncerts, 1);
    AT_CHECK_INT(c->certs[0].nnames, 100);
    CHECK_BAD(add(c, &none, err), "site empty has no name to certify");
    at_conf_free(c);
}

static void t_ca_sharing(void)
{
    at_conf *c = at_conf_new();
    site_args a = { .site = "a", .names = { "a.example" }, .ca = "https://ca.example/dir",
                    .contact = { "mailto:x@example.com", "mailto:y@example.com" } };
    site_args b = { .site = "b", .names = { "b.example" }, .ca = "https://ca.example/dir",
                    .contact = { "mailto:y@example.com", "mailto:x@example.com" } };
    site_args d = { .site = "d", .names = { "d.example" }, .ca = "https://other.example/dir" };
    site_args le = { .site = "le", .names = { "le.example" } };
    site_args x = { .site = "x", .names = { "x.example" }, .ca = "https://ca.example/dir",
                    .contact = { "mailto:z@example.com" } };
    at_site_conf s;
    const char *names[] = { "eab.example" };
    at_error e = AT_ERROR_INIT;

    AT_CHECK_OK(add(c, &a, &e), &e);
    AT_CHECK_OK(add(c, &b, &e), &e);
    AT_CHECK_INT(c->ncas, 1);
    AT_CHECK_OK(add(c, &d, &e), &e);
    AT_CHECK_OK(add(c, &le, &e), &e);
    AT_CHECK_INT(c->ncas, 3);
    AT_CHECK_INT(c->certs[1].ca, 0);
    AT_CHECK_INT(c->certs[2].ca, 1);
    AT_CHECK_INT(c->certs[3].ca, 2);
    AT_CHECK_STR(c->cas[2].url, AT_CA_LETSENCRYPT);
    AT_CHECK_INT(c->cas[0].ncontact, 2);
    AT_CHECK_STR(c->cas[0].contact[0], "mailto:x@example.com");

    CHECK_BAD(add(c, &x, err), "site x uses the CA https://ca.example/dir with a different contact address "
              "than site a", "one CA has one account");
    c->hints.contact = "AutoTLSContact EMAIL";
    CHECK_BAD(add(c, &x, err), "different AutoTLSContact EMAIL than site a");

    memset(&s, 0, sizeof(s));
    s.site = "eab";
    s.names = names;
    s.nnames = 1;
    s.ca.url = "https://ca.example/dir";
    s.ca.contact = (char *[]){ "mailto:x@example.com", "mailto:y@example.com" };
    s.ca.ncontact = 2;
    s.ca.accept_terms = 1;
    s.ca.eab_kid = "kid";
    s.ca.eab_key = "a2V5a2V5a2V5a2V5a2V5a2V5";
    CHECK_BAD(at_conf_add_site(c, &s, err), "different external account binding than site a");
    s.ca.eab_kid = NULL;
    s.ca.eab_key = NULL;
    s.ca.accept_terms = 0;
    CHECK_BAD(at_conf_add_site(c, &s, err), "different acceptance of the terms of service");
    s.ca.accept_terms = 1;
    s.ca.proxy = "http://proxy:3128";
    CHECK_BAD(at_conf_add_site(c, &s, err), "different proxy");
    s.ca.proxy = NULL;
    s.ca.trust_file = "/etc/ssl/certs/ca.pem";
    CHECK_BAD(at_conf_add_site(c, &s, err), "different trust anchors");
    AT_CHECK_INT(c->ncas, 3);
    AT_CHECK_INT(c->ncerts, 4);

    /* An EAB CA of its own: kept whole, HS256 by default. */
    s.ca.trust_file = NULL;
    s.ca.url = "https://eab-ca.example/dir";
    s.ca.eab_kid = "kid";
    s.ca.eab_key = "a2V5a2V5a2V5a2V5a2V5a2V5";
    AT_CHECK_OK(at_conf_add_site(c, &s, &e), &e);
    AT_CHECK_INT(c->ncas, 4);
    AT_CHECK_STR(c->cas[3].eab_kid, "kid");
    AT_CHECK_STR(c->cas[3].eab_key, "a2V5a2V5a2V5a2V5a2V5a2V5");
    AT_CHECK_STR(c->cas[3].eab_alg, "HS256");
    at_conf_free(c);
}

static void t_certs_for_name(void)
{
    at_conf *c = at_conf_new();
    site_args a = { .site = "a", .names = { "example.com", "www.example.com" }, .keys = { EC256 }, .nkeys = 1 };
    site_args w = { .site = "w", .names = { "*.example.com" }, .keys = { EC256, RSA2048 }, .nkeys = 2,
                    .chal = { AT_CHAL_DNS01 }, .nchal = 1, .dns01 = "/bin/true" };
    site_args ip = { .site = "ip", .names = { "2001:db8::5" } };
    const at_cert_conf *out[AT_MAX_KEYS];
    at_error e = AT_ERROR_INIT;
    size_t n;

    AT_CHECK_OK(add(c, &a, &e), &e);
    AT_CHECK_OK(add(c, &w, &e), &e);
    AT_CHECK_OK(add(c, &ip, &e), &e);
    AT_CHECK_INT(c->ncerts, 4);

    /* exact EC from a, and RSA only from the wildcard */
    n = at_conf_certs_for_name(c, "WWW.Example.com.", out, AT_MAX_KEYS);
    AT_CHECK_INT(n, 2);
    if (n == 2) {
        AT_CHECK_STR(out[0]->site, "a");
        AT_CHECK_STR(out[1]->site, "w");
        AT_CHECK_INT(out[1]->key.kind, AT_KEY_RSA);
    }
    n = at_conf_certs_for_name(c, "shop.example.com", out, AT_MAX_KEYS);
    AT_CHECK_INT(n, 2);
    if (n == 2) {
        AT_CHECK_STR(out[0]->site, "w");
        AT_CHECK_STR(out[1]->site, "w");
    }
    AT_CHECK_INT(at_conf_certs_for_name(c, "shop.example.com", out, 1), 1);
    AT_CHECK_INT(at_conf_certs_for_name(c, "a.b.example.com", out, AT_MAX_KEYS), 0);
    AT_CHECK_INT(at_conf_certs_for_name(c, "example.org", out, AT_MAX_KEYS), 0);
    AT_CHECK_INT(at_conf_certs_for_name(c, "", out, AT_MAX_KEYS), 0);
    AT_CHECK_INT(at_conf_certs_for_name(c, NULL, out, AT_MAX_KEYS), 0);
    /* "*.example.com" does not cover the bare domain */
    n = at_conf_certs_for_name(c, "example.com", out, AT_MAX_KEYS);
    AT_CHECK_INT(n, 1);
    n = at_conf_certs_for_name(c, "2001:db8::5", out, AT_MAX_KEYS);
    AT_CHECK_INT(n, 1);
    at_conf_free(c);
    AT_CHECK_INT(at_conf_certs_for_name(NULL, "example.com", out, AT_MAX_KEYS), 0);
    AT_CHECK(at_conf_cert(NULL, "x") == NULL);
}

static const at_test_case cases[] = {
    AT_CASE(t_onoff),
    AT_CASE(t_ca),
    AT_CASE(t_key_spec),
    AT_CASE(t_challenge),
    AT_CASE(t_duration),
    AT_CASE(t_renew_window),
    AT_CASE(t_size),
    AT_CASE(t_int),
    AT_CASE(t_contact),
    AT_CASE(t_name),
    AT_CASE(t_eab),
    AT_CASE(t_profile),
    AT_CASE(t_cert_and_key_files),
    AT_CASE(t_command),
    AT_CASE(t_quote),
    AT_CASE(t_defaults),
    AT_CASE(t_keys_expand),
    AT_CASE(t_key_kinds),
    AT_CASE(t_merge),
    AT_CASE(t_overlap),
    AT_CASE(t_wildcards_and_challenges),
    AT_CASE(t_names_limits),
    AT_CASE(t_ca_sharing),
    AT_CASE(t_certs_for_name),
    AT_CASE_END
};

int main(int argc, char **argv) { return at_test_main(argc, argv, cases); }
