/*
 * at_site.c: per-site and global settings as hosts hold them, their
 * inheritance, and the configuration questions of requests and handshakes
 * (see at_site.h).
 */
#include "at_site.h"

#include <stdlib.h>
#include <string.h>

#include "at_live.h"
#include "at_x509.h"

void at_site_settings_init(at_site_settings *s)
{
    memset(s, 0, sizeof(*s));
    s->accept_terms = -1;
}

#define INHERIT(f) do { if (!s->f) s->f = parent->f; } while (0)

void at_site_settings_inherit(at_site_settings *s, const at_site_settings *parent)
{
    INHERIT(ca_url);
    INHERIT(ca_trust);
    if (!s->client_cert) {
        s->client_cert = parent->client_cert;
        s->client_key = parent->client_key;
    }
    if (!s->contacts) {
        s->contacts = parent->contacts;
        s->ncontacts = parent->ncontacts;
    }
    if (s->accept_terms == -1)
        s->accept_terms = parent->accept_terms;
    if (!s->keys) {
        s->keys = parent->keys;
        s->nkeys = parent->nkeys;
    }
    if (!s->challenges) {
        s->challenges = parent->challenges;
        s->nchallenges = parent->nchallenges;
    }
    if (!s->window.percent && !s->window.seconds)
        s->window = parent->window;
    INHERIT(profile);
    if (!s->eab_kid) {
        s->eab_kid = parent->eab_kid;
        s->eab_key = parent->eab_key;
        s->eab_alg = parent->eab_alg;
    }
    INHERIT(preferred_chain);
    INHERIT(dns01_command);
}

void at_site_settings_conf(const at_site_settings *s, const char *site, const char *const *names,
                           size_t nnames, at_site_conf *out)
{
    memset(out, 0, sizeof(*out));
    out->site = site;
    out->names = names;
    out->nnames = nnames;
    out->keys = s->keys;
    out->nkeys = s->keys ? s->nkeys : 0;
    out->challenges = s->challenges;
    out->nchallenges = s->challenges ? s->nchallenges : 0;
    /* at_ca_conf holds writable pointers for the owner of an at_conf; the
     * strings are only read here (at_conf_add_site copies them). */
    out->ca.url = (char *)(s->ca_url ? s->ca_url : AT_CA_LETSENCRYPT);
    out->ca.trust_file = (char *)s->ca_trust;
    out->ca.client_cert = (char *)s->client_cert;
    out->ca.client_key = (char *)s->client_key;
    out->ca.contact = (char **)s->contacts;
    out->ca.ncontact = s->contacts ? s->ncontacts : 0;
    out->ca.accept_terms = s->accept_terms == 1;
    out->ca.eab_kid = (char *)s->eab_kid;
    out->ca.eab_key = (char *)s->eab_key;
    out->ca.eab_alg = (char *)s->eab_alg;
    out->profile = s->profile;
    out->preferred_chain = s->preferred_chain;
    out->window = s->window;
    out->dns01_command = s->dns01_command;
}

void at_global_settings_init(at_global_settings *g)
{
    memset(g, 0, sizeof(*g));
    g->concurrency = -1;
    g->retry_min = -1;
    g->retry_max = -1;
}

int at_conf_set_globals(at_conf *conf, const char *store_dir, const at_global_settings *g,
                        at_error *err)
{
    char *dir = store_dir ? strdup(store_dir) : NULL;
    char *notify = g->notify_command ? strdup(g->notify_command) : NULL;

    if ((store_dir && !dir) || (g->notify_command && !notify)) {
        free(dir);
        free(notify);
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    }
    free(conf->store_dir);
    conf->store_dir = dir;
    free(conf->notify_command);
    conf->notify_command = notify;
    if (g->concurrency != -1)
        conf->concurrency = (int)g->concurrency;
    if (g->retry_min != -1) {
        conf->retry_base = g->retry_min;
        conf->retry_max = g->retry_max;
    }
    return 0;
}

size_t at_conf_live_size_hint(const at_conf *conf)
{
    size_t n = 0;
    for (size_t i = 0; conf && i < conf->ncerts; i++)
        n += conf->certs[i].nnames;
    return at_live_size_hint(n);
}

int at_conf_manages(const at_conf *conf, const char *host)
{
    const at_cert_conf *out[AT_MAX_KEYS];
    if (!conf || !host || !*host)
        return 0;
    return at_conf_certs_for_name(conf, host, out, AT_MAX_KEYS) > 0;
}

size_t at_site_placeholder_kinds(const at_conf *conf, const char *name, at_key_kind kinds[2])
{
    const at_cert_conf *certs[AT_MAX_KEYS];
    size_t n = conf && name ? at_conf_certs_for_name(conf, name, certs, AT_MAX_KEYS) : 0, k = 0;
    int ec = n == 0, rsa = 0;

    for (size_t i = 0; i < n; i++) {
        if (certs[i]->key.kind == AT_KEY_RSA)
            rsa = 1;
        else
            ec = 1;
    }
    if (ec)
        kinds[k++] = AT_KEY_EC;
    if (rsa)
        kinds[k++] = AT_KEY_RSA;
    return k;
}

void at_name_lower(char *out, size_t outsz, const char *in, size_t len)
{
    size_t i = 0;

    if (outsz == 0)
        return;
    for (; in && i < len && i + 1 < outsz && in[i]; i++)
        out[i] = (char)(in[i] >= 'A' && in[i] <= 'Z' ? in[i] + 32 : in[i]);
    if (i > 0 && out[i - 1] == '.')
        i--;
    out[i] = '\0';
}

const char *at_site_name_for(const char *const *names, size_t nnames, const char *host)
{
    if (host && *host)
        for (size_t i = 0; i < nnames; i++)
            if (at_name_matches(names[i], host))
                return host;
    return names[0];
}
