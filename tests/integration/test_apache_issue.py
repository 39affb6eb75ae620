"""First certificates through mod_autotls: http-01 and tls-alpn-01, a vhost
with aliases, ten vhosts at once, and ECDSA + RSA side by side.

Each test runs the real apache2 against its own Pebble; clients connect to
127.0.0.1 with the name as SNI and verify the chain against Pebble's root.
"""

import pwd
import re

import pytest

from apache_env import (LOOPBACK, cert_names, issuer_cn, make_stack, peer_cert,  # noqa: F401
                        s_client_cert, status_vhost, vhost)
from cryptography.hazmat.primitives.asymmetric import ec, rsa

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
    www = pwd.getpwnam("www-data")
    for path in [a.store, *a.store.rglob("*")]:
        st_ = path.stat()
        assert (st_.st_uid, st_.st_gid) == (www.pw_uid, www.pw_gid), path
        if path.is_dir():
            assert st_.st_mode & 0o077 == 0, f"{path} is readable by others"
    assert a.store.stat().st_mode & 0o777 == 0o700


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
    names = {"al.test", "www.al.test", "alias.al.test"}
    st = make_stack(lambda a: status_vhost(a) + vhost(
        "al.test", a.https_port, aliases=("www.al.test", "alias.al.test")))
    a = st.apache
    cert = a.wait_for_cert("al.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert cert_names(cert) == names
    # Every alias gets the same certificate and verifies for its own name.
    for name in names:
        c = peer_cert(a.https_port, name, root_pem=st.root_pem)
        assert c.serial_number == cert.serial_number
        assert a.https(name, root_pem=st.root_pem).status == 200


def test_ten_vhosts_issued_concurrently(make_stack):
    names = [f"v{i}.test" for i in range(10)]
    st = make_stack(lambda a: "AutoTLSConcurrency 10\n" + status_vhost(a)
                    + "".join(vhost(n, a.https_port) for n in names))
    a = st.apache
    serials = set()
    for name in names:
        cert = a.wait_for_cert(name, ISSUE_TIMEOUT, root_pem=st.root_pem)
        assert cert_names(cert) == {name}
        serials.add(cert.serial_number)
    assert len(serials) == 10
    # All ten orders were placed before the first certificate came back.
    log = a.error_log()
    first_done = re.search(r"served now", log)
    assert first_done, log[-3000:]
    ordering = re.findall(r"\(v\d\.test\): ordering", log[:first_done.start()])
    assert len(set(ordering)) >= 2, f"orders ran one after another:\n{log[-4000:]}"
    assert len(ordering) == 10, f"only {len(ordering)} orders before the first issuance"


def dual_keys(make_stack, challenges):
    st = make_stack(lambda a: status_vhost(a) + vhost("dual.test", a.https_port,
                                                      "AutoTLSKeys ec:P-256 rsa:2048",
                                                      f"AutoTLSChallenges {challenges}"))
    a = st.apache

    def both_live():
        return {e["key_type"]: e["state"] for e in a.cert_status("dual.test")} == \
            {"ec:P-256": "valid", "rsa:2048": "valid"}
    from procs import wait_until
    wait_until(both_live, ISSUE_TIMEOUT, "an EC and an RSA certificate for dual.test", interval=0.3)

    # TLS 1.2 clients that only speak ECDSA, or only RSA, suites.
    ec_cert = peer_cert(a.https_port, "dual.test", root_pem=st.root_pem,
                        tls12_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    rsa_cert = peer_cert(a.https_port, "dual.test", root_pem=st.root_pem,
                         tls12_ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    assert isinstance(ec_cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(rsa_cert.public_key(), rsa.RSAPublicKey)
    assert issuer_cn(ec_cert) != "autotls placeholder" != issuer_cn(rsa_cert)
    assert cert_names(ec_cert) == cert_names(rsa_cert) == {"dual.test"}

    # TLS 1.3 clients that only accept ECDSA, or only RSA-PSS, signatures.
    c13_ec, _ = s_client_cert(a.https_port, "dual.test", "-tls1_3", "-sigalgs",
                              "ecdsa_secp256r1_sha256")
    c13_rsa, _ = s_client_cert(a.https_port, "dual.test", "-tls1_3", "-sigalgs",
                               "rsa_pss_rsae_sha256")
    assert c13_ec.serial_number == ec_cert.serial_number
    assert c13_rsa.serial_number == rsa_cert.serial_number


def test_dual_keys_each_client_gets_its_own(make_stack):
    dual_keys(make_stack, "http-01")


def test_dual_keys_with_tls_alpn01(make_stack):
    dual_keys(make_stack, "tls-alpn-01 http-01")
