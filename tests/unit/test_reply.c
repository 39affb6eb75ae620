/*
 * Reply tests: the HTTP answers both modules send (HTTP-01, the 503 page,
 * the renew handler, the status page) and the "server" object of the
 * status document, checked byte for byte where the bytes are the contract.
 */
#include "at_test.h"

#include <stdlib.h>
#include <string.h>

#include "at_reply.h"
#include "at_status.h"

static at_conf *two_sites(const char *store_dir)
{
    static const char *const a[] = { "a.test", "www.a.test" };
    static const char *const w[] = { "*.w.test" };
    static const char *hook = "/bin/true";
    static const at_challenge_type dns = AT_CHAL_DNS01;
    at_conf *conf = at_conf_new();
    at_site_conf site;
    at_error err = AT_ERROR_INIT;

    memset(&site, 0, sizeof(site));
    site.site = "a.test:443";
    site.names = a;
    site.nnames = 2;
    site.ca.url = (char *)"https://127.0.0.1:9/dir";
    site.ca.accept_terms = 1;
    AT_CHECK_OK(at_conf_add_site(conf, &site, &err), &err);
    site.site = "w.test:443";
    site.names = w;
    site.nnames = 1;
    site.challenges = &dns;
    site.nchallenges = 1;
    site.dns01_command = hook;
    AT_CHECK_OK(at_conf_add_site(conf, &site, &err), &err);
    free(conf->store_dir);
    conf->store_dir = strdup(store_dir);
    return conf;
}

/* ------------------------------------------------------------- HTTP-01 */

static void t_http01(void)
{
    at_error err = AT_ERROR_INIT;
    at_live *lv = at_live_new_private(AT_LIVE_MIN_SIZE, &err);
    at_reply rp = AT_REPLY_INIT;
    static const char ok[] = "/.well-known/acme-challenge/tok_en-1";

    AT_CHECK_OK(at_live_put_http01(lv, "tok_en-1", "tok_en-1.thumb", &err), &err);
    AT_CHECK_INT(at_reply_http01(&rp, lv, ok, strlen(ok), 1), AT_HTTP01_ANSWER);
    AT_CHECK_INT(rp.status, 200);
    AT_CHECK_STR(rp.content_type, "text/plain");
    AT_CHECK_STR(at_buf_str(&rp.body), "tok_en-1.thumb");
    AT_CHECK(rp.header == NULL);

    AT_CHECK_INT(at_reply_http01(&rp, lv, ok, strlen(ok), 0), AT_HTTP01_ANSWER);
    AT_CHECK_INT(rp.status, 405);
    AT_CHECK_STR(at_buf_str(&rp.body), "Use GET.\n");
    AT_CHECK_STR(rp.header, "Allow");
    AT_CHECK_STR(rp.header_value, "GET, HEAD");

    /* Unknown and malformed tokens: 404 without a lookup; the length counts. */
    AT_CHECK_INT(at_reply_http01(&rp, lv, "/.well-known/acme-challenge/other", 33, 1), AT_HTTP01_NOTFOUND);
    AT_CHECK_INT(rp.status, 404);
    AT_CHECK_STR(at_buf_str(&rp.body), "No such ACME challenge.\n");
    AT_CHECK(rp.header == NULL);
    AT_CHECK_INT(at_reply_http01(&rp, lv, ok, strlen(ok) - 1, 1), AT_HTTP01_NOTFOUND);
    AT_CHECK_INT(at_reply_http01(&rp, lv, "/.well-known/acme-challenge/%2e%2e", 34, 1), AT_HTTP01_NOTFOUND);

    /* Anything else is the server's: the reply is left alone. */
    at_reply_free(&rp);
    AT_CHECK_INT(at_reply_http01(&rp, lv, "/index.html", 11, 1), AT_HTTP01_PASS);
    AT_CHECK_INT(rp.status, 0);
    AT_CHECK_INT(rp.body.len, 0);
    at_reply_free(&rp);
    at_live_free_private(lv);
}

/* ------------------------------------------------------------ 503 page */

static void t_waiting_page(void)
{
    at_reply rp = AT_REPLY_INIT;

    AT_CHECK_INT(at_reply_waiting(&rp, "a.test"), 0);
    AT_CHECK_INT(rp.status, 503);
    AT_CHECK_STR(rp.content_type, "text/html; charset=utf-8");
    AT_CHECK_STR(rp.header, "Retry-After");
    AT_CHECK_STR(rp.header_value, "10");
    AT_CHECK_STR(at_buf_str(&rp.body),
                 "<!DOCTYPE html>\n<html><head><title>Certificate being obtained</title></head>\n"
                 "<body><h1>Certificate being obtained</h1>\n"
                 "<p>The HTTPS certificate for <b>a.test</b> is being obtained from the certificate "
                 "authority right now. This site will be available in a moment; please try again "
                 "shortly.</p>\n<p>The certificate you were shown for this request is a temporary "
                 "placeholder.</p>\n</body></html>\n");
    /* Whatever the name, it cannot open markup. */
    AT_CHECK_INT(at_reply_waiting(&rp, "<x&\"y>"), 0);
    AT_CHECK_CONTAINS(at_buf_str(&rp.body), "<b>&lt;x&amp;&quot;y&gt;</b>");
    at_reply_free(&rp);
}

