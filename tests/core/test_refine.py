"""Contract tests of the click refinement head (64x64 inputs, tiny model) and its training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from propl.checkpoint import load_checkpoint, save_checkpoint
from propl.data.benchmark import ArraySet
from propl.errors import CheckpointError
from propl.inference import Predictor
from propl.interactive import NO_REFINE, Click, Refiner, RefineUnavailableError
from propl.models import ProPLConfig, build_model
from propl.models.refine import RefineConfig, click_maps
from propl.train.refine import RefineTrainConfig, RefineTrainer, cache_frames

SIZE = 64
TASKS = ("blob", "ring")
REFINE = {"width": 8, "click_radius": 3.0}


def tiny(refine: dict[str, object] | None = REFINE) -> torch.nn.Module:
    torch.manual_seed(0)
    kw: dict[str, object] = dict(tasks=TASKS, input_size=SIZE, pretrained=False)
    if refine is not None:
        kw["refine"] = refine
    return build_model("propl-small", **kw).eval()


def blobs(n: int, rng: np.random.Generator) -> ArraySet:
    """n 64x64 speckled frames, each with a bright disc and its mask."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images, masks = [], []
    for _ in range(n):
        cy, cx, r = rng.integers(20, 44), rng.integers(20, 44), rng.integers(6, 14)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.uint8)
        img = 60 + 120 * mask + rng.normal(0, 20, mask.shape)
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        masks.append(mask)
    return ArraySet(
        np.stack(images),
        np.stack(masks),
        np.zeros(n, np.int64),
        [str(i) for i in range(n)],
        [(SIZE, SIZE)] * n,
    )


def features(model: torch.nn.Module, b: int = 2) -> tuple[list[torch.Tensor], torch.Tensor]:
    x = torch.rand(b, 1, SIZE, SIZE)
    return model.encode(x), x


def test_head_forward_and_backward_shapes() -> None:
    model = tiny()
    feats, x = features(model)
    emb = model.refine.embed(feats, x, model.prompt(torch.tensor([0, 1])))
    points = torch.tensor([[[10.0, 12.0, 1.0], [0.0, 0.0, 0.0]], [[5.0, 5.0, -1.0], [20, 3, 1]]])
    maps = click_maps(torch.zeros(2, 1, SIZE // 2, SIZE // 2), points, 1.5)
    assert maps.shape == (2, 4, SIZE // 2, SIZE // 2)
    assert maps[0, 1, 10, 12] == 1 and maps[0, 2].sum() == 0 and maps[1, 2, 5, 5] == 1
    logits = model.refine.decode(emb, maps)
    assert logits.shape == (2, 1, SIZE // 2, SIZE // 2)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.refine.parameters())
    with pytest.raises(ValueError, match="half the input"):
        model.refine.decode(emb, torch.zeros(2, 4, SIZE, SIZE))


def test_box_channel_and_no_prompt() -> None:
    model = tiny()
    feats, x = features(model, 1)
    emb = model.refine.embed(feats, x, None)
    box = torch.tensor([[2.0, 3.0, 10.0, 20.0]])
    maps = click_maps(torch.zeros(1, 1, 32, 32), torch.zeros(1, 0, 3), 1.0, box)
    assert maps[0, 3].sum() == 8 * 17 and maps[0, 3, 2, 3] == 1 and maps[0, 3, 10, 3] == 0
    assert torch.isfinite(model.refine.decode(emb, maps)).all()


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"width": 7}, ValueError),
        ({"width": 1024}, ValueError),
        ({"width": 8.0}, TypeError),
        ({"click_radius": 0.1}, ValueError),
        ({"click_radius": True}, TypeError),
        ({"depth": 3}, TypeError),
        ([8], TypeError),
    ],
)
def test_refine_config_is_validated(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="refine"):
        ProPLConfig(tasks=TASKS, refine=value)  # type: ignore[arg-type]


def test_config_without_head_is_unchanged() -> None:
    assert "refine" not in ProPLConfig(tasks=TASKS).to_dict()
    cfg = ProPLConfig(tasks=TASKS, refine=REFINE)
    assert cfg.refine == RefineConfig(8, 3.0) and cfg.to_dict()["refine"] == REFINE


def test_checkpoint_round_trip_keeps_head(tmp_path: Path) -> None:
    model = tiny()
    save_checkpoint(model, tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["config"]["refine"] == REFINE
    loaded = load_checkpoint(tmp_path / "m").model
    assert loaded.has_refine
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_bad_refine_config_is_a_checkpoint_error(tmp_path: Path) -> None:
    save_checkpoint(tiny(), tmp_path / "m")
    path = tmp_path / "m" / "model.json"
    doc = json.loads(path.read_text())
    doc["config"]["refine"]["width"] = -4
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="refine.width"):
        load_checkpoint(tmp_path / "m")


