"""Observed state and how it is shown: the status view, events, the status file, metrics, the
gRPC status service."""
