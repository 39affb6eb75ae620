"""Processes, ports and logs for the integration tests.

Everything listens on loopback on ports picked per run; every wait here has a
deadline, and a process that fails to come up says why (its log tail).
"""

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


class HarnessError(RuntimeError):
    """The test environment (not the code under test) could not be set up."""


def free_port(host=LOOPBACK):
    """A TCP port that is free on ``host`` right now.

    Another process may take it before the caller binds it; callers that
    start a server on it retry with a fresh port when the bind fails.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(count, host=LOOPBACK):
    """``count`` distinct free ports (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port, host=LOOPBACK):
    with contextlib.suppress(OSError):
        with socket.create_connection((host, port), timeout=0.5):
            return True
    return False


def wait_until(predicate, timeout, what, interval=0.05):
    """Poll ``predicate`` until it returns a true value, at most ``timeout`` s.

    Returns that value; raises TimeoutError naming ``what`` when time is up.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def wait_group_gone(pgid, timeout, what, kill_on_timeout=False):
    """Wait until no process of group ``pgid`` is left (children that outlive
    their parent stay in its group). At the timeout: SIGKILL the group if
    ``kill_on_timeout``, else raise TimeoutError naming ``what``."""
    def gone():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False
    try:
        wait_until(gone, timeout, what)
    except TimeoutError:
        if not kill_on_timeout:
            raise
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def wait_for_port(port, host=LOOPBACK, timeout=10.0, process=None):
    """Wait until something accepts TCP connections on ``host:port``.

    With ``process`` (a ManagedProcess), fail at once if it exits meanwhile.
    """
    def ready():
        if process is not None:
            process.check_running()
        return port_open(port, host)
    wait_until(ready, timeout, f"{host}:{port} to accept connections")


def tail(path, max_lines=100, start=0):
    """The last ``max_lines`` lines of a text file from byte offset ``start``."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError as e:
        return f"<cannot read {path}: {e.strerror}>"
    lines = data.decode("utf-8", "replace").splitlines()
    if len(lines) > max_lines:
        lines = [f"... ({len(lines) - max_lines} earlier lines)"] + lines[-max_lines:]
    return "\n".join(lines)


class LogWatch:
    """Log files worth showing when a test fails.

    Each file is shown from where it stood when the test started, so a
    session-wide server contributes only what it logged during that test.
    """

    def __init__(self):
        self._files = {}          # label -> Path
        self._marks = {}          # label -> byte offset at test start
        self._lasting = set()     # labels kept beyond the current test

    def watch(self, label, path, lasting=False):
        """Show ``path`` under ``label`` in the report of a failing test.

        The watch ends with the current test, or with ``forget`` when
        ``lasting`` (a process's log is watched until the process stops).
        """
        self._files[label] = Path(path)
        if lasting:
            self._lasting.add(label)

    def forget(self, label):
        self._files.pop(label, None)
        self._marks.pop(label, None)
        self._lasting.discard(label)

    def mark(self):
        """Remember where every watched file ends (called at test start)."""
        self._marks = {label: _size(path) for label, path in self._files.items()}

    def end_test(self):
        """Drop the watches that were only for the test that just ended."""
        for label in list(self._files):
            if label not in self._lasting:
                self.forget(label)

    def sections(self, max_lines=100):
        """(label, text) for every watched file's output since the last mark."""
        out = []
        for label, path in self._files.items():
            start = self._marks.get(label, 0)
            if _size(path) < start:          # rotated or rewritten
                start = 0
            text = tail(path, max_lines, start)
            if text:
                out.append((label, text))
        return out


def _size(path):
    try:
        return path.stat().st_size
    except OSError:
        return 0


class ManagedProcess:
    """A child process with its output in a log file; stopped for sure.

    The child gets its own process group so that stopping it also stops
    anything it spawned. ``stop_all`` stops every one still running (the
    test session calls it on the way out, however it ends).
    """

    _live = set()

    def __init__(self, name, argv, log_path, env=None, cwd=None, logs=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self._logs = logs
        full_env = dict(os.environ)
        full_env.update(env or {})
        self._log = open(self.log_path, "ab")
        self._log.write(f"--- {name}: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                start_new_session=True)
        except OSError as e:
            self._log.close()
            raise HarnessError(f"cannot start {name} ({self.argv[0]}): {e}") from e
        ManagedProcess._live.add(self)
        if logs is not None:
            logs.watch(name, self.log_path, lasting=True)

    @classmethod
    def stop_all(cls):
        for proc in list(cls._live):
            proc.stop()

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc.poll() is None

    def check_running(self):
        """Raise HarnessError with the log tail if the process has exited."""
        if not self.running():
            raise HarnessError(
                f"{self.name} exited with status {self.proc.returncode}; "
                f"its log ({self.log_path}):\n{tail(self.log_path, 30)}")

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout=5.0):
        """SIGTERM the process group, SIGKILL after ``timeout`` s."""
        if self.running():
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout)
        if not self._log.closed:
            self._log.close()
        ManagedProcess._live.discard(self)
        if self._logs is not None:
            self._logs.forget(self.name)

    def _signal(self, sig):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
