"""Shared pieces of the reliability tests (test_reliability_*.py).

- ``cases``: a fixture that records every case a test tries, under a fault
  class, with what it measured and whether it held. Each case is one line
  of JSON in the results file (``$AUTOTLS_RELIABILITY_RESULTS``, default
  ``reliability-cases.jsonl`` in the build directory, emptied at the start
  of each session). ``tests/reliability_table.py`` turns that file into the
  README's "Reliability" table, so the table always comes from a run.
- Health of a running Apache: the same parent and children as before, no
  child that died of a signal, no sanitizer report.
- Consistency of a store directory: every record a reader can see is
  complete, every certificate's key matches it (checked with openssl),
  private keys 0600, directories 0700.
- Small waits on the status page.
"""

import contextlib
import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509

from procs import wait_until

RESULTS_ENV = "AUTOTLS_RELIABILITY_RESULTS"
RESULTS_NAME = "reliability-cases.jsonl"

# Fault class -> what every case of it checks. The table prints these
# sentences next to the counts, in this order.
CLASSES = {
    "CA unreachable at startup":
        "stored certificates served over HTTPS; error and next retry on the status page and in "
        "the log; retries spaced out; issued once the CA listens again",
    "CA unreachable during an order":
        "connection dropped mid-order: error and next retry shown, the existing certificate "
        "still served, the order resumed (no second newOrder) once the CA is back",
    "CA failing: backoff with jitter":
        "every newOrder answered 503: per-certificate retry gaps grow exponentially within "
        "+-25% jitter, certificates do not retry in lockstep, bounded request count, issued "
        "when the CA recovers",
    "5xx share":
        "a share of requests answered 500/503: no crash, error with the CA's problem on the "
        "status page, old certificate served, renewed once the fault clears",
    "hang past the timeout":
        "the CA says nothing: the request is abandoned at the request timeout, error shown, "
        "renewed once the fault clears",
    "trickled response":
        "the CA sends one byte a second: abandoned at the request timeout, error shown, renewed "
        "once the fault clears",
    "malformed JSON":
        "broken JSON body: clear error, no crash, renewed once the fault clears",
    "truncated JSON":
        "JSON cut in half: clear error, no crash, renewed once the fault clears",
    "short body":
        "fewer bytes than Content-Length, connection closed: clear error, renewed once the "
        "fault clears",
    "10 MiB body":
        "a 10 MiB answer: refused by the size limit without a crash, renewed once the fault "
        "clears",
    "wrong Content-Type":
        "text/html instead of JSON / PEM: clear error, renewed once the fault clears",
    "dropped Replay-Nonce":
        "answers without a nonce: a fresh nonce is fetched or the error is shown; renewed once "
        "the fault clears",
    "429 + Retry-After":
        "rate limited: error shown with the next attempt, the next request to that resource "
        "not before Retry-After (to the second), renewed afterwards",
    "connection closed":
        "connection closed without an answer: clear error, renewed once the fault clears",
    "refused connections":
        "nothing listens at the CA: clear error, old certificate served, renewed once the CA "
        "listens again",
    "kill -9 during issuance":
        "the whole server (parent and children) killed at a random moment: after each restart "
        "no partial record is visible, every stored certificate matches its key (openssl); "
        "at the end every certificate is issued and served",
    "disk full":
        "store on a full tmpfs: stored certificates still served, the error names the path, "
        "stored files unchanged, renewed once space returns",
    "corrupted store files":
        "damaged file: an error naming the file, the file moved aside byte for byte (never "
        "deleted), the certificate obtained again",
    "hostile HTTP-01 requests":
        "dot segments, percent-encoding, long tokens, bad characters: 4xx, no crash, no file "
        "system access by the workers (strace)",
    "hostile Host headers":
        "huge or malformed Host headers: 4xx, no crash, no file system access",
    "hostile TLS ClientHellos":
        "acme-tls/1 offered for names with no pending challenge: handshake refused or no "
        "acme-tls/1, no crash, no file system access",
    "secrets":
        "private keys 0600, directories 0700; no key material or EAB key in the status page "
        "(HTML, JSON, Prometheus, mod_status), the tool's status or the logs; the status and "
        "renew handlers answer only where mapped",
    "ARI":
        "a renewalInfo window moved earlier is followed (renewal with replaces); renewalInfo "
        "not asked again before its Retry-After",
    "profiles":
        "the configured profile is sent in newOrder; a profile the CA does not offer is a "
        "configuration error naming the profile and the directive; a malformed one fails "
        "configtest",
    "valgrind (tool)":
        "the autotls tool under valgrind memcheck against Pebble: no memory error, no definite "
        "leak",
}


# ------------------------------------------------------------------ cases

