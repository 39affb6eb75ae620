/*
 * at_tool_opts.c: the command line. One table lists every option, the
 * commands that take it and how its value is checked; the help texts are
 * generated from the same table so they never disagree with the parser.
 * Values are checked by the core's own parsers (the ones behind the Apache
 * and nginx directives), so `--key ec:P-999` fails exactly like
 * `AutoTLSKeys ec:P-999`, with the option name in front.
 */
#include "at_tool.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "at_acme.h"
#include "at_key.h"

#define ALL_CMDS   (AT_TOOL_ISSUE | AT_TOOL_RENEW | AT_TOOL_STATUS | AT_TOOL_REVOKE | AT_TOOL_ACCOUNT)
#define CA_CMDS    (AT_TOOL_ISSUE | AT_TOOL_RENEW | AT_TOOL_REVOKE | AT_TOOL_ACCOUNT)
#define ORDER_CMDS (AT_TOOL_ISSUE | AT_TOOL_RENEW)

typedef struct tool_opt tool_opt;

/* Check the values of an option and record them in t (site options go to
 * t->site under o->key). */
typedef int opt_apply_fn(at_tool *t, const tool_opt *o, char **v, at_error *err);

struct tool_opt {
    const char   *name;
    int           nargs;
    const char   *key;        /* site parameter, or NULL */
    unsigned      cmds;
    opt_apply_fn *apply;
    const char   *meta;
    const char   *help;
};

static const struct {
    const char *name;
    unsigned    bit;
    const char *synopsis;
    const char *about;
} commands[] = {
    { "issue", AT_TOOL_ISSUE,
      "issue --ca URL --store DIR --name NAME [--name NAME...] [options]",
      "Obtain a certificate for the names (one per --key type), answering the CA's\n"
      "challenges on the given ports, and store it in DIR. The parameters are\n"
      "remembered in DIR/tool.json for 'renew'. A valid stored certificate for the\n"
      "same names is kept (use 'renew' to replace it); an interrupted order resumes." },
    { "renew", AT_TOOL_RENEW,
      "renew --store DIR [NAME...] [options]",
      "Renew the certificates covering the names (or all of them) now, with the\n"
      "parameters remembered by 'issue'; options given again override them." },
    { "status", AT_TOOL_STATUS,
      "status --store DIR [--json | --format text|json|html|prometheus]",
      "Show every certificate of the store: names, state, validity, next renewal,\n"
      "last error." },
    { "revoke", AT_TOOL_REVOKE,
      "revoke --store DIR NAME [--reason REASON]",
      "Revoke the stored certificate(s) for NAME (a name or a certificate id).\n"
      "The next 'issue' or 'renew' obtains a replacement." },
    { "account", AT_TOOL_ACCOUNT,
      "account --store DIR [--ca URL] show|update-contact EMAIL...|rollover|deactivate",
      "Show or change the ACME account the store holds at a CA: show it, replace\n"
      "its contacts, replace its key (key rollover), or deactivate it for good." },
};

/* -------------------------------------------------------------- helpers */

static int add_string(json_t *site, const char *key, const char *val)
{
    return json_object_set_new(site, key, json_string(val));
}

static int add_list(json_t *site, const char *key, const char *val)
{
    json_t *a = json_object_get(site, key);
    if (!json_is_array(a)) {
        a = json_array();
        json_object_set_new(site, key, a);
    }
    /* The same value twice is harmless but would show up twice in tool.json. */
    for (size_t i = 0; i < json_array_size(a); i++)
        if (strcmp(json_string_value(json_array_get(a, i)), val) == 0)
            return 0;
    return json_array_append_new(a, json_string(val));
}

/* Files are remembered with absolute paths: renew may run from elsewhere. */
static char *absolute(const char *path)
{
    char buf[PATH_MAX];
    if (path[0] != '/' && realpath(path, buf))
        return strdup(buf);
    return strdup(path);
}

static int oom(at_error *err)
{
    return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
}

/* ------------------------------------------------------- site options */

static int apply_ca(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    char *url = NULL;
    if (at_parse_ca(v[0], &url, err) != 0)
        return -1;
    add_string(t->site, o->key, url);
    free(url);
    return 0;
}

static int apply_name(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    char norm[256];
    if (at_parse_name(v[0], norm, sizeof(norm), err) != 0)
        return -1;
    return add_list(t->site, o->key, norm) == 0 ? 0 : oom(err);
}

static int apply_key(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    at_key_spec spec;
    if (at_parse_key_spec(v[0], &spec, err) != 0)
        return -1;
    return add_list(t->site, o->key, at_key_spec_name(&spec)) == 0 ? 0 : oom(err);
}

