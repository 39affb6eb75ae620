/*
 * test_status.c: the status model from a store built in a temporary
 * directory (every state, the planner's renew time, the CA's problem
 * document, ARI), and the three renderers from hand-built documents:
 * escaping of untrusted names and CA messages, and that no key material and
 * no EAB key ever appears.
 */
#include "at_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "at_status.h"
#include "at_planner.h"
#include "at_time.h"
#include "at_x509.h"
#include "at_key.h"

#define EAB_KEY "c2VjcmV0LWVhYi1rZXktbmV2ZXItc2hvd24tYW55d2hlcmU"

/* Base64 lines of every private key the tests stored: none may show up. */
static char key_lines[16][80];
static int nkey_lines;

static void remember_key(const char *pem)
{
    const char *line = strchr(pem, '\n');
    /* the first base64 line of the key */
    if (line && nkey_lines < 16) {
        snprintf(key_lines[nkey_lines], sizeof(key_lines[0]), "%.40s", line + 1);
        nkey_lines++;
    }
}

/* ------------------------------------------------------------ helpers */

static const json_t *cert_by_id(const json_t *status, const char *id)
{
    const json_t *certs = json_object_get(status, "certificates");
    for (size_t i = 0; i < json_array_size(certs); i++) {
        const json_t *c = json_array_get(certs, i);
        if (strcmp(json_string_value(json_object_get(c, "id")), id) == 0)
            return c;
    }
    return NULL;
}

