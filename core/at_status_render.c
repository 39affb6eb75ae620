/*
 * at_status_render.c: the status model as JSON, as a self-contained HTML
 * page and as Prometheus text. Names, CA messages and problem documents are
 * untrusted text: every one is escaped for the format it lands in.
 */
#include "at_status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "at_json.h"
#include "at_time.h"

static const char *jstr(const json_t *o, const char *key)
{
    json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* A timestamp member as Unix time, 0 if absent or unparsable. */
static time_t jtime(const json_t *o, const char *key)
{
    const char *s = jstr(o, key);
    time_t t;
    return s && at_time_parse(s, &t) == 0 ? t : 0;
}

/* ----------------------------------------------------------------- JSON */

int at_status_render_json(const json_t *status, at_buf *out)
{
    /* Escaped slashes keep "</script>" inert should the JSON be embedded. */
    char *s = json_dumps(status, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ESCAPE_SLASH);
    int rv;

    if (!s)
        return -1;
    rv = at_buf_puts(out, s) == 0 && at_buf_puts(out, "\n") == 0 ? 0 : -1;
    free(s);
    return rv;
}

/* ----------------------------------------------------------------- HTML */

static int html(at_buf *b, const char *s)
{
    size_t start = 0, i;

    if (!s)
        return 0;
    for (i = 0; s[i]; i++) {
        const char *rep = NULL;
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '&':  rep = "&amp;"; break;
        case '<':  rep = "&lt;"; break;
        case '>':  rep = "&gt;"; break;
        case '"':  rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        default:
            if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
                rep = "\xef\xbf\xbd";   /* U+FFFD: control bytes have no place in a page */
        }
        if (!rep)
            continue;
        if (at_buf_append(b, s + start, i - start) != 0 || at_buf_puts(b, rep) != 0)
            return -1;
        start = i + 1;
    }
    return at_buf_append(b, s + start, i - start);
}

static void rel_time(time_t t, time_t now, char *buf, size_t size)
{
    long long d = (long long)t - (long long)now, a = d < 0 ? -d : d;
    const char *unit = "seconds";
    long long n = a;

    if (a >= 2 * 86400) {
        n = a / 86400;
        unit = "days";
    } else if (a >= 2 * 3600) {
        n = a / 3600;
        unit = "hours";
    } else if (a >= 120) {
        n = a / 60;
        unit = "minutes";
    }
    if (a < 5)
        snprintf(buf, size, "now");
    else
        snprintf(buf, size, d > 0 ? "in %lld %s" : "%lld %s ago", n, unit);
}

/* "2025-09-01T00:00:00Z <span>(in 42 days)</span>" or an em dash. */
static int html_time(at_buf *b, const json_t *c, const char *key, time_t now)
{
    char rel[64];
    time_t t = jtime(c, key);

    if (!t)
        return at_buf_puts(b, "&mdash;");
    rel_time(t, now, rel, sizeof(rel));
    return html(b, jstr(c, key)) | at_buf_printf(b, "<br><span class=\"muted\">%s</span>", rel);
}

static const char *page_head =
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    "<meta name=\"robots\" content=\"noindex\">"
    "<title>autotls status</title>\n<style>\n"
    "body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em;color:#1d1d1d}\n"
    "h1{font-size:1.4em;margin:0 0 .2em}\n"
    "table{border-collapse:collapse;width:100%;margin-top:1em}\n"
    "th,td{border-bottom:1px solid #ddd;padding:.45em .6em;text-align:left;vertical-align:top}\n"
    "th{background:#f3f3f3;font-weight:600}\n"
    ".muted{color:#6b6b6b;font-size:.9em}\n"
    ".state{display:inline-block;padding:0 .55em;border-radius:3px;color:#fff;font-weight:600}\n"
    ".valid{background:#2e7d32}.renewing{background:#1565c0}.pending{background:#616161}"
    ".missing{background:#a15c00}.error{background:#c62828}\n"
    ".err{color:#b71c1c;white-space:pre-wrap;word-break:break-word}\n"
    "pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f7;padding:.5em;margin:.3em 0}\n"
    "code{font-size:.92em}\n"
    "</style></head><body>\n";

