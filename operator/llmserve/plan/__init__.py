"""Capacity planning: KV-cache fit, replicas within an SLO, rent versus buy (pure code, no I/O)."""
