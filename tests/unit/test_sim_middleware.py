"""The simulator's `--middleware`: imported as vLLM imports it; only request guards are applied."""

from __future__ import annotations

import pytest

from llmserve.sim.middleware import MiddlewareError, guard_middleware, import_middleware


def test_an_import_path_that_does_not_import_stops_the_simulator_like_vllm() -> None:
    with pytest.raises(MiddlewareError, match="cannot be imported"):
        guard_middleware("no_such_module_here.Guard")
    with pytest.raises(MiddlewareError, match="cannot be imported"):
        guard_middleware("json.NoSuchObject")
    with pytest.raises(MiddlewareError, match="expected an import path"):
        guard_middleware("Guard")


def test_a_middleware_that_is_no_request_guard_is_refused_not_silently_skipped() -> None:
    with pytest.raises(MiddlewareError, match="only request guards"):
        guard_middleware("json.JSONDecoder")


def test_the_engine_guard_is_imported_by_its_import_path() -> None:
    guard = import_middleware("llmserve.burst.engine_guard.EngineKeyGuard")
    assert guard.__name__ == "EngineKeyGuard"
    assert callable(guard_middleware("llmserve.burst.engine_guard.EngineKeyGuard"))
