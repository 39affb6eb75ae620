/*
 * at_store.c: the store's records over a backend (at_store_int.h). What
 * files make up a record, what makes one damaged, and what the messages say
 * live here, so that every backend behaves the same.
 *
 * A record that does not load cleanly is never deleted and never silently
 * ignored: it is moved aside and reported once with AT_ERR_CORRUPT naming
 * the file; the caller then treats it as absent (and obtains a new one).
 */
#include "at_store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "at_json.h"
#include "at_key.h"
#include "at_x509.h"

#define AT_STORE_ID_MAX 200
/* A reader racing a writer may see a version vanish; a few tries settle it. */
#define AT_STORE_READ_TRIES 4

/* --------------------------------------------------------------- generic */

at_store *at_store_open_dir(const char *path, at_error *err)
{
    if (!path || !*path) {
        at_error_set(err, AT_ERR_CONFIG, "no store directory given");
        return NULL;
    }
    return at_store_dir_new(path, err);
}

void at_store_close(at_store *st)
{
    if (st)
        st->ops->close(st);
}

const char *at_store_describe(const at_store *st)
{
    return st && st->describe ? st->describe : "store";
}

const char *at_store_path(const at_store *st)
{
    return st ? st->path : NULL;
}

int at_store_chown(at_store *st, uid_t uid, gid_t gid, at_error *err)
{
    return st->ops->chown(st, uid, gid, err);
}

void at_store_free_list(char **ids, size_t n)
{
    if (!ids)
        return;
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

/* -------------------------------------------------------------------- ids */

static int id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

void at_store_id(const char *text, char *out, size_t outsz)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    char hash[12];
    size_t limit, o = 0;
    int changed = 0;

    if (!out || outsz == 0)
        return;
    if (!text)
        text = "";
    limit = outsz - 1 < AT_STORE_ID_MAX ? outsz - 1 : AT_STORE_ID_MAX;
    for (const unsigned char *p = (const unsigned char *)text; *p && o < limit; p++) {
        unsigned char c = *p;
        if (c >= 'A' && c <= 'Z') {
            /* Case folding loses information: "A" and "a" must not collide. */
            c = (unsigned char)(c - 'A' + 'a');
            changed = 1;
        }
        if (c == '*') {
            const char *w = "_wildcard_";
            for (; *w && o < limit; w++)
                out[o++] = *w;
            changed = 1;
            continue;
        }
        if (!id_char(c) || (o == 0 && c == '.')) {
            /* A leading dot is reserved for the store's own files. */
            c = '_';
            changed = 1;
        }
        out[o++] = (char)c;
        if (o == limit && p[1])
            changed = 1;       /* truncated */
    }
    out[o] = '\0';
    if (o == 0)
        changed = 1;
    if (!changed)
        return;
    /* Keep distinct inputs distinct: a short hash of the original text. */
    EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL);
    snprintf(hash, sizeof(hash), "-%02x%02x%02x%02x%02x", md[0], md[1], md[2], md[3], md[4]);
    if (limit < sizeof(hash) - 1) {
        out[o] = '\0';
        return;
    }
    if (o > limit - (sizeof(hash) - 1))
        o = limit - (sizeof(hash) - 1);
    memcpy(out + o, hash, sizeof(hash));
}

/* A caller-supplied id is used as a file name: refuse anything at_store_id
 * would have changed, rather than silently writing somewhere else. */
static int check_id(const char *id, const char *what, at_error *err)
{
    size_t n = id ? strlen(id) : 0;

    if (n == 0 || n > AT_STORE_ID_MAX || id[0] == '.')
        return at_error_set(err, AT_ERR_INTERNAL, "invalid %s id '%s'", what, id ? id : "(null)");
    for (size_t i = 0; i < n; i++)
        if (!id_char((unsigned char)id[i]))
            return at_error_set(err, AT_ERR_INTERNAL, "invalid %s id '%s'", what, id);
    return 0;
}

