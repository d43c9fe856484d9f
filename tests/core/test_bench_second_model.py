"""The second-model benchmark's signals: a second model that agrees leaves the confidence shown
as it is, one that disagrees lowers it, and the summary puts the two models' Dice side by side.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("second_model.py")


def probabilities(mask: np.ndarray, sure: float = 0.98) -> torch.Tensor:
    p = np.where(mask, sure, 1 - sure).astype(np.float32)
    return torch.from_numpy(p)[None, None]


def square(lo: int, hi: int) -> np.ndarray:
    m = np.zeros((48, 48), bool)
    m[lo:hi, lo:hi] = True
    return m


def test_a_second_model_that_agrees_changes_nothing_and_one_that_disagrees_lowers_it(bench):
    first = probabilities(square(10, 30))
    same = bench.signals(first, first.clone(), 1.0, 0.9)
    assert same["second"] == pytest.approx(same["shown"])
    assert same["pair_mean"] == pytest.approx(same["shown"])
    assert same["mask_agreement"] == pytest.approx(0.9)  # the shape factor still applies

    other = bench.signals(first, probabilities(square(16, 40)), 0.5, 1.0)
    assert other["second"] < other["pair_mean"] < other["shown"]
    assert other["mask_agreement"] == pytest.approx(0.5)


def test_summary_ranks_each_signal_against_the_shipped_models_dice(bench):
    rng = np.random.default_rng(0)
    dices = rng.uniform(0.5, 1.0, 30)
    rows = [
        {
            "dice": d,
            "second_dice": d,  # both models find the same scans hard
            "agreement": 0.95,
            "shown": d,  # ranks perfectly
            "second": -d,  # ranks backwards
            "pair_mean": rng.uniform(),
            "mask_agreement": 0.95,
        }
        for d in dices
    ]
    s = bench.summarise(rows)
    assert s["scans"] == 30
    assert s["dice_spearman"] == pytest.approx(1.0)
    assert s["spearman"]["shown"] == pytest.approx(1.0)
    assert s["spearman"]["second"] == pytest.approx(-1.0)
    low, high = s["interval"]["shown"]
    assert low <= 1.0 <= high + 1e-9
    doc = {"command": "c", "target": 0.7, "tasks": {"t": s}, "seconds": 1.0}
    text = bench.table(doc)
    assert "| t | 30 |" in text and "**Reading.**" in text
