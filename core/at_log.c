#include "at_log.h"

#include <stdarg.h>
#include <stdio.h>

void at_log(const at_logger *lg, at_log_level level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    if (!lg || !lg->fn || level > lg->max)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    lg->fn(lg->ud, level, msg);
}
