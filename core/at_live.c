/*
 * at_live.c: the live table in shared memory (see at_live.h for the model).
 *
 * Region:  [lv_hdr][bucket array: nbuckets x uint32][data area ........]
 * Record:  [lv_blk header][s0 NUL][s1 NUL][s2 NUL][s3 NUL] padded to 8
 *
 *   type     s0        s1                s2          s3       other
 *   HTTP01   token     key authorization
 *   ALPN01   name      certificate PEM   key PEM
 *   CERT     cert id   names (NUL-sep.)  chain PEM   key PEM  gen, kind
 *   NAME     name                                             kind, target = CERT offset
 *
 * Offsets are absolute within the region (0 = none). Records are appended at
 * `used`; a removed record is marked dead and unlinked; compaction rewrites
 * the live records into a scratch copy and copies it back in one short write
 * section. The same rebuild repairs the table after a writer died.
 */
#include "at_live.h"
#include "at_x509.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LV_MAGIC      0x4C544124u      /* "$ATL" */
#define LV_VERSION    1u
#define BLK_MAGIC     0xA7C3u          /* both bytes >= 0x80: never inside PEM or names */
#define NAME_MAX_LEN  253
#define ID_MAX_LEN    255
#define NAMES_MAX     1000
#define STR_MAX       (16u * 1024 * 1024)

#define RD_SPIN       64
#define RD_YIELD      128
#define RD_RESCUE_NS  2000000L         /* after 2 ms of an odd counter, check for a dead writer */
#define RD_GIVEUP_NS  200000000L       /* after 200 ms, report busy */
#define WR_LOCK_SEC   10
#define CHURN_SLACK   (64u * 1024)

enum { T_DEAD = 0, T_HTTP01 = 1, T_ALPN01 = 2, T_CERT = 3, T_NAME = 4, T_MAX = 4 };

typedef struct lv_hdr {
    uint32_t magic;
    uint32_t version;
    uint64_t size;
    uint32_t hdr_size;
    uint32_t mutex_size;
    uint32_t nbuckets;
    uint32_t buckets_off;
    uint32_t area_off;
    uint32_t area_end;
    pthread_mutex_t mutex;
    uint64_t seq;          /* odd while a writer changes the table */
    uint64_t generation;
    uint64_t retired;
    uint64_t compactions;
    uint64_t repairs;
    uint32_t used;         /* end of the last appended record */
    uint32_t live;         /* bytes of current records */
    uint32_t ncerts, nnames, nhttp01, nalpn01;
} lv_hdr;

typedef struct lv_blk {
    uint32_t tag;          /* magic | type << 16 | kind << 24 */
    uint32_t len;          /* whole record, multiple of 8 */
    uint32_t next;         /* hash chain */
    uint32_t target;       /* NAME: its CERT */
    uint32_t hash;
    uint32_t slen[4];
    uint32_t reserved;
    uint64_t gen;
} lv_blk;

/* Where records live: the region itself, or a scratch copy being built. */
typedef struct lv_map {
    unsigned char *area;   /* address of offset area_off */
    uint32_t      *buckets;
    uint32_t       mask;
    uint32_t       area_off;
    uint32_t       end;    /* records must end at or before this offset */
} lv_map;

/* A record as read, every field loaded once and checked. */
typedef struct lv_view {
    uint32_t off, len, next, target, hash;
    unsigned type, kind;
    uint64_t gen;
    const unsigned char *s[4];
    uint32_t sl[4];
} lv_view;

struct at_live {
    unsigned char *mem;
    lv_hdr        *hdr;
    lv_map         map;
    size_t         size;
    int            priv;
    unsigned long  retries;
};

/* ------------------------------------------------------------ small tools */

static inline uint32_t ld32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint64_t ld64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void st32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void st64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

static uint32_t lv_hash(unsigned type, unsigned kind, const char *key, size_t n)
{
    uint32_t h = 2166136261u;
    h = (h ^ type) * 16777619u;
    h = (h ^ kind) * 16777619u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    return h;
}

static size_t blk_size(const size_t sl[4])
{
    size_t n = sizeof(lv_blk);
    for (int i = 0; i < 4; i++)
        n += sl[i] + 1;
    return (n + 7) & ~(size_t)7;
}

static inline lv_blk *blk_at(const lv_map *m, uint32_t off)
{
    return (lv_blk *)(m->area + (off - m->area_off));
}

/* Names and hosts: lowercase, one trailing dot dropped, 1..253 bytes. */
static int norm_name(const char *in, char out[NAME_MAX_LEN + 1], size_t *outlen)
{
    size_t n = in ? strlen(in) : 0;
    if (n && in[n - 1] == '.')
        n--;
    if (n == 0 || n > NAME_MAX_LEN)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c <= ' ' || c >= 0x7f)
            return -1;
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    out[n] = '\0';
    *outlen = n;
    return 0;
}

/* TLS-ALPN-01 names: an IP identifier is validated with its reverse-DNS
 * name as SNI (RFC 8738 §6), so both sides key on the canonical IP. */
static int norm_alpn_name(const char *in, char out[NAME_MAX_LEN + 1], size_t *outlen)
{
    char key[NAME_MAX_LEN + 1];
    if (!in || at_name_alpn_key(in, key, sizeof(key)) != 0)
        return -1;
    return norm_name(key, out, outlen);
}

static int token_ok(const char *t, size_t *len)
{
    size_t n = t ? strlen(t) : 0;
    if (n == 0 || n > AT_LIVE_TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return 0;
    }
    *len = n;
    return 1;
}

/* ------------------------------------------------------------ records */

