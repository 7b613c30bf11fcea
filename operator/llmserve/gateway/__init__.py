"""The OpenAI-compatible gateway: API keys, routing by model, least-load choice, streaming, hold at zero."""
