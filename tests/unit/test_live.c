/*
 * test_live.c: the shared-memory live table, in one process and across
 * forked processes (readers hammering while a writer replaces, writers killed
 * while holding the lock).
 */
#include "at_test.h"
#include "at_live.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A fake chain whose marker appears at both ends, so a torn copy shows. */
static char *fake_pem(const char *what, const char *id, uint64_t gen, size_t fill)
{
    at_buf b = AT_BUF_INIT;
    at_buf_printf(&b, "-----BEGIN %s-----\nGEN=%" PRIu64 " ID=%s\n", what, gen, id);
    if (at_buf_reserve(&b, fill) == 0) {
        memset(b.data + b.len, 'A', fill);
        for (size_t i = 64; i < fill; i += 65)
            b.data[b.len + i] = '\n';
        b.len += fill;
    }
    at_buf_printf(&b, "\nGEN=%" PRIu64 " ID=%s\n-----END %s-----\n", gen, id, what);
    return at_buf_detach(&b);
}

/* Does pem carry the marker for (id, gen) at its start and its end? */
static int pem_consistent(const char *pem, const char *id, uint64_t gen)
{
    char mark[320];
    const char *first, *last = NULL, *p;
    snprintf(mark, sizeof(mark), "GEN=%" PRIu64 " ID=%s\n", gen, id);
    first = strstr(pem, mark);
    for (p = first; p; p = strstr(p + 1, mark))
        last = p;
    return first && last && first != last && strstr(pem, "GEN=") == first;
}

static void *shared_region(size_t size)
{
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return m == MAP_FAILED ? NULL : m;
}

static int publish(at_live *lv, const char *id, const char *const *names, size_t n, at_key_kind kind,
                   size_t fill, uint64_t *gen_out, at_error *err)
{
    at_live_stats st;
    uint64_t want, gen = 0;
    char *chain, *key;
    int rc;
    at_live_get_stats(lv, &st);
    want = st.generation + 1;   /* one writer: the next generation is predictable */
    chain = fake_pem("CERTIFICATE", id, want, fill);
    key = fake_pem("PRIVATE KEY", id, want, fill / 8);
    rc = at_live_put_cert(lv, id, names, n, kind, chain, key, &gen, err);
    free(chain);
    free(key);
    if (rc == 0 && gen != want)
        return -2;
    if (gen_out)
        *gen_out = gen;
    return rc;
}

/* Look host up and check the copied certificate is whole and belongs to id. */
static int check_host(at_live *lv, const char *host, at_key_kind kind, const char *id, uint64_t *gen_out)
{
    uint32_t entry;
    uint64_t gen = 0, g2 = 0;
    at_buf chain = AT_BUF_INIT, key = AT_BUF_INIT;
    int r = at_live_cert_gen(lv, host, kind, &entry, &gen), ok;
    if (r != 1)
        return r == 0 ? 0 : -1;
    r = at_live_get_cert(lv, entry, &chain, &key, &g2);
    ok = r == 1 && g2 == gen && pem_consistent(at_buf_str(&chain), id, gen)
         && pem_consistent(at_buf_str(&key), id, gen);
    at_buf_free(&chain);
    at_buf_free(&key);
    if (gen_out)
        *gen_out = gen;
    return ok ? 1 : -1;
}

/* ------------------------------------------------------------ single process */

static void t_format_attach(void)
{
    at_error err = AT_ERROR_INIT;
    size_t size = 64 * 1024;
    void *mem = NULL;
    at_live *lv;
    at_live_stats st;

    AT_CHECK(posix_memalign(&mem, 64, size) == 0);
    memset(mem, 0x5a, size);
    AT_CHECK(at_live_attach(mem, size, &err) == NULL);   /* not formatted */
    AT_CHECK_CONTAINS(err.msg, "not formatted");
    AT_CHECK_OK(at_live_format(mem, size, &err), &err);
    AT_CHECK(at_live_attach(mem, size - 8, &err) == NULL);
    AT_CHECK_CONTAINS(err.msg, "size");
    lv = at_live_attach(mem, size, &err);
    AT_CHECK(lv != NULL);
    if (lv) {
        at_live_get_stats(lv, &st);
        AT_CHECK_INT(st.size, size);
        AT_CHECK(st.used > 0 && st.used < size / 4);
        AT_CHECK_INT(st.certs + st.names + st.http01 + st.alpn01, 0);
        at_live_detach(lv);
    }
    /* Formatting the same memory again never reuses a generation. */
    lv = at_live_attach(mem, size, &err);
    if (lv) {
        const char *names[] = { "a.example" };
        uint64_t g1 = 0, g2 = 0, r1;
        AT_CHECK_OK(at_live_put_cert(lv, "a", names, 1, AT_KEY_EC, "chain", "key", &g1, &err), &err);
        AT_CHECK_OK(at_live_put_cert(lv, "a", names, 1, AT_KEY_EC, "chain", "key", &g1, &err), &err);
        r1 = at_live_retired(lv);
        at_live_detach(lv);
        AT_CHECK_OK(at_live_format(mem, size, &err), &err);
        lv = at_live_attach(mem, size, &err);
        AT_CHECK(lv != NULL);
        if (lv) {
            AT_CHECK_INT(at_live_cert_gen(lv, "a.example", AT_KEY_EC, NULL, NULL), 0);
            AT_CHECK_OK(at_live_put_cert(lv, "a", names, 1, AT_KEY_EC, "chain", "key", &g2, &err), &err);
            AT_CHECK_MSG(g2 > g1, "generation %llu after a re-format, %llu before",
                         (unsigned long long)g2, (unsigned long long)g1);
            AT_CHECK(at_live_retired(lv) > r1);
            at_live_detach(lv);
        }
    }
    AT_CHECK(at_live_format(mem, 1024, &err) != 0);
    AT_CHECK_CONTAINS(err.msg, "at least");
    AT_CHECK(at_live_new_private(100, &err) == NULL);
    free(mem);

    AT_CHECK(at_live_size_hint(0) >= 1024 * 1024);
    AT_CHECK(at_live_size_hint(10000) > at_live_size_hint(1000));
    AT_CHECK(at_live_size_hint((size_t)-1) <= AT_LIVE_MAX_SIZE);
    at_error_clear(&err);
}

