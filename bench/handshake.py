#!/usr/bin/python3
"""TLS handshake throughput: the live-certificate callback against a static
certificate file holding the very same certificate, in the same server.

Apache (one apache2 process tree, both on at once):
  live    a vhost with "AutoTLS on": mod_autotls puts the certificate from
          the shared table on each handshake (parsed objects cached per
          process, keyed by generation)
  static  a vhost with SSLCertificateFile / SSLCertificateKeyFile: copies of
          the certificate and key the live vhost serves
nginx (one nginx, when the module is built):
  live    "autotls on;"
  static  ssl_certificate / ssl_certificate_key files (the same certificate)
  data:   ssl_certificate data:$var; ssl_certificate_key data:$var; with the
          PEM in a map: nginx parses the PEM on every handshake (the usual way
          to serve certificates from memory without a module)

The client (bench/hsbench.c, built on the fly) makes new connections with
full handshakes only (TLS 1.3, no session cache, no tickets), from several
processes, for a few seconds per run; variants alternate within each round
(A B, B A, ...). Figures: handshakes per second and the server's CPU time
per handshake (all of its processes, user + system), medians over the
rounds; the ratio is the median of the per-round ratios (each pairs two runs
made back to back, which cancels most of the drift of a shared machine).
Client and server share the machine's cores, and the client's share of
the work is the larger, so the throughput ratio understates a server-side
difference; the CPU-per-handshake ratio does not.

    bench/handshake.py
    bench/handshake.py --seconds 5 --clients 4 --keys ec,rsa
"""

import re
import shutil
import subprocess

import benchlib as bl

KEYS = {"ec": "ec:P-256", "rsa": "rsa:2048"}
RATE_RE = re.compile(r"handshakes=(\d+) errors=(\d+) seconds=([\d.]+) rate=([\d.]+)")


