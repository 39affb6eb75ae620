/*
 * at_fuzz_seeds: writes the seed corpora of the fuzz targets:
 *
 *     tests/fuzz/at_fuzz_seeds OUTDIR      (OUTDIR/<target>/<seed>)
 *
 * The ACME targets' seeds are real conversations: each scenario of
 * at_fuzz_ops.c runs against the fake CA of the unit tests (or the
 * recorded Pebble order, tests/unit/data/acme/pebble-order.json) and every
 * answer is written down as the record the target will read for that
 * request. Certificates, keys, JWS and store files come from the core's
 * own writers; directive values, header lines and live-table operations
 * are listed here. Inputs that once crashed a target are not made here:
 * they are kept by hand in the corpus as regression-<what>.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "at_fake_ca.h"
#include "at_fuzz_ops.h"
#include "at_jose.h"
#include "at_json.h"
#include "at_key.h"
#include "at_x509.h"

static const char *outdir;
static unsigned nseeds;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "at_fuzz_seeds: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

static void write_seed(const char *target, const char *name, const void *p, size_t n)
{
    char path[1024];
    FILE *f;
    snprintf(path, sizeof(path), "%s/%s", outdir, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        die("mkdir %s: %s", path, strerror(errno));
    snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
    if (!(f = fopen(path, "wb")) || fwrite(p, 1, n, f) != n || fclose(f) != 0)
        die("writing %s: %s", path, strerror(errno));
    nseeds++;
}

static void sep(at_buf *b)
{
    at_buf_puts(b, AT_FUZZ_SEP);
}

/* ------------------------------------------------------------ responders */

typedef struct gen {
    at_fake_ca *ca;
    at_buf     *out;
} gen;

static int gen_answer(void *ud, const at_http_req *req, at_http_resp *resp)
{
    gen *g = ud;
    at_fake_ca_handle(g->ca, req, resp);
    sep(g->out);
    at_fuzz_write_resp(g->out, resp);
    return 0;
}

static void gen_publish(void *ud, const at_challenge_info *c)
{
    at_fake_ca_publish(((gen *)ud)->ca, c);
}

static void gen_withdraw(void *ud, const at_challenge_info *c)
{
    at_fake_ca_withdraw(((gen *)ud)->ca, c);
}

/* The recorded Pebble order, answered by method and URL in recorded order. */
typedef struct replay {
    json_t *doc, *ex;
    char   *used;
    at_buf *out;
} replay;

static void replay_fill(const json_t *e, at_http_resp *r)
{
    size_t i;
    json_t *h;
    const char *body = at_json_str(e, "body");
    at_http_resp_init(r);
    r->status = (long)json_integer_value(json_object_get(e, "status"));
    json_array_foreach(json_object_get(e, "headers"), i, h) {
        char line[2048];
        snprintf(line, sizeof(line), "%s: %s\r\n", json_string_value(json_array_get(h, 0)),
                 json_string_value(json_array_get(h, 1)));
        at_http_resp_header(r, line, strlen(line), at_json_str(e, "url"));
    }
    r->body = strdup(body ? body : "");
    r->body_len = strlen(r->body);
}

static int replay_answer(void *ud, const at_http_req *q, at_http_resp *r)
{
    replay *rp = ud;
    const char *m = q->method == AT_HTTP_HEAD ? "HEAD" : q->method == AT_HTTP_GET ? "GET" : "POST";
    long last = -1;
    size_t i;
    for (i = 0; i < json_array_size(rp->ex); i++) {
        const json_t *e = json_array_get(rp->ex, i);
        if (strcmp(at_json_str(e, "method"), m) != 0 || strcmp(at_json_str(e, "url"), q->url) != 0)
            continue;
        if (!rp->used[i])
            break;
        last = (long)i;
    }
    if (i < json_array_size(rp->ex)) {
        rp->used[i] = 1;
        replay_fill(json_array_get(rp->ex, i), r);
    } else if (last >= 0) {
        replay_fill(json_array_get(rp->ex, (size_t)last), r);
    } else {
        at_http_resp_init(r);
        r->status = 404;
        r->body = strdup("");
    }
    sep(rp->out);
    at_fuzz_write_resp(rp->out, r);
    return 0;
}

static json_t *pebble_doc(void)
{
    char path[1024];
    json_error_t je;
    json_t *d;
    snprintf(path, sizeof(path), "%s/acme/pebble-order.json", AT_TEST_DATA_DIR);
    if (!(d = json_load_file(path, 0, &je)))
        die("%s: %s", path, je.text);
    return d;
}

/* ------------------------------------------------------------ fake CA setups */

typedef void knobs_fn(at_fake_ca *ca);

/* A fake CA with the fixed account registered (as acct/0), at a fixed time. */
static at_fake_ca *fake_ca(knobs_fn *knobs, int register_account)
{
    at_fake_ca *ca = at_fake_ca_new(NULL);
    at_error err = AT_ERROR_INIT;
    time_t now = AT_FUZZ_T0;

    at_fake_ca_set_now(ca, AT_FUZZ_T0);
    if (knobs)
        knobs(ca);
    if (register_account) {
        at_acme_client *c = at_acme_client_new(at_fake_ca_directory_url(ca), &err);
        if (at_fake_ca_setup_client(ca, c, at_fuzz_key(at_fuzz_account_key_pem), &now, &err) != 0)
            die("fake CA account: %s", err.msg);
        if (strcmp(at_acme_client_kid(c), AT_FUZZ_KID) != 0)
            die("the fake CA's first account is %s, not %s", at_acme_client_kid(c), AT_FUZZ_KID);
        at_acme_client_free(c);
    }
    return ca;
}

static void dir_record(at_fake_ca *ca, at_buf *out, at_http_resp *dir)
{
    at_http_req q;
    memset(&q, 0, sizeof(q));
    q.method = AT_HTTP_GET;
    q.url = (char *)at_fake_ca_directory_url(ca);
    at_fake_ca_handle(ca, &q, dir);
    at_fuzz_write_resp(out, dir);
}

