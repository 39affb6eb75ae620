/*
 * autotls.c: the command-line tool. It drives the same core as the server
 * modules — one configuration, the store, a private live table, the engine —
 * and answers the CA's challenges itself, so an administrator (or a test)
 * can issue, renew, inspect and revoke certificates without a web server.
 *
 * Output: results on stdout; on failure exactly one line on stderr and a
 * non-zero exit status (1 failed, 2 usage). Progress goes to stderr only
 * with --verbose.
 */
#include "at_tool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "at_buf.h"
#include "at_jose.h"
#include "at_json.h"
#include "at_key.h"
#include "at_status.h"
#include "at_time.h"
#include "at_x509.h"

#define EXIT_USAGE 2
#define LOCK_WAIT_MS 15000

/* --------------------------------------------------------------- common */

static void log_stderr(void *ud, at_log_level level, const char *msg)
{
    static const char *const names[] = { "error", "warning", "notice", "info", "debug" };
    (void)ud;
    fprintf(stderr, "autotls: %s: %s\n", (unsigned)level < 5 ? names[level] : "?", msg);
}

static int usage_error(const at_tool *t, const char *msg)
{
    fprintf(stderr, "%s: %s: %s (see '%s %s --help')\n", t->prog, t->cmd_name, msg, t->prog, t->cmd_name);
    return EXIT_USAGE;
}

static int fail(at_tool *t, const char *what, const at_error *err)
{
    at_tool_report(t, what, err);
    return EXIT_FAILURE;
}

static at_store *open_store(at_tool *t, int create, at_error *err)
{
    struct stat sb;
    if (!create && stat(t->store_dir, &sb) != 0) {
        at_error_set(err, AT_ERR_NOTFOUND, "the store %s does not exist (%s)%s", t->store_dir, strerror(errno),
                     errno == ENOENT ? "; 'autotls issue' creates it" : "");
        return NULL;
    }
    return at_store_open_dir(t->store_dir, err);
}

/* tool.json is read, changed and written under a lock so that two runs of
 * the tool on one store never lose each other's parameters. */
static int lock_tool(at_store *st, at_store_lock **lk, at_error *err)
{
    struct timespec ts = { 0, 100 * 1000000L };
    for (int waited = 0;; waited += 100) {
        at_error_clear(err);
        if (at_store_trylock(st, "autotls-tool", lk, err) == 0)
            return 0;
        if (err->code != AT_ERR_BUSY || waited >= LOCK_WAIT_MS)
            return at_error_prefix(err, "locking the parameters in %s", at_store_describe(st));
        nanosleep(&ts, NULL);
    }
}

/* The site objects of doc, as an array of borrowed pointers. */
static json_t **site_list(json_t *doc, size_t *n)
{
    json_t *sites = at_tool_sites(doc);
    json_t **out;
    *n = json_array_size(sites);
    out = calloc(*n ? *n : 1, sizeof(*out));
    for (size_t i = 0; out && i < *n; i++)
        out[i] = json_array_get(sites, i);
    return out;
}

/* The index of the site object behind a certificate of the configuration. */
static long site_of(json_t *const *sites, size_t n, const at_cert_conf *cc)
{
    for (size_t i = 0; i < n; i++) {
        const char *first = json_string_value(json_array_get(json_object_get(sites[i], "names"), 0));
        if (first && cc->site && strcmp(first, cc->site) == 0)
            return (long)i;
    }
    return -1;
}

/* Certificates of conf that `arg` (an id or a name) designates. */
static size_t select_certs(const at_conf *conf, const char *arg, const at_cert_conf **out, size_t max)
{
    char norm[256];
    size_t n = 0;
    const at_cert_conf *byid = at_conf_cert(conf, arg);

    if (byid) {
        out[0] = byid;
        return 1;
    }
    if (at_parse_name(arg, norm, sizeof(norm), NULL) != 0)
        return 0;
    for (size_t i = 0; i < conf->ncerts && n < max; i++)
        for (size_t k = 0; k < conf->certs[i].nnames; k++)
            if (strcmp(conf->certs[i].names[k], norm) == 0) {
                out[n++] = &conf->certs[i];
                break;
            }
    return n;
}

