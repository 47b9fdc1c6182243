"""The Linux kernel data plane through rtnetlink (pyroute2)."""
