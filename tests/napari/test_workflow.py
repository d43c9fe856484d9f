"""The annotation loop in a real viewer: open a DICOM cine, segment, review, reopen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

from pydicom.data import get_testdata_file  # noqa: E402

from napari_propl._layers import low_confidence, role_of  # noqa: E402
from propl.checkpoint import save_checkpoint  # noqa: E402
from propl.models import build_model  # noqa: E402
from propl.store import Project  # noqa: E402
from propl.uncertainty import OUTLINE_THRESHOLD as OUTLINE  # noqa: E402

PLUGIN = "napari-propl"
TASK = "left_heart"
CINE = Path(str(get_testdata_file("examples_ybr_color.dcm", download=False)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A small untrained model: the loop is tested, not the model's accuracy."""
    import torch

    torch.manual_seed(0)
    model = build_model("propl-small", tasks=("fetal_head", TASK), input_size=64, pretrained=False)
    out = tmp_path_factory.mktemp("model") / "tiny"
    save_checkpoint(model, out, metadata={"version": "tiny-v1"})
    return out


def open_cine(viewer) -> object:
    from napari_propl._reader import get_reader

    reader = get_reader(str(CINE))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(CINE))
    return viewer.add_image(data, **kwargs)


def dock(viewer, name: str):
    return viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]


def segment_all_frames(viewer, qtbot, model_dir: Path, layer):
    """The Segment dock run on every frame of ``layer`` with the test model; waits for it."""
    seg = dock(viewer, "Segment (ProPL)")
    seg.model_edit.setText(str(model_dir))
    seg._refresh_tasks()
    seg.task_combo.setCurrentText(TASK)
    seg.scope_combo.setCurrentText("all frames")
    seg.image_combo.setCurrentText(layer.name)
    assert seg.run() is not None
    wait_idle(qtbot, seg)
    return seg


def wait_idle(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=120_000)


def test_reader_opens_the_real_cine_and_names_bad_files(tmp_path, monkeypatch) -> None:
    from napari_propl import _reader

    errors: list[str] = []
    monkeypatch.setattr(_reader, "show_error", errors.append)
    [(data, kwargs, kind)] = _reader.get_reader(str(CINE))(str(CINE))
    assert kind == "image" and data.shape == (30, 240, 320, 3) and kwargs["rgb"]
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(CINE.read_bytes()[:3000])
    assert _reader.get_reader(str(bad))(str(bad)) == [(None,)]
    assert len(errors) == 1 and "broken.dcm" in errors[0]
    assert _reader.get_reader(str(tmp_path / "project.zarr")) is None


def test_sample_cine_is_real_echo() -> None:
    from napari_propl._sample_data import echo_cine

    [(data, kwargs, kind)] = echo_cine()
    assert data.shape == (30, 240, 320, 3) and kwargs["rgb"] and kind == "image"


def test_segment_cine_shows_mask_uncertainty_and_outlines(make_napari_viewer, qtbot, model_dir):
    viewer = make_napari_viewer()
    layer = open_cine(viewer)
    seg = segment_all_frames(viewer, qtbot, model_dir, layer)
    # told apart by their roles: in their metadata, and first in their names
    made = {role_of(lyr): lyr for lyr in viewer.layers if role_of(lyr)}
    mask, unc, low = made["mask"], made["uncertainty"], made["low"]
    assert mask.name == f"mask · {layer.name} [{TASK}]"
    assert unc.name.startswith("uncertainty · ") and low.name.startswith("uncertain outline · ")
    assert mask.data.shape == unc.data.shape == low.data.shape == (30, 240, 320)
    assert set(np.unique(mask.data)) <= {0, 1} and 0 <= unc.data.min() <= unc.data.max() <= 1
    assert unc.colormap.name == "inferno" and low.contour > 0
    assert unc.visible  # the map shows (glows around the mask) without a click
    order = [viewer.layers.index(lyr) for lyr in (layer, unc, low, mask)]
    assert order == sorted(order)  # image, uncertainty, outline, mask on top
    assert "confidence" in seg.result_label.text() and "cpu" in seg.device_label.text()
    # this frame only: the other frames keep their masks
    before = np.array(mask.data)
    viewer.dims.set_current_step(0, 5)
    seg.scope_combo.setCurrentText("this frame")
    seg.run()
    wait_idle(qtbot, seg)
    np.testing.assert_array_equal(viewer.layers[mask.name].data, before)


