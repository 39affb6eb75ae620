/*
 * ngx_http_autotls_directives.c: the autotls_* directives. Every value goes
 * through the core's parser (at_conf.h), so nginx and Apache accept the same
 * values and explain a bad one the same way; the directive name goes in
 * front and nginx adds the file and line:
 *
 *   nginx: [emerg] autotls_keys: 'ec:P-999' is not a key type; use ... in /etc/nginx/nginx.conf:12
 */
#include "ngx_http_autotls_module.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "at_key.h"

/* ------------------------------------------------------------- helpers */

/* "autotls_keys: <what the core said>", with nginx's " in FILE:LINE". */
static char *fail(ngx_conf_t *cf, ngx_command_t *cmd, at_error *err)
{
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V: %s", &cmd->name, err->msg);
    at_error_clear(err);
    return NGX_CONF_ERROR;
}

/* A NUL-terminated copy in the pool (NULL when the pool is out of memory). */
const char *at_ngx_cstr(ngx_pool_t *p, const u_char *s, size_t len)
{
    char *r = ngx_pnalloc(p, len + 1);
    if (r) {
        ngx_memcpy(r, s, len);
        r[len] = '\0';
    }
    return r;
}

static void *pool_dup(ngx_pool_t *p, const void *src, size_t n)
{
    void *r = ngx_palloc(p, n);
    if (r)
        ngx_memcpy(r, src, n);
    return r;
}

/* Copy a malloc'd string from the core into the pool. */
static const char *pool_take(ngx_pool_t *p, char *s)
{
    const char *r = at_ngx_cstr(p, (const u_char *)s, strlen(s));
    free(s);
    return r;
}

static ngx_str_t *args(ngx_conf_t *cf)
{
    return cf->args->elts;
}

/* The directive's arguments as C strings (nginx ends each with a NUL). */
static const char *const *argv_of(ngx_conf_t *cf)
{
    const char **v = ngx_palloc(cf->pool, cf->args->nelts * sizeof(*v));

    for (ngx_uint_t i = 1; v && i < cf->args->nelts; i++)
        v[i - 1] = (const char *)args(cf)[i].data;
    return v;
}

/* A file name as nginx's own directives take it: relative to the
 * configuration prefix (conf = 1) or to the prefix (conf = 0). */
static const char *full_path(ngx_conf_t *cf, ngx_str_t *arg, ngx_uint_t conf)
{
    ngx_str_t name = *arg;
    if (ngx_conf_full_name(cf->cycle, &name, conf) != NGX_OK)
        return NULL;
    return at_ngx_cstr(cf->pool, name.data, name.len);
}

static char *checked_path(ngx_conf_t *cf, ngx_command_t *cmd, ngx_str_t *arg,
                          int (*check)(const char *, at_error *), const char **out)
{
    at_error err = AT_ERROR_INIT;
    const char *p = full_path(cf, arg, 1);

    if (p == NULL)
        return NGX_CONF_ERROR;
    if (check(p, &err) != 0)
        return fail(cf, cmd, &err);
    *out = p;
    return NGX_CONF_OK;
}

/* ------------------------------------------------------- create / merge */

void *at_ngx_create_main_conf(ngx_conf_t *cf)
{
    at_ngx_main_conf_t *amcf = ngx_pcalloc(cf->pool, sizeof(*amcf));
    if (amcf == NULL)
        return NULL;
    at_global_settings_init(&amcf->glob);
    if (ngx_array_init(&amcf->sites, cf->pool, 4, sizeof(at_ngx_site_t *)) != NGX_OK)
        return NULL;
    return amcf;
}

void *at_ngx_create_srv_conf(ngx_conf_t *cf)
{
    at_ngx_srv_conf_t *ascf = ngx_pcalloc(cf->pool, sizeof(*ascf));
    if (ascf == NULL)
        return NULL;
    ascf->enable = AT_NGX_UNSET;
    at_site_settings_init(&ascf->set);
    return ascf;
}

char *at_ngx_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
    at_ngx_srv_conf_t *prev = parent, *conf = child;

    /* A server's own switch and names are never inherited: "autotls" is
     * not allowed at the http{} level anyway. */
    at_site_settings_inherit(&conf->set, &prev->set);
    return NGX_CONF_OK;
}

void *at_ngx_create_loc_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(at_ngx_loc_conf_t));
}

char *at_ngx_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    /* Handlers belong to the location that names them. */
    return NGX_CONF_OK;
}

/* --------------------------------------------------------- directives */

