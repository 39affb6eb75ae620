/*
 * at_tool_sites.c: what `issue` remembers for `renew` (STORE/tool.json, one
 * object per certificate set, exactly the options that were given), and the
 * core configuration built from those objects with at_conf_add_site — the
 * same path the server modules take, so the tool validates names, keys and
 * challenges the way they do.
 *
 * tool.json is 0600: it may hold an EAB HMAC key.
 */
#include "at_tool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "at_buf.h"
#include "at_json.h"
#include "at_key.h"

#define TOOL_FILE      "tool.json"
#define TOOL_FILE_MAX  (4L * 1024 * 1024)
#define TOOL_VERSION   1

/* ------------------------------------------------------------ tool.json */

static int tool_path(at_store *st, char *out, size_t outsz, at_error *err)
{
    const char *dir = at_store_path(st);
    if (!dir)
        return at_error_set(err, AT_ERR_CONFIG, "the tool needs a directory store, not %s", at_store_describe(st));
    if ((size_t)snprintf(out, outsz, "%s/%s", dir, TOOL_FILE) >= outsz)
        return at_error_set(err, AT_ERR_CONFIG, "the store path %s is too long", dir);
    return 0;
}

static json_t *empty_doc(void)
{
    return json_pack("{s:i, s:[]}", "version", TOOL_VERSION, "sites");
}

json_t *at_tool_sites(json_t *doc)
{
    return json_object_get(doc, "sites");
}

int at_tool_sites_load(at_store *st, json_t **doc, at_error *err)
{
    char path[4096];
    at_buf b = AT_BUF_INIT;
    char chunk[8192];
    json_t *d, *sites;
    int fd;

    *doc = NULL;
    if (tool_path(st, path, sizeof(path), err) != 0)
        return -1;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            *doc = empty_doc();
            return *doc ? 0 : at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        }
        return at_error_set(err, AT_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    }
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            at_buf_free_secret(&b);
            return at_error_set(err, AT_ERR_IO, "cannot read %s: %s", path, strerror(e));
        }
        if (n == 0)
            break;
        if ((long)(b.len + (size_t)n) > TOOL_FILE_MAX || at_buf_append(&b, chunk, (size_t)n) != 0) {
            close(fd);
            at_buf_free_secret(&b);
            return at_error_set(err, AT_ERR_CORRUPT, "%s is larger than %ld bytes; it is not a file autotls wrote",
                                path, TOOL_FILE_MAX);
        }
    }
    close(fd);
    d = at_json_parse_object(at_buf_str(&b), b.len, path, err);
    at_buf_free_secret(&b);
    if (!d) {
        err->code = AT_ERR_CORRUPT;
        return at_error_prefix(err, "the remembered parameters are damaged (repair or remove the file; "
                                    "the certificates stay in the store)");
    }
    sites = json_object_get(d, "sites");
    if (!json_is_array(sites)) {
        json_decref(d);
        return at_error_set(err, AT_ERR_CORRUPT, "%s has no \"sites\" list; repair or remove it", path);
    }
    for (size_t i = 0; i < json_array_size(sites); i++) {
        json_t *s = json_array_get(sites, i);
        if (!json_is_object(s) || !json_is_array(json_object_get(s, "names")) ||
            !json_array_size(json_object_get(s, "names")) || !json_is_string(json_object_get(s, "ca"))) {
            json_decref(d);
            return at_error_set(err, AT_ERR_CORRUPT, "%s: entry %zu of \"sites\" lacks names or ca; repair or remove it",
                                path, i + 1);
        }
    }
    *doc = d;
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int at_tool_sites_save(at_store *st, const json_t *doc, at_error *err)
{
    char path[4096], tmp[4200];
    char *text;
    int fd, e, dfd;

    if (tool_path(st, path, sizeof(path), err) != 0)
        return -1;
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    text = at_json_pretty(doc);
    if (!text)
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        e = errno;
        free(text);
        return at_error_set(err, AT_ERR_IO, "cannot write %s: %s", tmp, strerror(e));
    }
    if (write_all(fd, text, strlen(text)) != 0 || write_all(fd, "\n", 1) != 0 || fsync(fd) != 0) {
        e = errno;
        close(fd);
        unlink(tmp);
        free(text);
        return at_error_set(err, AT_ERR_IO, "cannot write %s: %s", tmp, strerror(e));
    }
    close(fd);
    free(text);
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return at_error_set(err, AT_ERR_IO, "cannot replace %s: %s", path, strerror(e));
    }
    /* The rename itself must survive a crash. */
    dfd = open(at_store_path(st), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* ---------------------------------------------------------------- sites */

int at_tool_site_has_name(const json_t *site, const char *name)
{
    const json_t *names = json_object_get(site, "names");
    for (size_t i = 0; i < json_array_size(names); i++) {
        const char *n = json_string_value(json_array_get(names, i));
        if (n && strcmp(n, name) == 0)
            return 1;
    }
    return 0;
}

size_t at_tool_site_challenges(const json_t *site, at_challenge_type *out, size_t max)
{
    const json_t *list = json_object_get(site, "challenges");
    size_t n = 0;

    for (size_t i = 0; i < json_array_size(list) && n < max; i++) {
        at_challenge_type ct = at_challenge_parse(json_string_value(json_array_get(list, i)));
        if (ct != AT_CHAL_NONE)
            out[n++] = ct;
    }
    if (n)
        return n;
    /* Not given: what the other options imply. */
    if (json_object_get(site, "http_port") && n < max)
        out[n++] = AT_CHAL_HTTP01;
    if (json_object_get(site, "tls_port") && n < max)
        out[n++] = AT_CHAL_TLSALPN01;
    if (json_object_get(site, "dns01_command") && n < max)
        out[n++] = AT_CHAL_DNS01;
    if (n == 0 && max >= 2) {
        out[n++] = AT_CHAL_TLSALPN01;
        out[n++] = AT_CHAL_HTTP01;
    }
    return n;
}

/* Collect the strings of a JSON array into out (borrowed). */
static size_t strings(const json_t *site, const char *key, const char **out, size_t max)
{
    const json_t *a = json_object_get(site, key);
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(a) && n < max; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (s)
            out[n++] = s;
    }
    return n;
}

