"""Provider wire shapes: parsing the providers' own documented examples, and mapping their errors.

Examples are quoted from the providers' published API references:
- RunPod: runpod/docs api-reference-v2/openapi.json @ a900806e (2026-08-20), listPods/createPod/
  listGpuTypes response examples and components/responses.
- Vast.ai: vast-ai/docs api-reference/openapi/yaml/{show_instances,search_offers,create_instance,
  destroy_instance}.yaml @ c6246226 (2026-08-07), and api-reference/rate-limits-and-errors.mdx.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from llmserve.burst.http import ProviderHttp, threshold_seconds
from llmserve.burst.runpod import create_body as runpod_create_body
from llmserve.burst.runpod import parse_catalog, parse_pod, problem_error
from llmserve.burst.types import OWNER_ENV, ErrorKind, LaunchSpec, Offer, OfferQuery, Phase
from llmserve.burst.vastai import create_body as vast_create_body
from llmserve.burst.vastai import (
    parse_instance,
    parse_offers,
    phase_of,
    vast_error,
)

# runpod/docs api-reference-v2/openapi.json: GET /v2/pods 200 example "pods" (one pod).
RUNPOD_POD = {
    "id": "7h9k2m4n6p", "name": "pytorch-training", "image": "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404",
    "args": "", "disk": 50, "ports": ["8888/http", "22/tcp"], "env": {"MODEL_NAME": "llama-3"}, "registry": None,
    "status": "RUNNING", "actions": ["stop", "restart", "terminate"],
    "mounts": {"persistent": {"size": 20, "path": "/workspace"}},
    "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1}, "cloud": "SECURE", "dataCenterId": "US-KS-2",
    "cudaVersion": "12.8",
    "ssh": {"proxy": {"host": "ssh.runpod.io", "port": 22, "username": "7h9k2m4n6p-64411eb2",
                      "command": "ssh 7h9k2m4n6p-64411eb2@ssh.runpod.io"},
            "direct": {"host": "195.26.233.3", "port": 34446, "username": "root",
                       "command": "ssh root@195.26.233.3 -p 34446"}},
    "template": "9x4m2p7v", "cost": 0.44, "locked": False, "globalNetworking": {"enabled": False},
    "runtime": {"uptime": 3600, "ports": [{"private": 22, "public": 34446, "type": "tcp", "ip": "195.26.233.3"}]},
    "createdAt": "2026-06-01T12:00:00Z", "startedAt": "2026-06-01T12:02:00Z",
}  # fmt: skip
# The createPod 201 example differs in these fields.
RUNPOD_CREATED = {**RUNPOD_POD, "status": "PROVISIONING", "actions": ["start", "terminate"], "runtime": {},
                  "startedAt": None}  # fmt: skip
# GET /v2/catalog/gpus 200 example.
RUNPOD_CATALOG = {"gpus": [{
    "id": "NVIDIA GeForce RTX 4090", "name": "RTX 4090", "pool": "ADA_24", "manufacturer": "NVIDIA", "memory": 24,
    "secure": True, "community": True, "price": {"secure": 0.44, "community": 0.31, "serverless": 1.1},
    "maxCount": {"secure": 8, "community": 4}, "availability": "HIGH",
    "dataCenters": [{"id": "US-KS-2", "name": "US Kansas 2", "availability": "HIGH"}],
}]}  # fmt: skip
# show_instances.yaml: the examples of each instance property (trimmed to what the client reads).
VAST_INSTANCE = {
    "id": 312, "actual_status": "running", "cur_state": "running", "next_state": "running",
    "intended_status": "running", "label": "ML Training Job 2025", "image_uuid": "nvidia/cuda:11.0.3-devel-ubuntu18.04",
    "image_args": ["bash", "-c", "apt update; apt install -y wget"], "image_runtype": "ssh ssh_direc ssh_proxy",
    "extra_env": [["DOG", "CAT"], ["-p 70001:70001", "1"]], "public_ipaddr": "192.0.2.45",
    "ports": {"8888/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8888"}], "22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "20000"}]},
    "dph_total": 0.8021, "start_date": 1668804745.1223178, "gpu_name": "RTX 4090", "num_gpus": 1,
    "geolocation": "California, United States",
}  # fmt: skip
# search_offers.yaml 200 example (the doc shows `offers` as one object; the API returns a list).
VAST_OFFER = {"id": 12345678, "ask_contract_id": 12345678, "gpu_name": "Imaginary RTX 9999", "num_gpus": 2,
              "dph_base": 0.123456, "dph_total": 0.234567, "geolocation": "Atlantis, AT", "rentable": True}  # fmt: skip


def http_for(key: str = "secret-account-key") -> ProviderHttp:
    return ProviderHttp("test", "http://provider.invalid", key)


def response(
    status: int, body: object = None, text: str | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def spec(files: dict[str, str] | None = None) -> LaunchSpec:
    return LaunchSpec(name="llms-c0ffee42-0123456789-0", cluster_id="c0ffee42", image="vllm/vllm-openai:v0.11.0",
                      args=("--model", "m", "--api-key", "k"), env={"HF_TOKEN": "hf"}, port=8000,
                      gpu_type="RTX_4090", gpus=1, max_usd_per_hour=1.0, files=files or {})  # fmt: skip


# -- RunPod --------------------------------------------------------------------------------------


def test_runpod_running_pod_example_parses_with_its_proxy_endpoint() -> None:
    pod = parse_pod(RUNPOD_POD)
    assert (pod.id, pod.name, pod.phase, pod.usd_per_hour) == (
        "7h9k2m4n6p",
        "pytorch-training",
        Phase.RUNNING,
        0.44,
    )
    assert pod.endpoint == "https://7h9k2m4n6p-8888.proxy.runpod.net"
    assert (pod.gpu_type, pod.gpus) == ("NVIDIA GeForce RTX 4090", 1)
    assert pod.created == datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert pod.cluster_id is None  # not one of ours: no owner marker


def test_runpod_created_pod_example_is_provisioning_without_endpoint() -> None:
    pod = parse_pod(RUNPOD_CREATED)
    assert pod.phase is Phase.PROVISIONING and pod.endpoint is None


@pytest.mark.parametrize(
    ("status", "phase"),
    [("PROVISIONING", Phase.PROVISIONING), ("STARTING", Phase.STARTING), ("RUNNING", Phase.RUNNING),
     ("EXITED", Phase.EXITED), ("ERROR", Phase.FAILED), ("TERMINATED", Phase.TERMINATED), ("NEW", Phase.UNKNOWN)],
)  # fmt: skip
def test_runpod_status_enum_maps_to_phases(status: str, phase: Phase) -> None:
    assert parse_pod({**RUNPOD_POD, "status": status}).phase is phase


def test_runpod_catalog_example_becomes_offers_filtered_by_price_count_and_region() -> None:
    query = OfferQuery(gpu_type="NVIDIA GeForce RTX 4090", gpus=2, max_usd_per_hour=1.0)
    [offer] = parse_catalog(RUNPOD_CATALOG, query, "SECURE")
    assert offer == Offer(
        "runpod", "NVIDIA GeForce RTX 4090", 2, 0.88, "US-KS-2", "NVIDIA GeForce RTX 4090|SECURE|US-KS-2"
    )
    assert parse_catalog(RUNPOD_CATALOG, OfferQuery("NVIDIA GeForce RTX 4090", 2, 0.8), "SECURE") == []
    assert (
        parse_catalog(RUNPOD_CATALOG, OfferQuery("NVIDIA GeForce RTX 4090", 1, 1, ("EU-RO-1",)), "SECURE")
        == []
    )
    assert parse_catalog(RUNPOD_CATALOG, OfferQuery("RTX 4090", 9, 9), "SECURE") == []  # above maxCount
    community = parse_catalog(RUNPOD_CATALOG, OfferQuery("RTX 4090", 4, 9), "COMMUNITY")
    assert [o.usd_per_hour for o in community] == [1.24]


@pytest.mark.parametrize(
    ("status", "endpoint", "body", "kind"),
    [
        (401, "list", {"title": "Unauthorized", "status": 401, "detail": "missing bearer token"}, ErrorKind.AUTH),
        (403, "get", {"title": "Forbidden", "status": 403, "detail": "access denied"}, ErrorKind.AUTH),
        (404, "get", {"title": "Not Found", "status": 404, "detail": "resource not found"}, ErrorKind.NOT_FOUND),
        (400, "create", {"title": "Bad Request", "status": 400, "detail": "request could not be processed"}, ErrorKind.CAPACITY),
        (402, "create", {"title": "Payment Required", "status": 402, "detail": "insufficient balance"}, ErrorKind.BALANCE),
        (422, "create", {"title": "Unprocessable Entity", "status": 422, "detail": "Request validation failed.",
                         "errors": ["$: additional properties 'bogus' not allowed"]}, ErrorKind.INVALID),
        (409, "delete", {"title": "Conflict", "status": 409, "detail": "pod belongs to a cluster"}, ErrorKind.CONFLICT),
        (500, "get", {"title": "Internal Server Error", "status": 500, "detail": "oops"}, ErrorKind.TRANSIENT),
    ],
)  # fmt: skip
def test_runpod_problem_bodies_map_to_error_kinds(
    status: int, endpoint: str, body: object, kind: ErrorKind
) -> None:
    error = problem_error(http_for(), response(status, body), endpoint)
    assert error.kind is kind and error.provider == "test"
    assert f"HTTP {status}" in str(error)


def test_runpod_429_carries_retry_after_seconds() -> None:
    body = {
        "title": "Too Many Requests",
        "status": 429,
        "detail": "rate limit exceeded for the minute window",
    }
    error = problem_error(http_for(), response(429, body, headers={"Retry-After": "12"}), "list")
    assert error.kind is ErrorKind.RATE_LIMITED and error.retry_after_seconds == 12


def test_runpod_create_body_uses_only_documented_fields_and_marks_ownership() -> None:
    offer = Offer(
        "runpod", "NVIDIA GeForce RTX 4090", 1, 0.44, "US-KS-2", "NVIDIA GeForce RTX 4090|SECURE|US-KS-2"
    )
    body = runpod_create_body(spec(), offer)
    # CreatePodRequest properties (unevaluatedProperties: false, so anything else is a 422).
    documented = {"name", "image", "gpu", "cpu", "cloud", "dataCenterIds", "ports", "env", "disk", "args", "registry",
                  "mounts", "templateId", "startSsh", "startJupyter", "globalNetworking"}  # fmt: skip
    assert set(body) <= documented
    assert body["gpu"] == {"id": "NVIDIA GeForce RTX 4090", "count": 1} and body["dataCenterIds"] == [
        "US-KS-2"
    ]
    assert body["ports"] == ["8000/http"] and body["env"][OWNER_ENV] == "c0ffee42"
    assert body["args"] == "--model m --api-key k"


# -- Vast.ai -------------------------------------------------------------------------------------


def test_vast_instance_example_parses_and_does_not_guess_an_unmapped_port() -> None:
    instance = parse_instance(VAST_INSTANCE)
    assert (instance.id, instance.name, instance.phase) == ("312", "ML Training Job 2025", Phase.RUNNING)
    assert (instance.usd_per_hour, instance.gpu_type, instance.gpus) == (0.8021, "RTX 4090", 1)
    assert instance.created is not None and instance.created.year == 2022
    # The example opens 70001 in env but maps only 8888 and 22: no endpoint rather than a wrong one.
    assert instance.endpoint is None
    mapped = parse_instance({**VAST_INSTANCE, "extra_env": [["-p 8888:8888", "1"], [OWNER_ENV, "c1"]],
                             "image_args": ["--ssl-certfile", "/c.pem"]})  # fmt: skip
    assert mapped.endpoint == "https://192.0.2.45:8888" and mapped.cluster_id == "c1"


@pytest.mark.parametrize(
    ("fields", "phase"),
    [({"actual_status": None}, Phase.PROVISIONING), ({"actual_status": "loading"}, Phase.PROVISIONING),
     ({"actual_status": "running"}, Phase.RUNNING), ({"actual_status": "exited"}, Phase.EXITED),
     ({"actual_status": "running", "cur_state": "stopped"}, Phase.EXITED),  # paused (outbid, no credit)
     ({"actual_status": "offline"}, Phase.FAILED), ({"actual_status": "unknown"}, Phase.UNKNOWN)],
)  # fmt: skip
def test_vast_actual_status_maps_to_phases(fields: dict[str, object], phase: Phase) -> None:
    assert phase_of({"cur_state": "running", "intended_status": "running", **fields}) is phase


def test_vast_offer_example_parses_and_both_gpu_spellings_match() -> None:
    [offer] = parse_offers({"offers": [VAST_OFFER]}, OfferQuery("Imaginary_RTX_9999", 2, 1.0))
    assert offer == Offer("vastai", "Imaginary RTX 9999", 2, 0.234567, "Atlantis, AT", "12345678")
    assert parse_offers({"offers": [VAST_OFFER]}, OfferQuery("Imaginary RTX 9999", 2, 0.2)) == []


@pytest.mark.parametrize(
    ("status", "endpoint", "body", "text", "kind", "retry_after"),
    [
        (410, "create", {"success": False, "error": "no_such_ask",
                         "msg": "error 410/3907: no_such_ask Instance type 1234567 is no longer available."},
         None, ErrorKind.CAPACITY, None),
        (404, "create", {"success": False, "error": "invalid_args",
                         "msg": "error 404/3603: no_such_ask Instance type by id 1234567 is not available."},
         None, ErrorKind.CAPACITY, None),
        (400, "create", {"success": False, "error": "invalid_args", "msg": "error 400/3467: Invalid args"},
         None, ErrorKind.INVALID, None),
        (401, "get", {"success": False, "error": "auth_error", "msg": "Invalid user key"}, None, ErrorKind.AUTH, None),
        (404, "offers", {"msg": "Invalid user key"}, None, ErrorKind.AUTH, None),  # the documented (sic) 404
        (404, "delete", {"success": False, "error": "not_found", "msg": "Instance not found"}, None,
         ErrorKind.NOT_FOUND, None),
        (429, "create", {"detail": "API requests too frequent endpoint threshold=4.5"}, None, ErrorKind.RATE_LIMITED, 4.5),
        (429, "delete", {"error": "rate_limit_exceeded", "msg": "API requests too frequent endpoint threshold=3.0"},
         None, ErrorKind.RATE_LIMITED, 3.0),
        (429, "list", None, "API requests too frequent", ErrorKind.RATE_LIMITED, None),
    ],
)  # fmt: skip
def test_vast_error_bodies_map_to_error_kinds(
    status: int, endpoint: str, body: object, text: str | None, kind: ErrorKind, retry_after: float | None
) -> None:
    error = vast_error(http_for(), response(status, body, text), endpoint)
    assert (error.kind, error.retry_after_seconds) == (kind, retry_after)


def test_vast_create_body_labels_marks_and_opens_the_port() -> None:
    body = vast_create_body(spec())
    assert body["label"] == "llms-c0ffee42-0123456789-0" and body["runtype"] == "args"
    assert body["env"][OWNER_ENV] == "c0ffee42" and body["env"]["-p 8000:8000"] == "1"
    assert body["cancel_unavail"] is True and "onstart" not in body and "price" not in body


def test_threshold_is_read_from_vast_429_text() -> None:
    assert threshold_seconds("API requests too frequent: endpoint threshold=2.0") == 2.0
    assert threshold_seconds("API requests too frequent") is None
