"""A damaged or racing store never reads as valid data; damage is named, the rest keeps working.

Each test damages a copy of a small project one way (as the adversarial trials did) and checks
that reads raise DamagedError naming the scan and the file, that the queue, progress, export
and ``propl check`` carry on with the other scans, and that ``--repair`` rolls back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from propl.cli import main
from propl.store import DamagedError, Project, StoreError
from propl.store.check import check_project

TASK = "fetal_head"


def frames(seed: int, shape=(3, 32, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, shape, dtype=np.uint8)


def make_project(path: Path) -> list[str]:
    """Three scans, each predicted; the first two corrected (twice: two revisions)."""
    with Project.create(path) as p:
        ids = [p.add_scan(frames(i), f"s{i}") for i in range(3)]
        for i, sid in enumerate(ids):
            shape = p.scan(sid).shape
            mask = np.zeros(shape, np.uint8)
            mask[:, 5:20, 5:20] = 1
            p.save_prediction(sid, TASK, mask, np.zeros(shape), np.full(3, 0.5 + i / 10), "v1")
            if i < 2:
                p.save_review(sid, TASK, "corrected", np.roll(mask, 2, axis=2))
                p.save_review(sid, TASK, "corrected", np.roll(mask, 3, axis=2))
    return ids


def chunk_files(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "c").rglob("*") if p.is_file())


def current(path: Path, scan_id: str, kind: str) -> Path:
    slot = path / "scans" / scan_id / kind / TASK
    return slot / json.loads((slot / "zarr.json").read_text())["attributes"]["current"]


@pytest.fixture
def damaged(tmp_path: Path):
    path = tmp_path / "p.zarr"
    return path, make_project(path)


def assert_damage_named(exc: pytest.ExceptionInfo, scan_id: str, file_part: str) -> None:
    assert exc.value.scan_id == scan_id
    assert file_part in exc.value.file
    assert scan_id in str(exc.value) and str(exc.value.file) in str(exc.value)


def test_deleted_review_chunk_is_damage_not_an_empty_mask(damaged) -> None:
    path, ids = damaged
    chunk_files(current(path, ids[0], "labels") / "mask")[1].unlink()
    with Project.open(path, read_only=True) as p:
        with pytest.raises(DamagedError) as exc:
            p.review(ids[0], TASK)
        assert_damage_named(exc, ids[0], "labels")
        assert p.review(ids[1], TASK).mask is not None  # the others read as before


def test_deleted_image_chunk_is_damage_not_a_black_frame(damaged) -> None:
    path, ids = damaged
    chunk_files(path / "scans" / ids[1] / "image")[0].unlink()
    with Project.open(path, read_only=True) as p:
        with pytest.raises(DamagedError) as exc:
            p.image(ids[1])
        assert_damage_named(exc, ids[1], "image")
        assert p.image(ids[1], [1, 2]).shape == (2, 32, 40)  # intact frames still read
        with pytest.raises(DamagedError):
            p.image(ids[1], [0])


def test_edited_image_shape_is_damage(damaged) -> None:
    path, ids = damaged
    meta = path / "scans" / ids[0] / "image" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["shape"] = [3, 32, 20]
    meta.write_text(json.dumps(doc))
    with Project.open(path, read_only=True) as p, pytest.raises(DamagedError) as exc:
        p.image(ids[0])
    assert_damage_named(exc, ids[0], "image")


def test_flipped_prediction_byte_is_damage(damaged) -> None:
    path, ids = damaged
    import zarr

    arr = zarr.open_array(current(path, ids[2], "pred") / "mask", mode="r+")
    arr[0, 0, 0] = 1  # a valid chunk with other content: only the checksum can tell
    with Project.open(path, read_only=True) as p, pytest.raises(DamagedError) as exc:
        p.prediction(ids[2], TASK)
    assert_damage_named(exc, ids[2], "pred")


@pytest.mark.parametrize(
    "damage", ["no_scan_meta", "truncated_scan_meta", "bad_pointer", "no_status"]
)
def test_one_damaged_scan_leaves_the_rest_of_the_project_working(damaged, damage) -> None:
    path, ids = damaged
    bad = ids[0]
    scan_meta = path / "scans" / bad / "zarr.json"
    if damage == "no_scan_meta":
        scan_meta.unlink()
    elif damage == "truncated_scan_meta":
        scan_meta.write_text(scan_meta.read_text()[:40])
    elif damage == "bad_pointer":
        slot_meta = path / "scans" / bad / "labels" / TASK / "zarr.json"
        doc = json.loads(slot_meta.read_text())
        doc["attributes"]["current"] = "r000099"
        slot_meta.write_text(json.dumps(doc))
    else:
        meta = current(path, bad, "labels") / "zarr.json"
        doc = json.loads(meta.read_text())
        del doc["attributes"]["status"]
        meta.write_text(json.dumps(doc))
    with Project.open(path, read_only=True) as p:
        assert bad in p.scan_ids()  # never silently gone
        queue = {q.scan_id: q for q in p.queue(TASK, include_reviewed=True)}
        assert queue[bad].status == "damaged" and bad in queue[bad].detail
        assert queue[ids[1]].status == "corrected" and queue[ids[2]].status == "unreviewed"
        assert p.progress(TASK) == (1, 3)  # the damaged one is not counted as reviewed
        with pytest.raises(DamagedError) as exc:
            p.review(bad, TASK)
        assert exc.value.scan_id == bad
        report = check_project(p)
    assert [d.scan_id for d in report.damage] == [bad]
    assert bad in report.damage[0].describe()


def test_export_and_check_skip_the_damaged_scan_and_exit_non_zero(damaged, tmp_path, capsys):
    path, ids = damaged
    chunk_files(current(path, ids[0], "labels") / "mask")[0].unlink()
    out = tmp_path / "out"
    code = main(["export", "--project", str(path), "--task", TASK, "--out", str(out)])
    text = capsys.readouterr()
    assert code == 1
    assert ids[0] in text.out + text.err
    written = [p.name for p in out.rglob("*.tif")]
    assert any(ids[1] in n for n in written) and not any(ids[0] in n for n in written)
    assert main(["check", "--project", str(path)]) == 1
    assert ids[0] in capsys.readouterr().out


def test_check_repair_rolls_the_pointer_back_to_the_last_intact_revision(damaged, capsys):
    path, ids = damaged
    chunk_files(current(path, ids[1], "labels") / "mask")[0].unlink()
    with Project.open(path, read_only=True) as p:
        older = p.review_history(ids[1], TASK)[0]
    assert main(["check", "--project", str(path), "--repair"]) == 0
    assert "pointer moved back to " + older in capsys.readouterr().out
    with Project.open(path, read_only=True) as p:
        review = p.review(ids[1], TASK)
        assert review.revision == older and review.mask is not None
    assert main(["check", "--project", str(path)]) == 0


def test_retraining_data_skips_the_damaged_scan_and_says_so(damaged) -> None:
    from propl.train.project import RetrainConfig, collect

    path, ids = damaged
    with Project.open(path) as p:  # a third labelled scan: one can be held back, two train
        p.save_review(ids[2], TASK, "accepted")
    chunk_files(path / "scans" / ids[0] / "image")[0].unlink()
    with Project.open(path, read_only=True) as p:
        data = collect(p, [TASK], [TASK], 32, RetrainConfig(hold_back=0.3))
    assert len(data.damaged) == 1 and ids[0] in data.damaged[0]
    used = {i.split(":")[0] for i in data.labelled.ids + data.held_back.ids}
    assert ids[0] not in used and used == {ids[1], ids[2]}


READER = """
import sys, numpy as np
from propl.store import Project
path, task, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
import time
end, passes, failures = time.time() + seconds, 0, []
with Project.open(path, read_only=True) as p:
    ids = p.scan_ids()
    while time.time() < end:
        for sid in ids:
            try:
                pred = p.prediction(sid, task)
                assert pred is not None and pred.mask.shape == pred.uncertainty.shape
                assert int(pred.mask.max()) == int(round(pred.confidence[0] * 100)) % 2
            except Exception as exc:
                failures.append(repr(exc))
        passes += 1
