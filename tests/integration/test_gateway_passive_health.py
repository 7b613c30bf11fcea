"""Passive health on real sockets: a replica that refuses connections is ejected, for longer each time,
and the /metrics probe brings it back as soon as it answers."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx
import yaml

from hack.devcluster.processes import free_port
from tests.support.cluster import wait_for
from tests.support.local_process import MODEL, Process

KEY = "sk-health-test-0123456789abcdef"


def test_a_refusing_replica_is_ejected_for_doubling_periods_and_probed_back_in(tmp_path: Path) -> None:
    engine_port, port = free_port(), free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "models": [{"name": "llama", "backends": [f"http://127.0.0.1:{engine_port}"]}],
        "keys": [{"name": "health", "key": KEY}],
    }))  # fmt: skip
    gateway = Process(
        [sys.executable, "-m", "llmserve.cli", "gateway", "--static", str(config), "--port", str(port),
         "--metrics-port", str(free_port()), "--scrape-interval", "0.2", "--max-attempts", "1"],
        tmp_path / "gateway.log", f"http://127.0.0.1:{port}/health",
    ).start()  # fmt: skip
    log = gateway.log_path
    body = {"model": "llama", "prompt": "x", "max_tokens": 2}
    headers = {"Authorization": f"Bearer {KEY}"}
    engine = None
    try:
        # the replica is down: the failure ejects it (doubling per consecutive failure: unit-tested)
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, headers=headers, timeout=30)
        assert reply.status_code == 503
        wait_for(lambda: "event=backend_ejected" in log.read_text(), timeout=10, message="ejection logged")
        engine = Process(
            [sys.executable, "-m", "llmserve.cli", "sim", "engine", "--host", "127.0.0.1", "--port",
             str(engine_port), "--model", MODEL, "--served-model-name", "llama", "--time-scale", "50",
             "--load-seconds", "0"],
            tmp_path / "engine.log", f"http://127.0.0.1:{engine_port}/health",
        ).start()  # fmt: skip
        wait_for(lambda: "event=backend_back" in log.read_text() and "via=scrape" in log.read_text(),
                 timeout=10, interval=0.1, message="the probe bringing the replica back")  # fmt: skip
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, headers=headers, timeout=30)
        assert reply.status_code == 200  # long before the (5 s, then 10 s) ejection would have ended
    finally:
        gateway.stop()
        if engine is not None:
            engine.stop()
    ejections = re.findall(r"event=backend_ejected backend=\S+ eject_seconds=(\S+)", log.read_text())
    assert ejections[:1] == ["5.0"]
