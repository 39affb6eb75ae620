/*
 * autotls_directives.c: the AutoTLS* directives. Every value goes through
 * the core's parser (at_conf.h), so Apache and nginx accept the same values
 * and explain a bad one the same way; the directive name is put in front:
 * "AutoTLSKeys: 'ec:P-999' is not a key type; use ...". Apache adds the file
 * and line, so `apachectl configtest` names the directive, the value and
 * what would be accepted.
 */
#include "mod_autotls.h"

#include <string.h>
#include <strings.h>
#include <stdlib.h>

#include <http_core.h>
#include <ap_listen.h>
#include <apr_strings.h>

#include "at_key.h"

APLOG_USE_MODULE(autotls);

void *at_ap_srv_create(apr_pool_t *p, server_rec *s)
{
    at_ap_srv *sc = apr_pcalloc(p, sizeof(*sc));
    (void)s;
    sc->enabled = AT_AP_UNSET;
    at_site_settings_init(&sc->set);
    at_global_settings_init(&sc->glob);
    return sc;
}

void *at_ap_srv_merge(apr_pool_t *p, void *basev, void *addv)
{
    const at_ap_srv *base = basev, *add = addv;
    at_ap_srv *sc = apr_pcalloc(p, sizeof(*sc));

    /* A vhost's own switch and names are never inherited. */
    sc->enabled = add->enabled;
    sc->where = add->where;
    sc->has_servername = add->has_servername;
    sc->names = add->names;
    sc->set = add->set;
    at_site_settings_inherit(&sc->set, &base->set);
    /* Global-only values live in the main server; copied for convenience. */
    sc->glob = base->glob;
    return sc;
}

/* ------------------------------------------------------------- helpers */

static at_ap_srv *srv(cmd_parms *cmd)
{
    return at_ap_srv_of(cmd->server);
}

/* "AutoTLSKeys: <what the core said>" */
static const char *fail(cmd_parms *cmd, at_error *err)
{
    const char *msg = apr_psprintf(cmd->pool, "%s: %s", cmd->cmd->name, err->msg);
    at_error_clear(err);
    return msg;
}

static const char *vhost_only(cmd_parms *cmd)
{
    if (!cmd->server->is_virtual)
        return apr_psprintf(cmd->pool,
                            "%s belongs inside a <VirtualHost> section: it manages the names of "
                            "that virtual host", cmd->cmd->name);
    return NULL;
}

static const char *global_only(cmd_parms *cmd)
{
    if (ap_check_cmd_context(cmd, GLOBAL_ONLY))
        return apr_psprintf(cmd->pool, "%s applies to the whole server: move it outside "
                            "<VirtualHost>", cmd->cmd->name);
    return NULL;
}

/* A path relative to the ServerRoot, as Apache's own directives take them. */
static const char *server_path(cmd_parms *cmd, const char *arg, const char **out)
{
    const char *p = ap_server_root_relative(cmd->pool, arg);
    if (!p)
        return apr_psprintf(cmd->pool, "%s: '%s' is not a valid path", cmd->cmd->name, arg);
    *out = p;
    return NULL;
}

static const char *core_path(cmd_parms *cmd, const char *arg,
                             int (*check)(const char *, at_error *), const char **out)
{
    at_error err = AT_ERROR_INIT;
    const char *e = server_path(cmd, arg, out);
    if (e)
        return e;
    if (check(*out, &err) != 0)
        return fail(cmd, &err);
    return NULL;
}

/* Copy a malloc'd string from the core into the pool. */
static const char *pool_take(apr_pool_t *p, char *s)
{
    const char *r = apr_pstrdup(p, s);
    free(s);
    return r;
}

/* The <VirtualHost> node around a directive, or NULL. */
static const ap_directive_t *enclosing_vhost(const ap_directive_t *d)
{
    for (d = d ? d->parent : NULL; d; d = d->parent)
        if (strcasecmp(d->directive, "<VirtualHost") == 0)
            return d;
    return NULL;
}

static int subtree_has(const ap_directive_t *d, const char *name)
{
    for (; d; d = d->next) {
        if (strcasecmp(d->directive, name) == 0)
            return 1;
        if (d->first_child && subtree_has(d->first_child, name))
            return 1;
    }
    return 0;
}

/* Is port an HTTPS port: a `Listen ... https` (Apache's default protocol
 * for 443), or 443 when no Listen for it has been seen yet? */
static int https_port(apr_port_t port)
{
    int known = 0;
    for (const ap_listen_rec *l = ap_listeners; l; l = l->next) {
        if (l->bind_addr && l->bind_addr->port == port) {
            known = 1;
            if (l->protocol && strcasecmp(l->protocol, "https") == 0)
                return 1;
        }
    }
    return !known && port == 443;
}

