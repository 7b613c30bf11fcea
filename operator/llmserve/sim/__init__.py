"""vLLM replica simulator: a continuous-batching timing model behind an OpenAI-compatible HTTP server."""