def test_review_loop_saves_and_reopens(make_napari_viewer, qtbot, model_dir, tmp_path) -> None:
    path = tmp_path / "study.zarr"
    viewer = make_napari_viewer()
    cine = open_cine(viewer)
    viewer.add_image(np.random.default_rng(0).integers(0, 255, (2, 64, 80), np.uint8), name="b")
    review = dock(viewer, "Review (ProPL)")
    seg = dock(viewer, "Segment (ProPL)")
    review.open_project(path, create=True)
    review.task_combo.setCurrentText(TASK)
    review.add_open_images()  # a worker: the layers learn their scan ids when it returns
    qtbot.waitUntil(lambda: review.queue_list.count() == 2, timeout=30_000)
    assert cine.metadata["propl_scan_id"]
    assert review.add_open_images() is None  # nothing new: no scan is added twice
    assert len(review.session.project.scan_ids()) == 2
    seg.model_edit.setText(str(model_dir))
    seg._refresh_tasks()
    seg.task_combo.setCurrentText(TASK)
    seg.scope_combo.setCurrentText("all scans in the project")
    seg.run()
    wait_idle(qtbot, seg)
    qtbot.waitUntil(lambda: not review.queue_pending, timeout=30_000)  # read in a worker
    assert all("confidence" in review.queue_list.item(i).text() for i in range(2))
    project = review.session.project
    confs = [project.prediction_confidence(i, TASK) for i in review.queue_ids()]
    assert confs == sorted(confs)  # least confident first

    first, second = review.queue_ids()
    review.load(first)  # read in a worker, shown when read
    qtbot.waitUntil(lambda: review.scan_id == first, timeout=30_000)
    worst = int(np.argmin(project.prediction(first, TASK).confidence))
    assert viewer.dims.current_step[0] == worst  # opens at the least confident frame
    # the scan under review alone: the opened images are hidden, not removed
    assert not cine.visible and not viewer.layers["b"].visible
    first_layers = {lyr.metadata.get("propl_review"): lyr for lyr in viewer.layers}
    first_mask_name = first_layers["mask"].name
    review.accept()  # unedited: accepted, then the next scan is shown
    review.wait_saved()
    qtbot.waitUntil(lambda: review.scan_id == second)
    assert project.review(first, TASK).status == "accepted"
    labels = review.labels_layer
    # the next scan reuses the review layers, renamed (creating layers is what stalls napari)
    assert first_layers["mask"].name == labels.name != first_mask_name
    scan_name = project.scan(second).name
    assert labels.name == f"mask · {scan_name}"  # the role first: not cut off in the list
    roles = {
        lyr.metadata["propl_review"]: lyr.name
        for lyr in viewer.layers
        if lyr.metadata.get("propl_review")
    }
    assert roles["image"] == f"scan · {scan_name}"
    assert roles["low"] == f"uncertain outline · {scan_name}"
    assert roles["uncertainty"] == f"uncertainty · {scan_name}"
    shown = [lyr for lyr in viewer.layers if lyr.metadata.get("propl_review")]
    assert len(shown) == 4 and len({lyr.name for lyr in shown}) == 4
    second_image = next(lyr for lyr in shown if lyr.metadata["propl_review"] == "image")
    assert second_image.metadata["propl_scan_id"] == second
    np.testing.assert_array_equal(np.asarray(labels.data), project.prediction(second, TASK).mask)
    # the outline of the doubtful regions follows in a later turn: the second scan's own
    # (the two scans differ in size, so the first scan's outline cannot pass for it)
    outline = next(lyr for lyr in shown if lyr.metadata["propl_review"] == "low")
    expected = low_confidence(project.prediction(second, TASK).uncertainty, OUTLINE)
    qtbot.waitUntil(lambda: np.array_equal(np.asarray(outline.data), expected), timeout=5_000)
    # an edit through napari's painting API; the opposite of the predicted label, so that it
    # changes the mask whichever scan the queue put second
    labels.paint((0, 10, 10), 1 - int(np.asarray(labels.data)[0, 10, 10]))
    qtbot.waitUntil(lambda: project.review(second, TASK) is not None, timeout=10_000)
    review.wait_saved()
    draft = project.review(second, TASK)  # autosaved, but not a label until confirmed
    assert draft.status == "draft" and draft.edited_pixels > 0 and not draft.is_labelled
    np.testing.assert_array_equal(draft.mask, np.asarray(labels.data))
    qtbot.waitUntil(lambda: review.progress_label.text() == "reviewed 1 of 2", timeout=10_000)
    review.confirm(advance=False, whole=True)  # "Save correction" / "Accept all frames"
    review.wait_saved()
    saved = project.review(second, TASK)
    assert saved.status == "corrected" and saved.is_labelled
    np.testing.assert_array_equal(saved.mask, draft.mask)
    # the widget hears of the save through a queued signal: the next event-loop turns
    qtbot.waitUntil(lambda: review.progress_label.text() == "reviewed 2 of 2", timeout=10_000)
    review.session.close_project()

    viewer2 = make_napari_viewer()
    review2 = dock(viewer2, "Review (ProPL)")
    review2.open_project(path)
    review2.task_combo.setCurrentText(TASK)
    review2.unreviewed_only.setChecked(False)
    qtbot.waitUntil(lambda: not review2.queue_pending, timeout=30_000)
    assert sorted(review2.queue_ids()) == sorted([first, second])
    review2.load(second)
    qtbot.waitUntil(lambda: review2.scan_id == second, timeout=30_000)
    np.testing.assert_array_equal(np.asarray(review2.labels_layer.data), saved.mask)
    with Project.open(path, read_only=True) as p:
        assert p.progress(TASK) == (2, 2)
    csv_path = tmp_path / "export" / f"measurements_{TASK}.csv"
    assert review2.export(tmp_path / "export") is not None
    qtbot.waitUntil(csv_path.is_file, timeout=60_000)  # the CSV is written last
    import tifffile

    np.testing.assert_array_equal(  # named by the scan's pseudonymous id, not its file
        tifffile.imread(tmp_path / "export" / f"{second}_{TASK}.tif"), saved.mask
    )
    qtbot.waitUntil(lambda: "exported" in review2.status_label.text(), timeout=10_000)


