"""One module per model format. Each imports its framework at the top and is imported only
when a model of that format is loaded (see ``core/discovery.py``)."""
