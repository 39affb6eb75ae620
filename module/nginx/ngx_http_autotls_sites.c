/*
 * ngx_http_autotls_sites.c: the server blocks that say "autotls on" become
 * sites of the core configuration. This runs in postconfiguration, after
 * every server block is complete, so `nginx -t` reports what only the
 * whole configuration can tell: a server without a usable name, names
 * managed twice, a wildcard without a dns-01 command, terms not accepted.
 */
#include "ngx_http_autotls_module.h"

#include <stdlib.h>
#include <string.h>

#include "at_key.h"
#include "at_x509.h"

static const at_conf_hints nginx_hints = {
    "autotls_accept_terms on",
    "autotls_eab KID KEY",
    "autotls_contact EMAIL",
    "autotls_profile NAME",
    "autotls_dns01_command PATH",
    "autotls_ca_trust FILE",
};

static void conf_cleanup(void *data)
{
    at_conf_free(data);
}

/* ------------------------------------------------------------- names */

static ngx_int_t push_name(ngx_conf_t *cf, ngx_array_t *names, const char *name)
{
    const char **have = names->elts, **slot;
    for (ngx_uint_t i = 0; i < names->nelts; i++)
        if (strcmp(have[i], name) == 0)
            return NGX_OK;
    if ((slot = ngx_array_push(names)) == NULL
        || (*slot = at_ngx_cstr(cf->pool, (const u_char *)name, strlen(name))) == NULL)
        return NGX_ERROR;
    return NGX_OK;
}

/* One server_name entry -> a name to certify, or an error that says why
 * it cannot be one and what to write instead. */
static ngx_int_t server_name(ngx_conf_t *cf, const at_ngx_srv_conf_t *ascf,
                             ngx_http_server_name_t *sn, ngx_array_t *names)
{
    char raw[512], name[256];
    at_error err = AT_ERROR_INIT;

    if (sn->name.len == 0)
        return NGX_OK;    /* the implicit (or explicit) empty name */
    if (sn->name.len >= sizeof(raw)) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "autotls on in %s:%ui: server_name \"%V\" is too "
                      "long to certify", ascf->file, ascf->line, &sn->name);
        return NGX_ERROR;
    }
    ngx_memcpy(raw, sn->name.data, sn->name.len);
    raw[sn->name.len] = '\0';
#if (NGX_PCRE)
    if (sn->regex) {
        /* nginx keeps the expression without its "~" */
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "autotls on in %s:%ui: server_name \"%s%s\" is a "
                      "regular expression, which names no certificate; list the names to certify "
                      "with autotls_names", ascf->file, ascf->line, raw[0] == '~' ? "" : "~", raw);
        return NGX_ERROR;
    }
#endif
    if (raw[0] == '~' || raw[0] == '.' || strchr(raw, '*') != NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "autotls on in %s:%ui: server_name \"%s\" is a "
                      "wildcard or regular expression; list the exact names to certify with "
                      "autotls_names (a wildcard certificate, \"*.example.com\", also needs "
                      "\"autotls_challenges dns-01\" and autotls_dns01_command)",
                      ascf->file, ascf->line, raw);
        return NGX_ERROR;
    }
    if (at_parse_name(raw, name, sizeof(name), &err) != 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "autotls on in %s:%ui: server_name \"%s\" cannot "
                      "be certified: %s. List the names to certify with autotls_names instead",
                      ascf->file, ascf->line, raw, err.msg);
        at_error_clear(&err);
        return NGX_ERROR;
    }
    return push_name(cf, names, name);
}

/* Would nginx route a request for name to this server by its server_name?
 * (Exact, "*.example.com", ".example.com", "www.example.*"; a regular
 * expression is taken to cover anything.) */
static int routed_here(ngx_http_core_srv_conf_t *cscf, const char *name)
{
    ngx_http_server_name_t *sn = cscf->server_names.elts;
    size_t nl = strlen(name);

    for (ngx_uint_t i = 0; i < cscf->server_names.nelts; i++) {
        const u_char *p = sn[i].name.data;
        size_t l = sn[i].name.len;
#if (NGX_PCRE)
        if (sn[i].regex)
            return 1;
#endif
        if (l == nl && ngx_strncasecmp((u_char *)name, (u_char *)p, l) == 0)
            return 1;
        if (l > 2 && p[0] == '*' && p[1] == '.' && nl > l - 1 &&
            ngx_strncasecmp((u_char *)name + nl - (l - 1), (u_char *)p + 1, l - 1) == 0)
            return 1;
        if (l > 1 && p[0] == '.' && ((nl == l - 1 && ngx_strncasecmp((u_char *)name, (u_char *)p + 1, l - 1) == 0)
                                     || (nl > l && ngx_strncasecmp((u_char *)name + nl - l, (u_char *)p, l) == 0)))
            return 1;
        if (l > 2 && p[l - 1] == '*' && p[l - 2] == '.' && nl > l - 1 &&
            ngx_strncasecmp((u_char *)name, (u_char *)p, l - 1) == 0)
            return 1;
    }
    return 0;
}

