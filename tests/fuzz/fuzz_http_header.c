/*
 * fuzz_http_header: the HTTP values the ACME layer reads
 * (core/at_http.c, core/at_time.c): header lines (Content-Type, Location,
 * Replay-Nonce, Retry-After, Link with several values and relations),
 * RFC 3986 reference resolution, Retry-After (delta-seconds and the three
 * HTTP-date forms) and RFC 3339 timestamps.
 *
 * Input: lines. The first is the base URL (the request's URL); every other
 * line is fed as a header line, and also resolved against the base, parsed
 * as an RFC 3339 time and as a Retry-After value.
 *
 * Checks: no crash, leak or undefined behaviour; a copied response equals
 * the original; Retry-After is -1 or within [0, one year] and agrees with
 * the header kept; a relative reference resolves under the base's scheme
 * and authority, with no "." or ".." segments left; a parsed RFC 3339
 * time survives at_time_format and parsing back.
 */
#include <stdlib.h>
#include <string.h>

#include "at_fuzz.h"
#include "at_time.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define YEAR (366L * 86400)

static int str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void check_copy(const at_http_resp *r)
{
    at_http_resp c;
    if (at_http_resp_copy(&c, r) != 0)
        at_fuzz_fail("at_http_resp_copy failed");
    if (c.status != r->status || !str_eq(c.content_type, r->content_type) ||
        !str_eq(c.location, r->location) || !str_eq(c.replay_nonce, r->replay_nonce) ||
        !str_eq(c.retry_after, r->retry_after) || c.nlinks != r->nlinks ||
        c.body_len != r->body_len || (r->body && memcmp(c.body, r->body, r->body_len) != 0))
        at_fuzz_fail("a copied response differs");
    for (size_t i = 0; i < r->nlinks; i++)
        if (!str_eq(c.links[i].url, r->links[i].url) || !str_eq(c.links[i].rel, r->links[i].rel))
            at_fuzz_fail("a copied link differs");
    at_http_resp_free(&c);
}

/* After RFC 3986 §5.2.4 the path holds no "." or ".." segment. */
static void check_resolved(const char *base, const char *ref, const char *res)
{
    const char *p, *end;
    size_t n;
    if (!res)
        at_fuzz_fail("at_http_resolve gave nothing");
    if (!ref[0] || ref[0] == '#' || ref[0] == '?' || (ref[0] == '/' && ref[1] == '/') ||
        strpbrk(ref, ":?#") || strncmp(base, "https://", 8) != 0 || strpbrk(base + 8, "?#"))
        return;
    /* res = "https://authority/path", with the base's authority: a relative
     * reference from a CA can never lead to another host. */
    n = strcspn(base + 8, "/") + 8;
    if (strncmp(res, base, n) != 0 || res[n] != '/')
        at_fuzz_fail("'%s' against '%s' gave '%s': not under the base's authority", ref, base, res);
    p = res + n;
    end = p + strlen(p);
    while (p < end) {
        const char *s = p + 1, *e = strchr(s, '/');
        if (!e)
            e = end;
        n = (size_t)(e - s);
        if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            at_fuzz_fail("'%s' against '%s' gave '%s' with a dot segment", ref, base, res);
        p = e;
    }
}

static void check_time(const char *s)
{
    time_t t, t2;
    char buf[AT_TIME_BUFSIZE];
    long ra = at_time_retry_after(s, AT_FUZZ_T0);

    if (ra < -1 || ra > YEAR)
        at_fuzz_fail("Retry-After '%s' gave %ld", s, ra);
    if (at_time_parse(s, &t) != 0)
        return;
    at_time_format(t, buf, sizeof(buf));
    /* Years before 1000 do not print as four digits; those are not ours to write. */
    if (strlen(buf) == 20 && (at_time_parse(buf, &t2) != 0 || t2 != t))
        at_fuzz_fail("'%s' parsed to %lld, printed as '%s', which does not parse back to it", s,
                     (long long)t, buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size, *nl;
    char *base;
    at_http_resp r;
    long ra;

    nl = memchr(p, '\n', size);
    if (!nl || (size_t)(nl - p) > 2048)
        return 0;
    base = strndup((const char *)p, (size_t)(nl - p));
    p = nl + 1;
    at_http_resp_init(&r);
    r.status = 200;
    while (p < end) {
        size_t ll;
        char *line, *res;
        nl = memchr(p, '\n', (size_t)(end - p));
        ll = (size_t)((nl ? nl : end) - p);
        line = malloc(ll + 1);
        memcpy(line, p, ll);
        line[ll] = '\0';
        if (at_http_resp_header(&r, line, ll, base) != 0)
            at_fuzz_fail("at_http_resp_header failed without being out of memory");
        res = at_http_resolve(base, line);
        check_resolved(base, line, res);
        free(res);
        check_time(line);
        free(line);
        p = nl ? nl + 1 : end;
    }
    check_copy(&r);
    ra = at_http_retry_after(&r, AT_FUZZ_T0);
    if (ra != (r.retry_after ? at_time_retry_after(r.retry_after, AT_FUZZ_T0) : -1))
        at_fuzz_fail("at_http_retry_after disagrees with the header");
    for (size_t i = 0; i < r.nlinks; i++) {
        const char *u = at_http_link_rel(&r, r.links[i].rel);
        if (!r.links[i].url || !r.links[i].rel || !u)
            at_fuzz_fail("a link without URL or rel, or not found by its rel");
    }
    at_http_resp_free(&r);
    free(base);
    return 0;
}
