/*
 * at_store.h: persistent state behind a small interface. The default backend
 * is a directory:
 *
 *   DIR/accounts/<ca-id>/      account.json, account.key.pem
 *   DIR/certs/<cert-id>/       chain.pem, key.pem, meta.json   (the live set)
 *   DIR/staging/<cert-id>/     order.json, key.pem             (in-flight order)
 *   DIR/state/<cert-id>.json   renewal state: failures, last error, next attempt
 *   DIR/archive/<cert-id>/<UTC-timestamp>/   replaced certificates
 *   DIR/archive/.accounts/<ca-id>/<UTC-timestamp>/   replaced account records
 *   DIR/locks/<name>.lock
 *
 * Every write is atomic (temp file, fsync, rename, fsync of the directory);
 * a set of files that belongs together (chain + key + meta) is switched as a
 * whole, so a reader never sees a certificate without its key: each of
 * accounts/, certs/, staging/ keeps its versions under .sets/<id>/<version>/
 * and <id> is a symbolic link swapped by rename (see at_store_dir.c). Names
 * starting with a dot are the store's own. Private keys are 0600,
 * directories 0700, whatever the umask. A damaged file is moved aside
 * (never deleted) — for a set, the whole version, to <id>.corrupt-<UTC> —
 * and reported once with AT_ERR_CORRUPT naming the file; afterwards the
 * record reads as absent. Saving refuses what would not load again.
 *
 * Ids are produced by at_store_id() and are safe file names; functions that
 * take an id refuse anything else (AT_ERR_INTERNAL).
 *
 * Ownership: when root writes into a store whose directory belongs to
 * another user (the tool, Apache's parent after at_store_chown), everything
 * it creates is handed to that user, so the server can still replace it.
 */
#ifndef AT_STORE_H
#define AT_STORE_H

#include <stddef.h>
#include <sys/types.h>
#include <jansson.h>
#include "at_error.h"

typedef struct at_store at_store;

/* Open (creating if needed, 0700) a directory store. */
at_store *at_store_open_dir(const char *path, at_error *err);
void at_store_close(at_store *st);

/* "directory /var/lib/autotls" — for messages. */
const char *at_store_describe(const at_store *st);
/* The directory of a directory store (NULL for other backends). */
const char *at_store_path(const at_store *st);

/* Give the whole tree to uid/gid (used by a root parent before it hands the
 * store to an unprivileged renewal process). */
int at_store_chown(at_store *st, uid_t uid, gid_t gid, at_error *err);

/* A safe identifier from free text: lowercase [a-z0-9._-], '*' -> "_wildcard_",
 * ':' -> '_', other bytes '_' ; at most 200 bytes; a short hash is appended
 * when anything was changed or truncated so distinct inputs stay distinct. */
void at_store_id(const char *text, char *out, size_t outsz);

/* ------------------------------------------------------------- accounts */

typedef struct at_account_rec {
    char   *ca_url;    /* directory URL */
    char   *url;       /* account URL (kid), NULL if not registered yet */
    json_t *account;   /* the CA's account object as last seen, or NULL */
    char   *key_pem;   /* account private key */
} at_account_rec;

void at_account_rec_free(at_account_rec *rec);

/* AT_ERR_NOTFOUND when there is no account for this CA (stored under
 * at_store_id(ca_url)); AT_ERR_CORRUPT if damaged (moved aside). Saving
 * archives the previous record. */
int at_store_account_load(at_store *st, const char *ca_url, at_account_rec *rec, at_error *err);
int at_store_account_save(at_store *st, const at_account_rec *rec, at_error *err);

/* ---------------------------------------------------------- certificates */

typedef struct at_cert_rec {
    char   *id;
    char   *chain_pem;  /* leaf first */
    char   *key_pem;
    json_t *meta;       /* {"names":[..],"key":"ec:P-256","ca":URL,"not_before":..,"not_after":..,
                           "serial":..,"issued_at":..,"challenge":"http-01","ari_id":..,"order_url":..} */
} at_cert_rec;

void at_cert_rec_free(at_cert_rec *rec);

/* Load and verify (chain parses, key parses and matches the leaf, meta is an
 * object). AT_ERR_NOTFOUND if absent; AT_ERR_CORRUPT if damaged (moved aside). */
int at_store_cert_load(at_store *st, const char *id, at_cert_rec *rec, at_error *err);
/* Only chain.pem and meta.json, unchecked (rec->key_pem stays NULL): for
 * showing a certificate, not for using it. */
int at_store_cert_load_public(at_store *st, const char *id, at_cert_rec *rec, at_error *err);

/* Replace the certificate set atomically; the previous one is archived.
 * The chain and key are checked first (a set that would read as damaged is
 * refused while the caller can still fetch it again). */
int at_store_cert_save(at_store *st, const at_cert_rec *rec, at_error *err);
/* The same without those checks, for a caller that has just made them on
 * this very chain and key (the engine after a download). */
int at_store_cert_save_checked(at_store *st, const at_cert_rec *rec, at_error *err);

/* Ids of stored certificates (malloc'd array of malloc'd strings). */
int at_store_cert_list(at_store *st, char ***ids, size_t *n, at_error *err);
void at_store_free_list(char **ids, size_t n);

/* Delete a certificate set (moved to the archive, not destroyed). */
int at_store_cert_retire(at_store *st, const char *id, at_error *err);

/* ------------------------------------------------------ in-flight orders */

/* AT_ERR_NOTFOUND when no order is in flight for id. On success *key_pem
 * (malloc'd, may be passed as NULL) is the order's certificate key: a
 * checkpoint always has one (save requires a parsable key; a missing or
 * broken one on load is AT_ERR_CORRUPT). Removing an absent order is not an
 * error. Checkpoints are not archived. */
int at_store_order_load(at_store *st, const char *id, json_t **checkpoint, char **key_pem, at_error *err);
int at_store_order_save(at_store *st, const char *id, const json_t *checkpoint, const char *key_pem, at_error *err);
int at_store_order_remove(at_store *st, const char *id, at_error *err);

/* ------------------------------------------------------- renewal state */

/* {"failures":n,"last_attempt":t,"last_success":t,"next_attempt":t,
 *  "retry_after":t,"last_error":{...}|null,"ari":{"start":t,"end":t,"pick":t,"next_check":t,
 *  "explanation":URL},"force":t,"revoked":bool}
 * AT_ERR_NOTFOUND when none. */
int at_store_state_load(at_store *st, const char *id, json_t **state, at_error *err);
int at_store_state_save(at_store *st, const char *id, const json_t *state, at_error *err);

/* ------------------------------------------------------------------ locks */

typedef struct at_store_lock at_store_lock;

/* Non-blocking exclusive lock on `name` (flock: released on unlock or when
 * the process dies; exclusive between processes and between two holders in
 * one process). AT_ERR_BUSY, naming the holder's pid, if someone holds it. */
int  at_store_trylock(at_store *st, const char *name, at_store_lock **lk, at_error *err);
void at_store_unlock(at_store_lock *lk);

#endif
