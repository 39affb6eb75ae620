/* Unit tests for at_cmd: spawning, capture, bounds, timeouts. */
#include "at_test.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "at_cmd.h"

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run `/bin/sh -c script` to completion; returns the status. */
static int run_sh(const char *script, long timeout_s, char *out, size_t outsz)
{
    const char *argv[] = { "/bin/sh", "-c", script, NULL };
    at_error err = AT_ERROR_INIT;
    at_cmd *c = at_cmd_start(argv, timeout_s, &err);
    int st;

    AT_CHECK_MSG(c != NULL, "start failed: %s", err.msg);
    if (!c)
        return -2;
    st = at_cmd_wait(c);
    if (out)
        snprintf(out, outsz, "%s", at_cmd_output(c));
    at_cmd_free(c);
    return st;
}

static void t_exit_codes(void)
{
    AT_CHECK_INT(run_sh("exit 0", 10, NULL, 0), 0);
    AT_CHECK_INT(run_sh("exit 3", 10, NULL, 0), 3);
    AT_CHECK_INT(run_sh("exit 255", 10, NULL, 0), 255);
    /* Killed by a signal: -1, not a made-up exit code. */
    AT_CHECK_INT(run_sh("kill -9 $$", 10, NULL, 0), -1);
}

static void t_output_capture(void)
{
    char out[8192];
    int st = run_sh("echo to-stdout; echo to-stderr >&2; printf 'no newline'", 10, out, sizeof(out));
    AT_CHECK_INT(st, 0);
    AT_CHECK_CONTAINS(out, "to-stdout\n");
    AT_CHECK_CONTAINS(out, "to-stderr\n");
    AT_CHECK_CONTAINS(out, "no newline");
}

static void t_output_bound(void)
{
    /* 200 KB: far more than a pipe holds, so the runner must keep reading
     * (and dropping) or the child would block forever. */
    const char *argv[] = { "/bin/sh", "-c",
        "i=0; while [ $i -lt 4000 ]; do echo 'line of fifty bytes .........................'; "
        "i=$((i+1)); done; echo END-MARKER; exit 7", NULL };
    at_error err = AT_ERROR_INIT;
    long t0 = mono_ms();
    at_cmd *c = at_cmd_start(argv, 30, &err);
    AT_CHECK(c != NULL);
    if (!c)
        return;
    AT_CHECK_INT(at_cmd_wait(c), 7);
    AT_CHECK(mono_ms() - t0 < 20000);
    AT_CHECK(strlen(at_cmd_output(c)) <= 4096);
    AT_CHECK(strlen(at_cmd_output(c)) > 4000);
    AT_CHECK(strncmp(at_cmd_output(c), "line of fifty bytes", 19) == 0);
    AT_CHECK_CONTAINS(at_cmd_output(c), "[output truncated]");
    AT_CHECK(strstr(at_cmd_output(c), "END-MARKER") == NULL);
    at_cmd_free(c);
}

static void t_poll_nonblocking(void)
{
    const char *argv[] = { "/bin/sh", "-c", "sleep 1; echo late; exit 4", NULL };
    at_error err = AT_ERROR_INIT;
    int st = 99, polls = 0;
    long t0 = mono_ms();
    at_cmd *c = at_cmd_start(argv, 10, &err);
    AT_CHECK(c != NULL);
    if (!c)
        return;
    AT_CHECK_INT(at_cmd_poll(c, &st), 0);
    AT_CHECK(mono_ms() - t0 < 500);
    AT_CHECK_INT(st, 99);                       /* untouched while running */
    while (!at_cmd_poll(c, &st) && polls++ < 500) {
        struct timespec ts = { 0, 20 * 1000000L };
        nanosleep(&ts, NULL);
    }
    AT_CHECK_INT(st, 4);
    AT_CHECK(mono_ms() - t0 >= 900);
    AT_CHECK_CONTAINS(at_cmd_output(c), "late");
    /* Polling again after completion gives the same answer. */
    st = 0;
    AT_CHECK_INT(at_cmd_poll(c, &st), 1);
    AT_CHECK_INT(st, 4);
    at_cmd_free(c);
}

static void t_timeout_sigterm(void)
{
    long t0 = mono_ms();
    sigset_t block, old;
    /* Even when the calling thread blocks SIGTERM (web servers do), the
     * child starts with an empty mask, so SIGTERM ends it at once. */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    int st = run_sh("echo started; sleep 30; echo never", 1, NULL, 0);
    sigprocmask(SIG_SETMASK, &old, NULL);
    long took = mono_ms() - t0;
    AT_CHECK_INT(st, -1);
    AT_CHECK_MSG(took >= 900 && took < 2800, "took %ld ms", took);
}

static void t_timeout_sigkill(void)
{
    char out[256];
    long t0 = mono_ms();
    /* A command that ignores SIGTERM is killed 2 s later. */
    int st = run_sh("trap '' TERM; echo stubborn; while :; do sleep 1; done", 1, out, sizeof(out));
    long took = mono_ms() - t0;
    AT_CHECK_INT(st, -1);
    AT_CHECK_CONTAINS(out, "stubborn");
    AT_CHECK_MSG(took >= 2900 && took < 8000, "took %ld ms", took);
}

