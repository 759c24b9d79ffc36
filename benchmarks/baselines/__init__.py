"""Baseline servers for the benchmark: (b) no-op ASGI app, (c) tutorial-style FastAPI app."""
