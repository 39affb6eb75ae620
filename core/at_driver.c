/*
 * at_driver.c: the I/O driver over one libcurl multi handle.
 *
 * Concurrency is bounded here rather than inside libcurl: requests beyond
 * max_connections wait in our own queue and are handed to the multi handle
 * only when a slot frees up. That way a request's connect and total timeouts
 * start when it really starts, not while it waits behind slow neighbours.
 *
 * Callbacks run only from at_driver_run; a callback may submit new requests
 * (the protocol layer sends its next request from there), but must not free
 * the driver.
 */
#include "at_driver.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "at_buf.h"

#define AT_DRIVER_DEFAULT_CONNECT_MS  10000L
#define AT_DRIVER_DEFAULT_REQUEST_MS  30000L
#define AT_DRIVER_DEFAULT_MAX_RESP    (1024 * 1024)
#define AT_DRIVER_DEFAULT_MAX_CONN    8
/* Headers are not counted against max_response (a small limit for a
 * certificate would otherwise trip on a CA's verbose headers), but they are
 * bounded too: no CA needs more than this. */
#define AT_DRIVER_MAX_HEADER_BYTES    (256 * 1024)

typedef struct at_xfer at_xfer;

struct at_xfer {
    at_driver         *d;
    at_xfer           *prev, *next;   /* in d->queue or d->active */
    CURL              *easy;
    struct curl_slist *headers;
    at_http_req        req;           /* our copy */
    at_http_resp       resp;
    at_buf             body;
    size_t             header_bytes;
    int                oversize;      /* body exceeded max_response */
    int                header_flood;  /* headers exceeded AT_DRIVER_MAX_HEADER_BYTES */
    int                hdr_oom;
    at_driver_cb      *cb;
    void              *ud;
    char               errbuf[CURL_ERROR_SIZE];
};

typedef struct at_xfer_list {
    at_xfer *head, *tail;
    int      n;
} at_xfer_list;

struct at_driver {
    CURLM        *multi;
    at_xfer_list  queue;    /* submitted, not started */
    at_xfer_list  active;   /* handed to the multi handle */
    int           woken;    /* set by at_driver_wakeup (atomic access) */
    /* options, copied */
    char         *ca_trust_file;
    char         *client_cert_file;
    char         *client_key_file;
    char         *proxy;
    char         *user_agent;
    char         *trust_hint;
    long          connect_timeout_ms;
    long          request_timeout_ms;
    size_t        max_response;
    int           max_connections;
};

/* ---------------------------------------------------------------- lists */

static void list_append(at_xfer_list *l, at_xfer *x)
{
    x->next = NULL;
    x->prev = l->tail;
    if (l->tail)
        l->tail->next = x;
    else
        l->head = x;
    l->tail = x;
    l->n++;
}

static void list_remove(at_xfer_list *l, at_xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        l->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    else
        l->tail = x->prev;
    x->prev = x->next = NULL;
    l->n--;
}

/* ----------------------------------------------------------- global init */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

/* libcurl's global init is not guaranteed thread-safe on every version we
 * accept; doing it exactly once here keeps hosts from having to know. */
static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ------------------------------------------------------------ new / free */

