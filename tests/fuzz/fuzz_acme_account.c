/*
 * fuzz_acme_account: the account operations (core/at_acme_account.c):
 * find-or-create with terms, contacts and external account binding, read,
 * contact update, key rollover and deactivation, answered by CA responses
 * the fuzzer chooses. The scenario is at_fuzz_account() in at_fuzz_ops.c.
 *
 * Input (records: at_fuzz.h):
 *   byte 0   bits 0-2 action: ensure, fetch, update contacts, rollover,
 *            deactivate (5-7: ensure); bit 3 terms accepted; bit 4 EAB
 *            configured; bit 5 two contacts; bit 6 the client already has
 *            an account URL; bit 7 cancel once the records run out
 *   byte 1   bit 0 LIFO answers, bits 1-2 EAB MAC (default, HS256, HS384,
 *            HS512), bit 3 directive hints set
 *   record   the directory response
 *   records  one response per request sent
 *
 * Checks: no crash, leak or undefined behaviour; refusals before sending
 * are configuration errors; failures carry a printable message that never
 * quotes the EAB key (unless the CA's answer did); success has an account URL; a rollover installs the
 * new key in the client.
 */
#include <string.h>

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
    at_fuzz_account(f0, f1, &dir, &r, memmem(data, size, AT_FUZZ_EAB_KEY, sizeof(AT_FUZZ_EAB_KEY) - 1) != NULL);
    at_http_resp_free(&dir);
    return 0;
}
