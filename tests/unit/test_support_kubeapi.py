"""The tests' HTTP reader of Kubernetes objects: which kubeconfigs and kinds it takes, and the URLs it reads."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.kubeapi import ApiReader


def kubeconfig(tmp_path: Path, user: dict[str, str]) -> Path:
    config = {
        "current-context": "dev",
        "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [
            {"name": "c", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority-data": "x"}}
        ],
        "users": [{"name": "u", "user": user}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_urls_follow_kubectls_names_and_default_namespace() -> None:
    assert (
        ApiReader.path("llms", "ai", "llama") == "/apis/llmserve.dev/v1alpha1/namespaces/ai/llmserves/llama"
    )
    assert ApiReader.path("pods", "ai") == "/api/v1/namespaces/ai/pods"
    assert ApiReader.path("burstpool", "ignored", "pool") == "/apis/llmserve.dev/v1alpha1/burstpools/pool"
    assert ApiReader.path("deployment", None, "x") == "/apis/apps/v1/namespaces/default/deployments/x"


def test_unknown_kinds_and_non_file_credentials_are_left_to_kubectl(tmp_path: Path) -> None:
    assert ApiReader.path("events", "ai") is None
    # kind's kubeconfig: inline certificate data, no files
    assert ApiReader.from_kubeconfig(kubeconfig(tmp_path, {"client-certificate-data": "x"})) is None
    assert ApiReader.from_kubeconfig(kubeconfig(tmp_path, {"token": "t"})) is None
