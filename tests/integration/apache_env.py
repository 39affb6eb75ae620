"""Debian's apache2 with the built mod_autotls, for the Apache integration tests.

An ``Apache`` owns a fresh ServerRoot (world-traversable, because the
renewal thread runs as www-data), writes a configuration from a template
plus the test's global lines and virtual hosts, and starts the real
``/usr/sbin/apache2`` as root in the foreground. Clients connect to
127.0.0.1 and send the name under test as SNI / Host, so no name needs to
resolve on this machine; Pebble resolves every name to 127.0.0.1 through
challtestsrv and validates against the ports Apache listens on.

The module is found through $AUTOTLS_APACHE_MODULE, or as
module/apache/mod_autotls.so under $AUTOTLS_BUILD_DIR; tests are skipped
when neither exists. A module built with sanitizers is run with its
runtime preloaded and every report it writes fails the test.
"""

import contextlib
import http.client
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

APACHE2 = "/usr/sbin/apache2"
MODULES = "/usr/lib/apache2/modules"
USER = "www-data"
PLACEHOLDER_ISSUER = "autotls placeholder"
START_SERVERS = 2             # and never more or fewer: PIDs show restarts
STANDARD_MODULES = [
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_host_module", "mod_authz_host.so"),
    ("ssl_module", "mod_ssl.so"),
    ("socache_shmcb_module", "mod_socache_shmcb.so"),
    ("status_module", "mod_status.so"),
    ("alias_module", "mod_alias.so"),
    ("rewrite_module", "mod_rewrite.so"),
    ("dir_module", "mod_dir.so"),
    ("mime_module", "mod_mime.so"),
]


def module_path():
    """The built mod_autotls.so, or None."""
    explicit = os.environ.get("AUTOTLS_APACHE_MODULE")
    if explicit:
        return Path(explicit)
    build = os.environ.get("AUTOTLS_BUILD_DIR")
    if build:
        return Path(build) / "module" / "apache" / "mod_autotls.so"
    return None


def require_module():
    path = module_path()
    if path is None or not path.is_file():
        pytest.skip("mod_autotls.so not found: set AUTOTLS_BUILD_DIR (a configured and built "
                    "build directory) or AUTOTLS_APACHE_MODULE")
    if not os.access(APACHE2, os.X_OK):
        pytest.skip("apache2 is not installed")
    if os.geteuid() != 0:
        pytest.skip("the Apache tests start apache2 as root")
    return path


def _sanitizer_env(module, logdir):
    """Preload the sanitizer runtimes a module was linked against."""
    out = subprocess.run(["ldd", str(module)], capture_output=True, text=True).stdout
    preload = [m.group(1) for m in re.finditer(r"\s(/\S*lib(?:asan|ubsan)\.so\S*)", out)]
    if not preload:
        return {}
    return {
        "LD_PRELOAD": ":".join(preload),
        # Apache frees its pools on exit only partly; leaks are checked by the
        # unit tests, memory errors here.
        "ASAN_OPTIONS": f"detect_leaks=0:log_path={logdir}/asan:abort_on_error=0",
        "UBSAN_OPTIONS": f"print_stacktrace=1:log_path={logdir}/ubsan",
    }


def make_world_dir(prefix):
    """A fresh directory www-data can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


# ------------------------------------------------------------------ TLS clients

def _client_context(root_pem=None, tls12_ciphers=None):
    if root_pem:
        ctx = ssl.create_default_context(cadata=root_pem)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls12_ciphers:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(tls12_ciphers)
    return ctx


class _Conn(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 with ``name`` as SNI and Host."""

    def __init__(self, name, port, context, timeout):
        super().__init__(name, port, context=context, timeout=timeout)
        self._ctx = context

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


def peer_cert(port, name, root_pem=None, tls12_ciphers=None, timeout=5.0):
    """The leaf certificate a handshake with SNI ``name`` presents."""
    ctx = _client_context(root_pem, tls12_ciphers)
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
    ctx = _client_context(root_pem)
    conn = _Conn(name, port, ctx, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.headers, data, conn.peer_der)
    finally:
        conn.close()


