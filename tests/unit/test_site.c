/*
 * Site tests: what a vhost / server block inherits (value by value, pairs
 * and triples together), the at_site_conf it becomes, the global settings
 * in at_conf, and the name questions of requests and handshakes.
 */
#include "at_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "at_live.h"
#include "at_site.h"

static const char *const contacts[] = { "mailto:a@example.com" };
static const at_key_spec keys[] = { { AT_KEY_RSA, 2048 } };
static const at_challenge_type chals[] = { AT_CHAL_HTTP01 };

static void t_init_is_unset(void)
{
    at_site_settings s;
    at_global_settings g;

    memset(&s, 0x5a, sizeof(s));
    at_site_settings_init(&s);
    AT_CHECK(s.ca_url == NULL && s.keys == NULL && s.contacts == NULL && s.eab_kid == NULL);
    AT_CHECK_INT(s.accept_terms, -1);
    AT_CHECK_INT(s.window.percent, 0);
    AT_CHECK_INT(s.window.seconds, 0);
    memset(&g, 0x5a, sizeof(g));
    at_global_settings_init(&g);
    AT_CHECK(g.store_dir == NULL && g.notify_command == NULL);
    AT_CHECK_INT(g.concurrency, -1);
    AT_CHECK_INT(g.retry_min, -1);
    AT_CHECK_INT(g.shm_size, 0);
}

static void t_inherit(void)
{
    at_site_settings parent, child;

    at_site_settings_init(&parent);
    parent.ca_url = "https://ca.test/dir";
    parent.ca_trust = "/roots.pem";
    parent.client_cert = "/p.crt";
    parent.client_key = "/p.key";
    parent.contacts = contacts;
    parent.ncontacts = 1;
    parent.accept_terms = 1;
    parent.keys = keys;
    parent.nkeys = 1;
    parent.challenges = chals;
    parent.nchallenges = 1;
    parent.window.percent = 25;
    parent.profile = "classic";
    parent.eab_kid = "kid";
    parent.eab_key = "key";
    parent.eab_alg = "HS384";
    parent.preferred_chain = "Root X";
    parent.dns01_command = "/hook";

    /* Nothing said: everything from the parent. */
    at_site_settings_init(&child);
    at_site_settings_inherit(&child, &parent);
    AT_CHECK(memcmp(&child, &parent, sizeof(child)) == 0);

    /* What the child says stays; pairs and triples move together. */
    at_site_settings_init(&child);
    child.ca_url = "https://other.test/dir";
    child.client_cert = "/c.crt";          /* with no key of its own */
    child.accept_terms = 0;                /* "off" is said, not unset */
    child.window.seconds = 86400;
    child.eab_kid = "kid2";
    child.eab_key = "key2";                /* default algorithm */
    at_site_settings_inherit(&child, &parent);
    AT_CHECK_STR(child.ca_url, "https://other.test/dir");
    AT_CHECK_STR(child.ca_trust, "/roots.pem");
    AT_CHECK_STR(child.client_cert, "/c.crt");
    AT_CHECK(child.client_key == NULL);
    AT_CHECK_INT(child.accept_terms, 0);
    AT_CHECK_INT(child.window.percent, 0);
    AT_CHECK_INT(child.window.seconds, 86400);
    AT_CHECK_STR(child.eab_kid, "kid2");
    AT_CHECK(child.eab_alg == NULL);
    AT_CHECK(child.keys == keys && child.nkeys == 1);
    AT_CHECK(child.contacts == contacts && child.ncontacts == 1);
}

