/*
 * Site tests: what a vhost / server block inherits (value by value, pairs
 * and triples together), the at_site_conf it becomes, the global settings
 * in at_conf, and the name questions of requests and handshakes.
 */
#include "at_test.h"

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

    /* Four names in all: the live table hint for four. */
    AT_CHECK_INT(at_conf_live_size_hint(conf), at_live_size_hint(4));
    AT_CHECK_INT(at_conf_live_size_hint(NULL), at_live_size_hint(0));
    at_conf_free(conf);
}

static const at_test_case cases[] = {
    AT_CASE(t_init_is_unset),
    AT_CASE(t_inherit),
    AT_CASE(t_site_conf),
    AT_CASE(t_globals),
    AT_CASE(t_names),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    return at_test_main(argc, argv, cases);
}
