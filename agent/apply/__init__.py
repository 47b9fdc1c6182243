"""Appliers: each diffs the desired state against what it observes and changes only the
difference (FRR through frr-reload.py, Linux through netlink, SONiC through Redis)."""
