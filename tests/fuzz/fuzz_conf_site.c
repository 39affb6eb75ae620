/*
 * fuzz_conf_site: the configuration model (at_conf_add_site and
 * at_conf_certs_for_name in core/at_conf.c) with sites built by the
 * fuzzer: names, key types, challenges, CA settings, profiles, windows and
 * dns-01 commands, several sites into one configuration, as the modules
 * add the vhosts / server blocks they find.
 *
 * Input: records (at_fuzz.h), one site each (at most 8):
 *   byte 0   key types: bit 0 ec:P-256, 1 ec:P-384, 2 rsa:2048, 3 rsa:4096,
 *            4 an invalid spec; none = the default
 *   byte 1   challenges: bit 0 http-01, 1 tls-alpn-01, 2 dns-01, 3 an
 *            invalid type; none = the default
 *   byte 2   CA: bits 0-1 (none, Let's Encrypt, a local URL, the site's own
 *            line), bit 2 terms accepted, bit 3 EAB, bit 4 a trust file,
 *            bit 5 a proxy, bits 6-7 window (none, 33%, 30 days, both)
 *   then lines: site label, names (space separated), contacts (space
 *            separated), profile, preferred chain, dns-01 command, CA URL,
 *            EAB key id; an empty line is an unset value
 *
 * Checks: no crash, leak or undefined behaviour; a refused site leaves the
 * configuration as it was, with a printable configuration error; an
 * accepted site gives certificates with unique ids that at_conf_cert
 * finds, and adding the very same site again is accepted and changes
 * nothing; every name of an accepted site is served, for each of its key
 * kinds, by a certificate of that kind that lists it.
 */
#include <stdlib.h>
#include <string.h>

#include "at_conf.h"
#include "at_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SITES 8
#define MAX_LIST  16

typedef struct site_in {
    char *lines[8];
    const char *names[MAX_LIST];
    size_t nnames;
    const char *contacts[MAX_LIST];
    size_t ncontacts;
    at_key_spec keys[5];
    at_challenge_type chal[4];
    at_site_conf s;
} site_in;

/* Split s in place at spaces into v. */
static size_t split(char *s, const char **v, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(s, " ", &save); t && n < max; t = strtok_r(NULL, " ", &save))
        v[n++] = t;
    return n;
}

static void build(site_in *si, const uint8_t *rec, size_t len)
{
    static const at_key_spec specs[5] = { { AT_KEY_EC, 256 }, { AT_KEY_EC, 384 }, { AT_KEY_RSA, 2048 },
                                          { AT_KEY_RSA, 4096 }, { (at_key_kind)3, 256 } };
    static const at_challenge_type types[4] = { AT_CHAL_HTTP01, AT_CHAL_TLSALPN01, AT_CHAL_DNS01,
                                                (at_challenge_type)9 };
    unsigned k = len > 0 ? rec[0] : 0, c = len > 1 ? rec[1] : 0, ca = len > 2 ? rec[2] : 0;
    const char *p = (const char *)rec + (len > 3 ? 3 : len), *end = (const char *)rec + len;
    at_site_conf *s = &si->s;

    memset(si, 0, sizeof(*si));
    for (int i = 0; i < 8; i++) {
        const char *nl = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
        size_t l = p < end ? (size_t)((nl ? nl : end) - p) : 0;
        si->lines[i] = strndup(p, l);
        p = nl ? nl + 1 : end;
    }
    for (int i = 0; i < 5; i++)
        if (k & (1u << i))
            si->keys[s->nkeys++] = specs[i];
    for (int i = 0; i < 4; i++)
        if (c & (1u << i))
            si->chal[s->nchallenges++] = types[i];
    s->keys = si->keys;
    s->challenges = si->chal;
    s->site = si->lines[0][0] ? si->lines[0] : NULL;
    si->nnames = split(si->lines[1], si->names, MAX_LIST);
    s->names = si->names;
    s->nnames = si->nnames;
    si->ncontacts = split(si->lines[2], si->contacts, MAX_LIST);
    s->ca.contact = (char **)si->contacts;
    s->ca.ncontact = si->ncontacts;
    s->profile = si->lines[3][0] ? si->lines[3] : NULL;
    s->preferred_chain = si->lines[4][0] ? si->lines[4] : NULL;
    s->dns01_command = si->lines[5][0] ? si->lines[5] : NULL;
    switch (ca & 3) {
    case 1: s->ca.url = (char *)AT_CA_LETSENCRYPT; break;
    case 2: s->ca.url = (char *)"http://127.0.0.1:14000/dir"; break;
    case 3: s->ca.url = si->lines[6][0] ? si->lines[6] : NULL; break;
    default: break;
    }
    s->ca.accept_terms = (ca >> 2) & 1;
    if (ca & 8) {
        s->ca.eab_kid = si->lines[7][0] ? si->lines[7] : (char *)"kid-1";
        s->ca.eab_key = (char *)"c2VjcmV0LWhtYWMta2V5LWZvci1mdXp6aW5nLTAx";
    }
    s->ca.trust_file = ca & 16 ? (char *)"/etc/ssl/certs/ca-certificates.crt" : NULL;
    s->ca.proxy = ca & 32 ? (char *)"http://127.0.0.1:3128" : NULL;
    if (ca & 64)
        s->window.percent = 33;
    if (ca & 128)
        s->window.seconds = 30L * 86400;
}

