/* Unit tests for the ACME directory, problem documents, the client's nonce
 * pool and the exchange (nonce fetch, badNonce re-sign, transient retries),
 * driven by hand-made responses and by the fake CA. */
#include "at_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "at_acme.h"
#include "at_buf.h"
#include "at_jose.h"
#include "at_json.h"
#include "at_key.h"
#include "at_fake_ca.h"

#define DIR_URL "https://ca.test/dir"

static void resp_set(at_http_resp *r, long status, const char *ctype, const char *body)
{
    at_http_resp_init(r);
    r->status = status;
    r->content_type = ctype ? strdup(ctype) : NULL;
    if (body) {
        r->body = strdup(body);
        r->body_len = strlen(body);
    }
}

static void resp_hdr(at_http_resp *r, const char *line)
{
    at_http_resp_header(r, line, strlen(line), DIR_URL);
}

static const char *full_dir =
    "{\"newNonce\":\"https://ca.test/nonce\",\"newAccount\":\"https://ca.test/acct\","
    "\"newOrder\":\"/order\",\"newAuthz\":\"https://ca.test/authz\","
    "\"revokeCert\":\"https://ca.test/revoke\",\"keyChange\":\"https://ca.test/kc\","
    "\"renewalInfo\":\"https://ca.test/ari/\","
    "\"meta\":{\"termsOfService\":\"https://ca.test/tos.pdf\",\"website\":\"https://ca.test\","
    "\"externalAccountRequired\":true,\"profiles\":{\"classic\":\"the usual\",\"shortlived\":\"6 days\"}}}";

/* ---------------------------------------------------------------- directory */

static void t_dir_full(void)
{
    at_acme_dir d;
    at_http_resp r;
    at_error err = AT_ERROR_INIT;
    resp_set(&r, 200, "application/json", full_dir);
    AT_CHECK_OK(at_acme_dir_parse(&d, DIR_URL, &r, &err), &err);
    AT_CHECK_STR(d.url, DIR_URL);
    AT_CHECK_STR(d.new_nonce, "https://ca.test/nonce");
    AT_CHECK_STR(d.new_order, "https://ca.test/order");   /* resolved */
    AT_CHECK_STR(d.new_authz, "https://ca.test/authz");
    AT_CHECK_STR(d.key_change, "https://ca.test/kc");
    AT_CHECK_STR(d.renewal_info, "https://ca.test/ari/");
    AT_CHECK_STR(d.terms_of_service, "https://ca.test/tos.pdf");
    AT_CHECK_STR(d.website, "https://ca.test");
    AT_CHECK_INT(d.external_account_required, 1);
    AT_CHECK_INT(d.nprofiles, 2);
    AT_CHECK(at_acme_dir_has_profile(&d, "shortlived"));
    AT_CHECK(!at_acme_dir_has_profile(&d, "tlsserver"));
    at_acme_dir_free(&d);
    at_http_resp_free(&r);
}

static void t_dir_minimal(void)
{
    at_acme_dir d;
    at_http_resp r;
    at_error err = AT_ERROR_INIT;
    resp_set(&r, 200, "application/json",
             "{\"newNonce\":\"https://ca.test/n\",\"newAccount\":\"https://ca.test/a\","
             "\"newOrder\":\"https://ca.test/o\",\"meta\":\"not an object\",\"newAuthz\":7}");
    AT_CHECK_OK(at_acme_dir_parse(&d, DIR_URL, &r, &err), &err);
    AT_CHECK(d.new_authz == NULL);       /* wrong type = absent */
    AT_CHECK(d.renewal_info == NULL && d.terms_of_service == NULL);
    AT_CHECK_INT(d.external_account_required, 0);
    AT_CHECK_INT(d.nprofiles, 0);
    at_acme_dir_free(&d);
    at_http_resp_free(&r);
}

static void t_dir_missing(void)
{
    at_acme_dir d;
    at_http_resp r;
    at_error err = AT_ERROR_INIT;
    resp_set(&r, 200, "application/json", "{\"newAccount\":\"https://ca.test/a\",\"newNonce\":5}");
    AT_CHECK_INT(at_acme_dir_parse(&d, DIR_URL, &r, &err), -1);
    AT_CHECK_INT(err.code, AT_ERR_PROTOCOL);
    AT_CHECK_CONTAINS(err.msg, DIR_URL);
    AT_CHECK_CONTAINS(err.msg, "newNonce and newOrder");
    AT_CHECK_CONTAINS(err.msg, "check the CA URL");
    at_error_clear(&err);
    at_http_resp_free(&r);
}

