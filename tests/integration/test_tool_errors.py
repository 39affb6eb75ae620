"""What the tool says when it cannot do what it was asked: exactly one line
on stderr naming the problem, and the exit status (2 usage, 1 failure)."""

import re

from procs import free_port
from tool_env import EAB_KEY, EAB_KID, make_tool, one_line_error, tool  # noqa: F401


def test_help_and_version(tool):
    r = tool.run("--help")
    assert r.returncode == 0
    for cmd in ("issue", "renew", "status", "revoke", "account"):
        assert f"autotls {cmd}" in r.stdout
    r = tool.run("issue", "--help")
    assert r.returncode == 0
    for opt in ("--ca", "--store", "--name", "--key", "--challenge", "--http-port", "--tls-port",
                "--ca-trust", "--contact", "--accept-terms", "--eab", "--dns01-command",
                "--preferred-chain", "--profile", "--timeout", "--verbose", "--bind"):
        assert opt in r.stdout, opt
    r = tool.run("--version")
    assert r.returncode == 0 and re.match(r"autotls \d+\.\d+", r.stdout)


def test_usage_errors(tool):
    cases = [
        (["frobnicate"], "frobnicate"),
        (["issue", "--store", tool.store, "--ca", tool.ca_url], "--name"),
        (["issue", "--store", tool.store, "--name", "x.test"], "--ca"),
        (["issue", "--store", tool.store, "--ca", tool.ca_url, "--name", "x.test", "--bogus"],
         "--bogus"),
        (["issue", "--store", tool.store, "--ca", tool.ca_url, "--name", "x.test", "--http-port",
          "99999"], "--http-port"),
        (["issue", "--store", tool.store, "--ca", tool.ca_url, "--name", "bad name"], "--name"),
        (["status", "--store", tool.store, "--reason", "keyCompromise"], "--reason"),
        (["revoke", "--store", tool.store], "NAME"),
        (["account", "--store", tool.store, "explode"], "show"),
    ]
    for args, needle in cases:
        r = tool.run(*args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert needle in one_line_error(r), (args, r.stderr)
    assert not tool.store.exists(), "a usage error must not create the store"


def test_bad_key_type(tool):
    r = tool.run(*tool.issue_args(["key.test"], extra=["--key", "ec:P-999"]))
    assert r.returncode == 2
    line = one_line_error(r)
    assert "--key" in line and "ec:P-999" in line and "ec:P-256" in line, line
    assert not tool.store.exists()


def test_unreachable_ca(make_tool, pebble):
    port = free_port()
    tool = make_tool(pebble, ca_url=f"https://127.0.0.1:{port}/dir")
    r = tool.run(*tool.issue_args(["unreach.test"]))
    assert r.returncode == 1
    line = one_line_error(r)
    assert line.startswith("autotls: issue for unreach.test failed: "), line
    assert f"127.0.0.1:{port}" in line, line


def test_eab_required_but_not_given(make_tool, start_pebble):
    pebble = start_pebble(require_eab=True, eab_keys={EAB_KID: EAB_KEY})
    tool = make_tool(pebble)
    r = tool.run(*tool.issue_args(["noeab.test"]))
    assert r.returncode == 1
    line = one_line_error(r)
    assert line.startswith("autotls: issue for noeab.test failed: "), line
    assert "externalAccountRequired" in line or "external account" in line, line
    assert "--eab" in line, line


def test_wrong_eab_key(make_tool, start_pebble):
    pebble = start_pebble(require_eab=True, eab_keys={EAB_KID: EAB_KEY})
    tool = make_tool(pebble)
    wrong = "A" * 43
    r = tool.run(*tool.issue_args(["wrongeab.test"], extra=["--eab", f"{EAB_KID}:{wrong}"]))
    assert r.returncode == 1
    assert "wrongeab.test" in one_line_error(r)
    assert wrong not in r.stderr, "the HMAC key must never be printed"


def test_port_in_use(tool, pebble):
    import socket
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", pebble.http_port))
        s.listen()
        r = tool.run(*tool.issue_args(["busy.test"]))
    assert r.returncode == 1
    line = one_line_error(r)
    assert str(pebble.http_port) in line and "in use" in line, line


def test_status_of_a_missing_store(tool):
    r = tool.run("status", "--store", tool.store)
    assert r.returncode == 1
    assert str(tool.store) in one_line_error(r)
    assert not tool.store.exists()


def test_wildcard_without_dns01(tool):
    r = tool.run(*tool.issue_args(["*.nodns.test"]))
    assert r.returncode in (1, 2)
    assert "dns-01" in one_line_error(r)


def test_verbose_logs_progress_to_stderr(tool, pebble):
    r = tool.issue(["verbose.test"], extra=["--verbose"])
    assert "autotls: " in r.stderr and len(r.stderr.splitlines()) > 3
    assert "verbose.test" in r.stderr