def test_segment_prompts_with_the_task_being_reviewed(
    make_napari_viewer, qtbot, model_dir, tmp_path
) -> None:
    """Switching the Review task switches the Segment widget's prompt, when its model knows
    the task; a task the model has not learnt leaves the prompt alone."""
    from propl.tasks import Task

    viewer = make_napari_viewer()
    review = dock(viewer, "Review (ProPL)")
    seg = dock(viewer, "Segment (ProPL)")
    seg.model_edit.setText(str(model_dir))
    seg._refresh_tasks()
    assert seg.task_combo.currentText() == "fetal_head"  # the model's first task
    review.open_project(tmp_path / "study.zarr", create=True)
    review.task_combo.setCurrentText(TASK)
    qtbot.waitUntil(lambda: seg.task_combo.currentText() == TASK, timeout=5_000)
    review.task_combo.setCurrentText("fetal_head")
    assert seg.task_combo.currentText() == "fetal_head"
    review.add_task(Task("thyroid_cyst", organ="thyroid", target="cyst"))
    assert review.task_combo.currentText() == "thyroid_cyst"
    assert seg.task_combo.currentText() == "fetal_head"  # not in the model: kept
    seg._refresh_tasks()  # the model reloaded (e.g. after a promotion): still the same choice
    assert seg.task_combo.currentText() == "fetal_head"