/* A certificate for example.com issued by ca to the fixed account. */
static char *issue(at_fake_ca *ca)
{
    at_error err = AT_ERROR_INIT;
    at_acme_client *c = at_acme_client_new(at_fake_ca_directory_url(ca), &err);
    static const char *const names[] = { "example.com", "www.example.com" };
    static const at_challenge_type http[] = { AT_CHAL_HTTP01 };
    at_order_params p;
    at_http_resp dir;
    at_buf junk = AT_BUF_INIT;
    time_t now = AT_FUZZ_T0;
    at_acme_op *op;
    char *pem;

    dir_record(ca, &junk, &dir);
    at_acme_client_set_directory(c, &dir, &err);
    at_http_resp_free(&dir);
    at_buf_free(&junk);
    at_acme_client_set_account(c, at_fuzz_key(at_fuzz_account_key_pem), AT_FUZZ_KID);
    memset(&p, 0, sizeof(p));
    p.names = names;
    p.nnames = 2;
    p.key.kind = AT_KEY_EC;
    p.key.bits = 256;
    p.challenges = http;
    p.nchallenges = 1;
    op = at_acme_order_resume(c, &p, NULL, at_fuzz_key(at_fuzz_cert_key_pem), &err);
    if (!op || at_fake_ca_run(ca, c, op, &now, NULL) != AT_STEP_DONE)
        die("issuing from the fake CA: %s", op ? at_acme_op_error(op)->msg : err.msg);
    pem = strdup(at_acme_op_chain_pem(op));
    at_acme_op_free(op);
    at_acme_client_free(c);
    return pem;
}

/* ------------------------------------------------------------ ACME seeds */

static void k_preauth(at_fake_ca *ca) { at_fake_ca_set_new_authz(ca, 1); }
static void k_profiles(at_fake_ca *ca)
{
    at_fake_ca_add_profile(ca, "default", "the usual");
    at_fake_ca_add_profile(ca, "shortlived", "six days");
}
static void k_alt(at_fake_ca *ca) { at_fake_ca_set_alt_chain(ca, 1); }
static void k_polls(at_fake_ca *ca)
{
    at_fake_ca_set_pending_polls(ca, 2);
    at_fake_ca_set_processing_polls(ca, 2);
    at_fake_ca_set_poll_retry_after(ca, 3);
}
static void k_bad_nonce(at_fake_ca *ca) { at_fake_ca_set_bad_nonce_rate(ca, 30); }
static void k_invalid(at_fake_ca *ca)
{
    at_fake_ca_fail_challenge(ca, NULL, "incorrectResponse", "the key authorization was wrong");
}
static void k_ratelimit(at_fake_ca *ca)
{
    at_fake_ca_fail_next(ca, "newOrder", 1, 429, "rateLimited", "too many orders", 3600);
}
static void k_not_ready(at_fake_ca *ca)
{
    at_fake_ca_fail_next(ca, "finalize", 1, 403, "orderNotReady", "not yet", -1);
}
static void k_transient(at_fake_ca *ca)
{
    at_fake_ca_fail_next(ca, "authz", 2, 503, NULL, "<html>maintenance</html>", 2);
}
static void k_malformed(at_fake_ca *ca)
{
    static const char body[] = "{\"status\":\"pending\",\"identifiers\":[],\"authorizations\":[\"x\"";
    at_fake_ca_raw_next(ca, "order", 200, "application/json", body, sizeof(body) - 1);
}
static void k_replaces_refused(at_fake_ca *ca) { at_fake_ca_refuse_replaces(ca, 1); }
static void k_terms(at_fake_ca *ca) { at_fake_ca_set_terms(ca, "https://ca.test/terms"); }
static void k_eab(at_fake_ca *ca) { at_fake_ca_require_eab(ca, AT_FUZZ_EAB_KID, AT_FUZZ_EAB_KEY); }
static void k_no_nonces(at_fake_ca *ca) { at_fake_ca_omit_nonces(ca, 1); }
static void k_ari(at_fake_ca *ca)
{
    at_fake_ca_set_ari(ca, AT_FUZZ_T0 + 86400, AT_FUZZ_T0 + 2 * 86400, 21600, "https://ca.test/why");
}
static void k_dir_faults(at_fake_ca *ca)
{
    at_fake_ca_fail_next(ca, "renewalInfo", 1, 503, NULL, "busy", 5);
    at_fake_ca_fail_next(ca, "newNonce", 1, 500, NULL, "oops", -1);
}

typedef struct order_seed {
    const char *name;
    unsigned    f0, f1;
    knobs_fn   *knobs;
} order_seed;

/* A recorded conversation with one answer edited: record rec (0 = the
 * directory) gets its first `from` replaced by `to`. For the states a fake
 * CA never reaches by itself (an invalid authorization, an invalid order). */
static void variant(const char *target, const char *name, const at_buf *conv, size_t nflags, size_t rec,
                    const char *from, const char *to)
{
    const char *p = conv->data + nflags, *end = conv->data + conv->len, *hit;
    at_buf b = AT_BUF_INIT;
    for (size_t i = 0; i < rec && p; i++) {
        p = memmem(p, (size_t)(end - p), AT_FUZZ_SEP, sizeof(AT_FUZZ_SEP) - 1);
        if (p)
            p += sizeof(AT_FUZZ_SEP) - 1;
    }
    if (!p || !(hit = memmem(p, (size_t)(end - p), from, strlen(from))))
        die("variant %s: '%s' not in record %zu", name, from, rec);
    at_buf_append(&b, conv->data, (size_t)(hit - conv->data));
    at_buf_puts(&b, to);
    hit += strlen(from);
    at_buf_append(&b, hit, (size_t)(end - hit));
    write_seed(target, name, b.data, b.len);
    at_buf_free(&b);
}

/* A conversation written by hand: flags, the fake CA's directory, answers. */
static void conversation(const char *target, const char *name, const unsigned char *flags, size_t nflags,
                         const char *const *answers, size_t n)
{
    at_fake_ca *ca = fake_ca(NULL, 0);
    at_buf b = AT_BUF_INIT;
    at_http_resp dir;
    at_buf_append(&b, flags, nflags);
    dir_record(ca, &b, &dir);
    for (size_t i = 0; i < n; i++) {
        sep(&b);
        at_buf_puts(&b, answers[i]);
    }
    write_seed(target, name, b.data, b.len);
    at_http_resp_free(&dir);
    at_buf_free(&b);
    at_fake_ca_free(ca);
}

