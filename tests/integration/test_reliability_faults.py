"""Every fault the ACME proxy injects, against the real Apache with mod_autotls.

Each case: a certificate is issued and served; the fault is switched on and
a renewal forced; the status page must show a clear error (and when to try
again) while HTTPS clients keep getting the old certificate and no server
process dies; then the fault is cleared and the renewal must complete.
Cases are recorded for the README's "Reliability" table (see reliability.py).
"""

import re
import threading
import time

import pytest

from apache_env import make_stack, status_vhost, vhost  # noqa: F401
from reliability import (Health, cases, _cases_file, entry, force_renewal,  # noqa: F401
                         proxied_stack, rfc3339, seed, wait_entry, wait_failed,
                         wait_serial_change)
from procs import wait_until

ISSUE_TIMEOUT = 90
# The core's per-request timeout (at_conf.h: request_timeout, 30 s by
# default); the Apache module uses the default.
REQUEST_TIMEOUT = 30
NAME = "fault.test"


@pytest.fixture
def stack(make_stack, start_acme_proxy):
    """Apache + proxy + Pebble with the names issued; st.health watches the
    processes. The proxy's rate-based faults follow the printed seed."""
    def make(names=(NAME,), extra=""):
        st = proxied_stack(make_stack, start_acme_proxy,
                           lambda a: extra + status_vhost(a)
                           + "".join(vhost(n, a.https_port) for n in names), seed())
        for n in names:
            st.apache.wait_for_cert(n, ISSUE_TIMEOUT, root_pem=st.root_pem)
        st.health = Health(st.apache)
        return st
    return make


def wait_renewed(st, name, old_serial):
    """The new certificate is served and the status page says valid."""
    new = wait_serial_change(st.apache, name, old_serial, st.root_pem, timeout=60)
    e = wait_entry(st.apache, name, lambda e: e["state"] == "valid" and e["serial"]
                   and int(e["serial"], 16) == new.serial_number, 10, "valid after renewal")
    assert e["last_error"] is None and e["failures"] == 0, e
    return new


# Pebble hands out an account's valid authorization again now and then even
# with PEBBLE_AUTHZREUSE=0 (it reuses unless a random 0-99 exceeds the
# percentage, so about one order in a hundred): the order comes back ready
# and no authorization or challenge is fetched. A case whose fault is on
# those steps then renews again, at most this many times in all.
REUSE_ATTEMPTS = 3


def authz_skipped(proxy, kind, since):
    """The renewal since ``since`` made no request of ``kind`` because the
    CA reused an authorization."""
    return (kind in ("authz", "challenge")
            and not any(r.time >= since for r in proxy.requests(kind)))


def run_fault(st, cases, fault_class, action, kind, message, expect="error", name=NAME,
              **params):
    """One case: fault on, forced renewal. expect="error": the status page
    shows a clear error (matching ``message``) with the next attempt while
    the old certificate is served; then the fault is cleared and the
    renewal completes. expect="tolerated": the renewal completes while the
    fault is on. expect="either": one of the two."""
    a, proxy = st.apache, st.proxy
    label = f"{action} on {kind or 'every request'}"
    if params.get("rate"):
        label += f" ({int(params['rate'] * 100)}%)"
    with cases.case(fault_class, label) as info:
        old = a.cert(name, root_pem=st.root_pem)
        fault = proxy.add_fault(action, kind=kind, **params)

        def settled():
            e = entry(a, name)
            if e["failures"] >= 1 and e["last_error"]:
                return "error", e
            if e["state"] == "valid" and e["serial"] and int(e["serial"], 16) != old.serial_number:
                return "tolerated", e
            return None
        for attempt in range(1, REUSE_ATTEMPTS + 1):
            started = time.monotonic()
            force_renewal(a, name)
            outcome, e = wait_until(settled, REQUEST_TIMEOUT + 30,
                                    f"{label}: an error or a renewal", interval=0.2)
            if not (fault.applied == 0 and outcome == "tolerated"
                    and authz_skipped(proxy, kind, started)) or attempt == REUSE_ATTEMPTS:
                break
            # Renewed without the step the fault is on: renew again.
            old = wait_renewed(st, name, old.serial_number)
        assert fault.applied >= 1, f"{label}: the fault never applied (outcome {outcome}: {e})"
        info["applied"] = fault.applied
        if expect != "either":
            assert outcome == expect, f"{label}: expected {expect}, got {outcome}: {e}"
        if outcome == "error":
            msg = e["last_error"]["message"]
            info["result"] = "error shown, renewed after the fault cleared"
            info["error"] = msg
            assert re.search(message, msg, re.I), f"unclear error for {label}: {msg}"
            assert e["state"] == "error", e
            assert e["next_attempt"] and rfc3339(e["next_attempt"]) >= time.time() - 2, e
            # HTTPS clients still get the certificate the server had.
            assert a.cert(name, root_pem=st.root_pem).serial_number == old.serial_number
            st.health.check()
            proxy.clear_faults()
        else:
            info["result"] = "renewed despite the fault"
            proxy.clear_faults()
        wait_renewed(st, name, old.serial_number)
        st.health.check()