/* -------------------------------------------------------------- quarantine */

typedef enum { LOAD_OK = 0, LOAD_FAIL = -1, LOAD_DAMAGED = 1 } load_result;

/* Read a set; on damage (reported by validate through *why / *which) move
 * exactly that version aside and retry if it changed under us. */
typedef load_result at_set_validate(void *ud, at_buf *bufs, const char **which, at_error *why);

static int set_load(at_store *st, at_set_kind kind, const char *id, const char *what,
                    const at_store_file *files, size_t n, at_buf *bufs,
                    at_set_validate *validate, void *ud, at_error *err)
{
    char version[AT_STORE_VERSION_MAX], where[AT_STORE_WHERE_MAX], moved[AT_STORE_WHERE_MAX];

    for (int attempt = 0; attempt < AT_STORE_READ_TRIES; attempt++) {
        at_error why = AT_ERROR_INIT;
        const char *which = NULL;
        load_result r;
        int q;

        for (size_t i = 0; i < n; i++)
            at_buf_free_secret(&bufs[i]);
        if (st->ops->set_read(st, kind, id, files, n, bufs, version, where, err) != 0)
            return -1;
        r = validate(ud, bufs, &which, &why);
        if (r == LOAD_OK)
            return 0;
        if (r == LOAD_FAIL) {
            at_error_move(err, &why);
            return -1;
        }
        q = st->ops->set_quarantine(st, kind, id, version, moved, err);
        if (q == 1) {
            at_error_clear(&why);
            continue;                 /* replaced meanwhile: read the new one */
        }
        if (q != 0) {
            /* Still damage (callers replace it, and replacing archives it). */
            char reason[AT_ERROR_MSG_MAX];
            snprintf(reason, sizeof(reason), "%s", err ? err->msg : "");
            at_error_set(err, AT_ERR_CORRUPT, "%s: %s/%s is damaged: %s; it could not be moved aside "
                         "(%s)", what, where, which ? which : "", why.msg, reason);
            at_error_clear(&why);
            return -1;
        }
        at_error_set(err, AT_ERR_CORRUPT, "%s: %s/%s is damaged: %s; the set was moved aside to %s "
                     "(kept for inspection, never deleted) and will be replaced", what, where,
                     which ? which : "", why.msg, moved);
        at_error_clear(&why);
        return -1;
    }
    return at_error_set(err, AT_ERR_BUSY, "%s keeps changing while being read in %s; try again",
                        what, at_store_describe(st));
}

static void bufs_free(at_buf *bufs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        at_buf_free_secret(&bufs[i]);
}

/* Common checks on one file of a set: present, sane size. */
static load_result need_file(at_buf *b, const char *name, const char **which, at_error *why)
{
    *which = name;
    if (!b->data) {
        at_error_set(why, AT_ERR_CORRUPT, "the file is missing");
        return LOAD_DAMAGED;
    }
    if (b->len > AT_STORE_MAX_FILE) {
        at_error_set(why, AT_ERR_CORRUPT, "the file is larger than %d bytes", AT_STORE_MAX_FILE);
        return LOAD_DAMAGED;
    }
    if (b->len == 0) {
        at_error_set(why, AT_ERR_CORRUPT, "the file is empty");
        return LOAD_DAMAGED;
    }
    /* Every stored file is text (PEM, JSON), validated as len bytes but
     * used as a C string: a NUL would make the two differ. */
    if (memchr(b->data, '\0', b->len)) {
        at_error_set(why, AT_ERR_CORRUPT, "the file holds a NUL byte, which no PEM or JSON file has");
        return LOAD_DAMAGED;
    }
    return LOAD_OK;
}

static load_result need_key(at_buf *b, const char *name, EVP_PKEY **pkey, const char **which, at_error *why)
{
    EVP_PKEY *k;
    if (need_file(b, name, which, why) != LOAD_OK)
        return LOAD_DAMAGED;
    k = at_key_from_pem(b->data, b->len, why);
    if (!k)
        return LOAD_DAMAGED;
    if (pkey)
        *pkey = k;
    else
        EVP_PKEY_free(k);
    return LOAD_OK;
}

