/*
 * at_responder.c: the tool's own challenge server (see at_responder.h).
 *
 * One thread, one poll loop, non-blocking sockets. Each connection lives in a
 * fixed slot with a deadline, so a client that connects and says nothing
 * costs one slot for a few seconds and nothing else. The HTTP side reads one
 * bounded request head, answers and closes; the TLS side completes a
 * handshake whose certificate is the RFC 8737 challenge certificate, chosen
 * in the certificate callback from the SNI name, and closes.
 *
 * A well-formed request for a challenge that is not (yet) published is held
 * for a few seconds and looked up again before it is refused: when the tool
 * resumes an order after a crash, the CA may already be validating while the
 * engine is still reading the order back, and a 404 at that moment would
 * cost the whole order.
 */
#define _GNU_SOURCE 1
#include "at_responder.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "at_serve.h"

#define RS_MAX_CONNS      64
#define RS_HEAD_MAX       8192          /* request line + headers */
#define RS_CONN_MS        10000         /* a whole exchange */
#define RS_DRAIN_MS       2000          /* waiting for the client to close */
#define RS_POLL_MAX_MS    1000
#define RS_PENDING_MS     5000          /* how long an unknown challenge is waited for */
#define RS_RECHECK_MS     100
#define RS_KEYAUTH_MAX    512
#define RS_DEFAULT_NBIND  2
#define RS_MAX_LISTEN     (AT_RESPONDER_MAX_PORTS * 2 * 8)

typedef struct rs_listener {
    int fd;
    int tls;
} rs_listener;

typedef enum rs_state {
    RS_FREE = 0,
    RS_READ,        /* http: reading the request head */
    RS_WRITE,       /* http: sending the answer */
    RS_DRAIN,       /* http: answer sent, waiting for the client's close */
    RS_HANDSHAKE,   /* tls: handshake in progress */
    RS_PENDING      /* waiting for the challenge asked for to be published */
} rs_state;

typedef struct rs_conn {
    rs_state  state;
    int       fd;
    SSL      *ssl;
    short     events;
    long long deadline;
    long long started;
    long long recheck;  /* RS_PENDING: when to look again */
    int       tls_pending; /* RS_PENDING of a TLS connection (else http) */
    char      peer[64];
    char      in[RS_HEAD_MAX];
    size_t    inlen;
    char     *out;
    size_t    outlen, outoff;
    size_t    path_off, path_len;   /* http: the request path inside in[] */
    int       head_only;
} rs_conn;

struct at_responder {
    at_live     *live;
    at_serve    *serve;
    SSL_CTX     *ctx;
    at_logger    log;
    rs_listener  ls[RS_MAX_LISTEN];
    size_t       nls;
    int          http_ports[AT_RESPONDER_MAX_PORTS];
    size_t       nhttp;
    int          tls_ports[AT_RESPONDER_MAX_PORTS];
    size_t       ntls;
    int          wake[2];
    pthread_t    thr;
    int          started;
    rs_conn      conns[RS_MAX_CONNS];
};

static const char *const default_bind[RS_DEFAULT_NBIND] = { "127.0.0.1", "::1" };

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ addresses */

/* "127.0.0.1", "::1", "[::1]" -> sockaddr. */
static int parse_addr(const char *s, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    char buf[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(s);

    memset(ss, 0, sizeof(*ss));
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        if (n - 2 >= sizeof(buf))
            return -1;
        memcpy(buf, s + 1, n - 2);
        buf[n - 2] = '\0';
        s = buf;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, s, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, s, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
        return 0;
    }
    return -1;
}

static void addr_text(const struct sockaddr *sa, char *out, size_t outsz)
{
    out[0] = '\0';
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)outsz);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)outsz);
        else
            inet_ntop(AF_INET6, a, out, (socklen_t)outsz);
    }
    if (!out[0])
        snprintf(out, outsz, "?");
}

/* ------------------------------------------------------------ listeners */

static const char *bind_hint(int e, int port)
{
    if (e == EACCES && port > 0 && port < 1024)
        return "; ports below 1024 need root or CAP_NET_BIND_SERVICE";
    if (e == EADDRINUSE)
        return "; another program (a web server?) listens there: stop it, or give another port "
               "and forward the CA's connections to it";
    return "";
}

/* Listen on addr:*port. On return *port holds the port really bound (for 0).
 * 1 bound, 0 skipped (optional address the host lacks), -1 error. */
