"""The operator's side of engine keys: loads (or first creates) the master Secret, derives each key."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from llmserve import kube
from llmserve.api.llmserve import LLMServeSpec
from llmserve.render.drain import render_pdb
from llmserve.render.engine_key import (
    MIN_MASTER_BYTES,
    SecretRef,
    derive_engine_key,
    key_fingerprint,
    master_from_secret,
    render_engine_key_secret,
    render_master_secret,
)
from llmserve.render.networkpolicy import render_network_policy
from llmserve.render.security import with_key_fingerprint
from llmserve.settings import operator_settings

Obj = dict[str, Any]

log = logging.getLogger(__name__)


class EngineKeys:
    """The operator's side: loads (or first creates) the master secret, then derives keys from it."""

    def __init__(self, ref: SecretRef | None = None) -> None:
        self.ref = ref or operator_settings().engine_key_ref()
        self._master: bytes | None = None
        self._loading: asyncio.Lock | None = None  # made on first use, inside the running loop

    async def master(self) -> bytes:
        if self._master is None:
            # One load for everyone: at start-up hundreds of LLMServes ask at once, and each asking the
            # apiserver was hundreds of Secret reads (and create attempts) ahead of their children.
            if self._loading is None:
                self._loading = asyncio.Lock()
            async with self._loading:
                if self._master is None:
                    self._master = await self._load_or_create()
        return self._master

    async def _load_or_create(self) -> bytes:
        existing = await kube.retry(lambda: kube.get("Secret", self.ref.namespace, self.ref.name))
        if existing is None:
            try:
                await kube.create(render_master_secret(self.ref, secrets.token_bytes(MIN_MASTER_BYTES)))
                log.info("event=engine_key_master_created secret=%s", self.ref)
            except kube.KubeError as err:
                if err.status != 409:  # 409: another operator replica created it first
                    raise
            existing = await kube.retry(lambda: kube.get("Secret", self.ref.namespace, self.ref.name))
            if existing is None:
                raise kube.KubeError(f"engine key master Secret {self.ref} vanished after create", 404)
        return master_from_secret(existing)

    async def key_for(self, namespace: str, name: str, uid: str) -> str:
        return derive_engine_key(await self.master(), namespace, name, uid)


def security_children(
    keys_key: str, name: str, namespace: str, uid: str, spec: LLMServeSpec, deployment: Obj
) -> list[Obj]:
    """The engine-key Secret, the PodDisruptionBudget and the NetworkPolicy to apply with the Deployment, which gets the key's
    fingerprint (so a new key rolls the pods). `keys_key` is the LLMServe's derived engine key."""
    with_key_fingerprint(deployment, key_fingerprint(keys_key))
    children = [
        render_engine_key_secret(name, namespace, uid, keys_key),
        render_pdb(name, namespace, uid, spec),
    ]
    settings = operator_settings()  # LLMSERVE_ENGINE_NETWORK_POLICY is "false" when the cluster has its own
    if settings.engine_network_policy:
        children.append(render_network_policy(name, namespace, uid, spec, settings.engine_ingress_peers()))
    return children