static load_result need_json(at_buf *b, const char *name, json_t **out, const char **which, at_error *why)
{
    if (need_file(b, name, which, why) != LOAD_OK)
        return LOAD_DAMAGED;
    *out = at_json_parse_object(b->data, b->len, name, why);
    return *out ? LOAD_OK : LOAD_DAMAGED;
}

/* --------------------------------------------------------------- accounts */

void at_account_rec_free(at_account_rec *rec)
{
    if (!rec)
        return;
    free(rec->ca_url);
    free(rec->url);
    json_decref(rec->account);
    if (rec->key_pem) {
        OPENSSL_cleanse(rec->key_pem, strlen(rec->key_pem));
        free(rec->key_pem);
    }
    memset(rec, 0, sizeof(*rec));
}

static const at_store_file account_files[] = {
    { "account.json", NULL, 0, 1 },
    { "account.key.pem", NULL, 0, 1 },
};

typedef struct account_ctx {
    const char     *ca_url;
    at_account_rec *rec;
} account_ctx;

static load_result account_validate(void *ud, at_buf *bufs, const char **which, at_error *why)
{
    account_ctx *c = ud;
    json_t *j = NULL, *acct;
    const char *ca, *url;

    if (need_json(&bufs[0], "account.json", &j, which, why) != LOAD_OK)
        return LOAD_DAMAGED;
    ca = at_json_str(j, "ca_url");
    url = at_json_str(j, "url");
    acct = json_object_get(j, "account");
    if (!ca || strcmp(ca, c->ca_url) != 0) {
        at_error_set(why, AT_ERR_CORRUPT, "it belongs to the CA '%s', not %s", ca ? ca : "(none)", c->ca_url);
        json_decref(j);
        return LOAD_DAMAGED;
    }
    if (need_key(&bufs[1], "account.key.pem", NULL, which, why) != LOAD_OK) {
        json_decref(j);
        return LOAD_DAMAGED;
    }
    c->rec->ca_url = strdup(ca);
    c->rec->url = url ? strdup(url) : NULL;
    c->rec->account = json_is_object(acct) ? json_incref(acct) : NULL;
    c->rec->key_pem = at_buf_detach(&bufs[1]);
    json_decref(j);
    if (!c->rec->ca_url || (url && !c->rec->url) || !c->rec->key_pem) {
        at_account_rec_free(c->rec);
        at_error_set(why, AT_ERR_INTERNAL, "out of memory");
        return LOAD_FAIL;
    }
    return LOAD_OK;
}

int at_store_account_load(at_store *st, const char *ca_url, at_account_rec *rec, at_error *err)
{
    char id[AT_STORE_ID_MAX + 1], what[512];
    at_buf bufs[2] = { AT_BUF_INIT, AT_BUF_INIT };
    account_ctx c = { ca_url, rec };
    int rc;

    memset(rec, 0, sizeof(*rec));
    if (!ca_url || !*ca_url)
        return at_error_set(err, AT_ERR_INTERNAL, "account lookup without a CA URL");
    at_store_id(ca_url, id, sizeof(id));
    snprintf(what, sizeof(what), "the account for %s", ca_url);
    rc = set_load(st, AT_SET_ACCOUNT, id, what, account_files, 2, bufs, account_validate, &c, err);
    bufs_free(bufs, 2);
    if (rc != 0 && err && err->code == AT_ERR_NOTFOUND)
        at_error_set(err, AT_ERR_NOTFOUND, "no account for %s in %s", ca_url, at_store_describe(st));
    return rc;
}

