"""Task shape: a mask unlike the task's expert masks lowers the confidence."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from skimage.draw import disk, ellipse, polygon

from propl.errors import CheckpointError
from propl.inference import Predictor
from propl.task_shape import (
    FILE_NAME,
    MIN_MASKS,
    MIN_PIXELS,
    TaskShapes,
    ellipse_fit,
    fit_shapes,
    load_task_shapes,
    refit_shapes,
    shape_note,
)


def an_ellipse(shape=(120, 160), centre=(60, 80), radii=(30, 55), rotation=0.4) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[ellipse(*centre, *radii, shape=shape, rotation=rotation)] = 1
    return m


def a_crescent(shape=(120, 160)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[disk((60, 80), 45, shape=shape)] = 1
    m[disk((60, 105), 40, shape=shape)] = 0
    return m


def test_ellipse_fit_is_one_for_ellipses_and_falls_with_other_shapes():
    square = np.zeros((120, 160), np.uint8)
    square[20:100, 40:120] = 1
    two = np.zeros((120, 160), np.uint8)
    two[10:40, 10:40] = two[80:110, 120:150] = 1
    fits = ellipse_fit(np.stack([an_ellipse(), square, a_crescent(), two]))
    assert fits.dtype == np.float32 and fits.shape == (4,)
    assert fits[0] > 0.99
    assert 0.88 < fits[1] < 0.93  # a square against its inscribed-by-moments ellipse
    assert fits[2] < 0.8 and fits[3] < 0.6


def test_ellipse_fit_ignores_position_turn_and_stretch():
    """The same at the scan's size and at the network's square input (masks are resized)."""
    base = ellipse_fit(a_crescent())[0]
    moved = ellipse_fit(np.roll(a_crescent(), (7, -11), axis=(0, 1)))[0]
    turned = ellipse_fit(a_crescent().T)[0]
    stretched = ellipse_fit(np.repeat(a_crescent(), 2, axis=1))[0]
    assert abs(moved - base) < 1e-6 and abs(turned - base) < 1e-6
    assert abs(stretched - base) < 0.02


def test_empty_and_tiny_masks_are_not_judged():
    tiny = np.zeros((50, 50), np.uint8)
    tiny[0, : MIN_PIXELS - 1] = 1  # a line: a bad ellipse, but too small to judge
    assert ellipse_fit(np.stack([np.zeros((50, 50)), tiny])).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="shape"):
        ellipse_fit(np.zeros((2, 3, 4, 5)))


def test_floor_is_the_fifth_percentile_of_the_tasks_masks():
    rng = np.random.default_rng(0)
    ellipses = [an_ellipse(rotation=r) for r in rng.uniform(-1.5, 1.5, 19)] + [a_crescent()]
    shapes = fit_shapes(
        {
            "round": ellipses + [np.zeros((120, 160))] * 5,  # empty masks are left out
            "few": ellipses[: MIN_MASKS - 1],
        }
    )
    assert set(shapes.floors) == {"round"} and shapes.masks == {"round": 20}
    fits = ellipse_fit(np.stack(ellipses))
    assert shapes.floors["round"] == pytest.approx(np.percentile(fits, 5))
    assert fits.min() < shapes.floors["round"] < np.median(fits)


def test_factor_lowers_only_masks_below_the_floor():
    shapes = TaskShapes({"round": 0.95}, {"round": 100})
    factor = shapes.factor(np.stack([an_ellipse(), a_crescent()]), "round")
    assert factor is not None and factor[0] == 1.0
    assert factor[1] == pytest.approx(ellipse_fit(a_crescent())[0] / 0.95, rel=1e-5)
    assert shapes.factor(an_ellipse(), "other") is None


def test_json_round_trip_and_the_weights_path(tmp_path):
    shapes = TaskShapes({"a": 0.9876543219, "b": 0.5}, {"a": 12, "b": 300}, {"fitted_on": "x"})
    assert shapes.save(tmp_path) == tmp_path / FILE_NAME
    back = load_task_shapes(tmp_path / "model.safetensors")
    assert back is not None and back.masks == shapes.masks and back.metadata == shapes.metadata
    assert back.floors["a"] == pytest.approx(0.987654, abs=1e-6) and back.source is not None
    (tmp_path / "other").mkdir()
    assert load_task_shapes(tmp_path / "other") is None  # none: predictions as before


@pytest.mark.parametrize(
    "tasks, needle",
    [
        ({"a": {"ellipse_fit_floor": 1.5, "masks": 20}}, "in \\(0, 1\\]"),
        ({"a": {"ellipse_fit_floor": float("nan"), "masks": 20}}, "in \\(0, 1\\]"),
        ({"a": {"ellipse_fit_floor": 0, "masks": 20}}, "in \\(0, 1\\]"),
        ({"a": {"ellipse_fit_floor": True, "masks": 20}}, "in \\(0, 1\\]"),
        ({"a": {"ellipse_fit_floor": 0.9, "masks": 3}}, "masks"),
        ({"a": [0.9, 20]}, "ellipse_fit_floor"),
        ([0.9], "objects"),
    ],
)
def test_a_bad_file_is_refused_naming_it(tmp_path, tasks, needle):
    doc = {"kind": "propl-task-shape", "schema": 1, "tasks": tasks}
    (tmp_path / FILE_NAME).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=needle) as info:
        load_task_shapes(tmp_path)
    assert FILE_NAME in str(info.value)


def test_unreadable_or_foreign_files_are_refused(tmp_path):
    (tmp_path / FILE_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_task_shapes(tmp_path)
    (tmp_path / FILE_NAME).write_text(json.dumps({"kind": "propl-task-fit", "schema": 1}))
    with pytest.raises(CheckpointError, match="not a task shape file"):
        load_task_shapes(tmp_path)


def frames(n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(1)
    out = rng.integers(0, 60, (n, 64, 64)).astype(np.uint8)
    out[
        :, ellipse(32, 32, 14, 20, shape=(64, 64))[0], ellipse(32, 32, 14, 20, shape=(64, 64))[1]
    ] = 200
    return out


def test_predictor_folds_the_shape_into_the_confidence(tiny_checkpoint):
    strict = TaskShapes({"a": 1.0}, {"a": 50})  # every mask short of an ellipse is lowered
    plain = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    assert plain.task_shape is None  # no file: confidence as before
    shaped = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", task_shape=strict)
    before, after = plain.predict(frames(), "a"), shaped.predict(frames(), "a")
    np.testing.assert_array_equal(before.mask, after.mask)
    assert before.shape_fit is None and before.agreement is None
    assert after.shape_fit is not None and after.agreement is not None
    np.testing.assert_allclose(after.agreement, before.confidence)
    expected = np.minimum(1.0, ellipse_fit(after.mask))
    np.testing.assert_allclose(after.shape_fit, expected, rtol=1e-6)
    np.testing.assert_allclose(after.confidence, before.confidence * expected, rtol=1e-6)
    other = shaped.predict(frames(), "b")  # no floor for "b"
    assert other.shape_fit is None and other.agreement is None
    none = Predictor(shaped.model, device="cpu", uncertainty="none", task_shape=strict)
    assert none.predict(frames(1), "a").confidence[0] == 1.0  # no confidence computed at all


def test_predictor_reads_the_floors_beside_the_weights(tiny_checkpoint, tmp_path):
    for f in tiny_checkpoint.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    TaskShapes({"a": 0.97}, {"a": 40}).save(tmp_path)
    predictor = Predictor.from_checkpoint(tmp_path, device="cpu")
    assert predictor.task_shape is not None and predictor.task_shape.floors == {"a": 0.97}
    (tmp_path / FILE_NAME).write_text("[]")
    with pytest.raises(CheckpointError, match=FILE_NAME):
        Predictor.from_checkpoint(tmp_path, device="cpu")


def test_refit_takes_confirmed_masks_and_keeps_the_parents_other_floors(tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    TaskShapes({"a": 0.99, "b": 0.8}, {"a": 500, "b": 400}).save(parent)
    crescents = np.stack([a_crescent()] * MIN_MASKS)
    labelled = SimpleNamespace(masks=crescents[:6], task_index=np.zeros(6, np.int64))
    held = SimpleNamespace(masks=crescents[6:], task_index=np.zeros(MIN_MASKS - 6, np.int64))
    new = tmp_path / "new"
    new.mkdir()
    out = refit_shapes(new, [labelled, held], ("a", "b"), ["a"], parent=parent)
    assert out is not None and out.masks == {"a": MIN_MASKS, "b": 400}
    assert out.floors["a"] == pytest.approx(ellipse_fit(a_crescent())[0], rel=1e-5)
    assert out.floors["b"] == 0.8  # not retrained: the parent's floor
    assert load_task_shapes(new) is not None
    # too few confirmed masks: the parent's floor stays
    few = tmp_path / "few"
    few.mkdir()
    out = refit_shapes(few, [labelled], ("a", "b"), ["a"], parent=parent)
    assert out is not None and out.floors == {"a": 0.99, "b": 0.8}
    # nothing to fit and nothing to keep: no file
    none = tmp_path / "none"
    none.mkdir()
    assert refit_shapes(none, [labelled], ("a", "b"), ["a"], parent=tmp_path / "x") is None
    assert not (none / FILE_NAME).exists()


def test_the_shipped_model_has_floors_for_its_tasks():
    from propl.inference import default_model_path

    shipped = default_model_path()
    if shipped is None:
        pytest.skip("this build has no shipped model")
    shapes = load_task_shapes(shipped)
    predictor = Predictor.from_checkpoint(shipped, device="cpu")
    assert shapes is not None and set(shapes.floors) == set(predictor.tasks)
    assert shapes.floors["fetal_head"] > 0.99  # outlined as ellipses
    assert all(v >= 200 for v in shapes.masks.values())


def test_polygon_masks_fit_less_as_they_get_ragged():
    """A star's fit falls as its points get deeper: the ragged outlines a wrong mask has."""
    fits = []
    for depth in (0.0, 0.3, 0.6):
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        radius = 40 * (1 - depth * (np.arange(24) % 2))
        m = np.zeros((120, 120), np.uint8)
        m[polygon(60 + radius * np.sin(angles), 60 + radius * np.cos(angles), (120, 120))] = 1
        fits.append(float(ellipse_fit(m)[0]))
    assert fits[0] > fits[1] > fits[2]


