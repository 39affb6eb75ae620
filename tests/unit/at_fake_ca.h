/*
 * at_fake_ca.h: an in-memory ACME CA for unit tests. It answers at_http_req
 * values with at_http_resp values the way an RFC 8555 server would: the
 * directory, nonces (each accepted once), JWS verification (kid and jwk),
 * accounts (onlyReturnExisting, terms, EAB, contact update, keyChange,
 * deactivation), orders with DNS and IP identifiers, authorizations and
 * challenges (http-01, dns-01, tls-alpn-01), pre-authorization (newAuthz),
 * finalize (the CSR is parsed and checked against the order), certificates
 * signed by its own root with an optional alternate chain, revocation and
 * renewal information (RFC 9773). Knobs inject the faults a real CA shows.
 *
 * URLs: everything lives under the base URL (default AT_FAKE_CA_BASE):
 *   BASE/dir  /nonce  /new-acct  /new-order  /new-authz  /revoke  /key-change
 *   /renewal-info/<id>  /acct/N  /order/N  /order/N/finalize  /authz/N
 *   /chal/N  /cert/N  /cert/N/alt
 *
 * Resource names (for faults, counters and recorded payloads):
 *   "directory" "newNonce" "newAccount" "newOrder" "newAuthz" "revokeCert"
 *   "keyChange" "renewalInfo" "account" "order" "finalize" "authz"
 *   "challenge" "cert"
 *
 * Validation: a challenge answered with "{}" is checked by the validator
 * callback. The default validator checks what was published through
 * at_fake_ca_publish(): the http-01 token and key authorization, the dns-01
 * record name and TXT value, or the tls-alpn-01 certificate (SAN and the
 * critical acmeIdentifier extension with SHA-256 of the key authorization).
 *
 * Time: the CA uses at_fake_ca_set_now()'s clock, or at_time_now() if unset.
 * Nothing here is thread-safe; nothing touches the network.
 */
#ifndef AT_FAKE_CA_H
#define AT_FAKE_CA_H

#include <stddef.h>
#include <time.h>
#include <jansson.h>
#include "at_http.h"
#include "at_acme.h"

#define AT_FAKE_CA_BASE "https://ca.test"
#define AT_FAKE_CA_ROOT_CN "Fake Root X1"
#define AT_FAKE_CA_ALT_ROOT_CN "Fake Alt Root X2"

typedef struct at_fake_ca at_fake_ca;

/* base_url NULL = AT_FAKE_CA_BASE. Generates the root keys and certificates.
 * Defaults: offers http-01, tls-alpn-01 and dns-01; renewalInfo and
 * keyChange present; no newAuthz, no terms, no EAB, no profiles, no
 * alternate chain; validation immediate. */
at_fake_ca *at_fake_ca_new(const char *base_url);
void at_fake_ca_free(at_fake_ca *ca);

/* BASE/dir (owned by ca). */
const char *at_fake_ca_directory_url(const at_fake_ca *ca);

/* Answer one request. resp is (re)initialised; the caller frees it with
 * at_http_resp_free. Always returns 0 (errors are HTTP answers). */
int at_fake_ca_handle(at_fake_ca *ca, const at_http_req *req, at_http_resp *resp);

/* Clock used for certificates, Retry-After dates and windows (0 = real clock). */
void at_fake_ca_set_now(at_fake_ca *ca, time_t now);

/* ------------------------------------------------------------- directory */

void at_fake_ca_set_terms(at_fake_ca *ca, const char *terms_url);  /* NULL = none; new accounts must agree */
void at_fake_ca_require_eab(at_fake_ca *ca, const char *kid, const char *hmac_key_b64url); /* NULL kid = off */
void at_fake_ca_add_profile(at_fake_ca *ca, const char *name, const char *description);
void at_fake_ca_set_new_authz(at_fake_ca *ca, int on);      /* offer newAuthz (pre-authorization) */
void at_fake_ca_set_renewal_info(at_fake_ca *ca, int on);   /* offer renewalInfo */
void at_fake_ca_set_key_change(at_fake_ca *ca, int on);     /* offer keyChange */

/* ---------------------------------------------------------------- nonces */

/* Refuse this share (0..100) of otherwise valid nonces with badNonce
 * (deterministic pseudo-random sequence). */
void at_fake_ca_set_bad_nonce_rate(at_fake_ca *ca, unsigned percent);
/* Refuse the next n nonces with badNonce. */
void at_fake_ca_bad_nonce_next(at_fake_ca *ca, unsigned n);
/* Leave Replay-Nonce off every response except newNonce's. */
void at_fake_ca_omit_nonces(at_fake_ca *ca, int on);

/* ---------------------------------------------------------------- faults */

/* Answer the next `count` requests to `resource` with `status` and a problem
 * document of `type` (short form, "rateLimited"; prefixed with the ACME URN)
 * and `detail`, plus Retry-After: retry_after when >= 0. type NULL sends
 * `detail` as a text/plain body instead (a proxy's error page). */
void at_fake_ca_fail_next(at_fake_ca *ca, const char *resource, int count, long status,
                          const char *type, const char *detail, long retry_after);
/* Answer the next request to `resource` with this exact body (e.g. broken
 * JSON). Faults are answered in the order they were added. */
void at_fake_ca_raw_next(at_fake_ca *ca, const char *resource, long status,
                         const char *content_type, const char *body, size_t len);

/* ------------------------------------------------------- orders, challenges */

/* Challenge types offered, comma-separated ("http-01,dns-01"). Wildcards
 * always get dns-01 only, IP identifiers never get dns-01. */
void at_fake_ca_set_challenges(at_fake_ca *ca, const char *types);
/* Authorizations for this identifier ("example.com", "*.example.com") are
 * valid from the start. */
