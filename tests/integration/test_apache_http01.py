"""The request side of mod_autotls: HTTP-01 answers come from shared memory
(never from the disk, not even for bad or unknown tokens), other names keep
their own challenge files, and an HTTPS vhost still waiting for its first
certificate answers 503 until the certificate is live.
"""

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from apache_env import LOOPBACK, apache, issuer_cn, make_stack, status_vhost, vhost  # noqa: F401
from server_checks import (CONTROL, TOKENS, check_other_name_keeps_its_files,
                           check_tokens_are_404, check_waiting_page, plant_challenge_files)


def unreachable_ca_body(a):
    # Nothing listens on the CA's port: the vhost stays on its placeholder.
    return (f"AutoTLSCA https://{LOOPBACK}:9/dir\nAutoTLSAcceptTerms on\n"
            f"AutoTLSStore \"{a.store}\"\nAutoTLSRetryDelay 1m\n"
            + status_vhost(a)
            + f"<VirtualHost {LOOPBACK}:{a.http_port}>\n    ServerName h.test\n</VirtualHost>\n"
            + f"<VirtualHost {LOOPBACK}:{a.http_port}>\n    ServerName other.test\n</VirtualHost>\n"
            + vhost("h.test", a.https_port, "AutoTLSChallenges http-01"))


def plant_files(a):
    return plant_challenge_files(a.root / "htdocs")


def test_unknown_and_bad_tokens_are_404_for_managed_names(apache):
    plant_files(apache)
    apache.start(unreachable_ca_body(apache))
    check_tokens_are_404(apache, "h.test")


def test_other_names_keep_their_challenge_files(apache):
    plant_files(apache)
    apache.start(unreachable_ca_body(apache))
    check_other_name_keeps_its_files(apache, "other.test")


@pytest.mark.skipif(not shutil.which("strace"), reason="strace is not installed")
def test_challenge_requests_never_touch_the_disk(apache):
    plant_files(apache)
    apache.start(unreachable_ca_body(apache))
    apache.http("h.test", "/")          # warm up both children
    tids = []
    for pid in apache.children():
        tids += [t.name for t in Path(f"/proc/{pid}/task").iterdir()]
    out = apache.root / "logs" / "strace.txt"
    argv = ["strace", "-f", "-qq", "-e", "trace=%file", "-o", str(out)]
    for t in tids:
        argv += ["-p", t]
    tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)                 # attached
        for token in TOKENS:
            for _ in range(3):
                r = apache.http("h.test", "/.well-known/acme-challenge/" + token)
                assert r.status == 404
        # A control request that does touch the disk, to prove tracing works.
        assert apache.http("other.test", "/.well-known/acme-challenge/" + CONTROL).status == 200
        time.sleep(0.5)
    finally:
        tracer.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            tracer.wait(10)
    trace = out.read_text(errors="replace")
    touched = [line.split("acme-challenge/", 1)[1].split('"', 1)[0]
               for line in trace.splitlines() if "acme-challenge/" in line]
    assert CONTROL in touched, "the control request was not traced; strace saw:\n" + trace[-2000:]
    assert {t.split("/")[0] for t in touched} == {CONTROL}, \
        f"challenge paths reached the file system: {touched}"


def test_503_until_the_first_certificate(make_stack):
    # Hold the order at finalize for a while so the placeholder phase is seen.
    st = make_stack(lambda a: status_vhost(a) + vhost("wait.test", a.https_port),
                    proxy=True, start=False)
    st.proxy.add_fault("delay", kind="finalize", count=1, seconds=6)
    a = st.apache
    a.start()
    check_waiting_page(a.https("wait.test"), "wait.test")
    pids = (a.pid, a.children())
    a.wait_for_cert("wait.test", 90, root_pem=st.root_pem)
    r = a.https("wait.test", root_pem=st.root_pem)
    assert r.status == 200 and "hello from apache" in r.text
    assert (a.pid, a.children()) == pids


def test_own_certificate_is_served_without_503(apache, local_ca):
    """A vhost with its own SSLCertificateFile keeps it until ours is live."""
    cert, key = local_ca.issue("own-cert", names=("own.test",))
    c = apache.copy_in(cert, "own.pem")
    k = apache.copy_in(key, "own.key", mode=0o600)
    body = unreachable_ca_body(apache) + vhost(
        "own.test", apache.https_port, f"SSLCertificateFile {c}", f"SSLCertificateKeyFile {k}")
    apache.start(body)
    r = apache.https("own.test")
    assert r.status == 200
    assert issuer_cn(r.cert) == "autotls test CA"
    assert apache.https("h.test").status == 503
    assert os.path.exists(apache.store)
