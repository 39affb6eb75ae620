/*
 * fuzz_store: loading the store's records from damaged or hostile files
 * (core/at_store.c: certificate sets, accounts, in-flight orders, renewal
 * state) and saving records made of the same bytes.
 *
 * The record logic runs over two backends: a memory backend here (fast:
 * the files are exactly the input), and, when asked, the real directory
 * backend (core/at_store_dir.c) on a private temporary directory, with the
 * files written by hand as an administrator might.
 *
 * Input:
 *   byte 0   bits 0-1 record kind: certificate (chain.pem, key.pem,
 *            meta.json), account (account.json, account.key.pem), order
 *            (order.json, key.pem), renewal state (the state file);
 *            bit 2 the directory backend
 *   records  (at_fuzz.h) the files in that order; missing records are
 *            missing files
 *
 * Checks: no crash, leak or undefined behaviour; a load either gives a
 * record that is whole (a key that matches its chain, JSON objects, the
 * right CA) or an error (damaged sets are reported as such and moved
 * aside, never left in place) with a printable message; whatever a save
 * accepts loads back unchanged ("saving refuses what would not load").
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "at_fuzz.h"
#include "at_json.h"
#include "at_key.h"
#include "at_store.h"
#include "at_store_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CERT_ID "example.com_ec256"
#define CA_URL  "https://ca.test/dir"
#define NFILES  3

/* ------------------------------------------------------------ memory backend */

typedef struct mem_store {
    at_store base;
    int      present;              /* the set exists */
    at_buf   files[NFILES];        /* by position in the kind's file list; data NULL = absent */
    char     names[NFILES][32];
    int      blob_present;
    at_buf   blob;
    unsigned quarantined;
} mem_store;

static void mem_clear(mem_store *m)
{
    for (int i = 0; i < NFILES; i++) {
        at_buf_free(&m->files[i]);
        m->names[i][0] = '\0';
    }
    at_buf_free(&m->blob);
    m->present = m->blob_present = 0;
}

static void mem_close(at_store *st)
{
    (void)st;
}

static int mem_chown(at_store *st, uid_t uid, gid_t gid, at_error *err)
{
    (void)st; (void)uid; (void)gid; (void)err;
    return 0;
}

static int slot_of(mem_store *m, const char *name, int create)
{
    for (int i = 0; i < NFILES; i++)
        if (strcmp(m->names[i], name) == 0)
            return i;
    for (int i = 0; create && i < NFILES; i++)
        if (!m->names[i][0]) {
            snprintf(m->names[i], sizeof(m->names[i]), "%s", name);
            return i;
        }
    return -1;
}

static int mem_set_read(at_store *st, at_set_kind kind, const char *id, const at_store_file *files,
                        size_t n, at_buf *out, char version[AT_STORE_VERSION_MAX],
                        char where[AT_STORE_WHERE_MAX], at_error *err)
{
    mem_store *m = (mem_store *)st;
    snprintf(where, AT_STORE_WHERE_MAX, "mem/%d/%s", (int)kind, id);
    snprintf(version, AT_STORE_VERSION_MAX, "v1");
    if (!m->present)
        return at_error_set(err, AT_ERR_NOTFOUND, "%s does not exist", where);
    for (size_t i = 0; i < n; i++) {
        int s = slot_of(m, files[i].name, 0);
        at_buf_free_secret(&out[i]);
        if (s >= 0 && m->files[s].data)       /* an empty file still has data */
            at_buf_append(&out[i], m->files[s].data, m->files[s].len);
    }
    return 0;
}

static int mem_set_write(at_store *st, at_set_kind kind, const char *id, const at_store_file *files,
                         size_t n, at_error *err)
{
    mem_store *m = (mem_store *)st;
    (void)kind; (void)id; (void)err;
    mem_clear(m);
    for (size_t i = 0; i < n; i++) {
        int s;
        if (!files[i].data)
            continue;
        s = slot_of(m, files[i].name, 1);
        at_buf_append(&m->files[s], files[i].data, files[i].len);
    }
    m->present = 1;
    return 0;
}

static int mem_set_remove(at_store *st, at_set_kind kind, const char *id, at_error *err)
{
    mem_store *m = (mem_store *)st;
    (void)kind;
    if (!m->present)
        return at_error_set(err, AT_ERR_NOTFOUND, "%s does not exist", id);
    mem_clear(m);
    return 0;
}

static int mem_set_quarantine(at_store *st, at_set_kind kind, const char *id, const char *version,
                              char moved[AT_STORE_WHERE_MAX], at_error *err)
{
    mem_store *m = (mem_store *)st;
    (void)kind; (void)version; (void)err;
    if (!m->present)
        return 1;
    snprintf(moved, AT_STORE_WHERE_MAX, "mem/%s.corrupt", id);
    m->present = 0;
    m->quarantined++;
    return 0;
}