static const char *s_of(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static time_t t_of(const json_t *o, const char *key)
{
    time_t t = 0;
    const char *s = s_of(o, key);
    if (s)
        at_time_parse(s, &t);
    return t;
}

/* Render in all three formats and check that nothing secret leaks. */
static void check_no_secrets(const json_t *status)
{
    at_buf j = AT_BUF_INIT, h = AT_BUF_INIT, p = AT_BUF_INIT;

    AT_CHECK_INT(at_status_render_json(status, &j), 0);
    AT_CHECK_INT(at_status_render_html(status, &h), 0);
    AT_CHECK_INT(at_status_render_prometheus(status, &p), 0);
    {
        const at_buf *all[] = { &j, &h, &p };
        for (int i = 0; i < 3; i++) {
            const char *s = at_buf_str(all[i]);
            AT_CHECK(strstr(s, "PRIVATE KEY") == NULL);
            AT_CHECK(strstr(s, "-----BEGIN CERTIFICATE-----\n") == NULL);
            AT_CHECK(strstr(s, EAB_KEY) == NULL);
            AT_CHECK(strstr(s, "kid-1") == NULL);
            AT_CHECK(nkey_lines > 0);
            for (int k = 0; k < nkey_lines; k++)
                AT_CHECK_MSG(strstr(s, key_lines[k]) == NULL, "key text %s leaked", key_lines[k]);
        }
    }
    at_buf_free(&j);
    at_buf_free(&h);
    at_buf_free(&p);
}

/* -------------------------------------------------------- the collector */

typedef struct fixture {
    at_conf  *conf;
    at_store *st;
} fixture;

static void add_site(at_conf *conf, const char *site, const char *const *names, size_t n,
                     const char *ca)
{
    at_site_conf s;
    at_error e = AT_ERROR_INIT;
    const char *contact[] = { "mailto:admin@example.com" };

    memset(&s, 0, sizeof(s));
    s.site = site;
    s.names = names;
    s.nnames = n;
    s.ca.url = (char *)ca;
    s.ca.contact = (char **)contact;
    s.ca.ncontact = 1;
    s.ca.accept_terms = 1;
    s.ca.eab_kid = "kid-1";
    s.ca.eab_key = EAB_KEY;
    AT_CHECK_OK(at_conf_add_site(conf, &s, &e), &e);
    at_error_clear(&e);
}

/* Store a certificate for conf's cert `id` valid for `days` from now. */
static void store_cert(at_store *st, const at_cert_conf *cc, int days, const char *ca,
                       const char *challenge)
{
    at_buf cert = AT_BUF_INIT, key = AT_BUF_INIT;
    at_error e = AT_ERROR_INIT;
    at_cert_rec rec;
    json_t *names = json_array(), *meta;

    AT_CHECK_OK(at_placeholder_cert((const char *const *)cc->names, cc->nnames, "ec:P-256", days,
                                    &cert, &key, &e), &e);
    remember_key(at_buf_str(&key));
    for (size_t i = 0; i < cc->nnames; i++)
        json_array_append_new(names, json_string(cc->names[i]));
    meta = json_pack("{s:o, s:s, s:s, s:s}", "names", names, "key", "ec:P-256", "ca", ca,
                     "challenge", challenge);
    memset(&rec, 0, sizeof(rec));
    rec.id = cc->id;
    rec.chain_pem = (char *)at_buf_str(&cert);
    rec.key_pem = (char *)at_buf_str(&key);
    rec.meta = meta;
    AT_CHECK_OK(at_store_cert_save(st, &rec, &e), &e);
    json_decref(meta);
    at_buf_free(&cert);
    at_buf_free_secret(&key);
    at_error_clear(&e);
}

static void store_state(at_store *st, const char *id, json_t *state)
{
    at_error e = AT_ERROR_INIT;
    AT_CHECK_OK(at_store_state_save(st, id, state, &e), &e);
    json_decref(state);
    at_error_clear(&e);
}

static void store_order(at_store *st, const char *id)
{
    at_error e = AT_ERROR_INIT;
    at_key_spec spec = AT_KEY_SPEC_DEFAULT;
    EVP_PKEY *pk = at_key_generate(&spec, &e);
    at_buf pem = AT_BUF_INIT;
    json_t *cp = json_pack("{s:s}", "order_url", "https://ca.example/order/1");

    AT_CHECK(pk && at_key_to_pem(pk, &pem, &e) == 0);
    remember_key(at_buf_str(&pem));
    AT_CHECK_OK(at_store_order_save(st, id, cp, at_buf_str(&pem), &e), &e);
    json_decref(cp);
    EVP_PKEY_free(pk);
    at_buf_free_secret(&pem);
    at_error_clear(&e);
}

#define CA "https://ca.example/dir"

static void t_collect_states(void)
{
    static const char *valid[] = { "valid.example", "www.valid.example" };
    static const char *renewing[] = { "renewing.example" };
    static const char *failing[] = { "failing.example" };
    static const char *pending[] = { "pending.example" };
    static const char *fresh[] = { "fresh.example" };
    static const char *missing[] = { "missing.example" };
    static const char *moved[] = { "moved.example" };
    at_conf *conf = at_conf_new();
    at_error e = AT_ERROR_INIT;
    at_store *st = at_store_open_dir(at_test_tmpdir(), &e);
    time_t now = time(NULL);
    json_t *status;
    const json_t *c;

    AT_CHECK_OK(st ? 0 : -1, &e);
    if (!st || !conf) {
        at_conf_free(conf);
        return;
    }
    add_site(conf, "valid:443", valid, 2, CA);
    add_site(conf, "renewing:443", renewing, 1, CA);
    add_site(conf, "failing:443", failing, 1, CA);
    add_site(conf, "pending:443", pending, 1, CA);
    add_site(conf, "fresh:443", fresh, 1, CA);
    add_site(conf, "missing:443", missing, 1, CA);
    add_site(conf, "moved:443", moved, 1, CA);
    AT_CHECK_INT(conf->ncerts, 7);

    store_cert(st, &conf->certs[0], 90, CA, "http-01");
    store_state(st, conf->certs[0].id,
                json_pack("{s:i, s:I, s:I, s:n, s:{s:I, s:I, s:I, s:s}}", "failures", 0,
                          "last_attempt", (json_int_t)now - 100, "last_success", (json_int_t)now - 100,
                          "last_error", "ari", "start", (json_int_t)now + 40 * 86400,
                          "end", (json_int_t)now + 42 * 86400, "pick", (json_int_t)now + 41 * 86400,
                          "explanation", "https://ca.example/why"));
    store_cert(st, &conf->certs[1], 90, CA, "tls-alpn-01");
    store_order(st, conf->certs[1].id);
    store_state(st, conf->certs[2].id,
                json_pack("{s:i, s:I, s:I, s:I, s:{s:s, s:s, s:i, s:i, s:{s:s, s:s, s:i}}}",
                          "failures", 3, "last_attempt", (json_int_t)now - 60,
                          "next_attempt", (json_int_t)now + 180, "retry_after", (json_int_t)now + 3600,
                          "last_error", "code", "ratelimit",
                          "message", "newOrder for failing.example: too many certificates <b>already</b>",
                          "http_status", 429, "retry_after", 3660,
                          "problem", "type", "urn:ietf:params:acme:error:rateLimited",
                          "detail", "too many certificates (5) already issued \"for\" this exact set",
                          "status", 429));
    store_order(st, conf->certs[3].id);
    /* fresh: nothing at all; missing: attempted and succeeded once, certificate gone */
    store_state(st, conf->certs[5].id,
                json_pack("{s:i, s:I, s:I, s:n}", "failures", 0, "last_attempt", (json_int_t)now - 500,
                          "last_success", (json_int_t)now - 500, "last_error"));
    /* moved: issued by another CA than the configured one */
    store_cert(st, &conf->certs[6], 90, "https://old-ca.example/dir", "http-01");

    status = at_status_collect(conf, st, now, &e);
    AT_CHECK_OK(status ? 0 : -1, &e);
    if (!status)
        goto out;
    AT_CHECK(s_of(status, "version") != NULL);
    AT_CHECK_INT(t_of(status, "generated_at"), now);
    AT_CHECK_INT(json_array_size(json_object_get(status, "certificates")), 7);

    /* valid, with an ARI window that moves renewal earlier than 2/3 of life */
    c = cert_by_id(status, conf->certs[0].id);
    AT_CHECK(c != NULL);
    AT_CHECK_STR(s_of(c, "state"), "valid");
    AT_CHECK_STR(s_of(c, "site"), "valid:443");
    AT_CHECK_STR(s_of(c, "key_type"), "ec:P-256");
    AT_CHECK_STR(s_of(c, "ca"), CA);
    AT_CHECK_INT(json_array_size(json_object_get(c, "names")), 2);
    AT_CHECK_STR(json_string_value(json_array_get(json_object_get(c, "names"), 1)), "www.valid.example");
    AT_CHECK_STR(s_of(c, "issuer"), "autotls placeholder");
    AT_CHECK_STR(s_of(c, "challenge"), "http-01");
    AT_CHECK(s_of(c, "serial") && strlen(s_of(c, "serial")) > 0);
    {
        time_t nb = t_of(c, "not_before"), na = t_of(c, "not_after");
        at_renew_window w = { 0, 0 };
        AT_CHECK(nb > 0 && na > nb);
        AT_CHECK(at_plan_renew_at(nb, na, &w) > now + 41 * 86400);   /* the window is later */
        AT_CHECK_INT(t_of(c, "renew_at"), now + 41 * 86400);         /* the ARI pick wins */
        AT_CHECK_STR(s_of(c, "renew_reason"), "ari");
        AT_CHECK_INT(t_of(c, "next_attempt"), now + 41 * 86400);
    }
    AT_CHECK_INT(json_integer_value(json_object_get(c, "failures")), 0);
    AT_CHECK(json_is_null(json_object_get(c, "last_error")));
    {
        const json_t *ari = json_object_get(c, "ari");
        AT_CHECK(json_is_object(ari));
        AT_CHECK_INT(t_of(ari, "start"), now + 40 * 86400);
        AT_CHECK_INT(t_of(ari, "end"), now + 42 * 86400);
        AT_CHECK_STR(s_of(ari, "explanation"), "https://ca.example/why");
    }

    /* renewing: a certificate and an order in flight */
    c = cert_by_id(status, conf->certs[1].id);
    AT_CHECK_STR(s_of(c, "state"), "renewing");
    AT_CHECK_STR(s_of(c, "renew_reason"), "resume");
    AT_CHECK_INT(t_of(c, "next_attempt"), now);
    AT_CHECK_STR(s_of(c, "challenge"), "tls-alpn-01");
    {
        time_t nb = t_of(c, "not_before"), na = t_of(c, "not_after");
        AT_CHECK_INT(t_of(c, "renew_at"), at_plan_renew_at(nb, na, NULL));
    }

    /* error: the CA's problem document, the engine's next attempt pushed to Retry-After */
    c = cert_by_id(status, conf->certs[2].id);
    AT_CHECK_STR(s_of(c, "state"), "error");
    AT_CHECK_INT(json_integer_value(json_object_get(c, "failures")), 3);
    AT_CHECK_STR(s_of(c, "renew_reason"), "missing");
    AT_CHECK_INT(t_of(c, "next_attempt"), now + 3600);
    AT_CHECK(json_is_null(json_object_get(c, "not_after")));
    AT_CHECK(json_is_null(json_object_get(c, "renew_at")));
    AT_CHECK(json_is_null(json_object_get(c, "serial")));
    {
        const json_t *le = json_object_get(c, "last_error"), *p = json_object_get(le, "problem");
        AT_CHECK_STR(s_of(le, "code"), "ratelimit");
        AT_CHECK_CONTAINS(s_of(le, "message"), "too many certificates");
        AT_CHECK_STR(s_of(p, "type"), "urn:ietf:params:acme:error:rateLimited");
        AT_CHECK_INT(json_integer_value(json_object_get(p, "status")), 429);
    }

    c = cert_by_id(status, conf->certs[3].id);
    AT_CHECK_STR(s_of(c, "state"), "pending");
    AT_CHECK_STR(s_of(c, "renew_reason"), "resume");
    c = cert_by_id(status, conf->certs[4].id);
    AT_CHECK_STR(s_of(c, "state"), "pending");
    AT_CHECK_STR(s_of(c, "renew_reason"), "missing");
    AT_CHECK(json_is_null(json_object_get(c, "ari")));
    c = cert_by_id(status, conf->certs[5].id);
    AT_CHECK_STR(s_of(c, "state"), "missing");
    c = cert_by_id(status, conf->certs[6].id);
    AT_CHECK_STR(s_of(c, "state"), "valid");
    AT_CHECK_STR(s_of(c, "renew_reason"), "ca-changed");
    AT_CHECK_INT(t_of(c, "next_attempt"), now);

    check_no_secrets(status);
    {
        at_buf h = AT_BUF_INIT, p = AT_BUF_INIT;
        char line[512];
        at_status_render_html(status, &h);
        at_status_render_prometheus(status, &p);
        AT_CHECK_CONTAINS(at_buf_str(&h), "too many certificates &lt;b&gt;already&lt;/b&gt;");
        AT_CHECK_CONTAINS(at_buf_str(&h), "already issued \\&quot;for\\&quot; this exact set");
        AT_CHECK_CONTAINS(at_buf_str(&h), "<details><summary>problem document from the CA</summary>");
        AT_CHECK_CONTAINS(at_buf_str(&h), "<span class=\"state error\">error</span>");
        AT_CHECK_CONTAINS(at_buf_str(&h), "<span class=\"state renewing\">renewing</span>");
        AT_CHECK_CONTAINS(at_buf_str(&h), "href=\"https://ca.example/why\"");
        snprintf(line, sizeof(line), "autotls_certificate_failures{id=\"%s\",name=\"failing.example\"} 3\n",
                 conf->certs[2].id);
        AT_CHECK_CONTAINS(at_buf_str(&p), line);
        snprintf(line, sizeof(line), "autotls_certificate_state{id=\"%s\",name=\"renewing.example\","
                 "state=\"renewing\"} 1\n", conf->certs[1].id);
        AT_CHECK_CONTAINS(at_buf_str(&p), line);
        snprintf(line, sizeof(line), "autotls_certificate_not_after_seconds{id=\"%s\",name=\"valid.example\"} %lld\n",
                 conf->certs[0].id, (long long)t_of(cert_by_id(status, conf->certs[0].id), "not_after"));
        AT_CHECK_CONTAINS(at_buf_str(&p), line);
        snprintf(line, sizeof(line), "autotls_renewal_due_seconds{id=\"%s\",name=\"valid.example\"} %lld\n",
                 conf->certs[0].id, (long long)now + 41 * 86400);
        AT_CHECK_CONTAINS(at_buf_str(&p), line);
        at_buf_free(&h);
        at_buf_free(&p);
    }
    json_decref(status);
out:
    at_store_close(st);
    at_conf_free(conf);
    at_error_clear(&e);
}

/* A damaged certificate file is an error the page shows, not a crash. */
static void t_collect_damaged(void)
{
    static const char *names[] = { "damaged.example" };
    at_conf *conf = at_conf_new();
    at_error e = AT_ERROR_INIT;
    const char *dir = at_test_tmpdir();
    at_store *st = at_store_open_dir(dir, &e);
    char path[600];
    FILE *f;
    json_t *status;
    const json_t *c;

    if (!st || !conf) {
        AT_CHECK_OK(-1, &e);
        at_conf_free(conf);
        return;
    }
    add_site(conf, "damaged:443", names, 1, CA);
    store_cert(st, &conf->certs[0], 30, CA, "http-01");
    snprintf(path, sizeof(path), "%s/certs/%s/chain.pem", dir, conf->certs[0].id);
    if ((f = fopen(path, "w"))) {
        fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
        fclose(f);
    }
    status = at_status_collect(conf, st, time(NULL), &e);
    AT_CHECK(status != NULL);
    c = cert_by_id(status, conf->certs[0].id);
    AT_CHECK_STR(s_of(c, "state"), "error");
    AT_CHECK(json_is_object(json_object_get(c, "last_error")));
    AT_CHECK(json_is_null(json_object_get(c, "not_after")));
    check_no_secrets(status);
    json_decref(status);
    at_store_close(st);
    at_conf_free(conf);
    at_error_clear(&e);
}

static void t_collect_no_store(void)
{
    at_conf *conf = at_conf_new();
    at_error e = AT_ERROR_INIT;

    AT_CHECK(at_status_collect(conf, NULL, time(NULL), &e) == NULL);
    AT_CHECK(e.code == AT_ERR_INTERNAL);
    at_error_clear(&e);
    at_conf_free(conf);
}

/* -------------------------------------------------------- the renderers */

/* A document as at_status_collect makes it, with hostile text everywhere
 * a CA or a configuration could put some. */
static json_t *hostile_status(void)
{
    return json_pack(
        "{s:s, s:s, s:[{s:s, s:s, s:[s, s], s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i,"
        " s:{s:s, s:s, s:s}, s:{s:s, s:s, s:{s:s, s:s}}},"
        " {s:s, s:s, s:[s], s:s, s:s, s:s, s:n, s:n, s:n, s:s, s:s, s:n, s:n, s:n, s:i, s:n, s:n}]}",
        "version", "0.1.0", "generated_at", "2025-06-15T12:00:00Z", "certificates",
        "id", "evil_ec256", "site", "<b>site</b>",
        "names", "<script>alert(\"x\")</script>.example", "quote\"back\\slash\nnew.example",
        "key_type", "ec:P-256", "state", "valid\" onmouseover=\"x", "ca", "https://ca.example/dir",
        "not_before", "2025-06-01T00:00:00Z", "not_after", "2025-08-30T00:00:00Z",
        "renew_at", "2025-07-31T00:00:00Z", "renew_reason", "expiring",
        "next_attempt", "2025-07-31T00:00:00Z", "serial", "0a1b", "issuer", "Evil <CA> & 'Co'",
        "challenge", "http-01", "failures", 2,
        "ari", "start", "2025-07-01T00:00:00Z", "end", "2025-07-02T00:00:00Z",
        "explanation", "javascript:alert(1)",
        "last_error", "code", "ca", "message", "the CA said: <img src=x onerror='steal()'>\nline two\x01",
        "problem", "type", "urn:ietf:params:acme:error:malformed", "detail", "</pre><script>bad()</script>",
        "id", "plain_rsa2048", "site", "plain:443", "names", "plain.example", "key_type", "rsa:2048",
        "state", "pending", "ca", "https://ca.example/dir", "not_before", "not_after", "renew_at",
        "renew_reason", "missing", "next_attempt", "2025-06-15T12:00:00Z", "serial", "issuer", "challenge",
        "failures", 0, "ari", "last_error");
}

static void t_render_json(void)
{
    json_t *st = hostile_status(), *back;
    at_buf b = AT_BUF_INIT;
    json_error_t je;

    AT_CHECK(st != NULL);
    AT_CHECK_INT(at_status_render_json(st, &b), 0);
    back = json_loads(at_buf_str(&b), 0, &je);
    AT_CHECK(back != NULL);
    AT_CHECK(json_equal(st, back));
    AT_CHECK(strstr(at_buf_str(&b), "</script>") == NULL);
    AT_CHECK_CONTAINS(at_buf_str(&b), "<\\/script>");
    /* keys in the model's order: id first */
    AT_CHECK(strstr(at_buf_str(&b), "\"id\"") < strstr(at_buf_str(&b), "\"names\""));
    json_decref(back);
    json_decref(st);
    at_buf_free(&b);
}

static void t_render_html_escaping(void)
{
    json_t *st = hostile_status();
    at_buf b = AT_BUF_INIT;
    const char *h;

    AT_CHECK_INT(at_status_render_html(st, &b), 0);
    h = at_buf_str(&b);
    AT_CHECK(strncmp(h, "<!DOCTYPE html>", 15) == 0);
    AT_CHECK_CONTAINS(h, "</html>");
    /* untrusted text never becomes markup */
    AT_CHECK(strstr(h, "<script") == NULL);
    AT_CHECK(strstr(h, "<img") == NULL);
    AT_CHECK(strstr(h, "<b>site") == NULL);
    AT_CHECK(strstr(h, "onmouseover") == NULL);
    AT_CHECK(strstr(h, "javascript:") == NULL);
    AT_CHECK(strstr(h, "\x01") == NULL);
    AT_CHECK_CONTAINS(h, "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;.example");
    AT_CHECK_CONTAINS(h, "quote&quot;back\\slash\nnew.example");
    AT_CHECK_CONTAINS(h, "&lt;img src=x onerror=&#39;steal()&#39;&gt;\nline two\xef\xbf\xbd");
    AT_CHECK_CONTAINS(h, "Evil &lt;CA&gt; &amp; &#39;Co&#39;");
    AT_CHECK_CONTAINS(h, "&lt;/pre&gt;&lt;script&gt;bad()&lt;/script&gt;");
    AT_CHECK_CONTAINS(h, "&lt;b&gt;site&lt;/b&gt;");
    /* a state outside the known words is shown as "unknown" */
    AT_CHECK_CONTAINS(h, "<span class=\"state unknown\">unknown</span>");
    AT_CHECK_CONTAINS(h, "<span class=\"state pending\">pending</span>");
    AT_CHECK_CONTAINS(h, "2 failed attempts");
    AT_CHECK_CONTAINS(h, "2025-08-30T00:00:00Z<br><span class=\"muted\">in 75 days</span>");
    AT_CHECK_CONTAINS(h, "2 certificates, 1 pending");
    AT_CHECK_CONTAINS(h, "?format=json");
    json_decref(st);
    at_buf_free(&b);
}

static void t_render_html_server_and_empty(void)
{
    json_t *st = json_pack("{s:s, s:s, s:[], s:{s:s, s:i, s:{s:i}}}", "version", "0.1.0",
                           "generated_at", "2025-06-15T12:00:00Z", "certificates",
                           "server", "software", "<apache>", "renewal_pid", 4242,
                           "shared_memory", "size", 1048576);
    at_buf b = AT_BUF_INIT, p = AT_BUF_INIT;

    AT_CHECK_INT(at_status_render_html(st, &b), 0);
    AT_CHECK_CONTAINS(at_buf_str(&b), "No certificate is managed.");
    AT_CHECK_CONTAINS(at_buf_str(&b), "&lt;apache&gt;");
    AT_CHECK_CONTAINS(at_buf_str(&b), "4242");
    AT_CHECK_INT(at_status_render_prometheus(st, &p), 0);
    AT_CHECK_CONTAINS(at_buf_str(&p), "autotls_shared_memory_size_bytes 1048576\n");
    AT_CHECK(strstr(at_buf_str(&p), "autotls_certificate_state") == NULL);
    json_decref(st);
    at_buf_free(&b);
    at_buf_free(&p);
}

/* Every line is a comment or `name{labels} value`, labels well escaped. */
static void check_exposition(const char *text)
{
    const char *line = text;
    int samples = 0;

    while (*line) {
        const char *end = strchr(line, '\n');
        size_t len;
        AT_CHECK(end != NULL);
        if (!end)
            break;
        len = (size_t)(end - line);
        if (line[0] == '#') {
            AT_CHECK(strncmp(line, "# HELP autotls_", 15) == 0 || strncmp(line, "# TYPE autotls_", 15) == 0);
        } else {
            const char *p = line, *sp;
            int inq = 0;
            AT_CHECK(strncmp(line, "autotls_", 8) == 0);
            /* walk the labels: inside quotes only \\ \" \n escapes */
            for (; p < end; p++) {
                if (inq && *p == '\\') {
                    AT_CHECK(p[1] == '\\' || p[1] == '"' || p[1] == 'n');
                    p++;
                } else if (*p == '"') {
                    inq = !inq;
                } else if (!inq && *p == ' ') {
                    break;
                }
            }
            AT_CHECK(!inq);
            sp = p;
            AT_CHECK(sp < end);
            for (p = sp + 1; p < end; p++)
                AT_CHECK((*p >= '0' && *p <= '9') || *p == '-');
            samples++;
        }
        (void)len;
        line = end + 1;
    }
    AT_CHECK(samples > 0);
}

static void t_render_prometheus(void)
{
    json_t *st = hostile_status();
    at_buf b = AT_BUF_INIT;
    const char *p;

    AT_CHECK_INT(at_status_render_prometheus(st, &b), 0);
    p = at_buf_str(&b);
    check_exposition(p);
    AT_CHECK_CONTAINS(p, "# TYPE autotls_certificate_not_after_seconds gauge\n");
    AT_CHECK_CONTAINS(p, "autotls_certificate_not_after_seconds{id=\"evil_ec256\",name=\"<script>alert(\\\"x\\\")</script>.example\"} 1756512000\n");
    AT_CHECK_CONTAINS(p, "autotls_certificate_not_before_seconds{id=\"evil_ec256\",");
    AT_CHECK_CONTAINS(p, "autotls_renewal_due_seconds{id=\"evil_ec256\",name=\"<script>alert(\\\"x\\\")</script>.example\"} 1753920000\n");
    AT_CHECK_CONTAINS(p, "autotls_certificate_failures{id=\"evil_ec256\",name=\"<script>alert(\\\"x\\\")</script>.example\"} 2\n");
    AT_CHECK_CONTAINS(p, "autotls_certificate_failures{id=\"plain_rsa2048\",name=\"plain.example\"} 0\n");
    AT_CHECK_CONTAINS(p, "autotls_certificate_state{id=\"plain_rsa2048\",name=\"plain.example\",state=\"pending\"} 1\n");
    AT_CHECK_CONTAINS(p, "autotls_certificate_state{id=\"plain_rsa2048\",name=\"plain.example\",state=\"valid\"} 0\n");
    AT_CHECK_CONTAINS(p, "autotls_certificate_info{id=\"evil_ec256\",name=\"<script>alert(\\\"x\\\")</script>.example\","
                         "key_type=\"ec:P-256\",issuer=\"Evil <CA> & 'Co'\",serial=\"0a1b\",ca=\"https://ca.example/dir\"} 1\n");
    AT_CHECK_CONTAINS(p, "autotls_certificate_next_attempt_seconds{id=\"plain_rsa2048\",name=\"plain.example\"} 1749988800\n");
    /* a certificate without validity has no not_after sample */
    AT_CHECK(strstr(p, "autotls_certificate_not_after_seconds{id=\"plain_rsa2048\"") == NULL);
    /* the hostile state is 0 everywhere (it is none of the five) */
    AT_CHECK(strstr(p, "name=\"<script>alert(\\\"x\\\")</script>.example\",state=\"valid\"} 1") == NULL);
    /* each family's HELP/TYPE appears once */
    AT_CHECK(strstr(strstr(p, "# TYPE autotls_certificate_state") + 1, "# TYPE autotls_certificate_state") == NULL);
    json_decref(st);
    at_buf_free(&b);

    /* escaping of a name with a backslash, a quote and a newline */
    st = json_pack("{s:s, s:[{s:s, s:[s], s:s, s:i}]}", "generated_at", "2025-06-15T12:00:00Z",
                   "certificates", "id", "x", "names", "a\\b\"c\nd", "state", "valid", "failures", 1);
    AT_CHECK_INT(at_status_render_prometheus(st, &b), 0);
    check_exposition(at_buf_str(&b));
    AT_CHECK_CONTAINS(at_buf_str(&b), "autotls_certificate_failures{id=\"x\",name=\"a\\\\b\\\"c\\nd\"} 1\n");
    json_decref(st);
    at_buf_free(&b);
}

static void t_render_query(void)
{
    json_t *st = hostile_status();
    at_buf b = AT_BUF_INIT;
    const char *ct = NULL;
    static const struct { const char *q, *ct, *start; } cases[] = {
        { "format=json", "application/json", "{" },
        { "a=1&format=json&b=2", "application/json", "{" },
        { "format=prometheus", "text/plain; version=0.0.4; charset=utf-8", "# HELP" },
        { "format=metrics", "text/plain; version=0.0.4; charset=utf-8", "# HELP" },
        { NULL, "text/html; charset=utf-8", "<!DOCTYPE html>" },
        { "", "text/html; charset=utf-8", "<!DOCTYPE html>" },
        { "format=jsonx", "text/html; charset=utf-8", "<!DOCTYPE html>" },
        { "xformat=json", "text/html; charset=utf-8", "<!DOCTYPE html>" },
        { "format=", "text/html; charset=utf-8", "<!DOCTYPE html>" },
        { "format=json&format=prometheus", "application/json", "{" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        at_buf_reset(&b);
        ct = NULL;
        AT_CHECK_INT(at_status_render_query(st, cases[i].q, &b, &ct), 0);
        AT_CHECK_STR(ct, cases[i].ct);
        AT_CHECK_MSG(strncmp(at_buf_str(&b), cases[i].start, strlen(cases[i].start)) == 0,
                     "query %s: starts with %.20s", cases[i].q ? cases[i].q : "(null)", at_buf_str(&b));
    }
    json_decref(st);
    at_buf_free(&b);
}

static void t_render_limits(void)
{
    json_t *st = hostile_status();
    at_buf b = AT_BUF_INIT;

    /* A buffer that cannot hold the page: failure, not a truncated page. */
    b.max = 100;
    AT_CHECK(at_status_render_html(st, &b) != 0);
    at_buf_free(&b);
    b.max = 10;
    AT_CHECK(at_status_render_json(st, &b) != 0);
    at_buf_free(&b);
    b.max = 10;
    AT_CHECK(at_status_render_prometheus(st, &b) != 0);
    at_buf_free(&b);
    json_decref(st);
}

static const at_test_case cases[] = {
    AT_CASE(t_collect_states),
    AT_CASE(t_collect_damaged),
    AT_CASE(t_collect_no_store),
    AT_CASE(t_render_json),
    AT_CASE(t_render_html_escaping),
    AT_CASE(t_render_html_server_and_empty),
    AT_CASE(t_render_prometheus),
    AT_CASE(t_render_query),
    AT_CASE(t_render_limits),
    AT_CASE_END
};

int main(int argc, char **argv) { return at_test_main(argc, argv, cases); }
