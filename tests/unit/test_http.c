/* Unit tests for at_http: header parsing, Link headers, URL resolution,
 * Retry-After and copying. */
#include "at_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "at_http.h"

static void hdr(at_http_resp *r, const char *line, const char *base)
{
    AT_CHECK_INT(at_http_resp_header(r, line, strlen(line), base), 0);
}

static void t_basic_headers(void)
{
    at_http_resp r;
    at_http_resp_init(&r);
    hdr(&r, "HTTP/1.1 201 Created\r\n", "https://ca.test/acme/new-order");
    hdr(&r, "Content-Type: Application/JSON; charset=utf-8\r\n", "https://ca.test/acme/new-order");
    hdr(&r, "location:  /acme/order/42\r\n", "https://ca.test/acme/new-order");
    hdr(&r, "Replay-Nonce: abc_DEF-123\r\n", NULL);
    hdr(&r, "RETRY-AFTER: 120\r\n", NULL);
    hdr(&r, "X-Unknown: whatever\r\n", NULL);
    hdr(&r, "\r\n", NULL);
    AT_CHECK_STR(r.content_type, "application/json");
    AT_CHECK_STR(r.location, "https://ca.test/acme/order/42");
    AT_CHECK_STR(r.replay_nonce, "abc_DEF-123");
    AT_CHECK_STR(r.retry_after, "120");
    AT_CHECK_INT(at_http_retry_after(&r, 1000), 120);
    /* A later header of the same name replaces the earlier value. */
    hdr(&r, "Replay-Nonce: second\r\n", NULL);
    AT_CHECK_STR(r.replay_nonce, "second");
    at_http_resp_free(&r);
    AT_CHECK(r.content_type == NULL && r.nlinks == 0);
}

static void t_links(void)
{
    at_http_resp r;
    const char *base = "https://ca.test/acme/cert/7";
    at_http_resp_init(&r);
    hdr(&r, "Link: <https://ca.test/acme/cert/7/1>;rel=\"alternate\", <./7/2>; rel=alternate\r\n", base);
    hdr(&r, "Link: <https://ca.test/dir>;rel=\"index\"\r\n", base);
    hdr(&r, "Link: <https://ca.test/a,b>; title=\"x, y; z\"; rel=\"up Alternate\"\r\n", base);
    hdr(&r, "Link: garbage, <https://ca.test/tos>;rel=\"terms-of-service\"\r\n", base);
    hdr(&r, "Link: <https://ca.test/norel>; title=foo\r\n", base);
    hdr(&r, "Link: <unterminated\r\n", base);
    AT_CHECK_INT(r.nlinks, 6);
    AT_CHECK_STR(r.links[0].url, "https://ca.test/acme/cert/7/1");
    AT_CHECK_STR(r.links[0].rel, "alternate");
    AT_CHECK_STR(r.links[1].url, "https://ca.test/acme/cert/7/2");
    AT_CHECK_STR(at_http_link_rel(&r, "index"), "https://ca.test/dir");
    AT_CHECK_STR(at_http_link_rel(&r, "up"), "https://ca.test/a,b");
    AT_CHECK_STR(r.links[4].rel, "alternate");   /* "Alternate" lowercased, second rel token */
    AT_CHECK_STR(at_http_link_rel(&r, "terms-of-service"), "https://ca.test/tos");
    AT_CHECK(at_http_link_rel(&r, "next") == NULL);
    at_http_resp_free(&r);
}

static void t_link_flood(void)
{
    /* Thousands of links in one header are capped, not all kept. */
    at_http_resp r;
    size_t cap = 200000, len = 0;
    char *line = malloc(cap);
    at_http_resp_init(&r);
    len += (size_t)snprintf(line, cap, "Link: ");
    for (int i = 0; i < 5000 && len + 64 < cap; i++)
        len += (size_t)snprintf(line + len, cap - len, "<https://ca.test/%d>;rel=alternate, ", i);
    AT_CHECK_INT(at_http_resp_header(&r, line, len, NULL), 0);
    AT_CHECK(r.nlinks > 0 && r.nlinks <= 64);
    at_http_resp_free(&r);
    free(line);
}