def test_old_checkpoint_loads_and_clicks_need_newer_model(tmp_path: Path) -> None:
    save_checkpoint(tiny(None), tmp_path / "old")
    predictor = Predictor.from_checkpoint(tmp_path / "old", device="cpu", uncertainty="none")
    assert not predictor.model.has_refine
    with pytest.raises(RefineUnavailableError, match=NO_REFINE):
        Refiner(predictor, np.zeros((40, 50), np.uint8), "blob")


def test_adding_head_leaves_automatic_segmentation_bit_identical() -> None:
    old = tiny(None)
    new = tiny(None)
    new.load_state_dict(old.state_dict())
    new.add_refine(RefineConfig(8, 3.0))
    x, t = torch.rand(2, 1, SIZE, SIZE), torch.tensor([0, 1])
    with torch.inference_mode():
        a, b = old(x, t), new(x, t)
    assert torch.equal(a["d1"], b["d1"]) and torch.equal(a["d2"], b["d2"])
    assert new.config.refine == RefineConfig(8, 3.0) and not old.has_refine


def test_refiner_at_frame_resolution() -> None:
    predictor = Predictor(tiny(), device="cpu", uncertainty="none")
    frame = (np.random.default_rng(0).random((50, 70)) * 255).astype(np.uint8)
    refiner = Refiner(predictor, frame, "ring")
    mask, prob = refiner.refine(None, [Click(25, 35, True), Click(3, 3, False)], box=(5, 5, 40, 60))
    assert mask.shape == prob.shape == (50, 70) and mask.dtype == np.uint8
    assert prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
    again, _ = Refiner(predictor, frame, None).refine(mask, [])
    assert again.shape == (50, 70)
    with pytest.raises(ValueError, match="mask must be"):
        refiner.refine(np.zeros((64, 64)), [])
    with pytest.raises(KeyError, match="unknown task"):
        Refiner(predictor, frame, "nerve")


def test_training_moves_only_the_head(rng: np.random.Generator) -> None:
    model = tiny()
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("refine.")}
    head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("refine.")}
    cache = cache_frames(model, blobs(4, rng), batch_size=4)
    assert len(cache) == 4 and cache.truth.shape == (4, 1, 32, 32)
    config = RefineTrainConfig(steps=2, batch_size=2, lr=1e-2, max_rounds=1)
    summary = RefineTrainer(model, cache, config).fit()
    assert summary["frames"] == 4 and np.isfinite(summary["final_loss"])
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert any(not torch.equal(state[k], v) for k, v in head.items())


def test_trainer_needs_a_head(rng: np.random.Generator) -> None:
    model = tiny(None)
    with pytest.raises(ValueError, match="add_refine"):
        RefineTrainer(model, cache_frames(model, blobs(2, rng)), RefineTrainConfig(steps=1))


# --- project retraining: the head learns the confirmed corrections, never for the worse ----


def _head_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith("refine.")}


@pytest.mark.parametrize("before_after, kept", [((0.5, 0.8), True), ((0.8, 0.5), False)])
def test_tuned_head_is_kept_only_if_held_back_clicks_no_worse(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, before_after, kept
) -> None:
    import propl.train.refine as refine

    model = tiny()
    head, rest = (
        _head_state(model),
        {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("refine.")},
    )
    scores = iter(before_after)
    monkeypatch.setattr(refine, "click_iou", lambda *_a, **_k: next(scores))
    out = refine.tune_on_corrections(model, blobs(4, rng), blobs(2, rng), steps=3)
    assert out["trained"] and out["kept"] is kept and out["frames"] == 4
    assert out["held_back_click_iou"] == dict(zip(("before", "after"), before_after, strict=True))
    state = model.state_dict()
    changed = any(not torch.equal(state[k], v) for k, v in head.items())
    assert changed is kept  # a worse head is put back exactly
    assert all(torch.equal(state[k], v) for k, v in rest.items())  # the rest never moves
    assert all(p.requires_grad for p in model.parameters())  # as it found them


def test_no_head_or_no_steps_leaves_the_model_alone(rng: np.random.Generator) -> None:
    from propl.train.refine import tune_on_corrections

    model = tiny()
    head = _head_state(model)
    assert tune_on_corrections(model, blobs(2, rng), blobs(2, rng), steps=0)["trained"] is False
    assert all(torch.equal(model.state_dict()[k], v) for k, v in head.items())
    out = tune_on_corrections(tiny(None), blobs(2, rng), blobs(2, rng))
    assert out == {"trained": False, "why": "the model has no refinement head"}


