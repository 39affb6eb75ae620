/*
 * Unit tests for the directory store: layout and modes (also under a umask
 * of 0), round trips, the archive, damaged files moved aside, locks that die
 * with their process, and a crash test that SIGKILLs a writer at random
 * moments and checks that every visible certificate still loads.
 */
#include "at_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "at_store.h"
#include "at_x509.h"

/* ================================================================ helpers */

/* snprintf without the compiler second-guessing every test path's length. */
static void fmt(char *out, size_t sz, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *out, size_t sz, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(out, sz, f, ap);
    va_end(ap);
}

typedef struct pair {
    at_buf cert;
    at_buf key;
} pair;

static void pair_make(pair *p, const char *name)
{
    const char *names[] = { name };
    at_error err = AT_ERROR_INIT;
    at_buf_init(&p->cert);
    at_buf_init(&p->key);
    AT_CHECK_OK(at_placeholder_cert(names, 1, "ec:P-256", 30, &p->cert, &p->key, &err), &err);
}

static void pair_free(pair *p)
{
    at_buf_free(&p->cert);
    at_buf_free(&p->key);
}

static json_t *meta_for(const char *name, int n)
{
    return json_pack("{s:[s], s:s, s:i}", "names", name, "key", "ec:P-256", "n", n);
}

static int save_cert(at_store *st, const char *id, const pair *p, int n, at_error *err)
{
    at_cert_rec rec;
    int rc;
    rec.id = (char *)id;
    rec.chain_pem = (char *)at_buf_str(&p->cert);
    rec.key_pem = (char *)at_buf_str(&p->key);
    rec.meta = meta_for(id, n);
    rc = at_store_cert_save(st, &rec, err);
    json_decref(rec.meta);
    return rc;
}

static at_store *open_store(const char *sub)
{
    char path[512];
    at_error err = AT_ERROR_INIT;
    at_store *st;
    fmt(path, sizeof(path), "%s/%s", at_test_tmpdir(), sub);
    st = at_store_open_dir(path, &err);
    AT_CHECK_MSG(st != NULL, "open %s: %s", path, err.msg);
    return st;
}

static mode_t mode_of(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return (mode_t)-1;
    return sb.st_mode & 07777;
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "w");
    AT_CHECK_MSG(f != NULL, "cannot write %s", path);
    if (!f)
        return;
    fwrite(data, 1, len, f);
    fclose(f);
}

/* Entries of a directory that match a prefix (NULL: all but . and ..). */
static int count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            (!prefix || strncmp(e->d_name, prefix, strlen(prefix)) == 0))
            n++;
    closedir(d);
    return n;
}

/* The one entry of dir starting with prefix, or "" */
static void find_entry(const char *dir, const char *prefix, char *out, size_t sz)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    out[0] = '\0';
    if (!d)
        return;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 && strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            fmt(out, sz, "%s", e->d_name);
    closedir(d);
}

/* ================================================================== ids */

static int id_clean(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

static void t_store_id(void)
{
    char a[256], b[256], longtext[600];

    at_store_id("example.com-ec256", a, sizeof(a));
    AT_CHECK_STR(a, "example.com-ec256");             /* already safe: unchanged */

    at_store_id("*.Example.COM", a, sizeof(a));
    AT_CHECK(strncmp(a, "_wildcard_.example.com-", 23) == 0);
    AT_CHECK(id_clean(a));

    /* Changed inputs that would collide get different hashes. */
    at_store_id("a:b", a, sizeof(a));
    at_store_id("a_b", b, sizeof(b));
    AT_CHECK_STR(b, "a_b");
    AT_CHECK(strcmp(a, b) != 0);
    AT_CHECK(strncmp(a, "a_b-", 4) == 0);
    at_store_id("Example.com", a, sizeof(a));
    at_store_id("example.com", b, sizeof(b));
    AT_CHECK(strcmp(a, b) != 0);

    at_store_id("https://acme-v02.api.letsencrypt.org/directory", a, sizeof(a));
    AT_CHECK(id_clean(a));
    AT_CHECK(strncmp(a, "https___acme-v02.api.letsencrypt.org_directory-", 47) == 0);

    /* Never a dot first (reserved for the store), never empty. */
    at_store_id("..", a, sizeof(a));
    AT_CHECK(a[0] != '.' && id_clean(a));
    at_store_id("", a, sizeof(a));
    AT_CHECK(a[0] != '\0' && id_clean(a));

    /* Long text: at most 200 bytes, still distinct. */
    memset(longtext, 'x', sizeof(longtext) - 1);
    longtext[sizeof(longtext) - 1] = '\0';
    at_store_id(longtext, a, sizeof(a));
    longtext[500] = 'y';
    at_store_id(longtext, b, sizeof(b));
    AT_CHECK(strlen(a) <= 200);
    AT_CHECK(strlen(b) <= 200);
    AT_CHECK(strcmp(a, b) != 0);

    /* A small output buffer is respected. */
    at_store_id("*.example.com", a, 16);
    AT_CHECK(strlen(a) <= 15);
}

/* ====================================================== layout and modes */

static void t_layout_and_modes(void)
{
    char root[512], p[1024];
    mode_t old = umask(0);            /* the store must not rely on the umask */
    at_store *st = open_store("store");
    at_error err = AT_ERROR_INIT;
    at_account_rec acct;
    pair pr;
    json_t *j;
    struct stat sb;
    const char *subs[] = { "", "/certs", "/accounts", "/staging", "/state", "/archive", "/locks" };

    if (!st) {
        umask(old);
        return;
    }
    fmt(root, sizeof(root), "%s", at_store_path(st));
    AT_CHECK_CONTAINS(at_store_describe(st), root);
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        fmt(p, sizeof(p), "%s%s", root, subs[i]);
        AT_CHECK_MSG(mode_of(p) == 0700, "%s has mode %o", p, (unsigned)mode_of(p));
    }

    pair_make(&pr, "example.com");
    AT_CHECK_OK(save_cert(st, "example.com-ec256", &pr, 1, &err), &err);
    fmt(p, sizeof(p), "%s/certs/example.com-ec256", root);
    AT_CHECK(lstat(p, &sb) == 0 && S_ISLNK(sb.st_mode));
    fmt(p, sizeof(p), "%s/certs/example.com-ec256/key.pem", root);
    AT_CHECK_MSG(mode_of(p) == 0600, "key.pem mode %o", (unsigned)mode_of(p));
    fmt(p, sizeof(p), "%s/certs/example.com-ec256/chain.pem", root);
    AT_CHECK(mode_of(p) == 0644);
    fmt(p, sizeof(p), "%s/certs/example.com-ec256/meta.json", root);
    AT_CHECK(mode_of(p) == 0644);
    fmt(p, sizeof(p), "%s/certs/.sets", root);
    AT_CHECK(mode_of(p) == 0700);
    fmt(p, sizeof(p), "%s/certs/.sets/example.com-ec256", root);
    AT_CHECK(mode_of(p) == 0700);
    {
        char v[256], vp[1200];
        find_entry(p, "2", v, sizeof(v));
        fmt(vp, sizeof(vp), "%s/%s", p, v);
        AT_CHECK_MSG(mode_of(vp) == 0700, "version dir %s mode %o", vp, (unsigned)mode_of(vp));
    }

    memset(&acct, 0, sizeof(acct));
    acct.ca_url = "https://ca.test/dir";
    acct.key_pem = (char *)at_buf_str(&pr.key);
    AT_CHECK_OK(at_store_account_save(st, &acct, &err), &err);
    at_store_id(acct.ca_url, p, sizeof(p));
    {
        char kp[1200];
        fmt(kp, sizeof(kp), "%s/accounts/%s/account.key.pem", root, p);
        AT_CHECK_MSG(mode_of(kp) == 0600, "%s mode %o", kp, (unsigned)mode_of(kp));
        fmt(kp, sizeof(kp), "%s/accounts/%s/account.json", root, p);
        AT_CHECK(mode_of(kp) == 0600);
    }

    j = json_pack("{s:s}", "status", "pending");
    AT_CHECK_OK(at_store_order_save(st, "example.com-ec256", j, at_buf_str(&pr.key), &err), &err);
    fmt(p, sizeof(p), "%s/staging/example.com-ec256/key.pem", root);
    AT_CHECK(mode_of(p) == 0600);
    AT_CHECK_OK(at_store_state_save(st, "example.com-ec256", j, &err), &err);
    fmt(p, sizeof(p), "%s/state/example.com-ec256.json", root);
    AT_CHECK(access(p, R_OK) == 0);
    json_decref(j);

    /* Archive directories too. */
    AT_CHECK_OK(save_cert(st, "example.com-ec256", &pr, 2, &err), &err);
    fmt(p, sizeof(p), "%s/archive/example.com-ec256", root);
    AT_CHECK(mode_of(p) == 0700);

    pair_free(&pr);
    at_store_close(st);
    umask(old);
}

