"""Cluster state: Kubernetes objects validated and parsed into plain data (Nodes, attachments,
pods). Pure: no I/O."""
