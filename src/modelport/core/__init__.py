"""Transport-neutral model serving core (see README.md in this folder)."""