int at_store_account_save(at_store *st, const at_account_rec *rec, at_error *err)
{
    char id[AT_STORE_ID_MAX + 1];
    at_store_file files[2];
    json_t *j;
    char *text;
    EVP_PKEY *k;
    int rc;

    if (!rec || !rec->ca_url || !*rec->ca_url || !rec->key_pem)
        return at_error_set(err, AT_ERR_INTERNAL, "account record without CA URL or key");
    /* Never store what would not load again. */
    if (!(k = at_key_from_pem(rec->key_pem, strlen(rec->key_pem), err)))
        return at_error_prefix(err, "refusing to store the account key for %s", rec->ca_url);
    EVP_PKEY_free(k);
    j = json_pack("{s:s, s:s?, s:O?}", "ca_url", rec->ca_url, "url", rec->url, "account", rec->account);
    text = j ? at_json_pretty(j) : NULL;
    json_decref(j);
    if (!text)
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    at_store_id(rec->ca_url, id, sizeof(id));
    files[0] = (at_store_file){ "account.json", text, strlen(text), 1 };
    files[1] = (at_store_file){ "account.key.pem", rec->key_pem, strlen(rec->key_pem), 1 };
    rc = st->ops->set_write(st, AT_SET_ACCOUNT, id, files, 2, err);
    free(text);
    if (rc != 0)
        at_error_prefix(err, "storing the account for %s", rec->ca_url);
    return rc;
}

/* ----------------------------------------------------------- certificates */

void at_cert_rec_free(at_cert_rec *rec)
{
    if (!rec)
        return;
    free(rec->id);
    free(rec->chain_pem);
    if (rec->key_pem) {
        OPENSSL_cleanse(rec->key_pem, strlen(rec->key_pem));
        free(rec->key_pem);
    }
    json_decref(rec->meta);
    memset(rec, 0, sizeof(*rec));
}

static const at_store_file cert_files[] = {
    { "chain.pem", NULL, 0, 0 },
    { "key.pem", NULL, 0, 1 },
    { "meta.json", NULL, 0, 0 },
};

/* The chain parses. */
static load_result chain_check(const char *chain, size_t clen, const char **which, at_error *why)
{
    STACK_OF(X509) *sk = NULL;

    *which = "chain.pem";
    if (at_chain_parse(chain, clen, &sk, why) != 0)
        return LOAD_DAMAGED;
    sk_X509_pop_free(sk, X509_free);
    return LOAD_OK;
}

/* The key parses and belongs to the leaf (the chain's first certificate). */
static load_result key_check(const char *chain, size_t clen, const char *key, size_t klen,
                             const char **which, at_error *why)
{
    EVP_PKEY *k;
    int match;

    *which = "key.pem";
    if (!(k = at_key_from_pem(key, klen, why)))
        return LOAD_DAMAGED;
    match = at_key_matches_cert_pem(k, chain, clen);
    EVP_PKEY_free(k);
    if (!match) {
        at_error_set(why, AT_ERR_CORRUPT, "the private key does not match the certificate in chain.pem");
        return LOAD_DAMAGED;
    }
    return LOAD_OK;
}

static load_result cert_validate(void *ud, at_buf *bufs, const char **which, at_error *why)
{
    at_cert_rec *rec = ud;
    json_t *meta = NULL;

    if (need_file(&bufs[0], "chain.pem", which, why) != LOAD_OK ||
        chain_check(bufs[0].data, bufs[0].len, which, why) != LOAD_OK ||
        need_file(&bufs[1], "key.pem", which, why) != LOAD_OK ||
        key_check(bufs[0].data, bufs[0].len, bufs[1].data, bufs[1].len, which, why) != LOAD_OK ||
        need_json(&bufs[2], "meta.json", &meta, which, why) != LOAD_OK)
        return LOAD_DAMAGED;
    rec->chain_pem = at_buf_detach(&bufs[0]);
    rec->key_pem = at_buf_detach(&bufs[1]);
    rec->meta = meta;
    if (!rec->chain_pem || !rec->key_pem) {
        at_error_set(why, AT_ERR_INTERNAL, "out of memory");
        return LOAD_FAIL;
    }
    return LOAD_OK;
}

