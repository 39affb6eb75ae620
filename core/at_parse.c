/*
 * at_parse.c: the value parsers behind every directive, shared by the Apache
 * module, the nginx module and the tool. A message says what the value was,
 * why it is wrong and what would be accepted; it never names the directive
 * (each host prefixes its own spelling).
 */
#include "at_conf.h"
#include "at_conf_int.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "at_b64.h"
#include "at_x509.h"

#define AT_DURATION_MAX (3650L * 86400)   /* ten years: anything longer is a typo */
#define AT_KEY_TYPES    "ec:P-256, ec:P-384, rsa:2048, rsa:3072 or rsa:4096"
#define AT_CA_CHOICES   "letsencrypt, letsencrypt-staging or the https:// URL of the CA's ACME " \
                        "directory (e.g. https://acme.example.com/directory)"
#define AT_DURATION_USE "use a whole number followed by s, m, h, d or w (e.g. 45s, 30m, 12h, 30d, " \
                        "2w); a number alone means seconds"
#define AT_WINDOW_USE   "use a percentage of the lifetime from 1%% to 99%% (e.g. 33%%) or a duration " \
                        "such as 30d"

const char *at_conf_quote(const char *s, char *buf, size_t size)
{
    size_t n = 0, max;

    if (!buf || size < 8)
        return "";
    if (!s)
        s = "";
    max = size - 4 < 100 ? size - 4 : 100;
    for (; s[n] && n < max; n++)
        buf[n] = (unsigned char)s[n] < 0x20 || s[n] == 0x7f ? '?' : s[n];
    if (s[n]) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

#define Q(s) at_conf_quote((s), qbuf, sizeof(qbuf))

/* ------------------------------------------------------------- on / off */

int at_parse_onoff(const char *s, int *on, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];

    if (s && strcasecmp(s, "on") == 0) {
        *on = 1;
        return 0;
    }
    if (s && strcasecmp(s, "off") == 0) {
        *on = 0;
        return 0;
    }
    return at_error_set(err, AT_ERR_CONFIG, "'%s' is neither on nor off; use on or off", Q(s));
}

/* ------------------------------------------------------------------- CA */

static int is_loopback_host(const char *host)
{
    if (strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0 || strcmp(host, "::1") == 0)
        return 1;
    /* 127.0.0.0/8, written the ordinary dotted way */
    if (strncmp(host, "127.", 4) == 0) {
        for (const char *p = host + 4; *p; p++)
            if (!isdigit((unsigned char)*p) && *p != '.')
                return 0;
        return 1;
    }
    return 0;
}

static int check_ca_url(const char *s, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];
    CURLU *u;
    char *host = NULL, *scheme = NULL;
    int rv = -1;

    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a CA: a URL cannot contain spaces "
                                "or control characters; use " AT_CA_CHOICES, Q(s));
    if (strncasecmp(s, "https://", 8) != 0 && strncasecmp(s, "http://", 7) != 0)
        return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a CA; use " AT_CA_CHOICES, Q(s));
    if (!(u = curl_url()))
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    if (curl_url_set(u, CURLUPART_URL, s, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        at_error_set(err, AT_ERR_CONFIG, "'%s' is not a CA: the URL does not parse; use " AT_CA_CHOICES,
                     Q(s));
        goto done;
    }
    if (strcasecmp(scheme, "http") == 0 && !is_loopback_host(host)) {
        at_error_set(err, AT_ERR_CONFIG, "'%s' is not a usable CA URL: ACME runs over https:// "
                     "(plain http:// is accepted only for a CA on this machine, such as "
                     "http://127.0.0.1:14000/dir); use " AT_CA_CHOICES, Q(s));
        goto done;
    }
    rv = 0;
done:
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(u);
    return rv;
}

int at_parse_ca(const char *s, char **url, at_error *err)
{
    const char *known = NULL;

    *url = NULL;
    if (!s || !*s)
        return at_error_set(err, AT_ERR_CONFIG, "an empty value is not a CA; use " AT_CA_CHOICES);
    if (strcasecmp(s, "letsencrypt") == 0)
        known = AT_CA_LETSENCRYPT;
    else if (strcasecmp(s, "letsencrypt-staging") == 0)
        known = AT_CA_LETSENCRYPT_STAGING;
    if (!known && check_ca_url(s, err) != 0)
        return -1;
    if (!(*url = strdup(known ? known : s)))
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    return 0;
}

