"""autotls issue: certificates from Pebble with the tool answering the
challenges itself (http-01, tls-alpn-01, dns-01 through a hook), several
names, an IP identifier, several key types, EAB, alternate chains, and a CA
that rejects half of the nonces. Every certificate is checked with openssl
against Pebble's root and for exactly the names asked for.
"""

import os
import re
import socket
import stat
import threading
import urllib.parse

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pebble import split_pem, verify_chain
from procs import free_port
from tool_env import EAB_KEY, EAB_KID, make_tool, one_line_error, tool  # noqa: F401


def _issued_line(result, name):
    assert re.search(rf"^issued {re.escape(name)} \(", result.stdout, re.M), result.stdout


def test_http01_one_name(tool, pebble):
    r = tool.issue(["one.test"], "http-01")
    _issued_line(r, "one.test")
    verify_chain(tool.chain("one.test"), pebble.root(), ["one.test"])
    assert tool.meta("one.test")["challenge"] == "http-01"
    assert r.stderr == "", "without --verbose nothing goes to stderr"

    # Private material is private.
    key = tool.cert_dir("one.test") / "key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    tj = tool.store / "tool.json"
    assert stat.S_IMODE(tj.stat().st_mode) == 0o600
    [site] = tool.tool_json()["sites"]
    assert site["names"] == ["one.test"] and site["ca"] == tool.ca_url
    assert site["http_port"] == pebble.http_port

    [entry] = tool.status()["certificates"]
    assert entry["names"] == ["one.test"] and entry["state"] == "valid"
    assert entry["challenge"] == "http-01"


def test_issue_again_keeps_a_valid_certificate(tool, pebble):
    tool.issue(["keep.test"])
    serial = tool.serial("keep.test")
    r = tool.issue(["keep.test"])
    assert tool.serial("keep.test") == serial
    assert re.search(r"^unchanged keep\.test ", r.stdout, re.M), r.stdout


def test_tlsalpn01_one_name(tool, pebble):
    r = tool.issue(["alpn.test"], "tls-alpn-01", extra=["--verbose"])
    verify_chain(tool.chain("alpn.test"), pebble.root(), ["alpn.test"])
    assert tool.meta("alpn.test")["challenge"] == "tls-alpn-01"
    assert "tls-alpn-01 handshake completed" in r.stderr


def test_three_names_in_one_certificate(tool, pebble):
    names = ["multi.test", "www.multi.test", "api.multi.test"]
    tool.issue(names, "http-01")
    verify_chain(tool.chain("multi.test"), pebble.root(), names)
    assert len(tool.cert_dirs()) == 1


def test_wildcard_via_dns01(tool, pebble, dns01_hook):
    """The wildcard is validated by dns-01 (the only way), its base name by
    http-01 (the ports and the hook are all given: every type is allowed)."""
    names = ["*.wild.test", "wild.test"]
    tool.issue(names, None, extra=["--dns01-command", dns01_hook.path])
    verify_chain(tool.chain("*.wild.test"), pebble.root(), names)
    calls = dns01_hook.calls()
    setups = {(c[1], c[2]) for c in calls if c[0] == "setup"}
    teardowns = {(c[1], c[2]) for c in calls if c[0] == "teardown"}
    assert {name for name, _ in setups} == {"_acme-challenge.wild.test"}
    # Every record set up is torn down again, with the same value.
    assert setups == teardowns


def test_wildcard_only_dns01(tool, pebble, dns01_hook):
    tool.issue(["*.only.test"], "dns-01", extra=["--dns01-command", dns01_hook.path])
    verify_chain(tool.chain("*.only.test"), pebble.root(), ["*.only.test"])
    assert tool.meta("*.only.test")["challenge"] == "dns-01"


def test_ip_identifier_http01(tool, pebble):
    tool.issue(["127.0.0.1"], "http-01")
    verify_chain(tool.chain("127.0.0.1"), pebble.root(), ["127.0.0.1"])


def test_ip_identifier_tlsalpn01(tool, pebble):
    """RFC 8738: the validator names the address as 1.0.0.127.in-addr.arpa in SNI."""
    tool.issue(["127.0.0.1"], "tls-alpn-01")
    verify_chain(tool.chain("127.0.0.1"), pebble.root(), ["127.0.0.1"])


