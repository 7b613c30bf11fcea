"""RunPod pods through REST API v2 (https://api.runpod.io/v2): catalog, create, get, list, delete.

v1 (rest.runpod.io/v1) retires on 2026-11-15 and GraphQL in early 2027, so only v2 is spoken here.
Shapes follow runpod/docs api-reference-v2/openapi.json @ a900806e (Frontdoor v2.9.0).
Pods have no labels: ownership is the deterministic name plus the OWNER_ENV env marker, which
`GET /v2/pods` returns. The engine is reached through RunPod's HTTPS proxy
(`https://<pod id>-<port>.proxy.runpod.net`), so TLS terminates at RunPod; the per-instance key and
the engine guard (burst.engine_guard, delivered by burst.start_script) guard the engine.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from llmserve.burst.http import ProviderHttp, RetryPolicy, json_or_none, parse_retry_after, status_kind
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

log = logging.getLogger("llmserve.burst.runpod")

PROVIDER = "runpod"
DEFAULT_BASE_URL = "https://api.runpod.io"
DEFAULT_PROXY_URL_TEMPLATE = "https://{pod_id}-{port}.proxy.runpod.net"

_PHASES = {
    "PROVISIONING": Phase.PROVISIONING,
    "STARTING": Phase.STARTING,
    "RUNNING": Phase.RUNNING,
    "EXITED": Phase.EXITED,
    "ERROR": Phase.FAILED,
    "TERMINATED": Phase.TERMINATED,
}


def problem_error(http: ProviderHttp, response: httpx.Response, endpoint: str) -> ProviderError:
    """An RFC 9457 problem (`{title, status, detail, errors?}`) as a ProviderError kind."""
    body = json_or_none(response)
    detail = ""
    if isinstance(body, dict):
        detail = str(body.get("detail") or body.get("title") or "")
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            detail = f"{detail}: {'; '.join(str(e) for e in errors[:3])}"
    status = response.status_code
    message = f"{endpoint}: HTTP {status} {detail}".strip()
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return http.error(ErrorKind.RATE_LIMITED, message, retry_after)
    if status == 400 and endpoint == "create":
        # The spec: 400 on create is either a cross-field rule or "no capacity for this GPU/DC",
        # with no machine-readable code; the documented advice is "try your next candidate".
        return http.error(ErrorKind.CAPACITY, message)
    if status == 422:
        return http.error(ErrorKind.INVALID, message)
    return http.error(status_kind(status), message)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def pod_http_port(pod: Mapping[str, Any]) -> int | None:
    """The first port the pod exposes through the HTTP proxy (`"8000/http"`)."""
    for entry in pod.get("ports") or []:
        port, _, protocol = str(entry).partition("/")
        if protocol == "http" and port.isdigit():
            return int(port)
    return None


def parse_pod(pod: Mapping[str, Any], proxy_url_template: str = DEFAULT_PROXY_URL_TEMPLATE) -> Instance:
    """A v2 `Pod` object as an Instance. The endpoint is set only while RUNNING."""
    phase = _PHASES.get(str(pod.get("status")), Phase.UNKNOWN)
    port = pod_http_port(pod)
    endpoint = None
    if phase is Phase.RUNNING and port is not None:
        endpoint = proxy_url_template.format(pod_id=pod["id"], port=port)
    env = pod.get("env") or {}
    gpu = pod.get("gpu") or {}
    return Instance(
        id=str(pod["id"]),
        name=str(pod.get("name") or ""),
        phase=phase,
        usd_per_hour=float(pod.get("cost") or 0.0),
        created=parse_time(pod.get("createdAt")),
        endpoint=endpoint,
        gpu_type=str(gpu.get("id") or ""),
        gpus=int(gpu.get("count") or 0),
        cluster_id=env.get(OWNER_ENV) if isinstance(env, dict) else None,
        extra={"dataCenterId": str(pod.get("dataCenterId") or ""), "status": str(pod.get("status"))},
    )


def offer_id(gpu_id: str, cloud: str, data_center: str) -> str:
    return f"{gpu_id}|{cloud}|{data_center}"


def split_offer_id(value: str) -> tuple[str, str, str]:
    gpu_id, cloud, data_center = ([*value.split("|"), "", ""])[:3]
    return gpu_id, cloud or "SECURE", data_center


def parse_catalog(body: Any, query: OfferQuery, cloud: str) -> list[Offer]:
    """Offers (one per data center with stock) from `GET /v2/catalog/gpus?include=AVAILABILITY`."""
    offers: list[Offer] = []
    price_key = cloud.lower()
    for gpu in (body or {}).get("gpus") or []:
        if query.gpu_type not in (gpu.get("id"), gpu.get("name")):
            continue
        unit_price = (gpu.get("price") or {}).get(price_key)
        if unit_price is None or (gpu.get("maxCount") or {}).get(price_key, 0) < query.gpus:
            continue
        usd_per_hour = round(float(unit_price) * query.gpus, 6)
        if usd_per_hour > query.max_usd_per_hour or gpu.get("availability") == "NONE":
            continue
        for data_center in gpu.get("dataCenters") or []:
            if data_center.get("availability") in (None, "NONE"):
                continue
            if query.regions and data_center.get("id") not in query.regions:
                continue
            offers.append(
                Offer(
                    provider=PROVIDER,
                    gpu_type=str(gpu["id"]),
                    gpus=query.gpus,
                    usd_per_hour=usd_per_hour,
                    region=str(data_center["id"]),
                    offer_id=offer_id(str(gpu["id"]), cloud, str(data_center["id"])),
                )
            )
    return offers


def container_args(spec: LaunchSpec) -> str:
    """v2's `args` string. It is the pod's start command (GraphQL `dockerArgs`): plain args follow the
    image's ENTRYPOINT, and an ENTRYPOINT override takes RunPod's JSON form `{"cmd": [...],
    "entrypoint": [...]}` (documented for the start command in pods/templates/manage-templates.mdx;
    runpodctl calls it "the backend's canonical dockerArgs encoding"; v2 has no separate field)."""
    if not spec.entrypoint:
        return shlex.join(spec.args)
    return json.dumps({"cmd": list(spec.args), "entrypoint": list(spec.entrypoint)}, separators=(",", ":"))


def create_body(spec: LaunchSpec, offer: Offer) -> dict[str, Any]:
    """`CreatePodRequest`: unknown fields are a 422 there, so only documented ones are sent."""
    gpu_id, cloud, data_center = split_offer_id(offer.offer_id)
    body: dict[str, Any] = {
        "name": spec.name,
        "image": spec.image,
        "gpu": {"id": gpu_id, "count": spec.gpus},
        "cloud": cloud,
        "ports": [f"{spec.port}/http"],
        "env": {**spec.env, **file_env(spec.files), OWNER_ENV: spec.cluster_id},
        "disk": spec.disk_gb,
        "args": container_args(spec),
    }
    if data_center:
        body["dataCenterIds"] = [data_center]
    return body


class RunPodProvider:
    """RunPod REST v2. `base_url` and `proxy_url_template` are injectable so tests use the fake."""

    name = PROVIDER

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        proxy_url_template: str = DEFAULT_PROXY_URL_TEMPLATE,
        cloud: str = "SECURE",
        timeout_seconds: float = 20.0,
        retry: RetryPolicy | None = None,
        http: ProviderHttp | None = None,
    ) -> None:
        self._http = http or ProviderHttp(
            PROVIDER, base_url, api_key, timeout_seconds=timeout_seconds, retry=retry
        )
        self._proxy_url_template = proxy_url_template
        self._cloud = cloud

    def _map(self, response: httpx.Response, endpoint: str) -> ProviderError:
        return problem_error(self._http, response, endpoint)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check_account(self) -> Account:
        """v2 has no balance endpoint: a pod list proves the key works (401/403 raise AUTH)."""
        await self._http.call(
            "GET", "/v2/pods", endpoint="list", ok=(200,), map_error=self._map, idempotent=True
        )
        return Account(ok=True, balance_usd=None)

    async def list_offers(self, query: OfferQuery) -> list[Offer]:
        cloud = query.cloud_type or self._cloud
        params = {"include": "AVAILABILITY", "product": "POD", "cloud": cloud, "count": str(query.gpus)}
        response = await self._http.call(
            "GET",
            "/v2/catalog/gpus",
            endpoint="catalog",
            ok=(200,),
            map_error=self._map,
            idempotent=True,
            params=params,
        )
        offers = parse_catalog(json_or_none(response), query, cloud)
        return sorted(offers, key=lambda offer: offer.usd_per_hour)

    async def create(self, spec: LaunchSpec, offer: Offer) -> Instance:
        """One POST, never retried. A lost answer raises AMBIGUOUS: list_owned finds the pod by name."""
        if offer.usd_per_hour > spec.max_usd_per_hour:
            raise self._http.error(
                ErrorKind.INVALID,
                f"offer at {offer.usd_per_hour} USD/h is above the limit of {spec.max_usd_per_hour} USD/h",
            )
        response = await self._http.call(
            "POST",
            "/v2/pods",
            endpoint="create",
            ok=(201, 200),
            map_error=self._map,
            idempotent=False,
            json=create_body(spec, offer),
        )
        body = json_or_none(response)
        if not isinstance(body, dict) or "id" not in body:
            raise self._http.error(ErrorKind.AMBIGUOUS, "create: the answer carried no pod id")
        instance = parse_pod(body, self._proxy_url_template)
        log.info("event=instance_created provider=runpod id=%s name=%s", instance.id, instance.name)
        return instance

    async def get(self, instance_id: str) -> Instance:
        response = await self._http.call(
            "GET", f"/v2/pods/{instance_id}", endpoint="get", ok=(200,), map_error=self._map, idempotent=True
        )
        return parse_pod(response.json(), self._proxy_url_template)

    async def list_all(self) -> list[Instance]:
        """Every pod of the account (v2 has neither a name filter nor pagination)."""
        response = await self._http.call(
            "GET", "/v2/pods", endpoint="list", ok=(200,), map_error=self._map, idempotent=True
        )
        body = json_or_none(response)
        pods = body.get("pods") if isinstance(body, dict) else None
        if not isinstance(pods, list):
            raise self._http.error(ErrorKind.TRANSIENT, "list: the answer carried no pods array")
        return [parse_pod(pod, self._proxy_url_template) for pod in pods]

    async def list_owned(self, cluster_id: str) -> list[Instance]:
        """Pods with this cluster's name prefix AND its env marker (a name alone could be a copy)."""
        return owned_instances(await self.list_all(), cluster_id)

    async def terminate(self, instance_id: str) -> None:
        """DELETE ends billing (never "stop": a stopped pod keeps billing its volume). 404 = gone."""
        await terminate_once(
            "runpod",
            instance_id,
            lambda: self._http.call(
                "DELETE",
                f"/v2/pods/{instance_id}",
                endpoint="delete",
                ok=(204, 200),
                map_error=self._map,
                idempotent=True,
            ),
        )
