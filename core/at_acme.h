/*
 * at_acme.h: the ACME protocol (RFC 8555, RFC 8737, RFC 8738, RFC 9773) as
 * sans-I/O state machines. Nothing here touches a socket, a file or a clock:
 * callers pass `now`, send the requests the machines produce, and feed back
 * the responses. Every transition can be driven from recorded responses.
 *
 * Three layers:
 *   at_acme_dir     the parsed directory
 *   at_acme_client  per-CA context: directory, account key and URL, nonce pool
 *   at_acme_exch    one logical ACME request through the client: it fetches a
 *                   nonce when the pool is empty, signs, and re-signs and
 *                   resends on badNonce (bounded). Several exchanges can be in
 *                   flight on one client at once.
 *   at_acme_op      a protocol operation (order, account, revocation, ARI)
 *                   that yields steps: requests to send, challenges to publish,
 *                   checkpoints to persist, waits, and a final result.
 */
#ifndef AT_ACME_H
#define AT_ACME_H

#include <stddef.h>
#include <time.h>
#include <jansson.h>
#include <openssl/evp.h>
#include "at_error.h"
#include "at_buf.h"
#include "at_http.h"
#include "at_key.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- directory */

typedef struct at_acme_profile {
    char *name;
    char *description;
} at_acme_profile;

typedef struct at_acme_dir {
    char *url;            /* the directory URL itself */
    char *new_nonce;
    char *new_account;
    char *new_order;
    char *new_authz;      /* optional (pre-authorization) */
    char *revoke_cert;
    char *key_change;
    char *renewal_info;   /* optional (RFC 9773) */
    /* meta */
    char *terms_of_service;
    char *website;
    int   external_account_required;
    at_acme_profile *profiles;
    size_t nprofiles;
} at_acme_dir;

/* Parse a directory response. Missing mandatory resources (newNonce,
 * newAccount, newOrder) are an error that names the URL. */
int  at_acme_dir_parse(at_acme_dir *dir, const char *url, const at_http_resp *resp, at_error *err);
void at_acme_dir_free(at_acme_dir *dir);
int  at_acme_dir_has_profile(const at_acme_dir *dir, const char *name);

/* ------------------------------------------------------------------ problem */

/* If resp is an error response (status >= 400), fill err from it: the
 * problem document (type, detail, subproblems, status) becomes err->problem
 * and err->msg a sentence a person can act on, prefixed by `what`
 * ("newOrder for example.com"). Sets err->retry_after from Retry-After and
 * uses AT_ERR_RATELIMIT for 429 / rateLimited. Non-JSON bodies are quoted
 * (truncated). Returns -1 if resp was an error, 0 otherwise. */
int at_acme_problem(const at_http_resp *resp, const char *what, time_t now, at_error *err);

/* Short problem type without the "urn:ietf:params:acme:error:" prefix, or
 * NULL if err carries no problem document. */
const char *at_acme_problem_type(const at_error *err);

/* --------------------------------------------------------- client, requests */

typedef enum at_acme_req_kind {
    AT_AREQ_GET = 0,     /* unauthenticated GET (directory, renewalInfo) */
    AT_AREQ_HEAD,        /* unauthenticated HEAD (newNonce) */
    AT_AREQ_POST_KID,    /* JWS with "kid" = account URL */
    AT_AREQ_POST_JWK     /* JWS with "jwk" (newAccount, revocation by key) */
} at_acme_req_kind;

/* What an operation wants sent. Owned by the operation that produced it. */
typedef struct at_acme_req {
    at_acme_req_kind kind;
    char   *url;
    char   *payload;   /* JSON text; NULL = POST-as-GET (empty payload) */
    char   *accept;    /* Accept header or NULL */
} at_acme_req;

typedef struct at_acme_client at_acme_client;

at_acme_client *at_acme_client_new(const char *directory_url, at_error *err);
void at_acme_client_free(at_acme_client *c);

const char *at_acme_client_url(const at_acme_client *c);

