"""The CA unreachable or failing, against the real Apache with mod_autotls.

- At startup: stored certificates are served at once; new ones show the
  error and the next retry on the status page and in the log; retries are
  spaced out; everything is issued once the CA listens again.
- During an order: the connection drops mid-order; the error is shown, the
  existing certificate served, and the order resumes when the CA returns.
- Failing (503 on every newOrder): per-certificate retry gaps follow the
  exponential backoff within its jitter, certificates do not retry in
  lockstep, the status page announces each retry truthfully, and the total
  number of requests stays bounded.
"""

import datetime
import re
import time

from apache_env import make_stack, status_vhost, vhost  # noqa: F401
from procs import wait_until
from reliability import (Health, _cases_file, cases, entry, force_renewal,  # noqa: F401
                         proxied_stack, rfc3339, seed, wait_entry, wait_failed,
                         wait_serial_change)

ISSUE_TIMEOUT = 90

# "[Mon Nov 23 13:56:58.955131 2026] [autotls:error] ... certificate ID (NAME):
#  MESSAGE; next attempt in N s (failure K)"
FAILURE_LINE = re.compile(r"^\[(?P<when>[^\]]+)\] \[autotls:error\].*certificate \S+ \((?P<name>[^)]+)\): "
                          r"(?P<msg>.*); next attempt in (?P<delay>\d+) s \(failure (?P<n>\d+)\)$",
                          re.M)


def log_failures(apache, name, start=0):
    """[(unix time, delay announced, failure number, message)] from the error log."""
    out = []
    for m in FAILURE_LINE.finditer(apache.error_log(start)):
        if m.group("name") != name:
            continue
        when = datetime.datetime.strptime(m.group("when"), "%a %b %d %H:%M:%S.%f %Y")
        out.append((when.timestamp(), int(m.group("delay")), int(m.group("n")), m.group("msg")))
    return out


def backoff_bounds(failures, base, cap):
    """The planner's delay after ``failures`` failures: base * 2^(n-1), capped,
    +-25% jitter (integer seconds), never above the cap, at least 1."""
    d = base
    for _ in range(1, failures):
        d = min(cap, d * 2)
    q = d // 4
    return max(1, d - q), min(cap, d + q)


