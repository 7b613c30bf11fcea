"""Applies an LLMServe's children and writes its status: the controller's "ensure" logic."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import kopf
from pydantic import ValidationError

from llmserve import kube, slots
from llmserve.api.base import Condition
from llmserve.api.llmserve import LLMServeSpec, LLMServeStatus
from llmserve.controller import metrics, namespaces
from llmserve.controller.engine_key import EngineKeys, security_children
from llmserve.controller.status import (
    Observed,
    compute_conditions,
    deployment_problem,
    merge_conditions,
    service_problem,
    summarize_pods,
)
from llmserve.controller.status_writer import OPERATOR_MANAGER, already_applied, apply_status
from llmserve.render.engine import endpoint_url, render_deployment, render_service
from llmserve.render.labels import FIELD_MANAGER, selector_string

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, llmserve name)


def spec_error_message(err: ValidationError) -> str:
    """One line naming each bad field and what is wrong with it."""
    parts = []
    for problem in err.errors():
        text = str(problem["msg"]).removeprefix("Value error, ")
        if not problem["loc"] and text.startswith("."):
            # A cross-field rule (api.llmserve.SPEC_RULES) names its own field: ".minReplicas: ...".
            parts.append(f"spec{text}")
            continue
        location = ".".join(str(p) for p in problem["loc"]) or "spec"
        parts.append(f"spec.{location}: {problem['msg']}")
    return "; ".join(parts)


def apply_error_message(child: Obj, err: kube.KubeError) -> str:
    """Which child the apiserver refused, its own words, and the fields it named (if its words do not)."""
    message = f"applying {child['kind']} {child['metadata']['name']} failed: {err}"
    missing = [field for field in err.fields if field not in str(err)]
    return message + (f" (fields: {', '.join(missing)})" if missing else "")


def parse_spec(raw_spec: Obj) -> tuple[LLMServeSpec | None, str]:
    try:
        return LLMServeSpec.model_validate(dict(raw_spec)), ""
    except ValidationError as err:
        return None, spec_error_message(err)


class Reconciler:
    """Owns the last errors seen per LLMServe so status refreshes can report them."""

    def __init__(self) -> None:
        self.apply_errors: dict[Key, str] = {}
        # Why a deleted child could not be applied again yet, by kind (written by controller.restore).
        self.restore_errors: dict[Key, dict[str, str]] = {}
        self._refresh_locks: dict[Key, asyncio.Lock] = {}
        # One apply of an LLMServe's children at a time: a restore's fresh read and a spec change's apply
        # must not interleave (the older spec would land last).
        self._apply_locks: dict[Key, asyncio.Lock] = {}
        self.engine_keys = EngineKeys()
        self._written: dict[Key, tuple[str, Obj]] = {}  # (uid, the status fragment last applied)

    def _apply_lock(self, key: Key) -> asyncio.Lock:
        return self._apply_locks.setdefault(key, asyncio.Lock())

    async def ensure(
        self, body: Obj, existing_deployment: Obj | None, first_time: bool = False, report: bool = True
    ) -> None:
        """Create or update the Deployment and Service; idempotent, shared by create/update/resume.
        `first_time`: kopf's create cause (the LLMServe was never handled), when nothing of it runs yet.
        `report=False`: a refused apply is raised as a KubeError and not reported (no Event, condition or
        metric): for a try whose failure kopf's own handler will meet and report."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        async with self._apply_lock(key):
            await self._ensure(body, existing_deployment, first_time, report)

    async def _ensure(
        self,
        body: Obj,
        existing_deployment: Obj | None,
        first_time: bool = False,
        report: bool = True,
        announce: bool = True,
    ) -> None:
        """`ensure` under the LLMServe's apply lock; `announce=False` posts no Created/Updated Event."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        spec, error = parse_spec(body.get("spec", {}))
        if spec is None:
            _event(body, "Warning", reason="InvalidSpec", message=error)
            return
        deployment = render_deployment(meta["name"], meta["namespace"], meta["uid"], spec)
        service = render_service(meta["name"], meta["namespace"], meta["uid"], spec)
        with metrics.RECONCILE_SECONDS.labels(namespace=key[0], llmserve=key[1]).time():
            try:
                engine_key = await self.engine_keys.key_for(meta["namespace"], meta["name"], meta["uid"])
                secret, *others = security_children(
                    engine_key, meta["name"], meta["namespace"], meta["uid"], spec, deployment
                )
                # Pods never run unguarded: they cannot start before their engine-key Secret exists (a
                # kubelet refuses a container whose secretKeyRef is missing), and the Secret is applied
                # only once the NetworkPolicy is in. So a new LLMServe's Deployment goes in the first
                # round, with the NetworkPolicy, the PDB and the Service (no pod of it can be Ready before
                # the gateway can reach it). An existing one's Secret goes first: pods rolled by a new key
                # fingerprint must read the new key, not the old.
                if first_time and existing_deployment is None:
                    first = [
                        (deployment, slots.SERVING),
                        (service, slots.SERVICE),
                        *((child, slots.GUARDS) for child in others),
                    ]
                    second = [(secret, slots.GUARDS)]
                    applied = (await _apply_all(first))[0]
                    await _apply_all(second)
                else:
                    await _apply_all([(child, slots.GUARDS) for child in (secret, *others)])
                    applied, _ = await _apply_all([(deployment, slots.SERVING), (service, slots.SERVICE)])
            except _ChildApplyError as failed:
                child, err = failed.child, failed.error
                if not report:
                    raise err from failed
                if namespaces.refused_as_terminating(key[0], err):
                    # Expected while a namespace is deleted (the autoscaler may still write replicas): not
                    # a failure to report or retry, and nothing can be posted there.
                    log.info(
                        "event=apply_skipped namespace=%s llmserve=%s reason=namespace_terminating", *key
                    )
                    return
                message = apply_error_message(child, err)
                self.apply_errors[key] = message
                metrics.RECONCILE_ERRORS.labels(namespace=key[0], llmserve=key[1]).inc()
                _event(body, "Warning", reason="ApplyFailed", message=message)
                if err.retryable:
                    raise kopf.TemporaryError(f"API server error, will retry: {err}", delay=10) from err
                raise kopf.PermanentError(f"the API server refused a child object: {err}") from err
        self.apply_errors.pop(key, None)
        if not announce:
            return
        if existing_deployment is None:
            _event(body, "Normal", reason="Created", message=f"created Deployment and Service {meta['name']}")
        elif applied["metadata"].get("generation") != existing_deployment["metadata"].get("generation"):
            _event(
                body, "Normal", reason="Updated", message=f"updated Deployment {meta['name']} (rolling out)"
            )

    async def refresh_status(
        self, body: Obj, deployment: Obj | None, pods: list[Obj], service: Obj | None
    ) -> LLMServeStatus | None:
        """Recompute the reconciler's status fields from the children and apply them if they changed."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        lock = self._refresh_locks.setdefault(key, asyncio.Lock())
        async with lock:
            # Only this manager writes these fields, so what it wrote last is newer than a body the
            # watch has not caught up with yet (which would move lastTransitionTime and repeat Events).
            written_uid, written = self._written.get(key, ("", None))
            previous = (
                written
                if written is not None and written_uid == meta.get("uid")
                else body.get("status") or {}
            )
            status = self.compute_status(body, deployment, pods, service, previous)
            fragment = status.to_wire()
            if already_applied(previous, fragment):
                return status
            stored = await apply_status(key[1], key[0], OPERATOR_MANAGER, fragment)
            if stored is None:
                return None  # deleted meanwhile
            self._written[key] = (str(meta.get("uid")), fragment)
            _report_transitions(body, previous, status)
            metrics.observe_status(key, status)
            return status

    async def restore_children(self, namespace: str, name: str, kind: str, failed_attempts: int = 0) -> str:
        """The LLMServe's Deployment or Service (`kind`) was deleted by someone else: its children are
        applied again from the LLMServe as the API has it now (not from a cache: its current spec.replicas,
        which the autoscaler and the gateway write), unless it is gone or going (then the garbage
        collector removed the child, and applying would make orphans), or its spec is invalid (nothing to
        render: its InvalidSpec condition says so), or its namespace is being deleted (the API server refuses
        creates there; nothing is posted into it either). Returns what was done: `applied`, `llmserve_gone`,
        `llmserve_deleting`, `invalid_spec` or `namespace_terminating`; raises what refused the apply
        (the first refusal, `failed_attempts` 0, posts a RestoreFailed Event; controller.restore retries).
        Under the apply lock from the read to the apply: a spec change's `ensure` then either goes first
        (and this read sees its spec) or after (and applies its own), never a stale spec over a newer one."""
        if namespaces.terminating(namespace):
            return "namespace_terminating"
        async with self._apply_lock((namespace, name)):
            body = await kube.get("LLMServe", namespace, name)
            if body is None:
                return "llmserve_gone"
            if body["metadata"].get("deletionTimestamp"):
                return "llmserve_deleting"
            if parse_spec(body.get("spec", {}))[0] is None:
                return "invalid_spec"
            try:
                await self._ensure(body, None, report=False, announce=False)
            except Exception as err:
                if namespaces.refused_as_terminating(namespace, err):
                    return "namespace_terminating"
                if failed_attempts == 0:
                    message = f"applying {kind} {name} again after its deletion failed (retrying): {err}"
                    _event(body, "Warning", reason="RestoreFailed", message=message)
                raise
        after = f" after {failed_attempts} failed attempt(s)" if failed_attempts else ""
        _event(
            body,
            "Normal",
            reason=f"{kind}Recreated",
            message=f"applied {kind} {name} again after its deletion{after}",
        )
        return "applied"

    def forget(self, key: Key) -> None:
        """Drops what is remembered about a deleted LLMServe."""
        self._written.pop(key, None)
        self._refresh_locks.pop(key, None)
        self._apply_locks.pop(key, None)
        self.apply_errors.pop(key, None)
        self.restore_errors.pop(key, None)

    def compute_status(
        self,
        body: Obj,
        deployment: Obj | None,
        pods: list[Obj],
        service: Obj | None,
        previous_raw: Obj | None = None,
    ) -> LLMServeStatus:
        """The reconciler's own status fields and conditions (the autoscaler's are not in it)."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        spec, spec_error = parse_spec(body.get("spec", {}))
        previous_raw = body.get("status") or {} if previous_raw is None else previous_raw
        previous = _previous_conditions(previous_raw)
        summary = summarize_pods(pods)
        desired = spec.desired_replicas() if spec else 0
        # A new LLMServe's first status can be computed before the watch brings the Deployment just
        # applied for it: that one is being created, not missing (RollingUpdate/Starting say so).
        being_created = deployment is None and not any(c.type == "Ready" for c in previous)
        observed = Observed(
            generation=meta.get("generation", 0),
            desired_replicas=desired,
            pods=summary,
            deployment=deployment,
            spec_error=spec_error,
            apply_error=self.apply_errors.get(key, ""),
            restore_error="; ".join(self.restore_errors.get(key, {}).values()),
            service_problem=service_problem(meta["name"], service),
            deployment_problem="" if being_created else deployment_problem(meta["name"], deployment),
        )
        conditions = merge_conditions(previous, compute_conditions(observed))
        served = spec.served_name(meta["name"]) if spec else None
        return LLMServeStatus(
            replicas=summary.total,
            desired_replicas=desired,
            ready_replicas=summary.ready,
            unschedulable_replicas=summary.unschedulable,
            selector=selector_string(meta["name"]),
            endpoint=endpoint_url(meta["name"], meta["namespace"]),
            served_model_name=served,
            observed_generation=meta.get("generation"),
            conditions=conditions,
        )


class _ChildApplyError(Exception):
    """A child the apiserver refused (after retries), with the child it was about."""

    def __init__(self, child: Obj, error: kube.KubeError) -> None:
        super().__init__(str(error))
        self.child, self.error = child, error


async def _apply_one(child: Obj, priority: int) -> Obj:
    try:
        result: Obj = await kube.retry(lambda: kube.apply(child, FIELD_MANAGER, priority=priority))
    except kube.KubeError as err:
        raise _ChildApplyError(child, err) from err
    return result


async def _apply_all(children: list[tuple[Obj, int]]) -> list[Obj]:
    """Applies the children concurrently, each at its priority (llmserve.slots: a Deployment goes ahead of
    every other LLMServe's guards and Services); every apply runs to its end, then the first refusal (in
    the children's order) is raised, so the reported child does not depend on which answer came first."""
    answers = await asyncio.gather(
        *(_apply_one(child, priority) for child, priority in children), return_exceptions=True
    )
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return cast(list[Obj], answers)


def _event(body: Obj, event_type: str, reason: str, message: str) -> None:
    """Posts a Kubernetes Event on the LLMServe (kopf batches and posts them in the background), unless
    its namespace is being deleted (refused there; kopf would log each of its retries as an error)."""
    namespaces.post_event(body, type=event_type, reason=reason, message=message)


def _previous_conditions(status: Obj) -> list[Condition]:
    out = []
    for raw in status.get("conditions", []) or []:
        try:
            out.append(Condition.model_validate(raw))
        except ValidationError:
            continue  # a hand-edited or foreign condition is not ours to keep
    return out


def _report_transitions(body: Obj, previous: Obj, status: LLMServeStatus) -> None:
    before = {c.get("type"): c for c in previous.get("conditions", []) or []}
    for condition in status.conditions:
        old = before.get(condition.type, {})
        if old.get("status") == condition.status and old.get("reason") == condition.reason:
            continue
        if condition.type == "Degraded" and condition.status == "True":
            _event(body, "Warning", reason=condition.reason, message=condition.message)
        elif condition.type == "Ready" and old:
            message = f"Ready={condition.status} ({condition.reason}): {condition.message}"
            _event(body, "Normal", reason="ReadyChanged", message=message)
