"""Debian's nginx with the built ngx_http_autotls_module, for the nginx tests.

An ``Nginx`` owns a fresh prefix directory (world-traversable, because the
workers and the renewal thread run as www-data), writes nginx.conf from a
template plus the test's http{} lines, and runs the real ``/usr/sbin/nginx``
as root in the foreground (``-p PREFIX -c CONF -g 'daemon off;'``) with its
own pid file, logs and temporary paths. Clients connect to 127.0.0.1 and send
the name under test as SNI / Host, so no name needs to resolve on this
machine; Pebble resolves every name to 127.0.0.1 through challtestsrv and
validates against the ports nginx listens on.

The module is found through $AUTOTLS_NGINX_MODULE, or under
$AUTOTLS_BUILD_DIR as module/nginx/ngx_http_autotls_module.so; the tests are
skipped when neither exists. A module built with sanitizers is run with their
runtimes preloaded, and every report they write fails the test.
"""

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from procs import LOOPBACK, ManagedProcess, free_ports, wait_until

NGINX = "/usr/sbin/nginx"
USER = "www-data"
PLACEHOLDER_ISSUER = "autotls placeholder"
MODULE_NAME = "ngx_http_autotls_module.so"


def module_path():
    """The built module, or None."""
    explicit = os.environ.get("AUTOTLS_NGINX_MODULE")
    if explicit:
        return Path(explicit)
    build = os.environ.get("AUTOTLS_BUILD_DIR")
    if build:
        return Path(build) / "module" / "nginx" / MODULE_NAME
    return None


def require_module():
    path = module_path()
    if path is None or not path.is_file():
        pytest.skip(f"{MODULE_NAME} not found: set AUTOTLS_BUILD_DIR (a configured and built "
                    "build directory, configured with nginx-dev present) or AUTOTLS_NGINX_MODULE")
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx is not installed")
    if os.geteuid() != 0:
        pytest.skip("the nginx tests start nginx as root (workers run as www-data)")
    return path


