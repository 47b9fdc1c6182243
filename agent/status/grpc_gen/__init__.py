"""Generated gRPC code for proto/kube_fabric_agent/v1/status.proto (see generate.py)."""
