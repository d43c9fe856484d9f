"""How long one retraining round of a project takes on this machine, and whether it promotes.

    python benchmarks/retrain.py [--data DATA] [--task thyroid_nodule] [--reviewed 50]
        [--unreviewed 100] [--repeats 1] [--train-args="--steps 100"]

Builds a fresh project for one task from the task's train split (a seeded choice of scans):
``--reviewed`` scans get a "corrected" review with the ground-truth mask (what an annotator's
correction stores), ``--unreviewed`` scans get nothing (the unlabelled pool). Then runs the
command the plugin runs, ``python -m propl train --project P --json --tasks TASK`` (default
retraining settings unless ``--train-args``), as a subprocess and timestamps its JSON lines.
Finally scores the shipped model and the new version (promoted or not) on the first
``--test-scans`` scans (sorted by id) of the task's test split, as ``propl evaluate`` does.

Each repeat builds a new project from the same scans; the time to build it is reported but is
not part of the round. Writes ``benchmarks/results/retrain.json`` and ``retrain.md``.

``--pool train`` (default): the project's scans come from the train split. The shipped model
was trained on the whole train split, so it has seen them: the numbers show that a round works
end to end and what the promotion gate does when there is little to gain, not what retraining
gains on new data. ``--pool test``: the project's scans are test scans *after* the first
``--test-scans`` (which are only scored): scans the shipped model has never seen, as a user's
own scans would be. Nothing is chosen on them; they are the annotator's corrections.

Forgetting: the other tasks' test Dice (first ``--other-scans`` test scans of each) for the
shipped model and the new version, since a round that learns one task moves the shared decoders.
Target: a round with <= 50 reviewed scans reaches a promoted model in <= 3 minutes (2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "retrain.json"
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "us-universal"
TARGET_SECONDS = 180.0

# Wall time between two JSON lines is charged to the kind of the later line.
PHASES = {
    "prepare": "start-up and reading the project (python, torch, model, scans to arrays)",
    "start": "trainer set-up and judging the baseline (shipped model) on the held-back scans",
    "step": "optimiser steps",
    "eval": "held-back validation during training (every eval_every steps)",
    "done": "end of training",
    "version": "saving the fp16 version and judging it on the held-back scans",
    "promotion": "promotion (moving the project's current pointer)",
    "exit": "process exit",
}


def build_project(
    path: Path,
    data: Path,
    task: str,
    n_reviewed: int,
    n_unreviewed: int,
    seed: int,
    pool: str = "train",
    skip: int = 0,
) -> dict[str, Any]:
    """Import a seeded choice of the pool's scans; review the first ``n_reviewed``. The
    ``test`` pool leaves out the first ``skip`` test scans (sorted by id): they are scored."""
    from propl.data.benchmark import BenchmarkFolder
    from propl.data.readers import read_mask
    from propl.store import Project

    samples = sorted(BenchmarkFolder(data).samples(task, pool), key=lambda s: s.id)
    if pool == "test":
        samples = samples[skip:]
    wanted = n_reviewed + n_unreviewed
    if wanted > len(samples):
        raise SystemExit(f"{task} has {len(samples)} {pool} scans to use; {wanted} were asked")
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(samples))
    chosen = [samples[i] for i in order[:wanted]]
    t0 = time.perf_counter()
    with Project.create(path) as project:
        for i, sample in enumerate(chosen):
            scan_id = project.add_file(sample.image)
            if i < n_reviewed:
                mask = read_mask(sample.mask)[None]  # the scan is one frame: (1, H, W)
                project.save_review(scan_id, task, "corrected", mask, author="benchmark")
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "reviewed": [s.id for s in chosen[:n_reviewed]],
        "unreviewed": [s.id for s in chosen[n_reviewed:]],
    }


def run_round(project: Path, task: str, train_args: list[str]) -> dict[str, Any]:
    """Run ``propl train --project`` as the plugin does and time its JSON lines."""
    command = [sys.executable, "-m", "propl", "train", "--project", str(project), "--json"]
    command += ["--tasks", task, *train_args]
    phases = dict.fromkeys(PHASES, 0.0)
    at: dict[str, float] = {}  # seconds from launch to the first line of each kind
    events: list[dict[str, Any]] = []  # every line but the steps
    last: dict[str, Any] = {}
    steps = 0
    t0 = time.perf_counter()
    prev = 0.0
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            t = time.perf_counter() - t0
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = str(event.get("kind"))
            phases[kind] = phases.get(kind, 0.0) + t - prev
            prev = t
            at.setdefault(kind, t)
            last[kind] = event
            if kind == "step":
                steps += 1
                at["last_step"] = t
            else:
                events.append({"t": round(t, 2), **event})
        rc = proc.wait()
    total = time.perf_counter() - t0
    phases["exit"] = total - prev
    version = last.get("version", {}).get("data", {})
    promotion = last.get("promotion", {})
    step_data = last.get("step", {}).get("data", {})
    promoted = bool(promotion.get("promoted", False))
    return {
        "command": shlex.join(["python", *command[1:]]),
        "returncode": rc,
        "seconds": round(total, 2),
        "to": {k: round(v, 2) for k, v in at.items()},
        "phases": {k: round(v, 2) for k, v in phases.items()},
        "steps": steps,
        "steps_per_s": round(steps / phases["step"], 3) if phases["step"] > 0 else None,
        "img_per_s": step_data.get("img_per_s"),
        "prepare": last.get("prepare", {}).get("data", {}),
        "version": version.get("version"),
        "outcome": version.get("outcome", "error" if rc else "cancelled"),
        "held_back_dice": version.get("score"),
        "held_back_dice_baseline": version.get("baseline_score"),
        "gain_lower_bound": version.get("gain_lower_bound"),
        "message": version.get("message", ""),
        "baseline": version.get("baseline"),
        "promoted": promoted,
        "seconds_to_promoted": round(at["promotion"], 2) if promoted else None,
        "events": events,
    }


def other_tasks(
    model: Path, data: Path, task: str, n_scans: int, split: str = "test"
) -> dict[str, float]:
    """Dice of the tasks other than ``task`` (first ``n_scans`` of each): forgetting."""
    from propl.data.benchmark import BenchmarkFolder

    others = [t for t in BenchmarkFolder(data).task_ids() if t != task]
    return {t: test_dice(model, data, t, n_scans, split)["dice"] for t in others}


def test_dice(
    model: Path, data: Path, task: str, n_scans: int, split: str = "test"
) -> dict[str, Any]:
    """Dice of a checkpoint on the first ``n_scans`` scans of a split (all if 0)."""
    from propl.data.benchmark import FirstScans
    from propl.evaluate import evaluate_folder
    from propl.inference import Predictor

    t0 = time.perf_counter()
    predictor = Predictor.from_checkpoint(model, uncertainty="none")
    result = evaluate_folder(predictor, FirstScans(data, n_scans), split, [task])
    row = result["per_task"][task]
    return {
        "model": predictor.version,
        "dice": row["dice"],
        "iou": row["iou"],
        "hd95": row["hd95"],
        "n": row["n"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(statistics.median(kept), 2) if kept else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seconds": _median([r["seconds"] for r in runs]),
        "seconds_to_promoted": _median([r["seconds_to_promoted"] for r in runs]),
        "phases": {k: _median([r["phases"].get(k) for r in runs]) for k in PHASES},
        "steps_per_s": _median([r["steps_per_s"] for r in runs]),
        "promoted": sum(r["promoted"] for r in runs),
        "repeats": len(runs),
        "held_back_dice": _median([r["held_back_dice"] for r in runs]),
        "held_back_dice_baseline": _median([r["held_back_dice_baseline"] for r in runs]),
        "test_dice": _median([(r.get("test") or {}).get("dice") for r in runs]),
        "other_tasks": {
            t: _median([r["other_tasks"].get(t) for r in runs if r.get("other_tasks")])
            for t in (runs[0].get("other_tasks") or {})
        },
    }


def _num(v: float | None, fmt: str = ".1f") -> str:
    return "n/a" if v is None else format(v, fmt)


def table(doc: dict[str, Any]) -> str:
    s, m = doc["settings"], doc["machine"]
    shipped = doc["test_shipped"]
    lines = [
        f"One retraining round, task `{s['task']}`: {s['reviewed']} reviewed + "
        f"{s['unreviewed']} unreviewed scans, `{s['train_command']}`; "
        f"{m['cpus_usable']} CPUs, {m['torch_threads']} torch threads, torch {m['torch']}. "
        f"Test Dice on the first {shipped['n']} test scans (shipped model: "
        f"{_num(shipped['dice'], '.2f')}).",
        "",
        "| repeat | to prepare s | set-up + baseline judge s | steps s (steps/s) | evals s "
        "| version s | total s | outcome | held-back Dice new / shipped (90 % bound of gain) "
        "| test Dice | promoted |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(doc["runs"], 1):
        p = r["phases"]
        test = (r.get("test") or {}).get("dice")
        lines.append(
            f"| {i} | {_num(p['prepare'])} | {_num(p['start'])} | {_num(p['step'])} "
            f"({_num(r['steps_per_s'], '.2f')}) | {_num(p['eval'])} | {_num(p['version'])} "
            f"| **{_num(r['seconds'])}** | {r['outcome']} | {_num(r['held_back_dice'], '.2f')} / "
            f"{_num(r['held_back_dice_baseline'], '.2f')} "
            f"({_num(r.get('gain_lower_bound'), '+.1f')}) | {_num(test, '.2f')} "
            f"| {'yes' if r['promoted'] else 'no'} |"
        )
    med = doc["median"]
    pool = (
        "The shipped model was trained on the whole train split, so it has seen these scans: "
        "the Dice columns show the round works, not what retraining gains on new data."
        if s.get("pool", "train") == "train"
        else f"The project's scans are test scans after the first {shipped['n']} (never seen "
        "by the shipped model, never scored); the test Dice is on the first ones."
    )
    lines += [
        "",
        f"Median round {_num(med['seconds'])} s (target <= {TARGET_SECONDS:.0f} s to a promoted "
        f"model); promoted in {med['promoted']} of {med['repeats']}. Phases: wall time between "
        f"the command's JSON lines (see `phases` in the JSON). {pool}",
    ]
    others = doc.get("other_tasks_shipped") or {}
    if others and med.get("other_tasks"):
        lines += [
            "",
            f"Other tasks (forgetting), Dice on the first {s['other_scans']} "
            f"{s.get('other_split', 'test')} scans of each:",
            "",
            "| task | shipped | new version | change |",
            "|---|---|---|---|",
        ]
        for t, before in others.items():
            after = med["other_tasks"].get(t)
            change = None if after is None else after - before
            lines.append(
                f"| {t} | {_num(before, '.2f')} | {_num(after, '.2f')} | {_num(change, '+.2f')} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="us-universal folder")
    parser.add_argument("--task", default="thyroid_nodule")
    parser.add_argument("--reviewed", type=int, default=50, help="scans with a correction")
    parser.add_argument("--unreviewed", type=int, default=100, help="scans without a review")
    parser.add_argument("--seed", type=int, default=0, help="which train scans are imported")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--train-args",
        default="",
        help='extra arguments for propl train, e.g. --train-args="--steps 100"',
    )
    parser.add_argument("--test-scans", type=int, default=60, help="first N test scans; 0: all")
    parser.add_argument(
        "--pool",
        choices=("train", "test"),
        default="train",
        help="where the project's scans come from (test: after the first --test-scans)",
    )
    parser.add_argument(
        "--other-scans", type=int, default=30, help="other tasks' scans scored; 0: skip"
    )
    parser.add_argument(
        "--other-split",
        choices=("test", "train"),
        default="test",
        help="split of the other tasks' scans (train: for choosing settings; then no test "
        "scan is scored at all)",
    )
    parser.add_argument("--workdir", type=Path, help="keep the projects here (default: temp)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON (the .md goes beside)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    from propl.inference import resolve_model
    from propl.results import provenance, write_json
    from propl.store import Project

    train_args = shlex.split(args.train_args)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="propl-retrain-"))
    workdir.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    try:
        for i in range(args.repeats):
            path = workdir / f"repeat-{i + 1}.zarr"
            shutil.rmtree(path, ignore_errors=True)
            built = build_project(
                path,
                args.data,
                args.task,
                args.reviewed,
                args.unreviewed,
                args.seed,
                args.pool,
                args.test_scans,
            )
            run = run_round(path, args.task, train_args)
            run["build_seconds"] = built["seconds"]
            if run["version"] is not None and run["outcome"] != "failed":
                with Project.open(path, read_only=True) as project:
                    model = project.version(run["version"]).path
                if args.other_split == "test":  # choosing settings: no test scan is scored
                    run["test"] = test_dice(model, args.data, args.task, args.test_scans)
                if args.other_scans:
                    run["other_tasks"] = other_tasks(
                        model, args.data, args.task, args.other_scans, args.other_split
                    )
            runs.append(run)
            print(
                f"repeat {i + 1}: {run['seconds']:.1f} s, {run['outcome']}, "
                f"promoted={run['promoted']}",
                file=sys.stderr,
            )
        shipped = (
            test_dice(resolve_model(None), args.data, args.task, args.test_scans)
            if args.other_split == "test"
            else {"dice": None, "n": 0}
        )
        others_shipped = (
            other_tasks(
                resolve_model(None), args.data, args.task, args.other_scans, args.other_split
            )
            if args.other_scans
            else {}
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    command = ["python", "benchmarks/retrain.py", *sys.argv[1:]]
    doc = {
        "benchmark": "one retraining round of a project (propl train --project, as the plugin)",
        "command": shlex.join(command),
        "settings": {
            "task": args.task,
            "reviewed": args.reviewed,
            "unreviewed": args.unreviewed,
            "seed": args.seed,
            "repeats": args.repeats,
            "train_args": train_args,
            "train_command": shlex.join(
                ["propl", "train", "--project", "P", "--json", "--tasks", args.task, *train_args]
            ),
            "test_scans": args.test_scans,
            "pool": args.pool,
            "other_scans": args.other_scans,
            "other_split": args.other_split,
            "data": args.data.name,
            "review": "corrected, with the ground-truth mask",
        },
        "machine": provenance(),
        "target_seconds": TARGET_SECONDS,
        "phases": PHASES,
        "median": summarise(runs),
        "test_shipped": shipped,
        "other_tasks_shipped": others_shipped,
        "runs": runs,
        "build": {"scans": built["reviewed"] + built["unreviewed"], "reviewed": args.reviewed},
    }
    write_json(args.out, doc)
    args.out.with_suffix(".md").write_text(table(doc))
    med = doc["median"]
    print(
        f"retrain {args.task} ({args.reviewed} reviewed, {args.unreviewed} unreviewed): "
        f"median {_num(med['seconds'])} s (prepare {_num(med['phases']['prepare'])}, "
        f"steps {_num(med['phases']['step'])} at {_num(med['steps_per_s'], '.2f')}/s, "
        f"evals {_num(med['phases']['eval'])}, version {_num(med['phases']['version'])}); "
        f"promoted {med['promoted']}/{med['repeats']}; held-back Dice "
        f"{_num(med['held_back_dice'], '.2f')} vs {_num(med['held_back_dice_baseline'], '.2f')}; "
        f"test Dice {_num(med['test_dice'], '.2f')} vs {_num(shipped['dice'], '.2f')} (shipped)"
    )


if __name__ == "__main__":
    main()
