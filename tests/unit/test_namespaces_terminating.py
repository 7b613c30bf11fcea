"""Which namespaces count as being deleted: from their watch events, or from a create refused there."""

from llmserve import kube
from llmserve.controller import namespaces

REFUSAL = 'deployments.apps "llama" is forbidden: unable to create new content in namespace ai because it is being terminated'  # fmt: skip


def test_a_namespace_is_terminating_from_its_deletion_until_it_is_gone() -> None:
    namespaces.observe("ai-1", deleting=False)
    assert not namespaces.terminating("ai-1")
    namespaces.observe("ai-1", deleting=True)
    assert namespaces.terminating("ai-1")
    namespaces.observe("ai-1", deleting=True, gone=True)
    assert not namespaces.terminating("ai-1")  # a namespace of that name may be made again


def test_a_create_refused_for_a_terminating_namespace_marks_it_terminating() -> None:
    assert namespaces.refused_as_terminating("ai-2", kube.KubeError(REFUSAL, 403, "Forbidden"))
    assert namespaces.terminating("ai-2")
    namespaces.observe("ai-2", deleting=True, gone=True)


def test_other_refusals_do_not() -> None:
    quota = kube.KubeError('deployments.apps "llama" is forbidden: exceeded quota: no-deployments', 403)
    assert not namespaces.refused_as_terminating("ai-3", quota)
    assert not namespaces.refused_as_terminating("ai-3", kube.KubeError("etcdserver: timeout", 500))
    assert not namespaces.terminating("ai-3")
