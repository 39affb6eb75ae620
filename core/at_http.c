/*
 * at_http.c: HTTP request/response values and the few header parsers the
 * ACME layer needs (Location, Replay-Nonce, Retry-After, Link). The driver
 * feeds raw header lines; everything else only reads the parsed fields.
 */
#include "at_http.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "at_buf.h"
#include "at_time.h"

/* A CA never needs more than a handful of links; a response with thousands
 * is hostile and would only cost memory. */
#define AT_HTTP_MAX_LINKS 64

void at_http_req_free(at_http_req *req)
{
    if (!req)
        return;
    free(req->url);
    free(req->body);
    free(req->content_type);
    free(req->accept);
    memset(req, 0, sizeof(*req));
}

void at_http_resp_init(at_http_resp *resp)
{
    memset(resp, 0, sizeof(*resp));
}

void at_http_resp_free(at_http_resp *resp)
{
    if (!resp)
        return;
    free(resp->content_type);
    free(resp->location);
    free(resp->replay_nonce);
    free(resp->retry_after);
    for (size_t i = 0; i < resp->nlinks; i++) {
        free(resp->links[i].url);
        free(resp->links[i].rel);
    }
    free(resp->links);
    free(resp->body);
    at_http_resp_init(resp);
}

static int dup_opt(char **dst, const char *src)
{
    *dst = NULL;
    if (!src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

int at_http_resp_copy(at_http_resp *dst, const at_http_resp *src)
{
    at_http_resp_init(dst);
    dst->status = src->status;
    if (dup_opt(&dst->content_type, src->content_type) != 0 ||
        dup_opt(&dst->location, src->location) != 0 ||
        dup_opt(&dst->replay_nonce, src->replay_nonce) != 0 ||
        dup_opt(&dst->retry_after, src->retry_after) != 0)
        goto oom;
    if (src->nlinks) {
        dst->links = calloc(src->nlinks, sizeof(*dst->links));
        if (!dst->links)
            goto oom;
        for (size_t i = 0; i < src->nlinks; i++) {
            dst->nlinks++;
            if (dup_opt(&dst->links[i].url, src->links[i].url) != 0 ||
                dup_opt(&dst->links[i].rel, src->links[i].rel) != 0)
                goto oom;
        }
    }
    if (src->body) {
        dst->body = malloc(src->body_len + 1);
        if (!dst->body)
            goto oom;
        memcpy(dst->body, src->body, src->body_len);
        dst->body[src->body_len] = '\0';
        dst->body_len = src->body_len;
    }
    return 0;
oom:
    at_http_resp_free(dst);
    return -1;
}

/* ------------------------------------------------------------ URL resolution */

/* Length of "scheme:" at the start of s, or 0 if s has no scheme. */
static size_t scheme_len(const char *s)
{
    size_t i = 0;
    if (!isalpha((unsigned char)s[0]))
        return 0;
    while (isalnum((unsigned char)s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.')
        i++;
    return s[i] == ':' ? i + 1 : 0;
}

/* End of the authority ("//host:port") that starts at s, or s if none. */
static const char *skip_authority(const char *s)
{
    if (s[0] != '/' || s[1] != '/')
        return s;
    s += 2;
    while (*s && *s != '/' && *s != '?' && *s != '#')
        s++;
    return s;
}

/* Drop the last segment (and its "/") from out. */
static void pop_segment(at_buf *out)
{
    char *slash = out->data ? strrchr(out->data, '/') : NULL;
    out->len = slash ? (size_t)(slash - out->data) : 0;
    if (out->data)
        out->data[out->len] = '\0';
}

/* RFC 3986 §5.2.4: remove "." and ".." segments from a path. */
static int remove_dot_segments(at_buf *out, const char *path, size_t len)
{
    char *in = malloc(len + 1);
    size_t i = 0;
    if (!in)
        return -1;
    memcpy(in, path, len);
    in[len] = '\0';
    while (in[i]) {
        const char *s = in + i;
        if (strncmp(s, "../", 3) == 0) {
            i += 3;
        } else if (strncmp(s, "./", 2) == 0) {
            i += 2;
        } else if (strncmp(s, "/./", 3) == 0) {
            i += 2;
        } else if (strcmp(s, "/.") == 0) {
            i += 1;
            in[i] = '/';
        } else if (strncmp(s, "/../", 4) == 0) {
            i += 3;
            pop_segment(out);
        } else if (strcmp(s, "/..") == 0) {
            i += 2;
            in[i] = '/';
            pop_segment(out);
        } else if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
            break;
        } else {
            size_t j = i + (in[i] == '/' ? 1 : 0);
            while (in[j] && in[j] != '/')
                j++;
            if (at_buf_append(out, in + i, j - i) != 0) {
                free(in);
                return -1;
            }
            i = j;
        }
    }
    free(in);
    return 0;
}

/* Up to (not including) the first '?' or '#', or the first '#' alone. */
static const char *span_to(const char *s, const char *stops)
{
    while (*s && !strchr(stops, *s))
        s++;
    return s;
}

char *at_http_resolve(const char *base, const char *ref)
{
    at_buf out = AT_BUF_INIT;
    const char *auth_end, *path_end;
    int rc = 0;

    if (!ref)
        return NULL;
    if (scheme_len(ref) || !base)
        return strdup(ref);
    /* base = scheme ":" authority path ["?" query] ["#" fragment] */
    auth_end = skip_authority(base + scheme_len(base));
    path_end = span_to(auth_end, "?#");

    if (ref[0] == '/' && ref[1] == '/') {             /* network-path reference */
        rc |= at_buf_append(&out, base, scheme_len(base));
        rc |= at_buf_puts(&out, ref);
    } else if (ref[0] == '\0' || ref[0] == '#') {      /* same document */
        rc |= at_buf_append(&out, base, (size_t)(span_to(path_end, "#") - base));
        rc |= at_buf_puts(&out, ref);
    } else if (ref[0] == '?') {                       /* new query */
        rc |= at_buf_append(&out, base, (size_t)(path_end - base));
        rc |= at_buf_puts(&out, ref);
    } else {
        at_buf merged = AT_BUF_INIT;
        const char *rq = span_to(ref, "?#");
        if (ref[0] == '/') {
            rc |= at_buf_append(&merged, ref, (size_t)(rq - ref));
        } else {
            /* merge (§5.2.3): base path up to its last '/', then ref's path */
            const char *slash = NULL;
            for (const char *p = auth_end; p < path_end; p++)
                if (*p == '/')
                    slash = p;
            if (slash)
                rc |= at_buf_append(&merged, auth_end, (size_t)(slash - auth_end) + 1);
            else
                rc |= at_buf_puts(&merged, "/");
            rc |= at_buf_append(&merged, ref, (size_t)(rq - ref));
        }
        rc |= at_buf_append(&out, base, (size_t)(auth_end - base));
        if (merged.len) {
            /* on the path alone, so ".." can never eat the authority */
            at_buf path = AT_BUF_INIT;
            rc |= remove_dot_segments(&path, merged.data, merged.len);
            rc |= at_buf_append(&out, path.data ? path.data : "", path.len);
            at_buf_free(&path);
        }
        rc |= at_buf_puts(&out, rq);
        at_buf_free(&merged);
    }
    if (rc != 0) {
        at_buf_free(&out);
        return NULL;
    }
    return at_buf_detach(&out);
}

/* ------------------------------------------------------------------ headers */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

static char *dup_range(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static int set_field(char **field, const char *v, size_t n)
{
    char *s = dup_range(v, n);
    if (!s)
        return -1;
    free(*field);
    *field = s;
    return 0;
}

/* A URI reference is visible ASCII (RFC 3986 §2). A value with spaces,
 * control characters or other bytes is not one: using it would put bytes
 * that are not UTF-8 into checkpoints (JSON) and messages, and hand libcurl
 * a URL it refuses. Such a header is ignored, as a missing one would be. */
static int uri_chars_ok(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] <= ' ' || (unsigned char)v[i] >= 0x7f)
            return 0;
    return 1;
}

static int add_link(at_http_resp *resp, const char *url, size_t ulen, const char *rel, size_t rlen,
                    const char *base_url)
{
    at_http_link *nl;
    char *u, *r, *abs;

    if (resp->nlinks >= AT_HTTP_MAX_LINKS || !uri_chars_ok(url, ulen))
        return 0;
    u = dup_range(url, ulen);
    r = dup_range(rel, rlen);
    abs = u ? at_http_resolve(base_url, u) : NULL;
    free(u);
    if (!r || !abs) {
        free(r);
        free(abs);
        return -1;
    }
    for (char *c = r; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    nl = realloc(resp->links, (resp->nlinks + 1) * sizeof(*nl));
    if (!nl) {
        free(r);
        free(abs);
        return -1;
    }
    resp->links = nl;
    nl[resp->nlinks].url = abs;
    nl[resp->nlinks].rel = r;
    resp->nlinks++;
    return 0;
}

/* One link-value (RFC 8288 §3): "<uri>" *( ";" param ). Sets *next past the
 * separating comma. Malformed values are skipped, not fatal. */
static int parse_link_value(at_http_resp *resp, const char *p, const char *end,
                            const char **next, const char *base_url)
{
    const char *url, *uend, *rel = NULL, *rel_end = NULL;

    p = skip_ws(p, end);
    if (p >= end || *p != '<') {
        while (p < end && *p != ',')   /* garbage: skip to the next value */
            p++;
        *next = p < end ? p + 1 : end;
        return 0;
    }
    url = ++p;
    while (p < end && *p != '>')
        p++;
    if (p >= end) {
        *next = end;
        return 0;
    }
    uend = p++;
    /* parameters */
    while (p < end && *p != ',') {
        const char *name, *name_end, *val, *val_end;
        p = skip_ws(p, end);
        if (p < end && *p == ';') {
            p++;
            continue;
        }
        name = p;
        while (p < end && *p != '=' && *p != ';' && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        name_end = p;
        p = skip_ws(p, end);
        val = val_end = NULL;
        if (p < end && *p == '=') {
            p = skip_ws(p + 1, end);
            if (p < end && *p == '"') {
                val = ++p;
                while (p < end && *p != '"') {
                    if (*p == '\\' && p + 1 < end)
                        p++;
                    p++;
                }
                val_end = p;
                if (p < end)
                    p++;
            } else {
                val = p;
                while (p < end && *p != ';' && *p != ',' && *p != ' ' && *p != '\t')
                    p++;
                val_end = p;
            }
        }
        if (name_end - name == 3 && strncasecmp(name, "rel", 3) == 0 && val && !rel) {
            rel = val;
            rel_end = val_end;
        }
        if (p == name && p < end && *p != ',' && *p != ';')
            p++;   /* never stall on an unexpected character */
    }
    *next = p < end ? p + 1 : end;
    if (!rel)
        return 0;
    /* rel may hold several space-separated relation types: one link each. */
    while (rel < rel_end) {
        const char *t;
        while (rel < rel_end && (*rel == ' ' || *rel == '\t'))
            rel++;
        t = rel;
        while (rel < rel_end && *rel != ' ' && *rel != '\t')
            rel++;
        if (rel > t && add_link(resp, url, (size_t)(uend - url), t, (size_t)(rel - t), base_url) != 0)
            return -1;
    }
    return 0;
}

static int parse_links(at_http_resp *resp, const char *v, const char *end, const char *base_url)
{
    int guard = 0;
    while (v < end && guard++ < 4 * AT_HTTP_MAX_LINKS) {
        const char *next = end;
        if (parse_link_value(resp, v, end, &next, base_url) != 0)
            return -1;
        if (next <= v)
            break;
        v = next;
    }
    return 0;
}

int at_http_resp_header(at_http_resp *resp, const char *line, size_t len, const char *base_url)
{
    const char *colon, *name = line, *v, *end = line + len;
    size_t nlen;

    while (end > line && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    colon = memchr(line, ':', (size_t)(end - line));
    if (!colon)
        return 0;                     /* status line or blank line */
    nlen = (size_t)(colon - name);
    v = skip_ws(colon + 1, end);

#define IS(h) (nlen == sizeof(h) - 1 && strncasecmp(name, h, nlen) == 0)
    if (IS("content-type")) {
        const char *e = v;
        while (e < end && *e != ';' && *e != ' ' && *e != '\t')
            e++;
        if (set_field(&resp->content_type, v, (size_t)(e - v)) != 0)
            return -1;
        for (char *c = resp->content_type; *c; c++)
            *c = (char)tolower((unsigned char)*c);
    } else if (IS("location")) {
        char *raw, *abs;
        if (!uri_chars_ok(v, (size_t)(end - v)))
            return 0;
        if (!(raw = dup_range(v, (size_t)(end - v))))
            return -1;
        abs = at_http_resolve(base_url, raw);
        free(raw);
        if (!abs)
            return -1;
        free(resp->location);
        resp->location = abs;
    } else if (IS("replay-nonce")) {
        if (set_field(&resp->replay_nonce, v, (size_t)(end - v)) != 0)
            return -1;
    } else if (IS("retry-after")) {
        if (set_field(&resp->retry_after, v, (size_t)(end - v)) != 0)
            return -1;
    } else if (IS("link")) {
        if (parse_links(resp, v, end, base_url) != 0)
            return -1;
    }
#undef IS
    return 0;
}

const char *at_http_link_rel(const at_http_resp *resp, const char *rel)
{
    if (!resp || !rel)
        return NULL;
    for (size_t i = 0; i < resp->nlinks; i++)
        if (resp->links[i].rel && strcasecmp(resp->links[i].rel, rel) == 0)
            return resp->links[i].url;
    return NULL;
}

long at_http_retry_after(const at_http_resp *resp, time_t now)
{
    if (!resp || !resp->retry_after)
        return -1;
    return at_time_retry_after(resp->retry_after, now);
}
