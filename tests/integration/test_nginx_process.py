"""ngx_http_autotls_module and nginx's processes: the store belongs to the
worker user with private modes, renewal moves to the new worker 0 when the
old one dies, and reloads leak neither descriptors nor mappings in the
master.
"""

import os
import pwd
import signal
import stat

from nginx_env import USER, make_stack, server, status_server  # noqa: F401
from procs import wait_until

ISSUE_TIMEOUT = 90


def test_store_belongs_to_the_worker_user(make_stack):
    st = make_stack(lambda n: status_server(n) + server("own.test", n.https_port))
    n = st.nginx
    n.wait_for_cert("own.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    uid = pwd.getpwnam(USER).pw_uid
    keys = 0
    for dirpath, dirnames, filenames in os.walk(n.store):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            s = os.lstat(path)
            if stat.S_ISLNK(s.st_mode):
                continue
            assert s.st_uid == uid, f"{path} belongs to uid {s.st_uid}, not {USER}"
            if stat.S_ISDIR(s.st_mode):
                assert stat.S_IMODE(s.st_mode) & 0o077 == 0, f"{path} is {oct(s.st_mode)}"
            elif "key" in name:
                keys += 1
                assert stat.S_IMODE(s.st_mode) & 0o077 == 0, f"{path} is {oct(s.st_mode)}"
    assert keys >= 2, "no key files found in the store (account and certificate)"
    assert stat.S_IMODE(os.stat(n.store).st_mode) == 0o700


def test_renewal_moves_to_the_new_worker_0(make_stack):
    st = make_stack(lambda n: status_server(n) + server("move.test", n.https_port))
    n = st.nginx
    first = n.wait_for_cert("move.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    renewer = n.status_json()["server"]["renewal_pid"]
    assert renewer in n.workers()
    os.kill(renewer, signal.SIGKILL)

    def new_renewer():
        pid = n.status_json()["server"]["renewal_pid"]
        return pid and pid != renewer and pid in n.workers() and pid
    moved = wait_until(new_renewer, 30, "a new worker 0 to take over renewal", interval=0.2)
    assert moved != renewer
    # The new renewer works: a renewal asked for now is done by it.
    assert n.renew("move.test").status == 202

    def renewed():
        c = n.cert("move.test", root_pem=st.root_pem)
        return c.serial_number != first.serial_number
    wait_until(renewed, ISSUE_TIMEOUT, "the renewal by the new worker 0", interval=0.3)


def _fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _maps(pid):
    """Shared mappings (the zones): permissions like "rw-s"."""
    with open(f"/proc/{pid}/maps") as f:
        return sum(1 for line in f if line.split()[1].endswith("s"))


def test_reloads_leak_nothing_in_the_master(make_stack):
    st = make_stack(lambda n: status_server(n) + server("leak.test", n.https_port))
    n = st.nginx
    n.wait_for_cert("leak.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    n.reload()
    wait_until(lambda: n.all_workers() == n.workers(), 30, "old workers to exit")
    fds, maps = _fds(n.pid), _maps(n.pid)
    for _ in range(5):
        n.reload()
    wait_until(lambda: n.all_workers() == n.workers(), 30, "old workers to exit")
    assert _fds(n.pid) == fds
    assert _maps(n.pid) == maps
    # Still served, from the zone that survived every reload.
    assert n.https("leak.test", root_pem=st.root_pem).status == 200
