/*
 * at_error.h: errors as values.
 *
 * Every fallible core function takes an `at_error *err` (may be NULL) and
 * returns 0 on success or -1 on failure, with err filled in. The message is
 * written for the administrator: what failed, for which name or file, what the
 * CA said, and what to do. A CA problem document is kept verbatim so that the
 * status page can show it.
 */
#ifndef AT_ERROR_H
#define AT_ERROR_H

#include <stddef.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum at_errcode {
    AT_OK = 0,
    AT_ERR_INTERNAL,     /* a bug or out of memory */
    AT_ERR_CONFIG,       /* bad configuration value */
    AT_ERR_CRYPTO,       /* OpenSSL failed */
    AT_ERR_IO,           /* file system */
    AT_ERR_NETWORK,      /* connect, TLS, timeout talking to the CA */
    AT_ERR_PROTOCOL,     /* the CA sent something we cannot use */
    AT_ERR_CA,           /* the CA answered with a problem document */
    AT_ERR_RATELIMIT,    /* the CA asked us to wait (429 / rateLimited) */
    AT_ERR_CORRUPT,      /* a stored file is damaged (it was moved aside) */
    AT_ERR_NOTFOUND,     /* a lookup found nothing; not a failure by itself */
    AT_ERR_BUSY,         /* a lock is held by someone else */
    AT_ERR_PARSE,        /* untrusted input did not parse */
    AT_ERR_TIMEOUT,
    AT_ERR_CANCELLED
} at_errcode;

#define AT_ERROR_MSG_MAX 1024

typedef struct at_error {
    at_errcode code;
    int        http_status;           /* HTTP status of the CA response, or 0 */
    long       retry_after;           /* seconds the CA asked us to wait, or -1 */
    char       msg[AT_ERROR_MSG_MAX]; /* NUL-terminated, never empty when code != AT_OK */
    json_t    *problem;               /* owned: the CA's RFC 7807 document, or NULL */
} at_error;

/* Initialise to "no error". at_error err = AT_ERROR_INIT; works too. */
#define AT_ERROR_INIT { AT_OK, 0, -1, { 0 }, NULL }
void at_error_init(at_error *err);

/* Release the problem document and reset to AT_OK. */
void at_error_clear(at_error *err);

/* Set code and message (printf style). Replaces any earlier error. Returns -1
 * so that `return at_error_set(err, ...)` reads naturally. err may be NULL. */
int at_error_set(at_error *err, at_errcode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix the existing message with context: "order for example.com: <old>". */
int at_error_prefix(at_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Append OpenSSL's error queue (and clear it) to a message. */
int at_error_set_openssl(at_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Move src into dst (dst is cleared first, src is left as AT_OK). */
void at_error_move(at_error *dst, at_error *src);

/* Deep copy. */
void at_error_copy(at_error *dst, const at_error *src);

const char *at_errcode_name(at_errcode code);

/* JSON form for status and persistence:
 * {"code":"ca","message":"...","http_status":400,"retry_after":-1,"problem":{...}|null} */
json_t *at_error_to_json(const at_error *err);
void at_error_from_json(at_error *err, const json_t *j);

#ifdef __cplusplus
}
#endif
#endif
