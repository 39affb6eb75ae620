/*
 * at_buf.h: a growable byte buffer, always NUL-terminated so text can be used
 * as a C string. Ownership: the buffer owns `data`; at_buf_free releases it,
 * at_buf_detach hands it to the caller (free() it).
 */
#ifndef AT_BUF_H
#define AT_BUF_H

#include <stddef.h>
#include <stdarg.h>

typedef struct at_buf {
    char   *data;  /* NULL until the first append */
    size_t  len;   /* bytes used, not counting the terminating NUL */
    size_t  cap;
    size_t  max;   /* 0: unlimited; else appends beyond max fail */
} at_buf;

#define AT_BUF_INIT { NULL, 0, 0, 0 }

void   at_buf_init(at_buf *b);
void   at_buf_free(at_buf *b);
void   at_buf_reset(at_buf *b);          /* len = 0, keep memory */
int    at_buf_reserve(at_buf *b, size_t extra);
int    at_buf_append(at_buf *b, const void *p, size_t n);
int    at_buf_puts(at_buf *b, const char *s);
int    at_buf_printf(at_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int    at_buf_vprintf(at_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
char  *at_buf_detach(at_buf *b);         /* caller frees; never NULL on success (""), NULL on OOM */
const char *at_buf_str(const at_buf *b); /* "" when empty */

/* Wipe then free (for key material). */
void   at_buf_free_secret(at_buf *b);

#endif