static void t_http01(void)
{
    at_error err = AT_ERROR_INIT;
    at_live *lv = at_live_new_private(64 * 1024, &err);
    char out[256], big[AT_LIVE_TOKEN_MAX + 2];
    at_live_stats st;

    AT_CHECK(lv != NULL);
    if (!lv)
        return;
    AT_CHECK_INT(at_live_get_http01(lv, "tok_1", out, sizeof(out)), 0);
    AT_CHECK_OK(at_live_put_http01(lv, "tok_1", "tok_1.thumb-A", &err), &err);
    AT_CHECK_OK(at_live_put_http01(lv, "Tok-2", "Tok-2.thumb-B", &err), &err);
    AT_CHECK_INT(at_live_get_http01(lv, "tok_1", out, sizeof(out)), 1);
    AT_CHECK_STR(out, "tok_1.thumb-A");
    AT_CHECK_INT(at_live_get_http01(lv, "Tok-2", out, sizeof(out)), 1);
    AT_CHECK_STR(out, "Tok-2.thumb-B");
    AT_CHECK_INT(at_live_get_http01(lv, "tok-2", out, sizeof(out)), 0);   /* tokens are case-sensitive */
    AT_CHECK_INT(at_live_get_http01(lv, "tok_1", out, 5), -1);            /* out too small */
    AT_CHECK_STR(out, "");

    /* Replace keeps one entry. */
    AT_CHECK_OK(at_live_put_http01(lv, "tok_1", "tok_1.thumb-C", &err), &err);
    AT_CHECK_INT(at_live_get_http01(lv, "tok_1", out, sizeof(out)), 1);
    AT_CHECK_STR(out, "tok_1.thumb-C");
    at_live_get_stats(lv, &st);
    AT_CHECK_INT(st.http01, 2);

    AT_CHECK_INT(at_live_del_http01(lv, "tok_1"), 1);
    AT_CHECK_INT(at_live_del_http01(lv, "tok_1"), 0);
    AT_CHECK_INT(at_live_get_http01(lv, "tok_1", out, sizeof(out)), 0);
    AT_CHECK_INT(at_live_get_http01(lv, "Tok-2", out, sizeof(out)), 1);
    at_live_get_stats(lv, &st);
    AT_CHECK_INT(st.http01, 1);

    /* Tokens that could never be served are refused when published. */
    AT_CHECK(at_live_put_http01(lv, "", "x", &err) != 0);
    AT_CHECK(at_live_put_http01(lv, "a/b", "x", &err) != 0);
    AT_CHECK(at_live_put_http01(lv, "..", "x", &err) != 0);
    AT_CHECK(at_live_put_http01(lv, "a%2e", "x", &err) != 0);
    AT_CHECK_CONTAINS(err.msg, "cannot be served");
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    AT_CHECK(at_live_put_http01(lv, big, "x", &err) != 0);
    big[AT_LIVE_TOKEN_MAX] = '\0';
    AT_CHECK_OK(at_live_put_http01(lv, big, "long.ka", &err), &err);
    AT_CHECK_INT(at_live_get_http01(lv, big, out, sizeof(out)), 1);
    AT_CHECK_STR(out, "long.ka");
    at_live_free_private(lv);
    at_error_clear(&err);
}

