"""The services, one package each, run as `python -m services.<name>` (see shared/catalog.py)."""