/* Options that say how to reach the CA apply to every site for this run. */
static void apply_overrides(const at_tool *t, json_t *const *sites, size_t n)
{
    if (json_object_size(t->site) == 0)
        return;
    for (size_t i = 0; i < n; i++)
        json_object_update(sites[i], t->site);
}

/* ---------------------------------------------------------------- issue */

static int cmd_issue(at_tool *t)
{
    at_error err = AT_ERROR_INIT;
    at_store *st = NULL;
    at_store_lock *lk = NULL;
    json_t *doc = NULL, *site = NULL, *names = json_object_get(t->site, "names");
    at_conf *conf = NULL;
    int rc = EXIT_FAILURE;

    if (!json_array_size(names))
        return usage_error(t, "--name NAME is required");
    if (!json_object_get(t->site, "ca"))
        return usage_error(t, "--ca URL is required (the CA's ACME directory)");
    if (!t->store_dir)
        return usage_error(t, "--store DIR is required");
    if (t->nargs)
        return usage_error(t, "names are given with --name");
    snprintf(t->what, sizeof(t->what), "issue for %s", json_string_value(json_array_get(names, 0)));

    site = json_deep_copy(t->site);
    /* Validate before creating or remembering anything. */
    if (!(conf = at_tool_conf(t, &site, 1, NULL, 0, &err)))
        goto out;
    if (!(st = open_store(t, 1, &err)))
        goto out;
    if (lock_tool(st, &lk, &err) != 0 || at_tool_sites_load(st, &doc, &err) != 0)
        goto out;
    {
        /* The new set of names replaces every remembered set it overlaps
         * (the core refuses one name in two certificates of one key type). */
        json_t *sites = at_tool_sites(doc);
        for (size_t i = json_array_size(sites); i-- > 0;) {
            json_t *old = json_array_get(sites, i);
            for (size_t k = 0; k < json_array_size(names); k++)
                if (at_tool_site_has_name(old, json_string_value(json_array_get(names, k)))) {
                    json_array_remove(sites, i);
                    break;
                }
        }
        json_array_append(sites, site);
    }
    if (at_tool_sites_save(st, doc, &err) != 0)
        goto out;
    at_store_unlock(lk);
    lk = NULL;

    if (at_tool_run(t, conf, st, &site, 1, NULL, 0, &err) == 0)
        rc = EXIT_SUCCESS;
out:
    if (rc != EXIT_SUCCESS)
        fail(t, t->what, &err);
    if (lk)
        at_store_unlock(lk);
    at_conf_free(conf);
    json_decref(doc);
    json_decref(site);
    if (st)
        at_store_close(st);
    at_error_clear(&err);
    return rc;
}

/* ---------------------------------------------------------------- renew */

