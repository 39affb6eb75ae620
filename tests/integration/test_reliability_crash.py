"""kill -9 of the whole Apache (parent and children) at random moments while
several certificates are being issued or renewed.

After every kill, before the next start, the store must be consistent:
every record a reader can see is complete, every stored certificate
matches its key (openssl), state files parse, modes are private, and the
tool (an independent reader) finds nothing damaged. At the end every
certificate is issued and served. The moments come from a seeded random
generator; the seed is printed (AUTOTLS_RELIABILITY_SEED replays a run).
"""

import contextlib
import json
import os
import random
import signal
import subprocess
import time

from apache_env import make_stack, status_vhost, vhost  # noqa: F401
from procs import wait_group_gone, wait_until
from reliability import (_cases_file, cases, entry, key_matches, seed,  # noqa: F401
                         store_problems, stored_serial)

ISSUE_TIMEOUT = 90
ROUNDS = int(os.environ.get("AUTOTLS_CRASH_ROUNDS", "20"))
NAMES = ("k1.test", "k2.test", "k3.test")
DUAL = "k4.test"               # an EC and an RSA certificate for the same names
REQUEST_DELAY = 0.1            # seconds the proxy holds back every request to the CA


def body(a):
    return ("AutoTLSRetryDelay 1s 2s\n" + status_vhost(a)
            + "".join(vhost(n, a.https_port) for n in NAMES)
            + vhost(DUAL, a.https_port, "AutoTLSKeys ec:P-256 rsa:2048", aliases=("www.k4.test",)))


def kill9(apache, timeout=20.0):
    """SIGKILL the parent and every child at once; wait until all are gone."""
    pgid = apache.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    apache.process.proc.wait(timeout)
    apache.process.stop()
    wait_group_gone(pgid, timeout, "every apache2 process to die")


def tool_view(autotls_bin, store):
    """What `autotls status` (another reader of the store) makes of it."""
    r = subprocess.run([str(autotls_bin), "status", "--store", str(store), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"autotls status failed: {r.stderr}"
    return json.loads(r.stdout)["certificates"]


def in_flight(store):
    staging = store / "staging"
    return sorted(p.name for p in staging.iterdir() if not p.name.startswith(".")) \
        if staging.is_dir() else []


def test_kill9_at_random_moments_during_issuance(make_stack, cases, autotls_bin):
    rng = random.Random(seed())
    # Pebble issues in a fraction of a second; every request through the
    # proxy is held back a little so that an order lasts about a second and
    # the random moments below fall inside issuance, not after it.
    st = make_stack(body, proxy=True, start=False)
    st.proxy.add_fault("delay", seconds=REQUEST_DELAY)
    a = st.apache
    started = time.monotonic()
    killed_with_orders = 0
    for n in range(1, ROUNDS + 1):
        with cases.case("kill -9 during issuance", f"kill {n}") as info:
            mark = a.log_size()
            a.start()
            # From the second round on, every certificate is renewed again,
            # so that each kill lands in the middle of issuance.
            if n > 1:
                assert a.renew("all").status == 202
            # A renewal asked for before the last kill may still be on
            # record: then the engine orders at startup, before this request,
            # and the request joins those orders. Either way the clock starts
            # at the first order of this round.
            a.wait_log(r"\): ordering \((forced|missing|resume)\)", 30, start=mark)
            moment = round(rng.uniform(0.0, 1.2), 3)
            time.sleep(moment)
            flying = in_flight(a.store)
            log = a.error_log(mark)
            kill9(a)
            unfinished = log.count("): ordering (") - log.count(", served now")
            info["moment (s)"] = moment
            info["orders unfinished"] = unfinished
            info["orders in staging"] = len(flying)
            killed_with_orders += unfinished > 0
            problems = store_problems(a.store)
            assert not problems, "\n".join(problems)
            for c in tool_view(autotls_bin, a.store):
                err = (c.get("last_error") or {}).get("message") or ""
                assert "damaged" not in err, c
            print(f"kill {n}: {moment:.3f} s after the first order started, "
                  f"{unfinished} order(s) unfinished, {len(flying)} in staging")

    with cases.case("kill -9 during issuance", "every certificate issued at the end") as info:
        a.start()
        for name in NAMES + (DUAL,):
            a.wait_for_cert(name, ISSUE_TIMEOUT, root_pem=st.root_pem)

        def all_valid():
            entries = a.status_json()["certificates"]
            return len(entries) == len(NAMES) + 2 and \
                all(e["state"] == "valid" for e in entries) and entries
        entries = wait_until(all_valid, ISSUE_TIMEOUT, "every certificate valid", interval=0.3)
        for e in entries:
            d = a.store / "certs" / e["id"]
            assert key_matches(d / "chain.pem", d / "key.pem"), e["id"]
            assert int(e["serial"], 16) == stored_serial(a.store, e["id"])
        for name in NAMES:
            served = a.cert(name, root_pem=st.root_pem)
            assert served.serial_number == stored_serial(a.store, entry(a, name)["id"])
        assert not store_problems(a.store)
        info["kills with orders in flight"] = f"{killed_with_orders} of {ROUNDS}"
        info["total (s)"] = round(time.monotonic() - started, 1)
    # The kills must have hit issuance, not only quiet moments.
    assert killed_with_orders >= ROUNDS // 2, \
        f"only {killed_with_orders} of {ROUNDS} kills happened with an order in flight"
