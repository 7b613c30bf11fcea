"""What a rented engine is launched with, and the check that it serves, for one BurstPool.

Before each create call the launcher mints the instance's secrets (burst.security.vllm_launch_spec: a
per-instance API key; for engines that serve TLS themselves, a certificate) and writes them to the
instance's Secret in the operator's namespace, so the gateway can reach any instance status records,
including one adopted after a lost create response. The probe calls the instance's /health over that
TLS (pinned certificate, or the provider's proxy) before the instance counts as serving.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx

from llmserve import kube
from llmserve.api.burstpool import InstanceStatus
from llmserve.burst.backends import (
    API_KEY_FIELD,
    PROVIDER_FIELD,
    TLS_CERT_FIELD,
    TLS_FINGERPRINT_FIELD,
    InstanceAccess,
    access_from_secret,
)
from llmserve.burst.engine import Probe
from llmserve.burst.planner import Demand
from llmserve.burst.provision import Launcher, LaunchRefused, Refused
from llmserve.burst.security import EngineRequest, EngineSecrets, vllm_launch_spec
from llmserve.burst.types import LaunchSpec
from llmserve.controller.burst_store import FIELD_MANAGER, INSTANCE_LABEL, POOL_LABEL, secret_name
from llmserve.settings import operator_settings

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 3.0
HF_TOKEN_ENV = "HF_TOKEN"  # read by huggingface_hub, which vLLM downloads weights with
Obj = dict[str, Any]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def instance_secret(
    namespace: str, pool: Obj, record: InstanceStatus, provider: str, engine: EngineSecrets
) -> Obj:
    """The instance's Secret, owned by its pool (pure). The TLS private key is not kept: only the engine
    needs it, and it travels there once, inside the launch spec."""
    data = {API_KEY_FIELD: engine.api_key, "owner": record.owner, PROVIDER_FIELD: provider}
    if engine.tls_cert_pem and engine.tls_fingerprint_sha256:
        data[TLS_CERT_FIELD] = engine.tls_cert_pem
        data[TLS_FINGERPRINT_FIELD] = engine.tls_fingerprint_sha256
    meta = pool["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(record.name),
            "namespace": namespace,
            "labels": {INSTANCE_LABEL: record.name, POOL_LABEL: meta["name"]},
            "ownerReferences": [
                {
                    "apiVersion": pool.get("apiVersion", "llmserve.dev/v1alpha1"),
                    "kind": "BurstPool",
                    "name": meta["name"],
                    "uid": meta["uid"],
                }
            ],
        },
        "type": "Opaque",
        "data": {k: _b64(v) for k, v in data.items()},
    }


def rented_launch(
    provider: str, record: InstanceStatus, demand: Demand, base: LaunchSpec
) -> tuple[LaunchSpec, EngineSecrets]:
    """The vLLM launch spec of a rented engine (pure apart from minting secrets)."""
    request = EngineRequest(
        cluster_id=base.cluster_id,
        owner=record.owner,
        slot=record.slot,
        image=base.image,
        model=demand.model,
        served_model_name=demand.served_model_name or demand.model,
        gpu_type=base.gpu_type,
        gpus=base.gpus,
        max_usd_per_hour=base.max_usd_per_hour,
        port=base.port,
        extra_args=demand.extra_args,
        env=dict(base.env),
    )
    spec, engine = vllm_launch_spec(provider, request, datetime.now(UTC))
    if spec.name != base.name:  # the engine and the status must agree on the deterministic name
        raise ValueError(f"launch spec name {spec.name} differs from the recorded {base.name}")
    return replace(spec, disk_gb=max(spec.disk_gb, base.disk_gb)), engine


async def read_hf_token(owner: str, ref: tuple[str, str]) -> str:
    """The model's Hugging Face token from its Secret in the LLMServe's namespace. A missing Secret or key,
    or no permission to read it, refuses this model's create (LaunchRefused, naming the field and the
    Secret, never its contents): an engine without the token could not download a gated model, and would
    bill until the provisioning timeout."""
    namespace = owner.split("/", 1)[0]
    name, key = ref
    where = f"spec.model.hfTokenSecret: Secret {namespace}/{name}"
    try:
        secret = await kube.retry(lambda: kube.get("Secret", namespace, name))
    except kube.KubeError as err:
        if err.status == 403:
            why = f"{where} may not be read by the operator (Helm value burst.readHfTokenSecrets grants it)"
            raise LaunchRefused(why, "HfTokenSecretForbidden") from None
        raise
    encoded = ((secret or {}).get("data") or {}).get(key)
    if secret is None or not encoded:
        raise LaunchRefused(
            f"{where} with key {key} not found; no burst replica is rented for this model",
            "HfTokenSecretMissing",
        )
    return base64.b64decode(encoded).decode().strip()


async def launch_refusal(refusals: dict[str, Refused], demand: Demand, shown: bool) -> Refused | None:
    """Why this model's rented engines cannot be launched, while that holds (its BurstLaunchRefused
    condition). A refusal the engine recorded, or one status still shows (written before an operator
    restart), is checked against the Secret again each tick: the condition clears as soon as the Secret
    appears, even when no replica is wanted just then. Models never refused cost no read."""
    recorded = refusals.get(demand.owner)
    if recorded is None and not shown:
        return None
    if demand.hf_token_secret is None:  # the spec no longer names one: nothing left to refuse
        refusals.pop(demand.owner, None)
        return None
    try:
        await read_hf_token(demand.owner, demand.hf_token_secret)
    except LaunchRefused as refused:
        refusals[demand.owner] = Refused(str(refused), refused.condition_reason)
        return refusals[demand.owner]
    except kube.KubeError:
        return recorded  # the apiserver did not answer: what was known stands
    refusals.pop(demand.owner, None)
    return None


def make_launcher(namespace: str, pool: Obj, provider: str, static_key: str = "") -> Launcher:
    async def launch(record: InstanceStatus, demand: Demand, base: LaunchSpec) -> LaunchSpec:
        if provider == "static":  # nothing is launched: the endpoint's own key reaches it
            engine = EngineSecrets(api_key=static_key)
            spec = base
        else:
            if demand.hf_token_secret is not None:  # both providers take it in the create's `env`
                token = await read_hf_token(record.owner, demand.hf_token_secret)
                base = replace(base, env={**base.env, HF_TOKEN_ENV: token})
            spec, engine = rented_launch(provider, record, demand, base)
        manifest = instance_secret(namespace, pool, record, provider, engine)
        await kube.retry(lambda: kube.apply(manifest, FIELD_MANAGER))
        return spec

    return launch


async def read_access(namespace: str, instance: str) -> InstanceAccess | None:
    secret = await kube.retry(lambda: kube.get("Secret", namespace, secret_name(instance)))
    if secret is None:
        return None
    try:
        return access_from_secret(secret, operator_settings().burst_providers)
    except ValueError as err:
        log.warning("event=burst_secret_invalid instance=%s reason=%r", instance, str(err))
        return None


def make_probe(namespace: str) -> Probe:
    """Serving means: Running, an endpoint, and /health answering 200 over the expected TLS."""
    cache: dict[str, InstanceAccess] = {}

    async def probe(record: InstanceStatus) -> bool:
        if record.phase != "Running" or not record.endpoint:
            return False
        access = cache.get(record.name) or await read_access(namespace, record.name)
        if access is None:
            return False
        cache[record.name] = access
        try:
            async with httpx.AsyncClient(
                verify=access.ssl_context, timeout=PROBE_TIMEOUT_SECONDS, trust_env=False
            ) as http:
                response = await http.get(
                    record.endpoint.rstrip("/") + "/health",
                    headers={"Authorization": f"Bearer {access.api_key}"},
                )
        except httpx.HTTPError as err:
            log.info("event=burst_probe_failed instance=%s error=%s", record.name, type(err).__name__)
            return False
        if response.status_code == 200:
            cache.pop(record.name, None)
            return True
        log.info("event=burst_probe_failed instance=%s status=%d", record.name, response.status_code)
        return False

    return probe
