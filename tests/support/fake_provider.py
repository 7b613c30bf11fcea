"""Runs `llmserve sim provider` as a real process for tests, and builds provider clients pointed at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from llmserve.burst.http import RetryPolicy
from llmserve.burst.runpod import RunPodProvider
from llmserve.burst.types import Provider
from llmserve.burst.vastai import VastProvider
from llmserve.sim.provider.engines import STATE_ENV
from tests.support.shutdown import stop_process

REPO = Path(__file__).resolve().parents[2]
# Cheap engines: fast load and time, no drain wait, an H100 profile whatever the instance asks for.
ENGINE_ARGS = ["--load-seconds=0.2", "--time-scale=20", "--shutdown-grace-seconds=0",
               "--gpu-product=NVIDIA-H100-80GB-HBM3"]  # fmt: skip
# the fake stops every engine it runs before it exits, which takes longer than a lone process
STOP_TIMEOUT_SECONDS = 30.0
FAST_RETRY = RetryPolicy(attempts=3, backoff_base_seconds=0.05, max_wait_seconds=5.0)


class FakeProviderProcess:
    """One fake account. `admin(...)` drives faults and the clock; `client()` speaks the real API."""

    def __init__(self, api: str, state_dir: Path, account_key: str, *, provision_seconds: float = 30.0,
                 clock: str = "manual", page_size: int = 25) -> None:  # fmt: skip
        self.api = api
        self.state_dir = state_dir
        self.account_key = account_key
        self.provision_seconds = provision_seconds
        self.clock = clock
        self.page_size = page_size
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.log_path = state_dir / "provider.log"

    def start(self) -> FakeProviderProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ports_file = self.state_dir / "ports.json"
        ports_file.unlink(missing_ok=True)
        env = {**os.environ}
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO / "operator"), str(REPO), env.get("PYTHONPATH")])
        )
        argv = [sys.executable, "-m", "llmserve.cli", "sim", "provider", "--api", self.api,
                "--state-dir", str(self.state_dir), "--account-key", self.account_key,
                "--provision-seconds", str(self.provision_seconds), "--clock", self.clock,
                "--page-size", str(self.page_size), "--log-level", "DEBUG",
                *[f"--engine-arg={a}" for a in ENGINE_ARGS]]  # fmt: skip
        if self.ports:  # a restart keeps its ports, as a real API host keeps its name
            argv += ["--port", str(self.ports["api"]), "--admin-port", str(self.ports["admin"])]
            if self.ports.get("proxy"):
                argv += ["--proxy-port", str(self.ports["proxy"])]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not ports_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"fake provider did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        self.ports = json.loads(ports_file.read_text())
        return self

    def stop(self) -> None:
        """SIGTERM: the fake stops every engine it runs before exiting."""
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT_SECONDS)
        self.process = None

    def engine_pids(self) -> list[int]:
        """Every live process started as one of this fake's engines (found by its environment)."""
        marker = f"{STATE_ENV}={self.state_dir}".encode()
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                continue
        return pids

    # -- admin ---------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.request(method, f"http://127.0.0.1:{self.ports['admin']}/_admin/{path}", json=body,
                                 timeout=30)  # fmt: skip
        response.raise_for_status()
        return response.json()

    def faults(self, **faults: Any) -> None:
        self.admin("POST", "faults", faults)

    def advance(self, seconds: float) -> None:
        self.admin("POST", "clock", {"advance_seconds": seconds})

    def ledger(self) -> dict[str, Any]:
        return dict(self.admin("GET", "ledger"))

    def instances(self) -> dict[str, Any]:
        return dict(self.admin("GET", "state")["instances"])

    # -- clients -------------------------------------------------------------------------------

    @property
    def proxy_cert(self) -> Path:
        return self.state_dir / "proxy-cert.pem"

    def client(self, api_key: str | None = None, timeout_seconds: float = 10.0) -> Provider:
        key = api_key or self.account_key
        if self.api == "runpod":
            return RunPodProvider(
                key, base_url=self.api_url, timeout_seconds=timeout_seconds, retry=FAST_RETRY,
                proxy_url_template=f"https://127.0.0.1:{self.ports['proxy']}/{{pod_id}}-{{port}}",
            )  # fmt: skip
        # Documented intervals are seconds long; tests shorten them (pacing itself is unit-tested).
        return VastProvider(key, base_url=self.api_url, timeout_seconds=timeout_seconds, retry=FAST_RETRY,
                            min_interval_seconds={})  # fmt: skip
