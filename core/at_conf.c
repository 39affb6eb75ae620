/*
 * at_conf.c: the configuration model. Sites (a vhost, a server block) come
 * in one at a time; each becomes one certificate per key type. Whatever
 * only the whole configuration can tell is checked here, so that a
 * configuration test reports it: names managed twice, wildcards without
 * dns-01, one CA spelled with two different account settings.
 */
#include "at_conf.h"
#include "at_conf_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "at_store.h"
#include "at_x509.h"

#define DEFAULT_CONCURRENCY     8
#define DEFAULT_RETRY_BASE      60
#define DEFAULT_RETRY_MAX       21600
#define DEFAULT_POLL_TIMEOUT    300
#define DEFAULT_REQUEST_TIMEOUT 30

at_conf *at_conf_new(void)
{
    at_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->concurrency = DEFAULT_CONCURRENCY;
    c->retry_base = DEFAULT_RETRY_BASE;
    c->retry_max = DEFAULT_RETRY_MAX;
    c->poll_timeout = DEFAULT_POLL_TIMEOUT;
    c->request_timeout = DEFAULT_REQUEST_TIMEOUT;
    return c;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static void free_secret(char *s)
{
    if (s)
        OPENSSL_cleanse(s, strlen(s));
    free(s);
}

static void cert_free(at_cert_conf *c)
{
    free(c->id);
    free(c->site);
    free_strv(c->names, c->nnames);
    free(c->profile);
    free(c->preferred_chain);
    free(c->dns01_command);
}

static void ca_free(at_ca_conf *ca)
{
    free(ca->url);
    free(ca->trust_file);
    free(ca->client_cert);
    free(ca->client_key);
    free(ca->proxy);
    free_strv(ca->contact, ca->ncontact);
    free(ca->eab_kid);
    free_secret(ca->eab_key);
    free(ca->eab_alg);
}

void at_conf_free(at_conf *conf)
{
    if (!conf)
        return;
    for (size_t i = 0; i < conf->ncerts; i++)
        cert_free(&conf->certs[i]);
    free(conf->certs);
    for (size_t i = 0; i < conf->ncas; i++)
        ca_free(&conf->cas[i]);
    free(conf->cas);
    free(conf->store_dir);
    free(conf->notify_command);
    free(conf);
}

/* ----------------------------------------------------------- lookups */

const at_cert_conf *at_conf_cert(const at_conf *conf, const char *id)
{
    if (!conf || !id)
        return NULL;
    for (size_t i = 0; i < conf->ncerts; i++)
        if (strcmp(conf->certs[i].id, id) == 0)
            return &conf->certs[i];
    return NULL;
}

static int has_name(const at_cert_conf *c, const char *name)
{
    for (size_t i = 0; i < c->nnames; i++)
        if (strcmp(c->names[i], name) == 0)
            return 1;
    return 0;
}

size_t at_conf_certs_for_name(const at_conf *conf, const char *host,
                              const at_cert_conf **out, size_t max)
{
    char h[256];
    size_t n = 0, len;
    int kinds = 0;

    if (!conf || !host || !*host || (len = strlen(host)) >= sizeof(h))
        return 0;
    for (size_t i = 0; i <= len; i++)
        h[i] = (char)((host[i] >= 'A' && host[i] <= 'Z') ? host[i] + 32 : host[i]);
    if (len > 1 && h[len - 1] == '.')
        h[len - 1] = '\0';
    /* The exact name first; a wildcard only for a key kind no exact
     * certificate offers (that is what the serving side will pick). */
    for (size_t i = 0; i < conf->ncerts && n < max; i++)
        if (has_name(&conf->certs[i], h)) {
            out[n++] = &conf->certs[i];
            kinds |= 1 << conf->certs[i].key.kind;
        }
    for (size_t i = 0; i < conf->ncerts && n < max; i++) {
        const at_cert_conf *c = &conf->certs[i];
        if (kinds & (1 << c->key.kind))
            continue;
        for (size_t k = 0; k < c->nnames; k++)
            if (c->names[k][0] == '*' && at_name_matches(c->names[k], h)) {
                out[n++] = c;
                kinds |= 1 << c->key.kind;
                break;
            }
    }
    return n;
}

/* ------------------------------------------------------------- sites */

/* A site while it is being checked: everything normalised and owned here. */
typedef struct site_work {
    const char *site;                 /* for messages */
    char      **names;
    size_t      nnames;
    at_key_spec keys[AT_MAX_KEYS];
    size_t      nkeys;
    at_challenge_type chal[AT_MAX_CHALLENGES];
    size_t      nchal;
} site_work;

static void work_free(site_work *w)
{
    free_strv(w->names, w->nnames);
}

static const char *hint(const char *h, const char *dflt)
{
    return h && *h ? h : dflt;
}

static const char *kind_name(at_key_kind k)
{
    return k == AT_KEY_RSA ? "an RSA" : "an EC";
}

static int work_names(site_work *w, const at_site_conf *s, at_error *err)
{
    char norm[256];

    if (s->nnames == 0 || !s->names)
        return at_error_set(err, AT_ERR_CONFIG, "site %s has no name to certify; give it a server "
                            "name or list the names to certify", w->site);
    if (s->nnames > AT_MAX_NAMES_PER_CERT)
        return at_error_set(err, AT_ERR_CONFIG, "site %s lists %zu names; a certificate holds at most "
                            "%d, so split them over several sites", w->site, s->nnames,
                            AT_MAX_NAMES_PER_CERT);
    if (!(w->names = calloc(s->nnames, sizeof(char *))))
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < s->nnames; i++) {
        int dup = 0;
        if (at_parse_name(s->names[i], norm, sizeof(norm), err) != 0)
            return at_error_prefix(err, "site %s", w->site);
        for (size_t k = 0; k < w->nnames && !dup; k++)
            dup = strcmp(w->names[k], norm) == 0;
        if (dup)
            continue;
        if (!(w->names[w->nnames] = strdup(norm)))
            return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        w->nnames++;
    }
    /* CAs refuse an order that lists a name its wildcard already covers. */
    for (size_t i = 0; i < w->nnames; i++) {
        if (w->names[i][0] != '*')
            continue;
        for (size_t k = 0; k < w->nnames; k++)
            if (k != i && w->names[k][0] != '*' && at_name_matches(w->names[i], w->names[k]))
                return at_error_set(err, AT_ERR_CONFIG, "site %s lists both '%s' and '%s', which the "
                                    "wildcard already covers; CAs refuse such redundant names, so "
                                    "remove '%s'", w->site, w->names[i], w->names[k], w->names[k]);
    }
    return 0;
}