/* Load and check the record at off. Never reads outside [area_off, end). */
static int blk_view(const lv_map *m, uint32_t off, lv_view *v)
{
    const lv_blk *b;
    uint32_t tag;
    uint64_t sum;
    const unsigned char *p;

    if ((off & 7) || off < m->area_off || off > m->end || m->end - off < sizeof(lv_blk))
        return -1;
    b = blk_at(m, off);
    tag = ld32(&b->tag);
    v->len = ld32(&b->len);
    if ((tag & 0xFFFF) != BLK_MAGIC || v->len < sizeof(lv_blk) || (v->len & 7) || v->len > m->end - off)
        return -1;
    v->type = (tag >> 16) & 0xFF;
    v->kind = tag >> 24;
    if (v->type > T_MAX)
        return -1;
    sum = sizeof(lv_blk);
    p = (const unsigned char *)b + sizeof(lv_blk);
    for (int i = 0; i < 4; i++) {
        v->sl[i] = ld32(&b->slen[i]);
        v->s[i] = p + (sum - sizeof(lv_blk));
        sum += (uint64_t)v->sl[i] + 1;
        if (sum > v->len)
            return -1;
    }
    v->off = off;
    v->next = ld32(&b->next);
    v->target = ld32(&b->target);
    v->hash = ld32(&b->hash);
    v->gen = ld64(&b->gen);
    return 0;
}

/* Stricter check for records being rebuilt: strings terminated, key sane. */
static int blk_sound(const lv_view *v)
{
    for (int i = 0; i < 4; i++)
        if (v->s[i][v->sl[i]] != '\0')
            return 0;
    if (v->type != T_DEAD && v->sl[0] == 0)
        return 0;
    if (v->type == T_CERT && ((v->kind != AT_KEY_EC && v->kind != AT_KEY_RSA) || v->sl[1] == 0))
        return 0;
    return 1;
}

static inline unsigned key_kind(unsigned type, unsigned kind)
{
    return type == T_NAME ? kind : 0;
}

/* Find a record by key. 1 found, 0 not found, -1 inconsistent (a torn read
 * or, for writers, damage). seq: when non-NULL, abandon early if it moved. */
static int map_find(const lv_map *m, const uint64_t *seq, uint64_t seq0, unsigned type, unsigned kind,
                    const char *key, size_t klen, uint32_t h, lv_view *v)
{
    uint32_t off = ld32(&m->buckets[h & m->mask]);
    size_t steps = 0, max = (m->end - m->area_off) / sizeof(lv_blk) + 1;

    kind = key_kind(type, kind);
    while (off) {
        if (++steps > max)
            return -1;
        if (seq && (steps & 63) == 0 && __atomic_load_n(seq, __ATOMIC_ACQUIRE) != seq0)
            return -1;
        if (blk_view(m, off, v) != 0)
            return -1;
        if (v->type == type && v->hash == h && key_kind(v->type, v->kind) == kind
            && v->sl[0] == klen && memcmp(v->s[0], key, klen) == 0)
            return 1;
        off = v->next;
    }
    return 0;
}

/* Append a record at *used (the caller made room) and link it. */
static uint32_t map_append(lv_map *m, uint32_t *used, unsigned type, unsigned kind, const char *const s[4],
                           const size_t sl[4], uint64_t gen, uint32_t target)
{
    uint32_t off = *used;
    size_t len = blk_size(sl);
    lv_blk *b = blk_at(m, off);
    unsigned char *p = (unsigned char *)b + sizeof(lv_blk);
    uint32_t h = lv_hash(type, key_kind(type, kind), s[0], sl[0]);
    uint32_t *head = &m->buckets[h & m->mask];

    memset(b, 0, sizeof(*b));
    for (int i = 0; i < 4; i++) {
        if (sl[i])
            memcpy(p, s[i], sl[i]);
        p[sl[i]] = '\0';
        p += sl[i] + 1;
        b->slen[i] = (uint32_t)sl[i];
    }
    memset(p, 0, (size_t)((unsigned char *)b + len - p));
    b->len = (uint32_t)len;
    b->hash = h;
    b->gen = gen;
    b->target = target;
    b->next = ld32(head);
    st32(&b->tag, BLK_MAGIC | (type << 16) | (kind << 24));
    /* The record is whole before `used` covers it: a rebuild after a crash
     * only trusts records below `used`. */
    st32(used, off + (uint32_t)len);
    st32(head, off);
    return off;
}

static void map_unlink(lv_map *m, uint32_t off, uint32_t h)
{
    uint32_t *link = &m->buckets[h & m->mask];
    size_t steps = 0, max = (m->end - m->area_off) / sizeof(lv_blk) + 1;
    while (ld32(link) && steps++ < max) {
        uint32_t cur = ld32(link);
        lv_view v;
        if (blk_view(m, cur, &v) != 0)
            return;
        if (cur == off) {
            st32(link, v.next);
            return;
        }
        link = &blk_at(m, cur)->next;
    }
}

/* ------------------------------------------------------------ seqlock */

typedef struct lv_rd {
    at_live        *lv;
    uint64_t        seq;
    unsigned        waits;
    int             have_t0;
    struct timespec t0;
} lv_rd;

static void lv_recover(at_live *lv);

static long elapsed_ns(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)(now.tv_sec - t0->tv_sec) * 1000000000L + (now.tv_nsec - t0->tv_nsec);
}

/* A reader that waited long on an odd counter checks whether the writer
 * died; if so it repairs the table itself (otherwise every worker would be
 * stuck until the next write, which may be hours away). */
static void rd_rescue(at_live *lv)
{
    int rc = pthread_mutex_trylock(&lv->hdr->mutex);
    if (rc == EOWNERDEAD) {
        lv_recover(lv);
        pthread_mutex_consistent(&lv->hdr->mutex);
        pthread_mutex_unlock(&lv->hdr->mutex);
    } else if (rc == 0) {
        if (ld64(&lv->hdr->seq) & 1)
            lv_recover(lv);
        pthread_mutex_unlock(&lv->hdr->mutex);
    }
}

/* Back off before the next attempt; -1 when the reader should give up. */
static int rd_backoff(lv_rd *r)
{
    long ns;
    struct timespec ts = { 0, 50000 };

    __atomic_fetch_add(&r->lv->retries, 1, __ATOMIC_RELAXED);
    if (++r->waits < RD_SPIN) {
        cpu_relax();
        return 0;
    }
    if (r->waits < RD_YIELD) {
        sched_yield();
        return 0;
    }
    if (!r->have_t0) {
        clock_gettime(CLOCK_MONOTONIC, &r->t0);
        r->have_t0 = 1;
    }
    ns = elapsed_ns(&r->t0);
    if (ns > RD_GIVEUP_NS)
        return -1;
    if (ns > RD_RESCUE_NS && (ld64(&r->lv->hdr->seq) & 1))
        rd_rescue(r->lv);
    nanosleep(&ts, NULL);
    return 0;
}