static void t_dir_malformed(void)
{
    static const char *bodies[] = { "<html>hello</html>", "[1,2,3]", "", "{\"newNonce\":", "null" };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        at_acme_dir d;
        at_http_resp r;
        at_error err = AT_ERROR_INIT;
        resp_set(&r, 200, "text/html", bodies[i]);
        AT_CHECK_INT(at_acme_dir_parse(&d, DIR_URL, &r, &err), -1);
        AT_CHECK(err.code != AT_OK);
        AT_CHECK_CONTAINS(err.msg, DIR_URL);
        at_error_clear(&err);
        at_http_resp_free(&r);
    }
    {
        at_acme_dir d;
        at_http_resp r;
        at_error err = AT_ERROR_INIT;
        resp_set(&r, 404, "text/html", "not found");
        AT_CHECK_INT(at_acme_dir_parse(&d, DIR_URL, &r, &err), -1);
        AT_CHECK_CONTAINS(err.msg, "HTTP 404");
        at_error_clear(&err);
        at_http_resp_free(&r);
    }
}

static void t_dir_many_profiles(void)
{
    at_buf b = AT_BUF_INIT;
    at_acme_dir d;
    at_http_resp r;
    at_error err = AT_ERROR_INIT;
    at_buf_puts(&b, "{\"newNonce\":\"https://ca.test/n\",\"newAccount\":\"https://ca.test/a\","
                    "\"newOrder\":\"https://ca.test/o\",\"meta\":{\"profiles\":{");
    for (int i = 0; i < 5000; i++)
        at_buf_printf(&b, "%s\"p%d\":%s", i ? "," : "", i, i % 2 ? "\"d\"" : "17");
    at_buf_puts(&b, "}}}");
    resp_set(&r, 200, "application/json", at_buf_str(&b));
    AT_CHECK_OK(at_acme_dir_parse(&d, DIR_URL, &r, &err), &err);
    AT_CHECK(d.nprofiles > 0 && d.nprofiles <= 64);
    at_acme_dir_free(&d);
    at_http_resp_free(&r);
    at_buf_free(&b);
}

/* ------------------------------------------------------------------ problems */

static void t_problem_basic(void)
{
    at_http_resp r;
    at_error err = AT_ERROR_INIT;
    resp_set(&r, 403, "application/problem+json",
             "{\"type\":\"urn:ietf:params:acme:error:caa\",\"detail\":\"CAA record forbids issuance\",\"status\":403}");
    AT_CHECK_INT(at_acme_problem(&r, "new order for example.com", 0, &err), -1);
    AT_CHECK_INT(err.code, AT_ERR_CA);
    AT_CHECK_INT(err.http_status, 403);
    AT_CHECK_INT(err.retry_after, -1);
    AT_CHECK_CONTAINS(err.msg, "new order for example.com: ");
    AT_CHECK_CONTAINS(err.msg, "CAA record forbids issuance");
    AT_CHECK_CONTAINS(err.msg, "(caa, HTTP 403)");
    AT_CHECK_CONTAINS(err.msg, "add a CAA record");
    AT_CHECK(err.problem && json_is_object(err.problem));
    AT_CHECK_STR(at_acme_problem_type(&err), "caa");
    at_error_clear(&err);
    at_http_resp_free(&r);

    resp_set(&r, 200, "application/json", "{}");
    AT_CHECK_INT(at_acme_problem(&r, "x", 0, &err), 0);
    AT_CHECK_INT(err.code, AT_OK);
    at_http_resp_free(&r);
}

static void t_problem_subproblems(void)
{
    at_buf b = AT_BUF_INIT;
    at_http_resp r;
    at_error err = AT_ERROR_INIT;
    at_buf_puts(&b, "{\"type\":\"urn:ietf:params:acme:error:rejectedIdentifier\","
                    "\"detail\":\"Some names were refused\",\"subproblems\":[");
    for (int i = 0; i < 7; i++)
        at_buf_printf(&b, "%s{\"type\":\"urn:ietf:params:acme:error:rejectedIdentifier\","
                          "\"detail\":\"policy forbids\",\"identifier\":{\"type\":\"dns\",\"value\":\"n%d.example\"}}",
                      i ? "," : "", i);
    at_buf_puts(&b, ",17,\"x\"]}");
    resp_set(&r, 400, "application/problem+json", at_buf_str(&b));
    at_acme_problem(&r, "new order", 0, &err);
    AT_CHECK_CONTAINS(err.msg, "n0.example: policy forbids (rejectedIdentifier)");
    AT_CHECK_CONTAINS(err.msg, "n4.example");
    AT_CHECK(strstr(err.msg, "n5.example") == NULL);
    AT_CHECK_CONTAINS(err.msg, "and 4 more");   /* 2 more named + 2 garbage entries */
    AT_CHECK_INT(json_array_size(json_object_get(err.problem, "subproblems")), 9);
    at_error_clear(&err);
    at_http_resp_free(&r);
    at_buf_free(&b);
}

