"""Secrets, against the real Apache with mod_autotls (with EAB, an EC and an
RSA certificate, the most verbose autotls log level).

- Every private key in the store is 0600 and every directory 0700.
- No key material and no EAB key appears in the status page (HTML, JSON,
  Prometheus), mod_status, the tool's status output, or any log: checked
  for every PEM line of every stored key, the raw private numbers (hex and
  base64url, as a JWK would carry them) and the EAB key in all encodings.
- The status and renew handlers answer only where they are mapped.
"""

import base64
import os
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from apache_env import make_stack, status_vhost, vhost  # noqa: F401
from procs import wait_until
from reliability import _cases_file, cases, mode_problems  # noqa: F401

ISSUE_TIMEOUT = 90
KID = "kid-secrets"
EAB_RAW = os.urandom(32)
EAB_KEY = base64.urlsafe_b64encode(EAB_RAW).rstrip(b"=").decode()
NAME = "secret.test"


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_bytes(n):
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def key_needles(pem_bytes):
    """Substrings that would betray this private key."""
    key = serialization.load_pem_private_key(pem_bytes, password=None)
    body = [ln for ln in pem_bytes.decode().splitlines() if ln and not ln.startswith("-----")]
    needles = [ln for ln in body if len(ln) >= 32]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        secrets = [key.private_numbers().private_value]
    elif isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        secrets = [n.d, n.p, n.q]
    else:
        secrets = []
    for s in secrets:
        raw = int_bytes(s)
        needles += [raw.hex(), raw.hex().upper(), b64u(raw), base64.b64encode(raw).decode()]
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    needles.append(base64.b64encode(der).decode()[:48])
    return [x for x in needles if len(x) >= 24]


def eab_needles():
    return [EAB_KEY, base64.b64encode(EAB_RAW).decode().rstrip("="), EAB_RAW.hex(),
            EAB_RAW.hex().upper(), EAB_KEY[:24], EAB_KEY[-24:]]


def test_secrets_never_shown(make_stack, cases, autotls_bin):
    st = make_stack(lambda a: f"AutoTLSEAB {KID} {EAB_KEY}\n" + status_vhost(a)
                    + vhost(NAME, a.https_port, "AutoTLSKeys ec:P-256 rsa:2048"),
                    require_eab=True, eab_keys={KID: EAB_KEY},
                    apache_kw={"log_level": "info autotls:trace8 ssl:info"})
    a = st.apache

    def both():
        return {e["key_type"]: e["state"] for e in a.cert_status(NAME)} == \
            {"ec:P-256": "valid", "rsa:2048": "valid"}
    wait_until(both, ISSUE_TIMEOUT, "an EC and an RSA certificate", interval=0.3)
    a.https(NAME, root_pem=st.root_pem)

    # ---- modes
    keys = sorted(p for p in a.store.rglob("*")
                  if p.is_file() and not p.is_symlink()
                  and (p.name in ("key.pem", "account.key.pem") or p.name.endswith(".key.pem")))
    assert len(keys) >= 4, keys          # two certificates, the account, placeholders
    for p in keys:
        with cases.case("secrets", f"mode of {p.relative_to(a.store).parts[0]}/.../{p.name}") as info:
            mode = p.stat().st_mode & 0o777
            info["mode"] = f"{mode:04o}"
            assert mode == 0o600, f"{p}: {mode:04o}"
    with cases.case("secrets", "every directory of the store 0700") as info:
        dirs = [p for p in [a.store, *a.store.rglob("*")] if p.is_dir() and not p.is_symlink()]
        info["directories"] = len(dirs)
        problems = mode_problems(a.store)
        assert not problems, "\n".join(problems)

    # ---- what must never show a secret
    needles = eab_needles()
    for p in keys:
        needles += key_needles(p.read_bytes())
    texts = {}
    for fmt in (None, "json", "prometheus", "metrics"):
        r = a.status(fmt)
        assert r.status == 200, (fmt, r.status)
        texts[f"status page ({fmt or 'html'})"] = r.text
    texts["mod_status page"] = a.http("localhost", "/server-status").text
    texts["mod_status ?auto"] = a.http("localhost", "/server-status?auto").text
    texts["renew handler answers"] = "".join(
        a.http("localhost", path, method=m).text
        for m, path in (("POST", "/autotls-renew?name=nobody.test"), ("GET", "/autotls-renew"),
                        ("POST", "/autotls-renew")))
    for fmt in ("text", "json", "html", "prometheus"):
        r = subprocess.run([str(autotls_bin), "status", "--store", str(a.store), "--format", fmt],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        texts[f"autotls status --format {fmt}"] = r.stdout + r.stderr
    a.stop()                              # flush every log
    for log in sorted((a.root / "logs").glob("*")):
        texts[f"log {log.name}"] = log.read_text(errors="replace")
    assert "AutoTLSEAB" not in texts["status page (json)"] or EAB_KEY not in texts["status page (json)"]
    for label, text in texts.items():
        with cases.case("secrets", f"no key material or EAB key in the {label}") as info:
            info["bytes"] = len(text)
            info["needles"] = len(needles)
            assert text, f"{label} is empty"
            found = [n for n in needles if n in text]
            assert not found, f"{label} contains secret material: {found[0][:16]}..."


def test_status_handlers_only_where_mapped(make_stack, cases):
    # plain.test comes first: it is the default vhost of the HTTP port, so
    # only Host: localhost reaches the vhost that maps the handlers.
    st = make_stack(lambda a: f"<VirtualHost 127.0.0.1:{a.http_port}>\n    ServerName plain.test\n"
                    "</VirtualHost>\n" + status_vhost(a) + vhost(NAME, a.https_port))
    a = st.apache
    a.wait_for_cert(NAME, ISSUE_TIMEOUT, root_pem=st.root_pem)
    probes = [
        ("managed vhost over HTTPS", lambda p, m: a.https(NAME, p, method=m, root_pem=st.root_pem)),
        ("managed name over HTTP", lambda p, m: a.http(NAME, p, method=m)),
        ("another vhost over HTTP", lambda p, m: a.http("plain.test", p, method=m)),
    ]
    paths = [("GET", "/autotls-status"), ("GET", "/autotls-status?format=json"),
             ("GET", "/autotls-status?format=prometheus"), ("POST", "/autotls-renew?name=all"),
             ("GET", "/server-status"), ("GET", "/?format=json")]
    for where, fetch in probes:
        for method, path in paths:
            with cases.case("secrets", f"{method} {path} on the {where}") as info:
                r = fetch(path, method)
                info["answer"] = r.status if path != "/?format=json" else f"{r.status} (the site's own page)"
                assert "certificates" not in r.text and "autotls_certificate" not in r.text, \
                    f"{where} {path}: the status leaked: {r.text[:200]}"
                assert "AutoTLS" not in r.text or r.status in (404, 405, 503), r.text[:200]
                if path != "/?format=json":
                    assert r.status in (404, 405), f"{where} {method} {path}: HTTP {r.status}"
    # Mapped, it answers (the probes above would have caught a 404 everywhere).
    assert a.status("json").status == 200
    assert Path(a.store).is_dir()
