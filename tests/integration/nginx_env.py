"""Debian's nginx with the built ngx_http_autotls_module, for the nginx tests.

An ``Nginx`` owns a fresh prefix directory (world-traversable, because the
workers and the renewal thread run as www-data), writes nginx.conf from a
template plus the test's http{} lines, and runs the real ``/usr/sbin/nginx``
as root in the foreground (``-p PREFIX -c CONF -g 'daemon off;'``) with its
own pid file, logs and temporary paths. What it shares with Apache's
environment (clients, logs, status page, sanitizer reports) is in
server_env.py.

The module is found through $AUTOTLS_NGINX_MODULE, or under
$AUTOTLS_BUILD_DIR as module/nginx/ngx_http_autotls_module.so; the tests are
skipped when neither exists.
"""

import signal

import pytest

import server_env
from procs import LOOPBACK, wait_until
from server_env import (PLACEHOLDER_ISSUER, USER, Response, cert_names,  # noqa: F401
                        check_reports, client_context, http_request, https_request, issuer_cn,
                        make_world_dir, peer_cert, s_client)

NGINX = "/usr/sbin/nginx"
MODULE_NAME = "ngx_http_autotls_module.so"


def module_path():
    """The built module, or None."""
    return server_env.module_path("AUTOTLS_NGINX_MODULE", f"module/nginx/{MODULE_NAME}")


def require_module():
    return server_env.require_module("AUTOTLS_NGINX_MODULE", f"module/nginx/{MODULE_NAME}",
                                     NGINX, "nginx")


# ------------------------------------------------------------------ the server

CONF_TEMPLATE = """\
load_module {module};
user {user};
worker_processes {workers};
pid {root}/run/nginx.pid;
error_log {root}/logs/error.log {log_level};
{main_lines}
events {{
    worker_connections 1024;
}}
http {{
    access_log {root}/logs/access.log;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    root {root}/html;
    default_type text/plain;
    ssl_protocols TLSv1.2 TLSv1.3;
{body}
}}
"""


class Nginx(server_env.Server):
    """One nginx with its own prefix, ports and logs."""

    name = "nginx"
    binary = NGINX
    stop_signal = signal.SIGQUIT
    subdirs = ("run", "logs", "html", "tmp", "conf")

    def __init__(self, logs=None, http_port=None, https_port=None, workers=2,
                 log_level="info", main_lines=""):
        super().__init__(require_module(), logs, http_port, https_port, log_level)
        self.conf_path = self.root / "conf" / "nginx.conf"
        self.pid_path = self.root / "run" / "nginx.pid"
        self.workers_n = workers
        self.main_lines = main_lines
        (self.root / "html" / "index.html").write_text("hello from nginx\n")

    def config_text(self, body):
        return CONF_TEMPLATE.format(module=self.module, user=USER, workers=self.workers_n,
                                    root=self.root, log_level=self.log_level,
                                    main_lines=self.main_lines, body=body)

    def _cmd(self, *args):
        return [NGINX, "-p", f"{self.root}/", "-c", str(self.conf_path), *args]

    def configtest_cmd(self):
        return self._cmd("-t")

    def start_cmd(self):
        return self._cmd("-g", "daemon off;")

    def ready(self):
        return len(self.workers()) == self.workers_n

    def workers(self):
        """PIDs of the workers serving now (not those shutting down)."""
        return sorted(pid for pid, cmd in self._children()
                      if "worker process" in cmd and "shutting down" not in cmd)

    def all_workers(self):
        return sorted(pid for pid, cmd in self._children() if "worker process" in cmd)

    def reload(self, timeout=30.0):
        """`nginx -s reload` and wait until a new set of workers serves."""
        old = set(self.workers())
        result = self.run(self._cmd("-s", "reload"), timeout=30)
        assert result.returncode == 0, f"nginx -s reload failed:\n{result.stderr}"

        def new_generation():
            self.process.check_running()
            now = self.workers()
            return len(now) == self.workers_n and not (set(now) & old)
        wait_until(new_generation, timeout, "the workers of the reloaded configuration")


@pytest.fixture
def nginx(logs):
    """An Nginx that is not started (for configtest and custom setups)."""
    n = Nginx(logs=logs)
    yield n
    check_reports([n])


def server(name, port, *lines, aliases=(), ssl_listen=True):
    """A server{} block with autotls on, serving index.html."""
    listen = f"listen {LOOPBACK}:{port}{' ssl' if ssl_listen else ''};"
    out = ["    server {", f"        {listen}",
           f"        server_name {' '.join((name,) + tuple(aliases))};"]
    out += [f"        {line}" for line in lines]
    out += ["        autotls on;", "    }", ""]
    return "\n".join(out)


def status_server(n):
    """A plain-HTTP default server "localhost" with the status page and the
    renew handler, for the tests."""
    return f"""\
    server {{
        listen {LOOPBACK}:{n.http_port} default_server;
        server_name localhost;
        location = /autotls-status {{
            autotls_status;
            allow 127.0.0.1;
            deny all;
        }}
        location = /autotls-renew {{
            autotls_renew;
            allow 127.0.0.1;
            deny all;
        }}
    }}
"""


# ------------------------------------------------------------------ nginx + Pebble

GLOBAL_TEMPLATE = """\
    autotls_ca {directory};
    autotls_ca_trust {trust};
    autotls_accept_terms on;
    autotls_contact admin@example.com;
    autotls_store {store};
"""


class Stack(server_env.Stack):
    """nginx with the module, its Pebble, and optionally the ACME proxy."""

    @property
    def nginx(self):
        return self.server


@pytest.fixture
def make_stack(start_pebble, start_acme_proxy, local_ca, logs):
    """make_stack(body, proxy=False, start=True, nginx_kw=None, **pebble_options) -> Stack.

    ``body`` is the http{} content after the global autotls lines (see
    server_env.stack_factory).
    """
    make, made = server_env.stack_factory(Nginx, Stack, "nginx_kw", GLOBAL_TEMPLATE,
                                          start_pebble, start_acme_proxy, local_ca, logs)
    yield make
    check_reports(made)
