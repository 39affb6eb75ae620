#include "at_buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

void at_buf_init(at_buf *b)
{
    b->data = NULL;
    b->len = b->cap = b->max = 0;
}

void at_buf_free(at_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void at_buf_free_secret(at_buf *b)
{
    if (b->data)
        OPENSSL_cleanse(b->data, b->cap);
    at_buf_free(b);
}

void at_buf_reset(at_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

int at_buf_reserve(at_buf *b, size_t extra)
{
    size_t need, cap;
    char *nd;
    if (extra > SIZE_MAX - b->len - 1)
        return -1;
    need = b->len + extra + 1;
    if (b->max && need - 1 > b->max)
        return -1;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    nd = realloc(b->data, cap);
    if (!nd)
        return -1;
    b->data = nd;
    b->cap = cap;
    return 0;
}

int at_buf_append(at_buf *b, const void *p, size_t n)
{
    if (at_buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int at_buf_puts(at_buf *b, const char *s)
{
    return at_buf_append(b, s, strlen(s));
}

int at_buf_vprintf(at_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    int n;
    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0 || at_buf_reserve(b, (size_t)n) != 0)
        return -1;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int at_buf_printf(at_buf *b, const char *fmt, ...)
{
    va_list ap;
    int rv;
    va_start(ap, fmt);
    rv = at_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rv;
}

char *at_buf_detach(at_buf *b)
{
    char *d;
    if (!b->data && at_buf_reserve(b, 0) != 0)
        return NULL;
    if (!b->data)
        return NULL;
    b->data[b->len] = '\0';
    d = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

const char *at_buf_str(const at_buf *b)
{
    return b->data ? b->data : "";
}
