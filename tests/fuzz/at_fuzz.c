/*
 * at_fuzz.c: records of fuzzer bytes as HTTP responses, and the op driver
 * shared by the fuzz targets and the seed generator (see at_fuzz.h).
 */
#include "at_fuzz.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "at_key.h"

/* Steps of one run, and sends of one exchange: far above what any op or
 * exchange needs (they are bounded by design), so hitting either means the
 * core loops. */
#define RUN_MAX_STEPS  200000
#define EXCH_MAX_SENDS 200

const char at_fuzz_account_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg8QjWa1jhpWmpUxy2\n"
    "NKxfru3Nof02a8z7wLQjR3pCI4ehRANCAATsFG/yjV4KDm4XTgH9rwUn71NDfSOY\n"
    "+j1eALKGQkzt+UAHlMyBh3kvWHoq6hBkiI20obdhwnu/JS91mm5L40qb\n"
    "-----END PRIVATE KEY-----\n";

const char at_fuzz_other_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBFXnVMii48b0p7kclm\n"
    "SMPuhTF6PwhAnW1rfu9CO15b4Mwgph7U8esxWblop31rZxKhZANiAASQn6r2R1e2\n"
    "hAVX2MPnGVd6t1pTVKX9kvSvUdBoSG7cOxPy2xxOkPwSovk4GnRXa+3Ch7sCcHGZ\n"
    "E1KgXnhMKoud6K+vLD/XBmxEj17NU8CeYTmEKJzRERWSetFtFAL0mKY=\n"
    "-----END PRIVATE KEY-----\n";

/* tests/unit/data/acme/pebble-order.json "cert_key": the recorded chains are
 * for this key, so a replayed order can get all the way to its download. */
const char at_fuzz_cert_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg4D2gMh8uoMYCcyl9\n"
    "eO0KK/89N6/qI5lTxGG9T1CkLNShRANCAARFQrwbe4/D25pxHUoMbu6OXVdtC4qa\n"
    "76yLb860uFbNVUtfHtaL/0LAPV8rVBihDk8S9zkkmCIXXV/hOMQ0OGsV\n"
    "-----END PRIVATE KEY-----\n";

void at_fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "\n*** autotls fuzz invariant violated: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

EVP_PKEY *at_fuzz_key(const char *pem)
{
    static struct { const char *pem; EVP_PKEY *key; } cache[4];
    at_error err = AT_ERROR_INIT;
    size_t i;
    for (i = 0; i < sizeof(cache) / sizeof(cache[0]) && cache[i].pem; i++)
        if (cache[i].pem == pem)
            return cache[i].key;
    if (i == sizeof(cache) / sizeof(cache[0]))
        at_fuzz_fail("too many fixed keys");
    cache[i].key = at_key_from_pem(pem, strlen(pem), &err);
    if (!cache[i].key)
        at_fuzz_fail("fixed key does not load: %s", err.msg);
    cache[i].pem = pem;
    return cache[i].key;
}

/* ------------------------------------------------------------ input */

