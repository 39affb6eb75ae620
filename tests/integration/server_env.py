"""What the Apache and the nginx test environments share (apache_env.py,
nginx_env.py): finding the built module, TLS and HTTP clients that talk to
127.0.0.1 with the name under test as SNI and Host, and ``Server``, one web
server with its own root directory, ports, logs and sanitizer reports, run
as root in the foreground with every wait bounded. Each server's own file
says how it is configured, started, told to stop and counted as ready.

A module built with sanitizers is run with their runtimes preloaded; the
reports go into ROOT/sanitizer (writable by the unprivileged workers) and
every report fails the test.
"""

import collections
import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from procs import LOOPBACK, ManagedProcess, free_ports, port_open, wait_until

USER = "www-data"
PLACEHOLDER_ISSUER = "autotls placeholder"


# ------------------------------------------------------------------ the module

def module_path(env_var, relpath):
    """The built module: $env_var, or relpath under $AUTOTLS_BUILD_DIR; None if neither."""
    explicit = os.environ.get(env_var)
    if explicit:
        return Path(explicit)
    build = os.environ.get("AUTOTLS_BUILD_DIR")
    if build:
        return Path(build) / relpath
    return None


def require_module(env_var, relpath, binary, what):
    """The module's path, or skip the test (no module, no server, not root)."""
    path = module_path(env_var, relpath)
    if path is None or not path.is_file():
        pytest.skip(f"{Path(relpath).name} not found: set AUTOTLS_BUILD_DIR (a configured and "
                    f"built build directory) or {env_var}")
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{what} is not installed")
    if os.geteuid() != 0:
        pytest.skip(f"the {what} tests start {what} as root (workers run as {USER})")
    return path


def sanitizer_env(module, logdir):
    """Preload the sanitizer runtimes the module was linked against."""
    out = subprocess.run(["ldd", str(module)], capture_output=True, text=True).stdout
    preload = [m.group(1) for m in re.finditer(r"\s(/\S*lib(?:asan|ubsan)\.so\S*)", out)]
    if not preload:
        return {}
    return {
        "LD_PRELOAD": ":".join(preload),
        # The servers free their pools at exit only partly: leaks are the
        # unit tests' business, memory errors are checked here.
        "ASAN_OPTIONS": f"detect_leaks=0:log_path={logdir}/asan:abort_on_error=0",
        "UBSAN_OPTIONS": f"print_stacktrace=1:log_path={logdir}/ubsan",
    }


