#!/usr/bin/python3
"""Cold start to HTTPS: from the moment the server is started until every
managed name serves its CA-issued certificate over HTTPS.

Compared, each run on a fresh Pebble (PEBBLE_VA_NOSLEEP=1, http-01 for
everyone):
  autotls-apache  Apache with mod_autotls: certificates go live by themselves
  mod_md          Apache with Debian's mod_md: when its log says the last
                  Managed Domain "has been setup and changes will be
                  activated on next (graceful) server restart" (AH10059), the
                  benchmark sends the graceful restart at once, and the clock
                  stops when every name serves the new certificate
  autotls-nginx   nginx with the autotls module (when it is built)

One fresh server and store per run, one vhost per name, runs interleaved
(A B C, C B A, ...). "Served" means a TLS handshake with the name as SNI
that verifies against Pebble's root (a placeholder or mod_md's self-signed
fallback never counts). Names are probed as soon as the server's log says
their certificate is live (and every pending name every few seconds
regardless), so probing costs little CPU while orders run.

For autotls, "issued -> served" is also reported per name: from the log
line that publishes the certificate to the first verified handshake, with
no restart in between (target: within 1 s).

    bench/cold_start.py                      # 1, 10, 100 names; EC and RSA
    bench/cold_start.py --names 100 --keys ec --rounds 5
"""

import os
import re
import time

import benchlib as bl

SERVED_RE = re.compile(r"certificate \S+ \(([^)\s]+)\): (?:issued|renewed), serial \S+, .*served now")
MD_READY_RE = re.compile(r"The Managed Domain (\S+) has been setup and changes will be activated")
APACHE_TIME_RE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\]")
KEYS = {"ec": "ec:P-256", "rsa": "rsa:2048"}
SWEEP_AFTER = 5.0       # probe every pending name when nothing got served for this long
POLL = 0.02


def names_for(n, key, round_index, server):
    # Fresh names per run: no authorization or certificate of an earlier run
    # can be reused by anyone.
    return [f"n{i}-r{round_index}-{key}-{server}.cold.test" for i in range(n)]


def log_wall_time(line):
    """Wall-clock time of an Apache log line (ErrorLogFormat %{cu}t), or None."""
    m = APACHE_TIME_RE.match(line)
    if not m:
        return None
    stamp, frac = m.group(1).split(".")
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + float("0." + frac)


class Watch:
    """Watch one server until every name serves a verified certificate."""

    def __init__(self, server, names, ctx, timeout):
        self.server = server
        self.names = names
        self.ctx = ctx
        self.deadline = time.monotonic() + timeout
        self.tail = bl.LogTail(server.error_log)
        self.announced = {}      # name -> monotonic time the log said it is live
        self.served = {}         # name -> monotonic time of the first verified handshake
        self.last_progress = time.monotonic()
        self.mono_offset = time.time() - time.monotonic()

    def read_log(self, pattern):
        out = []
        for line in self.tail.lines():
            m = pattern.search(line)
            if m:
                wall = log_wall_time(line)
                when = wall - self.mono_offset if wall else time.monotonic()
                out.append((m.group(1), when))
        return out

    def probe(self, names):
        for name in names:
            if name in self.served:
                continue
            if bl.served_cert(self.server.https_port, name, self.ctx):
                self.served[name] = time.monotonic()
                self.last_progress = self.served[name]

    def check(self):
        self.server.check_running()
        if time.monotonic() > self.deadline:
            missing = [n for n in self.names if n not in self.served]
            raise TimeoutError(f"{self.server.flavour}: {len(missing)} name(s) still not served "
                               f"(e.g. {missing[:3]}); log:\n{self.server.log_tail()}")

    def until_served(self, announce_re=SERVED_RE):
        """Probe names as the log announces them; sweep when stuck."""
        pending = set(self.names)
        while True:
            self.check()
            for name, when in self.read_log(announce_re):
                self.announced.setdefault(name, when)
            due = [n for n in self.names if n in self.announced and n not in self.served]
            self.probe(due)
            if time.monotonic() - self.last_progress > SWEEP_AFTER:
                self.probe([n for n in self.names if n not in self.served])
                self.last_progress = time.monotonic()
            pending = [n for n in self.names if n not in self.served]
            if not pending:
                return max(self.served.values())
            if not due:
                time.sleep(POLL)