static int listen_one(at_responder *r, const char *addr, int *port, int tls, int optional,
                      at_error *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, one = 1, e;
    const char *what = tls ? "tls-alpn-01" : "http-01";

    if (r->nls >= RS_MAX_LISTEN)
        return at_error_set(err, AT_ERR_CONFIG, "too many addresses and ports to listen on (at most %d)",
                            RS_MAX_LISTEN);
    if (parse_addr(addr, *port, &ss, &len) != 0)
        return at_error_set(err, AT_ERR_CONFIG, "'%s' is not a numeric IPv4 or IPv6 address to listen on",
                            addr);
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        e = errno;
        if (optional && (e == EAFNOSUPPORT || e == EPROTONOSUPPORT))
            return 0;
        return at_error_set(err, AT_ERR_IO, "cannot open a socket for %s on %s: %s", what, addr, strerror(e));
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 64) != 0) {
        e = errno;
        close(fd);
        if (optional && (e == EADDRNOTAVAIL || e == EAFNOSUPPORT))
            return 0;
        return at_error_set(err, AT_ERR_IO, "cannot listen on %s port %d for %s: %s%s", addr, *port, what,
                            strerror(e), bind_hint(e, *port));
    }
    if (*port == 0) {
        struct sockaddr_storage got;
        socklen_t gl = sizeof(got);
        if (getsockname(fd, (struct sockaddr *)&got, &gl) == 0)
            *port = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
                                                    : ((struct sockaddr_in6 *)&got)->sin6_port);
    }
    r->ls[r->nls].fd = fd;
    r->ls[r->nls].tls = tls;
    r->nls++;
    return 1;
}

static int listen_port(at_responder *r, const at_responder_opts *o, int *port, int tls, at_error *err)
{
    const char *const *addrs = o->nbind ? o->bind : default_bind;
    size_t naddrs = o->nbind ? o->nbind : RS_DEFAULT_NBIND;
    int bound = 0;

    for (size_t i = 0; i < naddrs; i++) {
        /* Only ::1 of the default pair may be missing (hosts without IPv6). */
        int optional = !o->nbind && i > 0;
        int rv = listen_one(r, addrs[i], port, tls, optional, err);
        if (rv < 0)
            return -1;
        bound += rv;
    }
    if (!bound)
        return at_error_set(err, AT_ERR_IO, "nothing to listen on for %s", tls ? "tls-alpn-01" : "http-01");
    return 0;
}

/* ---------------------------------------------------------- TLS-ALPN-01 */

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    const size_t al = sizeof(AT_ALPN_ACME) - 1;
    unsigned int i = 0;
    (void)ssl;
    (void)arg;
    /* This server exists only for validation: nothing but acme-tls/1. */
    while (i < inlen) {
        unsigned int l = in[i++];
        if (l == 0 || l > inlen - i)
            break;
        if (l == al && memcmp(in + i, AT_ALPN_ACME, al) == 0) {
            *out = in + i;
            *outlen = (unsigned char)l;
            return SSL_TLSEXT_ERR_OK;
        }
        i += l;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* "4.3.2.1.in-addr.arpa" -> "1.2.3.4"; 32 nibbles ".ip6.arpa" -> IPv6 text.
 * RFC 8738 §6: the validator names an IP identifier this way in SNI. */
static int reverse_name_to_ip(const char *name, char *out, size_t outsz)
{
    size_t n = strlen(name);
    static const char v4[] = ".in-addr.arpa", v6[] = ".ip6.arpa";

    if (n > sizeof(v4) - 1 && strcmp(name + n - (sizeof(v4) - 1), v4) == 0) {
        unsigned oct[4];
        char tail;
        if (sscanf(name, "%3u.%3u.%3u.%3u.in-addr.arp%c", &oct[0], &oct[1], &oct[2], &oct[3], &tail) != 5 ||
            tail != 'a' || oct[0] > 255 || oct[1] > 255 || oct[2] > 255 || oct[3] > 255)
            return -1;
        snprintf(out, outsz, "%u.%u.%u.%u", oct[3], oct[2], oct[1], oct[0]);
        return 0;
    }
    if (n == 63 + sizeof(v6) - 1 && strcmp(name + 63, v6) == 0) {
        unsigned char a[16];
        /* 32 labels of one hex digit, least significant nibble first */
        for (int k = 0; k < 32; k++) {
            char c = name[2 * k];
            int v, byte = 15 - k / 2;
            if (name[2 * k + 1] != '.')
                return -1;
            if (c >= '0' && c <= '9')
                v = c - '0';
            else if (c >= 'a' && c <= 'f')
                v = c - 'a' + 10;
            else
                return -1;
            if (k % 2 == 0)
                a[byte] = (unsigned char)v;
            else
                a[byte] = (unsigned char)(a[byte] | (v << 4));
        }
        return inet_ntop(AF_INET6, a, out, (socklen_t)outsz) ? 0 : -1;
    }
    return -1;
}

/* The identifier the validator asks about: the SNI name (lowercase, without
 * a trailing dot, reverse names turned into addresses) or, when the client
 * sent no SNI, the address it connected to. */
static int challenge_name(SSL *ssl, char *out, size_t outsz)
{
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    char tmp[256];
    size_t n;

    if (!sni || !*sni) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(SSL_get_fd(ssl), (struct sockaddr *)&ss, &len) != 0)
            return -1;
        addr_text((struct sockaddr *)&ss, out, outsz);
        return 0;
    }
    n = strlen(sni);
    if (n >= sizeof(tmp) || n >= outsz)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = sni[i];
        tmp[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    if (n > 1 && tmp[n - 1] == '.')
        n--;
    tmp[n] = '\0';
    if (reverse_name_to_ip(tmp, out, outsz) == 0)
        return 0;
    memcpy(out, tmp, n + 1);
    return 0;
}

