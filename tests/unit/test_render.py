"""The engine Deployment and Service rendered from a spec."""

from typing import Any

from llmserve.api import LLMServeSpec
from llmserve.render.engine import render_deployment, render_service


def _spec(**extra: Any) -> LLMServeSpec:
    return LLMServeSpec.model_validate({"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, **extra})


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_vllm_deployment_requests_gpus_on_the_right_product() -> None:
    spec = _spec(
        resources={"gpus": 2, "gpuProduct": "NVIDIA-H100-80GB-HBM3"},
        engine={"args": ["--max-model-len=8192"]},
    )
    deployment = render_deployment("llama", "ai", "uid-1", spec)
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert container["command"] == ["vllm", "serve"]
    args = container["args"]
    assert args[0] == "meta-llama/Llama-3.1-8B-Instruct"
    assert args[args.index("--served-model-name") + 1] == "llama"
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[-1] == "--max-model-len=8192"
    assert container["ports"][0]["containerPort"] == 8000


def test_deployment_is_owned_and_labelled() -> None:
    deployment = render_deployment("llama", "ai", "uid-1", _spec(replicas=3, maxReplicas=4))
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("LLMServe", "uid-1", True)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "llama"
    assert labels["app.kubernetes.io/managed-by"] == "llmserve-operator"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] == 3
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"


def test_probes_allow_a_slow_model_load() -> None:
    container = _container(render_deployment("llama", "ai", "u", _spec()))
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def test_shm_cache_and_token_are_wired() -> None:
    spec = _spec(
        model={"name": "m", "hfTokenSecret": {"name": "hf"}},
        modelCache={"claimName": "models", "mountPath": "/models"},
    )
    deployment = render_deployment("llama", "ai", "u", spec)
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["model-cache"]["persistentVolumeClaim"]["claimName"] == "models"
    env = {e["name"]: e for e in _container(deployment)["env"]}
    # The token is a mounted file (HF_TOKEN_PATH), never an environment variable.
    assert "HF_TOKEN" not in env
    assert volumes["hf-token"]["secret"]["secretName"] == "hf"
    assert volumes["hf-token"]["secret"]["items"] == [{"key": "HF_TOKEN", "path": "token"}]
    assert env["HF_TOKEN_PATH"]["value"] == "/var/run/secrets/llmserve/hf/token"
    assert env["HF_HOME"]["value"] == "/models"


def test_simulator_engine_keeps_the_same_shape() -> None:
    spec = _spec(engine={"kind": "simulator"})
    vllm = render_deployment("llama", "ai", "u", _spec())
    sim = render_deployment("llama", "ai", "u", spec)
    assert _container(sim)["command"] == ["llmserve", "sim", "engine"]
    assert _container(sim)["args"] == _container(vllm)["args"]
    assert _container(sim)["resources"] == _container(vllm)["resources"]


def test_service_selects_the_engine_pods_on_port_8000() -> None:
    service = render_service("llama", "ai", "u", _spec())
    deployment = render_deployment("llama", "ai", "u", _spec())
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 8000
