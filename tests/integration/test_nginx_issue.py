"""First certificates through ngx_http_autotls_module: http-01 and
tls-alpn-01, a server with several names, ten server blocks at once, ECDSA
and RSA side by side, EAB - all served without a reload.

Each test runs the real nginx against its own Pebble; clients connect to
127.0.0.1 with the name as SNI and verify the chain against Pebble's root.
"""

import re
import shutil

from cryptography.hazmat.primitives.asymmetric import rsa

from nginx_env import (LOOPBACK, cert_names, issuer_cn, make_stack, peer_cert,  # noqa: F401
                       s_client, server, status_server)
from procs import wait_until
from server_checks import (check_each_client_gets_its_own_key, check_each_name_gets_its_own,
                           check_names_share_one_certificate, wait_for_both_keys)

ISSUE_TIMEOUT = 90


def test_http01_first_certificate(make_stack):
    """http-01 is answered before a server-level "return 301" and "deny all"
    on the port-80 server of the same name; served without a reload."""
    def body(n):
        return (status_server(n)
                + "    server {\n"
                  f"        listen {LOOPBACK}:{n.http_port};\n"
                  "        server_name h1.test;\n"
                  "        return 301 https://h1.test$request_uri;\n"
                  "        location / { deny all; }\n"
                  "    }\n"
                + server("h1.test", n.https_port, "autotls_challenges http-01;"))
    st = make_stack(body)
    n = st.nginx
    before = (n.pid, n.workers())
    cert = n.wait_for_cert("h1.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert cert_names(cert) == {"h1.test"}
    r = n.https("h1.test", root_pem=st.root_pem)
    assert r.status == 200 and "hello from nginx" in r.text
    # The port-80 server itself still redirects everything else.
    assert n.http("h1.test", "/page").status == 301
    n.wait_log(r"answering the http-01 challenge for h1\.test", 10)
    [entry] = n.cert_status("h1.test")
    assert entry["state"] == "valid" and entry["challenge"] == "http-01"
    assert (n.pid, n.workers()) == before, "the certificate must be served without a reload"
    # Every worker serves it, not only the one that renews.
    serials = {peer_cert(n.https_port, "h1.test", root_pem=st.root_pem).serial_number
               for _ in range(20)}
    assert serials == {cert.serial_number}


def test_tlsalpn01_first_certificate(make_stack):
    """tls-alpn-01 with no other configuration: acme-tls/1 is offered by
    the module on the managed server's own SSL listener."""
    st = make_stack(lambda n: status_server(n) + server("alpn.test", n.https_port,
                                                        "autotls_challenges tls-alpn-01;"))
    n = st.nginx
    cert = n.wait_for_cert("alpn.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert cert_names(cert) == {"alpn.test"}
    n.wait_log(r"answering the tls-alpn-01 challenge for alpn\.test", 10)
    [entry] = n.cert_status("alpn.test")
    assert entry["challenge"] == "tls-alpn-01"
    assert n.https("alpn.test", root_pem=st.root_pem).status == 200
    # Ordinary ALPN is nginx's: http/1.1 is selected, acme-tls/1 only when asked.
    seen = s_client(n.https_port, "alpn.test", "-alpn", "http/1.1")
    assert "ALPN protocol: http/1.1" in seen.output
    assert seen.cert.serial_number == cert.serial_number


def test_tlsalpn01_on_tls12(make_stack):
    """TLS 1.2 selects ALPN after the certificate callback: the ClientHello
    callback must still route acme-tls/1 to the challenge certificate."""
    st = make_stack(lambda n: status_server(n) + server(
        "alpn12.test", n.https_port, "autotls_challenges tls-alpn-01;",
        "ssl_protocols TLSv1.2;"))
    n = st.nginx
    cert = n.wait_for_cert("alpn12.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert cert_names(cert) == {"alpn12.test"}
    n.wait_log(r"answering the tls-alpn-01 challenge for alpn12\.test", 10)


def test_server_with_several_names(make_stack):
    names = ["al.test", "www.al.test", "alias.al.test"]
    st = make_stack(lambda n: status_server(n) + server(
        "al.test", n.https_port, aliases=("www.al.test", "alias.al.test")))
    check_names_share_one_certificate(st.nginx, names, st.root_pem)


def test_ten_servers_issued_concurrently(make_stack):
    names = [f"v{i}.test" for i in range(10)]
    st = make_stack(lambda n: "    autotls_concurrency 10;\n" + status_server(n)
                    + "".join(server(name, n.https_port) for name in names))
    check_each_name_gets_its_own(st.nginx, names, st.root_pem)


def test_dual_keys_each_client_gets_its_own(make_stack):
    st = make_stack(lambda n: status_server(n) + server("dual.test", n.https_port,
                                                        "autotls_keys ec:P-256 rsa:2048;"))
    wait_for_both_keys(st.nginx, "dual.test", ISSUE_TIMEOUT)
    check_each_client_gets_its_own_key(st.nginx, "dual.test", st.root_pem)


def test_rsa_only_replaces_the_ec_placeholder(make_stack):
    """A server with only an RSA certificate must not keep offering the EC
    placeholder to clients that prefer ECDSA."""
    st = make_stack(lambda n: status_server(n) + server("rsa.test", n.https_port,
                                                        "autotls_keys rsa:2048;"))
    n = st.nginx
    cert = n.wait_for_cert("rsa.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    c13 = s_client(n.https_port, "rsa.test", "-tls1_3").cert
    assert c13.serial_number == cert.serial_number


EAB_KID = "kid-nginx"
EAB_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


def test_eab_account(make_stack):
    st = make_stack(lambda n: f"    autotls_eab {EAB_KID} {EAB_KEY};\n" + status_server(n)
                    + server("eab.test", n.https_port),
                    eab_keys={EAB_KID: EAB_KEY}, require_eab=True)
    n = st.nginx
    cert = n.wait_for_cert("eab.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert cert_names(cert) == {"eab.test"}


def test_without_eab_the_ca_refuses_and_status_says_why(make_stack):
    st = make_stack(lambda n: status_server(n) + server("noeab.test", n.https_port),
                    eab_keys={EAB_KID: EAB_KEY}, require_eab=True)
    n = st.nginx

    def failed():
        entries = n.cert_status("noeab.test")
        return entries and entries[0]["last_error"] and entries[0]
    entry = wait_until(failed, ISSUE_TIMEOUT, "the failure to be reported", interval=0.3)
    assert entry["state"] in ("error", "missing", "pending")
    assert re.search(r"external account|EAB|autotls_eab", entry["last_error"]["message"], re.I), entry
    assert issuer_cn(n.cert("noeab.test")) == "autotls placeholder"


def test_ca_client_certificate(make_stack, local_ca):
    """A CA that demands a TLS client certificate (the proxy in front of
    Pebble refuses handshakes without one): autotls_ca_client_certificate
    sends it on every request; the key is private to the worker's user."""
    cert, key = local_ca.issue("nginx-acme-client", names=("nginx-acme-client.test",),
                               client=True)

    def body(n):
        c = n.copy_in(cert, "acme-client.pem")
        k = n.copy_in(key, "acme-client.key", mode=0o600)
        shutil.chown(k, "www-data", "www-data")
        return (f"    autotls_ca_client_certificate {c} {k};\n" + status_server(n)
                + server("client.test", n.https_port, "autotls_challenges http-01;"))
    st = make_stack(body, proxy={"client_ca_file": local_ca.cert_path})
    st.nginx.wait_for_cert("client.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert st.proxy.requests("finalize")
    assert set(st.proxy.client_subjects) == {"nginx-acme-client.test"}
    assert st.proxy.handshakes_refused == 0