def test_the_queue_is_read_off_the_gui_thread_and_a_stale_read_is_dropped(
    make_napari_viewer, qtbot, tmp_path
) -> None:
    """Reading the queue opens every scan's records (seconds for a big project): it runs in a
    worker, and when reads overlap only the latest is listed."""
    import threading

    viewer = make_napari_viewer()
    review = dock(viewer, "Review (ProPL)")
    review.open_project(tmp_path / "study.zarr", create=True)
    project = review.session.project
    for i in range(3):
        project.add_scan(np.full((1, 20, 20), i, np.uint8), name=f"scan{i}")
    review.task_combo.setCurrentText(TASK)
    qtbot.waitUntil(lambda: not review.queue_pending, timeout=30_000)
    threads, real_queue, release, first_done = [], project.queue, threading.Event(), []

    def slow_first_read(task, include_reviewed=False):
        threads.append(threading.current_thread())
        if len(threads) == 1:
            release.wait(10)  # the first read is overtaken by the second
            first_done.append(True)
            return real_queue(task, include_reviewed)[:1]
        return real_queue(task, include_reviewed)

    project.queue = slow_first_read
    review.refresh_queue()
    qtbot.waitUntil(lambda: len(threads) == 1, timeout=10_000)  # the first read is blocked
    review.refresh_queue()
    qtbot.waitUntil(lambda: not review.queue_pending, timeout=30_000)
    assert review.queue_list.count() == 3 and not first_done
    release.set()
    qtbot.waitUntil(lambda: bool(first_done), timeout=30_000)
    qtbot.wait(300)  # its result reaches the event loop, and is dropped
    assert review.queue_list.count() == 3
    assert threads and threading.main_thread() not in threads


@pytest.mark.parametrize("keep_phi", [False, True])
def test_import_files_deidentifies_unless_asked_and_names_bad_files(
    make_napari_viewer, qtbot, tmp_path, monkeypatch, keep_phi
) -> None:
    from napari_propl import _review

    errors: list[str] = []
    monkeypatch.setattr(_review, "show_error", errors.append)
    bad = tmp_path / "truncated.dcm"
    bad.write_bytes(CINE.read_bytes()[:3000])
    viewer = make_napari_viewer()
    review = dock(viewer, "Review (ProPL)")
    review.open_project(tmp_path / "p.zarr", create=True)
    review.keep_phi.setChecked(keep_phi)
    assert review.import_files([str(CINE), str(bad)]) is not None  # a worker
    qtbot.waitUntil(lambda: review.queue_list.count() == 1 and len(errors) == 1, timeout=60_000)
    assert "truncated.dcm" in errors[0]
    project = review.session.project
    [scan_id] = project.scan_ids()
    header = project.scan(scan_id).header or {}
    assert ("PatientName" in header) == keep_phi
    assert ("PatientID" in header) == keep_phi


def test_add_open_images_skips_a_bad_layer_by_name_and_keeps_the_others(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
) -> None:
    from napari_propl import _review

    errors: list[str] = []
    monkeypatch.setattr(_review, "show_error", errors.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 2, 3, 40, 50), np.uint8), name="five-d")  # not a scan
    good = viewer.add_image(np.ones((3, 40, 50), np.uint8), name="still")
    review = dock(viewer, "Review (ProPL)")
    review.open_project(tmp_path / "p.zarr", create=True)
    review.add_open_images()
    qtbot.waitUntil(lambda: review.queue_list.count() == 1 and len(errors) == 1, timeout=30_000)
    assert "five-d" in errors[0]
    project = review.session.project
    [scan_id] = project.scan_ids()
    assert good.metadata["propl_scan_id"] == scan_id
    assert "propl_scan_id" not in viewer.layers["five-d"].metadata
    np.testing.assert_array_equal(project.image(scan_id), good.data)