def test_click_iou_scores_the_heads_clicks(rng: np.random.Generator) -> None:
    """The judge's score is an IoU in [0, 1], deterministic, and a head trained on the frames
    clicks them better than the untrained one."""
    from propl.train.refine import click_iou

    model = tiny()
    data = blobs(6, rng)
    cache = cache_frames(model, data)
    first = click_iou(model, cache)
    assert 0.0 <= first <= 1.0 and click_iou(model, cache) == first
    config = RefineTrainConfig(steps=60, batch_size=6, lr=1e-2, max_rounds=1, box_rate=0.0)
    RefineTrainer(model, cache, config).fit()
    assert click_iou(model, cache) > first


def test_tuning_leaves_the_callers_random_stream_alone(rng: np.random.Generator) -> None:
    """What follows the head's tuning in a retraining (MC dropout, the next round's draws) sees
    the random stream it would have seen without it."""
    from propl.train.refine import tune_on_corrections

    model = tiny()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tune_on_corrections(model, blobs(4, rng), blobs(2, rng), steps=2)
    assert torch.equal(torch.rand(3), expected)


def test_box_training_boxes_the_structure_and_drops_some_first_clicks(
    rng: np.random.Generator,
) -> None:
    model = tiny()
    cache = cache_frames(model, blobs(6, rng))
    trainer = RefineTrainer(model, cache, RefineTrainConfig(steps=2, batch_size=2, box_rate=1.0))
    truth = cache.truth[:, 0].numpy() > 0.5
    clicks = [[(1, 1, 1.0)] for _ in truth]
    boxes = trainer._boxes(truth, clicks)
    for b in range(len(truth)):
        ys, xs = np.nonzero(truth[b])
        y0, x0, y1, x1 = boxes[b].tolist()
        # around the structure, each side within a tenth of its size
        assert abs(y0 - ys.min()) <= 0.1 * (np.ptp(ys) + 1) + 1e-6
        assert abs(x1 - xs.max() - 1) <= 0.1 * (np.ptp(xs) + 1) + 1e-6
    assert 0 < sum(not c for c in clicks) < len(clicks)  # some boxes come alone
    none = RefineTrainer(model, cache, RefineTrainConfig(steps=1, batch_size=2))
    assert np.isfinite(none.fit()["final_loss"]) and trainer.fit()["final_loss"] is not None


def test_generic_objects_are_unlabelled_structures_clicked_with_no_task(
    rng: np.random.Generator,
) -> None:
    """With ``generic_rate`` 1 every frame's object becomes a region of the frame itself: a
    structure no label marks (here a bright square beside the labelled disc) is found as one,
    and such objects are trained with no prompt and from an empty start."""
    from propl.train.refine import GENERIC_AREA, frame_regions, generic_object

    data = blobs(4, rng)
    square = np.zeros((SIZE, SIZE), bool)
    square[4:16, 46:58] = True
    data.images[:, square] = 200  # an unlabelled structure in every frame
    model = tiny()
    cache = cache_frames(model, data)
    h, w = cache.truth.shape[-2:]
    regions = frame_regions(cache.image, (h, w))
    assert regions.shape == (4, h, w)
    small = square.reshape(h, 2, w, 2).any(axis=(1, 3))
    best = max(
        ((regions[0] == k) & small).sum() / ((regions[0] == k) | small).sum()
        for k in np.unique(regions[0])
    )
    assert best > 0.7  # the square is a region of its own

    black = np.zeros((h, w), np.float32)
    assert generic_object(regions[0], black, rng) is None  # no object in the dark

    trainer = RefineTrainer(model, cache, RefineTrainConfig(steps=2, batch_size=4, generic_rate=1))
    idx = torch.arange(4)
    truth, keep = cache.truth[idx].float().clone(), torch.ones(4)
    pseudo = cache.pseudo[idx].float().clone()
    trainer._swap_generic(idx, truth, keep, pseudo)
    for b in range(4):
        share = float(truth[b].mean())
        assert GENERIC_AREA[0] <= share <= GENERIC_AREA[1] + 0.05  # filled holes may add a bit
        assert not torch.equal(truth[b], cache.truth[b].float())
    assert keep.sum() == 0 and pseudo.abs().sum() == 0
    assert np.isfinite(trainer.fit()["final_loss"])
    off = RefineTrainer(model, cache, RefineTrainConfig(steps=1, batch_size=4, generic_rate=0))
    assert off.regions is None  # no labels-free regions unless asked for


