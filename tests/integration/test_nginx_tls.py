"""The TLS side of ngx_http_autotls_module before any certificate exists (the
CA is unreachable): ALPN on managed servers behaves as nginx's own (h2 only
where the listen socket has http2, no overlap is a fatal alert), acme-tls/1
without a pending challenge fails the handshake, RSA-only clients get an RSA
placeholder where RSA is configured, and servers the module does not manage
keep their own certificate and ALPN.
"""

import ssl

import pytest

from nginx_env import (LOOPBACK, PLACEHOLDER_ISSUER, client_context, issuer_cn, nginx,  # noqa: F401
                       peer_cert, server, status_server)
from procs import free_ports


def body(n, *servers):
    return (f"    autotls_ca https://{LOOPBACK}:9/dir;\n    autotls_accept_terms on;\n"
            f"    autotls_store {n.store};\n" + status_server(n) + "".join(servers))


def alpn_selected(port, name, protocols, tls12=False):
    ctx = client_context(alpn=protocols, tls12_ciphers="ECDHE+AESGCM" if tls12 else None)
    import socket
    with socket.create_connection((LOOPBACK, port), 5) as sock:
        with ctx.wrap_socket(sock, server_hostname=name) as tls:
            return tls.selected_alpn_protocol()


def test_alpn_like_nginx(nginx):
    h2_port = free_ports(1)[0]
    nginx.start(body(nginx, server("one.test", nginx.https_port),
                     "    server {\n"
                     f"        listen {LOOPBACK}:{h2_port} ssl http2;\n"
                     "        server_name two.test;\n        autotls on;\n    }\n"))
    assert alpn_selected(nginx.https_port, "one.test", ["h2", "http/1.1"]) == "http/1.1"
    assert alpn_selected(h2_port, "two.test", ["h2", "http/1.1"]) == "h2"
    assert alpn_selected(h2_port, "two.test", ["http/1.1"]) == "http/1.1"
    assert alpn_selected(nginx.https_port, "one.test", ["h2", "http/1.1"], tls12=True) == "http/1.1"
    # No protocol in common: nginx's own answer, a fatal alert.
    with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
        alpn_selected(nginx.https_port, "one.test", ["spdy/3"])
    # Without ALPN at all, the handshake is fine.
    assert issuer_cn(peer_cert(nginx.https_port, "one.test")) == PLACEHOLDER_ISSUER


def test_acme_tls_without_a_challenge_fails_the_handshake(nginx):
    nginx.start(body(nginx, server("one.test", nginx.https_port)))
    for tls12 in (False, True):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            alpn_selected(nginx.https_port, "one.test", ["acme-tls/1"], tls12=tls12)
    nginx.wait_log(r'tls-alpn-01 connection for "one\.test", but no challenge is pending', 5)


def test_rsa_placeholder_where_rsa_is_configured(nginx):
    nginx.start(body(nginx, server("dual.test", nginx.https_port, "autotls_keys ec:P-256 rsa:2048;"),
                     server("ec.test", nginx.https_port)))
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    c = peer_cert(nginx.https_port, "dual.test", tls12_ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    assert isinstance(c.public_key(), rsa.RSAPublicKey) and issuer_cn(c) == PLACEHOLDER_ISSUER
    c = peer_cert(nginx.https_port, "dual.test", tls12_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    assert isinstance(c.public_key(), ec.EllipticCurvePublicKey)
    # An RSA-only client reaches the 503 page rather than a failed handshake.
    r = nginx.https("dual.test")
    assert r.status == 503
    # Only EC configured: no RSA key is made for it.
    with pytest.raises(ssl.SSLError):
        peer_cert(nginx.https_port, "ec.test", tls12_ciphers="ECDHE-RSA-AES128-GCM-SHA256")


def test_unmanaged_server_keeps_its_certificate_and_alpn(nginx, local_ca):
    cert, key = local_ca.issue("plain-nginx", names=("plain.test",))
    nginx.start(body(nginx, server("one.test", nginx.https_port),
                     "    server {\n"
                     f"        listen {LOOPBACK}:{nginx.https_port} ssl;\n"
                     "        server_name plain.test;\n"
                     f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
                     "    }\n"))
    c = peer_cert(nginx.https_port, "plain.test", root_pem=local_ca.cert_pem)
    assert issuer_cn(c) != PLACEHOLDER_ISSUER
    assert alpn_selected(nginx.https_port, "plain.test", ["h2", "http/1.1"]) == "http/1.1"
    r = nginx.https("plain.test", root_pem=local_ca.cert_pem)
    assert r.status == 200 and "hello from nginx" in r.text
    # acme-tls/1 for an unmanaged name is nginx's business: no overlap.
    with pytest.raises(ssl.SSLError):
        alpn_selected(nginx.https_port, "plain.test", ["acme-tls/1"])


def test_unmanaged_default_server_routes_acme_to_the_managed_one(nginx, local_ca):
    """The address's default server is not managed: the ClientHello
    callback still runs there (before SNI picks the managed server), and the
    managed server's placeholder is served for its name."""
    cert, key = local_ca.issue("default-nginx", names=("default.test",))
    nginx.start(body(nginx,
                     "    server {\n"
                     f"        listen {LOOPBACK}:{nginx.https_port} ssl default_server;\n"
                     "        server_name default.test;\n"
                     f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
                     "    }\n",
                     server("one.test", nginx.https_port)))
    assert issuer_cn(peer_cert(nginx.https_port, "one.test")) == PLACEHOLDER_ISSUER
    assert issuer_cn(peer_cert(nginx.https_port, "default.test")) != PLACEHOLDER_ISSUER
    with pytest.raises((ssl.SSLError, ConnectionError)):
        alpn_selected(nginx.https_port, "one.test", ["acme-tls/1"], tls12=True)
    nginx.wait_log(r'tls-alpn-01 connection for "one\.test", but no challenge is pending', 5)


def test_own_certificate_before_autotls_on_is_served_meanwhile(nginx, local_ca):
    """An ssl_certificate written before "autotls on" is the administrator's:
    served (without the 503) until the first certificate is live."""
    cert, key = local_ca.issue("own-nginx", names=("own.test",))
    nginx.start(body(nginx, server("own.test", nginx.https_port, f"ssl_certificate {cert};",
                                   f"ssl_certificate_key {key};")))
    r = nginx.https("own.test", root_pem=local_ca.cert_pem)
    assert r.status == 200 and "hello from nginx" in r.text
    assert issuer_cn(r.cert) != PLACEHOLDER_ISSUER
