"""Task fit: feature statistics say whether a scan looks like the task's training scans."""

import json
import shlex
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from propl.checkpoint import save_checkpoint
from propl.cli import main
from propl.errors import CheckpointError
from propl.inference import Predictor
from propl.models import build_model
from propl.task_fit import (
    FILE_NAME,
    FLAG_BELOW,
    MIN_FRAMES,
    TaskFit,
    TaskMatch,
    best_task,
    combine,
    describe_ranking,
    encode_pooled,
    fit_features,
    fit_task,
    fit_warning,
    load_task_fit,
    rank_tasks,
    rank_tasks_of_scan,
    refit_checkpoint,
)


def gaussian(rng: np.random.Generator, n: int, d: int = 24, shift: float = 0.0) -> np.ndarray:
    """Correlated features: a fixed random mixing of independent normals, plus ``shift``."""
    mix = np.random.default_rng(123).normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + 5.0 + shift


def test_in_distribution_fits_and_a_shifted_scan_does_not(rng):
    stats = fit_task(gaussian(rng, 300))
    same, shifted = gaussian(rng, 200), gaussian(rng, 50, shift=1.5)
    assert 0.8 < np.median(stats.distance(same)) < 1.3  # about 1 for a typical frame
    fit_same, fit_shifted = stats.fit(same), stats.fit(shifted)
    assert np.mean(fit_same == 1.0) > 0.85 and np.mean(fit_same < FLAG_BELOW) < 0.03
    assert fit_shifted.max() < 0.05
    assert np.all((fit_same >= 0) & (fit_same <= 1))


def test_fit_falls_with_distance(rng):
    stats = fit_task(gaussian(rng, 100))
    direction = np.linspace(0, 3, 7)[:, None] * np.ones(24)
    fits = stats.fit(gaussian(np.random.default_rng(5), 1) + direction)
    assert np.all(np.diff(fits) <= 0) and fits[-1] < fits[0]


def test_too_few_frames_or_nan_are_refused(rng):
    with pytest.raises(ValueError, match=str(MIN_FRAMES)):
        fit_task(gaussian(rng, MIN_FRAMES - 1))
    bad = gaussian(rng, 40)
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fit_task(bad)
    assert set(fit_features({"a": gaussian(rng, 40), "b": gaussian(rng, 5)}).tasks) == {"a"}


def test_json_round_trip(rng, tmp_path):
    fit = fit_features({"a": gaussian(rng, 60), "b": gaussian(rng, 60, shift=2)}, metadata={"k": 1})
    path = fit.save(tmp_path)
    assert path == tmp_path / FILE_NAME and path.stat().st_size < 50_000
    back = load_task_fit(tmp_path)
    assert back is not None and back.source == path and back.metadata == {"k": 1}
    x = gaussian(rng, 10, shift=0.7)
    for task in ("a", "b"):
        np.testing.assert_allclose(back.tasks[task].distance(x), fit.tasks[task].distance(x), 1e-4)
    assert load_task_fit(tmp_path / "model.safetensors") is not None  # the weights' path works
    assert back.score(x, "unknown") is None


