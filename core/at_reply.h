/*
 * at_reply.h: what a module answers over HTTP, decided by the core and
 * handed over as data - status, content type, at most one extra header, the
 * body - so that Apache and nginx send the same answers and only the sending
 * is theirs. Every reply is sent with "Cache-Control: no-store" (a challenge
 * answer, a 503 that ends any second, a status snapshot: nothing to cache).
 *
 *   at_reply_http01    /.well-known/acme-challenge/TOKEN from the live table
 *   at_reply_waiting   the 503 page while a name waits for its first certificate
 *   at_reply_renew     the renew handler: POST ?name=NAME|all
 *   at_reply_status    the status page (HTML, JSON, Prometheus)
 */
#ifndef AT_REPLY_H
#define AT_REPLY_H

#include <stddef.h>
#include "at_buf.h"
#include "at_conf.h"
#include "at_error.h"
#include "at_live.h"
#include "at_renewer.h"
#include "at_serve.h"
#include "at_status.h"

typedef struct at_reply {
    int         status;         /* HTTP status; 0 until a reply is made */
    const char *content_type;   /* static string */
    const char *header;         /* one more header's name ("Allow", "Retry-After"), or NULL */
    const char *header_value;   /* static string */
    at_buf      body;
} at_reply;

#define AT_REPLY_INIT { 0, NULL, NULL, NULL, AT_BUF_INIT }
#define AT_REPLY_RETRY_AFTER "10"   /* seconds, on the 503 page */

void at_reply_free(at_reply *rp);

/* Plain replies: a text body as given, or {"error": message} (+ "\n") as
 * application/json. 0, or -1 when memory runs out. */
int at_reply_text(at_reply *rp, int status, const char *content_type, const char *body);
int at_reply_error(at_reply *rp, int status, const char *message);

/* HTTP-01 for a request path (raw, without the query string; see
 * at_serve_http01). get: the method is GET or HEAD.
 *   AT_HTTP01_PASS      not a challenge path: rp is left alone
 *   AT_HTTP01_ANSWER    200 text/plain with the key authorization, or 405
 *                       "Use GET." with Allow: GET, HEAD for another method
 *   AT_HTTP01_NOTFOUND  404 text/plain "No such ACME challenge."
 * When memory runs out, a 500 with an empty body. */
at_http01_result at_reply_http01(at_reply *rp, at_live *lv, const char *path, size_t pathlen, int get);

/* 503 with Retry-After: AT_REPLY_RETRY_AFTER and an HTML page saying that
 * the certificate for name (HTML-escaped) is being obtained. 0 or -1 (OOM). */
int at_reply_waiting(at_reply *rp, const char *name);

/* The renew handler for a POST, query being the raw query string (or
 * NULL): its "name" argument (percent-decoded, '+' is a space) says what
 * to renew: "all", a certificate id, or a managed name (any case, a trailing
 * dot ignored). Queues the request in ctl and replies, as JSON:
 *   202 {"renew":WHAT,"status":"queued"}
 *   400 no name given (or one that does not decode)
 *   404 no managed certificate has this name or id
 *   503 the queue is full
 * what (at least AT_RENEW_REQ_MAX bytes) gets what was queued ("all", the
 * id, or the lowercase name) for the host's log, "" when nothing was.
 * 0, or -1 when memory runs out. */
int at_reply_renew(at_reply *rp, const at_conf *conf, at_renew_ctl *ctl, const char *query,
                   char *what, size_t whatsz);

/* The status page: the model read from store_dir, the host's "server"
 * object, rendered as the query asks (see at_status_render_query). 0, or -1
 * with err (the store could not be read, or memory ran out): then rp is
 * left alone and the host logs err and answers 500. */
int at_reply_status(at_reply *rp, const at_conf *conf, const char *store_dir,
                    const at_status_server *srv, const char *query, at_error *err);

#endif
