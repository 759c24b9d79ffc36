"""HTTP transport (see README.md in this folder)."""