def test_one_certificate_per_key_type(tool, pebble):
    tool.issue(["keys.test"], extra=["--key", "ec:P-384", "--key", "rsa:2048"])
    assert len(tool.cert_dirs()) == 2
    ecc = verify_chain(tool.chain("keys.test", "ec:P-384"), pebble.root(), ["keys.test"])
    rsac = verify_chain(tool.chain("keys.test", "rsa:2048"), pebble.root(), ["keys.test"])
    assert isinstance(ecc.public_key(), ec.EllipticCurvePublicKey)
    assert ecc.public_key().curve.name == "secp384r1"
    assert isinstance(rsac.public_key(), rsa.RSAPublicKey)
    assert rsac.public_key().key_size == 2048


def test_external_account_binding(make_tool, start_pebble):
    pebble = start_pebble(require_eab=True, eab_keys={EAB_KID: EAB_KEY})
    tool = make_tool(pebble)
    tool.issue(["eab.test"], extra=["--eab", f"{EAB_KID}:{EAB_KEY}"])
    verify_chain(tool.chain("eab.test"), pebble.root(), ["eab.test"])
    # The EAB key is remembered for renew, in a file only the owner reads.
    [site] = tool.tool_json()["sites"]
    assert site["eab_kid"] == EAB_KID and site["eab_key"] == EAB_KEY
    assert stat.S_IMODE((tool.store / "tool.json").stat().st_mode) == 0o600
    tool.renew()
    # No key material in the status output.
    r = tool.run("status", "--store", tool.store, "--json")
    assert EAB_KEY not in r.stdout and "PRIVATE KEY" not in r.stdout


def _cn(cert):
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_preferred_alternate_chain(make_tool, start_pebble):
    from cryptography import x509
    pebble = start_pebble(alternate_roots=2)
    roots = pebble.roots()
    assert len(roots) == 3
    wanted = x509.load_pem_x509_certificate(roots[1].encode())
    tool = make_tool(pebble)
    tool.issue(["chain.test"], extra=["--preferred-chain", _cn(wanted)])
    chain = tool.chain("chain.test")
    verify_chain(chain, roots[1], ["chain.test"])
    top = x509.load_pem_x509_certificate(split_pem(chain)[-1].encode())
    assert top.issuer == wanted.subject

    # Without a preference the default chain (root 0) is kept.
    other = make_tool(pebble)
    other.issue(["default-chain.test"])
    top0 = x509.load_pem_x509_certificate(split_pem(other.chain("default-chain.test"))[-1].encode())
    assert top0.issuer == x509.load_pem_x509_certificate(roots[0].encode()).subject


def test_nonce_rejections_are_retried(make_tool, start_pebble, start_acme_proxy):
    pebble = start_pebble(nonce_reject=50)
    proxy = start_acme_proxy(pebble)          # only to count the rejections
    tool = make_tool(pebble, ca_url=proxy.directory_url)
    tool.issue(["nonce.test", "www.nonce.test"])
    verify_chain(tool.chain("nonce.test"), pebble.root(), ["nonce.test", "www.nonce.test"])
    rejected = [r for r in proxy.requests(method="POST") if r.status == 400]
    assert rejected, "Pebble rejected no nonce: the test proves nothing"


def test_both_ports_prefer_the_first_challenge(tool, pebble):
    """--challenge given twice is a preference order; both responders run."""
    tool.issue(["pref.test"], None, extra=["--challenge", "tls-alpn-01", "--challenge", "http-01"])
    assert tool.meta("pref.test")["challenge"] == "tls-alpn-01"
    verify_chain(tool.chain("pref.test"), pebble.root(), ["pref.test"])


def test_issue_replaces_overlapping_parameters(tool, pebble):
    tool.issue(["a.over.test"])
    tool.issue(["b.over.test"])
    tool.issue(["a.over.test", "c.over.test"])
    sites = tool.tool_json()["sites"]
    assert sorted(s["names"][0] for s in sites) == ["a.over.test", "b.over.test"]
    assert [s["names"] for s in sites if s["names"][0] == "a.over.test"] == [
        ["a.over.test", "c.over.test"]]
    verify_chain(tool.chain("c.over.test"), pebble.root(), ["a.over.test", "c.over.test"])


def test_store_is_private(tool, pebble):
    tool.issue(["private.test"])
    assert stat.S_IMODE(tool.store.stat().st_mode) == 0o700
    for root, dirs, files in os.walk(tool.store):
        for f in files:
            if f.endswith("key.pem"):
                assert stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) == 0o600, f


