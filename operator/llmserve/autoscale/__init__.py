"""Autoscaling: engine signal collection and the pure scaling policy."""