static char *cmd_autotls(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    at_ngx_main_conf_t *amcf;
    ngx_http_ssl_srv_conf_t *sscf;
    at_error err = AT_ERROR_INIT;
    ngx_str_t *s;
    int on;

    if (ascf->enable != AT_NGX_UNSET)
        return "is duplicate";
    if (at_parse_onoff((const char *)args(cf)[1].data, &on, &err) != 0)
        return fail(cf, cmd, &err);
    ascf->enable = on;
    ascf->file = cf->conf_file->file.name.data;
    ascf->line = cf->conf_file->line;
    if (!on)
        return NGX_CONF_OK;

    /* nginx refuses an ssl listener without a certificate in its own
     * merge and postconfiguration, which run before this module's: give
     * the server a placeholder now, replaced per handshake by the live
     * certificate. An ssl_certificate written before "autotls on" is the
     * administrator's own and is served until ours is live. */
    sscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_ssl_module);
    if (sscf->certificates != NGX_CONF_UNSET_PTR)
        return NGX_CONF_OK;
    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_autotls_module);
    if (at_ngx_placeholder(cf, amcf) != NGX_OK)
        return NGX_CONF_ERROR;
    sscf->certificates = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
    sscf->certificate_keys = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
    if (sscf->certificates == NULL || sscf->certificate_keys == NULL)
        return NGX_CONF_ERROR;
    if ((s = ngx_array_push(sscf->certificates)) == NULL)
        return NGX_CONF_ERROR;
    *s = amcf->ph_cert;
    if ((s = ngx_array_push(sscf->certificate_keys)) == NULL)
        return NGX_CONF_ERROR;
    *s = amcf->ph_key;
    ascf->placeholder = 1;
    return NGX_CONF_OK;
}

static char *cmd_names(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    at_error err = AT_ERROR_INIT;
    const char *const *argv = argv_of(cf);
    char **names;
    size_t n;

    if (ascf->names)
        return "is duplicate";
    if (argv == NULL)
        return NGX_CONF_ERROR;
    if (at_parse_names((const char *)cmd->name.data, argv, cf->args->nelts - 1, &names, &n, &err) != 0)
        return fail(cf, cmd, &err);
    ascf->names = ngx_array_create(cf->pool, n, sizeof(const char *));
    for (size_t i = 0; ascf->names && i < n; i++) {
        const char **slot = ngx_array_push(ascf->names);
        if (slot == NULL
            || (*slot = at_ngx_cstr(cf->pool, (u_char *)names[i], strlen(names[i]))) == NULL)
            ascf->names = NULL;
    }
    at_parse_names_free(names, n);
    return ascf->names ? NGX_CONF_OK : NGX_CONF_ERROR;
}

static char *cmd_ca(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    at_error err = AT_ERROR_INIT;
    char *url = NULL;

    if (ascf->set.ca_url)
        return "is duplicate";
    if (at_parse_ca((const char *)args(cf)[1].data, &url, &err) != 0)
        return fail(cf, cmd, &err);
    ascf->set.ca_url = pool_take(cf->pool, url);
    return ascf->set.ca_url ? NGX_CONF_OK : NGX_CONF_ERROR;
}

static char *cmd_ca_trust(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    if (ascf->set.ca_trust)
        return "is duplicate";
    return checked_path(cf, cmd, &args(cf)[1], at_parse_cert_file, &ascf->set.ca_trust);
}

static char *cmd_client_cert(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    const char *c, *k;
    char *rv;

    if (ascf->set.client_cert)
        return "is duplicate";
    if ((rv = checked_path(cf, cmd, &args(cf)[1], at_parse_cert_file, &c)) != NGX_CONF_OK)
        return rv;
    if ((rv = checked_path(cf, cmd, &args(cf)[2], at_parse_key_file, &k)) != NGX_CONF_OK)
        return rv;
    ascf->set.client_cert = c;
    ascf->set.client_key = k;
    return NGX_CONF_OK;
}

static char *cmd_contact(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    at_error err = AT_ERROR_INIT;
    ngx_uint_t n = cf->args->nelts - 1;
    ngx_array_t *contacts;

    if (ascf->set.contacts)
        return "is duplicate";
    contacts = ngx_array_create(cf->pool, n, sizeof(const char *));
    if (contacts == NULL)
        return NGX_CONF_ERROR;
    for (ngx_uint_t i = 1; i <= n; i++) {
        char *uri = NULL;
        const char **slot;
        if (at_parse_contact((const char *)args(cf)[i].data, &uri, &err) != 0)
            return fail(cf, cmd, &err);
        if ((slot = ngx_array_push(contacts)) == NULL) {
            free(uri);
            return NGX_CONF_ERROR;
        }
        if ((*slot = pool_take(cf->pool, uri)) == NULL)
            return NGX_CONF_ERROR;
    }
    ascf->set.contacts = contacts->elts;
    ascf->set.ncontacts = contacts->nelts;
    return NGX_CONF_OK;
}