def sanitizer_env(module, logdir):
    """Preload the sanitizer runtimes the module was linked against."""
    out = subprocess.run(["ldd", str(module)], capture_output=True, text=True).stdout
    preload = [m.group(1) for m in re.finditer(r"\s(/\S*lib(?:asan|ubsan)\.so\S*)", out)]
    if not preload:
        return {}
    return {
        "LD_PRELOAD": ":".join(preload),
        # nginx frees its pools at exit only partly; leaks are the unit
        # tests' business, memory errors are checked here.
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

    def connect(self):
        sock = socket.create_connection((LOOPBACK, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


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
        der = conn.sock.getpeercert(binary_form=True)
        return Response(resp.status, resp.headers, data, der)
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


def s_client_cert(port, name, *args, timeout=20):
    """The leaf `openssl s_client` receives with extra options (e.g. -sigalgs)."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"{LOOPBACK}:{port}", "-servername", name, *args],
        input="", capture_output=True, text=True, timeout=timeout)
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", result.stdout, re.S)
    assert m, f"openssl s_client {' '.join(args)} got no certificate:\n{result.stdout}\n{result.stderr}"
    return x509.load_pem_x509_certificate(m.group(0).encode()), result.stdout


# ------------------------------------------------------------------ the server

CONF_TEMPLATE = """\
load_module {module};
user {user};
worker_processes {workers};
pid {root}/run/nginx.pid;
error_log {root}/logs/error.log {log_level};
{main_lines}
events {{
    worker_connections 1024;
}}
http {{
    access_log {root}/logs/access.log;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    root {root}/html;
    default_type text/plain;
    ssl_protocols TLSv1.2 TLSv1.3;
{body}
}}
"""


class Nginx:
    """One nginx with its own prefix, ports and logs."""

    def __init__(self, logs=None, http_port=None, https_port=None, workers=2,
                 log_level="info", main_lines=""):
        self.module = require_module()
        self.root = make_world_dir("autotls-nginx-")
        for sub in ("run", "logs", "html", "tmp", "conf"):
            (self.root / sub).mkdir()
            (self.root / sub).chmod(0o755)
        ports = free_ports(2)
        self.http_port = http_port or ports[0]
        self.https_port = https_port or ports[1]
        self.store = self.root / "store"
        self.conf_path = self.root / "conf" / "nginx.conf"
        self.error_log_path = self.root / "logs" / "error.log"
        self.pid_path = self.root / "run" / "nginx.pid"
        self.workers_n = workers
        self.log_level = log_level
        self.main_lines = main_lines
        self.logs = logs
        self.process = None
        # Sanitizer reports come from the workers too (www-data): a directory
        # every process can write.
        (self.root / "san").mkdir()
        (self.root / "san").chmod(0o1777)
        self.env = sanitizer_env(self.module, self.root / "san")
        (self.root / "html" / "index.html").write_text("hello from nginx\n")

    # -- configuration

    def config_text(self, body):
        return CONF_TEMPLATE.format(module=self.module, user=USER, workers=self.workers_n,
                                    root=self.root, log_level=self.log_level,
                                    main_lines=self.main_lines, body=body)

    def write_config(self, body):
        self.conf_path.write_text(self.config_text(body))
        return self.conf_path

    def write_file(self, rel, text, mode=0o644):
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def _cmd(self, *args):
        return [NGINX, "-p", f"{self.root}/", "-c", str(self.conf_path), *args]

    def configtest(self, body=None, text=None):
        """`nginx -t` on a configuration; returns (exit status, output)."""
        if text is not None:
            self.conf_path.write_text(text)
        else:
            self.write_config(body)
        result = subprocess.run(self._cmd("-t"), capture_output=True, text=True, timeout=60,
                                env={**os.environ, **self.env})
        return result.returncode, result.stdout + result.stderr

    # -- lifecycle

    def start(self, body=None, timeout=30.0):
        if body is not None:
            self.write_config(body)
        self.process = ManagedProcess("nginx", self._cmd("-g", "daemon off;"),
                                      self.root / "logs" / "console.log", env=self.env,
                                      logs=self.logs)
        if self.logs is not None:
            self.logs.watch("nginx error.log", self.error_log_path)

        def up():
            self.process.check_running()
            return (self._port_ok(self.https_port) and self._port_ok(self.http_port)
                    and len(self.workers()) == self.workers_n)
        wait_until(up, timeout, "nginx to listen with all its workers")
        return self

    @staticmethod
    def _port_ok(port):
        with contextlib.suppress(OSError):
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return True
        return False

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def _children(self):
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (d / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                    cmd = (d / "cmdline").read_bytes().decode(errors="replace")
                    out.append((int(d.name), cmd))
        return out

    def workers(self):
        """PIDs of the workers serving now (not those shutting down)."""
        return sorted(pid for pid, cmd in self._children()
                      if "worker process" in cmd and "shutting down" not in cmd)

    def all_workers(self):
        return sorted(pid for pid, cmd in self._children() if "worker process" in cmd)

    def reload(self, timeout=30.0):
        """`nginx -s reload` and wait until a new set of workers serves."""
        old = set(self.workers())
        result = subprocess.run(self._cmd("-s", "reload"), capture_output=True, text=True,
                                timeout=30, env={**os.environ, **self.env})
        assert result.returncode == 0, f"nginx -s reload failed:\n{result.stderr}"

        def new_generation():
            self.process.check_running()
            now = self.workers()
            return len(now) == self.workers_n and not (set(now) & old)
        wait_until(new_generation, timeout, "the workers of the reloaded configuration")

    def stop(self, timeout=20.0):
        if not self.process:
            return
        if self.process.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGQUIT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.proc.wait(timeout)
        self.process.stop()

    def cleanup(self):
        """Stop; returns the text of any sanitizer report (empty if none)."""
        self.stop()
        reports = sorted(self.root.glob("san/asan*")) + sorted(self.root.glob("san/ubsan*"))
        text = "\n".join(p.read_text(errors="replace") for p in reports)
        if self.logs is not None:
            self.logs.forget("nginx error.log")
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
        """The status page of ``status_server``."""
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


def server(name, port, *lines, aliases=(), ssl_listen=True):
    """A server{} block with autotls on, serving index.html."""
    listen = f"listen {LOOPBACK}:{port}{' ssl' if ssl_listen else ''};"
    out = ["    server {", f"        {listen}",
           f"        server_name {' '.join((name,) + tuple(aliases))};"]
    out += [f"        {line}" for line in lines]
    out += ["        autotls on;", "    }", ""]
    return "\n".join(out)


def status_server(n):
    """A plain-HTTP default server "localhost" with the status page and the
    renew handler, for the tests."""
    return f"""\
    server {{
        listen {LOOPBACK}:{n.http_port} default_server;
        server_name localhost;
        location = /autotls-status {{
            autotls_status;
            allow 127.0.0.1;
            deny all;
        }}
        location = /autotls-renew {{
            autotls_renew;
            allow 127.0.0.1;
            deny all;
        }}
    }}
"""


# ------------------------------------------------------------------ nginx + Pebble

GLOBAL_TEMPLATE = """\
    autotls_ca {directory};
    autotls_ca_trust {trust};
    autotls_accept_terms on;
    autotls_contact admin@example.com;
    autotls_store {store};
"""


class Stack:
    """nginx with the module, the Pebble it gets certificates from, and
    optionally the fault-injecting ACME proxy between them."""

    def __init__(self, nginx, pebble, proxy, directory_url, trust):
        self.nginx = nginx
        self.pebble = pebble
        self.proxy = proxy
        self.directory_url = directory_url
        self.trust = trust
        self._root = None

    @property
    def root_pem(self):
        """Pebble's root for the certificates it issues."""
        if self._root is None:
            self._root = self.pebble.root()
        return self._root

    def global_config(self):
        return GLOBAL_TEMPLATE.format(directory=self.directory_url, trust=self.trust,
                                      store=self.nginx.store)


@pytest.fixture
def make_stack(start_pebble, start_acme_proxy, local_ca, logs):
    """make_stack(body, proxy=False, start=True, nginx_kw=None, **pebble_options) -> Stack.

    ``body`` is the http{} content after the global autotls lines: a string,
    or a function of the Nginx (for its ports and paths) returning one.
    Pebble validates against the nginx's ports.
    """
    made = []

    def make(body, proxy=False, start=True, nginx_kw=None, **pebble_options):
        n = Nginx(logs=logs, **(nginx_kw or {}))
        pebble = start_pebble(http_port=n.http_port, tls_port=n.https_port, **pebble_options)
        stack = Stack(n, pebble, None, pebble.directory_url, local_ca.cert_path)
        made.append(stack)
        if proxy:
            stack.proxy = start_acme_proxy(pebble)
            stack.directory_url = stack.proxy.directory_url
        text = body(n) if callable(body) else body
        n.write_config(stack.global_config() + text)
        if start:
            n.start()
        return stack

    yield make
    reports = "\n".join(r for r in (s.nginx.cleanup() for s in made) if r)
    assert not reports, f"sanitizer reports from nginx:\n{reports}"


@pytest.fixture
def nginx(logs):
    """An Nginx that is not started (for configtest and custom setups)."""
    n = Nginx(logs=logs)
    yield n
    reports = n.cleanup()
    assert not reports, f"sanitizer reports from nginx:\n{reports}"
