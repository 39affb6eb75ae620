"""autotls renew, revoke, account and status on a store that `issue` filled."""

import json
import re

from cryptography import x509

from pebble import split_pem, verify_chain
from procs import free_port
from tool_env import make_tool, one_line_error, tool  # noqa: F401


def test_renew_all_uses_remembered_parameters(tool, pebble):
    tool.issue(["r1.test"])
    tool.issue(["r2.test"], "tls-alpn-01")
    before = {n: tool.serial(n) for n in ("r1.test", "r2.test")}
    r = tool.renew("--verbose")
    for n in ("r1.test", "r2.test"):
        assert tool.serial(n) != before[n], n
        assert re.search(rf"^renewed {re.escape(n)} ", r.stdout, re.M), r.stdout
        verify_chain(tool.chain(n), pebble.root(), [n])
    # Each was validated the way issue was told: the remembered challenge
    # types and ports.
    assert re.search(r"http-01 answered", r.stderr), r.stderr
    assert re.search(r"tls-alpn-01 handshake completed", r.stderr), r.stderr


def test_renew_one_name_leaves_the_others(tool, pebble):
    tool.issue(["only.test", "www.only.test"])
    tool.issue(["other.test"])
    other = tool.serial("other.test")
    only = tool.serial("only.test")
    tool.renew("www.only.test")
    assert tool.serial("only.test") != only
    assert tool.serial("other.test") == other


def test_renew_options_override_and_are_remembered(make_tool, start_pebble, pebble):
    tool = make_tool(pebble)
    tool.issue(["move.test"])
    # A second Pebble validates on other ports: the same store follows it
    # when renew is told the new ports (and the new CA trust stays the same).
    moved = start_pebble()
    r = tool.renew("--http-port", moved.http_port, "--ca", moved.directory_url, expect_ok=True)
    assert "renewed move.test" in r.stdout
    verify_chain(tool.chain("move.test"), moved.root(), ["move.test"])
    [site] = tool.tool_json()["sites"]
    assert site["http_port"] == moved.http_port and site["ca"] == moved.directory_url


def test_renew_unknown_name(tool, pebble):
    tool.issue(["known.test"])
    r = tool.renew("unknown.test", expect_ok=False)
    assert r.returncode == 1
    assert "unknown.test" in one_line_error(r)


def test_revoke_then_issue_replaces(tool, pebble):
    tool.issue(["rev.test"])
    chain = tool.chain("rev.test")
    r = tool.run("revoke", "--store", tool.store, "--ca-trust", tool.local_ca.cert_path,
                 "rev.test", "--reason", "keyCompromise")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^revoked rev\.test ", r.stdout, re.M), r.stdout
    assert pebble.cert_status(split_pem(chain)[0])["Status"] == "Revoked"
    [entry] = tool.status()["certificates"]
    assert entry["state"] != "valid" or entry.get("renew_reason") == "revoked", entry

    # The next run replaces the revoked certificate.
    r = tool.issue(["rev.test"])
    assert tool.chain("rev.test") != chain
    leaf = split_pem(tool.chain("rev.test"))[0]
    assert pebble.cert_status(leaf)["Status"] == "Valid"

    # Revoking what does not exist says so on one line.
    r = tool.run("revoke", "--store", tool.store, "nothing.test")
    assert r.returncode == 1
    assert "nothing.test" in one_line_error(r)


def test_account_show_update_rollover_deactivate(tool, pebble):
    tool.issue(["acct.test"])
    common = ["--store", tool.store, "--ca-trust", tool.local_ca.cert_path]

    r = tool.run("account", *common, "show", "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["ca"] == tool.ca_url and shown["account"]["status"] == "valid"
    assert shown["account"]["contact"] == ["mailto:admin@example.test"]
    url = shown["url"]

    r = tool.run("account", *common, "update-contact", "new@example.test", "ops@example.test")
    assert r.returncode == 0, r.stderr
    r = tool.run("account", *common, "show", "--json")
    assert json.loads(r.stdout)["account"]["contact"] == ["mailto:new@example.test",
                                                         "mailto:ops@example.test"]
    [site] = tool.tool_json()["sites"]
    assert site["contact"] == ["mailto:new@example.test", "mailto:ops@example.test"]

    old_key = tool.account_key()
    r = tool.run("account", *common, "rollover")
    assert r.returncode == 0, r.stderr
    assert tool.account_key() != old_key
    r = tool.run("account", *common, "show", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["url"] == url
    # The CA accepts orders signed with the new key.
    tool.renew()
    verify_chain(tool.chain("acct.test"), pebble.root(), ["acct.test"])

    r = tool.run("account", *common, "deactivate")
    assert r.returncode == 0, r.stderr
    assert "deactivated" in r.stdout
    # A new account is registered by the next order.
    tool.renew()
    r = tool.run("account", *common, "show", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["url"] != url


def test_account_without_registration(tool, pebble):
    r = tool.run("account", "--store", tool.store, "show")
    assert r.returncode == 1
    one_line_error(r)


def test_status_formats(tool, pebble):
    tool.issue(["st.test", "www.st.test"])
    r = tool.run("status", "--store", tool.store)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAMES", "KEY", "STATE"]
    assert re.search(r"st\.test,www\.st\.test\s+ec:P-256\s+valid\s", r.stdout), r.stdout

    r = tool.run("status", "--store", tool.store, "--format", "prometheus")
    assert r.returncode == 0 and "st.test" in r.stdout
    assert any(line and not line.startswith("#") for line in r.stdout.splitlines())

    r = tool.run("status", "--store", tool.store, "--format", "html")
    assert r.returncode == 0 and "<" in r.stdout and "st.test" in r.stdout

    [entry] = tool.status()["certificates"]
    leaf = x509.load_pem_x509_certificate(split_pem(tool.chain("st.test"))[0].encode())
    assert entry["serial"].lower().lstrip("0") == format(leaf.serial_number, "x").lstrip("0")
    assert entry["not_after"].startswith(leaf.not_valid_after.strftime("%Y-%m-%dT%H:%M"))


def test_status_shows_the_last_error(make_tool, start_pebble):
    pebble = start_pebble()
    tool = make_tool(pebble)
    # The responder listens elsewhere: the CA's validation finds nobody.
    args = tool.issue_args(["fail.test"], "http-01")[:-2] + ["--http-port", free_port()]
    r = tool.run(*args)
    assert r.returncode == 1
    line = one_line_error(r)
    assert line.startswith("autotls: issue for fail.test failed: "), line
    [entry] = tool.status()["certificates"]
    assert entry["state"] in ("error", "missing")
    assert entry["last_error"] and entry["last_error"]["message"]
    assert entry["failures"] >= 1


def test_status_of_a_store_without_tool_parameters(tool, pebble, dns01_hook):
    """A server's store (no tool.json): status reads the certificates' metadata."""
    tool.issue(["srv.test"])
    tool.issue(["*.srv2.test"], "dns-01", extra=["--dns01-command", dns01_hook.path])
    (tool.store / "tool.json").unlink()
    certs = tool.status()["certificates"]
    assert sorted((c["names"][0], c["state"]) for c in certs) == [
        ("*.srv2.test", "valid"), ("srv.test", "valid")]
    r = tool.renew(expect_ok=False)
    assert r.returncode == 1 and "autotls issue" in one_line_error(r)