static int html_summary(at_buf *b, const json_t *status, const json_t *certs)
{
    static const char *const states[] = { "valid", "renewing", "pending", "missing", "error" };
    size_t counts[5] = { 0 }, n = json_array_size(certs);
    int rv = 0;

    for (size_t i = 0; i < n; i++) {
        const char *s = jstr(json_array_get(certs, i), "state");
        for (int k = 0; s && k < 5; k++)
            if (strcmp(s, states[k]) == 0)
                counts[k]++;
    }
    rv |= at_buf_puts(b, "<h1>autotls</h1>\n<p class=\"muted\">version ");
    rv |= html(b, jstr(status, "version"));
    rv |= at_buf_puts(b, ", generated at ");
    rv |= html(b, jstr(status, "generated_at"));
    rv |= at_buf_printf(b, " &middot; %zu certificate%s", n, n == 1 ? "" : "s");
    for (int k = 0; k < 5; k++)
        if (counts[k])
            rv |= at_buf_printf(b, ", %zu %s", counts[k], states[k]);
    rv |= at_buf_puts(b, " &middot; <a href=\"?format=json\">JSON</a> &middot; "
                         "<a href=\"?format=prometheus\">Prometheus</a></p>\n");
    return rv;
}

static int is_web_url(const char *s)
{
    return s && (strncmp(s, "https://", 8) == 0 || strncmp(s, "http://", 7) == 0);
}

static int html_ari(at_buf *b, const json_t *ari)
{
    const char *expl = jstr(ari, "explanation");
    int rv = 0;

    if (!json_is_object(ari))
        return 0;
    rv |= at_buf_puts(b, "<br><span class=\"muted\">CA suggests ");
    rv |= html(b, jstr(ari, "start"));
    rv |= at_buf_puts(b, " &ndash; ");
    rv |= html(b, jstr(ari, "end"));
    /* Only a web link: a CA's "javascript:" URL must not become one. */
    if (is_web_url(expl)) {
        rv |= at_buf_puts(b, " (<a rel=\"noreferrer\" href=\"");
        rv |= html(b, expl);
        rv |= at_buf_puts(b, "\">why</a>)");
    }
    return rv | at_buf_puts(b, "</span>");
}

