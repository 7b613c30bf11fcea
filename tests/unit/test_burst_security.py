"""Per-instance keys, self-signed TLS material, the vLLM launch spec, and the static-endpoint provider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from llmserve.burst.security import (
    GUARD_PATH,
    TLS_DIR,
    EngineRequest,
    fingerprint_matches,
    fingerprint_of_pem,
    mint_api_key,
    mint_tls,
    vllm_launch_spec,
)
from llmserve.burst.static import StaticEndpoint, StaticProvider
from llmserve.burst.types import (
    ErrorKind,
    LaunchSpec,
    OfferQuery,
    Phase,
    ProviderError,
    instance_name,
    owned_by,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
REQUEST = EngineRequest(cluster_id="c0ffee42", owner="ai/llama-8b", slot=3, image="vllm/vllm-openai:v0.11.0",
                        model="meta-llama/Llama-3.1-8B-Instruct", served_model_name="llama",
                        gpu_type="NVIDIA H100 80GB HBM3", gpus=2, max_usd_per_hour=6.0)  # fmt: skip


def test_api_keys_are_fresh_long_and_recognisable() -> None:
    keys = {mint_api_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(k.startswith("llmsk-") and len(k) >= 48 for k in keys)


def test_certificate_is_self_signed_for_the_instance_and_its_fingerprint_pins_it() -> None:
    tls = mint_tls("llms-c0ffee42-abc-0", NOW, ("127.0.0.1",))
    cert = x509.load_pem_x509_certificate(tls.cert_pem.encode())
    assert cert.subject == cert.issuer
    assert cert.not_valid_before_utc <= NOW < cert.not_valid_after_utc <= NOW + timedelta(days=31)
    assert fingerprint_of_pem(tls.cert_pem) == tls.fingerprint_sha256
    der = cert.public_bytes(serialization.Encoding.DER)
    assert fingerprint_matches(der, tls.fingerprint_sha256.upper())
    assert not fingerprint_matches(der, mint_tls("other", NOW).fingerprint_sha256)
    assert tls.key_pem not in repr(tls)


def test_runpod_launch_spec_has_a_key_and_relies_on_the_https_proxy() -> None:
    spec, secrets = vllm_launch_spec("runpod", REQUEST, NOW)
    args = list(spec.args)
    assert args[args.index("--api-key") + 1] == secrets.api_key
    assert "--ssl-certfile" not in args and set(spec.files) == {GUARD_PATH} and secrets.tls_cert_pem is None
    assert args[args.index("--tensor-parallel-size") + 1] == "2" and args[args.index("--port") + 1] == "8000"
    assert spec.name == instance_name("c0ffee42", "ai/llama-8b", 3) and owned_by(spec.name, "c0ffee42")


def test_vast_launch_spec_serves_tls_from_delivered_files_with_a_pinnable_certificate() -> None:
    spec, secrets = vllm_launch_spec("vastai", REQUEST, NOW)
    args = list(spec.args)
    cert_path, key_path = args[args.index("--ssl-certfile") + 1], args[args.index("--ssl-keyfile") + 1]
    assert cert_path.startswith(TLS_DIR) and set(spec.files) == {cert_path, key_path, GUARD_PATH}
    assert spec.files[cert_path] == secrets.tls_cert_pem
    assert secrets.tls_fingerprint_sha256 == fingerprint_of_pem(spec.files[cert_path])
    assert "PRIVATE KEY" in spec.files[key_path]


def test_secrets_do_not_show_in_a_logged_spec_or_secrets_object() -> None:
    spec, secrets = vllm_launch_spec("vastai", REQUEST, NOW)
    text = repr(spec) + str(spec) + repr(secrets)
    assert secrets.api_key not in text and "PRIVATE KEY" not in text
    assert spec.name in repr(spec)


def test_each_launch_gets_its_own_key_and_certificate() -> None:
    (_, first), (_, second) = (
        vllm_launch_spec("vastai", REQUEST, NOW),
        vllm_launch_spec("vastai", REQUEST, NOW),
    )
    assert first.api_key != second.api_key and first.tls_fingerprint_sha256 != second.tls_fingerprint_sha256


# -- static endpoints ----------------------------------------------------------------------------


def static_spec(name: str, max_usd: float = 10.0) -> LaunchSpec:
    return LaunchSpec(name=name, cluster_id="c1", image="", args=(), env={}, port=8000, gpu_type="H100", gpus=1,
                      max_usd_per_hour=max_usd)  # fmt: skip


async def test_static_endpoints_are_claimed_slot_by_slot_and_released() -> None:
    provider = StaticProvider(
        [StaticEndpoint("https://llm.internal/", "k-0", usd_per_hour=2.0, count=2, gpu_type="H100")]
    )
    [offer] = await provider.list_offers(OfferQuery("H100", 1, 5.0))
    first = await provider.create(static_spec("a"), offer)
    second = await provider.create(static_spec("b"), offer)
    assert (first.phase, first.endpoint, first.usd_per_hour) == (Phase.RUNNING, "https://llm.internal", 2.0)
    assert first.id != second.id and provider.api_key(first.id) == "k-0"
    assert await provider.list_offers(OfferQuery("H100", 1, 5.0)) == []  # both slots taken
    with pytest.raises(ProviderError) as full:
        await provider.create(static_spec("c"), offer)
    assert full.value.kind is ErrorKind.CAPACITY
    assert (await provider.create(static_spec("a"), offer)).id == first.id  # same name, same claim
    assert {i.name for i in await provider.list_owned("c1")} == {"a", "b"}
    await provider.terminate(first.id)
    await provider.terminate(first.id)  # releasing twice is fine
    with pytest.raises(ProviderError) as gone:
        await provider.get(first.id)
    assert gone.value.kind is ErrorKind.NOT_FOUND
    assert len(await provider.list_offers(OfferQuery("H100", 1, 5.0))) == 1


async def test_static_offers_respect_price_and_gpu_type() -> None:
    provider = StaticProvider([StaticEndpoint("http://a", "k", usd_per_hour=9.0, gpu_type="H100"),
                               StaticEndpoint("http://b", "k", usd_per_hour=1.0, gpu_type="L4")])  # fmt: skip
    assert await provider.list_offers(OfferQuery("H100", 1, 5.0)) == []
    assert [o.offer_id for o in await provider.list_offers(OfferQuery("L4", 1, 5.0))] == ["1"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"url": "llm.internal"}, "url must start with"), ({"count": 0}, "count must be at least 1"),
     ({"usd_per_hour": -1.0}, "usd_per_hour must not be negative")],
)  # fmt: skip
def test_static_endpoint_config_errors_name_the_field(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"url": "https://x", "api_key": "k", **kwargs}
    with pytest.raises(ValueError, match=message):
        StaticEndpoint(**fields)  # type: ignore[arg-type]


def test_static_endpoint_key_is_not_in_its_repr() -> None:
    assert "sekrit" not in repr(StaticEndpoint("https://x", "sekrit"))


def test_every_client_satisfies_the_provider_protocol() -> None:
    from llmserve.burst.runpod import RunPodProvider
    from llmserve.burst.types import Provider
    from llmserve.burst.vastai import VastProvider

    providers: list[Provider] = [RunPodProvider("k"), VastProvider("k"), StaticProvider([])]
    assert [p.name for p in providers if isinstance(p, Provider)] == ["runpod", "vastai", "static"]


def test_build_provider_names_the_field_on_a_bad_kind_and_builds_each_kind() -> None:
    from llmserve.burst.providers import build_provider

    with pytest.raises(ValueError, match="provider must be one of runpod, vastai, static, got 'lambda'"):
        build_provider("lambda", "k")
    with pytest.raises(ValueError, match="static needs at least one endpoint"):
        build_provider("static")
    built = [build_provider("runpod", "k", base_url="http://127.0.0.1:1"), build_provider("vastai", "k"),
             build_provider("static", static_endpoints=[StaticEndpoint("https://x", "k")])]  # fmt: skip
    assert [p.name for p in built] == ["runpod", "vastai", "static"]
