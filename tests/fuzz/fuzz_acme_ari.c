/*
 * fuzz_acme_ari: renewal information (RFC 9773, core/at_acme_ari.c): the
 * certificate (whose AKI and serial make the request URL) and the CA's
 * answer (suggestedWindow, explanationURL, Retry-After) come from the
 * fuzzer. The scenario is at_fuzz_ari() in at_fuzz_ops.c.
 *
 * Input (records: at_fuzz.h):
 *   byte 0   bit 0 cancel once the records run out
 *   record   the directory response
 *   record   the certificate chain PEM (leaf first)
 *   records  one response per request sent
 *
 * Checks: no crash, leak or undefined behaviour; a result has a window that
 * ends after it starts, a Retry-After not in the past, a terminated
 * explanation URL, and at_ari_pick stays inside the window.
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
    at_fuzz_ari(f0, &dir, pem, &r);
    at_http_resp_free(&dir);
    free(pem);
    return 0;
}
