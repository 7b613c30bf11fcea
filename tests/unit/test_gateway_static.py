"""The static configuration file (running without a cluster)."""

from __future__ import annotations

import pytest

from llmserve.gateway.static import load_config

EXAMPLE = """
models:
  - name: llama-8b
    backends:
      - http://127.0.0.1:8001/
      - url: https://rented.example:8000
        apiKey: instance-secret
keys:
  - name: team-a
    key: sk-team-a-0123456789
    models: [llama-8b]
    requestsPerMinute: 60
"""


def test_models_backends_and_keys_are_read() -> None:
    config = load_config(EXAMPLE)
    (route,) = config.routes
    assert route.served_name == "llama-8b" and route.llmserve is None
    assert [b.url for b in route.backends] == ["http://127.0.0.1:8001", "https://rented.example:8000"]
    assert route.backends[1].headers == (("Authorization", "Bearer instance-secret"),)
    assert route.backends[1].label == "rented.example:8000"
    (key,) = config.keys
    assert key.name == "team-a" and key.models == frozenset({"llama-8b"}) and key.requests_per_minute == 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a list", "top level: expected a mapping"),
        ("models: []\nbackends: []", "unknown fields"),
        ("models: [{backends: []}]", r"models\[0\].name"),
        ("models: [{name: m, backends: [localhost:8000]}]", r"models\[0\].backends\[0\].url"),
        ("keys: [{name: k, key: short}]", r"keys\[0\]: key must be at least"),
        ("models: [", "not valid YAML"),
    ],
)
def test_mistakes_are_reported_with_their_location(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(text)
