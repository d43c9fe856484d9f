"""The task-shape benchmark's summary: ρ, the queue's first page and the Dice estimate are
read from each scan's confidence before and after the shape factor."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("task_shape.py")


def rows(n: int = 40) -> list[dict[str, float]]:
    """After ranks the scans perfectly; before ranks them backwards."""
    dice = np.linspace(0.5, 0.99, n)
    return [
        {"dice": float(d), "before": float(1.5 - d), "after": float(d), "shape": 1.0 - (i % 2)}
        for i, d in enumerate(dice)
    ]


def test_summary_reads_each_confidence_against_the_true_dice(bench):
    s = bench.summarise(rows())
    assert s["scans"] == 40 and s["lowered"] == 0.5
    assert s["after"]["spearman"] == pytest.approx(1.0)
    assert s["before"]["spearman"] == pytest.approx(-1.0)
    assert s["after"]["page_dice"] == s["page_oracle"] < s["before"]["page_dice"]
    assert s["after"]["dice_error"] == 0.0 and s["before"]["dice_error"] > 0
    assert s["after"]["spearman_bulk"] == pytest.approx(1.0)
    lo, hi = s["after"]["interval"]
    assert lo <= 1.0 <= hi + 1e-9


def test_table_says_which_tasks_meet_the_target(bench):
    summary = bench.summarise(rows())
    doc = {
        "command": bench.COMMAND,
        "target": 0.7,
        "floors": {"round": 0.99},
        "floor_masks": {"round": 100},
        "sets": {"test": {"round": summary}, "train": {"round": summary}},
        "seconds": 1.0,
    }
    text = bench.table(doc)
    assert "round 0.990 (100 masks)" in text
    assert "after: round (1 of 1; before: 0)" in text
