"""Predictor: any frame size in, mask + uncertainty + confidence per frame out."""

import numpy as np
import pytest
import torch

from propl.checkpoint import save_checkpoint
from propl.inference import Predictor, frames_to_float
from propl.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("propl-small", tasks=("a", "b"), input_size=64, pretrained=False)


@pytest.mark.parametrize("mode", ["mc", "disagreement", "none"])
def test_shapes_and_ranges(model, mode):
    frames = (np.random.default_rng(0).random((3, 50, 70)) * 255).astype(np.uint8)
    pred = Predictor(model, device="cpu", batch_size=2, uncertainty=mode).predict(frames, "b")
    assert pred.mask.shape == pred.probability.shape == pred.uncertainty.shape == (3, 50, 70)
    assert pred.mask.dtype == np.uint8 and set(np.unique(pred.mask)) <= {0, 1}
    assert np.array_equal(pred.mask, (pred.probability > 0.5).astype(np.uint8))
    assert 0 <= pred.uncertainty.min() and pred.uncertainty.max() <= 1
    assert pred.confidence.shape == (3,) and np.all((pred.confidence >= 0) & (pred.confidence <= 1))
    err = pred.expected_error
    assert err.shape == (3,) and np.all((err >= 0) & (err <= 1))
    if mode != "none":
        assert pred.uncertainty.max() > 0
        assert np.all(err > 0)  # an untrained network's probabilities are far from certain
    else:
        assert np.all(err == 0) and np.all(pred.confidence == 1)  # nothing to judge by


def test_mc_uncertainty_is_decoder_1s_spread_not_the_probabilitys_entropy():
    """An untrained network's probabilities sit near 0.5 everywhere, so an entropy map would
    flag the whole scan; the MC map shows the dropout spread: none without dropout, some with
    it. The confidence is not the map's: it asks whether the mask would match a truth drawn
    from the probabilities it was cut from, and for an untrained network they hover near 0.5."""
    torch.manual_seed(0)
    frames = (np.random.default_rng(2).random((2, 48, 48)) * 255).astype(np.uint8)
    still = build_model("propl-small", tasks=("a",), input_size=64, pretrained=False, dropout=0.0)
    calm = Predictor(still, device="cpu", uncertainty="mc").predict(frames, "a")
    assert np.abs(calm.probability - 0.5).max() < 0.3  # untrained: far from 0 and 1
    assert calm.uncertainty.max() == 0.0  # no dropout, no spread ...
    assert np.all(calm.confidence < 0.8)  # ... but no confidence either
    single = Predictor(still, device="cpu", uncertainty="disagreement").predict(frames, "a")
    assert single.uncertainty.mean() > 0.5  # the single-pass map keeps the entropy
    noisy = build_model("propl-small", tasks=("a",), input_size=64, pretrained=False, dropout=0.5)
    pred = Predictor(noisy, device="cpu", uncertainty="mc").predict(frames, "a")
    assert pred.uncertainty.max() > 0 and np.all(pred.confidence < 1.0)


@pytest.mark.parametrize("mode", ["mc", "disagreement"])
def test_confidence_is_the_expected_dice_against_the_masks_own_probabilities(model, mode):
    """Not against decoder 1 (its MC mean or single pass): the same in both modes, whatever
    decoder 1's dropout draws."""
    from propl.uncertainty import confidence_score

    frames = (np.random.default_rng(3).random((2, 40, 40)) * 255).astype(np.uint8)
    predictor = Predictor(model, device="cpu", uncertainty=mode)
    pred = predictor.predict(frames, "a")
    with torch.inference_mode():
        features, t = predictor.encode(torch.from_numpy(frames_to_float(frames)), 0)
        p2, _, belief = predictor._forward(features, t)
    assert belief is not None and not torch.allclose(belief, p2)
    np.testing.assert_allclose(pred.confidence, confidence_score(p2, p2).numpy(), rtol=1e-5)


def test_one_encoding_serves_every_task_as_predict_would(model):
    """predict_encoded on frames encoded once gives each task what predict gives it."""
    frames = (np.random.default_rng(4).random((2, 50, 30)) * 255).astype(np.uint8)
    predictor = Predictor(model, device="cpu")
    with torch.inference_mode():
        features, _ = predictor.encode(torch.from_numpy(frames_to_float(frames)), 0)
    for task_id, task in enumerate(("a", "b")):
        t = torch.full((2,), task_id, dtype=torch.long)
        once = predictor.predict_encoded(features, t, (50, 30))
        full = predictor.predict(frames, task)
        assert np.array_equal(once.mask, full.mask)
        np.testing.assert_allclose(once.probability, full.probability, atol=1e-6)
        np.testing.assert_allclose(once.confidence, full.confidence, atol=1e-6)
        np.testing.assert_allclose(once.uncertainty, full.uncertainty, atol=1e-6)
    assert not np.allclose(  # the task ids decide: the two tasks' decoders differ
        predictor.predict(frames, "a").probability, predictor.predict(frames, "b").probability
    )
    with pytest.raises(ValueError, match="one task"):  # the shape factor is one task's
        predictor.predict_encoded(features, torch.tensor([0, 1]), (50, 30))