def test_ca_unreachable_at_startup(make_stack, start_acme_proxy, cases):
    base, cap = 1, 4
    body_one = lambda a: status_vhost(a) + vhost("have.test", a.https_port)  # noqa: E731
    st = proxied_stack(make_stack, start_acme_proxy, body_one, seed())
    a, proxy = st.apache, st.proxy
    have = a.wait_for_cert("have.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    a.stop()

    # The CA goes away; the server restarts with two more names to certify.
    proxy.stop_listening()
    new = ("new1.test", "new2.test")
    a.write_config(st.global_config() + f"AutoTLSRetryDelay {base}s {cap}s\n" + status_vhost(a)
                   + "".join(vhost(n, a.https_port) for n in ("have.test",) + new))
    mark = a.log_size()
    a.start()
    down_since = time.time()
    health = Health(a)

    with cases.case("CA unreachable at startup", "stored certificate (have.test)") as info:
        for _ in range(20):
            assert a.cert("have.test", root_pem=st.root_pem).serial_number == have.serial_number
        r = a.https("have.test", root_pem=st.root_pem)
        assert r.status == 200 and "hello from apache" in r.text
        info["served"] = "20 handshakes, the stored certificate"

    for n in new:
        e = wait_failed(a, n, timeout=30)
        msg = e["last_error"]["message"]
        assert re.search(r"connect", msg, re.I) and st.directory_url.rsplit("/", 1)[0] in msg, msg
        assert e["state"] == "error" and e["next_attempt"], e
        assert rfc3339(e["next_attempt"]) >= time.time() - 2, e
        # Until its certificate exists the name answers 503, not someone else's certificate.
        assert a.https(n).status == 503

    # Down for a while: the retries are spaced out, not a tight loop.
    time.sleep(10)
    assert a.cert("have.test", root_pem=st.root_pem).serial_number == have.serial_number
    health.check()
    for n in new:
        with cases.case("CA unreachable at startup", f"new certificate ({n})") as info:
            e = entry(a, n)
            fails = log_failures(a, n, mark)
            elapsed = time.time() - down_since
            info["error"] = fails[0][3] if fails else None
            info["failures in %.0f s" % elapsed] = len(fails)
            assert fails, f"no failure of {n} in the error log"
            assert e["failures"] >= len(fails) - 1
            # The log says when the next attempt is, and it happens then.
            gaps = [round(b[0] - a_[0], 1) for a_, b in zip(fails, fails[1:])]
            info["retry gaps (s)"] = gaps
            for (t0, delay, k, _), t1 in zip(fails, [f[0] for f in fails[1:]]):
                lo, hi = backoff_bounds(k, base, cap)
                assert lo <= delay <= hi, (k, delay, lo, hi)
                assert delay - 1.2 <= t1 - t0 <= delay + 1.5, (k, delay, t1 - t0)
            # base 1 s, cap 4 s: at most about elapsed / 2.5 + 3 attempts.
            assert len(fails) <= elapsed / 2.5 + 3, f"{len(fails)} attempts in {elapsed:.0f} s"
            assert rfc3339(e["next_attempt"]) > time.time() - 1.5, e

    # The CA returns: everything is issued without a restart.
    pids = (a.pid, a.children())
    proxy.resume_listening()
    back = time.monotonic()
    for n in new:
        with cases.case("CA unreachable at startup", f"issued when the CA returns ({n})") as info:
            c = a.wait_for_cert(n, cap + ISSUE_TIMEOUT, root_pem=st.root_pem)
            assert c is not None
            e = wait_entry(a, n, lambda e: e["state"] == "valid", 10, "valid")
            assert e["last_error"] is None
            info["issued after"] = f"{time.monotonic() - back:.1f} s"
    assert (a.pid, a.children()) == pids
    health.check()


def test_ca_unreachable_during_an_order(make_stack, start_acme_proxy, cases):
    name = "mid.test"
    st = proxied_stack(make_stack, start_acme_proxy,
                       lambda a: "AutoTLSRetryDelay 1s 3s\n" + status_vhost(a)
                       + vhost(name, a.https_port), seed())
    a, proxy = st.apache, st.proxy
    first = a.wait_for_cert(name, ISSUE_TIMEOUT, root_pem=st.root_pem)
    health = Health(a)

    for kind, resumes in (("finalize", True), ("challenge", False)):
        with cases.case("CA unreachable during an order", f"connection dropped at {kind}") as info:
            old = a.cert(name, root_pem=st.root_pem)
            proxy.clear_requests()
            mark = a.log_size()
            # Hold the request long enough to pull the plug under it.
            proxy.add_fault("delay", kind=kind, count=1, seconds=3)
            force_renewal(a, name)
            proxy.wait_for_requests(kind, 1, timeout=30)
            proxy.stop_listening()
            e = wait_failed(a, name, timeout=30)
            msg = e["last_error"]["message"]
            info["error"] = msg
            assert re.search(r"connect|closed|reset|refused|answer", msg, re.I), msg
            assert e["next_attempt"] and rfc3339(e["next_attempt"]) >= time.time() - 2, e
            # The log says it too, with the next attempt.
            fails = wait_until(lambda: log_failures(a, name, mark), 10, "the failure in the log")
            assert fails[0][1] >= 1 and kind in fails[0][3].lower() or "connect" in fails[0][3], fails
            # Down for a few seconds: served as before, retries spaced out.
            time.sleep(2.5)
            assert a.cert(name, root_pem=st.root_pem).serial_number == old.serial_number
            assert a.https(name, root_pem=st.root_pem).status == 200
            e = entry(a, name)
            assert e["state"] == "error" and 1 <= e["failures"] <= 4, e
            health.check()
            proxy.clear_faults()
            proxy.resume_listening()
            new = wait_serial_change(a, name, old.serial_number, st.root_pem, timeout=60)
            wait_entry(a, name, lambda e: e["state"] == "valid", 10, "valid")
            orders = proxy.count("newOrder")
            info["newOrders"] = orders
            if resumes:
                # The order survived the outage: resumed, not placed again.
                assert orders == 1, f"{orders} newOrder requests: the order was not resumed"
                assert re.search(r"resuming the order", a.error_log())
            assert new.serial_number not in (first.serial_number, old.serial_number)
            health.check()


def test_ca_failing_backs_off_with_jitter(make_stack, start_acme_proxy, cases):
    base, cap = 1, 8
    names = [f"j{i}.test" for i in range(1, 6)]
    st = proxied_stack(make_stack, start_acme_proxy,
                       lambda a: f"AutoTLSRetryDelay {base}s {cap}s\n" + status_vhost(a)
                       + "".join(vhost(n, a.https_port) for n in names), seed(), start=False)
    a, proxy = st.apache, st.proxy
    proxy.add_fault("status", kind="newOrder", status=503)
    a.start()
    health = Health(a)

    # Watch the status page: every announced next attempt, per failure count.
    announced = {n: {} for n in names}

    def enough():
        for n in names:
            e = entry(a, n)
            if e["failures"] and e["next_attempt"]:
                announced[n].setdefault(e["failures"], rfc3339(e["next_attempt"]))
        return all(len(v) >= 5 for v in announced.values())
    wait_until(enough, 60, "five failures of every certificate", interval=0.1)
    health.check()
    proxy.clear_faults()
    for n in names:
        a.wait_for_cert(n, cap + ISSUE_TIMEOUT, root_pem=st.root_pem)

    orders = {n: [] for n in names}
    for r in proxy.requests("newOrder"):
        ids = [i["value"] for i in (r.payload or {}).get("identifiers", [])]
        if len(ids) == 1 and ids[0] in orders:
            orders[ids[0]].append(r)
    jittered = []
    for n in names:
        with cases.case("CA failing: backoff with jitter", n) as info:
            failed = [r for r in orders[n] if r.fault == "status"]
            assert len(failed) >= 5, f"{n}: {len(failed)} failed newOrders"
            gaps = [b.time - a_.time for a_, b in zip(orders[n], orders[n][1:])]
            info["retry gaps (s)"] = [round(g, 1) for g in gaps]
            for k, gap in enumerate(gaps[:len(failed)], start=1):
                lo, hi = backoff_bounds(k, base, cap)
                # Whole-second clock: up to a second either way.
                assert lo - 1 <= gap <= hi + 1.2, f"{n}: gap {k} is {gap:.2f} s, not {lo}..{hi}"
                if lo != hi:
                    jittered.append(round(gap))
                # What the status page announced for this retry is when it came.
                if k in announced[n]:
                    when = orders[n][k].wall
                    assert announced[n][k] - 1.2 <= when <= announced[n][k] + 1.5, \
                        f"{n}: retry {k} at {when:.1f}, announced for {announced[n][k]}"
            # Bounded: no more attempts than the backoff allows.
            assert len(failed) <= 7, f"{n}: {len(failed)} newOrders while the CA failed"
    with cases.case("CA failing: backoff with jitter", "certificates do not retry in lockstep") as info:
        info["jittered gaps (s)"] = sorted(jittered)
        assert len(set(jittered)) > 1, f"every jittered gap is the same: {jittered}"
        fifth = sorted(orders[n][4].wall for n in names)
        info["spread of the fifth attempts (s)"] = round(fifth[-1] - fifth[0], 1)
        assert len({int(t) for t in fifth}) > 1, "all certificates retried in the same second"
    health.check()
