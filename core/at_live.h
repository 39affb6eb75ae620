/*
 * at_live.h: the live table, a region of shared memory that the host server
 * allocates before it forks and the core formats. It holds what every worker
 * needs on the hot path, so no worker ever touches the disk to answer:
 *
 *   - pending HTTP-01 challenges: token -> key authorization
 *   - pending TLS-ALPN-01 challenges: name -> RFC 8737 certificate + key
 *   - the current certificate per managed name and key kind, with a generation
 *
 * Layout: a header (magic, version, size, the writer mutex, the sequence
 * counter, counters), a hash bucket array, and a data area of variable-size
 * records appended at its end. Each record is one block: its type, key,
 * values and hash-chain link. A certificate record keeps its own name list;
 * name records (name + kind -> certificate) are derived from those lists, so
 * the table can always be rebuilt from the certificate records alone.
 *
 * Concurrency: writers (the renewal thread; briefly two during a graceful
 * restart) serialise on a process-shared robust mutex inside the region.
 * Readers never lock: a sequence counter (seqlock) tells them to retry when a
 * writer was active while they copied. Readers copy out what they need; they
 * never hold pointers into the region. Every offset and length read from the
 * region is bounds-checked, so a torn read can cost a retry, never a crash.
 * Retries are bounded in count and time (a reader gives up with "busy").
 *
 * A writer that dies while holding the mutex (EOWNERDEAD) leaves the region
 * possibly half-written: the next writer, or a reader that has waited too long
 * for the odd sequence counter to move, rebuilds the index from the records
 * (newest record of each key wins) before going on. Damage that cannot be
 * rebuilt is dropped and counted in at_live_stats.repairs, so a host can
 * republish what it knows (at_engine_preload).
 *
 * The region has a fixed size (AutoTLSSharedMemory / autotls_zone); when a
 * write does not fit, the writer compacts (only dead records are dropped),
 * and if it still does not fit the write fails with a message that names the
 * size to configure. It also compacts once dead records outweigh live ones,
 * so the memory a table actually touches stays near twice its live data even
 * in a generously sized region. Offsets are 32-bit: a region holds at most
 * 4 GiB - 64 KiB.
 *
 * Names and hosts are compared lowercase, without a trailing dot. A name
 * belongs to one certificate per key kind; if two certificates claim it, the
 * newer publish wins.
 */
#ifndef AT_LIVE_H
#define AT_LIVE_H

#include <stddef.h>
#include <stdint.h>
#include "at_error.h"
#include "at_buf.h"
#include "at_key.h"

typedef struct at_live at_live;

#define AT_LIVE_MIN_SIZE   (16u * 1024)
#define AT_LIVE_MAX_SIZE   ((size_t)0xFFFF0000u)
#define AT_LIVE_TOKEN_MAX  128   /* longest HTTP-01 token stored or served */

/* A reasonable region size for n managed names: 1 MiB plus 16 KiB per name,
 * enough for an ECDSA and an RSA-4096 certificate with their chains per name
 * and room to renew them (names that share a certificate need less). */
size_t at_live_size_hint(size_t nnames);

/* Format mem[0..size) as an empty table (erases anything there; no process
 * may be writing it). mem must be MAP_SHARED memory for cross-process use, or
 * any memory for one process; it must be 8-byte aligned. Generations continue
 * above those of a table formatted there before (and above the clock in
 * microseconds), so per-process caches keyed by generation in workers that
 * outlive a reload can never mistake a new certificate for an old one. */
int at_live_format(void *mem, size_t size, at_error *err);

/* Attach to a formatted region (checks magic, version, layout and size). The
 * handle is process-local (malloc'd); free it with at_live_detach. One handle
 * may be shared by all threads of a process. */
at_live *at_live_attach(void *mem, size_t size, at_error *err);
void at_live_detach(at_live *lv);

/* Convenience for a single process (the tool, tests): malloc'd region. */
at_live *at_live_new_private(size_t size, at_error *err);
void at_live_free_private(at_live *lv);

/* ---------------------------------------------------------------- writer */

/* Tokens: 1..AT_LIVE_TOKEN_MAX characters of [A-Za-z0-9_-]. Replaces an
 * existing entry for the same token. */
int at_live_put_http01(at_live *lv, const char *token, const char *key_authorization, at_error *err);
/* Removing: 1 removed, 0 was not there, -1 the table could not be locked. */
int at_live_del_http01(at_live *lv, const char *token);

int at_live_put_alpn01(at_live *lv, const char *name, const char *cert_pem, const char *key_pem, at_error *err);
int at_live_del_alpn01(at_live *lv, const char *name);

/* Publish the certificate (chain PEM + key PEM) for names with key kind.
 * Each name then maps to it (replacing an older certificate of that kind);
 * names the previous certificate with this cert_id had and this one lacks
 * stop being served by it. The generation increases with every publish and
 * is never reused, so it identifies one published certificate. */
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
 * *entry set: an opaque handle for at_live_get_cert / at_live_cert_id), 0
 * none, -1 busy. A handle may go stale when the table changes; the functions
 * that take one report the generation they found, so compare it. */
int at_live_cert_gen(at_live *lv, const char *host, at_key_kind kind,
                     uint32_t *entry, uint64_t *generation);

/* Copy the certificate entry (chain and key PEM, appended; either buffer may
 * be NULL). Returns 1 with *generation set to what was copied, 0 if the entry
 * is gone, -1 busy or out of memory. */
int at_live_get_cert(at_live *lv, uint32_t entry, at_buf *chain_pem, at_buf *key_pem,
                     uint64_t *generation);

/* The cert_id of an entry (NUL-terminated into id). 1/0/-1 as above. */
int at_live_cert_id(at_live *lv, uint32_t entry, char *id, size_t idsz, uint64_t *generation);

/* The generation currently published under cert_id. 1 found, 0 none, -1 busy. */
int at_live_cert_current(at_live *lv, const char *cert_id, uint64_t *generation);

/* How many certificates have been replaced or withdrawn (or the table
 * rebuilt) so far: a per-process cache of parsed certificates only needs to
 * look for stale entries when this moves. */
uint64_t at_live_retired(at_live *lv);

/* Counters for status and benchmarks. */
typedef struct at_live_stats {
    size_t   size;          /* region bytes */
    size_t   used;          /* bytes in use: header, buckets, records appended since the last compaction */
    size_t   live;          /* of which records still current (header and buckets included) */
    size_t   certs;
    size_t   names;         /* (name, key kind) pairs */
    size_t   http01;
    size_t   alpn01;
    uint64_t generation;    /* last generation issued */
    uint64_t retired;       /* see at_live_retired */
    uint64_t compactions;
    uint64_t repairs;       /* rebuilds after a writer died mid-write */
    uint64_t reader_retries;/* seqlock retries seen by this process */
} at_live_stats;

void at_live_get_stats(at_live *lv, at_live_stats *st);

/* For tests only: take the writer lock, begin a write and leave the region
 * half-written (the sequence counter odd, a bucket pointing at garbage, a
 * block half appended), then return with the lock held, as a writer killed at
 * that moment would. The caller is expected to die (or call nothing else). */
int at_live_test_abandon_write(at_live *lv);

#endif
