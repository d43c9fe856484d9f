"""The confidence ceiling's noise model: a "second expert" mask is the first one's outline moved
by noise in proportion to the structure's size, and the oracle ranks perfectly when experts
agree exactly and worse the more they disagree."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def ceiling(load_benchmark):
    return load_benchmark("confidence_ceiling.py")


def disc(radius: float, size: int = 96, centre: tuple[float, float] = (48, 48)) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_a_second_expert_with_no_noise_draws_the_same_mask(ceiling):
    truth = disc(20)
    drawn = ceiling.second_expert(
        ceiling.signed_distance(truth), 20.0, 0.0, np.random.default_rng(0)
    )
    assert (drawn == truth).all()


def test_second_experts_disagree_more_as_the_noise_grows(ceiling):
    truth = disc(25)
    model = disc(24, centre=(49, 48))
    agree = []
    for sigma in (0.01, 0.05, 0.15):
        _, expert = ceiling.noisy_dices(model, truth, sigma, 8, np.random.default_rng(1))
        agree.append(expert.mean())
    assert agree[0] > agree[1] > agree[2]
    assert agree[0] > 0.97 and agree[2] < 0.9


def test_an_empty_expert_mask_stays_empty(ceiling):
    empty = np.zeros((32, 32), dtype=bool)
    model, expert = ceiling.noisy_dices(
        disc(5, 32, (16, 16)), empty, 0.1, 3, np.random.default_rng(0)
    )
    assert (model == 0).all() and (expert == 1).all()


def test_the_oracle_ranks_perfectly_when_experts_agree_and_worse_when_they_do_not(ceiling):
    """Masks a pixel or two off a large disc: with no noise the oracle knows each Dice; with
    boundary noise of several pixels the Dice between scans is mostly the noise."""
    rng = np.random.default_rng(2)
    scans = []
    for _ in range(24):
        truth = disc(30)
        model = disc(30 + rng.uniform(-2, 2), centre=(48 + rng.uniform(-1, 1), 48))
        scans.append((model, truth, float(rng.uniform())))
    exact = ceiling.ceiling(scans, 0.0, draws=4, repeats=2, seed=0)
    noisy = ceiling.ceiling(scans, 0.1, draws=4, repeats=2, seed=0)
    assert exact["oracle"] == pytest.approx(1.0)
    assert noisy["oracle"] < 0.8
