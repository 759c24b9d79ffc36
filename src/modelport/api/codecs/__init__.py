"""Wire formats ↔ named numpy arrays."""