static void t_alpn01(void)
{
    at_error err = AT_ERROR_INIT;
    at_live *lv = at_live_new_private(64 * 1024, &err);
    at_buf c = AT_BUF_INIT, k = AT_BUF_INIT;

    AT_CHECK(lv != NULL);
    if (!lv)
        return;
    AT_CHECK_OK(at_live_put_alpn01(lv, "Example.COM.", "CERT-1", "KEY-1", &err), &err);
    at_buf_puts(&c, "pre:");
    AT_CHECK_INT(at_live_get_alpn01(lv, "example.com", &c, &k), 1);
    AT_CHECK_STR(at_buf_str(&c), "pre:CERT-1");   /* appended */
    AT_CHECK_STR(at_buf_str(&k), "KEY-1");
    at_buf_reset(&c);
    at_buf_reset(&k);
    AT_CHECK_OK(at_live_put_alpn01(lv, "example.com", "CERT-2", "KEY-2", &err), &err);
    AT_CHECK_INT(at_live_get_alpn01(lv, "EXAMPLE.com", &c, &k), 1);
    AT_CHECK_STR(at_buf_str(&c), "CERT-2");
    AT_CHECK_STR(at_buf_str(&k), "KEY-2");
    AT_CHECK_INT(at_live_get_alpn01(lv, "www.example.com", &c, &k), 0);
    AT_CHECK_INT(at_live_del_alpn01(lv, "example.com"), 1);
    at_buf_reset(&c);
    AT_CHECK_INT(at_live_get_alpn01(lv, "example.com", &c, &k), 0);
    AT_CHECK_STR(at_buf_str(&c), "");
    AT_CHECK(at_live_put_alpn01(lv, "", "c", "k", &err) != 0);
    AT_CHECK(at_live_put_alpn01(lv, "x.example", "", "k", &err) != 0);
    at_buf_free(&c);
    at_buf_free(&k);
    at_live_free_private(lv);
    at_error_clear(&err);
}

