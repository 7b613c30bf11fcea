"""Starting, recording and stopping the dev cluster's processes, and clearing a crashed run's leftovers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

PIDS_FILE = "pids"


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now, never the same one twice in this process: callers often
    take several ports before starting the servers that bind them, and the kernel may offer a port again
    once the probe socket is closed."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class ProcessGroup:
    """Child processes of one dev cluster; their pids are written to the state dir as they start."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.state_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})},
        )  # fmt: skip
        log.close()
        self.processes.append((name, proc))
        with open(self.state_dir / PIDS_FILE, "a") as pids:
            pids.write(f"{proc.pid}\n")
        return proc

    def check_alive(self) -> None:
        for name, proc in self.processes:
            if proc.poll() is not None:
                tail = (self.state_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}; last log lines:\n{tail}")

    def stop(self, name: str, grace_seconds: float = 10) -> None:
        for entry in [p for p in self.processes if p[0] == name]:
            _terminate(entry[1].pid, grace_seconds, entry[1])
            entry[1].wait()
            self.processes.remove(entry)

    def stop_all(self, grace_seconds: float = 10) -> None:
        for _, proc in reversed(self.processes):
            _terminate(proc.pid, grace_seconds, proc)
            proc.wait()
        self.processes.clear()
        (self.state_dir / PIDS_FILE).unlink(missing_ok=True)


def _terminate(pid: int, grace_seconds: float, child: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after the grace period."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if child is not None:
            # Reap our own child as soon as it exits: an unreaped zombie still counts as a member of
            # its process group, so killpg(pid, 0) would keep succeeding for the whole grace period.
            child.poll()
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_leftovers(state_dir: Path) -> None:
    """Stops processes an earlier, crashed run with the same state dir left behind."""
    pids_file = state_dir / PIDS_FILE
    if not pids_file.exists():
        return
    for line in pids_file.read_text().split():
        pid = int(line)
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        # Only kill what is provably ours: children carry the state dir in their environment.
        if f"LLMSERVE_DEVCLUSTER={state_dir}".encode() in environ:
            _terminate(pid, 2)
    pids_file.unlink()
