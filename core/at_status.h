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
 */
#ifndef AT_STATUS_H
#define AT_STATUS_H

#include <time.h>
#include <jansson.h>
#include "at_error.h"
#include "at_buf.h"
#include "at_conf.h"
#include "at_store.h"

json_t *at_status_collect(const at_conf *conf, at_store *st, time_t now, at_error *err);

int at_status_render_json(const json_t *status, at_buf *out);
int at_status_render_html(const json_t *status, at_buf *out);
int at_status_render_prometheus(const json_t *status, at_buf *out);

/* Pick a renderer from a query string ("format=json", "format=prometheus",
 * anything else HTML). Sets *content_type to a static string. */
int at_status_render_query(const json_t *status, const char *query, at_buf *out,
                           const char **content_type);

#endif
