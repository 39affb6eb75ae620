/*
 * at_conf.h: the configuration model both modules and the tool fill in, and
 * the value parsers behind every directive. A parser's message never names
 * the directive (Apache says "AutoTLSKeys", nginx "autotls_keys"); the module
 * prefixes it: "AutoTLSKeys: 'ec:P-999' is not a key type; use ec:P-256, ...".
 */
#ifndef AT_CONF_H
#define AT_CONF_H

#include <stddef.h>
#include "at_error.h"
#include "at_key.h"
#include "at_acme.h"

#define AT_CA_LETSENCRYPT         "https://acme-v02.api.letsencrypt.org/directory"
#define AT_CA_LETSENCRYPT_STAGING "https://acme-staging-v02.api.letsencrypt.org/directory"

#define AT_MAX_NAMES_PER_CERT 100
#define AT_MAX_KEYS 4
#define AT_MAX_CHALLENGES 3

/* When to renew: when `percent` of the lifetime remains, or when less than
 * `seconds` remain. Both zero = default (1/3, or 1/2 for lifetimes <= 10 days). */
typedef struct at_renew_window {
    int  percent;   /* 1..99, or 0 */
    long seconds;   /* > 0, or 0 */
} at_renew_window;

/* A certificate authority and how to talk to it. */
typedef struct at_ca_conf {
    char  *url;              /* directory URL */
    char  *trust_file;       /* PEM trust anchors for the CA's TLS, or NULL */
    char  *client_cert;      /* client certificate towards the CA, or NULL */
    char  *client_key;
    char  *proxy;            /* or NULL */
    char **contact;          /* "mailto:..." */
    size_t ncontact;
    int    accept_terms;
    char  *eab_kid;          /* or NULL */
    char  *eab_key;          /* base64url HMAC key */
    char  *eab_alg;          /* "HS256" (default), "HS384", "HS512" */
} at_ca_conf;

/* One managed certificate: one set of names with one key type. A site with
 * `AutoTLSKeys ec:P-256 rsa:2048` yields two of these sharing `site`. */
typedef struct at_cert_conf {
    char  *id;               /* store id, from the first name and the key slug */
    char  *site;             /* groups the certificates of one vhost / server block */
    char **names;            /* normalised; names[0] is the primary */
    size_t nnames;
    at_key_spec key;
    at_challenge_type challenges[AT_MAX_CHALLENGES];
    size_t nchallenges;
    size_t ca;               /* index into at_conf.cas */
    char  *profile;          /* or NULL */
    char  *preferred_chain;  /* issuer CN, or NULL */
    at_renew_window window;
    char  *dns01_command;    /* or NULL */
} at_cert_conf;

/* Directive spellings used in messages the core writes about configuration. */
typedef struct at_conf_hints {
    const char *accept_terms;   /* "AutoTLSAcceptTerms on" */
    const char *eab;            /* "AutoTLSEAB KID KEY" */
    const char *contact;        /* "AutoTLSContact EMAIL" */
    const char *profile;        /* "AutoTLSProfile NAME" */
    const char *dns01_command;  /* "AutoTLSDNS01Command PATH" */
    const char *ca_trust;       /* "AutoTLSCATrust FILE" */
} at_conf_hints;

typedef struct at_conf {
    at_cert_conf *certs;
    size_t        ncerts;
    at_ca_conf   *cas;
    size_t        ncas;
    char         *store_dir;
    char         *notify_command;  /* or NULL */
    int           concurrency;     /* orders in flight at once, default 8 */
    long          retry_base;      /* first backoff in seconds, default 60 */
    long          retry_max;       /* backoff cap in seconds, default 21600 */
    long          poll_timeout;    /* seconds an order may wait on the CA, default 300 */
    long          request_timeout; /* seconds per HTTP request, default 30 */
    at_conf_hints hints;
} at_conf;

/* Everything a vhost / server block says; inherited values already merged by
 * the module. Strings are borrowed during at_conf_add_site (copied). */
