"""``python -m bench``: the relay's reproducible loopback benchmark (see BENCHMARKS.md)."""