static int add_site(at_conf *conf, const json_t *site, at_error *err)
{
    const char *names[AT_MAX_NAMES_PER_CERT], *keys[AT_MAX_KEYS], *contact[16];
    at_key_spec specs[AT_MAX_KEYS];
    at_challenge_type chal[AT_MAX_CHALLENGES];
    at_site_conf sc;
    const char *win;
    size_t nkeys;

    memset(&sc, 0, sizeof(sc));
    sc.nnames = strings(site, "names", names, AT_MAX_NAMES_PER_CERT);
    if (json_array_size(json_object_get(site, "names")) > AT_MAX_NAMES_PER_CERT)
        return at_error_set(err, AT_ERR_CONFIG, "more than %d names in one certificate", AT_MAX_NAMES_PER_CERT);
    if (sc.nnames == 0)
        return at_error_set(err, AT_ERR_CONFIG, "a certificate needs at least one name (--name)");
    sc.names = names;
    sc.site = names[0];
    nkeys = strings(site, "keys", keys, AT_MAX_KEYS);
    if (json_array_size(json_object_get(site, "keys")) > AT_MAX_KEYS)
        return at_error_set(err, AT_ERR_CONFIG, "at most %d key types per certificate set", AT_MAX_KEYS);
    for (size_t i = 0; i < nkeys; i++)
        if (at_parse_key_spec(keys[i], &specs[i], err) != 0)
            return at_error_prefix(err, "--key");
    sc.keys = specs;
    sc.nkeys = nkeys;
    sc.nchallenges = at_tool_site_challenges(site, chal, AT_MAX_CHALLENGES);
    sc.challenges = chal;

    sc.ca.url = (char *)at_json_str(site, "ca");
    sc.ca.trust_file = (char *)at_json_str(site, "ca_trust");
    sc.ca.client_cert = (char *)at_json_str(site, "ca_client_cert");
    sc.ca.client_key = (char *)at_json_str(site, "ca_client_key");
    sc.ca.proxy = (char *)at_json_str(site, "proxy");
    sc.ca.ncontact = strings(site, "contact", contact, 16);
    sc.ca.contact = (char **)contact;
    sc.ca.accept_terms = at_json_bool(site, "accept_terms");
    sc.ca.eab_kid = (char *)at_json_str(site, "eab_kid");
    sc.ca.eab_key = (char *)at_json_str(site, "eab_key");
    sc.profile = at_json_str(site, "profile");
    sc.preferred_chain = at_json_str(site, "preferred_chain");
    sc.dns01_command = at_json_str(site, "dns01_command");
    win = at_json_str(site, "renew_window");
    if (win && at_parse_renew_window(win, &sc.window, err) != 0)
        return at_error_prefix(err, "--renew-window");
    if (!sc.ca.url)
        return at_error_set(err, AT_ERR_CONFIG, "no CA for %s: give --ca URL", names[0]);
    return at_conf_add_site(conf, &sc, err);
}

