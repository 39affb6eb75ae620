#!/usr/bin/python3
"""HTTP-01 answers: requests per second and latency of
GET /.well-known/acme-challenge/TOKEN, answered by mod_autotls from the
shared region against mod_md, which reads the key authorization from a
file in its store (MDStoreDir/challenges/NAME/acme-http-01.txt) on every
request.

How the challenge gets there, fairly for both: each Apache runs a real
order for one name against its own Pebble whose validation authority is
made slow (PEBBLE_VA_SLEEPTIME of days, instead of PEBBLE_VA_NOSLEEP), so
the order stays pending with its challenge published the way each module
publishes it while it waits for the CA; nothing is written into either
module's state by the benchmark. Each Apache reaches its Pebble through a
small recording proxy (tests/integration/acme_proxy.py) that notes the
http-01 token of every authorization, so the benchmark requests the real
token. Both Apaches have the same configuration otherwise (event MPM, same
modules, no access log); runs alternate (A B, B A, ...), and a run whose
answers were not all 200 (a token that changed under it) is repeated.

Load: wrk on loopback, keep-alive connections, with the name as Host.

    bench/http01.py
    bench/http01.py --seconds 5 --connections 32 --threads 2
"""

import re
import subprocess

import benchlib as bl
from acme_proxy import AcmeProxy

NAME = "h01.test"
SLOW_VA = {"PEBBLE_VA_NOSLEEP": "0", "PEBBLE_VA_SLEEPTIME": "10000000"}
WRK = "/usr/bin/wrk"