/* Refuse, at the ClientHello, every client that does not offer acme-tls/1:
 * with TLS 1.2 OpenSSL runs the ALPN callback only after the certificate
 * callback, so this is the one place that sees the offer in time. */
static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
    at_responder *r = arg;
    const unsigned char *ext = NULL;
    size_t len = 0;

    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext, &len) == 1 &&
        len >= 2 && (size_t)((ext[0] << 8) | ext[1]) == len - 2 &&
        at_serve_alpn_has_acme(ext + 2, (unsigned int)(len - 2)))
        return SSL_CLIENT_HELLO_SUCCESS;
    at_log(&r->log, AT_LOG_DEBUG, "responder: TLS client did not offer acme-tls/1; refused");
    *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
    return SSL_CLIENT_HELLO_ERROR;
}

static int cert_cb(SSL *ssl, void *arg)
{
    at_responder *r = arg;
    rs_conn *c = SSL_get_app_data(ssl);
    char name[256];
    int rv;

    if (challenge_name(ssl, name, sizeof(name)) != 0)
        return 0;
    rv = at_serve_install_alpn01(r->serve, ssl, name);
    if (rv == 0 && c && now_ms() < c->started + RS_PENDING_MS)
        return -1;          /* suspend the handshake; looked up again shortly */
    if (rv != 1) {
        at_log(&r->log, AT_LOG_INFO, "responder: tls-alpn-01 for %s: %s", name,
               rv == 0 ? "no challenge is pending for this name" : "the challenge certificate is unusable");
        return 0;
    }
    at_log(&r->log, AT_LOG_DEBUG, "responder: tls-alpn-01 challenge certificate for %s", name);
    return 1;
}

static SSL_CTX *make_ctx(at_responder *r, at_error *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        at_error_set_openssl(err, "cannot create the TLS context of the tls-alpn-01 responder");
        return NULL;
    }
    /* RFC 8737 §3: TLS 1.2 or later. */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, r);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, r);
    SSL_CTX_set_cert_cb(ctx, cert_cb, r);
    return ctx;
}

/* ---------------------------------------------------------- connections */

static void conn_close(rs_conn *c)
{
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    free(c->out);
    c->ssl = NULL;
    c->fd = -1;
    c->out = NULL;
    c->outlen = c->outoff = c->inlen = 0;
    c->state = RS_FREE;
    c->events = 0;
}

static int set_answer(rs_conn *c, int status, const char *reason, const char *body, int head_only)
{
    size_t blen = strlen(body);
    int n = asprintf(&c->out,
                     "HTTP/1.1 %d %s\r\n"
                     "Server: autotls\r\n"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n"
                     "Connection: close\r\n"
                     "\r\n%s",
                     status, reason, blen, head_only ? "" : body);
    if (n < 0) {
        c->out = NULL;
        return -1;
    }
    c->outlen = (size_t)n;
    c->outoff = 0;
    c->state = RS_WRITE;
    c->events = POLLOUT;
    return 0;
}

/* The request head is complete (or too large): decide the answer. */
static void http_lookup(at_responder *r, rs_conn *c);

