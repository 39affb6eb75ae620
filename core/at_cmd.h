/*
 * at_cmd.h: run the administrator's commands (dns-01 hook, notify command)
 * without blocking the engine: spawned with posix_spawn, no shell, stdin from
 * /dev/null, stdout+stderr captured (bounded) for the log, killed after a
 * timeout. The engine polls at_cmd_poll from its loop.
 */
#ifndef AT_CMD_H
#define AT_CMD_H

#include <stddef.h>
#include <sys/types.h>
#include "at_error.h"
#include "at_buf.h"

typedef struct at_cmd at_cmd;

/* Start argv[0] (an absolute path) with argv. timeout_s > 0 kills it
 * (SIGTERM, then SIGKILL 2 s later) when exceeded. */
at_cmd *at_cmd_start(const char *const *argv, long timeout_s, at_error *err);

/* Non-blocking: 1 finished (exit status in *status, or -1 if killed by a
 * signal or timeout), 0 still running. */
int at_cmd_poll(at_cmd *c, int *status);

/* Block until finished or timeout; returns exit status (-1 on signal/timeout). */
int at_cmd_wait(at_cmd *c);

/* Captured output (stdout and stderr interleaved, at most 4 KiB). */
const char *at_cmd_output(const at_cmd *c);

/* Kill if still running and release. */
void at_cmd_free(at_cmd *c);

#endif