static int key_valid(const at_key_spec *k)
{
    if (k->kind == AT_KEY_EC)
        return k->bits == 256 || k->bits == 384;
    if (k->kind == AT_KEY_RSA)
        return k->bits == 2048 || k->bits == 3072 || k->bits == 4096;
    return 0;
}

static int work_keys(site_work *w, const at_site_conf *s, at_error *err)
{
    static const at_key_spec dflt = AT_KEY_SPEC_DEFAULT;

    if (s->nkeys == 0 || !s->keys) {
        w->keys[0] = dflt;
        w->nkeys = 1;
        return 0;
    }
    for (size_t i = 0; i < s->nkeys; i++) {
        int dup = 0;
        if (!key_valid(&s->keys[i]))
            return at_error_set(err, AT_ERR_INTERNAL, "site %s: unsupported key type %d/%d", w->site,
                                (int)s->keys[i].kind, s->keys[i].bits);
        for (size_t k = 0; k < w->nkeys && !dup; k++) {
            if (at_key_spec_equal(&w->keys[k], &s->keys[i])) {
                dup = 1;
            } else if (w->keys[k].kind == s->keys[i].kind) {
                /* The server picks a certificate per handshake by key kind. */
                return at_error_set(err, AT_ERR_CONFIG, "site %s asks for both %s and %s; a server offers "
                                    "one certificate per key kind (EC and RSA), so keep one of them",
                                    w->site, at_key_spec_name(&w->keys[k]), at_key_spec_name(&s->keys[i]));
            }
        }
        if (dup)
            continue;
        if (w->nkeys == AT_MAX_KEYS)
            return at_error_set(err, AT_ERR_CONFIG, "site %s asks for more than %d key types", w->site,
                                AT_MAX_KEYS);
        w->keys[w->nkeys++] = s->keys[i];
    }
    return 0;
}