/* A site object for a stored certificate that the tool did not issue (a
 * server's store): enough to show its status. */
static json_t *site_from_meta(const json_t *meta)
{
    const json_t *names = json_object_get(meta, "names");
    const char *key = at_json_str(meta, "key"), *ca = at_json_str(meta, "ca");
    json_t *site;

    if (!json_is_array(names) || !json_array_size(names) || !ca)
        return NULL;
    site = json_pack("{s:O, s:s}", "names", names, "ca", ca);
    if (site && key)
        json_object_set_new(site, "keys", json_pack("[s]", key));
    for (size_t i = 0; site && i < json_array_size(names); i++) {
        const char *n = json_string_value(json_array_get(names, i));
        if (n && n[0] == '*') {
            /* Never run: the conf only wants to know wildcards use dns-01. */
            json_object_set_new(site, "challenges", json_pack("[s]", "dns-01"));
            json_object_set_new(site, "dns01_command", json_string("/bin/sh"));
            break;
        }
    }
    return site;
}

static void add_stored(const at_tool *t, at_conf *conf, at_store *st)
{
    char **ids = NULL;
    size_t n = 0;
    at_error err = AT_ERROR_INIT;

    if (at_store_cert_list(st, &ids, &n, &err) != 0) {
        at_log(&t->log, AT_LOG_WARN, "listing the certificates of %s: %s", at_store_describe(st), err.msg);
        at_error_clear(&err);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        at_cert_rec rec;
        json_t *site;
        if (at_conf_cert(conf, ids[i]))
            continue;
        memset(&rec, 0, sizeof(rec));
        if (at_store_cert_load(st, ids[i], &rec, &err) != 0) {
            at_log(&t->log, AT_LOG_WARN, "certificate %s: %s", ids[i], err.msg);
            at_error_clear(&err);
            continue;
        }
        site = site_from_meta(rec.meta);
        if (site) {
            /* How to reach the CA, as given for this run. */
            static const char *const keys[] = { "ca_trust", "ca_client_cert", "ca_client_key", "proxy",
                                                "accept_terms", "contact", "eab_kid", "eab_key" };
            for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
                if (json_object_get(t->site, keys[k]))
                    json_object_set(site, keys[k], json_object_get(t->site, keys[k]));
        }
        if (site && add_site(conf, site, &err) != 0)
            at_log(&t->log, AT_LOG_INFO, "certificate %s is not shown: %s", ids[i], err.msg);
        at_error_clear(&err);
        json_decref(site);
        at_cert_rec_free(&rec);
    }
    at_store_free_list(ids, n);
}

at_conf *at_tool_conf(const at_tool *t, json_t *const *sites, size_t nsites, at_store *st,
                      int with_stored, at_error *err)
{
    at_conf *conf = at_conf_new();
    long timeout = t->timeout > 0 ? t->timeout : AT_TOOL_DEFAULT_TIMEOUT;

    if (!conf) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (st && at_store_path(st))
        conf->store_dir = strdup(at_store_path(st));
    else if (t->store_dir)
        conf->store_dir = strdup(t->store_dir);
    conf->poll_timeout = timeout;
    conf->request_timeout = timeout < 30 ? timeout : 30;
    conf->hints.accept_terms = "--accept-terms";
    conf->hints.eab = "--eab KID:KEY";
    conf->hints.contact = "--contact EMAIL";
    conf->hints.profile = "--profile NAME";
    conf->hints.dns01_command = "--dns01-command CMD";
    conf->hints.ca_trust = "--ca-trust FILE";
    for (size_t i = 0; i < nsites; i++) {
        if (add_site(conf, sites[i], err) != 0) {
            at_conf_free(conf);
            return NULL;
        }
    }
    if (with_stored && st)
        add_stored(t, conf, st);
    return conf;
}