static int rd_begin(lv_rd *r)
{
    for (;;) {
        uint64_t s = __atomic_load_n(&r->lv->hdr->seq, __ATOMIC_ACQUIRE);
        if (!(s & 1)) {
            r->seq = s;
            return 0;
        }
        if (rd_backoff(r) != 0)
            return -1;
    }
}

/* 1: what was read is consistent; 0: read again; -1: give up. */
static int rd_end(lv_rd *r)
{
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&r->lv->hdr->seq, __ATOMIC_RELAXED) == r->seq)
        return 1;
    return rd_backoff(r) == 0 ? 0 : -1;
}

static int rd_still(const lv_rd *r)
{
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(&r->lv->hdr->seq, __ATOMIC_RELAXED) == r->seq;
}

static void wr_begin(at_live *lv)
{
    uint64_t s = ld64(&lv->hdr->seq);
    if (!(s & 1))
        st64(&lv->hdr->seq, s + 1);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void wr_end(at_live *lv)
{
    uint64_t s = ld64(&lv->hdr->seq);
    __atomic_store_n(&lv->hdr->seq, s + (s & 1), __ATOMIC_RELEASE);
}

static int wr_lock(at_live *lv, at_error *err)
{
    struct timespec dl;
    int rc;

    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += WR_LOCK_SEC;
    rc = pthread_mutex_timedlock(&lv->hdr->mutex, &dl);
    if (rc == EOWNERDEAD) {
        /* The previous writer died holding the lock: its write may be half done. */
        lv_recover(lv);
        pthread_mutex_consistent(&lv->hdr->mutex);
        return 0;
    }
    if (rc == 0) {
        if (ld64(&lv->hdr->seq) & 1)
            lv_recover(lv);
        return 0;
    }
    if (rc == ETIMEDOUT)
        return at_error_set(err, AT_ERR_BUSY,
                            "the live table's writer lock has been held for more than %d s by another "
                            "process; if a renewal process hangs, restart the server", WR_LOCK_SEC);
    return at_error_set(err, AT_ERR_INTERNAL, "locking the live table: %s", strerror(rc));
}

static void wr_unlock(at_live *lv)
{
    pthread_mutex_unlock(&lv->hdr->mutex);
}

/* ------------------------------------------------------------ rebuild */

static void counts_add(lv_hdr *h, unsigned type, int d)
{
    switch (type) {
    case T_HTTP01: st32(&h->nhttp01, ld32(&h->nhttp01) + (uint32_t)d); break;
    case T_ALPN01: st32(&h->nalpn01, ld32(&h->nalpn01) + (uint32_t)d); break;
    case T_CERT:   st32(&h->ncerts, ld32(&h->ncerts) + (uint32_t)d); break;
    case T_NAME:   st32(&h->nnames, ld32(&h->nnames) + (uint32_t)d); break;
    default: break;
    }
}

typedef struct lv_counts {
    uint32_t n[T_MAX + 1];
} lv_counts;

/* Copy the newest sound record of every key (names aside) from src into dst.
 * -1 only when out of memory (dst untouched). */
static int rebuild_copy(const lv_map *src, uint32_t used, lv_map *dst, uint32_t *dused,
                        lv_counts *c, int *damaged)
{
    size_t max = (used - src->area_off) / sizeof(lv_blk) + 1, n = 0;
    uint32_t *offs = malloc(max * sizeof(*offs));
    uint32_t off = src->area_off;
    lv_view v, w;

    if (!offs)
        return -1;
    while (off < used) {
        if (blk_view(src, off, &v) != 0 || !blk_sound(&v)) {
            *damaged = 1;   /* nothing after a broken record can be trusted */
            break;
        }
        if (v.type == T_HTTP01 || v.type == T_ALPN01 || v.type == T_CERT)
            offs[n++] = off;
        off += v.len;
    }
    /* Newest first: a record appended later supersedes an older one that a
     * dead writer did not get to remove. */
    while (n--) {
        const char *s[4];
        size_t sl[4];
        uint32_t h;
        blk_view(src, offs[n], &v);
        h = lv_hash(v.type, key_kind(v.type, v.kind), (const char *)v.s[0], v.sl[0]);
        if (map_find(dst, NULL, 0, v.type, v.kind, (const char *)v.s[0], v.sl[0], h, &w) != 0)
            continue;
        for (int i = 0; i < 4; i++) {
            s[i] = (const char *)v.s[i];
            sl[i] = v.sl[i];
        }
        map_append(dst, dused, v.type, v.kind, s, sl, v.gen, 0);
        c->n[v.type]++;
    }
    free(offs);
    return 0;
}

/* Derive the name records from the certificates' name lists; the newest
 * certificate wins a name claimed twice. */
static void rebuild_names(lv_map *dst, uint32_t *dused, lv_counts *c, int *damaged)
{
    uint32_t end = *dused, off = dst->area_off;
    lv_view v, nv, tv;

    while (off < end) {
        const unsigned char *p, *lim;
        if (blk_view(dst, off, &v) != 0)
            break;
        off += v.len;
        if (v.type != T_CERT)
            continue;
        p = v.s[1];
        lim = v.s[1] + v.sl[1];
        while (p < lim) {
            size_t nl = strnlen((const char *)p, (size_t)(lim - p));
            uint32_t h = lv_hash(T_NAME, v.kind, (const char *)p, nl);
            int f = nl ? map_find(dst, NULL, 0, T_NAME, v.kind, (const char *)p, nl, h, &nv) : -1;
            if (f == 1) {
                if (blk_view(dst, nv.target, &tv) != 0 || tv.gen < v.gen)
                    st32(&blk_at(dst, nv.off)->target, v.off);
            } else if (f == 0) {
                const char *s[4] = { (const char *)p, "", "", "" };
                size_t sl[4] = { nl, 0, 0, 0 };
                if (dst->end - *dused < blk_size(sl)) {
                    *damaged = 1;
                    return;
                }
                map_append(dst, dused, T_NAME, v.kind, s, sl, 0, v.off);
                c->n[T_NAME]++;
            }
            p += nl + 1;
        }
    }
}

/* Reset to an empty table (the last resort when a rebuild has no memory). */
static void lv_wipe(at_live *lv)
{
    lv_hdr *h = lv->hdr;
    wr_begin(lv);
    memset(lv->map.buckets, 0, (size_t)(lv->map.mask + 1) * sizeof(uint32_t));
    st32(&h->used, lv->map.area_off);
    st32(&h->live, 0);
    st32(&h->ncerts, 0);
    st32(&h->nnames, 0);
    st32(&h->nhttp01, 0);
    st32(&h->nalpn01, 0);
    st64(&h->retired, ld64(&h->retired) + 1);
    wr_end(lv);
}

/* Rewrite the table with only its current records, rebuilding every index
 * from the records themselves. Called with the writer lock held. */
static int lv_rebuild(at_live *lv, int repairing)
{
    lv_hdr *h = lv->hdr;
    lv_map src = lv->map, dst = lv->map;
    size_t asz = lv->map.end - lv->map.area_off, nb = (size_t)lv->map.mask + 1;
    uint32_t used = ld32(&h->used), dused = lv->map.area_off;
    lv_counts c;
    int damaged = 0;

    if (used < lv->map.area_off || used > lv->map.end || (used & 7))
        used = lv->map.end, damaged = 1;
    src.end = used;
    dst.area = malloc(asz);
    dst.buckets = calloc(nb, sizeof(uint32_t));
    memset(&c, 0, sizeof(c));
    if (!dst.area || !dst.buckets || rebuild_copy(&src, used, &dst, &dused, &c, &damaged) != 0) {
        free(dst.area);
        free(dst.buckets);
        if (repairing) {
            /* A half-written table must not stay behind: start empty. */
            lv_wipe(lv);
            st64(&h->repairs, ld64(&h->repairs) + 1);
        }
        return -1;
    }
    rebuild_names(&dst, &dused, &c, &damaged);

    /* Readers kept reading the old image until now; they wait only for the copy. */
    wr_begin(lv);
    memcpy(lv->map.area, dst.area, dused - lv->map.area_off);
    memcpy(lv->map.buckets, dst.buckets, nb * sizeof(uint32_t));
    st32(&h->used, dused);
    st32(&h->live, dused - lv->map.area_off);
    st32(&h->nhttp01, c.n[T_HTTP01]);
    st32(&h->nalpn01, c.n[T_ALPN01]);
    st32(&h->ncerts, c.n[T_CERT]);
    st32(&h->nnames, c.n[T_NAME]);
    st64(&h->retired, ld64(&h->retired) + 1);
    if (repairing || damaged)
        st64(&h->repairs, ld64(&h->repairs) + 1);
    else
        st64(&h->compactions, ld64(&h->compactions) + 1);
    wr_end(lv);
    free(dst.area);
    free(dst.buckets);
    return 0;
}

static void lv_recover(at_live *lv)
{
    lv_rebuild(lv, 1);
}

/* ------------------------------------------------------------ layout */

static uint32_t pick_buckets(size_t size)
{
    uint32_t nb = 256;
    while (nb < (1u << 22) && (size_t)nb * 2 * 2048 <= size)
        nb *= 2;
    return nb;
}

size_t at_live_size_hint(size_t nnames)
{
    const size_t per = 16 * 1024, base = 1024 * 1024, cap = AT_LIVE_MAX_SIZE;
    size_t sz;
    if (nnames > (cap - base) / per)
        return cap;
    sz = base + nnames * per;
    return (sz + 65535) & ~(size_t)65535;
}

static int size_ok(size_t size, at_error *err)
{
    if (size < AT_LIVE_MIN_SIZE)
        return at_error_set(err, AT_ERR_CONFIG, "the live table needs at least %u bytes of shared memory, got %zu",
                            AT_LIVE_MIN_SIZE, size);
    if (size > AT_LIVE_MAX_SIZE)
        return at_error_set(err, AT_ERR_CONFIG, "the live table can use at most %zu bytes of shared memory, got %zu",
                            AT_LIVE_MAX_SIZE, size);
    return 0;
}

/* Generations must never repeat for one piece of memory: workers of a
 * previous server generation may still hold parsed certificates keyed by
 * them when the host formats the region again (a reload reusing the zone).
 * So continue from what the old header says, and never start below the
 * wall clock in microseconds (far more than one publish per microsecond
 * would be needed to catch up with it). */
static void first_counters(const lv_hdr *h, uint64_t *gen, uint64_t *retired)
{
    struct timespec ts;
    uint64_t clock_us;
    clock_gettime(CLOCK_REALTIME, &ts);
    clock_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    *gen = clock_us;
    *retired = 0;
    if (h->magic == LV_MAGIC && h->version == LV_VERSION && h->hdr_size == sizeof(lv_hdr)) {
        if (h->generation > *gen)
            *gen = h->generation;
        *retired = h->retired + 1;
    }
}

int at_live_format(void *mem, size_t size, at_error *err)
{
    lv_hdr *h = mem;
    pthread_mutexattr_t ma;
    uint32_t nb, boff, aoff;
    uint64_t gen0, retired0;
    int rc;

    if (!mem || ((uintptr_t)mem & 7))
        return at_error_set(err, AT_ERR_INTERNAL, "live table memory must be 8-byte aligned");
    if (size_ok(size, err) != 0)
        return -1;
    nb = pick_buckets(size);
    boff = (uint32_t)((sizeof(lv_hdr) + 63) & ~(size_t)63);
    aoff = (boff + nb * (uint32_t)sizeof(uint32_t) + 63) & ~63u;
    first_counters(h, &gen0, &retired0);
    memset(mem, 0, aoff);
    h->generation = gen0;
    h->retired = retired0;
    h->magic = LV_MAGIC;
    h->version = LV_VERSION;
    h->size = size;
    h->hdr_size = sizeof(lv_hdr);
    h->mutex_size = sizeof(pthread_mutex_t);
    h->nbuckets = nb;
    h->buckets_off = boff;
    h->area_off = aoff;
    h->area_end = (uint32_t)(size & ~(size_t)7);
    h->used = aoff;

    if ((rc = pthread_mutexattr_init(&ma)) != 0)
        return at_error_set(err, AT_ERR_INTERNAL, "live table mutex attributes: %s", strerror(rc));
    rc = pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(&h->mutex, &ma);
    pthread_mutexattr_destroy(&ma);
    if (rc != 0) {
        h->magic = 0;
        return at_error_set(err, AT_ERR_INTERNAL, "live table mutex: %s", strerror(rc));
    }
    return 0;
}

at_live *at_live_attach(void *mem, size_t size, at_error *err)
{
    lv_hdr *h = mem;
    at_live *lv;

    if (!mem || ((uintptr_t)mem & 7) || size < sizeof(lv_hdr)) {
        at_error_set(err, AT_ERR_INTERNAL, "live table: no usable shared memory to attach to");
        return NULL;
    }
    if (h->magic != LV_MAGIC || h->version != LV_VERSION || h->hdr_size != sizeof(lv_hdr)
        || h->mutex_size != sizeof(pthread_mutex_t)) {
        at_error_set(err, AT_ERR_INTERNAL, "live table: the shared memory was not formatted by this version "
                     "of autotls (restart the server instead of reloading after an upgrade)");
        return NULL;
    }
    if (h->size != size || h->nbuckets < 256 || (h->nbuckets & (h->nbuckets - 1))
        || h->buckets_off < sizeof(lv_hdr) || (h->buckets_off & 7)
        || h->area_off < h->buckets_off + (uint64_t)h->nbuckets * 4 || (h->area_off & 7)
        || h->area_end > size || h->area_end <= h->area_off + sizeof(lv_blk)) {
        at_error_set(err, AT_ERR_INTERNAL, "live table: the shared memory's layout does not match its size "
                     "(%zu bytes given, %llu recorded)", size, (unsigned long long)h->size);
        return NULL;
    }
    lv = calloc(1, sizeof(*lv));
    if (!lv) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    /* The layout is copied once: nothing a torn or damaged header says later
     * can move a reader outside the region. */
    lv->mem = mem;
    lv->hdr = h;
    lv->size = size;
    lv->map.buckets = (uint32_t *)(lv->mem + h->buckets_off);
    lv->map.mask = h->nbuckets - 1;
    lv->map.area_off = h->area_off;
    lv->map.end = h->area_end;
    lv->map.area = lv->mem + h->area_off;
    return lv;
}

void at_live_detach(at_live *lv)
{
    free(lv);
}

at_live *at_live_new_private(size_t size, at_error *err)
{
    void *mem = NULL;
    at_live *lv;
    if (size_ok(size, err) != 0)
        return NULL;
    if (posix_memalign(&mem, 64, size) != 0) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory allocating a %zu-byte live table", size);
        return NULL;
    }
    memset(mem, 0, sizeof(lv_hdr));   /* fresh memory: no previous header to continue from */
    if (at_live_format(mem, size, err) != 0 || !(lv = at_live_attach(mem, size, err))) {
        free(mem);
        return NULL;
    }
    lv->priv = 1;
    return lv;
}