static int apply_challenge(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    at_challenge_type ct;
    if (at_parse_challenge(v[0], &ct, err) != 0)
        return -1;
    return add_list(t->site, o->key, at_challenge_name(ct)) == 0 ? 0 : oom(err);
}

static int apply_port(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    long port;
    if (at_parse_int(v[0], 1, 65535, &port, err) != 0)
        return -1;
    return json_object_set_new(t->site, o->key, json_integer(port)) == 0 ? 0 : oom(err);
}

static int apply_bind(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    unsigned char a[16];
    char buf[64];
    const char *s = v[0];
    size_t n = strlen(s);
    if (n >= 2 && n < sizeof(buf) && s[0] == '[' && s[n - 1] == ']') {
        memcpy(buf, s + 1, n - 2);
        buf[n - 2] = '\0';
        s = buf;
    }
    if (inet_pton(AF_INET, s, a) != 1 && inet_pton(AF_INET6, s, a) != 1)
        return at_error_set(err, AT_ERR_CONFIG,
                            "'%s' is not a numeric IPv4 or IPv6 address (for example 0.0.0.0 or ::)", v[0]);
    return add_list(t->site, o->key, s) == 0 ? 0 : oom(err);
}

static int apply_cert_file(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    char *p = absolute(v[0]);
    int rv = -1;
    if (!p)
        return oom(err);
    if (at_parse_cert_file(p, err) == 0)
        rv = add_string(t->site, o->key, p) == 0 ? 0 : oom(err);
    free(p);
    return rv;
}

static int apply_client_cert(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    char *cert = absolute(v[0]), *key = absolute(v[1]);
    int rv = -1;
    (void)o;
    if (!cert || !key)
        rv = oom(err);
    else if (at_parse_cert_file(cert, err) == 0 && at_parse_key_file(key, err) == 0) {
        add_string(t->site, "ca_client_cert", cert);
        add_string(t->site, "ca_client_key", key);
        rv = 0;
    }
    free(cert);
    free(key);
    return rv;
}

static int apply_proxy(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    if (strncmp(v[0], "http://", 7) != 0 && strncmp(v[0], "https://", 8) != 0 &&
        strncmp(v[0], "socks5://", 9) != 0 && strncmp(v[0], "socks5h://", 10) != 0)
        return at_error_set(err, AT_ERR_CONFIG,
                            "'%s' is not a proxy URL; use http://HOST:PORT (or https://, socks5://)", v[0]);
    return add_string(t->site, o->key, v[0]);
}

static int apply_contact(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    char *uri = NULL;
    int rv;
    if (at_parse_contact(v[0], &uri, err) != 0)
        return -1;
    rv = add_list(t->site, o->key, uri) == 0 ? 0 : oom(err);
    free(uri);
    return rv;
}

static int apply_flag(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    (void)v;
    (void)err;
    return json_object_set_new(t->site, o->key, json_true());
}

static int apply_eab(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    const char *colon = strchr(v[0], ':');
    char *kid;
    int rv = -1;
    (void)o;
    if (!colon || colon == v[0] || !colon[1])
        return at_error_set(err, AT_ERR_CONFIG,
                            "expected KID:KEY (the key id and the base64url HMAC key the CA gave you)");
    kid = strndup(v[0], (size_t)(colon - v[0]));
    if (!kid)
        return oom(err);
    if (at_parse_eab(kid, colon + 1, err) == 0) {
        add_string(t->site, "eab_kid", kid);
        add_string(t->site, "eab_key", colon + 1);
        rv = 0;
    }
    free(kid);
    return rv;
}

static int apply_command(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    char *p = absolute(v[0]);
    int rv = -1;
    if (!p)
        return oom(err);
    if (at_parse_command(p, err) == 0)
        rv = add_string(t->site, o->key, p);
    free(p);
    return rv;
}

static int apply_profile(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    if (at_parse_profile(v[0], err) != 0)
        return -1;
    return add_string(t->site, o->key, v[0]);
}

static int apply_chain(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    size_t n = strlen(v[0]);
    if (n == 0 || n > 255)
        return at_error_set(err, AT_ERR_CONFIG, "give the common name of the wanted chain's root (1 to 255 characters)");
    return add_string(t->site, o->key, v[0]);
}

static int apply_window(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    at_renew_window w;
    if (at_parse_renew_window(v[0], &w, err) != 0)
        return -1;
    return add_string(t->site, o->key, v[0]);
}

/* ------------------------------------------------------ local options */