static int vhost_is_https(const server_rec *s)
{
    for (const server_addr_rec *a = s->addrs; a; a = a->next)
        if (a->host_port && https_port(a->host_port))
            return 1;
    return 0;
}

/* `AutoTLS on` in an HTTPS vhost needs no SSL lines: run "SSLEngine on"
 * through the normal directive machinery, so mod_ssl configures itself as if
 * the administrator had written it (an explicit SSLEngine after AutoTLS still
 * wins). */
static const char *enable_ssl(cmd_parms *cmd)
{
    ap_directive_t d;
    const ap_directive_t *saved = cmd->directive;
    const char *e;

    if (!ap_find_linked_module("mod_ssl.c"))
        return "AutoTLS: mod_ssl is not loaded; enable it (a2enmod ssl, or LoadModule ssl_module "
               "before the AutoTLS lines)";
    memset(&d, 0, sizeof(d));
    d.directive = "SSLEngine";
    d.args = "on";
    d.parent = saved->parent;
    d.filename = saved->filename;
    d.line_num = saved->line_num;
    e = ap_walk_config(&d, cmd, cmd->context);
    cmd->directive = (ap_directive_t *)saved;
    if (e)
        return apr_psprintf(cmd->pool, "AutoTLS: turning on SSLEngine for this virtual host failed: %s", e);
    return NULL;
}

/* --------------------------------------------------------- directives */

static const char *cmd_autotls(cmd_parms *cmd, void *dc, const char *arg)
{
    at_ap_srv *sc = srv(cmd);
    at_error err = AT_ERROR_INIT;
    const ap_directive_t *vh;
    const char *e;
    int on;

    (void)dc;
    if ((e = vhost_only(cmd)))
        return e;
    if (at_parse_onoff(arg, &on, &err) != 0)
        return fail(cmd, &err);
    sc->enabled = on;
    sc->where = apr_psprintf(cmd->pool, "%s:%d", cmd->directive->filename, cmd->directive->line_num);
    vh = enclosing_vhost(cmd->directive);
    sc->has_servername = vh && subtree_has(vh->first_child, "ServerName");
    if (on && vhost_is_https(cmd->server))
        return enable_ssl(cmd);
    return NULL;
}

static const char *cmd_names(cmd_parms *cmd, void *dc, int argc, char *const argv[])
{
    at_ap_srv *sc = srv(cmd);
    at_error err = AT_ERROR_INIT;
    const char *e;
    char **names;
    size_t n;

    (void)dc;
    if ((e = vhost_only(cmd)))
        return e;
    if (at_parse_names(cmd->cmd->name, (const char *const *)argv, (size_t)argc, &names, &n, &err) != 0)
        return fail(cmd, &err);
    sc->names = apr_array_make(cmd->pool, (int)n, sizeof(const char *));
    for (size_t i = 0; i < n; i++)
        APR_ARRAY_PUSH(sc->names, const char *) = apr_pstrdup(cmd->pool, names[i]);
    at_parse_names_free(names, n);
    return NULL;
}

static const char *cmd_ca(cmd_parms *cmd, void *dc, const char *arg)
{
    at_error err = AT_ERROR_INIT;
    char *url = NULL;
    (void)dc;
    if (at_parse_ca(arg, &url, &err) != 0)
        return fail(cmd, &err);
    srv(cmd)->set.ca_url = pool_take(cmd->pool, url);
    return NULL;
}

static const char *cmd_ca_trust(cmd_parms *cmd, void *dc, const char *arg)
{
    (void)dc;
    return core_path(cmd, arg, at_parse_cert_file, &srv(cmd)->set.ca_trust);
}

static const char *cmd_client_cert(cmd_parms *cmd, void *dc, const char *cert, const char *key)
{
    at_ap_srv *sc = srv(cmd);
    const char *e, *c, *k;
    (void)dc;
    if ((e = core_path(cmd, cert, at_parse_cert_file, &c)))
        return e;
    if ((e = core_path(cmd, key, at_parse_key_file, &k)))
        return e;
    sc->set.client_cert = c;
    sc->set.client_key = k;
    return NULL;
}

static const char *cmd_contact(cmd_parms *cmd, void *dc, int argc, char *const argv[])
{
    at_ap_srv *sc = srv(cmd);
    at_error err = AT_ERROR_INIT;
    apr_array_header_t *contacts;
    (void)dc;
    if (argc < 1)
        return "AutoTLSContact: give an email address, e.g. AutoTLSContact admin@example.com";
    contacts = apr_array_make(cmd->pool, argc, sizeof(const char *));
    for (int i = 0; i < argc; i++) {
        char *uri = NULL;
        if (at_parse_contact(argv[i], &uri, &err) != 0)
            return fail(cmd, &err);
        APR_ARRAY_PUSH(contacts, const char *) = pool_take(cmd->pool, uri);
    }
    sc->set.contacts = (const char *const *)contacts->elts;
    sc->set.ncontacts = (size_t)contacts->nelts;
    return NULL;
}