static void t_problem_ratelimit(void)
{
    at_http_resp r;
    at_error err = AT_ERROR_INIT;
    resp_set(&r, 429, "application/problem+json",
             "{\"type\":\"urn:ietf:params:acme:error:rateLimited\",\"detail\":\"too many certificates\"}");
    resp_hdr(&r, "Retry-After: 3600\r\n");
    at_acme_problem(&r, "new order", 1000, &err);
    AT_CHECK_INT(err.code, AT_ERR_RATELIMIT);
    AT_CHECK_INT(err.retry_after, 3600);
    AT_CHECK_CONTAINS(err.msg, "wait 3600 s");
    at_error_clear(&err);
    at_http_resp_free(&r);

    /* rateLimited type on another status, no Retry-After */
    resp_set(&r, 403, "application/problem+json",
             "{\"type\":\"urn:ietf:params:acme:error:rateLimited\",\"detail\":\"slow down\"}");
    at_acme_problem(&r, "x", 0, &err);
    AT_CHECK_INT(err.code, AT_ERR_RATELIMIT);
    AT_CHECK_INT(err.retry_after, -1);
    at_error_clear(&err);
    at_http_resp_free(&r);

    /* bare 429 from a proxy */
    resp_set(&r, 429, "text/plain", "Too Many Requests");
    at_acme_problem(&r, "x", 0, &err);
    AT_CHECK_INT(err.code, AT_ERR_RATELIMIT);
    AT_CHECK(err.problem == NULL);
    at_error_clear(&err);
    at_http_resp_free(&r);
}

static void t_problem_not_json(void)
{
    at_http_resp r;
    at_error err = AT_ERROR_INIT;
    char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "<html>\n<b>", 10);
    resp_set(&r, 502, "text/html", big);
    at_acme_problem(&r, "finalize", 0, &err);
    AT_CHECK_INT(err.code, AT_ERR_CA);
    AT_CHECK_INT(err.http_status, 502);
    AT_CHECK_CONTAINS(err.msg, "HTTP 502");
    AT_CHECK_CONTAINS(err.msg, "<html> <b>");    /* newline made harmless */
    AT_CHECK(strlen(err.msg) < 600);              /* quoted, truncated */
    AT_CHECK(err.problem == NULL);
    at_error_clear(&err);
    at_http_resp_free(&r);

    resp_set(&r, 500, NULL, NULL);
    at_acme_problem(&r, "finalize", 0, &err);
    AT_CHECK_CONTAINS(err.msg, "empty body");
    at_error_clear(&err);
    at_http_resp_free(&r);

    /* JSON that is not an object, and broken JSON with the right type */
    resp_set(&r, 400, "application/problem+json", "[\"x\"]");
    at_acme_problem(&r, "y", 0, &err);
    AT_CHECK(err.problem == NULL);
    AT_CHECK_CONTAINS(err.msg, "HTTP 400");
    at_error_clear(&err);
    at_http_resp_free(&r);
    resp_set(&r, 400, "application/problem+json", "{\"type\":");
    at_acme_problem(&r, "y", 0, &err);
    AT_CHECK(err.problem == NULL);
    AT_CHECK_CONTAINS(err.msg, "{\"type\":");
    at_error_clear(&err);
    at_http_resp_free(&r);
}

