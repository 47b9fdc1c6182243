"""Informers: the agent's inputs (Kubernetes list/watch, pod watches per node, lldpd). The only
stage besides the appliers that does I/O; each keeps a store and says when it changed."""
