"""Uncertainty, pseudo-labels and confidence on hand-made probability maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from propl.uncertainty import (
    BELIEF_FLOOR,
    PSEUDO_LABEL_MODES,
    binary_entropy,
    confidence_score,
    disagreement,
    expected_error_fraction,
    hermes_mask,
    make_pseudo_label,
    mc_statistics,
    mc_uncertainty,
    uncertainty_map,
    uplc_calibrate,
)


def image(*values: float) -> torch.Tensor:
    """A ``(1, 1, 1, N)`` probability map holding ``values``."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


def test_mc_statistics_matches_numpy(rng):
    samples = torch.from_numpy(rng.random((5, 2, 1, 8, 9))).float()
    mean, var = mc_statistics(samples)
    assert mean.shape == var.shape == (2, 1, 8, 9)
    np.testing.assert_allclose(mean.numpy(), samples.numpy().mean(0), rtol=1e-5)
    np.testing.assert_allclose(var.numpy(), samples.numpy().var(0), rtol=1e-4, atol=1e-7)
    _, var1 = mc_statistics(samples[:1])
    assert torch.all(var1 == 0)


def test_binary_entropy():
    h = binary_entropy(image(0.5, 0.0, 1.0, 0.11))
    assert h[0, 0, 0, 0] == pytest.approx(1.0)
    assert h[0, 0, 0, 1] == pytest.approx(0.0, abs=1e-4)
    assert h[0, 0, 0, 2] == pytest.approx(0.0, abs=1e-4)
    assert h[0, 0, 0, 3] == pytest.approx(0.4999, abs=1e-3)  # H(0.11) ≈ 0.5 bit
    assert h.min() >= 0 and h.max() <= 1


def test_disagreement():
    d = disagreement(image(0.9, 0.2), image(0.1, 0.2))
    torch.testing.assert_close(d, image(0.8, 0.0))


def test_uplc_arithmetic():
    mean, var = image(0.55, 0.52), image(0.2, 0.25)
    cal = uplc_calibrate(mean, var, gamma=2.0)
    assert cal[0, 0, 0, 0] == pytest.approx(0.55 * math.exp(-0.04), abs=1e-6)  # 0.5284
    assert cal[0, 0, 0, 1] == pytest.approx(0.52 * math.exp(-0.0625), abs=1e-6)  # 0.4885
    pl = make_pseudo_label(mean, var, mode="uplc")
    torch.testing.assert_close(pl.target, image(1.0, 0.0))
    torch.testing.assert_close(pl.weight, torch.ones_like(mean))


def test_weighted_mode():
    # certain & stable, uncertain (0.5), certain but unstable (var above var_max)
    mean, var = image(0.999, 0.5, 0.02), image(0.0, 0.0, 0.1)
    pl = make_pseudo_label(mean, var, mode="weighted", var_max=0.05)
    torch.testing.assert_close(pl.target, image(1.0, 0.0, 0.0))
    w = pl.weight[0, 0, 0]
    assert w[0] > 0.98
    assert w[1] == pytest.approx(0.0, abs=1e-6)
    assert w[2] == 0.0
    # half the variance budget halves the weight of a certain pixel
    half = make_pseudo_label(image(0.999), image(0.025), mode="weighted", var_max=0.05)
    assert half.weight.item() == pytest.approx(0.5 * w[0].item(), rel=1e-4)


def test_agreement_mode():
    mean = image(0.9, 0.9, 0.1, 0.9)
    var = image(0.0, 0.0, 0.0, 0.2)
    p2 = image(0.8, 0.3, 0.2, 0.9)  # agrees, disagrees, agrees, agrees but var too high
    pl = make_pseudo_label(mean, var, mode="agreement", p2=p2)
    torch.testing.assert_close(pl.target, image(1.0, 1.0, 0.0, 1.0))
    torch.testing.assert_close(pl.weight, image(1.0, 0.0, 1.0, 0.0))
    with pytest.raises(ValueError, match="p2"):
        make_pseudo_label(mean, var, mode="agreement")


def test_unknown_mode_lists_the_modes():
    with pytest.raises(ValueError, match="uplc") as info:
        make_pseudo_label(image(0.5), image(0.0), mode="nope")
    assert all(m in str(info.value) for m in PSEUDO_LABEL_MODES)