static int dup_opt(char **dst, const char *src)
{
    *dst = NULL;
    if (!src || !*src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

static void opts_free(at_driver *d)
{
    free(d->ca_trust_file);
    free(d->trust_hint);
    free(d->client_cert_file);
    free(d->client_key_file);
    free(d->proxy);
    free(d->user_agent);
}

static int opts_copy(at_driver *d, const at_driver_opts *o)
{
    char ua[64];

    d->connect_timeout_ms = AT_DRIVER_DEFAULT_CONNECT_MS;
    d->request_timeout_ms = AT_DRIVER_DEFAULT_REQUEST_MS;
    d->max_response = AT_DRIVER_DEFAULT_MAX_RESP;
    d->max_connections = AT_DRIVER_DEFAULT_MAX_CONN;
    snprintf(ua, sizeof(ua), "autotls/%s", AT_VERSION);
    if (!o)
        return dup_opt(&d->user_agent, ua);
    if (o->connect_timeout_ms > 0)
        d->connect_timeout_ms = o->connect_timeout_ms;
    if (o->request_timeout_ms > 0)
        d->request_timeout_ms = o->request_timeout_ms;
    if (o->max_response > 0)
        d->max_response = o->max_response;
    if (o->max_connections > 0)
        d->max_connections = o->max_connections;
    if (dup_opt(&d->ca_trust_file, o->ca_trust_file) != 0 ||
        dup_opt(&d->client_cert_file, o->client_cert_file) != 0 ||
        dup_opt(&d->client_key_file, o->client_key_file) != 0 ||
        dup_opt(&d->proxy, o->proxy) != 0 ||
        dup_opt(&d->trust_hint, o->trust_hint) != 0 ||
        dup_opt(&d->user_agent, o->user_agent && *o->user_agent ? o->user_agent : ua) != 0)
        return -1;
    return 0;
}

at_driver *at_driver_new(const at_driver_opts *opts, at_error *err)
{
    at_driver *d;

    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) {
        at_error_set(err, AT_ERR_INTERNAL, "cannot initialise libcurl: %s",
                     curl_easy_strerror(curl_init_rc));
        return NULL;
    }
    if (opts && opts->client_key_file && *opts->client_key_file &&
        !(opts->client_cert_file && *opts->client_cert_file)) {
        at_error_set(err, AT_ERR_CONFIG, "a client key (%s) was given without a client certificate; "
                     "give both or neither", opts->client_key_file);
        return NULL;
    }
    d = calloc(1, sizeof(*d));
    if (!d) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (opts_copy(d, opts) != 0 || !(d->multi = curl_multi_init())) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory creating the HTTP client");
        opts_free(d);
        free(d);
        return NULL;
    }
    /* Keep as many idle connections as we run transfers, so that a burst of
     * requests to one CA reuses its TLS sessions. */
    curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, (long)d->max_connections);
    return d;
}

static void xfer_free(at_xfer *x)
{
    if (x->easy)
        curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    at_http_req_free(&x->req);
    at_http_resp_free(&x->resp);
    at_buf_free(&x->body);
    free(x);
}

void at_driver_free(at_driver *d)
{
    at_xfer *x;

    if (!d)
        return;
    while ((x = d->active.head)) {
        list_remove(&d->active, x);
        curl_multi_remove_handle(d->multi, x->easy);
        xfer_free(x);
    }
    while ((x = d->queue.head)) {
        list_remove(&d->queue, x);
        xfer_free(x);
    }
    curl_multi_cleanup(d->multi);
    opts_free(d);
    free(d);
}

/* --------------------------------------------------------------- submit */

static int req_copy(at_http_req *dst, const at_http_req *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->method = src->method;
    dst->url = strdup(src->url);
    if (!dst->url)
        return -1;
    if (src->body) {
        dst->body = malloc(src->body_len + 1);
        if (!dst->body)
            return -1;
        memcpy(dst->body, src->body, src->body_len);
        dst->body[src->body_len] = '\0';
        dst->body_len = src->body_len;
    }
    if (dup_opt(&dst->content_type, src->content_type) != 0 ||
        dup_opt(&dst->accept, src->accept) != 0)
        return -1;
    return 0;
}

int at_driver_submit(at_driver *d, const at_http_req *req, at_driver_cb *cb, void *ud, at_error *err)
{
    at_xfer *x;

    if (!req || !req->url || !*req->url)
        return at_error_set(err, AT_ERR_INTERNAL, "HTTP request without a URL");
    if (strncasecmp(req->url, "http://", 7) != 0 && strncasecmp(req->url, "https://", 8) != 0)
        return at_error_set(err, AT_ERR_CONFIG, "cannot fetch %s: only http:// and https:// URLs are "
                            "supported", req->url);
    x = calloc(1, sizeof(*x));
    if (!x)
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    x->d = d;
    x->cb = cb;
    x->ud = ud;
    at_http_resp_init(&x->resp);
    at_buf_init(&x->body);
    if (req_copy(&x->req, req) != 0) {
        xfer_free(x);
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    }
    list_append(&d->queue, x);
    return 0;
}

