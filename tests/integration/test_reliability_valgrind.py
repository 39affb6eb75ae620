"""valgrind memcheck on the autotls tool's flows against Pebble: issue (with
its own http-01 responder), status in every format, renew, revoke, and the
account operations. Each run must end with no memory error and no definite
leak (valgrind --error-exitcode). Skipped for a sanitizer build (ASan and
valgrind do not mix; the sanitizer run checks the same flows its own way).
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reliability import _cases_file, cases  # noqa: F401
from tool_env import make_tool, ToolEnv  # noqa: F401

VALGRIND_ERROR = 99
VALGRIND_TIMEOUT = 400


def instrumented(binary):
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    return bool(re.search(r"lib(asan|ubsan|tsan)", out))


class ValgrindTool(ToolEnv):
    """A ToolEnv whose every run goes through valgrind memcheck."""

    def __init__(self, base, logdir):
        self.__dict__.update(base.__dict__)
        self.logdir = Path(logdir)
        self.runs = 0

    def argv(self, *args):
        self.runs += 1
        log = self.logdir / f"vg-{self.runs:02d}-{args[0] if args else 'x'}.log"
        self.last_log = log
        return ["valgrind", "--tool=memcheck", f"--error-exitcode={VALGRIND_ERROR}",
                "--leak-check=full", "--show-leak-kinds=definite",
                "--errors-for-leak-kinds=definite", "--num-callers=30",
                "--child-silent-after-fork=yes", f"--log-file={log}",
                self.binary, *[str(a) for a in args]]

    def run(self, *args, timeout=VALGRIND_TIMEOUT):
        return super().run(*args, timeout=timeout)


def summary(log):
    text = Path(log).read_text(errors="replace")
    m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    leak = re.search(r"definitely lost: ([\d,]+) bytes", text)
    return (int(m.group(1)) if m else None, leak.group(1) if leak else "0", text)


def test_tool_flows_under_valgrind(make_tool, pebble, cases, tmp_path, autotls_bin):
    if not shutil.which("valgrind"):
        pytest.skip("valgrind is not installed")
    if instrumented(autotls_bin):
        pytest.skip("a sanitizer build: valgrind cannot run it")
    vg = ValgrindTool(make_tool(pebble), tmp_path)
    common = ["--store", vg.store, "--ca-trust", vg.local_ca.cert_path, "--timeout", "300"]
    flows = [
        ("issue", lambda: vg.run(*vg.issue_args(["vg.test", "www.vg.test"], "http-01"))),
        ("issue (tls-alpn-01, P-384 key)",
         lambda: vg.run(*vg.issue_args(["vg2.test"], "tls-alpn-01", extra=["--key", "ec:P-384"]))),
        ("status", lambda: vg.run("status", "--store", vg.store)),
        ("status --json", lambda: vg.run("status", "--store", vg.store, "--json")),
        ("status --format prometheus",
         lambda: vg.run("status", "--store", vg.store, "--format", "prometheus")),
        ("status --format html", lambda: vg.run("status", "--store", vg.store, "--format", "html")),
        ("renew", lambda: vg.run("renew", "--store", vg.store, "--timeout", "300", "vg.test")),
        ("revoke", lambda: vg.run("revoke", *common, "vg2.test", "--reason", "superseded")),
        ("account show", lambda: vg.run("account", *common, "show", "--json")),
        ("account update-contact",
         lambda: vg.run("account", *common, "update-contact", "ops@example.test")),
        ("account rollover", lambda: vg.run("account", *common, "rollover")),
        ("account deactivate", lambda: vg.run("account", *common, "deactivate")),
        ("error path: renew of an unknown name",
         lambda: vg.run("renew", "--store", vg.store, "nothing.test")),
    ]
    for label, run in flows:
        with cases.case("valgrind (tool)", label) as info:
            r = run()
            errors, lost, text = summary(vg.last_log)
            info["exit"] = r.returncode
            info["valgrind errors"] = errors
            info["definitely lost (bytes)"] = lost
            assert r.returncode != VALGRIND_ERROR and errors == 0, \
                f"valgrind found errors in `autotls {label}`:\n{text[-6000:]}"
            if label.startswith("error path"):
                assert r.returncode == 1, r.stderr
            else:
                assert r.returncode == 0, f"autotls {label} failed ({r.returncode}): {r.stderr}"
