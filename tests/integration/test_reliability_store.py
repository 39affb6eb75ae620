"""The store under stress, against the real Apache with mod_autotls.

- Disk full: the store lives on a small tmpfs of its own, filled up. Stored
  certificates keep being served, the error names the path, nothing stored
  changes, and issuance completes when space returns.
- Corrupted files (truncated PEM, a key that does not match, bad JSON in
  the metadata, the renewal state and the account): each is reported with
  the file's path, moved aside byte for byte (never deleted), and the
  certificate (or account) is obtained again.
"""

import contextlib
import errno
import re
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from apache_env import make_stack, make_world_dir, status_vhost, vhost  # noqa: F401
from procs import wait_until
from reliability import (Health, _cases_file, cases, entry, force_renewal,  # noqa: F401
                         key_matches, snapshot, store_problems, stored_serial,
                         wait_entry, wait_serial_change)

ISSUE_TIMEOUT = 90


# ------------------------------------------------------------------ disk full

@contextlib.contextmanager
def small_tmpfs(size="1m"):
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("mounting a tmpfs needs root")
    mnt = make_world_dir("autotls-tmpfs-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "autotls-test",
                        str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def fill(mnt):
    """Write a file until the file system is full; returns its path."""
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return filler


def stored_files(store):
    """The records (certificate sets, accounts, state) as bytes."""
    snap = snapshot(store)
    return {k: v for k, v in snap.items()
            if k.startswith(("certs/.sets/", "accounts/.sets/", "state/"))}


def test_disk_full(make_stack, cases):
    names = ("full1.test", "full2.test")
    with small_tmpfs() as mnt:
        st = make_stack(lambda a: "", start=False)
        a = st.apache
        a.store = mnt / "store"
        a.write_config(st.global_config() + "AutoTLSRetryDelay 1s 3s\n" + status_vhost(a)
                       + "".join(vhost(n, a.https_port) for n in names))
        a.start()
        certs = {n: a.wait_for_cert(n, ISSUE_TIMEOUT, root_pem=st.root_pem) for n in names}
        health = Health(a)
        before = stored_files(a.store)
        filler = fill(mnt)
        try:
            with cases.case("disk full", "renewal with the store full") as info:
                mark = a.log_size()
                force_renewal(a, names[0])
                line = a.wait_log(r"full1\.test.*(No space left|disk is full).*", 60, start=mark)
                info["error"] = line.group(0)[:300]
                assert str(a.store) in line.group(0), f"the error does not name the path: {line.group(0)}"
                # Served as before, by every process.
                for _ in range(10):
                    for n in names:
                        assert a.cert(n, root_pem=st.root_pem).serial_number == \
                            certs[n].serial_number
                assert a.https(names[0], root_pem=st.root_pem).status == 200
                # A few retries later, still nothing stored has changed, and
                # the retries back off (the failures cannot be stored either).
                a.wait_log(r"full1\.test.*\(failure 2\)", 30, start=mark)
                time.sleep(6)
                attempts = len(re.findall(r"\(full1\.test\): ordering", a.error_log(mark)))
                info["attempts in the first ~8 s"] = attempts
                assert attempts <= 6, f"{attempts} orders while the disk was full: no backoff"
                after = stored_files(a.store)
                assert {k: v for k, v in after.items() if k in before} == before, \
                    "stored files changed while the disk was full"
                assert not store_problems(a.store, check_modes=False)
                health.check()
                filler.unlink()
                new = wait_serial_change(a, names[0], certs[names[0]].serial_number, st.root_pem,
                                         timeout=30)
                wait_entry(a, names[0], lambda e: e["state"] == "valid", 10, "valid")
                info["after space returned"] = "renewed"
                assert new.serial_number == stored_serial(a.store, entry(a, names[0])["id"])

            with cases.case("disk full", "new name added while the store is full") as info:
                filler = fill(mnt)
                before = stored_files(a.store)
                mark = a.log_size()
                a.write_config(st.global_config() + "AutoTLSRetryDelay 1s 3s\n" + status_vhost(a)
                               + "".join(vhost(n, a.https_port) for n in names + ("full3.test",)))
                a.graceful()
                line = a.wait_log(r"full3\.test.*(No space left|disk is full).*", 60, start=mark)
                info["error"] = line.group(0)[:300]
                assert str(a.store) in line.group(0), line.group(0)
                time.sleep(6)
                attempts = len(re.findall(r"\(full3\.test\): ordering", a.error_log(mark)))
                info["attempts in the first ~8 s"] = attempts
                assert attempts <= 6, f"{attempts} orders while the disk was full: no backoff"
                for n in names:
                    assert a.cert(n, root_pem=st.root_pem).serial_number == \
                        stored_serial(a.store, entry(a, n)["id"])
                after = stored_files(a.store)
                assert {k: v for k, v in after.items() if k in before} == before
                filler.unlink()
                a.wait_for_cert("full3.test", ISSUE_TIMEOUT, root_pem=st.root_pem)
                wait_entry(a, "full3.test", lambda e: e["state"] == "valid", 10, "valid")
                assert not store_problems(a.store)
        finally:
            with contextlib.suppress(OSError):
                filler.unlink()
            a.stop()


# ------------------------------------------------------------------ corruption

def other_key_pem():
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def corrupt_version(store, kind, rec_id, filename, how):
    """Damage one file of the current version of a set; returns (path, bytes)."""
    link = store / kind / rec_id
    version = link.resolve()
    path = version / filename
    data = path.read_bytes()
    path.write_bytes(how(data))
    return link / filename, version, path.read_bytes()


def test_corrupted_store_files(make_stack, cases):
    names = ("trunc.test", "wrongkey.test", "badmeta.test", "badstate.test")
    st = make_stack(lambda a: "AutoTLSRetryDelay 1s 3s\n" + status_vhost(a)
                    + "".join(vhost(n, a.https_port) for n in names))
    a = st.apache
    first = {n: a.wait_for_cert(n, ISSUE_TIMEOUT, root_pem=st.root_pem) for n in names}
    ids = {n: entry(a, n)["id"] for n in names}
    [account_id] = [p.name for p in (a.store / "accounts").iterdir() if not p.name.startswith(".")]
    a.stop()

    damaged = {
        "trunc.test": ("certs", "chain.pem", lambda d: d[:len(d) // 2], "truncated PEM chain"),
        "wrongkey.test": ("certs", "key.pem", lambda d: other_key_pem(), "key not matching"),
        "badmeta.test": ("certs", "meta.json", lambda d: b'{"names": ["badmeta.test",', "bad JSON metadata"),
    }
    done = {}
    for n, (kind, fname, how, label) in damaged.items():
        done[n] = corrupt_version(a.store, kind, ids[n], fname, how)
    state_file = a.store / "state" / f"{ids['badstate.test']}.json"
    state_file.write_bytes(b'{"failures": 0, "last_error": nul')
    state_bytes = state_file.read_bytes()
    acct = corrupt_version(a.store, "accounts", account_id, "account.json",
                           lambda d: d[:len(d) // 3])

    mark = a.log_size()
    a.start()
    health = Health(a)
    log = lambda: a.error_log(mark)  # noqa: E731

    for n, (kind, fname, how, label) in damaged.items():
        with cases.case("corrupted store files", label) as info:
            shown, version, bad = done[n]
            m = wait_until(lambda: re.search(re.escape(str(shown)) + r" is damaged: ([^;]*);.*?"
                                             r"moved aside to (\S+)", log()),
                           30, f"the error naming {shown}")
            info["error"] = m.group(0)[:300]
            moved = Path(m.group(2))
            assert moved.name.startswith(f"{ids[n]}.corrupt-"), moved
            # Moved aside as it was, never deleted.
            assert (moved / fname).read_bytes() == bad
            assert not version.exists()
            c = a.wait_for_cert(n, ISSUE_TIMEOUT, root_pem=st.root_pem)
            c = c if c.serial_number != first[n].serial_number else \
                wait_serial_change(a, n, first[n].serial_number, st.root_pem, timeout=60)
            e = wait_entry(a, n, lambda e: e["state"] == "valid", 30, "valid")
            d = a.store / "certs" / ids[n]
            assert key_matches(d / "chain.pem", d / "key.pem")
            assert int(e["serial"], 16) == c.serial_number
            info["after"] = "obtained again"

    with cases.case("corrupted store files", "bad JSON renewal state") as info:
        m = wait_until(lambda: re.search(re.escape(str(state_file)) + r" is damaged: ([^;]*);"
                                         r".*?moved aside to (\S+)", log()),
                       30, f"the error naming {state_file}")
        info["error"] = m.group(0)[:300]
        assert Path(m.group(2)).read_bytes() == state_bytes
        # The certificate itself was fine: still the same, and valid.
        assert a.cert("badstate.test", root_pem=st.root_pem).serial_number == \
            first["badstate.test"].serial_number
        assert entry(a, "badstate.test")["state"] == "valid"
        info["after"] = "state started afresh, certificate kept"

    with cases.case("corrupted store files", "bad JSON account record") as info:
        shown, version, bad = acct
        m = wait_until(lambda: re.search(re.escape(str(shown)) + r" is damaged: ([^;]*);.*?"
                                         r"moved aside to (\S+)", log()),
                       30, f"the error naming {shown}")
        info["error"] = m.group(0)[:300]
        assert (Path(m.group(2)) / "account.json").read_bytes() == bad
        # A new account signs the orders that replace the damaged certificates.
        assert re.search(r"account \S+ at \S+ ready", log()), log()[-3000:]
        info["after"] = "a new account registered"

    health.check()
    assert not store_problems(a.store)
    corrupt = [p for p in a.store.rglob("*") if ".corrupt-" in p.name]
    assert len(corrupt) == 5, corrupt