static void t_site_conf(void)
{
    static const char *const names[] = { "a.test", "www.a.test" };
    at_site_settings s;
    at_site_conf sc;
    at_conf *conf = at_conf_new();
    at_error err = AT_ERROR_INIT;

    at_site_settings_init(&s);
    at_site_settings_conf(&s, "a.test:443", names, 2, &sc);
    AT_CHECK_STR(sc.site, "a.test:443");
    AT_CHECK(sc.names == names && sc.nnames == 2);
    AT_CHECK_STR(sc.ca.url, AT_CA_LETSENCRYPT);        /* no CA said */
    AT_CHECK_INT(sc.ca.accept_terms, 0);               /* unset is not accepted */
    AT_CHECK_INT(sc.nkeys, 0);
    AT_CHECK_INT(sc.ca.ncontact, 0);

    s.ca_url = "https://ca.test/dir";
    s.accept_terms = 1;
    s.keys = keys;
    s.nkeys = 1;
    s.contacts = contacts;
    s.ncontacts = 1;
    s.challenges = chals;
    s.nchallenges = 1;
    s.profile = "classic";
    s.window.percent = 40;
    at_site_settings_conf(&s, "a.test:443", names, 2, &sc);
    AT_CHECK_STR(sc.ca.url, "https://ca.test/dir");
    AT_CHECK_INT(sc.ca.accept_terms, 1);
    AT_CHECK_OK(at_conf_add_site(conf, &sc, &err), &err);
    AT_CHECK_INT(conf->ncerts, 1);
    AT_CHECK_INT(conf->certs[0].key.kind, AT_KEY_RSA);
    AT_CHECK_INT(conf->certs[0].nchallenges, 1);
    AT_CHECK_STR(conf->certs[0].profile, "classic");
    AT_CHECK_INT(conf->certs[0].window.percent, 40);
    AT_CHECK_STR(conf->cas[0].contact[0], "mailto:a@example.com");
    at_conf_free(conf);
}

static void t_globals(void)
{
    at_conf *conf = at_conf_new();
    at_global_settings g;
    at_error err = AT_ERROR_INIT;
    int concurrency = conf->concurrency;
    long base = conf->retry_base, max = conf->retry_max;

    at_global_settings_init(&g);
    AT_CHECK_OK(at_conf_set_globals(conf, "/var/lib/x", &g, &err), &err);
    AT_CHECK_STR(conf->store_dir, "/var/lib/x");
    AT_CHECK(conf->notify_command == NULL);
    AT_CHECK_INT(conf->concurrency, concurrency);      /* defaults kept */
    AT_CHECK_INT(conf->retry_base, base);
    AT_CHECK_INT(conf->retry_max, max);

    g.notify_command = "/bin/notify";
    g.concurrency = 3;
    g.retry_min = 5;
    g.retry_max = 50;
    AT_CHECK_OK(at_conf_set_globals(conf, "/srv/store", &g, &err), &err);
    AT_CHECK_STR(conf->store_dir, "/srv/store");
    AT_CHECK_STR(conf->notify_command, "/bin/notify");
    AT_CHECK_INT(conf->concurrency, 3);
    AT_CHECK_INT(conf->retry_base, 5);
    AT_CHECK_INT(conf->retry_max, 50);
    at_conf_free(conf);
}