def served_after_start(server, body, names, env):
    """Start an autotls server with ``body`` and time it until every name is
    served; also how long each name took from its announcement to being
    served (nginx logs whole seconds: there the announce time is when the
    line was read)."""
    server.write_config(body)
    server.configtest()
    w = Watch(server, names, env.ctx, env.timeout)
    try:
        server.spawn()
        done = w.until_served()
        lags = [w.served[nm] - w.announced[nm] for nm in names if nm in w.announced]
        return {"total": done - server.started_at, "lag_max": max(lags) if lags else None,
                "issued_last": (max(w.announced.values()) - server.started_at
                                if w.announced else None)}
    finally:
        server.stop()


def run_autotls_apache(env, n, key, r):
    names = names_for(n, key, r, "ap")
    a = bl.Apache(env.scratch, "autotls", env.http_port, [env.https_port], env.build,
                  log_level=env.ap_log_level)
    body = bl.autotls_apache_globals(env.ca, a.store, KEYS[key])
    body += "".join(bl.https_vhost(env.https_port, nm, "AutoTLS on") for nm in names)
    return served_after_start(a, body, names, env)


def run_md(env, n, key, r):
    names = names_for(n, key, r, "md")
    a = bl.Apache(env.scratch, "md", env.http_port, [env.https_port], log_level="warn md:notice")
    body = bl.md_apache_globals(env.ca, a.root / "md", env.http_port, env.https_port, KEYS[key])
    for nm in names:
        body += f"MDomain {nm}\n" + bl.https_vhost(env.https_port, nm, "SSLEngine on")
    a.write_config(body)
    a.configtest()
    w = Watch(a, names, env.ctx, env.timeout)
    try:
        a.spawn()
        ready = {}
        while len(ready) < len(names):
            w.check()
            for name, when in w.read_log(MD_READY_RE):
                ready.setdefault(name, when)
            time.sleep(POLL)
        # The restart mod_md asks for, sent the moment the last domain is ready.
        t_ready = time.monotonic()
        a.graceful()
        for nm in names:
            w.announced[nm] = t_ready
        done = w.until_served(announce_re=re.compile(r"(?!x)x"))
        return {"total": done - a.started_at, "issued_last": max(ready.values()) - a.started_at,
                "restart_to_served": done - t_ready}
    finally:
        a.stop()


def run_autotls_nginx(env, n, key, r):
    names = names_for(n, key, r, "ng")
    x = bl.Nginx(env.scratch, env.build, env.http_port, [env.https_port], log_level="notice")
    body = bl.autotls_nginx_globals(env.ca, x.store, KEYS[key])
    body += bl.nginx_server(env.http_port, "localhost", ssl_listen=False)
    body += "".join(bl.nginx_server(env.https_port, nm, "autotls on;") for nm in names)
    return served_after_start(x, body, names, env)


RUNNERS = {"autotls-apache": run_autotls_apache, "mod_md": run_md,
           "autotls-nginx": run_autotls_nginx}


class Env:
    pass


