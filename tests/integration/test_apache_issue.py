"""First certificates through mod_autotls: http-01 and tls-alpn-01, a vhost
with aliases, ten vhosts at once, and ECDSA + RSA side by side.

Each test runs the real apache2 against its own Pebble; clients connect to
127.0.0.1 with the name as SNI and verify the chain against Pebble's root.
"""

import re

from apache_env import LOOPBACK, cert_names, make_stack, status_vhost, vhost  # noqa: F401
from server_checks import (check_each_client_gets_its_own_key, check_each_name_gets_its_own,
                           check_names_share_one_certificate, check_store_private,
                           wait_for_both_keys)

ISSUE_TIMEOUT = 90


def test_http01_first_certificate(make_stack):
    """http-01 is answered before Redirect, RewriteRule and Require."""
    def body(a):
        return (status_vhost(a)
                + f"<VirtualHost {LOOPBACK}:{a.http_port}>\n"
                  "    ServerName h1.test\n"
                  "    Redirect permanent / https://h1.test/\n"
                  "    RewriteEngine on\n"
                  "    RewriteRule ^ - [F]\n"
                  "    <Location />\n        Require all denied\n    </Location>\n"
                  "</VirtualHost>\n"
                + vhost("h1.test", a.https_port, "AutoTLSChallenges http-01"))
    st = make_stack(body)
    a = st.apache
    pids = (a.pid, a.children())
    cert = a.wait_for_cert("h1.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert cert_names(cert) == {"h1.test"}
    r = a.https("h1.test", root_pem=st.root_pem)
    assert r.status == 200 and "hello from apache" in r.text
    # Everything else on the port-80 vhost still meets the RewriteRule.
    assert a.http("h1.test", "/page").status == 403
    assert re.search(r"answering the http-01 challenge for h1\.test", a.error_log())
    [entry] = a.cert_status("h1.test")
    assert entry["state"] == "valid" and entry["challenge"] == "http-01"
    assert (a.pid, a.children()) == pids, "the certificate must be served without a restart"
    # The parent (root) gave the store to the server's User, who renews.
    check_store_private(a.store)


def test_tlsalpn01_first_certificate(make_stack):
    """tls-alpn-01 without any Protocols line: acme-tls/1 is offered by itself."""
    st = make_stack(lambda a: status_vhost(a) + vhost("alpn.test", a.https_port,
                                                      "AutoTLSChallenges tls-alpn-01"))
    a = st.apache
    cert = a.wait_for_cert("alpn.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert cert_names(cert) == {"alpn.test"}
    assert "Protocols" not in a.conf_path.read_text()
    assert re.search(r"answering the tls-alpn-01 challenge for alpn\.test", a.error_log())
    [entry] = a.cert_status("alpn.test")
    assert entry["challenge"] == "tls-alpn-01"
    r = a.https("alpn.test", root_pem=st.root_pem)
    assert r.status == 200


def test_vhost_with_aliases(make_stack):
    names = ["al.test", "www.al.test", "alias.al.test"]
    st = make_stack(lambda a: status_vhost(a) + vhost(
        "al.test", a.https_port, aliases=("www.al.test", "alias.al.test")))
    check_names_share_one_certificate(st.apache, names, st.root_pem)


def test_ten_vhosts_issued_concurrently(make_stack):
    names = [f"v{i}.test" for i in range(10)]
    st = make_stack(lambda a: "AutoTLSConcurrency 10\n" + status_vhost(a)
                    + "".join(vhost(n, a.https_port) for n in names))
    check_each_name_gets_its_own(st.apache, names, st.root_pem)


def dual_keys(make_stack, challenges):
    st = make_stack(lambda a: status_vhost(a) + vhost("dual.test", a.https_port,
                                                      "AutoTLSKeys ec:P-256 rsa:2048",
                                                      f"AutoTLSChallenges {challenges}"))
    wait_for_both_keys(st.apache, "dual.test", ISSUE_TIMEOUT)
    check_each_client_gets_its_own_key(st.apache, "dual.test", st.root_pem)


def test_dual_keys_each_client_gets_its_own(make_stack):
    dual_keys(make_stack, "http-01")


def test_dual_keys_with_tls_alpn01(make_stack):
    dual_keys(make_stack, "tls-alpn-01 http-01")
