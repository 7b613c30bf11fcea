"""Vast.ai instances through its REST API (console.vast.ai/api/v0 and /api/v1): offers, asks, destroy.

Shapes follow vast-ai/docs api-reference/openapi/yaml/*.yaml @ c6246226. Ownership is the
deterministic name stored as the instance `label` plus the OWNER_ENV env marker (returned in
`extra_env`). Instances are always destroyed, never stopped: a stopped Vast instance keeps billing
its disk. Vast has no proxy, so the engine serves TLS itself (`--ssl-certfile/--ssl-keyfile`) on a
random public port. The certificate, its key and the engine guard reach the container as base64 env
chunks that the start script (burst.start_script) writes to files before it execs `vllm serve`: in
the `args` runtype, Vast takes `onstart` as the ENTRYPOINT override (vast-cli `create instance
--entrypoint` sends it there; `--onstart-cmd 'bash' --args -c '...'` is its own example), and `args`
follow it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from llmserve.burst.http import ProviderHttp, RetryPolicy, json_or_none, status_kind, threshold_seconds
from llmserve.burst.ownership import owned_instances, terminate_once
from llmserve.burst.start_script import file_env
from llmserve.burst.types import (
    OWNER_ENV,
    Account,
    ErrorKind,
    Instance,
    LaunchSpec,
    Offer,
    OfferQuery,
    Phase,
    ProviderError,
)

log = logging.getLogger("llmserve.burst.vastai")

PROVIDER = "vastai"
DEFAULT_BASE_URL = "https://console.vast.ai"
PAGE_LIMIT = 25  # the documented maximum of GET /api/v1/instances/
MAX_PAGES = 400  # 10,000 instances: a guard against a cursor that never ends
# Documented per-endpoint minimum intervals (x-rate-limit in each endpoint's YAML), in seconds.
DOCUMENTED_MIN_INTERVAL_SECONDS = {"offers": 6.0, "create": 4.5, "list": 1.0, "delete": 3.0}


def vast_error(http: ProviderHttp, response: httpx.Response, endpoint: str) -> ProviderError:
    """Vast's bodies vary (`{success,error,msg}`, `{detail}`, or plain text): parse defensively."""
    body = json_or_none(response)
    text = response.text if body is None else ""
    code = ""
    if isinstance(body, dict):
        code = str(body.get("error") or "")
        text = str(body.get("msg") or body.get("message") or body.get("detail") or code)
    status = response.status_code
    message = f"{endpoint}: HTTP {status} {code} {text}".strip()
    if status == 429:
        # No Retry-After on Vast; the body may state the endpoint's interval ("threshold=4.5").
        return http.error(ErrorKind.RATE_LIMITED, message, threshold_seconds(text))
    if status == 404 and "invalid user key" in text.lower():
        return http.error(ErrorKind.AUTH, message)  # the documented (sic) 404 for a bad key
    if endpoint == "create" and (status == 410 or (status == 404 and "no_such_ask" in text)):
        return http.error(ErrorKind.CAPACITY, message)  # the offer was taken: try the next one
    if code == "insufficient_credit" or status == 411:
        return http.error(ErrorKind.BALANCE, message)
    if code in ("invalid_price",) or (endpoint == "create" and status == 403):
        return http.error(ErrorKind.INVALID, message)
    return http.error(status_kind(status), message)


