#!/usr/bin/python3
"""Record a complete order from a real Pebble for test_acme_order's replay.

Runs challtestsrv and Pebble from tests/integration (with
PEBBLE_VA_ALWAYS_VALID=1 and one alternate root), then walks one order in the
same request sequence as autotls's order op: newAccount, newOrder, each
authorization, "{}" to each http-01 challenge, authorization polls, finalize,
order polls, certificate, alternate chain; plus two problem documents. Every
exchange is written as {"method","url","status","headers":[[k,v]..],"body"}
to pebble-order.json next to this script, with the certificate key.

    /usr/bin/python3 tests/unit/data/acme/record_pebble.py WORKDIR
"""

import json
import sys
import time
from pathlib import Path

import josepy as jose
import requests
from acme import jws
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "integration"))

from local_ca import LocalCA                                    # noqa: E402
from pebble import ChallTestSrv, Pebble, PebbleOptions          # noqa: E402

NAMES = ["replay.example.com", "www.replay.example.com", "192.0.2.7"]


class Recorder:
    def __init__(self, directory_url, ca_file):
        self.s = requests.Session()
        self.s.trust_env = False     # else REQUESTS_CA_BUNDLE overrides verify
        self.s.verify = ca_file
        self.log = []
        self.key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        self.kid = None
        self.nonce = None
        self.dir = self.get(directory_url).json()

    def record(self, method, url, r):
        self.log.append({
            "method": method, "url": url, "status": r.status_code,
            "headers": [[k, v] for k, v in r.headers.items()
                        if k.lower() in ("content-type", "location", "replay-nonce",
                                         "retry-after", "link")],
            "body": r.text,
        })
        self.nonce = r.headers.get("Replay-Nonce", self.nonce)
        return r

    def get(self, url):
        return self.record("GET", url, self.s.get(url))

    def head_nonce(self):
        url = self.dir["newNonce"]
        return self.record("HEAD", url, self.s.head(url))

    def post(self, url, payload, accept=None, nonce=None):
        if not self.nonce:
            self.head_nonce()
        body = b"" if payload is None else json.dumps(payload).encode()
        signed = jws.JWS.sign(body, key=self.key, alg=jose.ES256,
                              nonce=jose.b64.b64decode(nonce or self.nonce), url=url, kid=self.kid)
        self.nonce = None
        headers = {"Content-Type": "application/jose+json"}
        if accept:
            headers["Accept"] = accept
        return self.record("POST", url, self.s.post(url, data=signed.json_dumps(), headers=headers))


def main(workdir):
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    local_ca = LocalCA(workdir / "local-ca")
    dns = ChallTestSrv.start(workdir)
    pebble = Pebble.start(workdir, local_ca, dns.dns_address,
                          PebbleOptions(alternate_roots=1, env={"PEBBLE_VA_ALWAYS_VALID": "1"}))
    try:
        rec = Recorder(pebble.directory_url, str(local_ca.cert_path))
        r = rec.post(rec.dir["newAccount"], {"termsOfServiceAgreed": True,
                                               "contact": ["mailto:admin@example.com"]})
        rec.kid = r.headers["Location"]
        ids = [{"type": "ip" if n[0].isdigit() else "dns", "value": n} for n in NAMES]
        r = rec.post(rec.dir["newOrder"], {"identifiers": ids})
        order_url, order = r.headers["Location"], r.json()
        authzs = [rec.post(u, None).json() for u in order["authorizations"]]
        for u, a in zip(order["authorizations"], authzs):
            ch = next(c for c in a["challenges"] if c["type"] == "http-01")
            rec.post(ch["url"], {})
        for u in order["authorizations"]:
            for _ in range(30):
                if rec.post(u, None).json()["status"] != "pending":
                    break
                time.sleep(0.2)
        cert_key = ec.generate_private_key(ec.SECP256R1())
        san = [x509.IPAddress(__import__("ipaddress").ip_address(n)) if n[0].isdigit()
               else x509.DNSName(n) for n in NAMES]
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName(san), critical=True)
               .sign(cert_key, hashes.SHA256()))
        der = csr.public_bytes(serialization.Encoding.DER)
        rec.post(order["finalize"], {"csr": jose.b64.b64encode(der).decode()})
        for _ in range(30):
            order = rec.post(order_url, None).json()
            if order["status"] not in ("processing", "ready"):
                break
            time.sleep(0.2)
        r = rec.post(order["certificate"], None, accept="application/pem-certificate-chain")
        alt = r.links.get("alternate", {}).get("url")
        if alt:
            rec.post(alt, None, accept="application/pem-certificate-chain")
        # Two problem documents as Pebble writes them.
        rec.post(rec.dir["newOrder"], {"identifiers": ids}, nonce="bm9wZQ")
        rec.post(rec.dir["newOrder"], None)        # malformed: no payload
        out = {
            "directory_url": pebble.directory_url,
            "account_url": rec.kid,
            "names": NAMES,
            "cert_key": cert_key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()).decode(),
            "exchanges": rec.log,
        }
        (HERE / "pebble-order.json").write_text(json.dumps(out, indent=1) + "\n")
    finally:
        pebble.stop()
        dns.stop()


if __name__ == "__main__":
    main(sys.argv[1])