static void seeds_order(void)
{
    static const order_seed seeds[] = {
        { "http01", 0x10, 0x00, NULL },
        { "tlsalpn01-ipv6", 0x70, 0x00, NULL },
        { "wildcard-dns01", 0xA0, 0x00, NULL },
        { "all-challenges-lifo", 0xF1, 0x00, NULL },
        { "preauth", 0x10, 0x01, k_preauth },
        { "profile", 0x10, 0x02, k_profiles },
        { "replaces", 0x10, 0x04, NULL },
        { "replaces-refused", 0x10, 0x04, k_replaces_refused },
        { "alt-chain", 0x10, 0x08, k_alt },
        { "polling", 0x10, 0x20, k_polls },
        { "crash-2", 0x10, 0x80, k_polls },
        { "crash-3-preauth", 0x50, 0xC1, k_preauth },
        { "bad-nonces", 0x30, 0x00, k_bad_nonce },
        { "no-nonces", 0x10, 0x00, k_no_nonces },
        { "invalid-challenge", 0x10, 0x00, k_invalid },
        { "publish-fails", 0x12, 0x00, NULL },
        { "ratelimited", 0x10, 0x00, k_ratelimit },
        { "order-not-ready", 0x10, 0x00, k_not_ready },
        { "transient-5xx", 0x10, 0x00, k_transient },
        { "malformed-order", 0x14, 0x00, k_malformed },
        { "resume-unknown", 0x10, 0x10, NULL },
        { "new-key", 0x18, 0x00, NULL },
    };
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        at_fake_ca *ca = fake_ca(seeds[i].knobs, 1);
        at_buf out = AT_BUF_INIT;
        at_http_resp dir;
        gen g = { ca, &out };
        at_fuzz_responder r = { gen_answer, gen_publish, gen_withdraw, &g };
        unsigned char f[2] = { (unsigned char)seeds[i].f0, (unsigned char)seeds[i].f1 };
        at_buf_append(&out, f, 2);
        dir_record(ca, &out, &dir);
        at_fuzz_order(seeds[i].f0, seeds[i].f1, &dir, &r);
        write_seed("acme_order", seeds[i].name, out.data, out.len);
        if (i == 0) {
            /* http01: record 2 is the new order, 3 the authorization. */
            variant("acme_order", "authz-invalid", &out, 2, 3, "{\"status\":\"pending\"",
                    "{\"status\":\"invalid\"");
            variant("acme_order", "authz-expired", &out, 2, 3, "{\"status\":\"pending\"",
                    "{\"status\":\"expired\"");
            variant("acme_order", "authz-unknown-status", &out, 2, 3, "{\"status\":\"pending\"",
                    "{\"status\":\"paused\"");
            variant("acme_order", "authz-no-identifier", &out, 2, 3, "\"identifier\"", "\"ident\"");
            variant("acme_order", "authz-no-challenges", &out, 2, 3, "\"challenges\"", "\"challengez\"");
            variant("acme_order", "order-invalid", &out, 2, 2, "{\"status\":\"pending\"",
                    "{\"error\":{\"type\":\"urn:ietf:params:acme:error:rejectedIdentifier\","
                    "\"detail\":\"policy forbids\"},\"status\":\"invalid\"");
            variant("acme_order", "order-no-location", &out, 2, 2, "Location:", "X-Location:");
            variant("acme_order", "order-unknown-status", &out, 2, 2, "{\"status\":\"pending\"",
                    "{\"status\":\"queued\"");
            variant("acme_order", "authz-url-not-string", &out, 2, 2, "\"authorizations\":[",
                    "\"authorizations\":[7,");
            variant("acme_order", "cert-damaged", &out, 2, 6, "-----BEGIN CERTIFICATE-----\nMII",
                    "-----BEGIN CERTIFICATE-----\nMIJ");
        }
        at_http_resp_free(&dir);
        at_buf_free(&out);
        at_fake_ca_free(ca);
    }
    /* The recorded Pebble order, all the way to its alternate chain. */
    {
        static const struct { const char *name; unsigned f0, f1; } pb[] = {
            { "pebble", 0x00, 0x08 }, { "pebble-crash-1", 0x00, 0x48 }, { "pebble-cancel", 0x04, 0x00 },
        };
        for (size_t i = 0; i < sizeof(pb) / sizeof(pb[0]); i++) {
            json_t *doc = pebble_doc();
            at_buf out = AT_BUF_INIT;
            replay rp = { doc, json_object_get(doc, "exchanges"), NULL, &out };
            at_fuzz_responder r = { replay_answer, NULL, NULL, &rp };
            unsigned char f[2] = { (unsigned char)pb[i].f0, (unsigned char)pb[i].f1 };
            at_http_resp dir;
            rp.used = calloc(json_array_size(rp.ex) + 1, 1);
            at_buf_append(&out, f, 2);
            replay_fill(json_array_get(rp.ex, 0), &dir);
            rp.used[0] = 1;
            at_fuzz_write_resp(&out, &dir);
            at_fuzz_order(pb[i].f0, pb[i].f1, &dir, &r);
            write_seed("acme_order", pb[i].name, out.data, out.len);
            at_http_resp_free(&dir);
            at_buf_free(&out);
            free(rp.used);
            json_decref(doc);
        }
    }
}

typedef struct acct_seed {
    const char *name;
    unsigned    f0, f1;
    knobs_fn   *knobs;
    int         registered;
} acct_seed;

