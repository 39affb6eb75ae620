#!/usr/bin/python3
"""A fault-injecting ACME proxy to put between an ACME client and Pebble.

The client talks HTTPS to the proxy only (every URL Pebble hands out is
rewritten to point at the proxy); the proxy forwards to Pebble over HTTPS.
Tests steer it per request kind ("newOrder", "finalize", "authz" ...):

    proxy.add_fault("status", kind="newOrder", count=1, status=503)
    proxy.add_fault("status", kind="newAccount", status=429, retry_after=7)
    proxy.add_fault("drop_nonce", kind="newNonce", rate=0.5)
    proxy.add_fault("hang", path=order_url, seconds=30)     # one resource only
    proxy.stop_listening(); ...; proxy.resume_listening()
    proxy.set_renewal_info(cert_pem, start, end, retry_after=60)
    proxy.requests("newOrder")  -> every newOrder seen, with its time

Fault actions (parameters in brackets):
    status        answer with an ACME problem document instead of forwarding
                  [status=503, retry_after, problem_type, detail, nonce=True,
                  delay=0: seconds to wait before answering]
    delay         forward, but only after a pause [seconds]
    hang          read the request, say nothing for a while, close [seconds]
    close         close the connection without answering
    trickle       forward; send the response one byte every [interval] s
    malformed_json  forward; replace the body with broken JSON
    truncated_json  forward; cut the JSON body in half (consistent length)
    short_body    forward; promise the whole body, send half, close
    huge_body     forward; replace the body with [size=10 MiB] of JSON
    content_type  forward; replace Content-Type with [content_type=text/html]
    drop_nonce    forward; remove the Replay-Nonce header

It also serves what Pebble 2.4 lacks: renewal information (RFC 9773) under
the directory's "renewalInfo", and certificate profiles in the directory's
meta. The profile a newOrder asks for is recorded and echoed in the order;
Pebble ignores the field, so the signed request is forwarded unchanged.

Standard library only, so it also runs as a program with an HTTP control
interface (see ``main``) for tests that are not written in Python.
"""

import argparse
import base64
import datetime
import http.client
import http.server
import json
import random
import re
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field

MiB = 1024 * 1024
UPSTREAM_TIMEOUT = 30.0
CONNECTION_IDLE_TIMEOUT = 30.0
MAX_REQUEST_BODY = 1 * MiB
DEFAULT_PROFILES = {
    "classic": "The same profile as without one",
    "shortlived": "Short-lived certificates",
}
ACME_ERROR = "urn:ietf:params:acme:error:"

# Hop-by-hop headers (RFC 9110 section 7.6.1) and those the proxy recomputes.
# Expect is answered by the proxy itself (100 Continue) and not passed on.
_NOT_FORWARDED = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
                  "transfer-encoding", "upgrade", "content-length", "accept-encoding",
                  "expect"}

# Pebble's object URLs by path prefix; the directory names the rest.
_PEBBLE_OBJECTS = [
    ("/my-account/", "account"),
    ("/my-order/", "order"),
    ("/finalize-order/", "finalize"),
    ("/authZ/", "authz"),
    ("/chalZ/", "challenge"),
    ("/certZ/", "certificate"),
    ("/list-orderz/", "orders"),
]
RENEWAL_INFO_PATH = "/renewal-info/"

_FAULT_ACTIONS = {"status", "delay", "hang", "close", "trickle", "malformed_json",
                  "truncated_json", "short_body", "huge_body", "content_type",
                  "drop_nonce"}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rfc3339(when):
    """A datetime (naive means UTC) or a Unix time as RFC 3339 UTC."""
    if not isinstance(when, datetime.datetime):
        when = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- certificates
#
# RFC 9773 names a certificate by its Authority Key Identifier and serial
# number. The standard library cannot parse X.509, so a few lines of DER
# walking pull out those two fields and the validity period.

