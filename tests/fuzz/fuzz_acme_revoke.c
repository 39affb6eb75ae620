/*
 * fuzz_acme_revoke: revocation (core/at_acme_revoke.c): the certificate
 * PEM to revoke and the CA's answers both come from the fuzzer. The
 * scenario is at_fuzz_revoke() in at_fuzz_ops.c.
 *
 * Input (records: at_fuzz.h):
 *   byte 0   bits 0-3 reason (-1, 0-6, 8-10, then invalid ones 7, 11, -2),
 *            bit 4 cancel once the records run out, bit 7 no account yet
 *   record   the directory response
 *   record   the certificate chain PEM (leaf first)
 *   records  one response per request sent
 *
 * Checks: no crash, leak or undefined behaviour; invalid reasons and
 * unusable PEM are refused before anything is sent, with a printable
 * message; the op ends with an error or without one, never in between.
 */
#include <stdlib.h>

#include "at_fuzz_ops.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    at_fuzz_in in = { data, size };
    unsigned f0 = at_fuzz_byte(&in);
    at_fuzz_rec_src src = { &in, 0 };
    at_fuzz_responder r = { at_fuzz_rec_answer, NULL, NULL, &src };
    const uint8_t *rec;
    size_t len;
    at_http_resp dir;
    char *pem;

    if (at_fuzz_record(&in, &rec, &len) != 0)
        return 0;
    if (!(pem = at_fuzz_string(&in, NULL)))
        return 0;
    at_fuzz_parse_resp(rec, len, AT_FUZZ_DIR_URL, &dir);
    at_fuzz_revoke(f0, &dir, pem, &r);
    at_http_resp_free(&dir);
    free(pem);
    return 0;
}