/* -------------------------------------------------- keys and challenges */

int at_parse_key_spec(const char *s, at_key_spec *spec, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];

    if (s && *s && at_key_spec_parse(s, spec, NULL) == 0)
        return 0;
    return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a key type; use " AT_KEY_TYPES, Q(s));
}

int at_parse_challenge(const char *s, at_challenge_type *t, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];
    at_challenge_type v = at_challenge_parse(s);

    if (v == AT_CHAL_NONE)
        return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a challenge type; use http-01, "
                            "tls-alpn-01 or dns-01", Q(s));
    *t = v;
    return 0;
}

/* ------------------------------------------------------ numbers, sizes */

/* Leading decimal digits of s as an unsigned value; *end after them.
 * -1 when there are none or the value exceeds limit. */
static int digits(const char *s, unsigned long long limit, unsigned long long *v, const char **end)
{
    unsigned long long x = 0;
    const char *p = s;

    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (x > (limit - d) / 10)
            return -2;
        x = x * 10 + d;
    }
    *v = x;
    *end = p;
    return 0;
}

/* 0 ok, -1 malformed, -2 too long, -3 zero */
static int duration(const char *s, long *seconds)
{
    unsigned long long v, mult;
    const char *end;
    int r;

    if (!s || (r = digits(s, (unsigned long long)AT_DURATION_MAX, &v, &end)) == -1)
        return -1;
    if (r == -2)
        return -2;
    switch (*end) {
    case '\0': mult = 1; break;
    case 's':  mult = 1; break;
    case 'm':  mult = 60; break;
    case 'h':  mult = 3600; break;
    case 'd':  mult = 86400; break;
    case 'w':  mult = 7 * 86400; break;
    default:   return -1;
    }
    if (*end && end[1])
        return -1;
    if (v == 0)
        return -3;
    if (v > (unsigned long long)AT_DURATION_MAX / mult)
        return -2;
    *seconds = (long)(v * mult);
    return 0;
}

int at_parse_duration(const char *s, long *seconds, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];

    switch (duration(s, seconds)) {
    case 0:
        return 0;
    case -2:
        return at_error_set(err, AT_ERR_CONFIG, "'%s' is too long a duration; use at most 3650d "
                            "(ten years)", Q(s));
    case -3:
        return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a duration: it must be longer than "
                            "zero; " AT_DURATION_USE, Q(s));
    }
    return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a duration; " AT_DURATION_USE, Q(s));
}

int at_parse_renew_window(const char *s, at_renew_window *w, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];
    unsigned long long v;
    const char *end;
    long secs;

    if (s && digits(s, 1000, &v, &end) == 0 && end[0] == '%' && end[1] == '\0') {
        if (v < 1 || v > 99)
            return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a renew window; " AT_WINDOW_USE, Q(s));
        w->percent = (int)v;
        w->seconds = 0;
        return 0;
    }
    if (s && duration(s, &secs) == 0) {
        w->percent = 0;
        w->seconds = secs;
        return 0;
    }
    return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a renew window; " AT_WINDOW_USE, Q(s));
}

static const char *size_text(size_t n, char *buf, size_t size)
{
    static const char units[] = "GMk";
    for (int i = 0; i < 3; i++) {
        size_t u = (size_t)1 << (10 * (3 - i));
        if (n >= u && n % u == 0) {
            snprintf(buf, size, "%zu%c", n / u, units[i]);
            return buf;
        }
    }
    snprintf(buf, size, "%zu", n);
    return buf;
}

int at_parse_size(const char *s, size_t min, size_t max, size_t *bytes, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE], lo[32], hi[32];
    unsigned long long v = 0, mult = 1;
    const char *end;
    int r = 0;

    size_text(min, lo, sizeof(lo));
    size_text(max, hi, sizeof(hi));
    if (!s || (r = digits(s, (unsigned long long)SIZE_MAX, &v, &end)) == -1)
        goto bad;
    if (r == -2)
        goto range;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': mult = 1024; break;
    case 'm': case 'M': mult = 1024 * 1024; break;
    case 'g': case 'G': mult = 1024 * 1024 * 1024; break;
    default: goto bad;
    }
    if (*end && end[1])
        goto bad;
    if (v > (unsigned long long)SIZE_MAX / mult)
        goto range;
    v *= mult;
    if (v < min || v > max)
        goto range;
    *bytes = (size_t)v;
    return 0;