static int work_challenges(site_work *w, const at_site_conf *s, at_error *err)
{
    if (s->nchallenges == 0 || !s->challenges) {
        w->chal[0] = AT_CHAL_TLSALPN01;
        w->chal[1] = AT_CHAL_HTTP01;
        w->nchal = 2;
        return 0;
    }
    for (size_t i = 0; i < s->nchallenges; i++) {
        int dup = 0;
        if (!at_challenge_name(s->challenges[i]))
            return at_error_set(err, AT_ERR_INTERNAL, "site %s: unknown challenge type %d", w->site,
                                (int)s->challenges[i]);
        for (size_t k = 0; k < w->nchal && !dup; k++)
            dup = w->chal[k] == s->challenges[i];
        if (!dup && w->nchal < AT_MAX_CHALLENGES)
            w->chal[w->nchal++] = s->challenges[i];
    }
    return 0;
}

static int work_has_chal(const site_work *w, at_challenge_type t)
{
    for (size_t i = 0; i < w->nchal; i++)
        if (w->chal[i] == t)
            return 1;
    return 0;
}

static void chal_list(const site_work *w, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < w->nchal; i++)
        len += (size_t)snprintf(out + len, len < size ? size - len : 0, "%s%s", i ? ", " : "",
                                at_challenge_name(w->chal[i]));
}

/* Which challenge can validate which name (RFC 8555 §8.4, RFC 8738 §7). */
static int work_check_challenges(const at_conf *conf, const site_work *w, const at_site_conf *s,
                                 at_error *err)
{
    const char *cmd_hint = hint(conf->hints.dns01_command, "a dns-01 command");
    int has_dns = work_has_chal(w, AT_CHAL_DNS01);
    int has_cmd = s->dns01_command && *s->dns01_command;
    char list[64];

    chal_list(w, list, sizeof(list));
    for (size_t i = 0; i < w->nnames; i++) {
        const char *n = w->names[i];
        if (n[0] == '*' && !has_dns)
            return at_error_set(err, AT_ERR_CONFIG, "site %s: the wildcard name '%s' can only be "
                                "validated with dns-01, which is not among its challenges (%s); add "
                                "dns-01 and set %s", w->site, n, list, cmd_hint);
        if (n[0] == '*' && !has_cmd)
            return at_error_set(err, AT_ERR_CONFIG, "site %s: the wildcard name '%s' needs a dns-01 "
                                "command to publish its TXT record; set %s", w->site, n, cmd_hint);
        if (at_name_is_ip(n) && !work_has_chal(w, AT_CHAL_HTTP01) && !work_has_chal(w, AT_CHAL_TLSALPN01))
            return at_error_set(err, AT_ERR_CONFIG, "site %s: the IP address '%s' cannot be validated "
                                "with dns-01; add http-01 or tls-alpn-01 to its challenges (now %s)",
                                w->site, n, list);
    }
    if (has_dns && !has_cmd)
        return at_error_set(err, AT_ERR_CONFIG, "site %s lists dns-01 among its challenges but has no "
                            "dns-01 command to publish TXT records; set %s or remove dns-01", w->site,
                            cmd_hint);
    return 0;
}

/* ---------------------------------------------------------------- CAs */

static int str_eq(const char *a, const char *b)
{
    if (!a || !*a || !b || !*b)
        return (!a || !*a) && (!b || !*b);
    return strcmp(a, b) == 0;
}

static int contacts_eq(char *const *a, size_t na, char *const *b, size_t nb)
{
    for (size_t i = 0; i < na; i++) {
        int found = 0;
        for (size_t k = 0; k < nb && !found; k++)
            found = strcmp(a[i], b[k]) == 0;
        if (!found)
            return 0;
    }
    for (size_t k = 0; k < nb; k++) {
        int found = 0;
        for (size_t i = 0; i < na && !found; i++)
            found = strcmp(a[i], b[k]) == 0;
        if (!found)
            return 0;
    }
    return 1;
}