def test_no_file_means_no_fit(tmp_path):
    assert load_task_fit(tmp_path) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda doc: "{not json",
        lambda doc: json.dumps(doc | {"kind": "something else"}),
        lambda doc: json.dumps(doc | {"schema": 99}),
        lambda doc: json.dumps(doc | {"levels": [7]}),
        lambda doc: json.dumps(doc | {"tasks": {"a": doc["tasks"]["a"] | {"std": [1.0, 2.0]}}}),
        lambda doc: json.dumps(doc | {"tasks": {"a": doc["tasks"]["a"] | {"tail": -1}}}),
        lambda doc: json.dumps(doc | {"tasks": {"a": doc["tasks"]["a"] | {"mean": "x"}}}),
        lambda doc: json.dumps(doc).replace('"residual":', '"residual":NaN,"x":'),
        lambda doc: json.dumps(doc | {"tasks": {"a": doc["tasks"]["a"] | {"n": 0}}}),
    ],
)
def test_a_corrupt_file_is_refused_naming_it(rng, tmp_path, damage):
    doc = fit_features({"a": gaussian(rng, 40)}).to_json()
    (tmp_path / FILE_NAME).write_text(damage(doc))
    with pytest.raises(CheckpointError, match=FILE_NAME) as info:
        load_task_fit(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_warning_words_and_combination():
    assert fit_warning("thyroid_nodule", np.array([0.1, 0.14])) == (
        "does not look like the thyroid_nodule training scans (fit 0.12): another anatomy, "
        "view or scanner; check the mask"
    )
    assert fit_warning("thyroid_nodule", np.array([0.9, 1.0])) is None
    assert fit_warning("thyroid_nodule", None) is None
    conf = np.array([0.9, 0.8], np.float32)
    assert combine(conf, None) is conf
    # unchanged down to the flag, then in proportion to the fit
    np.testing.assert_allclose(combine(conf, np.array([1.0, FLAG_BELOW])), [0.9, 0.8])
    np.testing.assert_allclose(combine(conf, np.array([0.5, FLAG_BELOW / 4])), [0.9, 0.2])


def test_tasks_are_ranked_by_fit_then_by_distance(rng):
    fit = fit_features({"a": gaussian(rng, 200), "b": gaussian(rng, 200, shift=3)})
    fit.tasks["c"] = fit_task(gaussian(rng, 200, shift=0.2))  # near "a": frames fit both fully
    like_b = gaussian(rng, 4, shift=3)
    ranking = rank_tasks(fit, like_b)
    assert [m.task for m in ranking][0] == "b" and ranking[0].fit > 0.5
    assert ranking[-1].fit < 0.05
    assert [m.task for m in rank_tasks(fit, like_b, tasks=["a", "unknown"])] == ["a"]
    like_a = gaussian(rng, 4)
    ranking = rank_tasks(fit, like_a)
    assert {m.task for m in ranking[:2]} == {"a", "c"} and ranking[2].task == "b"
    if ranking[0].fit == ranking[1].fit:  # both fit fully: the nearer (relative) first
        assert ranking[0].distance <= ranking[1].distance


def test_a_scan_that_fits_no_task_suggests_none():
    fits = [TaskMatch("ovarian_tumor", 0.06, 1.3), TaskMatch("fetal_head", 0.004, 1.4)]
    assert best_task(fits) is None
    assert (
        describe_ranking(fits) == "like no task's training scans (nearest ovarian_tumor, fit 0.06)"
    )
    fits[0] = TaskMatch("left_heart", FLAG_BELOW, 1.1)
    assert best_task(fits) == fits[0]
    assert describe_ranking(fits) == "task: left_heart (looks most like it)"
    assert best_task([]) is None and describe_ranking([]) == ""


def scans(n: int, seed: int) -> np.ndarray:
    """Dim speckle frames (the 'task'), 64², uint8."""
    return (np.random.default_rng(seed).random((n, 64, 64)) * 80).astype(np.uint8)


def stripes() -> np.ndarray:
    """A bright stripe pattern, nothing like the task's scans."""
    return np.tile(((np.arange(64) // 4) % 2 * 255).astype(np.uint8), (1, 64, 1))


@pytest.fixture(scope="module")
def fitted(tiny_checkpoint, tmp_path_factory):
    """The checkpoint with statistics for task "a" fitted on speckle frames."""
    folder = tmp_path_factory.mktemp("fitted")
    for f in tiny_checkpoint.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    fit_features({"a": encode_pooled(folder, scans(40, 1))}).save(folder)
    return folder


def test_predictor_flags_a_scan_unlike_the_tasks(fitted):
    predictor = Predictor.from_checkpoint(fitted, device="cpu")
    assert predictor.task_fit is not None and set(predictor.task_fit.tasks) == {"a"}
    frames = np.concatenate([scans(3, 2), stripes()])
    pred = predictor.predict(frames, "a")
    assert pred.task_fit is not None and pred.agreement is not None
    assert pred.task_fit.shape == pred.confidence.shape == (4,)
    assert pred.task_fit[:3].min() > 0.5 and pred.task_fit[3] < FLAG_BELOW
    # shown beside the confidence, never folded into it (it flags other sites' scans too)
    np.testing.assert_array_equal(pred.confidence, pred.agreement)
    assert fit_warning("a", pred.task_fit[3:]) is not None
    assert fit_warning("a", pred.task_fit[3:]) is not None
    assert fit_warning("a", pred.task_fit[:3]) is None
    other = predictor.predict(frames, "b")  # no statistics for "b": no fit, confidence as is
    assert other.task_fit is None and other.agreement is None


def test_a_scan_ranks_the_task_it_looks_like_first(fitted, tiny_checkpoint):
    predictor = Predictor.from_checkpoint(fitted, device="cpu")
    cine = scans(9, 3)
    [match] = rank_tasks_of_scan(predictor, cine)  # statistics for "a" only
    assert match.task == "a" and best_task([match]) == match
    assert best_task(rank_tasks_of_scan(predictor, stripes())) is None  # nothing like it
    colour = np.repeat(cine[:2, ..., None], 3, axis=-1)  # (F, H, W, 3) as napari holds it
    assert rank_tasks_of_scan(predictor, colour)[0].task == "a"
    assert rank_tasks_of_scan(Predictor.from_checkpoint(tiny_checkpoint, device="cpu"), cine) == []


def test_old_checkpoint_without_statistics_still_predicts(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    assert predictor.task_fit is None
    pred = predictor.predict(stripes(), "a")
    assert pred.task_fit is None and pred.agreement is None
    assert pred.mask.shape == (1, 64, 64) and 0 <= pred.confidence[0] <= 1
    plain = Predictor(predictor.model, device="cpu", uncertainty="none").predict(stripes(), "a")
    assert plain.confidence[0] == 1.0  # nothing to judge by, as before


def test_statistics_of_another_encoder_are_refused(fitted, rng):
    fit = load_task_fit(fitted)
    assert fit is not None
    with pytest.raises(CheckpointError, match="refit"):
        fit.score(rng.normal(size=(2, 3)), "a")


def test_cli_predict_warns_per_file(fitted, tmp_path, capsys):
    good, odd = tmp_path / "good.png", tmp_path / "odd.png"
    Image.fromarray(scans(1, 3)[0]).save(good)
    Image.fromarray(stripes()[0]).save(odd)
    cmd = f"predict {good} {odd} --task a --model {fitted} --out {tmp_path / 'o'} --device cpu"
    assert main(shlex.split(cmd)) == 0
    err = capsys.readouterr().err
    assert f"{odd}: does not look like the a training scans (fit" in err
    assert f"{good}: does not look" not in err


def test_refit_keeps_untrained_tasks_when_the_encoder_is_unchanged(
    fitted, tiny_checkpoint, tmp_path
):
    for f in tiny_checkpoint.iterdir():  # a "new version": same weights, no statistics yet
        (tmp_path / f.name).write_bytes(f.read_bytes())
    frames = scans(30, 4)
    labelled = SimpleNamespace(images=frames[:10], task_index=np.ones(10, np.int64))
    unlabelled = SimpleNamespace(images=frames[10:], task_index=np.ones(20, np.int64))
    out = refit_checkpoint(tmp_path, [labelled, unlabelled], ("a", "b"), ["b"], parent=fitted)
    assert isinstance(out, TaskFit) and set(out.tasks) == {"a", "b"}
    assert out.tasks["b"].n == 30
    stored = load_task_fit(tmp_path)
    assert stored is not None and set(stored.tasks) == {"a", "b"}
    # a changed encoder: the parent's statistics no longer describe its features
    model = build_model("propl-small", tasks=("a", "b"), input_size=64, pretrained=False)
    changed = tmp_path / "changed"
    save_checkpoint(model, changed)
    out = refit_checkpoint(changed, [labelled, unlabelled], ("a", "b"), ["b"], parent=fitted)
    assert out is not None and set(out.tasks) == {"b"}
    # too few frames and nothing to keep: no file
    none = tmp_path / "none"
    save_checkpoint(model, none)
    assert refit_checkpoint(none, [labelled], ("a", "b"), ["b"], parent=tiny_checkpoint) is None
    assert not (none / FILE_NAME).exists()