@pytest.mark.parametrize("mode", PSEUDO_LABEL_MODES)
def test_pseudo_label_shapes(mode, rng):
    mean = torch.from_numpy(rng.random((3, 1, 16, 12))).float()
    var = 0.1 * torch.from_numpy(rng.random((3, 1, 16, 12))).float()
    pl = make_pseudo_label(mean, var, mode=mode, p2=mean.flip(-1))
    assert pl.target.shape == pl.weight.shape == mean.shape
    assert pl.target.dtype == pl.weight.dtype == torch.float32
    assert set(pl.target.unique().tolist()) <= {0.0, 1.0}
    assert pl.weight.min() >= 0 and pl.weight.max() <= 1


def _hermes_batch(*ambiguous: float) -> torch.Tensor:
    # as many confident foreground (0.99) as confident background (0.01) pixels: r = 1 for
    # both classes, so both class thresholds are 0.95
    return image(0.99, 0.99, 0.01, 0.01, *ambiguous)


def test_hermes_keeps_confident_drops_ambiguous():
    mask = hermes_mask(_hermes_batch(0.5, 0.3), progress=0.0)
    assert mask.shape == (1, 1, 1, 6)
    torch.testing.assert_close(mask, image(1, 1, 1, 1, 0, 0))


def test_hermes_entropy_threshold_ramps():
    # p = 0.75: entropy 0.562 nats, above τ_H(0) ≈ 0.521 but below τ_H(1) = ln 2
    p = _hermes_batch(0.75)
    assert hermes_mask(p, progress=0.0)[..., -1].item() == 0.0
    assert hermes_mask(p, progress=1.0)[..., -1].item() == 1.0
    # p = 0.8: entropy 0.500 nats, kept from the start (below both thresholds)
    assert hermes_mask(_hermes_batch(0.8), progress=0.0)[..., -1].item() == 1.0


def test_hermes_class_adaptive_threshold():
    # no confident foreground at all: r_fg = 0, τ_fg = 0.5, so a 0.7 foreground pixel passes
    # the confidence test and is kept even though its entropy is high; a 0.3 (background,
    # confidence 0.7 < τ_bg = 0.95) pixel with the same entropy is dropped
    p = image(0.01, 0.01, 0.7, 0.3)
    torch.testing.assert_close(hermes_mask(p, progress=0.0), image(1, 1, 1, 0))
    # nothing confident anywhere: both thresholds 0.5, every pixel passes
    assert torch.all(hermes_mask(image(0.6, 0.4), progress=0.0) == 1)


def test_mc_uncertainty_is_the_root_of_the_normalised_mc_std():
    var = image(0.0, 0.0001, 0.01, 0.25)  # std 0, 0.01, 0.1, 0.5
    unc = mc_uncertainty(var)
    expected = image(0.0, 0.02**0.5, 0.2**0.5, 1.0)
    torch.testing.assert_close(unc, expected)
    # a variance above the maximum, or a rounding error below 0, stays in [0, 1]
    torch.testing.assert_close(mc_uncertainty(image(0.3, -1e-9)), image(1.0, 0.0))


def test_uncertainty_map():
    mean = image(0.99, 0.5, 0.99, 0.99)
    var = image(0.0, 0.0, 0.04, 0.0)  # std 0.2 -> 0.4
    p2 = image(0.99, 0.5, 0.99, 0.29)  # disagreement 0.7
    only_entropy = uncertainty_map(mean)
    assert only_entropy[0, 0, 0, 1] == pytest.approx(1.0)
    assert only_entropy[0, 0, 0, 0] < 0.1
    unc = uncertainty_map(mean, var, p2)
    assert unc.shape == mean.shape
    assert unc[0, 0, 0, 2] == pytest.approx(0.4, abs=1e-5)
    assert unc[0, 0, 0, 3] == pytest.approx(0.7, abs=1e-5)
    assert unc.min() >= 0 and unc.max() <= 1
    assert uncertainty_map(image(0.5), image(0.25))[0, 0, 0, 0] == pytest.approx(1.0)


