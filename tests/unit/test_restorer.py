"""The restore retry loop's bookkeeping, with a scripted stand-in for the Reconciler (no API server)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from llmserve.controller import restore
from llmserve.controller.restore import Restorer


class ScriptedReconciler:
    """Fails `failures` times, then answers `outcome`; records each try."""

    def __init__(self, failures: int, outcome: str = "applied") -> None:
        self.restore_errors: dict[tuple[str, str], dict[str, str]] = {}
        self.failures, self.outcome = failures, outcome
        self.tries: list[int] = []

    async def restore_children(self, namespace: str, name: str, kind: str, failed_attempts: int = 0) -> str:
        self.tries.append(failed_attempts)
        if len(self.tries) <= self.failures:
            raise RuntimeError(f"refused #{len(self.tries)}")
        return self.outcome


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restore, "RETRY_DELAYS_SECONDS", (0.01, 0.02))


async def _until(check: Callable[[], bool], timeout_seconds: float = 5.0) -> None:
    async def poll() -> None:
        while not check():  # noqa: ASYNC110 (the loops under test signal nothing to wait on)
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout_seconds)


def test_a_refused_restore_is_tried_again_until_it_applies_and_the_error_is_then_cleared() -> None:
    async def scenario() -> None:
        reconciler = ScriptedReconciler(failures=3)
        restorer = Restorer(reconciler)  # type: ignore[arg-type]
        refreshes: list[dict[str, str]] = []

        def refresh() -> None:
            refreshes.append(dict(reconciler.restore_errors.get(("ai", "llama"), {})))

        outcome = await restorer.child_deleted("ai", "llama", "Deployment", refresh)
        assert outcome == "retrying error='refused #1'"
        assert reconciler.restore_errors[("ai", "llama")]["Deployment"].startswith(
            "applying Deployment llama again failed 1 time(s)"
        )
        # A second deletion event meanwhile starts no second loop.
        assert await restorer.child_deleted("ai", "llama", "Deployment", refresh) == "retry_pending"
        await _until(lambda: len(reconciler.tries) == 4 and not restorer._retrying)
        assert reconciler.tries == [0, 1, 2, 3]  # each retry tells how many tries failed before it
        assert reconciler.restore_errors == {}
        assert refreshes[-1] == {}  # the last refresh sees no error
        assert "failed 3 time(s)" in refreshes[-2]["Deployment"]

    asyncio.run(scenario())


def test_a_restore_that_no_longer_applies_ends_the_loop() -> None:
    async def scenario() -> None:
        reconciler = ScriptedReconciler(failures=1, outcome="llmserve_gone")
        restorer = Restorer(reconciler)  # type: ignore[arg-type]
        await restorer.child_deleted("ai", "llama", "Service", lambda: None)
        await _until(lambda: not restorer._retrying)
        assert (reconciler.tries, reconciler.restore_errors) == ([0, 1], {})

    asyncio.run(scenario())


def test_forgetting_the_llmserve_and_closing_stop_the_loops() -> None:
    async def scenario() -> None:
        reconciler = ScriptedReconciler(failures=10**9)
        restorer = Restorer(reconciler)  # type: ignore[arg-type]
        await restorer.child_deleted("ai", "llama", "Service", lambda: None)
        await restorer.child_deleted("ai", "other", "Deployment", lambda: None)
        # At once: the loop is cancelled before its first step, which must still forget it.
        restorer.forget(("ai", "llama"))
        await _until(lambda: [key[1] for key in restorer._retrying] == ["other"])
        await restorer.close()
        assert restorer._retrying == {}
        assert reconciler.restore_errors == {}
        # A new deletion of the forgotten child starts a new loop rather than finding a stale one.
        assert (await restorer.child_deleted("ai", "llama", "Service", lambda: None)).startswith("retrying")
        await restorer.close()

    asyncio.run(scenario())