/* Install the directory from its response. */
int at_acme_client_set_directory(at_acme_client *c, const at_http_resp *resp, at_error *err);
/* NULL until a directory has been installed. */
const at_acme_dir *at_acme_client_dir(const at_acme_client *c);

/* Account key (up-referenced) and account URL (copied; NULL = none yet). */
void at_acme_client_set_account(at_acme_client *c, EVP_PKEY *key, const char *kid);
EVP_PKEY *at_acme_client_key(const at_acme_client *c);   /* borrowed */
const char *at_acme_client_kid(const at_acme_client *c); /* or NULL */

/* Nonce pool (bounded; oldest dropped). Every response's Replay-Nonce goes here. */
void   at_acme_client_nonce_push(at_acme_client *c, const char *nonce);
size_t at_acme_client_nonce_count(const at_acme_client *c);

/* Most badNonce retries per exchange (default 5). */
void at_acme_client_set_nonce_retries(at_acme_client *c, int n);

typedef struct at_acme_exch at_acme_exch;

typedef enum at_exch_state {
    AT_EXCH_SEND,    /* send *out, then at_acme_exch_feed() the response */
    AT_EXCH_WAIT,    /* call next again at *until (transient-error backoff) */
    AT_EXCH_DONE,    /* final response available: at_acme_exch_response() */
    AT_EXCH_FAILED   /* err filled (transport failure after retries, signing error) */
} at_exch_state;

/* The request is copied. */
at_acme_exch *at_acme_exch_new(at_acme_client *c, const at_acme_req *req);
void at_acme_exch_free(at_acme_exch *x);

/* Next thing to do. On AT_EXCH_SEND, *out is a fresh request the caller owns
 * (at_http_req_free). A HEAD to newNonce is produced first when the pool is
 * empty. The client must have its directory. AT_EXCH_WAIT with *until == 0
 * means a reply is still due (next() was called before feed()). */
at_exch_state at_acme_exch_next(at_acme_exch *x, time_t now, at_http_req *out,
                                time_t *until, at_error *err);

/* Feed the response of the last AT_EXCH_SEND (ownership of resp's contents
 * moves into the exchange; resp is reset). transport_err non-NULL means no
 * HTTP response arrived (connect failure, timeout, size limit). Idempotent
 * requests (GET, HEAD, POST-as-GET) are retried on transport errors and 5xx
 * a bounded number of times with a short backoff. */
void at_acme_exch_feed(at_acme_exch *x, at_http_resp *resp, const at_error *transport_err, time_t now);

/* The final response (valid after AT_EXCH_DONE; owned by the exchange). */
const at_http_resp *at_acme_exch_response(const at_acme_exch *x);

/* ------------------------------------------------------------- operations */

typedef enum at_challenge_type {
    AT_CHAL_NONE = 0,
    AT_CHAL_HTTP01 = 1,
    AT_CHAL_TLSALPN01 = 2,
    AT_CHAL_DNS01 = 3
} at_challenge_type;

/* "http-01" etc.; NULL for unknown. */
const char *at_challenge_name(at_challenge_type t);
at_challenge_type at_challenge_parse(const char *s);

/* A challenge the host must make answerable (PUBLISH) or remove (WITHDRAW). */
typedef struct at_challenge_info {
    at_challenge_type type;
    char *identifier;         /* "example.com", "192.0.2.1"; for "*.example.com" the base name */
    int   wildcard;
    char *token;
    char *key_authorization;  /* token.thumbprint */
    char *dns_name;           /* dns-01: "_acme-challenge.example.com" */
    char *dns_value;          /* dns-01: base64url(SHA-256(key authorization)) */
    char *alpn_cert_pem;      /* tls-alpn-01: RFC 8737 certificate ... */
    char *alpn_key_pem;       /* ... and its key */
} at_challenge_info;