def build_client(scratch):
    out = scratch.make("bench-hsbench-") / "hsbench"
    r = subprocess.run(["cc", "-O2", "-Wall", "-o", str(out), str(bl.BENCH / "hsbench.c"),
                        "-lssl", "-lcrypto"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise bl.BenchError(f"building hsbench failed:\n{r.stderr}")
    return out


def name_for(key):
    return f"hs-{key}.test"


def hsbench(env, port, name, seconds):
    r = subprocess.run([str(env.client), "-p", str(port), "-s", name, "-t", str(seconds),
                        "-c", str(env.clients), "-v", "tls1.3"],
                       capture_output=True, text=True, timeout=seconds + 120)
    m = RATE_RE.search(r.stdout)
    if not m or int(m.group(1)) == 0:
        raise bl.BenchError(f"hsbench against port {port} ({name}) failed: {r.stdout}{r.stderr}")
    return int(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4))


def measure(env, server, port, name, seconds):
    cpu0 = server.cpu()
    n, errors, secs, rate = hsbench(env, port, name, seconds)
    cpu = server.cpu() - cpu0
    return {"rate": rate, "handshakes": n, "errors": errors, "cpu_us": cpu / n * 1e6}


def copy_certs(store, dest_dir, key):
    """The certificate and key the live side serves (from the store)."""
    sets = list((store / "certs").glob(f"{name_for(key)}_*"))
    if len(sets) != 1:
        raise bl.BenchError(f"no single stored certificate for {name_for(key)} in {store}")
    chain, keyfile = dest_dir / f"{key}-chain.pem", dest_dir / f"{key}-key.pem"
    shutil.copyfile(sets[0] / "chain.pem", chain)
    shutil.copyfile(sets[0] / "key.pem", keyfile)
    chain.chmod(0o644)
    keyfile.chmod(0o644)
    return chain, keyfile


def wait_served(env, server, port, keys):
    ctx = bl.verifying_context(env.ca.root_pem)
    for key in keys:
        bl.wait_until(lambda: (server.check_running(), bl.served_cert(port, name_for(key), ctx))[1],
                      env.timeout, f"a certificate for {name_for(key)}", interval=0.2)


def run_rounds(env, server, variants, keys, label, results):
    """variants: {variant: port}. Warm up, then interleaved rounds."""
    for key in keys:
        for v, port in variants.items():
            hsbench(env, port, name_for(key), 1)          # caches, session setup
        for r in range(env.rounds):
            for v in bl.interleaved(list(variants), r):
                out = measure(env, server, variants[v], name_for(key), env.seconds)
                results.setdefault((label, key, v), []).append(out)
                bl.log(f"{label} {key} round {r + 1}/{env.rounds} {v:<7} {out['rate']:8.0f}/s "
                       f"server {out['cpu_us']:6.0f} us CPU/handshake")


# ------------------------------------------------------------------ Apache

def apache_phase(env, keys, results):
    live_port, static_port = env.ports[0], env.ports[1]
    issue = bl.Apache(env.scratch, "autotls", env.http_port, [live_port], env.build)
    store = issue.store
    body = bl.autotls_apache_globals(env.ca, store)
    body += "".join(bl.https_vhost(live_port, name_for(k), f"AutoTLSKeys {KEYS[k]}", "AutoTLS on")
                    for k in keys)
    issue.write_config(body)
    issue.start()
    try:
        wait_served(env, issue, live_port, keys)
    finally:
        issue.stop()

    a = bl.Apache(env.scratch, "autotls", env.http_port, [live_port, static_port], env.build)
    body = bl.autotls_apache_globals(env.ca, store)
    for k in keys:
        chain, keyfile = copy_certs(store, a.root / "conf", k)
        body += bl.https_vhost(live_port, name_for(k), f"AutoTLSKeys {KEYS[k]}", "AutoTLS on")
        body += bl.https_vhost(static_port, name_for(k), "SSLEngine on",
                               f'SSLCertificateFile "{chain}"', f'SSLCertificateKeyFile "{keyfile}"')
    a.write_config(body)
    a.configtest()
    a.start()
    try:
        wait_served(env, a, live_port, keys)
        wait_served(env, a, static_port, keys)
        run_rounds(env, a, {"live": live_port, "static": static_port}, keys, "apache", results)
    finally:
        a.stop()


# ------------------------------------------------------------------ nginx

def pem_literal(path):
    text = path.read_text()
    if '"' in text or "\\" in text or "$" in text:
        raise bl.BenchError(f"{path} cannot be quoted in nginx.conf")
    return '"' + text + '"'


def nginx_phase(env, keys, results):
    live_port, static_port, data_port = env.ports
    issue = bl.Nginx(env.scratch, env.build, env.http_port, [live_port])
    store = issue.store
    body = bl.autotls_nginx_globals(env.ca, store)
    body += bl.nginx_server(env.http_port, "localhost", ssl_listen=False)
    body += "".join(bl.nginx_server(live_port, name_for(k), f"autotls_keys {KEYS[k]};", "autotls on;")
                    for k in keys)
    issue.write_config(body)
    issue.start()
    try:
        wait_served(env, issue, live_port, keys)
    finally:
        issue.stop()

    x = bl.Nginx(env.scratch, env.build, env.http_port, [live_port, static_port, data_port])
    body = bl.autotls_nginx_globals(env.ca, store)
    body += bl.nginx_server(env.http_port, "localhost", ssl_listen=False)
    maps = ""
    for k in keys:
        chain, keyfile = copy_certs(store, x.root / "conf", k)
        body += bl.nginx_server(live_port, name_for(k), f"autotls_keys {KEYS[k]};", "autotls on;")
        body += bl.nginx_server(static_port, name_for(k), f"ssl_certificate {chain};",
                                f"ssl_certificate_key {keyfile};")
        body += bl.nginx_server(data_port, name_for(k), f"ssl_certificate data:$pem_cert_{k};",
                                f"ssl_certificate_key data:$pem_key_{k};")
        maps += (f"    map $ssl_server_name $pem_cert_{k} {{\n        default {pem_literal(chain)};\n    }}\n"
                 f"    map $ssl_server_name $pem_key_{k} {{\n        default {pem_literal(keyfile)};\n    }}\n")
    x.write_config(maps + body)
    x.configtest()
    x.start()
    try:
        wait_served(env, x, live_port, keys)
        wait_served(env, x, static_port, keys)
        wait_served(env, x, data_port, keys)
        run_rounds(env, x, {"live": live_port, "static": static_port, "data:": data_port}, keys,
                   "nginx", results)
    finally:
        x.stop()


class Env:
    pass


def main():
    p = bl.arg_parser(__doc__.split("\n\n")[0], rounds=10)
    p.add_argument("--keys", default="ec,rsa", help="comma-separated: ec, rsa")
    p.add_argument("--servers", default="apache,nginx", help="comma-separated: apache, nginx")
    p.add_argument("--seconds", type=float, default=3, help="seconds per run (default 3)")
    p.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--timeout", type=float, default=120)
    args = p.parse_args()
    keys = args.keys.split(",")
    servers = args.servers.split(",")
    env = Env()
    env.build = bl.ensure_build(args.build_dir)
    if "nginx" in servers and not env.build.has_nginx:
        bl.log("the nginx module is not built; skipping nginx")
        servers.remove("nginx")
    env.scratch = bl.Scratch(args.keep)
    env.rounds, env.seconds, env.clients, env.timeout = args.rounds, args.seconds, args.clients, args.timeout
    env.http_port, *env.ports = bl.free_ports(4)
    res = bl.Results("handshake", "bench/handshake.py", args)
    results = {}
    try:
        env.client = build_client(env.scratch)
        env.ca = bl.CA(env.scratch.make("bench-ca-"), env.http_port, env.ports[0])
        if "apache" in servers:
            apache_phase(env, keys, results)
        if "nginx" in servers:
            nginx_phase(env, keys, results)
    finally:
        if hasattr(env, "ca"):
            env.ca.stop()

    def paired(label, key, a, b, field):
        xs, ys = results.get((label, key, a), []), results.get((label, key, b), [])
        return bl.median([x[field] / y[field] for x, y in zip(xs, ys) if y[field]])

    for label in servers:
        for key in keys:
            live = results.get((label, key, "live"), [])
            rate = {v: bl.summary([x["rate"] for x in results.get((label, key, v), [])])
                    for v in ("live", "static", "data:")}
            cpu = {v: bl.summary([x["cpu_us"] for x in results.get((label, key, v), [])])
                   for v in ("live", "static", "data:")}
            kname = "EC P-256" if key == "ec" else "RSA 2048"
            server = "Apache" if label == "apache" else "nginx"
            static_name = "static SSLCertificateFile" if label == "apache" else "static ssl_certificate"
            res.row(f"new TLS handshakes/s, {kname}, {server}: live callback vs static file",
                    rate["live"]["median"], rate["static"]["median"], static_name,
                    "/s", "higher", target=">= 0.97", target_ratio=0.97,
                    paired_ratio=paired(label, key, "live", "static", "rate"),
                    server=label, key=key, rate=rate, cpu_us=cpu, clients=env.clients,
                    seconds=env.seconds, errors=sum(x["errors"] for x in live))
            pr = paired(label, key, "static", "live", "cpu_us")
            res.row(f"server CPU per new handshake, {kname}, {server}: live vs static",
                    cpu["live"]["median"], cpu["static"]["median"], static_name, "us", "lower",
                    paired_ratio=pr, server=label, key=key, cpu_us=cpu)
            if label == "nginx":
                res.row(f"new TLS handshakes/s, {kname}, nginx: live callback vs ssl_certificate data:$var",
                        rate["live"]["median"], rate["data:"]["median"], "data:$variable (PEM per handshake)",
                        "/s", "higher", paired_ratio=paired(label, key, "live", "data:", "rate"),
                        server=label, key=key, rate=rate, cpu_us=cpu)
    if not args.no_save:
        res.save(args.out)
    res.print_table()
    rows = [r for r in res.rows if "live callback vs static" in r["figure"] and r["ratio"]]
    if rows:
        worst = min(rows, key=lambda r: r["ratio"])
        print(f"ratio: live / static handshake throughput {worst['ratio']:.3f} at worst "
              f"({worst['figure'].split(', ', 1)[1]}); target >= 0.97: "
              f"{'met' if all(r['met'] for r in rows) else 'missed'}")
    return 0


if __name__ == "__main__":
    bl.main_wrapper(main)