def run_refused(st, cases):
    """Nothing listens at the CA's address."""
    a, proxy = st.apache, st.proxy
    with cases.case("refused connections", "stop listening, forced renewal") as info:
        old = a.cert(NAME, root_pem=st.root_pem)
        proxy.stop_listening()
        try:
            force_renewal(a, NAME)
            e = wait_failed(a, NAME, timeout=30)
            msg = e["last_error"]["message"]
            info["error"] = msg
            info["result"] = "error shown, renewed after the fault cleared"
            assert re.search(r"connect|refused", msg, re.I), msg
            assert st.directory_url.rsplit("/", 1)[0] in msg, msg
            assert a.cert(NAME, root_pem=st.root_pem).serial_number == old.serial_number
            st.health.check()
        finally:
            proxy.resume_listening()
        wait_renewed(st, NAME, old.serial_number)
        st.health.check()


# class -> [(action, kind, error regex, expected outcome, extra fault parameters)]
FAULTS = {
    "5xx share": [
        ("status", None, r"500|serverInternal", "either", dict(rate=0.5, status=500)),
        ("status", "finalize", r"503|serverInternal", "error", dict(status=503)),
        ("status", "newOrder", r"500|serverInternal", "error", dict(status=500)),
    ],
    "malformed JSON": [
        ("malformed_json", "newOrder", r"JSON", "error", {}),
        ("malformed_json", "authz", r"JSON", "error", {}),
        ("malformed_json", "finalize", r"JSON", "error", {}),
    ],
    "truncated JSON": [
        ("truncated_json", "newOrder", r"JSON", "error", {}),
        ("truncated_json", "order", r"JSON", "error", {}),
        # The answer to a challenge POST carries nothing the client needs.
        ("truncated_json", "challenge", r"JSON", "either", {}),
    ],
    "short body": [
        ("short_body", "authz", r"closed|remaining|incomplete", "error", {}),
        ("short_body", "certificate", r"closed|remaining|incomplete", "error", {}),
    ],
    "10 MiB body": [
        ("huge_body", "newOrder", r"larger than the limit", "error", {}),
        ("huge_body", "certificate", r"larger than the limit", "error", {}),
    ],
    "wrong Content-Type": [
        ("content_type", "newOrder", r"content.type|text/html", "either", {}),
        ("content_type", "certificate", r"content.type|text/html|PEM", "either", {}),
    ],
    "connection closed": [
        ("close", "challenge", r"closed the connection", "error", {}),
        ("close", "finalize", r"closed the connection", "error", {}),
    ],
    "dropped Replay-Nonce": [
        # Every answer without a nonce: nothing can be signed, and it says so.
        ("drop_nonce", None, r"nonce", "error", {}),
        # Only some answers: the client fetches a fresh nonce and carries on.
        ("drop_nonce", "newOrder", "", "tolerated", {}),
        ("drop_nonce", "authz", "", "tolerated", {}),
    ],
    "refused connections": [("refused", None, "", "error", {})],
}
# Three servers share the classes (about the same time each); each runs its
# cases one after the other.
LANES = [
    ["short body", "5xx share", "refused connections"],
    ["10 MiB body", "malformed JSON", "wrong Content-Type"],
    ["truncated JSON", "connection closed", "dropped Replay-Nonce"],
]