typedef enum at_step_kind {
    AT_STEP_REQUEST = 1, /* run step->req through an exchange, then at_acme_op_response(op, tag, ...) */
    AT_STEP_PUBLISH,     /* make step->chal answerable, then at_acme_op_published(op, tag, err) */
    AT_STEP_WITHDRAW,    /* stop answering step->chal; no reply needed */
    AT_STEP_CHECKPOINT,  /* persist at_acme_op_checkpoint(op) (and the order key) now */
    AT_STEP_WAIT,        /* nothing to do until step->until, or until a reply arrives */
    AT_STEP_DONE,        /* finished: read the result */
    AT_STEP_FAILED       /* finished: at_acme_op_error(op) */
} at_step_kind;

typedef struct at_step {
    at_step_kind kind;
    unsigned     tag;               /* echo it back with the reply */
    const at_acme_req *req;         /* REQUEST: owned by the op, valid until the reply */
    const at_challenge_info *chal;  /* PUBLISH / WITHDRAW: owned by the op */
    time_t       until;             /* WAIT: 0 = only a reply can move things on */
    unsigned     delay_ms;          /* REQUEST: send it no sooner than this (a quick poll), 0 = at once */
} at_step;

typedef struct at_acme_op at_acme_op;

/* Parameters of a new order. Strings are copied. */
typedef struct at_order_params {
    const char *const *names;           /* DNS names, "*.wildcards", IP literals */
    size_t       nnames;
    at_key_spec  key;                   /* certificate key type */
    const at_challenge_type *challenges;/* preference order; wildcards use dns-01 only */
    size_t       nchallenges;
    const char  *profile;               /* sent only when the directory lists profiles; NULL = none */
    const char  *profile_hint;          /* how the admin sets it, e.g. "AutoTLSProfile NAME", or NULL */
    const char  *replaces;              /* ARI certificate id of the predecessor, or NULL */
    const char  *preferred_chain;       /* issuer CN of the wanted chain's top, or NULL */
    long         poll_timeout;          /* max seconds waiting for pending/processing (default 300) */
    int          use_preauthorization;  /* use newAuthz when the directory has it (default 1) */
    long         quick_poll_ms;         /* > 0: the first polls of a pending authorization or a
                                           processing order come after this many ms, doubling
                                           below a second, as REQUEST steps with delay_ms (the
                                           host holds them back); then whole seconds. 0 = seconds only */
} at_order_params;

/* A new order. The certificate key is generated now (at_acme_op_cert_key).
 * Refused at once (AT_ERR_CONFIG) when a wildcard lacks dns-01, an IP
 * address has only dns-01, or the directory lists profiles and not
 * p->profile (the message names those offered). */
at_acme_op *at_acme_order_new(at_acme_client *c, const at_order_params *p, at_error *err);

/* Resume an order from a checkpoint and the key saved with it (up-referenced).
 * The op first re-reads the order URL; if the CA no longer knows it, or it is
 * invalid, a fresh order is placed (same key). */
at_acme_op *at_acme_order_resume(at_acme_client *c, const at_order_params *p,
                                 const json_t *checkpoint, EVP_PKEY *cert_key, at_error *err);

/* Account operations. */
typedef enum at_account_action {
    AT_ACCOUNT_ENSURE = 1,     /* find by key (onlyReturnExisting), else create */
    AT_ACCOUNT_FETCH,          /* POST-as-GET the account URL */
    AT_ACCOUNT_UPDATE_CONTACT, /* set params->contact */
    AT_ACCOUNT_ROLLOVER,       /* keyChange to params->new_key */
    AT_ACCOUNT_DEACTIVATE
} at_account_action;

typedef struct at_account_params {
    const char *const *contact;  /* "mailto:..." entries (a bare address gets "mailto:") */
    size_t       ncontact;
    int          accept_terms;
    const char  *eab_kid;        /* NULL = no EAB */
    const char  *eab_hmac_key;   /* base64url */
    const char  *eab_alg;        /* NULL = HS256 */
    EVP_PKEY    *new_key;        /* ROLLOVER */
    const char  *terms_hint;     /* how the admin accepts terms, e.g. "AutoTLSAcceptTerms on" */
    const char  *eab_hint;       /* how the admin configures EAB, e.g. "AutoTLSEAB KID KEY" */
} at_account_params;