static const char *cmd_accept_terms(cmd_parms *cmd, void *dc, const char *arg)
{
    at_error err = AT_ERROR_INIT;
    int on;
    (void)dc;
    if (at_parse_onoff(arg, &on, &err) != 0)
        return fail(cmd, &err);
    srv(cmd)->set.accept_terms = on;
    return NULL;
}

static const char *cmd_store(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *e;
    (void)dc;
    if ((e = global_only(cmd)))
        return e;
    if (!*arg)
        return "AutoTLSStore: give a directory, e.g. AutoTLSStore /var/lib/apache2/autotls";
    return server_path(cmd, arg, &srv(cmd)->glob.store_dir);
}

static const char *cmd_keys(cmd_parms *cmd, void *dc, int argc, char *const argv[])
{
    at_ap_srv *sc = srv(cmd);
    at_error err = AT_ERROR_INIT;
    at_key_spec keys[2];
    size_t n;

    (void)dc;
    if (at_parse_key_specs(cmd->cmd->name, (const char *const *)argv, (size_t)argc, keys, &n, &err) != 0)
        return fail(cmd, &err);
    sc->set.keys = apr_pmemdup(cmd->pool, keys, n * sizeof(keys[0]));
    sc->set.nkeys = n;
    return NULL;
}

static const char *cmd_challenges(cmd_parms *cmd, void *dc, int argc, char *const argv[])
{
    at_ap_srv *sc = srv(cmd);
    at_error err = AT_ERROR_INIT;
    at_challenge_type types[AT_MAX_CHALLENGES];
    size_t n;

    (void)dc;
    if (at_parse_challenges((const char *const *)argv, (size_t)argc, types, &n, &err) != 0)
        return fail(cmd, &err);
    sc->set.challenges = apr_pmemdup(cmd->pool, types, n * sizeof(types[0]));
    sc->set.nchallenges = n;
    return NULL;
}

static const char *cmd_window(cmd_parms *cmd, void *dc, const char *arg)
{
    at_ap_srv *sc = srv(cmd);
    at_error err = AT_ERROR_INIT;
    (void)dc;
    if (at_parse_renew_window(arg, &sc->set.window, &err) != 0)
        return fail(cmd, &err);
    return NULL;
}

static const char *cmd_profile(cmd_parms *cmd, void *dc, const char *arg)
{
    at_error err = AT_ERROR_INIT;
    (void)dc;
    if (at_parse_profile(arg, &err) != 0)
        return fail(cmd, &err);
    srv(cmd)->set.profile = arg;
    return NULL;
}

static const char *cmd_eab(cmd_parms *cmd, void *dc, const char *kid, const char *key, const char *alg)
{
    at_ap_srv *sc = srv(cmd);
    at_error err = AT_ERROR_INIT;
    const char *a;

    (void)dc;
    if (at_parse_eab(kid, key, &err) != 0 || at_parse_eab_alg(alg, &a, &err) != 0)
        return fail(cmd, &err);
    sc->set.eab_kid = kid;
    sc->set.eab_key = key;
    sc->set.eab_alg = a;
    return NULL;
}

static const char *cmd_chain(cmd_parms *cmd, void *dc, const char *arg)
{
    at_error err = AT_ERROR_INIT;

    (void)dc;
    if (at_parse_preferred_chain(cmd->cmd->name, arg, &err) != 0)
        return fail(cmd, &err);
    srv(cmd)->set.preferred_chain = arg;
    return NULL;
}

static const char *cmd_dns01(cmd_parms *cmd, void *dc, const char *arg)
{
    (void)dc;
    return core_path(cmd, arg, at_parse_command, &srv(cmd)->set.dns01_command);
}

static const char *cmd_notify(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *e;
    (void)dc;
    if ((e = global_only(cmd)))
        return e;
    return core_path(cmd, arg, at_parse_command, &srv(cmd)->glob.notify_command);
}

static const char *cmd_concurrency(cmd_parms *cmd, void *dc, const char *arg)
{
    at_error err = AT_ERROR_INIT;
    const char *e;
    long v;
    (void)dc;
    if ((e = global_only(cmd)))
        return e;
    if (at_parse_int(arg, 1, 100, &v, &err) != 0)
        return fail(cmd, &err);
    srv(cmd)->glob.concurrency = v;
    return NULL;
}

