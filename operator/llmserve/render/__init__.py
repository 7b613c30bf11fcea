"""Pure functions turning an LLMServe into the Kubernetes objects that serve it."""
