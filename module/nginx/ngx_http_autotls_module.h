/*
 * ngx_http_autotls_module.h: what the files of the nginx module share. The
 * module is glue: every decision about certificates is the core's; these
 * files turn nginx's phases and callbacks into calls of the core.
 *
 *   ngx_http_autotls_module.c      module record, configuration phases,
 *                                  process start and exit
 *   ngx_http_autotls_directives.c  the autotls_* directives, create/merge
 *   ngx_http_autotls_sites.c       managed server blocks -> the core's at_conf
 *   ngx_http_autotls_zone.c        the shared zone (live table + renewal
 *                                  control block)
 *   ngx_http_autotls_tls.c         placeholder, certificate / ClientHello /
 *                                  ALPN callbacks on the servers' SSL_CTXs
 *   ngx_http_autotls_http.c        post-read phase: HTTP-01 and the 503 page
 *   ngx_http_autotls_renew.c       the renewal thread in worker 0, its log
 *   ngx_http_autotls_status.c      autotls_status and autotls_renew handlers
 */
#ifndef NGX_HTTP_AUTOTLS_MODULE_H
#define NGX_HTTP_AUTOTLS_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "at_conf.h"
#include "at_live.h"
#include "at_log.h"
#include "at_renewer.h"
#include "at_reply.h"
#include "at_serve.h"
#include "at_site.h"

extern ngx_module_t ngx_http_autotls_module;

#define AT_NGX_UNSET  (-1)

/* A server block whose certificate the module manages. */
typedef struct at_ngx_site_s {
    ngx_http_core_srv_conf_t  *cscf;
    const char                *id;        /* "example.com:443": the core's site key */
    const char               **names;     /* normalised; names[0] is the primary */
    size_t                     nnames;
    unsigned                   https:1;   /* listens with ssl somewhere */
} at_ngx_site_t;

/* Per server block (and the http{} level, which server blocks inherit). */
typedef struct {
    /* server only, never inherited */
    ngx_int_t             enable;         /* autotls: -1 unset, 0 off, 1 on */
    u_char               *file;           /* where "autotls on" is */
    ngx_uint_t            line;
    ngx_array_t          *names;          /* autotls_names: const char * (normalised) */
    unsigned              placeholder:1;  /* ssl got our placeholder, not the admin's certificate */

    /* inherited from http{}: what the server says about its certificate and CA */
    at_site_settings      set;

    /* runtime: the managed site of this server block, or NULL */
    at_ngx_site_t        *site;
} at_ngx_srv_conf_t;

typedef struct {
    ngx_uint_t            status;         /* autotls_status */
    ngx_uint_t            renew;          /* autotls_renew */
} at_ngx_loc_conf_t;

typedef struct at_ngx_shared_s at_ngx_shared_t;

/* The http{} level: global settings, and what this configuration cycle built. */
typedef struct {
    at_global_settings    glob;           /* autotls_store (absolute), autotls_zone, ... */

    /* one self-signed placeholder for every managed server ("data:" PEM) */
    ngx_str_t             ph_cert;
    ngx_str_t             ph_key;
    X509                 *ph_rsa_cert;    /* RSA one, added where RSA is wanted */
    EVP_PKEY             *ph_rsa_key;

    /* built in postconfiguration */
    at_conf              *conf;           /* NULL when no server says autotls on */
    const char           *store;          /* the store directory in use */
    ngx_array_t           sites;          /* at_ngx_site_t * */
    ngx_shm_zone_t       *zone;
    at_ngx_shared_t      *shared;         /* set by the zone's init */
    at_logger             logger;         /* the master's: straight into the error log */
} at_ngx_main_conf_t;

/* ngx_http_autotls_directives.c */
extern ngx_command_t at_ngx_commands[];
void *at_ngx_create_main_conf(ngx_conf_t *cf);
void *at_ngx_create_srv_conf(ngx_conf_t *cf);
char *at_ngx_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child);
void *at_ngx_create_loc_conf(ngx_conf_t *cf);
char *at_ngx_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child);
/* A NUL-terminated copy of s[0..len) in the pool, or NULL. */
const char *at_ngx_cstr(ngx_pool_t *p, const u_char *s, size_t len);

/* ngx_http_autotls_sites.c: build the core configuration; logs what is
 * wrong (with the file and line of "autotls on") and returns NGX_ERROR. */
ngx_int_t at_ngx_sites_build(ngx_conf_t *cf, at_ngx_main_conf_t *amcf);

/* ngx_http_autotls_zone.c */
ngx_int_t at_ngx_zone_add(ngx_conf_t *cf, at_ngx_main_conf_t *amcf);
at_live *at_ngx_live(const at_ngx_main_conf_t *amcf);
/* Renew requests and which process renews (NULL until the zone exists). */
at_renew_ctl *at_ngx_ctl(const at_ngx_main_conf_t *amcf);

/* ngx_http_autotls_tls.c */
ngx_int_t at_ngx_placeholder(ngx_conf_t *cf, at_ngx_main_conf_t *amcf);
ngx_int_t at_ngx_tls_postconfiguration(ngx_conf_t *cf, at_ngx_main_conf_t *amcf);
ngx_int_t at_ngx_tls_init_process(ngx_cycle_t *cycle, at_ngx_main_conf_t *amcf);
void at_ngx_tls_exit_process(void);
at_serve *at_ngx_serve(void);

/* ngx_http_autotls_http.c */
ngx_int_t at_ngx_http_postconfiguration(ngx_conf_t *cf);
ngx_int_t at_ngx_send(ngx_http_request_t *r, ngx_uint_t status, const char *ctype,
                      const u_char *body, size_t len);
/* A reply the core made (status, type, no-store, its header, body). */
ngx_int_t at_ngx_reply(ngx_http_request_t *r, const at_reply *rp);

/* ngx_http_autotls_renew.c */
void at_ngx_logger_direct(at_logger *lg, ngx_log_t *log);
ngx_int_t at_ngx_renew_init_process(ngx_cycle_t *cycle, at_ngx_main_conf_t *amcf);
void at_ngx_renew_exit_process(ngx_cycle_t *cycle);

/* ngx_http_autotls_status.c */
char *at_ngx_status_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *at_ngx_renew_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

#endif