def test_the_note_names_the_frame_whose_outline_is_odd():
    assert shape_note("fetal_head", None) is None
    assert shape_note("fetal_head", np.array([0.95, 0.97], np.float32)) is None
    still = shape_note("fetal_head", np.array([0.8], np.float32))
    assert still is not None and still.startswith("the outline is unlike the fetal_head masks")
    assert "0.80" in still
    cine = shape_note("fetal_head", np.array([1.0, 0.85, 0.7, 0.95], np.float32), first=10)
    assert cine is not None and cine.startswith("frame 12's outline")


def test_cli_predict_and_the_store_carry_the_shape(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """The factor and its note reach what the annotator reads: the stored prediction (the
    Review panel's line) and ``propl predict``'s output."""
    import shlex

    from PIL import Image

    from propl.annotation.rules import predict_scan, read_scan
    from propl.cli import main
    from propl.store import Project
    from propl.tasks import Task

    model = tmp_path / "model"
    model.mkdir()
    for f in tiny_checkpoint.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    TaskShapes({"a": 1.0}, {"a": 50}).save(model)  # any outline short of an ellipse is odd
    predictor = Predictor.from_checkpoint(model, device="cpu")
    image = frames(1)[0]
    pred = predictor.predict(image, "a")
    assert pred.shape_fit is not None and pred.shape_fit[0] < 0.99  # short of an ellipse
    monkeypatch.setattr("propl.task_shape.NOTE_BELOW", 0.99)  # ... and so worth a note
    note = shape_note("a", pred.shape_fit)
    assert note is not None

    Image.fromarray(image).save(tmp_path / "scan.png")
    cmd = f"predict {tmp_path / 'scan.png'} --task a --model {model} --out {tmp_path / 'o'}"
    assert main(shlex.split(f"{cmd} --device cpu")) == 0
    assert f"scan.png: {note}" in capsys.readouterr().err

    with Project.create(tmp_path / "p.zarr", tasks=[Task("a")]) as project:
        scan_id = project.add_scan(image[None], "scan")
        predict_scan(project, predictor, scan_id, "a")
        stored = project.prediction(scan_id, "a")
        assert stored is not None and stored.shape_fit is not None
        np.testing.assert_allclose(stored.shape_fit, pred.shape_fit, rtol=1e-6)
        view = read_scan(project, scan_id, "a")
        assert view.shape_note == note and note in view.warnings
