"""`nginx -t` with ngx_http_autotls_module: every directive's bad values fail
with the directive, the value and what would be accepted (and nginx's file and
line); whole-configuration mistakes fail with a message that says what to
write instead; a server with `listen ... ssl` and `autotls on` needs no
ssl_certificate.

No CA is needed: `nginx -t` never contacts one.
"""

import re

import pytest

from nginx_env import LOOPBACK, nginx  # noqa: F401

CA = "https://127.0.0.1:14000/dir"
GOOD_GLOBAL = f"    autotls_ca {CA};\n    autotls_accept_terms on;\n"


def site(n, *lines, name="a.test", ssl=True, server_name=True, port=None):
    listen = f"listen {LOOPBACK}:{port or n.https_port}{' ssl' if ssl else ''};"
    inner = [listen] + ([f"server_name {name};"] if server_name else []) + list(lines)
    inner.append("autotls on;")
    return "    server {\n" + "".join(f"        {x}\n" for x in inner) + "    }\n"


def body(n, global_lines="", *server_lines, **kw):
    return GOOD_GLOBAL + f"    autotls_store {n.store};\n" + global_lines + site(n, *server_lines, **kw)


def test_valid_configuration_passes(nginx):
    hook = nginx.write_file("conf/hook.sh", "#!/bin/sh\nexit 0\n", mode=0o755)
    text = (GOOD_GLOBAL
            + f"    autotls_store {nginx.store};\n"
            "    autotls_contact admin@example.com ops@example.com;\n"
            "    autotls_concurrency 4;\n    autotls_zone 2M;\n    autotls_retry_delay 30s 2h;\n"
            "    autotls_keys ec:P-256 rsa:2048;\n    autotls_renew_window 33%;\n"
            "    autotls_challenges http-01 tls-alpn-01;\n"
            f"    autotls_notify_command {hook};\n"
            + site(nginx, "server_name www.a.test;", "autotls_profile shortlived;",
                   'autotls_preferred_chain "Some Root";')
            + site(nginx, name="b.test", ssl=False, port=nginx.http_port)
            + site(nginx, "autotls_names c.test www.c.test;", name="~^c", port=nginx.https_port)
            + f"    server {{ listen {LOOPBACK}:{nginx.http_port}; server_name s;"
              " location = /st { autotls_status; } location = /rn { autotls_renew; } }\n")
    rc, out = nginx.configtest(text)
    assert rc == 0, out
    assert "test is successful" in out
    # No certificate lines anywhere, and nothing written to disk for them.
    assert "ssl_certificate" not in nginx.conf_path.read_text()