typedef struct at_site_conf {
    const char  *site;                 /* e.g. "example.com:443" (for messages and grouping) */
    const char *const *names;
    size_t       nnames;
    const at_key_spec *keys;           /* nkeys == 0: ec:P-256 */
    size_t       nkeys;
    const at_challenge_type *challenges; /* nchallenges == 0: tls-alpn-01 http-01 */
    size_t       nchallenges;
    at_ca_conf   ca;                   /* borrowed strings */
    const char  *profile;
    const char  *preferred_chain;
    at_renew_window window;
    const char  *dns01_command;
} at_site_conf;

at_conf *at_conf_new(void);
void     at_conf_free(at_conf *conf);

/* Add a site: normalise and validate its names, expand one certificate per
 * key type (id from the first name and the key slug, e.g.
 * "example.com_ec256"), share identical CA settings, and refuse a name
 * already managed with the same key kind (EC or RSA: the server picks a
 * certificate per kind) by another site (the message names both sites).
 * A site whose name set and keys equal an existing one is merged (a vhost on
 * :80 and :443 with the same names); if its other settings differ, it is
 * refused. One CA URL has one account, so two sites that give one URL
 * different account or transport settings are refused. Wildcards require
 * dns-01 with a command; dns-01 requires a command; IP addresses need http-01
 * or tls-alpn-01. A missing ca.url means Let's Encrypt. On error the
 * configuration is unchanged. Messages use conf->hints when they are set. */
int at_conf_add_site(at_conf *conf, const at_site_conf *site, at_error *err);

/* The certificate with this id, or NULL. */
const at_cert_conf *at_conf_cert(const at_conf *conf, const char *id);

/* The certificates (up to max) that would serve host: those listing it
 * exactly, then a wildcard one for each key kind no exact one offers. */
size_t at_conf_certs_for_name(const at_conf *conf, const char *host,
                              const at_cert_conf **out, size_t max);

/* ---------------------------------------------------------------- parsers */

int at_parse_onoff(const char *s, int *on, at_error *err);
/* "letsencrypt", "letsencrypt-staging" or an https:// (or http:// for a
 * local CA) URL. *url is malloc'd. */
int at_parse_ca(const char *s, char **url, at_error *err);
int at_parse_key_spec(const char *s, at_key_spec *spec, at_error *err);
int at_parse_challenge(const char *s, at_challenge_type *t, at_error *err);
/* "33%" or a duration. */
int at_parse_renew_window(const char *s, at_renew_window *w, at_error *err);
/* "90", "45s", "30m", "12h", "30d", "2w" -> seconds (> 0, at most ten years). */
int at_parse_duration(const char *s, long *seconds, at_error *err);
/* "262144", "256k", "64M", "1G" (binary multiples) -> bytes, within [min, max]. */
int at_parse_size(const char *s, size_t min, size_t max, size_t *bytes, at_error *err);
/* An email address (or "mailto:addr"); *uri is "mailto:addr" (malloc'd). */
int at_parse_contact(const char *s, char **uri, at_error *err);
/* A managed name (DNS, wildcard or IP); normalised into out (>= 256 bytes). */
int at_parse_name(const char *s, char *out, size_t outsz, at_error *err);
/* Integer within [min, max]. */
int at_parse_int(const char *s, long min, long max, long *v, at_error *err);
/* EAB key id and base64url HMAC key (decodes to >= 16 bytes). Messages
 * never quote the key. */
int at_parse_eab(const char *kid, const char *key, at_error *err);
/* Profile name: 1..64 of [A-Za-z0-9._-]. */
int at_parse_profile(const char *s, at_error *err);
/* A readable file that holds at least one PEM certificate / one unencrypted
 * private key. */
int at_parse_cert_file(const char *path, at_error *err);
int at_parse_key_file(const char *path, at_error *err);
/* An existing executable file (absolute path). */
int at_parse_command(const char *path, at_error *err);

#endif
