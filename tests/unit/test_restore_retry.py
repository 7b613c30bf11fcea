"""A deleted child the API server refuses to take back: the retry schedule and what the conditions say."""

from llmserve.controller.restore import failure_message, retry_delay_seconds
from llmserve.controller.status import Observed, compute_conditions, summarize_pods
from llmserve.pods import PodSummary


def test_retries_start_at_one_second_double_and_settle_at_a_minute() -> None:
    assert [retry_delay_seconds(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_the_failure_message_names_the_child_the_count_the_next_try_and_the_refusal() -> None:
    message = failure_message("Deployment", "llama", 3, RuntimeError("exceeded quota: no-deployments"))
    assert message == (
        "applying Deployment llama again failed 3 time(s), next try in 4 s: exceeded quota: no-deployments"
    )


def _conditions(pods: PodSummary, deployment_problem: str, service_problem: str, error: str) -> dict:
    observed = Observed(
        1, 1, pods, None, deployment_problem=deployment_problem, service_problem=service_problem,
        restore_error=error,
    )  # fmt: skip
    return {c.type: c for c in compute_conditions(observed)}


def test_a_deployment_being_restored_says_missing_and_retrying() -> None:
    error = failure_message("Deployment", "llama", 1, RuntimeError("denied by policy"))
    c = _conditions(summarize_pods([]), "Deployment llama does not exist", "", error)
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "DeploymentMissing")
    assert c["Ready"].message.endswith(f"until the operator applies it again; {error}")
    assert (c["Progressing"].status, c["Progressing"].reason, c["Progressing"].message) == (
        "True", "RestoreRetrying", error,
    )  # fmt: skip
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "RestoreFailed")


def test_a_service_being_restored_under_ready_replicas_says_missing_and_retrying() -> None:
    ready_pod = {
        "metadata": {},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    error = failure_message("Service", "llama", 2, RuntimeError("exceeded quota"))
    c = _conditions(summarize_pods([ready_pod]), "", "Service llama does not exist", error)
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "ServiceMissing")
    assert c["Ready"].message.endswith(error)
    assert c["Progressing"].reason == "RestoreRetrying"
