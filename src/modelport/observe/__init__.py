"""Observability: logs (and later metrics, tracing, drift)."""