static char *cmd_accept_terms(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    at_error err = AT_ERROR_INIT;
    int on;

    if (ascf->set.accept_terms != AT_NGX_UNSET)
        return "is duplicate";
    if (at_parse_onoff((const char *)args(cf)[1].data, &on, &err) != 0)
        return fail(cf, cmd, &err);
    ascf->set.accept_terms = on;
    return NGX_CONF_OK;
}

static char *cmd_store(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_main_conf_t *amcf = conf;

    if (amcf->glob.store_dir)
        return "is duplicate";
    if (args(cf)[1].len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V: give a directory, e.g. %V /var/lib/nginx/autotls",
                           &cmd->name, &cmd->name);
        return NGX_CONF_ERROR;
    }
    amcf->glob.store_dir = full_path(cf, &args(cf)[1], 0);
    return amcf->glob.store_dir ? NGX_CONF_OK : NGX_CONF_ERROR;
}

static char *cmd_keys(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    at_error err = AT_ERROR_INIT;
    const char *const *argv = argv_of(cf);
    at_key_spec keys[2];
    size_t n;

    if (ascf->set.keys)
        return "is duplicate";
    if (argv == NULL)
        return NGX_CONF_ERROR;
    if (at_parse_key_specs((const char *)cmd->name.data, argv, cf->args->nelts - 1, keys, &n, &err) != 0)
        return fail(cf, cmd, &err);
    ascf->set.keys = pool_dup(cf->pool, keys, n * sizeof(keys[0]));
    ascf->set.nkeys = n;
    return ascf->set.keys ? NGX_CONF_OK : NGX_CONF_ERROR;
}

static char *cmd_challenges(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    at_error err = AT_ERROR_INIT;
    const char *const *argv = argv_of(cf);
    at_challenge_type types[AT_MAX_CHALLENGES];
    size_t n;

    if (ascf->set.challenges)
        return "is duplicate";
    if (argv == NULL)
        return NGX_CONF_ERROR;
    if (at_parse_challenges(argv, cf->args->nelts - 1, types, &n, &err) != 0)
        return fail(cf, cmd, &err);
    ascf->set.challenges = pool_dup(cf->pool, types, n * sizeof(types[0]));
    ascf->set.nchallenges = n;
    return ascf->set.challenges ? NGX_CONF_OK : NGX_CONF_ERROR;
}

static char *cmd_window(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    at_error err = AT_ERROR_INIT;

    if (ascf->set.window.percent || ascf->set.window.seconds)
        return "is duplicate";
    if (at_parse_renew_window((const char *)args(cf)[1].data, &ascf->set.window, &err) != 0)
        return fail(cf, cmd, &err);
    return NGX_CONF_OK;
}

static char *cmd_profile(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    at_error err = AT_ERROR_INIT;

    if (ascf->set.profile)
        return "is duplicate";
    if (at_parse_profile((const char *)args(cf)[1].data, &err) != 0)
        return fail(cf, cmd, &err);
    ascf->set.profile = (const char *)args(cf)[1].data;
    return NGX_CONF_OK;
}

static char *cmd_eab(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    at_error err = AT_ERROR_INIT;
    const char *kid = (const char *)args(cf)[1].data, *key = (const char *)args(cf)[2].data;
    const char *alg;

    if (ascf->set.eab_kid)
        return "is duplicate";
    if (at_parse_eab(kid, key, &err) != 0 ||
        at_parse_eab_alg(cf->args->nelts == 4 ? (const char *)args(cf)[3].data : NULL, &alg, &err) != 0)
        return fail(cf, cmd, &err);
    ascf->set.eab_kid = kid;
    ascf->set.eab_key = key;
    ascf->set.eab_alg = alg;
    return NGX_CONF_OK;
}

static char *cmd_chain(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    at_error err = AT_ERROR_INIT;
    const char *v = (const char *)args(cf)[1].data;

    if (ascf->set.preferred_chain)
        return "is duplicate";
    if (at_parse_preferred_chain((const char *)cmd->name.data, v, &err) != 0)
        return fail(cf, cmd, &err);
    ascf->set.preferred_chain = v;
    return NGX_CONF_OK;
}

