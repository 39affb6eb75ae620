/*
 * at_live.h: the live table, a region of shared memory that the host server
 * allocates before it forks and the core formats. It holds what every worker
 * needs on the hot path, so no worker ever touches the disk to answer:
 *
 *   - pending HTTP-01 challenges: token -> key authorization
 *   - pending TLS-ALPN-01 challenges: name -> RFC 8737 certificate + key
 *   - the current certificate per managed name and key type, with a generation
 *
 * Concurrency: writers (the renewal thread; briefly two during a graceful
 * restart) serialise on a process-shared robust mutex inside the region.
 * Readers never lock: a sequence counter (seqlock) tells them to retry when a
 * writer was active while they copied. Readers copy out what they need; they
 * never hold pointers into the region. Every offset read from the region is
 * bounds-checked, so a torn read can cost a retry, never a crash.
 *
 * The region has a fixed size (AutoTLSSharedMemory / autotls_zone); when a
 * write does not fit, the writer compacts, and if it still does not fit the
 * write fails with a message that names the size to configure.
 */
#ifndef AT_LIVE_H
#define AT_LIVE_H

#include <stddef.h>
#include <stdint.h>
#include "at_error.h"
#include "at_buf.h"
#include "at_key.h"

typedef struct at_live at_live;

/* A reasonable region size for n managed names (certificates with RSA-4096
 * chains fit; the default minimum is 1 MiB). */
size_t at_live_size_hint(size_t nnames);

/* Format mem[0..size) as an empty table (erases anything there). mem must be
 * MAP_SHARED memory for cross-process use, or any memory for one process. */
int at_live_format(void *mem, size_t size, at_error *err);

/* Attach to a formatted region (checks magic, version and size). The handle
 * is process-local (malloc'd); free it with at_live_detach. */
at_live *at_live_attach(void *mem, size_t size, at_error *err);
void at_live_detach(at_live *lv);

/* Convenience for a single process (the tool, tests): malloc'd region. */
at_live *at_live_new_private(size_t size, at_error *err);
void at_live_free_private(at_live *lv);

/* ---------------------------------------------------------------- writer */

int at_live_put_http01(at_live *lv, const char *token, const char *key_authorization, at_error *err);
int at_live_del_http01(at_live *lv, const char *token);

int at_live_put_alpn01(at_live *lv, const char *name, const char *cert_pem, const char *key_pem, at_error *err);
int at_live_del_alpn01(at_live *lv, const char *name);

/* Publish the certificate (chain PEM + key PEM) for names with key kind.
 * Each name then maps to it (replacing an older certificate of that kind).
 * The generation increases with every publish. */
int at_live_put_cert(at_live *lv, const char *cert_id, const char *const *names, size_t nnames,
                     at_key_kind kind, const char *chain_pem, const char *key_pem,
                     uint64_t *generation, at_error *err);
int at_live_del_cert(at_live *lv, const char *cert_id);

/* ---------------------------------------------------------------- reader */

/* Copy the key authorization for token into out (NUL-terminated).
 * Returns 1 found, 0 not found, -1 if out is too small or the table is busy. */
int at_live_get_http01(at_live *lv, const char *token, char *out, size_t outsz);

/* TLS-ALPN-01 certificate for name; appended to the buffers. 1/0/-1 as above. */
int at_live_get_alpn01(at_live *lv, const char *name, at_buf *cert_pem, at_buf *key_pem);

/* Cheap check: the generation of the certificate of `kind` serving host
 * (exact name first, then a "*.parent" wildcard). 1 found (and *generation,
 * *entry set: an opaque handle valid for at_live_get_cert), 0 none. */
int at_live_cert_gen(at_live *lv, const char *host, at_key_kind kind,
                     uint32_t *entry, uint64_t *generation);

/* Copy the certificate entry (chain and key PEM). Returns 1 with the buffers
 * filled and *generation set to what was copied, 0 if the entry is gone. */
int at_live_get_cert(at_live *lv, uint32_t entry, at_buf *chain_pem, at_buf *key_pem,
                     uint64_t *generation);

/* Counters for status and benchmarks. */
typedef struct at_live_stats {
    size_t   size;          /* region bytes */
    size_t   used;          /* bytes in use (after last compaction + appends) */
    size_t   certs;
    size_t   names;
    size_t   http01;
    size_t   alpn01;
    uint64_t generation;    /* last generation issued */
    uint64_t reader_retries;/* seqlock retries seen by this process */
} at_live_stats;

void at_live_get_stats(at_live *lv, at_live_stats *st);

#endif
