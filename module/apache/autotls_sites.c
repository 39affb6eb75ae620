/*
 * autotls_sites.c: the virtual hosts that say `AutoTLS on` become sites of
 * the core configuration. This runs in check_config, so `apachectl
 * configtest` reports what only the whole configuration can tell: a vhost
 * without a name, names managed twice, a wildcard without a dns-01 command,
 * terms of service not accepted.
 */
#include "mod_autotls.h"

#include <string.h>
#include <stdlib.h>

#include <http_core.h>
#include <apr_strings.h>

#include "at_key.h"
#include "at_x509.h"

APLOG_USE_MODULE(autotls);

static const at_conf_hints apache_hints = {
    "AutoTLSAcceptTerms on",
    "AutoTLSEAB KID KEY",
    "AutoTLSContact EMAIL",
    "AutoTLSProfile NAME",
    "AutoTLSDNS01Command PATH",
    "AutoTLSCATrust FILE",
};

static apr_status_t conf_cleanup(void *data)
{
    at_conf_free(data);
    return APR_SUCCESS;
}

static int add_name(apr_array_header_t *names, apr_pool_t *p, const char *raw,
                    const char *what, const at_ap_srv *sc)
{
    char name[256];
    at_error err = AT_ERROR_INIT;

    if (at_parse_name(raw, name, sizeof(name), &err) != 0) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL,
                     "AutoTLS on at %s: %s '%s' cannot be certified: %s. List the names to certify "
                     "with AutoTLSNames instead", sc->where, what, raw, err.msg);
        at_error_clear(&err);
        return -1;
    }
    for (int i = 0; i < names->nelts; i++)
        if (strcmp(APR_ARRAY_IDX(names, i, const char *), name) == 0)
            return 0;
    APR_ARRAY_PUSH(names, const char *) = apr_pstrdup(p, name);
    return 0;
}

/* ServerName, then ServerAlias (plain, then wildcard), or AutoTLSNames. */
static apr_array_header_t *site_names(apr_pool_t *p, server_rec *s, const at_ap_srv *sc)
{
    apr_array_header_t *names = apr_array_make(p, 4, sizeof(const char *));

    if (sc->names) {
        apr_array_cat(names, sc->names);
        return names;
    }
    if (!sc->has_servername || !s->server_hostname) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL,
                     "AutoTLS on at %s: this virtual host has no ServerName; add ServerName (and "
                     "ServerAlias) or AutoTLSNames to say which names to certify", sc->where);
        return NULL;
    }
    if (add_name(names, p, s->server_hostname, "ServerName", sc) != 0)
        return NULL;
    if (s->names)
        for (int i = 0; i < s->names->nelts; i++)
            if (add_name(names, p, APR_ARRAY_IDX(s->names, i, const char *), "ServerAlias", sc) != 0)
                return NULL;
    if (s->wild_names)
        for (int i = 0; i < s->wild_names->nelts; i++)
            if (add_name(names, p, APR_ARRAY_IDX(s->wild_names, i, const char *), "ServerAlias", sc) != 0)
                return NULL;
    return names;
}

static int site_port(const server_rec *s)
{
    for (const server_addr_rec *a = s->addrs; a; a = a->next)
        if (a->host_port)
            return a->host_port;
    return s->port ? s->port : 443;
}

static int add_site(at_ap_gen *g, server_rec *s, at_ap_srv *sc, apr_pool_t *ptemp)
{
    apr_pool_t *p = g->pool;
    at_site_conf site;
    at_error err = AT_ERROR_INIT;
    apr_array_header_t *names = site_names(p, s, sc);
    at_ap_site *as;

    if (!names)
        return -1;
    if (sc->set.accept_terms == AT_AP_UNSET) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL,
                     "AutoTLS on at %s: the terms of service of the certificate authority %s have not "
                     "been accepted; read them (its ACME directory links them) and add "
                     "\"AutoTLSAcceptTerms on\" once, outside <VirtualHost>. For a CA without terms, "
                     "say \"AutoTLSAcceptTerms off\"",
                     sc->where, sc->set.ca_url ? sc->set.ca_url : AT_CA_LETSENCRYPT);
        return -1;
    }

    as = apr_pcalloc(p, sizeof(*as));
    as->s = s;
    as->where = sc->where;
    as->names = (const char **)names->elts;
    as->nnames = names->nelts;
    as->id = apr_psprintf(p, "%s:%d", as->names[0], site_port(s));

    at_site_settings_conf(&sc->set, as->id, as->names, (size_t)as->nnames, &site);
    (void)ptemp;

    if (at_conf_add_site(g->conf, &site, &err) != 0) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL,
                     "AutoTLS on at %s (%s): %s", sc->where, as->id, err.msg);
        at_error_clear(&err);
        return -1;
    }
    sc->site = as;
    APR_ARRAY_PUSH(g->sites, at_ap_site *) = as;
    return 0;
}

int at_ap_sites_build(at_ap_gen *g, apr_pool_t *ptemp)
{
    server_rec *main_s = g->s;
    const at_ap_srv *mc = at_ap_srv_of(main_s);
    at_error err = AT_ERROR_INIT;
    int bad = 0;

    apr_array_header_t *vhosts = apr_array_make(ptemp, 16, sizeof(server_rec *));

    g->sites = apr_array_make(g->pool, 8, sizeof(at_ap_site *));
    g->store_dir = mc->glob.store_dir ? mc->glob.store_dir : ap_server_root_relative(g->pool, "autotls");
    /* Apache links vhosts in reverse order; sites go in the order written. */
    for (server_rec *s = main_s->next; s; s = s->next) {
        at_ap_srv_of(s)->site = NULL;
        if (at_ap_srv_of(s)->enabled == 1)
            APR_ARRAY_PUSH(vhosts, server_rec *) = s;
    }
    if (vhosts->nelts > 0) {
        g->conf = at_conf_new();
        if (!g->conf) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL, "AutoTLS: out of memory");
            return -1;
        }
        apr_pool_cleanup_register(g->pool, g->conf, conf_cleanup, apr_pool_cleanup_null);
        g->conf->hints = apache_hints;
    }
    for (int i = vhosts->nelts - 1; i >= 0; i--) {
        server_rec *s = APR_ARRAY_IDX(vhosts, i, server_rec *);
        if (add_site(g, s, at_ap_srv_of(s), ptemp) != 0)
            bad = 1;
    }
    if (bad)
        return -1;
    if (!g->conf)
        return 0;

    if (!ap_find_linked_module("mod_ssl.c")) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL,
                     "AutoTLS: mod_ssl is not loaded; enable it (a2enmod ssl)");
        return -1;
    }
    if (!ap_find_linked_module("mod_watchdog.c")) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL,
                     "AutoTLS: mod_watchdog is not loaded and certificates would never be obtained; "
                     "load it (LoadModule watchdog_module .../mod_watchdog.so, or a2enmod watchdog)");
        return -1;
    }

    if (at_conf_set_globals(g->conf, g->store_dir, &mc->glob, &err) != 0) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL, "AutoTLS: %s", err.msg);
        at_error_clear(&err);
        return -1;
    }
    return 0;
}
