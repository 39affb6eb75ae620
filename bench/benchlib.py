"""What every benchmark in bench/ shares: the build, the CA, the servers,
the clients, the statistics and the result files.

The benchmarks start the real Debian apache2 and nginx (as root; workers
run as www-data) from throw-away directories under /tmp, against Pebble and
pebble-challtestsrv on 127.0.0.1 (the integration tests' harness in
tests/integration is reused for those). Nothing leaves the machine.

Each benchmark script:
  - builds autotls if needed (``--build-dir DIR`` uses an existing build),
  - runs the competitors side by side in one run, interleaved A/B/A/B,
  - reports medians of ``--rounds`` runs (at least 5 by default),
  - writes its figures to bench/results/NAME.json (read by bench/report.py,
    which generates the README's Performance table),
  - prints its ratio as the last line,
  - exits non-zero only when it could not run: no figure is ever asserted.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

from local_ca import LocalCA  # noqa: E402
from pebble import ChallTestSrv, Pebble, PebbleOptions  # noqa: E402
from procs import (LOOPBACK, HarnessError, ManagedProcess, free_ports,  # noqa: E402,F401
                   wait_group_gone, wait_until)                            # (free_ports: for the scripts)

APACHE2 = "/usr/sbin/apache2"
NGINX = "/usr/sbin/nginx"
MODULES = "/usr/lib/apache2/modules"
MOD_MD = f"{MODULES}/mod_md.so"
USER = "www-data"
RESULTS = BENCH / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The benchmark could not run (not a slow result: those are reported)."""


def log(msg):
    """Progress goes to stderr; stdout carries the results."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------ the command line

def arg_parser(description, rounds=5):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--build-dir", type=Path,
                   help="an existing configured and built autotls build directory "
                        "(default: $AUTOTLS_BUILD_DIR, else build into _build/bench)")
    p.add_argument("--rounds", type=int, default=rounds,
                   help=f"interleaved rounds per figure; medians are over these (default {rounds})")
    p.add_argument("--out", type=Path, help="result file (default bench/results/NAME.json)")
    p.add_argument("--no-save", action="store_true", help="do not write the result file")
    p.add_argument("--keep", action="store_true", help="keep the scratch directories")
    return p


def check_root():
    if os.geteuid() != 0:
        raise BenchError("the benchmarks start apache2 and nginx as root (their workers "
                         "run as www-data); run as root")


# ------------------------------------------------------------------ the build

class Build:
    def __init__(self, path):
        self.path = Path(path)
        self.apache_module = self.path / "module" / "apache" / "mod_autotls.so"
        self.nginx_module = self.path / "module" / "nginx" / "ngx_http_autotls_module.so"
        self.tool = self.path / "tools" / "autotls"

    @property
    def has_nginx(self):
        return self.nginx_module.is_file()


def _run_logged(argv, cwd, logfile, what):
    with open(logfile, "ab") as f:
        f.write(f"--- {' '.join(map(str, argv))}\n".encode())
        f.flush()
        r = subprocess.run([str(a) for a in argv], cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                           timeout=3600)
    if r.returncode != 0:
        raise BenchError(f"{what} failed (exit {r.returncode}); see {logfile}")


def ensure_build(build_dir=None):
    """The build to benchmark. A given directory is used as it is; the
    default one (_build/bench) is configured and brought up to date."""
    given = build_dir or os.environ.get("AUTOTLS_BUILD_DIR")
    if given:
        b = Build(Path(given).resolve())
        if not b.apache_module.is_file():
            raise BenchError(f"{b.apache_module} does not exist: build {b.path} first "
                             "(make), or omit --build-dir to let the benchmark build")
        return b
    path = REPO / "_build" / "bench"
    path.mkdir(parents=True, exist_ok=True)
    logfile = path / "bench-build.log"
    if not (REPO / "configure").is_file():
        log("bootstrapping (autoreconf -fi)")
        _run_logged(["autoreconf", "-fi"], REPO, logfile, "autoreconf")
    if not (path / "Makefile").is_file():
        log(f"configuring {path}")
        _run_logged([REPO / "configure", "-q"], path, logfile, "configure")
    log(f"building {path}")
    _run_logged(["make", f"-j{os.cpu_count() or 2}"], path, logfile, "make")
    b = Build(path)
    if not b.apache_module.is_file():
        raise BenchError(f"the build did not produce {b.apache_module}; see {logfile}")
    return b


# ------------------------------------------------------------------ scratch space

def world_dir(prefix):
    """A fresh directory www-data can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


