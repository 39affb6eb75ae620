/*
 * at_site.h: the configuration as a host server holds it before it becomes
 * an at_conf, the same for every host:
 *
 *   - at_site_settings: what one virtual host / server block says, which it
 *     inherits from the main server (Apache) or http{} (nginx) value by
 *     value (the client certificate with its key, the EAB key id with its
 *     key and algorithm), and the at_site_conf it becomes;
 *   - at_global_settings: what only the whole server says, and how it
 *     lands in at_conf;
 *   - the questions a request or a handshake asks of the configuration.
 *
 * Strings and arrays are borrowed (the host's configuration pool owns them).
 */
#ifndef AT_SITE_H
#define AT_SITE_H

#include <stddef.h>
#include "at_conf.h"
#include "at_error.h"

/* NULL, 0 and -1 mean "not said here". */
typedef struct at_site_settings {
    const char              *ca_url;          /* NULL: Let's Encrypt */
    const char              *ca_trust;
    const char              *client_cert;     /* inherited with client_key */
    const char              *client_key;
    const char *const       *contacts;        /* "mailto:..." */
    size_t                   ncontacts;
    int                      accept_terms;    /* -1 not said, 0 off, 1 on */
    const at_key_spec       *keys;
    size_t                   nkeys;
    const at_challenge_type *challenges;
    size_t                   nchallenges;
    at_renew_window          window;          /* {0, 0}: not said */
    const char              *profile;
    const char              *eab_kid;         /* inherited with eab_key and eab_alg */
    const char              *eab_key;
    const char              *eab_alg;
    const char              *preferred_chain;
    const char              *dns01_command;
} at_site_settings;

/* Everything "not said". */
void at_site_settings_init(at_site_settings *s);

/* Fill in what s does not say from parent. */
void at_site_settings_inherit(at_site_settings *s, const at_site_settings *parent);

/* The at_site_conf for at_conf_add_site (it borrows from s, names and site;
 * terms count as accepted only when said "on"). */
void at_site_settings_conf(const at_site_settings *s, const char *site, const char *const *names,
                           size_t nnames, at_site_conf *out);

typedef struct at_global_settings {
    const char *store_dir;       /* NULL: the host's default */
    const char *notify_command;
    long        concurrency;     /* -1 not said */
    long        retry_min;       /* seconds; -1 not said */
    long        retry_max;
    size_t      shm_size;        /* bytes of shared memory; 0 not said */
} at_global_settings;

void at_global_settings_init(at_global_settings *g);

/* Put g into conf, with store_dir the directory in use (g's, or the host's
 * default). 0, or -1 with err when memory runs out. */
int at_conf_set_globals(at_conf *conf, const char *store_dir, const at_global_settings *g,
                        at_error *err);

/* The live table size the core suggests for conf (at_live_size_hint of all
 * its names). */
size_t at_conf_live_size_hint(const at_conf *conf);

/* ------------------------------------------------- directive arguments */

/* The checks a directive with several arguments needs beyond each value's
 * parser (at_conf.h), so both hosts refuse the same lists with the same
 * words. As with those parsers the host puts the directive name in front
 * of a message; `directive` only appears in the example some messages end
 * with ("..., e.g. AutoTLSKeys ec:P-256 rsa:2048"). */

/* 1 to AT_MAX_NAMES_PER_CERT names (at_parse_name each), duplicates
 * dropped: *names is a malloc'd array of malloc'd normalised names (free it
 * with at_parse_names_free). */
int  at_parse_names(const char *directive, const char *const *args, size_t n, char ***names,
                    size_t *nnames, at_error *err);
void at_parse_names_free(char **names, size_t n);

/* One or two key types, at most one EC and one RSA: out[0..*nout). */
int at_parse_key_specs(const char *directive, const char *const *args, size_t n,
                       at_key_spec out[2], size_t *nout, at_error *err);

/* Challenge types in order of preference, each at most once. */
int at_parse_challenges(const char *const *args, size_t n,
                        at_challenge_type out[AT_MAX_CHALLENGES], size_t *nout, at_error *err);

/* The EAB MAC algorithm: NULL means HS256; *alg is a static "HS256",
 * "HS384" or "HS512" (any case accepted). */
int at_parse_eab_alg(const char *s, const char **alg, at_error *err);

/* The common name of the root a preferred chain ends in: 1 to 255 bytes,
 * no control character. */
int at_parse_preferred_chain(const char *directive, const char *s, at_error *err);

/* MIN [MAX] durations of the retry delay; MAX (NULL: six hours, or MIN if
 * longer) must not be shorter than MIN. */
int at_parse_retry_delay(const char *directive, const char *min, const char *max,
                         long *lo, long *hi, at_error *err);

/* ------------------------------------------------------------ questions */

/* Is host (lowercase, no trailing dot) served by a managed certificate? */
int at_conf_manages(const at_conf *conf, const char *host);

/* The key kinds of the placeholder certificates the site of name needs so
 * that every client reaches its 503 page: EC unless all of the site's
 * certificates are RSA, and RSA when one of them is. Returns how many (1
 * or 2), EC first. */
size_t at_site_placeholder_kinds(const at_conf *conf, const char *name, at_key_kind kinds[2]);

/* A host name (Host header, SNI) as the configuration compares it:
 * in[0..len) in lowercase ASCII, one trailing dot dropped, cut to outsz - 1
 * bytes (and at a NUL byte). */
void at_name_lower(char *out, size_t outsz, const char *in, size_t len);

/* The name a site serves for a requested host: host itself when one of
 * names covers it (wildcards too), else names[0]. */
const char *at_site_name_for(const char *const *names, size_t nnames, const char *host);

#endif