static int html_error(at_buf *b, const json_t *le)
{
    json_t *p = json_object_get(le, "problem");
    int rv = 0;

    if (!json_is_object(le))
        return at_buf_puts(b, "&mdash;");
    rv |= at_buf_puts(b, "<div class=\"err\">");
    rv |= html(b, jstr(le, "message"));
    rv |= at_buf_puts(b, "</div><span class=\"muted\">");
    rv |= html(b, jstr(le, "code"));
    rv |= at_buf_puts(b, "</span>");
    if (json_is_object(p)) {
        char *text = json_dumps(p, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        rv |= at_buf_puts(b, "<details><summary>problem document from the CA</summary><pre>");
        rv |= text ? html(b, text) : -1;
        rv |= at_buf_puts(b, "</pre></details>");
        free(text);
    }
    return rv;
}

static int html_cert(at_buf *b, const json_t *c, time_t now)
{
    const json_t *names = json_object_get(c, "names");
    const char *state = jstr(c, "state");
    json_int_t failures = json_integer_value(json_object_get(c, "failures"));
    int rv = 0;

    if (!state || strspn(state, "abcdefghijklmnopqrstuvwxyz") != strlen(state))
        state = "unknown";
    rv |= at_buf_puts(b, "<tr><td>");
    for (size_t i = 0; i < json_array_size(names); i++) {
        rv |= at_buf_puts(b, i ? "<br>" : "<strong>");
        rv |= html(b, json_string_value(json_array_get(names, i)));
        if (!i)
            rv |= at_buf_puts(b, "</strong>");
    }
    rv |= at_buf_puts(b, "<br><span class=\"muted\">");
    rv |= html(b, jstr(c, "id"));
    rv |= at_buf_puts(b, " &middot; ");
    rv |= html(b, jstr(c, "site"));
    rv |= at_buf_puts(b, "</span></td>\n<td>");
    rv |= html(b, jstr(c, "key_type"));
    rv |= at_buf_printf(b, "</td>\n<td><span class=\"state %s\">%s</span>", state, state);
    if (failures > 0)
        rv |= at_buf_printf(b, "<br><span class=\"muted\">%lld failed attempt%s</span>",
                            (long long)failures, failures == 1 ? "" : "s");
    rv |= at_buf_puts(b, "</td>\n<td>");
    rv |= html_time(b, c, "not_after", now);
    rv |= at_buf_puts(b, "</td>\n<td>");
    rv |= html_time(b, c, "renew_at", now);
    if (jstr(c, "renew_reason")) {
        rv |= at_buf_puts(b, "<br><span class=\"muted\">reason: ");
        rv |= html(b, jstr(c, "renew_reason"));
        rv |= at_buf_puts(b, "</span>");
    }
    rv |= html_ari(b, json_object_get(c, "ari"));
    rv |= at_buf_puts(b, "</td>\n<td>");
    rv |= html_time(b, c, "next_attempt", now);
    rv |= at_buf_puts(b, "</td>\n<td>");
    rv |= jstr(c, "issuer") ? html(b, jstr(c, "issuer")) : at_buf_puts(b, "&mdash;");
    if (jstr(c, "serial")) {
        rv |= at_buf_puts(b, "<br><span class=\"muted\">serial <code>");
        rv |= html(b, jstr(c, "serial"));
        rv |= at_buf_puts(b, "</code></span>");
    }
    if (jstr(c, "challenge")) {
        rv |= at_buf_puts(b, "<br><span class=\"muted\">validated by ");
        rv |= html(b, jstr(c, "challenge"));
        rv |= at_buf_puts(b, "</span>");
    }
    rv |= at_buf_puts(b, "<br><span class=\"muted\">CA ");
    rv |= html(b, jstr(c, "ca"));
    rv |= at_buf_puts(b, "</span></td>\n<td>");
    rv |= html_error(b, json_object_get(c, "last_error"));
    return rv | at_buf_puts(b, "</td></tr>\n");
}

/* Whatever the host added about itself (process, shared memory): shown as
 * a plain list, one level deep. */
static int html_server(at_buf *b, const json_t *srv)
{
    const char *key;
    json_t *v;
    int rv = 0;

    if (!json_is_object(srv))
        return 0;
    rv |= at_buf_puts(b, "<h2>Server</h2>\n<table>\n");
    json_object_foreach((json_t *)srv, key, v) {
        char *text = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
        rv |= at_buf_puts(b, "<tr><th>");
        rv |= html(b, key);
        rv |= at_buf_puts(b, "</th><td><code>");
        rv |= html(b, json_is_string(v) ? json_string_value(v) : text);
        rv |= at_buf_puts(b, "</code></td></tr>\n");
        free(text);
    }
    return rv | at_buf_puts(b, "</table>\n");
}

int at_status_render_html(const json_t *status, at_buf *out)
{
    const json_t *certs = json_object_get(status, "certificates");
    time_t now = jtime(status, "generated_at");
    int rv = 0;

    if (!now)
        now = at_time_now();
    rv |= at_buf_puts(out, page_head);
    rv |= html_summary(out, status, certs);
    if (json_array_size(certs) == 0) {
        rv |= at_buf_puts(out, "<p>No certificate is managed.</p>\n");
    } else {
        rv |= at_buf_puts(out, "<table>\n<thead><tr><th>Names</th><th>Key</th><th>State</th>"
                               "<th>Valid until</th><th>Renewal</th><th>Next attempt</th>"
                               "<th>Issuer</th><th>Last error</th></tr></thead>\n<tbody>\n");
        for (size_t i = 0; i < json_array_size(certs); i++)
            rv |= html_cert(out, json_array_get(certs, i), now);
        rv |= at_buf_puts(out, "</tbody></table>\n");
    }
    rv |= html_server(out, json_object_get(status, "server"));
    rv |= at_buf_puts(out, "</body></html>\n");
    return rv ? -1 : 0;
}

/* ----------------------------------------------------------- Prometheus */

/* Label value escaping of the text exposition format: \ " and newline. */
static int prom_label(at_buf *b, const char *name, const char *v, int first)
{
    int rv = at_buf_printf(b, "%s%s=\"", first ? "" : ",", name);
    size_t start = 0, i;

    if (!v)
        v = "";
    for (i = 0; v[i]; i++) {
        const char *rep = v[i] == '\\' ? "\\\\" : v[i] == '"' ? "\\\"" : v[i] == '\n' ? "\\n" : NULL;
        if (!rep)
            continue;
        rv |= at_buf_append(b, v + start, i - start);
        rv |= at_buf_puts(b, rep);
        start = i + 1;
    }
    rv |= at_buf_append(b, v + start, i - start);
    return rv | at_buf_puts(b, "\"");
}

static int prom_ids(at_buf *b, const char *metric, const json_t *c)
{
    int rv = at_buf_printf(b, "%s{", metric);
    rv |= prom_label(b, "id", jstr(c, "id"), 1);
    rv |= prom_label(b, "name", json_string_value(json_array_get(json_object_get(c, "names"), 0)), 0);
    return rv;
}

static int prom_family(at_buf *b, const char *metric, const char *help)
{
    return at_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", metric, help, metric);
}

/* One gauge per certificate from a timestamp or integer member (skipped
 * when the member is null). */
static int prom_per_cert(at_buf *b, const json_t *certs, const char *metric, const char *help,
                         const char *key, int is_time)
{
    int rv = 0, any = 0;

    for (size_t i = 0; i < json_array_size(certs); i++) {
        const json_t *c = json_array_get(certs, i), *v = json_object_get(c, key);
        long long x;
        if (is_time) {
            time_t t = jtime(c, key);
            if (!t)
                continue;
            x = (long long)t;
        } else {
            if (!json_is_integer(v))
                continue;
            x = (long long)json_integer_value(v);
        }
        if (!any++)
            rv |= prom_family(b, metric, help);
        rv |= prom_ids(b, metric, c);
        rv |= at_buf_printf(b, "} %lld\n", x);
    }
    return rv;
}

static int prom_states(at_buf *b, const json_t *certs)
{
    static const char *const states[] = { "missing", "pending", "valid", "renewing", "error" };
    int rv = 0;

    if (!json_array_size(certs))
        return 0;
    rv |= prom_family(b, "autotls_certificate_state",
                      "State of each managed certificate: 1 for the current state, 0 for the others.");
    for (size_t i = 0; i < json_array_size(certs); i++) {
        const json_t *c = json_array_get(certs, i);
        const char *s = jstr(c, "state");
        for (int k = 0; k < 5; k++) {
            rv |= prom_ids(b, "autotls_certificate_state", c);
            rv |= prom_label(b, "state", states[k], 0);
            rv |= at_buf_printf(b, "} %d\n", s && strcmp(s, states[k]) == 0);
        }
    }
    return rv;
}

static int prom_info(at_buf *b, const json_t *certs)
{
    int rv = 0;

    if (!json_array_size(certs))
        return 0;
    rv |= prom_family(b, "autotls_certificate_info",
                      "Managed certificate (always 1); key type, issuer, serial and CA as labels.");
    for (size_t i = 0; i < json_array_size(certs); i++) {
        const json_t *c = json_array_get(certs, i);
        rv |= prom_ids(b, "autotls_certificate_info", c);
        rv |= prom_label(b, "key_type", jstr(c, "key_type"), 0);
        rv |= prom_label(b, "issuer", jstr(c, "issuer"), 0);
        rv |= prom_label(b, "serial", jstr(c, "serial"), 0);
        rv |= prom_label(b, "ca", jstr(c, "ca"), 0);
        rv |= at_buf_puts(b, "} 1\n");
    }
    return rv;
}

static int prom_server(at_buf *b, const json_t *status)
{
    const json_t *shm = json_object_get(json_object_get(status, "server"), "shared_memory");
    static const struct { const char *key, *metric, *help; } g[] = {
        { "size", "autotls_shared_memory_size_bytes", "Size of the shared region." },
        { "used", "autotls_shared_memory_used_bytes", "Bytes of the shared region in use." },
    };
    int rv = 0;

    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
        json_t *v = json_object_get(shm, g[i].key);
        if (!json_is_integer(v))
            continue;
        rv |= prom_family(b, g[i].metric, g[i].help);
        rv |= at_buf_printf(b, "%s %lld\n", g[i].metric, (long long)json_integer_value(v));
    }
    return rv;
}

int at_status_render_prometheus(const json_t *status, at_buf *out)
{
    const json_t *certs = json_object_get(status, "certificates");
    int rv = 0;

    rv |= prom_info(out, certs);
    rv |= prom_states(out, certs);
    rv |= prom_per_cert(out, certs, "autotls_certificate_not_before_seconds",
                        "Start of the certificate's validity, Unix time.", "not_before", 1);
    rv |= prom_per_cert(out, certs, "autotls_certificate_not_after_seconds",
                        "End of the certificate's validity, Unix time.", "not_after", 1);
    rv |= prom_per_cert(out, certs, "autotls_renewal_due_seconds",
                        "When renewal is planned (renew window or the CA's ARI window), Unix time.",
                        "renew_at", 1);
    rv |= prom_per_cert(out, certs, "autotls_certificate_next_attempt_seconds",
                        "When the next attempt to obtain or renew is planned, Unix time.",
                        "next_attempt", 1);
    rv |= prom_per_cert(out, certs, "autotls_certificate_failures",
                        "Consecutive failed attempts to obtain or renew the certificate.", "failures", 0);
    rv |= prom_server(out, status);
    return rv ? -1 : 0;
}
