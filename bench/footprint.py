#!/usr/bin/python3
"""Footprint and status: memory per managed name at 1,000 and 10,000 names,
and the time to render the status page at 1,000 names against mod_md's
md-status handler.

For each size N, one name per vhost and per certificate (EC P-256; the
most memory per name):
  autotls  Apache with N "AutoTLS on" vhosts, after every certificate was
           issued by one Pebble process (one order at a time, see below);
           measured idle, then again after one handshake per name (each
           worker's cache of parsed certificates filled)
  static   the same Apache with the same N certificates and keys as
           SSLCertificateFile / SSLCertificateKeyFile (copied from the
           autotls store), mod_autotls not loaded: what the sites cost anyway
  mod_md   (N = 1,000 only) N MDomains issued by Pebble, after the graceful
           restart that activates them

Memory is the proportional set size (Pss) summed over the server's
processes (parent and children: shared pages counted once), read from
/proc/PID/smaps_rollup; "per name" is the difference to the static server
divided by N. The shared region's bytes are those the table uses (the
status page's shared_memory.used), divided by N.

Status: GET /autotls-status?format=json against GET /md-status (JSON too),
on the same 1,000 names, each over a fresh loopback connection, requests
alternating; medians.

Issuance runs at AutoTLSConcurrency 1 (--issue-concurrency), at every size
alike. Debian's Pebble 2.4 deadlocks in its memory store when requests
overlap and it already holds thousands of authorizations: NewOrder scans
every authorization under the store's read lock while another request holds
an authorization's lock and waits for the store behind a queued writer.
With one order in flight (its requests in sequence) that cycle cannot form,
and one Pebble process issues all 10,000 certificates (in about ten minutes
on two cores). The concurrency changes how fast the certificates arrive,
not what the idle server holds once they are all served.

    bench/footprint.py                    # 1,000 and 10,000 names
    bench/footprint.py --names 1000 --status-requests 21
"""

import json
import re
import shutil
import time

import benchlib as bl

ISSUED_RE = re.compile(r"certificate \S+ \(([^)\s]+)\): issued, serial \S+, .*served now")
MD_READY_RE = re.compile(r"The Managed Domain (\S+) has been setup and changes will be activated")


def names(n):
    return [f"f{i}.foot.test" for i in range(n)]


def settle(server, seconds=3.0):
    time.sleep(seconds)        # let startup garbage be freed, threads park
    return server.memory()


def handshake_all(server, port, nms, ctx):
    """One verified handshake per name (fills the workers' caches)."""
    missing = [n for n in nms if not bl.served_cert(port, n, ctx)]
    if missing:
        raise bl.BenchError(f"{server.flavour}: {len(missing)} names not served, e.g. {missing[:3]}")


def timed_get(port, path):
    t0 = time.perf_counter()
    status, body = bl.http_get(port, path, timeout=120)
    dt = time.perf_counter() - t0
    if status != 200:
        raise bl.BenchError(f"GET {path}: HTTP {status} {body[:200]!r}")
    return dt, len(body)


def autotls_server(env, nms, store, ports=None, extra=""):
    http_port, https_port = ports or (env.http_port, env.https_port)
    a = bl.Apache(env.scratch, "autotls", http_port, [https_port], env.build,
                  log_level="warn autotls:notice")
    body = bl.autotls_apache_globals(env.ca, store, extra=extra)
    body += bl.status_vhost(http_port, ("/autotls-status", "autotls-status"))
    body += "".join(bl.https_vhost(https_port, n, "AutoTLS on") for n in nms)
    a.write_config(body)
    a.configtest()
    return a