static void t_text_and_error(void)
{
    at_reply rp = AT_REPLY_INIT;

    AT_CHECK_INT(at_reply_text(&rp, 200, "text/plain", "nothing here\n"), 0);
    AT_CHECK_INT(rp.status, 200);
    AT_CHECK_STR(at_buf_str(&rp.body), "nothing here\n");
    AT_CHECK_INT(at_reply_error(&rp, 404, "no \"such\" thing"), 0);
    AT_CHECK_INT(rp.status, 404);
    AT_CHECK_STR(rp.content_type, "application/json");
    AT_CHECK_STR(at_buf_str(&rp.body), "{\"error\":\"no \\\"such\\\" thing\"}\n");
    at_reply_free(&rp);
}

/* ------------------------------------------------------- renew handler */

static void renew(at_conf *conf, at_renew_ctl *ctl, const char *query, int status,
                  const char *body, const char *queued)
{
    at_reply rp = AT_REPLY_INIT;
    char what[AT_RENEW_REQ_MAX];

    AT_CHECK_INT(at_reply_renew(&rp, conf, ctl, query, what, sizeof(what)), 0);
    AT_CHECK_MSG(rp.status == status, "%s: status %d, expected %d", query ? query : "(null)",
                 rp.status, status);
    AT_CHECK_STR(rp.content_type, "application/json");
    AT_CHECK_STR(at_buf_str(&rp.body), body);
    AT_CHECK_STR(what, queued);
    at_reply_free(&rp);
}

static void t_renew(void)
{
    at_conf *conf = two_sites(at_test_tmpdir());
    void *mem = calloc(1, at_renew_ctl_size());
    at_renew_ctl *ctl = at_renew_ctl_format(mem, at_renew_ctl_size(), NULL);
    char got[AT_RENEW_QUEUE][AT_RENEW_REQ_MAX], q[64], id[300];
    size_t n;

    renew(conf, ctl, "name=www.a.test", 202, "{\"renew\":\"www.a.test\",\"status\":\"queued\"}\n", "www.a.test");
    /* Any case, a trailing dot, percent-encoding, other arguments around it. */
    renew(conf, ctl, "x=1&name=WWW.A.Test.&y", 202, "{\"renew\":\"www.a.test\",\"status\":\"queued\"}\n", "www.a.test");
    renew(conf, ctl, "name=%61.test", 202, "{\"renew\":\"a.test\",\"status\":\"queued\"}\n", "a.test");
    renew(conf, ctl, "name=ALL", 202, "{\"renew\":\"all\",\"status\":\"queued\"}\n", "all");
    /* A name under a managed wildcard, and a certificate id as it is. */
    renew(conf, ctl, "name=x.w.test", 202, "{\"renew\":\"x.w.test\",\"status\":\"queued\"}\n", "x.w.test");
    snprintf(q, sizeof(q), "name=%s", conf->certs[0].id);
    snprintf(id, sizeof(id), "{\"renew\":\"%s\",\"status\":\"queued\"}\n", conf->certs[0].id);
    renew(conf, ctl, q, 202, id, conf->certs[0].id);

    n = at_renew_ctl_take(ctl, got, AT_RENEW_QUEUE);
    AT_CHECK_INT(n, 5);                    /* www.a.test was waiting already the second time */
    AT_CHECK_STR(got[0], "www.a.test");
    AT_CHECK_STR(got[1], "a.test");
    AT_CHECK_STR(got[2], "all");
    AT_CHECK_STR(got[3], "x.w.test");
    AT_CHECK_STR(got[4], conf->certs[0].id);

    /* What cannot be queued. */
    static const char say[] = "{\"error\":\"say what to renew: ?name=NAME (a managed name or "
                              "certificate id) or ?name=all\"}\n";
    renew(conf, ctl, NULL, 400, say, "");
    renew(conf, ctl, "", 400, say, "");
    renew(conf, ctl, "name=", 400, say, "");
    renew(conf, ctl, "names=a.test", 400, say, "");
    renew(conf, ctl, "name=a%00.test", 400, say, "");
    renew(conf, ctl, "name=nobody.test", 404,
          "{\"error\":\"no managed certificate has this name or id\",\"name\":\"nobody.test\"}\n", "");
    renew(conf, ctl, "name=a+test", 404,
          "{\"error\":\"no managed certificate has this name or id\",\"name\":\"a test\"}\n", "");
    renew(conf, ctl, "name=w.test", 404,
          "{\"error\":\"no managed certificate has this name or id\",\"name\":\"w.test\"}\n", "");
    AT_CHECK_INT(at_renew_ctl_take(ctl, got, AT_RENEW_QUEUE), 0);

    /* A full queue: 503, and nothing queued. */
    for (int i = 0; i < AT_RENEW_QUEUE; i++) {
        snprintf(q, sizeof(q), "n%d.w.test", i);
        AT_CHECK_INT(at_renew_ctl_request(ctl, q), 0);
    }
    renew(conf, ctl, "name=a.test", 503,
          "{\"error\":\"too many renew requests are waiting; try again shortly\"}\n", "");
    free(mem);
    at_conf_free(conf);
}

