"""The Segment widget starts the task prompt at the task a newly chosen image looks like."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

from pydicom.data import get_testdata_file  # noqa: E402

from napari_propl._reader import get_reader  # noqa: E402
from propl.checkpoint import save_checkpoint  # noqa: E402
from propl.models import build_model  # noqa: E402
from propl.task_fit import encode_pooled, fit_features  # noqa: E402

CINE = Path(str(get_testdata_file("examples_ybr_color.dcm", download=False)))


def dock(viewer, name: str):
    return viewer.window.add_plugin_dock_widget("napari-propl", name)[1]


def open_cine(viewer):
    [(data, kwargs, _)] = get_reader(str(CINE))(str(CINE))
    return viewer.add_image(data, **kwargs)


def speckle(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 64, 80)) * 60).astype(np.uint8)


@pytest.fixture(scope="module")
def fitted_model(tmp_path_factory) -> Path:
    """A tiny model whose statistics say: the pydicom echo is left_heart, dim speckle is
    fetal_head (the first task, where the prompt starts)."""
    import torch

    from propl.data.readers import read_scan

    torch.manual_seed(0)
    model = build_model(
        "propl-small", tasks=("fetal_head", "left_heart"), input_size=64, pretrained=False
    )
    out = tmp_path_factory.mktemp("model") / "tiny-fit"
    save_checkpoint(model, out, metadata={"version": "tiny-fit"})
    echo, _ = read_scan(CINE)
    per_task = {
        "left_heart": encode_pooled(out, echo),
        "fetal_head": encode_pooled(out, speckle(40, 1)),
    }
    fit_features(per_task).save(out)
    return out


def test_the_prompt_starts_at_the_task_the_image_looks_like(
    make_napari_viewer, qtbot, fitted_model, tmp_path
) -> None:
    viewer = make_napari_viewer()
    seg = dock(viewer, "Segment (ProPL)")
    review = dock(viewer, "Review (ProPL)")
    seg.model_edit.setText(str(fitted_model))
    seg._refresh_tasks()
    assert seg.task_combo.currentText() == "fetal_head"  # the model's first task

    cine = open_cine(viewer)
    assert seg.task_combo.currentText() == "fetal_head"  # ranked in a worker, not here
    qtbot.waitUntil(lambda: seg.task_combo.currentText() == "left_heart", timeout=60_000)
    assert seg.task_hint.text() == "task: left_heart (looks most like it)"
    review.open_project(tmp_path / "study.zarr", create=True)
    assert review.task_combo.currentText() == "left_heart"  # a new project starts there too

    # the user's choice for an image is kept: not replaced when the image is chosen again
    seg.task_combo.setCurrentText("fetal_head")
    assert seg.task_hint.text() == ""
    still = viewer.add_image(speckle(1, 2)[0], name="still")
    assert seg.image_combo.currentText() == still.name
    qtbot.waitUntil(lambda: seg.task_hint.text() != "", timeout=60_000)
    assert seg.task_combo.currentText() == "fetal_head"
    seg.image_combo.setCurrentText(cine.name)
    qtbot.wait(200)
    assert seg.task_combo.currentText() == "fetal_head" and seg.task_hint.text() == ""


def test_an_image_like_no_task_keeps_the_prompt(make_napari_viewer, qtbot, fitted_model) -> None:
    viewer = make_napari_viewer()
    seg = dock(viewer, "Segment (ProPL)")
    seg.model_edit.setText(str(fitted_model))
    seg._refresh_tasks()
    seg.task_combo.setCurrentText("left_heart")  # chosen before any image: not for one
    stripes = np.tile(((np.arange(80) // 4) % 2 * 255).astype(np.uint8), (64, 1))
    viewer.add_image(stripes, name="stripes")
    qtbot.waitUntil(lambda: "like no task" in seg.task_hint.text(), timeout=60_000)
    assert seg.task_combo.currentText() == "left_heart"


def test_an_echo_unlike_the_training_scans_gets_the_task_of_its_exam(
    make_napari_viewer, qtbot, tmp_path
) -> None:
    """The fit knows only dim speckle (the echo looks like no task's training scans), but the
    file says an epicardial exam: the prompt goes to the model's one heart task and the line
    says why; a PNG of the same frame (no exam) keeps the prompt."""
    import torch

    torch.manual_seed(0)
    model = build_model(
        "propl-small", tasks=("fetal_head", "left_heart"), input_size=64, pretrained=False
    )
    out = tmp_path / "tiny-speckle"
    save_checkpoint(model, out, metadata={"version": "tiny-speckle"})
    fit_features(
        {
            "fetal_head": encode_pooled(out, speckle(40, 1)),
            "left_heart": encode_pooled(out, speckle(40, 3) // 2),
        }
    ).save(out)
    viewer = make_napari_viewer()
    seg = dock(viewer, "Segment (ProPL)")
    seg.model_edit.setText(str(out))
    seg._refresh_tasks()
    assert seg.task_combo.currentText() == "fetal_head"

    open_cine(viewer)
    qtbot.waitUntil(lambda: seg.task_combo.currentText() == "left_heart", timeout=60_000)
    assert seg.task_hint.text() == (
        "task: left_heart (exam: epicardial; unlike its training scans)"
    )
    frame = np.asarray(viewer.layers[-1].data[0])
    viewer.add_image(frame, name="echo frame as a png", rgb=True)
    qtbot.waitUntil(lambda: "like no task" in seg.task_hint.text(), timeout=60_000)
    assert seg.task_combo.currentText() == "left_heart"  # kept: nothing says otherwise
