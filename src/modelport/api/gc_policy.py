"""Garbage-collector policy for a serving process.

A loaded server holds a few hundred thousand long-lived objects (numpy, scikit-learn,
onnxruntime, starlette, the models). With CPython's default thresholds a full collection
walks all of them every fraction of a second under load and stalls the event loop for
tens of milliseconds: that pause *is* the p99 (docs/benchmarks.md). Two changes:

- ``raise_thresholds``: young collections every 50,000 net allocations instead of 700, and
  older generations rarer, so request garbage (almost all freed by reference counting
  anyway) rarely triggers a pass.
- ``freeze``: once the models are loaded, move everything alive into the permanent
  generation, so later full collections only walk objects created after start-up.

Applied by ``modelport serve`` (settings.server.gc_tuning), not by ``create_app`` itself:
an app built in a test process must not change that process's collector.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("modelport.api")

THRESHOLDS = (50_000, 20, 100)


def raise_thresholds() -> None:
    gc.set_threshold(*THRESHOLDS)


def freeze() -> None:
    """Collect once, then exempt every surviving object from future collections."""
    gc.collect()
    gc.freeze()
    log.debug("gc: %d start-up objects frozen", gc.get_freeze_count())
