"""Renders an LLMServe's engine Deployment and Service (pure: spec in, manifests out)."""

from __future__ import annotations

from typing import Any

from llmserve.api.llmserve import (
    DEFAULT_SIMULATOR_IMAGE,
    DEFAULT_VLLM_IMAGE,
    ENGINE_PORT,
    SHM_MOUNT_PATH,
    LLMServeSpec,
)
from llmserve.render.drain import apply_drain
from llmserve.render.labels import common_labels, owner_reference, selector_labels
from llmserve.render.security import secure_engine_pod

Manifest = dict[str, Any]

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
SERVED_NAME_ANNOTATION = "llmserve.dev/served-model-name"
SHM_MOUNT = SHM_MOUNT_PATH

# Model loads can take many minutes (download + weight load + CUDA graph capture): the startup probe
# allows 30 minutes before liveness takes over, so a slow load is never killed as a hang.
STARTUP_PERIOD_SECONDS = 10
STARTUP_FAILURE_THRESHOLD = 180


def engine_command(spec: LLMServeSpec) -> list[str]:
    if spec.engine.kind == "simulator":
        return ["llmserve", "sim", "engine"]
    return ["vllm", "serve"]


def engine_args(name: str, spec: LLMServeSpec) -> list[str]:
    """Arguments in `vllm serve MODEL ...` form; the simulator accepts the same ones."""
    args = [
        spec.model.name,
        "--served-model-name",
        spec.served_name(name),
        "--host",
        "0.0.0.0",
        "--port",
        str(ENGINE_PORT),
    ]
    if spec.resources.gpus > 1:
        args += ["--tensor-parallel-size", str(spec.resources.gpus)]
    if spec.model.revision:
        args += ["--revision", spec.model.revision]
    return args + list(spec.engine.args)


def engine_image(spec: LLMServeSpec) -> str:
    if spec.engine.image:
        return spec.engine.image
    return DEFAULT_SIMULATOR_IMAGE if spec.engine.kind == "simulator" else DEFAULT_VLLM_IMAGE


def _env(spec: LLMServeSpec) -> list[Manifest]:
    env: list[Manifest] = []
    if spec.model_cache:
        env.append({"name": "HF_HOME", "value": spec.model_cache.mount_path})
    # The Hugging Face token is mounted as a file (render/security.py), not exported as HF_TOKEN.
    env += [{"name": var.name, "value": var.value} for var in spec.engine.env]
    return env


def _resources(spec: LLMServeSpec) -> Manifest:
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if spec.resources.gpus:
        limits[GPU_RESOURCE] = str(spec.resources.gpus)
    if spec.resources.cpu:
        limits["cpu"] = requests["cpu"] = spec.resources.cpu
    if spec.resources.memory:
        limits["memory"] = requests["memory"] = spec.resources.memory
    out: Manifest = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def _probe(period_seconds: int, failure_threshold: int) -> Manifest:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period_seconds,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def _volumes(spec: LLMServeSpec) -> tuple[list[Manifest], list[Manifest]]:
    volumes: list[Manifest] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shm_size}}
    ]
    mounts: list[Manifest] = [{"name": "dshm", "mountPath": SHM_MOUNT}]
    if spec.model_cache:
        cache = spec.model_cache
        volumes.append(
            {
                "name": "model-cache",
                "persistentVolumeClaim": {"claimName": cache.claim_name, "readOnly": cache.read_only},
            }
        )
        mounts.append({"name": "model-cache", "mountPath": cache.mount_path, "readOnly": cache.read_only})
    return volumes, mounts


def render_deployment(name: str, namespace: str, uid: str, spec: LLMServeSpec) -> Manifest:
    """The engine Deployment: one pod per replica, each with spec.resources.gpus GPUs."""
    labels = common_labels(name, spec.engine.kind)
    volumes, mounts = _volumes(spec)
    container: Manifest = {
        "name": "engine",
        "image": engine_image(spec),
        "command": engine_command(spec),
        "args": engine_args(name, spec),
        "ports": [{"name": "http", "containerPort": ENGINE_PORT, "protocol": "TCP"}],
        "env": _env(spec),
        "resources": _resources(spec),
        "volumeMounts": mounts,
        "startupProbe": _probe(STARTUP_PERIOD_SECONDS, STARTUP_FAILURE_THRESHOLD),
        "readinessProbe": _probe(5, 3),
        "livenessProbe": _probe(15, 4),
    }
    pod_spec: Manifest = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 60,
    }
    # GPU nodes carry the nvidia.com/gpu taint. A GPU replica must tolerate it; a GPU-less one (gpus: 0,
    # simulator only) tolerates it too, so it runs on any node, GPU nodes included, using none of their
    # GPUs (on an all-GPU cluster such as the dev cluster it would otherwise never schedule).
    pod_spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    if spec.resources.gpu_product:
        pod_spec["nodeSelector"] = {GPU_PRODUCT_LABEL: spec.resources.gpu_product}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": {
            "replicas": spec.desired_replicas(),
            "selector": {"matchLabels": selector_labels(name)},
            # GPUs are scarce: never take a serving replica down before its replacement is ready.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(ENGINE_PORT),
                        "prometheus.io/path": "/metrics",
                        SERVED_NAME_ANNOTATION: spec.served_name(name),
                    },
                },
                "spec": apply_drain(spec, secure_engine_pod(name, spec, pod_spec)),
            },
        },
    }


def render_service(name: str, namespace: str, uid: str, spec: LLMServeSpec) -> Manifest:
    """A ClusterIP Service in front of the engine pods, port 8000."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": common_labels(name, spec.engine.kind),
            "annotations": {SERVED_NAME_ANNOTATION: spec.served_name(name)},
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name),
            "ports": [{"name": "http", "port": ENGINE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def endpoint_url(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc:{ENGINE_PORT}/v1"
