"""Renewal with ngx_http_autotls_module: a forced renewal under HTTPS load
loses no request and needs no reload; `nginx -s reload` in the middle of an
order resumes that order (no second newOrder); certificates in the store are
served from the first request after a restart, with the CA gone; a reload
that adds a server keeps serving the others.
"""

import time

import pytest

from nginx_env import (cert_names, issuer_cn, make_stack, peer_cert, server,  # noqa: F401
                       status_server, PLACEHOLDER_ISSUER)
from procs import wait_until
from server_checks import HttpsLoad

ISSUE_TIMEOUT = 90


def test_forced_renewal_under_load_loses_no_request(make_stack):
    # reuseport spreads the connections over both workers; X-Worker says
    # which one answered.
    st = make_stack(lambda n: status_server(n)
                    + server("load.test", n.https_port, "add_header X-Worker $pid always;")
                    .replace(f"{n.https_port} ssl;", f"{n.https_port} ssl reuseport;"))
    n = st.nginx
    old = n.wait_for_cert("load.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    pids = (n.pid, n.workers())
    with HttpsLoad(n.https_port, "load.test", st.root_pem, "hello from nginx") as load:
        wait_until(lambda: load.ok >= 20, 30, "the load to get going")
        r = n.renew("load.test")
        assert r.status == 202, r.text

        def renewed():
            c = peer_cert(n.https_port, "load.test", root_pem=st.root_pem)
            return c.serial_number != old.serial_number and c
        new = wait_until(renewed, ISSUE_TIMEOUT, "the renewed certificate", interval=0.2)
        seen_new = load.ok
        wait_until(lambda: load.ok >= seen_new + 20, 30, "requests after the renewal")
    assert not load.failures, f"{len(load.failures)} failed requests, e.g. {load.failures[:3]}"
    assert set(load.serials) == {old.serial_number, new.serial_number}, load.serials
    # Every worker serves the new certificate within a second of the first
    # handshake that got it.
    first_new = min(t for t, s, _ in load.seen if s == new.serial_number)
    late_old = [(t - first_new, w) for t, s, w in load.seen
                if s == old.serial_number and t > first_new + 1.0]
    assert not late_old, f"old certificate still served after a second: {late_old[:5]}"
    workers = {w for t, s, w in load.seen if s == new.serial_number}
    assert workers == set(pids[1]), f"new certificate seen from workers {workers}, not all of {pids[1]}"
    assert cert_names(new) == {"load.test"}
    assert (n.pid, n.workers()) == pids, "renewal must not restart anything"
    n.wait_log(r"renewing load\.test now, as requested", 10)
    [entry] = n.cert_status("load.test")
    assert int(entry["serial"], 16) == new.serial_number


@pytest.mark.parametrize("resize", [False, True], ids=["same-zone", "new-zone"])
def test_reload_mid_order_resumes(make_stack, resize):
    def body(extra):
        return lambda n: (status_server(n) + server("resume.test", n.https_port)
                          + "".join(server(f"r{i}.test", n.https_port) for i in range(extra)))
    st = make_stack(body(0), proxy=True, start=False)
    # The first certificate download hangs long enough for a reload.
    st.proxy.add_fault("delay", kind="certificate", count=1, seconds=8)
    n = st.nginx
    n.start()
    wait_until(lambda: st.proxy.count("certificate") >= 1, ISSUE_TIMEOUT,
               "the order to reach the certificate download")
    mark = n.log_size()
    if resize:
        # More names: the reload makes a new, bigger zone.
        n.write_config(st.global_config() + body(8)(n))
    n.reload()
    cert = n.wait_for_cert("resume.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert cert_names(cert) == {"resume.test"}
    orders = [r for r in st.proxy.requests("newOrder")
              if {"type": "dns", "value": "resume.test"} in (r.payload or {}).get("identifiers", [])]
    assert len(orders) == 1, "the order was placed again instead of resumed"
    n.wait_log(r"resuming the order", 10, start=mark)
    # Only the new worker 0 renews now.
    doc = n.status_json()
    assert doc["server"]["renewal_pid"] in n.workers()


def test_stored_certificates_are_served_at_start_without_the_ca(make_stack):
    st = make_stack(lambda n: status_server(n) + server("kept.test", n.https_port))
    n = st.nginx
    cert = n.wait_for_cert("kept.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    n.stop()
    st.pebble.stop()
    n.start()
    # The very first handshake after the start has it (published by the
    # master before the workers run), and no 503.
    first = n.https("kept.test", root_pem=st.root_pem)
    assert first.status == 200
    assert first.cert.serial_number == cert.serial_number


def test_reload_adding_a_server_keeps_serving(make_stack):
    def body(names):
        return lambda n: status_server(n) + "".join(server(x, n.https_port) for x in names)
    st = make_stack(body(["one.test"]))
    n = st.nginx
    one = n.wait_for_cert("one.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    size = n.status_json()["server"]["shared_memory"]["size"]
    # More names: a bigger default zone, so the reload makes a new one and
    # the master fills it from the store.
    n.write_config(st.global_config() + body(["one.test"] + [f"x{i}.test" for i in range(8)])(n))
    n.reload()
    assert n.status_json()["server"]["shared_memory"]["size"] > size
    assert peer_cert(n.https_port, "one.test", root_pem=st.root_pem).serial_number == one.serial_number
    assert n.https("one.test", root_pem=st.root_pem).status == 200
    x = n.wait_for_cert("x7.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert cert_names(x) == {"x7.test"} and issuer_cn(x) != PLACEHOLDER_ISSUER


def test_quit_stops_the_renewal_thread_promptly(make_stack):
    """nginx -s quit with an order hanging on the CA: the worker still exits
    at once (the thread is stopped and joined, never waited out)."""
    st = make_stack(lambda n: status_server(n) + server("quit.test", n.https_port),
                    proxy=True, start=False)
    st.proxy.add_fault("hang", kind="newOrder", seconds=60)
    n = st.nginx
    n.start()
    wait_until(lambda: st.proxy.count("newOrder") >= 1, ISSUE_TIMEOUT, "the order to start")
    t0 = time.monotonic()
    n.stop(timeout=20)
    assert time.monotonic() - t0 < 10, "the worker took too long to exit"
    assert not n.process.running()
