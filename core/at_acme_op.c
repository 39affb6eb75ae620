/*
 * at_acme_op.c: what every operation shares. An op keeps the requests it
 * wants sent and an outbox of PUBLISH / WITHDRAW / CHECKPOINT steps; the
 * host drains both through at_acme_op_step and answers by tag. Replies are
 * handled the moment they arrive; the op's `advance` then queues whatever
 * became possible. Finishing always goes through teardown, so anything
 * published is withdrawn before DONE or FAILED is reported.
 */
#include "at_acme_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Steps handed out by one at_acme_op_step call chain before a WAIT; a bug
 * guard, far above what an order with AT_ACME_MAX_AUTHZ authorizations needs. */
#define AT_OP_STEP_GUARD 100000

at_acme_op *at_op_new(at_acme_client *c, at_op_kind kind, const at_op_vt *vt)
{
    at_acme_op *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->client = c;
    op->kind = kind;
    op->vt = vt;
    op->next_tag = 1;
    at_error_init(&op->err);
    return op;
}

static void req_free(at_op_req *r)
{
    free(r->req.url);
    free(r->req.payload);
    free(r->req.accept);
    free(r);
}

at_op_req *at_op_request(at_acme_op *op, at_acme_req_kind kind, const char *url, char *payload,
                         const char *accept, at_op_resp_fn *fn, size_t idx)
{
    at_op_req *r = calloc(1, sizeof(*r)), **pp;
    if (!r || !url || !(r->req.url = strdup(url)) ||
        (accept && !(r->req.accept = strdup(accept)))) {
        if (r)
            req_free(r);
        free(payload);
        at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    r->tag = op->next_tag++;
    r->req.kind = kind;
    r->req.payload = payload;
    r->on_resp = fn;
    r->idx = idx;
    for (pp = &op->reqs; *pp; pp = &(*pp)->next)
        ;
    *pp = r;
    op->progress++;
    return r;
}

unsigned at_op_push_step(at_acme_op *op, at_step_kind kind, const at_challenge_info *chal)
{
    at_op_outstep *s;
    if (op->out_head && op->out_head == op->nout) {
        op->nout = op->out_head = 0;    /* drained: reuse from the start */
    }
    if (op->nout == op->out_cap) {
        size_t cap = op->out_cap ? op->out_cap * 2 : 8;
        at_op_outstep *n = realloc(op->out, cap * sizeof(*n));
        if (!n) {
            at_op_fail(op, AT_ERR_INTERNAL, "out of memory");
            return 0;
        }
        op->out = n;
        op->out_cap = cap;
    }
    s = &op->out[op->nout++];
    s->kind = kind;
    s->tag = op->next_tag++;
    s->chal = chal;
    if (kind == AT_STEP_PUBLISH)
        op->pending_pubs++;
    op->progress++;
    return s->tag;
}

void at_op_wake_at(at_acme_op *op, time_t t)
{
    if (t > 0 && (!op->wake || t < op->wake))
        op->wake = t;
}

void at_op_succeed(at_acme_op *op)
{
    if (op->end == AT_OP_RUNNING) {
        op->end = AT_OP_SUCCEEDING;
        op->progress++;
    }
}

void at_op_fail_err(at_acme_op *op, at_error *err)
{
    if (op->end == AT_OP_RUNNING || op->end == AT_OP_SUCCEEDING) {
        at_error_move(&op->err, err);
        if (op->err.code == AT_OK)
            at_error_set(&op->err, AT_ERR_INTERNAL, "an ACME operation failed without a reason");
        op->end = AT_OP_FAILING;
        op->progress++;
    } else {
        at_error_clear(err);
    }
}

void at_op_fail(at_acme_op *op, at_errcode code, const char *fmt, ...)
{
    at_error e = AT_ERROR_INIT;
    char msg[AT_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    at_error_set(&e, code, "%s", msg);
    at_op_fail_err(op, &e);
}

int at_op_running(const at_acme_op *op)
{
    return op->end == AT_OP_RUNNING && !op->cancelled;
}

int at_op_busy(const at_acme_op *op)
{
    return op->reqs != NULL || op->pending_pubs > 0;
}

int at_op_check(const at_http_resp *resp, const at_error *terr, const char *what,
                time_t now, at_error *out)
{
    if (terr || !resp) {
        if (terr)
            at_error_copy(out, terr);
        else
            at_error_set(out, AT_ERR_NETWORK, "no response");
        return at_error_prefix(out, "%s", what);
    }
    if (resp->status >= 400)
        return at_acme_problem(resp, what, now, out);
    if (resp->status < 200 || resp->status >= 300)
        return at_error_set(out, AT_ERR_PROTOCOL, "%s: unexpected HTTP %ld from the CA", what, resp->status);
    return 0;
}

json_t *at_op_json(const at_http_resp *resp, const char *what, at_error *err)
{
    if (!resp->body || !resp->body_len) {
        at_error_set(err, AT_ERR_PROTOCOL, "%s: the CA sent an empty body where a JSON object was expected", what);
        return NULL;
    }
    return at_json_parse_object(resp->body, resp->body_len, what, err);
}

/* ---------------------------------------------------------------- driving */

static at_op_req *find_req(at_acme_op *op, unsigned tag, int unlink)
{
    for (at_op_req **pp = &op->reqs; *pp; pp = &(*pp)->next) {
        at_op_req *r = *pp;
        if (r->tag == tag && r->emitted) {
            if (unlink)
                *pp = r->next;
            return r;
        }
    }
    return NULL;
}

static void drop_requests(at_acme_op *op)
{
    while (op->reqs) {
        at_op_req *r = op->reqs;
        op->reqs = r->next;
        req_free(r);
    }
}

static void drop_unsent(at_acme_op *op)
{
    at_op_req **pp = &op->reqs;
    while (*pp) {
        at_op_req *r = *pp;
        if (!r->emitted) {
            *pp = r->next;
            req_free(r);
        } else {
            pp = &r->next;
        }
    }
}

/* Remove queued PUBLISH steps that were never handed out (finishing). */
static void drop_unsent_publishes(at_acme_op *op)
{
    size_t w = op->out_head;
    for (size_t i = op->out_head; i < op->nout; i++) {
        if (op->out[i].kind == AT_STEP_PUBLISH) {
            op->pending_pubs--;
            continue;
        }
        op->out[w++] = op->out[i];
    }
    op->nout = w;
}

int at_acme_op_step(at_acme_op *op, time_t now, at_step *step)
{
    memset(step, 0, sizeof(*step));
    if (!op) {
        step->kind = AT_STEP_FAILED;
        return -1;
    }
    for (int guard = 0; guard < AT_OP_STEP_GUARD; guard++) {
        unsigned long before;

        if (op->end == AT_OP_ENDED) {
            step->kind = op->final;
            return op->final == AT_STEP_FAILED ? -1 : 0;
        }
        if (op->cancelled && op->end == AT_OP_RUNNING) {
            at_error e = AT_ERROR_INIT;
            at_error_set(&e, AT_ERR_CANCELLED, "cancelled before it finished");
            at_op_fail_err(op, &e);
        }
        if (op->end != AT_OP_RUNNING && !op->torn_down) {
            /* Nothing new goes out once the outcome is known; withdraw. */
            op->torn_down = 1;
            drop_unsent(op);
            drop_unsent_publishes(op);
            if (op->vt->teardown)
                op->vt->teardown(op);
        }
        if (op->out_head < op->nout) {
            at_op_outstep *s = &op->out[op->out_head++];
            step->kind = s->kind;
            step->tag = s->tag;
            step->chal = s->chal;
            return 0;
        }
        if (op->end == AT_OP_RUNNING) {
            for (at_op_req *r = op->reqs; r; r = r->next) {
                if (!r->emitted) {
                    r->emitted = 1;
                    step->kind = AT_STEP_REQUEST;
                    step->tag = r->tag;
                    step->req = &r->req;
                    step->delay_ms = r->delay_ms;
                    return 0;
                }
            }
        }
        if (op->end == AT_OP_SUCCEEDING || op->end == AT_OP_FAILING) {
            /* Replies still in flight are not waited for: they are ignored. */
            drop_requests(op);
            op->final = op->end == AT_OP_SUCCEEDING ? AT_STEP_DONE : AT_STEP_FAILED;
            op->end = AT_OP_ENDED;
            continue;
        }
        before = op->progress;
        op->wake = 0;
        if (op->vt->advance)
            op->vt->advance(op, now);
        if (op->progress != before)
            continue;
        if (op->wake && op->wake <= now)
            continue;            /* a timer already due: advance again */
        if (!op->wake && !at_op_busy(op)) {
            at_op_fail(op, AT_ERR_INTERNAL,
                       "the ACME state machine stalled (nothing to send, nothing awaited); this is a bug");
            continue;
        }
        step->kind = AT_STEP_WAIT;
        step->until = op->wake;
        return 0;
    }
    at_op_fail(op, AT_ERR_INTERNAL, "the ACME state machine did not settle; this is a bug");
    step->kind = AT_STEP_WAIT;
    return 0;
}

void at_acme_op_response(at_acme_op *op, unsigned tag, const at_http_resp *resp,
                         const at_error *transport_err, time_t now)
{
    at_op_req *r;
    if (!op || op->end == AT_OP_ENDED)
        return;
    r = find_req(op, tag, 1);
    if (!r)
        return;                  /* a reply nobody waits for any more */
    if (at_op_running(op) && r->on_resp)
        r->on_resp(op, r, resp, transport_err, now);
    req_free(r);
    op->progress++;
}

void at_acme_op_published(at_acme_op *op, unsigned tag, const at_error *err)
{
    if (!op || op->end == AT_OP_ENDED)
        return;
    if (op->pending_pubs > 0)
        op->pending_pubs--;
    if (op->vt->published)
        op->vt->published(op, tag, err);
    op->progress++;
}

void at_acme_op_cancel(at_acme_op *op)
{
    if (op && op->end != AT_OP_ENDED)
        op->cancelled = 1;
}

const at_error *at_acme_op_error(const at_acme_op *op)
{
    return op ? &op->err : NULL;
}

void at_acme_op_free(at_acme_op *op)
{
    if (!op)
        return;
    drop_requests(op);
    if (op->vt->free)
        op->vt->free(op);
    free(op->out);
    free(op->account_url);
    json_decref(op->account);
    at_error_clear(&op->err);
    free(op);
}

/* ---------------------------------------------------------- shared results */

const char *at_acme_op_account_url(const at_acme_op *op)
{
    return op ? op->account_url : NULL;
}

const json_t *at_acme_op_account(const at_acme_op *op)
{
    return op ? op->account : NULL;
}

const at_ari_result *at_acme_op_ari(const at_acme_op *op)
{
    return op && op->have_ari ? &op->ari : NULL;
}

json_t *at_acme_contact_array(const char *const *contact, size_t n)
{
    json_t *a = json_array();
    if (!a)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *c = contact[i];
        json_t *s;
        char *tmp = NULL;
        if (!c || !*c)
            continue;
        if (!strchr(c, ':')) {
            size_t l = strlen(c) + sizeof("mailto:");
            tmp = malloc(l);
            if (tmp)
                snprintf(tmp, l, "mailto:%s", c);
        }
        s = json_string(tmp ? tmp : c);
        free(tmp);
        if (!s || json_array_append_new(a, s) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}