unsigned at_fuzz_byte(at_fuzz_in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

int at_fuzz_record(at_fuzz_in *in, const uint8_t **rec, size_t *len)
{
    const size_t sl = sizeof(AT_FUZZ_SEP) - 1;
    const uint8_t *sep;

    if (!in->p)
        return -1;
    sep = memmem(in->p, in->n, AT_FUZZ_SEP, sl);
    *rec = in->p;
    if (sep) {
        *len = (size_t)(sep - in->p);
        in->n -= *len + sl;
        in->p = sep + sl;
    } else {
        *len = in->n;
        in->p = NULL;        /* the last record may be empty; after it, nothing */
        in->n = 0;
    }
    return 0;
}

char *at_fuzz_string(at_fuzz_in *in, size_t *len)
{
    const uint8_t *r;
    size_t n;
    char *s;
    if (at_fuzz_record(in, &r, &n) != 0)
        return NULL;
    if (!(s = malloc(n + 1)))
        abort();
    memcpy(s, r, n);
    s[n] = '\0';
    if (len)
        *len = n;
    return s;
}

int at_fuzz_parse_resp(const uint8_t *rec, size_t len, const char *base_url, at_http_resp *resp)
{
    const uint8_t *p = rec, *end = rec + len, *nl;
    long status = 0;
    int digits = 0;

    at_http_resp_init(resp);
    /* status line */
    while (p < end && *p >= '0' && *p <= '9' && digits < 4) {
        status = status * 10 + (*p++ - '0');
        digits++;
    }
    nl = memchr(p, '\n', (size_t)(end - p));
    p = nl ? nl + 1 : end;
    if (status == 0)
        return 0;
    resp->status = status;
    /* header lines, fed as the driver feeds them: with their CRLF */
    while (p < end) {
        char line[4096];
        size_t ll;
        nl = memchr(p, '\n', (size_t)(end - p));
        ll = (size_t)((nl ? nl : end) - p);
        if (ll == 0 || (ll == 1 && p[0] == '\r')) {
            p = nl ? nl + 1 : end;
            break;
        }
        if (ll > sizeof(line) - 3)
            ll = sizeof(line) - 3;
        memcpy(line, p, ll);
        memcpy(line + ll, "\r\n", 3);
        if (at_http_resp_header(resp, line, ll + 2, base_url) != 0)
            at_fuzz_fail("at_http_resp_header failed without being out of memory");
        p = nl ? nl + 1 : end;
    }
    /* body: the driver always hands over a NUL-terminated buffer */
    resp->body_len = (size_t)(end - p);
    if (!(resp->body = malloc(resp->body_len + 1)))
        abort();
    memcpy(resp->body, p, resp->body_len);
    resp->body[resp->body_len] = '\0';
    return 1;
}

void at_fuzz_write_resp(at_buf *out, const at_http_resp *resp)
{
    at_buf_printf(out, "%ld\n", resp->status);
    if (resp->content_type)
        at_buf_printf(out, "Content-Type: %s\n", resp->content_type);
    if (resp->location)
        at_buf_printf(out, "Location: %s\n", resp->location);
    if (resp->replay_nonce)
        at_buf_printf(out, "Replay-Nonce: %s\n", resp->replay_nonce);
    if (resp->retry_after)
        at_buf_printf(out, "Retry-After: %s\n", resp->retry_after);
    for (size_t i = 0; i < resp->nlinks; i++)
        at_buf_printf(out, "Link: <%s>;rel=\"%s\"\n", resp->links[i].url, resp->links[i].rel);
    at_buf_puts(out, "\n");
    if (resp->body_len)
        at_buf_append(out, resp->body, resp->body_len);
}

int at_fuzz_rec_answer(void *ud, const at_http_req *req, at_http_resp *resp)
{
    at_fuzz_rec_src *s = ud;
    const uint8_t *rec;
    size_t len;
    if (at_fuzz_record(s->in, &rec, &len) != 0)
        return -1;
    s->answered++;
    return at_fuzz_parse_resp(rec, len, req->url, resp) ? 0 : 1;
}

void at_fuzz_check_msg(const at_error *err, const char *where)
{
    for (const unsigned char *p = (const unsigned char *)err->msg; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            at_fuzz_fail("%s: error message with control character 0x%02x: %s", where, *p, err->msg);
}

/* ------------------------------------------------------------ publishing */

void at_fuzz_pubs_free(at_fuzz_pubs *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->keys[i]);
    free(p->keys);
    memset(p, 0, sizeof(*p));
}

/* What the host keys a challenge on: type, name and token (every string
 * read in full, so a dangling step pointer shows up under ASan). */
static char *chal_key(const at_challenge_info *c)
{
    at_buf b = AT_BUF_INIT;
    if (!c)
        at_fuzz_fail("PUBLISH/WITHDRAW step without a challenge");
    if (!at_challenge_name(c->type))
        at_fuzz_fail("challenge step of unknown type %d", (int)c->type);
    if (!c->identifier || !c->token || !c->key_authorization)
        at_fuzz_fail("challenge step without identifier, token or key authorization");
    if (strncmp(c->key_authorization, c->token, strlen(c->token)) != 0 ||
        c->key_authorization[strlen(c->token)] != '.')
        at_fuzz_fail("key authorization '%s' does not start with token '%s.'", c->key_authorization, c->token);
    if (c->type == AT_CHAL_DNS01 && (!c->dns_name || !c->dns_value))
        at_fuzz_fail("dns-01 step without record name or value");
    if (c->type == AT_CHAL_TLSALPN01 && (!c->alpn_cert_pem || !c->alpn_key_pem ||
                                         !strlen(c->alpn_cert_pem) || !strlen(c->alpn_key_pem)))
        at_fuzz_fail("tls-alpn-01 step without certificate or key");
    at_buf_printf(&b, "%s %s%s %s", at_challenge_name(c->type), c->wildcard ? "*." : "",
                  c->identifier, c->token);
    return at_buf_detach(&b);
}

static void pubs_add(at_fuzz_pubs *p, char *k)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 8;
        if (!(p->keys = realloc(p->keys, p->cap * sizeof(*p->keys))))
            abort();
    }
    p->keys[p->n++] = k;
}