static void seeds_account(void)
{
    static const char nonce[] = "200\nReplay-Nonce: Nfake0000000001\n\n";
    static const char not_found[] = "400\nContent-Type: application/problem+json\nReplay-Nonce: Nfake0000000002\n\n"
        "{\"type\":\"urn:ietf:params:acme:error:accountDoesNotExist\",\"detail\":\"no account\"}";
    static const struct { const char *name; unsigned char f[2]; const char *last; } hand[] = {
        { "create-invalid-contact", { 0x28, 0x08 }, "400\nContent-Type: application/problem+json\n\n"
          "{\"type\":\"urn:ietf:params:acme:error:invalidContact\",\"detail\":\"no such domain\"}" },
        { "create-eab-required", { 0x08, 0x08 }, "403\nContent-Type: application/problem+json\n\n"
          "{\"type\":\"urn:ietf:params:acme:error:externalAccountRequired\"}" },
        { "create-user-action", { 0x08, 0x08 }, "403\nContent-Type: application/problem+json\n"
          "Link: <https://ca.test/terms/v2>;rel=\"terms-of-service\"\n\n"
          "{\"type\":\"urn:ietf:params:acme:error:userActionRequired\",\"detail\":\"new terms\"}" },
        { "create-deactivated", { 0x08, 0x00 }, "201\nContent-Type: application/json\n"
          "Location: https://ca.test/acct/0\n\n{\"status\":\"deactivated\"}" },
    };
    for (size_t i = 0; i < sizeof(hand) / sizeof(hand[0]); i++) {
        const char *answers[] = { nonce, not_found, hand[i].last };
        conversation("acme_account", hand[i].name, hand[i].f, 2, answers, 3);
    }
    {
        static const unsigned char f[2] = { 0x43, 0x00 };
        const char *answers[] = { nonce, "409\nContent-Type: application/problem+json\n"
            "Location: https://ca.test/acct/7\n\n{\"type\":\"urn:ietf:params:acme:error:malformed\","
            "\"detail\":\"key in use\"}" };
        conversation("acme_account", "rollover-conflict", f, 2, answers, 2);
    }

    static const acct_seed seeds[] = {
        { "ensure-create", 0x28, 0x00, NULL, 0 },
        { "ensure-existing", 0x08, 0x00, NULL, 1 },
        { "ensure-terms", 0x28, 0x08, k_terms, 0 },
        { "ensure-terms-refused", 0x00, 0x08, k_terms, 0 },
        { "ensure-eab", 0x18, 0x08, k_eab, 0 },
        { "ensure-eab-hs512", 0x18, 0x06, k_eab, 0 },
        { "ensure-eab-missing", 0x08, 0x08, k_eab, 0 },
        { "fetch", 0x41, 0x00, NULL, 1 },
        { "update-contacts", 0x62, 0x00, NULL, 1 },
        { "rollover", 0x43, 0x00, NULL, 1 },
        { "deactivate", 0x44, 0x00, NULL, 1 },
        { "fetch-unknown", 0x41, 0x00, NULL, 0 },
        { "bad-nonces", 0x28, 0x00, k_bad_nonce, 0 },
    };
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        at_fake_ca *ca = fake_ca(seeds[i].knobs, seeds[i].registered);
        at_buf out = AT_BUF_INIT;
        at_http_resp dir;
        gen g = { ca, &out };
        at_fuzz_responder r = { gen_answer, NULL, NULL, &g };
        unsigned char f[2] = { (unsigned char)seeds[i].f0, (unsigned char)seeds[i].f1 };
        at_buf_append(&out, f, 2);
        dir_record(ca, &out, &dir);
        at_fuzz_account(seeds[i].f0, seeds[i].f1, &dir, &r, 0);
        write_seed("acme_account", seeds[i].name, out.data, out.len);
        at_http_resp_free(&dir);
        at_buf_free(&out);
        at_fake_ca_free(ca);
    }
    {
        json_t *doc = pebble_doc();
        at_buf out = AT_BUF_INIT;
        replay rp = { doc, json_object_get(doc, "exchanges"), NULL, &out };
        at_fuzz_responder r = { replay_answer, NULL, NULL, &rp };
        unsigned char f[2] = { 0x08, 0x00 };
        at_http_resp dir;
        rp.used = calloc(json_array_size(rp.ex) + 1, 1);
        at_buf_append(&out, f, 2);
        replay_fill(json_array_get(rp.ex, 0), &dir);
        rp.used[0] = 1;
        at_fuzz_write_resp(&out, &dir);
        at_fuzz_account(0x08, 0x00, &dir, &r, 0);
        write_seed("acme_account", "pebble", out.data, out.len);
        at_http_resp_free(&dir);
        at_buf_free(&out);
        free(rp.used);
        json_decref(doc);
    }
}

/* Revocation and ARI: f0, directory, certificate, answers. */
static void seeds_cert_ops(void)
{
    static const struct { const char *target, *name; unsigned f0; knobs_fn *knobs; int issue; } seeds[] = {
        { "acme_revoke", "key-compromise", 0x02, NULL, 1 },
        { "acme_revoke", "no-reason", 0x00, NULL, 1 },
        { "acme_revoke", "superseded-bad-nonces", 0x05, k_bad_nonce, 1 },
        { "acme_revoke", "unknown-cert", 0x01, NULL, 0 },
        { "acme_revoke", "invalid-reason", 0x0B, NULL, 1 },
        { "acme_ari", "window", 0x00, k_ari, 1 },
        { "acme_ari", "derived-window", 0x00, NULL, 1 },
        { "acme_ari", "unknown-cert", 0x00, NULL, 0 },
        { "acme_ari", "busy-then-window", 0x00, k_dir_faults, 1 },
    };
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        at_fake_ca *ca = fake_ca(seeds[i].knobs, 1);
        at_buf out = AT_BUF_INIT;
        at_http_resp dir;
        gen g = { ca, &out };
        at_fuzz_responder r = { gen_answer, NULL, NULL, &g };
        unsigned char f = (unsigned char)seeds[i].f0;
        char *pem;
        if (seeds[i].issue) {
            pem = issue(ca);
        } else {
            json_t *doc = pebble_doc();
            json_t *e;
            size_t k;
            pem = NULL;
            json_array_foreach(json_object_get(doc, "exchanges"), k, e)
                if (!pem && strstr(at_json_str(e, "url"), "/certZ/"))
                    pem = strdup(at_json_str(e, "body"));
            json_decref(doc);
        }
        at_buf_append(&out, &f, 1);
        dir_record(ca, &out, &dir);
        sep(&out);
        at_buf_puts(&out, pem);
        if (strcmp(seeds[i].target, "acme_revoke") == 0)
            at_fuzz_revoke(seeds[i].f0, &dir, pem, &r);
        else
            at_fuzz_ari(seeds[i].f0, &dir, pem, &r);
        write_seed(seeds[i].target, seeds[i].name, out.data, out.len);
        free(pem);
        at_http_resp_free(&dir);
        at_buf_free(&out);
        at_fake_ca_free(ca);
    }
}