void at_live_free_private(at_live *lv)
{
    if (!lv)
        return;
    if (lv->priv) {
        pthread_mutex_destroy(&lv->hdr->mutex);
        free(lv->mem);
    }
    free(lv);
}

/* ------------------------------------------------------------ writer */

static int err_full(at_live *lv, size_t need, const char *what, at_error *err)
{
    size_t live = lv->map.area_off + ld32(&lv->hdr->live);
    size_t want = (live + need) + (live + need) / 2;
    size_t unit = want < 4u * 1024 * 1024 ? 64 * 1024 : 1024 * 1024;
    want = (want + unit - 1) / unit * unit;
    if (want < lv->size + unit)
        want = lv->size + unit;
    return at_error_set(err, AT_ERR_CONFIG,
                        "the shared memory for the live table is full: %s needs %zu bytes and %zu of its "
                        "%zu bytes are in use after compaction; configure at least %zu KiB of shared memory",
                        what, need, live, lv->size, want / 1024);
}

/* Make room for need bytes of records; compact if that helps. Compacting
 * also once dead records outweigh live ones keeps the pages a table ever
 * touches near twice its live data, whatever size was configured; each
 * compaction then copies no more than the garbage it frees. */
static int ensure_space(at_live *lv, size_t need, const char *what, at_error *err)
{
    uint32_t used = ld32(&lv->hdr->used), live = ld32(&lv->hdr->live);
    size_t dead = (size_t)(used - lv->map.area_off) - live;
    int churn = dead > (size_t)live + CHURN_SLACK;

    if (need <= lv->map.end - used && !churn)
        return 0;
    if (need <= lv->map.end - lv->map.area_off - live) {
        if (lv_rebuild(lv, 0) != 0 && need > lv->map.end - ld32(&lv->hdr->used))
            return at_error_set(err, AT_ERR_INTERNAL, "out of memory compacting the live table");
        if (need <= lv->map.end - ld32(&lv->hdr->used))
            return 0;
    }
    return err_full(lv, need, what, err);
}