static const char *eab_alg(const at_ca_conf *ca)
{
    return ca->eab_alg && *ca->eab_alg ? ca->eab_alg : "HS256";
}

/* NULL if equal, else which setting differs. */
static const char *ca_diff(const at_conf *conf, const at_ca_conf *a, const at_ca_conf *b)
{
    if (!str_eq(a->trust_file, b->trust_file))
        return "trust anchors for the CA's TLS";
    if (!str_eq(a->client_cert, b->client_cert) || !str_eq(a->client_key, b->client_key))
        return "client certificate";
    if (!str_eq(a->proxy, b->proxy))
        return "proxy";
    if (!contacts_eq(a->contact, a->ncontact, b->contact, b->ncontact))
        return hint(conf->hints.contact, "contact address");
    if (!a->accept_terms != !b->accept_terms)
        return hint(conf->hints.accept_terms, "acceptance of the terms of service");
    if (!str_eq(a->eab_kid, b->eab_kid) || !str_eq(a->eab_key, b->eab_key) ||
        ((a->eab_kid && *a->eab_kid) && strcmp(eab_alg(a), eab_alg(b)) != 0))
        return hint(conf->hints.eab, "external account binding");
    return NULL;
}

static const char *site_of_ca(const at_conf *conf, size_t ca)
{
    for (size_t i = 0; i < conf->ncerts; i++)
        if (conf->certs[i].ca == ca)
            return conf->certs[i].site;
    return "(unknown)";
}

/* The index of an identical CA, conf->ncas for a new one, -1 on conflict:
 * accounts are kept per CA URL, so one URL has one set of account settings. */
static long find_ca(const at_conf *conf, const at_ca_conf *ca, const char *site, at_error *err)
{
    for (size_t i = 0; i < conf->ncas; i++) {
        const char *d;
        if (strcmp(conf->cas[i].url, ca->url) != 0)
            continue;
        if (!(d = ca_diff(conf, &conf->cas[i], ca)))
            return (long)i;
        at_error_set(err, AT_ERR_CONFIG, "site %s uses the CA %s with a different %s than site %s; "
                     "one CA has one account, so give both sites the same setting", site, ca->url, d,
                     site_of_ca(conf, i));
        return -1;
    }
    return (long)conf->ncas;
}

static char *dup_opt(const char *s, int *oom)
{
    char *d;
    if (!s || !*s)
        return NULL;
    if (!(d = strdup(s)))
        *oom = 1;
    return d;
}