def http_request(port, name, path="/", method="GET", timeout=10.0):
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", name)
        conn.endheaders()
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def s_client_cert(port, name, *args, timeout=20):
    """The leaf `openssl s_client` receives with extra options (e.g. -sigalgs)."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"{LOOPBACK}:{port}", "-servername", name,
         "-showcerts", *args],
        input="", capture_output=True, text=True, timeout=timeout)
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", result.stdout, re.S)
    assert m, f"openssl s_client {' '.join(args)} got no certificate:\n{result.stdout}\n{result.stderr}"
    chain = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", result.stdout, re.S)
    return x509.load_pem_x509_certificate(m.group(0).encode()), chain


# ------------------------------------------------------------------ the server

CONF_TEMPLATE = """\
ServerRoot "{root}"
DefaultRuntimeDir "{root}/run"
PidFile "{root}/run/apache2.pid"
Mutex file:{root}/run default
{load_modules}
LoadModule autotls_module "{module}"
User {user}
Group {user}
ServerName localhost
ServerAdmin admin@localhost
Listen {ip}:{http_port}
Listen {ip}:{https_port} https
ErrorLog "{root}/logs/error.log"
LogLevel {log_level}
LogFormat "%h %t \\"%r\\" %>s %b \\"%{{Host}}i\\"" simple
CustomLog "{root}/logs/access.log" simple
DocumentRoot "{root}/htdocs"
<Directory "{root}/htdocs">
    AllowOverride None
    Require all granted
</Directory>
DirectoryIndex index.html
TypesConfig /etc/mime.types
StartServers {start_servers}
ServerLimit {start_servers}
ThreadsPerChild 25
MaxRequestWorkers 50
MinSpareThreads 1
MaxSpareThreads 50
MaxConnectionsPerChild 0
GracefulShutdownTimeout 10
SSLSessionCache "shmcb:{root}/run/ssl_scache(512000)"
"""


class Apache:
    """One apache2 with its own ServerRoot, ports and logs."""

    def __init__(self, logs=None, http_port=None, https_port=None, log_level="warn autotls:debug"):
        self.module = require_module()
        self.root = make_world_dir("autotls-apache-")
        for sub in ("run", "logs", "htdocs", "conf"):
            (self.root / sub).mkdir()
            (self.root / sub).chmod(0o755)
        ports = free_ports(2)
        self.http_port = http_port or ports[0]
        self.https_port = https_port or ports[1]
        self.store = self.root / "store"
        self.conf_path = self.root / "conf" / "apache2.conf"
        self.error_log_path = self.root / "logs" / "error.log"
        self.log_level = log_level
        self.logs = logs
        self.process = None
        # The children run as www-data: sanitizer reports need a place they may write.
        san = self.root / "sanitizer"
        san.mkdir()
        san.chmod(0o1777)
        self.env = _sanitizer_env(self.module, san)
        (self.root / "htdocs" / "index.html").write_text("hello from apache\n")

    # -- configuration

    def config_text(self, body):
        loads = "\n".join(f'LoadModule {name} "{MODULES}/{so}"' for name, so in STANDARD_MODULES)
        return CONF_TEMPLATE.format(root=self.root, load_modules=loads, module=self.module,
                                    user=USER, ip=LOOPBACK, http_port=self.http_port,
                                    https_port=self.https_port, start_servers=START_SERVERS,
                                    log_level=self.log_level) + body

    def write_config(self, body):
        self.conf_path.write_text(self.config_text(body))
        return self.conf_path

    def copy_in(self, src, name=None, mode=0o644):
        """Copy a file into the ServerRoot where www-data can read it."""
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

    def configtest(self, body):
        """`apache2 -t` on a configuration; returns (exit status, output)."""
        self.write_config(body)
        result = subprocess.run([APACHE2, "-t", "-d", str(self.root), "-f", str(self.conf_path)],
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, **self.env})
        return result.returncode, result.stdout + result.stderr

    # -- lifecycle

    def start(self, body=None, timeout=30.0):
        if body is not None:
            self.write_config(body)
        self.process = ManagedProcess(
            "apache2", [APACHE2, "-d", self.root, "-f", self.conf_path, "-DFOREGROUND"],
            self.root / "logs" / "console.log", env=self.env, logs=self.logs)
        if self.logs is not None:
            self.logs.watch("apache2 error.log", self.error_log_path)

        def up():
            self.process.check_running()
            return (self._port_ok(self.https_port) and self._port_ok(self.http_port)
                    and len(self.children()) >= START_SERVERS)
        wait_until(up, timeout, "apache2 to listen")
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

    def children(self):
        """PIDs of the parent's child processes (the workers)."""
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (d / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.pid:
                    out.append(int(d.name))
        return sorted(out)

    def graceful(self, timeout=30.0):
        """Graceful restart (SIGUSR1) and wait for the new generation to serve."""
        mark = self.log_size()
        os.kill(self.pid, signal.SIGUSR1)
        self.wait_log(r"resuming normal operations", timeout, start=mark)

    def stop(self, timeout=20.0):
        if not self.process:
            return
        if self.process.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.proc.wait(timeout)
        self.process.stop()
        # Children outliving the parent still belong to its process group.
        pgid = self.process.pid

        def group_gone():
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return True
            return False
        try:
            wait_until(group_gone, timeout, "apache2's children to exit")
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)

    def cleanup(self):
        self.stop()
        reports = sorted(self.root.glob("sanitizer/*"))
        text = "\n".join(p.read_text(errors="replace") for p in reports)
        if self.logs is not None:
            self.logs.forget("apache2 error.log")
        if not reports:
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
        """The status page through the localhost vhost of ``status_vhost``."""
        path = "/autotls-status" + (f"?format={fmt}" if fmt else "")
        return self.http("localhost", path)

    def status_json(self):
        import json
        r = self.status("json")
        assert r.status == 200, f"status page: HTTP {r.status} {r.text}"
        return json.loads(r.body)

    def cert_status(self, name):
        """The status entries (one per key type) whose names include ``name``."""
        return [c for c in self.status_json()["certificates"] if name in c["names"]]

    def renew(self, name):
        return self.http("localhost", f"/autotls-renew?name={name}", method="POST")

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


