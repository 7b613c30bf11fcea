"""The InvalidSpec message names the field at fault, for field checks and cross-field rules alike."""

from llmserve.controller.reconcile import parse_spec


def test_a_cross_field_rule_is_reported_under_the_field_it_names() -> None:
    spec, message = parse_spec({"model": {"name": "m"}, "minReplicas": 3, "maxReplicas": 2})
    assert spec is None
    assert message == "spec.minReplicas: minReplicas must be less than or equal to maxReplicas"


def test_a_field_check_is_reported_under_its_path() -> None:
    spec, message = parse_spec({"model": {"name": "m"}, "minReplicas": -1})
    assert spec is None
    assert message == "spec.minReplicas: Input should be greater than or equal to 0"