static void site_free(site_in *si)
{
    for (int i = 0; i < 8; i++)
        free(si->lines[i]);
}

/* What must not move when a site is refused (or merged). */
typedef struct snapshot {
    size_t ncerts, ncas;
    char  *ids[64];
} snapshot;

static void snap(const at_conf *conf, snapshot *sn)
{
    memset(sn, 0, sizeof(*sn));
    sn->ncerts = conf->ncerts;
    sn->ncas = conf->ncas;
    for (size_t i = 0; i < conf->ncerts && i < 64; i++)
        sn->ids[i] = strdup(conf->certs[i].id);
}

static void snap_check(const at_conf *conf, snapshot *sn, const char *why)
{
    if (conf->ncerts != sn->ncerts || conf->ncas != sn->ncas)
        at_fuzz_fail("%s changed the configuration (%zu/%zu certificates, %zu/%zu CAs)", why,
                     sn->ncerts, conf->ncerts, sn->ncas, conf->ncas);
    for (size_t i = 0; i < conf->ncerts && i < 64; i++)
        if (strcmp(sn->ids[i], conf->certs[i].id) != 0)
            at_fuzz_fail("%s changed certificate %zu", why, i);
    for (size_t i = 0; i < 64; i++)
        free(sn->ids[i]);
}

static void check_conf(const at_conf *conf)
{
    for (size_t i = 0; i < conf->ncerts; i++) {
        const at_cert_conf *c = &conf->certs[i];
        if (!c->id || !c->site || !c->nnames || c->ca >= conf->ncas || at_conf_cert(conf, c->id) != c)
            at_fuzz_fail("certificate %zu is not whole or not found by its id", i);
        for (size_t j = i + 1; j < conf->ncerts; j++)
            if (strcmp(c->id, conf->certs[j].id) == 0)
                at_fuzz_fail("two certificates with id %s", c->id);
    }
}

/* Every name of certificate c is served by a certificate of c's kind that lists it. */
static void check_served(const at_conf *conf, const at_cert_conf *c)
{
    for (size_t n = 0; n < c->nnames; n++) {
        const at_cert_conf *out[8];
        size_t k = at_conf_certs_for_name(conf, c->names[n], out, 8), found = 0;
        if (c->names[n][0] == '*')
            continue;
        for (size_t i = 0; i < k; i++)
            for (size_t j = 0; j < out[i]->nnames; j++)
                if (out[i]->key.kind == c->key.kind && strcmp(out[i]->names[j], c->names[n]) == 0)
                    found = 1;
        if (!found)
            at_fuzz_fail("name %s of certificate %s is not served by a certificate of its key kind",
                         c->names[n], c->id);
    }
}

/* The label at_conf_add_site goes by. */
static const char *label_of(const at_site_conf *s)
{
    return s->site && *s->site ? s->site : s->nnames && s->names[0] ? s->names[0] : "(unnamed)";
}

static int label_seen(char *const *labels, size_t n, const char *label)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(labels[i], label) == 0)
            return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    at_fuzz_in in = { data, size };
    at_conf *conf = at_conf_new();
    const uint8_t *rec;
    size_t len, nlabels = 0;
    char *labels[MAX_SITES];

    if (!conf)
        abort();
    for (int n = 0; n < MAX_SITES && at_fuzz_record(&in, &rec, &len) == 0; n++) {
        site_in si;
        snapshot sn;
        at_error err = AT_ERROR_INIT;
        size_t before = conf->ncerts;

        build(&si, rec, len);
        snap(conf, &sn);
        if (at_conf_add_site(conf, &si.s, &err) != 0) {
            if ((err.code != AT_ERR_CONFIG && err.code != AT_ERR_INTERNAL) || !err.msg[0])
                at_fuzz_fail("a site refused with code %d: %s", (int)err.code, err.msg);
            at_fuzz_check_msg(&err, "site");
            snap_check(conf, &sn, "a refused site");
            at_error_clear(&err);
        } else {
            for (size_t i = 0; i < 64; i++)
                free(sn.ids[i]);
            check_conf(conf);
            for (size_t i = before; i < conf->ncerts; i++)
                check_served(conf, &conf->certs[i]);
            /* The same site again (a vhost on :80 and :443) is merged. Not
             * checked when an earlier site had the same label: sites are told
             * apart by label, so two of them under one label read as one site
             * with the key types of both. */
            snap(conf, &sn);
            if (at_conf_add_site(conf, &si.s, &err) != 0 && !label_seen(labels, nlabels, label_of(&si.s)))
                at_fuzz_fail("the same site added twice is refused: %s", err.msg);
            at_error_clear(&err);
            snap_check(conf, &sn, "adding the same site again");
            if (nlabels < MAX_SITES)
                labels[nlabels++] = strdup(label_of(&si.s));
        }
        site_free(&si);
    }
    for (size_t i = 0; i < conf->ncerts; i++) {
        const at_cert_conf *out[8];
        at_conf_certs_for_name(conf, conf->certs[i].names[0], out, 8);
        at_conf_certs_for_name(conf, "www.example.com", out, 8);
    }
    at_conf_free(conf);
    for (size_t i = 0; i < nlabels; i++)
        free(labels[i]);
    return 0;
}
