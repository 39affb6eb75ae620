/*
 * at_store_int.h: what a store backend provides. at_store.c holds the
 * record logic (file names, validation, what "damaged" means, messages);
 * a backend only moves bytes, atomically:
 *
 *  - a *set* is a group of files under one id that is replaced as a whole
 *    (certificate chain + key + meta; account record + key; order checkpoint
 *    + key). A reader sees one complete version or none, never a mix.
 *  - a *blob* is one small file (renewal state), replaced atomically.
 *
 * Ownership: every output buffer is the caller's; strings passed in are
 * borrowed for the call.
 */
#ifndef AT_STORE_INT_H
#define AT_STORE_INT_H

#include <stddef.h>
#include <sys/types.h>

#include "at_buf.h"
#include "at_error.h"
#include "at_store.h"

/* Largest stored file we read; anything bigger is damage (or an attack). */
#define AT_STORE_MAX_FILE (1024 * 1024)

typedef enum at_set_kind {
    AT_SET_CERT = 0,    /* replaced versions are archived */
    AT_SET_ACCOUNT,     /* replaced versions are archived */
    AT_SET_ORDER,       /* replaced versions are dropped: checkpoints are transient */
    AT_SET_NKINDS
} at_set_kind;

typedef struct at_store_file {
    const char *name;   /* "chain.pem" */
    const char *data;   /* for writes; NULL: the file is not part of this version */
    size_t      len;
    int         secret; /* private key: mode 0600 (everything is under 0700 directories anyway) */
} at_store_file;

/* Names a version of a set, so that the version found damaged is the one
 * moved aside (and not a good one written meanwhile). */
#define AT_STORE_VERSION_MAX 128
/* Where a set or blob lives, for messages ("/var/lib/autotls/certs/x"). */
#define AT_STORE_WHERE_MAX 1024

typedef struct at_store_ops {
    void (*close)(at_store *st);
    int  (*chown)(at_store *st, uid_t uid, gid_t gid, at_error *err);

    /* Read files[i].name into out[i] (left empty with data == NULL when the
     * file is absent from the version). AT_ERR_NOTFOUND if no set has id. */
    int  (*set_read)(at_store *st, at_set_kind kind, const char *id, const at_store_file *files,
                     size_t n, at_buf *out, char version[AT_STORE_VERSION_MAX],
                     char where[AT_STORE_WHERE_MAX], at_error *err);
    /* Make files (those with data != NULL) the new version of the set. */
    int  (*set_write)(at_store *st, at_set_kind kind, const char *id, const at_store_file *files,
                      size_t n, at_error *err);
    /* Remove the set (archived for kinds that archive). AT_ERR_NOTFOUND if absent. */
    int  (*set_remove)(at_store *st, at_set_kind kind, const char *id, at_error *err);
    /* Move `version` of the set aside, never deleting it. Returns 0 and the
     * new place in moved, 1 if the set no longer is at that version (it was
     * replaced: nothing moved, read again), -1 on error. */
    int  (*set_quarantine)(at_store *st, at_set_kind kind, const char *id, const char *version,
                           char moved[AT_STORE_WHERE_MAX], at_error *err);
    int  (*set_list)(at_store *st, at_set_kind kind, char ***ids, size_t *n, at_error *err);

    /* Renewal state blobs, same conventions. */
    int  (*blob_read)(at_store *st, const char *id, at_buf *out, char where[AT_STORE_WHERE_MAX],
                      at_error *err);
    int  (*blob_write)(at_store *st, const char *id, const char *data, size_t len, at_error *err);
    int  (*blob_quarantine)(at_store *st, const char *id, char moved[AT_STORE_WHERE_MAX], at_error *err);

    /* name is already a safe id. */
    int  (*trylock)(at_store *st, const char *name, at_store_lock **lk, at_error *err);
} at_store_ops;

struct at_store {
    const at_store_ops *ops;
    char *describe;     /* "directory /var/lib/autotls" */
    char *path;         /* directory backends only */
};

/* A backend's lock starts with this. */
struct at_store_lock {
    void (*release)(at_store_lock *lk);
};

/* The directory backend (at_store_dir.c). */
at_store *at_store_dir_new(const char *path, at_error *err);

#endif