static void t_names(void)
{
    static const char *const a[] = { "a.test", "www.a.test" };
    static const char *const w[] = { "w.test", "*.w.test" };
    static const char *hook = "/bin/true";
    static const at_challenge_type dns = AT_CHAL_DNS01;
    at_conf *conf = at_conf_new();
    at_site_settings s;
    at_site_conf sc;
    at_error err = AT_ERROR_INIT;

    at_site_settings_init(&s);
    s.ca_url = "https://ca.test/dir";
    s.accept_terms = 1;
    at_site_settings_conf(&s, "a.test:443", a, 2, &sc);
    AT_CHECK_OK(at_conf_add_site(conf, &sc, &err), &err);
    s.challenges = &dns;
    s.nchallenges = 1;
    s.dns01_command = hook;
    at_site_settings_conf(&s, "w.test:443", w, 2, &sc);
    AT_CHECK_OK(at_conf_add_site(conf, &sc, &err), &err);

    AT_CHECK_INT(at_conf_manages(conf, "www.a.test"), 1);
    AT_CHECK_INT(at_conf_manages(conf, "deep.w.test"), 1);
    AT_CHECK_INT(at_conf_manages(conf, "b.test"), 0);
    AT_CHECK_INT(at_conf_manages(conf, ""), 0);
    AT_CHECK_INT(at_conf_manages(conf, NULL), 0);
    AT_CHECK_INT(at_conf_manages(NULL, "a.test"), 0);

    AT_CHECK_STR(at_site_name_for(a, 2, "www.a.test"), "www.a.test");
    AT_CHECK_STR(at_site_name_for(a, 2, "other.test"), "a.test");
    AT_CHECK_STR(at_site_name_for(a, 2, NULL), "a.test");
    AT_CHECK_STR(at_site_name_for(a, 2, ""), "a.test");
    AT_CHECK_STR(at_site_name_for(w, 2, "x.w.test"), "x.w.test");
    AT_CHECK_STR(at_site_name_for(w, 2, "x.y.w.test"), "w.test");

    /* Placeholders: EC for an EC site (and for an unknown name), RSA too
     * where an RSA certificate is configured, RSA alone for an RSA-only site. */
    {
        at_key_kind k[2];
        AT_CHECK_INT(at_site_placeholder_kinds(conf, "a.test", k), 1);
        AT_CHECK_INT(k[0], AT_KEY_EC);
        AT_CHECK_INT(at_site_placeholder_kinds(conf, "nobody.test", k), 1);
        AT_CHECK_INT(k[0], AT_KEY_EC);
    }
    /* Host names as requests and handshakes give them. */
    {
        char out[16];
        at_name_lower(out, sizeof(out), "WWW.A.Test.", 11);
        AT_CHECK_STR(out, "www.a.test");
        at_name_lower(out, sizeof(out), "A.TEST.trailing", 6);   /* only len bytes */
        AT_CHECK_STR(out, "a.test");
        at_name_lower(out, sizeof(out), "a\0b", 3);              /* stops at a NUL */
        AT_CHECK_STR(out, "a");
        at_name_lower(out, 6, "abcdefgh", 8);                     /* cut to fit */
        AT_CHECK_STR(out, "abcde");
        at_name_lower(out, sizeof(out), NULL, 0);
        AT_CHECK_STR(out, "");
        AT_CHECK_STR(at_site_name_for(a, 2, "www.a.test"), "www.a.test");
    }
    /* Four names in all: the live table hint for four. */
    AT_CHECK_INT(at_conf_live_size_hint(conf), at_live_size_hint(4));
    AT_CHECK_INT(at_conf_live_size_hint(NULL), at_live_size_hint(0));
    at_conf_free(conf);
}

/* ------------------------------------------------- directive arguments */

static void t_placeholder_kinds(void)
{
    static const char *const d[] = { "d.test" };
    static const char *const r[] = { "r.test" };
    static const at_key_spec both[] = { { AT_KEY_EC, 256 }, { AT_KEY_RSA, 2048 } };
    at_conf *conf = at_conf_new();
    at_site_settings s;
    at_site_conf sc;
    at_error err = AT_ERROR_INIT;
    at_key_kind k[2];

    at_site_settings_init(&s);
    s.accept_terms = 1;
    s.keys = both;
    s.nkeys = 2;
    at_site_settings_conf(&s, "d.test:443", d, 1, &sc);
    AT_CHECK_OK(at_conf_add_site(conf, &sc, &err), &err);
    s.keys = keys;                      /* RSA only */
    s.nkeys = 1;
    at_site_settings_conf(&s, "r.test:443", r, 1, &sc);
    AT_CHECK_OK(at_conf_add_site(conf, &sc, &err), &err);

    AT_CHECK_INT(at_site_placeholder_kinds(conf, "d.test", k), 2);
    AT_CHECK(k[0] == AT_KEY_EC && k[1] == AT_KEY_RSA);
    AT_CHECK_INT(at_site_placeholder_kinds(conf, "r.test", k), 1);
    AT_CHECK_INT(k[0], AT_KEY_RSA);
    AT_CHECK_INT(at_site_placeholder_kinds(NULL, "r.test", k), 1);
    AT_CHECK_INT(k[0], AT_KEY_EC);
    at_conf_free(conf);
}