static void seeds_exch(void)
{
    /* slot s: new 0b00kkpaSS, step 0b01....SS, time 0b10tttttt, abandon 0b11....SS */
    static const struct { const char *name; unsigned f0; knobs_fn *knobs; const char *script; size_t n; } seeds[] = {
        { "jwk-lookup", 0x05, NULL, "\x1c\x40\x40\x40\x40", 5 },
        { "kid-post-as-get", 0x05, NULL, "\x29\x41\x41\x41\x41", 5 },
        { "get-head", 0x05, NULL, "\x02\x42\x42\x07\x43\x43", 6 },
        { "interleaved", 0x05, k_bad_nonce, "\x1c\x19\x40\x41\x40\x41\x40\x41\x40\x41\x85\x40\x41", 13 },
        { "bad-nonces", 0x02, k_bad_nonce, "\x1c\x40\x40\x40\x40\x40\x40\x40\x40", 9 },
        { "no-nonces", 0x05, k_no_nonces, "\x1c\x40\x40\x40\x40\x40\x40\x40", 8 },
        { "transient", 0x05, k_dir_faults, "\x02\x42\x42\x42\x42\x1c\x40\x40\x40\x40\x40\xc2", 12 },
        { "no-account", 0x0d, NULL, "\x19\x41\x41\x1c\x40\x40", 6 },
    };
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        at_fake_ca *ca = fake_ca(seeds[i].knobs, 1);
        at_buf out = AT_BUF_INIT;
        at_http_resp dir;
        gen g = { ca, &out };
        at_fuzz_responder r = { gen_answer, NULL, NULL, &g };
        unsigned char f = (unsigned char)seeds[i].f0;
        at_buf_append(&out, &f, 1);
        dir_record(ca, &out, &dir);
        sep(&out);
        at_buf_append(&out, seeds[i].script, seeds[i].n);
        at_fuzz_exch(seeds[i].f0, &dir, (const uint8_t *)seeds[i].script, seeds[i].n, &r);
        write_seed("acme_exch", seeds[i].name, out.data, out.len);
        at_http_resp_free(&dir);
        at_buf_free(&out);
        at_fake_ca_free(ca);
    }
    /* Directories as real CAs write them. */
    {
        json_t *doc = pebble_doc();
        at_buf out = AT_BUF_INIT;
        at_http_resp dir;
        replay_fill(json_array_get(json_object_get(doc, "exchanges"), 0), &dir);
        at_buf_puts(&out, "\x05");
        at_fuzz_write_resp(&out, &dir);
        sep(&out);
        at_buf_puts(&out, "\x1c\x40");
        write_seed("acme_exch", "pebble-directory", out.data, out.len);
        at_http_resp_free(&dir);
        at_buf_free(&out);
        json_decref(doc);
    }
}

static void seeds_problem(void)
{
    static const struct { const char *name, *text; } docs[] = {
        { "ratelimited", "429\nContent-Type: application/problem+json\nRetry-After: 3600\n\n"
          "{\"type\":\"urn:ietf:params:acme:error:rateLimited\",\"detail\":\"too many certificates (5) already "
          "issued for this exact set of identifiers\",\"status\":429}" },
        { "retry-after-date", "503\nContent-Type: application/problem+json\nRetry-After: Wed, 15 Nov 2023 "
          "00:13:20 GMT\n\n{\"type\":\"urn:ietf:params:acme:error:serverInternal\",\"detail\":\"down\"}" },
        { "user-action", "403\nContent-Type: application/problem+json\nLink: <https://ca.test/terms>;"
          "rel=\"terms-of-service\"\n\n{\"type\":\"urn:ietf:params:acme:error:userActionRequired\","
          "\"detail\":\"new terms\",\"instance\":\"https://ca.test/agree\"}" },
        { "bad-signature-alg", "400\nContent-Type: application/problem+json\n\n{\"type\":\"urn:ietf:params:"
          "acme:error:badSignatureAlgorithm\",\"detail\":\"no\",\"algorithms\":[\"ES256\",\"RS256\"]}" },
        { "compound", "400\nContent-Type: application/problem+json\n\n{\"type\":\"urn:ietf:params:acme:"
          "error:compound\",\"detail\":\"several\",\"subproblems\":[{\"type\":\"urn:ietf:params:acme:error:"
          "caa\",\"detail\":\"CAA forbids\",\"identifier\":{\"type\":\"dns\",\"value\":\"a.example.com\"}},"
          "{\"type\":\"urn:ietf:params:acme:error:dns\",\"detail\":\"NXDOMAIN\",\"identifier\":{\"type\":"
          "\"dns\",\"value\":\"b.example.com\"}}]}" },
        { "plain-text", "502\nContent-Type: text/html\n\n<html><body>Bad Gateway</body></html>" },
        { "no-content-type", "400\n\n{\"type\":\"about:blank\",\"detail\":\"\\u0001ctl\\nchars\"}" },
        { "empty", "500\n\n" },
        { "not-an-error", "200\nContent-Type: application/json\n\n{\"status\":\"valid\"}" },
        { "saved-error", "200\n\n{\"code\":\"ca\",\"message\":\"x\",\"http_status\":400,\"retry_after\":-1,"
          "\"problem\":{\"type\":\"urn:ietf:params:acme:error:caa\"}}" },
    };
    json_t *doc = pebble_doc(), *e;
    size_t i;
    for (i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
        write_seed("acme_problem", docs[i].name, docs[i].text, strlen(docs[i].text));
    json_array_foreach(json_object_get(doc, "exchanges"), i, e) {
        at_http_resp r;
        at_buf out = AT_BUF_INIT;
        char name[64];
        if (json_integer_value(json_object_get(e, "status")) < 400)
            continue;
        replay_fill(e, &r);
        at_fuzz_write_resp(&out, &r);
        snprintf(name, sizeof(name), "pebble-%zu", i);
        write_seed("acme_problem", name, out.data, out.len);
        at_http_resp_free(&r);
        at_buf_free(&out);
    }
    json_decref(doc);
}

/* ------------------------------------------------------------ other seeds */

static void seeds_http_header(void)
{
    static const struct { const char *name, *text; } seeds[] = {
        { "acme", "https://ca.test/acme/new-order\nContent-Type: application/json; charset=utf-8\n"
          "Location: /acme/order/1\nReplay-Nonce: oW9p1D5M7TOBliJBuRkE-w\nRetry-After: 120\n"
          "Link: <https://ca.test/dir>;rel=\"index\"" },
        { "links", "https://ca.test/cert/1\nLink: <https://ca.test/cert/1/alt>;rel=\"alternate\", "
          "<../dir>; rel=index, <alt2>;title=\"x, y\";rel=\"alternate up\"\nLink: garbage, <x>\n"
          "link: <https://ca.test/terms>;rel=terms-of-service" },
        { "resolve", "https://ca.test/a/b/c?q=1#f\n../../x/./y\n./z\n/abs/../p\n//other.test/q\n?new\n#frag\n"
          "g;x=1/../y\n.\n..\nhttp://absolute.test/ok" },
        { "dates", "https://ca.test/\nRetry-After: Sun, 06 Nov 1994 08:49:37 GMT\nSunday, 06-Nov-94 08:49:37 "
          "GMT\nSun Nov  6 08:49:37 1994\n2025-01-02T03:04:05Z\n2025-01-02T03:04:05.123+02:00\n"
          "2016-12-31T23:59:60Z\n1999-02-29T00:00:00Z\n 3600 " },
    };
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
        write_seed("http_header", seeds[i].name, seeds[i].text, strlen(seeds[i].text));
}

static void der_of_pem_certs(const char *pem, at_buf *chain_records, at_buf *first)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x;
    int n = 0;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        unsigned char *der = NULL;
        int len = i2d_X509(x, &der);
        if (n++)
            sep(chain_records);
        at_buf_append(chain_records, der, (size_t)len);
        if (n == 1 && first)
            at_buf_append(first, der, (size_t)len);
        OPENSSL_free(der);
        X509_free(x);
    }
    BIO_free(bio);
}