static void t_problem_user_action(void)
{
    at_http_resp r;
    at_error err = AT_ERROR_INIT;
    resp_set(&r, 403, "application/problem+json",
             "{\"type\":\"urn:ietf:params:acme:error:userActionRequired\",\"detail\":\"new terms\","
             "\"instance\":\"https://ca.test/agree?id=7\"}");
    at_acme_problem(&r, "new order", 0, &err);
    AT_CHECK_CONTAINS(err.msg, "visit https://ca.test/agree?id=7");
    at_error_clear(&err);
    at_http_resp_free(&r);

    resp_set(&r, 403, "application/problem+json",
             "{\"type\":\"urn:ietf:params:acme:error:userActionRequired\",\"detail\":\"new terms\"}");
    resp_hdr(&r, "Link: <https://ca.test/tos-v2.pdf>;rel=\"terms-of-service\"\r\n");
    at_acme_problem(&r, "new order", 0, &err);
    AT_CHECK_CONTAINS(err.msg, "visit https://ca.test/tos-v2.pdf");
    at_error_clear(&err);
    at_http_resp_free(&r);
}

static void t_problem_doc_fields(void)
{
    /* Wrong types in a problem document never crash and still produce a message. */
    static const char *docs[] = {
        "{\"type\":5,\"detail\":[1]}",
        "{\"type\":\"urn:ietf:params:acme:error:badSignatureAlgorithm\",\"detail\":\"no\",\"algorithms\":[\"ES256\",7,\"RS256\"]}",
        "{\"subproblems\":{\"a\":1}}",
        "{\"subproblems\":[{\"identifier\":\"x\",\"detail\":5}]}",
        "{\"detail\":\"line1\\nline2\\u0000after\"}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        at_http_resp r;
        at_error err = AT_ERROR_INIT;
        resp_set(&r, 400, "application/problem+json", docs[i]);
        AT_CHECK_INT(at_acme_problem(&r, "op", 0, &err), -1);
        AT_CHECK(err.msg[0] != '\0');
        AT_CHECK(strchr(err.msg, '\n') == NULL);
        if (i == 1)
            AT_CHECK_CONTAINS(err.msg, "accepts ES256");
        at_error_clear(&err);
        at_http_resp_free(&r);
    }
}

/* ------------------------------------------------------------ client, nonces */

static at_acme_client *client_with_dir(EVP_PKEY **key_out)
{
    at_error err = AT_ERROR_INIT;
    at_acme_client *c = at_acme_client_new(DIR_URL, &err);
    at_http_resp r;
    at_key_spec spec = AT_KEY_SPEC_DEFAULT;
    EVP_PKEY *key = at_key_generate(&spec, &err);
    resp_set(&r, 200, "application/json", full_dir);
    AT_CHECK_OK(at_acme_client_set_directory(c, &r, &err), &err);
    at_http_resp_free(&r);
    at_acme_client_set_account(c, key, "https://ca.test/acct/1");
    if (key_out)
        *key_out = key;
    else
        EVP_PKEY_free(key);
    return c;
}

static void t_client_basics(void)
{
    at_error err = AT_ERROR_INIT;
    at_acme_client *c = at_acme_client_new("", &err);
    AT_CHECK(c == NULL);
    AT_CHECK_INT(err.code, AT_ERR_CONFIG);
    at_error_clear(&err);
    c = at_acme_client_new(DIR_URL, &err);
    AT_CHECK_STR(at_acme_client_url(c), DIR_URL);
    AT_CHECK(at_acme_client_dir(c) == NULL);
    AT_CHECK(at_acme_client_kid(c) == NULL);
    for (int i = 0; i < 40; i++) {
        char n[32];
        snprintf(n, sizeof(n), "nonce%d", i);
        at_acme_client_nonce_push(c, n);
    }
    AT_CHECK(at_acme_client_nonce_count(c) > 0 && at_acme_client_nonce_count(c) <= 16);
    {
        size_t before = at_acme_client_nonce_count(c);
        at_acme_client_nonce_push(c, "bad nonce with spaces");
        at_acme_client_nonce_push(c, "");
        at_acme_client_nonce_push(c, NULL);
        AT_CHECK_INT(at_acme_client_nonce_count(c), before);
    }
    at_acme_client_free(c);
}

/* The nonce in the protected header of a signed request. */
static char *jws_nonce(const at_http_req *q)
{
    json_t *hdr = NULL;
    char *n = NULL;
    at_error err = AT_ERROR_INIT;
    if (at_jws_parse(q->body, q->body_len, &hdr, NULL, &err) == 0) {
        const char *s = at_json_str(hdr, "nonce");
        n = s ? strdup(s) : NULL;
    }
    json_decref(hdr);
    at_error_clear(&err);
    return n;
}