range:
    return at_error_set(err, AT_ERR_CONFIG, "'%s' is too %s; use a size from %s to %s", Q(s),
                        r == -2 || v > max ? "large" : "small", lo, hi);
bad:
    return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a size; use a number of bytes, optionally "
                        "followed by k, M or G (e.g. 256k or 64M), from %s to %s", Q(s), lo, hi);
}

int at_parse_int(const char *s, long min, long max, long *v, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];
    char *end;
    long x;

    if (s && (isdigit((unsigned char)*s) || ((*s == '-' || *s == '+') && isdigit((unsigned char)s[1])))) {
        errno = 0;
        x = strtol(s, &end, 10);
        if (*end == '\0') {
            if (errno == 0 && x >= min && x <= max) {
                *v = x;
                return 0;
            }
            return at_error_set(err, AT_ERR_CONFIG, "'%s' is out of range; use a whole number from "
                                "%ld to %ld", Q(s), min, max);
        }
    }
    return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a whole number; use a number from %ld to %ld",
                        Q(s), min, max);
}

/* -------------------------------------------------------------- contact */

static int atext(unsigned char c)
{
    /* RFC 5322 atext, less '%' and '?' which a mailto: URI would have to escape */
    return isalnum(c) || (c && strchr("!#$&'*+-/=^_`{|}~", c));
}

static int email_domain_ok(const char *d)
{
    size_t label = 0, labels = 1, n = 0;

    for (const char *p = d; *p; p++, n++) {
        if (*p == '.') {
            if (label == 0 || p[-1] == '-')
                return 0;
            label = 0;
            labels++;
            continue;
        }
        if (!isalnum((unsigned char)*p) && *p != '-')
            return 0;
        if (label == 0 && *p == '-')
            return 0;
        if (++label > 63)
            return 0;
    }
    return n > 0 && n <= 253 && label > 0 && d[n - 1] != '-' && labels >= 2;
}

int at_parse_contact(const char *s, char **uri, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];
    const char *addr = s, *at;
    size_t local;
    char *out;

    *uri = NULL;
    if (addr && strncasecmp(addr, "mailto:", 7) == 0)
        addr += 7;
    if (!addr || !*addr)
        return at_error_set(err, AT_ERR_CONFIG, "'%s' is not an email address; use an address such "
                            "as admin@example.com", Q(s));
    at = strchr(addr, '@');
    if (strpbrk(addr, ",;") || (at && strchr(at + 1, '@') && strpbrk(addr, " \t")))
        return at_error_set(err, AT_ERR_CONFIG, "'%s' is not one email address; give each address "
                            "as its own value, such as admin@example.com", Q(s));
    local = at ? (size_t)(at - addr) : 0;
    if (!at || strchr(at + 1, '@') || local == 0 || local > 64 || addr[0] == '.' || at[-1] == '.' ||
        strstr(addr, "..") || !email_domain_ok(at + 1))
        goto bad;
    for (size_t i = 0; i < local; i++)
        if (!atext((unsigned char)addr[i]) && addr[i] != '.')
            goto bad;
    if (!(out = malloc(7 + strlen(addr) + 1)))
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    memcpy(out, "mailto:", 7);
    memcpy(out + 7, addr, local + 1);
    /* The domain part is case-insensitive; the local part is not ours to change. */
    for (size_t i = local + 1, j = 7 + local + 1; ; i++, j++) {
        out[j] = (char)tolower((unsigned char)addr[i]);
        if (!addr[i])
            break;
    }
    *uri = out;
    return 0;
bad:
    return at_error_set(err, AT_ERR_CONFIG, "'%s' is not an email address; use an address such as "
                        "admin@example.com (the CA writes to it about expiring certificates and "
                        "policy changes)", Q(s));
}

/* ---------------------------------------------------------------- names */

#define AT_NAME_USE "use a DNS name such as www.example.com, a wildcard such as *.example.com, " \
                    "or an IP address"