static void x509_set(const char *name, const char *pem)
{
    at_buf b = AT_BUF_INIT, chain = AT_BUF_INIT, leaf = AT_BUF_INIT;
    char n[128];
    at_buf_append(&b, "\x00", 1);
    at_buf_puts(&b, pem);
    snprintf(n, sizeof(n), "%s-pem", name);
    write_seed("x509", n, b.data, b.len);
    der_of_pem_certs(pem, &chain, &leaf);
    if (leaf.len) {
        at_buf_reset(&b);
        at_buf_append(&b, "\x01", 1);
        at_buf_append(&b, leaf.data, leaf.len);
        snprintf(n, sizeof(n), "%s-der", name);
        write_seed("x509", n, b.data, b.len);
        at_buf_reset(&b);
        at_buf_append(&b, "\x03", 1);
        at_buf_append(&b, chain.data, chain.len);
        snprintf(n, sizeof(n), "%s-der-chain", name);
        write_seed("x509", n, b.data, b.len);
    }
    at_buf_free(&b);
    at_buf_free(&chain);
    at_buf_free(&leaf);
}

static void key_seed(const char *name, EVP_PKEY *k, int encrypted)
{
    at_buf b = AT_BUF_INIT;
    BIO *bio = BIO_new(BIO_s_mem());
    char *p;
    long n;
    at_buf_append(&b, "\x00", 1);
    if (encrypted)
        PEM_write_bio_PKCS8PrivateKey(bio, k, EVP_aes_128_cbc(), NULL, 0, NULL, (void *)"secret");
    else
        PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL);
    n = BIO_get_mem_data(bio, &p);
    at_buf_append(&b, p, (size_t)n);
    write_seed("x509", name, b.data, b.len);
    write_seed("conf_parse", name, b.data + 1, b.len - 1);
    BIO_free(bio);
    if (!encrypted) {
        char nm[128];
        PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
        unsigned char *d8 = NULL;
        int l8 = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &d8) : 0;
        at_buf_reset(&b);
        at_buf_append(&b, "\x02", 1);
        at_buf_append(&b, d8, (size_t)(l8 > 0 ? l8 : 0));
        snprintf(nm, sizeof(nm), "%s-der", name);
        write_seed("x509", nm, b.data, b.len);
        OPENSSL_free(d8);
        PKCS8_PRIV_KEY_INFO_free(p8);
    }
    at_buf_free(&b);
}

static void seeds_x509(const char *fake_chain)
{
    at_error err = AT_ERROR_INIT;
    json_t *doc = pebble_doc(), *e;
    at_buf cert = AT_BUF_INIT, key = AT_BUF_INIT;
    static const char *const ph_names[] = { "example.com", "www.example.com", "192.0.2.1" };
    at_key_spec rsa = { AT_KEY_RSA, 2048 };
    EVP_PKEY *rk = at_key_generate(&rsa, &err);
    char *ka;
    size_t i;

    json_array_foreach(json_object_get(doc, "exchanges"), i, e)
        if (strstr(at_json_str(e, "url"), "/certZ/") && !strstr(at_json_str(e, "url"), "alternate"))
            x509_set("pebble-chain", at_json_str(e, "body"));
    json_decref(doc);
    x509_set("fake-ca-chain", fake_chain);
    ka = at_key_authorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", at_fuzz_key(at_fuzz_account_key_pem), &err);
    if (at_tlsalpn01_cert("example.com", ka, &cert, &key, &err) != 0)
        die("tls-alpn-01 certificate: %s", err.msg);
    x509_set("tlsalpn01", cert.data);
    at_buf_reset(&cert);
    at_buf_reset(&key);
    if (at_tlsalpn01_cert("2001:db8::1", ka, &cert, &key, &err) != 0)
        die("tls-alpn-01 certificate: %s", err.msg);
    x509_set("tlsalpn01-ip", cert.data);
    at_buf_reset(&cert);
    at_buf_reset(&key);
    if (at_placeholder_cert(ph_names, 3, "rsa:2048", 30, &cert, &key, &err) != 0)
        die("placeholder: %s", err.msg);
    x509_set("placeholder", cert.data);
    free(ka);
    at_buf_free(&cert);
    at_buf_free_secret(&key);
    key_seed("key-p256", at_fuzz_key(at_fuzz_cert_key_pem), 0);
    key_seed("key-p384", at_fuzz_key(at_fuzz_other_key_pem), 0);
    if (rk) {
        key_seed("key-rsa2048", rk, 0);
        key_seed("key-encrypted", rk, 1);
        EVP_PKEY_free(rk);
    }
}

