"""The project store: round trips, review queue, locking, and no lost correction after kill -9."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from propl.store import Project, StoreError, StoreLockedError
from propl.store import revisions as rev
from propl.tasks import Task

TASK = "fetal_head"


def frames(seed: int, shape=(3, 32, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def project(tmp_path: Path):
    with Project.create(tmp_path / "p.zarr") as p:
        yield p


def predict(p: Project, scan_id: str, conf: float, version: str = "v1") -> np.ndarray:
    shape = p.scan(scan_id).shape
    mask = (frames(1, shape) > 128).astype(np.uint8)
    unc = np.full(shape, 0.25, np.float32)
    p.save_prediction(scan_id, TASK, mask, unc, np.full(shape[0], conf), version)
    return mask


def test_everything_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "p.zarr"
    with Project.create(path) as p:
        a = p.add_scan(frames(0), "cine", spacing_mm=(0.2, 0.3), frame_time_ms=33.3)
        b = p.add_scan(frames(1, (1, 20, 20, 3)), "still")
        mask = predict(p, a, 0.7)
        edited = mask.copy()
        edited[0, :4, :4] = 1 - edited[0, :4, :4]
        p.save_review(a, TASK, "corrected", edited, author="ann", seconds=12.5)
        p.save_review(b, TASK, "rejected", reason="no head in view")
    with Project.open(path, read_only=True) as q:
        assert q.scan_ids() == [a, b]
        scan = q.scan(a)
        assert scan.name == "cine" and scan.spacing_mm == (0.2, 0.3) and scan.frame_time_ms == 33.3
        np.testing.assert_array_equal(q.image(a), frames(0))
        np.testing.assert_array_equal(q.image(a, [0, 2]), frames(0)[[0, 2]])  # frames only
        assert q.image(b).shape == (1, 20, 20, 3) and q.scan(b).is_color
        pred = q.prediction(a, TASK)
        assert pred is not None and pred.model_version == "v1"
        np.testing.assert_array_equal(pred.mask, mask)
        review = q.review(a, TASK)
        assert review is not None and review.mask is not None
        np.testing.assert_array_equal(review.mask, edited)
        assert (review.status, review.author, review.seconds) == ("corrected", "ann", 12.5)
        assert review.edited_pixels == 16 and review.model_version == "v1"
        rejected = q.review(b, TASK)
        assert rejected is not None and rejected.reason == "no head in view"
        assert rejected.mask is None
        assert q.progress(TASK) == (2, 2)


def test_queue_least_confident_first_unreviewed_only(project: Project) -> None:
    ids = [project.add_scan(frames(i), f"s{i}") for i in range(4)]
    for scan_id, conf in zip(ids[:3], (0.9, 0.4, 0.6), strict=True):
        predict(project, scan_id, conf)
    assert [q.name for q in project.queue(TASK)] == ["s1", "s2", "s0", "s3"]  # unpredicted last
    project.save_review(ids[1], TASK, "accepted")
    assert [q.name for q in project.queue(TASK)] == ["s2", "s0", "s3"]
    everything = project.queue(TASK, include_reviewed=True)
    assert [(q.name, q.status) for q in everything][0] == ("s1", "accepted")
    assert project.progress(TASK) == (1, 4)


def test_accept_keeps_the_mask_even_after_a_new_prediction(project: Project) -> None:
    scan_id = project.add_scan(frames(0), "s")
    mask = predict(project, scan_id, 0.5)
    project.save_review(scan_id, TASK, "accepted")
    project.save_prediction(
        scan_id, TASK, np.zeros_like(mask), np.zeros(mask.shape), np.ones(3), "v2"
    )
    review = project.review(scan_id, TASK)
    assert review is not None and review.edited_pixels == 0
    np.testing.assert_array_equal(review.mask, mask)


def test_every_review_is_kept_as_a_revision(project: Project) -> None:
    scan_id = project.add_scan(frames(0), "s")
    predict(project, scan_id, 0.5)
    project.save_review(scan_id, TASK, "accepted")
    project.save_review(scan_id, TASK, "corrected", np.ones((3, 32, 40), np.uint8))
    assert project.review_history(scan_id, TASK) == ["r000001", "r000002"]
    review = project.review(scan_id, TASK)
    assert review is not None and review.status == "corrected" and review.revision == "r000002"


def test_same_content_imports_once(project: Project) -> None:
    assert project.add_scan(frames(0), "a") == project.add_scan(frames(0), "a again")
    assert len(project.scan_ids()) == 1


def test_bad_requests_are_refused_and_change_nothing(project: Project) -> None:
    scan_id = project.add_scan(frames(0), "s")
    with pytest.raises(StoreError, match="no task 'liver'"):
        project.save_review(scan_id, "liver", "accepted", np.zeros((3, 32, 40)))
    with pytest.raises(StoreError, match="unknown review status"):
        project.save_review(scan_id, TASK, "maybe", np.zeros((3, 32, 40)))
    with pytest.raises(StoreError, match="does not fit"):
        project.save_review(scan_id, TASK, "corrected", np.zeros((3, 10, 10)))
    with pytest.raises(StoreError, match="no fetal_head prediction"):
        project.save_review(scan_id, TASK, "accepted")
    with pytest.raises(StoreError, match="frames of shape"):
        project.add_scan(np.zeros((0, 4, 4), np.uint8), "empty")
    with pytest.raises(StoreError, match="no scan"):
        project.image("nope")
    assert project.review(scan_id, TASK) is None


def test_create_and_open_refuse_the_wrong_folders(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        Project.create(tmp_path / "full")
    assert (tmp_path / "full" / "x.txt").read_text() == "mine"
    with pytest.raises(StoreError, match="not a napari-propl project"):
        Project.open(tmp_path / "full")
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "zarr.json").write_text("{broken")
    with pytest.raises(StoreError, match=str(tmp_path / "z")):
        Project.open(tmp_path / "z")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Project.create(tmp_path / "p").close()
    meta = tmp_path / "p" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["propl_schema"] = 99
    meta.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="newer napari-propl"):
        Project.open(tmp_path / "p")


def test_new_tasks_are_stored(project: Project) -> None:
    project.add_task(Task("liver_lesion", "liver", "lesion", colour="#00ff00"))
    assert project.tasks[-1].id == "liver_lesion" and project.tasks[-1].colour == "#00ff00"
    with pytest.raises(StoreError, match="already has"):
        project.add_task(Task("liver_lesion"))


def test_read_only_cannot_write(tmp_path: Path) -> None:
    Project.create(tmp_path / "p").close()
    with Project.open(tmp_path / "p", read_only=True) as p, pytest.raises(StoreError):
        p.add_scan(frames(0), "s")


def test_leftovers_of_a_killed_writer_are_ignored_then_cleaned(project: Project) -> None:
    scan_id = project.add_scan(frames(0), "s")
    mask = predict(project, scan_id, 0.5)
    project.save_review(scan_id, TASK, "accepted")
    root = project.root
    # a staged scan, a revision renamed into place but never made current, zarr temp files
    rev.stage_group(root, {"image": frames(5)}, {"name": "half"})
    slot = root / "scans" / scan_id / "labels" / TASK
    rev.write_group(slot / "r000002", {"mask": np.zeros((3, 32, 40), np.uint8)}, {})
    (slot / "zarr.1234.partial").write_bytes(b"{half")
    project.close()
    with Project.open(root) as p:
        assert not (root / rev.STAGING).exists() and not (slot / "zarr.1234.partial").exists()
        review = p.review(scan_id, TASK)
        assert review is not None and review.revision == "r000001"
        np.testing.assert_array_equal(review.mask, mask)
        assert p.save_review(scan_id, TASK, "skipped", reason="later").revision == "r000003"


# -- one writer at a time ---------------------------------------------------------------------

HOLDER = """
import sys, time
from propl.store import Project
p = Project.open(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def start_holder(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_naming_the_owner_until_the_owner_dies(tmp_path: Path) -> None:
    path = tmp_path / "p"
    Project.create(path).close()
    holder = start_holder(path)
    try:
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid}"):
            Project.open(path)
        with Project.open(path, read_only=True) as reader:  # readers are never blocked
            assert reader.scan_ids() == []
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    Project.open(path).close()  # the OS released the dead owner's lock


# -- kill -9 at random moments never loses a saved correction ----------------------------------

WRITER = """
import hashlib, sys
import numpy as np
from propl.store import Project
p = Project.open(sys.argv[1])
ids = p.scan_ids()
rng = np.random.default_rng(int(sys.argv[2]))
while True:
    scan_id = ids[int(rng.integers(len(ids)))]
    mask = (rng.random((4, 64, 64)) > 0.5).astype(np.uint8)
    review = p.save_review(scan_id, "fetal_head", "corrected", mask, seconds=1.0)
    digest = hashlib.sha256(mask.tobytes()).hexdigest()
    # one write (a pipe takes it whole): print's pieces, unbuffered, are written one by one,
    # and a kill between them left half a line
    sys.stdout.write(f"{scan_id} {review.revision} {digest}\\n")
    sys.stdout.flush()
"""


def test_sigkill_at_random_moments_loses_no_saved_correction(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "p"
    with Project.create(path) as p:
        for i in range(3):
            p.add_scan(frames(i, (4, 64, 64)), f"s{i}")
    saved: dict[tuple[str, str], str] = {}

    def assert_whole(revisions: dict[tuple[str, str], str]) -> None:
        for (scan_id, revision), digest in revisions.items():
            mask = rev_mask(path, scan_id, revision)
            assert hashlib.sha256(mask.tobytes()).hexdigest() == digest, (scan_id, revision)

    rnd = random.Random(0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for kill in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(kill)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # at least one save per round, then a random moment
        time.sleep(rnd.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
        new: dict[tuple[str, str], str] = {}
        for line in (first + rest).splitlines():
            scan_id, revision, digest = line.split()
            new[(scan_id, revision)] = digest
        saved |= new
        with Project.open(path) as p:  # opens for writing: the lock died with the writer
            for scan_id, revision in saved:
                slot = path / "scans" / scan_id / "labels" / TASK / revision
                assert slot.is_dir(), (kill, scan_id, revision)
                history = p.review_history(scan_id, TASK)
                assert revision in history
            for scan_id in p.scan_ids():
                review = p.review(scan_id, TASK)
                if review is not None:  # the current revision is whole and readable
                    assert review.mask is not None and review.mask.shape == (4, 64, 64)
                    assert review.revision >= max(
                        (r for s, r in saved if s == scan_id), default="r000000"
                    )
            assert_whole(new)  # what this writer saved is whole
    assert len(saved) >= 20
    assert_whole(saved)  # and no later kill damaged any of it


def rev_mask(path: Path, scan_id: str, revision: str) -> np.ndarray:
    import zarr

    group = zarr.open_group(path / "scans" / scan_id / "labels" / TASK / revision, mode="r")
    return np.asarray(group["mask"][:])


def test_set_spacing_replaces_the_scans_spacing_and_keeps_its_pixels(tmp_path: Path) -> None:
    path = tmp_path / "p.zarr"
    with Project.create(path) as p:
        scan_id = p.add_scan(frames(0), "png")
        assert p.scan(scan_id).spacing_mm is None
        p.set_spacing(scan_id, (0.25, 0.25))
        for bad in ((0.0, 0.1), (float("nan"), 0.1), (0.1,), (-1.0, 0.1)):
            with pytest.raises(StoreError, match="spacing_mm"):
                p.set_spacing(scan_id, bad)  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="no scan"):
            p.set_spacing("nope", (0.1, 0.1))
    with Project.open(path, read_only=True) as q:
        assert q.scan(scan_id).spacing_mm == (0.25, 0.25)
        np.testing.assert_array_equal(q.image(scan_id), frames(0))  # checksums still hold
        with pytest.raises(StoreError):
            q.set_spacing(scan_id, (0.1, 0.1))
