"""llmserve: a Kubernetes operator for autoscaled, OpenAI-compatible GPU model serving."""

__version__ = "0.1.0"
