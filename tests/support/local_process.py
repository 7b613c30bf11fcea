"""Child processes for the loopback tests (engines, gateways): each with its own log, ready when healthy.

`Process` starts a command, waits for its health URL and stops it by its own pid; `sim_engine` is the
simulated vLLM engine those tests put behind a static gateway.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.cluster import wait_for
from tests.support.shutdown import stop_process

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
PROCESS_START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


class Process:
    """A child process (engine or gateway) with its own log file; stopped by its own pid."""

    def __init__(self, args: list[str], log_path: Path, health_url: str) -> None:
        self.args, self.log_path, self.health_url = args, log_path, health_url
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._healthy, timeout=PROCESS_START_TIMEOUT_SECONDS, interval=0.1, message=self.health_url)
        return self

    def _healthy(self) -> bool:
        assert self.popen is not None
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.args[:4]} exited: {self.log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(self.health_url, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None:
            stop_process(self.popen, STOP_TIMEOUT_SECONDS)


def sim_engine(
    port: int, log_path: Path, *, served_name: str = "llama", time_scale: float = 2, max_num_seqs: int = 64
) -> Process:
    """`llmserve sim engine` on 127.0.0.1:`port` serving MODEL as `served_name`, every answer
    `max_tokens` long, loaded at once (not started: call `.start()`)."""
    args = [
        sys.executable, "-m", "llmserve.cli", "sim", "engine", "--host", "127.0.0.1", "--port", str(port),
        "--model", MODEL, "--served-model-name", served_name, "--time-scale", str(time_scale),
        "--load-seconds", "0", "--max-num-seqs", str(max_num_seqs), "--output-length-distribution", "max_tokens",
    ]  # fmt: skip
    return Process(args, log_path, f"http://127.0.0.1:{port}/health")
