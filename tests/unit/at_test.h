/*
 * at_test.h: a minimal unit test harness. Each test program lists its cases
 * in a table and calls at_test_main. A failed check prints file:line and the
 * values, marks the case failed and continues with the next check.
 *
 *   static void t_b64(void) { AT_CHECK_STR(x, "abc"); }
 *   static const at_test_case cases[] = { AT_CASE(t_b64), AT_CASE_END };
 *   int main(int argc, char **argv) { return at_test_main(argc, argv, cases); }
 */
#ifndef AT_TEST_H
#define AT_TEST_H

#include <stddef.h>
#include <string.h>

typedef struct at_test_case {
    const char *name;
    void (*fn)(void);
} at_test_case;

#define AT_CASE(f) { #f, f }
#define AT_CASE_END { NULL, NULL }

int  at_test_main(int argc, char **argv, const at_test_case *cases);
void at_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
extern int at_test_failed_checks;

/* A fresh empty temporary directory for this case (removed at exit). */
const char *at_test_tmpdir(void);

/* Read a whole file (malloc'd, NUL-terminated), NULL on error. */
char *at_test_read_file(const char *path, size_t *len);

#define AT_CHECK(cond) do { if (!(cond)) at_test_fail(__FILE__, __LINE__, "%s", #cond); } while (0)
#define AT_CHECK_MSG(cond, ...) do { if (!(cond)) at_test_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define AT_CHECK_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); \
    if (_a != _b) at_test_fail(__FILE__, __LINE__, "%s == %lld, expected %s == %lld", #a, _a, #b, _b); } while (0)
#define AT_CHECK_STR(a, b) do { const char *_a = (a), *_b = (b); \
    if (!_a || !_b || strcmp(_a, _b) != 0) at_test_fail(__FILE__, __LINE__, "%s == \"%s\", expected \"%s\"", #a, _a ? _a : "(null)", _b ? _b : "(null)"); } while (0)
#define AT_CHECK_CONTAINS(hay, needle) do { const char *_h = (hay), *_n = (needle); \
    if (!_h || !_n || !strstr(_h, _n)) at_test_fail(__FILE__, __LINE__, "%s == \"%s\" does not contain \"%s\"", #hay, _h ? _h : "(null)", _n ? _n : "(null)"); } while (0)
#define AT_CHECK_OK(expr, errp) do { if ((expr) != 0) at_test_fail(__FILE__, __LINE__, "%s failed: %s", #expr, (errp)->msg); } while (0)

#endif
