"""A gateway that gets SIGTERM (or refuses to start) closes what it opened: real processes, real sockets.

Each gateway runs as tests/support/shutdown.py says, so a session, connection, socket or task left open
or running shows in its output, which the tests read.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from hack.devcluster.processes import free_port
from tests.integration.test_gateway_cluster import API_KEY, api_key_secret
from tests.support.cluster import ClusterHandle, serving, wait_for
from tests.support.local_process import Process, sim_engine
from tests.support.shutdown import assert_nothing_left_open, leak_checked_args, running, stop_with_sigterm

KEY = "sk-shutdown-test-0123456789abcdef"
EXIT_TIMEOUT_SECONDS = 60
CLEAN_EXIT = "event=gateway_exit clean=True tasks_left=- http_clients_open=- kubernetes_client_open=False"


def gateway_args(*flags: str) -> list[str]:
    return leak_checked_args("gateway", *flags)


def assert_no_leaks(output: str) -> None:
    assert_nothing_left_open(output, CLEAN_EXIT)


@pytest.fixture
def engine_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    engine = sim_engine(port, tmp_path / "engine.log", max_num_seqs=16).start()
    yield port
    engine.stop()


def static_config(tmp_path: Path, engine_port: int) -> Path:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "models": [{"name": "llama", "backends": [f"http://127.0.0.1:{engine_port}"]}],
        "keys": [{"name": "shutdown", "key": KEY}],
    }))  # fmt: skip
    return config


@pytest.mark.asyncio
async def test_a_gateway_stopped_mid_stream_finishes_it_and_exits_with_nothing_left_open(
    tmp_path: Path, engine_port: int
) -> None:
    port = free_port()
    gateway = Process(
        gateway_args("--static", str(static_config(tmp_path, engine_port)), "--port", str(port),
                     "--metrics-port", str(free_port()), "--scrape-interval", "0.2", "--drain-timeout", "60"),
        tmp_path / "gateway.log", f"http://127.0.0.1:{port}/health",
    ).start()  # fmt: skip
    assert gateway.popen is not None
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60
        ) as http:
            # Pooled upstream connections and a scrape loop are open when the signal comes...
            done = await http.post("/v1/completions", json={"model": "llama", "prompt": "x", "max_tokens": 5})
            assert done.status_code == 200, done.text
            body = {"model": "llama", "prompt": "x", "max_tokens": 200, "stream": True}
            async with http.stream("POST", "/v1/completions", json=body) as reply:
                assert reply.status_code == 200
                chunks = reply.aiter_text()
                first = await anext(chunks)  # ...and a stream is mid-way
                gateway.popen.send_signal(signal.SIGTERM)
                text = first + "".join([chunk async for chunk in chunks])
        assert text.rstrip().endswith("data: [DONE]"), text[-300:]
        exit_code = await asyncio.to_thread(gateway.popen.wait, EXIT_TIMEOUT_SECONDS)
    finally:
        gateway.stop()
    log = gateway.log_path.read_text(errors="replace")
    assert exit_code == 0, log[-3000:]
    assert "event=gateway_stopped" in log
    assert_no_leaks(log)


def test_a_gateway_that_cannot_listen_exits_2_with_nothing_left_open(
    tmp_path: Path, engine_port: int
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            gateway_args("--static", str(static_config(tmp_path, engine_port)), "--port", str(port),
                         "--metrics-port", str(free_port())),
            capture_output=True, text=True, timeout=EXIT_TIMEOUT_SECONDS,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "reason=cannot_listen" in result.stderr
    assert_no_leaks(result.stderr)


@pytest.mark.cluster
def test_a_kubernetes_gateway_stopped_closes_its_watches_and_client(
    cluster: ClusterHandle, namespace: str, tmp_path: Path
) -> None:
    """Discovery (LLMServes, Endpoints, API-key Secrets, burst pools) runs on the Kubernetes client: after
    SIGTERM the watches are cancelled and the client closed before the loop ends."""
    cluster.apply(api_key_secret(), namespace)
    port, log_path = free_port(), tmp_path / "gateway.log"
    args = gateway_args("--namespace", namespace, "--keys-namespace", namespace, "--port", str(port),
                        "--metrics-port", str(free_port()), "--engine-key-secret", "none")  # fmt: skip
    with running(args, log_path, cluster.env) as process:
        wait_for(lambda: serving(process, f"http://127.0.0.1:{port}/ready", log_path), timeout=60,
                 interval=0.2, message="gateway /ready")  # fmt: skip
        models = httpx.get(
            f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert models.status_code == 200, models.text  # the key came from the watched Secret
        exit_code = stop_with_sigterm(process, EXIT_TIMEOUT_SECONDS)
    text = log_path.read_text(errors="replace")
    assert exit_code == 0, text[-3000:]
    assert_no_leaks(text)
