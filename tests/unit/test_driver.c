/*
 * Unit tests for the I/O driver against servers run by the test itself on
 * loopback: a plain HTTP server (statuses, ACME headers, slow, stalled,
 * huge and concurrent answers, absolute-form requests as a proxy) and TLS
 * servers with a self-signed certificate (trust anchors, client
 * certificates). Every wait is bounded.
 */
#include "at_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "at_driver.h"

/* ================================================================ helpers */

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* ============================================================ test server */

enum srv_mode { SRV_HTTP = 0, SRV_SILENT };

typedef struct srv {
    int          lfd;
    int          port;
    SSL_CTX     *tls;        /* NULL: plain HTTP */
    enum srv_mode mode;
    int          stop;       /* atomic */
    pthread_t    acceptor;
    pthread_mutex_t mu;
    pthread_t   *workers;
    size_t       nworkers, cap;
    /* observations */
    int          cur, max;   /* concurrent /count handlers (atomic) */
    int          nreq;       /* atomic */
    char         last_method[16];
    char         last_target[512];
    char         last_ua[256];
    char         client_cn[256];
} srv;

typedef struct conn {
    srv *s;
    int  fd;
    SSL *ssl;
} conn;

static int srv_stopping(srv *s)
{
    return __atomic_load_n(&s->stop, __ATOMIC_ACQUIRE);
}