def static_server(env, nms, store):
    a = bl.Apache(env.scratch, "plain", env.http_port, [env.https_port])
    certdir = a.root / "certs"
    certdir.mkdir()
    body = ""
    for n in nms:
        sets = list((store / "certs").glob(f"{n}_*"))
        if len(sets) != 1:
            raise bl.BenchError(f"no single stored certificate for {n}")
        chain, key = certdir / f"{n}.pem", certdir / f"{n}.key"
        shutil.copyfile(sets[0] / "chain.pem", chain)
        shutil.copyfile(sets[0] / "key.pem", key)
        body += bl.https_vhost(env.https_port, n, "SSLEngine on", f'SSLCertificateFile "{chain}"',
                               f'SSLCertificateKeyFile "{key}"')
    a.write_config(body)
    a.configtest()
    return a


def md_server(env, nms):
    a = bl.Apache(env.scratch, "md", env.http_port, [env.https_port], log_level="warn md:notice")
    body = bl.md_apache_globals(env.ca, a.root / "md", env.http_port, env.https_port)
    body += bl.status_vhost(env.http_port, ("/md-status", "md-status"))
    for n in nms:
        body += f"MDomain {n}\n" + bl.https_vhost(env.https_port, n, "SSLEngine on")
    a.write_config(body)
    a.configtest()
    return a


def per_name(total, base, n):
    return None if total is None or base is None else (total - base) / n