static void http_answer(at_responder *r, rs_conn *c, int complete)
{
    char *line = c->in, *eol, *sp1, *sp2, *path;
    size_t plen;
    int head;

    if (!complete) {
        set_answer(c, 431, "Request Header Fields Too Large", "request header too large\n", 0);
        return;
    }
    eol = memchr(line, '\n', c->inlen);
    if (!eol || memchr(line, '\0', (size_t)(eol - line))) {
        set_answer(c, 400, "Bad Request", "bad request\n", 0);
        return;
    }
    if (eol > line && eol[-1] == '\r')
        eol--;
    *eol = '\0';
    sp1 = strchr(line, ' ');
    sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strchr(sp2 + 1, ' ') || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        set_answer(c, 400, "Bad Request", "bad request\n", 0);
        return;
    }
    *sp1 = *sp2 = '\0';
    path = sp1 + 1;
    head = strcmp(line, "HEAD") == 0;
    if (!head && strcmp(line, "GET") != 0) {
        set_answer(c, 405, "Method Not Allowed", "method not allowed\n", 0);
        return;
    }
    /* absolute-form (a proxy's request): keep only the path */
    if (strncmp(path, "http://", 7) == 0 || strncmp(path, "https://", 8) == 0) {
        char *p = strchr(strstr(path, "//") + 2, '/');
        path = p ? p : "/";
    }
    plen = strcspn(path, "?#");
    c->path_off = (size_t)(path - c->in);
    c->path_len = plen;
    c->head_only = head;
    http_lookup(r, c);
}

