/*
 * fuzz_acme_order: the order state machine (at_acme_order_new / _resume in
 * core/at_acme_order.c) answered by CA responses the fuzzer chooses, every
 * request through at_acme_exch (nonces, badNonce, retries) as the engine
 * drives it. The scenario is at_fuzz_order() in at_fuzz_ops.c.
 *
 * Input (records: at_fuzz.h):
 *   byte 0   bit 0 answer queued requests newest first
 *            bit 1 the host fails to publish the first challenge
 *            bit 2 once the records run out: cancel (else transport errors)
 *            bit 3 at_acme_order_new (fresh key) instead of resuming with the
 *                  key of the recorded Pebble order
 *            bits 4-5 names: 0 the Pebble recording's (two DNS names, an IPv4),
 *                  1 example.com, 2 *.example.com + example.com, 3 an IPv6
 *                  and two DNS names
 *            bits 6-7 challenges: http-01 | tls-alpn-01,http-01 |
 *                  dns-01,http-01 | dns-01,tls-alpn-01,http-01
 *   byte 1   bit 0 pre-authorization, bit 1 profile "default", bit 2
 *            "replaces", bit 3 a preferred chain, bit 4 resume a saved order
 *            URL, bit 5 a 20 s poll timeout, bits 6-7 "crash" at that
 *            checkpoint (1-3) and resume from it in a new op
 *   record   the directory response
 *   records  one response per request sent, in order; status 0 = no response
 *
 * Checks: no crash, leak or undefined behaviour; every published challenge
 * is withdrawn before the end; a failure carries a printable message; a
 * delivered chain belongs to the order's key; a checkpoint always resumes;
 * no stall, no endless loop, an ended op stays ended.
 */
#include "at_fuzz_ops.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    at_fuzz_in in = { data, size };
    unsigned f0 = at_fuzz_byte(&in), f1 = at_fuzz_byte(&in);
    at_fuzz_rec_src src = { &in, 0 };
    at_fuzz_responder r = { at_fuzz_rec_answer, NULL, NULL, &src };
    const uint8_t *rec;
    size_t len;
    at_http_resp dir;

    if (at_fuzz_record(&in, &rec, &len) != 0)
        return 0;
    at_fuzz_parse_resp(rec, len, AT_FUZZ_DIR_URL, &dir);
    at_fuzz_order(f0, f1, &dir, &r);
    at_http_resp_free(&dir);
    return 0;
}