static int apply_store(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    (void)o;
    if (!v[0][0])
        return at_error_set(err, AT_ERR_CONFIG, "the store directory must not be empty");
    free(t->store_dir);
    t->store_dir = absolute(v[0]);
    return t->store_dir ? 0 : oom(err);
}

static int apply_verbose(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    (void)o;
    (void)v;
    (void)err;
    t->verbose++;
    return 0;
}

static int apply_timeout(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    long s;
    (void)o;
    if (at_parse_duration(v[0], &s, err) != 0)
        return -1;
    t->timeout = s;
    return 0;
}

static int apply_json(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    (void)o;
    (void)v;
    (void)err;
    t->format = "json";
    t->json_out = 1;
    return 0;
}

static int apply_format(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    static const char *const formats[] = { "text", "json", "html", "prometheus" };
    (void)o;
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
        if (strcmp(v[0], formats[i]) == 0) {
            t->format = formats[i];
            return 0;
        }
    return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a format; use text, json, html or prometheus", v[0]);
}

static int apply_reason(at_tool *t, const tool_opt *o, char **v, at_error *err)
{
    int r = at_revoke_reason_parse(v[0]);
    long n;
    (void)o;
    if (r < 0 && at_parse_int(v[0], 0, 10, &n, NULL) == 0 && n != 7)
        r = (int)n;
    if (r < 0)
        return at_error_set(err, AT_ERR_CONFIG,
                            "'%s' is not a revocation reason; use unspecified, keyCompromise, affiliationChanged, "
                            "superseded, cessationOfOperation or a number (RFC 5280)", v[0]);
    t->reason = r;
    return 0;
}

static const tool_opt options[] = {
    { "store", 1, NULL, ALL_CMDS, apply_store, "DIR",
      "the store directory (created 0700 by issue)" },
    { "ca", 1, "ca", CA_CMDS, apply_ca, "URL",
      "the CA's directory URL (or letsencrypt, letsencrypt-staging)" },
    { "name", 1, "names", AT_TOOL_ISSUE, apply_name, "NAME",
      "a name for the certificate: DNS name, *.wildcard (dns-01) or IP address; repeat for more" },
    { "key", 1, "keys", AT_TOOL_ISSUE, apply_key, "TYPE",
      "key type: ec:P-256 (default), ec:P-384, rsa:2048, rsa:3072, rsa:4096; repeat for one certificate per type" },
    { "challenge", 1, "challenges", ORDER_CMDS, apply_challenge, "TYPE",
      "http-01, tls-alpn-01 or dns-01; repeat to give a preference order (default: from the ports given)" },
    { "http-port", 1, "http_port", ORDER_CMDS, apply_port, "PORT",
      "answer http-01 on this port (default 80)" },
    { "tls-port", 1, "tls_port", ORDER_CMDS, apply_port, "PORT",
      "answer tls-alpn-01 on this port (default 443)" },
    { "bind", 1, "bind", ORDER_CMDS, apply_bind, "ADDR",
      "listen on this address (default 127.0.0.1 and ::1; use 0.0.0.0 and :: to be reachable from outside); repeat" },
    { "contact", 1, "contact", ORDER_CMDS, apply_contact, "EMAIL",
      "contact address of the account; repeat for more" },
    { "accept-terms", 0, "accept_terms", ORDER_CMDS | AT_TOOL_ACCOUNT, apply_flag, NULL,
      "agree to the CA's terms of service" },
    { "eab", 1, "eab", ORDER_CMDS, apply_eab, "KID:KEY",
      "external account binding: key id and base64url HMAC key from the CA" },
    { "dns01-command", 1, "dns01_command", ORDER_CMDS, apply_command, "CMD",
      "dns-01 hook, run as 'CMD setup NAME VALUE' and 'CMD teardown NAME VALUE'" },
    { "profile", 1, "profile", ORDER_CMDS, apply_profile, "NAME",
      "certificate profile to ask for (when the CA offers profiles)" },
    { "preferred-chain", 1, "preferred_chain", ORDER_CMDS, apply_chain, "ISSUER-CN",
      "prefer the alternate chain whose root has this common name" },
    { "renew-window", 1, "renew_window", ORDER_CMDS, apply_window, "WHEN",
      "renew when this much lifetime remains: 33% or a duration such as 30d" },
    { "ca-trust", 1, "ca_trust", CA_CMDS, apply_cert_file, "FILE",
      "PEM trust anchors for the CA's own TLS certificate (default: the system's)" },
    { "ca-client-cert", 2, "ca_client_cert", CA_CMDS, apply_client_cert, "CERT KEY",
      "client certificate and key to present to the CA" },
    { "proxy", 1, "proxy", CA_CMDS, apply_proxy, "URL",
      "reach the CA through this proxy" },
    { "timeout", 1, NULL, CA_CMDS, apply_timeout, "SECONDS",
      "give up after this long (default 600); an unfinished order resumes on the next run" },
    { "reason", 1, NULL, AT_TOOL_REVOKE, apply_reason, "REASON",
      "unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation" },
    { "json", 0, NULL, AT_TOOL_STATUS | AT_TOOL_ACCOUNT, apply_json, NULL,
      "print JSON" },
    { "format", 1, NULL, AT_TOOL_STATUS, apply_format, "FORMAT",
      "text (default), json, html or prometheus" },
    { "verbose", 0, NULL, ALL_CMDS, apply_verbose, NULL,
      "log progress to stderr (twice: debug)" },
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

/* ---------------------------------------------------------------- parse */

unsigned at_tool_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(name, commands[i].name) == 0)
            return commands[i].bit;
    return 0;
}