static void t_parse_names(void)
{
    const char *args[AT_MAX_NAMES_PER_CERT + 1];
    char **names = NULL, buf[AT_MAX_NAMES_PER_CERT + 1][32];
    size_t n = 0;
    at_error err = AT_ERROR_INIT;

    args[0] = "A.test.";
    args[1] = "www.a.test";
    args[2] = "a.test";            /* the same as the first, normalised */
    args[3] = "*.a.test";
    AT_CHECK_OK(at_parse_names("Names", args, 4, &names, &n, &err), &err);
    AT_CHECK_INT(n, 3);
    AT_CHECK_STR(names[0], "a.test");
    AT_CHECK_STR(names[1], "www.a.test");
    AT_CHECK_STR(names[2], "*.a.test");
    at_parse_names_free(names, n);

    AT_CHECK_INT(at_parse_names("Names", args, 0, &names, &n, &err), -1);
    AT_CHECK_STR(err.msg, "give at least one name, e.g. Names example.com www.example.com");
    AT_CHECK(names == NULL && n == 0);
    at_error_clear(&err);
    args[1] = "bad_name!.test";
    AT_CHECK_INT(at_parse_names(NULL, args, 2, &names, &n, &err), -1);
    AT_CHECK_CONTAINS(err.msg, "bad_name!.test");
    at_error_clear(&err);
    for (int i = 0; i <= AT_MAX_NAMES_PER_CERT; i++) {
        snprintf(buf[i], sizeof(buf[i]), "n%d.test", i);
        args[i] = buf[i];
    }
    AT_CHECK_OK(at_parse_names(NULL, args, AT_MAX_NAMES_PER_CERT, &names, &n, &err), &err);
    AT_CHECK_INT(n, AT_MAX_NAMES_PER_CERT);
    at_parse_names_free(names, n);
    AT_CHECK_INT(at_parse_names(NULL, args, AT_MAX_NAMES_PER_CERT + 1, &names, &n, &err), -1);
    AT_CHECK_STR(err.msg, "101 names given; a certificate holds at most 100");
    at_error_clear(&err);
}

static void t_parse_keys_and_challenges(void)
{
    const char *args[4];
    at_key_spec k[2];
    at_challenge_type t[AT_MAX_CHALLENGES];
    size_t n;
    at_error err = AT_ERROR_INIT;

    args[0] = "rsa:3072";
    args[1] = "ec:P-384";
    AT_CHECK_OK(at_parse_key_specs("Keys", args, 2, k, &n, &err), &err);
    AT_CHECK_INT(n, 2);
    AT_CHECK(k[0].kind == AT_KEY_RSA && k[0].bits == 3072);
    AT_CHECK(k[1].kind == AT_KEY_EC && k[1].bits == 384);
    args[1] = "rsa:2048";
    AT_CHECK_INT(at_parse_key_specs("Keys", args, 2, k, &n, &err), -1);
    AT_CHECK_STR(err.msg, "'rsa:2048' repeats the RSA key type; give at most one EC and one RSA type, "
                          "e.g. Keys ec:P-256 rsa:2048");
    at_error_clear(&err);
    args[2] = "ec:P-256";
    AT_CHECK_INT(at_parse_key_specs(NULL, args, 3, k, &n, &err), -1);
    AT_CHECK_STR(err.msg, "3 key types given; give at most one EC and one RSA type, e.g. ec:P-256 rsa:2048");
    at_error_clear(&err);
    AT_CHECK_INT(at_parse_key_specs("Keys", args, 0, k, &n, &err), -1);
    AT_CHECK_CONTAINS(err.msg, "give one or two key types");
    at_error_clear(&err);
    args[0] = "ec:P-999";
    AT_CHECK_INT(at_parse_key_specs("Keys", args, 1, k, &n, &err), -1);
    AT_CHECK_CONTAINS(err.msg, "ec:P-999");
    at_error_clear(&err);

    args[0] = "http-01";
    args[1] = "dns-01";
    args[2] = "tls-alpn-01";
    AT_CHECK_OK(at_parse_challenges(args, 3, t, &n, &err), &err);
    AT_CHECK_INT(n, 3);
    AT_CHECK(t[0] == AT_CHAL_HTTP01 && t[1] == AT_CHAL_DNS01 && t[2] == AT_CHAL_TLSALPN01);
    args[3] = "dns-01";
    AT_CHECK_INT(at_parse_challenges(args, 4, t, &n, &err), -1);
    AT_CHECK_STR(err.msg, "'dns-01' is listed twice; list each of tls-alpn-01 http-01 dns-01 at most once");
    at_error_clear(&err);
    AT_CHECK_INT(at_parse_challenges(args, 0, t, &n, &err), -1);
    AT_CHECK_CONTAINS(err.msg, "in order of preference");
    at_error_clear(&err);
}