/* RFC 8738 §6: the CA validates an IP with its reverse-DNS name as SNI. */
static void t_alpn01_ip_reverse(void)
{
    at_error err = AT_ERROR_INIT;
    at_live *lv = at_live_new_private(1 << 20, &err);
    at_buf c = AT_BUF_INIT, k = AT_BUF_INIT;
    AT_CHECK(lv != NULL);
    AT_CHECK_OK(at_live_put_alpn01(lv, "127.0.0.1", "CERT-v4", "KEY-v4", &err), &err);
    AT_CHECK_OK(at_live_put_alpn01(lv, "2001:db8::1", "CERT-v6", "KEY-v6", &err), &err);
    AT_CHECK_INT(at_live_get_alpn01(lv, "1.0.0.127.in-addr.arpa", &c, &k), 1);
    AT_CHECK_STR(at_buf_str(&c), "CERT-v4");
    at_buf_reset(&c);
    at_buf_reset(&k);
    AT_CHECK_INT(at_live_get_alpn01(lv,
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", &c, &k), 1);
    AT_CHECK_STR(at_buf_str(&c), "CERT-v6");
    AT_CHECK_INT(at_live_get_alpn01(lv, "2.0.0.127.in-addr.arpa", &c, &k), 0);
    at_live_del_alpn01(lv, "127.0.0.1");
    AT_CHECK_INT(at_live_get_alpn01(lv, "1.0.0.127.in-addr.arpa", &c, &k), 0);
    at_buf_free(&c);
    at_buf_free(&k);
    at_live_free_private(lv);
}

static void t_cert_put_replace_del(void)
{
    at_error err = AT_ERROR_INIT;
    at_live *lv = at_live_new_private(256 * 1024, &err);
    const char *n1[] = { "a.example", "B.Example" };
    const char *n2[] = { "b.example", "c.example" };
    uint64_t g1 = 0, g2 = 0, g3 = 0, g;
    uint32_t entry;
    at_live_stats st;
    char id[64];

    AT_CHECK(lv != NULL);
    if (!lv)
        return;
    AT_CHECK_INT(publish(lv, "site-ec", n1, 2, AT_KEY_EC, 500, &g1, &err), 0);
    AT_CHECK_INT(check_host(lv, "a.example", AT_KEY_EC, "site-ec", &g), 1);
    AT_CHECK_INT(g, g1);
    AT_CHECK_INT(check_host(lv, "b.example", AT_KEY_EC, "site-ec", &g), 1);
    AT_CHECK_INT(check_host(lv, "B.EXAMPLE.", AT_KEY_EC, "site-ec", &g), 1);
    AT_CHECK_INT(at_live_cert_gen(lv, "a.example", AT_KEY_RSA, &entry, &g), 0);
    AT_CHECK_INT(at_live_cert_gen(lv, "c.example", AT_KEY_EC, &entry, &g), 0);
    AT_CHECK_INT(at_live_cert_gen(lv, "a.example", AT_KEY_EC, &entry, &g), 1);
    AT_CHECK_INT(at_live_cert_id(lv, entry, id, sizeof(id), &g), 1);
    AT_CHECK_STR(id, "site-ec");
    AT_CHECK_INT(at_live_cert_id(lv, entry, id, 4, &g), -1);
    AT_CHECK_INT(at_live_cert_current(lv, "site-ec", &g), 1);
    AT_CHECK_INT(g, g1);

    /* A second kind for the same names lives beside the first. */
    AT_CHECK_INT(publish(lv, "site-rsa", n1, 2, AT_KEY_RSA, 900, &g2, &err), 0);
    AT_CHECK(g2 > g1);
    AT_CHECK_INT(check_host(lv, "a.example", AT_KEY_RSA, "site-rsa", &g), 1);
    AT_CHECK_INT(check_host(lv, "a.example", AT_KEY_EC, "site-ec", &g), 1);
    AT_CHECK_INT(g, g1);

    /* Replacing: new generation, the old entry handle goes stale, names follow the new list. */
    at_live_get_stats(lv, &st);
    AT_CHECK_INT(st.certs, 2);
    AT_CHECK_INT(st.names, 4);
    {
        uint64_t retired = at_live_retired(lv);
        AT_CHECK_INT(publish(lv, "site-ec", n2, 2, AT_KEY_EC, 500, &g3, &err), 0);
        AT_CHECK(g3 > g2);
        AT_CHECK_INT(at_live_retired(lv), retired + 1);
    }
    AT_CHECK_INT(at_live_get_cert(lv, entry, NULL, NULL, &g), 0);
    AT_CHECK_INT(check_host(lv, "a.example", AT_KEY_EC, "site-ec", &g), 0);
    AT_CHECK_INT(check_host(lv, "b.example", AT_KEY_EC, "site-ec", &g), 1);
    AT_CHECK_INT(g, g3);
    AT_CHECK_INT(check_host(lv, "c.example", AT_KEY_EC, "site-ec", &g), 1);
    AT_CHECK_INT(check_host(lv, "a.example", AT_KEY_RSA, "site-rsa", &g), 1);
    at_live_get_stats(lv, &st);
    AT_CHECK_INT(st.certs, 2);
    AT_CHECK_INT(st.names, 4);
    AT_CHECK_INT(st.generation, g3);

    /* Deleting withdraws every name of that certificate only. */
    AT_CHECK_INT(at_live_del_cert(lv, "site-ec"), 1);
    AT_CHECK_INT(at_live_del_cert(lv, "site-ec"), 0);
    AT_CHECK_INT(check_host(lv, "b.example", AT_KEY_EC, "site-ec", &g), 0);
    AT_CHECK_INT(check_host(lv, "b.example", AT_KEY_RSA, "site-rsa", &g), 1);
    AT_CHECK_INT(at_live_cert_current(lv, "site-ec", &g), 0);
    at_live_get_stats(lv, &st);
    AT_CHECK_INT(st.certs, 1);
    AT_CHECK_INT(st.names, 2);

    /* Bad input is refused with a reason. */
    AT_CHECK(at_live_put_cert(lv, "x", n1, 0, AT_KEY_EC, "c", "k", NULL, &err) != 0);
    AT_CHECK(at_live_put_cert(lv, "x", n1, 2, (at_key_kind)7, "c", "k", NULL, &err) != 0);
    AT_CHECK(at_live_put_cert(lv, "", n1, 2, AT_KEY_EC, "c", "k", NULL, &err) != 0);
    {
        const char *bad[] = { "ok.example", "" };
        AT_CHECK(at_live_put_cert(lv, "x", bad, 2, AT_KEY_EC, "c", "k", NULL, &err) != 0);
        AT_CHECK_CONTAINS(err.msg, "not a host name");
    }
    at_live_free_private(lv);
    at_error_clear(&err);
}

static void t_wildcard(void)
{
    at_error err = AT_ERROR_INIT;
    at_live *lv = at_live_new_private(64 * 1024, &err);
    const char *wc[] = { "*.example.com", "example.com" };
    const char *exact[] = { "special.example.com" };
    uint64_t g;

    AT_CHECK(lv != NULL);
    if (!lv)
        return;
    AT_CHECK_INT(publish(lv, "wild", wc, 2, AT_KEY_EC, 100, NULL, &err), 0);
    AT_CHECK_INT(check_host(lv, "www.example.com", AT_KEY_EC, "wild", &g), 1);
    AT_CHECK_INT(check_host(lv, "WWW.Example.Com.", AT_KEY_EC, "wild", &g), 1);
    AT_CHECK_INT(check_host(lv, "example.com", AT_KEY_EC, "wild", &g), 1);
    AT_CHECK_INT(check_host(lv, "a.b.example.com", AT_KEY_EC, "wild", &g), 0);   /* one label only */
    AT_CHECK_INT(check_host(lv, "www.example.org", AT_KEY_EC, "wild", &g), 0);
    AT_CHECK_INT(check_host(lv, ".example.com", AT_KEY_EC, "wild", &g), 0);
    AT_CHECK_INT(check_host(lv, "com", AT_KEY_EC, "wild", &g), 0);
    AT_CHECK_INT(check_host(lv, "www.example.com", AT_KEY_RSA, "wild", &g), 0);
    /* An exact name beats the wildcard. */
    AT_CHECK_INT(publish(lv, "special", exact, 1, AT_KEY_EC, 100, NULL, &err), 0);
    AT_CHECK_INT(check_host(lv, "special.example.com", AT_KEY_EC, "special", &g), 1);
    AT_CHECK_INT(check_host(lv, "other.example.com", AT_KEY_EC, "wild", &g), 1);
    /* Hosts that cannot be names find nothing. */
    AT_CHECK_INT(at_live_cert_gen(lv, "", AT_KEY_EC, NULL, NULL), 0);
    AT_CHECK_INT(at_live_cert_gen(lv, NULL, AT_KEY_EC, NULL, NULL), 0);
    AT_CHECK_INT(at_live_cert_gen(lv, "a b.example.com", AT_KEY_EC, NULL, NULL), 0);
    at_live_free_private(lv);
    at_error_clear(&err);
}

/* Replacing over and over fills the area; compaction must keep every
 * current record intact, and a table that is truly full says how big to be. */
static void t_full_and_compaction(void)
{
    at_error err = AT_ERROR_INIT;
    const size_t size = 96 * 1024;
    at_live *lv = at_live_new_private(size, &err);
    at_live_stats st;
    uint64_t gens[8] = { 0 };
    char out[128];
    int i, rc = 0;

    AT_CHECK(lv != NULL);
    if (!lv)
        return;
    for (i = 0; i < 400; i++) {
        char id[32], name[64], tok[32], ka[64];
        const char *names[1] = { name };
        int k = i % 8;
        snprintf(id, sizeof(id), "cert-%d", k);
        snprintf(name, sizeof(name), "host%d.example", k);
        snprintf(tok, sizeof(tok), "tok%d", i % 5);
        snprintf(ka, sizeof(ka), "tok%d.%d", i % 5, i);
        rc = publish(lv, id, names, 1, k % 2 ? AT_KEY_RSA : AT_KEY_EC, 3000, &gens[k], &err);
        if (rc != 0)
            break;
        if (at_live_put_http01(lv, tok, ka, &err) != 0) {
            rc = -1;
            break;
        }
    }
    AT_CHECK_MSG(rc == 0, "publish %d failed: %s", i, err.msg);
    at_live_get_stats(lv, &st);
    AT_CHECK_MSG(st.compactions > 0, "400 replacements of 3 KB in 96 KB did not compact");
    AT_CHECK_INT(st.repairs, 0);
    AT_CHECK_INT(st.certs, 8);
    AT_CHECK_INT(st.names, 8);
    AT_CHECK_INT(st.http01, 5);
    AT_CHECK(st.live <= st.used && st.used <= st.size);
    for (int k = 0; k < 8; k++) {
        char id[32], name[64];
        uint64_t g;
        snprintf(id, sizeof(id), "cert-%d", k);
        snprintf(name, sizeof(name), "host%d.example", k);
        AT_CHECK_INT(check_host(lv, name, k % 2 ? AT_KEY_RSA : AT_KEY_EC, id, &g), 1);
        AT_CHECK_INT(g, gens[k]);
    }
    for (int t = 0; t < 5; t++) {
        char tok[32], want[64];
        snprintf(tok, sizeof(tok), "tok%d", t);
        snprintf(want, sizeof(want), "tok%d.%d", t, 395 + t);
        AT_CHECK_INT(at_live_get_http01(lv, tok, out, sizeof(out)), 1);
        AT_CHECK_STR(out, want);
    }

    /* Now fill it with distinct certificates until it refuses. */
    for (i = 0; i < 100; i++) {
        char id[32], name[64];
        const char *names[1] = { name };
        snprintf(id, sizeof(id), "fill-%d", i);
        snprintf(name, sizeof(name), "fill%d.example", i);
        if ((rc = publish(lv, id, names, 1, AT_KEY_EC, 3000, NULL, &err)) != 0)
            break;
    }
    AT_CHECK_MSG(rc == -1 && i > 3 && i < 100, "rc %d after %d certificates", rc, i);
    AT_CHECK_INT(err.code, AT_ERR_CONFIG);
    AT_CHECK_CONTAINS(err.msg, "is full");
    AT_CHECK_CONTAINS(err.msg, "fill-");
    AT_CHECK_CONTAINS(err.msg, "configure at least");
    {
        const char *p = strstr(err.msg, "at least ");
        unsigned long kib = p ? strtoul(p + 9, NULL, 10) : 0;
        AT_CHECK_MSG(kib * 1024 > size, "suggested %lu KiB for a %zu-byte region", kib, size);
    }
    /* What was there is untouched by the failed write. */
    for (int k = 0; k < 8; k++) {
        char id[32], name[64];
        uint64_t g;
        snprintf(id, sizeof(id), "cert-%d", k);
        snprintf(name, sizeof(name), "host%d.example", k);
        AT_CHECK_INT(check_host(lv, name, k % 2 ? AT_KEY_RSA : AT_KEY_EC, id, &g), 1);
    }
    at_live_free_private(lv);
    at_error_clear(&err);
}

/* In a roomy region, renewals must not creep over every page: dead records
 * are compacted away once they outweigh the live ones. */
static void t_footprint_bounded(void)
{
    at_error err = AT_ERROR_INIT;
    const size_t size = 8 * 1024 * 1024;
    at_live *lv = at_live_new_private(size, &err);
    at_live_stats st;
    size_t peak = 0;

    AT_CHECK(lv != NULL);
    if (!lv)
        return;
    for (int i = 0; i < 3000; i++) {
        char id[32], name[64];
        const char *names[1] = { name };
        snprintf(id, sizeof(id), "c%d", i % 10);
        snprintf(name, sizeof(name), "h%d.example", i % 10);
        if (publish(lv, id, names, 1, AT_KEY_EC, 3000, NULL, &err) != 0) {
            AT_CHECK_MSG(0, "publish %d: %s", i, err.msg);
            break;
        }
        at_live_get_stats(lv, &st);
        if (st.used > peak)
            peak = st.used;
    }
    at_live_get_stats(lv, &st);
    AT_CHECK(st.compactions > 0);
    AT_CHECK_MSG(peak <= 2 * st.live + 72 * 1024, "touched %zu bytes for %zu live", peak, st.live);
    AT_CHECK(peak < size / 4);
    at_live_free_private(lv);
    at_error_clear(&err);
}

/* 10,000 names: hashed lookups, and the sizes the benchmark will report. */
static void t_scale(void)
{
    at_error err = AT_ERROR_INIT;
    const size_t sizes[] = { 1000, 10000 };
    for (size_t si = 0; si < 2; si++) {
        size_t n = sizes[si], bad = 0, region = at_live_size_hint(n);
        at_live *lv = at_live_new_private(region, &err);
        at_live_stats st;
        double t0, t1;
        char *chain, *key;
        uint64_t base;

        AT_CHECK_MSG(lv != NULL, "%s", err.msg);
        if (!lv)
            return;
        /* A realistic ECDSA chain (~2.7 KB) and key (~240 B) per name. */
        chain = fake_pem("CERTIFICATE", "x", 0, 2600);
        key = fake_pem("PRIVATE KEY", "x", 0, 200);
        at_live_get_stats(lv, &st);
        base = st.generation;
        t0 = now_s();
        for (size_t i = 0; i < n; i++) {
            char id[32], name[64];
            const char *names[1] = { name };
            snprintf(id, sizeof(id), "c%zu", i);
            snprintf(name, sizeof(name), "host-%zu.example.net", i);
            if (at_live_put_cert(lv, id, names, 1, AT_KEY_EC, chain, key, NULL, &err) != 0) {
                AT_CHECK_MSG(0, "put %zu of %zu: %s", i, n, err.msg);
                break;
            }
        }
        t1 = now_s();
        for (size_t i = 0; i < n; i++) {
            char name[64];
            uint32_t entry;
            uint64_t gen;
            snprintf(name, sizeof(name), "host-%zu.example.net", i);
            if (at_live_cert_gen(lv, name, AT_KEY_EC, &entry, &gen) != 1 || gen != base + i + 1)
                bad++;
        }
        for (size_t i = 0; i < n; i++) {
            char name[64];
            snprintf(name, sizeof(name), "nohost-%zu.example.net", i);
            if (at_live_cert_gen(lv, name, AT_KEY_EC, NULL, NULL) != 0)
                bad++;
        }
        AT_CHECK_INT(bad, 0);
        at_live_get_stats(lv, &st);
        AT_CHECK_INT(st.names, n);
        AT_CHECK(st.used < region);
        fprintf(stderr, "  # %zu names: region %zu KiB, used %zu KiB; %.0f ns/put, %.0f ns/lookup (hit+miss)\n",
                n, region / 1024, st.used / 1024, (t1 - t0) / (double)n * 1e9,
                (now_s() - t1) / (double)(2 * n) * 1e9);
        free(chain);
        free(key);
        at_live_free_private(lv);
    }
    at_error_clear(&err);
}

/* ------------------------------------------------------------ processes */

#define MP_READERS  4
#define MP_CERTS    12
#define MP_TOKENS   6

static void mp_name(int k, char *name, size_t sz, char *id, size_t idsz)
{
    snprintf(name, sz, "h%d.example", k);
    snprintf(id, idsz, "id-%d", k);
}

/* A reader process: hammer lookups, count what was inconsistent. */
static int mp_reader(at_live *lv, unsigned seed, double until)
{
    int bad = 0, found = 0;
    uint64_t last_n[MP_TOKENS] = { 0 };
    for (long it = 0; it < 400000 && now_s() < until; it++) {
        int k = (int)(rand_r(&seed) % MP_CERTS);
        char name[64], id[64], tok[16], out[128];
        uint64_t g;
        int r;
        mp_name(k, name, sizeof(name), id, sizeof(id));
        r = check_host(lv, name, k % 2 ? AT_KEY_RSA : AT_KEY_EC, id, &g);
        if (r < 0) {
            /* A stale handle between the two reads is allowed: look again. */
            uint32_t e;
            uint64_t g1, g2;
            at_buf c = AT_BUF_INIT;
            if (at_live_cert_gen(lv, name, k % 2 ? AT_KEY_RSA : AT_KEY_EC, &e, &g1) == 1
                && at_live_get_cert(lv, e, &c, NULL, &g2) == 1 && g1 == g2 && !pem_consistent(at_buf_str(&c), id, g2))
                bad++;
            at_buf_free(&c);
        } else if (r == 1) {
            found++;
        }
        snprintf(tok, sizeof(tok), "t%d", k % MP_TOKENS);
        if (at_live_get_http01(lv, tok, out, sizeof(out)) == 1) {
            unsigned long a = 0, b = 0;
            char t2[16];
            if (sscanf(out, "%15[^.].%lu.x.%lu", t2, &a, &b) != 3 || a != b || strcmp(t2, tok) != 0
                || a < last_n[k % MP_TOKENS])
                bad++;
            last_n[k % MP_TOKENS] = a;
        }
    }
    if (found == 0)
        bad++;
    return bad > 250 ? 250 : bad;
}

static void t_multiprocess_readers(void)
{
    at_error err = AT_ERROR_INIT;
    const size_t size = 256 * 1024;
    void *mem = shared_region(size);
    at_live *lv;
    pid_t pids[MP_READERS];
    int alive = 0, publishes = 0;
    double until;
    at_live_stats st;

    AT_CHECK(mem != NULL);
    if (!mem)
        return;
    AT_CHECK_OK(at_live_format(mem, size, &err), &err);
    lv = at_live_attach(mem, size, &err);
    AT_CHECK(lv != NULL);
    if (!lv)
        return;
    for (int k = 0; k < MP_CERTS; k++) {
        char name[64], id[64];
        const char *names[1] = { name };
        mp_name(k, name, sizeof(name), id, sizeof(id));
        AT_CHECK_INT(publish(lv, id, names, 1, k % 2 ? AT_KEY_RSA : AT_KEY_EC, 2500, NULL, &err), 0);
    }
    until = now_s() + 3.0;
    for (int i = 0; i < MP_READERS; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            at_live *rl = at_live_attach(mem, size, NULL);
            _exit(rl ? mp_reader(rl, (unsigned)i * 7919u + 1, until) : 99);
        }
        if (pids[i] > 0)
            alive++;
    }
    AT_CHECK_INT(alive, MP_READERS);
    /* The writer replaces certificates and challenges until the readers are done. */
    for (long it = 0; alive > 0 && now_s() < until + 5.0; it++) {
        char name[64], id[64], tok[16], ka[64];
        const char *names[1] = { name };
        int k = (int)(it % MP_CERTS), status;
        mp_name(k, name, sizeof(name), id, sizeof(id));
        if (publish(lv, id, names, 1, k % 2 ? AT_KEY_RSA : AT_KEY_EC, 2500 + (size_t)(it % 7) * 300, NULL, &err) != 0) {
            AT_CHECK_MSG(0, "publish: %s", err.msg);
            break;
        }
        publishes++;
        snprintf(tok, sizeof(tok), "t%d", (int)(it % MP_TOKENS));
        snprintf(ka, sizeof(ka), "%s.%ld.x.%ld", tok, it, it);
        AT_CHECK_OK(at_live_put_http01(lv, tok, ka, &err), &err);
        if (it % 50 == 49)
            at_live_del_http01(lv, tok);
        for (int i = 0; i < MP_READERS; i++) {
            if (pids[i] > 0 && waitpid(pids[i], &status, WNOHANG) == pids[i]) {
                AT_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                             "reader %d: %d inconsistent reads (status %d)", i,
                             WIFEXITED(status) ? WEXITSTATUS(status) : -1, status);
                pids[i] = -1;
                alive--;
            }
        }
    }
    for (int i = 0; i < MP_READERS; i++) {
        if (pids[i] > 0) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
            AT_CHECK_MSG(0, "reader %d did not finish in time", i);
        }
    }
    at_live_get_stats(lv, &st);
    AT_CHECK_MSG(st.compactions > 0, "the writer never compacted (%d publishes)", publishes);
    AT_CHECK_INT(st.repairs, 0);
    fprintf(stderr, "  # %d publishes, %" PRIu64 " compactions under %d readers\n", publishes,
            st.compactions, MP_READERS);
    at_live_detach(lv);
    munmap(mem, size);
    at_error_clear(&err);
}

