/*
 * at_reply.c: the module's HTTP answers as data (see at_reply.h).
 */
#include "at_reply.h"
#include "at_site.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <curl/curl.h>

#define NOT_FOUND_BODY  "No such ACME challenge.\n"
#define USE_GET_BODY    "Use GET.\n"
#define KEYAUTH_MAX     512   /* token (<= AT_LIVE_TOKEN_MAX) "." thumbprint */

void at_reply_free(at_reply *rp)
{
    if (!rp)
        return;
    at_buf_free(&rp->body);
    rp->status = 0;
    rp->content_type = NULL;
    rp->header = rp->header_value = NULL;
}

static void start(at_reply *rp, int status, const char *content_type)
{
    at_buf_reset(&rp->body);
    rp->status = status;
    rp->content_type = content_type;
    rp->header = rp->header_value = NULL;
}

/* Out of memory half way: an empty 500 the host can still send. */
static int oom(at_reply *rp)
{
    start(rp, 500, "text/plain");
    return -1;
}

int at_reply_text(at_reply *rp, int status, const char *content_type, const char *body)
{
    start(rp, status, content_type);
    return at_buf_puts(&rp->body, body) == 0 ? 0 : oom(rp);
}

/* The JSON object (consumed) and a newline. */
static int json_reply(at_reply *rp, int status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    int rv;

    json_decref(j);
    start(rp, status, "application/json");
    rv = text ? at_buf_printf(&rp->body, "%s\n", text) : -1;
    free(text);
    return rv == 0 ? 0 : oom(rp);
}

int at_reply_error(at_reply *rp, int status, const char *message)
{
    return json_reply(rp, status, json_pack("{s:s}", "error", message));
}

/* ------------------------------------------------------------- HTTP-01 */

at_http01_result at_reply_http01(at_reply *rp, at_live *lv, const char *path, size_t pathlen, int get)
{
    char keyauth[KEYAUTH_MAX];
    at_http01_result res = at_serve_http01(lv, path, pathlen, keyauth, sizeof(keyauth));

    switch (res) {
    case AT_HTTP01_ANSWER:
        if (!get) {
            if (at_reply_text(rp, 405, "text/plain", USE_GET_BODY) == 0) {
                rp->header = "Allow";
                rp->header_value = "GET, HEAD";
            }
        } else {
            at_reply_text(rp, 200, "text/plain", keyauth);
        }
        break;
    case AT_HTTP01_NOTFOUND:
        at_reply_text(rp, 404, "text/plain", NOT_FOUND_BODY);
        break;
    case AT_HTTP01_PASS:
    default:
        break;
    }
    return res;
}

/* ------------------------------------------------------------ 503 page */

static int html_escaped(at_buf *b, const char *s)
{
    int rv = 0;
    for (; *s && rv == 0; s++) {
        switch (*s) {
        case '&': rv = at_buf_puts(b, "&amp;"); break;
        case '<': rv = at_buf_puts(b, "&lt;"); break;
        case '>': rv = at_buf_puts(b, "&gt;"); break;
        case '"': rv = at_buf_puts(b, "&quot;"); break;
        default:  rv = at_buf_append(b, s, 1); break;
        }
    }
    return rv;
}

int at_reply_waiting(at_reply *rp, const char *name)
{
    int rv;

    start(rp, 503, "text/html; charset=utf-8");
    rv = at_buf_puts(&rp->body,
                     "<!DOCTYPE html>\n<html><head><title>Certificate being obtained</title></head>\n"
                     "<body><h1>Certificate being obtained</h1>\n"
                     "<p>The HTTPS certificate for <b>");
    rv |= html_escaped(&rp->body, name ? name : "");
    rv |= at_buf_puts(&rp->body,
                      "</b> is being obtained from the certificate authority right now. This site "
                      "will be available in a moment; please try again shortly.</p>\n"
                      "<p>The certificate you were shown for this request is a temporary "
                      "placeholder.</p>\n</body></html>\n");
    if (rv != 0)
        return oom(rp);
    rp->header = "Retry-After";
    rp->header_value = AT_REPLY_RETRY_AFTER;
    return 0;
}

/* ------------------------------------------------------- renew handler */

/* The decoded value of the first key=value pair of query called key:
 * malloc'd, NULL when absent. *bad is set when it does not decode (or
 * holds a NUL byte). */
static char *query_arg(const char *query, const char *key, int *bad)
{
    size_t klen = strlen(key);
    const char *p = query;

    *bad = 0;
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > klen && p[klen] == '=' && strncasecmp(p, key, klen) == 0) {
            char *raw = strndup(p + klen + 1, len - klen - 1), *dec = NULL, *r = NULL;
            int dlen = 0;
            if (!raw) {
                *bad = 1;
                return NULL;
            }
            for (char *c = raw; *c; c++)
                if (*c == '+')
                    *c = ' ';
            if (len - klen - 1 < 65536)
                dec = curl_easy_unescape(NULL, raw, (int)(len - klen - 1), &dlen);
            if (dec && dlen >= 0 && strlen(dec) == (size_t)dlen)
                r = strdup(dec);
            else
                *bad = 1;
            curl_free(dec);
            free(raw);
            if (!r)
                *bad = 1;
            return r;
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

int at_reply_renew(at_reply *rp, const at_conf *conf, at_renew_ctl *ctl, const char *query,
                   char *what, size_t whatsz)
{
    char lower[AT_RENEW_REQ_MAX];
    const char *queued = NULL;
    int bad = 0, rv;
    char *name;

    if (what && whatsz)
        what[0] = '\0';
    name = query_arg(query, "name", &bad);
    if (!name || !*name) {
        free(name);
        return at_reply_error(rp, 400, "say what to renew: ?name=NAME (a managed name or "
                                       "certificate id) or ?name=all");
    }
    at_name_lower(lower, sizeof(lower), name, strlen(name));
    if (strlen(name) < AT_RENEW_REQ_MAX) {
        if (strcmp(lower, "all") == 0)
            queued = "all";
        else if (conf && at_conf_cert(conf, name))
            queued = name;
        else if (at_conf_manages(conf, lower))
            queued = lower;
    }
    if (!queued) {
        rv = json_reply(rp, 404, json_pack("{s:s,s:s}", "error",
                                           "no managed certificate has this name or id", "name", name));
        free(name);
        return rv;
    }
    if (at_renew_ctl_request(ctl, queued) != 0) {
        free(name);
        return at_reply_error(rp, 503, "too many renew requests are waiting; try again shortly");
    }
    if (what && whatsz)
        snprintf(what, whatsz, "%s", queued);
    rv = json_reply(rp, 202, json_pack("{s:s,s:s}", "renew", queued, "status", "queued"));
    free(name);
    return rv;
}

/* --------------------------------------------------------- status page */

int at_reply_status(at_reply *rp, const at_conf *conf, const char *store_dir,
                    const at_status_server *srv, const char *query, at_error *err)
{
    const char *ctype = "text/html";
    json_t *status = at_status_read(conf, store_dir, time(NULL), err);
    at_buf out = AT_BUF_INIT;

    if (!status)
        return -1;
    if ((srv && at_status_set_server(status, srv) != 0) ||
        at_status_render_query(status, query, &out, &ctype) != 0) {
        json_decref(status);
        at_buf_free(&out);
        return at_error_set(err, AT_ERR_INTERNAL, "rendering the status page failed: out of memory");
    }
    json_decref(status);
    at_buf_free(&rp->body);
    rp->body = out;
    rp->status = 200;
    rp->content_type = ctype;
    rp->header = rp->header_value = NULL;
    return 0;
}