static void t_exch_get(void)
{
    at_acme_client *c = client_with_dir(NULL);
    at_acme_req rq = { AT_AREQ_GET, "https://ca.test/ari/x.y", NULL, NULL };
    at_acme_exch *x = at_acme_exch_new(c, &rq);
    at_http_req q;
    at_http_resp r;
    time_t until;
    at_error err = AT_ERROR_INIT;
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_SEND);
    AT_CHECK_INT(q.method, AT_HTTP_GET);
    AT_CHECK_STR(q.url, "https://ca.test/ari/x.y");
    AT_CHECK(q.body == NULL);
    at_http_req_free(&q);
    AT_CHECK(at_acme_exch_response(x) == NULL);
    resp_set(&r, 200, "application/json", "{}");
    resp_hdr(&r, "Replay-Nonce: fromget\r\n");
    at_acme_exch_feed(x, &r, NULL, 100);
    AT_CHECK(r.body == NULL);    /* moved into the exchange */
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_DONE);
    AT_CHECK_INT(at_acme_exch_response(x)->status, 200);
    AT_CHECK_INT(at_acme_client_nonce_count(c), 1);   /* taken from any response */
    at_acme_exch_free(x);
    at_acme_client_free(c);
}

static void t_exch_nonce_fetch(void)
{
    EVP_PKEY *key;
    at_acme_client *c = client_with_dir(&key);
    at_acme_req rq = { AT_AREQ_POST_KID, "https://ca.test/order", "{\"a\":1}", "application/json" };
    at_acme_exch *x = at_acme_exch_new(c, &rq);
    at_http_req q;
    at_http_resp r;
    time_t until;
    at_error err = AT_ERROR_INIT;
    char *n;

    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_SEND);
    AT_CHECK_INT(q.method, AT_HTTP_HEAD);
    AT_CHECK_STR(q.url, "https://ca.test/nonce");
    at_http_req_free(&q);
    resp_set(&r, 200, NULL, NULL);
    resp_hdr(&r, "Replay-Nonce: first-nonce\r\n");
    at_acme_exch_feed(x, &r, NULL, 100);
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_SEND);
    AT_CHECK_INT(q.method, AT_HTTP_POST);
    AT_CHECK_STR(q.content_type, "application/jose+json");
    AT_CHECK_STR(q.accept, "application/json");
    AT_CHECK_INT(at_jws_verify(key, q.body, q.body_len), 1);
    n = jws_nonce(&q);
    AT_CHECK_STR(n, "first-nonce");
    free(n);
    AT_CHECK_INT(at_acme_client_nonce_count(c), 0);
    at_http_req_free(&q);
    resp_set(&r, 201, "application/json", "{\"status\":\"pending\"}");
    resp_hdr(&r, "Replay-Nonce: second\r\n");
    at_acme_exch_feed(x, &r, NULL, 100);
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_DONE);
    AT_CHECK_INT(at_acme_exch_response(x)->status, 201);
    AT_CHECK_INT(at_acme_client_nonce_count(c), 1);
    at_acme_exch_free(x);

    /* With a nonce in the pool, no HEAD. */
    x = at_acme_exch_new(c, &rq);
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_SEND);
    AT_CHECK_INT(q.method, AT_HTTP_POST);
    n = jws_nonce(&q);
    AT_CHECK_STR(n, "second");
    free(n);
    at_http_req_free(&q);
    at_acme_exch_free(x);
    EVP_PKEY_free(key);
    at_acme_client_free(c);
}

static void feed_bad_nonce(at_acme_exch *x, const char *next)
{
    at_http_resp r;
    char h[80];
    resp_set(&r, 400, "application/problem+json",
             "{\"type\":\"urn:ietf:params:acme:error:badNonce\",\"detail\":\"stale\"}");
    snprintf(h, sizeof(h), "Replay-Nonce: %s\r\n", next);
    resp_hdr(&r, h);
    at_acme_exch_feed(x, &r, NULL, 100);
}

static void t_exch_bad_nonce(void)
{
    at_acme_client *c = client_with_dir(NULL);
    at_acme_req rq = { AT_AREQ_POST_KID, "https://ca.test/order", "{}", NULL };
    at_acme_exch *x;
    at_http_req q;
    time_t until;
    at_error err = AT_ERROR_INIT;
    char *n;

    at_acme_client_set_nonce_retries(c, 2);
    at_acme_client_nonce_push(c, "n0");
    x = at_acme_exch_new(c, &rq);
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_SEND);
    at_http_req_free(&q);
    feed_bad_nonce(x, "n1");
    /* Re-signed at once with the nonce from the error. */
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_SEND);
    AT_CHECK_INT(q.method, AT_HTTP_POST);
    n = jws_nonce(&q);
    AT_CHECK_STR(n, "n1");
    free(n);
    at_http_req_free(&q);
    feed_bad_nonce(x, "n2");
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_SEND);
    n = jws_nonce(&q);
    AT_CHECK_STR(n, "n2");
    free(n);
    at_http_req_free(&q);
    /* Third badNonce: retries used up, the answer is final. */
    feed_bad_nonce(x, "n3");
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_DONE);
    AT_CHECK_INT(at_acme_exch_response(x)->status, 400);
    at_acme_exch_free(x);
    at_acme_client_free(c);
}

