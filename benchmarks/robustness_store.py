"""Robustness of the project store: damaged folders and ``kill -9`` during writes.

Two sections of ``benchmarks/robustness.py``:

- :func:`damage_trials`: a small project (3 scans, predictions, two review revisions each for
  two of them) is copied and damaged one way at a time (a deleted, truncated or altered chunk,
  a deleted or truncated ``zarr.json``, an edited array shape, a pointer to a missing revision,
  a missing attribute), at a seeded random place. Then everything a user's commands read is
  read back: the queue, the progress, and each scan's image, prediction and review. Outcomes:
  ``ok`` (every read gave exactly the data written: the damage hit nothing in use),
  ``clean_error`` (the damaged scan raised ``DamagedError`` naming it, and the queue still
  listed every scan with the others readable), ``crash`` (any other exception, or a queue or
  progress that failed), ``lost`` (a read returned data that differs from what was written,
  without an error: wrong data read as valid).
- :func:`kill_trials`: a writer process saves reviews in a loop and is killed with SIGKILL at a
  random moment; every save it had reported must be whole and readable afterwards
  (``lost`` counts those that are not).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TASK = "fetal_head"
DAMAGES = (
    "delete_chunk",
    "truncate_chunk",
    "alter_chunk",
    "delete_meta",
    "truncate_meta",
    "edit_shape",
    "bad_pointer",
    "drop_attribute",
)


def _make_project(path: Path) -> dict[str, Any]:
    """The project every damage trial copies, and what each read must give back."""
    from propl.store import Project

    rng = np.random.default_rng(0)
    truth: dict[str, Any] = {}
    with Project.create(path) as p:
        for i in range(3):
            shape = (3, 48, 40)
            sid = p.add_scan(rng.integers(1, 255, shape, dtype=np.uint8), f"scan{i}")
            pred = (rng.random(shape) > 0.6).astype(np.uint8)
            unc = rng.random(shape).astype(np.float16)
            p.save_prediction(sid, TASK, pred, unc, np.full(3, 0.5 + i / 10), "v1")
            review = None
            if i < 2:
                p.save_review(sid, TASK, "corrected", 1 - pred)
                review = (rng.random(shape) > 0.5).astype(np.uint8)
                p.save_review(sid, TASK, "corrected", review)
            truth[sid] = {
                "image": p.image(sid),
                "pred": pred,
                "unc": unc,
                "review": review,
            }
    return truth


def _files(root: Path, kind: str) -> list[Path]:
    files = [p for p in root.rglob("*") if p.is_file() and ".lock" not in p.name]
    if kind == "chunk":
        return sorted(p for p in files if "/c/" in str(p))
    return sorted(p for p in files if p.name == "zarr.json" and p.parent != root)


def _damage(root: Path, damage: str, rnd: random.Random) -> str:
    """Damage ``root`` one way; returns the file damaged (relative)."""
    if damage in ("delete_chunk", "truncate_chunk", "alter_chunk"):
        target = rnd.choice(_files(root, "chunk"))
        data = target.read_bytes()
        if damage == "delete_chunk":
            target.unlink()
        elif damage == "truncate_chunk":
            target.write_bytes(data[: rnd.randrange(max(1, len(data)))])
        else:  # a valid chunk of another frame: only a checksum can tell
            others = [p for p in _files(root, "chunk") if p.parent == target.parent]
            source = rnd.choice(others)
            target.write_bytes(source.read_bytes() if source != target else data[::-1])
    elif damage in ("delete_meta", "truncate_meta", "drop_attribute"):
        target = rnd.choice(_files(root, "meta"))
        text = target.read_text()
        if damage == "delete_meta":
            target.unlink()
        elif damage == "truncate_meta":
            target.write_text(text[: rnd.randrange(max(1, len(text)))])
        else:
            doc = json.loads(text)
            attrs = doc.get("attributes") or {}
            if attrs:
                del attrs[rnd.choice(sorted(attrs))]
            target.write_text(json.dumps(doc))
    elif damage == "edit_shape":
        arrays = [p for p in _files(root, "meta") if '"node_type": "array"' in p.read_text()]
        target = rnd.choice(arrays)
        doc = json.loads(target.read_text())
        doc["shape"][-1] = max(1, doc["shape"][-1] // 2)
        target.write_text(json.dumps(doc))
    else:  # bad_pointer
        target = rnd.choice([p for p in _files(root, "meta") if '"current"' in p.read_text()])
        doc = json.loads(target.read_text())
        doc["attributes"]["current"] = "r000099"
        target.write_text(json.dumps(doc))
    return str(target.relative_to(root))


def _read_back(root: Path, truth: dict[str, Any]) -> tuple[str, str]:
    """(outcome, detail) of reading a damaged copy back as the commands do."""
    from propl.store import DamagedError, Project

    wrong, damaged = [], set()
    try:
        with Project.open(root, read_only=True) as p:
            queue = p.queue(TASK, include_reviewed=True)
            p.progress(TASK)
            if sorted(q.scan_id for q in queue) != sorted(truth):
                return "crash", f"the queue lists {len(queue)} of {len(truth)} scans"
            for sid, want in truth.items():
                try:
                    got = {
                        "image": p.image(sid),
                        "pred": p.prediction(sid, TASK),
                        "review": p.review(sid, TASK),
                    }
                except DamagedError as exc:
                    if exc.scan_id != sid or sid not in str(exc):
                        return "crash", f"damage not named: {exc}"
                    damaged.add(sid)
                    continue
                if not np.array_equal(got["image"], want["image"]):
                    wrong.append(f"{sid} image")
                pred = got["pred"]
                if pred is None or not np.array_equal(pred.mask, want["pred"]):
                    wrong.append(f"{sid} prediction")
                elif not np.array_equal(pred.uncertainty, want["unc"]):
                    wrong.append(f"{sid} uncertainty")
                review = got["review"]
                if want["review"] is None:
                    if review is not None:
                        wrong.append(f"{sid} review appeared")
                elif review is None or not np.array_equal(review.mask, want["review"]):
                    wrong.append(f"{sid} review")
    except Exception as exc:  # noqa: BLE001 - anything else is what this benchmark counts
        return "crash", f"{type(exc).__name__}: {exc}"
    if wrong:
        return "lost", "; ".join(wrong)
    return ("clean_error" if damaged else "ok"), ", ".join(sorted(damaged))


def damage_trials(n: int, seed: int, workdir: Path) -> dict[str, Any]:
    """``n`` trials per kind of damage; see the module docstring for the outcomes."""
    workdir.mkdir(parents=True, exist_ok=True)
    original = workdir / "original.zarr"
    truth = _make_project(original)
    rnd = random.Random(seed)
    by_kind: dict[str, Any] = {}
    problems = []
    for damage in DAMAGES:
        counts = {"tried": 0, "ok": 0, "clean_error": 0, "crash": 0, "lost": 0}
        for i in range(n):
            copy = workdir / f"{damage}-{i}.zarr"
            shutil.copytree(original, copy)
            file = _damage(copy, damage, rnd)
            outcome, detail = _read_back(copy, truth)
            counts["tried"] += 1
            counts[outcome] += 1
            if outcome in ("crash", "lost"):
                problems.append(
                    {"damage": damage, "file": file, "outcome": outcome, "detail": detail}
                )
            shutil.rmtree(copy)
        by_kind[damage] = counts
    return {"by_kind": by_kind, "problems": problems}


_WRITER = """
import hashlib, sys, numpy as np
from propl.store import Project
path, seed = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(seed)
with Project.open(path) as p:
    ids = p.scan_ids()
    while True:
        sid = ids[int(rng.integers(len(ids)))]
        mask = (rng.random((4, 64, 64)) > 0.5).astype(np.uint8)
        review = p.save_review(sid, "fetal_head", "corrected", mask)
        # one write per report: print's pieces, unbuffered, go one by one (a kill between
        # them would leave half a line)
        sys.stdout.write(f"{sid} {review.revision} {hashlib.sha256(mask.tobytes()).hexdigest()}\\n")
        sys.stdout.flush()
