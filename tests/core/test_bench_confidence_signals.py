"""The confidence-signals benchmark's post-hoc signals: the outline's typicality ignores where a
mask is and how big it is but not its shape, the neighbours' Dice never counts a train scan's
own Dice, and the calibrated temperature is the one whose mean confidence matches the mean Dice.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("confidence_signals.py")


def disc(size: int, centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_outline_takes_out_position_and_size_not_shape(bench):
    small = bench.outline(disc(200, (60, 70), 20))
    large = bench.outline(disc(200, (120, 110), 40))
    bar = np.zeros((200, 200), bool)
    bar[90:110, 20:180] = True
    assert small is not None and large is not None
    assert small.shape == (bench.GRID * bench.GRID,)

    def soft_dice(a, b):
        return 2 * float(a @ b) / float(a.sum() + b.sum())

    assert soft_dice(small, large) > 0.95
    assert soft_dice(small, bench.outline(bar)) < 0.7
    assert bench.outline(disc(50, (25, 25), 1.5)) is None  # under 16 pixels


def row(bench, mask: np.ndarray, expert: np.ndarray, own: float = 0.9) -> dict:
    return {
        "outline_typical": own,
        "outline": bench.outline(mask),
        "expert_outline": bench.outline(expert),
    }


def test_an_outline_unlike_every_expert_outline_lowers_own_probabilities(bench):
    rng = np.random.default_rng(0)
    experts = [disc(120, (60, 60), r) for r in rng.uniform(20, 40, 12)]
    bar = np.zeros((120, 120), bool)
    bar[55:65, 5:115] = True
    rows = {
        "train": {"t": [row(bench, m, m) for m in experts]},
        "test": {
            "t": [row(bench, disc(120, (50, 70), 30), experts[0]), row(bench, bar, experts[0])]
        },
    }
    bench.add_outline_typical(rows)
    like, unlike = rows["test"]["t"]
    assert like["outline_typical"] == pytest.approx(0.9)  # a disc among discs: not lowered
    assert unlike["outline_typical"] < 0.7
    # each train mask is its own expert's: that expert is left out, the other discs still match
    # (at most the 5 % the floor lets through are lowered, and hardly)
    train = [r["outline_typical"] for r in rows["train"]["t"]]
    assert sum(v < 0.9 for v in train) <= 1 and min(train) > 0.88


def test_neighbours_dice_leaves_a_train_scan_out_of_its_own_neighbours(bench):
    rng = np.random.default_rng(0)
    n = bench.NEIGHBOURS + 5
    train = [{"pooled": rng.normal(size=8), "dice": 0.9} for _ in range(n)]
    train[0]["dice"] = 0.0  # only scan 0 was segmented badly
    test = [{"pooled": train[0]["pooled"].copy(), "dice": 0.5}]
    rows = {"train": {"t": train}, "test": {"t": test}}
    bench.add_neighbour_dice(rows)
    assert rows["train"]["t"][0]["neighbour_dice"] == pytest.approx(0.9)  # not its own 0
    # a test scan that looks exactly like scan 0 has it among its neighbours
    assert rows["test"]["t"][0]["neighbour_dice"] == pytest.approx(0.9 * (1 - 1 / bench.NEIGHBOURS))


def test_calibrated_temperature_matches_the_mean_confidence_to_the_mean_dice(bench):
    k = len(bench.TEMPERATURES)
    grid = list(np.linspace(0.99, 0.5, k))  # confidence falls as the temperature rises
    want = 3
    train = [{"tempered_grid": grid, "dice": grid[want] + 0.001} for _ in range(5)]
    test = [{"tempered_grid": [v - 0.1 for v in grid], "dice": 0.1}]
    rows = {"train": {"t": train}, "test": {"t": test}}
    chosen = bench.add_calibrated(rows)
    assert chosen == {"t": bench.TEMPERATURES[want]}
    assert rows["test"]["t"][0]["calibrated"] == pytest.approx(grid[want] - 0.1)


def test_learnt_belief_lowers_the_confidence_where_the_expert_differs_from_such_masks(bench):
    """Train rows whose expert adds the region a feature channel marks: the head learns it, and a
    test mask that leaves such a region out scores lower than one that does not."""
    size = 12
    mask = np.zeros((size, size), np.float32)
    mask[3:9, 3:9] = 1
    extra = np.zeros_like(mask)
    extra[3:9, 9:12] = 1
    p2 = np.where(mask > 0, 0.99, 0.01).astype(np.float32)[None]
    logit = np.log(p2 / (1 - p2)) / 5

    def row(marked: bool) -> dict:
        hint = extra if marked else np.zeros_like(extra)
        return {
            "p2": p2,
            "shape_factor": 1.0,
            "belief_input": np.concatenate([hint[None], logit]).astype(np.float16),
            "belief_target": np.maximum(mask, hint)[None],
            "learnt_belief": 0.0,
        }

    rows = {
        "train": {"t": [row(i % 2 == 0) for i in range(40)]},
        "test": {"t": [row(False), row(True)]},
    }
    bench.add_learnt_belief(rows, steps=60)
    plain, marked = (r["learnt_belief"] for r in rows["test"]["t"])
    assert plain > 0.9 and marked < plain - 0.1
    train = rows["train"]["t"]
    assert all(0 < r["learnt_belief"] <= 1 for r in train)
    assert np.mean([r["learnt_belief"] for r in train[::2]]) < np.mean(
        [r["learnt_belief"] for r in train[1::2]]
    )