static int ca_copy(at_ca_conf *dst, const at_ca_conf *src)
{
    int oom = 0;

    memset(dst, 0, sizeof(*dst));
    dst->url = dup_opt(src->url, &oom);
    dst->trust_file = dup_opt(src->trust_file, &oom);
    dst->client_cert = dup_opt(src->client_cert, &oom);
    dst->client_key = dup_opt(src->client_key, &oom);
    dst->proxy = dup_opt(src->proxy, &oom);
    dst->accept_terms = src->accept_terms;
    dst->eab_kid = dup_opt(src->eab_kid, &oom);
    dst->eab_key = dup_opt(src->eab_key, &oom);
    if (dst->eab_kid)
        dst->eab_alg = dup_opt(eab_alg(src), &oom);
    if (src->ncontact && (dst->contact = calloc(src->ncontact, sizeof(char *)))) {
        for (size_t i = 0; i < src->ncontact; i++) {
            if (!src->contact[i] || !*src->contact[i])
                continue;
            if (!(dst->contact[dst->ncontact] = strdup(src->contact[i])))
                oom = 1;
            else
                dst->ncontact++;
        }
    } else if (src->ncontact) {
        oom = 1;
    }
    if (oom || !dst->url) {
        ca_free(dst);
        memset(dst, 0, sizeof(*dst));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------ merging and overlaps */

static int names_set_eq(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++) {
        int found = 0;
        for (size_t k = 0; k < nb && !found; k++)
            found = strcmp(a[i], b[k]) == 0;
        if (!found)
            return 0;
    }
    return 1;
}

static int window_eq(const at_renew_window *a, const at_renew_window *b)
{
    return a->percent == b->percent && a->seconds == b->seconds;
}

/* Settings of an existing certificate that differ from the new site's, or NULL. */
static const char *cert_diff(const at_conf *conf, const at_cert_conf *c, const site_work *w,
                             const at_site_conf *s, size_t ca)
{
    if (c->nchallenges != w->nchal || memcmp(c->challenges, w->chal, w->nchal * sizeof(w->chal[0])) != 0)
        return "challenge list";
    if (c->ca != ca)
        return "CA";
    if (!str_eq(c->profile, s->profile))
        return hint(conf->hints.profile, "profile");
    if (!str_eq(c->preferred_chain, s->preferred_chain))
        return "preferred chain";
    if (!window_eq(&c->window, &s->window))
        return "renew window";
    if (!str_eq(c->dns01_command, s->dns01_command))
        return hint(conf->hints.dns01_command, "dns-01 command");
    return NULL;
}

/* 1: the site repeats an existing one (merged, nothing to add); 0: new;
 * -1: same names and keys but different settings. */
static int find_merge(const at_conf *conf, const site_work *w, const at_site_conf *s, size_t ca,
                      at_error *err)
{
    for (size_t i = 0; i < conf->ncerts; i++) {
        const at_cert_conf *c = &conf->certs[i];
        size_t nkeys = 0;
        int keys_eq = 1;
        const char *d;

        if (!names_set_eq(c->names, c->nnames, w->names, w->nnames))
            continue;
        /* The key types of c's site, against the new site's. */
        for (size_t k = 0; k < conf->ncerts; k++) {
            const at_cert_conf *o = &conf->certs[k];
            int found = 0;
            if (strcmp(o->site, c->site) != 0 || !names_set_eq(o->names, o->nnames, w->names, w->nnames))
                continue;
            nkeys++;
            for (size_t j = 0; j < w->nkeys && !found; j++)
                found = at_key_spec_equal(&o->key, &w->keys[j]);
            keys_eq &= found;
        }
        if (!keys_eq || nkeys != w->nkeys)
            continue;
        if ((d = cert_diff(conf, c, w, s, ca))) {
            at_error_set(err, AT_ERR_CONFIG, "site %s certifies the same names as site %s but with a "
                         "different %s; give both the same settings (they share one certificate)",
                         w->site, c->site, d);
            return -1;
        }
        return 1;
    }
    return 0;
}

static int check_overlap(const at_conf *conf, const site_work *w, at_error *err)
{
    for (size_t i = 0; i < conf->ncerts; i++) {
        const at_cert_conf *c = &conf->certs[i];
        for (size_t k = 0; k < w->nkeys; k++) {
            if (c->key.kind != w->keys[k].kind)
                continue;
            if (names_set_eq(c->names, c->nnames, w->names, w->nnames))
                return at_error_set(err, AT_ERR_CONFIG, "site %s certifies the same names as site %s but "
                                    "with other key types; give both the same key types (they then "
                                    "share the certificates)", w->site, c->site);
            for (size_t n = 0; n < w->nnames; n++)
                if (has_name(c, w->names[n]))
                    return at_error_set(err, AT_ERR_CONFIG, "site %s and site %s both certify '%s' with %s "
                                        "key (%s and %s); a name belongs to one site per key kind, so "
                                        "remove it from one of them or give both sites the same names",
                                        c->site, w->site, w->names[n], kind_name(c->key.kind),
                                        at_key_spec_name(&c->key), at_key_spec_name(&w->keys[k]));
        }
    }
    return 0;
}

/* ------------------------------------------------------------ adding */

static int cert_fill(at_cert_conf *c, const site_work *w, const at_site_conf *s,
                     const at_key_spec *key, size_t ca)
{
    char text[320], id[256];
    int oom = 0;

    memset(c, 0, sizeof(*c));
    /* Stable across restarts: the same first name and key give the same
     * directory in the store, whatever else the site lists. */
    snprintf(text, sizeof(text), "%s_%s", w->names[0], at_key_spec_slug(key));
    at_store_id(text, id, sizeof(id));
    c->id = strdup(id);
    c->site = strdup(w->site);
    if (!c->id || !c->site || !(c->names = calloc(w->nnames, sizeof(char *))))
        goto oom;
    for (; c->nnames < w->nnames; c->nnames++)
        if (!(c->names[c->nnames] = strdup(w->names[c->nnames])))
            goto oom;
    c->key = *key;
    memcpy(c->challenges, w->chal, sizeof(c->challenges));
    c->nchallenges = w->nchal;
    c->ca = ca;
    c->profile = dup_opt(s->profile, &oom);
    c->preferred_chain = dup_opt(s->preferred_chain, &oom);
    c->window = s->window;
    c->dns01_command = dup_opt(s->dns01_command, &oom);
    if (oom)
        goto oom;
    return 0;
oom:
    cert_free(c);
    memset(c, 0, sizeof(*c));
    return -1;
}

static int commit(at_conf *conf, const site_work *w, const at_site_conf *s, const at_ca_conf *ca,
                  size_t ca_index, at_error *err)
{
    size_t old_ncerts = conf->ncerts;
    int added_ca = 0;
    at_cert_conf *certs;

    if (ca_index == conf->ncas) {
        at_ca_conf *cas = realloc(conf->cas, (conf->ncas + 1) * sizeof(*cas));
        if (!cas)
            return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        conf->cas = cas;
        if (ca_copy(&conf->cas[conf->ncas], ca) != 0)
            return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        conf->ncas++;
        added_ca = 1;
    }
    if (!(certs = realloc(conf->certs, (conf->ncerts + w->nkeys) * sizeof(*certs))))
        goto oom;
    conf->certs = certs;
    for (size_t k = 0; k < w->nkeys; k++) {
        at_cert_conf *c = &conf->certs[conf->ncerts];
        if (cert_fill(c, w, s, &w->keys[k], ca_index) != 0)
            goto oom;
        if (at_conf_cert(conf, c->id)) {
            at_error_set(err, AT_ERR_INTERNAL, "site %s: certificate id %s is already in use", w->site,
                         c->id);
            cert_free(c);
            goto undo;
        }
        conf->ncerts++;
    }
    return 0;
oom:
    at_error_set(err, AT_ERR_INTERNAL, "out of memory");
undo:
    while (conf->ncerts > old_ncerts)
        cert_free(&conf->certs[--conf->ncerts]);
    if (added_ca)
        ca_free(&conf->cas[--conf->ncas]);
    return -1;
}

int at_conf_add_site(at_conf *conf, const at_site_conf *site, at_error *err)
{
    site_work w;
    at_ca_conf ca;
    long ca_index;
    int rv = -1, m;

    if (!conf || !site)
        return at_error_set(err, AT_ERR_INTERNAL, "at_conf_add_site: no configuration");
    memset(&w, 0, sizeof(w));
    w.site = site->site && *site->site ? site->site
           : site->nnames && site->names && site->names[0] ? site->names[0] : "(unnamed)";
    if (work_names(&w, site, err) != 0 || work_keys(&w, site, err) != 0 ||
        work_challenges(&w, site, err) != 0 || work_check_challenges(conf, &w, site, err) != 0)
        goto done;

    ca = site->ca;
    if (!ca.url || !*ca.url)
        ca.url = (char *)AT_CA_LETSENCRYPT;
    if ((ca_index = find_ca(conf, &ca, w.site, err)) < 0)
        goto done;
    if ((m = find_merge(conf, &w, site, (size_t)ca_index, err)) != 0) {
        rv = m > 0 ? 0 : -1;
        goto done;
    }
    if (check_overlap(conf, &w, err) != 0)
        goto done;
    rv = commit(conf, &w, site, &ca, (size_t)ca_index, err);
done:
    work_free(&w);
    return rv;
}