int at_parse_name(const char *s, char *out, size_t outsz, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE], why[AT_ERROR_MSG_MAX];
    const char *reason;

    if (at_name_normalize(s, out, outsz, err) == 0)
        return 0;
    if (!err || err->code != AT_ERR_CONFIG || !s || !*s)
        return -1;
    /* Say it in this file's words: 'value' is not ...: why; what to use. */
    snprintf(why, sizeof(why), "%s", err->msg);
    reason = strncmp(why, "invalid name \"", 14) == 0 ? strstr(why, "\": ") : NULL;
    reason = reason ? reason + 3 : why;
    at_error_set(err, AT_ERR_CONFIG, "'%s' is not a name that can be certified: %.700s; " AT_NAME_USE,
                 Q(s), reason);
    return -1;
}

/* ------------------------------------------------------- EAB, profiles */

int at_parse_eab(const char *kid, const char *key, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];
    at_buf raw = AT_BUF_INIT;
    size_t klen, rawlen;

    if (!kid || !*kid)
        return at_error_set(err, AT_ERR_CONFIG, "the external account binding needs a key ID and an "
                            "HMAC key, both as the CA shows them on its account page");
    if (strlen(kid) > 256)
        return at_error_set(err, AT_ERR_CONFIG, "'%s' is not an EAB key ID: it is longer than 256 "
                            "characters; copy the key ID from the CA's account page", Q(kid));
    for (const char *p = kid; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return at_error_set(err, AT_ERR_CONFIG, "'%s' is not an EAB key ID: it contains spaces "
                                "or characters outside printable ASCII; copy the key ID from the CA's "
                                "account page", Q(kid));
    /* The key is a secret: messages describe it, never quote it. */
    if (!key || !*key)
        return at_error_set(err, AT_ERR_CONFIG, "the EAB HMAC key for key ID '%s' is empty; give the "
                            "HMAC key the CA shows next to the key ID", Q(kid));
    klen = strlen(key);
    while (klen && key[klen - 1] == '=')
        klen--;
    if (strpbrk(key, "+/"))
        return at_error_set(err, AT_ERR_CONFIG, "the EAB HMAC key for key ID '%s' is standard base64 "
                            "(it contains '+' or '/'); ACME uses base64url: replace '+' with '-' and "
                            "'/' with '_'", Q(kid));
    if (klen == 0 || !at_b64url_valid(key, klen) || at_b64url_decode(&raw, key, strlen(key)) != 0) {
        at_buf_free_secret(&raw);
        return at_error_set(err, AT_ERR_CONFIG, "the EAB HMAC key for key ID '%s' is not base64url "
                            "text (letters, digits, '-' and '_'); copy it again from the CA's account "
                            "page", Q(kid));
    }
    rawlen = raw.len;
    at_buf_free_secret(&raw);
    if (rawlen < 16)
        return at_error_set(err, AT_ERR_CONFIG, "the EAB HMAC key for key ID '%s' decodes to only %zu "
                            "bytes, a CA's key has at least 16; were the key ID and the key swapped?",
                            Q(kid), rawlen);
    return 0;
}

int at_parse_profile(const char *s, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];
    size_t n = s ? strlen(s) : 0;
    int ok = n >= 1 && n <= 64;

    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-';
    if (ok)
        return 0;
    return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a profile name; use 1 to 64 letters, digits, "
                        "'.', '_' or '-', as the CA lists its profiles (e.g. classic, tlsserver or "
                        "shortlived)", Q(s));
}

/* ---------------------------------------------------------------- files */

/* A regular file we can open; BIO in *bio. */
static int open_file(const char *path, const char *what, BIO **bio, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];
    struct stat sb;

    *bio = NULL;
    if (!path || !*path)
        return at_error_set(err, AT_ERR_CONFIG, "an empty value is not a file; give the path of %s",
                            what);
    if (stat(path, &sb) != 0)
        return at_error_set(err, AT_ERR_CONFIG, "'%s' cannot be used: %s; give the path of %s that "
                            "the server can read", Q(path), strerror(errno), what);
    if (!S_ISREG(sb.st_mode))
        return at_error_set(err, AT_ERR_CONFIG, "'%s' is %s, not a file; give the path of %s", Q(path),
                            S_ISDIR(sb.st_mode) ? "a directory" : "a special file", what);
    if (!(*bio = BIO_new_file(path, "r"))) {
        int e = errno;
        ERR_clear_error();
        return at_error_set(err, AT_ERR_CONFIG, "'%s' cannot be read: %s; give the path of %s that "
                            "the server can read", Q(path), strerror(e ? e : EACCES), what);
    }
    return 0;
}

