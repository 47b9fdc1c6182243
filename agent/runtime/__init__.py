"""The daemon: wiring of informers, plan, appliers and status; the reconcile loop; systemd."""
