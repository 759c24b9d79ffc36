"""Persistence behind small interfaces; see ``interfaces.py`` and README.md."""