# (id, http{} lines, server lines, substrings that must all appear)
BAD_VALUES = [
    ("autotls", "", ["autotls maybe;"], ["autotls: ", "maybe", "on"]),
    ("autotls_names", "", ["autotls_names good.test bad_name!.test;"],
     ["autotls_names: ", "bad_name!.test"]),
    ("autotls_ca", "", ["autotls_ca ftp://ca.test/dir;"],
     ["autotls_ca: ", "ftp://ca.test/dir", "letsencrypt"]),
    ("autotls_ca_trust", "    autotls_ca_trust /nonexistent/roots.pem;\n", [],
     ["autotls_ca_trust: ", "/nonexistent/roots.pem"]),
    ("autotls_ca_client_certificate",
     "    autotls_ca_client_certificate /nonexistent/c.pem /nonexistent/k.pem;\n", [],
     ["autotls_ca_client_certificate: ", "/nonexistent/c.pem"]),
    ("autotls_contact", "    autotls_contact not-an-address;\n", [],
     ["autotls_contact: ", "not-an-address"]),
    ("autotls_accept_terms", "", ["autotls_accept_terms perhaps;"],
     ["autotls_accept_terms: ", "perhaps", "on"]),
    ("autotls_keys", "    autotls_keys ec:P-999;\n", [], ["autotls_keys: ", "ec:P-999", "ec:P-256"]),
    ("autotls_keys-repeat", "    autotls_keys ec:P-256 ec:P-384;\n", [],
     ["autotls_keys: ", "ec:P-384", "one EC"]),
    ("autotls_keys-three", "    autotls_keys ec:P-256 rsa:2048 rsa:4096;\n", [],
     ["autotls_keys: ", "3 key types"]),
    ("autotls_challenges", "    autotls_challenges http-02;\n", [],
     ["autotls_challenges: ", "http-02", "http-01"]),
    ("autotls_challenges-repeat", "    autotls_challenges http-01 http-01;\n", [],
     ["autotls_challenges: ", "http-01", "once"]),
    ("autotls_renew_window", "    autotls_renew_window 150%;\n", [],
     ["autotls_renew_window: ", "150%"]),
    ("autotls_profile", "    autotls_profile bad/profile;\n", [], ["autotls_profile: ", "bad/profile"]),
    # The key itself is never quoted back: it is a secret.
    ("autotls_eab", "    autotls_eab kid-1 not*base64url;\n", [], ["autotls_eab: ", "kid-1", "base64url"]),
    ("autotls_eab-alg", "    autotls_eab kid-1 c2VjcmV0LWhtYWMta2V5LWZyb20tdGhlLWNh HS999;\n", [],
     ["autotls_eab: ", "HS999", "HS256"]),
    ("autotls_preferred_chain", '    autotls_preferred_chain "";\n', [],
     ["autotls_preferred_chain: ", "common name"]),
    ("autotls_dns01_command", "    autotls_dns01_command /nonexistent/hook;\n", [],
     ["autotls_dns01_command: ", "/nonexistent/hook"]),
    ("autotls_notify_command", "    autotls_notify_command {root}/conf/not-a-program;\n", [],
     ["autotls_notify_command: ", "not-a-program", "not executable"]),
    ("autotls_concurrency", "    autotls_concurrency 0;\n", [], ["autotls_concurrency: ", "'0'"]),
    ("autotls_zone", "    autotls_zone lots;\n", [], ["autotls_zone: ", "lots"]),
    ("autotls_retry_delay", "    autotls_retry_delay soon;\n", [], ["autotls_retry_delay: ", "soon"]),
    ("autotls_retry_delay-order", "    autotls_retry_delay 1h 1m;\n", [],
     ["autotls_retry_delay: ", "'1m' is shorter than the first '1h'"]),
    ("autotls_zone-small", "    autotls_zone 4k;\n", [], ["autotls_zone: ", "4k"]),
]


@pytest.mark.parametrize("global_lines,server_lines,expect",
                         [b[1:] for b in BAD_VALUES], ids=[b[0] for b in BAD_VALUES])
def test_bad_value_fails_configtest(nginx, global_lines, server_lines, expect):
    nginx.write_file("conf/not-a-program", "#!/bin/sh\n", mode=0o644)
    global_lines = global_lines.format(root=nginx.root)
    rc, out = nginx.configtest(body(nginx, global_lines, *server_lines))
    assert rc != 0, f"nginx -t passed:\n{out}"
    assert "test failed" in out
    assert "[emerg]" in out, out
    for piece in expect:
        assert piece in out, f"{piece!r} missing from:\n{out}"
    # nginx names where: the file and the line of the directive.
    assert re.search(re.escape(str(nginx.conf_path)) + r":\d+", out), out


@pytest.mark.parametrize("directive", ["autotls_store /tmp/x;", "autotls_concurrency 2;",
                                       "autotls_zone 4M;", "autotls_notify_command /bin/true;",
                                       "autotls_retry_delay 1m;"])
def test_http_level_directives(nginx, directive):
    rc, out = nginx.configtest(body(nginx, "", directive))
    name = directive.split()[0]
    assert rc != 0, out
    assert f'"{name}" directive is not allowed here' in out, out


@pytest.mark.parametrize("directive", ["autotls on;", "autotls_names a.test;"])
def test_server_level_directives(nginx, directive):
    rc, out = nginx.configtest(GOOD_GLOBAL + f"    {directive}\n")
    name = directive.split()[0]
    assert rc != 0, out
    assert f'"{name}" directive is not allowed here' in out, out


def test_duplicate_directive(nginx):
    rc, out = nginx.configtest(body(nginx, f"    autotls_ca {CA};\n"))
    assert rc != 0 and '"autotls_ca" directive is duplicate' in out, out


def test_terms_must_be_accepted(nginx):
    text = f"    autotls_ca {CA};\n    autotls_store {nginx.store};\n" + site(nginx)
    rc, out = nginx.configtest(text)
    assert rc != 0, out
    assert "autotls_accept_terms on" in out and "terms of service" in out, out
    assert f"{nginx.conf_path}:" in out, out
    # Saying "off" explicitly is a decision (a CA without terms): accepted.
    rc, out = nginx.configtest(text.replace(f"{CA};\n", f"{CA};\n    autotls_accept_terms off;\n"))
    assert rc == 0, out