def measure_size(env, n, status_requests):
    nms = names(n)
    out = {"names": n}
    store = env.scratch.make(f"bench-foot-{n}-") / "store"
    a = autotls_server(env, nms, store,
                       extra=f"AutoTLSConcurrency {env.issue_concurrency}\n")
    t0 = time.monotonic()
    a.start(timeout=3600)
    out["autotls_start_s"] = time.monotonic() - t0
    try:
        bl.count_names(a, ISSUED_RE, n, env.timeout)
        out["autotls_issue_s"] = time.monotonic() - t0
        bl.log(f"{n} names: autotls issued everything in {out['autotls_issue_s']:.0f} s")
        out["autotls_idle"] = settle(a)
        status, body = bl.http_get(a.http_port, "/autotls-status?format=json", timeout=600)
        out["shm"] = json.loads(body)["server"]["shared_memory"]
        handshake_all(a, a.https_port, nms, env.ctx)
        out["autotls_warm"] = settle(a)
    finally:
        a.stop()

    s = static_server(env, nms, store)
    try:
        s.start(timeout=3600)
        out["static"] = settle(s)
    finally:
        s.stop()

    if not (env.with_md and n == env.md_names):
        return out
    m = md_server(env, nms)
    a = None
    try:
        t0 = time.monotonic()
        m.spawn()
        bl.count_names(m, MD_READY_RE, n, env.timeout)
        out["md_issue_s"] = time.monotonic() - t0
        bl.log(f"{n} names: mod_md set up everything in {out['md_issue_s']:.0f} s; restarting")
        m.graceful()
        sample = nms[:: max(1, n // 20)]
        bl.wait_until(lambda: all(bl.served_cert(m.https_port, x, env.ctx) for x in sample),
                      600, "mod_md to serve its certificates", interval=0.5)
        handshake_all(m, m.https_port, nms, env.ctx)
        out["md"] = settle(m)
        # The status pages side by side: autotls again on other ports, from
        # the same store (everything is issued: it only serves).
        a = autotls_server(env, nms, store, ports=bl.free_ports(2))
        a.start(timeout=3600)
        out["status"] = status_race(a, m, status_requests)
    finally:
        m.stop()
        if a:
            a.stop()
    return out


def status_race(a, m, count):
    """Alternate the two status handlers; seconds per page, and sizes."""
    paths = {"autotls": (a.http_port, "/autotls-status?format=json"),
             "autotls_html": (a.http_port, "/autotls-status"),
             "md": (m.http_port, "/md-status")}
    times = {k: [] for k in paths}
    size = {}
    for k, (port, path) in paths.items():
        timed_get(port, path)                                # warm up
    for i in range(count):
        for k in bl.interleaved(list(paths), i):
            dt, size[k] = timed_get(*paths[k])
            times[k].append(dt)
    return {"times": times, "bytes": size}


class Env:
    pass


def main():
    p = bl.arg_parser(__doc__.split("\n\n")[0])
    p.add_argument("--names", default="1000,10000", help="comma-separated sizes")
    p.add_argument("--md-names", type=int, default=1000,
                   help="the size at which mod_md and the status pages are compared (0: never)")
    p.add_argument("--status-requests", type=int, default=21,
                   help="requests per status handler (default 21)")
    p.add_argument("--timeout", type=float, default=7200, help="seconds the issuance may take")
    p.add_argument("--issue-concurrency", type=int, default=1,
                   help="AutoTLSConcurrency while the certificates are issued (default 1: "
                        "Debian's Pebble 2.4 deadlocks at 10,000 names when orders overlap)")
    args = p.parse_args()
    sizes = [int(x) for x in args.names.split(",")]
    env = Env()
    env.build = bl.ensure_build(args.build_dir)
    env.scratch = bl.Scratch(args.keep)
    env.timeout = args.timeout
    env.md_names = args.md_names
    env.issue_concurrency = args.issue_concurrency
    env.with_md = args.md_names in sizes
    env.http_port, env.https_port = bl.free_ports(2)
    res = bl.Results("footprint", "bench/footprint.py", args)
    data = {}
    try:
        env.ca = bl.CA(env.scratch.make("bench-ca-"), env.http_port, env.https_port)
        env.ctx = bl.verifying_context(env.ca.root_pem)
        for n in sizes:
            data[n] = measure_size(env, n, args.status_requests)
    finally:
        if hasattr(env, "ca"):
            env.ca.stop()

    issued_by = {"pebble_processes": 1, "autotls_concurrency": args.issue_concurrency}
    for n in sizes:
        d = data[n]
        base = d["static"]["pss"]
        shm_used = d["shm"]["used"]
        res.row(f"shared memory per name, {n:,} names", shm_used / n, None, "", "B", "lower",
                names=n, shm=d["shm"], issued_by=issued_by)
        res.row(f"memory per name beyond static certificates, {n:,} names (Pss, all processes)",
                per_name(d["autotls_warm"]["pss"], base, n),
                per_name(d["md"]["pss"], base, n) if "md" in d else None,
                "mod_md" if "md" in d else "", "B", "lower",
                names=n, autotls_idle=d["autotls_idle"], autotls_warm=d["autotls_warm"],
                static=d["static"], md=d.get("md"),
                autotls_idle_per_name=per_name(d["autotls_idle"]["pss"], base, n),
                static_per_name=base / n, autotls_issue_s=d.get("autotls_issue_s"),
                autotls_start_s=d.get("autotls_start_s"), md_issue_s=d.get("md_issue_s"),
                issued_by=issued_by)
        if "status" in d:
            st = d["status"]
            at = bl.summary(st["times"]["autotls"])
            md = bl.summary(st["times"]["md"])
            html = bl.summary(st["times"]["autotls_html"])
            res.row(f"status page render time, {n:,} names (JSON)", at["median"] * 1000,
                    md["median"] * 1000, "mod_md md-status", "ms", "lower", names=n,
                    autotls_json_s=at, md_status_s=md, autotls_html_s=html, bytes=st["bytes"])
    if not args.no_save:
        res.save(args.out)
    res.print_table()
    st_rows = [r for r in res.rows if r["figure"].startswith("status page")]
    mem = [r for r in res.rows if r["figure"].startswith("memory per name")]
    parts = []
    if mem:
        parts.append("memory per name " + ", ".join(
            f"{bl.fmt(r['autotls'] / 1024, 'KiB')} at {r['detail']['names']:,}" for r in mem))
    if st_rows and st_rows[0]["ratio"]:
        parts.append(f"status page {st_rows[0]['ratio']:.2f}x mod_md's speed")
    print("ratio: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    bl.main_wrapper(main)
