"""`apache2 -t` (apachectl configtest) with mod_autotls: every directive's
bad values fail with the directive, the value and what would be accepted;
whole-configuration mistakes fail with a message that says what to add.

No CA is needed: configtest never contacts one.
"""

import os
import re

import pytest

from apache_env import apache  # noqa: F401

CA = "https://127.0.0.1:14000/dir"


def site(*lines, name="a.test", port="443", servername=True):
    inner = [f"ServerName {name}"] if servername else []
    inner += list(lines) + ["AutoTLS on"]
    return (f"<VirtualHost 127.0.0.1:{port}>\n" + "".join(f"    {x}\n" for x in inner)
            + "</VirtualHost>\n")


GOOD_GLOBAL = f"AutoTLSCA {CA}\nAutoTLSAcceptTerms on\n"


def configtest(apache, body):
    rc, out = apache.configtest(body)
    return rc, out


def test_valid_configuration_passes(apache):
    body = (GOOD_GLOBAL + "AutoTLSContact admin@example.com\nAutoTLSConcurrency 4\n"
            "AutoTLSSharedMemory 2M\nAutoTLSRetryDelay 2s 1m\nAutoTLSKeys ec:P-256 rsa:2048\n"
            "AutoTLSRenewWindow 33%\nAutoTLSChallenges http-01 tls-alpn-01\n"
            + site("ServerAlias www.a.test", "AutoTLSProfile shortlived",
                   "AutoTLSPreferredChain \"Some Root\"")
            + site(name="b.test", port=str(apache.https_port))
            + site("AutoTLSNames c.test www.c.test", name="c.test"))
    rc, out = configtest(apache, body)
    assert rc == 0, out
    assert "Syntax OK" in out


# (id, global lines, vhost lines, substrings that must all appear)
BAD_VALUES = [
    ("AutoTLS", "", ["AutoTLS maybe"], ["AutoTLS", "maybe", "on"]),
    ("AutoTLSNames", "", ["AutoTLSNames good.test bad_name!.test"], ["AutoTLSNames", "bad_name!.test"]),
    ("AutoTLSCA", "AutoTLSCA ftp://ca.test/dir\n", [], ["AutoTLSCA", "ftp://ca.test/dir", "letsencrypt"]),
    ("AutoTLSCATrust", "AutoTLSCATrust /nonexistent/roots.pem\n", [],
     ["AutoTLSCATrust", "/nonexistent/roots.pem"]),
    ("AutoTLSCAClientCertificate", "AutoTLSCAClientCertificate /nonexistent/c.pem /nonexistent/k.pem\n", [],
     ["AutoTLSCAClientCertificate", "/nonexistent/c.pem"]),
    ("AutoTLSContact", "AutoTLSContact not-an-address\n", [], ["AutoTLSContact", "not-an-address"]),
    ("AutoTLSAcceptTerms", "AutoTLSAcceptTerms perhaps\n", [], ["AutoTLSAcceptTerms", "perhaps", "on"]),
    ("AutoTLSKeys", "AutoTLSKeys ec:P-999\n", [], ["AutoTLSKeys", "ec:P-999", "ec:P-256"]),
    ("AutoTLSKeys-repeat", "AutoTLSKeys ec:P-256 ec:P-384\n", [], ["AutoTLSKeys", "ec:P-384", "one EC"]),
    ("AutoTLSChallenges", "AutoTLSChallenges http-02\n", [], ["AutoTLSChallenges", "http-02", "http-01"]),
    ("AutoTLSChallenges-repeat", "AutoTLSChallenges http-01 http-01\n", [],
     ["AutoTLSChallenges", "http-01", "once"]),
    ("AutoTLSRenewWindow", "AutoTLSRenewWindow 150%\n", [], ["AutoTLSRenewWindow", "150%"]),
    ("AutoTLSProfile", "AutoTLSProfile bad/profile\n", [], ["AutoTLSProfile", "bad/profile"]),
    ("AutoTLSEAB", "AutoTLSEAB kid-1 not*base64url\n", [], ["AutoTLSEAB", "kid-1", "base64url"]),
    ("AutoTLSEAB-alg", "AutoTLSEAB kid-1 c2VjcmV0LWhtYWMta2V5LWZyb20tdGhlLWNh HS999\n", [],
     ["AutoTLSEAB", "HS999", "HS256"]),
    ("AutoTLSPreferredChain", "AutoTLSPreferredChain \"\"\n", [], ["AutoTLSPreferredChain", "common name"]),
    ("AutoTLSDNS01Command", "AutoTLSDNS01Command /nonexistent/hook\n", [],
     ["AutoTLSDNS01Command", "/nonexistent/hook"]),
    ("AutoTLSNotifyCommand", "AutoTLSNotifyCommand {root}/conf/not-executable\n", [],
     ["AutoTLSNotifyCommand", "{root}/conf/not-executable", "executable"]),
    ("AutoTLSConcurrency", "AutoTLSConcurrency 0\n", [], ["AutoTLSConcurrency", "'0'"]),
    ("AutoTLSSharedMemory", "AutoTLSSharedMemory lots\n", [], ["AutoTLSSharedMemory", "lots"]),
    ("AutoTLSRetryDelay", "AutoTLSRetryDelay soon\n", [], ["AutoTLSRetryDelay", "soon"]),
    ("AutoTLSRetryDelay-order", "AutoTLSRetryDelay 5m 1m\n", [], ["AutoTLSRetryDelay", "MAX >= MIN"]),
]


