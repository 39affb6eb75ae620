/*
 * Renewer tests: the control block (queue, renewer record, sharing between
 * processes) and the renewal thread's life (start, hand-over of requests,
 * restart after the thread died, the store lock, shutdown). The engine runs
 * for real against a CA on a loopback port where nothing listens, so it
 * only ever fails and backs off: what is tested is the thread around it.
 */
#include "at_test.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "at_renewer.h"
#include "at_store.h"
#include "at_x509.h"

/* ------------------------------------------------------------ helpers */

typedef struct captured {
    pthread_mutex_t mu;
    at_buf          text;
} captured;

static void capture(void *ud, at_log_level level, const char *msg)
{
    captured *c = ud;
    (void)level;
    pthread_mutex_lock(&c->mu);
    at_buf_printf(&c->text, "%s\n", msg);
    pthread_mutex_unlock(&c->mu);
}

static int count(captured *c, const char *needle)
{
    int n = 0;
    pthread_mutex_lock(&c->mu);
    for (const char *p = at_buf_str(&c->text); (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Tick every 20 ms until needle has appeared `want` times (at most secs). */
static int tick_until(at_renewer *r, captured *c, const char *needle, int want, int secs)
{
    for (int i = 0; i < secs * 50; i++) {
        at_renewer_tick(r);
        if (count(c, needle) >= want)
            return 1;
        sleep_ms(20);
    }
    return 0;
}

typedef struct fixture {
    at_conf     *conf;
    at_live     *live;
    void        *ctl_mem;
    at_renew_ctl *ctl;
    captured     cap;
    at_logger    log;
} fixture;

static void fixture_init(fixture *f, const char *store_sub)
{
    static const char *const names[] = { "r.test", "www.r.test" };
    at_site_conf site;
    at_error err = AT_ERROR_INIT;
    char dir[512];

    memset(f, 0, sizeof(*f));
    snprintf(dir, sizeof(dir), "%s/%s", at_test_tmpdir(), store_sub);
    f->conf = at_conf_new();
    memset(&site, 0, sizeof(site));
    site.site = "r.test:443";
    site.names = names;
    site.nnames = 2;
    site.ca.url = (char *)"https://127.0.0.1:9/dir";   /* nothing listens there */
    site.ca.accept_terms = 1;
    AT_CHECK_OK(at_conf_add_site(f->conf, &site, &err), &err);
    free(f->conf->store_dir);
    f->conf->store_dir = strdup(dir);
    f->live = at_live_new_private(AT_LIVE_MIN_SIZE * 4, &err);
    AT_CHECK(f->live != NULL);
    f->ctl_mem = calloc(1, at_renew_ctl_size());
    f->ctl = at_renew_ctl_format(f->ctl_mem, at_renew_ctl_size(), &err);
    AT_CHECK(f->ctl != NULL);
    pthread_mutex_init(&f->cap.mu, NULL);
    f->log.fn = capture;
    f->log.ud = &f->cap;
    f->log.max = AT_LOG_DEBUG;
}

static void fixture_free(fixture *f)
{
    at_live_free_private(f->live);
    at_conf_free(f->conf);
    free(f->ctl_mem);
    at_buf_free(&f->cap.text);
    pthread_mutex_destroy(&f->cap.mu);
}

static at_renewer *renewer(fixture *f, const char *lock, int republish, long delay)
{
    at_renewer_conf rc;
    memset(&rc, 0, sizeof(rc));
    rc.conf = f->conf;
    rc.live = f->live;
    rc.ctl = f->ctl;
    rc.log = &f->log;
    rc.lock = lock;
    rc.store_directive = "TestStore";
    rc.republish = republish;
    rc.restart_delay = delay;
    return at_renewer_new(&rc);
}

/* ------------------------------------------------------ control block */

static void t_ctl_queue(void)
{
    at_error err = AT_ERROR_INIT;
    void *mem = calloc(1, at_renew_ctl_size());
    at_renew_ctl *c = at_renew_ctl_format(mem, at_renew_ctl_size(), &err);
    char out[AT_RENEW_QUEUE][AT_RENEW_REQ_MAX], name[32], longest[AT_RENEW_REQ_MAX + 1];

    AT_CHECK(c != NULL);
    AT_CHECK_INT(at_renew_ctl_take(c, out, AT_RENEW_QUEUE), 0);
    AT_CHECK_INT(at_renew_ctl_request(c, "a.test"), 0);
    AT_CHECK_INT(at_renew_ctl_request(c, "b.test"), 0);
    AT_CHECK_INT(at_renew_ctl_request(c, "a.test"), 0);      /* waiting already */
    AT_CHECK_INT(at_renew_ctl_take(c, out, 1), 1);
    AT_CHECK_STR(out[0], "a.test");
    AT_CHECK_INT(at_renew_ctl_take(c, out, AT_RENEW_QUEUE), 1);
    AT_CHECK_STR(out[0], "b.test");
    /* Refused: empty, too long; accepted: the longest that fits. */
    AT_CHECK_INT(at_renew_ctl_request(c, ""), -1);
    AT_CHECK_INT(at_renew_ctl_request(c, NULL), -1);
    memset(longest, 'x', sizeof(longest) - 1);
    longest[sizeof(longest) - 1] = '\0';
    AT_CHECK_INT(at_renew_ctl_request(c, longest), -1);
    longest[AT_RENEW_REQ_MAX - 1] = '\0';
    AT_CHECK_INT(at_renew_ctl_request(c, longest), 0);
    AT_CHECK_INT(at_renew_ctl_take(c, out, AT_RENEW_QUEUE), 1);
    AT_CHECK_STR(out[0], longest);
    /* A full queue refuses, and gives everything back in order. */
    for (int i = 0; i < AT_RENEW_QUEUE; i++) {
        snprintf(name, sizeof(name), "n%d.test", i);
        AT_CHECK_INT(at_renew_ctl_request(c, name), 0);
    }
    AT_CHECK_INT(at_renew_ctl_request(c, "one-too-many.test"), -1);
    AT_CHECK_INT(at_renew_ctl_request(c, "n3.test"), 0);     /* waiting already: fine */
    AT_CHECK_INT(at_renew_ctl_take(c, out, AT_RENEW_QUEUE), AT_RENEW_QUEUE);
    AT_CHECK_STR(out[0], "n0.test");
    AT_CHECK_STR(out[AT_RENEW_QUEUE - 1], "n31.test");
    AT_CHECK_INT(at_renew_ctl_take(c, out, AT_RENEW_QUEUE), 0);
    free(mem);
}

static void t_ctl_record_and_attach(void)
{
    at_error err = AT_ERROR_INIT;
    size_t size = at_renew_ctl_size();
    void *mem = calloc(1, size + 8);
    at_renew_ctl *c;
    time_t since = 1;

    AT_CHECK(at_renew_ctl_attach(mem, size) == NULL);           /* never formatted */
    AT_CHECK(at_renew_ctl_format(mem, size - 1, &err) == NULL);  /* too small */
    AT_CHECK(err.code != AT_OK && strstr(err.msg, "bytes") != NULL);
    at_error_clear(&err);
    AT_CHECK(at_renew_ctl_format((char *)mem + 4, size, &err) == NULL);  /* misaligned */
    at_error_clear(&err);
    c = at_renew_ctl_format(mem, size, &err);
    AT_CHECK(c != NULL);
    AT_CHECK(at_renew_ctl_attach(mem, size) == c);
    AT_CHECK(at_renew_ctl_attach(mem, size - 1) == NULL);

    AT_CHECK_INT(at_renew_ctl_renewer(c, &since), 0);
    AT_CHECK_INT(since, 0);
    at_renew_ctl_set_renewer(c, 4242, 1700000000);
    AT_CHECK_INT(at_renew_ctl_renewer(c, &since), 4242);
    AT_CHECK_INT(since, 1700000000);
    at_renew_ctl_clear_renewer(c, 17);                /* someone else: left alone */
    AT_CHECK_INT(at_renew_ctl_renewer(c, NULL), 4242);
    at_renew_ctl_clear_renewer(c, 4242);
    AT_CHECK_INT(at_renew_ctl_renewer(c, &since), 0);
    AT_CHECK_INT(since, 0);
    /* A block kept across a "reload" keeps what it holds. */
    AT_CHECK_INT(at_renew_ctl_request(c, "kept.test"), 0);
    c = at_renew_ctl_attach(mem, size);
    {
        char out[1][AT_RENEW_REQ_MAX];
        AT_CHECK_INT(at_renew_ctl_take(c, out, 1), 1);
        AT_CHECK_STR(out[0], "kept.test");
    }
    /* Damage to the magic makes it unknown. */
    memset(mem, 0xff, 4);
    AT_CHECK(at_renew_ctl_attach(mem, size) == NULL);
    free(mem);
}

static void t_ctl_between_processes(void)
{
    at_error err = AT_ERROR_INIT;
    size_t size = at_renew_ctl_size();
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    char out[AT_RENEW_QUEUE][AT_RENEW_REQ_MAX];
    at_renew_ctl *c;
    int status = -1;
    pid_t pid;
    time_t since;

    AT_CHECK(mem != MAP_FAILED);
    c = at_renew_ctl_format(mem, size, &err);
    AT_CHECK(c != NULL);
    pid = fork();
    if (pid == 0) {
        int bad = at_renew_ctl_request(c, "from-child.test") != 0;
        at_renew_ctl_set_renewer(c, (long)getpid(), 123);
        _exit(bad);
    }
    AT_CHECK(pid > 0);
    AT_CHECK(waitpid(pid, &status, 0) == pid);
    AT_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    AT_CHECK_INT(at_renew_ctl_take(c, out, AT_RENEW_QUEUE), 1);
    AT_CHECK_STR(out[0], "from-child.test");
    AT_CHECK_INT(at_renew_ctl_renewer(c, &since), pid);
    AT_CHECK_INT(since, 123);
    munmap(mem, size);
}

/* ------------------------------------------------------------ renewer */

static void t_renewer_runs_and_takes_requests(void)
{
    fixture f;
    at_renewer *r;
    time_t since = 0, t0 = time(NULL);

    fixture_init(&f, "store-run");
    r = renewer(&f, NULL, 0, 0);
    AT_CHECK(r != NULL);
    AT_CHECK_INT(at_renewer_tick(r), 1);
    AT_CHECK_INT(count(&f.cap, "renewing 1 certificate(s) in process"), 1);
    AT_CHECK_CONTAINS(at_buf_str(&f.cap.text), f.conf->store_dir);
    AT_CHECK_INT(at_renew_ctl_renewer(f.ctl, &since), getpid());
    AT_CHECK(since >= t0 && since <= time(NULL));

    /* A name, the id, everything, and a name nobody manages. */
    AT_CHECK_INT(at_renew_ctl_request(f.ctl, "www.r.test"), 0);
    AT_CHECK_INT(at_renew_ctl_request(f.ctl, f.conf->certs[0].id), 0);
    AT_CHECK_INT(at_renew_ctl_request(f.ctl, "all"), 0);
    AT_CHECK_INT(at_renew_ctl_request(f.ctl, "nobody.test"), 0);
    AT_CHECK_INT(at_renewer_tick(r), 1);
    AT_CHECK_INT(count(&f.cap, "renewing www.r.test now, as requested"), 1);
    AT_CHECK_INT(count(&f.cap, "now, as requested"), 3);
    AT_CHECK_INT(count(&f.cap, "renewing all now, as requested"), 1);
    AT_CHECK_INT(count(&f.cap, "renew request for nobody.test: "), 1);
    {
        char out[1][AT_RENEW_REQ_MAX];
        AT_CHECK_INT(at_renew_ctl_take(f.ctl, out, 1), 0);    /* all handed over */
    }
    /* The engine's own lines go to the same logger when no other is given. */
    AT_CHECK(tick_until(r, &f.cap, "renewal engine started", 1, 10));
    /* Nothing starts twice. */
    AT_CHECK_INT(at_renewer_tick(r), 1);
    AT_CHECK_INT(count(&f.cap, "renewing 1 certificate(s) in process"), 1);

    at_renewer_stop(r);
    AT_CHECK_INT(count(&f.cap, "renewal engine stopped"), 1);
    AT_CHECK_INT(at_renew_ctl_renewer(f.ctl, NULL), 0);
    AT_CHECK_INT(at_renewer_tick(r), 0);                 /* stopped for good */
    AT_CHECK_INT(count(&f.cap, "renewing 1 certificate(s) in process"), 1);
    at_renewer_free(r);
    fixture_free(&f);
}

static void t_renewer_restarts_a_dead_thread(void)
{
    fixture f;
    at_renewer *r;
    time_t died;

    fixture_init(&f, "store-restart");
    r = renewer(&f, NULL, 0, 1);
    AT_CHECK_INT(at_renewer_tick(r), 1);
    AT_CHECK(tick_until(r, &f.cap, "renewal engine started", 1, 10));
    at_renewer_test_kill(r);
    AT_CHECK(tick_until(r, &f.cap, "the renewal thread stopped unexpectedly; restarting it in 1 s", 1, 10));
    died = time(NULL);
    /* Nobody renews in between... */
    if (time(NULL) == died)
        AT_CHECK_INT(at_renew_ctl_renewer(f.ctl, NULL), 0);
    /* ...and after the delay the thread is back. */
    AT_CHECK(tick_until(r, &f.cap, "renewing 1 certificate(s) in process", 2, 10));
    AT_CHECK(time(NULL) >= died + 1);
    AT_CHECK_INT(at_renew_ctl_renewer(f.ctl, NULL), getpid());
    AT_CHECK(tick_until(r, &f.cap, "renewal engine started", 2, 10));
    at_renewer_free(r);
    AT_CHECK_INT(at_renew_ctl_renewer(f.ctl, NULL), 0);
    fixture_free(&f);
}

static void t_renewer_waits_for_the_store_lock(void)
{
    fixture f;
    at_renewer *first, *second;

    fixture_init(&f, "store-lock");
    first = renewer(&f, "test-renewal", 0, 0);
    second = renewer(&f, "test-renewal", 0, 0);
    AT_CHECK_INT(at_renewer_tick(first), 1);
    AT_CHECK_INT(count(&f.cap, "renewing 1 certificate(s) in process"), 1);
    /* The second waits, quietly, without a restart delay. */
    for (int i = 0; i < 5; i++)
        AT_CHECK_INT(at_renewer_tick(second), 1);
    AT_CHECK_INT(count(&f.cap, "renewing 1 certificate(s) in process"), 1);
    AT_CHECK_INT(count(&f.cap, "cannot start"), 0);
    /* The first stops (a reload's old worker): the second takes over at once. */
    at_renewer_stop(first);
    AT_CHECK_INT(at_renewer_tick(second), 1);
    AT_CHECK_INT(count(&f.cap, "renewing 1 certificate(s) in process"), 2);
    AT_CHECK_INT(at_renew_ctl_renewer(f.ctl, NULL), getpid());
    at_renewer_free(second);
    at_renewer_free(first);
    fixture_free(&f);
}

static void t_renewer_shutdown_without_waiting(void)
{
    fixture f;
    at_renewer *r;
    int ticks = 0;

    fixture_init(&f, "store-shutdown");
    r = renewer(&f, NULL, 0, 0);
    AT_CHECK_INT(at_renewer_tick(r), 1);
    AT_CHECK(tick_until(r, &f.cap, "renewal engine started", 1, 10));
    at_renewer_shutdown(r);
    /* Ticks join the thread once it returned, then say there is nothing left. */
    while (at_renewer_tick(r) && ticks++ < 500)
        sleep_ms(20);
    AT_CHECK(ticks < 500);
    AT_CHECK_INT(count(&f.cap, "renewal engine stopped"), 1);
    AT_CHECK_INT(count(&f.cap, "stopped unexpectedly"), 0);
    AT_CHECK_INT(at_renew_ctl_renewer(f.ctl, NULL), 0);
    /* Requests are no longer taken. */
    AT_CHECK_INT(at_renew_ctl_request(f.ctl, "r.test"), 0);
    AT_CHECK_INT(at_renewer_tick(r), 0);
    AT_CHECK_INT(count(&f.cap, "as requested"), 0);
    AT_CHECK_INT(count(&f.cap, "renewing 1 certificate(s) in process"), 1);
    at_renewer_free(r);
    fixture_free(&f);
}

static void t_renewer_cannot_start(void)
{
    fixture f;
    at_renewer *r;

    fixture_init(&f, "store-bad");
    /* The store's directory cannot be made: a file is in the way. */
    {
        FILE *fp = fopen(f.conf->store_dir, "w");
        AT_CHECK(fp != NULL);
        if (fp)
            fclose(fp);
    }
    r = renewer(&f, NULL, 0, 0);
    AT_CHECK_INT(at_renewer_tick(r), 1);
    AT_CHECK_INT(count(&f.cap, "cannot start renewing (trying again in a minute): "), 1);
    AT_CHECK_INT(at_renew_ctl_renewer(f.ctl, NULL), 0);
    /* Not again before the delay. */
    AT_CHECK_INT(at_renewer_tick(r), 1);
    AT_CHECK_INT(count(&f.cap, "cannot start renewing"), 1);
    at_renewer_free(r);
    fixture_free(&f);
}

static void t_renewer_republishes_the_store(void)
{
    static const char *const names[] = { "r.test", "www.r.test" };
    fixture f;
    at_renewer *r;
    at_error err = AT_ERROR_INIT;
    at_buf cert = AT_BUF_INIT, key = AT_BUF_INIT;
    at_cert_rec rec;
    at_store *st;
    uint32_t entry;
    uint64_t gen = 0;
    int found = 0;

    fixture_init(&f, "store-republish");
    st = at_store_open_dir(f.conf->store_dir, &err);
    AT_CHECK(st != NULL);
    AT_CHECK_OK(at_placeholder_cert(names, 2, "ec:P-256", 30, &cert, &key, &err), &err);
    memset(&rec, 0, sizeof(rec));
    rec.id = f.conf->certs[0].id;
    rec.chain_pem = cert.data;
    rec.key_pem = key.data;
    rec.meta = json_pack("{s:[s,s],s:s}", "names", "r.test", "www.r.test", "key", "ec:P-256");
    AT_CHECK_OK(at_store_cert_save(st, &rec, &err), &err);
    json_decref(rec.meta);
    at_store_close(st);
    AT_CHECK_INT(at_live_cert_gen(f.live, "www.r.test", AT_KEY_EC, &entry, &gen), 0);

    r = renewer(&f, NULL, 1, 0);
    AT_CHECK_INT(at_renewer_tick(r), 1);
    for (int i = 0; i < 250 && found != 1; i++) {
        found = at_live_cert_gen(f.live, "www.r.test", AT_KEY_EC, &entry, &gen);
        sleep_ms(20);
    }
    AT_CHECK_INT(found, 1);
    AT_CHECK(gen > 0);
    at_renewer_free(r);
    at_buf_free(&cert);
    at_buf_free_secret(&key);
    fixture_free(&f);
}

static const at_test_case cases[] = {
    AT_CASE(t_ctl_queue),
    AT_CASE(t_ctl_record_and_attach),
    AT_CASE(t_ctl_between_processes),
    AT_CASE(t_renewer_runs_and_takes_requests),
    AT_CASE(t_renewer_restarts_a_dead_thread),
    AT_CASE(t_renewer_waits_for_the_store_lock),
    AT_CASE(t_renewer_shutdown_without_waiting),
    AT_CASE(t_renewer_cannot_start),
    AT_CASE(t_renewer_republishes_the_store),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    return at_test_main(argc, argv, cases);
}
