/*
 * at_cmd.c: run an administrator's command without a shell and without
 * blocking the engine. The child gets its own process group so that a
 * timeout also reaches whatever a hook script started, default signal
 * handling and an empty signal mask (the web server's threads block most
 * signals, and a child inheriting that could not be stopped with SIGTERM),
 * and none of the server's descriptors (listening sockets, log files).
 */
#include "at_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define AT_CMD_OUTPUT_MAX 4096
#define AT_CMD_KILL_GRACE_MS 2000L
#define AT_CMD_TRUNCATED "\n[output truncated]"

struct at_cmd {
    pid_t  pid;
    int    fd;            /* read end of the output pipe, -1 once closed */
    int    done;
    int    status;        /* exit status, or -1 */
    int    timed_out;
    long   started_ms;
    long   timeout_ms;    /* 0: none */
    long   term_sent_ms;  /* 0: SIGTERM not sent yet */
    int    truncated;
    at_buf out;
    char   name[256];     /* argv[0], for messages */
};

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int spawn_setup(posix_spawn_file_actions_t *fa, posix_spawnattr_t *at, int wfd, int rfd)
{
    sigset_t none, all;

    if (posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0) != 0 ||
        posix_spawn_file_actions_adddup2(fa, wfd, 1) != 0 ||
        posix_spawn_file_actions_adddup2(fa, wfd, 2) != 0 ||
        posix_spawn_file_actions_addclose(fa, rfd) != 0)
        return -1;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* The pipe ends are O_CLOEXEC, but a host's own descriptors may not be. */
    if (posix_spawn_file_actions_addclosefrom_np(fa, 3) != 0)
        return -1;
#endif
    sigemptyset(&none);
    sigfillset(&all);
    if (posix_spawnattr_setsigmask(at, &none) != 0 ||
        posix_spawnattr_setsigdefault(at, &all) != 0 ||
        posix_spawnattr_setpgroup(at, 0) != 0 ||
        posix_spawnattr_setflags(at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                 POSIX_SPAWN_SETPGROUP) != 0)
        return -1;
    return 0;
}

at_cmd *at_cmd_start(const char *const *argv, long timeout_s, at_error *err)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    int p[2], rc;
    at_cmd *c;

    if (!argv || !argv[0] || argv[0][0] != '/') {
        at_error_set(err, AT_ERR_CONFIG, "command '%s' must be given as an absolute path",
                     argv && argv[0] ? argv[0] : "");
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    snprintf(c->name, sizeof(c->name), "%s", argv[0]);
    at_buf_init(&c->out);
    c->fd = -1;
    c->pid = -1;
    if (pipe2(p, O_CLOEXEC) != 0) {
        at_error_set(err, AT_ERR_IO, "cannot run %s: pipe: %s", argv[0], strerror(errno));
        free(c);
        return NULL;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    rc = spawn_setup(&fa, &at, p[1], p[0]) != 0 ? ENOMEM
         : posix_spawn(&c->pid, argv[0], &fa, &at, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(p[1]);
    if (rc != 0) {
        at_error_set(err, rc == ENOENT || rc == EACCES || rc == ENOEXEC ? AT_ERR_CONFIG : AT_ERR_IO,
                     "cannot run %s: %s%s", argv[0], strerror(rc),
                     rc == ENOENT ? " (check the path)" :
                     rc == EACCES ? " (is it executable by the server's user?)" : "");
        close(p[0]);
        free(c);
        return NULL;
    }
    fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK);
    c->fd = p[0];
    c->started_ms = mono_ms();
    c->timeout_ms = timeout_s > 0 ? timeout_s * 1000 : 0;
    return c;
}

/* Keep the first AT_CMD_OUTPUT_MAX bytes; read and drop the rest so that a
 * chatty command never blocks on a full pipe. */
static void keep_output(at_cmd *c, const char *p, size_t n)
{
    size_t room = AT_CMD_OUTPUT_MAX - sizeof(AT_CMD_TRUNCATED) + 1;

    if (c->truncated)
        return;
    if (c->out.len + n > room) {
        at_buf_append(&c->out, p, room - c->out.len);
        at_buf_puts(&c->out, AT_CMD_TRUNCATED);
        c->truncated = 1;
        return;
    }
    at_buf_append(&c->out, p, n);
}

static void drain(at_cmd *c)
{
    char buf[4096];

    while (c->fd >= 0) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n > 0) {
            keep_output(c, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {            /* every writer is gone */
            close(c->fd);
            c->fd = -1;
        }
        break;                   /* EAGAIN: nothing more for now */
    }
}

static void signal_group(at_cmd *c, int sig)
{
    /* The group first (hook scripts start children), then the process in
     * case it left the group. */
    kill(-c->pid, sig);
    kill(c->pid, sig);
}

static void enforce_timeout(at_cmd *c)
{
    long now = mono_ms();

    if (!c->timeout_ms || now - c->started_ms < c->timeout_ms)
        return;
    if (!c->term_sent_ms) {
        c->timed_out = 1;
        c->term_sent_ms = now;
        signal_group(c, SIGTERM);
    } else if (now - c->term_sent_ms >= AT_CMD_KILL_GRACE_MS) {
        signal_group(c, SIGKILL);
    }
}

int at_cmd_poll(at_cmd *c, int *status)
{
    int ws = 0;
    pid_t r;

    if (!c->done) {
        drain(c);
        do
            r = waitpid(c->pid, &ws, WNOHANG);
        while (r < 0 && errno == EINTR);
        if (r == c->pid || (r < 0 && errno == ECHILD)) {
            c->done = 1;
            c->status = r == c->pid && WIFEXITED(ws) && !c->timed_out ? WEXITSTATUS(ws) : -1;
            /* What the command wrote just before exiting is in the pipe;
             * a background grandchild may keep it open, so don't wait for EOF. */
            drain(c);
            if (c->fd >= 0) {
                close(c->fd);
                c->fd = -1;
            }
        } else {
            enforce_timeout(c);
        }
    }
    if (c->done && status)
        *status = c->status;
    return c->done;
}

int at_cmd_wait(at_cmd *c)
{
    int status = -1;

    while (!at_cmd_poll(c, &status)) {
        if (c->fd >= 0) {
            struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
            poll(&pfd, 1, 50);
        } else {
            struct timespec ts = { 0, 20 * 1000000L };
            nanosleep(&ts, NULL);
        }
    }
    return status;
}

const char *at_cmd_output(const at_cmd *c)
{
    return at_buf_str(&c->out);
}

void at_cmd_free(at_cmd *c)
{
    if (!c)
        return;
    if (!c->done && c->pid > 0) {
        int ws;
        signal_group(c, SIGKILL);
        while (waitpid(c->pid, &ws, 0) < 0 && errno == EINTR)
            ;
    }
    if (c->fd >= 0)
        close(c->fd);
    at_buf_free(&c->out);
    free(c);
}
