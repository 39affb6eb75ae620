/*
 * at_json.c: helpers over jansson.
 */
#include "at_json.h"

#include <string.h>

/* Responses from a CA are small; anything bigger is an error or an attack.
 * The driver limits bodies as well; this guards every other caller. */
#define AT_JSON_MAX (4u * 1024 * 1024)

json_t *at_json_parse(const char *data, size_t len, const char *what, at_error *err)
{
    json_error_t je;
    json_t *j;
    if (!what)
        what = "JSON document";
    if (!data || len == 0) {
        at_error_set(err, AT_ERR_PARSE, "%s is empty, expected JSON", what);
        return NULL;
    }
    if (len > AT_JSON_MAX) {
        at_error_set(err, AT_ERR_PARSE, "%s is too large (%zu bytes, limit %u)", what, len,
                     AT_JSON_MAX);
        return NULL;
    }
    /* JSON_REJECT_DUPLICATES: a document with two values for one key means
     * different things to different parsers; refuse it. */
    j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        at_error_set(err, AT_ERR_PARSE, "%s is not valid JSON: %s at line %d column %d", what,
                     je.text, je.line, je.column);
        return NULL;
    }
    return j;
}

json_t *at_json_parse_object(const char *data, size_t len, const char *what, at_error *err)
{
    json_t *j = at_json_parse(data, len, what, err);
    if (j && !json_is_object(j)) {
        at_error_set(err, AT_ERR_PARSE, "%s is JSON but not an object", what ? what : "JSON document");
        json_decref(j);
        return NULL;
    }
    return j;
}

const char *at_json_str(const json_t *obj, const char *key)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

long long at_json_int(const json_t *obj, const char *key, long long dflt)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

int at_json_bool(const json_t *obj, const char *key)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return json_is_true(v);
}

char *at_json_compact(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
}

char *at_json_canonical(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

char *at_json_pretty(const json_t *j)
{
    return json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}
