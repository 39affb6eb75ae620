"""Checks the Apache and the nginx tests make the same way, on any
server_env.Server: the request side's HTTP-01 and 503 answers, the renew
handler, an EC and an RSA certificate side by side, concurrent orders, the
store's owner and modes, renewal moving when its process dies, and HTTPS
load that counts every failed request.
"""

import http.client
import os
import pwd
import re
import signal
import socket
import stat
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from procs import LOOPBACK, wait_until
from server_env import (PLACEHOLDER_ISSUER, USER, cert_names, client_context, issuer_cn, peer_cert,
                        s_client)

# ------------------------------------------------------------------ HTTP-01

NOT_FOUND_BODY = "No such ACME challenge."
DISK_BODY = "served from the disk"
CONTROL = "controlFile"
# Tokens a naive implementation would look up on disk, or decode into a path.
TOKENS = ["unknownToken_abc-123", "bad.token", "..", "%2e%2e", "tok%2Fen", "a" * 200,
          "..%2f..%2fetc%2fpasswd", "tok?en"]


def plant_challenge_files(docroot):
    """Files on disk where a naive implementation would look."""
    d = docroot / ".well-known" / "acme-challenge"
    d.mkdir(parents=True)
    for token in TOKENS[:2] + [CONTROL]:
        (d / token).write_text(DISK_BODY)
    return d


def check_tokens_are_404(server, name):
    """Unknown and malformed tokens of a managed name: 404 from the module,
    on the HTTP port and on the HTTPS port (before any 503 of the placeholder)."""
    for token in TOKENS:
        r = server.http(name, "/.well-known/acme-challenge/" + token)
        assert r.status == 404, (token, r.status, r.text)
        assert r.text.strip() == NOT_FOUND_BODY, (token, r.text)
    r = server.https(name, "/.well-known/acme-challenge/" + TOKENS[0])
    assert r.status == 404 and r.text.strip() == NOT_FOUND_BODY, (r.status, r.text)


def check_other_name_keeps_its_files(server, other):
    r = server.http(other, "/.well-known/acme-challenge/" + TOKENS[0])
    assert r.status == 200 and r.text == DISK_BODY, (r.status, r.text)


# ------------------------------------------------------------------ 503

def check_waiting_page(r, name):
    """The 503 a managed name answers on its placeholder."""
    assert r.status == 503, r.status
    assert r.headers["Retry-After"] == "10"
    assert r.headers["Cache-Control"] == "no-store"
    assert "Certificate being obtained" in r.text and name in r.text, r.text
    assert issuer_cn(r.cert) == PLACEHOLDER_ISSUER


# ------------------------------------------------------------------ renew handler

def check_renew_handler(server, managed):
    """Only POST; a name is required and must be managed; a managed one is queued."""
    assert server.http("localhost", f"/autotls-renew?name={managed}").status == 405
    r = server.renew("nobody.test")
    assert r.status == 404 and "no managed certificate" in r.text, (r.status, r.text)
    assert server.http("localhost", "/autotls-renew", method="POST", body=b"").status == 400
    r = server.renew(managed.upper())
    assert r.status == 202, (r.status, r.text)
    assert r.text == f'{{"renew":"{managed}","status":"queued"}}\n', r.text


def renew_and_wait(server, name, old_serial, root_pem, timeout=90):
    """Ask for a renewal and wait for a certificate with another serial."""
    # The engine records a renew request with a one-second clock and ignores
    # one that is not later than the last issuance: never ask in that second.
    time.sleep(1.1)
    r = server.renew(name)
    assert r.status == 202, (r.status, r.text)

    def renewed():
        c = server.cert(name, root_pem=root_pem)
        return c if c.serial_number != old_serial else None
    return wait_until(renewed, timeout, f"a renewed certificate for {name}", interval=0.2)


# ------------------------------------------------------------------ keys

def wait_for_both_keys(server, name, timeout):
    def both_live():
        return {e["key_type"]: e["state"] for e in server.cert_status(name)} == \
            {"ec:P-256": "valid", "rsa:2048": "valid"}
    wait_until(both_live, timeout, f"an EC and an RSA certificate for {name}", interval=0.3)