static void seeds_jose(void)
{
    at_error err = AT_ERROR_INIT;
    at_buf jws = AT_BUF_INIT;
    EVP_PKEY *a = at_fuzz_key(at_fuzz_account_key_pem), *o = at_fuzz_key(at_fuzz_other_key_pem);
    json_t *eab, *jwk;
    char *s;
    static const char rfc7638[] =
        "{\"kty\":\"RSA\",\"n\":\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t"
        "Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMi"
        "cAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G"
        "_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw\",\"e\":\"AQAB\",\"alg\":\"RS256\",\"kid\":\"2011-04-29\"}";

    write_seed("jose", "rfc7638-jwk", rfc7638, strlen(rfc7638));
    if (at_jws_sign(a, AT_FUZZ_KID, "oW9p1D5M7TOBliJBuRkE-w", "https://ca.test/new-order",
                    "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"example.com\"}]}", &jws, &err) == 0)
        write_seed("jose", "jws-kid", jws.data, jws.len);
    at_buf_reset(&jws);
    if (at_jws_sign(a, NULL, "oW9p1D5M7TOBliJBuRkE-w", "https://ca.test/new-acct",
                    "{\"onlyReturnExisting\":true}", &jws, &err) == 0)
        write_seed("jose", "jws-jwk", jws.data, jws.len);
    at_buf_reset(&jws);
    if (at_jws_sign(o, AT_FUZZ_KID, "abc", "https://ca.test/order/0", NULL, &jws, &err) == 0)
        write_seed("jose", "jws-p384-post-as-get", jws.data, jws.len);
    at_buf_reset(&jws);
    if (at_jws_sign(o, NULL, NULL, "https://ca.test/key-change", "{\"account\":\"x\"}", &jws, &err) == 0)
        write_seed("jose", "jws-keychange-inner", jws.data, jws.len);
    eab = at_eab_jws(a, AT_FUZZ_EAB_KID, AT_FUZZ_EAB_KEY, "HS256", "https://ca.test/new-acct", &err);
    if (eab && (s = at_json_compact(eab))) {
        write_seed("jose", "eab", s, strlen(s));
        free(s);
    }
    json_decref(eab);
    jwk = at_jwk_public(o, &err);
    if (jwk && (s = at_json_compact(jwk))) {
        write_seed("jose", "jwk-p384", s, strlen(s));
        free(s);
    }
    json_decref(jwk);
    at_buf_free(&jws);
}

static void seeds_store(const char *chain)
{
    at_buf b = AT_BUF_INIT;
    static const char meta[] = "{\"names\":[\"example.com\",\"www.example.com\"],\"key\":\"ec:P-256\","
                               "\"ca\":\"https://ca.test/dir\",\"not_before\":1700000000,\"not_after\":1707776000,"
                               "\"serial\":\"01\",\"issued_at\":1700000000,\"challenge\":\"http-01\"}";
    static const char acct[] = "{\"ca_url\":\"https://ca.test/dir\",\"url\":\"https://ca.test/acct/0\","
                               "\"account\":{\"status\":\"valid\",\"contact\":[\"mailto:admin@example.com\"]}}";
    static const char order[] = "{\"order_url\":\"https://ca.test/order/0\",\"status\":\"pending\","
                                "\"names\":[\"example.com\"],\"key\":\"ec:P-256\"}";
    static const char state[] = "{\"failures\":2,\"last_attempt\":1700000000,\"next_attempt\":1700000600,"
                                "\"last_error\":{\"code\":\"ca\",\"message\":\"x\",\"http_status\":429,"
                                "\"retry_after\":3600,\"problem\":null},\"ari\":{\"start\":1,\"end\":2}}";
    for (int dir = 0; dir < 2; dir++) {
        const char *sfx = dir ? "-dir" : "";
        char name[64];
        unsigned char f;

        f = (unsigned char)(0 | dir << 2);
        at_buf_reset(&b);
        at_buf_append(&b, &f, 1);
        at_buf_puts(&b, chain);
        sep(&b);
        at_buf_puts(&b, at_fuzz_cert_key_pem);
        sep(&b);
        at_buf_puts(&b, meta);
        snprintf(name, sizeof(name), "cert%s", sfx);
        write_seed("store", name, b.data, b.len);

        f = (unsigned char)(1 | dir << 2);
        at_buf_reset(&b);
        at_buf_append(&b, &f, 1);
        at_buf_puts(&b, acct);
        sep(&b);
        at_buf_puts(&b, at_fuzz_account_key_pem);
        snprintf(name, sizeof(name), "account%s", sfx);
        write_seed("store", name, b.data, b.len);

        f = (unsigned char)(2 | dir << 2);
        at_buf_reset(&b);
        at_buf_append(&b, &f, 1);
        at_buf_puts(&b, order);
        sep(&b);
        at_buf_puts(&b, at_fuzz_cert_key_pem);
        snprintf(name, sizeof(name), "order%s", sfx);
        write_seed("store", name, b.data, b.len);

        f = (unsigned char)(3 | dir << 2);
        at_buf_reset(&b);
        at_buf_append(&b, &f, 1);
        at_buf_puts(&b, state);
        snprintf(name, sizeof(name), "state%s", sfx);
        write_seed("store", name, b.data, b.len);
    }
    /* A key that belongs to another certificate. */
    at_buf_reset(&b);
    at_buf_append(&b, "\x00", 1);
    at_buf_puts(&b, chain);
    sep(&b);
    at_buf_puts(&b, at_fuzz_account_key_pem);
    sep(&b);
    at_buf_puts(&b, meta);
    write_seed("store", "cert-wrong-key", b.data, b.len);
    at_buf_free(&b);
}

/* One live-table operation: op byte, then NUL-separated arguments. */
static void live_op(at_buf *b, unsigned op, const char *const *args, size_t n)
{
    unsigned char o = (unsigned char)op;
    if (b->len)
        sep(b);
    at_buf_append(b, &o, 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            at_buf_append(b, "", 1);
        at_buf_puts(b, args[i]);
    }
}

