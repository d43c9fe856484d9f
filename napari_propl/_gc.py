"""Keep Python's full garbage collections short while a retraining round shares the CPU.

A full (generation-2) collection walks every object the process tracks. In napari with torch
loaded that is hundreds of thousands of objects: one collection held napari's event loop for
223-228 ms while the training subprocess took the other core (``benchmarks/retrain_stall.py``;
the collector's own timing, recorded there, matched the longest stall to the millisecond).

While a round runs, :class:`CollectorHold` moves the objects that exist when it starts into
Python's permanent generation (:func:`gc.freeze`): collections then walk only what is created
during the round. Objects are still freed by reference counting as usual; only cyclic garbage
among the frozen objects waits until the round ends and :func:`gc.unfreeze` hands them back to
the collector. If something else in the process has frozen objects already, the hold leaves
the collector alone rather than unfreeze what it did not freeze.
"""

from __future__ import annotations

import gc


class CollectorHold:
    """``hold()`` freezes the collector's existing objects; ``release()`` unfreezes them.

    Both are idempotent, so every way a round can end may call ``release()``.
    """

    def __init__(self) -> None:
        self.held = False

    def hold(self) -> None:
        if self.held or gc.get_freeze_count():
            return
        gc.freeze()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            gc.unfreeze()
