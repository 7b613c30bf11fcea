"""Locks down an engine pod: engine API key from its Secret, least privilege, HF token as a file (pure).

What each setting buys (docs/security.md):
- `VLLM_API_KEY` from the LLMServe's engine-key Secret: vLLM (and the simulator) refuse /v1/* without
  `Authorization: Bearer <key>`, so only the gateway, which derives the key, can use the engine.
- no service-account token: an engine never talks to the Kubernetes API, so a compromised engine
  (it runs model code and tokenizers from the Hub) gets no credentials.
- `allowPrivilegeEscalation: false`, all capabilities dropped, seccomp RuntimeDefault: nothing the
  engine does needs them. `runAsNonRoot` is set only for the simulator image (uid 65532): the
  vllm/vllm-openai image runs as root and writes its caches under /root, so forcing a non-root user
  there would break stock deployments; users with a non-root vLLM image can add it via their image.
- the Hugging Face token as a mounted file (`HF_TOKEN_PATH`, read by huggingface_hub, which vLLM uses
  for downloads) instead of an environment variable, which `/proc/<pid>/environ`, crash dumps and
  child processes would see.
"""

from __future__ import annotations

from typing import Any

from llmserve.api.llmserve import LLMServeSpec
from llmserve.render.engine_key import ENGINE_KEY_FIELD, engine_key_secret_name

Manifest = dict[str, Any]

ENGINE_KEY_ENV = "VLLM_API_KEY"
HF_TOKEN_DIR = "/var/run/secrets/llmserve/hf"
HF_TOKEN_FILE = "token"
KEY_FINGERPRINT_ANNOTATION = "llmserve.dev/engine-key-fingerprint"
NON_ROOT_UID = 65532  # the llmserve image's user (Dockerfile)


def container_security_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context(spec: LLMServeSpec) -> Manifest:
    context: Manifest = {"seccompProfile": {"type": "RuntimeDefault"}}
    if spec.engine.kind == "simulator" and not spec.engine.image:
        context |= {"runAsNonRoot": True, "runAsUser": NON_ROOT_UID, "runAsGroup": NON_ROOT_UID}
    return context


def engine_key_env(name: str) -> Manifest:
    ref = {"name": engine_key_secret_name(name), "key": ENGINE_KEY_FIELD}
    return {"name": ENGINE_KEY_ENV, "valueFrom": {"secretKeyRef": ref}}


def hf_token_volume(spec: LLMServeSpec) -> tuple[Manifest, Manifest, Manifest] | None:
    """(volume, mount, env) that present the Hugging Face token as a read-only file, or None."""
    ref = spec.model.hf_token_secret
    if ref is None:
        return None
    volume = {
        "name": "hf-token",
        "secret": {
            "secretName": ref.name,
            "items": [{"key": ref.key, "path": HF_TOKEN_FILE}],
            "defaultMode": 0o440,
        },
    }
    mount = {"name": "hf-token", "mountPath": HF_TOKEN_DIR, "readOnly": True}
    env = {"name": "HF_TOKEN_PATH", "value": f"{HF_TOKEN_DIR}/{HF_TOKEN_FILE}"}
    return volume, mount, env


def secure_engine_pod(name: str, spec: LLMServeSpec, pod_spec: Manifest) -> Manifest:
    """Returns the pod spec with the engine key, the security contexts and the HF token file added."""
    container = pod_spec["containers"][0]
    env = [var for var in container.get("env", []) if var.get("name") != ENGINE_KEY_ENV]
    env.append(engine_key_env(name))
    hf = hf_token_volume(spec)
    if hf is not None:
        volume, mount, hf_env = hf
        pod_spec["volumes"] = [*pod_spec.get("volumes", []), volume]
        container["volumeMounts"] = [*container.get("volumeMounts", []), mount]
        env.append(hf_env)
    container["env"] = env
    container["securityContext"] = container_security_context()
    pod_spec["securityContext"] = pod_security_context(spec)
    pod_spec["automountServiceAccountToken"] = False
    pod_spec["enableServiceLinks"] = False  # no env vars describing every Service of the namespace
    return pod_spec


def with_key_fingerprint(deployment: Manifest, fingerprint: str) -> Manifest:
    """Marks the pod template with the key's fingerprint: a new key (new master) rolls the engines."""
    template_meta = deployment["spec"]["template"]["metadata"]
    template_meta["annotations"] = {
        **template_meta.get("annotations", {}),
        KEY_FINGERPRINT_ANNOTATION: fingerprint,
    }
    return deployment
