"""The simulated engine's vLLM `--api-key` and `--ssl-certfile/--ssl-keyfile`, over real loopback sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import pytest
import pytest_asyncio

from llmserve.burst.security import mint_api_key, mint_tls, pinned_ssl_context
from llmserve.sim.cli import parse_engine_args, prepare_engine
from llmserve.sim.runtime import RunningSimulator, start_simulator

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
REPO = Path(__file__).resolve().parents[2]
KEY = mint_api_key()
FAST = ["--load-seconds=0", "--time-scale=100", "--gpu-product", "NVIDIA-H100-80GB-HBM3"]


@pytest_asyncio.fixture(scope="module")
async def keyed() -> AsyncIterator[RunningSimulator]:
    args, _ = parse_engine_args([MODEL, "--port", "0", "--api-key", KEY, *FAST])
    sim = await start_simulator(*prepare_engine(args))
    yield sim
    await sim.stop()


async def test_v1_refuses_requests_without_the_key_like_vllm(keyed: RunningSimulator) -> None:
    async with httpx.AsyncClient(base_url=keyed.base_url) as http:
        missing = await http.get("/v1/models")
        wrong = await http.get("/v1/models", headers={"Authorization": "Bearer not-the-key"})
        post = await http.post("/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert (missing.status_code, missing.json()) == (401, {"error": "Unauthorized"})
    assert wrong.status_code == 401 and post.status_code == 401


async def test_the_scheme_is_matched_in_any_case_and_every_guarded_prefix_needs_the_key(
    keyed: RunningSimulator,
) -> None:
    async with httpx.AsyncClient(base_url=keyed.base_url) as http:
        lower = await http.get("/v1/models", headers={"Authorization": f"bearer {KEY}"})
        other_scheme = await http.get("/v1/models", headers={"Authorization": f"Basic {KEY}"})
        guarded = [
            (await http.post(path, json={})).status_code for path in ("/v2/embed", "/inference/v1/generate")
        ]
    assert lower.status_code == 200 and other_scheme.status_code == 401
    assert guarded == [401, 401]  # as vLLM 0.33.0: refused before any route lookup


async def test_health_and_metrics_need_no_key(keyed: RunningSimulator) -> None:
    async with httpx.AsyncClient(base_url=keyed.base_url) as http:
        assert (await http.get("/health")).status_code == 200
        metrics = await http.get("/metrics")
    assert metrics.status_code == 200 and "vllm:num_requests_waiting" in metrics.text


async def test_openai_client_with_the_key_gets_a_completion(keyed: RunningSimulator) -> None:
    client = openai.AsyncOpenAI(base_url=keyed.base_url + "/v1", api_key=KEY, max_retries=0)
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(
            base_url=keyed.base_url + "/v1", api_key="wrong", max_retries=0
        ).models.list()


async def test_tls_engine_is_reachable_only_with_the_pinned_certificate(tmp_path: Path) -> None:
    tls = mint_tls("llms-test-0123456789-0", datetime.now(UTC), ("127.0.0.1",))
    (tmp_path / "cert.pem").write_text(tls.cert_pem)
    (tmp_path / "key.pem").write_text(tls.key_pem)
    args, _ = parse_engine_args([MODEL, "--port", "0", "--api-key", KEY, *FAST,
                                 "--ssl-certfile", str(tmp_path / "cert.pem"),
                                 "--ssl-keyfile", str(tmp_path / "key.pem")])  # fmt: skip
    sim = await start_simulator(*prepare_engine(args))
    try:
        assert sim.base_url.startswith("https://127.0.0.1:")
        pinned = pinned_ssl_context(tls.cert_pem)
        async with httpx.AsyncClient(base_url=sim.base_url, verify=pinned) as http:
            ok = await http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["data"][0]["id"] == MODEL
        # Another certificate (an impostor, or the system CAs) does not verify this engine.
        other = mint_tls("someone-else", datetime.now(UTC))
        async with httpx.AsyncClient(
            base_url=sim.base_url, verify=pinned_ssl_context(other.cert_pem)
        ) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get("/health")
        async with httpx.AsyncClient(base_url=sim.base_url.replace("https", "http")) as http:
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await http.get("/health")
    finally:
        await sim.stop()


def test_engine_process_never_logs_its_key() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "operator"), str(REPO),
                                                                      os.environ.get("PYTHONPATH")]))}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "llmserve.cli", "sim", "engine", MODEL, "--port", "0", "--api-key", KEY,
         "--log-level", "DEBUG", "--unknown-vllm-flag=1", *FAST],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "event=model_loaded" in line:
            break
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=30)
    log = "".join(lines) + rest
    assert "event=engine_started" in log and "api_key=set" in log
    assert KEY not in log


def test_certfile_without_keyfile_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_engine_args([MODEL, "--ssl-certfile", "/tmp/x.pem"])