static void seeds_http01(const char *chain)
{
    at_buf b = AT_BUF_INIT;
    static const char tok[] = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    static const char ka[] = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI";
    const char *put[] = { tok, ka }, *get[] = { tok };
    const char *path[] = { "/.well-known/acme-challenge/evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA" };
    const char *bad[] = { "/.well-known/acme-challenge/../../etc/passwd" };
    const char *pct[] = { "/.well-known/acme-challenge/%2e%2e" };
    const char *other[] = { "/index.html" };
    const char *alpn[] = { "Example.COM.", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                           "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n" };
    const char *alpn_ip[] = { "1.2.0.192.in-addr.arpa", "c", "k" };
    const char *cert[] = { "example.com_ec256", "e", chain, at_fuzz_cert_key_pem, "example.com", "www.example.com" };
    const char *cert_rsa[] = { "example.com_rsa2048", "r", chain, "k", "example.com", "*.example.com" };
    const char *host[] = { "WWW.example.com.", "e" }, *wild[] = { "x.example.com", "r" };
    const char *cur[] = { "example.com_ec256" };

    live_op(&b, 0, put, 2);
    live_op(&b, 2, get, 1);
    live_op(&b, 3, path, 1);
    live_op(&b, 3, bad, 1);
    live_op(&b, 3, pct, 1);
    live_op(&b, 3, other, 1);
    live_op(&b, 1, get, 1);
    live_op(&b, 3, path, 1);
    write_seed("http01", "http01", b.data, b.len);
    at_buf_reset(&b);
    live_op(&b, 4, alpn, 3);
    live_op(&b, 6, alpn, 1);
    live_op(&b, 4, alpn_ip, 3);
    live_op(&b, 6, alpn_ip, 1);
    live_op(&b, 5, alpn, 1);
    write_seed("http01", "alpn01", b.data, b.len);
    at_buf_reset(&b);
    live_op(&b, 7, cert, 6);
    live_op(&b, 7, cert_rsa, 6);
    live_op(&b, 9, host, 2);
    live_op(&b, 9, wild, 2);
    live_op(&b, 10, cur, 1);
    live_op(&b, 7, cert, 6);
    live_op(&b, 8, cur, 1);
    live_op(&b, 9, host, 2);
    write_seed("http01", "certs", b.data, b.len);
    at_buf_reset(&b);
    for (int i = 0; i < 40; i++)
        live_op(&b, 7, cert, 6);            /* churn: compaction, then "full" */
    live_op(&b, 0, put, 2);
    write_seed("http01", "churn", b.data, b.len);
    at_buf_reset(&b);
    live_op(&b, 7, cert, 6);
    live_op(&b, 0, put, 2);
    {
        const char *dmg[] = { "\x01\x10garbage-over-the-records" };
        live_op(&b, 11, dmg, 1);
    }
    live_op(&b, 9, host, 2);
    live_op(&b, 2, get, 1);
    live_op(&b, 7, cert, 6);
    write_seed("http01", "damage", b.data, b.len);
    at_buf_free(&b);
}

static void seeds_conf_parse(const char *chain)
{
    static const char *const values[] = {
        "on", "OFF", "letsencrypt", "letsencrypt-staging", "https://acme.example.com/directory",
        "http://127.0.0.1:14000/dir", "http://ca.example.com/dir", "https://[::1]:8443/dir",
        "ec:P-256", "ec:P-384", "rsa:2048", "RSA4096", "prime256v1", "ec:P-999", "http-01", "TLS-ALPN-01",
        "dns-01", "33%", "100%", "30d", "2w", "45s", "0", "3651d", "256k", "64M", "1G", "99999999999999999999",
        "-5", "+12", "admin@example.com", "mailto:Ops.Team@Example.COM", "a..b@example.com", "x@localhost",
        "*.example.com", "EXAMPLE.com.", "192.0.2.1", "[2001:db8::1]", "2001:db8::1", "a.b*.example.com",
        "xn--bcher-kva.example", "-bad-.example.com", "1.2.3", "classic", "tls server", "/bin/sh",
        "/usr/bin/env python3", "relative/path", "",
    };
    char name[32];
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        snprintf(name, sizeof(name), "value-%02zu", i);
        write_seed("conf_parse", name, values[i], strlen(values[i]));
    }
    {
        static const char eab[] = "kid-1" AT_FUZZ_SEP "c2VjcmV0LWhtYWMta2V5LWZvci1mdXp6aW5nLTAx";
        static const char eab_std[] = "kid-1" AT_FUZZ_SEP "c2VjcmV0+aG1hYy1rZXk/";
        static const char eab_short[] = "kid-1" AT_FUZZ_SEP "c2hvcnQ";
        write_seed("conf_parse", "eab", eab, sizeof(eab) - 1);
        write_seed("conf_parse", "eab-standard-base64", eab_std, sizeof(eab_std) - 1);
        write_seed("conf_parse", "eab-short", eab_short, sizeof(eab_short) - 1);
    }
    write_seed("conf_parse", "cert-file", chain, strlen(chain));
}

static void seeds_conf_site(void)
{
    /* keys byte, challenges byte, CA byte, then lines */
    static const struct { const char *name; const char *text; size_t n; } seeds[] = {
#define S(name, lit) { name, lit, sizeof(lit) - 1 }
        S("simple", "\x00\x00\x00" "example.com:443\nexample.com www.example.com\n"),
        S("dual-keys", "\x05\x03\x05" "example.com:443\nexample.com www.example.com\nadmin@example.com\n"),
        S("wildcard", "\x01\x04\x01" "wild:443\n*.example.com example.net\n\n\n\n/usr/local/bin/hook\n"),
        S("ip", "\x01\x01\x02" "ip:443\n192.0.2.1 2001:db8::1\n"),
        S("profile-window", "\x01\x03\xc3" "p:443\nexample.org\nops@example.org\nshortlived\nRoot X2\n\n"
          "https://acme.example.org/dir\n"),
        S("eab", "\x01\x03\x0b" "e:443\neab.example.com\n\n\n\n\nhttps://ca.example/dir\nkid-7\n"),
        S("twice-merge", "\x01\x03\x00" "a:80\nexample.com\n" AT_FUZZ_SEP "\x01\x03\x00" "a:443\nexample.com\n"),
        S("overlap", "\x01\x03\x00" "a:443\nexample.com www.example.com\n" AT_FUZZ_SEP
          "\x01\x03\x00" "b:443\nwww.example.com\n" AT_FUZZ_SEP "\x04\x03\x00" "c:443\nwww.example.com\n"),
        S("ca-conflict", "\x01\x03\x24" "a:443\na.example.com\nx@example.com\n" AT_FUZZ_SEP
          "\x01\x03\x04" "b:443\nb.example.com\ny@example.com\n"),
        S("bad", "\x13\x08\x00" "bad:443\nexample..com\n"),
#undef S
    };
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
        write_seed("conf_site", seeds[i].name, seeds[i].text, seeds[i].n);
}

int main(int argc, char **argv)
{
    char *chain;
    at_fake_ca *ca;

    if (argc != 2)
        die("usage: at_fuzz_seeds OUTDIR");
    outdir = argv[1];
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST)
        die("mkdir %s: %s", outdir, strerror(errno));
    seeds_order();
    seeds_account();
    seeds_cert_ops();
    seeds_exch();
    seeds_problem();
    seeds_http_header();
    ca = fake_ca(NULL, 1);
    chain = issue(ca);
    seeds_x509(chain);
    seeds_jose();
    seeds_store(chain);
    seeds_http01(chain);
    seeds_conf_parse(chain);
    seeds_conf_site();
    free(chain);
    at_fake_ca_free(ca);
    printf("%u seeds in %s\n", nseeds, outdir);
    return 0;
}