def results_path(build_dir):
    explicit = os.environ.get(RESULTS_ENV)
    return Path(explicit) if explicit else Path(build_dir) / RESULTS_NAME


class Cases:
    """Records the cases of one test into the results file."""

    def __init__(self, path, test, build):
        self.path = path
        self.test = test
        self.build = build

    @contextlib.contextmanager
    def case(self, fault_class, name, **details):
        """Record the case run inside the block: passed if the block ends
        normally, failed (with the exception) otherwise. ``details`` (and
        whatever the block adds to the yielded dict) describe what was
        measured."""
        if fault_class not in CLASSES:
            raise ValueError(f"unknown fault class {fault_class!r}")
        start = time.monotonic()
        info = dict(details)
        outcome, error = "passed", None
        try:
            yield info
        except BaseException as e:
            outcome, error = "failed", f"{type(e).__name__}: {str(e)[:300]}"
            raise
        finally:
            record = {"class": fault_class, "rank": list(CLASSES).index(fault_class),
                      "checks": CLASSES[fault_class], "case": name,
                      "outcome": outcome, "seconds": round(time.monotonic() - start, 2),
                      "details": info, "test": self.test, "build": self.build,
                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if error:
                record["error"] = error
            with open(self.path, "a") as f:
                f.write(json.dumps(record, default=str) + "\n")


_emptied = set()


@pytest.fixture(scope="session")
def _cases_file(build_dir):
    # Each test module imports this fixture, which makes it one fixture per
    # module: empty the file only the first time in this run.
    path = results_path(build_dir)
    if path not in _emptied:
        _emptied.add(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    return path


@pytest.fixture
def cases(_cases_file, build_dir, request):
    return Cases(_cases_file, request.node.nodeid, Path(build_dir).name)


# ------------------------------------------------------------------ stacks

def seed():
    """The seed of every random choice the reliability tests make (printed,
    and set by AUTOTLS_RELIABILITY_SEED to replay a run)."""
    value = int(os.environ.get("AUTOTLS_RELIABILITY_SEED", "0") or 0) or int(time.time())
    print(f"reliability seed {value} (AUTOTLS_RELIABILITY_SEED={value} replays it)")
    return value


def proxied_stack(make_stack, start_acme_proxy, body, proxy_seed, start=True, **pebble_options):
    """make_stack(body, proxy=True), with the proxy's rate-based faults seeded."""
    st = make_stack(lambda a: "", start=False, **pebble_options)
    st.proxy = start_acme_proxy(st.pebble, seed=proxy_seed)
    st.directory_url = st.proxy.directory_url
    a = st.apache
    a.write_config(st.global_config() + (body(a) if callable(body) else body))
    if start:
        a.start()
    return st


# ------------------------------------------------------------------ health

CRASH_PATTERNS = re.compile(r"exit signal|Segmentation fault|AddressSanitizer|runtime error:|"
                            r"double free|stack smashing|Aborted")


class Health:
    """The processes of a running Apache, to prove later that none died."""

    def __init__(self, apache):
        self.apache = apache
        self.pid = apache.pid
        self.children = apache.children()
        self.log_start = apache.log_size()

    def check(self):
        a = self.apache
        a.process.check_running()
        now = a.children()
        assert now == self.children, \
            f"worker processes changed from {self.children} to {now} (a child died)"
        log = a.error_log(self.log_start)
        m = CRASH_PATTERNS.search(log)
        assert not m, f"crash in the error log: {log[max(0, m.start() - 500):m.end() + 500]}"
        reports = sorted((a.root / "sanitizer").glob("*"))
        assert not reports, "sanitizer reports: " + ", ".join(p.name for p in reports)


# ------------------------------------------------------------------ status page

def entry(apache, name):
    """The one status entry of ``name`` (a single key type)."""
    found = apache.cert_status(name)
    assert len(found) == 1, f"{len(found)} status entries for {name}"
    return found[0]


def wait_entry(apache, name, predicate, timeout, what, interval=0.2):
    def check():
        apache.process.check_running()
        e = entry(apache, name)
        return e if predicate(e) else None
    return wait_until(check, timeout, f"{name}: {what}", interval=interval)


def wait_failed(apache, name, timeout=60.0, at_least=1):
    """Wait until the status page shows a failure with its error."""
    return wait_entry(apache, name,
                      lambda e: e["failures"] >= at_least and e["last_error"]
                      and e["last_error"].get("message"),
                      timeout, f"{at_least} failure(s) with an error on the status page")


def rfc3339(text):
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


def wait_serial_change(apache, name, old_serial, root_pem, timeout=60.0):
    """Wait until a handshake for ``name`` presents a certificate other than
    ``old_serial``; returns it."""
    def changed():
        apache.process.check_running()
        with contextlib.suppress(OSError):
            c = apache.cert(name, root_pem=root_pem)
            return c if c.serial_number != old_serial else None
        return None
    return wait_until(changed, timeout, f"a new certificate for {name}", interval=0.2)


def force_renewal(apache, name):
    # The engine ignores a renew request in the same second as the last
    # issuance (its clock has one-second steps).
    time.sleep(1.1)
    r = apache.renew(name)
    assert r.status == 202, (r.status, r.text)


# ------------------------------------------------------------------ store

SET_FILES = {
    "certs": ("chain.pem", "key.pem", "meta.json"),
    "accounts": ("account.key.pem",),
    "staging": ("order.json", "key.pem"),
}
KEY_FILES = {"key.pem", "account.key.pem"}


def _openssl(*args, data=None):
    r = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=30)
    return r.returncode, r.stdout, r.stderr


def public_key_of_cert(pem_path):
    rc, out, err = _openssl("x509", "-in", str(pem_path), "-noout", "-pubkey")
    return out if rc == 0 else None


def public_key_of_key(pem_path):
    rc, out, err = _openssl("pkey", "-in", str(pem_path), "-pubout")
    return out if rc == 0 else None


def key_matches(chain_path, key_path):
    """openssl's view: the leaf of chain_path and key_path share a public key."""
    a, b = public_key_of_cert(chain_path), public_key_of_key(key_path)
    return a is not None and a == b


def store_problems(store, check_modes=True):
    """Everything a reader of the store could trip over; [] when consistent.

    A dangling name reads as absent (a crash between archiving and
    unlinking) and a name ending in .corrupt-<time> was moved aside, so
    both are allowed; anything else that is visible must be complete.
    """
    store = Path(store)
    problems = []
    for kind, files in SET_FILES.items():
        base = store / kind
        if not base.is_dir():
            continue
        for e in sorted(base.iterdir()):
            if e.name.startswith(".") or ".corrupt-" in e.name:
                continue
            if e.is_symlink() and not e.exists():
                continue
            if not e.is_dir():
                problems.append(f"{e}: not a directory")
                continue
            for f in files:
                if not (e / f).is_file() or (e / f).stat().st_size == 0:
                    problems.append(f"{e / f}: missing or empty in a visible record")
            if kind == "certs" and (e / "chain.pem").is_file() and (e / "key.pem").is_file():
                if not key_matches(e / "chain.pem", e / "key.pem"):
                    problems.append(f"{e}: key.pem does not match chain.pem (openssl)")
                try:
                    json.loads((e / "meta.json").read_text())
                except (OSError, ValueError) as x:
                    problems.append(f"{e / 'meta.json'}: {x}")
            if kind == "staging" and (e / "order.json").is_file():
                try:
                    json.loads((e / "order.json").read_text())
                except ValueError as x:
                    problems.append(f"{e / 'order.json'}: {x}")
    state = store / "state"
    if state.is_dir():
        for f in sorted(state.iterdir()):
            if f.name.startswith(".") or ".corrupt-" in f.name:
                continue
            try:
                if not isinstance(json.loads(f.read_text()), dict):
                    problems.append(f"{f}: not a JSON object")
            except (OSError, ValueError) as x:
                problems.append(f"{f}: {x}")
    if check_modes:
        problems += mode_problems(store)
    return problems


def mode_problems(store):
    """Private keys must be 0600 and directories 0700, everywhere in the store."""
    out = []
    for root, dirs, files in os.walk(store):
        for d in dirs:
            p = Path(root) / d
            if p.is_symlink():
                continue
            mode = stat.S_IMODE(p.lstat().st_mode)
            if mode != 0o700:
                out.append(f"{p}: directory mode {mode:04o}, not 0700")
        for f in files:
            p = Path(root) / f
            if p.is_symlink():
                continue
            mode = stat.S_IMODE(p.lstat().st_mode)
            if (f in KEY_FILES or f.endswith((".key", ".key.pem"))) and mode != 0o600:
                out.append(f"{p}: private key mode {mode:04o}, not 0600")
    mode = stat.S_IMODE(Path(store).stat().st_mode)
    if mode != 0o700:
        out.append(f"{store}: store directory mode {mode:04o}, not 0700")
    return out


def stored_serial(store, cert_id):
    chain = (Path(store) / "certs" / cert_id / "chain.pem").read_bytes()
    return x509.load_pem_x509_certificate(chain).serial_number


def snapshot(path):
    """{relative path: bytes} of every regular file under ``path``."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if p.is_file() and not p.is_symlink():
                out[str(p.relative_to(path))] = p.read_bytes()
    return out
