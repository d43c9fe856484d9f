"""Error classes the command line reports in one line, kept free of PyTorch.

They are defined here rather than beside the code that raises them so that :mod:`propl.commands`
can recognise them without importing that code: exporting masks (``propl export``) and listing
or choosing model versions (``propl models``) never need the network, and must not pay for
importing torch (seconds on a small CPU). ``propl models --add`` checks the checkpoint it adds,
so it imports torch when it gets there.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file."""


class RetrainError(ValueError):
    """Retraining cannot start (e.g. too few reviewed scans); the message says why."""