def test_profile_is_asked_for(make_tool, pebble, start_acme_proxy):
    proxy = start_acme_proxy(pebble)          # Pebble 2.4 has no profiles; the proxy has
    tool = make_tool(pebble, ca_url=proxy.directory_url)
    tool.issue(["profile.test"], extra=["--profile", "shortlived"])
    assert [r.profile for r in proxy.requests("newOrder")] == ["shortlived"]
    verify_chain(tool.chain("profile.test"), pebble.root(), ["profile.test"])

    r = tool.run(*tool.issue_args(["noprofile.test"], extra=["--profile", "premium"]))
    assert r.returncode == 1
    line = one_line_error(r)
    assert "premium" in line, line


def test_renew_window_is_used(tool, pebble):
    import datetime
    tool.issue(["window.test"], extra=["--renew-window", "50%"])
    [entry] = tool.status()["certificates"]
    leaf = tool.leaf("window.test")
    middle = leaf.not_valid_before + (leaf.not_valid_after - leaf.not_valid_before) / 2
    renew_at = datetime.datetime.strptime(entry["renew_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs((renew_at - middle).total_seconds()) < 120, (entry["renew_at"], middle)
    assert tool.tool_json()["sites"][0]["renew_window"] == "50%"


def test_ca_client_certificate(make_tool, pebble, start_acme_proxy, local_ca):
    """A CA that demands a TLS client certificate (EJBCA can): the proxy
    refuses handshakes without one issued by the test CA. Without
    --ca-client-cert the tool fails with one line naming the CA; with it,
    every request carries the certificate and the order completes."""
    proxy = start_acme_proxy(pebble, client_ca_file=local_ca.cert_path)
    cert, key = local_ca.issue("autotls-client", names=("autotls-client.test",), client=True)
    bare = make_tool(pebble, ca_url=proxy.directory_url)
    r = bare.run(*bare.issue_args(["noclient.test"]))
    assert r.returncode == 1
    line = one_line_error(r)
    assert proxy.origin in line and "client certificate" in line, line
    assert proxy.handshakes_refused >= 1
    assert not proxy.requests(), "a request got through without a client certificate"

    tool = make_tool(pebble, ca_url=proxy.directory_url)
    tool.issue(["client.test"], extra=["--ca-client-cert", cert, key])
    verify_chain(tool.chain("client.test"), pebble.root(), ["client.test"])
    assert proxy.requests("newOrder") and proxy.requests("finalize")
    assert set(proxy.client_subjects) == {"autotls-client.test"}
    # Remembered for renewal like the other CA settings.
    site = [s for s in tool.tool_json()["sites"] if s["names"] == ["client.test"]][0]
    assert site["ca_client_cert"] == str(cert)
    before = len(proxy.client_subjects)
    tool.renew("client.test")
    assert len(proxy.client_subjects) > before



class _ConnectProxy:
    """A minimal HTTP CONNECT proxy on 127.0.0.1 that records each tunnel's
    target and pipes the bytes both ways (each tunnel ends when either side
    closes, or after 60 s of silence)."""

    def __init__(self):
        self.targets = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.5)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _tunnel(self, conn):
        conn.settimeout(60)
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = conn.recv(1024)
                if not chunk:
                    return
                head += chunk
            words = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(words) < 2 or words[0] != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = words[1].rsplit(":", 1)
            self.targets.append(words[1])
            with socket.create_connection((host, int(port)), timeout=10) as up:
                up.settimeout(60)
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                back = threading.Thread(target=self._pipe, args=(up, conn), daemon=True)
                back.start()
                self._pipe(conn, up)
                back.join(60)

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self._stop.set()
        self._sock.close()


def test_through_an_http_proxy(make_tool, pebble):
    """--proxy: every request to the CA goes through the proxy's CONNECT
    tunnel (Pebble's validation of the challenge does not, as it should),
    even though the test environment's NO_PROXY names 127.0.0.1; a proxy
    that is not there is one clear line naming it."""
    proxy = _ConnectProxy()
    try:
        tool = make_tool(pebble)
        tool.issue(["proxied.test"], extra=["--proxy", f"http://127.0.0.1:{proxy.port}"])
        verify_chain(tool.chain("proxied.test"), pebble.root(), ["proxied.test"])
        ca = urllib.parse.urlsplit(pebble.directory_url).netloc
        assert proxy.targets and set(proxy.targets) == {ca}, proxy.targets
    finally:
        proxy.close()

    dead = free_port()
    tool = make_tool(pebble)
    r = tool.run(*tool.issue_args(["noproxy.test"], extra=["--proxy", f"http://127.0.0.1:{dead}"]))
    assert r.returncode == 1
    line = one_line_error(r)
    assert f"127.0.0.1:{dead}" in line and "proxy" in line, line
