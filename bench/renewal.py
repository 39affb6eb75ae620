#!/usr/bin/python3
"""Renewal of many names: wall time and CPU time of renewing every
certificate of an Apache with mod_autotls at once, with AutoTLSConcurrency 1
against the default concurrency.

Setup (not timed): one Apache issues a certificate for each of N names
(one vhost per name, EC P-256, http-01) from Pebble; its store is copied
for each configuration. Each round then starts Apache on its copy, waits
until it serves, asks for the renewal of everything (POST
/autotls-renew?name=all) and stops the clock when the log has announced
every renewed certificate as served. CPU time is that of the whole Apache
process tree (all threads) over the same interval; Pebble's is reported
beside it. Configurations alternate (1, default, default, 1, ...).

    bench/renewal.py                 # 1,000 names, 5 rounds each
    bench/renewal.py --names 200 --rounds 5
"""

import json
import re
import subprocess
import time

import benchlib as bl

RENEWED_RE = re.compile(r"certificate \S+ \(([^)\s]+)\): renewed, serial \S+, .*served now")
ISSUED_RE = re.compile(r"certificate \S+ \(([^)\s]+)\): issued, serial \S+, .*served now")
CONFIGS = {"concurrency 1": "AutoTLSConcurrency 1\n", "default": ""}


def names(n):
    return [f"r{i}.renew.test" for i in range(n)]


def apache(env, store, extra):
    a = bl.Apache(env.scratch, "autotls", env.http_port, [env.https_port], env.build,
                  log_level="warn autotls:notice")
    body = bl.autotls_apache_globals(env.ca, store, extra=extra)
    body += bl.status_vhost(env.http_port, ("/autotls-renew", "autotls-renew"),
                            ("/autotls-status", "autotls-status"))
    body += "".join(bl.https_vhost(env.https_port, nm, "AutoTLS on") for nm in env.names)
    a.write_config(body)
    a.configtest()
    return a


def seed(env):
    """Issue every certificate once; returns the store to copy."""
    store = env.scratch.make("bench-renew-seed-") / "store"
    a = apache(env, store, "")
    tail = bl.LogTail(a.error_log)
    t0 = time.monotonic()
    a.start()
    done = bl.count_names(a, ISSUED_RE, len(env.names), env.timeout, tail)
    bl.log(f"issued {len(env.names)} certificates in {done - t0:.1f} s (setup)")
    env.issue_seconds = done - t0
    a.stop()
    return store


def copy_store(src, dst):
    # cp -a keeps owners, modes and the store's symbolic links.
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True, timeout=600)


def renewal_pid(a):
    status, body = bl.http_get(a.http_port, "/autotls-status?format=json")
    if status != 200:
        return None
    return (json.loads(body).get("server") or {}).get("renewal_pid")


def renew_round(env, store, extra):
    a = apache(env, store, extra)
    tail = bl.LogTail(a.error_log)
    try:
        a.start()
        # Serving the stored certificates, renewal thread running.
        bl.wait_until(lambda: renewal_pid(a), 60, "the renewal thread to start", interval=0.1)
        cpu0, ca0 = a.cpu(), env.ca.cpu_seconds()
        tail.skip_to_end()
        t0 = time.monotonic()
        status, body = bl.http_get(a.http_port, "/autotls-renew?name=all", method="POST")
        if status >= 300:
            raise bl.BenchError(f"POST /autotls-renew?name=all: HTTP {status} {body[:200]!r}")
        done = bl.count_names(a, RENEWED_RE, len(env.names), env.timeout, tail)
        return {"wall": done - t0, "cpu": a.cpu() - cpu0, "ca_cpu": env.ca.cpu_seconds() - ca0}
    finally:
        a.stop()


class Env:
    pass


def main():
    p = bl.arg_parser(__doc__.split("\n\n")[0])
    p.add_argument("--names", type=int, default=1000, help="number of names (default 1000)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds one renewal may take")
    args = p.parse_args()
    env = Env()
    env.build = bl.ensure_build(args.build_dir)
    env.scratch = bl.Scratch(args.keep)
    env.timeout = args.timeout
    env.names = names(args.names)
    env.http_port, env.https_port = bl.free_ports(2)
    res = bl.Results("renewal", "bench/renewal.py", args)
    runs = {c: [] for c in CONFIGS}
    try:
        env.ca = bl.CA(env.scratch.make("bench-ca-"), env.http_port, env.https_port)
        seed_store = seed(env)
        stores = {}
        for c in CONFIGS:
            stores[c] = env.scratch.make("bench-renew-") / "store"
            copy_store(seed_store, stores[c])
        for r in range(args.rounds):
            for c in bl.interleaved(CONFIGS, r):
                out = renew_round(env, stores[c], CONFIGS[c])
                runs[c].append(out)
                bl.log(f"round {r + 1}/{args.rounds} {c:<14} wall {out['wall']:.1f} s, "
                       f"Apache CPU {out['cpu']:.1f} s, Pebble CPU {out['ca_cpu']:.1f} s")
    finally:
        if hasattr(env, "ca"):
            env.ca.stop()

    n = args.names
    wall = {c: bl.summary([x["wall"] for x in runs[c]]) for c in CONFIGS}
    cpu = {c: bl.summary([x["cpu"] for x in runs[c]]) for c in CONFIGS}
    ca = {c: bl.summary([x["ca_cpu"] for x in runs[c]]) for c in CONFIGS}
    res.extra["initial_issuance_s"] = getattr(env, "issue_seconds", None)
    res.row(f"renewal of {n:,} names, wall time (default concurrency vs 1)",
            wall["default"]["median"], wall["concurrency 1"]["median"], "AutoTLSConcurrency 1",
            "s", "lower", target="< 60 s", target_max=60.0 if n >= 1000 else None,
            names=n, runs=wall, ca_cpu=ca)
    res.row(f"renewal of {n:,} names, Apache CPU time (default concurrency vs 1)",
            cpu["default"]["median"], cpu["concurrency 1"]["median"], "AutoTLSConcurrency 1",
            "s", "lower", names=n, runs=cpu, ca_cpu=ca,
            note=f"Pebble used {bl.fmt(ca['default']['median'], 's')} (default) and "
                 f"{bl.fmt(ca['concurrency 1']['median'], 's')} (concurrency 1)")
    if not args.no_save:
        res.save(args.out)
    res.print_table()
    d, one = wall["default"]["median"], wall["concurrency 1"]["median"]
    print(f"ratio: renewal of {n:,} names takes {d:.1f} s at the default concurrency, "
          f"{one:.1f} s at concurrency 1 ({one / d:.2f}x faster); target < 60 s: "
          f"{'met' if d < 60 else 'missed'}")
    return 0


if __name__ == "__main__":
    bl.main_wrapper(main)
