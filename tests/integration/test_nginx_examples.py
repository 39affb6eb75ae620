"""Every nginx file in conf-examples passes `nginx -t` with the built module,
as a Debian administrator would install it: the load_module file, the
conf.d defaults with the two lines they ask for, and the example as a site
(ports, and the paths of files that exist only on a real server, replaced).
"""

import re
import shutil
from pathlib import Path

import pytest

from nginx_env import LOOPBACK, nginx  # noqa: F401

EXAMPLES = Path(__file__).resolve().parents[2] / "conf-examples" / "nginx"
SITES = ["minimal.conf", "several-servers.conf", "dual-keys.conf", "private-ca.conf",
         "eab.conf", "wildcard-dns01.conf", "status.conf"]


def localise(n, text, files):
    text = re.sub(r"^\s*listen \[::\]:\d+[^;]*;\n", "", text, flags=re.M)
    text = re.sub(r"listen 80\b", f"listen {LOOPBACK}:{n.http_port}", text)
    text = re.sub(r"listen 443\b", f"listen {LOOPBACK}:{n.https_port}", text)
    for old, new in files.items():
        text = text.replace(old, str(new))
    return text


@pytest.mark.parametrize("example", SITES)
def test_example_passes_configtest(nginx, local_ca, example):
    cert, key = local_ca.issue("corp-client", names=("acme-client.corp.example",))
    hook = nginx.root / "conf" / "dns01-hook.sh"
    shutil.copyfile(EXAMPLES / "dns01-hook.sh", hook)
    hook.chmod(0o755)
    files = {"/etc/ssl/corp/ca-roots.pem": local_ca.cert_path,
             "/etc/ssl/corp/acme-client.crt": cert, "/etc/ssl/corp/acme-client.key": key,
             "/etc/nginx/autotls-dns01-hook.sh": hook}

    load = (EXAMPLES / "mod-http-autotls.conf").read_text()
    assert re.search(r"^load_module /usr/lib/nginx/modules/ngx_http_autotls_module\.so;$", load, re.M)
    defaults = (EXAMPLES / "autotls.conf").read_text()
    defaults = defaults.replace("#autotls_store /var/lib/nginx/autotls;", f"autotls_store {nginx.store};")
    defaults = defaults.replace("#autotls_contact", "autotls_contact")
    defaults = defaults.replace("#autotls_accept_terms on;", "autotls_accept_terms on;")
    site = localise(nginx, (EXAMPLES / example).read_text(), files)
    if example == "status.conf":
        site = (f"server {{\n    listen {LOOPBACK}:{nginx.http_port};\n    server_name localhost;\n"
                f"{site}}}\nserver {{\n    listen {LOOPBACK}:{nginx.https_port} ssl;\n"
                "    server_name example.com;\n    autotls on;\n}\n")
    nginx.write_file("conf/conf.d/autotls.conf", defaults)
    nginx.write_file("conf/sites/site.conf", site)
    rc, out = nginx.configtest(f"    include {nginx.root}/conf/conf.d/*.conf;\n"
                               f"    include {nginx.root}/conf/sites/*.conf;\n")
    assert rc == 0, f"{example}:\n{out}\n{site}"
    assert "[warn]" not in out, out