def test_demo_viewer_opens_the_sample_and_segments_it(
    make_napari_viewer, qtbot, model_dir, monkeypatch
) -> None:
    """`make demo` with a display: the sample cine, the three widgets, every frame segmented."""
    import napari

    from napari_propl.demo import open_viewer

    monkeypatch.setattr(napari, "Viewer", lambda **kw: make_napari_viewer(**kw))
    viewer = open_viewer(TASK, model=str(model_dir))
    seg = viewer.window.dock_widgets["Segment (ProPL) (napari-propl)"]
    wait_idle(qtbot, seg)
    mask = viewer.layers[f"mask · echo cine (pydicom) [{TASK}]"]
    assert mask.data.shape == (30, 240, 320)
    assert "Review (ProPL) (napari-propl)" in viewer.window.dock_widgets
    assert "Retrain (ProPL) (napari-propl)" in viewer.window.dock_widgets
    assert seg.device_label.text() == "device: cpu"


def review_one_scan(make_napari_viewer, qtbot, path: Path):
    """A viewer with a new project at ``path`` holding one two-frame still, open for review."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 40, 50), np.uint8), name="still")
    review = dock(viewer, "Review (ProPL)")
    review.open_project(path, create=True)
    review.task_combo.setCurrentText(TASK)
    review.add_open_images()
    qtbot.waitUntil(lambda: review.queue_list.count() == 1, timeout=30_000)
    [scan_id] = review.queue_ids()
    review.load(scan_id)
    qtbot.waitUntil(lambda: review.scan_id == scan_id, timeout=30_000)
    return viewer, review, scan_id


def test_closing_napari_saves_pending_edits_and_releases_the_project(
    make_napari_viewer, qtbot, tmp_path
) -> None:
    """A brush stroke still waiting for its autosave is stored when the window closes, and
    the writer lock goes with the window (a new viewer in the same process can open it)."""
    path = tmp_path / "study.zarr"
    viewer, review, scan_id = review_one_scan(make_napari_viewer, qtbot, path)
    review.labels_layer.paint((1, 20, 25), 1)
    assert review._autosave_timer.isActive()  # not saved yet: the autosave waits 0.8 s
    viewer.close()
    with Project.open(path) as project:  # for writing: the lock was released
        saved = project.review(scan_id, TASK)
        assert saved is not None and saved.status == "draft"  # kept, but not a label
        assert saved.mask[1, 20, 25] == 1 and saved.edited_pixels > 0


def test_a_refused_close_keeps_the_project_open_and_saving(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
) -> None:
    """napari may refuse to close (its confirm dialog, cancelled): the pending edit is saved
    all the same, the project stays open, and later edits are saved too. Only a close napari
    accepts closes the project."""
    from napari._qt.qt_main_window import _QtMainWindow

    path = tmp_path / "study.zarr"
    viewer, review, scan_id = review_one_scan(make_napari_viewer, qtbot, path)
    session = review.session
    closed: list[bool] = []
    session.closed.connect(lambda: closed.append(True))

    review.labels_layer.paint((1, 20, 25), 1)
    # napari's closeEvent as when its confirm dialog is cancelled
    monkeypatch.setattr(_QtMainWindow, "closeEvent", lambda self, event: event.ignore())
    assert viewer.window._qt_window.close() is False
    assert not closed  # the Segment and Retrain widgets' long work goes on
    assert session.project is not None and session.project.review(scan_id, TASK) is not None

    review.labels_layer.paint((1, 30, 30), 1)  # the annotator goes on
    review.wait_saved()
    qtbot.waitUntil(lambda: not review._autosave_timer.isActive(), timeout=10_000)
    review.wait_saved()
    assert session.project.review(scan_id, TASK).mask[1, 30, 30] == 1

    monkeypatch.undo()
    viewer.close()
    assert closed == [True] and session.project is None
    with Project.open(path) as project:  # the writer lock went with the window
        saved = project.review(scan_id, TASK)
        assert saved.mask[1, 20, 25] == 1 and saved.mask[1, 30, 30] == 1


def test_closing_the_window_lets_a_read_in_flight_finish_first(
    make_napari_viewer, tmp_path, monkeypatch
) -> None:
    """A worker still inside a zarr read when Python exits waits forever for zarr's stopped
    event loop, and Qt waits for the worker: napari would hang on quitting. So closing waits
    for the reads in flight, then closes the project."""
    import time

    from napari_propl import _review

    read_queue = _review._read_queue
    events: list[str] = []

    def slow_read(*args):
        time.sleep(1.0)
        result = read_queue(*args)
        events.append("read")
        return result

    monkeypatch.setattr(_review, "_read_queue", slow_read)
    viewer = make_napari_viewer()
    review = dock(viewer, "Review (ProPL)")
    session = review.session
    session.project_changed.connect(lambda: events.append("closed") if not session.project else 0)
    review.open_project(tmp_path / "study.zarr", create=True)
    review.task_combo.setCurrentText(TASK)
    assert review.refresh_queue() is not None  # a read in a worker
    viewer.close()
    assert events[-2:] == ["read", "closed"]
    assert session.project is None


def test_segment_follows_the_opened_image_and_its_frames(make_napari_viewer, qtbot, model_dir):
    """A newly opened image is the one to segment; a cine whole, a still as it is (a still
    after a cine shows its mask whatever frame the slider is at)."""
    viewer = make_napari_viewer()
    seg = dock(viewer, "Segment (ProPL)")
    cine = open_cine(viewer)
    assert seg.image_combo.currentText() == cine.name
    assert seg.scope_combo.currentText() == "all frames"
    seg.scope_combo.setCurrentText("this frame")  # the user's choice
    viewer.add_labels(np.zeros((30, 240, 320), np.uint8), name="notes")  # not an image
    assert seg.scope_combo.currentText() == "this frame"
    still = viewer.add_image(np.random.default_rng(0).integers(0, 255, (64, 80), np.uint8))
    assert seg.image_combo.currentText() == still.name
    assert seg.scope_combo.currentText() == "this frame"
    viewer.dims.set_current_step(0, 14)
    seg.model_edit.setText(str(model_dir))
    seg._refresh_tasks()
    seg.task_combo.setCurrentText(TASK)
    seg.run()
    wait_idle(qtbot, seg)
    mask = viewer.layers[f"mask · {still.name} [{TASK}]"]
    assert mask.data.shape == (64, 80)  # flat like the image: drawn at every frame
    assert viewer.dims.current_step[0] == 14
    assert seg.image_combo.currentText() == still.name  # its own layers are not "opened"
    seg.scope_combo.setCurrentText("all scans in the project")
    viewer.add_image(np.zeros((5, 64, 80), np.uint8), name="another cine")
    assert seg.scope_combo.currentText() == "all scans in the project"  # kept


def test_segment_runs_on_the_imaging_region_the_reader_found(
    make_napari_viewer, qtbot, model_dir, tmp_path
) -> None:
    """A DICOM with an ultrasound region: the reader puts the region in the layer's metadata
    and Segment's masks and uncertainty stay empty outside it (no outline on the header)."""
    from napari_propl._reader import layer_data
    from propl.data.readers import ScanMeta
    from propl.region import Region

    frames = np.random.default_rng(0).integers(0, 255, (2, 96, 128), dtype=np.uint8)
    region = Region(y0=20, y1=80, x0=30, x1=110)
    meta = ScanMeta(path="x.dcm", format="dicom", n_frames=2, is_color=False, region=region)
    data, kwargs, _ = layer_data(frames, meta, "scan")
    assert kwargs["metadata"]["propl_region"] == region
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, **kwargs)
    segment_all_frames(viewer, qtbot, model_dir, layer)
    made = {role_of(lyr): lyr for lyr in viewer.layers if role_of(lyr)}
    outside = np.ones((96, 128), bool)
    outside[region.slices] = False
    for role in ("mask", "uncertainty", "low"):
        assert not np.asarray(made[role].data)[:, outside].any(), role
    assert np.asarray(made["uncertainty"].data)[:, ~outside].any()  # it did segment inside
