/*
 * at_site_parse.c: the checks of directives that take several arguments
 * (see at_site.h); each single value goes through the parsers of at_conf.h.
 */
#include "at_site.h"
#include "at_conf_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define Q(s) at_conf_quote((s), qbuf, sizeof(qbuf))
#define RETRY_MAX_DEFAULT 21600   /* six hours */

static const char *ex(const char *directive)
{
    return directive ? directive : "";
}

static const char *sp(const char *directive)
{
    return directive ? " " : "";
}

void at_parse_names_free(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

int at_parse_names(const char *directive, const char *const *args, size_t n, char ***names,
                   size_t *nnames, at_error *err)
{
    char **out;
    size_t k = 0;

    *names = NULL;
    *nnames = 0;
    if (n == 0)
        return at_error_set(err, AT_ERR_CONFIG, "give at least one name, e.g. %s%sexample.com "
                            "www.example.com", ex(directive), sp(directive));
    if (n > AT_MAX_NAMES_PER_CERT)
        return at_error_set(err, AT_ERR_CONFIG, "%zu names given; a certificate holds at most %d",
                            n, AT_MAX_NAMES_PER_CERT);
    out = calloc(n, sizeof(*out));
    if (!out)
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        char name[256];
        int dup = 0;
        if (at_parse_name(args[i], name, sizeof(name), err) != 0) {
            at_parse_names_free(out, k);
            return -1;
        }
        for (size_t j = 0; j < k; j++)
            dup |= strcmp(out[j], name) == 0;
        if (dup)
            continue;
        if ((out[k] = strdup(name)) == NULL) {
            at_parse_names_free(out, k);
            return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        }
        k++;
    }
    *names = out;
    *nnames = k;
    return 0;
}

int at_parse_key_specs(const char *directive, const char *const *args, size_t n,
                       at_key_spec out[2], size_t *nout, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];

    *nout = 0;
    if (n == 0)
        return at_error_set(err, AT_ERR_CONFIG, "give one or two key types, e.g. %s%sec:P-256 rsa:2048",
                            ex(directive), sp(directive));
    if (n > 2)
        return at_error_set(err, AT_ERR_CONFIG, "%zu key types given; give at most one EC and one RSA "
                            "type, e.g. %s%sec:P-256 rsa:2048", n, ex(directive), sp(directive));
    for (size_t i = 0; i < n; i++) {
        at_key_spec spec;
        if (at_parse_key_spec(args[i], &spec, err) != 0)
            return -1;
        for (size_t k = 0; k < *nout; k++)
            if (out[k].kind == spec.kind)
                return at_error_set(err, AT_ERR_CONFIG, "'%s' repeats the %s key type; give at most "
                                    "one EC and one RSA type, e.g. %s%sec:P-256 rsa:2048", Q(args[i]),
                                    spec.kind == AT_KEY_EC ? "EC" : "RSA", ex(directive), sp(directive));
        out[(*nout)++] = spec;
    }
    return 0;
}

int at_parse_challenges(const char *const *args, size_t n,
                        at_challenge_type out[AT_MAX_CHALLENGES], size_t *nout, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];

    *nout = 0;
    if (n == 0)
        return at_error_set(err, AT_ERR_CONFIG, "give one or more of tls-alpn-01 http-01 dns-01, in "
                            "order of preference");
    for (size_t i = 0; i < n; i++) {
        at_challenge_type t;
        if (at_parse_challenge(args[i], &t, err) != 0)
            return -1;
        for (size_t k = 0; k < *nout; k++)
            if (out[k] == t)
                return at_error_set(err, AT_ERR_CONFIG, "'%s' is listed twice; list each of "
                                    "tls-alpn-01 http-01 dns-01 at most once", Q(args[i]));
        if (*nout == AT_MAX_CHALLENGES)     /* cannot happen without a repeat */
            return at_error_set(err, AT_ERR_CONFIG, "too many challenge types");
        out[(*nout)++] = t;
    }
    return 0;
}

int at_parse_eab_alg(const char *s, const char **alg, at_error *err)
{
    static const char *const algs[] = { "HS256", "HS384", "HS512" };
    char qbuf[AT_CONF_QUOTE_SIZE];

    *alg = algs[0];
    if (!s)
        return 0;
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
        if (strcasecmp(s, algs[i]) == 0) {
            *alg = algs[i];
            return 0;
        }
    return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a MAC algorithm; use HS256 (the default), "
                        "HS384 or HS512", Q(s));
}

int at_parse_preferred_chain(const char *directive, const char *s, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE];
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 255)
        return at_error_set(err, AT_ERR_CONFIG, "'%s' is not an issuer name; give the common name "
                            "(1 to 255 characters) of the root the chain should end in, e.g. "
                            "%s%s\"ISRG Root X1\"", Q(s ? s : ""), ex(directive), sp(directive));
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return at_error_set(err, AT_ERR_CONFIG, "the issuer name contains a control character; "
                                "give the common name of the root, e.g. %s%s\"ISRG Root X1\"",
                                ex(directive), sp(directive));
    return 0;
}

int at_parse_retry_delay(const char *directive, const char *min, const char *max,
                         long *lo, long *hi, at_error *err)
{
    char qbuf[AT_CONF_QUOTE_SIZE], qmin[AT_CONF_QUOTE_SIZE];

    if (at_parse_duration(min, lo, err) != 0)
        return -1;
    if (!max) {
        *hi = *lo > RETRY_MAX_DEFAULT ? *lo : RETRY_MAX_DEFAULT;
        return 0;
    }
    if (at_parse_duration(max, hi, err) != 0)
        return -1;
    if (*hi < *lo)
        return at_error_set(err, AT_ERR_CONFIG, "the longest delay '%s' is shorter than the first "
                            "'%s'; give MIN [MAX] with MAX >= MIN, e.g. %s%s1m 6h", Q(max),
                            at_conf_quote(min, qmin, sizeof(qmin)), ex(directive), sp(directive));
    return 0;
}
