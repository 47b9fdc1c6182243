"""The FRR backend: render the desired state with jinja2, apply it the way frr-reload.py does
(confirmed), and observe BGP sessions."""