static void kill_rec(at_live *lv, const lv_view *v)
{
    lv_blk *b = blk_at(&lv->map, v->off);
    st32(&b->tag, BLK_MAGIC | ((uint32_t)T_DEAD << 16) | (v->kind << 24));
    map_unlink(&lv->map, v->off, v->hash);
    st32(&lv->hdr->live, ld32(&lv->hdr->live) - v->len);
    counts_add(lv->hdr, v->type, -1);
}

static uint32_t append_rec(at_live *lv, unsigned type, unsigned kind, const char *const s[4],
                           const size_t sl[4], uint64_t gen, uint32_t target)
{
    uint32_t off = map_append(&lv->map, &lv->hdr->used, type, kind, s, sl, gen, target);
    st32(&lv->hdr->live, ld32(&lv->hdr->live) + (uint32_t)blk_size(sl));
    counts_add(lv->hdr, type, 1);
    return off;
}

static int wfind(at_live *lv, unsigned type, unsigned kind, const char *key, size_t klen, lv_view *v)
{
    uint32_t h = lv_hash(type, key_kind(type, kind), key, klen);
    return map_find(&lv->map, NULL, 0, type, kind, key, klen, h, v) == 1;
}

/* Replace-or-insert a simple record (challenges). */
static int put_simple(at_live *lv, unsigned type, const char *const s[4], const size_t sl[4],
                      const char *what, at_error *err)
{
    lv_view old;
    int had;

    for (int i = 0; i < 4; i++)
        if (sl[i] > STR_MAX)
            return at_error_set(err, AT_ERR_INTERNAL, "%s: a value of %zu bytes is too large for the live table",
                                what, sl[i]);
    if (wr_lock(lv, err) != 0)
        return -1;
    if (ensure_space(lv, blk_size(sl), what, err) != 0) {
        wr_unlock(lv);
        return -1;
    }
    wr_begin(lv);
    had = wfind(lv, type, 0, s[0], sl[0], &old);
    append_rec(lv, type, 0, s, sl, 0, 0);
    if (had)
        kill_rec(lv, &old);
    wr_end(lv);
    wr_unlock(lv);
    return 0;
}