def _disc(size: int = 32, radius: int = 8) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((yy - size // 2) ** 2 + (xx - size // 2) ** 2) <= radius**2).float()[None, None]


def test_confidence_is_the_dice_expected_against_the_belief():
    # a 10-pixel mask; the belief is sure of 5 of its pixels and of nothing else
    prob = torch.zeros(1, 1, 4, 8)
    prob.view(-1)[:10] = 0.9
    belief = torch.zeros_like(prob)
    belief.view(-1)[:5] = 1.0
    conf = confidence_score(prob, belief)
    assert conf.item() == pytest.approx((2 * 5 + 1) / (10 + 5 + 1))
    # the same belief at 0.5: half the overlap expected, half the foreground
    conf_half = confidence_score(prob, belief * 0.5)
    assert conf_half.item() == pytest.approx((2 * 2.5 + 1) / (10 + 2.5 + 1))


def test_confidence_confident_beats_uncertain():
    disc = _disc()
    sharp = 0.01 + 0.98 * disc
    blurry = 0.3 + 0.4 * disc  # same mask (0.7 > 0.5) but doubtful everywhere
    prob = torch.cat([sharp, blurry])
    conf = confidence_score(prob, prob)
    assert conf.shape == (2,)
    assert conf[0] > 0.98 and conf[1] < 0.5


def test_confidence_empty_certain_image_is_confident():
    prob = torch.full((1, 1, 32, 32), 0.001)
    assert confidence_score(prob, prob).item() == 1.0
    # below the floor, the faint probability of a large background does not add up
    big = torch.full((1, 1, 512, 512), BELIEF_FLOOR * 0.9)
    assert confidence_score(big, big).item() == 1.0


def test_confidence_ignores_far_certain_background():
    # the same doubtful boundary in a small and in a large image: confidence should not rise
    # just because more certain background surrounds it
    small = 0.01 + 0.98 * _disc(32, 8)
    large = torch.nn.functional.pad(small, (48, 48, 48, 48), value=0.01)
    doubt_small, doubt_large = small.clone(), large.clone()
    doubt_small[..., 8, 12:20] = 0.3  # a doubtful stretch of outline in the belief
    doubt_large[..., 56, 60:68] = 0.3
    c_small = confidence_score(small, doubt_small).item()
    c_large = confidence_score(large, doubt_large).item()
    assert c_small == pytest.approx(c_large, abs=1e-6)
    assert c_small < confidence_score(small, small).item()


def test_confidence_flags_doubt_away_from_foreground():
    prob = torch.full((1, 1, 32, 32), 0.01)
    spot = prob.clone()
    spot[..., 4:8, 4:8] = 0.45  # a possible missed target: below threshold but doubtful
    conf = confidence_score(prob, spot)
    assert conf.item() == pytest.approx(1 / (16 * 0.45 + 1))
    bigger = prob.clone()
    bigger[..., 4:12, 4:12] = 0.45
    assert confidence_score(prob, bigger).item() < conf.item()


def test_confidence_in_unit_range_and_follows_the_threshold():
    g = torch.Generator().manual_seed(0)
    prob, belief = torch.rand(6, 1, 16, 16, generator=g), torch.rand(6, 1, 16, 16, generator=g)
    conf = confidence_score(prob, belief)
    assert torch.all((conf >= 0) & (conf <= 1))
    # a mask of every pixel against the belief itself: 2Σb / (N + Σb) (plus the one pixel)
    every = confidence_score(prob, belief, threshold=-1.0)
    b = torch.where(belief >= BELIEF_FLOOR, belief, 0).sum(dim=(1, 2, 3))
    assert torch.allclose(every, (2 * b + 1) / (256 + b + 1))


def test_expected_error_counts_the_pixels_to_correct():
    # a 10-pixel mask; the belief is sure of 5 of its pixels and puts 0.5 on 4 pixels outside
    prob = torch.zeros(1, 1, 4, 8)
    prob.view(-1)[:10] = 0.9
    belief = torch.zeros_like(prob)
    belief.view(-1)[:5] = 1.0
    belief.view(-1)[20:24] = 0.5
    belief.view(-1)[30] = BELIEF_FLOOR * 0.9  # faint background: counts as none
    error = expected_error_fraction(prob, belief)
    assert error.item() == pytest.approx((5 * 1.0 + 4 * 0.5) / 32)
    # unlike the confidence, a small and a large target half missed differ: more pixels to fix
    small, large = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    small[..., :2, :4], large[..., :8, :8] = 1.0, 1.0
    half_small, half_large = small.clone(), large.clone()
    half_small[..., :1, :4], half_large[..., :4, :8] = 0.0, 0.0
    assert confidence_score(half_small, small).item() == pytest.approx(
        confidence_score(half_large, large).item(), abs=0.05
    )
    assert expected_error_fraction(half_large, large) == 8 * expected_error_fraction(
        half_small, small
    )
    certain = torch.full((1, 1, 32, 32), 0.001)
    assert expected_error_fraction(certain, certain).item() == 0.0


def test_confidence_shape_check():
    with pytest.raises(ValueError, match="B, 1, H, W"):
        confidence_score(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="B, 1, H, W"):
        expected_error_fraction(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))
