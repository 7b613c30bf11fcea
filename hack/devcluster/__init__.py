"""A real local Kubernetes control plane with fake GPU nodes, for the demo and the tests."""
