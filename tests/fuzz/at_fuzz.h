/*
 * at_fuzz.h: what the fuzz targets share.
 *
 * Responses from a CA are read from the fuzzer's bytes as records separated
 * by AT_FUZZ_SEP, each in the shape of an HTTP response:
 *
 *     201                                  status; 0 (or no digits) = no response
 *     Location: https://ca.test/order/1    header lines, as the driver gets them
 *     Replay-Nonce: abc
 *                                          an empty line ends the headers
 *     {"status":"pending", ...}            the body: any bytes
 *
 * at_fuzz_run_op drives an ACME operation the way the engine does (every
 * REQUEST through an exchange, replies when the op waits, a virtual clock)
 * and answers each request from a responder: in a target the next record,
 * in the seed generator a fake CA. Both use this one driver, so a seed
 * written by the generator is read back by the target request for request.
 *
 * Contract violations the core promises never to commit (a published
 * challenge not withdrawn, a stall, a result without an error) abort with a
 * message, so libFuzzer keeps the input as a crash.
 */
#ifndef AT_FUZZ_H
#define AT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "at_acme.h"
#include "at_buf.h"
#include "at_error.h"
#include "at_http.h"

#define AT_FUZZ_SEP "\n=====\n"
#define AT_FUZZ_T0  1700000000

/* Fixed keys, so that a crashing input reproduces exactly. */
extern const char at_fuzz_account_key_pem[];   /* P-256 */
extern const char at_fuzz_other_key_pem[];     /* P-384 (rollover) */
extern const char at_fuzz_cert_key_pem[];      /* P-256: the key of the recorded Pebble order */

/* Parsed once per process; borrowed. */
EVP_PKEY *at_fuzz_key(const char *pem);

/* Abort with a message: an invariant of the core does not hold. */
void at_fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* ------------------------------------------------------------ input */

typedef struct at_fuzz_in {
    const uint8_t *p;
    size_t         n;
} at_fuzz_in;

/* Next byte, 0 once exhausted. */
unsigned at_fuzz_byte(at_fuzz_in *in);

/* Next record (up to AT_FUZZ_SEP or the end). 0, or -1 when exhausted. */
int at_fuzz_record(at_fuzz_in *in, const uint8_t **rec, size_t *len);

/* Next record as a NUL-terminated string (malloc'd; NUL bytes kept inside,
 * so C-string users see a prefix). NULL when exhausted. */
char *at_fuzz_string(at_fuzz_in *in, size_t *len);

/* Parse a record into resp (initialised here); header lines are fed to
 * at_http_resp_header with base_url as the driver does. Returns 1 for a
 * response, 0 for "no response" (status 0: a transport error). */
int at_fuzz_parse_resp(const uint8_t *rec, size_t len, const char *base_url, at_http_resp *resp);

/* Serialise a response as a record (for the seed generator). */
void at_fuzz_write_resp(at_buf *out, const at_http_resp *resp);

/* ------------------------------------------------------------ driving ops */

typedef struct at_fuzz_responder {
    /* Answer req: 0 with resp filled, 1 for a transport error, -1 when there
     * is nothing more to answer with. */
    int  (*answer)(void *ud, const at_http_req *req, at_http_resp *resp);
    /* PUBLISH / WITHDRAW (may be NULL). */
    void (*publish)(void *ud, const at_challenge_info *c);
    void (*withdraw)(void *ud, const at_challenge_info *c);
    void *ud;
} at_fuzz_responder;

typedef struct at_fuzz_run_opts {
    int lifo;              /* answer queued requests newest first */
    int publish_fail;      /* answer the first PUBLISH with an error */
    int cancel_when_dry;   /* once the responder is dry: cancel instead of transport errors */
    /* Called for every step first; nonzero stops the run there (see below). */
    int  (*on_step)(void *ud, at_acme_op *op, const at_step *st);
    void *ud;
} at_fuzz_run_opts;

/* Published challenges still to be withdrawn, tracked by content across
 * runs (an op resumed after a "crash" may withdraw what its predecessor
 * published). */
typedef struct at_fuzz_pubs {
    char  **keys;
    size_t  n, cap;
} at_fuzz_pubs;

void at_fuzz_pubs_free(at_fuzz_pubs *p);

/* Drive op until DONE or FAILED (returned), or until on_step stops it
 * (returns 0; pending exchanges are dropped as a crashed host's would be).
 * Checks the step contract on the way. *now is the virtual clock. */
int at_fuzz_run_op(at_acme_client *c, at_acme_op *op, time_t *now, const at_fuzz_responder *r,
                   const at_fuzz_run_opts *o, at_fuzz_pubs *pubs);

/* Check what every finished op promises: FAILED has an error with a
 * message, DONE has none; nothing published is left. */
void at_fuzz_check_end(const at_acme_op *op, int kind, const at_fuzz_pubs *pubs);

/* A responder that reads records from in (base URL = the request's URL). */
typedef struct at_fuzz_rec_src {
    at_fuzz_in *in;
    unsigned    answered;
} at_fuzz_rec_src;
int at_fuzz_rec_answer(void *ud, const at_http_req *req, at_http_resp *resp);

/* An error message must be printable text: no control characters from
 * what a CA or a file said. Aborts otherwise. */
void at_fuzz_check_msg(const at_error *err, const char *where);

#endif
