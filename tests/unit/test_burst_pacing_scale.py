"""LLMSERVE_BURST_<PROVIDER>_PACING_SCALE: the documented minimum intervals between Vast.ai calls, scaled
for a fake provider on loopback, read into the operator's settings; unset means the documented pacing, and a bad value names the variable."""

from __future__ import annotations

import pytest

from llmserve.burst import vastai
from llmserve.burst.factory import make_provider
from llmserve.burst.types import ErrorKind, ProviderError
from llmserve.burst.vastai import VastProvider
from llmserve.settings import burst_overrides
from tests.unit.test_burst_factory import KEY, spec

VARIABLE = "LLMSERVE_BURST_VASTAI_PACING_SCALE"


def intervals(provider: object) -> dict[str, float]:
    assert isinstance(provider, VastProvider)
    return dict(provider._http._min_interval)


def test_unset_the_vast_client_keeps_the_documented_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    assert (
        intervals(make_provider(spec("vastai"), KEY, burst_overrides()))
        == vastai.DOCUMENTED_MIN_INTERVAL_SECONDS
    )


def test_a_scale_multiplies_every_documented_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, "0.1")
    scaled = intervals(make_provider(spec("vastai"), KEY, burst_overrides()))
    assert scaled.keys() == vastai.DOCUMENTED_MIN_INTERVAL_SECONDS.keys()
    for endpoint, seconds in vastai.DOCUMENTED_MIN_INTERVAL_SECONDS.items():
        assert scaled[endpoint] == pytest.approx(seconds * 0.1), endpoint


@pytest.mark.parametrize("value", ["fast", "-1"])
def test_a_bad_scale_is_an_invalid_pool_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(VARIABLE, value)
    with pytest.raises(ProviderError) as refused:
        make_provider(spec("vastai"), KEY, burst_overrides())
    assert refused.value.kind is ErrorKind.INVALID and VARIABLE in str(refused.value)
