"""Hostile requests against the real Apache with mod_autotls.

HTTP-01 paths with dot segments, percent-encoding, over-long tokens and
characters outside base64url; huge and malformed Host headers; TLS
ClientHellos that offer acme-tls/1 for names with no pending challenge.
Every one must end in a 4xx answer or a refused handshake, never a crash
(the same processes before and after, nothing in the error log) and never
a file system access by the worker processes (strace -e trace=%file on
every thread of every child while the requests run).
"""

import contextlib
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from apache_env import make_stack, status_vhost, vhost  # noqa: F401
from procs import LOOPBACK
from reliability import Health, _cases_file, cases  # noqa: F401

ISSUE_TIMEOUT = 90
NAME = "host.test"
TOKEN = "A" * 43          # looks like a real token; none is pending

CHALLENGE = "/.well-known/acme-challenge/"
PATHS = [
    ("dot segments", CHALLENGE + "../../../../etc/passwd"),
    ("dot segments", CHALLENGE + "./" + TOKEN),
    ("dot segments", CHALLENGE + TOKEN + "/.."),
    ("dot segments", "/.well-known/acme-challenge/../acme-challenge/" + TOKEN),
    ("percent-encoding", CHALLENGE + "..%2f..%2f..%2fetc%2fpasswd"),
    ("percent-encoding", CHALLENGE + "%2e%2e/%2e%2e/etc/passwd"),
    ("percent-encoding", CHALLENGE + "%41" * 43),
    ("percent-encoding", CHALLENGE + TOKEN + "%00"),
    ("percent-encoding", CHALLENGE + TOKEN + "%0d%0aX-Injected:%20yes"),
    ("percent-encoding", "/.well-known/acme%2Dchallenge/" + TOKEN),
    ("percent-encoding", "/%2Ewell-known/acme-challenge/" + TOKEN),
    ("percent-encoding", "/.well-known/acme-challenge%2F" + TOKEN),
    ("percent-encoding", "/.well-known/acme-challenge/%2541%2541"),
    ("dot segments", "/.well-known/./acme-challenge/" + TOKEN),
    ("dot segments", "/.well-known/x/../acme-challenge/" + TOKEN),
    ("dot segments", "/.well-known/acme-challenge/x/../" + TOKEN),
    ("extra slashes", "//.well-known/acme-challenge/" + TOKEN),
    ("extra slashes", "/.well-known//acme-challenge//" + TOKEN),
    ("over-long token", CHALLENGE + "A" * 129),
    ("over-long token", CHALLENGE + "A" * 4000),
    ("over-long token", CHALLENGE + "A" * 8100),
    ("over-long token", CHALLENGE + "A" * 70000),
    ("non-base64url", CHALLENGE + "tok+en" + "A" * 30),
    ("non-base64url", CHALLENGE + "token=="),
    ("non-base64url", CHALLENGE + "tok.en"),
    ("non-base64url", CHALLENGE + "tok~en"),
    ("non-base64url", CHALLENGE + "t%C3%B6ken"),
    ("non-base64url", CHALLENGE + "tok%20en"),
    ("non-base64url", CHALLENGE + "tok:en"),
    ("non-base64url", CHALLENGE + "tok;en=1"),
    ("empty token", CHALLENGE),
    ("empty token", CHALLENGE + "?" + TOKEN),
    ("query", CHALLENGE + TOKEN + "?../../etc/passwd"),
    ("unknown token", CHALLENGE + TOKEN),
]
METHODS = [("POST", CHALLENGE + TOKEN), ("PUT", CHALLENGE + TOKEN), ("DELETE", CHALLENGE + TOKEN),
           ("OPTIONS", CHALLENGE + TOKEN), ("TRACE", CHALLENGE + TOKEN)]
HOSTS = [
    ("huge Host", "a" * 8000),
    ("huge Host", "a" * 100000),
    ("huge Host", ("x" * 63 + ".") * 4 + "test"),
    ("malformed Host", NAME + ":99999999"),
    ("malformed Host", NAME + "."),
    ("malformed Host", NAME.upper()),
    ("malformed Host", "[::1]"),
    ("malformed Host", "../../etc/passwd"),
    ("malformed Host", "%2e%2e%2f"),
    ("malformed Host", NAME + ", evil.test"),
    ("malformed Host", NAME + "\x01"),
    ("malformed Host", ""),
    ("malformed Host", NAME + " evil.test"),
    ("malformed Host", "h\xc3\xb6st.test"),
]


def raw_http(port, data, timeout=10.0):
    """Send raw bytes; returns the status code, or None if the server closed."""
    with socket.create_connection((LOOPBACK, port), timeout) as s:
        with contextlib.suppress(OSError):
            s.sendall(data)
        buf = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in buf and len(buf) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
    m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    return int(m.group(1)) if m else None


def request(port, method, path, host):
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    if method in ("POST", "PUT"):
        head += "Content-Length: 2\r\n\r\n{}"
    else:
        head += "\r\n"
    return raw_http(port, head.encode("latin-1"))


