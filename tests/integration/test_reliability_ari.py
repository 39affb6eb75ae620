"""Renewal information (RFC 9773) and profiles, against the real Apache with
mod_autotls through the ACME proxy (Pebble 2.4 has neither).

- ARI: a window far ahead renews nothing; moved earlier, the certificate is
  renewed (the newOrder says which certificate it replaces); renewalInfo is
  never asked again before its Retry-After.
- Profiles: the configured profile is sent in every newOrder; one the CA
  does not offer is a configuration error naming the profile and the
  directive; a malformed one fails configtest.
"""

import datetime
import re
import time

from acme_proxy import ari_cert_id
from apache_env import Apache, make_stack, status_vhost, vhost  # noqa: F401
from procs import wait_until
from reliability import (Health, _cases_file, cases, entry, proxied_stack,  # noqa: F401
                         seed, wait_entry, wait_failed, wait_serial_change)

ISSUE_TIMEOUT = 90
NAME = "ari.test"


def utc(offset):
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset)


def ari_gaps(proxy):
    """{certificate id: [seconds between consecutive renewalInfo requests]}."""
    times = {}
    for r in proxy.requests("renewalInfo"):
        times.setdefault(r.path.rsplit("/", 1)[-1], []).append(r.time)
    return {k: [b - a for a, b in zip(v, v[1:])] for k, v in times.items()}


def test_ari_window_moved_earlier_renews_and_retry_after_is_honoured(make_stack, start_acme_proxy,
                                                                      cases):
    retry_after = 4
    st = proxied_stack(make_stack, start_acme_proxy,
                       lambda a: "AutoTLSProfile shortlived\n" + status_vhost(a)
                       + vhost(NAME, a.https_port), seed(), start=False)
    a, proxy = st.apache, st.proxy
    proxy.ari_retry_after = retry_after
    a.start()
    first = a.wait_for_cert(NAME, ISSUE_TIMEOUT, root_pem=st.root_pem)
    health = Health(a)
    chain = (a.store / "certs" / entry(a, NAME)["id"] / "chain.pem").read_text()
    cert_id = ari_cert_id(chain)

    with cases.case("ARI", "window far ahead: no renewal") as info:
        # Two checks with the default window (2/3 of a five-year lifetime).
        wait_until(lambda: len([r for r in proxy.requests("renewalInfo") if cert_id in r.path]) >= 2,
                   3 * retry_after + 10, "two renewalInfo checks")
        e = entry(a, NAME)
        assert e["ari"] and e["ari"]["start"], e
        info["window"] = f"{e['ari']['start']} .. {e['ari']['end']}"
        assert proxy.count("newOrder") == 1
        assert a.cert(NAME, root_pem=st.root_pem).serial_number == first.serial_number

    with cases.case("ARI", "window moved earlier: renewed, replaces sent") as info:
        proxy.set_renewal_info(chain, utc(-3600), utc(2), retry_after=retry_after,
                               explanation_url="https://ca.test/incident/1")
        moved = time.monotonic()
        new = wait_serial_change(a, NAME, first.serial_number, st.root_pem,
                                 timeout=2 * retry_after + 30)
        info["renewed after"] = f"{time.monotonic() - moved:.1f} s"
        orders = proxy.requests("newOrder")
        assert len(orders) == 2, orders
        assert orders[1].replaces == cert_id, f"replaces={orders[1].replaces!r}, not {cert_id}"
        info["replaces"] = orders[1].replaces
        assert all(o.profile == "shortlived" for o in orders), [o.profile for o in orders]
        wait_entry(a, NAME, lambda e: e["state"] == "valid" and int(e["serial"], 16) ==
                   new.serial_number, 10, "valid")

    with cases.case("ARI", "renewalInfo not asked again before Retry-After") as info:
        new_chain = (a.store / "certs" / entry(a, NAME)["id"] / "chain.pem").read_text()
        new_id = ari_cert_id(new_chain)
        # A longer Retry-After for the new certificate.
        proxy.set_renewal_info(new_chain, utc(86400 * 300), utc(86400 * 400), retry_after=7)
        wait_until(lambda: len(ari_gaps(proxy).get(new_id, [])) >= 2, 40,
                   "three renewalInfo checks of the new certificate")
        gaps = ari_gaps(proxy)
        info["gaps (s)"] = {"..." + k[-8:]: [round(g, 2) for g in v] for k, v in gaps.items()}
        for k, v in gaps.items():
            for g in v:
                assert g >= retry_after, f"renewalInfo for {k} again after {g:.2f} s"
        later = gaps[new_id][1:]            # after the 7 s answer was seen
        assert all(g >= 7 for g in later), gaps[new_id]
        assert all(g <= 7 + 4 for g in later), gaps[new_id]
        assert proxy.count("newOrder") == 2, "renewed again with a window a year ahead"
    with cases.case("profiles", "configured profile sent in every newOrder") as info:
        orders = proxy.requests("newOrder")
        info["profiles sent"] = [o.profile for o in orders]
        assert orders and all(o.profile == "shortlived" for o in orders)
    health.check()


def test_unknown_profile_is_a_configuration_error(make_stack, start_acme_proxy, cases):
    st = proxied_stack(make_stack, start_acme_proxy,
                       lambda a: status_vhost(a)
                       + vhost("noprof.test", a.https_port, "AutoTLSProfile nosuchprofile")
                       + vhost("prof.test", a.https_port, "AutoTLSProfile classic"), seed())
    a, proxy = st.apache, st.proxy
    with cases.case("profiles", "profile the CA does not offer") as info:
        e = wait_failed(a, "noprof.test", timeout=30)
        msg = e["last_error"]["message"]
        info["error"] = msg
        info["code"] = e["last_error"].get("code")
        assert "nosuchprofile" in msg and "AutoTLSProfile" in msg, msg
        assert re.search(r"classic", msg) and re.search(r"shortlived", msg), \
            f"the error does not list the profiles the CA offers: {msg}"
        # The other site is not held up by it.
        a.wait_for_cert("prof.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
        assert all(o.profile == "classic" for o in proxy.requests("newOrder")
                   if "prof.test" in str(o.payload))
        assert a.https("noprof.test").status == 503

    with cases.case("profiles", "malformed profile name fails configtest") as info:
        bad = Apache(logs=None)
        try:
            rc, out = bad.configtest(st.global_config() + vhost("bad.test", bad.https_port,
                                                                "AutoTLSProfile 'bad profile!'"))
        finally:
            bad.cleanup()
        info["configtest"] = out.strip().splitlines()[-1][:200] if out.strip() else ""
        assert rc != 0, out
        assert "AutoTLSProfile" in out, out
