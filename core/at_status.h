/*
 * at_status.h: the status model. One function gathers the state of every
 * managed certificate from the configuration and the store; three renderers
 * show the same data as JSON, HTML and Prometheus text. Any process can
 * render it (it reads the store; it never writes).
 *
 * JSON shape:
 * {"version":"0.1.0","generated_at":"...",
 *  "certificates":[{"id":..,"site":..,"names":[..],"key_type":"ec:P-256",
 *     "state":"missing|pending|valid|renewing|error","ca":URL,
 *     "not_before":RFC3339|null,"not_after":..|null,"renew_at":..|null,
 *     "renew_reason":"expiring"|..,"next_attempt":..|null,"serial":..|null,
 *     "issuer":..|null,"challenge":"http-01"|null,"failures":n,
 *     "ari":{"start":..,"end":..,"explanation":..}|null,
 *     "last_error":{"code":..,"message":..,"problem":{..}|null}|null}]}
 * No key material and no EAB key ever appears in it.
 *
 * States: "valid" (a certificate in its validity, nothing in flight),
 * "renewing" (a valid certificate and an order in flight), "pending" (no
 * usable certificate; an order in flight or never attempted), "missing" (no
 * usable certificate and nothing under way), "error" (the last attempt
 * failed, or the stored certificate is damaged). renew_at/renew_reason come
 * from the planner (at_planner.h); next_attempt is the engine's recorded
 * retry time after a failure, never before the CA's Retry-After.
 *
 * Prometheus families (labels id and name = first name): autotls_certificate_info
 * (+ key_type, issuer, serial, ca), autotls_certificate_state (+ state, 1 or 0
 * for each of the five), autotls_certificate_not_before_seconds,
 * autotls_certificate_not_after_seconds, autotls_renewal_due_seconds,
 * autotls_certificate_next_attempt_seconds (all Unix times) and
 * autotls_certificate_failures; autotls_shared_memory_{size,used}_bytes when
 * the host added "server":{"shared_memory":{...}}.
 */
#ifndef AT_STATUS_H
#define AT_STATUS_H

#include <time.h>
#include <jansson.h>
#include "at_error.h"
#include "at_buf.h"
#include "at_conf.h"
#include "at_live.h"
#include "at_store.h"

/* A new reference, or NULL (with err) only when conf or st is missing or
 * memory runs out: a certificate the store cannot read is shown as an error. */
json_t *at_status_collect(const at_conf *conf, at_store *st, time_t now, at_error *err);

int at_status_render_json(const json_t *status, at_buf *out);
int at_status_render_html(const json_t *status, at_buf *out);
int at_status_render_prometheus(const json_t *status, at_buf *out);

/* Pick a renderer from a query string ("format=json", "format=prometheus" or
 * "format=metrics", anything else HTML). Sets *content_type to a static
 * string. Renderers append to out; -1 when out cannot grow (out->max). */
int at_status_render_query(const json_t *status, const char *query, at_buf *out,
                           const char **content_type);

/* at_status_collect over the directory store at store_dir (opened and closed
 * here). On failure err says "reading the status from DIR failed: ...". */
json_t *at_status_read(const at_conf *conf, const char *store_dir, time_t now, at_error *err);

/* What only the host server knows, added as "server":
 *   {"software":..,"version":..|null,"renewal_pid":n|null,"renewal_since":RFC3339|null,
 *    "shared_memory":{"size","used","certificates","pending_http01",
 *                     "pending_tlsalpn01","generation"}}   (when live is set) */
typedef struct at_status_server {
    const char *software;       /* "apache", "nginx" */
    const char *version;        /* the server's version, or NULL */
    long        renewal_pid;    /* the process that renews, 0: none */
    time_t      renewal_since;
    at_live    *live;           /* the shared region's table, or NULL */
} at_status_server;

/* Sets status["server"]; 0, or -1 when memory runs out. */
int at_status_set_server(json_t *status, const at_status_server *srv);

#endif