static void t_exch_transient(void)
{
    at_acme_client *c = client_with_dir(NULL);
    at_acme_req get = { AT_AREQ_POST_KID, "https://ca.test/order/1", NULL, NULL };
    at_acme_req post = { AT_AREQ_POST_KID, "https://ca.test/order/1/finalize", "{\"csr\":\"x\"}", NULL };
    at_acme_exch *x;
    at_http_req q;
    at_http_resp r;
    time_t until = 0;
    at_error err = AT_ERROR_INIT, terr = AT_ERROR_INIT;
    int sends = 0;
    time_t now = 100;

    at_error_set(&terr, AT_ERR_NETWORK, "connecting to ca.test: refused");
    /* POST-as-GET: retried on transport errors, bounded, with a growing wait. */
    x = at_acme_exch_new(c, &get);
    for (int i = 0; i < 20; i++) {
        at_exch_state s;
        at_acme_client_nonce_push(c, "nn");
        s = at_acme_exch_next(x, now, &q, &until, &err);
        if (s == AT_EXCH_SEND) {
            sends++;
            at_http_req_free(&q);
            at_acme_exch_feed(x, NULL, &terr, now);
        } else if (s == AT_EXCH_WAIT) {
            AT_CHECK(until > now);
            now = until;
        } else {
            break;
        }
    }
    AT_CHECK_INT(sends, 4);
    AT_CHECK_INT(at_acme_exch_next(x, now, &q, &until, &err), AT_EXCH_FAILED);
    AT_CHECK_INT(err.code, AT_ERR_NETWORK);
    AT_CHECK_CONTAINS(err.msg, "refused");
    at_error_clear(&err);
    at_acme_exch_free(x);

    /* 503 with a short Retry-After on a POST-as-GET: waits that long (on
     * a whole-second clock, the second the answer came in counts whole). */
    x = at_acme_exch_new(c, &get);
    at_acme_client_nonce_push(c, "nn");
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_SEND);
    at_http_req_free(&q);
    resp_set(&r, 503, "text/plain", "busy");
    resp_hdr(&r, "Retry-After: 7\r\n");
    at_acme_exch_feed(x, &r, NULL, 100);
    AT_CHECK_INT(at_acme_exch_next(x, 101, &q, &until, &err), AT_EXCH_WAIT);
    AT_CHECK_INT(until, 108);
    AT_CHECK_INT(at_acme_exch_next(x, 107, &q, &until, &err), AT_EXCH_WAIT);
    at_acme_client_nonce_push(c, "nn");
    AT_CHECK_INT(at_acme_exch_next(x, 108, &q, &until, &err), AT_EXCH_SEND);
    at_http_req_free(&q);
    at_acme_exch_free(x);

    /* A POST with a payload is not repeated on 500: the answer is final. */
    x = at_acme_exch_new(c, &post);
    at_acme_client_nonce_push(c, "nn");
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_SEND);
    at_http_req_free(&q);
    resp_set(&r, 500, "application/problem+json", "{\"type\":\"urn:ietf:params:acme:error:serverInternal\"}");
    at_acme_exch_feed(x, &r, NULL, 100);
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_DONE);
    AT_CHECK_INT(at_acme_exch_response(x)->status, 500);
    at_acme_exch_free(x);

    /* ... nor on a transport error. */
    x = at_acme_exch_new(c, &post);
    at_acme_client_nonce_push(c, "nn");
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_SEND);
    at_http_req_free(&q);
    at_acme_exch_feed(x, NULL, &terr, 100);
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_FAILED);
    at_error_clear(&err);
    at_acme_exch_free(x);
    at_error_clear(&terr);
    at_acme_client_free(c);
}

