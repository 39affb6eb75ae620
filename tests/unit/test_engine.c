/*
 * Engine tests: the real engine (driver, store, live table, planner, ops)
 * against the in-memory fake CA served over plain HTTP on loopback by a
 * thread of this test. The CA validates challenges by looking into the live
 * table the engine publishes to (http-01, tls-alpn-01) or into the file the
 * dns-01 hook writes, so a test passes only if the engine really published.
 */
#include "at_test.h"
#include "at_fake_ca.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "at_engine.h"
#include "at_engine_int.h"
#include "at_store_int.h"
#include "at_json.h"
#include "at_time.h"
#include "at_x509.h"

/* ------------------------------------------------ the CA on a loopback port */

typedef struct ca_server {
    at_fake_ca     *ca;
    int             lfd;
    int             port;
    int             stop_pipe[2];
    pthread_t       thr;
    pthread_mutex_t mu;
    char            url[64];
    char            dir_url[128];
    at_live        *live;        /* where the engine publishes */
    char            dns_file[512];
    int             requests;
} ca_server;

static int read_request(int fd, at_http_req *req, const char *base)
{
    char buf[65536];
    size_t n = 0;
    char *hdr_end = NULL;
    long clen = 0;

    while (!hdr_end) {
        ssize_t r;
        if (n >= sizeof(buf) - 1)
            return -1;
        r = read(fd, buf + n, sizeof(buf) - 1 - n);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = '\0';
        hdr_end = strstr(buf, "\r\n\r\n");
    }
    char method[16], path[2048];
    if (sscanf(buf, "%15s %2047s", method, path) != 2)
        return -1;
    memset(req, 0, sizeof(*req));
    req->method = strcmp(method, "POST") == 0 ? AT_HTTP_POST :
                  strcmp(method, "HEAD") == 0 ? AT_HTTP_HEAD : AT_HTTP_GET;
    if (asprintf(&req->url, "%s%s", base, path) < 0)
        return -1;
    for (char *line = strstr(buf, "\r\n") + 2; line < hdr_end; line = strstr(line, "\r\n") + 2) {
        if (strncasecmp(line, "Content-Length:", 15) == 0)
            clen = strtol(line + 15, NULL, 10);
        if (strncasecmp(line, "Content-Type:", 13) == 0) {
            char *v = line + 13, *e = strstr(line, "\r\n");
            while (*v == ' ')
                v++;
            req->content_type = strndup(v, (size_t)(e - v));
        }
        if (strncasecmp(line, "Accept:", 7) == 0) {
            char *v = line + 7, *e = strstr(line, "\r\n");
            while (*v == ' ')
                v++;
            req->accept = strndup(v, (size_t)(e - v));
        }
    }
    size_t have = n - (size_t)(hdr_end + 4 - buf);
    if (clen < 0 || clen > 60000)
        return -1;
    req->body = malloc((size_t)clen + 1);
    memcpy(req->body, hdr_end + 4, have < (size_t)clen ? have : (size_t)clen);
    while (have < (size_t)clen) {
        ssize_t r = read(fd, req->body + have, (size_t)clen - have);
        if (r <= 0)
            return -1;
        have += (size_t)r;
    }
    req->body[clen] = '\0';
    req->body_len = (size_t)clen;
    return 0;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void send_response(int fd, const at_http_resp *resp, int head)
{
    char *h = NULL;
    size_t hl = 0;
    FILE *f = open_memstream(&h, &hl);
    fprintf(f, "HTTP/1.1 %ld X\r\nConnection: close\r\nContent-Length: %zu\r\n", resp->status,
            resp->body_len);
    if (resp->content_type)
        fprintf(f, "Content-Type: %s\r\n", resp->content_type);
    if (resp->location)
        fprintf(f, "Location: %s\r\n", resp->location);
    if (resp->replay_nonce)
        fprintf(f, "Replay-Nonce: %s\r\n", resp->replay_nonce);
    if (resp->retry_after)
        fprintf(f, "Retry-After: %s\r\n", resp->retry_after);
    for (size_t i = 0; i < resp->nlinks; i++)
        fprintf(f, "Link: <%s>;rel=\"%s\"\r\n", resp->links[i].url, resp->links[i].rel);
    fputs("\r\n", f);
    fclose(f);
    write_all(fd, h, hl);
    free(h);
    if (!head && resp->body_len)
        write_all(fd, resp->body, resp->body_len);
}

static void *ca_thread(void *arg)
{
    ca_server *s = arg;
    for (;;) {
        struct pollfd p[2] = { { s->lfd, POLLIN, 0 }, { s->stop_pipe[0], POLLIN, 0 } };
        if (poll(p, 2, 1000) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        at_http_req req;
        if (read_request(fd, &req, s->url) == 0) {
            at_http_resp resp;
            pthread_mutex_lock(&s->mu);
            s->requests++;
            at_fake_ca_handle(s->ca, &req, &resp);
            pthread_mutex_unlock(&s->mu);
            send_response(fd, &resp, req.method == AT_HTTP_HEAD);
            at_http_resp_free(&resp);
            at_http_req_free(&req);
        }
        close(fd);
    }
    return NULL;
}

/* The CA looks where the engine published. */
static int live_validator(void *ud, at_fake_ca *ca, const at_fake_ca_chal *chal, const char **detail)
{
    ca_server *s = ud;
    (void)ca;
    if (strcmp(chal->type, "http-01") == 0) {
        char ka[512];
        if (at_live_get_http01(s->live, chal->token, ka, sizeof(ka)) != 1) {
            *detail = "token not published";
            return 0;
        }
        if (strcmp(ka, chal->key_authorization) != 0) {
            *detail = "wrong key authorization";
            return 0;
        }
        return 1;
    }
    if (strcmp(chal->type, "tls-alpn-01") == 0) {
        at_buf c = AT_BUF_INIT, k = AT_BUF_INIT;
        int r = at_live_get_alpn01(s->live, chal->identifier, &c, &k);
        int ok = r == 1 && strstr(at_buf_str(&c), "BEGIN CERTIFICATE") != NULL;
        at_buf_free(&c);
        at_buf_free(&k);
        if (!ok)
            *detail = "no tls-alpn-01 certificate published";
        return ok;
    }
    if (strcmp(chal->type, "dns-01") == 0) {
        char *txt = at_test_read_file(s->dns_file, NULL);
        int ok = txt && strstr(txt, chal->dns_value) != NULL;
        free(txt);
        if (!ok)
            *detail = "TXT record not set by the hook";
        return ok;
    }
    *detail = "unknown challenge";
    return 0;
}

static void ca_start(ca_server *s, at_live *live)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    int one = 1;

    memset(s, 0, sizeof(*s));
    s->live = live;
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(s->lfd, 64) != 0) {
        perror("bind");
        exit(99);
    }
    getsockname(s->lfd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d", s->port);
    s->ca = at_fake_ca_new(s->url);
    snprintf(s->dir_url, sizeof(s->dir_url), "%s", at_fake_ca_directory_url(s->ca));
    at_fake_ca_set_validator(s->ca, live_validator, s);
    snprintf(s->dns_file, sizeof(s->dns_file), "%s/dns.txt", at_test_tmpdir());
    if (pipe(s->stop_pipe) != 0)
        exit(99);
    pthread_create(&s->thr, NULL, ca_thread, s);
}

static void ca_stop(ca_server *s)
{
    if (write(s->stop_pipe[1], "x", 1) != 1)
        perror("write");
    pthread_join(s->thr, NULL);
    close(s->lfd);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    at_fake_ca_free(s->ca);
    pthread_mutex_destroy(&s->mu);
}

static unsigned ca_count(ca_server *s, const char *res)
{
    unsigned n;
    pthread_mutex_lock(&s->mu);
    n = at_fake_ca_count(s->ca, res);
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---------------------------------------------------------------- fixture */

typedef struct fix {
    ca_server srv;
    at_live  *live;
    at_store *store;
    at_conf  *conf;
    char      store_dir[512];
    char      log[8192];
} fix;

static void log_sink(void *ud, at_log_level lvl, const char *msg)
{
    fix *f = ud;
    size_t l = strlen(f->log);
    (void)lvl;
    if (getenv("AT_TEST_VERBOSE"))
        fprintf(stderr, "    [engine] %s\n", msg);
    if (l + strlen(msg) + 2 < sizeof(f->log))
        snprintf(f->log + l, sizeof(f->log) - l, "%s\n", msg);
}

static void fix_start(fix *f)
{
    at_error err = AT_ERROR_INIT;
    memset(f, 0, sizeof(*f));
    f->live = at_live_new_private(4 << 20, &err);
    AT_CHECK(f->live != NULL);
    ca_start(&f->srv, f->live);
    snprintf(f->store_dir, sizeof(f->store_dir), "%s/store", at_test_tmpdir());
    f->store = at_store_open_dir(f->store_dir, &err);
    AT_CHECK_MSG(f->store != NULL, "store: %s", err.msg);
    f->conf = at_conf_new();
    f->conf->retry_base = 60;
    f->conf->poll_timeout = 30;
    f->conf->request_timeout = 10;
    at_error_clear(&err);
}

static void fix_stop(fix *f)
{
    ca_stop(&f->srv);
    at_conf_free(f->conf);
    at_store_close(f->store);
    at_live_free_private(f->live);
}

static void add_site(fix *f, const char *site, const char *const *names, size_t n,
                     const at_challenge_type *ch, size_t nch, const at_key_spec *keys, size_t nkeys,
                     const char *dns_cmd)
{
    at_site_conf sc;
    at_error err = AT_ERROR_INIT;
    memset(&sc, 0, sizeof(sc));
    sc.site = site;
    sc.names = names;
    sc.nnames = n;
    sc.challenges = ch;
    sc.nchallenges = nch;
    sc.keys = keys;
    sc.nkeys = nkeys;
    sc.ca.url = f->srv.dir_url;
    sc.ca.accept_terms = 1;
    sc.dns01_command = dns_cmd;
    AT_CHECK_OK(at_conf_add_site(f->conf, &sc, &err), &err);
    at_error_clear(&err);
}

static at_engine *engine(fix *f)
{
    at_error err = AT_ERROR_INIT;
    at_logger lg = { log_sink, f, AT_LOG_DEBUG };
    at_engine *e = at_engine_new(f->conf, f->store, f->live, &lg, &err);
    AT_CHECK_MSG(e != NULL, "engine: %s", err.msg);
    at_error_clear(&err);
    return e;
}

static int live_has(fix *f, const char *name, at_key_kind kind, uint64_t *gen)
{
    uint32_t entry;
    uint64_t g = 0;
    int r = at_live_cert_gen(f->live, name, kind, &entry, &g);
    if (gen)
        *gen = g;
    return r == 1;
}

static json_t *state_of(fix *f, const char *id)
{
    json_t *st = NULL;
    at_error err = AT_ERROR_INIT;
    at_store_state_load(f->store, id, &st, &err);
    at_error_clear(&err);
    return st;
}

static const at_challenge_type HTTP01[] = { AT_CHAL_HTTP01 };
static const at_challenge_type ALPN01[] = { AT_CHAL_TLSALPN01 };
static const at_challenge_type DNS01[] = { AT_CHAL_DNS01 };

/* ------------------------------------------------------------------ cases */

static void t_issue_http01(void)
{
    fix f;
    const char *names[] = { "www.example.com", "example.com" };
    at_error err = AT_ERROR_INIT;
    fix_start(&f);
    add_site(&f, "example.com:443", names, 2, HTTP01, 1, NULL, 0, NULL);
    at_engine *e = engine(&f);

    AT_CHECK_OK(at_engine_run_once(e, 60, &err), &err);
    const at_cert_conf *cc = &f.conf->certs[0];
    at_cert_rec rec;
    memset(&rec, 0, sizeof(rec));
    AT_CHECK_OK(at_store_cert_load(f.store, cc->id, &rec, &err), &err);
    at_cert_info info;
    AT_CHECK_OK(at_cert_info_pem(rec.chain_pem, strlen(rec.chain_pem), &info, &err), &err);
    AT_CHECK_INT(info.nnames, 2);
    at_cert_info_free(&info);
    AT_CHECK_STR(at_json_str(rec.meta, "challenge"), "http-01");
    at_cert_rec_free(&rec);
    /* Served at once, under both names; challenges gone from the live table. */
    AT_CHECK(live_has(&f, "www.example.com", AT_KEY_EC, NULL));
    AT_CHECK(live_has(&f, "example.com", AT_KEY_EC, NULL));
    at_live_stats ls;
    at_live_get_stats(f.live, &ls);
    AT_CHECK_INT(ls.http01, 0);
    /* No order left in flight, state clean. */
    json_t *cp = NULL;
    char *k = NULL;
    AT_CHECK(at_store_order_load(f.store, cc->id, &cp, &k, &err) != 0 && err.code == AT_ERR_NOTFOUND);
    at_error_clear(&err);
    json_t *st = state_of(&f, cc->id);
    AT_CHECK(st && json_integer_value(json_object_get(st, "failures")) == 0);
    json_decref(st);
    AT_CHECK_INT(ca_count(&f.srv, "newAccount") >= 1, 1);
    AT_CHECK_INT(ca_count(&f.srv, "newOrder"), 1);

    /* A second run has nothing to do and contacts nobody for orders. */
    AT_CHECK_OK(at_engine_run_once(e, 10, &err), &err);
    AT_CHECK_INT(ca_count(&f.srv, "newOrder"), 1);
    at_engine_free(e);

    /* A new engine on the same store reuses the account. */
    unsigned accts = ca_count(&f.srv, "newAccount");
    e = engine(&f);
    AT_CHECK_OK(at_engine_force(e, "example.com", &err), &err);
    AT_CHECK_OK(at_engine_run_once(e, 60, &err), &err);
    AT_CHECK_INT(ca_count(&f.srv, "newAccount"), accts);
    AT_CHECK_INT(ca_count(&f.srv, "newOrder"), 2);
    at_engine_free(e);
    fix_stop(&f);
}

static void t_issue_alpn_and_dual_keys(void)
{
    fix f;
    const char *names[] = { "dual.example.org" };
    at_key_spec keys[2] = { { AT_KEY_EC, 256 }, { AT_KEY_RSA, 2048 } };
    at_error err = AT_ERROR_INIT;
    fix_start(&f);
    add_site(&f, "dual:443", names, 1, ALPN01, 1, keys, 2, NULL);
    AT_CHECK_INT(f.conf->ncerts, 2);
    at_engine *e = engine(&f);
    AT_CHECK_OK(at_engine_run_once(e, 90, &err), &err);
    AT_CHECK(live_has(&f, "dual.example.org", AT_KEY_EC, NULL));
    AT_CHECK(live_has(&f, "dual.example.org", AT_KEY_RSA, NULL));
    at_live_stats ls;
    at_live_get_stats(f.live, &ls);
    AT_CHECK_INT(ls.alpn01, 0);
    at_engine_free(e);
    fix_stop(&f);
}

static void t_concurrent_sites(void)
{
    fix f;
    at_error err = AT_ERROR_INIT;
    char namebuf[8][64];
    fix_start(&f);
    f.conf->concurrency = 3;
    for (int i = 0; i < 8; i++) {
        const char *n[1];
        snprintf(namebuf[i], sizeof(namebuf[i]), "site%d.example.net", i);
        n[0] = namebuf[i];
        add_site(&f, namebuf[i], n, 1, HTTP01, 1, NULL, 0, NULL);
    }
    at_engine *e = engine(&f);
    AT_CHECK_OK(at_engine_run_once(e, 120, &err), &err);
    for (int i = 0; i < 8; i++)
        AT_CHECK_MSG(live_has(&f, namebuf[i], AT_KEY_EC, NULL), "%s not live", namebuf[i]);
    AT_CHECK_INT(ca_count(&f.srv, "newOrder"), 8);
    at_engine_free(e);
    fix_stop(&f);
}

/* Store reads of one certificate, through a wrapper around the backend. */
static const at_store_ops *real_ops;
static const char *counted_id;
static int counted_reads;

static int counting_set_read(at_store *st, at_set_kind kind, const char *id, const at_store_file *files,
                             size_t n, at_buf *out, char version[AT_STORE_VERSION_MAX],
                             char where[AT_STORE_WHERE_MAX], at_error *err)
{
    if (kind == AT_SET_CERT && counted_id && strcmp(id, counted_id) == 0)
        counted_reads++;
    return real_ops->set_read(st, kind, id, files, n, out, version, where, err);
}

static void t_waiting_certs_not_replanned_every_turn(void)
{
    fix f;
    at_error err = AT_ERROR_INIT;
    char namebuf[10][64];
    at_store_ops ops;
    fix_start(&f);
    f.conf->concurrency = 1;
    for (int i = 0; i < 10; i++) {
        const char *n[1];
        snprintf(namebuf[i], sizeof(namebuf[i]), "queue%d.example.net", i);
        n[0] = namebuf[i];
        add_site(&f, namebuf[i], n, 1, HTTP01, 1, NULL, 0, NULL);
    }
    real_ops = f.store->ops;
    ops = *real_ops;
    ops.set_read = counting_set_read;
    f.store->ops = &ops;
    counted_id = f.conf->certs[9].id;
    counted_reads = 0;
    at_engine *e = engine(&f);
    AT_CHECK_OK(at_engine_run_once(e, 120, &err), &err);
    for (int i = 0; i < 10; i++)
        AT_CHECK_MSG(live_has(&f, namebuf[i], AT_KEY_EC, NULL), "%s not live", namebuf[i]);
    /* The last one waited through nine orders (dozens of engine turns) for
     * the one order slot; it was read when planned, before its own order and
     * after it, not on every turn. */
    AT_CHECK_MSG(counted_reads <= 10, "certificate read %d times while waiting", counted_reads);
    at_engine_free(e);
    f.store->ops = real_ops;
    counted_id = NULL;
    fix_stop(&f);
}

static int order_writes;

static int counting_set_write(at_store *st, at_set_kind kind, const char *id, const at_store_file *files,
                              size_t n, at_error *err)
{
    if (kind == AT_SET_ORDER)
        order_writes++;
    return real_ops->set_write(st, kind, id, files, n, err);
}

static void t_checkpoint_only_new_order_urls(void)
{
    fix f;
    const char *names[] = { "cp.example.com" };
    at_error err = AT_ERROR_INIT;
    at_store_ops ops;
    fix_start(&f);
    add_site(&f, "cp.example.com:443", names, 1, HTTP01, 1, NULL, 0, NULL);
    real_ops = f.store->ops;
    ops = *real_ops;
    ops.set_write = counting_set_write;
    f.store->ops = &ops;
    order_writes = 0;
    at_engine *e = engine(&f);
    AT_CHECK_OK(at_engine_run_once(e, 60, &err), &err);
    AT_CHECK(live_has(&f, "cp.example.com", AT_KEY_EC, NULL));
    /* The order went pending -> ready -> processing -> valid; only the
     * checkpoint that first named its URL was written (resuming re-reads
     * the rest from the CA). */
    AT_CHECK_INT(order_writes, 1);
    at_engine_free(e);
    f.store->ops = real_ops;
    fix_stop(&f);
}

static void t_failure_backoff_and_problem(void)
{
    fix f;
    const char *names[] = { "bad.example.com" };
    at_error err = AT_ERROR_INIT;
    fix_start(&f);
    add_site(&f, "bad:443", names, 1, HTTP01, 1, NULL, 0, NULL);
    pthread_mutex_lock(&f.srv.mu);
    at_fake_ca_fail_challenge(f.srv.ca, "bad.example.com", "unauthorized",
                              "The key authorization file from the server did not match");
    pthread_mutex_unlock(&f.srv.mu);
    at_engine *e = engine(&f);
    time_t before = time(NULL);
    AT_CHECK(at_engine_run_once(e, 60, &err) != 0);
    AT_CHECK_CONTAINS(err.msg, "did not match");
    AT_CHECK(err.problem != NULL);
    at_error_clear(&err);
    json_t *st = state_of(&f, f.conf->certs[0].id);
    AT_CHECK(st != NULL);
    AT_CHECK_INT(json_integer_value(json_object_get(st, "failures")), 1);
    json_t *le = json_object_get(st, "last_error");
    AT_CHECK(json_is_object(le) && json_is_object(json_object_get(le, "problem")));
    time_t next = (time_t)json_integer_value(json_object_get(st, "next_attempt"));
    /* 60 s base with +-25% jitter. */
    AT_CHECK_MSG(next >= before + 44 && next <= time(NULL) + 76, "next attempt in %ld s", (long)(next - before));
    json_decref(st);
    /* Nothing is due now: a second run does not hammer the CA. */
    unsigned orders = ca_count(&f.srv, "newOrder");
    at_engine_run_once(e, 10, &err);
    at_error_clear(&err);
    AT_CHECK_INT(ca_count(&f.srv, "newOrder"), orders);
    /* The status of the live table: nothing served, no challenge left over. */
    AT_CHECK(!live_has(&f, "bad.example.com", AT_KEY_EC, NULL));
    at_live_stats ls;
    at_live_get_stats(f.live, &ls);
    AT_CHECK_INT(ls.http01, 0);
    at_engine_free(e);
    fix_stop(&f);
}

static void t_ca_unreachable(void)
{
    fix f;
    const char *names[] = { "down.example.com" };
    at_error err = AT_ERROR_INIT;
    at_site_conf sc;
    fix_start(&f);
    memset(&sc, 0, sizeof(sc));
    sc.site = "down";
    sc.names = names;
    sc.nnames = 1;
    sc.ca.url = "http://127.0.0.1:9/dir";     /* discard port: nothing listens */
    sc.ca.accept_terms = 1;
    AT_CHECK_OK(at_conf_add_site(f.conf, &sc, &err), &err);
    at_engine *e = engine(&f);
    AT_CHECK(at_engine_run_once(e, 30, &err) != 0);
    AT_CHECK_CONTAINS(err.msg, "127.0.0.1:9");
    at_error_clear(&err);
    json_t *st = state_of(&f, f.conf->certs[0].id);
    AT_CHECK(st && json_integer_value(json_object_get(st, "failures")) == 1);
    json_decref(st);
    at_engine_free(e);
    fix_stop(&f);
}

static void t_resume_after_interruption(void)
{
    fix f;
    const char *names[] = { "slow.example.com" };
    at_error err = AT_ERROR_INIT;
    fix_start(&f);
    add_site(&f, "slow:443", names, 1, HTTP01, 1, NULL, 0, NULL);
    pthread_mutex_lock(&f.srv.mu);
    at_fake_ca_set_pending_polls(f.srv.ca, 6);
    at_fake_ca_set_poll_retry_after(f.srv.ca, 1);
    pthread_mutex_unlock(&f.srv.mu);
    at_engine *e = engine(&f);
    /* Give up early, while the CA still validates: the order stays in the store. */
    AT_CHECK(at_engine_run_once(e, 2, &err) != 0);
    AT_CHECK_INT(err.code, AT_ERR_TIMEOUT);
    at_error_clear(&err);
    at_engine_free(e);
    json_t *cp = NULL;
    char *key = NULL;
    AT_CHECK_OK(at_store_order_load(f.store, f.conf->certs[0].id, &cp, &key, &err), &err);
    AT_CHECK(at_json_str(cp, "order_url") != NULL);
    json_decref(cp);
    free(key);
    AT_CHECK_INT(ca_count(&f.srv, "newOrder"), 1);

    /* A new engine continues the same order until the CA is done. */
    e = engine(&f);
    AT_CHECK_OK(at_engine_run_once(e, 60, &err), &err);
    AT_CHECK_INT(ca_count(&f.srv, "newOrder"), 1);
    AT_CHECK(live_has(&f, "slow.example.com", AT_KEY_EC, NULL));
    AT_CHECK_CONTAINS(f.log, "resuming the order");
    at_engine_free(e);
    fix_stop(&f);
}

static void write_script(const char *path, const char *body)
{
    FILE *fp = fopen(path, "w");
    fputs(body, fp);
    fclose(fp);
    chmod(path, 0755);
}

static void t_dns01_hook_and_notify(void)
{
    fix f;
    const char *names[] = { "*.wild.example.com", "wild.example.com" };
    char hook[600], notify[600], script[2048], nout[600];
    at_error err = AT_ERROR_INIT;
    fix_start(&f);
    snprintf(hook, sizeof(hook), "%s/hook.sh", at_test_tmpdir());
    snprintf(script, sizeof(script),
             "#!/bin/sh\n"
             "case \"$1\" in\n"
             "setup) echo \"$2 $3\" >> '%s' ;;\n"
             "teardown) echo \"gone $2 $3\" >> '%s.teardown' ;;\n"
             "*) exit 2 ;;\n"
             "esac\n", f.srv.dns_file, f.srv.dns_file);
    write_script(hook, script);
    snprintf(notify, sizeof(notify), "%s/notify.sh", at_test_tmpdir());
    snprintf(nout, sizeof(nout), "%s/notify.out", at_test_tmpdir());
    snprintf(script, sizeof(script), "#!/bin/sh\necho \"$@\" >> '%s'\n", nout);
    write_script(notify, script);
    f.conf->notify_command = strdup(notify);
    add_site(&f, "wild:443", names, 2, DNS01, 1, NULL, 0, hook);
    at_engine *e = engine(&f);
    AT_CHECK_OK(at_engine_run_once(e, 60, &err), &err);
    AT_CHECK(live_has(&f, "anything.wild.example.com", AT_KEY_EC, NULL));
    AT_CHECK(live_has(&f, "wild.example.com", AT_KEY_EC, NULL));
    char *dns = at_test_read_file(f.srv.dns_file, NULL);
    AT_CHECK_CONTAINS(dns, "_acme-challenge.wild.example.com ");
    free(dns);
    at_engine_free(e);        /* waits for the notify command */
    char tpath[600];
    snprintf(tpath, sizeof(tpath), "%s.teardown", f.srv.dns_file);
    char *td = at_test_read_file(tpath, NULL);
    AT_CHECK_CONTAINS(td, "gone _acme-challenge.wild.example.com");
    free(td);
    char *n = at_test_read_file(nout, NULL);
    char expect[300];
    snprintf(expect, sizeof(expect), "issued %s *.wild.example.com wild.example.com", f.conf->certs[0].id);
    AT_CHECK_CONTAINS(n, expect);
    free(n);
    fix_stop(&f);
}

static void t_renewal_replaces_and_archive(void)
{
    fix f;
    const char *names[] = { "renew.example.com" };
    at_error err = AT_ERROR_INIT;
    uint64_t g1 = 0, g2 = 0;
    fix_start(&f);
    add_site(&f, "renew:443", names, 1, HTTP01, 1, NULL, 0, NULL);
    at_engine *e = engine(&f);
    AT_CHECK_OK(at_engine_run_once(e, 60, &err), &err);
    AT_CHECK(live_has(&f, "renew.example.com", AT_KEY_EC, &g1));
    at_cert_rec r1;
    memset(&r1, 0, sizeof(r1));
    AT_CHECK_OK(at_store_cert_load(f.store, f.conf->certs[0].id, &r1, &err), &err);

    AT_CHECK_OK(at_engine_force(e, "renew.example.com", &err), &err);
    AT_CHECK_OK(at_engine_run_once(e, 60, &err), &err);
    AT_CHECK(live_has(&f, "renew.example.com", AT_KEY_EC, &g2));
    AT_CHECK(g2 > g1);
    pthread_mutex_lock(&f.srv.mu);
    const json_t *p = at_fake_ca_last_payload(f.srv.ca, "newOrder");
    AT_CHECK(p && json_is_string(json_object_get(p, "replaces")));
    pthread_mutex_unlock(&f.srv.mu);
    at_cert_rec r2;
    memset(&r2, 0, sizeof(r2));
    AT_CHECK_OK(at_store_cert_load(f.store, f.conf->certs[0].id, &r2, &err), &err);
    AT_CHECK(strcmp(r1.chain_pem, r2.chain_pem) != 0);
    AT_CHECK(strcmp(r1.key_pem, r2.key_pem) != 0);
    at_cert_rec_free(&r1);
    at_cert_rec_free(&r2);
    char adir[700];
    snprintf(adir, sizeof(adir), "%s/archive/%s", f.store_dir, f.conf->certs[0].id);
    struct stat sb;
    AT_CHECK_MSG(stat(adir, &sb) == 0 && S_ISDIR(sb.st_mode), "no archive at %s", adir);
    at_engine_free(e);
    fix_stop(&f);
}

/* A CA without renewalInfo: nothing is asked and nothing about ARI is
 * written after an issuance (no task, no state write per certificate). */
/* Queue a checkpoint of certificate 0's order at url, with a new key. */
static void queue_order(fix *f, at_engine *e, const char *name, const char *url)
{
    at_error err = AT_ERROR_INIT;
    json_t *cp = json_pack("{s:s, s:[s], s:s}", "order_url", url, "names", name, "key", "ec:P-256");
    at_buf key = AT_BUF_INIT;
    EVP_PKEY *pk = at_key_generate(&f->conf->certs[0].key, &err);
    AT_CHECK(pk != NULL);
    AT_CHECK_OK(at_key_to_pem(pk, &key, &err), &err);
    EVP_PKEY_free(pk);
    at_persist_order(e, 0, cp, &key);
    AT_CHECK(key.data == NULL);            /* taken */
}

/* The store writer: what the engine reads back while a write is queued is
 * that write; a write made on the engine thread waits for the queued ones
 * and is not overtaken by them; the lock handed over is released once the
 * queue is written; nothing queued is lost when the engine is freed. */
static void t_persist_order_of_writes(void)
{
    fix f;
    const char *names[] = { "persist.example.com" };
    at_error err = AT_ERROR_INIT;
    at_store_lock *lk = NULL, *lk2 = NULL;
    fix_start(&f);
    add_site(&f, "persist:443", names, 1, HTTP01, 1, NULL, 0, NULL);
    at_engine *e = engine(&f);
    const char *id = f.conf->certs[0].id;
    at_persist_start(e);

    /* Many queued writes: an order, then its finish with a state. */
    for (int k = 0; k < 20; k++)
        queue_order(&f, e, names[0], "https://ca.test/order/1");
    AT_CHECK_OK(at_store_trylock(f.store, id, &lk, &err), &err);
    at_persist_finish(e, 0, json_pack("{s:i, s:s}", "failures", 0, "mark", "finished"), lk);
    /* Read back while (perhaps) still queued: the queued state, or, once
     * written, the same from the store. */
    json_t *st = at_persist_state(e, 0);
    if (!st)
        AT_CHECK_OK(at_store_state_load(f.store, id, &st, &err), &err);
    AT_CHECK_STR(at_json_str(st, "mark"), "finished");
    json_decref(st);
    /* A force request now: written after the queue, never overwritten by it. */
    at_engine_cert_record_force(e, 0, time(NULL));
    AT_CHECK(!at_persist_finishing(e, 0));
    AT_CHECK(at_persist_state(e, 0) == NULL);
    st = state_of(&f, id);
    AT_CHECK(json_integer_value(json_object_get(st, "force")) > 0);
    AT_CHECK_STR(at_json_str(st, "mark"), "finished");
    json_decref(st);
    /* The finish removed the order its predecessors wrote, and let the lock go. */
    {
        json_t *cp = NULL;
        char *k = NULL;
        AT_CHECK(at_store_order_load(f.store, id, &cp, &k, &err) != 0 && err.code == AT_ERR_NOTFOUND);
        at_error_clear(&err);
        json_decref(cp);
        free(k);
    }
    AT_CHECK_OK(at_store_trylock(f.store, id, &lk2, &err), &err);
    at_store_unlock(lk2);

    /* Queued last, then the engine freed at once: the write is made. */
    queue_order(&f, e, names[0], "https://ca.test/order/2");
    at_engine_free(e);
    {
        json_t *back = NULL;
        char *k = NULL;
        AT_CHECK_OK(at_store_order_load(f.store, id, &back, &k, &err), &err);
        AT_CHECK_STR(at_json_str(back, "order_url"), "https://ca.test/order/2");
        json_decref(back);
        free(k);
    }
    fix_stop(&f);
}

static void t_ari_absent_costs_nothing(void)
{
    fix f;
    const char *names[] = { "noari.example.com" };
    at_error err = AT_ERROR_INIT;
    fix_start(&f);
    pthread_mutex_lock(&f.srv.mu);
    at_fake_ca_set_renewal_info(f.srv.ca, 0);
    pthread_mutex_unlock(&f.srv.mu);
    add_site(&f, "noari:443", names, 1, HTTP01, 1, NULL, 0, NULL);
    at_engine *e = engine(&f);
    AT_CHECK_OK(at_engine_run_once(e, 60, &err), &err);
    AT_CHECK_INT(ca_count(&f.srv, "newOrder"), 1);
    AT_CHECK_INT(ca_count(&f.srv, "renewalInfo"), 0);
    AT_CHECK(live_has(&f, "noari.example.com", AT_KEY_EC, NULL));
    json_t *st = state_of(&f, f.conf->certs[0].id);
    AT_CHECK(json_is_object(st));
    AT_CHECK(json_object_get(st, "ari") == NULL);
    AT_CHECK_INT(json_integer_value(json_object_get(st, "failures")), 0);
    json_decref(st);
    /* Run again: the stored certificate is planned from the store, nothing is ordered. */
    AT_CHECK_OK(at_engine_run_once(e, 5, &err), &err);
    AT_CHECK_INT(ca_count(&f.srv, "newOrder"), 1);
    at_engine_free(e);
    fix_stop(&f);
}

static void t_ari_window_triggers_renewal(void)
{
    fix f;
    const char *names[] = { "ari.example.com" };
    at_error err = AT_ERROR_INIT;
    fix_start(&f);
    add_site(&f, "ari:443", names, 1, HTTP01, 1, NULL, 0, NULL);
    at_engine *e = engine(&f);
    AT_CHECK_OK(at_engine_run_once(e, 60, &err), &err);
    AT_CHECK_INT(ca_count(&f.srv, "newOrder"), 1);
    /* The first check asked again in hours; pretend they have passed. */
    json_t *st = state_of(&f, f.conf->certs[0].id);
    json_t *ari = json_object_get(st, "ari");
    AT_CHECK(json_is_object(ari) && json_integer_value(json_object_get(ari, "next_check")) > time(NULL));
    json_object_set_new(ari, "next_check", json_integer(0));
    AT_CHECK_OK(at_store_state_save(f.store, f.conf->certs[0].id, st, &err), &err);
    json_decref(st);
    /* The CA moves the window into the past (an incident): renew now. */
    sleep(2);
    time_t now = time(NULL);
    pthread_mutex_lock(&f.srv.mu);
    at_fake_ca_set_ari(f.srv.ca, now - 1, now, 3600, "https://ca.test/incident");
    pthread_mutex_unlock(&f.srv.mu);
    at_engine_free(e);
    e = engine(&f);
    AT_CHECK_OK(at_engine_run_once(e, 60, &err), &err);
    AT_CHECK_INT(ca_count(&f.srv, "renewalInfo") >= 1, 1);
    AT_CHECK_INT(ca_count(&f.srv, "newOrder"), 2);
    AT_CHECK_CONTAINS(f.log, "(ari)");
    /* The same window now predates the new certificate: no loop. */
    sleep(1);
    AT_CHECK_OK(at_engine_run_once(e, 30, &err), &err);
    AT_CHECK_INT(ca_count(&f.srv, "newOrder"), 2);
    at_engine_free(e);
    fix_stop(&f);
}

static void t_revoke_and_account_ops(void)
{
    fix f;
    const char *names[] = { "rev.example.com" };
    at_error err = AT_ERROR_INIT;
    fix_start(&f);
    add_site(&f, "rev:443", names, 1, HTTP01, 1, NULL, 0, NULL);
    at_engine *e = engine(&f);
    AT_CHECK_OK(at_engine_run_once(e, 60, &err), &err);
    AT_CHECK_OK(at_engine_revoke(e, "rev.example.com", 4, &err), &err);
    pthread_mutex_lock(&f.srv.mu);
    int reason = -1;
    AT_CHECK(at_fake_ca_cert_revoked(f.srv.ca, 0, &reason) == 1);
    AT_CHECK_INT(reason, 4);
    pthread_mutex_unlock(&f.srv.mu);

    json_t *acct = NULL;
    const char *contact[] = { "mailto:ops@example.com" };
    AT_CHECK_OK(at_engine_account(e, 0, AT_ACCOUNT_UPDATE_CONTACT, contact, 1, &acct, &err), &err);
    AT_CHECK(acct && json_is_array(json_object_get(acct, "contact")));
    json_decref(acct);

    /* Rollover: the stored key changes and the account keeps working. */
    at_account_rec before, after;
    memset(&before, 0, sizeof(before));
    memset(&after, 0, sizeof(after));
    AT_CHECK_OK(at_store_account_load(f.store, f.srv.dir_url, &before, &err), &err);
    AT_CHECK_OK(at_engine_account(e, 0, AT_ACCOUNT_ROLLOVER, NULL, 0, NULL, &err), &err);
    AT_CHECK_OK(at_store_account_load(f.store, f.srv.dir_url, &after, &err), &err);
    AT_CHECK(before.key_pem && after.key_pem && strcmp(before.key_pem, after.key_pem) != 0);
    AT_CHECK_STR(after.url, before.url);
    at_account_rec_free(&before);
    at_account_rec_free(&after);
    /* The revoked certificate is replaced, with the new account key. */
    AT_CHECK_OK(at_engine_run_once(e, 60, &err), &err);
    AT_CHECK_INT(ca_count(&f.srv, "newOrder"), 2);
    at_engine_free(e);
    fix_stop(&f);
}

static void t_preload(void)
{
    fix f;
    const char *names[] = { "pre.example.com" };
    at_error err = AT_ERROR_INIT;
    fix_start(&f);
    add_site(&f, "pre:443", names, 1, HTTP01, 1, NULL, 0, NULL);
    at_engine *e = engine(&f);
    AT_CHECK_OK(at_engine_run_once(e, 60, &err), &err);
    at_engine_free(e);
    /* A fresh table (a new server generation) gets the stored certificate without the network. */
    at_live *lv = at_live_new_private(1 << 20, &err);
    at_logger lg = { log_sink, &f, AT_LOG_DEBUG };
    AT_CHECK_INT(at_engine_preload(f.conf, f.store, lv, &lg, &err), 1);
    uint32_t entry;
    uint64_t gen;
    AT_CHECK_INT(at_live_cert_gen(lv, "pre.example.com", AT_KEY_EC, &entry, &gen), 1);
    at_live_free_private(lv);
    fix_stop(&f);
}

static void *run_thread(void *arg)
{
    at_engine_run(arg);
    return NULL;
}

static void t_stop_from_another_thread(void)
{
    fix f;
    const char *names[] = { "run.example.com" };
    fix_start(&f);
    add_site(&f, "run:443", names, 1, HTTP01, 1, NULL, 0, NULL);
    at_engine *e = engine(&f);
    pthread_t th;
    pthread_create(&th, NULL, run_thread, e);
    /* It issues by itself, then sleeps; stop must end it promptly. */
    for (int i = 0; i < 200 && !live_has(&f, "run.example.com", AT_KEY_EC, NULL); i++)
        usleep(50000);
    AT_CHECK(live_has(&f, "run.example.com", AT_KEY_EC, NULL));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    at_engine_stop(e);
    pthread_join(th, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    AT_CHECK_MSG(t1.tv_sec - t0.tv_sec < 3, "stop took %ld s", (long)(t1.tv_sec - t0.tv_sec));
    at_engine_free(e);
    fix_stop(&f);
}

static const at_test_case cases[] = {
    AT_CASE(t_issue_http01),
    AT_CASE(t_issue_alpn_and_dual_keys),
    AT_CASE(t_concurrent_sites),
    AT_CASE(t_waiting_certs_not_replanned_every_turn),
    AT_CASE(t_checkpoint_only_new_order_urls),
    AT_CASE(t_failure_backoff_and_problem),
    AT_CASE(t_ca_unreachable),
    AT_CASE(t_resume_after_interruption),
    AT_CASE(t_dns01_hook_and_notify),
    AT_CASE(t_renewal_replaces_and_archive),
    AT_CASE(t_persist_order_of_writes),
    AT_CASE(t_ari_absent_costs_nothing),
    AT_CASE(t_ari_window_triggers_renewal),
    AT_CASE(t_revoke_and_account_ops),
    AT_CASE(t_preload),
    AT_CASE(t_stop_from_another_thread),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    return at_test_main(argc, argv, cases);
}
