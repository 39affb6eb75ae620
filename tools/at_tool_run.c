/*
 * at_tool_run.c: one run of the engine for the tool. The engine does the
 * work; this file gives it a private live table, starts the responder on the
 * ports the certificates' challenges need, turns Ctrl-C into a clean stop
 * (challenges withdrawn, dns-01 records torn down, the order left in the
 * store to resume), and afterwards reads the store to say, per certificate,
 * what happened.
 */
#include "at_tool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "at_acme.h"
#include "at_json.h"
#include "at_live.h"
#include "at_site.h"
#include "at_time.h"
#include "at_x509.h"
#include "at_responder.h"

#define TOOL_BADNONCE_RUNS 3   /* whole runs repeated after a badNonce streak */

/* ------------------------------------------------------------- signals */

static struct {
    pthread_mutex_t mu;
    pthread_t       thr;
    int             started;
    at_engine      *engine;
    int             caught;
} sig = { PTHREAD_MUTEX_INITIALIZER, 0, 0, NULL, 0 };

static void *signal_main(void *arg)
{
    sigset_t *set = arg;
    for (;;) {
        int s = 0;
        if (sigwait(set, &s) != 0)
            continue;
        if (s == SIGUSR1)
            return NULL;             /* at_tool_signals_stop */
        pthread_mutex_lock(&sig.mu);
        sig.caught = s;
        if (sig.engine) {
            at_engine_stop(sig.engine);
            pthread_mutex_unlock(&sig.mu);
            continue;
        }
        pthread_mutex_unlock(&sig.mu);
        /* Nothing in flight that needs cleaning up. */
        _exit(128 + s);
    }
}

void at_tool_signals_start(void)
{
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    /* Blocked before any other thread exists, so that every thread inherits
     * the mask and only the signal thread takes these. */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (pthread_create(&sig.thr, NULL, signal_main, &set) == 0)
        sig.started = 1;
}

void at_tool_signals_stop(void)
{
    if (!sig.started)
        return;
    pthread_kill(sig.thr, SIGUSR1);
    pthread_join(sig.thr, NULL);
    sig.started = 0;
}

int at_tool_interrupted(void)
{
    pthread_mutex_lock(&sig.mu);
    int s = sig.caught;
    pthread_mutex_unlock(&sig.mu);
    return s;
}

/* -------------------------------------------------------------- engine */

at_engine *at_tool_engine(at_tool *t, at_conf *conf, at_store *st, at_live **live, at_error *err)
{
    at_engine *e;

    *live = at_live_new_private(at_conf_live_size_hint(conf), err);
    if (!*live)
        return NULL;
    e = at_engine_new(conf, st, *live, &t->log, err);
    if (!e) {
        at_live_free_private(*live);
        *live = NULL;
        return NULL;
    }
    pthread_mutex_lock(&sig.mu);
    sig.engine = e;
    if (sig.caught)
        at_engine_stop(e);
    pthread_mutex_unlock(&sig.mu);
    return e;
}

void at_tool_engine_free(at_engine *e, at_live *live)
{
    pthread_mutex_lock(&sig.mu);
    if (sig.engine == e)
        sig.engine = NULL;
    pthread_mutex_unlock(&sig.mu);
    at_engine_free(e);
    if (live)
        at_live_free_private(live);
}

/* ----------------------------------------------------------- responder */

static void add_port(int *ports, size_t *n, int p)
{
    for (size_t i = 0; i < *n; i++)
        if (ports[i] == p)
            return;
    if (*n < AT_RESPONDER_MAX_PORTS)
        ports[(*n)++] = p;
}