def _der_element(data, pos):
    """(tag, start of content, end of content) of the DER element at pos."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    return tag, pos, pos + length


def _der_children(data, start, end):
    while start < end:
        tag, cstart, cend = _der_element(data, start)
        yield tag, data[cstart:cend], cstart, cend
        start = cend


def _der_time(tag, value):
    text = value.decode()
    fmt = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"     # UTCTime, GeneralizedTime
    return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc)


_OID_AKI = bytes([0x55, 0x1D, 0x23])        # 2.5.29.35 authorityKeyIdentifier


@dataclass
class CertInfo:
    cert_id: str                # RFC 9773 section 4.1
    serial: str                 # hex
    not_before: datetime.datetime
    not_after: datetime.datetime


def cert_info(pem_or_der):
    """Identify the first certificate of a PEM bundle (or a DER certificate)."""
    der = pem_or_der
    if isinstance(pem_or_der, str):
        match = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----",
                          pem_or_der, re.S)
        if not match:
            raise ValueError("no PEM certificate found")
        der = base64.b64decode("".join(match.group(1).split()))
    _, start, end = _der_element(der, 0)                 # Certificate
    _, start, end = _der_element(der, start)             # TBSCertificate
    fields = list(_der_children(der, start, end))
    if fields[0][0] == 0xA0:                              # [0] version
        fields = fields[1:]
    serial = fields[0][1]
    (t1, not_before, *_), (t2, not_after, *_) = _der_children(der, fields[3][2], fields[3][3])
    aki = None
    for tag, _, cstart, cend in fields[6:]:
        if tag != 0xA3:                                   # [3] extensions
            continue
        _, seq_start, seq_end = _der_element(der, cstart)
        for _, ext, *_ in _der_children(der, seq_start, seq_end):
            parts = [(t, v) for t, v, *_ in _der_children(ext, 0, len(ext))]
            if parts[0] == (0x06, _OID_AKI):
                aki_seq = parts[-1][1]                    # OCTET STRING holding a SEQUENCE
                _, s, e = _der_element(aki_seq, 0)
                for t, v, *_ in _der_children(aki_seq, s, e):
                    if t == 0x80:                         # [0] keyIdentifier
                        aki = v
    if aki is None:
        raise ValueError("certificate has no authority key identifier")
    return CertInfo(cert_id=f"{b64url(aki)}.{b64url(serial)}",
                    serial=serial.hex(),
                    not_before=_der_time(t1, not_before),
                    not_after=_der_time(t2, not_after))


def ari_cert_id(pem):
    """The RFC 9773 certificate identifier of a PEM certificate."""
    return cert_info(pem).cert_id


# ---------------------------------------------------------------- state

@dataclass
class Fault:
    """One injected misbehaviour and the requests it applies to.

    kind/method: match those requests (None matches any).
    path: match requests whose path starts with this (a URL's path is used).
    count: apply to the next ``count`` matching requests, then expire.
    rate: apply to this share (0..1) of matching requests.
    Neither: apply to every matching request until cleared.
    """
    action: str
    kind: str = None
    method: str = None
    count: int = None
    rate: float = None
    path: str = None
    params: dict = field(default_factory=dict)
    applied: int = 0

    def matches(self, method, kind, path):
        return ((self.kind is None or self.kind == kind)
                and (self.method is None or self.method == method)
                and (self.path is None or path.startswith(self.path))
                and (self.count is None or self.applied < self.count))


@dataclass
class Record:
    """One request the proxy received."""
    method: str
    path: str
    kind: str
    time: float                 # time.monotonic() on arrival
    wall: float                 # time.time() on arrival
    status: int = None          # what the client got; None: no answer
    fault: str = None           # the fault action applied, if any
    protected: dict = None      # JWS protected header of a POST
    payload: object = None      # decoded JWS payload ("" for POST-as-GET)
    profile: str = None         # newOrder: the profile asked for
    replaces: str = None        # newOrder: the certificate it replaces (ARI)


@dataclass
class RenewalInfo:
    start: datetime.datetime
    end: datetime.datetime
    retry_after: int = None
    explanation_url: str = None


class _Response:
    """A response being built; faults may change it before it is sent."""

    def __init__(self, status, headers=None, body=b""):
        self.status = status
        self.headers = list(headers or [])     # [(name, value)]
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def set_header(self, name, value):
        self.remove_header(name)
        self.headers.append((name, value))

    def remove_header(self, name):
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]

    def json(self):
        ctype = (self.header("Content-Type") or "").lower()
        if "json" not in ctype or not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def set_json(self, doc):
        self.body = json.dumps(doc, indent=2).encode()


def problem(status, problem_type, detail):
    doc = {"type": problem_type if ":" in problem_type else ACME_ERROR + problem_type,
           "detail": detail, "status": status}
    return _Response(status, [("Content-Type", "application/problem+json")],
                     json.dumps(doc).encode())


# ---------------------------------------------------------------- the proxy

class AcmeProxy:
    """The proxy; ``start()`` serves it on a thread of this process.

    upstream_directory: Pebble's directory URL.
    upstream_ca_file: trust anchor for Pebble's HTTPS listener.
    cert_file / key_file: the proxy's own HTTPS certificate (for 127.0.0.1).
    client_ca_file: when given, the proxy demands a TLS client certificate
        issued by these anchors and refuses the handshake without one (what
        a CA such as EJBCA can require, and Pebble cannot).
    """

    def __init__(self, upstream_directory, upstream_ca_file, cert_file, key_file,
                 host="127.0.0.1", port=0, seed=None, log=None, client_ca_file=None):
        self.upstream_directory = upstream_directory
        parts = urllib.parse.urlsplit(upstream_directory)
        self._upstream_origin = f"{parts.scheme}://{parts.netloc}"
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 443
        self._upstream_context = ssl.create_default_context(cafile=upstream_ca_file)
        self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_context.load_cert_chain(cert_file, key_file)
        if client_ca_file:
            self._server_context.verify_mode = ssl.CERT_REQUIRED
            self._server_context.load_verify_locations(cafile=str(client_ca_file))
        self.host = host
        self.port = port
        self._log = log
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = None
        self._thread = None
        self._control = None
        self._connections = set()
        self._kinds = {}            # upstream path -> directory key
        self._directory_path = parts.path
        self._faults = []
        self._records = []
        self._renewal_info = {}     # cert id -> RenewalInfo
        self.handshakes_refused = 0  # TLS handshakes that failed (e.g. no client certificate)
        self.client_subjects = []   # common name of each verified client certificate
        self._certs = {}            # cert id -> CertInfo, every certificate downloaded
        self._order_profiles = {}   # order path -> profile
        self.profiles = dict(DEFAULT_PROFILES)
        self.ari_retry_after = 21600
        # Window for a downloaded certificate with no explicit renewal info,
        # as fractions of its lifetime; None: answer 404 for it.
        self.ari_default_fractions = (2 / 3, 3 / 4)

    # -- life cycle

    @property
    def origin(self):
        return f"https://{self.host}:{self.port}"

    @property
    def directory_url(self):
        return self.origin + self._directory_path

    def start(self):
        self._learn_directory()
        self._listen()
        return self

    def stop(self):
        self._stopping.set()
        self.stop_listening()
        if self._control is not None:
            self._control.shutdown()
            self._control.server_close()
            self._control = None

    def stop_listening(self):
        """Refuse new connections and drop the open ones."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(5)
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def resume_listening(self):
        """Listen again on the same port."""
        if self._server is None:
            self._listen()

    def listening(self):
        return self._server is not None

    def _listen(self):
        self._server = _TLSServer((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"acme-proxy:{self.port}", daemon=True)
        self._thread.start()

    def _learn_directory(self):
        status, _, body = self._upstream("GET", self._directory_path, [], b"")
        if status != 200:
            raise RuntimeError(f"upstream directory {self.upstream_directory}: HTTP {status}")
        for key, url in json.loads(body).items():
            if isinstance(url, str) and url.startswith(self._upstream_origin):
                self._kinds[urllib.parse.urlsplit(url).path] = key

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- faults

    def add_fault(self, action, kind=None, method=None, count=None, rate=None, path=None,
                  **params):
        """Inject ``action`` into matching requests; see the module docstring
        and ``Fault``. Returns the Fault (its ``applied`` counts uses)."""
        if action not in _FAULT_ACTIONS:
            raise ValueError(f"unknown fault action {action!r}")
        if path is not None and "://" in path:
            path = urllib.parse.urlsplit(path).path
        fault = Fault(action, kind, method, count, rate, path, params)
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail_next(self, kind, count=1, status=503, **params):
        """The next ``count`` requests of ``kind`` get an error ``status``."""
        return self.add_fault("status", kind=kind, count=count, status=status, **params)

    def rate_limit(self, kind, retry_after, count=1, **params):
        """The next ``count`` requests of ``kind`` get 429 with Retry-After."""
        return self.add_fault("status", kind=kind, count=count, status=429,
                              retry_after=retry_after, problem_type="rateLimited", **params)

    def clear_faults(self):
        with self._lock:
            self._faults.clear()

    def _pick_fault(self, method, kind, path):
        with self._lock:
            for fault in self._faults:
                if not fault.matches(method, kind, path):
                    continue
                if fault.rate is not None and self._random.random() >= fault.rate:
                    continue
                fault.applied += 1
                return fault
        return None

    # -- records

    def requests(self, kind=None, method=None):
        """Requests received so far (oldest first), optionally filtered."""
        with self._lock:
            return [r for r in self._records
                    if (kind is None or r.kind == kind) and (method is None or r.method == method)]

    def count(self, kind=None, method=None):
        return len(self.requests(kind, method))

    def clear_requests(self):
        with self._lock:
            self._records.clear()

    def wait_for_requests(self, kind, count=1, timeout=30.0, method=None):
        """Wait until ``count`` requests of ``kind`` arrived; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.requests(kind, method)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(found)} of {count} {kind} requests after {timeout:g}s")
            time.sleep(0.05)

    def _record(self, record):
        with self._lock:
            self._records.append(record)
        if self._log:
            self._log(f"{record.method} {record.path} ({record.kind})")

    # -- renewal information and profiles

    def set_renewal_info(self, cert, start, end, retry_after=None, explanation_url=None):
        """Answer renewalInfo for ``cert`` (PEM or cert id) with this window."""
        cert_id = cert if "-----BEGIN" not in cert else ari_cert_id(cert)
        with self._lock:
            self._renewal_info[cert_id] = RenewalInfo(start, end, retry_after, explanation_url)
        return cert_id

    def clear_renewal_info(self, cert=None):
        with self._lock:
            if cert is None:
                self._renewal_info.clear()
            else:
                self._renewal_info.pop(cert if "-----BEGIN" not in cert else ari_cert_id(cert), None)

    def issued(self):
        """Every certificate downloaded through the proxy: {cert id: CertInfo}."""
        with self._lock:
            return dict(self._certs)

    def _renewal_info_for(self, cert_id):
        with self._lock:
            info = self._renewal_info.get(cert_id)
            cert = self._certs.get(cert_id)
        if info is None and cert is not None and self.ari_default_fractions:
            lifetime = cert.not_after - cert.not_before
            first, last = self.ari_default_fractions
            info = RenewalInfo(cert.not_before + lifetime * first,
                               cert.not_before + lifetime * last)
        return info

    # -- one request

    def handle(self, method, path, headers, body, client_host):
        """Answer one request.

        Returns (response or None for no answer at all, its Record, the
        Fault applied or None).
        """
        kind = self.classify(path)
        record = Record(method, path, kind, time.monotonic(), time.time())
        self._decode_jws(record, body)
        fault = self._pick_fault(method, kind, path)
        record.fault = fault.action if fault else None
        self._record(record)
        if self._stopping.is_set():
            return None, record, fault
        if fault and fault.action in ("hang", "close"):
            if fault.action == "hang":
                self._stopping.wait(fault.params.get("seconds", 60))
            return None, record, fault
        if fault and fault.action == "delay":
            self._stopping.wait(fault.params.get("seconds", 5))
        if fault and fault.action == "status":
            if fault.params.get("delay"):
                self._stopping.wait(fault.params["delay"])
            response = self._fault_status(fault.params)
        else:
            response = self._answer(method, path, kind, headers, body, record, client_host)
        if fault:
            self._transform(response, fault)
        record.status = response.status
        return response, record, fault

    def classify(self, path):
        path = path.split("?", 1)[0]
        if path == self._directory_path:
            return "directory"
        if path.startswith(RENEWAL_INFO_PATH):
            return "renewalInfo"
        if path in self._kinds:
            return self._kinds[path]
        for prefix, kind in _PEBBLE_OBJECTS:
            if path.startswith(prefix):
                return kind
        return "other"

    @staticmethod
    def _decode_jws(record, body):
        if record.method != "POST" or not body:
            return
        try:
            jws = json.loads(body)
            record.protected = json.loads(b64url_decode(jws["protected"]))
            payload = jws.get("payload", "")
            record.payload = json.loads(b64url_decode(payload)) if payload else ""
        except (ValueError, KeyError, TypeError):
            return
        if record.kind == "newOrder" and isinstance(record.payload, dict):
            record.profile = record.payload.get("profile")
            record.replaces = record.payload.get("replaces")

    def _answer(self, method, path, kind, headers, body, record, client_host):
        origin = f"https://{client_host}"
        if kind == "renewalInfo":
            response = self._renewal_info_response(path[len(RENEWAL_INFO_PATH):])
            response.set_header("Link", f'<{origin}{self._directory_path}>;rel="index"')
        elif (kind == "newOrder" and record.profile is not None and self.profiles
              and record.profile not in self.profiles):
            response = problem(400, "invalidProfile",
                               f"profile {record.profile!r} is not offered by this CA")
            self._add_nonce(response)
        else:
            forward = [(k, v) for k, v in headers if k.lower() not in _NOT_FORWARDED]
            try:
                status, upstream_headers, upstream_body = self._upstream(method, path,
                                                                         forward, body)
            except (OSError, http.client.HTTPException) as e:
                return problem(502, "serverInternal", f"test proxy: upstream failed: {e}")
            response = _Response(status, [(k, v) for k, v in upstream_headers
                                          if k.lower() not in _NOT_FORWARDED],
                                 upstream_body)
            self._rewrite(response, origin)
            self._extend(response, kind, path, record, origin)
        return response

    def _upstream(self, method, path, headers, body):
        conn = http.client.HTTPSConnection(self._upstream_host, self._upstream_port,
                                           timeout=UPSTREAM_TIMEOUT,
                                           context=self._upstream_context)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            names = {k.lower() for k, _ in headers}
            if "host" not in names:
                conn.putheader("Host", f"{self._upstream_host}:{self._upstream_port}")
            for k, v in headers:
                conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _rewrite(self, response, origin):
        """Point every URL of the upstream at the proxy instead."""
        def fix(value):
            return value.replace(self._upstream_origin, origin)
        response.headers = [(k, fix(v)) if k.lower() in ("location", "link") else (k, v)
                            for k, v in response.headers]
        doc = response.json()
        if doc is not None:
            response.set_json(_map_strings(doc, fix))

    def _extend(self, response, kind, path, record, origin):
        """Add the protocol extensions Pebble lacks."""
        doc = response.json()
        if kind == "directory" and isinstance(doc, dict):
            doc["renewalInfo"] = origin + RENEWAL_INFO_PATH.rstrip("/")
            if self.profiles:
                doc.setdefault("meta", {})["profiles"] = dict(self.profiles)
            response.set_json(doc)
        elif (kind == "newOrder" and record.profile is not None and self.profiles
              and isinstance(doc, dict)):
            location = response.header("Location")
            if location:
                with self._lock:
                    self._order_profiles[urllib.parse.urlsplit(location).path] = record.profile
            doc["profile"] = record.profile
            response.set_json(doc)
        elif kind in ("order", "finalize") and isinstance(doc, dict):
            order_path = path if kind == "order" else \
                urllib.parse.urlsplit(response.header("Location") or "").path
            with self._lock:
                profile = self._order_profiles.get(order_path)
            if profile is not None:
                doc["profile"] = profile
                response.set_json(doc)
        elif kind == "certificate" and response.status == 200:
            try:
                info = cert_info(response.body.decode())
            except (ValueError, IndexError, UnicodeDecodeError):
                return
            with self._lock:
                self._certs[info.cert_id] = info

    def _renewal_info_response(self, cert_id):
        if not re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", cert_id):
            return problem(400, "malformed", f"{cert_id!r} is not a certificate identifier")
        info = self._renewal_info_for(cert_id)
        if info is None:
            return problem(404, "malformed", f"no certificate known as {cert_id}")
        doc = {"suggestedWindow": {"start": rfc3339(info.start), "end": rfc3339(info.end)}}
        if info.explanation_url:
            doc["explanationURL"] = info.explanation_url
        response = _Response(200, [("Content-Type", "application/json")])
        response.set_json(doc)
        retry_after = info.retry_after if info.retry_after is not None else self.ari_retry_after
        response.set_header("Retry-After", str(retry_after))
        return response

    def _fault_status(self, params):
        status = params.get("status", 503)
        default_type = "rateLimited" if status == 429 else "serverInternal"
        response = problem(status, params.get("problem_type", default_type),
                           params.get("detail", f"injected {status} from the test proxy"))
        if params.get("retry_after") is not None:
            response.set_header("Retry-After", str(params["retry_after"]))
        if params.get("nonce", True):
            self._add_nonce(response)
        return response

    def _add_nonce(self, response):
        """A fresh upstream nonce, as a CA's error answers carry one."""
        new_nonce = next((p for p, k in self._kinds.items() if k == "newNonce"), None)
        if new_nonce is None:
            return
        try:
            _, headers, _ = self._upstream("HEAD", new_nonce, [], b"")
        except OSError:
            return
        nonce = next((v for k, v in headers if k.lower() == "replay-nonce"), None)
        if nonce:
            response.set_header("Replay-Nonce", nonce)

    def _transform(self, response, fault):
        action, params = fault.action, fault.params
        if action == "malformed_json":
            response.body = b'{"status": "valid", "identifiers": [{"type": "dns",, }'
        elif action == "truncated_json":
            response.body = response.body[:len(response.body) // 2]
        elif action == "huge_body":
            head, tail = b'{"status": "valid", "pad": "', b'"}'
            size = params.get("size", 10 * MiB)
            response.body = head + b"x" * max(0, size - len(head) - len(tail)) + tail
        elif action == "content_type":
            response.set_header("Content-Type", params.get("content_type", "text/html"))
        elif action == "drop_nonce":
            response.remove_header("Replay-Nonce")

    # -- the control interface (for clients outside this process)

    def start_control(self, host="127.0.0.1", port=0):
        self._control = http.server.ThreadingHTTPServer((host, port), _ControlHandler)
        self._control.daemon_threads = True
        self._control.proxy = self
        threading.Thread(target=self._control.serve_forever, name="acme-proxy-control",
                         daemon=True).start()
        return f"http://{host}:{self._control.server_address[1]}"

    def _track(self, conn, add):
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)


def _map_strings(doc, fix):
    if isinstance(doc, str):
        return fix(doc)
    if isinstance(doc, list):
        return [_map_strings(v, fix) for v in doc]
    if isinstance(doc, dict):
        return {k: _map_strings(v, fix) for k, v in doc.items()}
    return doc


# ---------------------------------------------------------------- HTTP plumbing

class _TLSServer(http.server.ThreadingHTTPServer):
    """HTTPS with the TLS handshake in the connection's own thread, so one
    client that never finishes its handshake cannot stall the others."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, proxy):
        self.proxy = proxy
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        request.settimeout(CONNECTION_IDLE_TIMEOUT)
        try:
            conn = self.proxy._server_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            with self.proxy._lock:
                self.proxy.handshakes_refused += 1
            return
        peer = conn.getpeercert()
        if peer:
            subject = dict(item for rdn in peer.get("subject", ()) for item in rdn)
            with self.proxy._lock:
                self.proxy.client_subjects.append(subject.get("commonName"))
        self.proxy._track(conn, True)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.proxy._track(conn, False)
            conn.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass                                    # the proxy keeps records instead

    def do_GET(self):
        self._serve()

    do_POST = do_HEAD = do_PUT = do_DELETE = do_GET

    def _serve(self):
        proxy = self.server.proxy
        body = self._read_body()
        if body is None:
            return
        host = self.headers.get("Host") or f"{proxy.host}:{proxy.port}"
        response, _, fault = proxy.handle(self.command, self.path, list(self.headers.items()),
                                          body, host)
        if response is None:
            self.close_connection = True
            return
        self._send(response, fault)

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            self.send_error(413)
            return None
        return self.rfile.read(length)

    def _read_chunked(self):
        body = b""
        while len(body) <= MAX_REQUEST_BODY:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline().strip():
                    pass                        # trailers
                return body
            body += self.rfile.read(size)
            self.rfile.readline()
        self.send_error(413)
        return None

    def _send(self, response, fault):
        action = fault.action if fault else None
        body = response.body
        self.send_response(response.status)
        for k, v in response.headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if action in ("trickle", "short_body"):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command == "HEAD":
            return
        if action == "short_body":
            self.wfile.write(body[:len(body) // 2])
        elif action == "trickle":
            interval = fault.params.get("interval", 1.0)
            for i in range(len(body)):
                self.wfile.write(body[i:i + 1])
                if self.server.proxy._stopping.wait(interval):
                    return
        else:
            self.wfile.write(body)


class _ControlHandler(http.server.BaseHTTPRequestHandler):
    """JSON control interface:

    POST   /faults        {"action": ..., "kind": ..., "count": ..., params...}
    DELETE /faults
    GET    /requests[?kind=K]
    DELETE /requests
    POST   /renewal-info  {"cert": PEM or id, "start": RFC 3339 or Unix time,
                           "end": ..., "retry_after": s, "explanation_url": ...}
    PUT    /profiles      {"name": "description", ...}
    PUT    /listening     {"listening": true|false}
    GET    /issued
    """

    def log_message(self, fmt, *args):
        pass

    def _reply(self, status, doc=None):
        body = json.dumps(doc if doc is not None else {}, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self):
        proxy = self.server.proxy
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/requests":
            kind = urllib.parse.parse_qs(url.query).get("kind", [None])[0]
            self._reply(200, [asdict(r) for r in proxy.requests(kind)])
        elif url.path == "/issued":
            self._reply(200, {k: asdict(v) for k, v in proxy.issued().items()})
        else:
            self._reply(404, {"error": f"no {url.path}"})

    def do_POST(self):
        proxy = self.server.proxy
        try:
            doc = self._json()
            if self.path == "/faults":
                fault = proxy.add_fault(**doc)
                self._reply(201, asdict(fault))
            elif self.path == "/renewal-info":
                cert_id = proxy.set_renewal_info(
                    doc["cert"], _parse_time(doc["start"]), _parse_time(doc["end"]),
                    doc.get("retry_after"), doc.get("explanation_url"))
                self._reply(200, {"cert_id": cert_id})
            else:
                self._reply(404, {"error": f"no {self.path}"})
        except (ValueError, KeyError, TypeError) as e:
            self._reply(400, {"error": str(e)})

    def do_PUT(self):
        proxy = self.server.proxy
        try:
            doc = self._json()
        except ValueError as e:
            self._reply(400, {"error": str(e)})
            return
        if self.path == "/profiles":
            proxy.profiles = dict(doc)
            self._reply(200, proxy.profiles)
        elif self.path == "/listening":
            if doc.get("listening"):
                proxy.resume_listening()
            else:
                proxy.stop_listening()
            self._reply(200, {"listening": proxy.listening()})
        else:
            self._reply(404, {"error": f"no {self.path}"})

    def do_DELETE(self):
        proxy = self.server.proxy
        if self.path == "/faults":
            proxy.clear_faults()
        elif self.path == "/requests":
            proxy.clear_requests()
        else:
            self._reply(404, {"error": f"no {self.path}"})
            return
        self._reply(200)


def _parse_time(value):
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the CA's directory URL")
    parser.add_argument("--upstream-ca", required=True, help="trust anchor for the CA (PEM)")
    parser.add_argument("--cert", required=True, help="the proxy's certificate chain (PEM)")
    parser.add_argument("--key", required=True, help="the proxy's private key (PEM)")
    parser.add_argument("--port", type=int, default=0, help="HTTPS port (default: any free)")
    parser.add_argument("--control-port", type=int, default=0,
                        help="control interface port (default: any free)")
    parser.add_argument("--seed", type=int, help="seed for rate-based faults")
    args = parser.parse_args(argv)

    proxy = AcmeProxy(args.upstream, args.upstream_ca, args.cert, args.key,
                      port=args.port, seed=args.seed).start()
    control = proxy.start_control(port=args.control_port)
    print(f"directory {proxy.directory_url}", flush=True)
    print(f"control {control}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
