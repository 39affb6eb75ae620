/*
 * at_b64.h: base64url without padding (RFC 7515 §2, RFC 4648 §5) and
 * standard base64. Decoders reject characters outside the alphabet.
 */
#ifndef AT_B64_H
#define AT_B64_H

#include <stddef.h>
#include "at_buf.h"

/* Append the base64url encoding of p[0..n) to out. */
int at_b64url_encode(at_buf *out, const void *p, size_t n);

/* Malloc'd base64url string, or NULL on OOM. */
char *at_b64url_encode_str(const void *p, size_t n);

/* Decode base64url (no padding; '=' padding is tolerated only at the end).
 * Appends bytes to out. Returns -1 on any character outside the alphabet or a
 * length that cannot occur (n % 4 == 1), and on leftover bits that are not
 * zero (each byte string has exactly one encoding). Nothing is appended on
 * failure. */
int at_b64url_decode(at_buf *out, const char *s, size_t n);

/* Standard base64 with padding, no line breaks. */
int at_b64_encode(at_buf *out, const void *p, size_t n);
int at_b64_decode(at_buf *out, const char *s, size_t n);

/* True if s[0..n) is non-empty and made only of [A-Za-z0-9_-]. */
int at_b64url_valid(const char *s, size_t n);

#endif
