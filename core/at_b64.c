/*
 * at_b64.c: base64url (unpadded) and standard base64.
 *
 * Written out rather than taken from OpenSSL's EVP_EncodeBlock because the
 * latter knows only the standard alphabet, and its decoder is lenient about
 * whitespace and padding, which a JOSE decoder must not be.
 */
#include "at_b64.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char url_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char std_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int encode(at_buf *out, const unsigned char *p, size_t n, const char *alpha, int pad)
{
    size_t i, olen;
    char *o;
    if (n > (SIZE_MAX / 4) * 3 - 3)
        return -1;
    olen = (n + 2) / 3 * 4;
    if (at_buf_reserve(out, olen) != 0)
        return -1;
    o = out->data + out->len;
    for (i = 0; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = alpha[v >> 18 & 63];
        *o++ = alpha[v >> 12 & 63];
        *o++ = alpha[v >> 6 & 63];
        *o++ = alpha[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *o++ = alpha[v >> 18 & 63];
        *o++ = alpha[v >> 12 & 63];
        if (pad) {
            *o++ = '=';
            *o++ = '=';
        }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        *o++ = alpha[v >> 18 & 63];
        *o++ = alpha[v >> 12 & 63];
        *o++ = alpha[v >> 6 & 63];
        if (pad)
            *o++ = '=';
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return 0;
}

static int val_of(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Decode n characters (no padding) of the given alphabet. Trailing bits that
 * would be dropped must be zero: otherwise two strings decode to the same
 * bytes, and a JWS comparison by string would be fooled. */
static int decode(at_buf *out, const char *s, size_t n, int url)
{
    size_t i, start = out->len;
    uint32_t acc = 0;
    int bits = 0;
    if (n % 4 == 1)
        return -1;
    if (at_buf_reserve(out, n / 4 * 3 + 3) != 0)
        return -1;
    for (i = 0; i < n; i++) {
        int v = val_of((unsigned char)s[i], url);
        if (v < 0)
            goto fail;
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out->data[out->len++] = (char)(acc >> bits & 0xff);
        }
    }
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        goto fail;
    out->data[out->len] = '\0';
    return 0;
fail:
    out->len = start;
    out->data[out->len] = '\0';
    return -1;
}

int at_b64url_encode(at_buf *out, const void *p, size_t n)
{
    return encode(out, p, n, url_alpha, 0);
}

char *at_b64url_encode_str(const void *p, size_t n)
{
    at_buf b = AT_BUF_INIT;
    if (at_b64url_encode(&b, p, n) != 0) {
        at_buf_free(&b);
        return NULL;
    }
    return at_buf_detach(&b);
}

int at_b64url_decode(at_buf *out, const char *s, size_t n)
{
    /* Padding is not part of base64url in JOSE, but a CA or an admin pasting
     * an EAB key may add it; accept it only where it could legitimately be. */
    size_t pads = 0;
    while (pads < 2 && n > 0 && s[n - 1] == '=') {
        n--;
        pads++;
    }
    if (pads && (n + pads) % 4 != 0)
        return -1;
    return decode(out, s, n, 1);
}

int at_b64_encode(at_buf *out, const void *p, size_t n)
{
    return encode(out, p, n, std_alpha, 1);
}

int at_b64_decode(at_buf *out, const char *s, size_t n)
{
    size_t pads = 0;
    if (n % 4 != 0)
        return -1;
    while (pads < 2 && n > 0 && s[n - 1] == '=') {
        n--;
        pads++;
    }
    return decode(out, s, n, 0);
}

int at_b64url_valid(const char *s, size_t n)
{
    if (!s || n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (val_of((unsigned char)s[i], 1) < 0)
            return 0;
    return 1;
}
