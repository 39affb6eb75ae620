/*
 * at_fuzz_ops.h: the ACME scenarios behind the op fuzz targets. A target
 * reads its flag bytes and the directory record and calls one of these
 * with a responder reading the remaining records; the seed generator calls
 * the same function with a fake CA (or a recorded Pebble) as responder and
 * writes every answer down, so a seed replays request for request.
 *
 * Flag bytes are described in each target's file.
 */
#ifndef AT_FUZZ_OPS_H
#define AT_FUZZ_OPS_H

#include "at_fuzz.h"

#define AT_FUZZ_DIR_URL "https://ca.test/dir"
#define AT_FUZZ_KID     "https://ca.test/acct/0"   /* the fake CA's first account */
#define AT_FUZZ_EAB_KID "kid-1"
#define AT_FUZZ_EAB_KEY "c2VjcmV0LWhtYWMta2V5LWZvci1mdXp6aW5nLTAx"

void at_fuzz_order(unsigned f0, unsigned f1, const at_http_resp *dir, const at_fuzz_responder *r);
/* answers_hold_key: the CA's answers contain the EAB key themselves (a
 * message may then quote it from there). */
void at_fuzz_account(unsigned f0, unsigned f1, const at_http_resp *dir, const at_fuzz_responder *r,
                     int answers_hold_key);
void at_fuzz_revoke(unsigned f0, const at_http_resp *dir, const char *cert_pem, const at_fuzz_responder *r);
void at_fuzz_ari(unsigned f0, const at_http_resp *dir, const char *cert_pem, const at_fuzz_responder *r);
/* script: what the exchanges do (see fuzz_acme_exch.c). */
void at_fuzz_exch(unsigned f0, const at_http_resp *dir, const uint8_t *script, size_t slen,
                  const at_fuzz_responder *r);

#endif
