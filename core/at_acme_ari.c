/*
 * at_acme_ari.c: ACME Renewal Information (RFC 9773). An unauthenticated GET
 * of renewalInfo/<certificate id> gives the window in which the CA wants the
 * certificate renewed; Retry-After says when to ask again.
 */
#include "at_acme_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "at_time.h"
#include "at_x509.h"

typedef struct ari_st {
    char *url;
    char  what[600];
    int   sent;
} ari_st;

time_t at_ari_pick(const at_ari_result *r, unsigned long random)
{
    unsigned long span;
    if (!r)
        return 0;
    if (r->end <= r->start)
        return r->start;
    span = (unsigned long)(r->end - r->start);
    return r->start + (time_t)(random % span);
}

static void on_ari(at_acme_op *op, at_op_req *r, const at_http_resp *resp,
                   const at_error *terr, time_t now)
{
    ari_st *as = op->priv;
    at_error e = AT_ERROR_INIT;
    json_t *obj, *win;
    const char *s, *u;
    time_t start, end;
    long ra;
    (void)r;

    if (resp && !terr && resp->status == 404) {
        at_op_fail(op, AT_ERR_NOTFOUND, "%s: the CA has no renewal information for this certificate", as->what);
        op->err.http_status = 404;
        return;
    }
    if (at_op_check(resp, terr, as->what, now, &e) != 0 || !(obj = at_op_json(resp, as->what, &e))) {
        at_op_fail_err(op, &e);
        return;
    }
    win = json_object_get(obj, "suggestedWindow");
    s = json_is_object(win) ? at_json_str(win, "start") : NULL;
    if (!s || at_time_parse(s, &start) != 0 || !(s = at_json_str(win, "end")) ||
        at_time_parse(s, &end) != 0) {
        at_op_fail(op, AT_ERR_PROTOCOL, "%s: the answer has no valid suggestedWindow", as->what);
        json_decref(obj);
        return;
    }
    if (end <= start) {
        at_op_fail(op, AT_ERR_PROTOCOL, "%s: the suggested window ends before it starts", as->what);
        json_decref(obj);
        return;
    }
    memset(&op->ari, 0, sizeof(op->ari));
    op->ari.start = start;
    op->ari.end = end;
    ra = at_http_retry_after(resp, now);
    op->ari.retry_after = ra >= 0 ? at_time_after(now, ra) : 0;
    u = at_json_str(obj, "explanationURL");
    if (u && strlen(u) < sizeof(op->ari.explanation_url))
        snprintf(op->ari.explanation_url, sizeof(op->ari.explanation_url), "%s", u);
    op->have_ari = 1;
    json_decref(obj);
    at_op_succeed(op);
}

static void ari_advance(at_acme_op *op, time_t now)
{
    ari_st *as = op->priv;
    (void)now;
    if (as->sent)
        return;
    as->sent = 1;
    at_op_request(op, AT_AREQ_GET, as->url, NULL, NULL, on_ari, 0);
}

static void ari_free(at_acme_op *op)
{
    ari_st *as = op->priv;
    if (as) {
        free(as->url);
        free(as);
    }
    op->priv = NULL;
}

static const at_op_vt ari_vt = { ari_advance, NULL, NULL, ari_free };

at_acme_op *at_acme_ari_new(at_acme_client *c, const char *cert_pem, at_error *err)
{
    const at_acme_dir *dir = at_acme_client_dir(c);
    at_cert_info info;
    at_acme_op *op;
    ari_st *as;
    size_t l;

    if (!dir || !dir->renewal_info) {
        at_error_set(err, AT_ERR_NOTFOUND, "the CA %s offers no renewal information (no renewalInfo)",
                     c ? at_acme_client_url(c) : "?");
        return NULL;
    }
    if (!cert_pem) {
        at_error_set(err, AT_ERR_INTERNAL, "renewal information without a certificate");
        return NULL;
    }
    memset(&info, 0, sizeof(info));
    if (at_cert_info_pem(cert_pem, strlen(cert_pem), &info, err) != 0) {
        at_error_prefix(err, "renewal information");
        return NULL;
    }
    if (!info.ari_id[0]) {
        at_error_set(err, AT_ERR_NOTFOUND,
                     "renewal information for %s: the certificate has no authority key identifier",
                     info.nnames ? info.names[0] : "?");
        at_cert_info_free(&info);
        return NULL;
    }
    op = at_op_new(c, AT_OP_ARI, &ari_vt);
    as = calloc(1, sizeof(*as));
    l = strlen(dir->renewal_info) + strlen(info.ari_id) + 2;
    if (!op || !as || !(as->url = malloc(l))) {
        free(op);
        free(as);
        at_cert_info_free(&info);
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    snprintf(as->url, l, "%s%s%s", dir->renewal_info,
             dir->renewal_info[strlen(dir->renewal_info) - 1] == '/' ? "" : "/", info.ari_id);
    snprintf(as->what, sizeof(as->what), "renewal information for %s (%s)",
             info.nnames ? info.names[0] : "the certificate", as->url);
    op->priv = as;
    at_cert_info_free(&info);
    return op;
}