/* Is this a challenge path with a well-formed token (worth waiting for)? */
static int challenge_path(const char *path, size_t len)
{
    const size_t pl = sizeof(AT_HTTP01_PREFIX) - 1;
    if (len <= pl || len - pl > AT_LIVE_TOKEN_MAX || memcmp(path, AT_HTTP01_PREFIX, pl) != 0)
        return 0;
    for (size_t i = pl; i < len; i++) {
        char ch = path[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return 0;
    }
    return 1;
}

static void http_lookup(at_responder *r, rs_conn *c)
{
    char keyauth[RS_KEYAUTH_MAX];
    const char *path = c->in + c->path_off;
    size_t plen = c->path_len;
    long long now = now_ms();

    if (at_serve_http01(r->live, path, plen, keyauth, sizeof(keyauth)) == AT_HTTP01_ANSWER) {
        at_log(&r->log, AT_LOG_INFO, "responder: http-01 answered %.*s for %s", (int)plen, path, c->peer);
        set_answer(c, 200, "OK", keyauth, c->head_only);
        return;
    }
    if (challenge_path(path, plen) && now < c->started + RS_PENDING_MS) {
        c->state = RS_PENDING;
        c->tls_pending = 0;
        c->events = 0;
        c->recheck = now + RS_RECHECK_MS;
        return;
    }
    at_log(&r->log, AT_LOG_DEBUG, "responder: http-01 404 for %.*s from %s", (int)(plen > 200 ? 200 : plen),
           path, c->peer);
    set_answer(c, 404, "Not Found", "not found\n", c->head_only);
}

static void http_read(at_responder *r, rs_conn *c)
{
    for (;;) {
        size_t space = sizeof(c->in) - 1 - c->inlen;
        ssize_t n;
        if (space == 0) {
            http_answer(r, c, 0);
            return;
        }
        n = recv(c->fd, c->in + c->inlen, space, 0);
        if (n > 0) {
            size_t from = c->inlen > 3 ? c->inlen - 3 : 0;
            c->inlen += (size_t)n;
            c->in[c->inlen] = '\0';
            if (memmem(c->in + from, c->inlen - from, "\r\n\r\n", 4) ||
                memmem(c->in + from, c->inlen - from, "\n\n", 2)) {
                http_answer(r, c, 1);
                return;
            }
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->events = POLLIN;
            return;
        }
        conn_close(c);    /* closed or failed before a whole request */
        return;
    }
}

static void http_write(rs_conn *c)
{
    while (c->outoff < c->outlen) {
        ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (n > 0) {
            c->outoff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->events = POLLOUT;
            return;
        }
        conn_close(c);
        return;
    }
    /* Let the client read the answer and close first: closing with unread
     * input would reset the connection and could destroy the answer. */
    shutdown(c->fd, SHUT_WR);
    c->state = RS_DRAIN;
    c->events = POLLIN;
    c->deadline = now_ms() + RS_DRAIN_MS;
}

static void http_drain(rs_conn *c)
{
    char scratch[1024];
    for (;;) {
        ssize_t n = recv(c->fd, scratch, sizeof(scratch), 0);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_close(c);
        return;
    }
}

static void tls_handshake(at_responder *r, rs_conn *c)
{
    int rv, e;

    ERR_clear_error();
    rv = SSL_do_handshake(c->ssl);
    if (rv == 1) {
        at_log(&r->log, AT_LOG_INFO, "responder: tls-alpn-01 handshake completed for %s", c->peer);
        SSL_shutdown(c->ssl);
        conn_close(c);
        return;
    }
    e = SSL_get_error(c->ssl, rv);
    if (e == SSL_ERROR_WANT_READ) {
        c->events = POLLIN;
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        c->events = POLLOUT;
        return;
    }
    if (e == SSL_ERROR_WANT_X509_LOOKUP) {
        c->state = RS_PENDING;
        c->tls_pending = 1;
        c->events = 0;
        c->recheck = now_ms() + RS_RECHECK_MS;
        return;
    }
    if (r->log.fn && r->log.max >= AT_LOG_DEBUG) {
        char buf[256];
        unsigned long oe = ERR_peek_error();
        if (oe)
            ERR_error_string_n(oe, buf, sizeof(buf));
        else
            snprintf(buf, sizeof(buf), "connection closed");
        at_log(&r->log, AT_LOG_DEBUG, "responder: TLS handshake with %s failed: %s", c->peer, buf);
    }
    ERR_clear_error();
    conn_close(c);
}

static void conn_service(at_responder *r, rs_conn *c)
{
    switch (c->state) {
    case RS_READ:      http_read(r, c); break;
    case RS_WRITE:     http_write(c); break;
    case RS_DRAIN:     http_drain(c); break;
    case RS_HANDSHAKE: tls_handshake(r, c); break;
    case RS_PENDING:   conn_close(c); break;   /* only errors are polled for: the client left */
    default: break;
    }
}

static void accept_all(at_responder *r, const rs_listener *l)
{
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        rs_conn *c = NULL;
        int fd;

        for (size_t i = 0; i < RS_MAX_CONNS; i++) {
            rs_conn *k = &r->conns[i];
            if (k->state == RS_FREE) {
                c = k;
                break;
            }
            /* Full: make room by dropping the oldest connection, so that a
             * crowd of idle clients cannot keep the CA's validator out. */
            if (!c || k->deadline < c->deadline)
                c = k;
        }
        if (c->state != RS_FREE) {
            at_log(&r->log, AT_LOG_DEBUG, "responder: too many connections; dropping the one from %s", c->peer);
            conn_close(c);
        }
        fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;                  /* EAGAIN, or a connection that went away */
        c->fd = fd;
        c->inlen = 0;
        c->started = now_ms();
        c->deadline = c->started + RS_CONN_MS;
        addr_text((struct sockaddr *)&ss, c->peer, sizeof(c->peer));
        if (l->tls) {
            c->ssl = SSL_new(r->ctx);
            if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
                ERR_clear_error();
                conn_close(c);
                continue;
            }
            SSL_set_accept_state(c->ssl);
            SSL_set_app_data(c->ssl, c);
            c->state = RS_HANDSHAKE;
        } else {
            c->state = RS_READ;
        }
        conn_service(r, c);
    }
}