static int del_simple(at_live *lv, unsigned type, const char *key, size_t klen)
{
    lv_view old;
    int found;
    if (wr_lock(lv, NULL) != 0)
        return -1;
    found = wfind(lv, type, 0, key, klen, &old);
    if (found) {
        wr_begin(lv);
        kill_rec(lv, &old);
        wr_end(lv);
    }
    wr_unlock(lv);
    return found;
}

int at_live_put_http01(at_live *lv, const char *token, const char *key_authorization, at_error *err)
{
    size_t tl;
    char what[AT_LIVE_TOKEN_MAX + 64];
    if (!token_ok(token, &tl))
        return at_error_set(err, AT_ERR_PROTOCOL,
                            "http-01 token '%.64s' cannot be served: a token is 1 to %d characters of "
                            "A-Z a-z 0-9 - _", token ? token : "", AT_LIVE_TOKEN_MAX);
    if (!key_authorization || !*key_authorization)
        return at_error_set(err, AT_ERR_INTERNAL, "http-01 token %s: empty key authorization", token);
    snprintf(what, sizeof(what), "the http-01 challenge %s", token);
    {
        const char *s[4] = { token, key_authorization, "", "" };
        size_t sl[4] = { tl, strlen(key_authorization), 0, 0 };
        return put_simple(lv, T_HTTP01, s, sl, what, err);
    }
}

int at_live_del_http01(at_live *lv, const char *token)
{
    size_t tl;
    if (!token_ok(token, &tl))
        return 0;
    return del_simple(lv, T_HTTP01, token, tl);
}

int at_live_put_alpn01(at_live *lv, const char *name, const char *cert_pem, const char *key_pem, at_error *err)
{
    char nm[NAME_MAX_LEN + 1], what[NAME_MAX_LEN + 64];
    size_t nl;
    if (norm_alpn_name(name, nm, &nl) != 0)
        return at_error_set(err, AT_ERR_INTERNAL, "tls-alpn-01 challenge: '%.64s' is not a host name",
                            name ? name : "");
    if (!cert_pem || !*cert_pem || !key_pem || !*key_pem)
        return at_error_set(err, AT_ERR_INTERNAL, "tls-alpn-01 challenge for %s: no certificate or key", nm);
    snprintf(what, sizeof(what), "the tls-alpn-01 challenge for %s", nm);
    {
        const char *s[4] = { nm, cert_pem, key_pem, "" };
        size_t sl[4] = { nl, strlen(cert_pem), strlen(key_pem), 0 };
        return put_simple(lv, T_ALPN01, s, sl, what, err);
    }
}

int at_live_del_alpn01(at_live *lv, const char *name)
{
    char nm[NAME_MAX_LEN + 1];
    size_t nl;
    if (norm_alpn_name(name, nm, &nl) != 0)
        return 0;
    return del_simple(lv, T_ALPN01, nm, nl);
}

/* Normalised names, NUL-separated (the CERT record's s1). */
static int names_blob(const char *cert_id, const char *const *names, size_t nnames, at_buf *blob,
                      size_t *name_bytes, at_error *err)
{
    *name_bytes = 0;
    if (nnames == 0 || nnames > NAMES_MAX)
        return at_error_set(err, AT_ERR_INTERNAL, "certificate %s: %zu names (1 to %d can be served)",
                            cert_id, nnames, NAMES_MAX);
    for (size_t i = 0; i < nnames; i++) {
        char nm[NAME_MAX_LEN + 1];
        size_t nl;
        const size_t sl[4] = { 0, 0, 0, 0 };
        if (norm_name(names[i], nm, &nl) != 0)
            return at_error_set(err, AT_ERR_INTERNAL, "certificate %s: '%.64s' is not a host name",
                                cert_id, names[i] ? names[i] : "");
        if ((i && at_buf_append(blob, "", 1) != 0) || at_buf_append(blob, nm, nl) != 0)
            return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        *name_bytes += blk_size(sl) + ((nl + 7) & ~(size_t)7);
    }
    return 0;
}

/* Point every listed name (of kind) at the certificate record newoff. */
static void names_attach(at_live *lv, unsigned kind, const unsigned char *blob, size_t bl, uint32_t newoff)
{
    const unsigned char *p = blob, *lim = blob + bl;
    while (p < lim) {
        size_t nl = strnlen((const char *)p, (size_t)(lim - p));
        lv_view nv;
        if (wfind(lv, T_NAME, kind, (const char *)p, nl, &nv)) {
            st32(&blk_at(&lv->map, nv.off)->target, newoff);
        } else {
            const char *s[4] = { (const char *)p, "", "", "" };
            size_t sl[4] = { nl, 0, 0, 0 };
            append_rec(lv, T_NAME, kind, s, sl, 0, newoff);
        }
        p += nl + 1;
    }
}

/* Drop the names that still point at the certificate record v. */
static void names_detach(at_live *lv, const lv_view *v)
{
    const unsigned char *p = v->s[1], *lim = v->s[1] + v->sl[1];
    while (p < lim) {
        size_t nl = strnlen((const char *)p, (size_t)(lim - p));
        lv_view nv;
        if (wfind(lv, T_NAME, v->kind, (const char *)p, nl, &nv) && nv.target == v->off)
            kill_rec(lv, &nv);
        p += nl + 1;
    }
}