/* autotls_names, or the server's server_name entries. */
static ngx_array_t *site_names(ngx_conf_t *cf, ngx_http_core_srv_conf_t *cscf,
                               const at_ngx_srv_conf_t *ascf)
{
    ngx_array_t *names = ngx_array_create(cf->pool, 4, sizeof(const char *));
    ngx_http_server_name_t *sn;

    if (names == NULL)
        return NULL;
    if (ascf->names) {
        const char **n = ascf->names->elts;
        for (ngx_uint_t i = 0; i < ascf->names->nelts; i++) {
            if (push_name(cf, names, n[i]) != NGX_OK)
                return NULL;
            if (!routed_here(cscf, n[i]))
                ngx_log_error(NGX_LOG_WARN, cf->log, 0, "autotls on in %s:%ui: \"%s\" from "
                              "autotls_names matches no server_name of this server, so nginx "
                              "sends its requests and handshakes elsewhere; add it to server_name",
                              ascf->file, ascf->line, n[i]);
        }
        return names;
    }
    sn = cscf->server_names.elts;
    for (ngx_uint_t i = 0; i < cscf->server_names.nelts; i++)
        if (server_name(cf, ascf, &sn[i], names) != NGX_OK)
            return NULL;
    if (names->nelts == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "autotls on in %s:%ui: this server has no "
                      "server_name to certify; add server_name (or autotls_names) with the names "
                      "to certify", ascf->file, ascf->line);
        return NULL;
    }
    return names;
}

/* ----------------------------------------------------------- listening */

/* Does the server listen with ssl, and on which port (the first ssl one,
 * else the first one)? */
static void site_listen(ngx_http_core_main_conf_t *cmcf, ngx_http_core_srv_conf_t *cscf,
                        ngx_uint_t *https, in_port_t *port)
{
    ngx_http_conf_port_t *pt;
    in_port_t first = 0, first_ssl = 0;

    *https = 0;
    if (cmcf->ports) {
        pt = cmcf->ports->elts;
        for (ngx_uint_t p = 0; p < cmcf->ports->nelts; p++) {
            ngx_http_conf_addr_t *addr = pt[p].addrs.elts;
            for (ngx_uint_t a = 0; a < pt[p].addrs.nelts; a++) {
                ngx_http_core_srv_conf_t **s = addr[a].servers.elts;
                for (ngx_uint_t k = 0; k < addr[a].servers.nelts; k++) {
                    if (s[k] != cscf)
                        continue;
                    if (!first)
                        first = pt[p].port;
                    if (addr[a].opt.ssl) {
                        *https = 1;
                        if (!first_ssl)
                            first_ssl = pt[p].port;
                    }
                }
            }
        }
    }
    *port = first_ssl ? first_ssl : first ? first : 443;
}

/* ------------------------------------------------------------- sites */

