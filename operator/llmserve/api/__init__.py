"""The llmserve API: pydantic models of the custom resources, and the CRDs generated from them."""

from llmserve.api.llmserve import GROUP, KIND, PLURAL, VERSION, LLMServe, LLMServeSpec, LLMServeStatus

__all__ = ["GROUP", "KIND", "PLURAL", "VERSION", "LLMServe", "LLMServeSpec", "LLMServeStatus"]
