#include "at_test.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <ftw.h>

int at_test_failed_checks;
static int case_failed;
static char tmpdir[256];

void at_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "  FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    at_test_failed_checks++;
    case_failed = 1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void rm_tmpdir(void)
{
    if (tmpdir[0] && !getenv("AT_TEST_KEEP"))
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    tmpdir[0] = '\0';
}

const char *at_test_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof(tmpdir), "%s/at_test.XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(99);
        }
    }
    return tmpdir;
}

char *at_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    if (!f)
        return NULL;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); return NULL; }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, 4096, f);
        n += r;
        if (r < 4096)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

int at_test_main(int argc, char **argv, const at_test_case *cases)
{
    int failed = 0, run = 0;
    const char *only = argc > 1 ? argv[1] : getenv("AT_TEST_ONLY");

    for (const at_test_case *c = cases; c->name; c++) {
        if (only && *only && !strstr(c->name, only))
            continue;
        case_failed = 0;
        c->fn();
        rm_tmpdir();
        run++;
        if (case_failed) {
            failed++;
            fprintf(stderr, "not ok %d - %s\n", run, c->name);
        } else {
            fprintf(stderr, "ok %d - %s\n", run, c->name);
        }
    }
    fprintf(stderr, "%d of %d cases failed\n", failed, run);
    return failed ? 1 : 0;
}
