"""Fixtures for the integration tests: Pebble, DNS, the ACME proxy, logs.

Fixtures (scope):
    build_dir (session)       Path of the build (AUTOTLS_BUILD_DIR); fails if unset
    autotls_bin (session)     Path of the built command-line tool
    harness_dir (session)     a world-readable scratch directory (servers that
                              drop privileges can read files placed there)
    local_ca (session)        LocalCA: trust ``local_ca.cert_path`` to reach
                              Pebble and the proxy over HTTPS
    challtestsrv (session)    ChallTestSrv: DNS for Pebble, set_txt/clear_txt
    logs (session)            LogWatch: ``logs.watch(label, path)`` shows a log
                              file's new lines if the current test fails
                              (processes started with logs=logs are watched
                              until they stop)
    start_pebble (function)   factory: start_pebble(http_port=..., tls_port=...,
                              eab_keys=..., require_eab=..., nonce_reject=...,
                              authz_reuse=..., alternate_roots=...,
                              chain_length=..., validity_period=..., env=...)
    pebble (function)         a Pebble with default options
    start_acme_proxy (function) factory: start_acme_proxy(pebble) -> AcmeProxy
    acme_proxy (function)     an AcmeProxy in front of ``pebble``
    dns01_hook (function)     Dns01Hook: ``.path`` is an executable dns-01 hook
                              bound to challtestsrv; ``.calls()`` lists its calls

Every test has a time limit (AUTOTLS_TEST_TIMEOUT seconds, default 300).
"""

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

from acme_proxy import AcmeProxy
from local_ca import LocalCA
from pebble import ChallTestSrv, Pebble, PebbleOptions
from procs import LogWatch, ManagedProcess

HERE = Path(__file__).resolve().parent
TEST_TIMEOUT = int(os.environ.get("AUTOTLS_TEST_TIMEOUT", "300"))

_logs = LogWatch()


# ---------------------------------------------------------------- session hooks

def pytest_configure(config):
    # A terminated run still tears down: pytest unconfigures after an interrupt.
    signal.signal(signal.SIGTERM, _interrupt)
    # Loopback only: never send test traffic through a configured HTTP proxy.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"


def pytest_unconfigure(config):
    ManagedProcess.stop_all()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class PhaseTimeout(Exception):
    """A test phase ran past AUTOTLS_TEST_TIMEOUT."""


def _alarm(signum, frame):
    raise PhaseTimeout(f"test phase exceeded {TEST_TIMEOUT}s (AUTOTLS_TEST_TIMEOUT)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    _logs.mark()
    with _time_limit():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _time_limit():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    with _time_limit():
        yield
    _logs.end_test()


class _time_limit:
    def __enter__(self):
        self._previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(TEST_TIMEOUT)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self._previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for label, text in _logs.sections():
            report.sections.append((f"log: {label}", text))


# ---------------------------------------------------------------- build

@pytest.fixture(scope="session")
def build_dir():
    value = os.environ.get("AUTOTLS_BUILD_DIR")
    if not value:
        pytest.fail("AUTOTLS_BUILD_DIR is not set: point it at a configured and built "
                    "build directory (scripts/test does this)", pytrace=False)
    path = Path(value).resolve()
    if not (path / "Makefile").is_file():
        pytest.fail(f"AUTOTLS_BUILD_DIR={value} is not a configured build directory "
                    "(no Makefile there)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def autotls_bin(build_dir):
    tool = build_dir / "tools" / "autotls"
    if not os.access(tool, os.X_OK):
        pytest.fail(f"{tool} is missing: run make in {build_dir}", pytrace=False)
    return tool


# ---------------------------------------------------------------- environment

@pytest.fixture(scope="session")
def logs():
    return _logs


@pytest.fixture(scope="session")
def harness_dir():
    """Scratch space outside pytest's private (0700) temporary directory."""
    path = Path(tempfile.mkdtemp(prefix="autotls-it-"))
    path.chmod(0o755)
    yield path
    if not os.environ.get("AUTOTLS_KEEP_TMP"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def local_ca(harness_dir):
    return LocalCA(harness_dir / "local-ca")


@pytest.fixture(scope="session")
def challtestsrv(harness_dir):
    srv = ChallTestSrv.start(harness_dir, logs=_logs)
    yield srv
    srv.stop()


@pytest.fixture
def start_pebble(harness_dir, local_ca, challtestsrv):
    """Factory: start_pebble(**PebbleOptions fields) -> a running Pebble."""
    started = []

    def start(**options):
        pebble = Pebble.start(harness_dir, local_ca, challtestsrv.dns_address,
                              PebbleOptions(**options), logs=_logs)
        started.append(pebble)
        return pebble

    yield start
    for pebble in started:
        pebble.stop()


@pytest.fixture
def pebble(start_pebble):
    return start_pebble()


@pytest.fixture
def start_acme_proxy(local_ca):
    """Factory: start_acme_proxy(pebble, seed=None) -> a running AcmeProxy."""
    started = []
    cert, key = local_ca.issue("acme-proxy")

    def start(pebble, **kwargs):
        proxy = AcmeProxy(pebble.directory_url, str(local_ca.cert_path), str(cert), str(key),
                          **kwargs).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def acme_proxy(start_acme_proxy, pebble):
    return start_acme_proxy(pebble)


class Dns01Hook:
    """An executable dns-01 hook that publishes TXT records in challtestsrv.

    path: the command to configure; calls(): [(action, name, value)] so far.
    """

    def __init__(self, directory, management_url):
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.log_path = directory / "calls.log"
        self.log_path.touch()
        self.log_path.chmod(0o666)        # the server's unprivileged user appends
        self.path = directory / "dns01-hook"
        self.path.write_text(
            "#!/bin/sh\n"
            f"exec {sys.executable} {HERE / 'dns01_hook.py'} "
            f"--management {management_url} --log {self.log_path} -- \"$@\"\n")
        self.path.chmod(0o755)

    def calls(self):
        return [tuple(line.split(" ", 2)) for line in self.log_path.read_text().splitlines()]


@pytest.fixture
def dns01_hook(harness_dir, challtestsrv, request):
    safe_name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:80]
    directory = Path(tempfile.mkdtemp(prefix=f"dns01-{safe_name}-", dir=harness_dir))
    directory.chmod(0o755)
    return Dns01Hook(directory, challtestsrv.management_url)