class TokenProxy(AcmeProxy):
    """The fault proxy, remembering the http-01 token of each authorization."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.tokens = []

    def _extend(self, response, kind, path, record, origin):
        super()._extend(response, kind, path, record, origin)
        if kind != "authz" or response.status != 200:
            return
        doc = response.json()
        for ch in (doc or {}).get("challenges", []):
            if ch.get("type") == "http-01" and ch.get("token"):
                with self._lock:
                    if ch["token"] not in self.tokens:
                        self.tokens.append(ch["token"])


def parse_wrk(text):
    def num(pattern):
        m = re.search(pattern, text)
        return m.group(1) if m else None

    def ms(value):
        m = re.match(r"([\d.]+)(us|ms|s)", value or "")
        if not m:
            return None
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    rps = num(r"Requests/sec:\s+([\d.]+)")
    total = num(r"(\d+) requests in")
    non2xx = num(r"Non-2xx or 3xx responses:\s+(\d+)")
    return {"rps": float(rps) if rps else None, "requests": int(total) if total else 0,
            "non2xx": int(non2xx) if non2xx else 0,
            "p50_ms": ms(num(r"\n\s+50%\s+(\S+)")), "p99_ms": ms(num(r"\n\s+99%\s+(\S+)"))}


class Side:
    """One Apache with its slow Pebble and recording proxy."""

    def __init__(self, env, flavour):
        self.flavour = flavour
        self.http_port, self.https_port = bl.free_ports(2)
        self.pebble = env.ca.another_pebble(self.http_port, self.https_port, env=SLOW_VA)
        self.proxy = TokenProxy(self.pebble.directory_url, str(env.ca.local_ca.cert_path),
                                str(env.proxy_cert), str(env.proxy_key)).start()
        directory = self.proxy.directory_url

        class Via:               # the CA as the server sees it: through the proxy
            pass
        via = Via()
        via.directory, via.trust = directory, env.ca.trust
        self.apache = bl.Apache(env.scratch, flavour, self.http_port, [self.https_port], env.build)
        if flavour == "autotls":
            body = bl.autotls_apache_globals(via, self.apache.store)
            body += bl.https_vhost(self.https_port, NAME, "AutoTLS on")
        else:
            body = bl.md_apache_globals(via, self.apache.root / "md", self.http_port, self.https_port)
            body += f"MDomain {NAME}\n" + bl.https_vhost(self.https_port, NAME, "SSLEngine on")
        self.apache.write_config(body)
        self.apache.configtest()
        self.token = None
        self.keyauth = None

    def refresh_token(self, timeout):
        """Wait until the newest token is answered with its key authorization."""
        def answered():
            self.apache.check_running()
            for token in reversed(self.proxy.tokens):
                status, body = bl.http_get(self.http_port, f"/.well-known/acme-challenge/{token}",
                                           host=NAME)
                text = body.decode(errors="replace").strip()
                if status == 200 and text.startswith(token + "."):
                    self.token, self.keyauth = token, text
                    return True
            return False
        bl.wait_until(answered, timeout, f"{self.flavour} to answer its http-01 challenge",
                      interval=0.2)

    def stop(self):
        self.apache.stop()
        self.proxy.stop()
        self.pebble.stop()


def wrk(env, side, seconds):
    url = f"http://127.0.0.1:{side.http_port}/.well-known/acme-challenge/{side.token}"
    r = subprocess.run([WRK, "-t", str(env.threads), "-c", str(env.connections), "-d", f"{max(1, round(seconds))}s",
                        "--latency", "-H", f"Host: {NAME}", url],
                       capture_output=True, text=True, timeout=seconds + 60)
    out = parse_wrk(r.stdout)
    if r.returncode != 0 or out["rps"] is None:
        raise bl.BenchError(f"wrk against {side.flavour} failed: {r.stdout}{r.stderr}")
    return out


def measure(env, side, seconds):
    """One run; repeated (bounded) when some answers were not 200."""
    for attempt in range(3):
        out = wrk(env, side, seconds)
        if out["requests"] and out["non2xx"] <= out["requests"] * 0.001:
            return out
        bl.log(f"{side.flavour}: {out['non2xx']} of {out['requests']} answers were not 200; "
               "the challenge changed, measuring again")
        side.refresh_token(env.timeout)
    raise bl.BenchError(f"{side.flavour} did not keep its challenge published")


class Env:
    pass


def main():
    p = bl.arg_parser(__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--timeout", type=float, default=120)
    args = p.parse_args()
    env = Env()
    env.build = bl.ensure_build(args.build_dir)
    env.scratch = bl.Scratch(args.keep)
    env.timeout, env.threads, env.connections = args.timeout, args.threads, args.connections
    res = bl.Results("http01", "bench/http01.py", args)
    sides = {}
    runs = {"autotls": [], "md": []}
    try:
        # challtestsrv and a local CA; the main Pebble is not used.
        env.ca = bl.CA(env.scratch.make("bench-ca-"), *bl.free_ports(2))
        env.proxy_cert, env.proxy_key = env.ca.local_ca.issue("acme-proxy")
        for flavour in ("autotls", "md"):
            sides[flavour] = Side(env, flavour)
            sides[flavour].apache.start()
        for s in sides.values():
            s.refresh_token(env.timeout)
            bl.log(f"{s.flavour}: answering token {s.token[:12]}... on port {s.http_port}")
        for s in sides.values():
            wrk(env, s, 2)                                  # warm up
        for r in range(args.rounds):
            for f in bl.interleaved(sides, r):
                out = measure(env, sides[f], args.seconds)
                runs[f].append(out)
                bl.log(f"round {r + 1}/{args.rounds} {f:<8} {out['rps']:9.0f} req/s  "
                       f"p50 {out['p50_ms']:.3f} ms  p99 {out['p99_ms']:.3f} ms")
    finally:
        for s in sides.values():
            s.stop()
        if hasattr(env, "ca"):
            env.ca.stop()

    def paired(field, invert=False):
        vals = [(m[field] / a[field]) if invert else (a[field] / m[field])
                for a, m in zip(runs["autotls"], runs["md"]) if a[field] and m[field]]
        return bl.median(vals)
    rps = {k: bl.summary([x["rps"] for x in v]) for k, v in runs.items()}
    p99 = {k: bl.summary([x["p99_ms"] for x in v]) for k, v in runs.items()}
    p50 = {k: bl.summary([x["p50_ms"] for x in v]) for k, v in runs.items()}
    res.row("HTTP-01 answers, requests/s (Apache)", rps["autotls"]["median"], rps["md"]["median"],
            "mod_md", "/s", "higher", target=">= 1.0", target_ratio=1.0,
            paired_ratio=paired("rps"), rps=rps, connections=env.connections,
            threads=env.threads, seconds=args.seconds)
    res.row("HTTP-01 answers, p99 latency (Apache)", p99["autotls"]["median"], p99["md"]["median"],
            "mod_md", "ms", "lower", paired_ratio=paired("p99_ms", invert=True), p99=p99, p50=p50)
    if not args.no_save:
        res.save(args.out)
    res.print_table()
    r = res.rows[0]["ratio"]
    print(f"ratio: HTTP-01 answers per second, autotls / mod_md = {r:.2f} "
          f"(target >= 1.0: {'met' if r >= 1.0 else 'missed'})")
    return 0


if __name__ == "__main__":
    bl.main_wrapper(main)
