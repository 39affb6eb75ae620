/*
 * mod_autotls.h: what the files of the Apache module share. The module is
 * glue: every decision about certificates is the core's; these files turn
 * Apache's phases and hooks into calls of the core.
 *
 *   mod_autotls.c          module record, hook registration, config phases
 *   autotls_directives.c   the AutoTLS* directives and their inheritance
 *   autotls_sites.c        managed virtual hosts -> the core's at_conf
 *   autotls_shm.c          the shared region (renewal control block + live table)
 *   autotls_tls.c          mod_ssl glue: placeholder, certificate callback,
 *                          TLS-ALPN-01, acme-tls/1 negotiation
 *   autotls_http.c         HTTP-01 answers and the 503 page
 *   autotls_renew.c        the renewal thread in a watchdog singleton
 *   autotls_status.c       status page, renew handler, mod_status section
 */
#ifndef MOD_AUTOTLS_H
#define MOD_AUTOTLS_H

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <apr_tables.h>

#include "at_conf.h"
#include "at_live.h"
#include "at_renewer.h"
#include "at_reply.h"
#include "at_serve.h"
#include "at_site.h"
#include "at_store.h"
#include "at_log.h"

extern module AP_MODULE_DECLARE_DATA autotls_module;

#define AT_AP_UNSET (-1)
#define AT_AP_ACME_TLS "acme-tls/1"

/* A virtual host whose certificate the module manages (one per generation). */
typedef struct at_ap_site {
    server_rec  *s;
    const char  *id;             /* "example.com:443", the core's site key */
    const char  *where;          /* "file:line" of its AutoTLS on */
    const char **names;          /* normalised; names[0] is the primary */
    int          nnames;
    const char  *ph_cert[2];     /* placeholder files handed to mod_ssl, */
    const char  *ph_key[2];      /* one per key kind the site uses */
    int          nph;
    int          uses_placeholder; /* mod_ssl got no certificate but ours */
} at_ap_site;

/* Per-server configuration. Per-vhost values inherit from the main server. */
typedef struct at_ap_srv {
    /* vhost only */
    int          enabled;        /* AutoTLS: -1 unset, 0 off, 1 on */
    const char  *where;          /* "file:line" of AutoTLS */
    int          has_servername; /* the <VirtualHost> section says ServerName */
    apr_array_header_t *names;   /* AutoTLSNames (normalised char *), or NULL */

    /* inherited: what the vhost says about its certificate and its CA */
    at_site_settings set;

    /* main server only (copied into every vhost) */
    at_global_settings glob;

    /* runtime: the managed site of this vhost (this generation), or NULL */
    at_ap_site  *site;
} at_ap_srv;

typedef struct at_ap_shm at_ap_shm;

/* This configuration generation: built in check_config, completed in
 * post_config, inherited by the children. */
typedef struct at_ap_gen {
    apr_pool_t  *pool;           /* pconf */
    server_rec  *s;              /* main server */
    at_conf     *conf;           /* NULL when no vhost says AutoTLS on */
    const char  *store_dir;
    apr_array_header_t *sites;   /* at_ap_site * */
    at_ap_shm   *shm;            /* shared region, NULL until post_config */
    at_renew_ctl *ctl;           /* in it: renew requests, who renews */
    at_live     *live;
    at_logger    logger;         /* to the main server's error log */
} at_ap_gen;

extern at_ap_gen *at_ap_g;

static inline at_ap_srv *at_ap_srv_of(const server_rec *s)
{
    return (at_ap_srv *)ap_get_module_config(s->module_config, &autotls_module);
}

/* autotls_directives.c */
extern const command_rec at_ap_directives[];
void *at_ap_srv_create(apr_pool_t *p, server_rec *s);
void *at_ap_srv_merge(apr_pool_t *p, void *basev, void *addv);

/* autotls_sites.c: build the core configuration from the managed vhosts.
 * Logs what is wrong and returns -1 when the configuration cannot work. */
int at_ap_sites_build(at_ap_gen *g, apr_pool_t *ptemp);

/* autotls_shm.c: sets g->shm, g->ctl and g->live. */
int  at_ap_shm_setup(at_ap_gen *g, size_t size, int exact);

/* autotls_tls.c */
void at_ap_tls_hooks(void);
int  at_ap_tls_post_config(at_ap_gen *g, apr_pool_t *ptemp);
void at_ap_tls_child_init(at_ap_gen *g, apr_pool_t *pchild);
at_serve *at_ap_serve(void);

/* autotls_http.c */
void at_ap_http_hooks(void);
/* Send a reply the core made (status, type, no-store, its header, body). */
void at_ap_send(request_rec *r, const at_reply *rp);

/* autotls_renew.c */
int  at_ap_renew_post_config(at_ap_gen *g, apr_pool_t *pconf);
void at_ap_renew_child_init(at_ap_gen *g, apr_pool_t *pchild);

/* autotls_status.c */
void at_ap_status_hooks(void);

/* mod_autotls.c: loggers that write to s's error log: the core's lines as
 * they are, the module's own (the renewer's) marked "AutoTLS: ". */
void at_ap_logger_init(at_logger *lg, server_rec *s);
void at_ap_logger_init_marked(at_logger *lg, server_rec *s);

#endif
