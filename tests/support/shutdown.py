"""Starting an llmserve process so that whatever it leaves open at exit shows in its output, and checking it.

The process runs in Python's development mode (`-X dev`: asyncio debug, ResourceWarning shown) and
collects garbage after `llmserve ...` returns (finalizers are not guaranteed at interpreter exit), so an
HTTP session, connection or socket left unreferenced and open, or a task destroyed while pending, is
written to its output. What is still referenced is caught by the process's own last line
(`event=<program>_exit clean=...`), which lists tasks still running and clients still open.
`running` starts such a process with its output in a file, `stop_with_sigterm` stops it as the kubelet
would. `stop_process` is the teardown every test's child process shares: SIGTERM, then SIGKILL if it
outstays its time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

# `llmserve <command> ...`, then a garbage collection: what was left open says so in its finalizer.
RUN_THEN_COLLECT = (
    "import gc, sys; from llmserve.cli import main; code = main(sys.argv[1:]); gc.collect(); sys.exit(code)"
)
# What Python, asyncio and aiohttp write when a process ends with something still open or running.
LEAK_MARKERS = (
    "Unclosed client session",
    "Unclosed connection",
    "Unclosed connector",
    "Task was destroyed but it is pending",
    "was never awaited",
    "ResourceWarning",
    "Traceback",
)


def leak_checked_args(command: str, *flags: str) -> list[str]:
    """The argv of `llmserve <command> <flags>` run for a leak check."""
    return [sys.executable, "-X", "dev", "-c", RUN_THEN_COLLECT, command, *flags]


def assert_nothing_left_open(output: str, exit_line: str) -> None:
    """Nothing said it was left open, and the process's own last check (`exit_line`) found nothing."""
    found = [marker for marker in LEAK_MARKERS if marker in output]
    assert found == [], f"{found} in the process's output:\n{output[-4000:]}"
    assert exit_line in output, output[-4000:]


@contextmanager
def running(args: list[str], log_path: Path, env: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`args` as a process in its own session writing to `log_path`; killed on the way out if the test
    left it running (an assertion failed before its stop), so no process outlives its test."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop_with_sigterm(process: subprocess.Popen[bytes], timeout_seconds: float) -> int:
    """SIGTERM, as the kubelet sends it, then the exit code once the process has ended by itself
    (`subprocess.TimeoutExpired` past `timeout_seconds`: no SIGKILL stands in for a clean exit)."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=timeout_seconds)


def stop_process(process: subprocess.Popen[bytes], timeout_seconds: float) -> None:
    """Teardown: SIGTERM, then SIGKILL if the process has not ended within `timeout_seconds`, so no
    child outlives its test (what matters here is that it is gone; a test of a clean exit uses
    `stop_with_sigterm`). Nothing is sent to a process that has already exited."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
