"""The apiserver's answer, kept in KubeError: its message, the fields it names, and whether a retry helps."""

from __future__ import annotations

import httpx

from llmserve.controller.reconcile import apply_error_message
from llmserve.kube import KubeError, error_from_response


def response(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("PATCH", "https://apiserver/x"))


def test_an_invalid_child_keeps_the_servers_message_and_the_fields_it_names() -> None:
    err = error_from_response(response(422, {
        "kind": "Status", "reason": "Invalid",
        "message": 'Service "llama.3" is invalid: metadata.name: Invalid value: "llama.3": a DNS-1035 label ...',
        "details": {"causes": [{"field": "metadata.name", "reason": "FieldValueInvalid"}]},
    }), "fallback")  # fmt: skip
    assert (err.status, err.reason, err.fields) == (422, "Invalid", ("metadata.name",))
    assert not err.retryable
    child = {"kind": "Service", "metadata": {"name": "llama.3"}}
    message = apply_error_message(child, err)
    assert message.startswith("applying Service llama.3 failed: Service")
    assert "(fields:" not in message  # already named in the server's words


def test_fields_the_message_leaves_out_are_appended() -> None:
    err = KubeError("the object is invalid", 422, "Invalid", ("spec.template.spec.containers[0].image",))
    message = apply_error_message({"kind": "Deployment", "metadata": {"name": "llama"}}, err)
    assert message.endswith("(fields: spec.template.spec.containers[0].image)")


def test_server_side_apply_that_cannot_build_the_object_is_not_retried_forever() -> None:
    err = error_from_response(response(500, {
        "kind": "Status", "reason": "InternalError",
        "message": 'failed to create typed patch object (apps/v1, Kind=Deployment): .spec.template.spec.'
                   'containers[name="engine"].volumeMounts: duplicate entries for key [mountPath="/dev/shm"]',
    }), "fallback")  # fmt: skip
    assert err.status == 500 and "volumeMounts" in str(err)
    assert not err.retryable
    assert error_from_response(response(503, {"message": "etcd is down"}), "x").retryable


def test_an_answer_without_a_status_body_keeps_the_fallback() -> None:
    plain = httpx.Response(502, text="bad gateway", request=httpx.Request("GET", "https://apiserver/x"))
    err = error_from_response(plain, "Server error '502 Bad Gateway'")
    assert (str(err), err.status, err.retryable) == ("Server error '502 Bad Gateway'", 502, True)