class FileAccessTrace:
    """strace -f -e trace=%file on every thread of the given processes."""

    def __init__(self, pids, out):
        if not shutil.which("strace"):
            pytest.skip("strace is not installed")
        self.out = Path(out)
        args = ["strace", "-f", "-qq", "-e", "trace=%file", "-o", str(self.out)]
        for pid in pids:
            for task in Path(f"/proc/{pid}/task").iterdir():
                args += ["-p", task.name]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        # strace writes nothing until a traced call happens: give it time to attach.
        time.sleep(1.0)
        if self.proc.poll() is not None:
            pytest.skip(f"strace cannot attach here: {self.proc.stderr.read().strip()}")

    def position(self):
        time.sleep(0.05)                 # let strace write what it saw
        return self.out.stat().st_size if self.out.exists() else 0

    def since(self, pos):
        """The file system calls traced after ``pos``."""
        time.sleep(0.05)
        if not self.out.exists():
            return []
        with open(self.out, "rb") as f:
            f.seek(pos)
            text = f.read().decode("utf-8", "replace")
        return [ln for ln in text.splitlines() if ln.strip() and "resumed>" not in ln
                and "+++" not in ln and "---" not in ln]

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        return self.out.read_text(errors="replace") if self.out.exists() else ""


def tls_hello(port, sni, alpn=("acme-tls/1",), timeout=5.0):
    """(outcome, detail): 'refused' with the error, or 'completed' with the
    protocol the server picked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(list(alpn))
    with socket.create_connection((LOOPBACK, port), timeout) as sock:
        try:
            with ctx.wrap_socket(sock, server_hostname=sni) as tls:
                return "completed", tls.selected_alpn_protocol()
        except (ssl.SSLError, OSError) as e:
            return "refused", str(e)


def s_client(port, servername, alpn="acme-tls/1"):
    args = ["openssl", "s_client", "-connect", f"{LOOPBACK}:{port}", "-alpn", alpn]
    if servername is not None:
        args += ["-servername", servername]
    else:
        args += ["-noservername"]
    r = subprocess.run(args, input="", capture_output=True, text=True, timeout=20)
    m = re.search(r"ALPN protocol: (\S+)", r.stdout)
    return r.returncode, (m.group(1) if m else None), r.stdout + r.stderr


def test_hostile_requests(make_stack, cases, tmp_path):
    # The managed vhost is also the default one on the HTTP port, so that
    # requests naming no managed host reach the module too.
    st = make_stack(lambda a: vhost(NAME, a.http_port) + status_vhost(a)
                    + vhost(NAME, a.https_port) + vhost("other.test", a.https_port))
    a = st.apache
    cert = a.wait_for_cert(NAME, ISSUE_TIMEOUT, root_pem=st.root_pem)
    a.wait_for_cert("other.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    # Let the renewal thread settle (its own file accesses are not requests').
    time.sleep(1.5)
    health = Health(a)
    trace = FileAccessTrace(a.children(), tmp_path / "strace.log")
    results = []        # (class, label, outcome, file calls)

    def traced(fault_class, label, fn):
        pos = trace.position()
        outcome = fn()
        results.append((fault_class, label, outcome, trace.since(pos)))

    try:
        for label, path in PATHS:
            traced("hostile HTTP-01 requests", f"{label}: GET {path[:60]}",
                   lambda: request(a.http_port, "GET", path, NAME))
        for method, path in METHODS:
            traced("hostile HTTP-01 requests", f"method {method}",
                   lambda: request(a.http_port, method, path, NAME))
        for label, path in PATHS[:6]:
            traced("hostile HTTP-01 requests", f"{label} over HTTPS: {path[:50]}",
                   lambda: a.https(NAME, path, root_pem=st.root_pem).status)
        for label, host in HOSTS:
            traced("hostile Host headers", f"{label}: {host[:40]!r} ({len(host)} bytes)",
                   lambda: request(a.http_port, "GET", CHALLENGE + TOKEN, host))
        hellos = [
            ("unmanaged name", "unmanaged.test"),
            ("managed name, nothing pending", NAME),
            ("other managed name, nothing pending", "other.test"),
            ("long name", ("x" * 63 + ".") * 3 + "test"),
            ("name with an underscore", "under_score.test"),
        ]
        for label, sni in hellos:
            traced("hostile TLS ClientHellos", label, lambda: tls_hello(a.https_port, sni))
            traced("hostile TLS ClientHellos", label + ", h2 offered too",
                   lambda: tls_hello(a.https_port, sni, ("acme-tls/1", "h2")))
        for label, sni in (("no SNI", None), ("IP literal as SNI", LOOPBACK),
                           ("SNI '-.test'", "-.test")):
            def hello():
                rc, proto, out = s_client(a.https_port, sni)
                return ("completed", proto) if rc == 0 else ("refused", out[-200:])
            traced("hostile TLS ClientHellos", label, hello)
    finally:
        trace.stop()

    # The server lives on, untouched, and still serves the real certificate.
    health.check()
    assert a.cert(NAME, root_pem=st.root_pem).serial_number == cert.serial_number

    for fault_class, label, outcome, calls in results:
        with cases.case(fault_class, label) as info:
            if fault_class == "hostile TLS ClientHellos":
                state, detail = outcome
                info["handshake"] = state if state == "refused" else f"completed, ALPN {detail}"
                assert state == "refused" or detail != "acme-tls/1", \
                    f"{label}: acme-tls/1 negotiated with nothing pending"
            else:
                info["answer"] = outcome
                assert outcome is None or 400 <= outcome < 500, f"{label}: HTTP {outcome}"
            info["file system calls"] = len(calls)
            assert not calls, "a worker accessed files:\n" + "\n".join(calls[:10])
