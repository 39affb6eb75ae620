"""An interrupted `autotls issue` loses nothing: killed with SIGKILL in the
middle of an order, the next run resumes the stored order; stopped with
SIGINT, it withdraws its challenges, keeps the order and says so.

The ACME proxy holds the challenge response back ("hang"), so the tool is
reliably in the middle of the order when the signal comes.
"""

import json
import os
import signal
import time

from pebble import verify_chain
from procs import wait_until
from tool_env import make_tool, one_line_error  # noqa: F401


def _staged_order(tool):
    orders = list((tool.store / "staging").glob("*/order.json"))
    return json.loads(orders[0].read_text()) if orders else None


def test_kill9_mid_order_then_resume(make_tool, pebble, start_acme_proxy, tmp_path):
    proxy = start_acme_proxy(pebble)
    tool = make_tool(pebble, ca_url=proxy.directory_url)
    proxy.add_fault("hang", kind="challenge", seconds=120)
    proc = tool.popen(*tool.issue_args(["resume.test", "www.resume.test"]), "--verbose",
                      log_path=tmp_path / "first.log")
    try:
        proxy.wait_for_requests("challenge", timeout=60)
        staged = wait_until(lambda: _staged_order(tool), 10, "the order checkpoint in staging")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert not tool.cert_dirs(), "no certificate can exist yet"
    orders_before = proxy.count("newOrder")

    proxy.clear_faults()
    r = tool.run(*tool.issue_args(["resume.test", "www.resume.test"]), "--verbose")
    assert r.returncode == 0, r.stderr
    verify_chain(tool.chain("resume.test"), pebble.root(), ["resume.test", "www.resume.test"])
    # The stored order was taken up again, not replaced.
    assert "resuming the order" in r.stderr, r.stderr
    assert proxy.count("newOrder") == orders_before
    assert tool.meta("resume.test")["order_url"] == staged["order_url"]
    assert _staged_order(tool) is None, "a finished order leaves staging"


def test_sigint_stops_cleanly(make_tool, pebble, start_acme_proxy, tmp_path):
    proxy = start_acme_proxy(pebble)
    tool = make_tool(pebble, ca_url=proxy.directory_url)
    proxy.add_fault("hang", kind="challenge", seconds=120)
    log = tmp_path / "interrupted.log"
    proc = tool.popen(*tool.issue_args(["int.test"]), log_path=log)
    try:
        proxy.wait_for_requests("challenge", timeout=60)
        wait_until(lambda: _staged_order(tool), 10, "the order checkpoint in staging")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
        stopped_after = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 1
    assert stopped_after < 10
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0], lines
    assert _staged_order(tool) is not None, "the order stays for the next run"

    proxy.clear_faults()
    r = tool.run(*tool.issue_args(["int.test"]))
    assert r.returncode == 0, r.stderr
    verify_chain(tool.chain("int.test"), pebble.root(), ["int.test"])


def test_kill9_while_pebble_validates(make_tool, start_pebble, start_acme_proxy, tmp_path):
    """Killed after the CA was told to validate, while its validator sleeps
    (0 to 7 s per attempt): the next run takes the order up again, answering
    the validation if it comes late enough, or placing a new order if the
    validator found nobody while the tool was down. Either way it succeeds."""
    pebble = start_pebble(env={"PEBBLE_VA_NOSLEEP": "0", "PEBBLE_VA_SLEEPTIME": "8"})
    proxy = start_acme_proxy(pebble)
    tool = make_tool(pebble, ca_url=proxy.directory_url)
    proc = tool.popen(*tool.issue_args(["validating.test"]), log_path=tmp_path / "first.log")
    try:
        proxy.wait_for_requests("challenge", timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert _staged_order(tool) is not None
    r = tool.run(*tool.issue_args(["validating.test"]), "--verbose")
    assert r.returncode == 0, r.stderr
    assert "resuming the order" in r.stderr, r.stderr
    verify_chain(tool.chain("validating.test"), pebble.root(), ["validating.test"])