def check_each_client_gets_its_own_key(server, name, root_pem):
    """TLS 1.2 clients that only speak ECDSA or RSA suites, and TLS 1.3 clients
    that only accept ECDSA or RSA-PSS signatures, each get their certificate."""
    port = server.https_port
    ec_cert = peer_cert(port, name, root_pem=root_pem, tls12_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    rsa_cert = peer_cert(port, name, root_pem=root_pem, tls12_ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    assert isinstance(ec_cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(rsa_cert.public_key(), rsa.RSAPublicKey)
    assert issuer_cn(ec_cert) != PLACEHOLDER_ISSUER != issuer_cn(rsa_cert)
    assert cert_names(ec_cert) == cert_names(rsa_cert) == {name}
    c13_ec = s_client(port, name, "-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256").cert
    c13_rsa = s_client(port, name, "-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256").cert
    assert c13_ec.serial_number == ec_cert.serial_number
    assert c13_rsa.serial_number == rsa_cert.serial_number


# ------------------------------------------------------------------ names

def check_names_share_one_certificate(server, names, root_pem, timeout=90):
    """names[0]'s certificate covers every name, and each name gets it,
    verified for that name."""
    cert = server.wait_for_cert(names[0], timeout, root_pem=root_pem)
    assert cert_names(cert) == set(names)
    for name in names:
        c = peer_cert(server.https_port, name, root_pem=root_pem)
        assert c.serial_number == cert.serial_number
        assert server.https(name, root_pem=root_pem).status == 200


def check_each_name_gets_its_own(server, names, root_pem, timeout=90):
    """One certificate per name, all ordered before the first one came back."""
    serials = set()
    for name in names:
        cert = server.wait_for_cert(name, timeout, root_pem=root_pem)
        assert cert_names(cert) == {name}
        serials.add(cert.serial_number)
    assert len(serials) == len(names)
    check_orders_ran_together(server, len(names))


# ------------------------------------------------------------------ orders

def check_orders_ran_together(server, count):
    """Every one of count orders was placed before the first certificate came back."""
    log = "\n".join(line for line in server.error_log().splitlines() if "autotls" in line)
    first_done = re.search(r"served now", log)
    assert first_done, log[-4000:]
    ordering = re.findall(r"\(v\d\.test\): ordering", log[:first_done.start()])
    assert len(ordering) == count, f"only {len(ordering)} orders before the first issuance:\n{log[-4000:]}"


# ------------------------------------------------------------------ processes

def check_store_private(store, user=USER, min_keys=2):
    """Everything in the store belongs to user; directories and private
    keys are for that user only; the store itself is 0700."""
    pw = pwd.getpwnam(user)
    keys = 0
    for dirpath, dirnames, filenames in os.walk(store):
        for entry in dirnames + filenames:
            path = os.path.join(dirpath, entry)
            s = os.lstat(path)
            if stat.S_ISLNK(s.st_mode):
                continue
            assert (s.st_uid, s.st_gid) == (pw.pw_uid, pw.pw_gid), \
                f"{path} belongs to {s.st_uid}:{s.st_gid}, not {user}"
            if stat.S_ISDIR(s.st_mode):
                assert stat.S_IMODE(s.st_mode) & 0o077 == 0, f"{path} is {oct(s.st_mode)}"
            elif "key" in entry:
                keys += 1
                assert stat.S_IMODE(s.st_mode) & 0o077 == 0, f"{path} is {oct(s.st_mode)}"
    assert keys >= min_keys, "no key files found in the store (account and certificate)"
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o700


def kill_renewer(server, processes, timeout=30):
    """SIGKILL the process that renews; wait until another of processes()
    renews; returns its PID."""
    old = server.status_json()["server"]["renewal_pid"]
    assert old in processes(), (old, processes())
    os.kill(old, signal.SIGKILL)

    def moved():
        pid = server.status_json()["server"]["renewal_pid"]
        return pid if pid and pid != old and pid in processes() else None
    return wait_until(moved, timeout, "another process to take over renewal", interval=0.2)


# ------------------------------------------------------------------ load

class HttpsLoad:
    """Threads doing full handshakes (verified against root_pem) and GET /
    against one name, counting every failure (handshake, verification,
    status, body). serials counts the certificates seen; seen lists
    (monotonic start, serial, X-Worker header or 0) of every request."""

    def __init__(self, port, name, root_pem, body, threads=4):
        self.port, self.name, self.root_pem, self.body = port, name, root_pem, body.encode()
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.serials = {}
        self.seen = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _one(self):
        ctx = client_context(self.root_pem)
        sock = socket.create_connection((LOOPBACK, self.port), 10)
        tls = ctx.wrap_socket(sock, server_hostname=self.name)
        try:
            serial = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number
            conn = http.client.HTTPConnection(self.name, self.port, timeout=10)
            conn.sock = tls
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200 or self.body not in body:
                raise AssertionError(f"HTTP {resp.status}: {body[:200]!r}")
            return serial, int(resp.getheader("X-Worker", "0"))
        finally:
            tls.close()

    def _run(self):
        while not self.stop_flag.is_set():
            try:
                t0 = time.monotonic()
                serial, worker = self._one()
                with self.lock:
                    self.ok += 1
                    self.serials[serial] = self.serials.get(serial, 0) + 1
                    self.seen.append((t0, serial, worker))
            except Exception as e:  # every kind of failure counts
                with self.lock:
                    self.failures.append(repr(e))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)