static int mem_set_list(at_store *st, at_set_kind kind, char ***ids, size_t *n, at_error *err)
{
    (void)st; (void)kind; (void)err;
    *ids = NULL;
    *n = 0;
    return 0;
}

static int mem_blob_read(at_store *st, const char *id, at_buf *out, char where[AT_STORE_WHERE_MAX],
                         at_error *err)
{
    mem_store *m = (mem_store *)st;
    snprintf(where, AT_STORE_WHERE_MAX, "mem/state/%s.json", id);
    if (!m->blob_present)
        return at_error_set(err, AT_ERR_NOTFOUND, "%s does not exist", where);
    at_buf_append(out, m->blob.data ? m->blob.data : "", m->blob.len);
    return 0;
}

static int mem_blob_write(at_store *st, const char *id, const char *data, size_t len, at_error *err)
{
    mem_store *m = (mem_store *)st;
    (void)id; (void)err;
    at_buf_free(&m->blob);
    at_buf_append(&m->blob, data, len);
    m->blob_present = 1;
    return 0;
}

static int mem_blob_quarantine(at_store *st, const char *id, char moved[AT_STORE_WHERE_MAX], at_error *err)
{
    mem_store *m = (mem_store *)st;
    (void)err;
    snprintf(moved, AT_STORE_WHERE_MAX, "mem/state/%s.corrupt", id);
    m->blob_present = 0;
    m->quarantined++;
    return 0;
}

static int mem_trylock(at_store *st, const char *name, at_store_lock **lk, at_error *err)
{
    (void)st; (void)name; (void)lk;
    return at_error_set(err, AT_ERR_INTERNAL, "no locks here");
}

static const at_store_ops mem_ops = {
    .close = mem_close,
    .chown = mem_chown,
    .set_read = mem_set_read,
    .set_write = mem_set_write,
    .set_remove = mem_set_remove,
    .set_quarantine = mem_set_quarantine,
    .set_list = mem_set_list,
    .blob_read = mem_blob_read,
    .blob_write = mem_blob_write,
    .blob_quarantine = mem_blob_quarantine,
    .trylock = mem_trylock,
};

/* ------------------------------------------------------------ directory backend */

static char root[256];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

/* The store's tree, emptied after every input (the root stays). */
static void dir_wipe(void)
{
    static const char *const subs[] = { "certs", "accounts", "staging", "state", "archive", "locks" };
    char p[512];
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", root, subs[i]);
        nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
}

static void cleanup_root(void)
{
    dir_wipe();
    rmdir(root);
}

static const char *dir_root(void)
{
    if (!root[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        snprintf(root, sizeof(root), "%s/autotls-fuzz-store-XXXXXX", base);
        if (!mkdtemp(root))
            at_fuzz_fail("cannot create a temporary store directory: %s", strerror(errno));
        atexit(cleanup_root);
    }
    return root;
}

/* Files put in place by hand: certs/<id>/ as a plain directory. */
static void dir_put(const char *sub, const char *id, const char *const *names, at_buf *bufs, size_t n)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s/%s", root, sub, id);
    if (mkdir(p, 0700) != 0)
        at_fuzz_fail("mkdir %s: %s", p, strerror(errno));
    for (size_t i = 0; i < n; i++) {
        int fd;
        if (!bufs[i].data)
            continue;
        snprintf(p, sizeof(p), "%s/%s/%s/%s", root, sub, id, names[i]);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || write(fd, bufs[i].data, bufs[i].len) != (ssize_t)bufs[i].len)
            at_fuzz_fail("writing %s: %s", p, strerror(errno));
        close(fd);
    }
}

/* ------------------------------------------------------------ checks */

static void check_load_err(const at_error *err, const char *what)
{
    if (err->code != AT_ERR_CORRUPT && err->code != AT_ERR_NOTFOUND)
        at_fuzz_fail("%s: load failed with code %d: %s", what, (int)err->code, err->msg);
    at_fuzz_check_msg(err, what);
}

static void check_cert(const at_cert_rec *rec)
{
    if (!rec->id || !rec->chain_pem || !rec->key_pem || !json_is_object(rec->meta))
        at_fuzz_fail("a loaded certificate record is not whole");
    {
        at_error err = AT_ERROR_INIT;
        EVP_PKEY *k = at_key_from_pem(rec->key_pem, strlen(rec->key_pem), &err);
        if (!k || at_key_matches_cert_pem(k, rec->chain_pem, strlen(rec->chain_pem)) != 1)
            at_fuzz_fail("a loaded certificate's key does not match its chain");
        EVP_PKEY_free(k);
    }
}