def _env_pairs(raw: Any) -> dict[str, str]:
    """`extra_env` is documented as [[key, value], ...]; a dict is accepted too."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    pairs: dict[str, str] = {}
    for item in raw or []:
        if isinstance(item, list | tuple) and len(item) == 2:
            pairs[str(item[0])] = str(item[1])
    return pairs


def phase_of(instance: Mapping[str, Any]) -> Phase:
    status = instance.get("actual_status")
    if status in (None, "", "created", "loading", "scheduling"):
        return Phase.PROVISIONING
    if status == "running":
        # Paused under us (outbid, out of credit, host action): running intent, stopped container.
        if instance.get("cur_state") == "stopped" or instance.get("intended_status") == "stopped":
            return Phase.EXITED
        return Phase.RUNNING
    if status in ("exited", "stopped"):
        return Phase.EXITED
    if status == "offline":
        return Phase.FAILED  # documented: never reaches running again, keeps billing disk
    return Phase.UNKNOWN


def exposed_port(env: Mapping[str, str]) -> int | None:
    """The container port the create asked to open (`"-p 8000:8000": "1"` in the env)."""
    for key in env:
        if key.startswith("-p "):
            inner = key[3:].split(":")[-1].split("/")[0]
            if inner.isdigit():
                return int(inner)
    return None


def parse_instance(raw: Mapping[str, Any]) -> Instance:
    """A Vast instance object (from show instance or the v1 list) as an Instance."""
    phase = phase_of(raw)
    env = _env_pairs(raw.get("extra_env"))
    endpoint = None
    ports = raw.get("ports") or {}
    port = exposed_port(env)
    wanted = [f"{port}/tcp"] if port else [key for key in ports if key.endswith("/tcp")]
    if phase is Phase.RUNNING and raw.get("public_ipaddr"):
        for key in wanted:
            bindings = ports.get(key) or []
            if bindings:
                args = raw.get("image_args") or []
                scheme = "https" if "--ssl-certfile" in args else "http"
                endpoint = f"{scheme}://{str(raw['public_ipaddr']).strip()}:{bindings[0]['HostPort']}"
                break
    start = raw.get("start_date")
    return Instance(
        id=str(raw["id"]),
        name=str(raw.get("label") or ""),
        phase=phase,
        usd_per_hour=float(raw.get("dph_total") or 0.0),
        created=datetime.fromtimestamp(float(start), UTC) if isinstance(start, int | float) else None,
        endpoint=endpoint,
        gpu_type=str(raw.get("gpu_name") or ""),
        gpus=int(raw.get("num_gpus") or 0),
        cluster_id=env.get(OWNER_ENV),
        extra={"actual_status": str(raw.get("actual_status")), "cur_state": str(raw.get("cur_state"))},
    )


def offers_body(query: OfferQuery) -> dict[str, Any]:
    """The `POST /api/v0/bundles/` search: both spellings of the GPU name (Vast's docs use both)."""
    names = sorted({query.gpu_type, query.gpu_type.replace("_", " "), query.gpu_type.replace(" ", "_")})
    body: dict[str, Any] = {
        "gpu_name": {"in": names},
        "num_gpus": {"eq": query.gpus},
        "dph_total": {"lte": query.max_usd_per_hour},
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "verified": {"eq": True},
        "type": "ondemand",
        "order": [["dph_total", "asc"]],
        "limit": 64,
    }
    if query.regions:
        body["geolocation"] = {"in": list(query.regions)}
    return body


def parse_offers(body: Any, query: OfferQuery) -> list[Offer]:
    wanted = {query.gpu_type.replace("_", " ")}
    offers = []
    for raw in (body or {}).get("offers") or []:
        price = float(raw.get("dph_total") or 0.0)
        if str(raw.get("gpu_name", "")).replace("_", " ") not in wanted or raw.get("num_gpus") != query.gpus:
            continue
        if price > query.max_usd_per_hour:
            continue
        offers.append(
            Offer(
                provider=PROVIDER,
                gpu_type=str(raw["gpu_name"]),
                gpus=int(raw["num_gpus"]),
                usd_per_hour=price,
                region=str(raw.get("geolocation") or ""),
                offer_id=str(raw["id"]),
            )
        )
    return sorted(offers, key=lambda offer: offer.usd_per_hour)


def create_body(spec: LaunchSpec) -> dict[str, Any]:
    env = {**spec.env, **file_env(spec.files), OWNER_ENV: spec.cluster_id, f"-p {spec.port}:{spec.port}": "1"}
    body: dict[str, Any] = {
        "image": spec.image,
        "disk": spec.disk_gb,
        "label": spec.name,
        "runtype": "args",
        "args": [*spec.entrypoint[1:], *spec.args],
        "env": env,
        "cancel_unavail": True,
        "target_state": "running",
    }
    if spec.entrypoint:  # the args runtype's ENTRYPOINT override: one executable, the rest go in args
        body["onstart"] = spec.entrypoint[0]
    return body


class VastProvider:
    """Vast.ai. `base_url` is injectable; `min_interval_seconds` defaults to the documented limits."""

    name = PROVIDER

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_seconds: float = 20.0,
        min_interval_seconds: Mapping[str, float] | None = None,
        retry: RetryPolicy | None = None,
        http: ProviderHttp | None = None,
    ) -> None:
        intervals = DOCUMENTED_MIN_INTERVAL_SECONDS if min_interval_seconds is None else min_interval_seconds
        self._http = http or ProviderHttp(
            PROVIDER, base_url, api_key, timeout_seconds=timeout_seconds, min_interval_seconds=intervals,
            retry=retry,
        )  # fmt: skip

    def _map(self, response: httpx.Response, endpoint: str) -> ProviderError:
        return vast_error(self._http, response, endpoint)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check_account(self) -> Account:
        response = await self._http.call(
            "GET",
            "/api/v0/users/current/",
            endpoint="account",
            ok=(200,),
            map_error=self._map,
            idempotent=True,
        )
        body = json_or_none(response) or {}
        credit = body.get("credit")
        balance = float(credit) if isinstance(credit, int | float) else None
        return Account(ok=balance is None or balance > 0, balance_usd=balance)

    async def list_offers(self, query: OfferQuery) -> list[Offer]:
        response = await self._http.call(
            "POST",
            "/api/v0/bundles/",
            endpoint="offers",
            ok=(200,),
            map_error=self._map,
            idempotent=True,  # a search changes nothing
            json=offers_body(query),
        )
        return parse_offers(json_or_none(response), query)

    async def create(self, spec: LaunchSpec, offer: Offer) -> Instance:
        """Rent the ask, once. A lost answer raises AMBIGUOUS: list_owned finds it by label."""
        if offer.usd_per_hour > spec.max_usd_per_hour:
            raise self._http.error(
                ErrorKind.INVALID,
                f"offer at {offer.usd_per_hour} USD/h is above the limit of {spec.max_usd_per_hour} USD/h",
            )
        response = await self._http.call(
            "PUT",
            f"/api/v0/asks/{offer.offer_id}/",
            endpoint="create",
            ok=(200,),
            map_error=self._map,
            idempotent=False,
            json=create_body(spec),
        )
        body = json_or_none(response)
        if not isinstance(body, dict) or not body.get("success") or "new_contract" not in body:
            raise self._http.error(ErrorKind.AMBIGUOUS, "create: the answer carried no new_contract")
        instance_id = str(body["new_contract"])
        log.info("event=instance_created provider=vastai id=%s name=%s", instance_id, spec.name)
        return Instance(
            id=instance_id,
            name=spec.name,
            phase=Phase.PROVISIONING,
            usd_per_hour=offer.usd_per_hour,
            created=datetime.now(UTC),
            gpu_type=offer.gpu_type,
            gpus=offer.gpus,
            cluster_id=spec.cluster_id,
        )

    async def get(self, instance_id: str) -> Instance:
        response = await self._http.call(
            "GET",
            f"/api/v0/instances/{instance_id}/",
            endpoint="get",
            ok=(200,),
            map_error=self._map,
            idempotent=True,
        )
        body = json_or_none(response)
        raw = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(raw, dict):  # Vast answers `{"instances": null}` for an unknown id
            raise self._http.error(ErrorKind.NOT_FOUND, f"get: no instance {instance_id}")
        return parse_instance(raw)

    async def list_all(self) -> list[Instance]:
        """Every instance of the account, following `next_token` through all pages."""
        instances: list[Instance] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            params = {
                "limit": str(PAGE_LIMIT),
                "order_by": json.dumps([{"col": "id", "dir": "asc"}]),
                "select_cols": json.dumps(["*"]),
            }
            if token:
                params["after_token"] = token
            response = await self._http.call(
                "GET", "/api/v1/instances/", endpoint="list", ok=(200,), map_error=self._map, idempotent=True,
                params=params,
            )  # fmt: skip
            body = json_or_none(response)
            if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
                raise self._http.error(ErrorKind.TRANSIENT, "list: the answer carried no instances array")
            instances.extend(parse_instance(raw) for raw in body["instances"])
            token = body.get("next_token")
            if not token:
                return instances
        raise self._http.error(ErrorKind.TRANSIENT, f"list: more than {MAX_PAGES} pages")

    async def list_owned(self, cluster_id: str) -> list[Instance]:
        """Instances whose label has this cluster's prefix AND whose env marker names this cluster."""
        return owned_instances(await self.list_all(), cluster_id)

    async def terminate(self, instance_id: str) -> None:
        """DELETE (destroy) ends all billing; a 404 means it is already gone."""
        await terminate_once(
            "vastai",
            instance_id,
            lambda: self._http.call(
                "DELETE",
                f"/api/v0/instances/{instance_id}/",
                endpoint="delete",
                ok=(200,),
                map_error=self._map,
                idempotent=True,
            ),
        )
