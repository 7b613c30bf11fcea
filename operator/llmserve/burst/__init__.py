"""Rented GPU capacity: provider clients behind one protocol (no Kubernetes in this package)."""
