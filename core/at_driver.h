/*
 * at_driver.h: the I/O driver. One libcurl multi handle runs many HTTP
 * requests concurrently on the calling thread; each completion is handed to
 * its callback from at_driver_run. Nothing blocks for longer than the
 * timeout passed to at_driver_run, and at_driver_wakeup (any thread) cuts
 * that wait short.
 */
#ifndef AT_DRIVER_H
#define AT_DRIVER_H

#include <stddef.h>
#include "at_error.h"
#include "at_http.h"

typedef struct at_driver_opts {
    const char *ca_trust_file;     /* PEM trust anchors for the CA's TLS; NULL = system */
    const char *client_cert_file;  /* PEM client certificate towards the CA, or NULL */
    const char *client_key_file;
    const char *proxy;             /* "http://host:port" or NULL (libcurl env vars otherwise ignored) */
    long        connect_timeout_ms;/* default 10000 */
    long        request_timeout_ms;/* whole request, default 30000 */
    size_t      max_response;      /* bytes, default 1 MiB; larger responses fail */
    int         max_connections;   /* concurrent transfers, default 8 */
    const char *user_agent;        /* default "autotls/VERSION" */
    const char *trust_hint;        /* how the admin sets the trust file ("AutoTLSCATrust FILE"), or NULL */
} at_driver_opts;

typedef struct at_driver at_driver;

/* Called once per submitted request, from at_driver_run, on the driver's
 * thread. On success resp holds the response (the callback may take its
 * contents by moving them and resetting resp) and err is NULL; otherwise resp
 * is NULL and err says why (AT_ERR_NETWORK / AT_ERR_TIMEOUT / AT_ERR_PROTOCOL
 * for an oversize body), naming the URL. */
typedef void at_driver_cb(void *ud, at_http_resp *resp, const at_error *err);

at_driver *at_driver_new(const at_driver_opts *opts, at_error *err);
void at_driver_free(at_driver *d);   /* cancels in-flight requests without calling back */

/* Queue a request (copied). Transfers beyond max_connections wait their turn. */
int at_driver_submit(at_driver *d, const at_http_req *req, at_driver_cb *cb, void *ud, at_error *err);

/* Run transfers for at most timeout_ms (0 = don't wait), invoking callbacks
 * for those that finished. Returns the number of requests still in flight. */
int at_driver_run(at_driver *d, long timeout_ms);

/* Make a concurrent or future at_driver_run return early. Thread-safe. */
void at_driver_wakeup(at_driver *d);

int at_driver_pending(const at_driver *d);

#endif