static void t_exch_nonce_missing(void)
{
    at_acme_client *c = client_with_dir(NULL);
    at_acme_req rq = { AT_AREQ_POST_KID, "https://ca.test/order", "{}", NULL };
    at_acme_exch *x = at_acme_exch_new(c, &rq);
    at_http_req q;
    at_http_resp r;
    time_t until;
    at_error err = AT_ERROR_INIT;
    int heads = 0;
    for (int i = 0; i < 10; i++) {
        at_exch_state s = at_acme_exch_next(x, 100, &q, &until, &err);
        if (s != AT_EXCH_SEND)
            break;
        AT_CHECK_INT(q.method, AT_HTTP_HEAD);
        heads++;
        at_http_req_free(&q);
        resp_set(&r, 200, NULL, NULL);    /* no Replay-Nonce */
        at_acme_exch_feed(x, &r, NULL, 100);
    }
    AT_CHECK_INT(heads, 3);
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_FAILED);
    AT_CHECK_INT(err.code, AT_ERR_PROTOCOL);
    AT_CHECK_CONTAINS(err.msg, "https://ca.test/nonce");
    AT_CHECK_CONTAINS(err.msg, "Replay-Nonce");
    at_error_clear(&err);
    at_acme_exch_free(x);

    /* newNonce answering 404: a clear failure naming it. */
    x = at_acme_exch_new(c, &rq);
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_SEND);
    at_http_req_free(&q);
    resp_set(&r, 404, "text/plain", "nope");
    at_acme_exch_feed(x, &r, NULL, 100);
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_FAILED);
    AT_CHECK_CONTAINS(err.msg, "getting a nonce from https://ca.test/nonce");
    at_error_clear(&err);
    at_acme_exch_free(x);
    at_acme_client_free(c);
}

static void t_exch_preconditions(void)
{
    at_error err = AT_ERROR_INIT;
    at_acme_client *c = at_acme_client_new(DIR_URL, &err);
    at_acme_req rq = { AT_AREQ_POST_KID, "https://ca.test/order", "{}", NULL };
    at_acme_exch *x = at_acme_exch_new(c, &rq);
    at_http_req q;
    time_t until;
    /* no directory */
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_FAILED);
    AT_CHECK_CONTAINS(err.msg, "directory");
    at_error_clear(&err);
    at_acme_exch_free(x);
    at_acme_client_free(c);

    /* no kid */
    c = client_with_dir(NULL);
    at_acme_client_set_account(c, at_acme_client_key(c), NULL);
    x = at_acme_exch_new(c, &rq);
    AT_CHECK_INT(at_acme_exch_next(x, 100, &q, &until, &err), AT_EXCH_FAILED);
    AT_CHECK_CONTAINS(err.msg, "registered account");
    at_error_clear(&err);
    at_acme_exch_free(x);
    at_acme_client_free(c);
}

/* ------------------------------------------------------------- with the CA */

static at_http_resp exch_run(at_fake_ca *ca, at_acme_client *c, const at_acme_req *rq, int *sends)
{
    at_acme_exch *x = at_acme_exch_new(c, rq);
    at_http_resp out;
    at_error err = AT_ERROR_INIT;
    time_t now = 1000;
    at_http_resp_init(&out);
    for (int i = 0; i < 50; i++) {
        at_http_req q;
        at_http_resp r;
        time_t until;
        at_exch_state s = at_acme_exch_next(x, now, &q, &until, &err);
        if (s == AT_EXCH_SEND) {
            (*sends)++;
            at_fake_ca_handle(ca, &q, &r);
            at_http_req_free(&q);
            at_acme_exch_feed(x, &r, NULL, now);
            at_http_resp_free(&r);
        } else if (s == AT_EXCH_WAIT) {
            now = until;
        } else {
            if (s == AT_EXCH_DONE)
                at_http_resp_copy(&out, at_acme_exch_response(x));
            break;
        }
    }
    at_error_clear(&err);
    at_acme_exch_free(x);
    return out;
}