static at_responder *start_responder(at_tool *t, at_live *live, json_t *const *sites, size_t nsites,
                                     at_error *err)
{
    int http[AT_RESPONDER_MAX_PORTS], tls[AT_RESPONDER_MAX_PORTS];
    const char *bind[16];
    size_t nhttp = 0, ntls = 0, nbind = 0;
    at_responder_opts o;

    for (size_t i = 0; i < nsites; i++) {
        at_challenge_type ch[AT_MAX_CHALLENGES];
        size_t nch = at_tool_site_challenges(sites[i], ch, AT_MAX_CHALLENGES);
        const json_t *b = json_object_get(sites[i], "bind");
        for (size_t k = 0; k < nch; k++) {
            if (ch[k] == AT_CHAL_HTTP01)
                add_port(http, &nhttp, (int)at_json_int(sites[i], "http_port", AT_TOOL_DEFAULT_HTTP_PORT));
            else if (ch[k] == AT_CHAL_TLSALPN01)
                add_port(tls, &ntls, (int)at_json_int(sites[i], "tls_port", AT_TOOL_DEFAULT_TLS_PORT));
        }
        for (size_t k = 0; k < json_array_size(b); k++) {
            const char *a = json_string_value(json_array_get(b, k));
            size_t j = 0;
            while (j < nbind && strcmp(bind[j], a) != 0)
                j++;
            if (a && j == nbind && nbind < sizeof(bind) / sizeof(bind[0]))
                bind[nbind++] = a;
        }
    }
    if (!nhttp && !ntls)
        return NULL;                 /* dns-01 only: nothing to answer */
    memset(&o, 0, sizeof(o));
    o.live = live;
    o.bind = bind;
    o.nbind = nbind;
    o.http_ports = http;
    o.nhttp = nhttp;
    o.tls_ports = tls;
    o.ntls = ntls;
    o.log = &t->log;
    return at_responder_start(&o, err);
}

/* ------------------------------------------------------------ outcomes */

typedef struct cert_before {
    char serial[128];
} cert_before;

static void read_serial(at_store *st, const at_cert_conf *cc, char *out, size_t outsz)
{
    at_cert_rec rec;
    at_cert_info info;
    at_error err = AT_ERROR_INIT;

    out[0] = '\0';
    memset(&rec, 0, sizeof(rec));
    if (at_store_cert_load(st, cc->id, &rec, &err) == 0 &&
        at_cert_info_pem(rec.chain_pem, strlen(rec.chain_pem), &info, &err) == 0) {
        snprintf(out, outsz, "%s", info.serial);
        at_cert_info_free(&info);
    }
    at_cert_rec_free(&rec);
    at_error_clear(&err);
}

/* The tool runs when the administrator says so: an earlier failure's backoff
 * must not turn this run into a silent no-op. A CA's Retry-After stays. */
static void clear_backoff(at_tool *t, at_store *st, const at_cert_conf *cc)
{
    json_t *state = NULL;
    at_error err = AT_ERROR_INIT;

    if (at_store_state_load(st, cc->id, &state, &err) != 0 || !json_is_object(state)) {
        json_decref(state);
        at_error_clear(&err);
        return;
    }
    if (at_json_int(state, "failures", 0) > 0 || json_object_get(state, "next_attempt")) {
        json_object_set_new(state, "failures", json_integer(0));
        json_object_del(state, "next_attempt");
        if (at_store_state_save(st, cc->id, state, &err) != 0)
            at_log(&t->log, AT_LOG_WARN, "certificate %s: %s", cc->id, err.msg);
    }
    json_decref(state);
    at_error_clear(&err);
}

/* The error recorded for a certificate during this run (since `start`). */
static int state_error(at_store *st, const at_cert_conf *cc, time_t start, at_error *out,
                       time_t *retry_after)
{
    json_t *state = NULL, *le;
    at_error err = AT_ERROR_INIT;
    int found = 0;

    *retry_after = 0;
    if (at_store_state_load(st, cc->id, &state, &err) == 0 && json_is_object(state)) {
        le = json_object_get(state, "last_error");
        *retry_after = (time_t)at_json_int(state, "retry_after", 0);
        if (json_is_object(le) && at_json_int(state, "last_attempt", 0) >= (long long)start) {
            at_error_from_json(out, le);
            found = out->code != AT_OK;
        }
    }
    json_decref(state);
    at_error_clear(&err);
    return found;
}