print(passes, len(failures), failures[:3])
"""


def test_readers_racing_a_writer_see_the_old_or_the_new_revision(tmp_path: Path) -> None:
    path = tmp_path / "p.zarr"
    with Project.create(path) as p:
        ids = [p.add_scan(frames(i, (2, 24, 24)), f"s{i}") for i in range(2)]
        readers = [
            subprocess.Popen(
                [sys.executable, "-c", READER, str(path), TASK, "6"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        saves, end = 0, time.time() + 6
        while time.time() < end:
            for sid in ids:
                # mask and confidence agree within a revision: a mixed read would show it
                value = saves % 2
                mask = np.full((2, 24, 24), value, np.uint8)
                conf = np.full(2, (value + 2 * (saves % 5)) / 100)
                p.save_prediction(sid, TASK, mask, np.zeros((2, 24, 24)), conf, f"v{saves}")
            saves += 1
    results = [r.communicate(timeout=60)[0].split(maxsplit=2) for r in readers]
    assert saves > 20
    for passes, failures, examples in results:
        assert int(passes) > 5
        assert int(failures) == 0, examples


def test_concurrent_creates_one_wins_the_other_gets_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "p.zarr"
    results: list[object] = []
    barrier = threading.Barrier(4)

    def create() -> None:
        barrier.wait()
        try:
            Project.create(target).close()
            results.append("ok")
        except StoreError as exc:
            results.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") >= 1
    for r in results:
        assert r == "ok" or str(target) in str(r)
    assert [p.name for p in tmp_path.iterdir()] == ["p.zarr"]  # no .creating leftovers
    Project.open(target).close()


def test_a_killed_retrain_leaves_no_staging_folder_behind(tmp_path: Path) -> None:
    from propl.store import versions as ver

    path = tmp_path / "p.zarr"
    Project.create(path).close()
    code = "import sys, os; from pathlib import Path; from propl.store import versions as v; "
    code += "v.new_staging(Path(sys.argv[1])); os._exit(9)"
    subprocess.run([sys.executable, "-c", code, str(path)], check=False)
    assert len(list((path / "models").glob(".staging-*"))) == 1
    mine = ver.new_staging(path)  # a run of this process that is still going stays
    Project.open(path).close()
    assert list((path / "models").glob(".staging-*")) == [mine]


def test_a_deleted_pointer_is_damage_not_a_scan_never_reviewed(damaged, capsys) -> None:
    path, ids = damaged
    (path / "scans" / ids[0] / "labels" / TASK / "zarr.json").unlink()
    with Project.open(path, read_only=True) as p:
        with pytest.raises(DamagedError) as exc:
            p.review(ids[0], TASK)
        assert_damage_named(exc, ids[0], "labels")
        assert p.queue(TASK)[-1].status == "damaged"
    assert main(["check", "--project", str(path), "--repair"]) == 0
    with Project.open(path, read_only=True) as p:
        assert p.review(ids[0], TASK).revision == "r000002"  # the newest intact one


@pytest.mark.parametrize(
    "key, value",
    [
        ("confidence", [float("nan"), 0.5, 0.5]),  # JSON NaN: zarr reads it back as a number
        ("confidence", [0.5, 0.5]),  # one frame short
        ("confidence", ["high", "high", "high"]),
        ("confidence", [0.5, 1.5, 0.5]),
        ("shape_fit", [0.9, -1.0, 0.9]),
        ("task_fit", [0.1]),
    ],
)
def test_an_edited_per_frame_score_is_damage_not_a_queue_order(damaged, key, value) -> None:
    """The queue is ordered by the stored confidence: an edited one must not decide it."""
    path, ids = damaged
    bad = ids[2]
    meta = current(path, bad, "pred") / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"][key] = value
    meta.write_text(json.dumps(doc))
    with Project.open(path, read_only=True) as p:
        with pytest.raises(DamagedError) as exc:
            p.prediction(bad, TASK)
        assert_damage_named(exc, bad, "pred")
        assert key in str(exc.value)
        queue = {q.scan_id: q for q in p.queue(TASK, include_reviewed=True)}
        if key == "confidence":  # the queue reads only the confidence
            assert queue[bad].status == "damaged"
        assert queue[ids[0]].status == queue[ids[1]].status == "corrected"


def test_scores_that_are_not_one_number_in_0_1_per_frame_are_refused_at_save(tmp_path) -> None:
    with Project.create(tmp_path / "p.zarr") as p:
        sid = p.add_scan(frames(0), "s0")
        mask, unc = np.zeros((3, 32, 40), np.uint8), np.zeros((3, 32, 40))
        for bad in (
            {"confidence": np.array([0.5, np.nan, 0.5])},
            {"confidence": np.full(2, 0.5)},
            {"confidence": np.full(3, 0.5), "shape_fit": np.full(3, 1.2)},
            {"confidence": np.full(3, 0.5), "task_fit": np.full(4, 0.5)},
        ):
            conf = bad.pop("confidence")
            with pytest.raises(StoreError, match="one per frame"):
                p.save_prediction(sid, TASK, mask, unc, conf, "v1", **bad)
        assert p.prediction(sid, TASK) is None  # nothing written