static int conn_write(conn *c, const void *p, size_t n)
{
    const char *b = p;
    while (n > 0) {
        ssize_t w;
        if (c->ssl) {
            int r = SSL_write(c->ssl, b, n > 16384 ? 16384 : (int)n);
            if (r <= 0)
                return -1;
            w = r;
        } else {
            w = send(c->fd, b, n, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static ssize_t conn_read(conn *c, char *p, size_t n)
{
    if (c->ssl) {
        int r = SSL_read(c->ssl, p, (int)n);
        return r > 0 ? r : -1;
    }
    return recv(c->fd, p, n, 0);
}

/* Wait for the client to go away (or the server to stop). */
static void wait_hangup(conn *c)
{
    while (!srv_stopping(c->s)) {
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        if (poll(&pfd, 1, 20) > 0) {
            char b[256];
            if (recv(c->fd, b, sizeof(b), MSG_DONTWAIT) <= 0)
                return;
        }
    }
}

static int stall_ms(conn *c, long ms)
{
    long end = mono_ms() + ms;
    while (mono_ms() < end) {
        if (srv_stopping(c->s))
            return -1;
        sleep_ms(10);
    }
    return 0;
}

typedef struct req {
    char   method[16];
    char   target[512];
    char   ctype[128];
    char   accept[128];
    char   ua[256];
    char  *body;
    size_t body_len;
} req;

static void header_value(const char *hdrs, const char *name, char *out, size_t outsz)
{
    size_t nl = strlen(name);
    const char *p = hdrs;
    out[0] = '\0';
    while ((p = strstr(p, "\r\n"))) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1, *e;
            while (*v == ' ')
                v++;
            e = strstr(v, "\r\n");
            snprintf(out, outsz, "%.*s", (int)(e ? e - v : (long)strlen(v)), v);
            return;
        }
    }
}

static int read_request(conn *c, req *r)
{
    char buf[65536], cl[32];
    size_t n = 0, hlen, want;
    char *end = NULL;

    memset(r, 0, sizeof(*r));
    while (!end) {
        ssize_t k;
        if (n >= sizeof(buf) - 1)
            return -1;
        k = conn_read(c, buf + n, sizeof(buf) - 1 - n);
        if (k <= 0)
            return -1;
        n += (size_t)k;
        buf[n] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    hlen = (size_t)(end - buf) + 4;
    end[2] = '\0';
    if (sscanf(buf, "%15s %511s", r->method, r->target) != 2)
        return -1;
    header_value(buf, "Content-Type", r->ctype, sizeof(r->ctype));
    header_value(buf, "Accept", r->accept, sizeof(r->accept));
    header_value(buf, "User-Agent", r->ua, sizeof(r->ua));
    header_value(buf, "Content-Length", cl, sizeof(cl));
    want = (size_t)strtoul(cl, NULL, 10);
    r->body = calloc(1, want + 1);
    if (!r->body)
        return -1;
    r->body_len = n - hlen < want ? n - hlen : want;
    memcpy(r->body, buf + hlen, r->body_len);
    while (r->body_len < want) {
        ssize_t k = conn_read(c, r->body + r->body_len, want - r->body_len);
        if (k <= 0)
            return -1;
        r->body_len += (size_t)k;
    }
    return 0;
}

static int respond(conn *c, const req *r, int status, const char *extra, const char *body, size_t blen)
{
    char head[2048];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n",
                     status, blen, extra ? extra : "");
    if (conn_write(c, head, (size_t)n) != 0)
        return -1;
    if (strcmp(r->method, "HEAD") == 0 || blen == 0)
        return 0;
    return conn_write(c, body, blen);
}

static void send_huge(conn *c, size_t n, int with_length)
{
    char head[256], chunk[8192];
    int hn = with_length
        ? snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", n)
        : snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    memset(chunk, 'x', sizeof(chunk));
    if (conn_write(c, head, (size_t)hn) != 0)
        return;
    while (n > 0 && !srv_stopping(c->s)) {
        size_t k = n < sizeof(chunk) ? n : sizeof(chunk);
        if (conn_write(c, chunk, k) != 0)
            return;
        n -= k;
    }
}

static void route(conn *c, req *r)
{
    srv *s = c->s;
    const char *path = r->target;
    char body[4096];
    int n;

    /* Absolute form: we are being used as a proxy. */
    if (strncmp(path, "http://", 7) == 0) {
        const char *p = strchr(path + 7, '/');
        path = p ? p : "/";
    }
    if (strcmp(path, "/hello") == 0) {
        respond(c, r, 200, "Content-Type: text/plain\r\n", "hello world", 11);
    } else if (strncmp(path, "/status/", 8) == 0) {
        int st = atoi(path + 8);
        n = snprintf(body, sizeof(body), "status %d", st);
        respond(c, r, st, "Content-Type: application/problem+json\r\n", body, (size_t)n);
    } else if (strcmp(path, "/acme") == 0) {
        respond(c, r, 201,
                "Content-Type: Application/JSON; charset=utf-8\r\n"
                "Replay-Nonce: abc123_-XYZ\r\n"
                "Location: /acme/order/7\r\n"
                "Link: <https://example.test/dir>;rel=\"index\"\r\n"
                "Link: </acme/cert/1/1>;rel=\"alternate\"\r\n"
                "Retry-After: 30\r\n", "{\"status\":\"pending\"}", 20);
    } else if (strcmp(path, "/interim") == 0) {
        const char *one = "HTTP/1.1 103 Early Hints\r\nReplay-Nonce: interim-nonce\r\n\r\n";
        if (conn_write(c, one, strlen(one)) == 0)
            respond(c, r, 200, "Replay-Nonce: final-nonce\r\n", "ok", 2);
    } else if (strcmp(path, "/echo") == 0) {
        n = snprintf(body, sizeof(body), "method=%s\nctype=%s\naccept=%s\nua=%s\nlen=%zu\nbody=%.*s",
                     r->method, r->ctype, r->accept, r->ua, r->body_len,
                     (int)(r->body_len > 1000 ? 1000 : r->body_len), r->body);
        respond(c, r, 200, "Content-Type: text/plain\r\n", body, (size_t)n);
    } else if (strncmp(path, "/slow/", 6) == 0) {
        if (stall_ms(c, atol(path + 6)) == 0)
            respond(c, r, 200, NULL, "slow done", 9);
    } else if (strcmp(path, "/stall") == 0) {
        wait_hangup(c);
    } else if (strcmp(path, "/stallbody") == 0) {
        /* Headers and a few bytes of a longer body, then nothing. */
        const char *part = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"sta";
        if (conn_write(c, part, strlen(part)) == 0)
            wait_hangup(c);
    } else if (strncmp(path, "/huge/", 6) == 0) {
        send_huge(c, (size_t)atol(path + 6), 1);
    } else if (strncmp(path, "/hugenolen/", 11) == 0) {
        send_huge(c, (size_t)atol(path + 11), 0);
    } else if (strcmp(path, "/count") == 0) {
        int now = __atomic_add_fetch(&s->cur, 1, __ATOMIC_ACQ_REL), m;
        while ((m = __atomic_load_n(&s->max, __ATOMIC_ACQUIRE)) < now &&
               !__atomic_compare_exchange_n(&s->max, &m, now, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            ;
        stall_ms(c, 200);
        __atomic_sub_fetch(&s->cur, 1, __ATOMIC_ACQ_REL);
        respond(c, r, 200, NULL, "counted", 7);
    } else {
        respond(c, r, 404, NULL, "not found", 9);
    }
}

static void record_client_cert(conn *c)
{
    X509 *peer = SSL_get1_peer_certificate(c->ssl);
    if (!peer)
        return;
    pthread_mutex_lock(&c->s->mu);
    X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName,
                              c->s->client_cn, sizeof(c->s->client_cn));
    pthread_mutex_unlock(&c->s->mu);
    X509_free(peer);
}

static void *conn_main(void *arg)
{
    conn *c = arg;
    srv *s = c->s;
    struct timeval tv = { 5, 0 };
    req r;

    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (s->mode == SRV_SILENT) {
        wait_hangup(c);
        goto out;
    }
    if (s->tls) {
        c->ssl = SSL_new(s->tls);
        SSL_set_fd(c->ssl, c->fd);
        if (SSL_accept(c->ssl) <= 0)
            goto out;
        record_client_cert(c);
    }
    if (read_request(c, &r) == 0) {
        __atomic_add_fetch(&s->nreq, 1, __ATOMIC_ACQ_REL);
        pthread_mutex_lock(&s->mu);
        snprintf(s->last_method, sizeof(s->last_method), "%s", r.method);
        snprintf(s->last_target, sizeof(s->last_target), "%s", r.target);
        snprintf(s->last_ua, sizeof(s->last_ua), "%s", r.ua);
        pthread_mutex_unlock(&s->mu);
        route(c, &r);
    }
    free(r.body);
    if (c->ssl)
        SSL_shutdown(c->ssl);
out:
    ERR_clear_error();
    SSL_free(c->ssl);
    close(c->fd);
    free(c);
    return NULL;
}

static void *accept_main(void *arg)
{
    srv *s = arg;
    while (!srv_stopping(s)) {
        struct pollfd pfd = { .fd = s->lfd, .events = POLLIN };
        conn *c;
        int fd;
        if (poll(&pfd, 1, 20) <= 0)
            continue;
        fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        c = calloc(1, sizeof(*c));
        c->s = s;
        c->fd = fd;
        pthread_mutex_lock(&s->mu);
        if (s->nworkers == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 32;
            s->workers = realloc(s->workers, s->cap * sizeof(*s->workers));
        }
        pthread_create(&s->workers[s->nworkers++], NULL, conn_main, c);
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

static int listen_loopback(int *port)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static int srv_start(srv *s, SSL_CTX *tls, enum srv_mode mode)
{
    memset(s, 0, sizeof(*s));
    s->tls = tls;
    s->mode = mode;
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = listen_loopback(&s->port);
    if (s->lfd < 0)
        return -1;
    return pthread_create(&s->acceptor, NULL, accept_main, s);
}

static void srv_stop(srv *s)
{
    __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
    pthread_join(s->acceptor, NULL);
    for (size_t i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i], NULL);
    free(s->workers);
    close(s->lfd);
    pthread_mutex_destroy(&s->mu);
    if (s->tls)
        SSL_CTX_free(s->tls);
}

static void url_of(const srv *s, const char *path, char *out, size_t outsz)
{
    snprintf(out, outsz, "%s://127.0.0.1:%d%s", s->tls ? "https" : "http", s->port, path);
}

/* ========================================================= certificates */

static X509 *self_signed(EVP_PKEY *key, const char *cn, const char *san)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509_NAME *n = X509_get_subject_name(x);
    X509V3_CTX ctx;
    X509_EXTENSION *ext;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (san) {
        ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    X509_sign(x, key, EVP_sha256());
    return x;
}

typedef struct ident {
    EVP_PKEY *key;
    X509     *cert;
    char      cert_file[512];
    char      key_file[512];
} ident;

static void ident_make(ident *id, const char *cn, const char *san, const char *tag)
{
    FILE *f;
    id->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    id->cert = self_signed(id->key, cn, san);
    snprintf(id->cert_file, sizeof(id->cert_file), "%s/%s.crt", at_test_tmpdir(), tag);
    snprintf(id->key_file, sizeof(id->key_file), "%s/%s.key", at_test_tmpdir(), tag);
    f = fopen(id->cert_file, "w");
    PEM_write_X509(f, id->cert);
    fclose(f);
    f = fopen(id->key_file, "w");
    PEM_write_PrivateKey(f, id->key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
}

static void ident_free(ident *id)
{
    EVP_PKEY_free(id->key);
    X509_free(id->cert);
}

static SSL_CTX *server_ctx(const ident *id, const ident *client_ca)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(ctx, id->cert);
    SSL_CTX_use_PrivateKey(ctx, id->key);
    if (client_ca) {
        SSL_CTX_load_verify_locations(ctx, client_ca->cert_file, NULL);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return ctx;
}

/* ============================================================ collectors */

typedef struct result {
    int          called;
    int          seq;        /* completion order */
    at_http_resp resp;
    at_error     err;
} result;

static int completions;

static void collect(void *ud, at_http_resp *resp, const at_error *err)
{
    result *r = ud;
    r->called++;
    r->seq = ++completions;
    if (resp) {
        r->resp = *resp;               /* take ownership, as the engine does */
        at_http_resp_init(resp);
    }
    if (err)
        at_error_copy(&r->err, err);
}

static void result_init(result *r)
{
    memset(r, 0, sizeof(*r));
    at_http_resp_init(&r->resp);
    at_error_init(&r->err);
}

static void result_free(result *r)
{
    at_http_resp_free(&r->resp);
    at_error_clear(&r->err);
}

static int submit(at_driver *d, at_http_method m, const char *url, result *r)
{
    at_http_req q;
    at_error err = AT_ERROR_INIT;
    int rc;
    memset(&q, 0, sizeof(q));
    q.method = m;
    q.url = (char *)url;
    rc = at_driver_submit(d, &q, collect, r, &err);
    AT_CHECK_MSG(rc == 0, "submit %s: %s", url, err.msg);
    return rc;
}

/* Run until every result is in or limit_ms passes. */
static void run_all(at_driver *d, result *rs, size_t n, long limit_ms)
{
    long end = mono_ms() + limit_ms;
    for (;;) {
        size_t done = 0;
        for (size_t i = 0; i < n; i++)
            done += rs[i].called > 0;
        if (done == n || mono_ms() > end)
            break;
        at_driver_run(d, 100);
    }
}

/* One request, run to completion. */
static void fetch(const at_driver_opts *o, at_http_method m, const char *url, result *r)
{
    at_error err = AT_ERROR_INIT;
    at_driver *d = at_driver_new(o, &err);
    result_init(r);
    AT_CHECK_MSG(d != NULL, "driver: %s", err.msg);
    if (!d)
        return;
    if (submit(d, m, url, r) == 0)
        run_all(d, r, 1, 15000);
    AT_CHECK_INT(r->called, 1);
    AT_CHECK_INT(at_driver_pending(d), 0);
    if (getenv("AT_TEST_VERBOSE") && r->err.code != AT_OK)
        fprintf(stderr, "    %s: %s\n", at_errcode_name(r->err.code), r->err.msg);
    at_driver_free(d);
}

/* ================================================================= cases */

static void t_get_and_status(void)
{
    srv s;
    char url[256];
    result r;
    AT_CHECK(srv_start(&s, NULL, SRV_HTTP) == 0);
    url_of(&s, "/hello", url, sizeof(url));
    fetch(NULL, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_OK);
    AT_CHECK_INT(r.resp.status, 200);
    AT_CHECK_STR(r.resp.body, "hello world");
    AT_CHECK_INT(r.resp.body_len, 11);
    AT_CHECK_STR(r.resp.content_type, "text/plain");
    result_free(&r);

    /* Error statuses are answers, not transport errors. */
    url_of(&s, "/status/503", url, sizeof(url));
    fetch(NULL, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_OK);
    AT_CHECK_INT(r.resp.status, 503);
    AT_CHECK_STR(r.resp.body, "status 503");
    AT_CHECK_STR(r.resp.content_type, "application/problem+json");
    result_free(&r);
    srv_stop(&s);
}

static void t_acme_headers(void)
{
    srv s;
    char url[256], loc[256], alt[256];
    result r;
    AT_CHECK(srv_start(&s, NULL, SRV_HTTP) == 0);
    url_of(&s, "/acme", url, sizeof(url));
    url_of(&s, "/acme/order/7", loc, sizeof(loc));
    url_of(&s, "/acme/cert/1/1", alt, sizeof(alt));
    fetch(NULL, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.resp.status, 201);
    AT_CHECK_STR(r.resp.content_type, "application/json");
    AT_CHECK_STR(r.resp.replay_nonce, "abc123_-XYZ");
    AT_CHECK_STR(r.resp.location, loc);           /* resolved against the request URL */
    AT_CHECK_STR(r.resp.retry_after, "30");
    AT_CHECK_INT(r.resp.nlinks, 2);
    AT_CHECK_STR(at_http_link_rel(&r.resp, "index"), "https://example.test/dir");
    AT_CHECK_STR(at_http_link_rel(&r.resp, "alternate"), alt);
    AT_CHECK_STR(r.resp.body, "{\"status\":\"pending\"}");
    result_free(&r);

    /* Only the final response's headers count, not a 1xx's. */
    url_of(&s, "/interim", url, sizeof(url));
    fetch(NULL, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.resp.status, 200);
    AT_CHECK_STR(r.resp.replay_nonce, "final-nonce");
    result_free(&r);
    srv_stop(&s);
}

static void t_post_and_head(void)
{
    srv s;
    char url[256], *big;
    at_http_req q;
    at_driver_opts o;
    result r;
    at_error err = AT_ERROR_INIT;
    at_driver *d;
    long t0;

    AT_CHECK(srv_start(&s, NULL, SRV_HTTP) == 0);
    url_of(&s, "/echo", url, sizeof(url));
    memset(&o, 0, sizeof(o));
    o.user_agent = "autotls-test/1.2";
    d = at_driver_new(&o, &err);
    AT_CHECK(d != NULL);
    if (!d) {
        srv_stop(&s);
        return;
    }
    /* POST with a body bigger than curl's Expect: 100-continue threshold:
     * it must go out at once, not after a one-second wait. */
    big = malloc(5001);
    memset(big, 'j', 5000);
    big[5000] = '\0';
    memcpy(big, "{\"protected\":", 13);
    memset(&q, 0, sizeof(q));
    q.method = AT_HTTP_POST;
    q.url = url;
    q.body = big;
    q.body_len = 5000;
    q.content_type = "application/jose+json";
    q.accept = "application/pem-certificate-chain";
    result_init(&r);
    t0 = mono_ms();
    AT_CHECK_OK(at_driver_submit(d, &q, collect, &r, &err), &err);
    free(big);                        /* the driver keeps its own copy */
    run_all(d, &r, 1, 10000);
    AT_CHECK(mono_ms() - t0 < 900);
    AT_CHECK_INT(r.resp.status, 200);
    AT_CHECK_CONTAINS(r.resp.body, "method=POST\n");
    AT_CHECK_CONTAINS(r.resp.body, "ctype=application/jose+json\n");
    AT_CHECK_CONTAINS(r.resp.body, "accept=application/pem-certificate-chain\n");
    AT_CHECK_CONTAINS(r.resp.body, "ua=autotls-test/1.2\n");
    AT_CHECK_CONTAINS(r.resp.body, "len=5000\n");
    AT_CHECK_CONTAINS(r.resp.body, "body={\"protected\":jjj");
    result_free(&r);

    /* HEAD: the server sees HEAD and we wait for no body. */
    result_init(&r);
    submit(d, AT_HTTP_HEAD, url, &r);
    run_all(d, &r, 1, 10000);
    AT_CHECK_INT(r.err.code, AT_OK);
    AT_CHECK_INT(r.resp.status, 200);
    AT_CHECK_INT(r.resp.body_len, 0);
    AT_CHECK(r.resp.body != NULL);
    AT_CHECK_STR(s.last_method, "HEAD");
    result_free(&r);
    at_driver_free(d);

    /* The default User-Agent names us and our version. */
    result_init(&r);
    fetch(NULL, AT_HTTP_GET, url, &r);
    AT_CHECK_CONTAINS(r.resp.body, "ua=autotls/" AT_VERSION "\n");
    AT_CHECK_CONTAINS(r.resp.body, "method=GET\n");
    result_free(&r);
    srv_stop(&s);
}

static void t_connection_refused(void)
{
    int port, fd = listen_loopback(&port);
    char url[128];
    result r;
    AT_CHECK(fd >= 0);
    close(fd);                         /* nobody listens there now */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/directory", port);
    fetch(NULL, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_ERR_NETWORK);
    AT_CHECK_CONTAINS(r.err.msg, url);
    AT_CHECK_CONTAINS(r.err.msg, "cannot connect");
    AT_CHECK_CONTAINS(r.err.msg, "refused");
    AT_CHECK_INT(r.resp.status, 0);
    result_free(&r);
}

static void t_request_timeout(void)
{
    srv s;
    char url[256];
    at_driver_opts o;
    result r;
    long t0;
    AT_CHECK(srv_start(&s, NULL, SRV_HTTP) == 0);
    url_of(&s, "/stall", url, sizeof(url));
    memset(&o, 0, sizeof(o));
    o.request_timeout_ms = 300;
    t0 = mono_ms();
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK(mono_ms() - t0 < 3000);
    AT_CHECK_INT(r.err.code, AT_ERR_TIMEOUT);
    AT_CHECK_CONTAINS(r.err.msg, url);
    AT_CHECK_CONTAINS(r.err.msg, "timed out after");
    AT_CHECK_CONTAINS(r.err.msg, "request timeout 300 ms");
    result_free(&r);
    srv_stop(&s);
}

/* A server that starts answering and stops is not "unreachable". */
static void t_request_timeout_mid_answer(void)
{
    srv s;
    char url[256];
    at_driver_opts o;
    result r;
    AT_CHECK(srv_start(&s, NULL, SRV_HTTP) == 0);
    url_of(&s, "/stallbody", url, sizeof(url));
    memset(&o, 0, sizeof(o));
    o.request_timeout_ms = 300;
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_ERR_TIMEOUT);
    AT_CHECK_CONTAINS(r.err.msg, url);
    AT_CHECK_CONTAINS(r.err.msg, "request timeout 300 ms");
    AT_CHECK_CONTAINS(r.err.msg, "started answering");
    AT_CHECK(strstr(r.err.msg, "connecting") == NULL);
    result_free(&r);
    srv_stop(&s);
}

static void t_connect_timeout(void)
{
    srv s;
    char url[256];
    at_driver_opts o;
    result r;
    long t0;
    /* Accepts TCP and never says a word: the TLS handshake cannot finish,
     * which counts against the connect timeout. */
    AT_CHECK(srv_start(&s, NULL, SRV_SILENT) == 0);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/directory", s.port);
    memset(&o, 0, sizeof(o));
    o.connect_timeout_ms = 300;
    o.request_timeout_ms = 5000;
    t0 = mono_ms();
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK(mono_ms() - t0 < 3000);
    AT_CHECK_INT(r.err.code, AT_ERR_TIMEOUT);
    AT_CHECK_CONTAINS(r.err.msg, url);
    AT_CHECK_CONTAINS(r.err.msg, "connecting to");
    AT_CHECK_CONTAINS(r.err.msg, "connect timeout 300 ms");
    result_free(&r);
    srv_stop(&s);
}

static void t_size_limit(void)
{
    srv s;
    char url[256];
    at_driver_opts o;
    result r;
    AT_CHECK(srv_start(&s, NULL, SRV_HTTP) == 0);
    memset(&o, 0, sizeof(o));
    o.max_response = 1000;

    /* Exactly at the limit is fine. */
    url_of(&s, "/huge/1000", url, sizeof(url));
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_OK);
    AT_CHECK_INT(r.resp.body_len, 1000);
    result_free(&r);

    /* Announced too large. */
    url_of(&s, "/huge/1001", url, sizeof(url));
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_ERR_PROTOCOL);
    AT_CHECK_CONTAINS(r.err.msg, url);
    AT_CHECK_CONTAINS(r.err.msg, "limit of 1000 bytes");
    result_free(&r);

    /* No Content-Length: caught while receiving, long before the end. */
    url_of(&s, "/hugenolen/50000000", url, sizeof(url));
    long t0 = mono_ms();
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK(mono_ms() - t0 < 5000);
    AT_CHECK_INT(r.err.code, AT_ERR_PROTOCOL);
    AT_CHECK_CONTAINS(r.err.msg, url);
    AT_CHECK_CONTAINS(r.err.msg, "limit of 1000 bytes");
    result_free(&r);

    /* The default limit is 1 MiB. */
    url_of(&s, "/hugenolen/3000000", url, sizeof(url));
    fetch(NULL, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_ERR_PROTOCOL);
    AT_CHECK_CONTAINS(r.err.msg, "limit of 1048576 bytes");
    result_free(&r);
    srv_stop(&s);
}

static void t_concurrency_bound(void)
{
    enum { N = 12 };
    srv s;
    char url[256];
    at_driver_opts o;
    at_error err = AT_ERROR_INIT;
    result r[N];
    at_driver *d;
    long t0, took;

    AT_CHECK(srv_start(&s, NULL, SRV_HTTP) == 0);
    url_of(&s, "/count", url, sizeof(url));
    memset(&o, 0, sizeof(o));
    o.max_connections = 3;
    d = at_driver_new(&o, &err);
    AT_CHECK(d != NULL);
    for (int i = 0; i < N; i++) {
        result_init(&r[i]);
        submit(d, AT_HTTP_GET, url, &r[i]);
    }
    AT_CHECK_INT(at_driver_pending(d), N);
    t0 = mono_ms();
    run_all(d, r, N, 20000);
    took = mono_ms() - t0;
    for (int i = 0; i < N; i++) {
        AT_CHECK_INT(r[i].resp.status, 200);
        result_free(&r[i]);
    }
    AT_CHECK_INT(at_driver_pending(d), 0);
    AT_CHECK_MSG(s.max <= 3, "%d requests ran at once with max_connections 3", s.max);
    AT_CHECK_MSG(s.max >= 2, "requests were not run concurrently (max %d)", s.max);
    AT_CHECK_MSG(took >= 4 * 200 - 50, "12 requests of 200 ms, 3 at a time, took only %ld ms", took);
    at_driver_free(d);
    srv_stop(&s);

    /* With room for all, they run side by side. */
    AT_CHECK(srv_start(&s, NULL, SRV_HTTP) == 0);
    url_of(&s, "/count", url, sizeof(url));
    o.max_connections = 16;
    d = at_driver_new(&o, &err);
    for (int i = 0; i < N; i++) {
        result_init(&r[i]);
        submit(d, AT_HTTP_GET, url, &r[i]);
    }
    t0 = mono_ms();
    run_all(d, r, N, 20000);
    took = mono_ms() - t0;
    for (int i = 0; i < N; i++) {
        AT_CHECK_INT(r[i].resp.status, 200);
        result_free(&r[i]);
    }
    AT_CHECK_MSG(s.max >= 6, "only %d of 12 requests ran at once", s.max);
    AT_CHECK_MSG(took < 12 * 200, "took %ld ms", took);
    at_driver_free(d);
    srv_stop(&s);
}

static void t_slow_does_not_delay_fast(void)
{
    srv s;
    char slow[256], fast[256];
    at_error err = AT_ERROR_INIT;
    result r[4];
    at_driver *d;

    AT_CHECK(srv_start(&s, NULL, SRV_HTTP) == 0);
    url_of(&s, "/slow/1500", slow, sizeof(slow));
    url_of(&s, "/hello", fast, sizeof(fast));
    d = at_driver_new(NULL, &err);
    for (int i = 0; i < 4; i++)
        result_init(&r[i]);
    completions = 0;
    submit(d, AT_HTTP_GET, slow, &r[0]);
    submit(d, AT_HTTP_GET, fast, &r[1]);
    submit(d, AT_HTTP_GET, fast, &r[2]);
    submit(d, AT_HTTP_GET, fast, &r[3]);
    /* The fast ones are answered while the slow one is still in flight. */
    long end = mono_ms() + 1200;
    while (mono_ms() < end && !(r[1].called && r[2].called && r[3].called))
        at_driver_run(d, 100);
    AT_CHECK(r[1].called && r[2].called && r[3].called);
    AT_CHECK_INT(r[0].called, 0);
    AT_CHECK_INT(at_driver_pending(d), 1);
    run_all(d, r, 4, 10000);
    AT_CHECK_INT(r[0].seq, 4);
    AT_CHECK_STR(r[0].resp.body, "slow done");
    for (int i = 0; i < 4; i++)
        result_free(&r[i]);
    at_driver_free(d);
    srv_stop(&s);
}

/* A callback that submits a follow-up, as the protocol layer does. */
typedef struct chain_ctx {
    at_driver *d;
    char       url[256];
    int        left;
    int        got;
} chain_ctx;

static void chain_cb(void *ud, at_http_resp *resp, const at_error *err)
{
    chain_ctx *c = ud;
    at_http_req q;
    (void)err;
    if (resp && resp->status == 200)
        c->got++;
    if (c->left-- > 0) {
        memset(&q, 0, sizeof(q));
        q.method = AT_HTTP_GET;
        q.url = c->url;
        at_driver_submit(c->d, &q, chain_cb, c, NULL);
    }
}

static void t_submit_from_callback(void)
{
    srv s;
    chain_ctx c;
    at_http_req q;
    at_error err = AT_ERROR_INIT;
    long end;
    AT_CHECK(srv_start(&s, NULL, SRV_HTTP) == 0);
    memset(&c, 0, sizeof(c));
    url_of(&s, "/hello", c.url, sizeof(c.url));
    c.d = at_driver_new(NULL, &err);
    c.left = 4;
    memset(&q, 0, sizeof(q));
    q.method = AT_HTTP_GET;
    q.url = c.url;
    AT_CHECK_OK(at_driver_submit(c.d, &q, chain_cb, &c, &err), &err);
    end = mono_ms() + 10000;
    while (at_driver_run(c.d, 100) > 0 && mono_ms() < end)
        ;
    AT_CHECK_INT(c.got, 5);
    AT_CHECK_INT(at_driver_pending(c.d), 0);
    at_driver_free(c.d);
    srv_stop(&s);
}

static void *wake_later(void *arg)
{
    sleep_ms(200);
    at_driver_wakeup(arg);
    return NULL;
}

static void t_run_and_wakeup(void)
{
    at_error err = AT_ERROR_INIT;
    at_driver *d = at_driver_new(NULL, &err);
    pthread_t th;
    long t0, took;

    AT_CHECK(d != NULL);
    if (!d)
        return;
    /* Nothing in flight: 0 returns at once, a timeout is a sleep. */
    t0 = mono_ms();
    AT_CHECK_INT(at_driver_run(d, 0), 0);
    AT_CHECK(mono_ms() - t0 < 100);
    t0 = mono_ms();
    at_driver_run(d, 300);
    took = mono_ms() - t0;
    AT_CHECK_MSG(took >= 250 && took < 1500, "took %ld ms", took);

    /* A wakeup from another thread cuts a long wait short. */
    pthread_create(&th, NULL, wake_later, d);
    t0 = mono_ms();
    at_driver_run(d, 5000);
    took = mono_ms() - t0;
    pthread_join(th, NULL);
    AT_CHECK_MSG(took >= 150 && took < 2000, "woken after %ld ms", took);

    /* A wakeup before the run makes the next run return early. */
    at_driver_wakeup(d);
    t0 = mono_ms();
    at_driver_run(d, 5000);
    AT_CHECK(mono_ms() - t0 < 1000);
    at_driver_free(d);
}

static void t_free_cancels(void)
{
    srv s;
    char url[256];
    at_driver_opts o;
    at_error err = AT_ERROR_INIT;
    result r[6];
    at_driver *d;

    AT_CHECK(srv_start(&s, NULL, SRV_HTTP) == 0);
    url_of(&s, "/slow/3000", url, sizeof(url));
    memset(&o, 0, sizeof(o));
    o.max_connections = 2;             /* 2 in flight, 4 queued */
    d = at_driver_new(&o, &err);
    for (int i = 0; i < 6; i++) {
        result_init(&r[i]);
        submit(d, AT_HTTP_GET, url, &r[i]);
    }
    at_driver_run(d, 200);
    AT_CHECK_INT(at_driver_pending(d), 6);
    at_driver_free(d);
    for (int i = 0; i < 6; i++) {
        AT_CHECK_INT(r[i].called, 0);
        result_free(&r[i]);
    }
    srv_stop(&s);
}

static void t_proxy(void)
{
    srv s, target;
    char url[256], proxy[128];
    at_driver_opts o;
    result r;

    AT_CHECK(srv_start(&s, NULL, SRV_HTTP) == 0);
    AT_CHECK(srv_start(&target, NULL, SRV_HTTP) == 0);

    /* Environment proxies are ignored: this one does not exist. */
    setenv("http_proxy", "http://127.0.0.1:1", 1);
    setenv("HTTP_PROXY", "http://127.0.0.1:1", 1);
    setenv("ALL_PROXY", "http://127.0.0.1:1", 1);
    url_of(&target, "/hello", url, sizeof(url));
    fetch(NULL, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_OK);
    AT_CHECK_INT(r.resp.status, 200);
    AT_CHECK_STR(target.last_target, "/hello");
    result_free(&r);

    /* A configured proxy is used: the request reaches it in absolute form. */
    memset(&o, 0, sizeof(o));
    snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", s.port);
    o.proxy = proxy;
    fetch(&o, AT_HTTP_GET, "http://ca.invalid/hello", &r);
    AT_CHECK_INT(r.err.code, AT_OK);
    AT_CHECK_INT(r.resp.status, 200);
    AT_CHECK_STR(r.resp.body, "hello world");
    AT_CHECK_STR(s.last_target, "http://ca.invalid/hello");
    result_free(&r);

    /* ... even for a host that the environment's NO_PROXY names. */
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    s.last_target[0] = '\0';
    url_of(&target, "/direct", url, sizeof(url));
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_OK);
    AT_CHECK_STR(s.last_target, url);
    result_free(&r);
    unsetenv("NO_PROXY");
    unsetenv("no_proxy");
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("ALL_PROXY");
    srv_stop(&target);
    srv_stop(&s);
}

static void t_bad_requests(void)
{
    at_error err = AT_ERROR_INIT;
    at_driver_opts o;
    at_http_req q;
    at_driver *d = at_driver_new(NULL, &err);

    memset(&q, 0, sizeof(q));
    q.url = "ftp://example.test/x";
    AT_CHECK(at_driver_submit(d, &q, collect, NULL, &err) != 0);
    AT_CHECK_CONTAINS(err.msg, "ftp://example.test/x");
    at_error_clear(&err);
    q.url = NULL;
    AT_CHECK(at_driver_submit(d, &q, collect, NULL, &err) != 0);
    at_error_clear(&err);
    AT_CHECK_INT(at_driver_pending(d), 0);
    at_driver_free(d);

    memset(&o, 0, sizeof(o));
    o.client_key_file = "/etc/client.key";
    AT_CHECK(at_driver_new(&o, &err) == NULL);
    AT_CHECK_INT(err.code, AT_ERR_CONFIG);
    AT_CHECK_CONTAINS(err.msg, "/etc/client.key");
    at_error_clear(&err);
}

/* ------------------------------------------------------------------ TLS */

static void t_tls_trust(void)
{
    ident server, other;
    srv s;
    char url[256], missing[600];
    at_driver_opts o;
    result r;

    ident_make(&server, "ca.test", "IP:127.0.0.1,DNS:localhost", "server");
    ident_make(&other, "other.test", "IP:127.0.0.1", "other");
    AT_CHECK(srv_start(&s, server_ctx(&server, NULL), SRV_HTTP) == 0);
    url_of(&s, "/hello", url, sizeof(url));
    memset(&o, 0, sizeof(o));

    /* The right anchor. */
    o.ca_trust_file = server.cert_file;
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK_MSG(r.err.code == AT_OK, "%s", r.err.msg);
    AT_CHECK_INT(r.resp.status, 200);
    AT_CHECK_STR(r.resp.body, "hello world");
    result_free(&r);

    /* The wrong anchor: the message names the URL and the trust file. */
    o.ca_trust_file = other.cert_file;
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_ERR_NETWORK);
    AT_CHECK_CONTAINS(r.err.msg, url);
    AT_CHECK_CONTAINS(r.err.msg, "could not be verified");
    AT_CHECK_CONTAINS(r.err.msg, other.cert_file);
    AT_CHECK_CONTAINS(r.err.msg, "trust file option");
    result_free(&r);

    /* No anchor (system roots): suggests the trust file option. */
    o.ca_trust_file = NULL;
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_ERR_NETWORK);
    AT_CHECK_CONTAINS(r.err.msg, url);
    AT_CHECK_CONTAINS(r.err.msg, "trust file option");
    result_free(&r);

    /* A trust file that is not there. */
    snprintf(missing, sizeof(missing), "%s/missing.pem", at_test_tmpdir());
    o.ca_trust_file = missing;
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK(r.err.code == AT_ERR_CONFIG || r.err.code == AT_ERR_NETWORK);
    AT_CHECK_CONTAINS(r.err.msg, missing);
    result_free(&r);

    /* Wrong host name in the certificate. */
    srv_stop(&s);
    ident_free(&other);
    ident_make(&other, "elsewhere.test", "DNS:elsewhere.test", "elsewhere");
    AT_CHECK(srv_start(&s, server_ctx(&other, NULL), SRV_HTTP) == 0);
    url_of(&s, "/hello", url, sizeof(url));
    o.ca_trust_file = other.cert_file;
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_ERR_NETWORK);
    AT_CHECK_CONTAINS(r.err.msg, url);
    AT_CHECK_CONTAINS(r.err.msg, "not valid for that host name");
    result_free(&r);
    srv_stop(&s);
    ident_free(&server);
    ident_free(&other);
}