/* ---------------------------------------------------- libcurl callbacks */

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    at_xfer *x = ud;
    size_t len = size * n;

    x->header_bytes += len;
    if (x->header_bytes > AT_DRIVER_MAX_HEADER_BYTES) {
        x->header_flood = 1;
        return 0;
    }
    /* A new status line starts a new header block (1xx interim responses):
     * only the final response's headers count. */
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        at_http_resp_free(&x->resp);
        return len;
    }
    if (at_http_resp_header(&x->resp, p, len, x->req.url) != 0) {
        x->hdr_oom = 1;
        return 0;
    }
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    at_xfer *x = ud;
    size_t len = size * n;

    /* Enforced while receiving: a hostile or broken server cannot make us
     * buffer more than the limit, whatever Content-Length said. */
    if (len > x->d->max_response || x->body.len > x->d->max_response - len) {
        x->oversize = 1;
        return 0;
    }
    if (at_buf_append(&x->body, p, len) != 0) {
        x->hdr_oom = 1;
        return 0;
    }
    return len;
}

/* ------------------------------------------------------------ easy setup */

static int add_header(at_xfer *x, const char *name, const char *value)
{
    char line[512];
    struct curl_slist *l;

    if (snprintf(line, sizeof(line), "%s: %s", name, value ? value : "") >= (int)sizeof(line))
        return -1;
    if (!value)                        /* "Name:" removes a header curl would add */
        snprintf(line, sizeof(line), "%s:", name);
    l = curl_slist_append(x->headers, line);
    if (!l)
        return -1;
    x->headers = l;
    return 0;
}

static int setup_tls(at_driver *d, CURL *e)
{
    int rc = 0;

    rc |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (d->ca_trust_file) {
        /* Only the given anchors: a private CA's TLS must not also be
         * accepted on the strength of the system's public roots. */
        rc |= curl_easy_setopt(e, CURLOPT_CAINFO, d->ca_trust_file);
        rc |= curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
    }
    if (d->client_cert_file) {
        rc |= curl_easy_setopt(e, CURLOPT_SSLCERT, d->client_cert_file);
        rc |= curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
        rc |= curl_easy_setopt(e, CURLOPT_SSLKEY,
                               d->client_key_file ? d->client_key_file : d->client_cert_file);
        rc |= curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
    }
    return rc;
}

static int setup_method(at_xfer *x, CURL *e)
{
    int rc = 0;

    switch (x->req.method) {
    case AT_HTTP_HEAD:
        rc |= curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        break;
    case AT_HTTP_POST:
        rc |= curl_easy_setopt(e, CURLOPT_POST, 1L);
        rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->req.body ? x->req.body : "");
        rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                               (curl_off_t)(x->req.body ? x->req.body_len : 0));
        if (x->req.content_type && add_header(x, "Content-Type", x->req.content_type) != 0)
            return -1;
        /* A JWS is small and the CA answers at once; waiting for
         * "100 Continue" would only add a second of latency. */
        if (add_header(x, "Expect", NULL) != 0)
            return -1;
        break;
    case AT_HTTP_GET:
    default:
        rc |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        break;
    }
    return rc;
}

