"""Static mode: models, backends and keys from a YAML/JSON file, reloaded when the file changes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmserve.gateway.auth import ApiKey, KeyStore, parse_key
from llmserve.gateway.registry import Backend, ModelRoute, Registry

log = logging.getLogger(__name__)

SOURCE = "static"


@dataclass(frozen=True)
class StaticConfig:
    routes: list[ModelRoute]
    keys: list[ApiKey]


def _batch_slots(raw: Any, where: str) -> int | None:
    if raw is None:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
        raise ValueError(f"{where}.maxNumSeqs: expected the engine's --max-num-seqs, an integer >= 1")
    return raw


def _ttft_target(raw: Any, where: str) -> float | None:
    if raw is None:
        return None
    if not isinstance(raw, int | float) or isinstance(raw, bool) or not 0 < raw <= 600:
        raise ValueError(
            f"{where}.ttftTargetSeconds: expected the time-to-first-token target in seconds, above 0 and "
            "at most 600 (the gateway queue serves requests past it after the others)"
        )
    return float(raw)


def _backend(raw: Any, where: str, model_slots: int | None = None) -> Backend:
    if isinstance(raw, str):
        raw = {"url": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("url"), str) or "://" not in raw["url"]:
        raise ValueError(f"{where}.url: expected an http(s) URL such as http://127.0.0.1:8000")
    headers = dict(raw.get("headers") or {})
    if raw.get("apiKey"):
        headers["Authorization"] = f"Bearer {raw['apiKey']}"
    return Backend(
        url=raw["url"].rstrip("/"),
        headers=tuple((str(k), str(v)) for k, v in headers.items()),
        source="static",
        batch_slots=_batch_slots(raw.get("maxNumSeqs"), where) or model_slots,
    )


def _key_fields(raw: dict[str, Any]) -> dict[str, str]:
    fields = {}
    for name, value in raw.items():
        if name == "models" and isinstance(value, list):
            value = ",".join(str(item) for item in value)
        fields[str(name)] = "" if value is None else str(value)
    return fields


def parse_config(document: Any) -> StaticConfig:
    """Validates the file's content; errors name the entry and field at fault."""
    if not isinstance(document, dict):
        raise ValueError("top level: expected a mapping with `models` (and optionally `keys`)")
    unknown = set(document) - {"models", "keys"}
    if unknown:
        raise ValueError(f"top level: unknown fields {sorted(unknown)}; expected models, keys")
    routes = []
    for index, raw in enumerate(document.get("models") or []):
        where = f"models[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise ValueError(f"{where}.name: expected the served model name clients send")
        slots = _batch_slots(raw.get("maxNumSeqs"), where)
        backends = tuple(
            _backend(b, f"{where}.backends[{i}]", slots) for i, b in enumerate(raw.get("backends") or [])
        )
        late_after = _ttft_target(raw.get("ttftTargetSeconds"), where)
        routes.append(ModelRoute(raw["name"], backends, late_after_seconds=late_after))
    keys = []
    for index, raw in enumerate(document.get("keys") or []):
        where = f"keys[{index}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a mapping with key (or keySha256), name, models, limits")
        keys.append(parse_key(_key_fields(raw), f"key-{index}", where))
    return StaticConfig(routes, keys)


def load_config(text: str) -> StaticConfig:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"not valid YAML/JSON: {err}") from None
    return parse_config(document)


class StaticSource:
    """Publishes the file's models and keys, and republishes them whenever the file changes."""

    def __init__(self, path: Path, registry: Registry, keys: KeyStore, poll_seconds: float = 1.0) -> None:
        self.path, self.registry, self.keys, self.poll_seconds = path, registry, keys, poll_seconds
        self._mtime: float | None = None

    async def load(self) -> None:
        """Loads the file once; raises ValueError naming the problem (used at startup)."""
        stat = await asyncio.to_thread(self.path.stat)
        text = await asyncio.to_thread(self.path.read_text)
        config = load_config(text)
        self._mtime = stat.st_mtime
        self.registry.replace(SOURCE, config.routes)
        self.keys.replace(SOURCE, config.keys)
        log.info(
            "event=static_config_loaded path=%s models=%d keys=%d",
            self.path,
            len(config.routes),
            len(config.keys),
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                mtime = (await asyncio.to_thread(self.path.stat)).st_mtime
                if mtime != self._mtime:
                    await self.load()
            except (OSError, ValueError) as err:
                # The last good configuration stays in force.
                log.error("event=static_config_invalid path=%s error=%s", self.path, err)
                self._mtime = None if isinstance(err, OSError) else mtime
