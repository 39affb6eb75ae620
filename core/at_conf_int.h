/*
 * at_conf_int.h: helpers shared by at_conf.c and at_parse.c.
 */
#ifndef AT_CONF_INT_H
#define AT_CONF_INT_H

#include <stddef.h>

/* A value as it may appear inside '...' in a message: at most about 100
 * bytes (then "..."), control characters shown as '?'. Returns buf. */
const char *at_conf_quote(const char *s, char *buf, size_t size);
#define AT_CONF_QUOTE_SIZE 128

#endif
