/*
 * fuzz_conf_parse: every directive value parser (at_parse_* in
 * core/at_parse.c, and at_key_spec_parse / at_name_normalize under them),
 * with the values an administrator could type.
 *
 * Input: records (at_fuzz.h): the value, then a second value (the EAB HMAC
 * key for at_parse_eab). The value is given to every parser (and to
 * at_revoke_reason_parse, the tool's); for the file parsers it becomes the
 * content of a private temporary file.
 *
 * Checks: no crash, leak or undefined behaviour; a refusal is a
 * configuration error with a printable message that never quotes the EAB
 * key; what a parser accepts is in range and is accepted again, unchanged,
 * when it is written back (names, contacts, CA URLs, key specs, challenge
 * types, durations, sizes, integers).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "at_conf.h"
#include "at_fuzz.h"
#include "at_x509.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char tmpfile_path[256];

static void rm_tmp(void)
{
    unlink(tmpfile_path);
}

/* A private file holding the value, rewritten for every input. */
static const char *file_with(const char *v, size_t n)
{
    int fd;
    if (!tmpfile_path[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(tmpfile_path, sizeof(tmpfile_path), "%s/autotls-fuzz-conf-XXXXXX", base);
        if ((fd = mkstemp(tmpfile_path)) < 0)
            at_fuzz_fail("mkstemp: %s", strerror(errno));
        close(fd);
        atexit(rm_tmp);
    }
    fd = open(tmpfile_path, O_WRONLY | O_TRUNC);
    if (fd < 0 || write(fd, v, n) != (ssize_t)n)
        at_fuzz_fail("writing %s: %s", tmpfile_path, strerror(errno));
    close(fd);
    return tmpfile_path;
}

/* A refusal: a configuration error with a printable message. */
static void refused(at_error *err, const char *what)
{
    if (err->code != AT_ERR_CONFIG || !err->msg[0])
        at_fuzz_fail("%s: refusal with code %d: %s", what, (int)err->code, err->msg);
    at_fuzz_check_msg(err, what);
    at_error_clear(err);
}

/* The HMAC key is secret; a key long and varied enough that it cannot be
 * a piece of the message's own prose must not appear in it. */
static int looks_secret(const char *k)
{
    int lower = 0, upper = 0, digit = 0;
    if (strlen(k) < 20)
        return 0;
    for (const char *p = k; *p; p++) {
        lower |= islower((unsigned char)*p) != 0;
        upper |= isupper((unsigned char)*p) != 0;
        digit |= isdigit((unsigned char)*p) != 0;
        if (*p == ' ')
            return 0;
    }
    return lower && upper && digit;
}

static void check_name(const char *v)
{
    char out[256], again[256];
    at_error err = AT_ERROR_INIT;
    if (at_parse_name(v, out, sizeof(out), &err) != 0) {
        refused(&err, "name");
        return;
    }
    if (at_parse_name(out, again, sizeof(again), &err) != 0 || strcmp(out, again) != 0)
        at_fuzz_fail("name '%s' normalised to '%s', which normalises to '%s' (%s)", v, out, again, err.msg);
    for (const char *p = out; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            at_fuzz_fail("normalised name '%s' has upper case", out);
    if (at_name_is_ip(out) && strchr(out, '*'))
        at_fuzz_fail("an IP name with a wildcard");
}

static void check_contact(const char *v)
{
    char *uri = NULL, *again = NULL;
    at_error err = AT_ERROR_INIT;
    if (at_parse_contact(v, &uri, &err) != 0) {
        if (uri)
            at_fuzz_fail("a refused contact left a URI");
        refused(&err, "contact");
        return;
    }
    if (!uri || strncmp(uri, "mailto:", 7) != 0 || !strchr(uri, '@'))
        at_fuzz_fail("contact '%s' gave '%s'", v, uri ? uri : "(null)");
    if (at_parse_contact(uri, &again, &err) != 0 || strcmp(uri, again) != 0)
        at_fuzz_fail("contact URI '%s' does not parse back to itself", uri);
    free(uri);
    free(again);
}

static void check_ca(const char *v)
{
    char *url = NULL, *again = NULL;
    at_error err = AT_ERROR_INIT;
    if (at_parse_ca(v, &url, &err) != 0) {
        refused(&err, "CA");
        return;
    }
    if (!url || (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0 &&
                 strncasecmp(url, "http", 4) != 0))
        at_fuzz_fail("CA '%s' gave '%s'", v, url ? url : "(null)");
    if (at_parse_ca(url, &again, &err) != 0 || strcmp(url, again) != 0)
        at_fuzz_fail("CA URL '%s' does not parse back to itself", url);
    free(url);
    free(again);
}

static void check_numbers(const char *v)
{
    at_error err = AT_ERROR_INIT;
    char buf[64];
    long secs, secs2, iv, iv2;
    size_t sz, sz2;
    at_renew_window w;

    if (at_parse_duration(v, &secs, &err) == 0) {
        if (secs <= 0 || secs > 3650L * 86400)
            at_fuzz_fail("duration '%s' gave %ld s", v, secs);
        snprintf(buf, sizeof(buf), "%lds", secs);
        if (at_parse_duration(buf, &secs2, &err) != 0 || secs2 != secs)
            at_fuzz_fail("duration %s does not parse back", buf);
    } else {
        refused(&err, "duration");
    }
    if (at_parse_renew_window(v, &w, &err) == 0) {
        if (!((w.percent >= 1 && w.percent <= 99 && w.seconds == 0) ||
              (w.percent == 0 && w.seconds > 0 && w.seconds <= 3650L * 86400)))
            at_fuzz_fail("renew window '%s' gave %d%% / %ld s", v, w.percent, w.seconds);
    } else {
        refused(&err, "renew window");
    }
    if (at_parse_size(v, 16384, (size_t)4 << 30, &sz, &err) == 0) {
        if (sz < 16384 || sz > ((size_t)4 << 30))
            at_fuzz_fail("size '%s' gave %zu", v, sz);
        snprintf(buf, sizeof(buf), "%zu", sz);
        if (at_parse_size(buf, 16384, (size_t)4 << 30, &sz2, &err) != 0 || sz2 != sz)
            at_fuzz_fail("size %s does not parse back", buf);
    } else {
        refused(&err, "size");
    }
    if (at_parse_int(v, -5, 1000000, &iv, &err) == 0) {
        if (iv < -5 || iv > 1000000)
            at_fuzz_fail("integer '%s' gave %ld", v, iv);
        snprintf(buf, sizeof(buf), "%ld", iv);
        if (at_parse_int(buf, -5, 1000000, &iv2, &err) != 0 || iv2 != iv)
            at_fuzz_fail("integer %s does not parse back", buf);
    } else {
        refused(&err, "integer");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    at_fuzz_in in = { data, size };
    size_t vlen = 0;
    char *v = at_fuzz_string(&in, &vlen), *key = at_fuzz_string(&in, NULL);
    at_error err = AT_ERROR_INIT;
    at_key_spec spec, spec2;
    at_challenge_type ct, ct2;
    int on;

    if (!v) {
        free(key);
        return 0;
    }
    if (at_parse_onoff(v, &on, &err) == 0) {
        if (on != 0 && on != 1)
            at_fuzz_fail("on/off gave %d", on);
    } else {
        refused(&err, "on/off");
    }
    check_ca(v);
    if (at_parse_key_spec(v, &spec, &err) == 0) {
        const char *name = at_key_spec_name(&spec);
        if (!name || at_parse_key_spec(name, &spec2, &err) != 0 || !at_key_spec_equal(&spec, &spec2))
            at_fuzz_fail("key spec '%s' does not parse back from '%s'", v, name ? name : "(null)");
    } else {
        refused(&err, "key spec");
    }
    if (at_parse_challenge(v, &ct, &err) == 0) {
        const char *name = at_challenge_name(ct);
        if (!name || at_parse_challenge(name, &ct2, &err) != 0 || ct2 != ct)
            at_fuzz_fail("challenge '%s' does not parse back", v);
    } else {
        refused(&err, "challenge");
    }
    check_numbers(v);
    check_contact(v);
    check_name(v);
    if (at_parse_profile(v, &err) != 0)
        refused(&err, "profile");
    {
        /* The tool's revocation reason (a name or an RFC 5280 code). */
        int reason = at_revoke_reason_parse(v);
        if (reason < -1 || reason > 10 || reason == 7)
            at_fuzz_fail("revocation reason '%s' gave %d", v, reason);
    }
    if (at_parse_eab(v, key ? key : "", &err) != 0) {
        /* (the key ID is quoted, so a key inside the key ID proves nothing) */
        if (key && looks_secret(key) && !strstr(v, key) && strstr(err.msg, key))
            at_fuzz_fail("an EAB message quotes the HMAC key: %s", err.msg);
        refused(&err, "EAB");
    }
    if (at_parse_command(v, &err) != 0)
        refused(&err, "command");
    /* The value as the content of a certificate file and of a key file. */
    {
        const char *path = file_with(v, vlen);
        if (at_parse_cert_file(path, &err) != 0)
            refused(&err, "certificate file");
        if (at_parse_key_file(path, &err) != 0)
            refused(&err, "key file");
    }
    free(v);
    free(key);
    return 0;
}