static int setup_easy(at_xfer *x)
{
    at_driver *d = x->d;
    CURL *e = curl_easy_init();
    int rc = 0;

    if (!e)
        return -1;
    x->easy = e;
    rc |= curl_easy_setopt(e, CURLOPT_URL, x->req.url);
    rc |= curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)x);
    rc |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    /* Inside a threaded web server libcurl must not touch signals. */
    rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    /* ACME never redirects; a Location header is data for the protocol. */
    rc |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    /* HTTP/1.1 with keep-alive, one connection per transfer in flight, not
     * every order multiplexed on one HTTP/2 connection: with libcurl 7.88
     * and Pebble such a connection was seen to wedge under a few dozen
     * concurrent orders (the CA got the requests, no answer came back, and
     * every later request on it timed out too). Separate connections cost
     * a handful of TLS handshakes and confine a stall to one request, whose
     * connection is closed when it times out. */
    rc |= curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    rc |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, d->connect_timeout_ms);
    rc |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, d->request_timeout_ms);
    /* Refuse an announced oversize body early; a HEAD's Content-Length
     * describes a body that never comes. */
    if (x->req.method != AT_HTTP_HEAD)
        rc |= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)d->max_response);
    rc |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    rc |= curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)x);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)x);
    rc |= curl_easy_setopt(e, CURLOPT_USERAGENT, d->user_agent);
    /* The proxy is what the configuration says, never what the web server's
     * environment happens to contain: "" switches the *_proxy variables off,
     * and an empty no-proxy list keeps a NO_PROXY variable from sending the
     * CA's host around a configured proxy. */
    rc |= curl_easy_setopt(e, CURLOPT_PROXY, d->proxy ? d->proxy : "");
    if (d->proxy) {
        rc |= curl_easy_setopt(e, CURLOPT_NOPROXY, "");
        rc |= curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    }
    rc |= setup_tls(d, e);
    if (setup_method(x, e) != 0)
        return -1;
    if (x->req.accept && add_header(x, "Accept", x->req.accept) != 0)
        return -1;
    if (x->headers)
        rc |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    return rc ? -1 : 0;
}

/* ------------------------------------------------------------ completion */

static int contains(const char *hay, const char *needle)
{
    return hay && strcasestr(hay, needle) != NULL;
}

static void error_tls(at_xfer *x, CURLcode rc, at_error *err)
{
    at_driver *d = x->d;
    const char *why = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);

    if (rc == CURLE_PEER_FAILED_VERIFICATION) {
        /* libcurl checks the host name itself, after the chain verified;
         * its messages for that are the only reliable tell. */
        if (contains(why, "target host name"))
            at_error_set(err, AT_ERR_NETWORK, "TLS certificate of %s is not valid for that host name (%s): "
                         "use the name the CA's certificate is issued for in the URL", x->req.url, why);
        else if (d->ca_trust_file)
            at_error_set(err, AT_ERR_NETWORK, "TLS certificate of %s could not be verified (%s): the "
                         "trust file %s does not hold the root that signed the server's certificate; "
                         "set %s to the right PEM file", x->req.url, why,
                         d->ca_trust_file, d->trust_hint ? d->trust_hint : "the CA trust file option");
        else
            at_error_set(err, AT_ERR_NETWORK, "TLS certificate of %s could not be verified (%s): if "
                         "this CA uses a private root, set %s to a PEM file "
                         "holding it", x->req.url, why, d->trust_hint ? d->trust_hint : "the CA trust file option");
    } else if (rc == CURLE_SSL_CACERT_BADFILE) {
        at_error_set(err, AT_ERR_CONFIG, "cannot use the trust file %s for %s (%s): it must be a "
                     "readable PEM file of CA certificates", d->ca_trust_file ? d->ca_trust_file : "(system)",
                     x->req.url, why);
    } else if (rc == CURLE_SSL_CERTPROBLEM) {
        at_error_set(err, AT_ERR_CONFIG, "cannot use the client certificate %s with key %s for %s (%s): "
                     "both must be readable, unencrypted PEM files that match", d->client_cert_file,
                     d->client_key_file ? d->client_key_file : d->client_cert_file, x->req.url, why);
    } else if (!d->client_cert_file && (contains(why, "certificate required") ||
                                        contains(why, "handshake failure") || contains(why, "alert"))) {
        at_error_set(err, AT_ERR_NETWORK, "TLS handshake with %s failed (%s): the server may require a "
                     "client certificate; set the CA client certificate and key options", x->req.url, why);
    } else {
        at_error_set(err, AT_ERR_NETWORK, "TLS handshake with %s failed (%s)", x->req.url, why);
    }
}

