"""Provider clients against `llmserve sim provider` on loopback: the happy path and every documented fault.

Each test runs for both APIs (RunPod REST v2 and Vast.ai) where the provider has that failure. The
fake runs on a manual clock: provisioning and billing move only when a test advances it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from llmserve.burst.security import (
    EngineRequest,
    EngineSecrets,
    mint_api_key,
    pinned_ssl_context,
    vllm_launch_spec,
)
from llmserve.burst.types import (
    ErrorKind,
    Instance,
    LaunchSpec,
    Offer,
    OfferQuery,
    Phase,
    Provider,
    ProviderError,
    instance_name,
)
from tests.support.fake_provider import FakeProviderProcess

CLUSTER = "c0ffee42"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
GPU = {"runpod": "NVIDIA GeForce RTX 4090", "vastai": "RTX_4090"}
BOTH = pytest.mark.parametrize("fake", ["runpod", "vastai"], indirect=True)


@pytest.fixture
def fake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeProviderProcess]:
    account_key = "acct-" + mint_api_key()
    process = FakeProviderProcess(request.param, tmp_path / request.param, account_key).start()
    try:
        yield process
    finally:
        process.stop()
        assert process.engine_pids() == [], "the fake left an engine process behind"


def launch(api: str, slot: int = 0) -> tuple[LaunchSpec, EngineSecrets]:
    request = EngineRequest(cluster_id=CLUSTER, owner="ai/llama-8b", slot=slot, image="vllm/vllm-openai:v0.11.0",
                            model=MODEL, served_model_name="llama", gpu_type=GPU[api], gpus=1, max_usd_per_hour=3.0)  # fmt: skip
    return vllm_launch_spec(api, request)


async def an_offer(client: Provider, api: str) -> Offer:
    offers = await client.list_offers(OfferQuery(gpu_type=GPU[api], gpus=1, max_usd_per_hour=3.0))
    assert offers, "the fake offers this GPU"
    return offers[0]


async def until(client: Provider, instance_id: str, phase: Phase, timeout_seconds: float = 30) -> Instance:
    async with asyncio.timeout(timeout_seconds):
        while True:
            instance = await client.get(instance_id)
            if instance.phase is phase and (phase is not Phase.RUNNING or instance.endpoint):
                return instance
            await asyncio.sleep(0.05)


def engine_http(fake: FakeProviderProcess, secrets: EngineSecrets) -> httpx.AsyncClient:
    """How the gateway reaches a rented engine: RunPod's proxy CA, or the instance's pinned certificate."""
    if secrets.tls_cert_pem is not None:
        return httpx.AsyncClient(verify=pinned_ssl_context(secrets.tls_cert_pem), timeout=10)
    return httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(fake.proxy_cert)), timeout=10)


async def serving(
    fake: FakeProviderProcess, instance: Instance, secrets: EngineSecrets
) -> openai.AsyncOpenAI:
    assert instance.endpoint is not None and instance.endpoint.startswith("https://")
    http = engine_http(fake, secrets)
    async with asyncio.timeout(30):  # RUNNING means the container is up; the engine may still load
        while True:
            try:
                if (await http.get(instance.endpoint + "/health")).status_code == 200:
                    break
            except httpx.TransportError:  # Vast: the port is mapped before the engine listens
                pass
            await asyncio.sleep(0.05)
    return openai.AsyncOpenAI(
        base_url=instance.endpoint + "/v1", api_key=secrets.api_key, http_client=http, max_retries=0
    )


async def created(
    fake: FakeProviderProcess, api: str, slot: int = 0
) -> tuple[Provider, Instance, EngineSecrets]:
    client = fake.client()
    spec, secrets = launch(api, slot)
    instance = await client.create(spec, await an_offer(client, api))
    return client, instance, secrets


# Routes vLLM's own --api-key leaves open (vLLM 0.11.0 and 0.33.0): the engine guard closes them.
UNGUARDED_BY_VLLM = [("POST", "/invocations"), ("POST", "/tokenize"), ("POST", "/detokenize"),
                     ("POST", "/pooling"), ("POST", "/score"), ("GET", "/metrics"), ("GET", "/version"),
                     ("GET", "/ping")]  # fmt: skip


async def refuses_every_route_but_health_without_the_key(
    fake: FakeProviderProcess, running: Instance, secrets: EngineSecrets
) -> None:
    """What anyone on the internet gets from a rented engine, on its public endpoint (through RunPod's
    proxy, or straight to the Vast port over the pinned TLS): /health, and a 401 for everything else."""
    assert running.endpoint is not None
    async with engine_http(fake, secrets) as http:
        for method, path in UNGUARDED_BY_VLLM:
            for authorization in ({}, {"Authorization": "Bearer guess"}, {"Authorization": secrets.api_key}):
                refused = await http.request(method, running.endpoint + path, json={"model": "llama", "prompt": "hi"},
                                             headers=authorization)  # fmt: skip
                assert (refused.status_code, refused.json()) == (401, {"error": "Unauthorized"}), (
                    path,
                    authorization,
                )
        assert (await http.get(running.endpoint + "/health")).status_code == 200
        keyed = {"Authorization": f"Bearer {secrets.api_key}"}
        metrics = await http.get(running.endpoint + "/metrics", headers=keyed)
        assert metrics.status_code == 200 and "vllm:num_requests_waiting" in metrics.text
        tokens = await http.post(
            running.endpoint + "/tokenize", json={"model": "llama", "prompt": "hi"}, headers=keyed
        )
        assert tokens.status_code == 200 and tokens.json()["count"] > 0


# -- the happy path ------------------------------------------------------------------------------


@BOTH
async def test_rented_engine_serves_over_tls_only_with_its_key_and_bills_until_terminated(
    fake: FakeProviderProcess,
) -> None:
    client, instance, secrets = await created(fake, fake.api)
    assert (await client.check_account()).ok
    assert instance.phase is Phase.PROVISIONING and instance.endpoint is None
    assert (await client.get(instance.id)).phase is Phase.PROVISIONING
    fake.advance(25)  # RunPod shows STARTING late in provisioning; Vast's "loading" is still provisioning
    assert (await client.get(instance.id)).phase is (
        Phase.STARTING if fake.api == "runpod" else Phase.PROVISIONING
    )
    fake.advance(5)
    running = await until(client, instance.id, Phase.RUNNING)
    engine = await serving(fake, running, secrets)
    reply = await engine.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    with pytest.raises(openai.AuthenticationError):  # the endpoint is public: without the key, nothing
        await openai.AsyncOpenAI(base_url=running.endpoint + "/v1", api_key="guess", max_retries=0,  # type: ignore[operator]
                                 http_client=engine_http(fake, secrets)).models.list()  # fmt: skip
    await refuses_every_route_but_health_without_the_key(fake, running, secrets)
    fake.advance(3600)
    await client.terminate(instance.id)
    with pytest.raises(ProviderError) as gone:
        await client.get(instance.id)
    assert gone.value.kind is ErrorKind.NOT_FOUND
    fake.advance(3600)  # nothing accrues after termination
    billed = fake.ledger()["instances"][instance.id]
    assert billed["usd"] == pytest.approx(running.usd_per_hour * (3630 / 3600))
    assert billed["billed_seconds"] == pytest.approx(3630)
    await client.aclose()


@BOTH
async def test_list_owned_finds_only_this_clusters_instances(fake: FakeProviderProcess) -> None:
    client, mine, _ = await created(fake, fake.api)
    other = instance_name("another-cluster", "ai/llama-8b", 0)
    fake.admin("POST", "instances", {"name": other, "cluster_id": "another-cluster"})
    # A copy of our name without our marker (someone cloned the pod by hand) is not ours either.
    fake.admin("POST", "instances", {"name": mine.name, "cluster_id": "someone-else"})
    fake.admin("POST", "instances", {"name": "llms-unrelated"})
    owned = await client.list_owned(CLUSTER)
    assert [i.id for i in owned] == [mine.id]
    assert owned[0].cluster_id == CLUSTER and owned[0].name == mine.name
    await client.aclose()


# -- faults --------------------------------------------------------------------------------------


@BOTH
async def test_stuck_provisioning_never_gets_an_endpoint_and_terminates_cleanly(
    fake: FakeProviderProcess,
) -> None:
    fake.faults(stuck_provisioning=True)
    client, instance, _ = await created(fake, fake.api)
    fake.faults(stuck_provisioning=False)
    _, control, _ = await created(fake, fake.api, slot=1)
    fake.advance(3600)
    await until(client, control.id, Phase.RUNNING)  # the fake has moved on: a healthy instance runs
    stuck = await client.get(instance.id)
    assert stuck.phase is Phase.PROVISIONING and stuck.endpoint is None
    await client.terminate(instance.id)
    assert [i.id for i in await client.list_owned(CLUSTER)] == [control.id]
    fake.advance(60)
    assert fake.ledger()["instances"][instance.id]["billed_seconds"] == pytest.approx(3600)
    await client.aclose()


@BOTH
async def test_phantom_create_is_missing_from_lists_for_a_while_but_found_by_id(
    fake: FakeProviderProcess,
) -> None:
    fake.faults(phantom_seconds=60)
    client, instance, _ = await created(fake, fake.api)
    assert await client.list_owned(CLUSTER) == []  # what a naive reaper would call "gone"
    assert (await client.get(instance.id)).name == instance.name
    fake.advance(61)
    assert [i.id for i in await client.list_owned(CLUSTER)] == [instance.id]
    await client.aclose()


@BOTH
async def test_lost_create_response_is_ambiguous_and_exactly_one_instance_is_found(
    fake: FakeProviderProcess,
) -> None:
    fake.faults(lose_create_responses=1)
    client = fake.client()
    spec, _ = launch(fake.api)
    with pytest.raises(ProviderError) as lost:
        await client.create(spec, await an_offer(client, fake.api))
    assert lost.value.kind is ErrorKind.AMBIGUOUS
    owned = await client.list_owned(CLUSTER)
    assert [i.name for i in owned] == [spec.name]  # adopted by name, never re-created
    assert len(fake.instances()) == 1
    await client.aclose()


@pytest.mark.parametrize(
    ("fake", "retry_after_seconds"),
    [("runpod", 1), ("runpod", None), ("vastai", 0.5), ("vastai", None)],
    indirect=["fake"],
)
async def test_rate_limits_are_waited_out_on_reads_and_handed_to_the_caller_on_create(
    fake: FakeProviderProcess, retry_after_seconds: float | None
) -> None:
    client = fake.client()
    fake.faults(rate_limit={"count": 1, "retry_after_seconds": retry_after_seconds})
    assert await client.list_owned(CLUSTER) == []  # one 429, waited out inside the client
    offer = await an_offer(client, fake.api)
    fake.faults(rate_limit={"count": 1, "retry_after_seconds": retry_after_seconds})
    with pytest.raises(ProviderError) as limited:
        await client.create(launch(fake.api)[0], offer)
    assert limited.value.kind is ErrorKind.RATE_LIMITED
    assert limited.value.retry_after_seconds == retry_after_seconds  # RunPod's header; Vast's threshold
    assert fake.instances() == {}  # a 429 created nothing
    await client.aclose()


@BOTH
async def test_no_capacity_is_a_capacity_error_and_rents_nothing(fake: FakeProviderProcess) -> None:
    client = fake.client()
    offer = await an_offer(client, fake.api)
    fake.faults(no_capacity=True)  # RunPod: 400 on create; Vast: 410, the offer was taken
    with pytest.raises(ProviderError) as refused:
        await client.create(launch(fake.api)[0], offer)
    assert refused.value.kind is ErrorKind.CAPACITY
    assert fake.instances() == {}
    await client.aclose()


@pytest.mark.parametrize(
    ("fake", "auth"), [("runpod", "revoked"), ("runpod", "forbidden"), ("vastai", "revoked"), ("vastai", "forbidden")],
    indirect=["fake"],
)  # fmt: skip
async def test_revoked_key_reports_auth_and_never_reports_an_instance_terminated(
    fake: FakeProviderProcess, auth: str
) -> None:
    client, instance, _ = await created(fake, fake.api)
    fake.advance(30)
    await until(client, instance.id, Phase.RUNNING)
    fake.faults(auth=auth)
    for call in (
        client.list_owned(CLUSTER),
        client.get(instance.id),
        client.terminate(instance.id),
        client.check_account(),
    ):
        with pytest.raises(ProviderError) as denied:
            await call
        assert denied.value.kind is ErrorKind.AUTH
    fake.faults(auth="ok")
    assert [(i.id, i.phase) for i in await client.list_owned(CLUSTER)] == [(instance.id, Phase.RUNNING)]
    await client.aclose()


async def test_wrong_account_key_is_auth_not_not_found(tmp_path: Path) -> None:
    fake = FakeProviderProcess("vastai", tmp_path, "acct-right").start()
    try:
        client = fake.client(api_key="acct-wrong")
        with pytest.raises(ProviderError) as denied:
            await client.terminate("1000002")  # a terminate must not mistake "bad key" for "already gone"
        assert denied.value.kind is ErrorKind.AUTH
        await client.aclose()
    finally:
        fake.stop()


@BOTH
async def test_running_instances_stop_when_the_balance_runs_out(fake: FakeProviderProcess) -> None:
    client, instance, _ = await created(fake, fake.api)
    fake.advance(30)
    await until(client, instance.id, Phase.RUNNING)
    fake.faults(no_balance=True)
    stopped = await until(client, instance.id, Phase.EXITED)
    assert stopped.endpoint is None
    assert [i.id for i in await client.list_owned(CLUSTER)] == [instance.id]  # stopped, not gone: destroy it
    await client.aclose()


@pytest.mark.parametrize("fake", ["runpod"], indirect=True)
async def test_runpod_402_no_balance_is_a_balance_error(fake: FakeProviderProcess) -> None:
    client = fake.client()
    offer = await an_offer(client, "runpod")
    fake.faults(no_balance=True)
    with pytest.raises(ProviderError) as broke:
        await client.create(launch("runpod")[0], offer)
    assert broke.value.kind is ErrorKind.BALANCE
    assert fake.instances() == {}
    await client.aclose()


@pytest.mark.parametrize("fake", ["vastai"], indirect=True)
async def test_vast_empty_balance_shows_in_the_account_check(fake: FakeProviderProcess) -> None:
    client = fake.client()
    assert (await client.check_account()).ok
    fake.faults(no_balance=True)
    account = await client.check_account()
    assert not account.ok and account.balance_usd == 0.0
    await client.aclose()


@pytest.mark.parametrize(
    ("fake", "how", "storage_billed"),
    [("runpod", "exited", False), ("vastai", "exited", True), ("vastai", "paused", True)],
    indirect=["fake"],
)
async def test_instance_stopped_under_us_shows_exited_and_still_needs_terminating(
    fake: FakeProviderProcess, how: str, storage_billed: bool
) -> None:
    client, instance, _ = await created(fake, fake.api)
    fake.advance(30)
    await until(client, instance.id, Phase.RUNNING)
    fake.admin("POST", f"instances/{instance.id}", {"status": how})
    exited = await until(client, instance.id, Phase.EXITED)
    assert exited.endpoint is None
    before = fake.ledger()["instances"][instance.id]["usd"]
    fake.advance(3600)
    after = fake.ledger()["instances"][instance.id]["usd"]
    assert (after > before) is storage_billed  # Vast bills the disk of a stopped instance
    await client.terminate(instance.id)
    fake.advance(3600)
    assert fake.ledger()["instances"][instance.id]["usd"] == after
    await client.aclose()


@BOTH
async def test_host_price_rise_shows_on_the_next_get_and_in_the_bill(fake: FakeProviderProcess) -> None:
    client, instance, _ = await created(fake, fake.api)
    fake.advance(30)
    running = await until(client, instance.id, Phase.RUNNING)
    fake.admin("POST", f"instances/{instance.id}", {"usd_per_hour": running.usd_per_hour * 3})
    assert (await client.get(instance.id)).usd_per_hour == pytest.approx(running.usd_per_hour * 3)
    fake.advance(3600)
    billed = fake.ledger()["instances"][instance.id]["usd"]
    assert billed == pytest.approx(running.usd_per_hour * 30 / 3600 + running.usd_per_hour * 3)
    await client.aclose()


@BOTH
async def test_terminate_survives_5xx_and_is_reported_only_once_the_provider_confirms(
    fake: FakeProviderProcess,
) -> None:
    client, instance, _ = await created(fake, fake.api)
    fake.faults(terminate_failures=2)  # within the client's retries of an idempotent delete
    await client.terminate(instance.id)
    assert await client.list_owned(CLUSTER) == []
    _, second, _ = await created(fake, fake.api, slot=1)
    fake.faults(terminate_failures=5)  # longer than the client retries: the caller must try again
    with pytest.raises(ProviderError) as failing:
        await client.terminate(second.id)
    assert failing.value.kind is ErrorKind.TRANSIENT
    assert [i.id for i in await client.list_owned(CLUSTER)] == [second.id]  # still there, still owned
    fake.faults(terminate_failures=0)
    await client.terminate(second.id)
    await client.terminate(second.id)  # already gone (404) is success
    assert await client.list_owned(CLUSTER) == []
    await client.aclose()


@pytest.mark.parametrize(("fake", "outage"), [("runpod", "refuse"), ("runpod", "503"), ("vastai", "refuse"), ("vastai", "503")],
                         indirect=["fake"])  # fmt: skip
async def test_full_outage_is_transient_for_reads_and_never_leaves_a_duplicate(
    fake: FakeProviderProcess, outage: str
) -> None:
    client = fake.client(timeout_seconds=3)
    offer = await an_offer(client, fake.api)
    fake.faults(outage=outage)
    with pytest.raises(ProviderError) as down:
        await client.list_owned(CLUSTER)
    assert down.value.kind is ErrorKind.TRANSIENT
    with pytest.raises(ProviderError) as create_down:
        await client.create(launch(fake.api)[0], offer)
    # Refused: the request never left, so nothing happened. 503 after sending: it may have happened.
    assert create_down.value.kind is (ErrorKind.TRANSIENT if outage == "refuse" else ErrorKind.AMBIGUOUS)
    fake.faults(outage=None)
    assert await client.list_owned(CLUSTER) == []  # the caller's resolution: list, then adopt or retry
    await client.aclose()


@pytest.mark.parametrize("fake", ["runpod"], indirect=True)
async def test_fake_runpod_lifecycle_actions_follow_the_documented_status_rules(
    fake: FakeProviderProcess,
) -> None:
    client, instance, secrets = await created(fake, "runpod")
    fake.advance(30)
    await until(client, instance.id, Phase.RUNNING)
    auth = {"Authorization": f"Bearer {fake.account_key}"}
    async with httpx.AsyncClient(base_url=fake.api_url, headers=auth) as api:
        stopped = await api.post(f"/v2/pods/{instance.id}/action", json={"action": "stop"})
        assert (stopped.status_code, stopped.json()["status"], stopped.json()["cost"]) == (200, "EXITED", 0.0)
        again = await api.post(f"/v2/pods/{instance.id}/action", json={"action": "stop"})
        assert again.status_code == 409 and again.headers["Content-Type"].startswith(
            "application/problem+json"
        )
        bogus = await api.post(f"/v2/pods/{instance.id}/action", json={"action": "reset"})  # v1 only
        assert bogus.status_code == 422 and bogus.json()["errors"]
        started = await api.post(f"/v2/pods/{instance.id}/action", json={"action": "start"})
        assert started.json()["status"] == "RUNNING"
    engine = await serving(fake, await until(client, instance.id, Phase.RUNNING), secrets)
    assert [m.id async for m in engine.models.list()] == ["llama"]
    await client.terminate(instance.id)
    await client.aclose()


@pytest.mark.parametrize("fake", ["vastai"], indirect=True)
async def test_vast_list_owned_follows_every_page(fake: FakeProviderProcess) -> None:
    fake.admin("POST", "instances", {"name": instance_name(CLUSTER, "ai/many", 0)[:-1] + "{i}", "cluster_id": CLUSTER,
                                     "count": 30})  # fmt: skip
    fake.admin("POST", "instances", {"name": instance_name("other", "ai/many", 0)[:-1] + "{i}", "cluster_id": "other",
                                     "count": 3})  # fmt: skip
    owned = await fake.client().list_owned(CLUSTER)
    assert len(owned) == 30 and len({i.id for i in owned}) == 30


@BOTH
async def test_restarted_fake_keeps_instances_ledger_and_serving_engines(fake: FakeProviderProcess) -> None:
    client, instance, secrets = await created(fake, fake.api)
    fake.advance(600)
    await until(client, instance.id, Phase.RUNNING)
    billed_before = fake.ledger()["instances"][instance.id]["usd"]
    fake.stop()
    fake.start()
    assert fake.ledger()["instances"][instance.id]["usd"] == billed_before
    running = await until(client, instance.id, Phase.RUNNING)
    engine = await serving(fake, running, secrets)
    assert [m.id async for m in engine.models.list()] == ["llama"]
    await client.terminate(instance.id)
    await client.aclose()


@BOTH
async def test_no_key_reaches_a_log(fake: FakeProviderProcess, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    client = fake.client()
    spec, secrets = launch(fake.api)
    instance = await client.create(spec, await an_offer(client, fake.api))
    fake.advance(30)
    running = await until(client, instance.id, Phase.RUNNING)
    await (await serving(fake, running, secrets)).models.list()
    fake.faults(auth="revoked")
    with pytest.raises(ProviderError) as denied:
        await client.list_owned(CLUSTER)
    fake.faults(auth="ok")
    await client.terminate(instance.id)
    await client.aclose()
    fake.stop()
    logs = caplog.text + repr(denied.value) + str(denied.value) + repr(spec) + repr(secrets)
    logs += "".join(p.read_text() for p in fake.state_dir.rglob("*.log"))
    assert "event=instance_created" in logs and "event=engine_started" in logs  # the logs are real
    secret_values = [fake.account_key, secrets.api_key]
    for path, text in spec.files.items():
        if path.endswith("key.pem"):  # every base64 line of the TLS private key
            secret_values += [line for line in text.splitlines() if not line.startswith("-----")]
    assert len(secret_values) >= 2
    for secret in secret_values:
        assert secret not in logs