def main():
    p = bl.arg_parser(__doc__.split("\n\n")[0])
    p.add_argument("--names", default="1,10,100", help="comma-separated name counts")
    p.add_argument("--keys", default="ec,rsa", help="comma-separated: ec, rsa")
    p.add_argument("--servers", default="autotls-apache,mod_md,autotls-nginx",
                   help="comma-separated: " + ", ".join(RUNNERS))
    p.add_argument("--timeout", type=float, default=600, help="seconds a run may take")
    args = p.parse_args()
    counts = [int(x) for x in args.names.split(",")]
    keys = args.keys.split(",")
    servers = args.servers.split(",")
    env = Env()
    env.build = bl.ensure_build(args.build_dir)
    if "autotls-nginx" in servers and not env.build.has_nginx:
        bl.log("the nginx module is not built; skipping autotls-nginx")
        servers.remove("autotls-nginx")
    env.timeout = args.timeout
    env.ap_log_level = os.environ.get("BENCH_APACHE_LOGLEVEL", "warn autotls:notice")
    env.scratch = bl.Scratch(args.keep)
    env.http_port, env.https_port = bl.free_ports(2)
    res = bl.Results("cold_start", "bench/cold_start.py", args)
    res.extra["servers"] = servers
    data = {}
    for key in keys:
        for n in counts:
            for r in range(args.rounds):
                for s in bl.interleaved(servers, r):
                    # A fresh Pebble for every run: each server meets the same
                    # empty CA, and Pebble 2.4's store deadlock (likelier the
                    # more authorizations it holds; see bench/README.md) cannot
                    # carry over into later runs.
                    env.ca = bl.CA(env.scratch.make("bench-ca-"), env.http_port, env.https_port)
                    try:
                        env.ctx = bl.verifying_context(env.ca.root_pem)
                        out = RUNNERS[s](env, n, key, r)
                    finally:
                        env.ca.stop()
                    data.setdefault((key, n, s), []).append(out)
                    bl.log(f"{key} {n:>4} names round {r + 1}/{args.rounds} {s:<15} "
                           f"{out['total']:.2f} s")
    report(res, data, keys, counts, servers)
    if not args.no_save:
        res.save(args.out)
    res.print_table()
    last = [r for r in res.rows if r["figure"].endswith("(Apache)") and r["ratio"] is not None]
    if last:
        head = max(last, key=lambda r: (r["detail"]["names"], r["detail"]["key"] == "ec"))
        target = ""
        if head.get("target"):
            target = f" (target {head['target']}: {'met' if head['met'] else 'missed'})"
        print(f"ratio: {head['figure']}: autotls {head['ratio']:.1f}x faster than mod_md{target}")
    return 0


def report(res, data, keys, counts, servers):
    for key in keys:
        for n in counts:
            at = bl.summary([d["total"] for d in data.get((key, n, "autotls-apache"), [])])
            md = bl.summary([d["total"] for d in data.get((key, n, "mod_md"), [])])
            label = f"{n} {'EC P-256' if key == 'ec' else 'RSA 2048'} name{'s' if n > 1 else ''}"
            if "mod_md" in servers:
                mdr = data.get((key, n, "mod_md"), [])
                res.row(f"cold start to HTTPS, {label} (Apache)", at["median"], md["median"],
                        "mod_md + graceful restart", "s", "lower",
                        target=">= 5x" if (n == 100 and key == "ec") else None,
                        target_ratio=5.0 if (n == 100 and key == "ec") else None,
                        names=n, key=key, autotls_runs=at, mod_md_runs=md,
                        mod_md_ready=bl.summary([d["issued_last"] for d in mdr]),
                        mod_md_restart_to_served=bl.summary([d["restart_to_served"] for d in mdr]))
            if "autotls-nginx" in servers:
                ng = bl.summary([d["total"] for d in data.get((key, n, "autotls-nginx"), [])])
                if "mod_md" in servers:
                    res.row(f"cold start to HTTPS, {label} (nginx)", ng["median"], md["median"],
                            "mod_md (Apache) + graceful restart", "s", "lower",
                            names=n, key=key, autotls_runs=ng, nginx=True)
            if n == 1:
                lags = [d["lag_max"] for s in ("autotls-apache", "autotls-nginx")
                        for d in data.get((key, n, s), []) if d.get("lag_max") is not None]
                lag = bl.summary(lags)
                res.extra.setdefault("issued_to_served", {})[key] = lag
                if lag["median"] is not None:
                    res.row(f"issued -> served, 1 {'EC' if key == 'ec' else 'RSA'} name, no restart "
                            "(worst run, Apache and nginx)", lag["max"], None,
                            "mod_md: a restart", "s", "lower", target="<= 1 s", target_max=1.0,
                            names=1, key=key, lag=lag)


if __name__ == "__main__":
    bl.main_wrapper(main)