def test_proxy_faults(stack, cases):
    """Every fault class, each case on a server of its lane; the lanes run
    at once. Every case runs even if an earlier one failed; all failures are
    reported together."""
    assert sorted(c for lane in LANES for c in lane) == sorted(FAULTS)
    # Retries 3-10 s apart: a fault on a step the resumed order does not
    # repeat (finalize) fails once and the retry succeeds while it is still
    # on; with 1 s steps that can happen between two looks at the status page.
    stacks = [stack(extra="AutoTLSRetryDelay 3s 10s\n") for _ in LANES]
    failures = []

    def lane(st, classes):
        for fault_class in classes:
            for action, kind, message, expect, params in FAULTS[fault_class]:
                try:
                    if action == "refused":
                        run_refused(st, cases)
                    else:
                        run_fault(st, cases, fault_class, action, kind, message, expect, **params)
                except Exception as e:          # noqa: BLE001 - reported below
                    failures.append(f"{fault_class} / {action} on {kind}: {e}")
                    st.proxy.clear_faults()
                    st.proxy.resume_listening()

    threads = [threading.Thread(target=lane, args=(st, classes), daemon=True)
               for st, classes in zip(stacks, LANES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads), "a lane of fault cases did not finish"
    assert not failures, "\n\n".join(failures)


def test_hang_and_trickle_end_at_the_request_timeout(stack, cases):
    """Two renewals at once: one newOrder gets no answer at all, the other
    one byte a second. Both are abandoned at the request timeout, not later,
    and meanwhile the server keeps serving."""
    names = ("hang.test", "trickle.test")
    st = stack(names)
    a, proxy = st.apache, st.proxy
    old = {n: a.cert(n, root_pem=st.root_pem).serial_number for n in names}
    proxy.clear_requests()
    hang = proxy.add_fault("hang", kind="newOrder", count=1, seconds=REQUEST_TIMEOUT + 40)
    trickle = proxy.add_fault("trickle", kind="newOrder", count=1, interval=1.0)
    time.sleep(1.1)
    assert a.renew("all").status == 202

    seen = {}                       # name -> monotonic time the failure showed

    def failed():
        for n in names:
            if n not in seen:
                e = entry(a, n)
                if e["failures"] >= 1 and e["last_error"]:
                    seen[n] = (time.monotonic(), e)
        # While the CA stalls, the server answers as usual.
        for n in names:
            assert a.cert(n, root_pem=st.root_pem).serial_number == old[n]
        return len(seen) == len(names)
    wait_until(failed, REQUEST_TIMEOUT + 30, "both orders to fail", interval=0.5)
    st.health.check()
    orders = proxy.requests("newOrder")
    by_fault = {r.fault: r for r in orders if r.fault}
    assert set(by_fault) == {"hang", "trickle"}, orders
    assert hang.applied == trickle.applied == 1
    first_failure = min(t for t, _ in seen.values())
    last_failure = max(t for t, _ in seen.values())
    for action, cls in (("hang", "hang past the timeout"), ("trickle", "trickled response")):
        with cases.case(cls, f"{action} on newOrder") as info:
            started = by_fault[action].time
            # Neither gave up early, and neither waited past the timeout
            # (plus the status page's polling and the engine's 1 s steps).
            waited_min, waited_max = first_failure - started, last_failure - started
            info["abandoned after"] = f"{waited_min:.1f}-{waited_max:.1f} s"
            assert waited_min >= REQUEST_TIMEOUT - 1.5, info
            assert waited_max <= REQUEST_TIMEOUT + 6, info
            msgs = [e["last_error"]["message"] for _, e in seen.values()]
            info["error"] = " / ".join(msgs)
            for m in msgs:
                # The proxy accepted the connection: not a connect timeout.
                assert re.search(r"timed out after .* \(request timeout 30000 ms\)", m), m
                assert "connecting to" not in m, m
            # One heard nothing, the other part of an answer: each says so.
            assert any("did not answer" in m for m in msgs), msgs
            assert any("started answering" in m for m in msgs), msgs
    proxy.clear_faults()
    for n in names:
        wait_renewed(st, n, old[n])
    st.health.check()


def ids_of(record):
    return [i.get("value") for i in (record.payload or {}).get("identifiers", [])] \
        if isinstance(record.payload, dict) else []


@pytest.mark.parametrize("kind", ["newOrder", "finalize"])
def test_429_retry_after_is_honoured_to_the_second(stack, cases, kind):
    """429 with Retry-After, answered late in a second, while another
    certificate keeps the engine busy (so it wakes up at every fraction of
    a second): nothing about that order comes back before Retry-After."""
    retry_after, answer_delay = 6, 0.6
    st = stack((NAME, "busy.test"))
    a, proxy = st.apache, st.proxy
    with cases.case("429 + Retry-After", f"429 on {kind}, Retry-After {retry_after}") as info:
        old = a.cert(NAME, root_pem=st.root_pem)
        proxy.clear_requests()
        limited = proxy.add_fault("status", kind=kind, count=1, status=429,
                                  retry_after=retry_after, problem_type="rateLimited",
                                  delay=answer_delay)
        force_renewal(a, NAME)
        wait_until(lambda: limited.applied, 30, f"the 429 on {kind}")
        [first] = [r for r in proxy.requests(kind) if r.fault == "status"]
        answered = first.time + answer_delay        # Retry-After counts from here
        order_id = first.path.rstrip("/").rsplit("/", 1)[-1] if kind != "newOrder" else None
        e = wait_failed(a, NAME, timeout=30)
        msg = e["last_error"]["message"]
        info["error"] = msg
        assert re.search(r"rate|429", msg, re.I), msg
        # The next attempt the status page announces respects Retry-After.
        assert rfc3339(e["next_attempt"]) >= first.wall + answer_delay + retry_after - 1, e

        def again():
            later = [r for r in proxy.requests() if r.time > first.time and (
                (r.kind == "newOrder" and NAME in ids_of(r))
                or (order_id and order_id in r.path))]
            return later[0] if later else None
        busy = a.cert("busy.test", root_pem=st.root_pem).serial_number
        deadline = time.monotonic() + retry_after + 30
        while not again() and time.monotonic() < deadline:
            force_renewal(a, "busy.test")       # the engine turns many times a second
            busy = wait_serial_change(a, "busy.test", busy, st.root_pem, timeout=30).serial_number
        nxt = again()
        assert nxt, f"nothing for {NAME} after the 429"
        gap = nxt.time - answered
        info["next request after"] = f"{gap:.2f} s ({nxt.kind})"
        assert gap >= retry_after, \
            f"{nxt.kind} for {NAME} {gap:.2f} s after the 429, before Retry-After {retry_after}"
        assert gap <= retry_after + 3, f"{nxt.kind} only {gap:.2f} s after the 429"
        new = wait_renewed(st, NAME, old.serial_number)
        assert new.serial_number != old.serial_number
        st.health.check()
