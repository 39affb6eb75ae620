#include "at_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <openssl/err.h>

void at_error_init(at_error *err)
{
    if (!err)
        return;
    err->code = AT_OK;
    err->http_status = 0;
    err->retry_after = -1;
    err->msg[0] = '\0';
    err->problem = NULL;
}

void at_error_clear(at_error *err)
{
    if (!err)
        return;
    json_decref(err->problem);
    at_error_init(err);
}

/* Messages end up in logs (one line each), on the status page and in the
 * state file as JSON, which must be valid UTF-8. What a CA, a file or a
 * parser contributes can hold anything, and truncation can cut a multibyte
 * character: so every message is made one line of valid UTF-8 here, once,
 * whatever its source. Control characters become spaces, bytes that do not
 * form UTF-8 become '?'. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned c = p[0], cp;
    size_t n;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)     /* also stops at the terminating NUL */
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

static void msg_clean(char *msg)
{
    unsigned char *p = (unsigned char *)msg;
    while (*p) {
        size_t n = utf8_len(p);
        if (n == 0) {
            *p++ = '?';
            continue;
        }
        if (n == 1 && (*p < 0x20 || *p == 0x7f))
            *p = ' ';
        p += n;
    }
}

static void set_v(at_error *err, at_errcode code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void set_v(at_error *err, at_errcode code, const char *fmt, va_list ap)
{
    json_decref(err->problem);
    err->problem = NULL;
    err->code = code;
    err->http_status = 0;
    err->retry_after = -1;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    if (!err->msg[0])
        snprintf(err->msg, sizeof(err->msg), "%s error", at_errcode_name(code));
    msg_clean(err->msg);
}

int at_error_set(at_error *err, at_errcode code, const char *fmt, ...)
{
    va_list ap;
    if (!err)
        return -1;
    va_start(ap, fmt);
    set_v(err, code, fmt, ap);
    va_end(ap);
    return -1;
}

int at_error_prefix(at_error *err, const char *fmt, ...)
{
    char prefix[512], old[AT_ERROR_MSG_MAX];
    va_list ap;
    if (!err)
        return -1;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    {
        /* Assemble by hand: the prefix wins, the old message is cut if need be. */
        size_t pl = strlen(prefix), ol = strlen(old), room = sizeof(err->msg) - 1;
        if (pl > room)
            pl = room;
        memcpy(err->msg, prefix, pl);
        if (pl + 2 <= room) {
            memcpy(err->msg + pl, ": ", 2);
            pl += 2;
            if (ol > room - pl)
                ol = room - pl;
            memcpy(err->msg + pl, old, ol);
            pl += ol;
        }
        err->msg[pl] = '\0';
    }
    msg_clean(err->msg);
    if (err->code == AT_OK)
        err->code = AT_ERR_INTERNAL;
    return -1;
}

int at_error_set_openssl(at_error *err, const char *fmt, ...)
{
    va_list ap;
    unsigned long e;
    size_t len;
    if (!err) {
        ERR_clear_error();
        return -1;
    }
    va_start(ap, fmt);
    set_v(err, AT_ERR_CRYPTO, fmt, ap);
    va_end(ap);
    /* Append the deepest reasons; the first entry is usually the root cause. */
    while ((e = ERR_get_error()) != 0) {
        char reason[256];
        len = strlen(err->msg);
        if (len + 4 >= sizeof(err->msg))
            continue;
        ERR_error_string_n(e, reason, sizeof(reason));
        snprintf(err->msg + len, sizeof(err->msg) - len, " (%s)", reason);
    }
    msg_clean(err->msg);
    return -1;
}

void at_error_move(at_error *dst, at_error *src)
{
    if (!dst || !src || dst == src)
        return;
    json_decref(dst->problem);
    *dst = *src;
    at_error_init(src);
}

void at_error_copy(at_error *dst, const at_error *src)
{
    if (!dst || !src || dst == src)
        return;
    json_decref(dst->problem);
    *dst = *src;
    dst->problem = src->problem ? json_deep_copy(src->problem) : NULL;
}

const char *at_errcode_name(at_errcode code)
{
    switch (code) {
    case AT_OK:            return "ok";
    case AT_ERR_INTERNAL:  return "internal";
    case AT_ERR_CONFIG:    return "config";
    case AT_ERR_CRYPTO:    return "crypto";
    case AT_ERR_IO:        return "io";
    case AT_ERR_NETWORK:   return "network";
    case AT_ERR_PROTOCOL:  return "protocol";
    case AT_ERR_CA:        return "ca";
    case AT_ERR_RATELIMIT: return "ratelimit";
    case AT_ERR_CORRUPT:   return "corrupt";
    case AT_ERR_NOTFOUND:  return "notfound";
    case AT_ERR_BUSY:      return "busy";
    case AT_ERR_PARSE:     return "parse";
    case AT_ERR_TIMEOUT:   return "timeout";
    case AT_ERR_CANCELLED: return "cancelled";
    }
    return "unknown";
}

static at_errcode code_from_name(const char *s)
{
    for (int c = AT_OK; c <= AT_ERR_CANCELLED; c++)
        if (s && strcmp(s, at_errcode_name((at_errcode)c)) == 0)
            return (at_errcode)c;
    return AT_ERR_INTERNAL;
}

json_t *at_error_to_json(const at_error *err)
{
    if (!err || err->code == AT_OK)
        return json_null();
    return json_pack("{s:s, s:s, s:i, s:I, s:O}",
                     "code", at_errcode_name(err->code),
                     "message", err->msg,
                     "http_status", err->http_status,
                     "retry_after", (json_int_t)err->retry_after,
                     "problem", err->problem ? err->problem : json_null());
}

void at_error_from_json(at_error *err, const json_t *j)
{
    const char *msg;
    json_t *p;
    if (!err)
        return;
    at_error_clear(err);
    if (!json_is_object(j))
        return;
    err->code = code_from_name(json_string_value(json_object_get(j, "code")));
    msg = json_string_value(json_object_get(j, "message"));
    snprintf(err->msg, sizeof(err->msg), "%s", msg ? msg : "");
    msg_clean(err->msg);
    /* A record damaged to an empty message must still say something. */
    if (!err->msg[0])
        snprintf(err->msg, sizeof(err->msg), "unknown error (the saved record has no message)");
    err->http_status = (int)json_integer_value(json_object_get(j, "http_status"));
    err->retry_after = json_is_integer(json_object_get(j, "retry_after"))
        ? (long)json_integer_value(json_object_get(j, "retry_after")) : -1;
    p = json_object_get(j, "problem");
    if (json_is_object(p))
        err->problem = json_deep_copy(p);
    if (err->code == AT_OK)
        err->code = AT_ERR_INTERNAL;
}