static char *cmd_dns01(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_srv_conf_t *ascf = conf;
    if (ascf->set.dns01_command)
        return "is duplicate";
    return checked_path(cf, cmd, &args(cf)[1], at_parse_command, &ascf->set.dns01_command);
}

static char *cmd_notify(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_main_conf_t *amcf = conf;
    if (amcf->glob.notify_command)
        return "is duplicate";
    return checked_path(cf, cmd, &args(cf)[1], at_parse_command, &amcf->glob.notify_command);
}

static char *cmd_concurrency(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_main_conf_t *amcf = conf;
    at_error err = AT_ERROR_INIT;
    long v;

    if (amcf->glob.concurrency != AT_NGX_UNSET)
        return "is duplicate";
    if (at_parse_int((const char *)args(cf)[1].data, 1, 100, &v, &err) != 0)
        return fail(cf, cmd, &err);
    amcf->glob.concurrency = v;
    return NGX_CONF_OK;
}

/* autotls_retry_delay MIN [MAX]: the delay after a failed attempt, doubling
 * up to MAX (default 6h), with jitter; a CA's Retry-After always wins. */
static char *cmd_retry_delay(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_main_conf_t *amcf = conf;
    at_error err = AT_ERROR_INIT;
    long lo, hi;

    if (amcf->glob.retry_min != AT_NGX_UNSET)
        return "is duplicate";
    if (at_parse_retry_delay((const char *)cmd->name.data, (const char *)args(cf)[1].data,
                             cf->args->nelts > 2 ? (const char *)args(cf)[2].data : NULL,
                             &lo, &hi, &err) != 0)
        return fail(cf, cmd, &err);
    amcf->glob.retry_min = lo;
    amcf->glob.retry_max = hi;
    return NGX_CONF_OK;
}

static char *cmd_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    at_ngx_main_conf_t *amcf = conf;
    at_error err = AT_ERROR_INIT;
    size_t v;

    if (amcf->glob.shm_size)
        return "is duplicate";
    if (at_parse_size((const char *)args(cf)[1].data, (size_t)256 * 1024, (size_t)1024 * 1024 * 1024,
                      &v, &err) != 0)
        return fail(cf, cmd, &err);
    amcf->glob.shm_size = v;
    return NGX_CONF_OK;
}

#define SITE_CONF (NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF)

ngx_command_t at_ngx_commands[] = {
    { ngx_string("autotls"), NGX_HTTP_SRV_CONF | NGX_CONF_TAKE1,
      cmd_autotls, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_names"), NGX_HTTP_SRV_CONF | NGX_CONF_1MORE,
      cmd_names, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_ca"), SITE_CONF | NGX_CONF_TAKE1,
      cmd_ca, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_ca_trust"), SITE_CONF | NGX_CONF_TAKE1,
      cmd_ca_trust, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_ca_client_certificate"), SITE_CONF | NGX_CONF_TAKE2,
      cmd_client_cert, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_contact"), SITE_CONF | NGX_CONF_1MORE,
      cmd_contact, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_accept_terms"), SITE_CONF | NGX_CONF_TAKE1,
      cmd_accept_terms, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_keys"), SITE_CONF | NGX_CONF_1MORE,
      cmd_keys, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_challenges"), SITE_CONF | NGX_CONF_1MORE,
      cmd_challenges, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_renew_window"), SITE_CONF | NGX_CONF_TAKE1,
      cmd_window, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_profile"), SITE_CONF | NGX_CONF_TAKE1,
      cmd_profile, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_eab"), SITE_CONF | NGX_CONF_TAKE23,
      cmd_eab, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_preferred_chain"), SITE_CONF | NGX_CONF_TAKE1,
      cmd_chain, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_dns01_command"), SITE_CONF | NGX_CONF_TAKE1,
      cmd_dns01, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_store"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
      cmd_store, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_notify_command"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
      cmd_notify, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_concurrency"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
      cmd_concurrency, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_retry_delay"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE12,
      cmd_retry_delay, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_zone"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
      cmd_zone, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_status"), NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
      at_ngx_status_directive, NGX_HTTP_LOC_CONF_OFFSET, 0, NULL },
    { ngx_string("autotls_renew"), NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
      at_ngx_renew_directive, NGX_HTTP_LOC_CONF_OFFSET, 0, NULL },
    ngx_null_command
};