void at_fake_ca_preauthorize(at_fake_ca *ca, const char *identifier);
/* Validation of this identifier (NULL = every one) fails with the given
 * problem type and detail. */
void at_fake_ca_fail_challenge(at_fake_ca *ca, const char *identifier, const char *type,
                               const char *detail);
/* After "{}", authorizations stay pending (challenge processing) for n reads. */
void at_fake_ca_set_pending_polls(at_fake_ca *ca, int n);
/* After finalize, orders stay processing for n reads. */
void at_fake_ca_set_processing_polls(at_fake_ca *ca, int n);
/* Retry-After (seconds) on pending authorizations and processing orders; -1 = none. */
void at_fake_ca_set_poll_retry_after(at_fake_ca *ca, long seconds);
/* Offer an alternate chain (Link rel="alternate") up to AT_FAKE_CA_ALT_ROOT_CN. */
void at_fake_ca_set_alt_chain(at_fake_ca *ca, int on);
/* Refuse every newOrder that carries "replaces" (409 alreadyReplaced). */
void at_fake_ca_refuse_replaces(at_fake_ca *ca, int on);
/* Make the CA forget every order (reads answer 404), or mark them invalid. */
void at_fake_ca_forget_orders(at_fake_ca *ca);
void at_fake_ca_invalidate_orders(at_fake_ca *ca);
/* Renewal information: a fixed window (0, 0 = derived from the certificate),
 * the Retry-After to send (-1 none) and an explanation URL (NULL none). */
void at_fake_ca_set_ari(at_fake_ca *ca, time_t start, time_t end, long retry_after,
                        const char *explanation_url);

/* A challenge as the CA expects it to be answered. */
typedef struct at_fake_ca_chal {
    const char *type;                /* "http-01" ... */
    const char *identifier;          /* base name for wildcards */
    int         wildcard;
    const char *token;
    const char *key_authorization;   /* expected */
    const char *dns_value;           /* expected TXT value (dns-01) */
} at_fake_ca_chal;

/* Return 1 if the challenge is answered correctly, 0 if not; *detail may
 * name what was wrong (static or ca-owned string). */
typedef int at_fake_ca_validate_fn(void *ud, at_fake_ca *ca, const at_fake_ca_chal *chal,
                                   const char **detail);
void at_fake_ca_set_validator(at_fake_ca *ca, at_fake_ca_validate_fn *fn, void *ud);

/* What the host published (used by the default validator). */
int    at_fake_ca_publish(at_fake_ca *ca, const at_challenge_info *c);
void   at_fake_ca_withdraw(at_fake_ca *ca, const at_challenge_info *c);
size_t at_fake_ca_published(const at_fake_ca *ca);
/* The default validator, for custom validators that also want it. */
int at_fake_ca_validate_published(void *ud, at_fake_ca *ca, const at_fake_ca_chal *chal,
                                  const char **detail);

/* -------------------------------------------------------------- inspection */

unsigned      at_fake_ca_count(const at_fake_ca *ca, const char *resource);
/* Last JWS payload / protected header sent to resource (NULL if none or
 * POST-as-GET). Borrowed. */
const json_t *at_fake_ca_last_payload(const at_fake_ca *ca, const char *resource);
const json_t *at_fake_ca_last_protected(const at_fake_ca *ca, const char *resource);
/* Why the CA refused the last refused request ("" if none). */
const char   *at_fake_ca_last_error(const at_fake_ca *ca);
size_t        at_fake_ca_naccounts(const at_fake_ca *ca);
/* Status of the account with this URL ("valid", "deactivated"), NULL if unknown. */
const char   *at_fake_ca_account_status(const at_fake_ca *ca, const char *url);
size_t        at_fake_ca_norders(const at_fake_ca *ca);
const char   *at_fake_ca_root_pem(const at_fake_ca *ca);
/* Issued certificates and their revocation state. */
size_t        at_fake_ca_ncerts(const at_fake_ca *ca);
const char   *at_fake_ca_cert_pem(const at_fake_ca *ca, size_t i);
int           at_fake_ca_cert_revoked(const at_fake_ca *ca, size_t i, int *reason);

/* ------------------------------------------------------------------ driver */

/* Run an op against the CA until DONE or FAILED: REQUEST steps go through
 * at_acme_exch and at_fake_ca_handle; PUBLISH/WITHDRAW go to
 * at_fake_ca_publish/withdraw; WAIT advances *now (a virtual clock, also
 * given to the CA). on_step (may be NULL) sees every step first; returning
 * nonzero stops the run there (the op is left as it is). Requests are
 * answered in reverse order when `lifo` is set, to shake out ordering
 * assumptions. Returns the final step kind (AT_STEP_DONE / AT_STEP_FAILED),
 * or the kind of the step where on_step stopped, or -1 if max_steps ran out. */
typedef int at_fake_ca_step_fn(void *ud, at_acme_op *op, const at_step *st);
typedef struct at_fake_ca_run_opts {
    at_fake_ca_step_fn *on_step;
    void   *ud;
    int     lifo;
    int     max_steps;     /* 0 = 10000 */
    const at_error *publish_error;  /* answer PUBLISH with this error */
    int     skip_publish;  /* answer PUBLISH as done without publishing (a lying host) */
} at_fake_ca_run_opts;

int at_fake_ca_run(at_fake_ca *ca, at_acme_client *c, at_acme_op *op, time_t *now,
                   const at_fake_ca_run_opts *opts);

/* Fetch the directory into c, and register an account for key (new P-256
 * key when NULL) with terms agreed. Returns 0 or -1 (err set). */
int at_fake_ca_setup_client(at_fake_ca *ca, at_acme_client *c, EVP_PKEY *key, time_t *now,
                            at_error *err);

#endif
