"""The LLMServe models: defaults a user relies on, and errors that name the field."""

import pytest
from pydantic import ValidationError

from llmserve.api import LLMServeSpec
from llmserve.controller.reconcile import parse_spec


def test_minimal_spec_gets_documented_defaults() -> None:
    spec = LLMServeSpec.model_validate({"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}})
    assert spec.engine.kind == "vllm"
    assert spec.resources.gpus == 1
    assert (spec.min_replicas, spec.max_replicas) == (1, 4)
    assert spec.desired_replicas() == 1
    assert spec.served_name("llama") == "llama"
    assert spec.autoscaling.enabled and spec.autoscaling.queue_depth_target == 4


def test_replicas_when_set_win_over_min() -> None:
    spec = LLMServeSpec.model_validate({"model": {"name": "m"}, "replicas": 3})
    assert spec.desired_replicas() == 3


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"minReplicas": 5, "maxReplicas": 2}, "minReplicas"),
        ({"replicas": 9, "maxReplicas": 4}, "replicas"),
        ({"resources": {"gpus": -1}}, "resources.gpus"),
        ({"engine": {"kind": "tgi"}}, "engine.kind"),
        ({"autoscaling": {"kvCacheTarget": 1.5}}, "autoscaling.kvCacheTarget"),
        ({"resources": {"memory": "lots"}}, "resources.memory"),
        ({"resources": {"gpuProduct": "NVIDIA H100"}}, "resources.gpuProduct"),
        ({"engine": {"image": "vllm/vllm-openai:v0.11.0 --rm"}}, "engine.image"),
        ({"engine": {"image": "VLLM/Openai"}}, "engine.image"),
        ({"model": {"name": "m", "hfTokenSecret": {"name": "HF_Token"}}}, "model.hfTokenSecret.name"),
        ({"model": {"name": "m", "hfTokenSecret": {"name": "hf", "key": "a/b"}}}, "model.hfTokenSecret.key"),
        ({"modelCache": {"claimName": "Weights_1"}}, "modelCache.claimName"),
        ({"modelCache": {"claimName": "w", "mountPath": "/dev/shm"}}, "modelCache.mountPath"),
        ({"modelCache": {"claimName": "w", "mountPath": "/dev/shm/"}}, "modelCache.mountPath"),
        ({"modelCache": {"claimName": "w", "mountPath": "/dev/shm/hf"}}, "modelCache.mountPath"),
        ({"modelCache": {"claimName": "w", "mountPath": "/dev"}}, "modelCache.mountPath"),
        ({"modelCache": {"claimName": "w", "mountPath": "/"}}, "modelCache.mountPath"),
        ({"modelCache": {"claimName": "w", "mountPath": "/models/../etc"}}, "modelCache.mountPath"),
        ({"modelCache": {"claimName": "w", "mountPath": "models"}}, "modelCache.mountPath"),
    ],
)
def test_invalid_spec_message_names_the_field(patch: dict[str, object], field: str) -> None:
    spec, error = parse_spec({"model": {"name": "m"}, **patch})
    assert spec is None
    assert field.split(".")[-1] in error


def test_missing_model_is_refused() -> None:
    with pytest.raises(ValidationError, match="model"):
        LLMServeSpec.model_validate({})


def test_unknown_field_is_refused_rather_than_ignored() -> None:
    _, error = parse_spec({"model": {"name": "m"}, "replica": 2})
    assert "replica" in error


def test_simulator_may_run_without_gpus_but_vllm_may_not() -> None:
    assert LLMServeSpec.model_validate(
        {"model": {"name": "m"}, "engine": {"kind": "simulator"}, "resources": {"gpus": 0}}
    )
    _, error = parse_spec({"model": {"name": "m"}, "resources": {"gpus": 0}})
    assert "gpus" in error


@pytest.mark.parametrize(
    "image",
    [
        "vllm/vllm-openai:v0.11.0",
        "ghcr.io/llmserve/llmserve-sim:0.1.0",
        "localhost:5000/team/vllm_custom:2026.11-cu128",
        "registry.example.com/vllm@sha256:" + "a" * 64,
        "nvcr.io/nvidia/tritonserver:25.01-vllm-python-py3",
    ],
)
def test_ordinary_image_references_are_accepted(image: str) -> None:
    spec, error = parse_spec({"model": {"name": "m"}, "engine": {"image": image}})
    assert spec is not None, error


def test_a_model_cache_elsewhere_and_dotted_secret_and_claim_names_are_accepted() -> None:
    spec, error = parse_spec({"model": {"name": "m", "hfTokenSecret": {"name": "hf.token", "key": "HF_TOKEN"}},
                              "modelCache": {"claimName": "weights.v2", "mountPath": "/dev-cache/hf"}})  # fmt: skip
    assert spec is not None, error
