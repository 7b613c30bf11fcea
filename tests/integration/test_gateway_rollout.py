"""Replacing a gateway under streaming load drops no request (two real gateways, real sockets).

The test plays kube-proxy: new requests go only to gateways whose /ready answers 200, polled every
0.2 s, as a Service's endpoints follow readiness and termination. One gateway gets SIGTERM in the
middle of 24 concurrent streams; every stream, old and new, must complete.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from hack.devcluster.processes import free_port
from tests.support.local_process import Process, sim_engine

KEY = "sk-rollout-test-0123456789abcdef"
CONCURRENT_STREAMS = 24
SHUTDOWN_DELAY_SECONDS = 2.0
POLL_SECONDS = 0.2


class Balancer:
    """Round robin over the gateways that are ready, like a Service's endpoints."""

    def __init__(self, ports: list[int]) -> None:
        self.ports, self.ready = ports, set(ports)
        self._turn = itertools.count()

    async def poll(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for port in self.ports:
                try:
                    ok = (await http.get(f"http://127.0.0.1:{port}/ready", timeout=1)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                (self.ready.add if ok else self.ready.discard)(port)
            await asyncio.sleep(POLL_SECONDS)

    def pick(self) -> int:
        ready = sorted(self.ready)
        assert ready, "no gateway ready"
        return ready[next(self._turn) % len(ready)]


async def stream_once(http: httpx.AsyncClient, port: int) -> None:
    body = {"model": "llama", "prompt": "x", "max_tokens": 60, "stream": True}
    async with http.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body,
                           headers={"Authorization": f"Bearer {KEY}"}) as reply:  # fmt: skip
        assert reply.status_code == 200, await reply.aread()
        text = "".join([chunk async for chunk in reply.aiter_text()])
    assert text.rstrip().endswith("data: [DONE]"), text[-200:]


def gateway(port: int, config: Path, logs: Path) -> Process:
    return Process(
        [sys.executable, "-m", "llmserve.cli", "gateway", "--static", str(config), "--port", str(port),
         "--metrics-port", str(free_port()), "--shutdown-delay", str(SHUTDOWN_DELAY_SECONDS),
         "--drain-timeout", "60"],
        logs / f"gateway-{port}.log", f"http://127.0.0.1:{port}/health",
    )  # fmt: skip


@pytest.mark.asyncio
async def test_a_gateway_stopped_under_streaming_load_loses_no_request(tmp_path: Path) -> None:
    engine_port = free_port()
    engine = sim_engine(engine_port, tmp_path / "engine.log", max_num_seqs=64).start()
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "models": [{"name": "llama", "backends": [f"http://127.0.0.1:{engine_port}"]}],
        "keys": [{"name": "rollout", "key": KEY}],
    }))  # fmt: skip
    old_port, new_port = free_port(), free_port()
    old, new = gateway(old_port, config, tmp_path).start(), gateway(new_port, config, tmp_path).start()
    balancer = Balancer([old_port, new_port])
    stop = asyncio.Event()
    progress = asyncio.Condition()
    done, failures = 0, []
    try:
        async with httpx.AsyncClient(timeout=60) as http:

            async def worker() -> None:
                nonlocal done
                while not stop.is_set():
                    try:
                        await stream_once(http, balancer.pick())
                        async with progress:
                            done += 1
                            progress.notify_all()
                    except (httpx.HTTPError, AssertionError) as err:
                        failures.append(f"{type(err).__name__}: {err}")

            poller = asyncio.create_task(balancer.poll(http, stop))
            workers = [asyncio.create_task(worker()) for _ in range(CONCURRENT_STREAMS)]
            async with progress:  # load is flowing through both gateways
                await progress.wait_for(lambda: done >= CONCURRENT_STREAMS)
            assert old.popen is not None
            old.popen.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(old.popen.wait, 90)
            finished_before = done
            async with progress:  # and keeps flowing through the other
                await progress.wait_for(lambda: done >= finished_before + CONCURRENT_STREAMS)
            stop.set()
            await asyncio.gather(*workers, poller)
    finally:
        old.stop()
        new.stop()
        engine.stop()
    assert failures == [], failures[:5]
    assert exit_code == 0
    old_log = old.log_path.read_text()
    assert "event=gateway_draining" in old_log and "event=gateway_stopped" in old_log
