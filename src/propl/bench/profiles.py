"""The SSL benchmark's budgets, free of heavy imports so that the command line can list them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    size: int
    steps: int
    batch: int
    eval_every: int
    arch: str = "propl"


PROFILES = {
    "smoke": Profile(size=64, steps=4, batch=2, eval_every=2, arch="propl-small"),
    "quick": Profile(size=128, steps=400, batch=8, eval_every=100),
    # quick's input and batch at four times the steps: does a longer budget change the ranking?
    "long": Profile(size=128, steps=1600, batch=8, eval_every=200),
    "full": Profile(size=224, steps=8000, batch=16, eval_every=500),
}