def test_server_without_server_name(nginx):
    rc, out = nginx.configtest(body(nginx, server_name=False))
    assert rc != 0, out
    assert "no server_name" in out and "autotls_names" in out, out
    rc, out = nginx.configtest(body(nginx, "", "autotls_names n.test;", server_name=False))
    assert rc == 0, out


@pytest.mark.parametrize("name", ["~^(www\\.)?regex\\.test$", "*.wild.test", ".dot.test", "www.tail.*"])
def test_inexact_server_name_needs_autotls_names(nginx, name):
    rc, out = nginx.configtest(body(nginx, "", f'server_name "{name}";'))
    assert rc != 0, out
    assert name[:6] in out and "autotls_names" in out, out
    assert ("regular expression" if name[0] == "~" else "wildcard") in out, out
    rc, out = nginx.configtest(body(nginx, "", f'server_name "{name}";', "autotls_names x.test;"))
    assert rc == 0, out


def test_underscore_catch_all_name(nginx):
    rc, out = nginx.configtest(body(nginx, name="_"))
    assert rc != 0, out
    assert "server_name \"_\" cannot be certified" in out and "autotls_names" in out, out


def test_name_managed_twice(nginx):
    text = body(nginx, "", name="dup.test") + site(nginx, "server_name other.test dup.test;",
                                                   name="x.test", port=nginx.http_port)
    rc, out = nginx.configtest(text)
    assert rc != 0, out
    assert "dup.test:" in out and "x.test:" in out and "both certify 'dup.test'" in out, out


def test_same_names_on_two_ports_share_a_certificate(nginx):
    text = body(nginx, "", name="same.test") + site(nginx, name="same.test", ssl=False,
                                                    port=nginx.http_port)
    rc, out = nginx.configtest(text)
    assert rc == 0, out


def test_wildcard_needs_dns01_command(nginx):
    rc, out = nginx.configtest(body(nginx, "", "autotls_names wild.test *.wild.test;", name="wild.test"))
    assert rc != 0, out
    assert "*.wild.test" in out, out
    assert re.search(r"dns-01|autotls_dns01_command", out), out
    hook = nginx.write_file("conf/hook.sh", "#!/bin/sh\nexit 0\n", mode=0o755)
    rc, out = nginx.configtest(body(nginx, "", "autotls_names wild.test *.wild.test;",
                                    "autotls_challenges dns-01;", f"autotls_dns01_command {hook};",
                                    name="wild.test"))
    assert rc == 0, out


def test_ssl_certificate_after_autotls_on(nginx, tmp_path):
    from local_ca import LocalCA
    ca = LocalCA(tmp_path / "ca")
    cert, key = ca.issue("own", names=("a.test",))
    head = (GOOD_GLOBAL + f"    autotls_store {nginx.store};\n"
            f"    server {{\n        listen {LOOPBACK}:{nginx.https_port} ssl;\n"
            "        server_name a.test;\n")
    own = f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
    # "autotls on" first, the administrator's certificate after it: refused.
    rc, out = nginx.configtest(head + "        autotls on;\n" + own + "    }\n")
    assert rc != 0, out
    assert "put ssl_certificate before" in out, out
    # The other way round, it is served until the first certificate is live.
    rc, out = nginx.configtest(head + own + "        autotls on;\n    }\n")
    assert rc == 0, out


def test_ssl_listener_without_autotls_still_needs_a_certificate(nginx):
    """The placeholder is only for managed servers: nginx's own check stands."""
    text = (body(nginx) + f"    server {{\n        listen {LOOPBACK}:{nginx.http_port} ssl;\n"
            "        server_name plain.test;\n    }\n")
    rc, out = nginx.configtest(text)
    assert rc != 0, out
    assert 'no "ssl_certificate" is defined' in out, out


def test_autotls_names_outside_server_name_warns(nginx):
    rc, out = nginx.configtest(body(nginx, "", "autotls_names a.test elsewhere.test;"))
    assert rc == 0, out
    assert "[warn]" in out and '"elsewhere.test" from autotls_names matches no server_name' in out, out
    assert '"a.test" from autotls_names' not in out, out
    # Wildcard server names cover what they match.
    rc, out = nginx.configtest(body(nginx, "", 'server_name "*.w.test" ".d.test";',
                                    "autotls_names a.test x.w.test d.test y.d.test;"))
    assert rc == 0 and "[warn]" not in out, out
