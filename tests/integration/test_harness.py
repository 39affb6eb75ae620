"""The test harness itself works: Pebble, DNS, the dns-01 hook and the ACME
proxy, driven by python3-acme instead of our own code.

If these fail, every other integration test's failure means nothing.
"""

import base64
import datetime
import http.client
import json
import os
import select
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import josepy as jose
import pytest
from acme import messages
from cryptography import x509

from acme_proxy import ari_cert_id
from pebble import split_pem, verify_chain
from reference_client import Http01Responder, ReferenceClient

HERE = Path(__file__).resolve().parent
UTC = datetime.timezone.utc


@pytest.fixture
def responder(pebble):
    """Answers http-01 on the port the default ``pebble`` validates against."""
    r = Http01Responder(pebble.http_port)
    yield r
    r.stop()


def _context(local_ca):
    return ssl.create_default_context(cafile=str(local_ca.cert_path))


def _raw(url, local_ca, method="GET", body=None, headers=None, timeout=10):
    """One HTTPS request, no ACME client: (status, headers, body)."""
    parts = urllib.request.urlparse(url)
    conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                       context=_context(local_ca))
    try:
        conn.request(method, parts.path or "/", body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def _directory(proxy, local_ca):
    status, _, body = _raw(proxy.directory_url, local_ca)
    assert status == 200
    return json.loads(body)


# ---------------------------------------------------------------- Pebble

def test_pebble_issues_http01_certificate(pebble, responder, local_ca):
    names = ["a.example.com", "b.example.com"]
    order = ReferenceClient(pebble.directory_url, local_ca.cert_path).issue_http01(
        names, responder)

    leaf = verify_chain(order.fullchain_pem, pebble.root(), names)
    assert pebble.cert_status(split_pem(order.fullchain_pem)[0])["Status"] == "Valid"
    assert leaf.issuer != leaf.subject
    # Pebble validated by connecting to our responder on its httpPort.
    assert sum(h.startswith(Http01Responder.PREFIX) for h in responder.hits) >= len(names)


def test_chain_check_rejects_a_foreign_root(pebble, responder, local_ca):
    order = ReferenceClient(pebble.directory_url, local_ca.cert_path).issue_http01(
        ["foreign.example.com"], responder)
    with pytest.raises(AssertionError, match="openssl verify failed"):
        verify_chain(order.fullchain_pem, local_ca.cert_pem)
    with pytest.raises(AssertionError, match="names"):
        verify_chain(order.fullchain_pem, pebble.root(), ["other.example.com"])


def test_pebble_dns01_through_the_hook(pebble, dns01_hook, local_ca):
    client = ReferenceClient(pebble.directory_url, local_ca.cert_path)
    client.register()
    order, _ = client.new_order(["dns.example.com", "*.dns.example.com"])

    def publish(name, value):
        subprocess.run([str(dns01_hook.path), "setup", name, value], check=True, timeout=30)

    published = client.answer_dns01(order, publish)
    order = client.finalize(order)
    for name, value in published:
        subprocess.run([str(dns01_hook.path), "teardown", name, value], check=True, timeout=30)

    verify_chain(order.fullchain_pem, pebble.root(), ["dns.example.com", "*.dns.example.com"])
    calls = dns01_hook.calls()
    assert [c[0] for c in calls] == ["setup", "setup", "teardown", "teardown"]
    assert {c[1] for c in calls} == {"_acme-challenge.dns.example.com"}


def test_pebble_options_reach_pebble(start_pebble, local_ca):
    pebble = start_pebble(alternate_roots=1, chain_length=2, validity_period=3600)
    responder = Http01Responder(pebble.http_port)
    try:
        order = ReferenceClient(pebble.directory_url, local_ca.cert_path).issue_http01(
            ["chain.example.com"], responder)
    finally:
        responder.stop()

    roots = pebble.roots()
    assert len(roots) == 2
    assert len(pebble.intermediates()) == 2
    assert len(split_pem(order.fullchain_pem)) == 3          # leaf + 2 intermediates
    leaf = verify_chain(order.fullchain_pem, roots[0], ["chain.example.com"])
    assert leaf.not_valid_after - leaf.not_valid_before <= datetime.timedelta(seconds=3600)
    assert len(order.alternative_fullchains_pem) == 1
    verify_chain(order.alternative_fullchains_pem[0], roots[1], ["chain.example.com"])
    with pytest.raises(AssertionError):
        verify_chain(order.alternative_fullchains_pem[0], roots[0])


def test_pebble_requires_eab_when_configured(start_pebble, local_ca):
    hmac_key = base64.urlsafe_b64encode(b"k" * 32).rstrip(b"=").decode()
    pebble = start_pebble(require_eab=True, eab_keys={"kid-1": hmac_key})

    client = ReferenceClient(pebble.directory_url, local_ca.cert_path)
    with pytest.raises(messages.Error) as err:
        client.register()
    assert err.value.code == "externalAccountRequired"
    account = client.register(eab=("kid-1", hmac_key))
    assert account.body.status == "valid"


def test_challtestsrv_txt_records(challtestsrv):
    challtestsrv.set_txt("_acme-challenge.txt.example.com", "value-1")
    challtestsrv.clear_txt("_acme-challenge.txt.example.com")
    with pytest.raises(Exception, match="HTTP 4"):
        challtestsrv.post("/no-such-endpoint", {})


# ---------------------------------------------------------------- the proxy

def test_proxy_issues_and_rewrites_every_url(acme_proxy, pebble, responder, local_ca):
    client = ReferenceClient(acme_proxy.directory_url, local_ca.cert_path)
    order = client.issue_http01(["proxied.example.com"], responder)

    verify_chain(order.fullchain_pem, pebble.root(), ["proxied.example.com"])
    # Every URL the client was handed points at the proxy, none at Pebble.
    urls = [order.uri, order.body.finalize, order.body.certificate,
            *[a.uri for a in order.authorizations],
            *[c.uri for a in order.authorizations for c in a.body.challenges]]
    assert all(u.startswith(acme_proxy.origin) for u in urls), urls
    kinds = [r.kind for r in acme_proxy.requests()]
    for kind in ("directory", "newNonce", "newAccount", "newOrder", "authz", "challenge",
                 "finalize", "certificate"):
        assert kind in kinds
    assert acme_proxy.requests("newAccount")[0].payload["termsOfServiceAgreed"] is True


def test_proxy_503_for_the_next_request(acme_proxy, local_ca):
    client = ReferenceClient(acme_proxy.directory_url, local_ca.cert_path)
    client.register()
    acme_proxy.fail_next("newOrder", status=503)

    with pytest.raises(messages.Error) as err:
        client.new_order(["busy.example.com"])
    assert err.value.code == "serverInternal"
    order, _ = client.new_order(["busy.example.com"])        # only the next one failed
    assert order.body.status == messages.STATUS_PENDING
    statuses = [r.status for r in acme_proxy.requests("newOrder")]
    assert statuses == [503, 201]
    assert [r.fault for r in acme_proxy.requests("newOrder")] == ["status", None]

    # A fault for one resource leaves the others alone.
    other, _ = client.new_order(["other.example.com"])
    acme_proxy.add_fault("status", path=order.uri, status=500)
    assert client.net.post(other.uri, None).status_code == 200
    with pytest.raises(messages.Error) as err:
        client.net.post(order.uri, None)
    assert err.value.code == "serverInternal"


def test_proxy_429_with_retry_after(acme_proxy, local_ca):
    acme_proxy.rate_limit("newAccount", retry_after=7, count=2)
    new_account = _directory(acme_proxy, local_ca)["newAccount"]

    status, headers, body = _raw(new_account, local_ca, "POST", b"{}",
                                 {"Content-Type": "application/jose+json"})
    assert status == 429
    assert headers["Retry-After"] == "7"
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["Replay-Nonce"]                            # as a CA's error carries one
    assert json.loads(body)["type"] == "urn:ietf:params:acme:error:rateLimited"

    client = ReferenceClient(acme_proxy.directory_url, local_ca.cert_path)
    with pytest.raises(messages.Error) as err:
        client.register()
    assert err.value.code == "rateLimited"
    client.register()                                         # the budget of 2 is spent


def test_proxy_share_of_requests_fail(start_acme_proxy, pebble, local_ca):
    proxy = start_acme_proxy(pebble, seed=1)        # the same share on every run
    proxy.add_fault("status", kind="directory", rate=0.5, status=500)
    statuses = [_raw(proxy.directory_url, local_ca)[0] for _ in range(40)]
    assert set(statuses) == {200, 500}
    assert 8 <= statuses.count(500) <= 32
    proxy.clear_faults()
    assert _raw(proxy.directory_url, local_ca)[0] == 200


def test_proxy_body_and_header_faults(acme_proxy, local_ca):
    url = acme_proxy.directory_url
    new_nonce = _directory(acme_proxy, local_ca)["newNonce"]

    acme_proxy.add_fault("malformed_json", kind="directory", count=1)
    with pytest.raises(ValueError):
        json.loads(_raw(url, local_ca)[2])

    acme_proxy.add_fault("truncated_json", kind="directory", count=1)
    status, headers, body = _raw(url, local_ca)
    assert status == 200 and int(headers["Content-Length"]) == len(body)
    with pytest.raises(ValueError):
        json.loads(body)

    acme_proxy.add_fault("huge_body", kind="directory", count=1)
    status, headers, body = _raw(url, local_ca, timeout=30)
    assert len(body) >= 10 * 1024 * 1024
    assert json.loads(body)["status"] == "valid"

    acme_proxy.add_fault("content_type", kind="directory", count=1)
    assert _raw(url, local_ca)[1]["Content-Type"] == "text/html"

    assert _raw(new_nonce, local_ca, "HEAD")[1]["Replay-Nonce"]
    acme_proxy.add_fault("drop_nonce", kind="newNonce", count=1)
    status, headers, _ = _raw(new_nonce, local_ca, "HEAD")
    assert status == 200 and headers["Replay-Nonce"] is None

    acme_proxy.add_fault("short_body", kind="directory", count=1)
    with pytest.raises(http.client.IncompleteRead):
        _raw(url, local_ca)

    acme_proxy.add_fault("close", kind="directory", count=1)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        _raw(url, local_ca)

    assert json.loads(_raw(url, local_ca)[2])["newOrder"]     # all faults were one-shot


def test_proxy_slow_responses_outlast_a_client_timeout(acme_proxy, local_ca):
    url = acme_proxy.directory_url

    acme_proxy.add_fault("hang", kind="directory", count=1, seconds=30)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        _raw(url, local_ca, timeout=1)
    assert time.monotonic() - started < 5

    acme_proxy.add_fault("delay", kind="directory", count=1, seconds=1.5)
    started = time.monotonic()
    assert _raw(url, local_ca)[0] == 200
    assert time.monotonic() - started >= 1.5

    # Each byte arrives within the socket timeout, the whole body does not.
    acme_proxy.add_fault("trickle", kind="directory", count=1, interval=0.005)
    started = time.monotonic()
    status, _, body = _raw(url, local_ca, timeout=1)
    assert status == 200 and json.loads(body)
    assert time.monotonic() - started > max(1.0, len(body) * 0.005 * 0.9)


def test_proxy_refuses_connections_while_stopped(acme_proxy, local_ca):
    acme_proxy.stop_listening()
    with pytest.raises(ConnectionRefusedError):
        _raw(acme_proxy.directory_url, local_ca)
    acme_proxy.resume_listening()
    assert _raw(acme_proxy.directory_url, local_ca)[0] == 200


def test_proxy_answers_502_when_pebble_is_gone(acme_proxy, pebble, local_ca):
    pebble.stop()
    status, _, body = _raw(acme_proxy.directory_url, local_ca)
    assert status == 502
    assert "upstream failed" in json.loads(body)["detail"]


def test_proxy_records_request_times(acme_proxy, local_ca):
    for _ in range(3):
        _raw(acme_proxy.directory_url, local_ca)
        time.sleep(0.3)
    records = acme_proxy.wait_for_requests("directory", 3, timeout=5)
    gaps = [b.time - a.time for a, b in zip(records, records[1:])]
    assert all(gap >= 0.3 for gap in gaps), gaps
    with pytest.raises(TimeoutError):
        acme_proxy.wait_for_requests("newOrder", 1, timeout=0.2)


def _expected_cert_id(pem):
    """RFC 9773 section 4.1, computed with cryptography as a second opinion."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    serial = cert.serial_number
    der = serial.to_bytes((serial.bit_length() + 8) // 8, "big")  # DER keeps a sign byte
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    return f"{b64(aki.key_identifier)}.{b64(der)}"


def test_proxy_serves_renewal_info(acme_proxy, responder, local_ca):
    order = ReferenceClient(acme_proxy.directory_url, local_ca.cert_path).issue_http01(
        ["ari.example.com"], responder)
    leaf_pem = split_pem(order.fullchain_pem)[0]
    cert_id = ari_cert_id(leaf_pem)
    assert cert_id == _expected_cert_id(leaf_pem)
    assert cert_id in acme_proxy.issued()
    renewal_info = _directory(acme_proxy, local_ca)["renewalInfo"]

    # Without configuration: a window inside the certificate's lifetime.
    status, headers, body = _raw(f"{renewal_info}/{cert_id}", local_ca)
    assert status == 200 and int(headers["Retry-After"]) > 0
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    window = json.loads(body)["suggestedWindow"]
    start = datetime.datetime.strptime(window["start"], "%Y-%m-%dT%H:%M:%SZ")
    assert leaf.not_valid_before < start < leaf.not_valid_after

    # Configured: exactly that window and Retry-After.
    soon = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    acme_proxy.set_renewal_info(leaf_pem, soon, soon + datetime.timedelta(hours=1),
                                retry_after=120, explanation_url="https://ca.example/why")
    status, headers, body = _raw(f"{renewal_info}/{cert_id}", local_ca)
    assert status == 200 and headers["Retry-After"] == "120"
    assert json.loads(body) == {
        "suggestedWindow": {"start": "2030-01-02T03:04:05Z", "end": "2030-01-02T04:04:05Z"},
        "explanationURL": "https://ca.example/why"}

    assert _raw(f"{renewal_info}/AAAA.BBBB", local_ca)[0] == 404
    assert _raw(f"{renewal_info}/not*an*id", local_ca)[0] == 400
    acme_proxy.fail_next("renewalInfo", status=503, retry_after=3)
    status, headers, _ = _raw(f"{renewal_info}/{cert_id}", local_ca)
    assert status == 503 and headers["Retry-After"] == "3"


class _NewOrderWithProfile(messages.NewOrder):
    profile: str = jose.field("profile", omitempty=True)


def test_proxy_offers_profiles(acme_proxy, local_ca):
    directory = _directory(acme_proxy, local_ca)
    assert set(directory["meta"]["profiles"]) == {"classic", "shortlived"}

    client = ReferenceClient(acme_proxy.directory_url, local_ca.cert_path)
    client.register()
    ident = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="prof.example.com")]
    response = client.net.post(client.directory["newOrder"],
                               _NewOrderWithProfile(identifiers=ident, profile="shortlived"))
    assert response.status_code == 201
    assert response.json()["profile"] == "shortlived"
    assert acme_proxy.requests("newOrder")[-1].profile == "shortlived"
    # A later fetch of the order still names its profile.
    again = client.net.post(response.headers["Location"], None)
    assert again.json()["profile"] == "shortlived"

    with pytest.raises(messages.Error) as err:
        client.net.post(client.directory["newOrder"],
                        _NewOrderWithProfile(identifiers=ident, profile="nonesuch"))
    assert err.value.typ == "urn:ietf:params:acme:error:invalidProfile"

    acme_proxy.profiles = {}
    assert "profiles" not in _directory(acme_proxy, local_ca).get("meta", {})


def test_proxy_control_interface(acme_proxy, local_ca):
    control = acme_proxy.start_control()

    def call(method, path, doc=None):
        data = None if doc is None else json.dumps(doc).encode()
        req = urllib.request.Request(control + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    call("POST", "/faults", {"action": "status", "kind": "directory", "count": 1, "status": 502})
    assert _raw(acme_proxy.directory_url, local_ca)[0] == 502
    assert _raw(acme_proxy.directory_url, local_ca)[0] == 200
    assert [r["status"] for r in call("GET", "/requests?kind=directory")] == [502, 200]
    call("DELETE", "/requests")
    assert call("GET", "/requests") == []
    assert call("PUT", "/listening", {"listening": False}) == {"listening": False}
    with pytest.raises(ConnectionRefusedError):
        _raw(acme_proxy.directory_url, local_ca)
    call("PUT", "/listening", {"listening": True})
    call("PUT", "/profiles", {"only": "the one"})
    assert _directory(acme_proxy, local_ca)["meta"]["profiles"] == {"only": "the one"}


def test_proxy_runs_as_a_program(pebble, local_ca, harness_dir):
    cert, key = local_ca.issue("proxy-program")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "acme_proxy.py"), "--upstream", pebble.directory_url,
         "--upstream-ca", str(local_ca.cert_path), "--cert", str(cert), "--key", str(key)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lines = dict(line.split() for line in _read_lines(proc.stdout, 2, timeout=20))
        directory = json.loads(_raw(lines["directory"], local_ca)[2])
        assert directory["renewalInfo"].startswith(lines["directory"].rsplit("/", 1)[0])
        req = urllib.request.Request(lines["control"] + "/requests")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert [x["kind"] for x in json.loads(r.read())] == ["directory"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def _read_lines(stream, count, timeout):
    """The first ``count`` lines of a binary pipe, waiting at most ``timeout`` s."""
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
            raise TimeoutError(f"no {count} lines within {timeout}s: {data!r}")
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            raise EOFError(f"stream ended after {data!r}")
        data += chunk
    return data.decode().splitlines()[:count]


@pytest.mark.parametrize("header", ["Expect: 100-continue", "Transfer-Encoding: chunked"])
def test_proxy_forwards_bodies_as_curl_sends_them(acme_proxy, local_ca, header):
    new_account = _directory(acme_proxy, local_ca)["newAccount"]
    body = json.dumps({"protected": "e30", "payload": "", "signature": "x" * 4096})
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--cacert", str(local_ca.cert_path),
         "-H", "Content-Type: application/jose+json", "-H", header,
         "--data-binary", body, new_account],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    # Pebble itself judged the (bogus) JWS: the body arrived whole.
    assert json.loads(result.stdout)["type"] == "urn:ietf:params:acme:error:malformed"
    assert acme_proxy.requests("newAccount")[-1].status == 400
