"""Every LLMServe in examples/ is one the API accepts, so a user can apply it as it is."""

from pathlib import Path

import pytest
import yaml

from llmserve.api import LLMServe
from llmserve.api.burstpool import BurstPool

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_llmserves_validate_against_the_models(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents, f"{path.name} is empty"
    for document in documents:
        if document.get("kind") == "LLMServe":
            LLMServe.model_validate(document)
        elif document.get("kind") == "BurstPool":
            BurstPool.model_validate(document)