static const char *problem_type(const at_error *err)
{
    return at_acme_problem_type(err);
}

/* Print what happened to one certificate; fill err and return -1 if it
 * has no valid certificate that this run was supposed to produce. */
static int outcome(at_tool *t, at_store *st, const at_cert_conf *cc, const char *before, int forced,
                   time_t start, const at_error *run_err, at_error *err)
{
    at_cert_rec rec;
    at_cert_info info;
    at_error lerr = AT_ERROR_INIT;
    char tb[AT_TIME_BUFSIZE];
    time_t now = at_time_now(), retry_after = 0;
    int have = 0, rv = 0;

    memset(&rec, 0, sizeof(rec));
    memset(&info, 0, sizeof(info));
    if (at_store_cert_load(st, cc->id, &rec, &lerr) == 0 &&
        at_cert_info_pem(rec.chain_pem, strlen(rec.chain_pem), &info, &lerr) == 0)
        have = 1;
    at_error_clear(&lerr);

    if (state_error(st, cc, start, &lerr, &retry_after)) {
        at_error_move(err, &lerr);
        rv = -1;
    } else if (have && info.not_after > now && !(forced && strcmp(before, info.serial) == 0)) {
        const char *what = strcmp(before, info.serial) == 0 ? "unchanged" : before[0] ? "renewed" : "issued";
        printf("%s %s (%s): serial %s, valid until %s; %s/certs/%s/chain.pem%s\n", what, cc->names[0],
               at_key_spec_name(&cc->key), info.serial, at_time_format(info.not_after, tb, sizeof(tb)),
               at_store_path(st), cc->id,
               strcmp(what, "unchanged") == 0 ? " ('autotls renew' replaces it now)" : "");
    } else if (run_err && run_err->code != AT_OK) {
        at_error_copy(err, run_err);
        rv = -1;
    } else if (retry_after > now) {
        at_error_set(err, AT_ERR_RATELIMIT, "the CA asked not to try again before %s; run again then",
                     at_time_format(retry_after, tb, sizeof(tb)));
        rv = -1;
    } else {
        at_error_set(err, AT_ERR_INTERNAL, "%s (run with --verbose to see why)",
                     have && info.not_after > now ? "the certificate was not renewed" : "no certificate was obtained");
        rv = -1;
    }
    at_error_clear(&lerr);
    if (have)
        at_cert_info_free(&info);
    at_cert_rec_free(&rec);
    (void)t;
    return rv;
}

/* Did a certificate of this run fail with badNonce only? Then the whole
 * order is worth another go: the stored order resumes where it stopped. */
static int badnonce_failure(at_store *st, const at_conf *conf, time_t start)
{
    for (size_t i = 0; i < conf->ncerts; i++) {
        at_error e = AT_ERROR_INIT;
        time_t ra;
        int bad = 0;
        if (state_error(st, &conf->certs[i], start, &e, &ra)) {
            const char *pt = problem_type(&e);
            bad = pt && strcmp(pt, "badNonce") == 0;
        }
        at_error_clear(&e);
        if (bad)
            return 1;
    }
    return 0;
}

