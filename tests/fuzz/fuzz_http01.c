/*
 * fuzz_http01: the HTTP-01 request path (at_serve_http01 in
 * core/at_serve.c) and the live table (core/at_live.c) it reads, driven by
 * a sequence of writes and reads with arbitrary tokens, names, ids and
 * request paths on a private table small enough to fill, compact and
 * refuse; then, optionally, damage to the table's records, after which
 * nothing may crash.
 *
 * Input: records (at_fuzz.h), each one operation: byte 0 selects it, the
 * rest holds its arguments separated by NUL bytes.
 *   0 put http-01 (token, key authorization)    1 delete http-01 (token)
 *   2 get http-01 (token) and serve its path     3 serve this raw request path
 *   4 put tls-alpn-01 (name, cert, key)          5 delete tls-alpn-01 (name)
 *   6 get tls-alpn-01 (name)                     7 put certificate (id, kind byte,
 *                                                  chain, key, names...)
 *   8 delete certificate (id)                    9 look up a host (host, kind byte)
 *  10 current generation (id)                   11 damage: 2-byte offset, bytes
 *
 * Checks: no crash, leak or undefined behaviour; until damage, the http-01
 * entries equal a model of what was put and deleted, and a request path is
 * answered exactly when its token is in the model; what was just put is
 * read back unchanged (key authorizations, challenge certificates, a
 * certificate under every one of its names with its generation and id);
 * counters agree with the model; after damage every call returns.
 */
#include <stdlib.h>
#include <string.h>

#include "at_fuzz.h"
#include "at_live.h"
#include "at_serve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TABLE_SIZE (64u * 1024)
#define MAX_ARGS   12
#define MODEL_MAX  256

typedef struct model {
    char  *tok[MODEL_MAX];
    char  *ka[MODEL_MAX];
    size_t n;
    int    valid;        /* cleared by damage or when the model overflows */
} model;

static void *mem;

static int token_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > AT_LIVE_TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", t[i]))
            return 0;
    return 1;
}

static long model_find(const model *m, const char *tok)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->tok[i], tok) == 0)
            return (long)i;
    return -1;
}

static void model_del(model *m, const char *tok)
{
    long i = model_find(m, tok);
    if (i < 0)
        return;
    free(m->tok[i]);
    free(m->ka[i]);
    m->n--;
    m->tok[i] = m->tok[m->n];
    m->ka[i] = m->ka[m->n];
}

static void model_put(model *m, const char *tok, const char *ka)
{
    long i = model_find(m, tok);
    if (i >= 0) {
        free(m->ka[i]);
        m->ka[i] = strdup(ka);
        return;
    }
    if (m->n == MODEL_MAX) {
        m->valid = 0;
        return;
    }
    m->tok[m->n] = strdup(tok);
    m->ka[m->n] = strdup(ka);
    m->n++;
}

static void model_free(model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->tok[i]);
        free(m->ka[i]);
    }
}

/* The token of a path under AT_HTTP01_PREFIX (served or not). */
static void check_serve(at_live *lv, const model *m, const char *path, size_t len)
{
    char out[512];
    const size_t pl = sizeof(AT_HTTP01_PREFIX) - 1;
    at_http01_result r = at_serve_http01(lv, path, len, out, sizeof(out));
    int challenge_path = len >= pl && memcmp(path, AT_HTTP01_PREFIX, pl) == 0;

    if (!challenge_path) {
        if (r != AT_HTTP01_PASS || out[0])
            at_fuzz_fail("a path outside the challenge prefix was not passed on");
        return;
    }
    if (r == AT_HTTP01_PASS)
        at_fuzz_fail("a challenge path was passed on");
    if (r == AT_HTTP01_NOTFOUND && out[0])
        at_fuzz_fail("404 with an answer");
    if (!m->valid)
        return;
    {
        char tok[AT_LIVE_TOKEN_MAX + 2];
        size_t tl = len - pl;
        long i = -1;
        if (tl <= AT_LIVE_TOKEN_MAX && !memchr(path + pl, '\0', tl)) {
            memcpy(tok, path + pl, tl);
            tok[tl] = '\0';
            if (token_ok(tok))
                i = model_find(m, tok);
        }
        if (i >= 0 && strlen(m->ka[i]) < sizeof(out)) {
            if (r != AT_HTTP01_ANSWER || strcmp(out, m->ka[i]) != 0)
                at_fuzz_fail("the challenge path for a published token is not answered with its key authorization");
        } else if (i < 0 && r != AT_HTTP01_NOTFOUND) {
            at_fuzz_fail("a challenge path for an unknown or invalid token is answered");
        }
    }
}