static void pubs_del(at_fuzz_pubs *p, const char *k)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->keys[i], k) == 0) {
            free(p->keys[i]);
            p->keys[i] = p->keys[--p->n];
            return;
        }
}

/* ------------------------------------------------------------ driving */

typedef struct pend {
    unsigned      tag;
    at_acme_exch *x;
} pend;

/* Run one exchange to its end and hand the outcome to the op. */
static void run_exchange(at_acme_client *c, at_acme_op *op, pend *pd, time_t *now,
                         const at_fuzz_responder *r, const at_fuzz_run_opts *o, int *dry)
{
    at_error err = AT_ERROR_INIT;
    int sends = 0;

    for (;;) {
        at_http_req q;
        at_http_resp resp;
        time_t until;
        at_exch_state s = at_acme_exch_next(pd->x, *now, &q, &until, &err);

        if (s == AT_EXCH_SEND) {
            int a = -1;
            if (++sends > EXCH_MAX_SENDS)
                at_fuzz_fail("an exchange sent more than %d requests", EXCH_MAX_SENDS);
            if (!q.url)
                at_fuzz_fail("an exchange produced a request without a URL");
            if (!*dry)
                a = r->answer(r->ud, &q, &resp);
            at_http_req_free(&q);
            if (a < 0) {
                *dry = 1;
                if (o->cancel_when_dry)
                    at_acme_op_cancel(op);
            }
            if (a == 0) {
                at_acme_exch_feed(pd->x, &resp, NULL, *now);
                at_http_resp_free(&resp);
            } else {
                at_error t = AT_ERROR_INIT;
                at_error_set(&t, AT_ERR_NETWORK, "no answer (fuzz input %s)", a < 0 ? "exhausted" : "says so");
                at_acme_exch_feed(pd->x, NULL, &t, *now);
                at_error_clear(&t);
            }
        } else if (s == AT_EXCH_WAIT) {
            if (until == 0)
                at_fuzz_fail("an exchange waits for a reply that was already given");
            if (until <= *now)
                at_fuzz_fail("an exchange waits until a moment already past");
            *now = until;
        } else if (s == AT_EXCH_DONE) {
            const at_http_resp *fin = at_acme_exch_response(pd->x);
            if (!fin)
                at_fuzz_fail("a finished exchange has no response");
            at_acme_op_response(op, pd->tag, fin, NULL, *now);
            break;
        } else {
            if (err.code == AT_OK || !err.msg[0])
                at_fuzz_fail("a failed exchange gives no error");
            at_fuzz_check_msg(&err, "exchange");
            at_acme_op_response(op, pd->tag, NULL, &err, *now);
            break;
        }
    }
    at_error_clear(&err);
}