class Scratch:
    """Directories made during a run, removed when the benchmark has
    reported (main_wrapper) unless kept. Removing thousands of files can
    take minutes on a disk mounted with online discard."""

    live = []

    def __init__(self, keep=False):
        self.keep = keep
        self.dirs = []
        Scratch.live.append(self)

    def make(self, prefix):
        d = world_dir(prefix)
        self.dirs.append(d)
        return d

    def cleanup(self):
        dirs, self.dirs = self.dirs, []
        if self.keep:
            for d in dirs:
                log(f"kept {d}")
            return
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ the CA

class CA:
    """challtestsrv (every name is 127.0.0.1) and a Pebble validating
    against ``http_port`` / ``tls_port``."""

    def __init__(self, workdir, http_port, tls_port, env=None, validity=None):
        self.workdir = Path(workdir)
        self.local_ca = LocalCA(self.workdir / "local-ca")
        self.trust = self.workdir / "ca-trust.pem"
        shutil.copyfile(self.local_ca.cert_path, self.trust)
        self.trust.chmod(0o644)
        self.dns = ChallTestSrv.start(self.workdir)
        try:
            opts = PebbleOptions(http_port=http_port, tls_port=tls_port, env=env,
                                 validity_period=validity)
            self.pebble = Pebble.start(self.workdir, self.local_ca, self.dns.dns_address, opts)
        except BaseException:
            self.dns.stop()
            raise
        self.directory = self.pebble.directory_url
        self.root_pem = self.pebble.root()

    def another_pebble(self, http_port, tls_port, env=None):
        """A second Pebble on the same DNS (for servers running side by side)."""
        opts = PebbleOptions(http_port=http_port, tls_port=tls_port, env=env)
        return Pebble.start(self.workdir, self.local_ca, self.dns.dns_address, opts)

    def cpu_seconds(self):
        return tree_cpu(self.pebble.process.pid)

    def stop(self):
        self.pebble.stop()
        self.dns.stop()


# ------------------------------------------------------------------ processes

def _stat(pid):
    """(ppid, pgrp, utime+stime, cutime+cstime) in clock ticks, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = text.rsplit(")", 1)[1].split()
    return int(f[1]), int(f[2]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14])


def descendants(root_pid):
    """PIDs of root_pid and every process below it."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st:
                parents.setdefault(st[0], []).append(int(d.name))
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def tree_cpu(root_pid):
    """CPU seconds (user + system, all threads) of a process tree, including
    the children it has already reaped."""
    total = 0
    for pid in descendants(root_pid):
        st = _stat(pid)
        if st:
            total += st[2] + (st[3] if pid == root_pid else 0)
    return total / CLK_TCK


