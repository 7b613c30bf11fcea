"""Brings back an LLMServe's Deployment or Service deleted by someone else, and keeps trying, with backoff,
while the API server refuses it (an outage, a quota, an admission policy): until then the model is down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from llmserve.controller.reconcile import Reconciler

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, llmserve name)
ChildKey = tuple[str, str, str]  # (namespace, llmserve name, kind)

# The wait after each failed try in a row: quick at first (a conflict or a brief apiserver hiccup clears at
# once), then once a minute at most (a quota or a policy waits for a person, and costs one request a minute).
RETRY_DELAYS_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0)


def retry_delay_seconds(failures: int) -> float:
    """How long to wait after the `failures`-th failed try in a row (failures >= 1)."""
    return RETRY_DELAYS_SECONDS[min(max(failures, 1), len(RETRY_DELAYS_SECONDS)) - 1]


def failure_message(kind: str, name: str, failures: int, error: BaseException) -> str:
    """What the conditions say while a restore is retried: which child, how often it failed, and why."""
    next_seconds = retry_delay_seconds(failures)
    return (
        f"applying {kind} {name} again failed {failures} time(s), next try in {next_seconds:.0f} s: {error}"
    )


class Restorer:
    """One retry loop per deleted child the API server refused to take back; the failures in
    `reconciler.restore_errors` feed the LLMServe's conditions."""

    def __init__(self, reconciler: Reconciler) -> None:
        self._reconciler = reconciler
        self._retrying: dict[ChildKey, asyncio.Task[None]] = {}

    async def child_deleted(self, namespace: str, owner: str, kind: str, refresh: Callable[[], None]) -> str:
        """Applies the deleted child again at once; if that fails, a loop retries it in the background.
        Returns the outcome for the log line: restore_children's, `retrying error=...`, or `retry_pending`
        (a loop for this child already runs)."""
        child = (namespace, owner, kind)
        if child in self._retrying:
            return "retry_pending"
        try:
            return await self._reconciler.restore_children(namespace, owner, kind)
        except Exception as err:  # any refusal: the model stays down until a try succeeds
            self._record(child, failure_message(kind, owner, 1, err))
            task = asyncio.create_task(
                self._retry(child, refresh), name=f"restore {namespace}/{owner} {kind}"
            )
            self._retrying[child] = task
            # A callback, not a `finally`: a task cancelled before its first step never runs its body.
            task.add_done_callback(lambda done: self._finished(child, done))
            refresh()
            return f"retrying error={str(err)!r}"

    async def _retry(self, child: ChildKey, refresh: Callable[[], None]) -> None:
        namespace, owner, kind = child
        failures = 1
        while True:
            await asyncio.sleep(retry_delay_seconds(failures))
            try:
                outcome = await self._reconciler.restore_children(
                    namespace, owner, kind, failed_attempts=failures
                )
            except Exception as err:
                failures += 1
                self._record(child, failure_message(kind, owner, failures, err))
                log.warning(
                    "event=child_restore_failed namespace=%s llmserve=%s kind=%s attempts=%d "
                    "retry_in_seconds=%.0f error=%r",
                    namespace, owner, kind, failures, retry_delay_seconds(failures), str(err),
                )  # fmt: skip
                refresh()
                continue
            log.info(
                "event=child_restore_retried namespace=%s llmserve=%s kind=%s failed_attempts=%d outcome=%s",
                namespace, owner, kind, failures, outcome,
            )  # fmt: skip
            # Done before the refresh, so that it reports no error (and a new deletion starts a new loop).
            self._finished(child, asyncio.current_task())
            refresh()
            return

    def _finished(self, child: ChildKey, task: asyncio.Task[None] | None) -> None:
        """Forgets a loop that ended (restored, no longer needed, or cancelled: its LLMServe is gone or the
        operator stops, and then no status is refreshed)."""
        if self._retrying.get(child) is task:
            del self._retrying[child]
            self._clear(child)

    def _record(self, child: ChildKey, message: str) -> None:
        namespace, owner, kind = child
        self._reconciler.restore_errors.setdefault((namespace, owner), {})[kind] = message

    def _clear(self, child: ChildKey) -> None:
        namespace, owner, kind = child
        errors = self._reconciler.restore_errors.get((namespace, owner), {})
        errors.pop(kind, None)
        if not errors:
            self._reconciler.restore_errors.pop((namespace, owner), None)

    def forget(self, key: Key) -> None:
        """Stops the retries of a deleted LLMServe's children (its own restore would find it gone anyway)."""
        for child, task in list(self._retrying.items()):
            if child[:2] == key:
                task.cancel()

    async def close(self) -> None:
        """Stops every retry loop (operator shutdown; the next start's resume applies every child)."""
        tasks = list(self._retrying.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
