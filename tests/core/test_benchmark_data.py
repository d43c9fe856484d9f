"""The benchmark folder, labelled/unlabelled sampling and preloaded arrays."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from propl.data import benchmark
from propl.data.benchmark import (
    ArraySet,
    BenchmarkFolder,
    DataFolderError,
    FirstScans,
    Sample,
    carve_validation,
    load_arrays,
    load_full_masks,
    parse_labelled,
    split_labelled,
)
from propl.tasks import DEFAULT_TASKS, Task, load_tasks_json, validate_task_id

TASKS = ("liver_lesion", "kidney_cyst")
N_TRAIN, N_TEST = 9, 3


def write_folder(root: Path) -> Path:
    """A us-universal-style folder: 2 tasks x 12 scans of varying size, masks 0/1."""
    rng = np.random.default_rng(0)
    tasks, splits = {}, {}
    for t, task in enumerate(TASKS):
        (root / task / "images").mkdir(parents=True)
        (root / task / "masks").mkdir(parents=True)
        ids = [f"{task[:3]}_{i}" for i in range(N_TRAIN + N_TEST)]
        for i, sid in enumerate(ids):
            h, w = 40 + 4 * i, 56 - 2 * i
            Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(
                root / task / "images" / f"{sid}.png"
            )
            mask = np.zeros((h, w), np.uint8)
            mask[h // 4 : h // 2, w // 4 : w // 2 + t] = 1
            Image.fromarray(mask).save(root / task / "masks" / f"{sid}.png")
        tasks[task] = {
            "organ": task.split("_")[0],
            "target": task.split("_")[1],
            "prompt": task.replace("_", " "),
            "source": "synthetic",
            "count": len(ids),
        }
        splits[task] = {"train": ids[:N_TRAIN][::-1], "test": ids[N_TRAIN:]}
    (root / "tasks.json").write_text(json.dumps(tasks))
    (root / "splits.json").write_text(json.dumps(splits))
    return root


@pytest.fixture
def folder(tmp_path: Path) -> BenchmarkFolder:
    return BenchmarkFolder(write_folder(tmp_path / "bench"))


def fake_samples(n: int, task: str = "t") -> list[Sample]:
    return [Sample(task, f"id_{i:03d}", Path(f"{i}.png"), Path(f"m{i}.png")) for i in range(n)]


# -- tasks ---------------------------------------------------------------------------------


def test_default_tasks():
    assert [t.id for t in DEFAULT_TASKS] == [
        "breast_lesion",
        "thyroid_nodule",
        "fetal_head",
        "left_heart",
        "ovarian_tumor",
    ]
    assert DEFAULT_TASKS[1].prompt == "thyroid nodule" and DEFAULT_TASKS[2].organ == "fetus"
    assert len({t.colour for t in DEFAULT_TASKS}) == 5


def test_task_validation_and_defaults():
    task = Task("fetal_head", colour="#ABCDEF")
    assert task.prompt == "fetal head" and task.colour == "#abcdef"
    assert validate_task_id("a_1") == "a_1"
    for bad in ("", "Fetal", "fetal head", "fetal-head", "tâche"):
        with pytest.raises(ValueError, match="task id"):
            Task(bad)
    with pytest.raises(ValueError, match="colour"):
        Task("ok", colour="red")


def test_load_tasks_json(folder, tmp_path):
    tasks = load_tasks_json(folder.root / "tasks.json")
    assert [t.id for t in tasks] == list(TASKS)
    assert tasks[0].organ == "liver" and tasks[1].prompt == "kidney cyst"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_tasks_json(bad)


# -- the folder ----------------------------------------------------------------------------


def test_folder_tasks_and_samples(folder):
    assert folder.task_ids() == list(TASKS)
    assert [t.id for t in folder.tasks] == list(TASKS)
    train = folder.samples("kidney_cyst", "train")
    assert len(train) == N_TRAIN and len(folder.samples("kidney_cyst", "test")) == N_TEST
    assert [s.id for s in train] == [f"kid_{i}" for i in range(N_TRAIN)][::-1]  # file order
    assert all(s.task == "kidney_cyst" and s.image.is_file() and s.mask.is_file() for s in train)


def test_first_scans_is_a_fixed_subset_sorted_by_id(folder):
    first = FirstScans(folder.root, 3)
    ids = sorted(s.id for s in folder.samples("kidney_cyst", "train"))
    assert [s.id for s in first.samples("kidney_cyst", "train")] == ids[:3]
    assert len(FirstScans(folder.root, 0).samples("kidney_cyst", "train")) == N_TRAIN


def test_folder_errors(folder, tmp_path):
    with pytest.raises(DataFolderError, match="not found"):
        BenchmarkFolder(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    with pytest.raises(DataFolderError, match="tasks.json"):
        BenchmarkFolder(tmp_path / "half")
    with pytest.raises(DataFolderError, match="unknown task 'foo'; available: liver_lesion"):
        folder.samples("foo", "train")
    with pytest.raises(DataFolderError, match="unknown split 'val'"):
        folder.samples("liver_lesion", "val")
    (folder.root / "liver_lesion" / "images" / "liv_2.png").unlink()
    with pytest.raises(DataFolderError, match="liv_2.png"):
        folder.samples("liver_lesion", "train")


# -- labelled amounts and splits -----------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1/16", Fraction(1, 16)),
        ("0.125", Fraction(1, 8)),
        (0.25, Fraction(1, 4)),
        ("25%", Fraction(1, 4)),
        ("1/1", Fraction(1)),
        ("10", 10),
        (10, 10),
        (" 3 ", 3),
    ],
)
def test_parse_labelled(spec, expected):
    value = parse_labelled(spec)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "spec", ["0", 0, -1, "0/4", "3/2", 1.5, "-0.1", "abc", "", True, "1/0", float("nan")]
)
def test_parse_labelled_rejects(spec):
    with pytest.raises(ValueError):
        parse_labelled(spec)


def test_split_labelled_properties():
    samples = fake_samples(40)
    lab, unlab = split_labelled(samples, Fraction(1, 8), seed=3)
    assert len(lab) == 5 and len(unlab) == 35
    assert {s.id for s in lab}.isdisjoint({s.id for s in unlab})
    assert sorted(lab + unlab, key=lambda s: s.id) == samples
    assert split_labelled(samples, Fraction(1, 8), seed=3) == (lab, unlab)
    assert split_labelled(samples[::-1], Fraction(1, 8), seed=3) == (lab, unlab)
    drawn = {
        tuple(s.id for s in split_labelled(samples, Fraction(1, 8), seed)[0])
        for seed in range(3, 8)
    }
    assert len(drawn) == 5  # different seeds, different subsets
    bigger, _ = split_labelled(samples, Fraction(1, 4), seed=3)
    assert {s.id for s in lab} <= {s.id for s in bigger}  # nested subsets for one seed


def test_split_labelled_counts_and_minimum():
    samples = fake_samples(10)
    assert len(split_labelled(samples, Fraction(1, 16), 0)[0]) == 1  # round(0.6), >= 1
    assert len(split_labelled(fake_samples(3), Fraction(1, 16), 0)[0]) == 1  # at least one
    assert len(split_labelled(samples, 4, 0)[0]) == 4
    assert split_labelled(samples, 50, 0) == (samples, [])
    assert len(split_labelled(samples, Fraction(1), 0)[0]) == 10
    with pytest.raises(ValueError):
        split_labelled([], Fraction(1, 2), 0)


def test_carve_validation():
    samples = fake_samples(30)
    train, val = carve_validation(samples, fraction=0.1, seed=0)
    assert len(val) == 3 and len(train) == 27
    assert {s.id for s in train}.isdisjoint({s.id for s in val})
    assert carve_validation(samples[::-1], 0.1, 0) == (train, val)
    assert carve_validation(samples, 0.1, 1) != (train, val)
    assert len(carve_validation(fake_samples(5), 0.1, 0)[1]) == 2  # min_count
    assert len(carve_validation(fake_samples(2), 0.1, 0)[0]) == 1  # one left for training


# -- arrays --------------------------------------------------------------------------------


def test_load_arrays(folder):
    samples = folder.samples("kidney_cyst", "train")[:4] + folder.samples("liver_lesion", "test")
    data = load_arrays(samples, 32, TASKS, progress=False)
    assert isinstance(data, ArraySet) and len(data) == 7
    assert data.images.shape == (7, 32, 32) and data.images.dtype == np.uint8
    assert data.masks.shape == (7, 32, 32) and data.masks.dtype == np.uint8
    assert set(np.unique(data.masks)) == {0, 1}
    assert data.task_index.dtype == np.int64
    np.testing.assert_array_equal(data.task_index, [1, 1, 1, 1, 0, 0, 0])
    assert data.ids == [s.id for s in samples]
    assert data.orig_shapes[0] == (40 + 4 * 8, 56 - 2 * 8)  # kid_8: first in file order
    full = load_full_masks(samples[:2])
    assert full[0].shape == data.orig_shapes[0] and set(np.unique(full[0])) == {0, 1}
    no_masks = load_arrays(samples, 32, TASKS, with_masks=False, progress=False)
    assert no_masks.masks.shape == (7, 32, 32) and no_masks.masks.max() == 0
    np.testing.assert_array_equal(no_masks.images, data.images)
    with pytest.raises(ValueError, match="task_order"):
        load_arrays(samples, 32, ["liver_lesion"], progress=False)


def test_load_arrays_cache(folder, tmp_path, monkeypatch):
    samples = folder.samples("liver_lesion", "train")
    cache = tmp_path / "cache"
    first = load_arrays(samples, 24, TASKS, cache_dir=cache, progress=False)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1

    def no_reading(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(benchmark, "read_scan", no_reading)
    monkeypatch.setattr(benchmark, "read_mask", no_reading)
    again = load_arrays(samples, 24, TASKS, cache_dir=cache, progress=False)
    for name in ("images", "masks", "task_index"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert again.ids == first.ids and again.orig_shapes == first.orig_shapes
    monkeypatch.undo()
    # a changed file (new mtime) or another size is a different cache entry
    os.utime(samples[0].image, ns=(0, 10**9))
    load_arrays(samples, 24, TASKS, cache_dir=cache, progress=False)
    load_arrays(samples, 16, TASKS, cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.npz"))) == 3


def test_load_arrays_rebuilds_a_broken_cache(folder, tmp_path):
    samples = folder.samples("kidney_cyst", "test")
    first = load_arrays(samples, 16, TASKS, cache_dir=tmp_path, progress=False)
    (cache_file,) = tmp_path.glob("*.npz")
    cache_file.write_bytes(b"garbage")
    again = load_arrays(samples, 16, TASKS, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again.images, first.images)


# -- the real benchmark (not in CI) --------------------------------------------------------


@pytest.mark.slow
def test_real_us_universal_folder(data_root):
    """``data_root`` (tests/conftest.py): $PROPL_DATA or ../shared/datasets/us-universal."""
    folder = BenchmarkFolder(data_root)
    assert folder.task_ids() == [t.id for t in DEFAULT_TASKS]
    assert [(t.organ, t.target, t.prompt) for t in folder.tasks] == [
        (t.organ, t.target, t.prompt) for t in DEFAULT_TASKS
    ]
    sizes = {
        t: (len(folder.samples(t, "train")), len(folder.samples(t, "test")))
        for t in folder.task_ids()
    }
    assert sizes == {
        "breast_lesion": (564, 147),
        "thyroid_nodule": (439, 132),
        "fetal_head": (693, 209),
        "left_heart": (279, 50),
        "ovarian_tumor": (288, 75),
    }
    sample = folder.samples("thyroid_nodule", "test")[0]
    data = load_arrays([sample], 64, folder.task_ids(), progress=False)
    assert data.images.shape == (1, 64, 64) and data.masks.max() == 1
