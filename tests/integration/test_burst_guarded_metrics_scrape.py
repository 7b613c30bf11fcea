"""A rented engine's /metrics is behind the engine guard: the gateway's load scrape still reads it, because
it sends the instance key it routes with (real loopback TLS socket, the guard loaded by --middleware)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx
import pytest
import pytest_asyncio

from llmserve.api.burstpool import BurstPoolStatus, InstanceStatus
from llmserve.burst import engine_guard
from llmserve.burst.backends import InstanceAccess
from llmserve.burst.security import GUARD_MIDDLEWARE, GUARD_MODULE, mint_api_key, mint_tls, pinned_ssl_context
from llmserve.gateway.burst_backends import BurstView
from llmserve.gateway.registry import Registry
from llmserve.gateway.scrape import Scraper
from llmserve.sim.cli import parse_engine_args, prepare_engine
from llmserve.sim.runtime import RunningSimulator, start_simulator

KEY = mint_api_key()
OWNER = "ai/llama"


@pytest_asyncio.fixture
async def rented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[RunningSimulator, str]]:
    """A simulated rented engine as the start script leaves it: the guard module on the path, TLS, a key."""
    shutil.copy(engine_guard.__file__, tmp_path / f"{GUARD_MODULE}.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    tls = mint_tls("llms-test-0", datetime.now(UTC), ("127.0.0.1",))
    (tmp_path / "cert.pem").write_text(tls.cert_pem)
    (tmp_path / "key.pem").write_text(tls.key_pem)
    argv = ["vllm", "serve", "--port", "0", "--api-key", KEY, "--middleware", GUARD_MIDDLEWARE,
            "--ssl-certfile", str(tmp_path / "cert.pem"), "--ssl-keyfile", str(tmp_path / "key.pem"),
            "--load-seconds=0", "--gpu-product", "NVIDIA-H100-80GB-HBM3"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)  # the guard reads its key from the process's command line
    args, _ = parse_engine_args(argv[2:])
    sim = await start_simulator(*prepare_engine(args))
    yield sim, tls.cert_pem
    await sim.stop()
    sys.modules.pop(GUARD_MODULE, None)


async def test_gateway_scrape_of_a_guarded_rented_engine_sends_the_instance_key(
    rented: tuple[RunningSimulator, str],
) -> None:
    sim, cert_pem = rented
    url = f"https://127.0.0.1:{sim.port}"
    tls = pinned_ssl_context(cert_pem)
    async with httpx.AsyncClient(verify=tls) as http:
        assert (await http.get(url + "/metrics")).status_code == 401  # guarded: no open /metrics
    record = InstanceStatus(name="llms-test-0", owner=OWNER, slot=0, id="1", phase="Running", endpoint=url, created="2026-11-30T00:00:00Z",
                            ready_since="2026-11-30T00:00:00Z")  # fmt: skip
    view = BurstView(
        pools={"p": BurstPoolStatus(instances=[record])},
        access={record.name: InstanceAccess(KEY, tls, pinned=True)},
    )
    [route] = view.routes({OWNER: "llama-8b"})
    [backend] = route.backends
    keyless = replace(backend, url=url + "/", headers=())  # a scrape that forgot the key
    registry = Registry()
    async with aiohttp.ClientSession() as session:
        scraper = Scraper(registry, session, interval_seconds=2.0)
        for each in (backend, keyless):
            registry.load(each).consecutive_failures = 3  # ejected: a good scrape brings it back
            await scraper._scrape(each)
    assert registry.load(backend).consecutive_failures == 0, "the keyed scrape read the engine's /metrics"
    assert registry.load(keyless).consecutive_failures == 3, "without the key the guard refuses the scrape"
