/*
 * at_json.h: small helpers over jansson. Parsing untrusted input always goes
 * through at_json_parse so that limits and error messages are uniform.
 */
#ifndef AT_JSON_H
#define AT_JSON_H

#include <stddef.h>
#include <jansson.h>
#include "at_error.h"

/* Parse a JSON document of at most `len` bytes (need not be NUL-terminated).
 * `what` names the document in the error ("order response from https://...").
 * Returns a new reference or NULL with err set (AT_ERR_PARSE). */
json_t *at_json_parse(const char *data, size_t len, const char *what, at_error *err);

/* Parse and require a JSON object. */
json_t *at_json_parse_object(const char *data, size_t len, const char *what, at_error *err);

/* Borrowed string member or NULL if missing / not a string. */
const char *at_json_str(const json_t *obj, const char *key);

/* Integer member or dflt. */
long long at_json_int(const json_t *obj, const char *key, long long dflt);

/* Boolean member (true only for JSON true). */
int at_json_bool(const json_t *obj, const char *key);

/* Compact serialisation with keys in the order they were inserted
 * (JSON_COMPACT | JSON_PRESERVE_ORDER). Malloc'd; NULL on OOM. */
char *at_json_compact(const json_t *j);

/* Compact with sorted keys and no whitespace (RFC 7638 canonical form for
 * JWK members that are all ASCII). Malloc'd. */
char *at_json_canonical(const json_t *j);

/* Pretty (2-space indent, sorted keys) for files people read. Malloc'd. */
char *at_json_pretty(const json_t *j);

#endif