static void check_http01(at_live *lv, const model *m, const char *tok)
{
    char out[1024], path[300];
    long i = model_find(m, tok);
    int r = at_live_get_http01(lv, tok, out, sizeof(out));
    size_t tl = strlen(tok);

    if (m->valid) {
        if (i >= 0 && strlen(m->ka[i]) < sizeof(out) && (r != 1 || strcmp(out, m->ka[i]) != 0))
            at_fuzz_fail("http-01 token '%s' put but read back as %d '%s'", tok, r, out);
        if (i < 0 && r != 0)
            at_fuzz_fail("http-01 token '%s' never put (or deleted) but found", tok);
    }
    if (tl < sizeof(path) - sizeof(AT_HTTP01_PREFIX)) {
        memcpy(path, AT_HTTP01_PREFIX, sizeof(AT_HTTP01_PREFIX) - 1);
        memcpy(path + sizeof(AT_HTTP01_PREFIX) - 1, tok, tl + 1);
        check_serve(lv, m, path, strlen(path));
    }
}

static at_key_kind kind_of(const char *s)
{
    return s[0] & 1 ? AT_KEY_RSA : AT_KEY_EC;
}

static void check_cert_put(at_live *lv, const char *id, const char *const *names, size_t n,
                           at_key_kind kind, const char *chain, const char *key, uint64_t gen)
{
    uint64_t g;
    for (size_t i = 0; i < n; i++) {
        uint32_t entry;
        at_buf c = AT_BUF_INIT, k = AT_BUF_INIT;
        char idbuf[300];
        if (at_live_cert_gen(lv, names[i], kind, &entry, &g) != 1 || g != gen)
            at_fuzz_fail("certificate %s just published is not found under '%s'", id, names[i]);
        if (at_live_get_cert(lv, entry, &c, &k, &g) != 1 || g != gen || strcmp(at_buf_str(&c), chain) != 0 ||
            strcmp(at_buf_str(&k), key) != 0)
            at_fuzz_fail("certificate %s just published reads back changed", id);
        if (at_live_cert_id(lv, entry, idbuf, sizeof(idbuf), &g) != 1 || strcmp(idbuf, id) != 0)
            at_fuzz_fail("certificate %s just published has id '%s'", id, idbuf);
        at_buf_free(&c);
        at_buf_free(&k);
    }
    if (at_live_cert_current(lv, id, &g) != 1 || g != gen)
        at_fuzz_fail("certificate %s just published is not current", id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    at_fuzz_in in = { data, size };
    at_error err = AT_ERROR_INIT;
    model m;
    at_live *lv;
    const uint8_t *rec;
    size_t len;
    int damaged = 0;

    if (!mem && posix_memalign(&mem, 64, TABLE_SIZE) != 0)
        abort();
    memset(mem, 0, 256);      /* a fresh region: nothing to continue from */
    if (at_live_format(mem, TABLE_SIZE, &err) != 0 || !(lv = at_live_attach(mem, TABLE_SIZE, &err)))
        at_fuzz_fail("live table: %s", err.msg);
    memset(&m, 0, sizeof(m));
    m.valid = 1;

    for (int ops = 0; ops < 64 && at_fuzz_record(&in, &rec, &len) == 0; ops++) {
        char *buf, *args[MAX_ARGS];
        size_t nargs = 0, alen;
        unsigned op;
        at_buf c = AT_BUF_INIT, k = AT_BUF_INIT;

        if (!len)
            continue;
        op = rec[0] % 12;
        alen = len - 1;
        buf = malloc(alen + 1);
        memcpy(buf, rec + 1, alen);
        buf[alen] = '\0';
        for (char *p = buf; nargs < MAX_ARGS; ) {
            args[nargs++] = p;
            p += strlen(p);
            if (p >= buf + alen)
                break;
            p++;
        }
        for (size_t i = nargs; i < MAX_ARGS; i++)
            args[i] = (char *)"";

        switch (op) {
        case 0:
            if (at_live_put_http01(lv, args[0], args[1], &err) == 0) {
                if (!token_ok(args[0]) || !args[1][0])
                    at_fuzz_fail("http-01 token '%s' accepted", args[0]);
                model_put(&m, args[0], args[1]);
            } else {
                at_error_clear(&err);
            }
            check_http01(lv, &m, args[0]);
            break;
        case 1: {
            int r = at_live_del_http01(lv, args[0]);
            if (m.valid && r != (model_find(&m, args[0]) >= 0 ? 1 : 0))
                at_fuzz_fail("deleting http-01 token '%s' gave %d", args[0], r);
            model_del(&m, args[0]);
            check_http01(lv, &m, args[0]);
            break;
        }
        case 2:
            check_http01(lv, &m, args[0]);
            break;
        case 3:
            check_serve(lv, &m, (const char *)rec + 1, alen);
            break;
        case 4:
            if (at_live_put_alpn01(lv, args[0], args[1], args[2], &err) == 0 && !damaged) {
                if (at_live_get_alpn01(lv, args[0], &c, &k) != 1 || strcmp(at_buf_str(&c), args[1]) != 0 ||
                    strcmp(at_buf_str(&k), args[2]) != 0)
                    at_fuzz_fail("tls-alpn-01 for '%s' just put reads back changed", args[0]);
            }
            at_error_clear(&err);
            break;
        case 5:
            if (at_live_del_alpn01(lv, args[0]) == 1 && !damaged && at_live_get_alpn01(lv, args[0], &c, &k) != 0)
                at_fuzz_fail("tls-alpn-01 for '%s' deleted but still found", args[0]);
            break;
        case 6:
            at_live_get_alpn01(lv, args[0], &c, &k);
            break;
        case 7: {
            uint64_t gen = 0;
            const char *const *names = (const char *const *)&args[4];
            size_t nn = nargs > 4 ? nargs - 4 : 0;
            at_key_kind kind = kind_of(args[1]);
            if (at_live_put_cert(lv, args[0], names, nn, kind, args[2], args[3], &gen, &err) == 0) {
                /* Names that normalise alike (case, a trailing dot) are one name:
                 * the last listed wins, so check only when they are distinct. */
                int plain = 1;
                for (size_t i = 0; i < nn; i++)
                    for (const char *p = names[i]; *p; p++)
                        if ((*p >= 'A' && *p <= 'Z') || (*p == '.' && !p[1]))
                            plain = 0;
                for (size_t i = 0; plain && i < nn; i++)
                    for (size_t j = i + 1; j < nn; j++)
                        if (strcmp(names[i], names[j]) == 0)
                            plain = 0;
                if (plain && !damaged)
                    check_cert_put(lv, args[0], names, nn, kind, args[2], args[3], gen);
            }
            at_error_clear(&err);
            break;
        }
        case 8: {
            uint64_t g;
            if (at_live_del_cert(lv, args[0]) == 1 && !damaged && at_live_cert_current(lv, args[0], &g) != 0)
                at_fuzz_fail("certificate %s deleted but still current", args[0]);
            break;
        }
        case 9: {
            uint32_t entry;
            uint64_t g;
            char id[300];
            if (at_live_cert_gen(lv, args[0], kind_of(args[1]), &entry, &g) == 1) {
                at_live_get_cert(lv, entry, &c, &k, &g);
                at_live_cert_id(lv, entry, id, sizeof(id), &g);
                at_live_cert_id(lv, entry, id, 4, &g);
            }
            break;
        }
        case 10: {
            uint64_t g;
            at_live_cert_current(lv, args[0], &g);
            break;
        }
        default:
            /* Damage beyond the header (its mutex and counters stay sane,
             * as they do when a writer dies): buckets and records. */
            if (alen >= 3) {
                size_t off = 1024 + (((size_t)(unsigned char)buf[0] << 8 | (unsigned char)buf[1]) % (TABLE_SIZE - 1024));
                size_t n = alen - 2;
                if (n > TABLE_SIZE - off)
                    n = TABLE_SIZE - off;
                memcpy((char *)mem + off, rec + 3, n);
                damaged = 1;
                m.valid = 0;
            }
            break;
        }
        at_buf_free(&c);
        at_buf_free(&k);
        free(buf);
        if (m.valid) {
            at_live_stats st;
            at_live_get_stats(lv, &st);
            if (st.http01 != m.n)
                at_fuzz_fail("the table counts %zu http-01 entries, the model %zu", st.http01, m.n);
            if (st.used > st.size || st.live > st.used)
                at_fuzz_fail("table usage out of bounds");
        }
    }
    at_live_detach(lv);
    model_free(&m);
    return 0;
}