static void t_missing_executable(void)
{
    const char *argv[] = { "/nonexistent/autotls-hook", "x", NULL };
    const char *rel[] = { "hook.sh", NULL };
    at_error err = AT_ERROR_INIT;
    at_cmd *c = at_cmd_start(argv, 5, &err);
    AT_CHECK(c == NULL);
    AT_CHECK_INT(err.code, AT_ERR_CONFIG);
    AT_CHECK_CONTAINS(err.msg, "/nonexistent/autotls-hook");
    AT_CHECK_CONTAINS(err.msg, "No such file");
    at_error_clear(&err);
    c = at_cmd_start(rel, 5, &err);
    AT_CHECK(c == NULL);
    AT_CHECK_INT(err.code, AT_ERR_CONFIG);
    AT_CHECK_CONTAINS(err.msg, "absolute path");
    at_error_clear(&err);
}

static void t_not_executable(void)
{
    char path[512];
    const char *argv[] = { path, NULL };
    at_error err = AT_ERROR_INIT;
    snprintf(path, sizeof(path), "%s/hook.sh", at_test_tmpdir());
    FILE *f = fopen(path, "w");
    AT_CHECK(f != NULL);
    if (!f)
        return;
    fputs("#!/bin/sh\nexit 0\n", f);
    fclose(f);
    chmod(path, 0600);
    at_cmd *c = at_cmd_start(argv, 5, &err);
    AT_CHECK(c == NULL);
    AT_CHECK_INT(err.code, AT_ERR_CONFIG);
    AT_CHECK_CONTAINS(err.msg, path);
    at_error_clear(&err);
    chmod(path, 0700);
    c = at_cmd_start(argv, 5, &err);
    AT_CHECK(c != NULL);
    if (c) {
        AT_CHECK_INT(at_cmd_wait(c), 0);
        at_cmd_free(c);
    }
}

static void t_no_shell_and_args(void)
{
    char path[512], out[1024];
    const char *argv[] = { path, "$HOME", "two words", "; echo injected", NULL };
    at_error err = AT_ERROR_INIT;
    snprintf(path, sizeof(path), "%s/args.sh", at_test_tmpdir());
    FILE *f = fopen(path, "w");
    AT_CHECK(f != NULL);
    if (!f)
        return;
    fputs("#!/bin/sh\nfor a in \"$@\"; do echo \"[$a]\"; done\n", f);
    fclose(f);
    chmod(path, 0700);
    at_cmd *c = at_cmd_start(argv, 5, &err);
    AT_CHECK(c != NULL);
    if (!c)
        return;
    AT_CHECK_INT(at_cmd_wait(c), 0);
    snprintf(out, sizeof(out), "%s", at_cmd_output(c));
    AT_CHECK_STR(out, "[$HOME]\n[two words]\n[; echo injected]\n");
    at_cmd_free(c);
}

static void t_stdin_devnull(void)
{
    char out[256];
    long t0 = mono_ms();
    /* cat would wait forever on an inherited terminal or pipe. */
    int st = run_sh("cat; echo \"eof:$?\"", 10, out, sizeof(out));
    AT_CHECK_INT(st, 0);
    AT_CHECK_STR(out, "eof:0\n");
    AT_CHECK(mono_ms() - t0 < 5000);
}

static void t_no_fd_leak(void)
{
    char out[256];
    int fd = open("/dev/null", O_RDONLY);       /* deliberately without O_CLOEXEC */
    AT_CHECK(fd >= 0);
    if (fd < 0)
        return;
    AT_CHECK(dup2(fd, 77) == 77);
    close(fd);
    int st = run_sh("if [ -e /proc/$$/fd/77 ]; then echo LEAKED; else echo CLEAN; fi", 10, out, sizeof(out));
    close(77);
    AT_CHECK_INT(st, 0);
    AT_CHECK_STR(out, "CLEAN\n");
}

static void t_free_kills(void)
{
    char path[512], cmd[700];
    const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
    at_error err = AT_ERROR_INIT;
    snprintf(path, sizeof(path), "%s/alive", at_test_tmpdir());
    /* The script would touch the file after 2 s if it survived at_cmd_free. */
    snprintf(cmd, sizeof(cmd), "sleep 2; touch '%s'", path);
    at_cmd *c = at_cmd_start(argv, 0, &err);
    AT_CHECK(c != NULL);
    if (!c)
        return;
    long t0 = mono_ms();
    at_cmd_free(c);
    AT_CHECK(mono_ms() - t0 < 1000);
    sleep(3);
    AT_CHECK(access(path, F_OK) != 0);
}

static const at_test_case cases[] = {
    AT_CASE(t_exit_codes),
    AT_CASE(t_output_capture),
    AT_CASE(t_output_bound),
    AT_CASE(t_poll_nonblocking),
    AT_CASE(t_timeout_sigterm),
    AT_CASE(t_timeout_sigkill),
    AT_CASE(t_missing_executable),
    AT_CASE(t_not_executable),
    AT_CASE(t_no_shell_and_args),
    AT_CASE(t_stdin_devnull),
    AT_CASE(t_no_fd_leak),
    AT_CASE(t_free_kills),
    AT_CASE_END
};

int main(int argc, char **argv)
{
    return at_test_main(argc, argv, cases);
}