static void *responder_main(void *arg)
{
    at_responder *r = arg;
    struct pollfd pfd[1 + RS_MAX_LISTEN + RS_MAX_CONNS];
    int who[1 + RS_MAX_LISTEN + RS_MAX_CONNS];   /* >= 0 connection, -1 - i listener i */

    for (;;) {
        size_t n = 0;
        long long now = now_ms(), next = now + RS_POLL_MAX_MS;
        int rv;

        pfd[n].fd = r->wake[0];
        pfd[n].events = POLLIN;
        who[n++] = RS_MAX_CONNS;
        for (size_t i = 0; i < RS_MAX_CONNS; i++) {
            rs_conn *c = &r->conns[i];
            if (c->state == RS_FREE)
                continue;
            pfd[n].fd = c->fd;
            pfd[n].events = c->events;
            who[n++] = (int)i;
            if (c->deadline < next)
                next = c->deadline;
            if (c->state == RS_PENDING && c->recheck < next)
                next = c->recheck;
        }
        for (size_t i = 0; i < r->nls; i++) {
            pfd[n].fd = r->ls[i].fd;
            pfd[n].events = POLLIN;
            who[n++] = -1 - (int)i;
        }
        rv = poll(pfd, (nfds_t)n, next > now ? (int)(next - now) : 0);
        if (rv < 0 && errno != EINTR)
            break;
        if (rv > 0 && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
            break;
        for (size_t k = 1; rv > 0 && k < n; k++) {
            if (!pfd[k].revents)
                continue;
            if (who[k] < 0)
                accept_all(r, &r->ls[-1 - who[k]]);
            else if (r->conns[who[k]].state != RS_FREE)
                conn_service(r, &r->conns[who[k]]);
        }
        now = now_ms();
        for (size_t i = 0; i < RS_MAX_CONNS; i++) {
            rs_conn *c = &r->conns[i];
            if (c->state == RS_PENDING && c->recheck <= now) {
                if (c->tls_pending) {
                    c->state = RS_HANDSHAKE;
                    tls_handshake(r, c);
                } else {
                    http_lookup(r, c);
                    if (c->state == RS_WRITE)
                        http_write(c);
                }
            }
            if (c->state != RS_FREE && c->deadline <= now) {
                if (c->state != RS_DRAIN)
                    at_log(&r->log, AT_LOG_DEBUG, "responder: connection from %s timed out", c->peer);
                conn_close(c);
            }
        }
    }
    for (size_t i = 0; i < RS_MAX_CONNS; i++)
        if (r->conns[i].state != RS_FREE)
            conn_close(&r->conns[i]);
    return NULL;
}

/* ------------------------------------------------------------------ api */

static void responder_free(at_responder *r)
{
    for (size_t i = 0; i < r->nls; i++)
        close(r->ls[i].fd);
    if (r->wake[0] >= 0)
        close(r->wake[0]);
    if (r->wake[1] >= 0)
        close(r->wake[1]);
    SSL_CTX_free(r->ctx);
    at_serve_free(r->serve);
    free(r);
}

at_responder *at_responder_start(const at_responder_opts *o, at_error *err)
{
    at_responder *r;

    if (!o || !o->live) {
        at_error_set(err, AT_ERR_INTERNAL, "the responder needs a live table");
        return NULL;
    }
    if (o->nhttp > AT_RESPONDER_MAX_PORTS || o->ntls > AT_RESPONDER_MAX_PORTS) {
        at_error_set(err, AT_ERR_CONFIG, "at most %d ports per challenge type", AT_RESPONDER_MAX_PORTS);
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (!r) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    r->wake[0] = r->wake[1] = -1;
    for (size_t i = 0; i < RS_MAX_CONNS; i++)
        r->conns[i].fd = -1;
    r->live = o->live;
    if (o->log)
        r->log = *o->log;
    r->serve = at_serve_new(o->live);
    if (!r->serve) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        goto fail;
    }
    if (o->ntls && !(r->ctx = make_ctx(r, err)))
        goto fail;
    for (size_t i = 0; i < o->nhttp; i++) {
        r->http_ports[i] = o->http_ports[i];
        if (listen_port(r, o, &r->http_ports[i], 0, err) != 0)
            goto fail;
        r->nhttp++;
    }
    for (size_t i = 0; i < o->ntls; i++) {
        r->tls_ports[i] = o->tls_ports[i];
        if (listen_port(r, o, &r->tls_ports[i], 1, err) != 0)
            goto fail;
        r->ntls++;
    }
    if (pipe2(r->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        at_error_set(err, AT_ERR_IO, "cannot create a pipe: %s", strerror(errno));
        goto fail;
    }
    if (pthread_create(&r->thr, NULL, responder_main, r) != 0) {
        at_error_set(err, AT_ERR_INTERNAL, "cannot start the responder thread");
        goto fail;
    }
    r->started = 1;
    for (size_t i = 0; i < r->nhttp; i++)
        at_log(&r->log, AT_LOG_INFO, "responder: answering http-01 on port %d", r->http_ports[i]);
    for (size_t i = 0; i < r->ntls; i++)
        at_log(&r->log, AT_LOG_INFO, "responder: answering tls-alpn-01 on port %d", r->tls_ports[i]);
    return r;
fail:
    responder_free(r);
    return NULL;
}

void at_responder_stop(at_responder *r)
{
    if (!r)
        return;
    if (r->started) {
        ssize_t w;
        do
            w = write(r->wake[1], "x", 1);
        while (w < 0 && errno == EINTR);
        pthread_join(r->thr, NULL);
    }
    responder_free(r);
}

int at_responder_port(const at_responder *r, int tls, size_t i)
{
    if (!r)
        return -1;
    if (tls)
        return i < r->ntls ? r->tls_ports[i] : -1;
    return i < r->nhttp ? r->http_ports[i] : -1;
}
