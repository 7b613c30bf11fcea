"""Closed-loop streaming load against a live OpenAI endpoint, recording each request's token timeline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp


@dataclass
class RequestRecord:
    """Wall-clock timeline of one streamed request, in seconds since the load started."""

    request_id: str
    prompt_tokens: int
    max_tokens: int
    send_time: float
    first_token_time: float | None = None
    finish_time: float | None = None
    output_tokens: int = 0

    @property
    def complete(self) -> bool:
        return self.finish_time is not None and self.output_tokens == self.max_tokens

    @property
    def time_to_first_token(self) -> float:
        assert self.first_token_time is not None
        return self.first_token_time - self.send_time

    @property
    def e2e(self) -> float:
        assert self.finish_time is not None
        return self.finish_time - self.send_time

    @property
    def mean_inter_token(self) -> float:
        assert self.first_token_time is not None and self.finish_time is not None
        return (self.finish_time - self.first_token_time) / max(1, self.output_tokens - 1)


async def stream_one(
    session: aiohttp.ClientSession, url: str, model: str, record: RequestRecord, origin: float
) -> None:
    """Send one streaming completion (prompt given as token ids, so its size is exact) and time it."""
    body = {
        "model": model,
        "prompt": [1] * record.prompt_tokens,
        "max_tokens": record.max_tokens,
        "stream": True,
    }
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            now = time.monotonic() - origin
            if record.first_token_time is None:
                record.first_token_time = now
            record.output_tokens += 1
            record.finish_time = now


async def closed_loop(
    base_url: str,
    model: str,
    concurrency: int,
    prompt_tokens: int,
    max_tokens: int,
    duration_seconds: float,
    start_spread_seconds: float = 0.0,
) -> list[RequestRecord]:
    """`concurrency` users send back-to-back requests until `duration_seconds` have passed.

    User i starts after `start_spread_seconds * i / concurrency` so users do not move in lockstep.
    """
    url = base_url + "/v1/completions"
    origin = time.monotonic()
    records: list[RequestRecord] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def user(index: int) -> None:
            await asyncio.sleep(start_spread_seconds * index / concurrency)
            sequence = 0
            while time.monotonic() - origin < duration_seconds:
                record = RequestRecord(
                    f"u{index}-{sequence}", prompt_tokens, max_tokens, send_time=time.monotonic() - origin
                )
                records.append(record)
                await stream_one(session, url, model, record, origin)
                sequence += 1

        await asyncio.gather(*(user(i) for i in range(concurrency)))
    return records


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def spawned_engine(engine_args: Sequence[str], port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run `llmserve sim engine` as a child process until the block exits, then SIGTERM it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmserve.cli",
        "sim",
        "engine",
        "--port",
        str(port),
        "--log-level",
        "WARNING",
        *engine_args,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.get(f"http://127.0.0.1:{port}/health") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the simulated engine did not become healthy within 30 s")
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()