"""


def kill_trials(n: int, seed: int, workdir: Path) -> dict[str, Any]:
    """``n`` SIGKILLs of a writer at random moments; every reported save must survive."""
    import hashlib

    from propl.store import Project

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "kill.zarr"
    with Project.create(path) as p:
        for i in range(3):
            p.add_scan(np.full((4, 64, 64), i + 1, np.uint8), f"s{i}")
    rnd = random.Random(seed)
    saved: dict[tuple[str, str], str] = {}
    counts = {"tried": 0, "ok": 0, "crash": 0, "lost": 0, "saves": 0}
    for trial in range(n):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(trial)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        time.sleep(rnd.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
        for line in (first + rest).splitlines():
            sid, revision, digest = line.split()
            saved[(sid, revision)] = digest
        counts["tried"] += 1
        lost = 0
        try:
            with Project.open(path) as p:  # for writing: cleans what the killed writer left
                for (sid, revision), digest in saved.items():
                    import zarr

                    slot = path / "scans" / sid / "labels" / TASK / revision
                    mask = np.asarray(zarr.open_group(slot, mode="r")["mask"][:])
                    lost += hashlib.sha256(mask.tobytes()).hexdigest() != digest
                for sid in p.scan_ids():
                    p.review(sid, TASK)  # the current revision reads and verifies
        except Exception:  # noqa: BLE001
            counts["crash"] += 1
            continue
        counts["lost"] += lost
        counts["ok"] += lost == 0
    counts["saves"] = len(saved)
    return {"by_kind": {"kill -9 while saving": counts}}
