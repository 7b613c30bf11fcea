"""Runs `llmserve operator` under tracemalloc and writes its biggest memory holders on SIGUSR1 (bench only).

Usage: python bench/traced_operator.py OUTPUT_FILE -- <llmserve operator arguments>

tracemalloc slows the operator and adds its own memory, so figures taken this way are for ranking the
holders, not for the benchmark table.
"""

from __future__ import annotations

import signal
import sys
import threading
import tracemalloc
from pathlib import Path
from types import FrameType

TOP_LINES = 40


def write_report(output: Path) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        ]
    )
    current_bytes, peak_bytes = tracemalloc.get_traced_memory()
    lines = [f"traced now {current_bytes / 2**20:.1f} MiB, traced peak {peak_bytes / 2**20:.1f} MiB"]
    for group in ("filename", "lineno"):
        lines.append(f"\n-- top {TOP_LINES} by {group} --")
        for stat in snapshot.statistics(group)[:TOP_LINES]:
            lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:8d} blocks  {stat.traceback}")
    lines.append(f"\n-- top {TOP_LINES} by traceback (8 frames) --")
    for stat in snapshot.statistics("traceback")[:TOP_LINES]:
        lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:8d} blocks")
        lines.extend(f"    {frame}" for frame in stat.traceback.format()[-16:])
    output.write_text("\n".join(lines) + "\n")


def main() -> int:
    output, rest = Path(sys.argv[1]), sys.argv[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    tracemalloc.start(8)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        # Off the signal handler: taking a snapshot of a big heap takes seconds.
        threading.Thread(target=write_report, args=(output,), daemon=True).start()

    signal.signal(signal.SIGUSR1, on_signal)
    from llmserve.cli import main as cli_main

    return cli_main(["operator", *rest])


if __name__ == "__main__":
    raise SystemExit(main())
