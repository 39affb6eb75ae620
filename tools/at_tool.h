/*
 * at_tool.h: what the files of the command-line tool share.
 *
 *   autotls.c        main, the commands
 *   at_tool_opts.c   the command line: option table, parsing, help texts
 *   at_tool_sites.c  the remembered parameters (STORE/tool.json) and the
 *                    configuration built from them
 *   at_tool_run.c    running the engine with the responder, and outcomes
 *   at_responder.c   the challenge responder
 */
#ifndef AT_TOOL_H
#define AT_TOOL_H

#include <stddef.h>
#include <stdio.h>
#include <time.h>
#include <jansson.h>

#include "at_conf.h"
#include "at_engine.h"
#include "at_error.h"
#include "at_log.h"
#include "at_store.h"

/* Commands, as bits (an option lists the commands that accept it). */
enum {
    AT_TOOL_ISSUE   = 1u << 0,
    AT_TOOL_RENEW   = 1u << 1,
    AT_TOOL_STATUS  = 1u << 2,
    AT_TOOL_REVOKE  = 1u << 3,
    AT_TOOL_ACCOUNT = 1u << 4
};

#define AT_TOOL_DEFAULT_TIMEOUT 600L
#define AT_TOOL_DEFAULT_HTTP_PORT 80
#define AT_TOOL_DEFAULT_TLS_PORT 443

typedef struct at_tool {
    const char *prog;        /* "autotls" */
    const char *cmd_name;    /* "issue" */
    unsigned    cmd;         /* one AT_TOOL_* bit */
    json_t     *site;        /* site parameters given on the command line (object) */
    char       *store_dir;
    int         verbose;
    long        timeout;     /* seconds, 0 = not given */
    const char *format;      /* status: "text", "json", "html", "prometheus" */
    int         reason;      /* revoke: RFC 5280 code, -1 = none given */
    int         json_out;    /* account show --json */
    char      **args;        /* positional arguments (borrowed from argv) */
    size_t      nargs;
    at_logger   log;
    char        what[320];   /* what failed, for the report ("issue for example.com") */
} at_tool;

/* ------------------------------------------------------------ at_tool_opts.c */

/* Parse argv (after the command name) into t. Returns 0, 1 when help was
 * printed (exit 0), or -1 with err set (a usage error, exit 2). */
int  at_tool_parse(at_tool *t, int argc, char **argv, at_error *err);
void at_tool_free(at_tool *t);
void at_tool_usage(FILE *f);
void at_tool_command_usage(FILE *f, unsigned cmd);
/* AT_TOOL_* bit of a command name, 0 if unknown. */
unsigned at_tool_command(const char *name);

/* ----------------------------------------------------------- at_tool_sites.c */

/* Remembered parameters: {"version":1,"sites":[{site}, ...]}. A missing file
 * is an empty list. */
int  at_tool_sites_load(at_store *st, json_t **doc, at_error *err);
int  at_tool_sites_save(at_store *st, const json_t *doc, at_error *err);
/* The array inside doc (borrowed). */
json_t *at_tool_sites(json_t *doc);

/* A configuration holding the given sites (each a site object). Certificates
 * of the store that no site describes are added from their metadata when
 * with_stored is set (for status). st may be NULL (checking a site before
 * the store exists). */
at_conf *at_tool_conf(const at_tool *t, json_t *const *sites, size_t nsites, at_store *st,
                      int with_stored, at_error *err);

/* The challenge types a site uses, in preference order (explicit, or from
 * the ports given). Returns the count. */
size_t at_tool_site_challenges(const json_t *site, at_challenge_type *out, size_t max);

/* Does the site manage this (normalised) name? */
int at_tool_site_has_name(const json_t *site, const char *name);

/* -------------------------------------------------------------- at_tool_run.c */

/* Run the engine once over conf with the responder the sites need. ids of
 * certificates to renew now (NULL/0 = none forced). On return every
 * certificate of conf has been attempted; the outcome is printed (stdout)
 * and the first failure is in err (returns -1). */
int at_tool_run(at_tool *t, at_conf *conf, at_store *st, json_t *const *sites, size_t nsites,
                const char *const *force_ids, size_t nforce, at_error *err);

/* SIGINT, SIGTERM and SIGHUP stop the running engine cleanly (a signal
 * thread; call start before any other thread exists). */
void at_tool_signals_start(void);
void at_tool_signals_stop(void);
int  at_tool_interrupted(void);   /* the signal caught, or 0 */

/* Create an engine for a one-off operation, honouring Ctrl-C. */
at_engine *at_tool_engine(at_tool *t, at_conf *conf, at_store *st, at_live **live, at_error *err);
void at_tool_engine_free(at_engine *e, at_live *live);

/* "autotls: <what> failed: <message> (<problem type>)" on one line. */
void at_tool_report(const at_tool *t, const char *what, const at_error *err);

#endif