static int str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* bufs: the input's files (data NULL = missing). Loads what is there, then
 * saves a record made of the same bytes and loads that back. */
static void run_cert(at_store *st, at_buf *bufs, int dir)
{
    static const char *const names[] = { "chain.pem", "key.pem", "meta.json" };
    at_error err = AT_ERROR_INIT;
    at_cert_rec rec, back;

    if (dir)
        dir_put("certs", CERT_ID, names, bufs, 3);
    if (at_store_cert_load(st, CERT_ID, &rec, &err) == 0) {
        check_cert(&rec);
        at_cert_rec_free(&rec);
    } else {
        check_load_err(&err, "certificate");
        at_error_clear(&err);
        /* Damage is moved aside, never left to be read again. */
        if (at_store_cert_load(st, CERT_ID, &rec, &err) == 0 || err.code != AT_ERR_NOTFOUND)
            at_fuzz_fail("a damaged certificate set is still there: %s", err.msg);
        at_error_clear(&err);
    }

    memset(&rec, 0, sizeof(rec));
    rec.id = (char *)CERT_ID;
    rec.chain_pem = (char *)at_buf_str(&bufs[0]);
    rec.key_pem = (char *)at_buf_str(&bufs[1]);
    rec.meta = bufs[2].data ? at_json_parse(bufs[2].data, bufs[2].len, "meta", NULL) : NULL;
    if (at_store_cert_save(st, &rec, &err) == 0) {
        if (at_store_cert_load(st, CERT_ID, &back, &err) != 0)
            at_fuzz_fail("a saved certificate does not load: %s", err.msg);
        check_cert(&back);
        if (strcmp(back.chain_pem, rec.chain_pem) != 0 || strcmp(back.key_pem, rec.key_pem) != 0 ||
            !json_equal(back.meta, rec.meta))
            at_fuzz_fail("a saved certificate loads back changed");
        at_cert_rec_free(&back);
    } else {
        at_fuzz_check_msg(&err, "certificate save");
    }
    json_decref(rec.meta);
    at_error_clear(&err);
}

static void run_account(at_store *st, at_buf *bufs, int dir)
{
    static const char *const names[] = { "account.json", "account.key.pem" };
    at_error err = AT_ERROR_INIT;
    at_account_rec rec, back;
    char id[256];
    json_t *j;

    if (dir) {
        at_store_id(CA_URL, id, sizeof(id));
        dir_put("accounts", id, names, bufs, 2);
    }
    if (at_store_account_load(st, CA_URL, &rec, &err) == 0) {
        if (!str_eq(rec.ca_url, CA_URL) || !rec.key_pem || (rec.account && !json_is_object(rec.account)))
            at_fuzz_fail("a loaded account is not whole or not for this CA");
        at_account_rec_free(&rec);
    } else {
        check_load_err(&err, "account");
        at_error_clear(&err);
    }

    j = bufs[0].data ? at_json_parse(bufs[0].data, bufs[0].len, "account", NULL) : NULL;
    memset(&rec, 0, sizeof(rec));
    rec.ca_url = (char *)CA_URL;
    rec.url = (char *)at_json_str(j, "url");
    rec.account = json_is_object(json_object_get(j, "account")) ? json_object_get(j, "account") : NULL;
    rec.key_pem = (char *)at_buf_str(&bufs[1]);
    if (at_store_account_save(st, &rec, &err) == 0) {
        if (at_store_account_load(st, CA_URL, &back, &err) != 0)
            at_fuzz_fail("a saved account does not load: %s", err.msg);
        if (!str_eq(back.ca_url, rec.ca_url) || !str_eq(back.url, rec.url) ||
            !str_eq(back.key_pem, rec.key_pem) || !back.account != !rec.account ||
            (rec.account && !json_equal(back.account, rec.account)))
            at_fuzz_fail("a saved account loads back changed");
        at_account_rec_free(&back);
    } else {
        at_fuzz_check_msg(&err, "account save");
    }
    json_decref(j);
    at_error_clear(&err);
}

