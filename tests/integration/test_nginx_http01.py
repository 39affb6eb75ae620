"""The request side of ngx_http_autotls_module: HTTP-01 answers come from
shared memory (never from the disk, not even for bad or unknown tokens),
other names keep their own challenge files, an HTTPS server still waiting
for its first certificate answers 503 until the certificate is live, and the
status page renders in its three formats.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nginx_env import (LOOPBACK, PLACEHOLDER_ISSUER, issuer_cn, make_stack, nginx,  # noqa: F401
                       server, status_server)
from procs import wait_until
from server_checks import (CONTROL, DISK_BODY, NOT_FOUND_BODY, TOKENS,
                           check_other_name_keeps_its_files, check_renew_handler,
                           check_tokens_are_404, check_waiting_page, plant_challenge_files)

ISSUE_TIMEOUT = 90


def unreachable_ca_body(n):
    # Nothing listens on the CA's port: the server stays on its placeholder.
    return (f"    autotls_ca https://{LOOPBACK}:9/dir;\n    autotls_accept_terms on;\n"
            f"    autotls_store {n.store};\n"
            + status_server(n)
            + f"    server {{\n        listen {LOOPBACK}:{n.http_port};\n"
              "        server_name h.test other.test;\n    }\n"
            + server("h.test", n.https_port, "autotls_challenges http-01;"))


def plant_files(n):
    return plant_challenge_files(n.root / "html")


def test_unknown_and_bad_tokens_are_404_for_managed_names(nginx):
    plant_files(nginx)
    nginx.start(unreachable_ca_body(nginx))
    check_tokens_are_404(nginx, "h.test")
    # A path nginx would normalise onto a planted file is not looked up either.
    r = nginx.http("h.test", "/.well-known/acme-challenge/x/../" + TOKENS[0])
    assert r.status == 404 and r.text.strip() == NOT_FOUND_BODY
    # And the control file proves the planted files are reachable at all.
    r = nginx.http("other.test", "/.well-known/acme-challenge/" + CONTROL)
    assert r.status == 200 and r.text == DISK_BODY


def test_other_names_keep_their_challenge_files(nginx):
    plant_files(nginx)
    nginx.start(unreachable_ca_body(nginx))
    check_other_name_keeps_its_files(nginx, "other.test")


@pytest.mark.skipif(not shutil.which("strace"), reason="strace is not installed")
def test_challenge_requests_never_touch_the_disk(nginx):
    plant_files(nginx)
    nginx.start(unreachable_ca_body(nginx))
    out = nginx.root / "logs" / "strace.txt"
    tracers = [subprocess.Popen(["strace", "-f", "-e", "trace=open,openat,stat,newfstatat,statx",
                                 "-o", f"{out}.{pid}", "-p", str(pid)],
                                stderr=subprocess.DEVNULL) for pid in nginx.workers()]
    try:
        wait_until(lambda: all(Path(f"{out}.{pid}").exists() for pid in nginx.workers()), 10,
                   "strace to attach")
        for _ in range(3):
            for token in TOKENS:
                nginx.http("h.test", "/.well-known/acme-challenge/" + token)
        nginx.http("other.test", "/.well-known/acme-challenge/" + CONTROL)   # the control
    finally:
        for t in tracers:
            t.terminate()
            t.wait(10)
    text = "".join(Path(f"{out}.{pid}").read_text() for pid in nginx.workers())
    assert CONTROL in text, "strace saw no file access at all (the control request)"
    assert "acme-challenge/" + TOKENS[0] not in text and "acme-challenge/bad.token" not in text, text


def test_503_until_the_first_certificate(nginx):
    nginx.start(unreachable_ca_body(nginx))
    check_waiting_page(nginx.https("h.test", "/"), "h.test")
    # HEAD too, without a body.
    r = nginx.https("h.test", "/", method="HEAD")
    assert r.status == 503 and r.body == b""
    # The plain-HTTP server of the same names is not affected.
    assert nginx.http("h.test", "/").status == 200


def test_503_ends_when_the_certificate_is_live(make_stack):
    """While the order is in flight the server answers 503 on its
    placeholder; once the certificate is live the same workers answer 200."""
    st = make_stack(lambda n: status_server(n) + server("soon.test", n.https_port,
                                                        "autotls_challenges http-01;"),
                    proxy=True, start=False)
    st.proxy.add_fault("delay", kind="finalize", seconds=4)
    n = st.nginx
    n.start()
    workers = n.workers()
    first = n.https("soon.test")
    assert first.status == 503
    assert issuer_cn(first.cert) == PLACEHOLDER_ISSUER
    n.wait_for_cert("soon.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    r = n.https("soon.test", root_pem=st.root_pem)
    assert r.status == 200 and "hello from nginx" in r.text
    assert n.workers() == workers


def test_status_page_formats(make_stack):
    st = make_stack(lambda n: status_server(n) + server("st.test", n.https_port, aliases=("www.st.test",)))
    n = st.nginx
    n.wait_for_cert("st.test", ISSUE_TIMEOUT, root_pem=st.root_pem)

    def valid():
        entries = n.cert_status("st.test")
        return entries and entries[0]["state"] == "valid" and entries[0]
    entry = wait_until(valid, 30, "the status to say valid", interval=0.3)
    assert entry["names"] == ["st.test", "www.st.test"]
    assert entry["key_type"] == "ec:P-256" and entry["not_after"] and entry["serial"]
    doc = n.status_json()
    assert doc["server"]["software"] == "nginx"
    assert doc["server"]["renewal_pid"] in n.workers()
    assert doc["server"]["shared_memory"]["certificates"] >= 1
    assert "key_pem" not in json.dumps(doc) and "PRIVATE KEY" not in json.dumps(doc)

    html = n.status()
    assert html.status == 200 and html.headers["Content-Type"].startswith("text/html")
    assert "st.test" in html.text and "<" in html.text

    prom = n.status("prometheus")
    assert prom.status == 200 and prom.headers["Content-Type"].startswith("text/plain")
    assert re.search(r"^autotls_\w+\{[^}]*st\.test[^}]*\} \S+$", prom.text, re.M), prom.text

    # Only GET and HEAD; the location's own access rules apply.
    r = n.http("localhost", "/autotls-status", method="DELETE")
    assert r.status == 405


def test_renew_handler_validates_its_argument(nginx):
    nginx.start(unreachable_ca_body(nginx))
    check_renew_handler(nginx, "h.test")
