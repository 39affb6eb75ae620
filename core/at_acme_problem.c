/*
 * at_acme_problem.c: CA error responses (RFC 7807 problem documents, RFC 8555
 * §6.7) turned into at_error values an administrator can act on. The
 * document itself is kept in err->problem for the status page.
 */
#include "at_acme_int.h"

#include <stdio.h>
#include <string.h>

#define DETAIL_MAX 400
#define RAW_MAX    200

const char *at_acme_doc_type(const json_t *doc)
{
    const char *t = json_is_object(doc) ? at_json_str(doc, "type") : NULL;
    size_t pl = sizeof(AT_ACME_PROBLEM_PREFIX) - 1;
    if (!t)
        return NULL;
    if (strncmp(t, AT_ACME_PROBLEM_PREFIX, pl) == 0)
        return t + pl;
    return t;
}

const char *at_acme_problem_type(const at_error *err)
{
    return err ? at_acme_doc_type(err->problem) : NULL;
}

void at_acme_append_clean(at_buf *b, const char *s, size_t len, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < len && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (n >= max) {
            at_buf_puts(b, "...");
            return;
        }
        if (c < 0x20 || c == 0x7f)
            c = ' ';
        at_buf_append(b, &c, 1);
        n++;
    }
}

static void append_str(at_buf *b, const char *s, size_t max)
{
    if (s)
        at_acme_append_clean(b, s, strlen(s), max);
}

/* What an administrator can do about each problem type. */
static const char *type_hint(const char *type)
{
    static const struct { const char *type, *hint; } hints[] = {
        { "badNonce", "a nonce mismatch; autotls retries such requests by itself" },
        { "caa", "a CAA record in DNS does not allow this CA to issue for the name; "
                 "add a CAA record naming the CA or remove the restriction" },
        { "dns", "the CA could not look up the name in DNS; check its A/AAAA (or TXT for dns-01) records" },
        { "connection", "the CA could not connect to this server for validation; check that the name "
                        "resolves to this server and that port 80 (http-01) or 443 (tls-alpn-01) "
                        "is reachable from the internet" },
        { "tls", "the TLS connection of the CA's validator failed; check that port 443 reaches this server" },
        { "incorrectResponse", "the CA received a wrong challenge answer; check that no other server, "
                               "proxy or CDN answers for this name" },
        { "unauthorized", "the CA refused the authorization" },
        { "rejectedIdentifier", "the CA's policy does not allow a certificate for this name" },
        { "unsupportedIdentifier", "the CA does not issue for this kind of identifier" },
        { "malformed", "the CA considered the request malformed (a CA incompatibility or an autotls bug)" },
        { "serverInternal", "an error inside the CA; autotls tries again later" },
        { "externalAccountRequired", "the CA requires external account binding: get a key id and an "
                                     "HMAC key from the CA and configure them" },
        { "accountDoesNotExist", "the CA does not know this account" },
        { "badCSR", "the CA rejected the certificate request" },
        { "badPublicKey", "the CA does not accept this key; configure another key type" },
        { "badSignatureAlgorithm", "the CA does not accept the signature algorithm of the key" },
        { "invalidContact", "the CA refused the contact address; check the configured contact" },
        { "unsupportedContact", "the CA does not accept this kind of contact; use a mailto: address" },
        { "orderNotReady", "the order was not ready to be finalized" },
        { "badRevocationReason", "the CA does not accept this revocation reason" },
        { "alreadyRevoked", "the certificate is already revoked" },
        { "alreadyReplaced", "the certificate named in 'replaces' was already replaced" },
        { "compound", "see the individual problems" },
        { "rateLimited", "a rate limit of the CA was reached" },
    };
    if (!type)
        return NULL;
    for (size_t i = 0; i < sizeof(hints) / sizeof(hints[0]); i++)
        if (strcmp(type, hints[i].type) == 0)
            return hints[i].hint;
    return NULL;
}

static void append_subproblems(at_buf *b, const json_t *subs)
{
    size_t n = json_array_size(subs), shown = 0;
    for (size_t i = 0; i < n && shown < AT_ACME_MAX_SUBPROBLEMS; i++) {
        const json_t *sp = json_array_get(subs, i), *id;
        const char *det, *type;
        if (!json_is_object(sp))
            continue;
        id = json_object_get(sp, "identifier");
        det = at_json_str(sp, "detail");
        type = at_acme_doc_type(sp);
        at_buf_puts(b, shown ? "; " : " [");
        if (json_is_object(id) && at_json_str(id, "value")) {
            append_str(b, at_json_str(id, "value"), 255);
            at_buf_puts(b, ": ");
        }
        append_str(b, det ? det : "(no detail)", 200);
        if (type) {
            at_buf_puts(b, " (");
            append_str(b, type, 80);
            at_buf_puts(b, ")");
        }
        shown++;
    }
    if (shown) {
        if (n > shown)
            at_buf_printf(b, "; and %zu more", n - shown);
        at_buf_puts(b, "]");
    }
}