static void t_tls_client_cert(void)
{
    ident server, client, stranger;
    srv s;
    char url[256];
    at_driver_opts o;
    result r;

    ident_make(&server, "ejbca.test", "IP:127.0.0.1", "server");
    ident_make(&client, "autotls client", NULL, "client");
    ident_make(&stranger, "stranger", NULL, "stranger");
    AT_CHECK(srv_start(&s, server_ctx(&server, &client), SRV_HTTP) == 0);
    url_of(&s, "/hello", url, sizeof(url));
    memset(&o, 0, sizeof(o));
    o.ca_trust_file = server.cert_file;

    /* Without a client certificate the CA refuses us; the message says why. */
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_ERR_NETWORK);
    AT_CHECK_CONTAINS(r.err.msg, url);
    AT_CHECK_CONTAINS(r.err.msg, "client certificate");
    AT_CHECK_INT(s.nreq, 0);
    result_free(&r);

    /* With it, the request goes through and the server saw who we are. */
    o.client_cert_file = client.cert_file;
    o.client_key_file = client.key_file;
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK_MSG(r.err.code == AT_OK, "%s", r.err.msg);
    AT_CHECK_INT(r.resp.status, 200);
    AT_CHECK_STR(s.client_cn, "autotls client");
    result_free(&r);

    /* A certificate the CA does not know. */
    o.client_cert_file = stranger.cert_file;
    o.client_key_file = stranger.key_file;
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK_INT(r.err.code, AT_ERR_NETWORK);
    AT_CHECK_CONTAINS(r.err.msg, url);
    result_free(&r);

    /* Certificate and key that do not match: a configuration error. */
    o.client_cert_file = client.cert_file;
    o.client_key_file = stranger.key_file;
    fetch(&o, AT_HTTP_GET, url, &r);
    AT_CHECK(r.err.code == AT_ERR_CONFIG || r.err.code == AT_ERR_NETWORK);
    AT_CHECK_CONTAINS(r.err.msg, url);
    result_free(&r);
    srv_stop(&s);
    ident_free(&server);
    ident_free(&client);
    ident_free(&stranger);
}

static const at_test_case cases[] = {
    AT_CASE(t_get_and_status),
    AT_CASE(t_acme_headers),
    AT_CASE(t_post_and_head),
    AT_CASE(t_connection_refused),
    AT_CASE(t_request_timeout),
    AT_CASE(t_request_timeout_mid_answer),
    AT_CASE(t_connect_timeout),
    AT_CASE(t_size_limit),
    AT_CASE(t_concurrency_bound),
    AT_CASE(t_slow_does_not_delay_fast),
    AT_CASE(t_submit_from_callback),
    AT_CASE(t_run_and_wakeup),
    AT_CASE(t_free_cancels),
    AT_CASE(t_proxy),
    AT_CASE(t_bad_requests),
    AT_CASE(t_tls_trust),
    AT_CASE(t_tls_client_cert),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    return at_test_main(argc, argv, cases);
}