/* End of input for the PEM reader, as opposed to a damaged block. */
static int pem_at_end(void)
{
    unsigned long e = ERR_peek_last_error();
    int end = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
    ERR_clear_error();
    return end;
}

int at_parse_cert_file(const char *path, at_error *err)
{
    static const char what[] = "a PEM file with one or more certificates (-----BEGIN CERTIFICATE-----)";
    char qbuf[AT_CONF_QUOTE_SIZE];
    BIO *bio;
    X509 *x;
    int n = 0;

    if (open_file(path, what, &bio, err) != 0)
        return -1;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        X509_free(x);
        n++;
    }
    BIO_free(bio);
    if (!pem_at_end())
        return at_error_set(err, AT_ERR_CONFIG, "'%s' holds a damaged certificate (certificate %d does "
                            "not parse); give the path of %s", Q(path), n + 1, what);
    if (n == 0)
        return at_error_set(err, AT_ERR_CONFIG, "'%s' holds no PEM certificate; give the path of %s",
                            Q(path), what);
    return 0;
}

/* Never prompt for a passphrase on the server's terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf; (void)size; (void)rwflag; (void)u;
    return -1;
}

int at_parse_key_file(const char *path, at_error *err)
{
    static const char what[] = "a PEM file with an unencrypted private key (-----BEGIN PRIVATE KEY-----)";
    char qbuf[AT_CONF_QUOTE_SIZE];
    char head[4096];
    BIO *bio;
    EVP_PKEY *pk;
    int n, encrypted = 0;

    if (open_file(path, what, &bio, err) != 0)
        return -1;
    /* Passphrase-protected keys would need a prompt that a server has no
     * one to answer; say so instead of "no key". */
    n = BIO_read(bio, head, (int)sizeof(head) - 1);
    if (n > 0) {
        head[n] = '\0';
        encrypted = strstr(head, "ENCRYPTED") != NULL;
    }
    (void)BIO_reset(bio);
    pk = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (pk) {
        EVP_PKEY_free(pk);
        return 0;
    }
    if (encrypted)
        return at_error_set(err, AT_ERR_CONFIG, "'%s' holds a private key protected by a passphrase, "
                            "which a server cannot type; remove it (openssl pkey -in KEY -out NEWKEY) "
                            "and give the path of %s", Q(path), what);
    return at_error_set(err, AT_ERR_CONFIG, "'%s' holds no usable private key; give the path of %s",
                        Q(path), what);
}

int at_parse_command(const char *path, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];
    struct stat sb;

    if (!path || !*path)
        return at_error_set(err, AT_ERR_CONFIG, "an empty value is not a program; give the absolute "
                            "path of an executable file (e.g. /usr/local/bin/dns01-hook)");
    if (path[0] != '/')
        return at_error_set(err, AT_ERR_CONFIG, "'%s' is not an absolute path; give the full path of "
                            "the program (e.g. /usr/local/bin/dns01-hook)", Q(path));
    if (stat(path, &sb) != 0) {
        int e = errno;
        if (strchr(path, ' '))
            return at_error_set(err, AT_ERR_CONFIG, "'%s' cannot be used: %s; the value is one program "
                                "run without a shell, so it takes no arguments (put them in a small "
                                "script and give its path)", Q(path), strerror(e));
        return at_error_set(err, AT_ERR_CONFIG, "'%s' cannot be used: %s; give the absolute path of an "
                            "executable file", Q(path), strerror(e));
    }
    if (!S_ISREG(sb.st_mode))
        return at_error_set(err, AT_ERR_CONFIG, "'%s' is %s, not a program; give the absolute path of "
                            "an executable file", Q(path), S_ISDIR(sb.st_mode) ? "a directory" : "a special file");
    if (access(path, X_OK) != 0)
        return at_error_set(err, AT_ERR_CONFIG, "'%s' is not executable (%s); make it executable "
                            "(chmod +x) or give another program", Q(path), strerror(errno));
    return 0;
}
