/*
 * at_log.h: the core never prints. Hosts (Apache, nginx, the tool) pass a
 * sink; messages arrive whole, one line each, with the level.
 */
#ifndef AT_LOG_H
#define AT_LOG_H

typedef enum at_log_level {
    AT_LOG_ERROR = 0,
    AT_LOG_WARN,
    AT_LOG_NOTICE,
    AT_LOG_INFO,
    AT_LOG_DEBUG
} at_log_level;

typedef void at_log_fn(void *ud, at_log_level level, const char *msg);

typedef struct at_logger {
    at_log_fn   *fn;    /* NULL: discard */
    void        *ud;
    at_log_level max;   /* messages above this level are not formatted */
} at_logger;

void at_log(const at_logger *lg, at_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