def smaps(pid):
    """{Rss, Pss, Shared_Clean, ...} in bytes from smaps_rollup."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            m = re.match(r"(\w+):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2)) * 1024
    except OSError:
        pass
    return out


def tree_memory(root_pid):
    """Memory of a server: per process and summed (Pss sums to what the tree
    really occupies; Rss counts shared pages once per process)."""
    procs = {pid: smaps(pid) for pid in descendants(root_pid)}
    procs = {p: m for p, m in procs.items() if m}
    return {
        "processes": len(procs),
        "rss": sum(m.get("Rss", 0) for m in procs.values()),
        "pss": sum(m.get("Pss", 0) for m in procs.values()),
        "parent_rss": procs.get(root_pid, {}).get("Rss", 0),
        "child_rss": [m.get("Rss", 0) for p, m in procs.items() if p != root_pid],
    }


def port_open(port):
    with contextlib.suppress(OSError):
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    return False


class LogTail:
    """New complete lines of a growing log file, each with the time it was seen."""

    def __init__(self, path):
        self.path = Path(path)
        self.pos = 0
        self.partial = b""

    def skip_to_end(self):
        with contextlib.suppress(OSError):
            self.pos = self.path.stat().st_size
        self.partial = b""

    def lines(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return []
        self.pos += len(data)
        data = self.partial + data
        parts = data.split(b"\n")
        self.partial = parts.pop()
        return [p.decode("utf-8", "replace") for p in parts]


def count_names(server, pattern, want, timeout, tail=None):
    """Wait until ``want`` distinct names (``pattern``'s group 1) appeared in
    the server's error log (read through ``tail``, else from its start);
    returns the moment the last one was seen (time.monotonic)."""
    tail = tail or LogTail(server.error_log)
    seen = set()
    deadline = time.monotonic() + timeout
    while len(seen) < want:
        server.check_running()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{server.flavour}: only {len(seen)} of {want} names after "
                               f"{timeout:g} s; log:\n{server.log_tail()}")
        for line in tail.lines():
            m = pattern.search(line)
            if m:
                seen.add(m.group(1))
        time.sleep(0.05)
    return time.monotonic()


# ------------------------------------------------------------------ Apache

APACHE_CONF = """\
ServerRoot "{root}"
DefaultRuntimeDir "{root}/run"
PidFile "{root}/run/apache2.pid"
Mutex file:{root}/run default
{load_modules}
User {user}
Group {user}
ServerName localhost
ServerAdmin admin@localhost
Listen {ip}:{http_port}
{https_listens}
ErrorLog "{root}/logs/error.log"
ErrorLogFormat "[%{{cu}}t] [%-m:%l] [pid %P:tid %T] %M"
LogLevel {log_level}
DocumentRoot "{root}/htdocs"
<Directory "{root}/htdocs">
    AllowOverride None
    Require all granted
</Directory>
TypesConfig /etc/mime.types
StartServers 2
ServerLimit 2
ThreadsPerChild 64
MaxRequestWorkers 128
MinSpareThreads 1
MaxSpareThreads 128
MaxConnectionsPerChild 0
KeepAliveTimeout 5
GracefulShutdownTimeout 10
SSLSessionCache "shmcb:{root}/run/ssl_scache(512000)"
"""

APACHE_MODULES = [
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_host_module", "mod_authz_host.so"),
    ("ssl_module", "mod_ssl.so"),
    ("socache_shmcb_module", "mod_socache_shmcb.so"),
    ("mime_module", "mod_mime.so"),
    ("status_module", "mod_status.so"),
]


class Apache:
    """One apache2 with its own ServerRoot. ``flavour`` is "autotls"
    (mod_autotls loaded), "md" (mod_md loaded) or "plain" (neither)."""

    def __init__(self, scratch, flavour, http_port, https_ports, build=None, log_level="warn"):
        self.flavour = flavour
        self.build = build
        self.root = scratch.make(f"bench-apache-{flavour}-")
        for sub in ("run", "logs", "htdocs", "conf"):
            (self.root / sub).mkdir()
            (self.root / sub).chmod(0o755)
        (self.root / "htdocs" / "index.html").write_text("hello\n")
        self.http_port = http_port
        self.https_ports = list(https_ports)
        self.https_port = self.https_ports[0] if self.https_ports else None
        self.store = self.root / "store"
        self.conf_path = self.root / "conf" / "apache2.conf"
        self.error_log = self.root / "logs" / "error.log"
        self.log_level = log_level
        self.process = None
        self.started_at = None

    def write_config(self, body):
        loads = [f'LoadModule {n} "{MODULES}/{so}"' for n, so in APACHE_MODULES]
        if self.flavour == "autotls":
            loads.append(f'LoadModule autotls_module "{self.build.apache_module}"')
        elif self.flavour == "md":
            loads.append(f'LoadModule md_module "{MOD_MD}"')
        listens = "\n".join(f"Listen {LOOPBACK}:{p} https" for p in self.https_ports)
        text = APACHE_CONF.format(root=self.root, load_modules="\n".join(loads), user=USER,
                                  ip=LOOPBACK, http_port=self.http_port, https_listens=listens,
                                  log_level=self.log_level) + body
        self.conf_path.write_text(text)

    def write_file(self, rel, data, mode=0o644):
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        path.chmod(mode)
        return path

    def configtest(self):
        r = subprocess.run([APACHE2, "-t", "-d", str(self.root), "-f", str(self.conf_path)],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise BenchError(f"apache2 -t ({self.flavour}) failed:\n{r.stdout}{r.stderr}")

    def spawn(self):
        """Start apache2 and return at once (the caller times the start)."""
        self.started_at = time.monotonic()
        self.process = ManagedProcess(
            f"apache2-{self.flavour}",
            [APACHE2, "-d", self.root, "-f", self.conf_path, "-DFOREGROUND"],
            self.root / "logs" / "console.log")
        return self

    def wait_listening(self, timeout=600):
        ports = [self.http_port] + self.https_ports

        def up():
            self.check_running()
            return all(port_open(p) for p in ports) and len(self.children()) >= 2
        wait_until(up, timeout, f"apache2 ({self.flavour}) to listen", interval=0.02)

    def start(self, timeout=600):
        self.spawn()
        self.wait_listening(timeout)
        return self

    def check_running(self):
        if self.process and not self.process.running():
            raise BenchError(f"apache2 ({self.flavour}) exited; error log {self.error_log}:\n"
                             + self.log_tail())

    def log_tail(self, n=40):
        with contextlib.suppress(OSError):
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-n:])
        return ""

    @property
    def pid(self):
        return self.process.pid

    def children(self):
        return [p for p in descendants(self.pid) if p != self.pid]

    def graceful(self):
        os.kill(self.pid, signal.SIGUSR1)

    def stop(self, timeout=30):
        if not self.process:
            return
        if self.process.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.proc.wait(timeout)
        pgid = self.pid
        self.process.stop()
        wait_group_gone(pgid, timeout, "apache2's children to exit", kill_on_timeout=True)
        self.process = None

    def cpu(self):
        return tree_cpu(self.pid)

    def memory(self):
        return tree_memory(self.pid)


def autotls_apache_globals(ca, store, key="ec:P-256", challenges="http-01", extra=""):
    return (f"AutoTLSCA {ca.directory}\n"
            f'AutoTLSCATrust "{ca.trust}"\n'
            "AutoTLSAcceptTerms on\n"
            "AutoTLSContact admin@example.com\n"
            f'AutoTLSStore "{store}"\n'
            f"AutoTLSKeys {key}\n"
            f"AutoTLSChallenges {challenges}\n"
            "AutoTLSRetryDelay 1s 5s\n" + extra)


def md_apache_globals(ca, store, http_port, https_port, key="ec:P-256", challenges="http-01",
                      extra=""):
    keyspec = {"ec:P-256": "secp256r1", "rsa:2048": "RSA 2048"}[key]
    return (f"MDCertificateAuthority {ca.directory}\n"
            f'MDCACertificateFile "{ca.trust}"\n'
            "MDCertificateAgreement accepted\n"
            "MDContactEmail admin@example.com\n"
            f'MDStoreDir "{store}"\n'
            f"MDPrivateKeys {keyspec}\n"
            f"MDCAChallenges {challenges}\n"
            f"MDPortMap http:{http_port} https:{https_port}\n"
            "MDRetryDelay 1s\n" + extra)


def https_vhost(port, name, *lines):
    out = [f"<VirtualHost {LOOPBACK}:{port}>", f"    ServerName {name}"]
    out += [f"    {line}" for line in lines]
    out += ["</VirtualHost>", ""]
    return "\n".join(out)


def status_vhost(http_port, *locations):
    """A plain-HTTP default vhost "localhost" with handlers: (path, handler)."""
    out = [f"<VirtualHost {LOOPBACK}:{http_port}>", "    ServerName localhost"]
    for path, handler in locations:
        out += [f"    <Location {path}>", f"        SetHandler {handler}",
                "        Require local", "    </Location>"]
    out += ["</VirtualHost>", ""]
    return "\n".join(out)


# ------------------------------------------------------------------ nginx

NGINX_CONF = """\
load_module {module};
user {user};
worker_processes 2;
pid {root}/run/nginx.pid;
error_log {root}/logs/error.log {log_level};
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
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
    """One nginx with its own prefix and the autotls module loaded."""

    def __init__(self, scratch, build, http_port, https_ports, log_level="notice"):
        self.flavour = "nginx"
        self.build = build
        self.root = scratch.make("bench-nginx-")
        for sub in ("run", "logs", "html", "tmp", "conf"):
            (self.root / sub).mkdir()
            (self.root / sub).chmod(0o755)
        (self.root / "html" / "index.html").write_text("hello\n")
        self.http_port = http_port
        self.https_ports = list(https_ports)
        self.https_port = self.https_ports[0] if self.https_ports else None
        self.store = self.root / "store"
        self.conf_path = self.root / "conf" / "nginx.conf"
        self.error_log = self.root / "logs" / "error.log"
        self.log_level = log_level
        self.process = None
        self.started_at = None

    def write_config(self, body):
        self.conf_path.write_text(NGINX_CONF.format(
            module=self.build.nginx_module, user=USER, root=self.root,
            log_level=self.log_level, body=body))

    write_file = Apache.write_file

    def _cmd(self, *args):
        return [NGINX, "-p", f"{self.root}/", "-c", str(self.conf_path), *args]

    def configtest(self):
        r = subprocess.run(self._cmd("-t"), capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise BenchError(f"nginx -t failed:\n{r.stdout}{r.stderr}")

    def spawn(self):
        self.started_at = time.monotonic()
        self.process = ManagedProcess("nginx", self._cmd("-g", "daemon off;"),
                                      self.root / "logs" / "console.log")
        return self

    def workers(self):
        out = []
        for pid in descendants(self.pid):
            if pid == self.pid:
                continue
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"worker process" in cmd and b"shutting down" not in cmd:
                    out.append(pid)
        return out

    def wait_listening(self, timeout=600):
        ports = [self.http_port] + self.https_ports

        def up():
            self.check_running()
            return all(port_open(p) for p in ports) and len(self.workers()) >= 2
        wait_until(up, timeout, "nginx to listen", interval=0.02)

    def start(self, timeout=600):
        self.spawn()
        self.wait_listening(timeout)
        return self

    check_running = Apache.check_running
    log_tail = Apache.log_tail
    pid = Apache.pid
    cpu = Apache.cpu
    memory = Apache.memory

    def stop(self, timeout=30):
        if not self.process:
            return
        if self.process.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGQUIT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.proc.wait(timeout)
        self.process.stop()
        self.process = None


def autotls_nginx_globals(ca, store, key="ec:P-256", challenges="http-01", extra=""):
    return (f"    autotls_ca {ca.directory};\n"
            f"    autotls_ca_trust {ca.trust};\n"
            "    autotls_accept_terms on;\n"
            "    autotls_contact admin@example.com;\n"
            f"    autotls_store {store};\n"
            f"    autotls_keys {key};\n"
            f"    autotls_challenges {challenges};\n"
            "    autotls_retry_delay 1s 5s;\n" + extra)


def nginx_server(port, name, *lines, ssl_listen=True):
    out = ["    server {", f"        listen {LOOPBACK}:{port}{' ssl' if ssl_listen else ''};",
           f"        server_name {name};"]
    out += [f"        {line}" for line in lines]
    out += ["    }", ""]
    return "\n".join(out)


# ------------------------------------------------------------------ TLS clients

def verifying_context(root_pem):
    """A client context that accepts only certificates chaining to root_pem
    (so a placeholder or a self-signed fallback never counts as served)."""
    ctx = ssl.create_default_context(cadata=root_pem)
    return ctx


def served_cert(port, name, ctx, timeout=5.0):
    """DER of the verified leaf served for ``name``, or None."""
    with contextlib.suppress(OSError, ssl.SSLError):
        with socket.create_connection((LOOPBACK, port), timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=name) as tls:
                return tls.getpeercert(binary_form=True)
    return None


def http_get(port, path, host="localhost", method="GET", timeout=30.0, tls_ctx=None):
    """(status, body bytes) of one request over a fresh connection."""
    import http.client
    if tls_ctx:
        conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=timeout, context=tls_ctx)
    else:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        if method == "POST":
            conn.putheader("Content-Length", "0")
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ statistics

def median(values):
    return statistics.median(values) if values else None


def summary(values):
    """median, min, max and the values themselves."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
            "n": len(vals), "values": vals}


def interleaved(items, round_index):
    """A/B order alternating each round (A B, B A, A B ...): neither side
    always runs first, on a warmer or a cooler machine."""
    items = list(items)
    return items if round_index % 2 == 0 else items[::-1]


def fmt(value, unit="", digits=3):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if abs(value) >= 100:
            text = f"{value:,.0f}"
        elif abs(value) >= 10:
            text = f"{value:.1f}"
        else:
            text = f"{value:.{digits}g}"
    else:
        text = f"{value:,}"
    return f"{text} {unit}".strip()


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# ------------------------------------------------------------------ the machine

def _cmd_out(argv):
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip()
    return ""


def machine():
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem = int(m.group(1)) * 1024 if m else 0
    os_name = ""
    with contextlib.suppress(OSError):
        m = re.search(r'PRETTY_NAME="([^"]*)"', Path("/etc/os-release").read_text())
        os_name = m.group(1) if m else ""
    apache = re.search(r"Apache/(\S+)", _cmd_out([APACHE2, "-v"]))
    nginx = re.search(r"nginx/(\S+)", _cmd_out([NGINX, "-v"]))
    md = re.search(r"\b(2\.\d+\.\d+)\b", _cmd_out(["strings", MOD_MD]))
    commit = _cmd_out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _cmd_out(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {
        "load_at_start": load,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "os": os_name,
        "apache": apache.group(1) if apache else "",
        "nginx": nginx.group(1) if nginx else "",
        "mod_md": md.group(1) if md else "",
        "openssl": _cmd_out(["openssl", "version"]).split(" (")[0],
        "pebble": _cmd_out(["dpkg-query", "-W", "-f=${Version}", "pebble"]),
        "commit": (commit + ("+local changes" if dirty else "")) if commit else "",
    }


def machine_line(m):
    return (f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, "
            f"Linux {m['kernel']}; Apache {m['apache']}, nginx {m['nginx']}, "
            f"mod_md {m['mod_md']}, {m['openssl']}, Pebble {m['pebble']}")


# ------------------------------------------------------------------ results

class Results:
    """Figures of one benchmark run, saved as JSON for bench/report.py.

    A row: what was measured, the autotls figure, the figure it is compared
    with, the ratio (always "how many times better autotls is": >1 wins),
    the target, and whether the target was met.
    """

    def __init__(self, name, command, args):
        self.name = name
        self.command = command
        self.args = args
        self.rows = []
        self.extra = {}
        self.machine = machine()
        self.started = datetime.datetime.now(datetime.timezone.utc)

    def row(self, figure, autotls, baseline, baseline_name, unit, better, target=None,
            target_ratio=None, target_max=None, note="", paired_ratio=None, **detail):
        """better: "lower" or "higher" (which way is good for ``unit``).
        The target is met when the ratio reaches target_ratio, or when the
        autotls figure is at most target_max. paired_ratio: the median of
        per-round ratios, when the rounds pair A and B run back to back (it
        cancels drift in the machine's load better than a ratio of medians)."""
        if paired_ratio is not None:
            r = paired_ratio
        elif better == "lower":
            r = ratio(baseline, autotls)
        else:
            r = ratio(autotls, baseline)
        met = None
        if target_ratio is not None and r is not None:
            met = r >= target_ratio
        if target_max is not None and autotls is not None:
            met = autotls <= target_max if met is None else (met and autotls <= target_max)
        self.rows.append({"figure": figure, "autotls": autotls, "baseline": baseline,
                          "baseline_name": baseline_name, "unit": unit, "better": better,
                          "ratio": r, "target": target, "target_ratio": target_ratio,
                          "met": met, "note": note, "detail": detail})
        return r

    def reproduce(self):
        """The command line that reproduces this run (options that only
        say where things are left out)."""
        out, skip = [self.command], False
        for a in sys.argv[1:]:
            if skip:
                skip = False
                continue
            if a in ("--build-dir", "--out"):
                skip = True
                continue
            if a.startswith(("--build-dir=", "--out=")) or a in ("--keep", "--no-save"):
                continue
            out.append(a)
        return " ".join(out)

    def save(self, out=None):
        path = out or (RESULTS / f"{self.name}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"bench": self.name, "command": self.reproduce(), "rounds": self.args.rounds,
               "date": self.started.strftime("%Y-%m-%d %H:%M UTC"),
               "duration_s": round((datetime.datetime.now(datetime.timezone.utc)
                                    - self.started).total_seconds()),
               "machine": self.machine, "rows": self.rows, "extra": self.extra}
        path.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"results written to {path}")
        return path

    def print_table(self):
        print(f"# {self.name}: {self.reproduce()}")
        print(f"# machine: {machine_line(self.machine)}")
        for r in self.rows:
            rt = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x"
            tgt = f"  target {r['target']}: {'met' if r['met'] else 'MISSED'}" \
                if r["target"] and r["met"] is not None else ""
            print(f"{r['figure']}: autotls {fmt(r['autotls'], r['unit'])}, "
                  f"{r['baseline_name']} {fmt(r['baseline'], r['unit'])}, ratio {rt}{tgt}")


def main_wrapper(fn):
    """Run a benchmark's main; exit 2 (with the reason) if it could not run."""
    try:
        check_root()
        rc = fn()
    except (BenchError, HarnessError, TimeoutError) as e:
        sys.stderr.write(f"benchmark could not run: {e}\n")
        rc = 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        rc = 130
    finally:
        ManagedProcess.stop_all()
        for sc in Scratch.live:
            sc.cleanup()
    sys.exit(rc or 0)