static void t_resolve(void)
{
    static const struct { const char *base, *ref, *want; } v[] = {
        /* RFC 3986 §5.4.1 normal examples */
        { "http://a/b/c/d;p?q", "g", "http://a/b/c/g" },
        { "http://a/b/c/d;p?q", "./g", "http://a/b/c/g" },
        { "http://a/b/c/d;p?q", "g/", "http://a/b/c/g/" },
        { "http://a/b/c/d;p?q", "/g", "http://a/g" },
        { "http://a/b/c/d;p?q", "//g", "http://g" },
        { "http://a/b/c/d;p?q", "?y", "http://a/b/c/d;p?y" },
        { "http://a/b/c/d;p?q", "g?y", "http://a/b/c/g?y" },
        { "http://a/b/c/d;p?q", "#s", "http://a/b/c/d;p?q#s" },
        { "http://a/b/c/d;p?q", "g#s", "http://a/b/c/g#s" },
        { "http://a/b/c/d;p?q", "", "http://a/b/c/d;p?q" },
        { "http://a/b/c/d;p?q", ".", "http://a/b/c/" },
        { "http://a/b/c/d;p?q", "./", "http://a/b/c/" },
        { "http://a/b/c/d;p?q", "..", "http://a/b/" },
        { "http://a/b/c/d;p?q", "../", "http://a/b/" },
        { "http://a/b/c/d;p?q", "../g", "http://a/b/g" },
        { "http://a/b/c/d;p?q", "../..", "http://a/" },
        { "http://a/b/c/d;p?q", "../../g", "http://a/g" },
        /* abnormal examples */
        { "http://a/b/c/d;p?q", "../../../g", "http://a/g" },
        { "http://a/b/c/d;p?q", "/./g", "http://a/g" },
        { "http://a/b/c/d;p?q", "/../g", "http://a/g" },
        { "http://a/b/c/d;p?q", "g.", "http://a/b/c/g." },
        { "http://a/b/c/d;p?q", "./g/.", "http://a/b/c/g/" },
        { "http://a/b/c/d;p?q", "g/../h", "http://a/b/c/h" },
        /* what CAs do */
        { "https://ca.test/dir", "https://other.test/x", "https://other.test/x" },
        { "https://ca.test:14000/dir", "/acme/new-order", "https://ca.test:14000/acme/new-order" },
        { "https://ca.test", "acme/x", "https://ca.test/acme/x" },
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char *got = at_http_resolve(v[i].base, v[i].ref);
        AT_CHECK_MSG(got && strcmp(got, v[i].want) == 0, "resolve(%s, %s) = %s, expected %s",
                     v[i].base, v[i].ref, got ? got : "(null)", v[i].want);
        free(got);
    }
    AT_CHECK(at_http_resolve("https://x/", NULL) == NULL);
    {
        char *s = at_http_resolve(NULL, "rel");
        AT_CHECK_STR(s, "rel");
        free(s);
    }
}

static void t_retry_after(void)
{
    at_http_resp r;
    at_http_resp_init(&r);
    AT_CHECK_INT(at_http_retry_after(&r, 0), -1);
    hdr(&r, "Retry-After: Thu, 01 Jan 1970 00:01:40 GMT\r\n", NULL);
    AT_CHECK_INT(at_http_retry_after(&r, 40), 60);
    hdr(&r, "Retry-After: soon\r\n", NULL);
    AT_CHECK_INT(at_http_retry_after(&r, 40), -1);
    at_http_resp_free(&r);
}

static void t_copy(void)
{
    at_http_resp a, b;
    at_http_resp_init(&a);
    a.status = 200;
    hdr(&a, "Content-Type: application/pem-certificate-chain\r\n", NULL);
    hdr(&a, "Link: <https://ca.test/alt>;rel=alternate\r\n", NULL);
    a.body = strdup("-----BEGIN");
    a.body_len = strlen(a.body);
    AT_CHECK_INT(at_http_resp_copy(&b, &a), 0);
    at_http_resp_free(&a);
    AT_CHECK_INT(b.status, 200);
    AT_CHECK_STR(b.content_type, "application/pem-certificate-chain");
    AT_CHECK_STR(b.body, "-----BEGIN");
    AT_CHECK_INT(b.nlinks, 1);
    AT_CHECK_STR(at_http_link_rel(&b, "alternate"), "https://ca.test/alt");
    at_http_resp_free(&b);
}

static void t_req_free(void)
{
    at_http_req q;
    memset(&q, 0, sizeof(q));
    q.url = strdup("https://x");
    q.body = strdup("{}");
    at_http_req_free(&q);
    AT_CHECK(q.url == NULL && q.body == NULL);
    at_http_req_free(NULL);
}

static const at_test_case cases[] = {
    AT_CASE(t_basic_headers),
    AT_CASE(t_links),
    AT_CASE(t_link_flood),
    AT_CASE(t_resolve),
    AT_CASE(t_retry_after),
    AT_CASE(t_copy),
    AT_CASE(t_req_free),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    return at_test_main(argc, argv, cases);
}