def test_generic_objects_can_start_from_a_rough_mask_of_the_region(
    rng: np.random.Generator,
) -> None:
    """A mask brushed around a structure no task taught must be kept and tightened, not erased:
    with ``generic_prior`` 1 the region objects start from a rough mask of the region (it
    overlaps the region, and is not always the region itself), never from nothing."""
    from propl.train.refine import rough_prior

    labels = np.zeros((40, 40), np.int32)
    labels[10:20, 10:20] = 1  # the object
    labels[10:20, 20:26] = 2  # a smaller neighbour it may spill into
    labels[30:40, :] = 3  # a large neighbour it may not
    region = labels == 1
    shapes = set()
    for seed in range(40):
        prior = rough_prior(region, labels, np.random.default_rng(seed))
        iou = (prior & region).sum() / (prior | region).sum()
        assert prior.any() and iou > 0.3, seed
        assert not (prior & (labels == 3)).any()  # never spills into a region over twice its size
        shapes.add(prior.tobytes())
    assert len(shapes) > 5  # grown, shrunk, spilled, cut: rough in many ways

    data = blobs(4, rng)
    model = tiny()
    cache = cache_frames(model, data)
    config = RefineTrainConfig(steps=2, batch_size=4, generic_rate=1, generic_prior=1)
    trainer = RefineTrainer(model, cache, config)
    idx = torch.arange(4)
    truth, keep = cache.truth[idx].float().clone(), torch.ones(4)
    pseudo = cache.pseudo[idx].float().clone()
    trainer._swap_generic(idx, truth, keep, pseudo)
    assert keep.sum() == 0
    for b in range(4):
        t, p = truth[b, 0] > 0.5, pseudo[b, 0] > 0.5
        assert p.any() and (t & p).sum() > 0.3 * (t | p).sum()
    assert np.isfinite(trainer.fit()["final_loss"])


def test_tuning_sees_each_corrected_frame_also_as_the_window_the_refiner_zooms_into() -> None:
    """A head tuned on whole frames only clicks worse zoomed in, and the plugin zooms in from
    the second click: the tuning (and its held-back judgement) add each frame's zoom window."""
    from propl.interactive import zoom_window
    from propl.region import Region
    from propl.train.refine import with_zoomed_views

    yy, xx = np.mgrid[:SIZE, :SIZE]
    small = ((yy - 20) ** 2 + (xx - 40) ** 2 < 5**2).astype(np.uint8)  # zooms in
    large = ((yy - 32) ** 2 + (xx - 32) ** 2 < 28**2).astype(np.uint8)  # window = whole frame
    empty = np.zeros((SIZE, SIZE), np.uint8)
    masks = np.stack([small, large, empty])
    images = (60 + 120 * masks).astype(np.uint8)
    data = ArraySet(images, masks, np.array([1, 0, 0]), ["a", "b", "c"], [(90, 120)] * 3)

    out = with_zoomed_views(data)

    assert out.ids == ["a", "b", "c", "a@zoom"] and list(out.task_index) == [1, 0, 0, 1]
    assert out.orig_shapes[3] == (90, 120) and out.images.shape == (4, SIZE, SIZE)
    np.testing.assert_array_equal(out.masks[:3], masks)  # the frames themselves unchanged
    window = zoom_window(small, [], None, Region(0, 0, SIZE, SIZE))
    assert window is not None
    share = small.sum() / (window.y1 - window.y0) / (window.x1 - window.x0)
    assert out.masks[3].mean() == pytest.approx(share, rel=0.15)  # the structure, blown up
    assert out.masks[3].mean() > 2 * small.mean()  # a 39-px window of a 64-px frame
    assert out.images[3][out.masks[3] == 1].min() > 120  # image and mask cut alike
    assert with_zoomed_views(
        ArraySet(images[1:], masks[1:], np.zeros(2, np.int64), ["b", "c"], [(SIZE, SIZE)] * 2)
    ).ids == ["b", "c"]


def test_tuning_reports_the_zoomed_views_it_added(rng: np.random.Generator) -> None:
    from propl.interactive import zoom_window
    from propl.region import Region
    from propl.train.refine import tune_on_corrections

    corrected = blobs(4, rng)
    out = tune_on_corrections(tiny(), corrected, blobs(2, rng), steps=2)
    assert out["frames"] == 4 and out["held_back_frames"] == 2
    zoomable = sum(
        zoom_window(m, [], None, Region(0, 0, SIZE, SIZE)) is not None for m in corrected.masks
    )
    assert out["zoomed_views"] == zoomable