static ngx_int_t add_site(ngx_conf_t *cf, at_ngx_main_conf_t *amcf, ngx_http_core_main_conf_t *cmcf,
                          ngx_http_core_srv_conf_t *cscf, at_ngx_srv_conf_t *ascf)
{
    ngx_http_ssl_srv_conf_t *sscf = cscf->ctx->srv_conf[ngx_http_ssl_module.ctx_index];
    ngx_array_t *names = site_names(cf, cscf, ascf);
    at_error err = AT_ERROR_INIT;
    at_site_conf site;
    at_ngx_site_t *as, **slot;
    ngx_uint_t https;
    in_port_t port;
    char id[300];

    if (names == NULL)
        return NGX_ERROR;
    if (ascf->set.accept_terms == AT_NGX_UNSET) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "autotls on in %s:%ui: the certificate authority's "
                      "terms of service have not been accepted; add \"autotls_accept_terms on;\" "
                      "(in http{} or this server) after reading them at %s. For a CA without terms, "
                      "say \"autotls_accept_terms off;\"", ascf->file, ascf->line,
                      ascf->set.ca_url ? ascf->set.ca_url : AT_CA_LETSENCRYPT);
        return NGX_ERROR;
    }
    if (ascf->placeholder && sscf->certificates && sscf->certificates->nelts > 1) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "autotls on in %s:%ui: an ssl_certificate follows "
                      "\"autotls on\" in this server; put ssl_certificate before \"autotls on\" (it is "
                      "then served until the first certificate is obtained) or remove it",
                      ascf->file, ascf->line);
        return NGX_ERROR;
    }
    if (sscf->certificate_values) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "autotls on in %s:%ui: ssl_certificate with "
                      "variables cannot be combined with autotls, which chooses the certificate "
                      "itself; remove the ssl_certificate lines of this server",
                      ascf->file, ascf->line);
        return NGX_ERROR;
    }

    site_listen(cmcf, cscf, &https, &port);
    as = ngx_pcalloc(cf->pool, sizeof(*as));
    if (as == NULL)
        return NGX_ERROR;
    as->cscf = cscf;
    as->names = names->elts;
    as->nnames = names->nelts;
    as->https = https;
    ngx_snprintf((u_char *)id, sizeof(id) - 1, "%s:%d%Z", as->names[0], (int)port);
    id[sizeof(id) - 1] = '\0';
    if ((as->id = at_ngx_cstr(cf->pool, (const u_char *)id, strlen(id))) == NULL)
        return NGX_ERROR;

    at_site_settings_conf(&ascf->set, as->id, as->names, as->nnames, &site);

    if (at_conf_add_site(amcf->conf, &site, &err) != 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "autotls on in %s:%ui (%s): %s",
                      ascf->file, ascf->line, as->id, err.msg);
        at_error_clear(&err);
        return NGX_ERROR;
    }
    if ((slot = ngx_array_push(&amcf->sites)) == NULL)
        return NGX_ERROR;
    *slot = as;
    ascf->site = as;
    return NGX_OK;
}

/* The store when autotls_store is not given: next to nginx's own state
 * (Debian: /var/lib/nginx/autotls, beside the body and proxy directories);
 * under the prefix for a build without such a path. */
static const char *default_store(ngx_conf_t *cf)
{
#ifdef NGX_HTTP_CLIENT_TEMP_PATH
    static const char tmp[] = NGX_HTTP_CLIENT_TEMP_PATH;
    const char *slash = strrchr(tmp, '/');
    if (tmp[0] == '/' && slash && slash != tmp) {
        size_t n = (size_t)(slash - tmp);
        char *r = ngx_pnalloc(cf->pool, n + sizeof("/autotls"));
        if (r == NULL)
            return NULL;
        ngx_memcpy(r, tmp, n);
        ngx_memcpy(r + n, "/autotls", sizeof("/autotls"));
        return r;
    }
#endif
    {
        ngx_str_t name = ngx_string("autotls");
        char *r;
        if (ngx_conf_full_name(cf->cycle, &name, 0) != NGX_OK)
            return NULL;
        if ((r = ngx_pnalloc(cf->pool, name.len + 1)) == NULL)
            return NULL;
        ngx_memcpy(r, name.data, name.len);
        r[name.len] = '\0';
        return r;
    }
}

ngx_int_t at_ngx_sites_build(ngx_conf_t *cf, at_ngx_main_conf_t *amcf)
{
    ngx_http_core_main_conf_t *cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    ngx_http_core_srv_conf_t **cscfp = cmcf->servers.elts;
    ngx_pool_cleanup_t *cln;
    at_error err = AT_ERROR_INIT;
    ngx_int_t bad = 0;

    for (ngx_uint_t s = 0; s < cmcf->servers.nelts; s++) {
        at_ngx_srv_conf_t *ascf = cscfp[s]->ctx->srv_conf[ngx_http_autotls_module.ctx_index];
        ascf->site = NULL;
        if (ascf->enable != 1)
            continue;
        if (amcf->conf == NULL) {
            amcf->conf = at_conf_new();
            cln = ngx_pool_cleanup_add(cf->pool, 0);
            if (amcf->conf == NULL || cln == NULL) {
                at_conf_free(amcf->conf);
                amcf->conf = NULL;
                ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "autotls: out of memory");
                return NGX_ERROR;
            }
            cln->handler = conf_cleanup;
            cln->data = amcf->conf;
            amcf->conf->hints = nginx_hints;
        }
        if (add_site(cf, amcf, cmcf, cscfp[s], ascf) != NGX_OK)
            bad = 1;
    }
    if (bad)
        return NGX_ERROR;
    if (amcf->conf == NULL)
        return NGX_OK;

    amcf->store = amcf->glob.store_dir ? amcf->glob.store_dir : default_store(cf);
    if (amcf->store == NULL)
        return NGX_ERROR;
    if (at_conf_set_globals(amcf->conf, amcf->store, &amcf->glob, &err) != 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "autotls: %s", err.msg);
        at_error_clear(&err);
        return NGX_ERROR;
    }
    return NGX_OK;
}