static void error_timeout(at_xfer *x, at_error *err)
{
    at_driver *d = x->d;
    curl_off_t connect_us = 0, appconnect_us = 0, total_us = 0;
    long connects = -1, header_bytes = 0;
    int https = strncasecmp(x->req.url, "https:", 6) == 0;

    curl_easy_getinfo(x->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
    curl_easy_getinfo(x->easy, CURLINFO_APPCONNECT_TIME_T, &appconnect_us);
    curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME_T, &total_us);
    curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &connects);
    curl_easy_getinfo(x->easy, CURLINFO_HEADER_SIZE, &header_bytes);
    /* A transfer on a reused connection made no connection of its own and
     * reports no connect times: it was connected all along. */
    if (connects != 0 && (connect_us == 0 || (https && appconnect_us == 0 && !d->proxy)))
        at_error_set(err, AT_ERR_TIMEOUT, "connecting to %s timed out after %ld ms (connect timeout "
                     "%ld ms): the server is unreachable or too slow", x->req.url,
                     (long)(total_us / 1000), d->connect_timeout_ms);
    else if (header_bytes > 0)
        at_error_set(err, AT_ERR_TIMEOUT, "request to %s timed out after %ld ms (request timeout "
                     "%ld ms): the server started answering but the answer did not arrive in time",
                     x->req.url, (long)(total_us / 1000), d->request_timeout_ms);
    else
        at_error_set(err, AT_ERR_TIMEOUT, "request to %s timed out after %ld ms (request timeout "
                     "%ld ms): the server accepted the connection but did not answer in time",
                     x->req.url, (long)(total_us / 1000), d->request_timeout_ms);
}

/* A TLS server that wants a client certificate (TLS 1.3) completes the
 * handshake and only then refuses us: with an alert if we are lucky, often
 * just a reset. Either way nothing of an answer arrived. */
static void error_tls_dropped(at_xfer *x, const char *why, at_error *err)
{
    at_driver *d = x->d;

    if (d->client_cert_file)
        at_error_set(err, AT_ERR_NETWORK, "%s closed the connection after the TLS handshake, before "
                     "answering (%s): the CA may have rejected the client certificate %s", x->req.url,
                     why, d->client_cert_file);
    else
        at_error_set(err, AT_ERR_NETWORK, "%s closed the connection after the TLS handshake, before "
                     "answering (%s): if this CA requires a client certificate, set the CA client "
                     "certificate and key options", x->req.url, why);
}

/* A message a person can act on for every way a transfer can fail. */
static void xfer_error(at_xfer *x, CURLcode rc, at_error *err)
{
    const char *why = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
    const char *url = x->req.url;

    if (x->oversize || rc == CURLE_FILESIZE_EXCEEDED) {
        at_error_set(err, AT_ERR_PROTOCOL, "response from %s is larger than the limit of %zu bytes; "
                     "the transfer was aborted", url, x->d->max_response);
        return;
    }
    if (x->header_flood) {
        at_error_set(err, AT_ERR_PROTOCOL, "response headers from %s exceed %d bytes; the transfer "
                     "was aborted", url, AT_DRIVER_MAX_HEADER_BYTES);
        return;
    }
    if (x->hdr_oom) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory receiving the response from %s", url);
        return;
    }
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
        at_error_set(err, AT_ERR_NETWORK, "cannot resolve the host name of %s (%s): check the URL "
                     "and this machine's DNS", url, why);
        break;
    case CURLE_COULDNT_RESOLVE_PROXY:
        at_error_set(err, AT_ERR_NETWORK, "cannot resolve the proxy %s for %s (%s)",
                     x->d->proxy ? x->d->proxy : "", url, why);
        break;
    case CURLE_COULDNT_CONNECT:
        at_error_set(err, AT_ERR_NETWORK, "cannot connect to %s%s%s: %s (connection refused or "
                     "unreachable; is the server running and the port right?)", url,
                     x->d->proxy ? " through the proxy " : "", x->d->proxy ? x->d->proxy : "", why);
        break;
    case CURLE_OPERATION_TIMEDOUT:
        error_timeout(x, err);
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        error_tls(x, rc, err);
        break;
    case CURLE_GOT_NOTHING:
        at_error_set(err, AT_ERR_NETWORK, "%s closed the connection without answering", url);
        break;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        if (strncasecmp(url, "https:", 6) == 0 && x->header_bytes == 0)
            error_tls_dropped(x, why, err);
        else
            at_error_set(err, AT_ERR_NETWORK, "the connection to %s broke: %s", url, why);
        break;
    default:
        at_error_set(err, AT_ERR_NETWORK, "request to %s failed: %s", url, why);
        break;
    }
}