static const char *cmd_shm(cmd_parms *cmd, void *dc, const char *arg)
{
    at_error err = AT_ERROR_INIT;
    const char *e;
    size_t v;
    (void)dc;
    if ((e = global_only(cmd)))
        return e;
    if (at_parse_size(arg, (size_t)256 * 1024, (size_t)1024 * 1024 * 1024, &v, &err) != 0)
        return fail(cmd, &err);
    srv(cmd)->glob.shm_size = v;
    return NULL;
}

static const char *cmd_retry(cmd_parms *cmd, void *dc, const char *min, const char *max)
{
    at_ap_srv *sc = srv(cmd);
    at_error err = AT_ERROR_INIT;
    const char *e;
    long lo, hi;

    (void)dc;
    if ((e = global_only(cmd)))
        return e;
    if (at_parse_retry_delay(cmd->cmd->name, min, max, &lo, &hi, &err) != 0)
        return fail(cmd, &err);
    sc->glob.retry_min = lo;
    sc->glob.retry_max = hi;
    return NULL;
}

const command_rec at_ap_directives[] = {
    AP_INIT_TAKE1("AutoTLS", cmd_autotls, NULL, RSRC_CONF,
                  "on|off: obtain and renew a certificate for this virtual host's ServerName and ServerAlias names"),
    AP_INIT_TAKE_ARGV("AutoTLSNames", cmd_names, NULL, RSRC_CONF,
                      "NAME...: the names to certify instead of ServerName and ServerAlias"),
    AP_INIT_TAKE1("AutoTLSCA", cmd_ca, NULL, RSRC_CONF,
                  "letsencrypt|letsencrypt-staging|URL: the ACME directory of the certificate authority"),
    AP_INIT_TAKE1("AutoTLSCATrust", cmd_ca_trust, NULL, RSRC_CONF,
                  "FILE: PEM trust anchors for the certificate authority's own HTTPS"),
    AP_INIT_TAKE2("AutoTLSCAClientCertificate", cmd_client_cert, NULL, RSRC_CONF,
                  "CERTFILE KEYFILE: TLS client certificate towards the certificate authority"),
    AP_INIT_TAKE_ARGV("AutoTLSContact", cmd_contact, NULL, RSRC_CONF,
                      "EMAIL...: contact addresses for the ACME account"),
    AP_INIT_TAKE1("AutoTLSAcceptTerms", cmd_accept_terms, NULL, RSRC_CONF,
                  "on|off: accept the certificate authority's terms of service"),
    AP_INIT_TAKE1("AutoTLSStore", cmd_store, NULL, RSRC_CONF,
                  "DIR: where accounts, keys and certificates are kept (default: autotls under the ServerRoot)"),
    AP_INIT_TAKE_ARGV("AutoTLSKeys", cmd_keys, NULL, RSRC_CONF,
                      "SPEC...: certificate key types, e.g. ec:P-256 rsa:2048 (one certificate per type)"),
    AP_INIT_TAKE_ARGV("AutoTLSChallenges", cmd_challenges, NULL, RSRC_CONF,
                      "TYPE...: challenge types in order of preference (default: tls-alpn-01 http-01)"),
    AP_INIT_TAKE1("AutoTLSRenewWindow", cmd_window, NULL, RSRC_CONF,
                  "PERCENT%|DURATION: renew when this much of the lifetime (or time) remains"),
    AP_INIT_TAKE1("AutoTLSProfile", cmd_profile, NULL, RSRC_CONF,
                  "NAME: the certificate profile to ask the certificate authority for"),
    AP_INIT_TAKE23("AutoTLSEAB", cmd_eab, NULL, RSRC_CONF,
                   "KID KEY [HS256|HS384|HS512]: external account binding from the certificate authority"),
    AP_INIT_TAKE1("AutoTLSPreferredChain", cmd_chain, NULL, RSRC_CONF,
                  "ISSUER-CN: prefer the alternate chain whose root has this common name"),
    AP_INIT_TAKE1("AutoTLSDNS01Command", cmd_dns01, NULL, RSRC_CONF,
                  "PATH: command that sets up / tears down dns-01 TXT records"),
    AP_INIT_TAKE1("AutoTLSNotifyCommand", cmd_notify, NULL, RSRC_CONF,
                  "PATH: command run after each issuance, renewal or failure"),
    AP_INIT_TAKE1("AutoTLSConcurrency", cmd_concurrency, NULL, RSRC_CONF,
                  "N: orders in flight at once (default 8)"),
    AP_INIT_TAKE1("AutoTLSSharedMemory", cmd_shm, NULL, RSRC_CONF,
                  "SIZE: bytes of shared memory for live certificates and challenges, e.g. 4M"),
    AP_INIT_TAKE12("AutoTLSRetryDelay", cmd_retry, NULL, RSRC_CONF,
                   "MIN [MAX]: delay after a failed attempt, doubling up to MAX (default 1m 6h)"),
    { .name = NULL }
};