/* Uses the client's key and kid. ENSURE is refused at once (AT_ERR_CONFIG,
 * nothing sent) when the directory requires external account binding and
 * none is configured (naming eab_hint), or has terms of service that are not
 * accepted (naming the terms URL and terms_hint). A successful ROLLOVER
 * installs new_key in the client. */
at_acme_op *at_acme_account_new(at_acme_client *c, at_account_action action,
                                const at_account_params *p, at_error *err);

/* Revoke a certificate (PEM, leaf first) with the account key. reason per
 * RFC 5280 (0 unspecified, 1 keyCompromise, 4 superseded, 5 cessationOfOperation) or -1.
 * A certificate the CA reports as alreadyRevoked counts as done. */
at_acme_op *at_acme_revoke_new(at_acme_client *c, const char *cert_pem, int reason, at_error *err);

/* "keyCompromise" etc. -> code, -1 if unknown. */
int at_revoke_reason_parse(const char *s);

/* RFC 9773 renewal information for a certificate (PEM, leaf first). Fails with
 * AT_ERR_NOTFOUND when the directory has no renewalInfo (at once) or the CA
 * answers 404 (the op fails). */
at_acme_op *at_acme_ari_new(at_acme_client *c, const char *cert_pem, at_error *err);

/* Drive an op: call repeatedly; each call returns the next step. REQUEST and
 * PUBLISH steps may come several in a row (they run concurrently); WAIT means
 * "nothing more until a reply or until step->until". Once DONE or FAILED is
 * returned, every later call returns it again and late replies are ignored.
 * Anything published is withdrawn (WITHDRAW steps) before DONE or FAILED.
 * Returns -1 with FAILED, else 0. */
int  at_acme_op_step(at_acme_op *op, time_t now, at_step *step);

/* Reply to a REQUEST step: the exchange's final response, or transport_err. */
void at_acme_op_response(at_acme_op *op, unsigned tag, const at_http_resp *resp,
                         const at_error *transport_err, time_t now);

/* Reply to a PUBLISH step: NULL = published, else why it could not be. */
void at_acme_op_published(at_acme_op *op, unsigned tag, const at_error *err);

/* Cancel: subsequent steps withdraw what is published, then FAILED (AT_ERR_CANCELLED). */
void at_acme_op_cancel(at_acme_op *op);

const at_error *at_acme_op_error(const at_acme_op *op);
void at_acme_op_free(at_acme_op *op);

/* Order results and state. */
json_t   *at_acme_op_checkpoint(const at_acme_op *op);   /* new ref: {"order_url":..,"status":..,"names":[..],"key":"ec:P-256",...} */
EVP_PKEY *at_acme_op_cert_key(const at_acme_op *op);     /* borrowed */
const char *at_acme_op_chain_pem(const at_acme_op *op);  /* DONE: chosen chain, else NULL */
const char *at_acme_op_order_url(const at_acme_op *op);  /* or NULL */
/* Which challenge types validated the identifiers ("http-01", or
 * "http-01,dns-01" when mixed), for status; NULL when every authorization
 * was already valid. */
const char *at_acme_op_challenge_used(const at_acme_op *op);

/* Account results. */
const char *at_acme_op_account_url(const at_acme_op *op);
const json_t *at_acme_op_account(const at_acme_op *op);  /* the account object */

/* ARI results. */
typedef struct at_ari_result {
    time_t start;
    time_t end;
    time_t retry_after;           /* absolute time to ask again, 0 if the CA gave none */
    char   explanation_url[512];
} at_ari_result;
const at_ari_result *at_acme_op_ari(const at_acme_op *op);

/* A uniformly random moment in [start, end) (RFC 9773 §4.2). */
time_t at_ari_pick(const at_ari_result *r, unsigned long random);

#ifdef __cplusplus
}
#endif
#endif