static void t_open_nested_and_refuse_file(void)
{
    char p[512];
    at_error err = AT_ERROR_INIT;
    at_store *st;

    fmt(p, sizeof(p), "%s/a/b/c/", at_test_tmpdir());
    st = at_store_open_dir(p, &err);
    AT_CHECK_MSG(st != NULL, "%s", err.msg);
    if (st) {
        AT_CHECK(at_store_path(st)[strlen(at_store_path(st)) - 1] != '/');
        at_store_close(st);
    }
    fmt(p, sizeof(p), "%s/plainfile", at_test_tmpdir());
    write_file(p, "x", 1);
    st = at_store_open_dir(p, &err);
    AT_CHECK(st == NULL);
    AT_CHECK_CONTAINS(err.msg, p);
    at_error_clear(&err);
}

/* ========================================================= certificates */

static void t_cert_roundtrip_and_archive(void)
{
    at_store *st = open_store("s");
    at_error err = AT_ERROR_INIT;
    at_cert_rec rec;
    pair a, b;
    char **ids = NULL, p[1024];
    size_t n = 0;

    if (!st)
        return;
    pair_make(&a, "one.example");
    pair_make(&b, "two.example");

    AT_CHECK(at_store_cert_load(st, "one.example-ec256", &rec, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    at_error_clear(&err);

    AT_CHECK_OK(save_cert(st, "one.example-ec256", &a, 1, &err), &err);
    AT_CHECK_OK(at_store_cert_load(st, "one.example-ec256", &rec, &err), &err);
    AT_CHECK_STR(rec.id, "one.example-ec256");
    AT_CHECK_STR(rec.chain_pem, at_buf_str(&a.cert));
    AT_CHECK_STR(rec.key_pem, at_buf_str(&a.key));
    AT_CHECK_INT(json_integer_value(json_object_get(rec.meta, "n")), 1);
    at_cert_rec_free(&rec);

    /* Replace: the new one is live, the old one is in the archive. */
    AT_CHECK_OK(save_cert(st, "one.example-ec256", &b, 2, &err), &err);
    AT_CHECK_OK(at_store_cert_load(st, "one.example-ec256", &rec, &err), &err);
    AT_CHECK_STR(rec.chain_pem, at_buf_str(&b.cert));
    AT_CHECK_INT(json_integer_value(json_object_get(rec.meta, "n")), 2);
    at_cert_rec_free(&rec);
    fmt(p, sizeof(p), "%s/archive/one.example-ec256", at_store_path(st));
    AT_CHECK_INT(count_entries(p, NULL), 1);
    {
        char v[256], cp[1400], *old;
        find_entry(p, "2", v, sizeof(v));
        fmt(cp, sizeof(cp), "%s/%s/chain.pem", p, v);
        old = at_test_read_file(cp, NULL);
        AT_CHECK_STR(old, at_buf_str(&a.cert));
        free(old);
    }
    /* Only the live version remains under .sets. */
    fmt(p, sizeof(p), "%s/certs/.sets/one.example-ec256", at_store_path(st));
    AT_CHECK_INT(count_entries(p, NULL), 1);

    /* Several saves in the same second keep distinct archive entries. */
    AT_CHECK_OK(save_cert(st, "one.example-ec256", &a, 3, &err), &err);
    AT_CHECK_OK(save_cert(st, "one.example-ec256", &b, 4, &err), &err);
    fmt(p, sizeof(p), "%s/archive/one.example-ec256", at_store_path(st));
    AT_CHECK_INT(count_entries(p, NULL), 3);

    AT_CHECK_OK(save_cert(st, "two.example-ec256", &b, 1, &err), &err);
    AT_CHECK_OK(at_store_cert_list(st, &ids, &n, &err), &err);
    AT_CHECK_INT(n, 2);
    if (n == 2) {
        AT_CHECK_STR(ids[0], "one.example-ec256");
        AT_CHECK_STR(ids[1], "two.example-ec256");
    }
    at_store_free_list(ids, n);

    /* Retire: gone from the list, kept in the archive. */
    AT_CHECK_OK(at_store_cert_retire(st, "two.example-ec256", &err), &err);
    AT_CHECK(at_store_cert_load(st, "two.example-ec256", &rec, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    at_error_clear(&err);
    AT_CHECK_OK(at_store_cert_list(st, &ids, &n, &err), &err);
    AT_CHECK_INT(n, 1);
    at_store_free_list(ids, n);
    fmt(p, sizeof(p), "%s/archive/two.example-ec256", at_store_path(st));
    AT_CHECK_INT(count_entries(p, NULL), 1);
    AT_CHECK(at_store_cert_retire(st, "two.example-ec256", &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    at_error_clear(&err);

    /* Ids that are not safe file names are refused, not rewritten. */
    AT_CHECK(at_store_cert_load(st, "../etc", &rec, &err) != 0);
    AT_CHECK(err.code != AT_ERR_NOTFOUND);
    at_error_clear(&err);

    pair_free(&a);
    pair_free(&b);
    at_store_close(st);
}

static void t_cert_save_refuses_mismatch(void)
{
    at_store *st = open_store("s");
    at_error err = AT_ERROR_INIT;
    at_cert_rec rec;
    pair a, b;
    char **ids = NULL;
    size_t n = 0;

    if (!st)
        return;
    pair_make(&a, "a.example");
    pair_make(&b, "b.example");
    rec.id = "a.example-ec256";
    rec.chain_pem = (char *)at_buf_str(&a.cert);
    rec.key_pem = (char *)at_buf_str(&b.key);
    rec.meta = meta_for("a.example", 1);
    AT_CHECK(at_store_cert_save(st, &rec, &err) != 0);
    AT_CHECK_CONTAINS(err.msg, "a.example-ec256");
    AT_CHECK_CONTAINS(err.msg, "does not match");
    at_error_clear(&err);
    rec.chain_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n";
    rec.key_pem = (char *)at_buf_str(&a.key);
    AT_CHECK(at_store_cert_save(st, &rec, &err) != 0);
    at_error_clear(&err);
    json_decref(rec.meta);
    AT_CHECK_OK(at_store_cert_list(st, &ids, &n, &err), &err);
    AT_CHECK_INT(n, 0);
    at_store_free_list(ids, n);
    /* The checked variant trusts its caller: what it stores is what the
     * caller vouched for, and a load still verifies it. */
    rec.chain_pem = (char *)at_buf_str(&a.cert);
    rec.key_pem = (char *)at_buf_str(&a.key);
    rec.meta = meta_for("a.example", 1);
    AT_CHECK_OK(at_store_cert_save_checked(st, &rec, &err), &err);
    json_decref(rec.meta);
    {
        at_cert_rec back;
        memset(&back, 0, sizeof(back));
        AT_CHECK_OK(at_store_cert_load(st, "a.example-ec256", &back, &err), &err);
        AT_CHECK_STR(back.chain_pem, at_buf_str(&a.cert));
        AT_CHECK_STR(back.key_pem, at_buf_str(&a.key));
        at_cert_rec_free(&back);
    }
    rec.key_pem = (char *)at_buf_str(&b.key);
    rec.meta = meta_for("a.example", 1);
    AT_CHECK_OK(at_store_cert_save_checked(st, &rec, &err), &err);
    json_decref(rec.meta);
    {
        at_cert_rec back;
        memset(&back, 0, sizeof(back));
        AT_CHECK(at_store_cert_load(st, "a.example-ec256", &back, &err) != 0);
        AT_CHECK_INT(err.code, AT_ERR_CORRUPT);
        at_error_clear(&err);
        at_cert_rec_free(&back);
    }
    pair_free(&a);
    pair_free(&b);
    at_store_close(st);
}

/* Damage one file of a stored certificate, then check the load reports it
 * by name and moves the set aside intact. */
static void damage_and_check(const char *file, const char *content, size_t len, const char *expect)
{
    at_store *st = open_store("s");
    at_error err = AT_ERROR_INIT;
    at_cert_rec rec;
    pair a, other;
    char p[1024], moved[256], dirp[1024], **ids = NULL;
    size_t n = 0;

    if (!st)
        return;
    pair_make(&a, "d.example");
    pair_make(&other, "other.example");
    AT_CHECK_OK(save_cert(st, "d.example-ec256", &a, 1, &err), &err);
    fmt(p, sizeof(p), "%s/certs/d.example-ec256/%s", at_store_path(st), file);
    if (content == NULL)                    /* use the other pair's key */
        write_file(p, at_buf_str(&other.key), other.key.len);
    else if (len == (size_t)-1)             /* remove it */
        unlink(p);
    else
        write_file(p, content, len);

    AT_CHECK(at_store_cert_load(st, "d.example-ec256", &rec, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_CORRUPT);
    AT_CHECK_CONTAINS(err.msg, p);                 /* names the file */
    AT_CHECK_CONTAINS(err.msg, expect);
    AT_CHECK_CONTAINS(err.msg, ".corrupt-");
    at_error_clear(&err);

    /* Moved aside, never deleted: the other files are still there. */
    fmt(dirp, sizeof(dirp), "%s/certs", at_store_path(st));
    find_entry(dirp, "d.example-ec256.corrupt-", moved, sizeof(moved));
    AT_CHECK(moved[0] != '\0');
    fmt(p, sizeof(p), "%s/%s/meta.json", dirp, moved);
    if (strcmp(file, "meta.json") != 0)
        AT_CHECK(access(p, R_OK) == 0);
    fmt(p, sizeof(p), "%s/%s/chain.pem", dirp, moved);
    if (strcmp(file, "chain.pem") != 0)
        AT_CHECK(access(p, R_OK) == 0);

    /* Now simply absent, and not listed. */
    AT_CHECK(at_store_cert_load(st, "d.example-ec256", &rec, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    at_error_clear(&err);
    AT_CHECK_OK(at_store_cert_list(st, &ids, &n, &err), &err);
    AT_CHECK_INT(n, 0);
    at_store_free_list(ids, n);

    /* And a new certificate can be stored under the id. */
    AT_CHECK_OK(save_cert(st, "d.example-ec256", &a, 2, &err), &err);
    AT_CHECK_OK(at_store_cert_load(st, "d.example-ec256", &rec, &err), &err);
    at_cert_rec_free(&rec);
    pair_free(&a);
    pair_free(&other);
    at_store_close(st);
}

static void t_corrupt_truncated_chain(void)
{
    damage_and_check("chain.pem", "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n", 48, "chain.pem");
}

static void t_corrupt_truncated_key(void)
{
    damage_and_check("key.pem", "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n", 48, "key.pem");
}

static void t_corrupt_key_mismatch(void)
{
    damage_and_check("key.pem", NULL, 0, "does not match");
}

static void t_corrupt_meta(void)
{
    damage_and_check("meta.json", "{\"names\": [", 11, "meta.json");
}

static void t_corrupt_missing_file(void)
{
    damage_and_check("key.pem", "", (size_t)-1, "missing");
}

static void t_corrupt_empty_chain(void)
{
    damage_and_check("chain.pem", "", 0, "empty");
}

/* The status page's view: chain and meta without the key, which is not
 * read (a damaged key is the engine's to find); a damaged leaf is still
 * reported by name and moved aside. */
static void t_cert_load_public(void)
{
    at_store *st = open_store("s");
    at_error err = AT_ERROR_INIT;
    at_cert_rec rec;
    pair a;
    char p[1024];

    if (!st)
        return;
    pair_make(&a, "pub.example");
    AT_CHECK(at_store_cert_load_public(st, "pub.example-ec256", &rec, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    at_error_clear(&err);

    AT_CHECK_OK(save_cert(st, "pub.example-ec256", &a, 7, &err), &err);
    fmt(p, sizeof(p), "%s/certs/pub.example-ec256/key.pem", at_store_path(st));
    write_file(p, "not a key", 9);
    AT_CHECK_OK(at_store_cert_load_public(st, "pub.example-ec256", &rec, &err), &err);
    AT_CHECK_STR(rec.id, "pub.example-ec256");
    AT_CHECK_STR(rec.chain_pem, at_buf_str(&a.cert));
    AT_CHECK(rec.key_pem == NULL);
    AT_CHECK_INT(json_integer_value(json_object_get(rec.meta, "n")), 7);
    at_cert_rec_free(&rec);

    fmt(p, sizeof(p), "%s/certs/pub.example-ec256/chain.pem", at_store_path(st));
    write_file(p, "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n", 48);
    AT_CHECK(at_store_cert_load_public(st, "pub.example-ec256", &rec, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_CORRUPT);
    AT_CHECK_CONTAINS(err.msg, p);
    AT_CHECK_CONTAINS(err.msg, ".corrupt-");
    at_error_clear(&err);
    pair_free(&a);
    at_store_close(st);
}

/* A certificate placed by hand as a real directory still loads, and the
 * next save turns it into a managed set (archiving the hand-made one). */
static void t_hand_made_directory(void)
{
    at_store *st = open_store("s");
    at_error err = AT_ERROR_INIT;
    at_cert_rec rec;
    pair a, b;
    char p[1024], f[1200];
    struct stat sb;

    if (!st)
        return;
    pair_make(&a, "h.example");
    pair_make(&b, "h.example");
    fmt(p, sizeof(p), "%s/certs/h.example-ec256", at_store_path(st));
    AT_CHECK(mkdir(p, 0700) == 0);
    fmt(f, sizeof(f), "%s/chain.pem", p);
    write_file(f, at_buf_str(&a.cert), a.cert.len);
    fmt(f, sizeof(f), "%s/key.pem", p);
    write_file(f, at_buf_str(&a.key), a.key.len);
    fmt(f, sizeof(f), "%s/meta.json", p);
    write_file(f, "{}", 2);
    AT_CHECK_OK(at_store_cert_load(st, "h.example-ec256", &rec, &err), &err);
    AT_CHECK_STR(rec.chain_pem, at_buf_str(&a.cert));
    at_cert_rec_free(&rec);

    AT_CHECK_OK(save_cert(st, "h.example-ec256", &b, 1, &err), &err);
    AT_CHECK(lstat(p, &sb) == 0 && S_ISLNK(sb.st_mode));
    AT_CHECK_OK(at_store_cert_load(st, "h.example-ec256", &rec, &err), &err);
    AT_CHECK_STR(rec.chain_pem, at_buf_str(&b.cert));
    at_cert_rec_free(&rec);
    fmt(p, sizeof(p), "%s/archive/h.example-ec256", at_store_path(st));
    AT_CHECK_INT(count_entries(p, NULL), 1);

    /* A damaged hand-made directory is moved aside as a whole. */
    AT_CHECK_OK(at_store_cert_retire(st, "h.example-ec256", &err), &err);
    fmt(p, sizeof(p), "%s/certs/h.example-ec256", at_store_path(st));
    AT_CHECK(mkdir(p, 0700) == 0);
    fmt(f, sizeof(f), "%s/chain.pem", p);
    write_file(f, "garbage", 7);
    AT_CHECK(at_store_cert_load(st, "h.example-ec256", &rec, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_CORRUPT);
    AT_CHECK_CONTAINS(err.msg, f);
    at_error_clear(&err);
    AT_CHECK(access(p, F_OK) != 0);
    pair_free(&a);
    pair_free(&b);
    at_store_close(st);
}

/* Debris of a writer that died is removed by the next writer of that set,
 * and never shows as a record. */
static void t_debris_cleanup(void)
{
    at_store *st = open_store("s");
    at_error err = AT_ERROR_INIT;
    at_cert_rec rec;
    pair a;
    char sets[1024], p[1200], **ids = NULL;
    size_t n = 0;

    if (!st)
        return;
    pair_make(&a, "c.example");
    AT_CHECK_OK(save_cert(st, "c.example-ec256", &a, 1, &err), &err);
    fmt(sets, sizeof(sets), "%s/certs/.sets/c.example-ec256", at_store_path(st));
    fmt(p, sizeof(p), "%s/20200101T000000Z-1-1", sets);
    AT_CHECK(mkdir(p, 0700) == 0);
    fmt(p, sizeof(p), "%s/20200101T000000Z-1-1/key.pem", sets);
    write_file(p, "-----BEGIN PRIV", 15);
    fmt(p, sizeof(p), "%s/.lnk-20200101T000000Z-1-2", sets);
    AT_CHECK(symlink("nowhere", p) == 0);
    AT_CHECK_INT(count_entries(sets, NULL), 3);
    AT_CHECK_OK(at_store_cert_list(st, &ids, &n, &err), &err);
    AT_CHECK_INT(n, 1);
    at_store_free_list(ids, n);
    AT_CHECK_OK(at_store_cert_load(st, "c.example-ec256", &rec, &err), &err);
    at_cert_rec_free(&rec);

    AT_CHECK_OK(save_cert(st, "c.example-ec256", &a, 2, &err), &err);
    AT_CHECK_INT(count_entries(sets, NULL), 1);
    AT_CHECK_OK(at_store_cert_load(st, "c.example-ec256", &rec, &err), &err);
    AT_CHECK_INT(json_integer_value(json_object_get(rec.meta, "n")), 2);
    at_cert_rec_free(&rec);

    /* A dangling name (crash between archiving and unlinking on retire)
     * reads as absent and is not listed. */
    fmt(p, sizeof(p), "%s/certs/dangling-ec256", at_store_path(st));
    AT_CHECK(symlink(".sets/dangling-ec256/gone", p) == 0);
    AT_CHECK(at_store_cert_load(st, "dangling-ec256", &rec, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    at_error_clear(&err);
    AT_CHECK_OK(at_store_cert_list(st, &ids, &n, &err), &err);
    AT_CHECK_INT(n, 1);
    at_store_free_list(ids, n);
    pair_free(&a);
    at_store_close(st);
}

/* ============================================================= accounts */

static void t_accounts(void)
{
    at_store *st = open_store("s");
    at_error err = AT_ERROR_INIT;
    at_account_rec in, out;
    pair a, b;
    char id[256], p[1024];

    if (!st)
        return;
    pair_make(&a, "x");
    pair_make(&b, "y");
    AT_CHECK(at_store_account_load(st, "https://ca.test/dir", &out, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    AT_CHECK_CONTAINS(err.msg, "https://ca.test/dir");
    at_error_clear(&err);

    /* Key first, before registration (no URL yet). */
    memset(&in, 0, sizeof(in));
    in.ca_url = "https://ca.test/dir";
    in.key_pem = (char *)at_buf_str(&a.key);
    AT_CHECK_OK(at_store_account_save(st, &in, &err), &err);
    AT_CHECK_OK(at_store_account_load(st, "https://ca.test/dir", &out, &err), &err);
    AT_CHECK_STR(out.ca_url, "https://ca.test/dir");
    AT_CHECK(out.url == NULL);
    AT_CHECK(out.account == NULL);
    AT_CHECK_STR(out.key_pem, at_buf_str(&a.key));
    at_account_rec_free(&out);

    /* Registered. */
    in.url = "https://ca.test/acct/17";
    in.account = json_pack("{s:s, s:[s]}", "status", "valid", "contact", "mailto:a@example.com");
    AT_CHECK_OK(at_store_account_save(st, &in, &err), &err);
    json_decref(in.account);
    AT_CHECK_OK(at_store_account_load(st, "https://ca.test/dir", &out, &err), &err);
    AT_CHECK_STR(out.url, "https://ca.test/acct/17");
    AT_CHECK_STR(json_string_value(json_object_get(out.account, "status")), "valid");
    at_account_rec_free(&out);

    /* Another CA: its own record. */
    in.ca_url = "https://other-ca.test/directory";
    in.url = NULL;
    in.account = NULL;
    in.key_pem = (char *)at_buf_str(&b.key);
    AT_CHECK_OK(at_store_account_save(st, &in, &err), &err);
    AT_CHECK_OK(at_store_account_load(st, "https://other-ca.test/directory", &out, &err), &err);
    AT_CHECK_STR(out.key_pem, at_buf_str(&b.key));
    at_account_rec_free(&out);
    AT_CHECK_OK(at_store_account_load(st, "https://ca.test/dir", &out, &err), &err);
    AT_CHECK_STR(out.key_pem, at_buf_str(&a.key));
    at_account_rec_free(&out);

    /* Stored under the CA's id; replaced versions are archived. */
    at_store_id("https://ca.test/dir", id, sizeof(id));
    fmt(p, sizeof(p), "%s/accounts/%s/account.json", at_store_path(st), id);
    AT_CHECK(access(p, R_OK) == 0);
    fmt(p, sizeof(p), "%s/archive/.accounts/%s", at_store_path(st), id);
    AT_CHECK_INT(count_entries(p, NULL), 1);

    /* A refused key is not stored. */
    in.key_pem = "not a key";
    AT_CHECK(at_store_account_save(st, &in, &err) != 0);
    at_error_clear(&err);

    /* Damage: a truncated key, then bad JSON. */
    fmt(p, sizeof(p), "%s/accounts/%s/account.key.pem", at_store_path(st), id);
    write_file(p, "-----BEGIN PRIVATE KEY-----\nMIG", 31);
    AT_CHECK(at_store_account_load(st, "https://ca.test/dir", &out, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_CORRUPT);
    AT_CHECK_CONTAINS(err.msg, p);
    AT_CHECK_CONTAINS(err.msg, "https://ca.test/dir");
    at_error_clear(&err);
    AT_CHECK(at_store_account_load(st, "https://ca.test/dir", &out, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    at_error_clear(&err);

    in.ca_url = "https://ca.test/dir";
    in.key_pem = (char *)at_buf_str(&a.key);
    AT_CHECK_OK(at_store_account_save(st, &in, &err), &err);
    fmt(p, sizeof(p), "%s/accounts/%s/account.json", at_store_path(st), id);
    write_file(p, "{\"ca_url\": \"https://ca.te", 25);
    AT_CHECK(at_store_account_load(st, "https://ca.test/dir", &out, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_CORRUPT);
    AT_CHECK_CONTAINS(err.msg, p);
    at_error_clear(&err);
    fmt(p, sizeof(p), "%s/accounts", at_store_path(st));
    AT_CHECK_INT(count_entries(p, id), 2);       /* the live name is gone, both moved aside */
    pair_free(&a);
    pair_free(&b);
    at_store_close(st);
}

/* =============================================================== orders */

static void t_orders(void)
{
    at_store *st = open_store("s");
    at_error err = AT_ERROR_INIT;
    json_t *cp = NULL, *in;
    char *key = NULL, p[1024];
    pair a;

    if (!st)
        return;
    pair_make(&a, "o.example");
    AT_CHECK(at_store_order_load(st, "o.example-ec256", &cp, &key, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    at_error_clear(&err);

    in = json_pack("{s:s, s:s}", "url", "https://ca.test/order/1", "state", "authorizing");
    AT_CHECK_OK(at_store_order_save(st, "o.example-ec256", in, at_buf_str(&a.key), &err), &err);
    json_object_set_new(in, "state", json_string("finalizing"));
    AT_CHECK_OK(at_store_order_save(st, "o.example-ec256", in, at_buf_str(&a.key), &err), &err);
    json_decref(in);
    AT_CHECK_OK(at_store_order_load(st, "o.example-ec256", &cp, &key, &err), &err);
    AT_CHECK_STR(json_string_value(json_object_get(cp, "state")), "finalizing");
    AT_CHECK_STR(key, at_buf_str(&a.key));
    json_decref(cp);
    free(key);
    /* Checkpoints are not archived: only the current version exists. */
    fmt(p, sizeof(p), "%s/staging/.sets/o.example-ec256", at_store_path(st));
    AT_CHECK_INT(count_entries(p, NULL), 1);

    /* A checkpoint without a usable key is refused (resuming needs it),
     * and the stored one stays. */
    in = json_pack("{s:s}", "state", "new");
    AT_CHECK(at_store_order_save(st, "o.example-ec256", in, NULL, &err) != 0);
    at_error_clear(&err);
    AT_CHECK(at_store_order_save(st, "o.example-ec256", in, "-----BEGIN PRIVATE KEY-----\nxx\n", &err) != 0);
    at_error_clear(&err);
    json_decref(in);
    AT_CHECK_OK(at_store_order_load(st, "o.example-ec256", &cp, NULL, &err), &err);
    AT_CHECK_STR(json_string_value(json_object_get(cp, "state")), "finalizing");
    json_decref(cp);

    AT_CHECK_OK(at_store_order_remove(st, "o.example-ec256", &err), &err);
    AT_CHECK(at_store_order_load(st, "o.example-ec256", &cp, &key, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    at_error_clear(&err);
    AT_CHECK(access(p, F_OK) != 0);
    /* Removing what is not there is not an error. */
    AT_CHECK_OK(at_store_order_remove(st, "o.example-ec256", &err), &err);

    /* A damaged checkpoint. */
    in = json_pack("{s:s}", "state", "new");
    AT_CHECK_OK(at_store_order_save(st, "o.example-ec256", in, at_buf_str(&a.key), &err), &err);
    json_decref(in);
    fmt(p, sizeof(p), "%s/staging/o.example-ec256/order.json", at_store_path(st));
    write_file(p, "[1,2", 4);
    AT_CHECK(at_store_order_load(st, "o.example-ec256", &cp, &key, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_CORRUPT);
    AT_CHECK_CONTAINS(err.msg, p);
    at_error_clear(&err);

    /* A missing key is damage too. */
    in = json_pack("{s:s}", "state", "new");
    AT_CHECK_OK(at_store_order_save(st, "o.example-ec256", in, at_buf_str(&a.key), &err), &err);
    json_decref(in);
    fmt(p, sizeof(p), "%s/staging/o.example-ec256/key.pem", at_store_path(st));
    unlink(p);
    AT_CHECK(at_store_order_load(st, "o.example-ec256", &cp, &key, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_CORRUPT);
    AT_CHECK_CONTAINS(err.msg, p);
    AT_CHECK(cp == NULL && key == NULL);
    at_error_clear(&err);
    pair_free(&a);
    at_store_close(st);
}

/* ================================================================ state */

static void t_state(void)
{
    at_store *st = open_store("s");
    at_error err = AT_ERROR_INIT;
    json_t *s = NULL, *in;
    char p[1024], moved[256], dir[1024];

    if (!st)
        return;
    AT_CHECK(at_store_state_load(st, "x.example-ec256", &s, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    at_error_clear(&err);
    in = json_pack("{s:i, s:n}", "failures", 3, "last_error");
    AT_CHECK_OK(at_store_state_save(st, "x.example-ec256", in, &err), &err);
    json_object_set_new(in, "failures", json_integer(4));
    AT_CHECK_OK(at_store_state_save(st, "x.example-ec256", in, &err), &err);
    json_decref(in);
    AT_CHECK_OK(at_store_state_load(st, "x.example-ec256", &s, &err), &err);
    AT_CHECK_INT(json_integer_value(json_object_get(s, "failures")), 4);
    json_decref(s);
    /* No temporaries left behind. */
    fmt(dir, sizeof(dir), "%s/state", at_store_path(st));
    AT_CHECK_INT(count_entries(dir, NULL), 1);

    fmt(p, sizeof(p), "%s/x.example-ec256.json", dir);
    write_file(p, "{\"failures\": 4,", 15);
    AT_CHECK(at_store_state_load(st, "x.example-ec256", &s, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_CORRUPT);
    AT_CHECK_CONTAINS(err.msg, p);
    AT_CHECK_CONTAINS(err.msg, ".corrupt-");
    at_error_clear(&err);
    find_entry(dir, "x.example-ec256.json.corrupt-", moved, sizeof(moved));
    AT_CHECK(moved[0] != '\0');
    AT_CHECK(at_store_state_load(st, "x.example-ec256", &s, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_NOTFOUND);
    at_error_clear(&err);

    /* A JSON array is not a state either. */
    write_file(p, "[]", 2);
    AT_CHECK(at_store_state_load(st, "x.example-ec256", &s, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_CORRUPT);
    at_error_clear(&err);
    AT_CHECK_INT(count_entries(dir, "x.example-ec256.json.corrupt-"), 2);
    at_store_close(st);
}

/* ================================================================ locks */

static void t_lock_dies_with_process(void)
{
    at_store *st = open_store("s");
    at_error err = AT_ERROR_INIT;
    at_store_lock *lk = NULL, *lk2 = NULL;
    int ready[2];
    char c, pid[32];
    pid_t child;

    if (!st)
        return;
    AT_CHECK(pipe(ready) == 0);
    child = fork();
    if (child == 0) {
        at_store_lock *cl = NULL;
        close(ready[0]);
        if (at_store_trylock(st, "example.com-ec256", &cl, NULL) != 0)
            _exit(1);
        if (write(ready[1], "L", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(ready[1]);
    AT_CHECK(read(ready[0], &c, 1) == 1);
    close(ready[0]);

    AT_CHECK(at_store_trylock(st, "example.com-ec256", &lk, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_BUSY);
    fmt(pid, sizeof(pid), "process %ld", (long)child);
    AT_CHECK_CONTAINS(err.msg, pid);
    AT_CHECK_CONTAINS(err.msg, "example.com-ec256");
    at_error_clear(&err);
    /* Another name is free. */
    AT_CHECK_OK(at_store_trylock(st, "other.example-ec256", &lk2, &err), &err);

    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    AT_CHECK_OK(at_store_trylock(st, "example.com-ec256", &lk, &err), &err);
    AT_CHECK(lk != NULL);

    /* Exclusive within one process too (two holders in two threads). */
    {
        at_store_lock *again = NULL;
        AT_CHECK(at_store_trylock(st, "example.com-ec256", &again, &err) != 0);
        AT_CHECK_INT(err.code, AT_ERR_BUSY);
        at_error_clear(&err);
        at_store_unlock(lk);
        AT_CHECK_OK(at_store_trylock(st, "example.com-ec256", &again, &err), &err);
        at_store_unlock(again);
    }
    at_store_unlock(lk2);
    at_store_close(st);
}

/* ================================================================ chown */

static int owned_by(const char *path, uid_t uid, gid_t gid, int *bad)
{
    DIR *d;
    struct dirent *e;
    struct stat sb;
    char sub[2048];
    int n = 0;

    if (lstat(path, &sb) != 0)
        return 0;
    n++;
    if (sb.st_uid != uid || sb.st_gid != gid) {
        (*bad)++;
        fprintf(stderr, "  not owned: %s\n", path);
    }
    if (!S_ISDIR(sb.st_mode) || !(d = opendir(path)))
        return n;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        fmt(sub, sizeof(sub), "%s/%s", path, e->d_name);
        n += owned_by(sub, uid, gid, bad);
    }
    closedir(d);
    return n;
}

static void t_chown(void)
{
    at_store *st = open_store("s");
    at_error err = AT_ERROR_INIT;
    at_store_lock *lk = NULL;
    json_t *j = json_object();
    pair a;
    int bad = 0, n;
    /* As root, hand the tree to someone else; otherwise to ourselves. */
    uid_t uid = geteuid() == 0 ? 4242 : geteuid();
    gid_t gid = geteuid() == 0 ? 4343 : getegid();

    if (!st) {
        json_decref(j);
        return;
    }
    pair_make(&a, "own.example");
    AT_CHECK_OK(save_cert(st, "own.example-ec256", &a, 1, &err), &err);
    AT_CHECK_OK(save_cert(st, "own.example-ec256", &a, 2, &err), &err);
    AT_CHECK_OK(at_store_state_save(st, "own.example-ec256", j, &err), &err);
    AT_CHECK_OK(at_store_trylock(st, "own.example-ec256", &lk, &err), &err);
    at_store_unlock(lk);
    AT_CHECK_OK(at_store_chown(st, uid, gid, &err), &err);
    n = owned_by(at_store_path(st), uid, gid, &bad);
    AT_CHECK_INT(bad, 0);
    AT_CHECK(n > 15);                     /* it did walk the tree, links included */

    /* Root writing afterwards (the tool, Apache's parent) keeps handing new
     * files, directories, links and locks to the store's owner, so that the
     * server can still replace them. */
    AT_CHECK_OK(save_cert(st, "own.example-ec256", &a, 3, &err), &err);
    AT_CHECK_OK(save_cert(st, "new.example-ec256", &a, 1, &err), &err);
    AT_CHECK_OK(at_store_state_save(st, "new.example-ec256", j, &err), &err);
    AT_CHECK_OK(at_store_order_save(st, "new.example-ec256", j, at_buf_str(&a.key), &err), &err);
    AT_CHECK_OK(at_store_trylock(st, "new.example-ec256", &lk, &err), &err);
    at_store_unlock(lk);
    at_store_close(st);
    st = open_store("s");                 /* a fresh open learns the owner from the directory */
    if (st) {
        AT_CHECK_OK(save_cert(st, "third.example-ec256", &a, 1, &err), &err);
        bad = 0;
        n = owned_by(at_store_path(st), uid, gid, &bad);
        AT_CHECK_INT(bad, 0);
        AT_CHECK(n > 30);
    }
    json_decref(j);
    pair_free(&a);
    at_store_close(st);
}

/* ================================================================ crash */

#define CRASH_ROUNDS 30
#define CRASH_PAIRS 3
#define CRASH_IDS 2

static const char *crash_ids[CRASH_IDS] = { "crash-a.example-ec256", "crash-b.example-ec256" };

static void crash_writer(const char *path, pair *pairs)
{
    at_error err = AT_ERROR_INIT;
    at_store *st = at_store_open_dir(path, &err);
    json_t *j = json_object();
    unsigned i = 0;

    if (!st)
        _exit(2);
    for (;;) {
        const char *id = crash_ids[i % CRASH_IDS];
        if (save_cert(st, id, &pairs[i % CRASH_PAIRS], (int)i, &err) != 0)
            _exit(3);
        json_object_set_new(j, "n", json_integer(i));
        if (at_store_state_save(st, id, j, &err) != 0 ||
            at_store_order_save(st, id, j, at_buf_str(&pairs[i % CRASH_PAIRS].key), &err) != 0)
            _exit(4);
        if (i % 7 == 6 && at_store_cert_retire(st, id, &err) != 0)
            _exit(5);
        i++;
    }
}

static int known_chain(const pair *pairs, const char *chain)
{
    for (int i = 0; i < CRASH_PAIRS; i++)
        if (strcmp(at_buf_str(&pairs[i].cert), chain) == 0)
            return 1;
    return 0;
}

static int crash_loads;    /* certificates verified across all rounds */
static int crash_debris;   /* rounds that found a killed writer's half-made version */

static void crash_check(const char *path, const pair *pairs, int round)
{
    at_error err = AT_ERROR_INIT;
    at_store *st = at_store_open_dir(path, &err);
    char **ids = NULL, dir[1024];
    size_t n = 0;
    DIR *d;
    struct dirent *e;

    AT_CHECK_MSG(st != NULL, "round %d: %s", round, err.msg);
    if (!st)
        return;
    AT_CHECK_OK(at_store_cert_list(st, &ids, &n, &err), &err);
    for (size_t i = 0; i < n; i++) {
        at_cert_rec rec;
        int rc = at_store_cert_load(st, ids[i], &rec, &err);
        /* Visible means loadable: chain and key match, meta parses. */
        AT_CHECK_MSG(rc == 0 || err.code == AT_ERR_NOTFOUND, "round %d: %s: %s", round, ids[i], err.msg);
        if (rc == 0) {
            AT_CHECK_MSG(known_chain(pairs, rec.chain_pem), "round %d: %s has an unknown chain", round, ids[i]);
            at_cert_rec_free(&rec);
            crash_loads++;
        }
        at_error_clear(&err);
    }
    at_store_free_list(ids, n);

    for (int i = 0; i < CRASH_IDS; i++) {
        fmt(dir, sizeof(dir), "%s/certs/.sets/%s", path, crash_ids[i]);
        if (count_entries(dir, NULL) > 1) {
            crash_debris++;
            break;
        }
    }

    /* Nothing but records under visible names. */
    fmt(dir, sizeof(dir), "%s/certs", path);
    if ((d = opendir(dir))) {
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            AT_CHECK_MSG(strcmp(e->d_name, crash_ids[0]) == 0 || strcmp(e->d_name, crash_ids[1]) == 0,
                         "round %d: unexpected visible entry certs/%s", round, e->d_name);
        }
        closedir(d);
    }
    fmt(dir, sizeof(dir), "%s/state", path);
    if ((d = opendir(dir))) {
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            AT_CHECK_MSG(strstr(e->d_name, ".corrupt-") == NULL && strstr(e->d_name, ".json") != NULL,
                         "round %d: unexpected state entry %s", round, e->d_name);
        }
        closedir(d);
    }
    for (int i = 0; i < CRASH_IDS; i++) {
        json_t *s = NULL, *cp = NULL;
        char *key = NULL;
        int rc = at_store_state_load(st, crash_ids[i], &s, &err);
        AT_CHECK_MSG(rc == 0 || err.code == AT_ERR_NOTFOUND, "round %d: state: %s", round, err.msg);
        at_error_clear(&err);
        json_decref(s);
        rc = at_store_order_load(st, crash_ids[i], &cp, &key, &err);
        AT_CHECK_MSG(rc == 0 || err.code == AT_ERR_NOTFOUND, "round %d: order: %s", round, err.msg);
        at_error_clear(&err);
        json_decref(cp);
        free(key);
    }
    at_store_close(st);
}

static void t_crash_never_half_written(void)
{
    pair pairs[CRASH_PAIRS];
    char path[512], sets[1024];
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    at_error err = AT_ERROR_INIT;

    for (int i = 0; i < CRASH_PAIRS; i++)
        pair_make(&pairs[i], "crash.example");
    fmt(path, sizeof(path), "%s/crash", at_test_tmpdir());
    fprintf(stderr, "  crash test seed %u\n", seed);
    srand(seed);
    for (int round = 0; round < CRASH_ROUNDS; round++) {
        pid_t child = fork();
        if (child == 0)
            crash_writer(path, pairs);
        /* Let it write for a random while (0.2..40 ms), then pull the plug. */
        struct timespec ts = { 0, (long)(200 + rand() % 39800) * 1000L };
        nanosleep(&ts, NULL);
        kill(child, SIGKILL);
        int ws = 0;
        waitpid(child, &ws, 0);
        AT_CHECK_MSG(WIFSIGNALED(ws), "round %d: writer exited on its own (status %d)", round,
                     WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
        crash_check(path, pairs, round);
    }

    fprintf(stderr, "  %d certificates loaded and verified after %d kills; %d kills hit a write "
            "half-way\n", crash_loads, CRASH_ROUNDS, crash_debris);
    AT_CHECK(crash_loads >= CRASH_ROUNDS / 6);   /* the writer did get to write */

    /* The next writer clears every leftover of the killed ones. */
    {
        at_store *st = at_store_open_dir(path, &err);
        AT_CHECK(st != NULL);
        if (st) {
            for (int i = 0; i < CRASH_IDS; i++) {
                AT_CHECK_OK(save_cert(st, crash_ids[i], &pairs[0], 999, &err), &err);
                fmt(sets, sizeof(sets), "%s/certs/.sets/%s", path, crash_ids[i]);
                AT_CHECK_INT(count_entries(sets, NULL), 1);
            }
            at_store_close(st);
        }
    }
    for (int i = 0; i < CRASH_PAIRS; i++)
        pair_free(&pairs[i]);
}

static const at_test_case cases[] = {
    AT_CASE(t_store_id),
    AT_CASE(t_layout_and_modes),
    AT_CASE(t_open_nested_and_refuse_file),
    AT_CASE(t_cert_roundtrip_and_archive),
    AT_CASE(t_cert_save_refuses_mismatch),
    AT_CASE(t_corrupt_truncated_chain),
    AT_CASE(t_corrupt_truncated_key),
    AT_CASE(t_corrupt_key_mismatch),
    AT_CASE(t_corrupt_meta),
    AT_CASE(t_corrupt_missing_file),
    AT_CASE(t_corrupt_empty_chain),
    AT_CASE(t_cert_load_public),
    AT_CASE(t_hand_made_directory),
    AT_CASE(t_debris_cleanup),
    AT_CASE(t_accounts),
    AT_CASE(t_orders),
    AT_CASE(t_state),
    AT_CASE(t_lock_dies_with_process),
    AT_CASE(t_chown),
    AT_CASE(t_crash_never_half_written),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    return at_test_main(argc, argv, cases);
}