@pytest.mark.parametrize("global_lines,vhost_lines,expect",
                         [b[1:] for b in BAD_VALUES], ids=[b[0] for b in BAD_VALUES])
def test_bad_value_fails_configtest(apache, global_lines, vhost_lines, expect):
    apache.write_file("conf/not-executable", "#!/bin/sh\n", mode=0o644)
    global_lines = global_lines.replace("{root}", str(apache.root))
    expect = [e.replace("{root}", str(apache.root)) for e in expect]
    rc, out = configtest(apache, GOOD_GLOBAL + global_lines + site(*vhost_lines))
    assert rc != 0, f"configtest passed:\n{out}"
    assert "Syntax OK" not in out
    for piece in expect:
        assert piece in out, f"{piece!r} missing from:\n{out}"
    # Apache names where: the file and the line of the directive.
    assert str(apache.conf_path) in out or "AutoTLS on at" in out, out


CONTEXT_ERRORS = [
    ("AutoTLS-global", "AutoTLS on\n", "AutoTLS belongs inside a <VirtualHost>"),
    ("AutoTLSNames-global", "AutoTLSNames a.test\n", "AutoTLSNames belongs inside a <VirtualHost>"),
]


@pytest.mark.parametrize("global_lines,expect", [c[1:] for c in CONTEXT_ERRORS],
                         ids=[c[0] for c in CONTEXT_ERRORS])
def test_vhost_only_directives(apache, global_lines, expect):
    rc, out = configtest(apache, GOOD_GLOBAL + global_lines)
    assert rc != 0 and expect in out, out


@pytest.mark.parametrize("directive", ["AutoTLSStore /tmp/x", "AutoTLSConcurrency 2",
                                       "AutoTLSSharedMemory 4M", "AutoTLSNotifyCommand /bin/true",
                                       "AutoTLSRetryDelay 1m"])
def test_global_only_directives(apache, directive):
    rc, out = configtest(apache, GOOD_GLOBAL + site(directive))
    name = directive.split()[0]
    assert rc != 0, out
    assert f"{name} applies to the whole server" in out, out


def test_terms_must_be_accepted(apache):
    rc, out = configtest(apache, f"AutoTLSCA {CA}\n" + site())
    assert rc != 0, out
    assert "AutoTLSAcceptTerms on" in out and "terms of service" in out, out
    # Saying "off" explicitly is a decision (a CA without terms): accepted here.
    rc, out = configtest(apache, f"AutoTLSCA {CA}\nAutoTLSAcceptTerms off\n" + site())
    assert rc == 0, out


def test_vhost_without_servername(apache):
    rc, out = configtest(apache, GOOD_GLOBAL + site(servername=False))
    assert rc != 0, out
    assert "no ServerName" in out and "AutoTLSNames" in out, out
    rc, out = configtest(apache, GOOD_GLOBAL + site("AutoTLSNames n.test", servername=False))
    assert rc == 0, out


def test_name_managed_twice(apache):
    body = GOOD_GLOBAL + site(name="dup.test") + site("ServerAlias dup.test", name="other.test")
    rc, out = configtest(apache, body)
    assert rc != 0, out
    assert "dup.test" in out and "other.test" in out, out


def test_same_names_on_two_ports_share_a_certificate(apache):
    body = GOOD_GLOBAL + site(name="same.test") + site(name="same.test", port=str(apache.http_port))
    rc, out = configtest(apache, body)
    assert rc == 0, out


def test_wildcard_needs_dns01_command(apache):
    rc, out = configtest(apache, GOOD_GLOBAL + site("ServerAlias *.wild.test", name="wild.test"))
    assert rc != 0, out
    assert "*.wild.test" in out, out
    assert re.search(r"dns-01|AutoTLSDNS01Command", out), out
    hook = apache.write_file("conf/hook.sh", "#!/bin/sh\nexit 0\n", mode=0o755)
    rc, out = configtest(apache, GOOD_GLOBAL + site(
        "ServerAlias *.wild.test", "AutoTLSChallenges dns-01", f"AutoTLSDNS01Command {hook}",
        name="wild.test"))
    assert rc == 0, out


def test_autotls_without_mod_ssl(apache):
    import subprocess
    from apache_env import APACHE2
    text = apache.config_text(GOOD_GLOBAL + site())
    text = "\n".join(line for line in text.splitlines() if "mod_ssl.so" not in line
                     and "SSLSessionCache" not in line)
    apache.conf_path.write_text(text)
    r = subprocess.run([APACHE2, "-t", "-d", str(apache.root), "-f", str(apache.conf_path)],
                       capture_output=True, text=True, timeout=60, env={**os.environ, **apache.env})
    assert r.returncode != 0
    assert "mod_ssl is not loaded" in r.stdout + r.stderr
