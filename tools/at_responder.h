/*
 * at_responder.h: the challenge responder of the command-line tool. With no
 * web server around, the tool answers the CA's validation itself: an HTTP/1.1
 * server for /.well-known/acme-challenge/TOKEN (http-01) and a TLS server
 * that completes "acme-tls/1" handshakes with the challenge certificate
 * (tls-alpn-01). Both read the live table the engine publishes to, and run
 * on one thread of their own (poll, non-blocking sockets), so a slow or
 * hostile client never holds up the engine or another validation.
 */
#ifndef AT_RESPONDER_H
#define AT_RESPONDER_H

#include <stddef.h>
#include "at_error.h"
#include "at_live.h"
#include "at_log.h"

#define AT_RESPONDER_MAX_PORTS 8

typedef struct at_responder at_responder;

typedef struct at_responder_opts {
    at_live           *live;        /* borrowed; must outlive the responder */
    const char *const *bind;        /* numeric addresses; NULL/0 = 127.0.0.1 and ::1 */
    size_t             nbind;
    const int         *http_ports;  /* http-01 ports (0 = any free port) */
    size_t             nhttp;
    const int         *tls_ports;   /* tls-alpn-01 ports */
    size_t             ntls;
    const at_logger   *log;         /* copied; may be NULL */
} at_responder_opts;

/* Bind every listener (so that a port in use is reported before anything is
 * ordered) and start the thread. An address of the default pair that the
 * host lacks (no IPv6) is skipped; an address given explicitly must bind. */
at_responder *at_responder_start(const at_responder_opts *o, at_error *err);

/* Stop the thread (promptly: a pipe wakes its poll), join it, close
 * everything and free. NULL is fine. */
void at_responder_stop(at_responder *r);

/* The port a listener really got (useful with port 0): the i-th http (tls = 0)
 * or tls (tls = 1) port as given. -1 if out of range. */
int at_responder_port(const at_responder *r, int tls, size_t i);

#endif