/* userActionRequired: where the administrator must go. */
static const char *action_url(const json_t *doc, const at_http_resp *resp)
{
    const char *u = at_json_str(doc, "instance");
    if (u)
        return u;
    return resp ? at_http_link_rel(resp, "terms-of-service") : NULL;
}

int at_acme_problem_doc(at_error *err, const json_t *doc, long status, const char *what,
                        const at_http_resp *resp, long retry_after,
                        const char *raw, size_t raw_len)
{
    at_buf b = AT_BUF_INIT;
    const char *type = NULL, *detail = NULL, *hint;
    int is_doc = json_is_object(doc);
    at_errcode code = AT_ERR_CA;

    if (!err)
        return -1;
    if (is_doc) {
        type = at_acme_doc_type(doc);
        detail = at_json_str(doc, "detail");
        if (status <= 0 && json_is_integer(json_object_get(doc, "status")))
            status = (long)json_integer_value(json_object_get(doc, "status"));
    }
    if (status == 429 || (type && strcmp(type, "rateLimited") == 0))
        code = AT_ERR_RATELIMIT;

    if (what && *what) {
        at_buf_puts(&b, what);
        at_buf_puts(&b, ": ");
    }
    if (is_doc) {
        at_buf_puts(&b, "the CA says ");
        if (detail && *detail) {
            at_buf_puts(&b, "\"");
            append_str(&b, detail, DETAIL_MAX);
            at_buf_puts(&b, "\"");
        } else {
            at_buf_puts(&b, "nothing more");
        }
        at_buf_puts(&b, " (");
        append_str(&b, type ? type : "no problem type", 120);
        if (status > 0)
            at_buf_printf(&b, ", HTTP %ld", status);
        at_buf_puts(&b, ")");
        append_subproblems(&b, json_object_get(doc, "subproblems"));
    } else if (raw_len) {
        at_buf_printf(&b, "the CA answered HTTP %ld: \"", status);
        at_acme_append_clean(&b, raw, raw_len, RAW_MAX);
        at_buf_puts(&b, "\"");
    } else {
        at_buf_printf(&b, "the CA answered HTTP %ld with an empty body", status);
    }

    hint = type_hint(type);
    if (type && strcmp(type, "userActionRequired") == 0) {
        const char *u = action_url(doc, resp);
        at_buf_puts(&b, "; the CA needs an action from you");
        if (u) {
            at_buf_puts(&b, ": visit ");
            append_str(&b, u, 300);
        }
        hint = NULL;
    } else if (type && strcmp(type, "badSignatureAlgorithm") == 0) {
        const json_t *algs = json_object_get(doc, "algorithms");
        if (json_is_array(algs) && json_array_size(algs)) {
            at_buf_printf(&b, "; %s; it accepts", hint);
            for (size_t i = 0; i < json_array_size(algs) && i < 8; i++) {
                at_buf_puts(&b, i ? ", " : " ");
                append_str(&b, json_string_value(json_array_get(algs, i)), 20);
            }
            hint = NULL;
        }
    }
    if (hint) {
        at_buf_puts(&b, "; ");
        at_buf_puts(&b, hint);
    }
    if (retry_after >= 0)
        at_buf_printf(&b, "; the CA asks to wait %ld s before trying again", retry_after);
    else if (code == AT_ERR_RATELIMIT)
        at_buf_puts(&b, "; autotls waits before trying again");

    at_error_set(err, code, "%s", b.data ? b.data : "the CA refused the request");
    err->http_status = status > 0 && status < 1000 ? (int)status : 0;
    err->retry_after = retry_after;
    if (is_doc)
        err->problem = json_deep_copy(doc);
    at_buf_free(&b);
    return -1;
}

static int is_json_type(const char *ct)
{
    return ct && (strcmp(ct, "application/problem+json") == 0 ||
                  strcmp(ct, "application/json") == 0);
}

int at_acme_problem(const at_http_resp *resp, const char *what, time_t now, at_error *err)
{
    json_t *doc = NULL;
    long ra;
    int rv;

    if (!resp || resp->status < 400)
        return 0;
    ra = at_http_retry_after(resp, now);
    /* Parse whatever looks like JSON: some CAs send problems with a generic
     * or missing content type. */
    if (resp->body_len && (is_json_type(resp->content_type) ||
                           (resp->body && resp->body[0] == '{'))) {
        at_error perr = AT_ERROR_INIT;
        doc = at_json_parse(resp->body, resp->body_len, "problem document", &perr);
        at_error_clear(&perr);
        if (doc && !json_is_object(doc)) {
            json_decref(doc);
            doc = NULL;
        }
    }
    rv = at_acme_problem_doc(err, doc, resp->status, what, resp, ra,
                             resp->body, resp->body ? resp->body_len : 0);
    json_decref(doc);
    return rv;
}
