"""The status page (HTML, JSON, Prometheus) and the AutoTLS section of
mod_status, after a certificate was issued and while another one fails.
"""

import json

import pytest

from apache_env import make_stack, status_vhost, vhost  # noqa: F401
from procs import wait_until

ISSUE_TIMEOUT = 90




def body(a):
    return status_vhost(a) + vhost("ok.test", a.https_port) + vhost("bad.test", a.https_port)


@pytest.fixture
def bad_name(challtestsrv):
    """bad.test resolves where nothing listens: its validation always fails."""
    challtestsrv.add_a("bad.test", ["127.0.0.2"])
    yield "bad.test"
    challtestsrv.clear_a("bad.test")


def test_status_page_formats(make_stack, bad_name):
    st = make_stack(body)
    a = st.apache
    cert = a.wait_for_cert("ok.test", ISSUE_TIMEOUT, root_pem=st.root_pem)

    def bad_failed():
        entries = a.cert_status("bad.test")
        return entries and entries[0]["state"] == "error" and entries[0]
    bad = wait_until(bad_failed, ISSUE_TIMEOUT, "bad.test to fail")

    doc = a.status_json()
    [ok] = [c for c in doc["certificates"] if "ok.test" in c["names"]]
    assert ok["state"] == "valid"
    assert ok["names"] == ["ok.test"]
    assert ok["key_type"] == "ec:P-256"
    assert ok["serial"] and int(ok["serial"], 16) == cert.serial_number
    assert ok["not_after"] and ok["renew_at"]
    assert ok["ca"] == st.directory_url
    assert ok["last_error"] is None
    # The failure carries the CA's own words.
    assert bad["last_error"]["message"]
    assert bad["failures"] >= 1
    assert bad["last_error"].get("problem") is not None
    # What only the server knows: the renewing child and the shared memory.
    assert doc["server"]["renewal_pid"] in a.children()
    assert doc["server"]["shared_memory"]["certificates"] >= 1
    # No key material, ever.
    text = json.dumps(doc)
    assert "PRIVATE KEY" not in text

    r = a.status()
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "ok.test" in r.text and "valid" in r.text and "bad.test" in r.text

    r = a.status("prometheus")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    metric_lines = [ln for ln in r.text.splitlines() if ln and not ln.startswith("#")]
    assert any("ok.test" in ln for ln in metric_lines), r.text
    assert all(ln.startswith("autotls_") for ln in metric_lines), r.text

    assert r.headers["Cache-Control"] == "no-store"


def test_status_is_not_public_unless_mapped(make_stack, bad_name):
    st = make_stack(body)
    a = st.apache
    a.wait_for_cert("ok.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    r = a.https("ok.test", "/autotls-status?format=json", root_pem=st.root_pem)
    assert r.status == 404, (r.status, r.text[:200])
    r = a.https("ok.test", "/server-status", root_pem=st.root_pem)
    assert r.status == 404


def test_mod_status_section(make_stack, bad_name):
    st = make_stack(body)
    a = st.apache
    a.wait_for_cert("ok.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    wait_until(lambda: a.cert_status("bad.test")[0]["state"] == "error", ISSUE_TIMEOUT, "bad.test to fail")
    r = a.http("localhost", "/server-status")
    assert r.status == 200
    assert "<h2>AutoTLS</h2>" in r.text
    assert "ok.test" in r.text and "bad.test" in r.text
    assert "Renewal runs in process" in r.text
    r = a.http("localhost", "/server-status?auto")
    assert r.status == 200
    lines = dict(ln.split(": ", 1) for ln in r.text.splitlines() if ": " in ln)
    assert lines["AutoTLSCertificates"] == "2"
    assert lines["AutoTLSValid"] == "1"
    assert lines["AutoTLSErrors"] == "1"
