/*
 * fuzz_acme_problem: CA error responses turned into errors
 * (at_acme_problem in core/at_acme_problem.c): RFC 7807 problem documents
 * with subproblems, algorithms and instance URLs, non-JSON bodies, any
 * status, content type and Retry-After; and the JSON form errors are saved
 * in (at_error_to_json / at_error_from_json, the renewal state file).
 *
 * Input: one record (at_fuzz.h): status line, header lines, body.
 *
 * Checks: no crash, leak or undefined behaviour; a status >= 400 is an
 * error (CA or rate limit) with a printable message and the status, any
 * other is not; the problem type is read from the kept document; the error
 * survives its JSON form (code, message, status, Retry-After, problem); any
 * JSON body read as a saved error gives a usable error.
 */
#include <stdlib.h>
#include <string.h>

#include "at_fuzz.h"
#include "at_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void round_trip(const at_error *e)
{
    json_t *j = at_error_to_json(e);
    at_error back = AT_ERROR_INIT;
    char *text;

    if (!j)
        at_fuzz_fail("at_error_to_json gave nothing for: %s", e->msg);
    /* Through text, as the state file stores it. */
    text = at_json_pretty(j);
    json_decref(j);
    if (!text)
        at_fuzz_fail("the JSON form of an error does not serialise: %s", e->msg);
    j = at_json_parse_object(text, strlen(text), "state", NULL);
    free(text);
    if (!j)
        at_fuzz_fail("the JSON form of an error does not parse back: %s", e->msg);
    at_error_from_json(&back, j);
    json_decref(j);
    if (back.code != e->code || strcmp(back.msg, e->msg) != 0 || back.http_status != e->http_status ||
        back.retry_after != e->retry_after || !back.problem != !e->problem ||
        (e->problem && !json_equal(back.problem, e->problem)))
        at_fuzz_fail("an error changes through its JSON form: '%s' became '%s'", e->msg, back.msg);
    at_error_clear(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    at_http_resp resp;
    at_error err = AT_ERROR_INIT;
    json_t *doc;
    int rv;

    if (!at_fuzz_parse_resp(data, size, "https://ca.test/acme/new-order", &resp)) {
        at_http_resp_free(&resp);
        return 0;
    }
    rv = at_acme_problem(&resp, "new order for example.com", AT_FUZZ_T0, &err);
    if (resp.status < 400) {
        if (rv != 0 || err.code != AT_OK)
            at_fuzz_fail("HTTP %ld taken as an error", resp.status);
    } else {
        const char *t = at_acme_problem_type(&err);
        if (rv != -1 || (err.code != AT_ERR_CA && err.code != AT_ERR_RATELIMIT) || !err.msg[0])
            at_fuzz_fail("HTTP %ld not taken as a CA error (code %d)", resp.status, (int)err.code);
        at_fuzz_check_msg(&err, "problem");
        if (resp.status < 1000 && err.http_status != resp.status)
            at_fuzz_fail("the error says HTTP %d for HTTP %ld", err.http_status, resp.status);
        if (err.problem && !json_is_object(err.problem))
            at_fuzz_fail("a kept problem document is not an object");
        if (t && !json_is_string(json_object_get(err.problem, "type")))
            at_fuzz_fail("a problem type without a type member");
        if ((resp.status == 429 || (t && strcmp(t, "rateLimited") == 0)) && err.code != AT_ERR_RATELIMIT)
            at_fuzz_fail("a rate limit not reported as one");
        if (err.retry_after < -1 || err.retry_after > 366L * 86400)
            at_fuzz_fail("Retry-After out of range: %ld", err.retry_after);
        round_trip(&err);
    }
    at_error_clear(&err);

    /* The body as a saved error (a state file is only as good as its disk). */
    doc = resp.body_len ? at_json_parse(resp.body, resp.body_len, "state", NULL) : NULL;
    if (doc) {
        at_error_from_json(&err, doc);
        if (json_is_object(doc) && (err.code == AT_OK || !err.msg[0]))
            at_fuzz_fail("a saved error read back as no error");
        (void)at_acme_problem_type(&err);
        at_error_clear(&err);
        json_decref(doc);
    }
    at_http_resp_free(&resp);
    return 0;
}
