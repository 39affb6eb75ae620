"""ngx_http_autotls_module and nginx's processes: the store belongs to the
worker user with private modes, renewal moves to the new worker 0 when the
old one dies, and reloads leak neither descriptors nor mappings in the
master.
"""

import os

from nginx_env import make_stack, server, status_server  # noqa: F401
from procs import wait_until
from server_checks import check_store_private, kill_renewer

ISSUE_TIMEOUT = 90


def test_store_belongs_to_the_worker_user(make_stack):
    st = make_stack(lambda n: status_server(n) + server("own.test", n.https_port))
    n = st.nginx
    n.wait_for_cert("own.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    check_store_private(n.store)


def test_renewal_moves_to_the_new_worker_0(make_stack):
    st = make_stack(lambda n: status_server(n) + server("move.test", n.https_port))
    n = st.nginx
    first = n.wait_for_cert("move.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
    kill_renewer(n, n.workers)
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
    # The master closes an old worker's channel when it reaps it, which can
    # come a moment after the process is gone: a leak is what stays.
    seen = []

    def back():
        seen.append((_fds(n.pid), _maps(n.pid)))
        return seen[-1] == (fds, maps)
    try:
        wait_until(back, 10, "the master's descriptors and mappings to be as before", interval=0.2)
    except TimeoutError:
        raise AssertionError(f"the master had {fds} descriptors and {maps} shared mappings "
                             f"before 5 reloads, then (descriptors, mappings): {seen[:3]} ... {seen[-3:]}")
    if len(seen) > 1:
        print(f"master descriptors/mappings settled after {len(seen)} looks: {seen}")
    # Still served, from the zone that survived every reload.
    assert n.https("leak.test", root_pem=st.root_pem).status == 200
