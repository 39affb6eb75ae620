"""The tool's own challenge responder, probed while an order waits: it
answers only what the CA may ask, refuses the rest, and one slow client
does not hold up another.

The ACME proxy holds the challenge response back, so the challenge stays
published (and the responder up) while the test probes it.
"""

import socket
import ssl

from cryptography import x509

from procs import wait_until
from tool_env import make_tool, tool  # noqa: F401

ACME_IDENTIFIER_OID = "1.3.6.1.5.5.7.1.31"


def _http(port, request, timeout=15):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def _status(response):
    return int(response.split(b" ", 2)[1])


def _tls(port, sni, alpn, timeout=15):
    """The peer certificate of a handshake, or the SSLError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=sni) as s:
                return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)), \
                    s.selected_alpn_protocol()
        except (ssl.SSLError, ConnectionError) as e:
            return e, None


def test_responder_answers_only_challenges(make_tool, pebble, start_acme_proxy, tmp_path):
    proxy = start_acme_proxy(pebble)
    tool = make_tool(pebble, ca_url=proxy.directory_url)
    proxy.add_fault("hang", kind="challenge", seconds=120)
    args = tool.issue_args(["probe.test"], None,
                           extra=["--challenge", "tls-alpn-01", "--challenge", "http-01"])
    proc = tool.popen(*args, log_path=tmp_path / "tool.log")
    try:
        proxy.wait_for_requests("challenge", timeout=60)
        hp, tp = pebble.http_port, pebble.tls_port

        # An idle client that never finishes its request blocks nobody.
        idle = socket.create_connection(("127.0.0.1", hp), timeout=5)
        idle.sendall(b"GET /.well-known/acme-challenge/")

        r = _http(hp, b"GET /.well-known/acme-challenge/unknownToken HTTP/1.1\r\nHost: probe.test\r\n\r\n")
        assert _status(r) == 404
        assert b"Connection: close" in r
        r = _http(hp, b"GET / HTTP/1.1\r\nHost: probe.test\r\n\r\n")
        assert _status(r) == 404
        r = _http(hp, b"GET /.well-known/acme-challenge/..%2f..%2fetc HTTP/1.1\r\n\r\n")
        assert _status(r) == 404
        r = _http(hp, b"POST /.well-known/acme-challenge/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert _status(r) == 405
        r = _http(hp, b"nonsense\r\n\r\n")
        assert _status(r) == 400
        r = _http(hp, b"GET / HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 20000 + b"\r\n\r\n")
        assert _status(r) == 431
        idle.close()

        # TLS: the challenge certificate, only for acme-tls/1 and the right name.
        cert, proto = _tls(tp, "probe.test", ["acme-tls/1"])
        assert isinstance(cert, x509.Certificate), cert
        assert proto == "acme-tls/1"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["probe.test"]
        ext = [e for e in cert.extensions if e.oid.dotted_string == ACME_IDENTIFIER_OID]
        assert len(ext) == 1 and ext[0].critical

        err, _ = _tls(tp, "probe.test", ["http/1.1"])
        assert isinstance(err, Exception), "a handshake without acme-tls/1 must fail"
        err, _ = _tls(tp, "probe.test", None)
        assert isinstance(err, Exception), "a handshake without ALPN must fail"
        err, _ = _tls(tp, "other.test", ["acme-tls/1"])
        assert isinstance(err, Exception), "a name without a pending challenge must fail"
        assert proc.poll() is None, "the tool must survive all of this"
    finally:
        proc.kill()
        proc.wait(10)


def test_responder_stops_with_the_tool(tool, pebble):
    from procs import port_open
    tool.issue(["gone.test"], None)
    # The run is over: nothing listens any more.
    wait_until(lambda: not port_open(pebble.http_port) and not port_open(pebble.tls_port), 5,
               "the responder's ports to close")
