"""The Apache configurations in conf-examples/apache pass `apache2 -t` with
the built module: what the README tells people to copy must work.

Paths that only exist on a real server (a company CA's roots, a DNS hook in
/usr/local/bin) are pointed at stand-ins; nothing else is changed.
"""

from pathlib import Path

import pytest

from apache_env import apache  # noqa: F401

EXAMPLES = Path(__file__).resolve().parents[2] / "conf-examples" / "apache"
SITES = ["minimal.conf", "several-vhosts.conf", "dual-keys.conf", "private-ca.conf",
         "eab.conf", "wildcard-dns01.conf", "status.conf"]


def module_conf():
    """autotls.conf as a2enmod would include it (autotls.load is the template's)."""
    load = (EXAMPLES / "autotls.load").read_text()
    assert "LoadModule autotls_module /usr/lib/apache2/modules/mod_autotls.so" in load
    assert "# Depends: ssl" in load
    return (EXAMPLES / "autotls.conf").read_text()


@pytest.mark.parametrize("example", SITES)
def test_example_passes_configtest(apache, local_ca, example):
    cert, key = local_ca.issue("corp-acme-client", names=("acme-client.corp.example",))
    stand_ins = {
        "/etc/ssl/corp/ca-roots.pem": str(apache.copy_in(local_ca.cert_path, "roots.pem")),
        "/etc/ssl/corp/acme-client.crt": str(apache.copy_in(cert, "client.crt")),
        "/etc/ssl/corp/acme-client.key": str(apache.copy_in(key, "client.key", mode=0o600)),
        "/usr/local/bin/autotls-dns01": str(EXAMPLES / "dns01-hook.sh"),
        "/var/lib/apache2/autotls": str(apache.store),
    }
    text = module_conf() + "AutoTLSAcceptTerms on\n" + (EXAMPLES / example).read_text()
    for real, stand_in in stand_ins.items():
        text = text.replace(real, stand_in)
    rc, out = apache.configtest(text)
    assert rc == 0, f"{example}:\n{out}"
    assert "Syntax OK" in out
