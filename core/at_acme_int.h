/*
 * at_acme_int.h: what the at_acme_*.c files share and nobody else needs:
 * limits on what a CA may send, problem-document formatting, and the common
 * plumbing of operations (requests in flight, the outbox of steps, finishing).
 */
#ifndef AT_ACME_INT_H
#define AT_ACME_INT_H

#include "at_acme.h"
#include "at_json.h"

/* Limits on untrusted input: a CA that exceeds them is broken or hostile and
 * the operation fails cleanly instead of allocating without bound. */
#define AT_ACME_MAX_AUTHZ        256   /* authorizations in one order */
#define AT_ACME_MAX_CHALLENGES   32    /* challenges in one authorization */
#define AT_ACME_MAX_PROFILES     64
#define AT_ACME_MAX_ALT_CHAINS   8     /* alternate chains looked at */
#define AT_ACME_MAX_SUBPROBLEMS  5     /* subproblems quoted in a message */
#define AT_ACME_MAX_TOKEN        256
#define AT_ACME_NONCE_POOL       16
#define AT_ACME_PROBLEM_PREFIX   "urn:ietf:params:acme:error:"

/* Fill err from a problem document (doc may be NULL or not an object: then
 * only `status` and `raw` describe the failure). `what` prefixes the message,
 * resp (may be NULL) supplies Link rel="terms-of-service" for
 * userActionRequired, retry_after (seconds, -1 = none) is kept in err. The
 * document is deep-copied into err->problem. Always returns -1. */
int at_acme_problem_doc(at_error *err, const json_t *doc, long status, const char *what,
                        const at_http_resp *resp, long retry_after,
                        const char *raw, size_t raw_len);

/* Append s to b without control characters, cut at max bytes ("..." marks a cut). */
void at_acme_append_clean(at_buf *b, const char *s, size_t len, size_t max);

/* Short problem type ("badNonce") of a document, or NULL. */
const char *at_acme_doc_type(const json_t *doc);

/* ------------------------------------------------------------- operations */

typedef struct at_op_req at_op_req;
typedef void at_op_resp_fn(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                           const at_error *terr, time_t now);

/* A request an op wants sent; freed after its reply was handled. */
struct at_op_req {
    unsigned       tag;
    int            emitted;   /* handed out as a REQUEST step */
    at_acme_req    req;
    at_op_resp_fn *on_resp;
    size_t         idx;       /* the op's own index (authorization, chain ...) */
    unsigned       delay_ms;  /* hold the request back this long (step.delay_ms) */
    at_op_req     *next;
};

typedef enum at_op_kind {
    AT_OP_ORDER = 1,
    AT_OP_ACCOUNT,
    AT_OP_REVOKE,
    AT_OP_ARI
} at_op_kind;

typedef struct at_op_vt {
    /* Queue more work (requests, steps, timers via at_op_wake_at) or finish. */
    void (*advance)(at_acme_op *op, time_t now);
    /* A PUBLISH step was answered. */
    void (*published)(at_acme_op *op, unsigned tag, const at_error *err);
    /* The op is finishing (failure, cancel or success): queue WITHDRAW steps
     * for everything still published. */
    void (*teardown)(at_acme_op *op);
    void (*free)(at_acme_op *op);
} at_op_vt;

typedef struct at_op_outstep {
    at_step_kind kind;
    unsigned     tag;
    const at_challenge_info *chal;
} at_op_outstep;

typedef enum at_op_end {
    AT_OP_RUNNING = 0,
    AT_OP_SUCCEEDING,       /* success decided; teardown then DONE */
    AT_OP_FAILING,          /* failure decided; teardown then FAILED */
    AT_OP_ENDED             /* DONE or FAILED returned */
} at_op_end;

typedef struct at_order_st at_order_st;
typedef struct at_account_st at_account_st;

struct at_acme_op {
    const at_op_vt *vt;
    at_op_kind      kind;
    at_acme_client *client;      /* borrowed; outlives the op */
    unsigned        next_tag;
    at_op_req      *reqs;        /* in creation order */
    at_op_outstep  *out;         /* FIFO of PUBLISH / WITHDRAW / CHECKPOINT */
    size_t          nout, out_head, out_cap;
    at_op_end       end;
    at_step_kind    final;       /* DONE or FAILED once ended */
    int             cancelled;
    int             torn_down;
    unsigned long   progress;    /* bumped whenever anything is queued or decided */
    time_t          wake;        /* earliest timer asked for during advance, 0 = none */
    int             pending_pubs;/* PUBLISH steps not answered yet */
    at_error        err;
    /* results */
    char           *account_url;
    json_t         *account;
    at_ari_result   ari;
    int             have_ari;
    /* kind specific */
    at_order_st    *order;
    at_account_st  *acct;
    void           *priv;
};

at_acme_op *at_op_new(at_acme_client *c, at_op_kind kind, const at_op_vt *vt);

/* Queue a request. url and accept are copied; payload is taken (malloc'd, may
 * be NULL for POST-as-GET). Returns NULL (and fails the op) on OOM. */
at_op_req *at_op_request(at_acme_op *op, at_acme_req_kind kind, const char *url, char *payload,
                         const char *accept, at_op_resp_fn *fn, size_t idx);

/* Queue a PUBLISH / WITHDRAW / CHECKPOINT step. Returns the tag. */
unsigned at_op_push_step(at_acme_op *op, at_step_kind kind, const at_challenge_info *chal);

/* Ask to be advanced again at t (the earliest request wins). */
void at_op_wake_at(at_acme_op *op, time_t t);

/* Decide the outcome. at_op_fail* keep the first failure. */
void at_op_succeed(at_acme_op *op);
void at_op_fail(at_acme_op *op, at_errcode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void at_op_fail_err(at_acme_op *op, at_error *err);          /* moves err */
int  at_op_running(const at_acme_op *op);                    /* not cancelled, no outcome yet */

/* Check a reply: transport error or CA problem -> -1 with out filled
 * (prefixed by what). Otherwise 0. */
int at_op_check(const at_http_resp *resp, const at_error *terr, const char *what,
                time_t now, at_error *out);

/* Parse a reply body as a JSON object (AT_ERR_PROTOCOL/PARSE with what). */
json_t *at_op_json(const at_http_resp *resp, const char *what, at_error *err);

/* Nonces and requests in flight: is anything still expected from the host? */
int at_op_busy(const at_acme_op *op);

/* "mailto:" in front of a bare address; new JSON array (NULL on OOM). */
json_t *at_acme_contact_array(const char *const *contact, size_t n);

#endif