int at_tool_run(at_tool *t, at_conf *conf, at_store *st, json_t *const *sites, size_t nsites,
                const char *const *force_ids, size_t nforce, at_error *err)
{
    at_live *live = NULL;
    at_engine *e = NULL;
    at_responder *resp = NULL;
    cert_before *before = NULL;
    at_error run_err = AT_ERROR_INIT;
    time_t start = at_time_now();
    long timeout = t->timeout > 0 ? t->timeout : AT_TOOL_DEFAULT_TIMEOUT;
    int rv = -1, runs = 0;

    before = calloc(conf->ncerts ? conf->ncerts : 1, sizeof(*before));
    if (!before)
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < conf->ncerts; i++) {
        read_serial(st, &conf->certs[i], before[i].serial, sizeof(before[i].serial));
        clear_backoff(t, st, &conf->certs[i]);
    }
    e = at_tool_engine(t, conf, st, &live, err);
    if (!e)
        goto done;
    resp = start_responder(t, live, sites, nsites, err);
    if (!resp && err->code != AT_OK)
        goto done;
    for (size_t i = 0; i < nforce; i++)
        if (at_engine_force(e, force_ids[i], err) != 0)
            goto done;

    for (;;) {
        time_t left = start + timeout - at_time_now();
        at_error_clear(&run_err);
        if (left <= 0) {
            at_error_set(&run_err, AT_ERR_TIMEOUT, "gave up after %ld seconds (an unfinished order resumes on the next run)",
                         timeout);
            break;
        }
        if (at_engine_run_once(e, (long)left, &run_err) == 0)
            break;
        if (at_tool_interrupted() || ++runs >= TOOL_BADNONCE_RUNS || !badnonce_failure(st, conf, start))
            break;
        at_log(&t->log, AT_LOG_NOTICE, "the CA kept rejecting nonces; trying again");
        for (size_t i = 0; i < conf->ncerts; i++)
            clear_backoff(t, st, &conf->certs[i]);
        /* The engine holds a CA's failure for the rest of that second. */
        nanosleep(&(struct timespec){ 1, 100 * 1000000L }, NULL);
    }
    if (at_tool_interrupted()) {
        at_error_set(err, AT_ERR_CANCELLED, "interrupted; an unfinished order resumes on the next run");
        goto done;
    }

    /* Stop answering before reporting: the outcome is in the store. */
    at_responder_stop(resp);
    resp = NULL;
    rv = 0;
    for (size_t i = 0; i < conf->ncerts; i++) {
        const at_cert_conf *cc = &conf->certs[i];
        int forced = 0;
        at_error cerr = AT_ERROR_INIT;
        for (size_t k = 0; k < nforce; k++)
            forced |= strcmp(force_ids[k], cc->id) == 0;
        if (outcome(t, st, cc, before[i].serial, forced, start, &run_err, &cerr) != 0) {
            if (rv == 0) {
                at_error_move(err, &cerr);
                snprintf(t->what, sizeof(t->what), "%s for %s", t->cmd_name, cc->names[0]);
            }
            rv = -1;
        }
        at_error_clear(&cerr);
    }
    fflush(stdout);
done:
    at_responder_stop(resp);
    if (e)
        at_tool_engine_free(e, live);
    at_error_clear(&run_err);
    free(before);
    return rv;
}

/* ------------------------------------------------------------ reporting */

void at_tool_report(const at_tool *t, const char *what, const at_error *err)
{
    char line[AT_ERROR_MSG_MAX + 512];
    const char *type = NULL;
    const char *full = NULL;
    size_t n;

    if (err->problem)
        full = at_json_str(err->problem, "type");
    type = at_acme_problem_type(err);
    n = (size_t)snprintf(line, sizeof(line), "%s: %s%s%s", t->prog, what ? what : "", what && *what ? " failed: " : "",
                         err->msg[0] ? err->msg : "unknown error");
    /* The CA's full problem type, for searching its documentation, unless
     * the message already names it. */
    if (full && n < sizeof(line) && !strstr(err->msg, full))
        snprintf(line + n, sizeof(line) - n, " (%s)", full);
    else if (!full && type && n < sizeof(line) && !strstr(err->msg, type))
        snprintf(line + n, sizeof(line) - n, " (%s)", type);
    /* One line, whatever a CA or a hook put into the message. */
    for (char *p = line; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    fprintf(stderr, "%s\n", line);
}
