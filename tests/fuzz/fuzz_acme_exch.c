/*
 * fuzz_acme_exch: the directory (at_acme_dir_parse through
 * at_acme_client_set_directory) and the exchange layer
 * (core/at_acme_client.c): nonce fetching and the nonce pool, badNonce
 * re-signing, retries of idempotent requests on transport errors and 5xx
 * with Retry-After, several exchanges interleaved on one client. The
 * scenario is at_fuzz_exch() in at_fuzz_ops.c.
 *
 * Input (records: at_fuzz.h):
 *   byte 0   bits 0-2 badNonce retries, bit 3 no account URL yet
 *   record   the directory response
 *   record   a script, one byte per action on exchange slot (b & 3):
 *              00kkpaxx  new exchange: kind k (GET, HEAD, POST kid, POST jwk),
 *                        p a payload, a an Accept header
 *              01....xx  step it: the next request is answered by the next
 *                        record, a wait moves the clock
 *              10tttttt  t seconds pass
 *              11....xx  abandon it
 *   records  the responses, in the order requests are sent
 *
 * Checks: no crash, leak or undefined behaviour; an accepted directory has
 * newNonce, newAccount and newOrder and finds its own profiles; every
 * signed request verifies with the account key and names its URL, a nonce
 * and kid or jwk; nonce fetches go to newNonce; the nonce pool stays
 * bounded; finished exchanges have a response or a printable error.
 */
#include "at_fuzz_ops.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    at_fuzz_in in = { data, size };
    unsigned f0 = at_fuzz_byte(&in);
    at_fuzz_rec_src src = { &in, 0 };
    at_fuzz_responder r = { at_fuzz_rec_answer, NULL, NULL, &src };
    const uint8_t *rec, *script;
    size_t len, slen;
    at_http_resp dir;

    if (at_fuzz_record(&in, &rec, &len) != 0 || at_fuzz_record(&in, &script, &slen) != 0)
        return 0;
    at_fuzz_parse_resp(rec, len, AT_FUZZ_DIR_URL, &dir);
    at_fuzz_exch(f0, &dir, script, slen, &r);
    at_http_resp_free(&dir);
    return 0;
}