def make_world_dir(prefix):
    """A fresh directory www-data can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


# ------------------------------------------------------------------ TLS clients

def client_context(root_pem=None, tls12_ciphers=None, alpn=None):
    if root_pem:
        ctx = ssl.create_default_context(cadata=root_pem)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls12_ciphers:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(tls12_ciphers)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class _Conn(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 with ``name`` as SNI and Host."""

    def __init__(self, name, port, context, timeout):
        super().__init__(name, port, context=context, timeout=timeout)
        self._ctx = context
        self.peer_der = None

    def connect(self):
        sock = socket.create_connection((LOOPBACK, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)
        self.peer_der = self.sock.getpeercert(binary_form=True)


class Response:
    def __init__(self, status, headers, body, cert_der=None):
        self.status = status
        self.headers = headers
        self.body = body
        self.cert_der = cert_der

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    @property
    def cert(self):
        return x509.load_der_x509_certificate(self.cert_der) if self.cert_der else None


def peer_cert(port, name, root_pem=None, tls12_ciphers=None, alpn=None, timeout=5.0):
    """The leaf certificate a handshake with SNI ``name`` presents."""
    ctx = client_context(root_pem, tls12_ciphers, alpn)
    with socket.create_connection((LOOPBACK, port), timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname=name) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def issuer_cn(cert):
    attrs = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else ""


def cert_names(cert):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(san.get_values_for_type(x509.DNSName))


def https_request(port, name, path="/", method="GET", root_pem=None, timeout=10.0,
                  headers=None, body=None):
    conn = _Conn(name, port, client_context(root_pem), timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.headers, data, conn.peer_der)
    finally:
        conn.close()


def http_request(port, name, path="/", method="GET", timeout=10.0, body=None):
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", name)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


SClient = collections.namedtuple("SClient", "cert chain output")


def s_client(port, name, *args, timeout=20):
    """What `openssl s_client` sees with extra options (e.g. -sigalgs, -alpn):
    the leaf, the whole chain (PEM blocks) and its output."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"{LOOPBACK}:{port}", "-servername", name,
         "-showcerts", *args],
        input="", capture_output=True, text=True, timeout=timeout)
    chain = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", result.stdout, re.S)
    assert chain, f"openssl s_client {' '.join(args)} got no certificate:\n{result.stdout}\n{result.stderr}"
    return SClient(x509.load_pem_x509_certificate(chain[0].encode()), chain, result.stdout)


# ------------------------------------------------------------------ the server

class Server:
    """One web server with its own root directory, ports and logs.

    A subclass sets ``name`` (the process and log label), ``binary``,
    ``stop_signal`` and ``subdirs``, and says how: config_text(body),
    start_cmd(), configtest_cmd(), ready() (all its workers are up).
    """

    name = "server"
    binary = None
    stop_signal = None
    subdirs = ("run", "logs", "conf")

    def __init__(self, module, logs=None, http_port=None, https_port=None, log_level=None):
        self.module = module
        self.root = make_world_dir(f"autotls-{self.name}-")
        for sub in self.subdirs:
            (self.root / sub).mkdir()
            (self.root / sub).chmod(0o755)
        ports = free_ports(2)
        self.http_port = http_port or ports[0]
        self.https_port = https_port or ports[1]
        self.store = self.root / "store"
        self.error_log_path = self.root / "logs" / "error.log"
        self.log_level = log_level
        self.logs = logs
        self.process = None
        # The workers run as www-data: sanitizer reports need a place they may write.
        san = self.root / "sanitizer"
        san.mkdir()
        san.chmod(0o1777)
        self.env = sanitizer_env(self.module, san)

    # -- configuration

    def config_text(self, body):
        raise NotImplementedError

    def write_config(self, body):
        self.conf_path.write_text(self.config_text(body))
        return self.conf_path

    def copy_in(self, src, name=None, mode=0o644):
        """Copy a file into the root's conf/ where www-data can read it."""
        dest = self.root / "conf" / (name or Path(src).name)
        shutil.copyfile(src, dest)
        dest.chmod(mode)
        return dest

    def write_file(self, rel, text, mode=0o644):
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def run(self, args, timeout=60):
        """Run the server binary with args once (configtest, signals)."""
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env})

    def configtest(self, body=None, text=None):
        """The server's configuration test on body (or the whole text);
        returns (exit status, output)."""
        if text is not None:
            self.conf_path.write_text(text)
        else:
            self.write_config(body)
        result = self.run(self.configtest_cmd())
        return result.returncode, result.stdout + result.stderr

    # -- lifecycle

    def start(self, body=None, timeout=30.0):
        if body is not None:
            self.write_config(body)
        self.process = ManagedProcess(self.name, self.start_cmd(), self.root / "logs" / "console.log",
                                      env=self.env, logs=self.logs)
        if self.logs is not None:
            self.logs.watch(f"{self.name} error.log", self.error_log_path)

        def up():
            self.process.check_running()
            return port_open(self.https_port) and port_open(self.http_port) and self.ready()
        wait_until(up, timeout, f"{self.name} to listen with all its workers")
        return self

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def _children(self):
        """(pid, command line) of the parent's child processes."""
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (d / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                    cmd = (d / "cmdline").read_bytes().decode(errors="replace")
                    out.append((int(d.name), cmd))
        return sorted(out)

    def stop(self, timeout=20.0):
        if not self.process:
            return
        if self.process.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.proc.wait(timeout)
        self.process.stop()
        self.after_stop(timeout)

    def after_stop(self, timeout):
        """What is left to wait for once the parent is gone."""

    def cleanup(self):
        """Stop; returns the text of any sanitizer report (empty if none).
        The root is removed unless there is one (or $AUTOTLS_KEEP_TMP)."""
        self.stop()
        reports = sorted((self.root / "sanitizer").glob("*"))
        text = "\n".join(p.read_text(errors="replace") for p in reports)
        if self.logs is not None:
            self.logs.forget(f"{self.name} error.log")
        if not reports and not os.environ.get("AUTOTLS_KEEP_TMP"):
            shutil.rmtree(self.root, ignore_errors=True)
        return text

    # -- logs

    def log_size(self):
        try:
            return self.error_log_path.stat().st_size
        except OSError:
            return 0

    def error_log(self, start=0):
        try:
            with open(self.error_log_path, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_log(self, pattern, timeout, start=0):
        rx = re.compile(pattern)

        def found():
            if self.process:
                self.process.check_running()
            return rx.search(self.error_log(start))
        return wait_until(found, timeout, f"/{pattern}/ in the error log", interval=0.1)

    # -- clients

    def https(self, name, path="/", **kw):
        return https_request(self.https_port, name, path, **kw)

    def http(self, name, path="/", **kw):
        return http_request(self.http_port, name, path, **kw)

    def cert(self, name, **kw):
        return peer_cert(self.https_port, name, **kw)

    def status(self, fmt=None):
        """The status page, at /autotls-status of the plain-HTTP "localhost"."""
        path = "/autotls-status" + (f"?format={fmt}" if fmt else "")
        return self.http("localhost", path)

    def status_json(self):
        r = self.status("json")
        assert r.status == 200, f"status page: HTTP {r.status} {r.text}"
        return json.loads(r.body)

    def cert_status(self, name):
        """The status entries (one per key type) whose names include ``name``."""
        return [c for c in self.status_json()["certificates"] if name in c["names"]]

    def renew(self, name):
        return self.http("localhost", f"/autotls-renew?name={name}", method="POST", body=b"")

    def wait_for_cert(self, name, timeout=60.0, root_pem=None, **kw):
        """Wait until the handshake for ``name`` presents a CA-issued certificate."""
        def issued():
            self.process.check_running()
            with contextlib.suppress(OSError, ssl.SSLError):
                c = peer_cert(self.https_port, name, root_pem=root_pem, **kw)
                if issuer_cn(c) != PLACEHOLDER_ISSUER:
                    return c
            return None
        return wait_until(issued, timeout, f"a CA-issued certificate for {name}", interval=0.2)


def check_reports(servers):
    """Clean up every server; fail with the sanitizer reports, if any."""
    reports = "\n".join(r for r in (s.cleanup() for s in servers) if r)
    assert not reports, f"sanitizer reports:\n{reports}"


@contextlib.contextmanager
def running(server, body):
    """The server started on body, stopped (and its reports checked) after."""
    try:
        server.start(body)
        yield server
    finally:
        check_reports([server])


# ------------------------------------------------------------------ server + Pebble

class Stack:
    """A server with the module, the Pebble it gets certificates from, and
    optionally the fault-injecting ACME proxy between them. ``template`` is
    the server's global autotls lines, with {directory}, {trust}, {store}."""

    def __init__(self, server, pebble, proxy, directory_url, trust, template):
        self.server = server
        self.pebble = pebble
        self.proxy = proxy
        self.directory_url = directory_url
        self.trust = trust
        self.template = template
        self._root = None

    @property
    def root_pem(self):
        """Pebble's root for the certificates it issues."""
        if self._root is None:
            self._root = self.pebble.root()
        return self._root

    def global_config(self):
        return self.template.format(directory=self.directory_url, trust=self.trust,
                                    store=self.server.store)


def stack_factory(server_class, stack_class, kw_name, template,
                  start_pebble, start_acme_proxy, local_ca, logs):
    """The make_stack fixture's body: (make, made servers).

    make(body, proxy=False, start=True, <kw_name>=None, **pebble_options):
    ``body`` is the configuration after the global autotls lines, a string
    or a function of the server (for its ports and paths). Pebble validates
    against the server's ports; with ``proxy`` the fault-injecting ACME
    proxy sits between them. The CA's trust anchors are copied into the
    server's conf/, where its unprivileged workers can read them.
    """
    made = []

    def make(body, proxy=False, start=True, **kw):
        server_kw = kw.pop(kw_name, None) or {}
        server = server_class(logs=logs, **server_kw)
        made.append(server)
        pebble = start_pebble(http_port=server.http_port, tls_port=server.https_port, **kw)
        trust = server.copy_in(local_ca.cert_path, "ca-trust.pem")
        stack = stack_class(server, pebble, None, pebble.directory_url, trust, template)
        if proxy:
            # proxy=True, or a dict of AcmeProxy options (e.g. client_ca_file)
            stack.proxy = start_acme_proxy(pebble, **(proxy if isinstance(proxy, dict) else {}))
            stack.directory_url = stack.proxy.directory_url
        text = body(server) if callable(body) else body
        server.write_config(stack.global_config() + text)
        if start:
            server.start()
        return stack

    return make, made
