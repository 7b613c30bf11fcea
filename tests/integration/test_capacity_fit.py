"""CapacityFit on the dev cluster: it fires on a manifest whose batch cannot fit, stays quiet on one that fits,
and never blocks a model it does not know."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.cluster import ClusterHandle, OperatorProcess, condition, wait_for
from tests.support.manifests import llmserve, wait_ready

pytestmark = pytest.mark.cluster

ARGS_8K_32 = ["--max-model-len=8192", "--max-num-seqs=32"]


def fit_condition(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, Any]:
    return wait_for(lambda: condition(cluster.get("llmserve", name, namespace), "CapacityFit"),
                    timeout=30, message=f"CapacityFit on {namespace}/{name}")  # fmt: skip


def events_of(cluster: ClusterHandle, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "events", "-n", namespace, "-o", "json",
                          "--field-selector", f"involvedObject.kind=LLMServe,involvedObject.name={name}").stdout  # fmt: skip
    return list(json.loads(out)["items"])


def manifest(name: str, model: str, product: str, args: list[str], gpus: int = 1) -> dict[str, Any]:
    return llmserve(
        name,
        model={"name": model, "servedName": name},
        engine={"kind": "simulator", "args": args},
        resources={"gpus": gpus, "gpuProduct": product},
    )


def test_a_batch_that_fits_an_h100_is_quiet_and_the_same_on_an_l4_is_not(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(
        manifest("roomy", "meta-llama/Llama-3.1-8B-Instruct", "NVIDIA-H100-80GB-HBM3", ARGS_8K_32), namespace
    )
    cluster.apply(manifest("tight", "meta-llama/Llama-3.1-8B-Instruct", "NVIDIA-L4", ARGS_8K_32), namespace)

    tight = fit_condition(cluster, namespace, "tight")
    assert (tight["status"], tight["reason"]) == ("False", "BatchDoesNotFit")
    assert "KV for 32 sequences \u00d7 8,192 tokens needs 32 GiB; 3.3 GiB is left" in tight["message"]
    assert "at most 3 full sequences" in tight["message"]
    warning = wait_for(lambda: [e for e in events_of(cluster, namespace, "tight") if e["reason"] == "BatchDoesNotFit"],
                       timeout=30, message="the BatchDoesNotFit Event")[0]  # fmt: skip
    assert warning["type"] == "Warning" and warning["message"] == tight["message"]

    roomy = fit_condition(cluster, namespace, "roomy")
    assert (roomy["status"], roomy["reason"]) == ("True", "Fits")
    assert roomy["message"].endswith("54 full sequences fit")
    obj = wait_ready(cluster, namespace, "roomy", 1)
    # The reconciler's own status writes keep the condition, and it was applied under its own manager.
    assert condition(obj, "CapacityFit")["reason"] == "Fits"
    full = json.loads(
        cluster.kubectl(
            "get", "llmserve", "roomy", "-n", namespace, "-o", "json", "--show-managed-fields"
        ).stdout
    )
    managers = {
        (m["manager"], m["operation"], m.get("subresource")) for m in full["metadata"]["managedFields"]
    }
    assert ("llmserve-capacityfit", "Apply", "status") in managers
    quiet = [e for e in events_of(cluster, namespace, "roomy") if e["type"] == "Warning"]
    assert quiet == []

    # Fixing the manifest (fewer sequences) turns the condition True on the next generation.
    fixed = manifest(
        "tight", "meta-llama/Llama-3.1-8B-Instruct", "NVIDIA-L4", ["--max-model-len=8192", "--max-num-seqs=3"]
    )
    cluster.apply(fixed, namespace)
    wait_for(lambda: condition(cluster.get("llmserve", "tight", namespace), "CapacityFit").get("status") == "True",
             timeout=30, message="CapacityFit True after the fix")  # fmt: skip


def test_a_model_too_big_for_its_gpu_is_reported_before_it_runs(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(
        manifest("huge", "meta-llama/Llama-3.3-70B-Instruct", "NVIDIA-H100-80GB-HBM3", ARGS_8K_32), namespace
    )
    huge = fit_condition(cluster, namespace, "huge")
    assert (huge["status"], huge["reason"]) == ("False", "WeightsDoNotFit")
    assert "weights need 132 GiB" in huge["message"] and "cannot load" in huge["message"]


def test_an_unknown_model_is_not_blocked_and_says_it_could_not_check(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(manifest("private", "acme/private-model", "NVIDIA-H100-80GB-HBM3", ARGS_8K_32), namespace)
    unknown = fit_condition(cluster, namespace, "private")
    assert (unknown["status"], unknown["reason"]) == ("Unknown", "ModelUnknown")
    assert "could not check" in unknown["message"]
    wait_ready(cluster, namespace, "private", 1)  # not blocked: the replica runs
    # Describing the model's shape lets the check run.
    described = manifest("private", "acme/private-model", "NVIDIA-H100-80GB-HBM3", ARGS_8K_32)
    described["spec"]["model"]["shape"] = {
        "parametersBillions": 8,
        "numLayers": 32,
        "numKvHeads": 8,
        "headDim": 128,
    }
    cluster.apply(described, namespace)
    wait_for(lambda: condition(cluster.get("llmserve", "private", namespace), "CapacityFit").get("reason") == "Fits",
             timeout=30, message="CapacityFit Fits once the shape is given")  # fmt: skip


def test_without_a_gpu_product_the_nodes_gpus_are_checked(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    unpinned = llmserve(
        "anywhere",
        model={"name": "meta-llama/Llama-3.1-8B-Instruct", "servedName": "anywhere"},
        engine={"kind": "simulator", "args": ARGS_8K_32},
        resources={"gpus": 1},
    )
    cluster.apply(unpinned, namespace)
    fit = fit_condition(cluster, namespace, "anywhere")
    # The dev cluster's fake nodes are labelled nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3.
    assert (fit["status"], fit["reason"]) == ("True", "Fits")
    assert fit["message"].startswith(
        "spec.resources.gpuProduct is not set; on the cluster's smallest GPU (NVIDIA-H100-80GB-HBM3): KV for 32"
    )