static int cmd_renew(at_tool *t)
{
    at_error err = AT_ERROR_INIT;
    at_store *st = NULL;
    at_store_lock *lk = NULL;
    json_t *doc = NULL, **all = NULL, **chosen = NULL;
    size_t nall = 0, nchosen = 0, nforce = 0;
    const char **force = NULL;
    char *selected = NULL;
    at_conf *conf_all = NULL, *conf = NULL;
    int rc = EXIT_FAILURE;

    if (!t->store_dir)
        return usage_error(t, "--store DIR is required");
    snprintf(t->what, sizeof(t->what), "renew");
    if (!(st = open_store(t, 0, &err)))
        goto out;
    if (lock_tool(st, &lk, &err) != 0 || at_tool_sites_load(st, &doc, &err) != 0)
        goto out;
    all = site_list(doc, &nall);
    if (!nall) {
        at_error_set(&err, AT_ERR_NOTFOUND, "%s holds no certificate issued with this tool; use 'autotls issue'",
                     t->store_dir);
        goto out;
    }
    if (!(conf_all = at_tool_conf(t, all, nall, st, 0, &err)))
        goto out;
    selected = calloc(nall, 1);
    force = calloc(conf_all->ncerts + 1, sizeof(*force));
    chosen = calloc(nall, sizeof(*chosen));
    if (!selected || !force || !chosen) {
        at_error_set(&err, AT_ERR_INTERNAL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < conf_all->ncerts; i++) {
        int wanted = t->nargs == 0;
        for (size_t a = 0; a < t->nargs && !wanted; a++) {
            const at_cert_conf *hit[AT_MAX_KEYS * 4];
            size_t nh = select_certs(conf_all, t->args[a], hit, sizeof(hit) / sizeof(hit[0]));
            for (size_t k = 0; k < nh; k++)
                wanted |= hit[k] == &conf_all->certs[i];
        }
        if (wanted) {
            long s = site_of(all, nall, &conf_all->certs[i]);
            if (s >= 0)
                selected[s] = 1;
            force[nforce++] = conf_all->certs[i].id;
        }
    }
    for (size_t a = 0; a < t->nargs; a++) {
        const at_cert_conf *hit[1];
        if (select_certs(conf_all, t->args[a], hit, 1) == 0) {
            at_error_set(&err, AT_ERR_NOTFOUND, "no certificate in %s is called or covers '%s'", t->store_dir,
                         t->args[a]);
            goto out;
        }
    }
    for (size_t i = 0; i < nall; i++)
        if (selected[i])
            chosen[nchosen++] = all[i];
    if (json_object_size(t->site)) {
        apply_overrides(t, chosen, nchosen);
        if (at_tool_sites_save(st, doc, &err) != 0)
            goto out;
    }
    at_store_unlock(lk);
    lk = NULL;
    if (!(conf = at_tool_conf(t, chosen, nchosen, st, 0, &err)))
        goto out;
    if (nchosen == 1)
        snprintf(t->what, sizeof(t->what), "renew for %s",
                 json_string_value(json_array_get(json_object_get(chosen[0], "names"), 0)));
    if (at_tool_run(t, conf, st, chosen, nchosen, force, nforce, &err) == 0)
        rc = EXIT_SUCCESS;
out:
    if (rc != EXIT_SUCCESS)
        fail(t, t->what, &err);
    if (lk)
        at_store_unlock(lk);
    at_conf_free(conf);
    at_conf_free(conf_all);
    free(selected);
    free(force);
    free(chosen);
    free(all);
    json_decref(doc);
    if (st)
        at_store_close(st);
    at_error_clear(&err);
    return rc;
}

/* --------------------------------------------------------------- status */

static const char *jstr(const json_t *o, const char *k, const char *dflt)
{
    const char *s = at_json_str(o, k);
    return s ? s : dflt;
}

static void render_text(const json_t *status, at_buf *out)
{
    const json_t *certs = json_object_get(status, "certificates");
    size_t n = json_array_size(certs), wn = 5, wk = 3, ws = 5;
    char **names = calloc(n ? n : 1, sizeof(char *));

    if (!names)
        return;
    for (size_t i = 0; i < n; i++) {
        const json_t *c = json_array_get(certs, i), *nl = json_object_get(c, "names");
        at_buf b = AT_BUF_INIT;
        for (size_t k = 0; k < json_array_size(nl); k++)
            at_buf_printf(&b, "%s%s", k ? "," : "", json_string_value(json_array_get(nl, k)));
        names[i] = at_buf_detach(&b);
        if (names[i] && strlen(names[i]) > wn)
            wn = strlen(names[i]);
        if (strlen(jstr(c, "key_type", "-")) > wk)
            wk = strlen(jstr(c, "key_type", "-"));
        if (strlen(jstr(c, "state", "-")) > ws)
            ws = strlen(jstr(c, "state", "-"));
    }
    if (n == 0) {
        at_buf_puts(out, "no certificates\n");
        free(names);
        return;
    }
    at_buf_printf(out, "%-*s  %-*s  %-*s  %-20s  %-20s  %s\n", (int)wn, "NAMES", (int)wk, "KEY", (int)ws, "STATE",
                  "VALID UNTIL", "RENEW AT", "ID");
    for (size_t i = 0; i < n; i++) {
        const json_t *c = json_array_get(certs, i), *le = json_object_get(c, "last_error");
        at_buf_printf(out, "%-*s  %-*s  %-*s  %-20s  %-20s  %s\n", (int)wn, names[i] ? names[i] : "?", (int)wk,
                      jstr(c, "key_type", "-"), (int)ws, jstr(c, "state", "-"), jstr(c, "not_after", "-"),
                      jstr(c, "renew_at", "-"), jstr(c, "id", "-"));
        if (json_is_object(le) && at_json_str(le, "message"))
            at_buf_printf(out, "    last error: %s\n", at_json_str(le, "message"));
        if (at_json_str(c, "next_attempt") && json_is_object(le))
            at_buf_printf(out, "    next attempt: %s\n", at_json_str(c, "next_attempt"));
        free(names[i]);
    }
    free(names);
}

static int cmd_status(at_tool *t)
{
    at_error err = AT_ERROR_INIT;
    at_store *st = NULL;
    json_t *doc = NULL, **sites = NULL, *status = NULL;
    size_t nsites = 0;
    at_conf *conf = NULL;
    at_buf out = AT_BUF_INIT;
    int rc = EXIT_FAILURE;

    if (!t->store_dir)
        return usage_error(t, "--store DIR is required");
    if (t->nargs)
        return usage_error(t, "status takes no arguments");
    snprintf(t->what, sizeof(t->what), "status of %s", t->store_dir);
    if (!(st = open_store(t, 0, &err)) || at_tool_sites_load(st, &doc, &err) != 0)
        goto out;
    sites = site_list(doc, &nsites);
    if (!(conf = at_tool_conf(t, sites, nsites, st, 1, &err)))
        goto out;
    if (!(status = at_status_collect(conf, st, at_time_now(), &err)))
        goto out;
    if (strcmp(t->format, "json") == 0)
        at_status_render_json(status, &out);
    else if (strcmp(t->format, "html") == 0)
        at_status_render_html(status, &out);
    else if (strcmp(t->format, "prometheus") == 0)
        at_status_render_prometheus(status, &out);
    else
        render_text(status, &out);
    fputs(at_buf_str(&out), stdout);
    if (out.len && out.data[out.len - 1] != '\n')
        fputc('\n', stdout);
    rc = EXIT_SUCCESS;
out:
    if (rc != EXIT_SUCCESS)
        fail(t, t->what, &err);
    at_buf_free(&out);
    json_decref(status);
    at_conf_free(conf);
    free(sites);
    json_decref(doc);
    if (st)
        at_store_close(st);
    at_error_clear(&err);
    return rc;
}

/* --------------------------------------------------------------- revoke */

static int cmd_revoke(at_tool *t)
{
    at_error err = AT_ERROR_INIT;
    at_store *st = NULL;
    json_t *doc = NULL, **sites = NULL;
    size_t nsites = 0, nhit = 0;
    const at_cert_conf *hit[AT_MAX_KEYS * 4];
    at_conf *conf = NULL;
    at_engine *e = NULL;
    at_live *live = NULL;
    int rc = EXIT_FAILURE;

    if (!t->store_dir)
        return usage_error(t, "--store DIR is required");
    if (t->nargs != 1)
        return usage_error(t, "give exactly one NAME (or certificate id) to revoke");
    snprintf(t->what, sizeof(t->what), "revoke for %s", t->args[0]);
    if (!(st = open_store(t, 0, &err)) || at_tool_sites_load(st, &doc, &err) != 0)
        goto out;
    sites = site_list(doc, &nsites);
    apply_overrides(t, sites, nsites);
    if (!(conf = at_tool_conf(t, sites, nsites, st, 1, &err)))
        goto out;
    nhit = select_certs(conf, t->args[0], hit, sizeof(hit) / sizeof(hit[0]));
    if (!nhit) {
        at_error_set(&err, AT_ERR_NOTFOUND, "no certificate in %s is called or covers '%s'", t->store_dir, t->args[0]);
        goto out;
    }
    if (!(e = at_tool_engine(t, conf, st, &live, &err)))
        goto out;
    rc = EXIT_SUCCESS;
    for (size_t i = 0; i < nhit; i++) {
        char serial[128];
        at_cert_rec rec;
        at_cert_info info;
        at_error lerr = AT_ERROR_INIT;

        serial[0] = '\0';
        memset(&rec, 0, sizeof(rec));
        if (at_store_cert_load(st, hit[i]->id, &rec, &lerr) == 0 &&
            at_cert_info_pem(rec.chain_pem, strlen(rec.chain_pem), &info, &lerr) == 0) {
            snprintf(serial, sizeof(serial), "%s", info.serial);
            at_cert_info_free(&info);
        }
        at_cert_rec_free(&rec);
        at_error_clear(&lerr);
        if (at_engine_revoke(e, hit[i]->id, t->reason, &err) != 0) {
            snprintf(t->what, sizeof(t->what), "revoke for %s (%s)", hit[i]->names[0],
                     at_key_spec_name(&hit[i]->key));
            rc = EXIT_FAILURE;
            break;
        }
        printf("revoked %s (%s): serial %s\n", hit[i]->names[0], at_key_spec_name(&hit[i]->key),
               serial[0] ? serial : "?");
    }
    fflush(stdout);
out:
    if (rc != EXIT_SUCCESS)
        fail(t, t->what, &err);
    if (e)
        at_tool_engine_free(e, live);
    at_conf_free(conf);
    free(sites);
    json_decref(doc);
    if (st)
        at_store_close(st);
    at_error_clear(&err);
    return rc;
}

/* -------------------------------------------------------------- account */

static void print_account(const at_tool *t, const char *ca, const char *url, const json_t *acct, EVP_PKEY *key)
{
    char tp[128] = "";
    at_key_spec ks;

    if (key && at_jwk_thumbprint(key, tp, sizeof(tp), NULL) != 0)
        tp[0] = '\0';
    if (t->json_out) {
        json_t *j = json_pack("{s:s, s:s?, s:O?, s:s?}", "ca", ca, "url", url, "account", (json_t *)acct,
                              "thumbprint", tp[0] ? tp : NULL);
        char *s = j ? at_json_pretty(j) : NULL;
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(j);
        return;
    }
    printf("ca:         %s\n", ca);
    printf("account:    %s\n", url ? url : "-");
    printf("status:     %s\n", jstr(acct, "status", "-"));
    {
        const json_t *c = json_object_get(acct, "contact");
        printf("contact:   ");
        for (size_t i = 0; i < json_array_size(c); i++)
            printf(" %s", json_string_value(json_array_get(c, i)));
        printf("%s\n", json_array_size(c) ? "" : " -");
    }
    if (key && at_key_spec_of(key, &ks) == 0)
        printf("key:        %s%s%s\n", at_key_spec_name(&ks), tp[0] ? ", thumbprint " : "", tp);
    if (at_json_str(acct, "orders"))
        printf("orders:     %s\n", at_json_str(acct, "orders"));
}

/* Remember new contacts, so that a later registration uses them too. */
static void remember_contacts(at_tool *t, at_store *st, const char *ca, char **contact, size_t n)
{
    at_error err = AT_ERROR_INIT;
    at_store_lock *lk = NULL;
    json_t *doc = NULL;

    if (lock_tool(st, &lk, &err) == 0 && at_tool_sites_load(st, &doc, &err) == 0) {
        json_t *sites = at_tool_sites(doc);
        for (size_t i = 0; i < json_array_size(sites); i++) {
            json_t *s = json_array_get(sites, i), *a = json_array();
            if (strcmp(jstr(s, "ca", ""), ca) != 0)
                continue;
            for (size_t k = 0; k < n; k++)
                json_array_append_new(a, json_string(contact[k]));
            json_object_set_new(s, "contact", a);
        }
        at_tool_sites_save(st, doc, &err);
    }
    if (err.code != AT_OK)
        at_log(&t->log, AT_LOG_WARN, "remembering the new contacts: %s", err.msg);
    if (lk)
        at_store_unlock(lk);
    json_decref(doc);
    at_error_clear(&err);
}

static int cmd_account(at_tool *t)
{
    static const struct {
        const char *name;
        at_account_action action;
    } actions[] = {
        { "show", AT_ACCOUNT_FETCH },
        { "update-contact", AT_ACCOUNT_UPDATE_CONTACT },
        { "rollover", AT_ACCOUNT_ROLLOVER },
        { "deactivate", AT_ACCOUNT_DEACTIVATE },
    };
    at_error err = AT_ERROR_INIT;
    at_store *st = NULL;
    json_t *doc = NULL, **sites = NULL, *acct = NULL;
    size_t nsites = 0, ca = 0, ncontact = 0;
    char **contact = NULL;
    at_conf *conf = NULL;
    at_engine *e = NULL;
    at_live *live = NULL;
    at_account_rec rec;
    EVP_PKEY *key = NULL;
    const char *want_ca = at_json_str(t->site, "ca");
    int rc = EXIT_FAILURE, found = -1;

    memset(&rec, 0, sizeof(rec));
    if (!t->store_dir)
        return usage_error(t, "--store DIR is required");
    for (size_t i = 0; t->nargs && i < sizeof(actions) / sizeof(actions[0]); i++)
        if (strcmp(t->args[0], actions[i].name) == 0)
            found = (int)i;
    if (found < 0)
        return usage_error(t, "say show, update-contact EMAIL..., rollover or deactivate");
    if (actions[found].action == AT_ACCOUNT_UPDATE_CONTACT ? t->nargs < 2 : t->nargs != 1)
        return usage_error(t, actions[found].action == AT_ACCOUNT_UPDATE_CONTACT
                                  ? "update-contact needs at least one EMAIL"
                                  : "this action takes no further arguments");
    snprintf(t->what, sizeof(t->what), "account %s", actions[found].name);

    if (t->nargs > 1 && !(contact = calloc(t->nargs, sizeof(char *)))) {
        at_error_set(&err, AT_ERR_INTERNAL, "out of memory");
        goto out;
    }
    for (size_t i = 1; i < t->nargs; i++) {
        if (at_parse_contact(t->args[i], &contact[ncontact], &err) != 0)
            goto out;
        ncontact++;
    }
    if (!(st = open_store(t, 0, &err)) || at_tool_sites_load(st, &doc, &err) != 0)
        goto out;
    sites = site_list(doc, &nsites);
    apply_overrides(t, sites, nsites);
    if (!(conf = at_tool_conf(t, sites, nsites, st, 1, &err)))
        goto out;
    if (conf->ncas == 0) {
        at_error_set(&err, AT_ERR_NOTFOUND, "%s holds no certificate, so no CA is known; 'autotls issue' registers an account",
                     t->store_dir);
        goto out;
    }
    if (want_ca) {
        for (ca = 0; ca < conf->ncas && strcmp(conf->cas[ca].url, want_ca) != 0; ca++)
            ;
        if (ca == conf->ncas) {
            at_error_set(&err, AT_ERR_NOTFOUND, "no certificate in %s comes from %s", t->store_dir, want_ca);
            goto out;
        }
    } else {
        for (size_t i = 1; i < conf->ncas; i++)
            if (strcmp(conf->cas[i].url, conf->cas[0].url) != 0) {
                at_error_set(&err, AT_ERR_CONFIG, "%s has accounts at several CAs (%s, %s...); choose one with --ca URL",
                             t->store_dir, conf->cas[0].url, conf->cas[i].url);
                goto out;
            }
    }
    if (at_store_account_load(st, conf->cas[ca].url, &rec, &err) != 0 || !rec.url) {
        if (err.code == AT_ERR_NOTFOUND || (err.code == AT_OK && !rec.url)) {
            at_error_clear(&err);
            at_error_set(&err, AT_ERR_NOTFOUND, "%s holds no registered account at %s yet; 'autotls issue' registers one",
                         t->store_dir, conf->cas[ca].url);
        }
        goto out;
    }
    at_account_rec_free(&rec);
    if (!(e = at_tool_engine(t, conf, st, &live, &err)))
        goto out;
    if (at_engine_account(e, ca, actions[found].action, (const char *const *)contact, ncontact, &acct, &err) != 0)
        goto out;
    /* Show what the store holds now (a rollover changed the key). */
    memset(&rec, 0, sizeof(rec));
    if (at_store_account_load(st, conf->cas[ca].url, &rec, &err) != 0)
        goto out;
    key = at_key_from_pem(rec.key_pem, strlen(rec.key_pem), NULL);
    if (actions[found].action == AT_ACCOUNT_UPDATE_CONTACT)
        remember_contacts(t, st, conf->cas[ca].url, contact, ncontact);
    if (actions[found].action == AT_ACCOUNT_ROLLOVER && !t->json_out)
        printf("the account key was replaced; the CA knows only the new key now\n");
    if (actions[found].action == AT_ACCOUNT_DEACTIVATE && !t->json_out)
        printf("the account is deactivated; the next 'autotls issue' registers a new one\n");
    print_account(t, conf->cas[ca].url, rec.url, acct ? acct : rec.account, key);
    fflush(stdout);
    rc = EXIT_SUCCESS;
out:
    if (rc != EXIT_SUCCESS)
        fail(t, t->what, &err);
    EVP_PKEY_free(key);
    at_account_rec_free(&rec);
    json_decref(acct);
    if (e)
        at_tool_engine_free(e, live);
    at_conf_free(conf);
    for (size_t i = 0; i < ncontact; i++)
        free(contact[i]);
    free(contact);
    free(sites);
    json_decref(doc);
    if (st)
        at_store_close(st);
    at_error_clear(&err);
    return rc;
}

/* ----------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    at_tool t;
    at_error err = AT_ERROR_INIT;
    int rc;

    memset(&t, 0, sizeof(t));
    t.prog = "autotls";
    if (argc < 2) {
        at_tool_usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        if (argc > 2 && at_tool_command(argv[2]))
            at_tool_command_usage(stdout, at_tool_command(argv[2]));
        else
            at_tool_usage(stdout);
        return EXIT_SUCCESS;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "version") == 0) {
        printf("autotls %s\n", AT_VERSION);
        return EXIT_SUCCESS;
    }
    t.cmd = at_tool_command(argv[1]);
    if (!t.cmd) {
        fprintf(stderr, "autotls: '%s' is not a command; run 'autotls --help'\n", argv[1]);
        return EXIT_USAGE;
    }
    t.cmd_name = argv[1];
    rc = at_tool_parse(&t, argc - 2, argv + 2, &err);
    if (rc != 0) {
        if (rc < 0)
            usage_error(&t, err.msg);
        at_error_clear(&err);
        at_tool_free(&t);
        return rc < 0 ? EXIT_USAGE : EXIT_SUCCESS;
    }
    if (t.verbose) {
        t.log.fn = log_stderr;
        t.log.max = t.verbose > 1 ? AT_LOG_DEBUG : AT_LOG_INFO;
    }

    at_tool_signals_start();
    switch (t.cmd) {
    case AT_TOOL_ISSUE:   rc = cmd_issue(&t); break;
    case AT_TOOL_RENEW:   rc = cmd_renew(&t); break;
    case AT_TOOL_STATUS:  rc = cmd_status(&t); break;
    case AT_TOOL_REVOKE:  rc = cmd_revoke(&t); break;
    default:              rc = cmd_account(&t); break;
    }
    at_tool_signals_stop();
    at_tool_free(&t);
    return rc;
}