/* --------------------------------------------------------- status page */

static void t_status_server_object(void)
{
    at_error err = AT_ERROR_INIT;
    at_live *lv = at_live_new_private(AT_LIVE_MIN_SIZE, &err);
    json_t *doc = json_object();
    at_status_server srv = { "nginx", "1.22.1", 4242, 1700000000, lv };
    char *text;

    AT_CHECK_OK(at_live_put_http01(lv, "tok", "tok.x", &err), &err);
    AT_CHECK_INT(at_status_set_server(doc, &srv), 0);
    text = json_dumps(json_object_get(doc, "server"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    AT_CHECK_CONTAINS(text, "{\"software\":\"nginx\",\"version\":\"1.22.1\",\"renewal_pid\":4242,"
                            "\"renewal_since\":\"2023-11-14T22:13:20Z\",\"shared_memory\":{\"size\":16384,");
    AT_CHECK_CONTAINS(text, "\"certificates\":0,\"pending_http01\":1,\"pending_tlsalpn01\":0,");
    free(text);

    /* Nobody renews, no version, no shared memory. */
    srv.version = NULL;
    srv.renewal_pid = 0;
    srv.live = NULL;
    AT_CHECK_INT(at_status_set_server(doc, &srv), 0);
    text = json_dumps(json_object_get(doc, "server"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    AT_CHECK_STR(text, "{\"software\":\"nginx\",\"version\":null,\"renewal_pid\":null,\"renewal_since\":null}");
    free(text);
    AT_CHECK_INT(at_status_set_server(NULL, &srv), -1);
    json_decref(doc);
    at_live_free_private(lv);
}

static void t_status_page(void)
{
    char store[512];
    at_conf *conf;
    at_reply rp = AT_REPLY_INIT;
    at_error err = AT_ERROR_INIT;
    at_status_server srv = { "apache", "2.4.62", 0, 0, NULL };
    json_t *doc;

    snprintf(store, sizeof(store), "%s/status-store", at_test_tmpdir());
    conf = two_sites(store);
    AT_CHECK_OK(at_reply_status(&rp, conf, store, &srv, "format=json", &err), &err);
    AT_CHECK_INT(rp.status, 200);
    AT_CHECK_STR(rp.content_type, "application/json");
    doc = json_loads(at_buf_str(&rp.body), 0, NULL);
    AT_CHECK(doc != NULL);
    AT_CHECK_INT(json_array_size(json_object_get(doc, "certificates")), 2);
    AT_CHECK_STR(json_string_value(json_object_get(json_object_get(doc, "server"), "software")), "apache");
    AT_CHECK_STR(json_string_value(json_object_get(json_object_get(doc, "server"), "version")), "2.4.62");
    json_decref(doc);

    AT_CHECK_OK(at_reply_status(&rp, conf, store, &srv, NULL, &err), &err);
    AT_CHECK_STR(rp.content_type, "text/html; charset=utf-8");
    AT_CHECK_CONTAINS(at_buf_str(&rp.body), "www.a.test");
    AT_CHECK_CONTAINS(at_buf_str(&rp.body), "2.4.62");

    /* A store that cannot be opened: an error that says where, and rp untouched. */
    at_reply_free(&rp);
    AT_CHECK_INT(at_reply_status(&rp, conf, "/proc/nope/store", &srv, NULL, &err), -1);
    AT_CHECK_CONTAINS(err.msg, "reading the status from /proc/nope/store failed: ");
    AT_CHECK_INT(rp.status, 0);
    at_error_clear(&err);
    at_reply_free(&rp);
    at_conf_free(conf);
}

static const at_test_case cases[] = {
    AT_CASE(t_http01),
    AT_CASE(t_waiting_page),
    AT_CASE(t_text_and_error),
    AT_CASE(t_renew),
    AT_CASE(t_status_server_object),
    AT_CASE(t_status_page),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    return at_test_main(argc, argv, cases);
}