static const tool_opt *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

static int parse_option(at_tool *t, int argc, char **argv, int *i, at_error *err)
{
    const char *a = argv[*i], *name, *eq;
    char *vals[2] = { NULL, NULL };
    const tool_opt *o;
    size_t len;
    int k = 0;

    if (strcmp(a, "-v") == 0 || strcmp(a, "-vv") == 0) {
        t->verbose += (int)strlen(a) - 1;
        return 0;
    }
    if (a[1] != '-')
        return at_error_set(err, AT_ERR_CONFIG, "unknown option '%s'", a);
    name = a + 2;
    eq = strchr(name, '=');
    len = eq ? (size_t)(eq - name) : strlen(name);
    o = find_option(name, len);
    if (!o)
        return at_error_set(err, AT_ERR_CONFIG, "unknown option '--%.*s'", (int)len, name);
    if (!(o->cmds & t->cmd))
        return at_error_set(err, AT_ERR_CONFIG, "option --%s does not apply to '%s'", o->name, t->cmd_name);
    if (eq) {
        if (o->nargs == 0)
            return at_error_set(err, AT_ERR_CONFIG, "option --%s takes no value", o->name);
        vals[k++] = (char *)eq + 1;
    }
    while (k < o->nargs) {
        if (*i + 1 >= argc)
            return at_error_set(err, AT_ERR_CONFIG, "option --%s needs %s", o->name, o->meta);
        vals[k++] = argv[++*i];
    }
    if (o->apply(t, o, vals, err) != 0)
        return at_error_prefix(err, "--%s", o->name);
    return 0;
}

int at_tool_parse(at_tool *t, int argc, char **argv, at_error *err)
{
    int endopts = 0;

    t->site = json_object();
    t->args = calloc((size_t)argc + 1, sizeof(char *));
    t->reason = -1;
    t->format = "text";
    if (!t->site || !t->args)
        return oom(err);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!endopts && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
            at_tool_command_usage(stdout, t->cmd);
            return 1;
        }
        if (!endopts && strcmp(a, "--") == 0) {
            endopts = 1;
            continue;
        }
        if (!endopts && a[0] == '-' && a[1]) {
            if (parse_option(t, argc, argv, &i, err) != 0)
                return -1;
            continue;
        }
        t->args[t->nargs++] = argv[i];
    }
    return 0;
}

void at_tool_free(at_tool *t)
{
    json_decref(t->site);
    free(t->store_dir);
    free(t->args);
    t->site = NULL;
    t->store_dir = NULL;
    t->args = NULL;
}

/* ----------------------------------------------------------------- help */

void at_tool_usage(FILE *f)
{
    fprintf(f, "usage: autotls COMMAND [options]\n\n"
               "Obtain, renew and inspect ACME certificates without a web server.\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  autotls %s\n", commands[i].synopsis);
    fprintf(f, "\n'autotls COMMAND --help' describes a command; 'autotls --version' prints the version.\n"
               "Exit status: 0 on success, 1 when the operation failed, 2 for a usage error.\n");
}

void at_tool_command_usage(FILE *f, unsigned cmd)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (commands[i].bit != cmd)
            continue;
        fprintf(f, "usage: autotls %s\n\n%s\n\noptions:\n", commands[i].synopsis, commands[i].about);
    }
    for (size_t i = 0; i < NOPTIONS; i++) {
        const tool_opt *o = &options[i];
        char lhs[64];
        if (!(o->cmds & cmd))
            continue;
        snprintf(lhs, sizeof(lhs), "--%s%s%s", o->name, o->meta ? " " : "", o->meta ? o->meta : "");
        fprintf(f, "  %-28s %s\n", lhs, o->help);
    }
    fprintf(f, "  %-28s %s\n", "--help", "this text");
}
