"""Certificate-authority features through mod_autotls: external account
binding, the preferred alternate chain, a wildcard through the dns-01
command, and certificate profiles.
"""

import base64
import shutil
import os

from cryptography import x509

from apache_env import (cert_names, issuer_cn, make_stack, s_client,  # noqa: F401
                        status_vhost, vhost)
from procs import wait_until

ISSUE_TIMEOUT = 90
KID = "kid-autotls-test"
HMAC_KEY = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def test_eab_account(make_stack):
    st = make_stack(lambda a: f"AutoTLSEAB {KID} {HMAC_KEY}\n" + status_vhost(a)
                    + vhost("eab.test", a.https_port),
                    require_eab=True, eab_keys={KID: HMAC_KEY})
    cert = st.apache.wait_for_cert("eab.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert cert is not None


def test_eab_missing_is_reported_with_the_directive(make_stack):
    st = make_stack(lambda a: status_vhost(a) + vhost("noeab.test", a.https_port),
                    require_eab=True, eab_keys={KID: HMAC_KEY})
    a = st.apache

    def failed():
        entries = a.cert_status("noeab.test")
        return entries and entries[0]["last_error"] and entries[0]
    entry = wait_until(failed, ISSUE_TIMEOUT, "the account to be refused")
    assert "AutoTLSEAB" in entry["last_error"]["message"], entry
    assert "AutoTLSEAB" in a.error_log()


def test_preferred_alternate_chain(make_stack):
    def body(a):
        return (status_vhost(a)
                + vhost("alt.test", a.https_port, f"AutoTLSPreferredChain \"{body.alt_cn}\"")
                + vhost("dflt.test", a.https_port))
    st = make_stack(lambda a: "", alternate_roots=1, start=False)
    roots = [x509.load_pem_x509_certificate(p.encode()) for p in st.pebble.roots()]
    assert len(roots) == 2
    default_cn = roots[0].subject.rfc4514_string().split("CN=", 1)[1].split(",")[0]
    body.alt_cn = roots[1].subject.rfc4514_string().split("CN=", 1)[1].split(",")[0]
    a = st.apache
    a.write_config(st.global_config() + body(a))
    a.start()
    for name in ("alt.test", "dflt.test"):
        a.wait_for_cert(name, ISSUE_TIMEOUT)
    alt_chain = s_client(a.https_port, "alt.test").chain
    dflt_chain = s_client(a.https_port, "dflt.test").chain
    top_alt = x509.load_pem_x509_certificate(alt_chain[-1].encode())
    top_dflt = x509.load_pem_x509_certificate(dflt_chain[-1].encode())
    assert issuer_cn(top_alt) == body.alt_cn
    assert issuer_cn(top_dflt) == default_cn
    # And the preferred chain verifies against its own root.
    a.wait_for_cert("alt.test", 5, root_pem=st.pebble.root(1))


def test_wildcard_through_dns01_command(make_stack, dns01_hook):
    st = make_stack(lambda a: status_vhost(a) + vhost(
        "wc.test", a.https_port, "AutoTLSChallenges dns-01",
        f"AutoTLSDNS01Command {dns01_hook.path}", aliases=("*.wc.test",)))
    a = st.apache
    cert = a.wait_for_cert("wc.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert cert_names(cert) == {"wc.test", "*.wc.test"}
    # Any name under the wildcard gets it, and verifies for that name.
    other = a.cert("anything.wc.test", root_pem=st.root_pem)
    assert other.serial_number == cert.serial_number
    assert a.https("deep.wc.test", root_pem=st.root_pem).status == 200
    # Teardowns run in the background once the order is done: give them a moment.
    def both_torn_down():
        actions = [c[0] for c in dns01_hook.calls()]
        return actions.count("teardown") >= 2 and actions
    actions = wait_until(both_torn_down, 20, "both dns-01 teardowns")
    assert actions.count("setup") == 2 and actions.count("teardown") == 2, dns01_hook.calls()


def test_profile_is_asked_for(make_stack):
    st = make_stack(lambda a: "AutoTLSProfile shortlived\n" + status_vhost(a)
                    + vhost("prof.test", a.https_port), proxy=True)
    st.apache.wait_for_cert("prof.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    orders = st.proxy.requests("newOrder")
    assert orders and all(o.profile == "shortlived" for o in orders), orders


def test_ca_client_certificate(make_stack, local_ca):
    """A CA that demands a TLS client certificate (the proxy, in front of
    Pebble, refuses handshakes without one from the test CA): with
    AutoTLSCAClientCertificate every request to it carries the certificate.
    The key is private to the server's User (0600, www-data), as an
    administrator would keep it."""
    cert, key = local_ca.issue("apache-acme-client", names=("apache-acme-client.test",),
                               client=True)

    def body(a):
        c = a.copy_in(cert, "acme-client.pem")
        k = a.copy_in(key, "acme-client.key", mode=0o600)
        shutil.chown(k, "www-data", "www-data")
        return (f'AutoTLSCAClientCertificate "{c}" "{k}"\n' + status_vhost(a)
                + vhost("client.test", a.https_port))
    st = make_stack(body, proxy={"client_ca_file": local_ca.cert_path})
    st.apache.wait_for_cert("client.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    assert st.proxy.requests("finalize")
    assert set(st.proxy.client_subjects) == {"apache-acme-client.test"}
    assert st.proxy.handshakes_refused == 0
