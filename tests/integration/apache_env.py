"""Debian's apache2 with the built mod_autotls, for the Apache integration tests.

An ``Apache`` owns a fresh ServerRoot (world-traversable, because the
renewal thread runs as www-data), writes a configuration from a template
plus the test's global lines and virtual hosts, and starts the real
``/usr/sbin/apache2`` as root in the foreground. What it shares with nginx's
environment (clients, logs, status page, sanitizer reports) is in
server_env.py.

The module is found through $AUTOTLS_APACHE_MODULE, or as
module/apache/mod_autotls.so under $AUTOTLS_BUILD_DIR; tests are skipped
when neither exists.
"""

import os
import signal

import pytest

import server_env
from procs import LOOPBACK, wait_group_gone
from server_env import (PLACEHOLDER_ISSUER, USER, Response, cert_names,  # noqa: F401
                        check_reports, http_request, https_request, issuer_cn, make_world_dir,
                        peer_cert, s_client)

APACHE2 = "/usr/sbin/apache2"
MODULES = "/usr/lib/apache2/modules"
START_SERVERS = 2             # and never more or fewer: PIDs show restarts
STANDARD_MODULES = [
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_host_module", "mod_authz_host.so"),
    ("ssl_module", "mod_ssl.so"),
    ("socache_shmcb_module", "mod_socache_shmcb.so"),
    ("status_module", "mod_status.so"),
    ("alias_module", "mod_alias.so"),
    ("rewrite_module", "mod_rewrite.so"),
    ("dir_module", "mod_dir.so"),
    ("mime_module", "mod_mime.so"),
]


def module_path():
    """The built mod_autotls.so, or None."""
    return server_env.module_path("AUTOTLS_APACHE_MODULE", "module/apache/mod_autotls.so")


def require_module():
    return server_env.require_module("AUTOTLS_APACHE_MODULE", "module/apache/mod_autotls.so",
                                     APACHE2, "apache2")


# ------------------------------------------------------------------ the server

CONF_TEMPLATE = """\
ServerRoot "{root}"
DefaultRuntimeDir "{root}/run"
PidFile "{root}/run/apache2.pid"
Mutex file:{root}/run default
{load_modules}
LoadModule autotls_module "{module}"
User {user}
Group {user}
ServerName localhost
ServerAdmin admin@localhost
Listen {ip}:{http_port}
Listen {ip}:{https_port} https
ErrorLog "{root}/logs/error.log"
LogLevel {log_level}
LogFormat "%h %t \\"%r\\" %>s %b \\"%{{Host}}i\\"" simple
CustomLog "{root}/logs/access.log" simple
DocumentRoot "{root}/htdocs"
<Directory "{root}/htdocs">
    AllowOverride None
    Require all granted
</Directory>
DirectoryIndex index.html
TypesConfig /etc/mime.types
StartServers {start_servers}
ServerLimit {start_servers}
ThreadsPerChild 25
MaxRequestWorkers 50
MinSpareThreads 1
MaxSpareThreads 50
MaxConnectionsPerChild 0
GracefulShutdownTimeout 10
SSLSessionCache "shmcb:{root}/run/ssl_scache(512000)"
"""


class Apache(server_env.Server):
    """One apache2 with its own ServerRoot, ports and logs."""

    name = "apache2"
    binary = APACHE2
    stop_signal = signal.SIGTERM
    subdirs = ("run", "logs", "htdocs", "conf")

    def __init__(self, logs=None, http_port=None, https_port=None, log_level="warn autotls:debug"):
        super().__init__(require_module(), logs, http_port, https_port, log_level)
        self.conf_path = self.root / "conf" / "apache2.conf"
        (self.root / "htdocs" / "index.html").write_text("hello from apache\n")

    def config_text(self, body):
        loads = "\n".join(f'LoadModule {name} "{MODULES}/{so}"' for name, so in STANDARD_MODULES)
        return CONF_TEMPLATE.format(root=self.root, load_modules=loads, module=self.module,
                                    user=USER, ip=LOOPBACK, http_port=self.http_port,
                                    https_port=self.https_port, start_servers=START_SERVERS,
                                    log_level=self.log_level) + body

    def configtest_cmd(self):
        return [APACHE2, "-t", "-d", str(self.root), "-f", str(self.conf_path)]

    def start_cmd(self):
        return [APACHE2, "-d", self.root, "-f", self.conf_path, "-DFOREGROUND"]

    def ready(self):
        return len(self.children()) >= START_SERVERS

    def children(self):
        """PIDs of the parent's child processes (the workers)."""
        return [pid for pid, _ in self._children()]

    def graceful(self, timeout=30.0):
        """Graceful restart (SIGUSR1) and wait for the new generation to serve."""
        mark = self.log_size()
        os.kill(self.pid, signal.SIGUSR1)
        self.wait_log(r"resuming normal operations", timeout, start=mark)

    def after_stop(self, timeout):
        # Children outliving the parent still belong to its process group.
        wait_group_gone(self.process.pid, timeout, "apache2's children to exit",
                        kill_on_timeout=True)


def running_apache(body, logs=None, **kw):
    return server_env.running(Apache(logs=logs, **kw), body)


@pytest.fixture
def apache(logs):
    """An Apache that is not started (for configtest and custom setups)."""
    a = Apache(logs=logs)
    yield a
    check_reports([a])


def vhost(name, port, *lines, aliases=()):
    """A <VirtualHost> block with AutoTLS on."""
    out = [f"<VirtualHost {LOOPBACK}:{port}>", f"    ServerName {name}"]
    out += [f"    ServerAlias {a}" for a in aliases]
    out += [f"    {line}" for line in lines]
    out += ["    AutoTLS on", "</VirtualHost>", ""]
    return "\n".join(out)


def status_vhost(apache):
    """A plain-HTTP vhost "localhost" (first, so the default) mapping the
    status page, the renew handler and mod_status for the tests."""
    return f"""\
<VirtualHost {LOOPBACK}:{apache.http_port}>
    ServerName localhost
    <Location /autotls-status>
        SetHandler autotls-status
        Require local
    </Location>
    <Location /autotls-renew>
        SetHandler autotls-renew
        Require local
    </Location>
    <Location /server-status>
        SetHandler server-status
        Require local
    </Location>
</VirtualHost>
"""


# ------------------------------------------------------------------ Apache + Pebble

GLOBAL_TEMPLATE = """\
AutoTLSCA {directory}
AutoTLSCATrust "{trust}"
AutoTLSAcceptTerms on
AutoTLSContact admin@example.com
AutoTLSStore "{store}"
AutoTLSRetryDelay 1s 5s
"""


class Stack(server_env.Stack):
    """Apache with mod_autotls, its Pebble, and optionally the ACME proxy."""

    @property
    def apache(self):
        return self.server


@pytest.fixture
def make_stack(start_pebble, start_acme_proxy, local_ca, logs):
    """make_stack(body, proxy=False, start=True, apache_kw=None, **pebble_options) -> Stack.

    ``body`` is the configuration after the global AutoTLS lines (see
    server_env.stack_factory).
    """
    make, made = server_env.stack_factory(Apache, Stack, "apache_kw", GLOBAL_TEMPLATE,
                                          start_pebble, start_acme_proxy, local_ca, logs)
    yield make
    check_reports(made)
