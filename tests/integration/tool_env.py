"""The autotls command-line tool against Pebble, for the test_tool_* tests.

``ToolEnv`` runs the built tool with one store directory and the options
that point it at one Pebble (or at the ACME proxy in front of it): the CA's
directory, the local CA that signs Pebble's HTTPS certificate, and the ports
Pebble validates http-01 and tls-alpn-01 against, where the tool's own
responder listens. Every run has a deadline. A tool built with sanitizers
writes its reports into a directory that the fixture checks after the test.
"""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from cryptography import x509

from pebble import split_pem

RUN_TIMEOUT = 150          # seconds one run of the tool may take
TOOL_TIMEOUT = "120"       # what the tool itself is told (--timeout)
EAB_KID = "kid-1"
EAB_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


class ToolEnv:
    def __init__(self, binary, workdir, local_ca, pebble, sanitizer_dir):
        self.binary = str(binary)
        self.workdir = Path(workdir)
        self.store = self.workdir / "store"
        self.local_ca = local_ca
        self.pebble = pebble
        self.ca_url = pebble.directory_url
        self.sanitizer_dir = sanitizer_dir

    # -- running

    def env(self):
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = f"log_path={self.sanitizer_dir}/asan:detect_leaks=1:abort_on_error=0"
        env["UBSAN_OPTIONS"] = f"log_path={self.sanitizer_dir}/ubsan:print_stacktrace=1:halt_on_error=0"
        env["LSAN_OPTIONS"] = f"log_path={self.sanitizer_dir}/lsan"
        return env

    def argv(self, *args):
        return [self.binary, *[str(a) for a in args]]

    def run(self, *args, timeout=RUN_TIMEOUT):
        """Run the tool; returns the CompletedProcess (text)."""
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout,
                              env=self.env(), stdin=subprocess.DEVNULL)

    def popen(self, *args, log_path):
        """Start the tool in the background, stderr+stdout into log_path."""
        log = open(log_path, "wb")
        try:
            return subprocess.Popen(self.argv(*args), stdout=log, stderr=subprocess.STDOUT,
                                    env=self.env(), stdin=subprocess.DEVNULL)
        finally:
            log.close()

    def ca_args(self):
        return ["--store", self.store, "--ca", self.ca_url, "--ca-trust", self.local_ca.cert_path,
                "--timeout", TOOL_TIMEOUT]

    def issue_args(self, names, challenge="http-01", extra=()):
        args = ["issue", *self.ca_args(), "--accept-terms", "--contact", "admin@example.test"]
        for n in names:
            args += ["--name", n]
        if challenge:
            args += ["--challenge", challenge]
        if challenge in (None, "http-01"):
            args += ["--http-port", self.pebble.http_port]
        if challenge in (None, "tls-alpn-01"):
            args += ["--tls-port", self.pebble.tls_port]
        return args + list(extra)

    def issue(self, names, challenge="http-01", extra=(), expect_ok=True):
        r = self.run(*self.issue_args(names, challenge, extra))
        if expect_ok:
            assert r.returncode == 0, f"issue failed ({r.returncode}): {r.stderr}"
        return r

    def renew(self, *args, expect_ok=True):
        r = self.run("renew", "--store", self.store, "--timeout", TOOL_TIMEOUT, *args)
        if expect_ok:
            assert r.returncode == 0, f"renew failed ({r.returncode}): {r.stderr}"
        return r

    def status(self):
        r = self.run("status", "--store", self.store, "--json")
        assert r.returncode == 0, f"status failed: {r.stderr}"
        return json.loads(r.stdout)

    # -- the store

    def cert_dirs(self):
        """{id: directory} of the stored certificate sets."""
        base = self.store / "certs"
        if not base.is_dir():
            return {}
        return {d.name: d for d in base.iterdir() if (d / "chain.pem").is_file()}

    def cert_dir(self, name, key_type=None):
        """The certificate set holding ``name`` (and, if given, of ``key_type``)."""
        found = []
        for d in self.cert_dirs().values():
            meta = json.loads((d / "meta.json").read_text())
            if name in meta.get("names", []) and (key_type is None or meta.get("key") == key_type):
                found.append(d)
        assert len(found) == 1, f"{len(found)} certificate sets for {name} {key_type or ''}"
        return found[0]

    def chain(self, name, key_type=None):
        return (self.cert_dir(name, key_type) / "chain.pem").read_text()

    def meta(self, name, key_type=None):
        return json.loads((self.cert_dir(name, key_type) / "meta.json").read_text())

    def leaf(self, name, key_type=None):
        return x509.load_pem_x509_certificate(split_pem(self.chain(name, key_type))[0].encode())

    def serial(self, name, key_type=None):
        return self.leaf(name, key_type).serial_number

    def account_key(self):
        keys = list((self.store / "accounts").glob("*/account.key.pem"))
        assert len(keys) == 1, f"{len(keys)} account keys in the store"
        return keys[0].read_text()

    def tool_json(self):
        return json.loads((self.store / "tool.json").read_text())


def one_line_error(result):
    """The tool's failure message: exactly one line on stderr, 'autotls: ...'."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {result.stderr!r}"
    assert lines[0].startswith("autotls: "), lines[0]
    return lines[0]


def _sanitizer_reports(directory):
    out = []
    for p in sorted(Path(directory).iterdir()):
        text = p.read_text(errors="replace")
        if text.strip():
            out.append(f"--- {p.name}\n{text}")
    return "\n".join(out)


@pytest.fixture
def make_tool(autotls_bin, local_ca, harness_dir, tmp_path):
    """make_tool(pebble_or_proxy_pebble, ca_url=None) -> ToolEnv.

    Each ToolEnv has its own store under tmp_path. Sanitizer reports of any
    run fail the test at teardown.
    """
    sanitizer_dir = Path(tempfile.mkdtemp(prefix="tool-san-", dir=harness_dir))
    count = [0]

    def make(pebble, ca_url=None):
        count[0] += 1
        workdir = tmp_path / f"tool{count[0]}"
        workdir.mkdir()
        env = ToolEnv(autotls_bin, workdir, local_ca, pebble, sanitizer_dir)
        if ca_url:
            env.ca_url = ca_url
        return env

    yield make
    reports = _sanitizer_reports(sanitizer_dir)
    assert not reports, f"sanitizer reports from the tool:\n{reports}"


@pytest.fixture
def tool(make_tool, pebble):
    """A ToolEnv against the default Pebble."""
    return make_tool(pebble)