def test_batching_does_not_change_results(model):
    frames = (np.random.default_rng(1).random((5, 40, 40)) * 255).astype(np.uint8)
    a = Predictor(model, device="cpu", batch_size=2, uncertainty="disagreement").predict(
        frames, "a"
    )
    b = Predictor(model, device="cpu", batch_size=8, uncertainty="disagreement").predict(
        frames, "a"
    )
    assert np.allclose(a.probability, b.probability, atol=1e-5)
    assert np.allclose(a.uncertainty, b.uncertainty, atol=1e-5)


def test_mc_results_never_vary_between_runs_or_batches(model):
    """The same frame gets the same uncertainty map and confidence every time it is predicted
    (so a queue or an export never changes by chance), alone or batched with other frames, and
    the global random stream is left as it was."""
    frames = (np.random.default_rng(3).random((5, 40, 40)) * 255).astype(np.uint8)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = Predictor(model, device="cpu", batch_size=8, uncertainty="mc").predict(frames, "a")
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(7)  # another global stream: no effect
    again = Predictor(model, device="cpu", batch_size=8, uncertainty="mc").predict(frames, "a")
    alone = Predictor(model, device="cpu", batch_size=1, uncertainty="mc").predict(frames, "a")
    for other in (again, alone):
        assert np.allclose(other.uncertainty, first.uncertainty, atol=1e-5)
        assert np.allclose(other.confidence, first.confidence, atol=1e-6)
    assert first.uncertainty.max() > 0  # dropout still draws T different masks


def test_shared_mc_masks_drop_like_dropout(model):
    """The seeded masks keep each feature with probability 1 - p, scaled by 1 / (1 - p), as
    dropout does: over many samples decoder 1's MC mean matches the unseeded one's."""
    x = torch.rand(2, 1, 64, 64).expand(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.eval().encode(x)
        t = torch.tensor([0, 1])
        torch.manual_seed(0)
        free = model.mc_decoder1(feats, t, 200).mean(0)
        gen = torch.Generator().manual_seed(0)
        shared = model.mc_decoder1(feats, t, 200, generator=gen).mean(0)
    assert torch.allclose(free, shared, atol=0.02)


def test_single_frame_colour_and_uint16(model):
    p = Predictor(model, device="cpu", uncertainty="none")
    rgb = np.zeros((2, 32, 48, 3), np.uint8)
    assert p.predict(rgb, "a").mask.shape == (2, 32, 48)
    assert p.predict(np.zeros((30, 30), np.uint16), "a").mask.shape == (1, 30, 30)


def test_iter_predict_yields_per_batch(model):
    frames = np.zeros((5, 32, 32), np.uint8)
    parts = list(
        Predictor(model, device="cpu", batch_size=2, uncertainty="none").iter_predict(frames, "a")
    )
    assert [len(p.mask) for p in parts] == [2, 2, 1]


def test_errors(model):
    p = Predictor(model, device="cpu")
    with pytest.raises(KeyError, match="unknown task"):
        p.predict(np.zeros((32, 32)), "liver")
    with pytest.raises(ValueError, match="expected frames"):
        p.predict(np.zeros((2, 2, 2, 2, 2)), "a")
    with pytest.raises(ValueError, match="uncertainty"):
        Predictor(model, device="cpu", uncertainty="magic")
    with pytest.raises(ValueError, match="device"):
        Predictor(model, device="tpu")


def test_from_checkpoint(model, tmp_path):
    save_checkpoint(model, tmp_path / "ck")
    p = Predictor.from_checkpoint(tmp_path / "ck", device="cpu", uncertainty="none")
    assert p.tasks == ("a", "b") and p.input_size == 64


def test_frames_to_float():
    assert frames_to_float(np.full((2, 2), 255, np.uint8)).max() == 1.0
    f = frames_to_float(np.array([[0.0, 10.0]]))
    assert f.min() == 0.0 and f.max() == 1.0
    assert frames_to_float(np.array([[0, 4095]], np.uint16)).max() == 1.0