int at_live_put_cert(at_live *lv, const char *cert_id, const char *const *names, size_t nnames,
                     at_key_kind kind, const char *chain_pem, const char *key_pem,
                     uint64_t *generation, at_error *err)
{
    at_buf blob = AT_BUF_INIT;
    size_t idl = cert_id ? strlen(cert_id) : 0, name_bytes, need;
    char what[ID_MAX_LEN + 64];
    lv_view old;
    int had;
    uint64_t gen;
    uint32_t newoff;

    if (idl == 0 || idl > ID_MAX_LEN)
        return at_error_set(err, AT_ERR_INTERNAL, "live table: a certificate id is 1 to %d bytes", ID_MAX_LEN);
    if (kind != AT_KEY_EC && kind != AT_KEY_RSA)
        return at_error_set(err, AT_ERR_INTERNAL, "certificate %s: unknown key kind %d", cert_id, (int)kind);
    if (!chain_pem || !*chain_pem || !key_pem || !*key_pem)
        return at_error_set(err, AT_ERR_INTERNAL, "certificate %s: no chain or key to publish", cert_id);
    if (strlen(chain_pem) > STR_MAX || strlen(key_pem) > STR_MAX)
        return at_error_set(err, AT_ERR_INTERNAL, "certificate %s is too large for the live table", cert_id);
    if (names_blob(cert_id, names, nnames, &blob, &name_bytes, err) != 0) {
        at_buf_free(&blob);
        return -1;
    }
    const char *s[4] = { cert_id, blob.data, chain_pem, key_pem };
    size_t sl[4] = { idl, blob.len, strlen(chain_pem), strlen(key_pem) };
    need = blk_size(sl) + name_bytes;
    snprintf(what, sizeof(what), "the certificate %s", cert_id);

    if (wr_lock(lv, err) != 0) {
        at_buf_free(&blob);
        return -1;
    }
    if (ensure_space(lv, need, what, err) != 0) {
        wr_unlock(lv);
        at_buf_free(&blob);
        return -1;
    }
    wr_begin(lv);
    had = wfind(lv, T_CERT, 0, cert_id, idl, &old);
    gen = ld64(&lv->hdr->generation) + 1;
    st64(&lv->hdr->generation, gen);
    newoff = append_rec(lv, T_CERT, (unsigned)kind, s, sl, gen, 0);
    names_attach(lv, (unsigned)kind, (const unsigned char *)blob.data, blob.len, newoff);
    if (had) {
        names_detach(lv, &old);
        kill_rec(lv, &old);
        st64(&lv->hdr->retired, ld64(&lv->hdr->retired) + 1);
    }
    wr_end(lv);
    wr_unlock(lv);
    at_buf_free(&blob);
    if (generation)
        *generation = gen;
    return 0;
}

int at_live_del_cert(at_live *lv, const char *cert_id)
{
    size_t idl = cert_id ? strlen(cert_id) : 0;
    lv_view old;
    int found;
    if (idl == 0 || idl > ID_MAX_LEN)
        return 0;
    if (wr_lock(lv, NULL) != 0)
        return -1;
    found = wfind(lv, T_CERT, 0, cert_id, idl, &old);
    if (found) {
        wr_begin(lv);
        names_detach(lv, &old);
        kill_rec(lv, &old);
        st64(&lv->hdr->retired, ld64(&lv->hdr->retired) + 1);
        wr_end(lv);
    }
    wr_unlock(lv);
    return found;
}

/* ------------------------------------------------------------ reader */

#define RD_INIT(l) { (l), 0, 0, 0, { 0, 0 } }

/* One attempt: find the record (type, kind, key) in the current image.
 * 1 found, 0 not found, -1 inconsistent. */
static int rfind(const lv_rd *r, unsigned type, unsigned kind, const char *key, size_t klen, lv_view *v)
{
    uint32_t h = lv_hash(type, key_kind(type, kind), key, klen);
    return map_find(&r->lv->map, &r->lv->hdr->seq, r->seq, type, kind, key, klen, h, v);
}

int at_live_get_http01(at_live *lv, const char *token, char *out, size_t outsz)
{
    lv_rd r = RD_INIT(lv);
    size_t tl;
    int rc, e;

    if (!out || outsz == 0)
        return -1;
    out[0] = '\0';
    if (!token_ok(token, &tl))
        return 0;
    for (;;) {
        lv_view v;
        if (rd_begin(&r) != 0)
            return -1;
        rc = rfind(&r, T_HTTP01, 0, token, tl, &v);
        if (rc == 1) {
            if (v.sl[1] < outsz) {
                memcpy(out, v.s[1], v.sl[1]);
                out[v.sl[1]] = '\0';
            } else {
                rc = 2;
            }
        }
        if ((e = rd_end(&r)) == 1)
            break;
        out[0] = '\0';
        if (e < 0)
            return -1;
    }
    if (rc == 2) {
        out[0] = '\0';
        return -1;
    }
    return rc == 1 ? 1 : 0;
}

/* Append s to b from the region; the buffer is rolled back by the caller on retry. */
static int copy_out(const lv_rd *r, at_buf *b, const unsigned char *s, uint32_t n)
{
    if (!b)
        return 0;
    if (!rd_still(r))
        return 0;   /* the copy would be discarded anyway */
    return at_buf_append(b, s, n);
}

static void roll_back(at_buf *b, size_t len)
{
    if (b && b->data) {
        b->len = len;
        b->data[len] = '\0';
    }
}

int at_live_get_alpn01(at_live *lv, const char *name, at_buf *cert_pem, at_buf *key_pem)
{
    lv_rd r = RD_INIT(lv);
    char nm[NAME_MAX_LEN + 1];
    size_t nl, cl0 = cert_pem ? cert_pem->len : 0, kl0 = key_pem ? key_pem->len : 0;
    int rc, e, oom;

    if (norm_alpn_name(name, nm, &nl) != 0)
        return 0;
    for (;;) {
        lv_view v;
        oom = 0;
        if (rd_begin(&r) != 0)
            return -1;
        rc = rfind(&r, T_ALPN01, 0, nm, nl, &v);
        if (rc == 1 && (copy_out(&r, cert_pem, v.s[1], v.sl[1]) != 0 || copy_out(&r, key_pem, v.s[2], v.sl[2]) != 0))
            oom = 1;
        if ((e = rd_end(&r)) == 1 && !oom)
            break;
        roll_back(cert_pem, cl0);
        roll_back(key_pem, kl0);
        if (e < 0 || oom)
            return -1;
    }
    return rc == 1 ? 1 : 0;
}