static void xfer_done(at_driver *d, at_xfer *x, CURLcode rc)
{
    at_error err = AT_ERROR_INIT;
    long status = 0;

    list_remove(&d->active, x);
    curl_multi_remove_handle(d->multi, x->easy);
    if (rc == CURLE_OK && !x->oversize && !x->header_flood && !x->hdr_oom) {
        size_t body_len = x->body.len;
        char *body = at_buf_detach(&x->body);
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        if (!body) {
            at_error_set(&err, AT_ERR_INTERNAL, "out of memory receiving the response from %s", x->req.url);
        } else {
            x->resp.status = status;
            x->resp.body = body;
            x->resp.body_len = body_len;
        }
    } else {
        xfer_error(x, rc, &err);
    }
    if (x->cb) {
        if (err.code == AT_OK)
            x->cb(x->ud, &x->resp, NULL);
        else
            x->cb(x->ud, NULL, &err);
    }
    at_error_clear(&err);
    xfer_free(x);
}

/* Move queued requests to the multi handle while there is room. A request
 * that cannot even be set up fails at once through its callback. */
static int start_queued(at_driver *d)
{
    int called = 0;
    at_xfer *x;

    while (d->active.n < d->max_connections && (x = d->queue.head)) {
        list_remove(&d->queue, x);
        if (setup_easy(x) != 0 || curl_multi_add_handle(d->multi, x->easy) != CURLM_OK) {
            at_error err = AT_ERROR_INIT;
            at_error_set(&err, AT_ERR_INTERNAL, "cannot set up the request to %s (out of memory or "
                         "an option this libcurl lacks)", x->req.url);
            if (x->cb)
                x->cb(x->ud, NULL, &err);
            at_error_clear(&err);
            xfer_free(x);
            called++;
            continue;
        }
        list_append(&d->active, x);
    }
    return called;
}

static int collect_done(at_driver *d)
{
    CURLMsg *m;
    int left, called = 0;

    while ((m = curl_multi_info_read(d->multi, &left))) {
        at_xfer *x = NULL;
        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (!x)
            continue;
        /* m is invalid once the handle is removed: read the result first. */
        xfer_done(d, x, m->data.result);
        called++;
    }
    return called;
}

/* ------------------------------------------------------------------ run */

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int at_driver_run(at_driver *d, long timeout_ms)
{
    long deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    int running = 0;

    for (;;) {
        int called = start_queued(d);
        long left;

        curl_multi_perform(d->multi, &running);
        called += collect_done(d);
        /* Callbacks may have submitted follow-ups: start them now so that
         * they are already connecting when the caller comes back. */
        if (called) {
            called += start_queued(d);
            curl_multi_perform(d->multi, &running);
            break;
        }
        if (__atomic_exchange_n(&d->woken, 0, __ATOMIC_ACQ_REL))
            break;
        left = deadline - now_ms();
        if (left <= 0)
            break;
        /* With nothing in flight this is a plain sleep that
         * at_driver_wakeup can cut short. */
        curl_multi_poll(d->multi, NULL, 0, left > 0x7fffffffL ? 0x7fffffff : (int)left, NULL);
    }
    return d->active.n + d->queue.n;
}

void at_driver_wakeup(at_driver *d)
{
    if (!d)
        return;
    __atomic_store_n(&d->woken, 1, __ATOMIC_RELEASE);
    curl_multi_wakeup(d->multi);
}

int at_driver_pending(const at_driver *d)
{
    return d ? d->active.n + d->queue.n : 0;
}
