"""Retraining from a project through the real subprocess path (``python -m propl train
--project``): progress, versions, promotion and rejection, NaN runs, cancel, rollback, new tasks.

A tiny network (propl-small, 64 px) on synthetic two-frame cines keeps each run to seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from propl.checkpoint import load_checkpoint, save_checkpoint
from propl.data.synthetic import SYNTHETIC_TASKS, make_scan
from propl.inference import Predictor
from propl.metrics import dice
from propl.models import build_model
from propl.store import Project, StoreError
from propl.task_shape import TaskShapes, load_task_shapes
from propl.tasks import Task
from propl.train.project import RetrainError
from propl.train.verdict import gain_bound, select_held_back

SIZE = 64
N_SCANS = 12


def make_parent(
    path: Path, tasks=("bright_blob",), nan: bool = False, refine: bool = False
) -> Path:
    """A small untrained network (ImageNet encoder) that knows ``tasks`` only; ``refine``:
    with a click refinement head."""
    torch.manual_seed(0)
    model = build_model("propl-small", tasks=tasks, input_size=SIZE, pretrained=True)
    if refine:
        model.add_refine()
    if nan:
        with torch.no_grad():
            next(model.decoder2.parameters()).fill_(float("nan"))
    save_checkpoint(model, path)
    return path


def scans(seed: int = 0):
    """Synthetic two-frame cines with their bright- and dark-blob masks."""
    rng = np.random.default_rng(seed)
    for _ in range(N_SCANS):
        frames = [make_scan(SIZE, rng) for _ in range(2)]
        yield tuple(np.stack([f[k] for f in frames]) for k in range(3))


def make_project(
    root: Path, task: str = "dark_blob", reviewed: int = 6, wrong_train_labels: bool = False
) -> Path:
    """A project of synthetic cines; the first ``reviewed`` scans corrected for ``task``.

    ``wrong_train_labels``: the scans that will be trained on (not the held-back ones) get
    the target's complement as their mask, so the run learns to mark everything but the
    target (empty masks were not enough: the unlabelled scans' consistency term could still
    carry a short run past the model it started from).
    """
    key = 1 if task == "bright_blob" else 2
    with Project.create(root, tasks=[Task(t) for t in SYNTHETIC_TASKS]) as project:
        items = [(project.add_scan(s[0], f"scan{i}"), s) for i, s in enumerate(scans())]
        pairs = [(sid, task) for sid, _ in items[:reviewed]]
        held = set(select_held_back(pairs, 0.2)[1]) if reviewed >= 2 else set()
        for sid, s in items[:reviewed]:
            mask = s[key]
            if wrong_train_labels and (sid, task) not in held:
                mask = (mask == 0).astype(mask.dtype)
            project.save_review(sid, task, "corrected", mask)
    return root


def propl_train(project: Path, *args: str, check: bool = True) -> tuple[list[dict], int]:
    """Run the real command as the plugin does; returns its JSON events and exit code."""
    cmd = [sys.executable, "-m", "propl", "train", "--project", str(project), "--json"]
    cmd += ["--device", "cpu", "--steps", "40", "--lr", "3e-3", "--batch-size", "4", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check and done.returncode not in (0, 1):
        raise AssertionError(done.stderr)
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return events, done.returncode


def by_kind(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["kind"] == kind]


def test_held_back_split_is_stable_and_never_empty():
    pairs = [(f"{i:016x}", "t") for i in range(10)]
    train, held = select_held_back(pairs, 0.2)
    assert len(held) == 2 and set(train) | set(held) == set(pairs) and not set(train) & set(held)
    assert select_held_back(list(reversed(pairs)), 0.2)[1] == held  # order does not matter
    assert len(select_held_back(pairs[:2], 0.01)[1]) == 1  # at least one each way
    assert len(select_held_back(pairs[:2], 0.99)[0]) == 1
    with pytest.raises(RetrainError, match="at least 2 reviewed"):
        select_held_back(pairs[:1], 0.2)


def test_a_model_is_judged_zero_on_a_task_it_has_not_learnt():
    """The current model has a (fresh, untrained) prompt for a new task only so that both can
    be scored on the same held-back scans; the annotator gets nothing from it for that task."""
    from propl.train.verdict import judge

    torch.manual_seed(0)
    model = build_model("propl-small", tasks=SYNTHETIC_TASKS, input_size=SIZE, pretrained=False)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(2):
        image, bright, dark = make_scan(SIZE, rng)
        full = np.ones_like(bright)  # whatever the model draws overlaps it: Dice > 0
        frames += [(image, full, "bright_blob", f"s{i}"), (image, full, "dark_blob", f"s{i}")]
    everything = judge(model, frames, "cpu")
    assert everything["per_task"]["dark_blob"] > 0 and everything["per_task"]["bright_blob"] > 0
    known = judge(model, frames, "cpu", known={"bright_blob"})
    bright = everything["per_task"]["bright_blob"]
    assert known["per_task"] == {"bright_blob": bright, "dark_blob": 0}
    assert known["mdice"] == bright / 2


def test_gain_bound_promotes_a_consistent_gain_but_not_a_lucky_mean():
    base = {f"s{i}:t": 70.0 for i in range(10)}
    steady = {k: v + 2.0 + 0.1 * i for i, (k, v) in enumerate(base.items())}
    gain, bound = gain_bound(base, steady, 0.9)
    assert gain == pytest.approx(2.45) and 2.0 < bound < gain
    # the same mean gain from one scan improving a lot and the others getting worse
    lucky = {k: v - 1.0 for k, v in base.items()} | {"s0:t": 70.0 + 33.5}
    gain, bound = gain_bound(base, lucky, 0.9)
    assert gain == pytest.approx(2.45) and bound < 0
    assert gain_bound(base, lucky, 0.5)[1] < gain_bound(base, lucky, 0.1)[1]
    # tasks count equally, whatever their number of held-back scans; one scan: bound = gain
    two = {"a:t": 50.0, "b:t": 50.0, "c:u": 50.0}
    better = {"a:t": 60.0, "b:t": 60.0, "c:u": 40.0}
    assert gain_bound(two, better, 0.9) == pytest.approx((0.0, 0.0))
    assert gain_bound({"a:t": 1.0}, {"a:t": 4.0}, 0.99) == pytest.approx((3.0, 3.0))


def test_retrain_learns_a_new_task_writes_a_version_and_promotes_it(tmp_path):
    """The parent knows only bright_blob; ten-odd corrected frames of dark_blob teach it."""
    parent = make_parent(tmp_path / "parent")
    TaskShapes({"bright_blob": 0.9}, {"bright_blob": 50}).save(parent)
    project = make_project(tmp_path / "p.zarr", "dark_blob")
    events, code = propl_train(project, "--init", str(parent), "--lr", "1e-2")
    assert code == 0
    prepare = by_kind(events, "prepare")[0]["data"]
    assert prepare["labelled"] + prepare["held_back"] == 6 and prepare["held_back"] >= 1
    assert prepare["unlabelled_frames"] == 2 * (N_SCANS - 6) and prepare["method"] == "propl"
    steps = by_kind(events, "step")
    assert [e["step"] for e in steps] == list(range(1, 41))  # progress arrives step by step
    assert by_kind(events, "eval")  # the held-back Dice curve
    version = by_kind(events, "version")[0]["data"]
    assert version["version"] == "v0001" and version["outcome"] == "better"
    assert version["score"] > version["baseline_score"] + 5 and version["baseline"] == "shipped"
    assert version["gain_lower_bound"] > 0
    assert by_kind(events, "promotion")[0]["promoted"] is True

    with Project.open(project, read_only=True) as p:
        current = p.current_version()
        assert current is not None and current.name == "v0001"
        assert len(current.trained_on) == prepare["labelled"]
        assert not {tuple(x) for x in current.trained_on} & {tuple(x) for x in current.held_back}
        assert p.model_history()[-1]["version"] == "v0001"
        ckpt = load_checkpoint(current.path)
        assert ckpt.model.config.tasks == ("bright_blob", "dark_blob")  # gained a prompt
        # ... and decoders of its own: the task the parent knew keeps its exact output
        assert ckpt.model.config.own_decoders == ("dark_blob",)
        assert current.record["resolved"]["new_tasks"] == ["dark_blob"]
        # shape floors: the new task's from its 12 confirmed frames, the parent's kept
        shapes = load_task_shapes(current.path)
        assert shapes is not None and shapes.masks == {"bright_blob": 50, "dark_blob": 12}
        assert shapes.floors["bright_blob"] == 0.9 and 0.5 < shapes.floors["dark_blob"] <= 1
        from safetensors.torch import load_file

        before = load_file(parent / "model.safetensors")
        after = load_file(Path(current.path) / "model.safetensors")  # saved in float16
        for key, value in before.items():
            kept = after[key][: value.shape[0]] if key == "prompts" else after[key]
            assert torch.equal(kept, value.to(kept.dtype)), key
        # the new task is segmented by the promoted version
        image, _, dark = next(iter(scans(seed=5)))
        pred = Predictor(ckpt.model, device="cpu", uncertainty="none").predict(image, "dark_blob")
        assert np.mean([dice(pred.mask[f] > 0, dark[f] > 0) for f in range(2)]) > 0.5


def test_retraining_tunes_the_click_head_on_the_corrections(tmp_path):
    """The parent has a click head: after the rest trains, the head trains on the confirmed
    corrections and is stored only if the held-back corrections click no worse with it."""
    parent = make_parent(tmp_path / "parent", refine=True)
    project = make_project(tmp_path / "p.zarr", "dark_blob")
    events, code = propl_train(project, "--init", str(parent), "--refine-steps", "20")
    assert code == 0
    kinds = [e["kind"] for e in events]
    assert kinds.index("refine") > max(i for i, k in enumerate(kinds) if k == "step")
    assert kinds.index("refine") < kinds.index("version")
    prepare = by_kind(events, "prepare")[0]["data"]
    assert by_kind(events, "refine")[0]["data"]["frames"] == 2 * prepare["labelled"]
    refine = by_kind(events, "version")[0]["data"]["refine"]
    assert refine["trained"] and refine["steps"] == 20
    clicks = refine["held_back_click_iou"]
    assert refine["kept"] is (clicks["after"] >= clicks["before"])
    with Project.open(project, read_only=True) as p:
        assert p.versions()[0].record["refine"] == refine
        path = p.versions()[0].path
    head = {k: v for k, v in load_checkpoint(path).model.state_dict().items() if "refine." in k}
    start = {k: v for k, v in load_checkpoint(parent).model.state_dict().items() if "refine." in k}
    moved = any(not torch.equal(head[k], start[k].to(head[k].dtype)) for k in start)
    assert moved is refine["kept"]

    # --refine-steps 0: the head comes through as it was
    events, code = propl_train(project, "--init", str(parent), "--refine-steps", "0")
    assert code == 0 and "refine" not in [e["kind"] for e in events]
    assert by_kind(events, "version")[0]["data"]["refine"]["trained"] is False


def propl_models(project: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "propl", "models", "--project", str(project), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_an_imported_model_becomes_current_and_is_retrained_from(tmp_path):
    """A lab's own checkpoint (it knows bright_blob only) added with ``propl models --add``:
    the project predicts with it and the next run starts from it and must beat it."""
    parent = make_parent(tmp_path / "lab-model")
    project = make_project(tmp_path / "p.zarr", "dark_blob")

    # refused, naming the file, with nothing written: a pickle, a folder with no checkpoint,
    # a good checkpoint whose shape floors are invalid
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "model.safetensors").write_bytes(b"\x80\x04K\x01.")
    (pickled / "model.json").write_text((parent / "model.json").read_text())
    bad_floors = make_parent(tmp_path / "bad-floors")
    (bad_floors / "task_shape.json").write_text('{"kind": "propl-task-shape"}')
    for bad in (pickled, tmp_path / "nothing-here", bad_floors):
        done = propl_models(project, "--add", str(bad))
        assert done.returncode == 2 and str(bad) in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    with Project.open(project, read_only=True) as p:
        assert p.versions() == [] and p.current_version() is None
        assert not list((p.root / "models").glob(".staging-*"))

    TaskShapes({"bright_blob": 0.9}, {"bright_blob": 50}).save(parent)
    done = propl_models(project, "--add", str(parent))
    assert done.returncode == 0, done.stderr
    assert "as v0001" in done.stdout and "bright_blob" in done.stdout
    with Project.open(project, read_only=True) as p:
        current = p.current_version()
        assert current is not None and current.name == "v0001" and current.outcome == "imported"
        assert current.usable and current.tasks == ["bright_blob"]
        assert load_task_shapes(current.path).floors == {"bright_blob": 0.9}  # came along
        assert p.model_history()[-1]["version"] == "v0001"
        stored = load_checkpoint(current.path).model.state_dict()
    original = load_checkpoint(parent).model.state_dict()
    assert stored.keys() == original.keys()
    for key, value in original.items():  # the same weights, stored in half precision
        assert torch.allclose(stored[key].float(), value.float(), rtol=1e-2, atol=1e-3), key
    listing = propl_models(project)
    assert "* v0001 (imported)" in listing.stdout and str(parent.resolve()) in listing.stdout

    events, code = propl_train(project, "--lr", "1e-2")  # no --init: from the current version
    assert code == 0
    version = by_kind(events, "version")[0]["data"]
    assert version["parent"] == version["baseline"] == "v0001"
    assert version["version"] == "v0002" and version["outcome"] == "better"
    assert by_kind(events, "promotion")[0]["promoted"] is True
    with Project.open(project, read_only=True) as p:
        assert p.current_version().name == "v0002"
        tasks = load_checkpoint(p.current_model_path()).model.config.tasks
        assert tasks == ("bright_blob", "dark_blob")


def test_a_worse_run_is_kept_but_not_promoted_and_rollback_works(tmp_path):
    parent = make_parent(tmp_path / "parent")
    project = make_project(tmp_path / "p.zarr", "dark_blob")
    assert propl_train(project, "--init", str(parent), "--lr", "1e-2")[1] == 0  # v0001, promoted

    # Labels that teach the network to miss the target: judged worse on the held-back scans.
    bad = make_project(tmp_path / "bad.zarr", "dark_blob", wrong_train_labels=True)
    with Project.open(project) as p, Project.open(bad, read_only=True) as b:
        for sid in b.scan_ids():
            review = b.review(sid, "dark_blob")
            if review is not None:
                p.save_review(sid, "dark_blob", "corrected", review.mask)
    events, code = propl_train(project, "--steps", "60")
    assert code == 0
    version = by_kind(events, "version")[0]["data"]
    assert version["parent"] == version["baseline"] == "v0001"  # incremental: from current
    assert version["outcome"] == "worse" and version["score"] < version["baseline_score"]
    assert by_kind(events, "promotion")[0]["promoted"] is False
    with Project.open(project) as p:
        assert p.current_version().name == "v0001"
        assert [v.outcome for v in p.versions()] == ["better", "worse"]
        p.set_current("v0002", "the annotator's choice")  # a kept version can still be chosen
        p.set_current("shipped")  # roll back to the shipped model
        assert p.current_version() is None

    done = subprocess.run(
        [sys.executable, "-m", "propl", "models", "--project", str(project), "--use", "v0001"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "current: v0001" in done.stdout and "v0002 (not better)" in done.stdout
    with Project.open(project, read_only=True) as p:
        assert p.current_version().name == "v0001"
        assert [h["version"] for h in p.model_history()] == ["v0001", "v0002", "shipped", "v0001"]


def test_a_diverging_run_is_a_failed_version_that_is_never_used(tmp_path):
    parent = make_parent(tmp_path / "parent")
    project = make_project(tmp_path / "p.zarr", "bright_blob")
    # a broken starting model is refused before any training, naming its file
    nan_parent = make_parent(tmp_path / "nan-parent", nan=True)
    _, code = propl_train(project, "--init", str(nan_parent), check=False)
    assert code == 2
    # a learning rate no run survives: the weights overflow
    events, code = propl_train(project, "--init", str(parent), "--lr", "1e30")
    assert code == 1
    version = by_kind(events, "version")[0]["data"]
    assert version["outcome"] == "failed" and "diverged" in version["message"]
    assert by_kind(events, "promotion") == [] or not by_kind(events, "promotion")[0]["promoted"]
    with Project.open(project) as p:
        assert p.current_version() is None
        (failed,) = p.versions()
        assert not failed.usable
        with pytest.raises(StoreError, match="failed"):
            p.set_current(failed.name)
        assert p.review(p.scan_ids()[0], "bright_blob").status == "corrected"


def test_cancel_stops_the_subprocess_and_writes_nothing(tmp_path):
    parent = make_parent(tmp_path / "parent")
    project = make_project(tmp_path / "p.zarr", "bright_blob")
    with Project.open(project, read_only=True) as p:
        before = {s: p.review(s, "bright_blob") for s in p.scan_ids()}
    cmd = [sys.executable, "-m", "propl", "train", "--project", str(project), "--json"]
    cmd += ["--device", "cpu", "--steps", "100000", "--init", str(parent), "--no-promote"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    # the GUI keeps the writer lock meanwhile; the subprocess only reads
    with Project.open(project) as holder:
        for line in proc.stdout:
            if json.loads(line)["kind"] == "step":
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert holder.current_version() is None
    assert proc.returncode == 1, err
    assert json.loads(out.splitlines()[-1])["kind"] == "stopped"
    assert "cancelled" in err
    with Project.open(project) as p:
        assert p.versions() == [] and p.current_version() is None
        assert not list((project / "models").glob(".staging-*"))
        for sid, review in before.items():
            after = p.review(sid, "bright_blob")
            if review is None:
                assert after is None
            else:
                assert after.revision == review.revision
                np.testing.assert_array_equal(after.mask, review.mask)


def test_too_few_reviews_and_locked_projects_are_clear_errors(tmp_path):
    project = make_project(tmp_path / "p.zarr", "bright_blob", reviewed=1)
    parent = make_parent(tmp_path / "parent")
    cmd = [sys.executable, "-m", "propl", "train", "--project", str(project)]
    done = subprocess.run(cmd + ["--init", str(parent)], capture_output=True, text=True)
    assert done.returncode == 2 and "at least 2 reviewed scans" in done.stderr
    with Project.open(project):  # someone holds it and did not ask for --no-promote
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    assert done.returncode == 2 and "pid" in done.stderr
    empty = make_project(tmp_path / "empty.zarr", "bright_blob", reviewed=0)
    done = subprocess.run(
        [sys.executable, "-m", "propl", "train", "--project", str(empty)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "no accepted or corrected scans" in done.stderr