/* Every name still maps to a whole certificate of its own id. */
static int table_sound(at_live *lv, int ncerts)
{
    for (int k = 0; k < ncerts; k++) {
        char name[64], id[64];
        mp_name(k, name, sizeof(name), id, sizeof(id));
        if (check_host(lv, name, AT_KEY_EC, id, NULL) < 0)
            return 0;
    }
    return 1;
}

static void t_writer_killed_holding_lock(void)
{
    at_error err = AT_ERROR_INIT;
    const size_t size = 128 * 1024;
    void *mem = shared_region(size);
    at_live *lv;
    int pfd[2];
    pid_t pid;
    char c, out[64];
    double t0;
    uint64_t g;
    at_live_stats st;

    AT_CHECK(mem != NULL && pipe(pfd) == 0);
    if (!mem)
        return;
    AT_CHECK_OK(at_live_format(mem, size, &err), &err);
    lv = at_live_attach(mem, size, &err);
    if (!lv)
        return;
    for (int k = 0; k < 4; k++) {
        char name[64], id[64];
        const char *names[1] = { name };
        mp_name(k, name, sizeof(name), id, sizeof(id));
        AT_CHECK_INT(publish(lv, id, names, 1, AT_KEY_EC, 1000, NULL, &err), 0);
    }
    AT_CHECK_OK(at_live_put_http01(lv, "tokA", "tokA.ka", &err), &err);

    /* A writer stops half-way through a write and stays alive. */
    pid = fork();
    if (pid == 0) {
        at_live *wl = at_live_attach(mem, size, NULL);
        if (!wl || at_live_test_abandon_write(wl) != 0)
            _exit(1);
        (void)!write(pfd[1], "x", 1);
        for (int i = 0; i < 300; i++)   /* bounded: 30 s at most */
            usleep(100000);
        _exit(0);
    }
    AT_CHECK(pid > 0);
    AT_CHECK_INT(read(pfd[0], &c, 1), 1);

    /* Readers give up within their bound while a live writer holds the table. */
    t0 = now_s();
    AT_CHECK_INT(at_live_get_http01(lv, "tokA", out, sizeof(out)), -1);
    AT_CHECK_MSG(now_s() - t0 < 2.0, "a reader waited %.2f s", now_s() - t0);

    /* The writer dies: the next reader repairs the table and gets its answer. */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    AT_CHECK_INT(at_live_get_http01(lv, "tokA", out, sizeof(out)), 1);
    AT_CHECK_STR(out, "tokA.ka");
    AT_CHECK(table_sound(lv, 4));
    at_live_get_stats(lv, &st);
    AT_CHECK_INT(st.repairs, 1);
    AT_CHECK_INT(st.certs, 4);

    /* Again, but this time the next writer finds the dead owner. */
    pid = fork();
    if (pid == 0) {
        at_live *wl = at_live_attach(mem, size, NULL);
        if (wl && at_live_test_abandon_write(wl) == 0)
            raise(SIGKILL);
        _exit(1);
    }
    AT_CHECK(pid > 0);
    {
        int status = 0;
        waitpid(pid, &status, 0);
        AT_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    }
    t0 = now_s();
    AT_CHECK_OK(at_live_put_http01(lv, "tokB", "tokB.ka", &err), &err);
    AT_CHECK_MSG(now_s() - t0 < 2.0, "the next writer waited %.2f s", now_s() - t0);
    AT_CHECK_INT(at_live_get_http01(lv, "tokA", out, sizeof(out)), 1);
    AT_CHECK_INT(at_live_get_http01(lv, "tokB", out, sizeof(out)), 1);
    {
        char name[64], id[64];
        const char *names[1] = { name };
        mp_name(0, name, sizeof(name), id, sizeof(id));
        AT_CHECK_INT(publish(lv, id, names, 1, AT_KEY_EC, 1000, &g, &err), 0);
    }
    AT_CHECK(table_sound(lv, 4));
    at_live_get_stats(lv, &st);
    AT_CHECK_INT(st.repairs, 2);
    close(pfd[0]);
    close(pfd[1]);
    at_live_detach(lv);
    munmap(mem, size);
    at_error_clear(&err);
}