@contextlib.contextmanager
def running_apache(body, logs=None, **kw):
    apache = Apache(logs=logs, **kw)
    try:
        apache.start(body)
        yield apache
    finally:
        reports = apache.cleanup()
        assert not reports, f"sanitizer reports from apache2:\n{reports}"


def vhost(name, port, *lines, aliases=()):
    """A <VirtualHost> block with AutoTLS on."""
    out = [f"<VirtualHost {LOOPBACK}:{port}>", f"    ServerName {name}"]
    out += [f"    ServerAlias {a}" for a in aliases]
    out += [f"    {line}" for line in lines]
    out += ["    AutoTLS on", "</VirtualHost>", ""]
    return "\n".join(out)


# ------------------------------------------------------------------ Apache + Pebble

GLOBAL_TEMPLATE = """\
AutoTLSCA {directory}
AutoTLSCATrust "{trust}"
AutoTLSAcceptTerms on
AutoTLSContact admin@example.com
AutoTLSStore "{store}"
AutoTLSRetryDelay 1s 5s
"""


class Stack:
    """Apache with mod_autotls, the Pebble it gets certificates from, and
    optionally the fault-injecting ACME proxy between them."""

    def __init__(self, apache, pebble, proxy, directory_url):
        self.apache = apache
        self.pebble = pebble
        self.proxy = proxy
        self.directory_url = directory_url
        self._root = None

    @property
    def root_pem(self):
        """Pebble's root for the certificates it issues."""
        if self._root is None:
            self._root = self.pebble.root()
        return self._root

    def global_config(self):
        trust = self.apache.root / "conf" / "ca-trust.pem"
        return GLOBAL_TEMPLATE.format(directory=self.directory_url, trust=trust,
                                      store=self.apache.store)


@pytest.fixture
def make_stack(start_pebble, start_acme_proxy, local_ca, logs):
    """make_stack(body, proxy=False, start=True, **pebble_options) -> Stack.

    ``body`` is the configuration after the global AutoTLS lines: a string, or
    a function of the Apache (for its ports and paths) returning one. Pebble
    validates against this Apache's ports; with ``proxy`` the fault-injecting
    ACME proxy sits between them.
    """
    made = []

    def make(body, proxy=False, start=True, apache_kw=None, **pebble_options):
        apache = Apache(logs=logs, **(apache_kw or {}))
        made.append(apache)
        pebble = start_pebble(http_port=apache.http_port, tls_port=apache.https_port,
                              **pebble_options)
        stack = Stack(apache, pebble, None, pebble.directory_url)
        if proxy:
            stack.proxy = start_acme_proxy(pebble)
            stack.directory_url = stack.proxy.directory_url
        apache.copy_in(local_ca.cert_path, "ca-trust.pem")
        text = body(apache) if callable(body) else body
        apache.write_config(stack.global_config() + text)
        if start:
            apache.start()
        return stack

    yield make
    reports = "\n".join(r for r in (a.cleanup() for a in made) if r)
    assert not reports, f"sanitizer reports from apache2:\n{reports}"


def status_vhost(apache):
    """A plain-HTTP vhost "localhost" (first, so the default) mapping the
    status page, the renew handler and mod_status for the tests."""
    return f"""\
<VirtualHost {LOOPBACK}:{apache.http_port}>
    ServerName localhost
    <Location /autotls-status>
        SetHandler autotls-status
        Require local
    </Location>
    <Location /autotls-renew>
        SetHandler autotls-renew
        Require local
    </Location>
    <Location /server-status>
        SetHandler server-status
        Require local
    </Location>
</VirtualHost>
"""