/* A certificate set read through `validate`, which fills rec from the n files. */
static int cert_load(at_store *st, const char *id, const at_store_file *files, size_t n,
                     at_set_validate *validate, at_cert_rec *rec, at_error *err)
{
    at_buf bufs[3] = { AT_BUF_INIT, AT_BUF_INIT, AT_BUF_INIT };
    char what[256];
    int rc;

    memset(rec, 0, sizeof(*rec));
    if (check_id(id, "certificate", err) != 0)
        return -1;
    snprintf(what, sizeof(what), "certificate %s", id);
    rc = set_load(st, AT_SET_CERT, id, what, files, n, bufs, validate, rec, err);
    bufs_free(bufs, n);
    if (rc == 0 && !(rec->id = strdup(id)))
        rc = at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    if (rc != 0)
        at_cert_rec_free(rec);
    if (rc != 0 && err && err->code == AT_ERR_NOTFOUND)
        at_error_set(err, AT_ERR_NOTFOUND, "no certificate %s in %s", id, at_store_describe(st));
    return rc;
}

int at_store_cert_load(at_store *st, const char *id, at_cert_rec *rec, at_error *err)
{
    return cert_load(st, id, cert_files, 3, cert_validate, rec, err);
}

/* chain.pem and meta.json only: chain.pem must hold a whole PEM certificate
 * block, but nothing is decoded and the key is neither read nor checked
 * against it (the status page's view of a thousand certificates, which then
 * decodes each leaf once; the engine and the servers load with
 * at_store_cert_load, which checks everything). */
static const at_store_file cert_public_files[] = {
    { "chain.pem", NULL, 0, 0 },
    { "meta.json", NULL, 0, 0 },
};

static load_result cert_validate_public(void *ud, at_buf *bufs, const char **which, at_error *why)
{
    at_cert_rec *rec = ud;
    json_t *meta = NULL;

    if (need_file(&bufs[0], "chain.pem", which, why) != LOAD_OK)
        return LOAD_DAMAGED;
    if (at_pem_has_cert(bufs[0].data, bufs[0].len, why) != 0)
        return LOAD_DAMAGED;
    if (need_json(&bufs[1], "meta.json", &meta, which, why) != LOAD_OK)
        return LOAD_DAMAGED;
    rec->meta = meta;
    if (!(rec->chain_pem = at_buf_detach(&bufs[0]))) {
        at_error_set(why, AT_ERR_INTERNAL, "out of memory");
        return LOAD_FAIL;
    }
    return LOAD_OK;
}

int at_store_cert_load_public(at_store *st, const char *id, at_cert_rec *rec, at_error *err)
{
    return cert_load(st, id, cert_public_files, 2, cert_validate_public, rec, err);
}

static int cert_save(at_store *st, const at_cert_rec *rec, int check, at_error *err)
{
    at_store_file files[3];
    const char *which = NULL;
    at_error why = AT_ERROR_INIT;
    char *meta;
    int rc;

    if (!rec || check_id(rec->id, "certificate", err) != 0)
        return -1;
    if (!rec->chain_pem || !rec->key_pem || !json_is_object(rec->meta))
        return at_error_set(err, AT_ERR_INTERNAL, "certificate %s: incomplete record", rec->id);
    /* A set that would be "damaged" on the next load is refused now, while
     * the caller still has the order to fetch it again. */
    if (check && (chain_check(rec->chain_pem, strlen(rec->chain_pem), &which, &why) != LOAD_OK ||
                  key_check(rec->chain_pem, strlen(rec->chain_pem), rec->key_pem, strlen(rec->key_pem),
                            &which, &why) != LOAD_OK)) {
        at_error_set(err, AT_ERR_CRYPTO, "refusing to store certificate %s: %s: %s", rec->id, which, why.msg);
        at_error_clear(&why);
        return -1;
    }
    if (!(meta = at_json_pretty(rec->meta)))
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    files[0] = (at_store_file){ "chain.pem", rec->chain_pem, strlen(rec->chain_pem), 0 };
    files[1] = (at_store_file){ "key.pem", rec->key_pem, strlen(rec->key_pem), 1 };
    files[2] = (at_store_file){ "meta.json", meta, strlen(meta), 0 };
    rc = st->ops->set_write(st, AT_SET_CERT, rec->id, files, 3, err);
    free(meta);
    if (rc != 0)
        at_error_prefix(err, "storing certificate %s", rec->id);
    return rc;
}

