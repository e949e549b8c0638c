"""Benchmarks: `python -m bench.<name>`; each prints its figures. Not run by `make test`."""
