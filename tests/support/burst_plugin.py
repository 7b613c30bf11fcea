"""TEST DOUBLE plugged into a real operator process: the in-memory provider on the wall clock.

The operator under test loads it with LLMSERVE_BURST_PLUGIN_RUNPOD=tests.support.burst_plugin:make
(until issue 9's fake provider server can stand in). Its instances live in the operator's memory; after
every call it writes them to LLMSERVE_TEST_BURST_STATE (JSON) so the test can see the provider's truth.
It accepts only the key in LLMSERVE_TEST_BURST_KEY: a pool whose Secret holds another key gets `auth`.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmserve.api.burstpool import BurstPoolSpec
from llmserve.burst.engine import running_means_serving
from llmserve.burst.types import Account, ErrorKind, Instance, LaunchSpec, Offer, OfferQuery, ProviderError
from tests.support.inmemory_provider import FakeClock, InMemoryProvider, offer

OFFERS = [offer("H100", 2.49, "h100-a"), offer("H100", 2.79, "h100-b"), offer("A100", 1.19, "a100-a")]
_world: InMemoryProvider | None = None  # one provider account, whatever client objects the operator makes


def _shared() -> InMemoryProvider:
    global _world
    if _world is None:
        seconds = float(os.environ.get("LLMSERVE_TEST_BURST_PROVISIONING_SECONDS", "1"))
        _world = InMemoryProvider(FakeClock(datetime.now(UTC)), OFFERS, provisioning_seconds=seconds)
    return _world


class WallClockProvider:
    name = "runpod"
    serving_probe = staticmethod(running_means_serving)  # its endpoints are names only: nothing to call

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.world = _shared()

    def _enter(self) -> None:
        self.world.advance((datetime.now(UTC) - self.world.clock.now()).total_seconds())
        if self.api_key != os.environ.get("LLMSERVE_TEST_BURST_KEY"):
            raise ProviderError(ErrorKind.AUTH, "401 Unauthorized", provider=self.name)

    def _dump(self) -> None:
        path = os.environ.get("LLMSERVE_TEST_BURST_STATE")
        if path:
            state = {
                i.id: {"name": i.name, "phase": i.phase.value, "live": i.billing}
                for i in self.world.instances.values()
            }
            tmp = Path(path + ".tmp")
            tmp.write_text(
                json.dumps({"instances": state, "creates": [c.name for c in self.world.creates], "env": _ENV})
            )
            tmp.replace(path)

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            self._enter()
            return await getattr(self.world, method)(*args)
        finally:
            self._dump()

    async def check_account(self) -> Account:
        return await self._call("check_account")  # type: ignore[no-any-return]

    async def list_offers(self, query: OfferQuery) -> list[Offer]:
        return await self._call("list_offers", query)  # type: ignore[no-any-return]

    async def create(self, spec: LaunchSpec, offer_: Offer) -> Instance:
        # Names only: the test checks the key is passed (vLLM's --api-key), never its value.
        _ENV[spec.name] = sorted(spec.env) + [a for a in spec.args if a == "--api-key"]
        return await self._call("create", spec, offer_)  # type: ignore[no-any-return]

    async def get(self, instance_id: str) -> Instance:
        return await self._call("get", instance_id)  # type: ignore[no-any-return]

    async def list_owned(self, cluster_id: str) -> list[Instance]:
        return await self._call("list_owned", cluster_id)  # type: ignore[no-any-return]

    async def terminate(self, instance_id: str) -> None:
        await self._call("terminate", instance_id)

    async def aclose(self) -> None:
        return None


_ENV: dict[str, list[str]] = {}


def make(spec: BurstPoolSpec, api_key: str) -> WallClockProvider:
    return WallClockProvider(api_key)
