"""Error classes the command line reports in one line, kept free of PyTorch.

They are defined here rather than beside the code that raises them so that :mod:`propl.commands`
can recognise them without importing that code: ``propl export`` and ``propl models`` never
need the model, and must not pay for importing torch (seconds on a small CPU).
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file."""


class RetrainError(ValueError):
    """Retraining cannot start (e.g. too few reviewed scans); the message says why."""
