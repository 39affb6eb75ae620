/*
 * at_acme_revoke.c: certificate revocation (RFC 8555 §7.6), signed with the
 * account key. A certificate the CA reports as already revoked counts as
 * done: the administrator's intent holds.
 */
#include "at_acme_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/x509.h>

#include "at_b64.h"
#include "at_x509.h"

typedef struct revoke_st {
    char *payload;
    char  what[300];
    int   sent;
} revoke_st;

int at_revoke_reason_parse(const char *s)
{
    static const struct { const char *name; int code; } reasons[] = {
        { "unspecified", 0 },
        { "keyCompromise", 1 },
        { "cACompromise", 2 },
        { "affiliationChanged", 3 },
        { "superseded", 4 },
        { "cessationOfOperation", 5 },
        { "certificateHold", 6 },
        { "removeFromCRL", 8 },
        { "privilegeWithdrawn", 9 },
        { "aACompromise", 10 },
    };
    char *end;
    long v;
    if (!s || !*s)
        return -1;
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (strcasecmp(s, reasons[i].name) == 0)
            return reasons[i].code;
    v = strtol(s, &end, 10);
    if (*end == '\0' && v >= 0 && v <= 10 && v != 7)
        return (int)v;
    return -1;
}

static void on_revoke(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                      const at_error *terr, time_t now)
{
    revoke_st *rs = op->priv;
    at_error e = AT_ERROR_INIT;
    const char *pt;
    (void)r;

    if (at_op_check(resp, terr, rs->what, now, &e) != 0) {
        pt = at_acme_problem_type(&e);
        if (pt && strcmp(pt, "alreadyRevoked") == 0) {
            at_error_clear(&e);
            at_op_succeed(op);
            return;
        }
        at_op_fail_err(op, &e);
        return;
    }
    at_op_succeed(op);
}

static void revoke_advance(at_acme_op *op, time_t now)
{
    revoke_st *rs = op->priv;
    const at_acme_dir *dir = at_acme_client_dir(op->client);
    char *p;
    (void)now;

    if (rs->sent)
        return;
    if (!dir || !dir->revoke_cert) {
        at_op_fail(op, AT_ERR_CA, "%s: the CA %s does not offer revocation (no revokeCert in its directory)",
                   rs->what, at_acme_client_url(op->client));
        return;
    }
    p = rs->payload;
    rs->payload = NULL;
    rs->sent = 1;
    at_op_request(op, AT_AREQ_POST_KID, dir->revoke_cert, p, NULL, on_revoke, 0);
}

static void revoke_free(at_acme_op *op)
{
    revoke_st *rs = op->priv;
    if (rs) {
        free(rs->payload);
        free(rs);
    }
    op->priv = NULL;
}

static const at_op_vt revoke_vt = { revoke_advance, NULL, NULL, revoke_free };

at_acme_op *at_acme_revoke_new(at_acme_client *c, const char *cert_pem, int reason, at_error *err)
{
    STACK_OF(X509) *certs = NULL;
    unsigned char *der = NULL;
    int dlen;
    char *b64 = NULL;
    json_t *p = NULL;
    at_acme_op *op = NULL;
    revoke_st *rs = NULL;
    at_cert_info info;

    memset(&info, 0, sizeof(info));
    if (!c || !cert_pem) {
        at_error_set(err, AT_ERR_INTERNAL, "revocation without a client or certificate");
        return NULL;
    }
    if (reason < -1 || reason > 10 || reason == 7) {
        at_error_set(err, AT_ERR_CONFIG, "revocation reason %d is not an RFC 5280 reason code", reason);
        return NULL;
    }
    if (!at_acme_client_kid(c)) {
        at_error_set(err, AT_ERR_CONFIG, "revoking needs a registered account at %s", at_acme_client_url(c));
        return NULL;
    }
    if (at_chain_parse(cert_pem, strlen(cert_pem), &certs, err) != 0) {
        at_error_prefix(err, "revoking");
        return NULL;
    }
    dlen = i2d_X509(sk_X509_value(certs, 0), &der);
    if (dlen <= 0) {
        at_error_set_openssl(err, "revoking: encoding the certificate");
        goto out;
    }
    b64 = at_b64url_encode_str(der, (size_t)dlen);
    p = b64 ? json_pack("{s:s}", "certificate", b64) : NULL;
    if (p && reason >= 0)
        json_object_set_new(p, "reason", json_integer(reason));
    op = at_op_new(c, AT_OP_REVOKE, &revoke_vt);
    rs = calloc(1, sizeof(*rs));
    if (!p || !op || !rs || !(rs->payload = at_json_compact(p))) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        free(rs);
        free(op);
        op = NULL;
        goto out;
    }
    if (at_cert_info_x509(sk_X509_value(certs, 0), &info, NULL) == 0)
        snprintf(rs->what, sizeof(rs->what), "revoking the certificate for %s (serial %s)",
                 info.nnames ? info.names[0] : "?", info.serial);
    else
        snprintf(rs->what, sizeof(rs->what), "revoking the certificate");
    op->priv = rs;
out:
    at_cert_info_free(&info);
    json_decref(p);
    free(b64);
    OPENSSL_free(der);
    sk_X509_pop_free(certs, X509_free);
    return op;
}
