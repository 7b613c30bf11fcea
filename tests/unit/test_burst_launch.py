"""The launch spec and instance Secret of a rented engine: key in args, TLS pinned for Vast, nothing stale."""

from __future__ import annotations

import base64

import pytest

from llmserve.api.burstpool import InstanceStatus
from llmserve.burst.backends import access_from_secret
from llmserve.burst.planner import Demand
from llmserve.burst.security import GUARD_PATH, fingerprint_matches
from llmserve.burst.types import LaunchSpec, instance_name
from llmserve.controller.burst_launch import instance_secret, rented_launch

POOL = {"apiVersion": "llmserve.dev/v1alpha1", "metadata": {"name": "p", "uid": "u-1"}}
DEMAND = Demand(owner="ai/llama", max_replicas=2, unschedulable_replicas=1, local_ready_replicas=0,
                model="meta-llama/Llama-3.1-8B-Instruct", served_model_name="llama",
                extra_args=("--max-model-len", "4096"))  # fmt: skip


def record(slot: int = 3) -> InstanceStatus:
    name = instance_name("c1", "ai/llama", slot)
    return InstanceStatus(
        name=name, owner="ai/llama", slot=slot, phase="Requested", created="2026-01-01T00:00:00Z"
    )


def base(rec: InstanceStatus) -> LaunchSpec:
    return LaunchSpec(name=rec.name, cluster_id="c1", image="vllm/vllm-openai:v0.11.0", args=(), env={"A": "1"},
                      port=8000, gpu_type="RTX_4090", gpus=2, max_usd_per_hour=1.5)  # fmt: skip


@pytest.mark.parametrize("provider", ["runpod", "vastai"])
def test_each_rented_engine_gets_its_own_key_and_the_secret_says_how_to_reach_it(provider: str) -> None:
    rec = record()
    spec, engine = rented_launch(provider, rec, DEMAND, base(rec))
    args = list(spec.args)
    assert args[args.index("--api-key") + 1] == engine.api_key
    assert args[args.index("--served-model-name") + 1] == "llama"
    assert args[args.index("--tensor-parallel-size") + 1] == "2" and "--max-model-len" in args
    assert spec.name == rec.name and spec.env == {"A": "1"} and spec.gpus == 2
    assert engine.api_key not in repr(spec) and engine.api_key not in repr(engine)
    other, _ = rented_launch(provider, rec, DEMAND, base(rec))
    assert other.args[other.args.index("--api-key") + 1] != engine.api_key  # minted per instance

    secret = instance_secret("sys", POOL, rec, provider, engine)
    assert secret["metadata"]["name"] == f"burst-{rec.name}"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    access = access_from_secret(secret)
    assert access.api_key == engine.api_key
    if provider == "vastai":  # the engine serves TLS itself: the certificate is pinned, its key not kept
        assert "--ssl-certfile" in args and spec.files
        assert access.pinned and engine.tls_fingerprint_sha256
        assert all("PRIVATE KEY" not in base64.b64decode(v).decode() for v in secret["data"].values())
        cert_der = access.ssl_context.get_ca_certs(binary_form=True)[0]
        assert fingerprint_matches(cert_der, engine.tls_fingerprint_sha256)
    else:  # RunPod's HTTPS proxy terminates TLS: the engine speaks plain HTTP behind it
        assert "--ssl-certfile" not in args and set(spec.files) == {GUARD_PATH} and not access.pinned


def test_a_secret_whose_certificate_does_not_match_its_fingerprint_is_refused() -> None:
    rec = record()
    _, engine = rented_launch("vastai", rec, DEMAND, base(rec))
    secret = instance_secret("sys", POOL, rec, "vastai", engine)
    _, other = rented_launch("vastai", rec, DEMAND, base(rec))
    secret["data"]["tlsCert"] = base64.b64encode((other.tls_cert_pem or "").encode()).decode()
    with pytest.raises(ValueError, match="does not match") as err:
        access_from_secret(secret)
    assert engine.api_key not in str(err.value)


def test_a_secret_without_a_key_is_refused_by_field_name() -> None:
    with pytest.raises(ValueError, match="apiKey"):
        access_from_secret({"data": {}})
