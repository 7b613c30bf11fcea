"""The dev cluster's process group: teardown reaps children that exit at once instead of waiting them out."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hack.devcluster.processes import ProcessGroup

GRACE_SECONDS = 60


def test_a_child_that_exits_on_sigterm_is_reaped_without_waiting_for_the_grace_period(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    script = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); print('up', flush=True); time.sleep(600)"
    proc = group.start("child", [sys.executable, "-c", script])
    while "up" not in (tmp_path / "child.log").read_text():  # the handler is installed
        assert proc.poll() is None
        time.sleep(0.05)
    started = time.monotonic()
    group.stop_all(grace_seconds=GRACE_SECONDS)
    # An unreaped zombie kept killpg(pid, 0) succeeding: teardown waited the whole grace period.
    assert time.monotonic() - started < GRACE_SECONDS / 4
    assert proc.returncode == 0  # it exited on SIGTERM by itself; nothing was SIGKILLed