static void run_order(at_store *st, at_buf *bufs, int dir)
{
    static const char *const names[] = { "order.json", "key.pem" };
    at_error err = AT_ERROR_INIT;
    json_t *cp = NULL, *in;
    char *key = NULL;

    if (dir)
        dir_put("staging", CERT_ID, names, bufs, 2);
    if (at_store_order_load(st, CERT_ID, &cp, &key, &err) == 0) {
        if (!json_is_object(cp) || !key)
            at_fuzz_fail("a loaded order is not whole");
        json_decref(cp);
        free(key);
    } else {
        check_load_err(&err, "order");
        at_error_clear(&err);
    }
    in = bufs[0].data ? at_json_parse(bufs[0].data, bufs[0].len, "order", NULL) : NULL;
    if (at_store_order_save(st, CERT_ID, in, at_buf_str(&bufs[1]), &err) == 0) {
        if (at_store_order_load(st, CERT_ID, &cp, &key, &err) != 0)
            at_fuzz_fail("a saved order does not load: %s", err.msg);
        if (!json_equal(cp, in) || strcmp(key, at_buf_str(&bufs[1])) != 0)
            at_fuzz_fail("a saved order loads back changed");
        json_decref(cp);
        free(key);
        if (at_store_order_remove(st, CERT_ID, &err) != 0 || at_store_order_remove(st, CERT_ID, &err) != 0)
            at_fuzz_fail("removing an order (twice) failed: %s", err.msg);
    } else {
        at_fuzz_check_msg(&err, "order save");
    }
    json_decref(in);
    at_error_clear(&err);
}

static void run_state(at_store *st, at_buf *bufs, int dir)
{
    at_error err = AT_ERROR_INIT;
    json_t *s = NULL, *in;

    if (dir && bufs[0].data) {
        char p[512];
        int fd;
        snprintf(p, sizeof(p), "%s/state/%s.json", root, CERT_ID);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || write(fd, bufs[0].data, bufs[0].len) != (ssize_t)bufs[0].len)
            at_fuzz_fail("writing %s: %s", p, strerror(errno));
        close(fd);
    } else if (!dir && bufs[0].data) {
        mem_blob_write(st, CERT_ID, bufs[0].data, bufs[0].len, NULL);
    }
    if (at_store_state_load(st, CERT_ID, &s, &err) == 0) {
        if (!json_is_object(s))
            at_fuzz_fail("loaded renewal state is not an object");
        json_decref(s);
    } else {
        check_load_err(&err, "state");
        at_error_clear(&err);
    }
    in = bufs[0].data ? at_json_parse(bufs[0].data, bufs[0].len, "state", NULL) : NULL;
    if (at_store_state_save(st, CERT_ID, in, &err) == 0) {
        if (at_store_state_load(st, CERT_ID, &s, &err) != 0 || !json_equal(s, in))
            at_fuzz_fail("saved renewal state does not load back unchanged: %s", err.msg);
        json_decref(s);
    }
    json_decref(in);
    at_error_clear(&err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    at_fuzz_in in = { data, size };
    unsigned f0 = at_fuzz_byte(&in), kind = f0 & 3;
    int dir = (f0 >> 2) & 1;
    at_buf bufs[NFILES] = { AT_BUF_INIT, AT_BUF_INIT, AT_BUF_INIT };
    mem_store mem;
    at_store *st;
    at_error err = AT_ERROR_INIT;

    for (int i = 0; i < NFILES; i++) {
        const uint8_t *rec;
        size_t len;
        if (at_fuzz_record(&in, &rec, &len) != 0)
            break;
        at_buf_append(&bufs[i], rec, len);    /* an empty record is an empty file */
    }
    memset(&mem, 0, sizeof(mem));
    if (dir) {
        st = at_store_open_dir(dir_root(), &err);
        if (!st)
            at_fuzz_fail("opening the store: %s", err.msg);
    } else {
        mem.base.ops = &mem_ops;
        mem.base.describe = (char *)"memory store";
        st = &mem.base;
        /* The set as the input gives it. */
        if (kind != 3 && bufs[0].data) {
            static const char *const files[3][3] = {
                { "chain.pem", "key.pem", "meta.json" },
                { "account.json", "account.key.pem", "" },
                { "order.json", "key.pem", "" },
            };
            mem.present = 1;
            for (int i = 0; i < NFILES && files[kind][i][0]; i++) {
                snprintf(mem.names[i], sizeof(mem.names[i]), "%s", files[kind][i]);
                if (bufs[i].data)
                    at_buf_append(&mem.files[i], bufs[i].data, bufs[i].len);
            }
        }
    }
    switch (kind) {
    case 0: run_cert(st, bufs, dir); break;
    case 1: run_account(st, bufs, dir); break;
    case 2: run_order(st, bufs, dir); break;
    default: run_state(st, bufs, dir); break;
    }
    if (dir) {
        at_store_close(st);
        dir_wipe();
    } else {
        mem_clear(&mem);
    }
    for (int i = 0; i < NFILES; i++)
        at_buf_free(&bufs[i]);
    return 0;
}