static void t_parse_single_checks(void)
{
    at_error err = AT_ERROR_INIT;
    const char *alg = NULL;
    long lo = 0, hi = 0;

    AT_CHECK_OK(at_parse_eab_alg(NULL, &alg, &err), &err);
    AT_CHECK_STR(alg, "HS256");
    AT_CHECK_OK(at_parse_eab_alg("hs512", &alg, &err), &err);
    AT_CHECK_STR(alg, "HS512");
    AT_CHECK_INT(at_parse_eab_alg("HS999", &alg, &err), -1);
    AT_CHECK_STR(err.msg, "'HS999' is not a MAC algorithm; use HS256 (the default), HS384 or HS512");
    at_error_clear(&err);

    AT_CHECK_OK(at_parse_preferred_chain("Chain", "ISRG Root X1", &err), &err);
    AT_CHECK_INT(at_parse_preferred_chain("Chain", "", &err), -1);
    AT_CHECK_STR(err.msg, "'' is not an issuer name; give the common name (1 to 255 characters) of the "
                          "root the chain should end in, e.g. Chain \"ISRG Root X1\"");
    at_error_clear(&err);
    AT_CHECK_INT(at_parse_preferred_chain("Chain", "Root\tX", &err), -1);
    AT_CHECK_CONTAINS(err.msg, "control character");
    at_error_clear(&err);

    AT_CHECK_OK(at_parse_retry_delay("Retry", "30s", NULL, &lo, &hi, &err), &err);
    AT_CHECK_INT(lo, 30);
    AT_CHECK_INT(hi, 21600);
    AT_CHECK_OK(at_parse_retry_delay("Retry", "12h", NULL, &lo, &hi, &err), &err);
    AT_CHECK_INT(hi, 43200);                   /* never shorter than the first */
    AT_CHECK_OK(at_parse_retry_delay("Retry", "1m", "2h", &lo, &hi, &err), &err);
    AT_CHECK_INT(lo, 60);
    AT_CHECK_INT(hi, 7200);
    AT_CHECK_INT(at_parse_retry_delay("Retry", "1h", "1m", &lo, &hi, &err), -1);
    AT_CHECK_STR(err.msg, "the longest delay '1m' is shorter than the first '1h'; give MIN [MAX] with "
                          "MAX >= MIN, e.g. Retry 1m 6h");
    at_error_clear(&err);
    AT_CHECK_INT(at_parse_retry_delay("Retry", "soon", NULL, &lo, &hi, &err), -1);
    AT_CHECK_CONTAINS(err.msg, "soon");
    at_error_clear(&err);
}

static const at_test_case cases[] = {
    AT_CASE(t_init_is_unset),
    AT_CASE(t_inherit),
    AT_CASE(t_site_conf),
    AT_CASE(t_globals),
    AT_CASE(t_names),
    AT_CASE(t_placeholder_kinds),
    AT_CASE(t_parse_names),
    AT_CASE(t_parse_keys_and_challenges),
    AT_CASE(t_parse_single_checks),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    return at_test_main(argc, argv, cases);
}