/* Kill a busy writer at random moments: whatever it was doing, the table
 * stays sound and the next writer proceeds. */
static void t_writer_killed_randomly(void)
{
    at_error err = AT_ERROR_INIT;
    const size_t size = 128 * 1024;
    void *mem = shared_region(size);
    at_live *lv;
    unsigned seed = 12345;
    at_live_stats st;

    AT_CHECK(mem != NULL);
    if (!mem)
        return;
    AT_CHECK_OK(at_live_format(mem, size, &err), &err);
    lv = at_live_attach(mem, size, &err);
    if (!lv)
        return;
    for (int round = 0; round < 25; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            at_live *wl = at_live_attach(mem, size, NULL);
            double stop = now_s() + 5.0;
            for (long it = 0; wl && now_s() < stop; it++) {
                char name[64], id[64];
                const char *names[1] = { name };
                int k = (int)(it % 6);
                mp_name(k, name, sizeof(name), id, sizeof(id));
                publish(wl, id, names, 1, AT_KEY_EC, 1500 + (size_t)(it % 5) * 500, NULL, NULL);
            }
            _exit(0);
        }
        AT_CHECK(pid > 0);
        usleep(2000 + rand_r(&seed) % 8000);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        {
            char name[64], id[64];
            const char *names[1] = { name };
            mp_name(round % 6, name, sizeof(name), id, sizeof(id));
            AT_CHECK_MSG(publish(lv, id, names, 1, AT_KEY_EC, 800, NULL, &err) == 0, "round %d: %s", round, err.msg);
        }
        AT_CHECK_MSG(table_sound(lv, 6), "round %d: the table is not sound", round);
    }
    at_live_get_stats(lv, &st);
    fprintf(stderr, "  # 25 kills, %" PRIu64 " of them inside a write\n", st.repairs);
    AT_CHECK_INT(st.certs, 6);
    at_live_detach(lv);
    munmap(mem, size);
    at_error_clear(&err);
}

static const at_test_case cases[] = {
    AT_CASE(t_format_attach),
    AT_CASE(t_http01),
    AT_CASE(t_alpn01),
    AT_CASE(t_alpn01_ip_reverse),
    AT_CASE(t_cert_put_replace_del),
    AT_CASE(t_wildcard),
    AT_CASE(t_full_and_compaction),
    AT_CASE(t_footprint_bounded),
    AT_CASE(t_scale),
    AT_CASE(t_multiprocess_readers),
    AT_CASE(t_writer_killed_holding_lock),
    AT_CASE(t_writer_killed_randomly),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    return at_test_main(argc, argv, cases);
}
