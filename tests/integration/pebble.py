#!/usr/bin/python3
"""Debian's Pebble and pebble-challtestsrv, run on loopback for one test run.

``ChallTestSrv`` is the DNS server for every name (A queries answer
127.0.0.1) and holds the TXT records of dns-01 challenges. ``Pebble`` is the
ACME CA; it resolves names through challtestsrv and validates http-01 and
tls-alpn-01 against the ``http_port`` / ``tls_port`` it was started with.
"""

import argparse
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509

from procs import (LOOPBACK, HarnessError, ManagedProcess, free_ports,
                   wait_for_port)

PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"
START_TIMEOUT = 20.0
_START_ATTEMPTS = 3           # fresh ports each time another process took ours


def _http(method, url, body=None, context=None, timeout=10.0):
    """(status, headers, body bytes) of one request; HTTP errors are returned."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def _start_with_fresh_ports(start):
    """Call ``start()`` until its server comes up on ports nobody else took."""
    for attempt in range(_START_ATTEMPTS):
        proc = start()
        try:
            proc.wait_ready()
            return proc
        except HarnessError as e:
            proc.stop()
            if "address already in use" not in str(e) or attempt + 1 == _START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- challtestsrv

class ChallTestSrv:
    """pebble-challtestsrv as a mock DNS server with a management API.

    Only the DNS server and the management interface run; its own http-01,
    https-01 and tls-alpn-01 responders are disabled so that the code under
    test answers challenges itself.
    """

    def __init__(self, workdir, logs=None, default_ipv4=LOOPBACK, default_ipv6=""):
        self.dns_port, self.management_port = free_ports(2)
        self.dns_address = f"{LOOPBACK}:{self.dns_port}"
        self.management_url = f"http://{LOOPBACK}:{self.management_port}"
        self.process = ManagedProcess(
            "challtestsrv",
            [CHALLTESTSRV,
             "-dns01", self.dns_address,
             "-management", f"{LOOPBACK}:{self.management_port}",
             "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-defaultIPv4", default_ipv4, "-defaultIPv6", default_ipv6],
            Path(workdir) / f"challtestsrv-{self.management_port}.log", logs=logs)

    @classmethod
    def start(cls, workdir, logs=None, **kwargs):
        return _start_with_fresh_ports(lambda: cls(workdir, logs, **kwargs))

    def wait_ready(self, timeout=START_TIMEOUT):
        wait_for_port(self.management_port, timeout=timeout, process=self.process)
        wait_for_port(self.dns_port, timeout=timeout, process=self.process)

    def stop(self):
        self.process.stop()

    def post(self, path, body):
        """POST a JSON body to a management endpoint (e.g. "/add-a")."""
        status, _, text = _http("POST", self.management_url + path, body)
        if status != 200:
            raise HarnessError(f"challtestsrv {path} {body}: HTTP {status} {text!r}")

    @staticmethod
    def _fqdn(host):
        return host if host.endswith(".") else host + "."

    def set_txt(self, host, value):
        """Answer TXT queries for ``host`` with ``value`` (dns-01)."""
        self.post("/set-txt", {"host": self._fqdn(host), "value": value})

    def clear_txt(self, host):
        self.post("/clear-txt", {"host": self._fqdn(host)})

    def add_a(self, host, addresses):
        self.post("/add-a", {"host": self._fqdn(host), "addresses": list(addresses)})

    def clear_a(self, host):
        self.post("/clear-a", {"host": self._fqdn(host)})


# ---------------------------------------------------------------- pebble

class PebbleOptions:
    """How to run one Pebble. Defaults make runs deterministic.

    http_port / tls_port: where Pebble connects to validate http-01 and
        tls-alpn-01 (the web server under test listens there).
    eab_keys: {kid: base64url HMAC key}; with require_eab, accounts need one.
    nonce_reject: percentage of good nonces rejected as badNonce (Pebble's
        default is 5; 0 here so that a test asks for nonce trouble explicitly).
    authz_reuse: percentage of orders that reuse a valid authorization
        (Pebble's default is 50; 0 here so that every order is validated).
    alternate_roots: number of extra root hierarchies (alternate chains).
    chain_length: certificates between leaf and root, minus one (Pebble's
        minimum and default is 1: leaf + one intermediate).
    validity_period: lifetime of issued certificates in seconds (Pebble's
        default is five years); short ones exercise renewal.
    domain_blocklist: names Pebble refuses to issue for.
    env: any further environment for Pebble (e.g. PEBBLE_VA_ALWAYS_VALID).
    """

    def __init__(self, http_port=None, tls_port=None, eab_keys=None, require_eab=False,
                 nonce_reject=0, authz_reuse=0, alternate_roots=0, chain_length=1,
                 validity_period=None, domain_blocklist=(), strict=False, env=None):
        self.http_port = http_port
        self.tls_port = tls_port
        self.eab_keys = dict(eab_keys or {})
        self.require_eab = require_eab
        self.nonce_reject = nonce_reject
        self.authz_reuse = authz_reuse
        self.alternate_roots = alternate_roots
        self.chain_length = chain_length
        self.validity_period = validity_period
        self.domain_blocklist = list(domain_blocklist)
        self.strict = strict
        self.env = dict(env or {})

    def environment(self):
        env = {
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": str(self.nonce_reject),
            "PEBBLE_AUTHZREUSE": str(self.authz_reuse),
            "PEBBLE_CHAIN_LENGTH": str(self.chain_length),
        }
        if self.alternate_roots:
            env["PEBBLE_ALTERNATE_ROOTS"] = str(self.alternate_roots)
        env.update(self.env)
        return env


class Pebble:
    """A running Pebble.

    directory_url: the ACME directory (trust ``ca_file`` to reach it).
    management_url: Pebble's management interface (roots, intermediates).
    http_port / tls_port: the ports Pebble validates challenges against.
    """

    def __init__(self, workdir, local_ca, dns_address, options, logs=None):
        workdir = Path(workdir)
        self.options = options
        self.ca_file = str(local_ca.cert_path)
        listen_port, management_port, *validation = free_ports(4)
        self.http_port = options.http_port or validation[0]
        self.tls_port = options.tls_port or validation[1]
        self.port = listen_port
        self.management_port = management_port
        self.base_url = f"https://{LOOPBACK}:{listen_port}"
        self.directory_url = self.base_url + "/dir"
        self.management_url = f"https://{LOOPBACK}:{management_port}"
        self._context = ssl.create_default_context(cafile=self.ca_file)

        cert_path, key_path = local_ca.issue(f"pebble-{listen_port}")
        config = {"pebble": {
            "listenAddress": f"{LOOPBACK}:{listen_port}",
            "managementListenAddress": f"{LOOPBACK}:{management_port}",
            "certificate": str(cert_path),
            "privateKey": str(key_path),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": bool(options.require_eab),
            "externalAccountMACKeys": options.eab_keys,
            "domainBlocklist": options.domain_blocklist,
        }}
        if options.validity_period:
            config["pebble"]["certificateValidityPeriod"] = int(options.validity_period)
        self.config_path = workdir / f"pebble-{listen_port}.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        argv = [PEBBLE, "-config", self.config_path, "-dnsserver", dns_address]
        if options.strict:
            argv += ["-strict"]
        self.process = ManagedProcess(
            f"pebble:{listen_port}", argv, workdir / f"pebble-{listen_port}.log",
            env=options.environment(), logs=logs)

    @classmethod
    def start(cls, workdir, local_ca, dns_address, options=None, logs=None):
        options = options or PebbleOptions()
        return _start_with_fresh_ports(
            lambda: cls(workdir, local_ca, dns_address, options, logs))

    def wait_ready(self, timeout=START_TIMEOUT):
        wait_for_port(self.port, timeout=timeout, process=self.process)
        wait_for_port(self.management_port, timeout=timeout, process=self.process)

    def stop(self):
        self.process.stop()

    # -- management interface

    def _management_get(self, path):
        status, _, body = _http("GET", self.management_url + path, context=self._context)
        return status, body

    def _pem_list(self, kind):
        """Every certificate at /<kind>/0, /<kind>/1 ... until a 404."""
        pems = []
        for i in range(64):
            status, body = self._management_get(f"/{kind}/{i}")
            if status == 404:
                break
            if status != 200:
                raise HarnessError(f"pebble /{kind}/{i}: HTTP {status}")
            pems.append(body.decode())
        return pems

    def root(self, index=0):
        """Pebble's root certificate ``index`` (PEM). Regenerated per start."""
        status, body = self._management_get(f"/roots/{index}")
        if status != 200:
            raise HarnessError(f"pebble /roots/{index}: HTTP {status}")
        return body.decode()

    def roots(self):
        """All root certificates (more than one with alternate_roots)."""
        return self._pem_list("roots")

    def intermediates(self):
        """The intermediate certificate of each root hierarchy."""
        return self._pem_list("intermediates")

    def write_root(self, path, index=0):
        """Write root ``index`` to ``path``; returns the path."""
        Path(path).write_text(self.root(index))
        return Path(path)

    def verify(self, chain_pem, names=None, root_index=0):
        """``verify_chain`` against this Pebble's root ``root_index``."""
        return verify_chain(chain_pem, self.root(root_index), names)

    def cert_status(self, cert_pem):
        """Pebble's record of an issued certificate: {"Status": "Valid"|"Revoked", ...}."""
        serial = format(x509.load_pem_x509_certificate(cert_pem.encode()).serial_number, "x")
        status, body = self._management_get(f"/cert-status-by-serial/{serial}")
        if status == 404:
            return None
        if status != 200:
            raise HarnessError(f"pebble cert-status-by-serial/{serial}: HTTP {status}")
        return json.loads(body)


# ---------------------------------------------------------------- certificates

def split_pem(pem_text):
    """The certificates of a PEM bundle, each as its own PEM string."""
    end = "-----END CERTIFICATE-----"
    parts = []
    for chunk in pem_text.split(end)[:-1]:
        start = chunk.find("-----BEGIN CERTIFICATE-----")
        if start >= 0:
            parts.append(chunk[start:] + end + "\n")
    return parts


def san_names(cert_pem):
    """DNS names and IP addresses (as strings) of a certificate's SAN."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names = set(san.get_values_for_type(x509.DNSName))
    names.update(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return names


def verify_chain(chain_pem, root_pem, names=None):
    """Check that a leaf + chain verifies to ``root_pem`` for TLS servers.

    Uses ``openssl verify`` (a second opinion on whatever produced the chain)
    and, with ``names``, that the leaf's SAN holds exactly those names.
    Returns the leaf as a cryptography certificate; raises AssertionError.
    """
    certs = split_pem(chain_pem)
    assert certs, "no certificate in the chain"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "root.pem").write_text(root_pem)
        (tmp / "leaf.pem").write_text(certs[0])
        (tmp / "chain.pem").write_text("".join(certs[1:]))
        argv = ["openssl", "verify", "-purpose", "sslserver",
                "-CAfile", str(tmp / "root.pem")]
        if len(certs) > 1:
            argv += ["-untrusted", str(tmp / "chain.pem")]
        argv.append(str(tmp / "leaf.pem"))
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, (
        f"openssl verify failed: {result.stdout.strip()} {result.stderr.strip()}")
    if names is not None:
        got = san_names(certs[0])
        assert got == set(names), f"certificate names {sorted(got)}, expected {sorted(names)}"
    return x509.load_pem_x509_certificate(certs[0].encode())


# ---------------------------------------------------------------- by hand

def main(argv=None):
    """Run challtestsrv and a Pebble until SIGTERM or SIGINT.

    For the demo and for trying things by hand. When both are up, their
    coordinates are written as shell assignments to WORKDIR/pebble.env (and
    printed): PEBBLE_DIRECTORY, PEBBLE_CA_TRUST (the trust anchor for its
    HTTPS listener), PEBBLE_ROOT (a file with the root it issues under),
    PEBBLE_HTTP_PORT, PEBBLE_TLS_PORT, PEBBLE_MANAGEMENT, CHALLTESTSRV.
    """
    from local_ca import LocalCA

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="directory for keys, config and logs")
    parser.add_argument("--http-port", type=int, help="port Pebble validates http-01 against")
    parser.add_argument("--tls-port", type=int, help="port Pebble validates tls-alpn-01 against")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())

    local_ca = LocalCA(workdir / "local-ca")
    dns = ChallTestSrv.start(workdir)
    try:
        pebble = Pebble.start(workdir, local_ca, dns.dns_address,
                              PebbleOptions(http_port=args.http_port, tls_port=args.tls_port))
        try:
            settings = {
                "PEBBLE_DIRECTORY": pebble.directory_url,
                "PEBBLE_CA_TRUST": local_ca.cert_path,
                "PEBBLE_ROOT": pebble.write_root(workdir / "pebble-root.pem"),
                "PEBBLE_HTTP_PORT": pebble.http_port,
                "PEBBLE_TLS_PORT": pebble.tls_port,
                "PEBBLE_MANAGEMENT": pebble.management_url,
                "CHALLTESTSRV": dns.management_url,
            }
            text = "".join(f"{k}={v}\n" for k, v in settings.items())
            env_file = workdir / "pebble.env"
            (workdir / "pebble.env.tmp").write_text(text)
            os.replace(workdir / "pebble.env.tmp", env_file)     # readers see all or nothing
            sys.stdout.write(text)
            sys.stdout.flush()
            while not done.wait(1):
                pebble.process.check_running()
                dns.process.check_running()
        finally:
            pebble.stop()
    finally:
        dns.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
