"""Starting an llmserve process so that whatever it leaves open at exit shows in its output, and checking it.

The process runs in Python's development mode (`-X dev`: asyncio debug, ResourceWarning shown) and
collects garbage after `llmserve ...` returns (finalizers are not guaranteed at interpreter exit), so an
HTTP session, connection or socket left unreferenced and open, or a task destroyed while pending, is
written to its output. What is still referenced is caught by the process's own last line
(`event=<program>_exit clean=...`), which lists tasks still running and clients still open.
"""

from __future__ import annotations

import sys

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