int at_store_cert_save(at_store *st, const at_cert_rec *rec, at_error *err)
{
    return cert_save(st, rec, 1, err);
}

int at_store_cert_save_checked(at_store *st, const at_cert_rec *rec, at_error *err)
{
    return cert_save(st, rec, 0, err);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int at_store_cert_list(at_store *st, char ***ids, size_t *n, at_error *err)
{
    *ids = NULL;
    *n = 0;
    if (st->ops->set_list(st, AT_SET_CERT, ids, n, err) != 0)
        return -1;
    if (*n > 1)
        qsort(*ids, *n, sizeof(**ids), cmp_str);
    return 0;
}

int at_store_cert_retire(at_store *st, const char *id, at_error *err)
{
    if (check_id(id, "certificate", err) != 0)
        return -1;
    if (st->ops->set_remove(st, AT_SET_CERT, id, err) != 0)
        return at_error_prefix(err, "retiring certificate %s", id);
    return 0;
}

/* ------------------------------------------------------ in-flight orders */

static const at_store_file order_files[] = {
    { "order.json", NULL, 0, 1 },
    { "key.pem", NULL, 0, 1 },
};

typedef struct order_ctx {
    json_t **checkpoint;
    char   **key_pem;
} order_ctx;

static load_result order_validate(void *ud, at_buf *bufs, const char **which, at_error *why)
{
    order_ctx *c = ud;
    json_t *j = NULL;

    if (need_json(&bufs[0], "order.json", &j, which, why) != LOAD_OK)
        return LOAD_DAMAGED;
    /* The certificate key the order's CSR will be signed with: resuming
     * without it is impossible, so a missing or broken one is damage. */
    if (need_key(&bufs[1], "key.pem", NULL, which, why) != LOAD_OK) {
        json_decref(j);
        return LOAD_DAMAGED;
    }
    *c->checkpoint = j;
    if (c->key_pem && !(*c->key_pem = at_buf_detach(&bufs[1]))) {
        json_decref(j);
        *c->checkpoint = NULL;
        at_error_set(why, AT_ERR_INTERNAL, "out of memory");
        return LOAD_FAIL;
    }
    return LOAD_OK;
}

int at_store_order_load(at_store *st, const char *id, json_t **checkpoint, char **key_pem, at_error *err)
{
    at_buf bufs[2] = { AT_BUF_INIT, AT_BUF_INIT };
    order_ctx c = { checkpoint, key_pem };
    char what[256];
    int rc;

    *checkpoint = NULL;
    if (key_pem)
        *key_pem = NULL;
    if (check_id(id, "order", err) != 0)
        return -1;
    snprintf(what, sizeof(what), "the in-flight order for %s", id);
    rc = set_load(st, AT_SET_ORDER, id, what, order_files, 2, bufs, order_validate, &c, err);
    bufs_free(bufs, 2);
    if (rc != 0 && err && err->code == AT_ERR_NOTFOUND)
        at_error_set(err, AT_ERR_NOTFOUND, "no order in flight for %s in %s", id, at_store_describe(st));
    return rc;
}

int at_store_order_save(at_store *st, const char *id, const json_t *checkpoint, const char *key_pem,
                        at_error *err)
{
    at_store_file files[2];
    EVP_PKEY *k;
    char *text;
    int rc;

    if (check_id(id, "order", err) != 0)
        return -1;
    if (!json_is_object(checkpoint) || !key_pem || !*key_pem)
        return at_error_set(err, AT_ERR_INTERNAL, "order checkpoint for %s without an object or a key", id);
    if (!(k = at_key_from_pem(key_pem, strlen(key_pem), err)))
        return at_error_prefix(err, "refusing to store the in-flight order for %s", id);
    EVP_PKEY_free(k);
    if (!(text = at_json_pretty(checkpoint)))
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    files[0] = (at_store_file){ "order.json", text, strlen(text), 1 };
    files[1] = (at_store_file){ "key.pem", key_pem, strlen(key_pem), 1 };
    rc = st->ops->set_write(st, AT_SET_ORDER, id, files, 2, err);
    free(text);
    if (rc != 0)
        at_error_prefix(err, "storing the in-flight order for %s", id);
    return rc;
}

int at_store_order_remove(at_store *st, const char *id, at_error *err)
{
    at_error lerr = AT_ERROR_INIT;

    if (check_id(id, "order", err) != 0)
        return -1;
    if (st->ops->set_remove(st, AT_SET_ORDER, id, &lerr) == 0)
        return 0;
    if (lerr.code == AT_ERR_NOTFOUND) {     /* already gone is what was asked */
        at_error_clear(&lerr);
        return 0;
    }
    at_error_move(err, &lerr);
    return at_error_prefix(err, "removing the in-flight order for %s", id);
}

/* ------------------------------------------------------- renewal state */

int at_store_state_load(at_store *st, const char *id, json_t **state, at_error *err)
{
    at_buf b = AT_BUF_INIT;
    char where[AT_STORE_WHERE_MAX], moved[AT_STORE_WHERE_MAX];
    at_error why = AT_ERROR_INIT;
    const char *which = NULL;

    *state = NULL;
    if (check_id(id, "certificate", err) != 0)
        return -1;
    if (st->ops->blob_read(st, id, &b, where, err) != 0) {
        if (err && err->code == AT_ERR_NOTFOUND)
            at_error_set(err, AT_ERR_NOTFOUND, "no renewal state for %s in %s", id, at_store_describe(st));
        return -1;
    }
    if (need_file(&b, where, &which, &why) == LOAD_OK)
        *state = at_json_parse_object(b.data, b.len, where, &why);
    at_buf_free(&b);
    if (*state) {
        at_error_clear(&why);
        return 0;
    }
    if (st->ops->blob_quarantine(st, id, moved, err) != 0) {
        char reason[AT_ERROR_MSG_MAX];
        snprintf(reason, sizeof(reason), "%s", err ? err->msg : "");
        at_error_set(err, AT_ERR_CORRUPT, "renewal state %s is damaged: %s; it could not be moved "
                     "aside (%s)", where, why.msg, reason);
        at_error_clear(&why);
        return -1;
    }
    at_error_set(err, AT_ERR_CORRUPT, "renewal state %s is damaged: %s; it was moved aside to %s "
                 "and renewal starts afresh", where, why.msg, moved);
    at_error_clear(&why);
    return -1;
}

int at_store_state_save(at_store *st, const char *id, const json_t *state, at_error *err)
{
    char *text;
    int rc;

    if (check_id(id, "certificate", err) != 0)
        return -1;
    if (!json_is_object(state))
        return at_error_set(err, AT_ERR_INTERNAL, "renewal state for %s is not an object", id);
    if (!(text = at_json_pretty(state)))
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    rc = st->ops->blob_write(st, id, text, strlen(text), err);
    free(text);
    if (rc != 0)
        at_error_prefix(err, "storing the renewal state of %s", id);
    return rc;
}

/* ------------------------------------------------------------------ locks */

int at_store_trylock(at_store *st, const char *name, at_store_lock **lk, at_error *err)
{
    char id[AT_STORE_ID_MAX + 1];

    *lk = NULL;
    at_store_id(name, id, sizeof(id));
    return st->ops->trylock(st, id, lk, err);
}

void at_store_unlock(at_store_lock *lk)
{
    if (lk)
        lk->release(lk);
}