static void t_fake_ca_nonces(void)
{
    at_fake_ca *ca = at_fake_ca_new(NULL);
    at_error err = AT_ERROR_INIT;
    at_acme_client *c = at_acme_client_new(at_fake_ca_directory_url(ca), &err);
    time_t now = 1000;
    at_acme_req rq;
    at_http_resp r;
    int sends = 0;
    unsigned heads;

    AT_CHECK_OK(at_fake_ca_setup_client(ca, c, NULL, &now, &err), &err);
    AT_CHECK(at_acme_client_kid(c) != NULL);
    memset(&rq, 0, sizeof(rq));
    rq.kind = AT_AREQ_POST_KID;
    rq.url = (char *)at_acme_client_kid(c);

    /* Two refused nonces: two silent re-signs. */
    at_fake_ca_bad_nonce_next(ca, 2);
    heads = at_fake_ca_count(ca, "newNonce");
    r = exch_run(ca, c, &rq, &sends);
    AT_CHECK_INT(r.status, 200);
    AT_CHECK_INT(sends, 3);
    AT_CHECK_INT(at_fake_ca_count(ca, "newNonce"), heads);  /* nonces came from the errors */
    at_http_resp_free(&r);

    /* Errors without a nonce: a HEAD each time the pool is empty. */
    at_fake_ca_omit_nonces(ca, 1);
    at_fake_ca_bad_nonce_next(ca, 1);
    sends = 0;
    r = exch_run(ca, c, &rq, &sends);
    AT_CHECK_INT(r.status, 200);
    AT_CHECK(at_fake_ca_count(ca, "newNonce") > heads);
    at_http_resp_free(&r);
    at_fake_ca_omit_nonces(ca, 0);

    /* Every nonce refused: bounded, the final badNonce comes back. */
    at_fake_ca_set_bad_nonce_rate(ca, 100);
    sends = 0;
    r = exch_run(ca, c, &rq, &sends);
    AT_CHECK_INT(r.status, 400);
    AT_CHECK(sends <= 8);
    at_http_resp_free(&r);

    at_acme_client_free(c);
    at_fake_ca_free(ca);
}

static void t_fake_ca_strict(void)
{
    /* The fake CA itself refuses what a real CA refuses: a JWS for another URL,
     * a replayed nonce, a bad signature. */
    at_fake_ca *ca = at_fake_ca_new(NULL);
    at_error err = AT_ERROR_INIT;
    at_acme_client *c = at_acme_client_new(at_fake_ca_directory_url(ca), &err);
    time_t now = 1000;
    at_buf jws = AT_BUF_INIT;
    at_http_req q;
    at_http_resp r;
    char *acct;

    AT_CHECK_OK(at_fake_ca_setup_client(ca, c, NULL, &now, &err), &err);
    acct = strdup(at_acme_client_kid(c));
    memset(&q, 0, sizeof(q));
    q.method = AT_HTTP_POST;
    q.content_type = "application/jose+json";
    q.url = acct;

    at_jws_sign(at_acme_client_key(c), acct, "Nfake0000000001", "https://ca.test/other", NULL, &jws, &err);
    q.body = jws.data;
    q.body_len = jws.len;
    at_fake_ca_handle(ca, &q, &r);
    AT_CHECK_INT(r.status, 401);
    AT_CHECK_CONTAINS(at_fake_ca_last_error(ca), "url");
    at_http_resp_free(&r);
    at_buf_reset(&jws);

    /* nonce 1 was spent by the setup */
    at_jws_sign(at_acme_client_key(c), acct, "Nfake0000000001", acct, NULL, &jws, &err);
    q.body = jws.data;
    q.body_len = jws.len;
    at_fake_ca_handle(ca, &q, &r);
    AT_CHECK_INT(r.status, 400);
    AT_CHECK_CONTAINS(at_fake_ca_last_error(ca), "badNonce");
    at_http_resp_free(&r);
    at_buf_free(&jws);

    free(acct);
    at_acme_client_free(c);
    at_fake_ca_free(ca);
}

static const at_test_case cases[] = {
    AT_CASE(t_dir_full),
    AT_CASE(t_dir_minimal),
    AT_CASE(t_dir_missing),
    AT_CASE(t_dir_malformed),
    AT_CASE(t_dir_many_profiles),
    AT_CASE(t_problem_basic),
    AT_CASE(t_problem_subproblems),
    AT_CASE(t_problem_ratelimit),
    AT_CASE(t_problem_not_json),
    AT_CASE(t_problem_user_action),
    AT_CASE(t_problem_doc_fields),
    AT_CASE(t_client_basics),
    AT_CASE(t_exch_get),
    AT_CASE(t_exch_nonce_fetch),
    AT_CASE(t_exch_bad_nonce),
    AT_CASE(t_exch_transient),
    AT_CASE(t_exch_nonce_missing),
    AT_CASE(t_exch_preconditions),
    AT_CASE(t_fake_ca_nonces),
    AT_CASE(t_fake_ca_strict),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    return at_test_main(argc, argv, cases);
}
