/*
 * at_http.h: HTTP request and response values exchanged between the
 * sans-I/O protocol layer and the I/O driver. No sockets here.
 */
#ifndef AT_HTTP_H
#define AT_HTTP_H

#include <stddef.h>
#include <time.h>

typedef enum at_http_method {
    AT_HTTP_GET = 0,
    AT_HTTP_HEAD,
    AT_HTTP_POST
} at_http_method;

/* A request. All strings owned by the request (at_http_req_free). */
typedef struct at_http_req {
    at_http_method method;
    char   *url;
    char   *body;          /* POST body or NULL */
    size_t  body_len;
    char   *content_type;  /* "application/jose+json" for ACME POSTs, else NULL */
    char   *accept;        /* e.g. "application/pem-certificate-chain", or NULL */
} at_http_req;

void at_http_req_free(at_http_req *req);

typedef struct at_http_link {
    char *url;   /* absolute (resolved against the request URL) */
    char *rel;   /* "alternate", "up", "index", ... */
} at_http_link;

/* A response. Owned strings; at_http_resp_free releases them. */
typedef struct at_http_resp {
    long    status;          /* HTTP status, 0 if no response (see error) */
    char   *content_type;    /* without parameters, lowercase, or NULL */
    char   *location;        /* absolute, or NULL */
    char   *replay_nonce;    /* or NULL */
    char   *retry_after;     /* raw header value, or NULL */
    at_http_link *links;
    size_t  nlinks;
    char   *body;            /* NUL-terminated for convenience */
    size_t  body_len;
} at_http_resp;

void at_http_resp_init(at_http_resp *resp);
void at_http_resp_free(at_http_resp *resp);

/* Deep copy (for tests and for requeueing). */
int at_http_resp_copy(at_http_resp *dst, const at_http_resp *src);

/* Feed one raw header line ("Name: value\r\n") into resp: recognises
 * Content-Type, Location, Replay-Nonce, Retry-After and Link (several links
 * per header, several headers). base_url resolves relative URLs. Unknown
 * headers are ignored. Returns -1 on OOM only. */
int at_http_resp_header(at_http_resp *resp, const char *line, size_t len, const char *base_url);

/* Resolve a possibly relative reference against a base URL (RFC 3986 §5.2
 * for the cases that occur: absolute URL, absolute path, relative path).
 * Malloc'd or NULL. */
char *at_http_resolve(const char *base, const char *ref);

/* First link with the given rel, or NULL. */
const char *at_http_link_rel(const at_http_resp *resp, const char *rel);

/* Seconds from Retry-After (delta or HTTP-date) relative to now, or -1. */
long at_http_retry_after(const at_http_resp *resp, time_t now);

#endif