int at_fuzz_run_op(at_acme_client *c, at_acme_op *op, time_t *now, const at_fuzz_responder *r,
                   const at_fuzz_run_opts *o, at_fuzz_pubs *pubs)
{
    pend *pending = NULL;
    size_t npend = 0, cap = 0;
    int dry = 0, published_once = 0, rv = -1;

    for (int n = 0; n < RUN_MAX_STEPS; n++) {
        at_step st;
        int ret = at_acme_op_step(op, *now, &st);

        if ((ret != 0) != (st.kind == AT_STEP_FAILED))
            at_fuzz_fail("at_acme_op_step returned %d with step kind %d", ret, (int)st.kind);
        if (o->on_step && o->on_step(o->ud, op, &st)) {
            rv = 0;
            goto out;
        }
        switch (st.kind) {
        case AT_STEP_REQUEST:
            if (!st.req || !st.req->url)
                at_fuzz_fail("REQUEST step without a request");
            if (npend == cap) {
                cap = cap ? cap * 2 : 8;
                if (!(pending = realloc(pending, cap * sizeof(*pending))))
                    abort();
            }
            pending[npend].tag = st.tag;
            if (!(pending[npend].x = at_acme_exch_new(c, st.req)))
                at_fuzz_fail("at_acme_exch_new refused a request the op produced");
            npend++;
            break;
        case AT_STEP_PUBLISH: {
            char *k = chal_key(st.chal);
            if (o->publish_fail && !published_once) {
                at_error e = AT_ERROR_INIT;
                at_error_set(&e, AT_ERR_IO, "the host could not publish the challenge");
                free(k);
                published_once = 1;
                at_acme_op_published(op, st.tag, &e);
                at_error_clear(&e);
                break;
            }
            published_once = 1;
            pubs_add(pubs, k);
            if (r->publish)
                r->publish(r->ud, st.chal);
            at_acme_op_published(op, st.tag, NULL);
            break;
        }
        case AT_STEP_WITHDRAW: {
            char *k = chal_key(st.chal);
            pubs_del(pubs, k);
            free(k);
            if (r->withdraw)
                r->withdraw(r->ud, st.chal);
            break;
        }
        case AT_STEP_CHECKPOINT:
            if (at_acme_op_order_url(op) || at_acme_op_cert_key(op)) {
                json_t *cp = at_acme_op_checkpoint(op);
                if (!json_is_object(cp))
                    at_fuzz_fail("CHECKPOINT step but no checkpoint object");
                json_decref(cp);
            }
            break;
        case AT_STEP_WAIT:
            if (npend) {
                pend *batch = pending;
                size_t nb = npend;
                pending = NULL;
                npend = cap = 0;
                for (size_t i = 0; i < nb; i++) {
                    pend *pd = &batch[o->lifo ? nb - 1 - i : i];
                    run_exchange(c, op, pd, now, r, o, &dry);
                    at_acme_exch_free(pd->x);
                    pd->x = NULL;
                }
                free(batch);
            } else if (st.until > *now) {
                *now = st.until;
            } else {
                at_fuzz_fail("the op waits (until %lld, now %lld) with nothing in flight",
                             (long long)st.until, (long long)*now);
            }
            break;
        case AT_STEP_DONE:
        case AT_STEP_FAILED:
            rv = (int)st.kind;
            goto out;
        default:
            at_fuzz_fail("unknown step kind %d", (int)st.kind);
        }
    }
    at_fuzz_fail("the op did not finish within %d steps", RUN_MAX_STEPS);
out:
    for (size_t i = 0; i < npend; i++)
        at_acme_exch_free(pending[i].x);
    free(pending);
    return rv;
}

void at_fuzz_check_end(const at_acme_op *op, int kind, const at_fuzz_pubs *pubs)
{
    const at_error *e = at_acme_op_error(op);
    /* AT_FUZZ_DEBUG=1: say how each op ended (to see how deep a seed goes). */
    if (getenv("AT_FUZZ_DEBUG"))
        fprintf(stderr, "op ended: %s%s%s\n", kind == AT_STEP_DONE ? "DONE" : "FAILED",
                e && e->code != AT_OK ? ": " : "", e && e->code != AT_OK ? e->msg : "");
    if (kind == AT_STEP_FAILED) {
        if (!e || e->code == AT_OK || !e->msg[0])
            at_fuzz_fail("FAILED without an error");
        at_fuzz_check_msg(e, "op error");
    } else if (kind == AT_STEP_DONE) {
        if (e && e->code != AT_OK)
            at_fuzz_fail("DONE with an error: %s", e->msg);
    } else {
        at_fuzz_fail("the op ended with step kind %d", kind);
    }
    if (pubs->n)
        at_fuzz_fail("the op ended with %zu challenge(s) still published, e.g. %s", pubs->n, pubs->keys[0]);
}