/* The certificate a name record points at; 1, 0, or -1 inconsistent. */
static int cert_for(const lv_rd *r, const char *nm, size_t nl, unsigned kind, lv_view *cv)
{
    lv_view nv;
    int rc = rfind(r, T_NAME, kind, nm, nl, &nv);
    if (rc != 1)
        return rc;
    if (blk_view(&r->lv->map, nv.target, cv) != 0 || cv->type != T_CERT)
        return -1;
    return 1;
}

int at_live_cert_gen(at_live *lv, const char *host, at_key_kind kind,
                     uint32_t *entry, uint64_t *generation)
{
    lv_rd r = RD_INIT(lv);
    char nm[NAME_MAX_LEN + 3];
    size_t nl;
    const char *dot;
    int rc, e;
    lv_view cv;

    if (norm_name(host, nm, &nl) != 0)
        return 0;
    for (;;) {
        if (rd_begin(&r) != 0)
            return -1;
        rc = cert_for(&r, nm, nl, (unsigned)kind, &cv);
        if (rc == 0 && (dot = memchr(nm, '.', nl)) != NULL && dot != nm && (size_t)(dot - nm) + 1 < nl) {
            /* "*.parent" for a host one label below parent. */
            char wc[NAME_MAX_LEN + 3];
            size_t rest = nl - (size_t)(dot - nm);
            wc[0] = '*';
            memcpy(wc + 1, dot, rest);
            wc[rest + 1] = '\0';
            rc = cert_for(&r, wc, rest + 1, (unsigned)kind, &cv);
        }
        if ((e = rd_end(&r)) == 1)
            break;
        if (e < 0)
            return -1;
    }
    if (rc != 1)
        return 0;
    if (entry)
        *entry = cv.off;
    if (generation)
        *generation = cv.gen;
    return 1;
}

int at_live_get_cert(at_live *lv, uint32_t entry, at_buf *chain_pem, at_buf *key_pem,
                     uint64_t *generation)
{
    lv_rd r = RD_INIT(lv);
    size_t cl0 = chain_pem ? chain_pem->len : 0, kl0 = key_pem ? key_pem->len : 0;
    int rc, e, oom;
    uint64_t gen = 0;

    for (;;) {
        lv_view v;
        oom = 0;
        if (rd_begin(&r) != 0)
            return -1;
        rc = blk_view(&lv->map, entry, &v) == 0 && v.type == T_CERT;
        if (rc) {
            gen = v.gen;
            if (copy_out(&r, chain_pem, v.s[2], v.sl[2]) != 0 || copy_out(&r, key_pem, v.s[3], v.sl[3]) != 0)
                oom = 1;
        }
        if ((e = rd_end(&r)) == 1 && !oom)
            break;
        roll_back(chain_pem, cl0);
        roll_back(key_pem, kl0);
        if (e < 0 || oom)
            return -1;
    }
    if (!rc)
        return 0;
    if (generation)
        *generation = gen;
    return 1;
}

int at_live_cert_id(at_live *lv, uint32_t entry, char *id, size_t idsz, uint64_t *generation)
{
    lv_rd r = RD_INIT(lv);
    int rc, e;
    uint64_t gen = 0;

    if (!id || idsz == 0)
        return -1;
    for (;;) {
        lv_view v;
        if (rd_begin(&r) != 0)
            return -1;
        rc = blk_view(&lv->map, entry, &v) == 0 && v.type == T_CERT;
        if (rc) {
            gen = v.gen;
            if (v.sl[0] < idsz) {
                memcpy(id, v.s[0], v.sl[0]);
                id[v.sl[0]] = '\0';
            } else {
                rc = 2;
            }
        }
        if ((e = rd_end(&r)) == 1)
            break;
        if (e < 0)
            return -1;
    }
    if (rc != 1) {
        id[0] = '\0';
        return rc == 2 ? -1 : 0;
    }
    if (generation)
        *generation = gen;
    return 1;
}

int at_live_cert_current(at_live *lv, const char *cert_id, uint64_t *generation)
{
    lv_rd r = RD_INIT(lv);
    size_t idl = cert_id ? strlen(cert_id) : 0;
    int rc, e;
    lv_view v;

    if (idl == 0 || idl > ID_MAX_LEN)
        return 0;
    for (;;) {
        if (rd_begin(&r) != 0)
            return -1;
        rc = rfind(&r, T_CERT, 0, cert_id, idl, &v);
        if ((e = rd_end(&r)) == 1)
            break;
        if (e < 0)
            return -1;
    }
    if (rc != 1)
        return 0;
    if (generation)
        *generation = v.gen;
    return 1;
}

uint64_t at_live_retired(at_live *lv)
{
    return __atomic_load_n(&lv->hdr->retired, __ATOMIC_ACQUIRE);
}

void at_live_get_stats(at_live *lv, at_live_stats *st)
{
    lv_hdr *h = lv->hdr;
    memset(st, 0, sizeof(*st));
    st->size = lv->size;
    st->used = ld32(&h->used);
    st->live = (size_t)lv->map.area_off + ld32(&h->live);
    st->certs = ld32(&h->ncerts);
    st->names = ld32(&h->nnames);
    st->http01 = ld32(&h->nhttp01);
    st->alpn01 = ld32(&h->nalpn01);
    st->generation = ld64(&h->generation);
    st->retired = ld64(&h->retired);
    st->compactions = ld64(&h->compactions);
    st->repairs = ld64(&h->repairs);
    st->reader_retries = __atomic_load_n(&lv->retries, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------ testing */

int at_live_test_abandon_write(at_live *lv)
{
    uint32_t used;
    if (wr_lock(lv, NULL) != 0)
        return -1;
    wr_begin(lv);
    used = ld32(&lv->hdr->used);
    if (lv->map.end - used >= sizeof(lv_blk)) {
        lv_blk *b = blk_at(&lv->map, used);
        st32(&b->tag, BLK_MAGIC | ((uint32_t)T_CERT << 16) | ((uint32_t)AT_KEY_EC << 24));
        st32(&b->len, 0x7FFFFFF8u);
    }
    st32(&lv->map.buckets[0], lv->map.end - 8);
    st32(&lv->map.buckets[1], used);
    return 0;
}
