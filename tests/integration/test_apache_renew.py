"""Renewal in a running Apache: a new certificate is served by every child
without a restart (same PIDs), connections during the swap never fail,
a graceful restart in the middle of an order resumes it, and the notify
command hears about every issuance.
"""

import os
import re
import shutil
import subprocess
import time

import pytest

from apache_env import LOOPBACK, make_stack, status_vhost, vhost  # noqa: F401
from procs import wait_until
from server_checks import HttpsLoad, check_renew_handler, kill_renewer, renew_and_wait

ISSUE_TIMEOUT = 90


def test_new_certificate_served_without_restart(make_stack):
    st = make_stack(lambda a: status_vhost(a) + vhost("hot.test", a.https_port))
    a = st.apache
    first = a.wait_for_cert("hot.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    pids = (a.pid, a.children())
    second = renew_and_wait(a, "hot.test", first.serial_number, st.root_pem)
    assert second.not_valid_before >= first.not_valid_before
    assert (a.pid, a.children()) == pids, "renewal must not restart any process"
    # Every child serves the new one: many fresh handshakes land on both.
    for _ in range(40):
        assert a.cert("hot.test", root_pem=st.root_pem).serial_number == second.serial_number


def test_renew_handler_rejects_unknown_names_and_get(make_stack):
    st = make_stack(lambda a: status_vhost(a) + vhost("rh.test", a.https_port))
    check_renew_handler(st.apache, "rh.test")


def test_forced_renewal_under_load_has_zero_failures(make_stack):
    st = make_stack(lambda a: status_vhost(a) + vhost("load.test", a.https_port))
    a = st.apache
    cert = a.wait_for_cert("load.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    pids = (a.pid, a.children())
    wrk = None
    if shutil.which("wrk"):
        # Keep-alive connections opened before the swap must survive it too.
        wrk = subprocess.Popen(["wrk", "-t2", "-c8", "-d25s", "--timeout", "5s",
                                "-H", "Host: load.test", f"https://{LOOPBACK}:{a.https_port}/"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with HttpsLoad(a.https_port, "load.test", st.root_pem, "hello from apache", threads=6) as load:
        time.sleep(2)
        serial = cert.serial_number
        for _ in range(3):
            serial = renew_and_wait(a, "load.test", serial, st.root_pem).serial_number
            time.sleep(1)
    if wrk:
        out, _ = wrk.communicate(timeout=60)
        assert "Socket errors" not in out and "Non-2xx" not in out, out
        assert re.search(r"\d+ requests in", out), out
    assert not load.failures, f"{len(load.failures)} failures, e.g. {load.failures[:5]}"
    assert load.ok > 100, f"only {load.ok} requests completed"
    assert len(load.serials) >= 4, f"saw serials {load.serials}"
    assert (a.pid, a.children()) == pids


def test_graceful_restart_mid_order_resumes(make_stack):
    st = make_stack(lambda a: status_vhost(a) + vhost("gr.test", a.https_port),
                    proxy=True, start=False)
    st.proxy.add_fault("delay", kind="finalize", count=1, seconds=8)
    a = st.apache
    a.start()
    st.proxy.wait_for_requests("finalize", 1, timeout=60)
    orders = list(a.store.glob("staging/*/order.json"))
    assert orders, "the in-flight order is not in the store"
    mark = a.log_size()
    a.graceful()
    cert = a.wait_for_cert("gr.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert cert is not None
    log = a.error_log(mark)
    assert re.search(r"resuming the order", log), log[-4000:]
    assert st.proxy.count("newOrder") == 1, "the order was placed again instead of resumed"
    assert a.https("gr.test", root_pem=st.root_pem).status == 200


def test_graceful_restart_and_stop_are_clean(make_stack):
    st = make_stack(lambda a: status_vhost(a) + vhost("clean.test", a.https_port))
    a = st.apache
    first = a.wait_for_cert("clean.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    a.graceful()
    fds = sorted(os.listdir(f"/proc/{a.pid}/fd"))
    maps = open(f"/proc/{a.pid}/maps").read().count("/dev/zero") + \
        open(f"/proc/{a.pid}/maps").read().count("(deleted)")
    for _ in range(3):
        a.graceful()
        # Stored certificates are served at once by the new generation.
        assert a.cert("clean.test", root_pem=st.root_pem).serial_number == first.serial_number
    # Restarts leak no descriptor and no shared mapping in the parent.
    assert sorted(os.listdir(f"/proc/{a.pid}/fd")) == fds
    assert open(f"/proc/{a.pid}/maps").read().count("/dev/zero") + \
        open(f"/proc/{a.pid}/maps").read().count("(deleted)") == maps
    a.wait_log(r"renewal engine stopped", 20)
    a.stop()
    assert a.process.proc.returncode == 0
    log = a.error_log()
    assert "exit signal" not in log and "Segmentation" not in log, log[-3000:]


def test_notify_command_arguments(make_stack):
    def body(a):
        notify = a.write_file("conf/notify.sh",
                              f"#!/bin/sh\necho \"$@\" >> {a.root}/logs/notify.txt\n", mode=0o755)
        (a.root / "logs" / "notify.txt").touch()
        (a.root / "logs" / "notify.txt").chmod(0o666)
        return (f"AutoTLSNotifyCommand {notify}\n" + status_vhost(a)
                + vhost("nt.test", a.https_port, aliases=("www.nt.test",)))
    st = make_stack(body)
    a = st.apache
    first = a.wait_for_cert("nt.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    notes = a.root / "logs" / "notify.txt"
    [entry] = a.cert_status("nt.test")
    lines = wait_until(lambda: notes.read_text().splitlines(), 20, "the notify command")
    assert lines[0].split() == ["issued", entry["id"], "nt.test", "www.nt.test"]
    renew_and_wait(a, "nt.test", first.serial_number, st.root_pem)
    lines = wait_until(lambda: (lambda ls: ls if len(ls) >= 2 else None)(notes.read_text().splitlines()),
                       20, "the notify command after renewal")
    assert lines[1].split() == ["renewed", entry["id"], "nt.test", "www.nt.test"]


@pytest.mark.parametrize("names", [("pre.test",)])
def test_stored_certificates_served_at_startup(make_stack, names):
    """A restart (stop + start) serves the stored certificate at once."""
    st = make_stack(lambda a: status_vhost(a) + vhost(names[0], a.https_port))
    a = st.apache
    first = a.wait_for_cert(names[0], ISSUE_TIMEOUT, root_pem=st.root_pem)
    a.stop()
    a.start()
    assert a.cert(names[0], root_pem=st.root_pem).serial_number == first.serial_number


def test_renewal_moves_to_another_child_when_its_process_dies(make_stack):
    st = make_stack(lambda a: status_vhost(a) + vhost("moves.test", a.https_port))
    a = st.apache
    first = a.wait_for_cert("moves.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    kill_renewer(a, a.children)
    # The certificate is still served, and renewal still works.
    assert a.cert("moves.test", root_pem=st.root_pem).serial_number == first.serial_number
    renew_and_wait(a, "moves.test", first.serial_number, st.root_pem)
