"""The plain command a user types to teach a model a structure it has never seen.

    python benchmarks/new_task_nerve.py [--data ../shared/datasets/us-new-task-dev]
        [--universal ../shared/datasets/us-universal] [--labelled 10 30] [--seeds 0 1 2]
    python benchmarks/new_task_nerve.py --data ../shared/datasets/us-universal \
        --task breast_lesion --leave-out --labelled 10      # leave one task out

For each labelled count and seed it runs, exactly as a user would (printed and timed)::

    propl train --data DATA --tasks TASK --labelled N --init INIT --seed S --out ..

(``--init`` meets a task the model does not know, so the new-task recipe of
``propl.train.recipe.RECIPES`` applies), then scores the run's ``best`` and ``last``
checkpoints (decoder 2, at the model's input size) on the task's test split and the ``best``
one on the starting model's tasks' test splits (forgetting: the starting model is scored once
for the reference). INIT is the shipped model, which has never seen the development nerve; with
``--leave-out`` (a us-universal task) it is a universal model trained here on the other tasks
only (the command of ``benchmarks/new_task.py``'s first step, 1500 steps, in ``runs/loto-TASK``
unless it is there). A run whose checkpoint holds every tensor of INIT unchanged (the new task
learnt on decoders of its own) has INIT's outputs on INIT's tasks exactly, so its forgetting is
0 without scoring them again (``--score-shipped`` scores them anyway). ``--seed`` draws the
labelled scans and seeds training; the rest of the task's train split is the unlabelled pool.
Writes ``benchmarks/results/new-task-TASK.json`` (``new-task-loto-TASK.json`` with
``--leave-out``) and ``.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
TASK = "brachial_plexus"
TARGETS = {"10": 55.0, "30": 65.0, "minutes": 5.0, "forgetting": 1.0}


def run(cmd: list[str], log: list[dict[str, Any]]) -> float:
    """Run a propl command (its output goes to the terminal); returns its wall time."""
    shown = shlex.join(["propl", *cmd[3:]])
    print(f"\n$ {shown}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    log.append({"command": shown, "seconds": round(seconds, 1)})
    return seconds


def test_dice(model: str, data: Path, cache: Path) -> dict[str, float]:
    """Decoder 2's test Dice per task of ``data`` the model knows, at the model's input size
    (``propl.train.trainer.validate``: faster on a busy CPU than ``propl evaluate``, which
    scores at each scan's stored resolution)."""
    import torch

    from propl.checkpoint import load_checkpoint
    from propl.data.benchmark import BenchmarkFolder, load_arrays
    from propl.inference import resolve_model
    from propl.train.trainer import validate

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))
    net = load_checkpoint(resolve_model(model)).model
    folder = BenchmarkFolder(data)
    tasks = [t for t in json.loads((data / "tasks.json").read_text()) if t in net.config.tasks]
    samples = [s for t in tasks for s in folder.samples(t, "test")]
    size, order = int(net.config.input_size), net.config.tasks
    arrays = load_arrays(samples, size, order, cache_dir=cache, progress=False)
    per_task = validate(net, arrays, torch.device("cpu"))["per_task"]
    return {t: round(v, 2) for t, v in per_task.items()}


def weights_digest(model: str) -> str:
    """SHA-256 of the model's weights file: what a kept score belongs to."""
    from propl.inference import resolve_model

    weights = Path(resolve_model(model)) / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def evaluate(model: str, data: Path, out: Path, cache: Path) -> dict[str, float]:
    """:func:`test_dice`, kept in ``out`` with the digest of the weights it scored; reused only
    for those same weights (a run trained again into the same folder is scored again)."""
    digest = weights_digest(model)
    kept = json.loads(out.read_text()) if out.is_file() else {}
    if kept.get("weights_sha256") != digest:
        t0 = time.perf_counter()
        kept = {"weights_sha256": digest, "dice": test_dice(model, data, cache)}
        out.write_text(json.dumps(kept))
        print(f"scored {model} on {data.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return kept["dice"]


def shipped_weights_kept(model: str, init: str = "shipped") -> bool:
    """Whether every tensor of ``init`` is in ``model`` unchanged (to the bit, at ``init``'s
    precision; the prompt table may have grown by the new task's rows): then ``init``'s tasks'
    outputs are exactly ``init``'s and their forgetting is 0."""
    import torch
    from safetensors.torch import load_file

    from propl.inference import resolve_model

    shipped = load_file(Path(resolve_model(init)) / "model.safetensors")
    trained = load_file(Path(resolve_model(model)) / "model.safetensors")
    for key, value in shipped.items():
        if key not in trained:
            return False
        kept = trained[key][: value.shape[0]] if key == "prompts" else trained[key]
        if kept.shape != value.shape or not torch.equal(kept.to(value.dtype), value):
            return False
    return True


def one_run(args: argparse.Namespace, n: str, seed: int, log: list[dict[str, Any]]) -> dict:
    """Train with the plain command, then score the nerve; the shipped tasks are scored only
    where the shipped weights did not come through unchanged (or with ``--score-shipped``)."""
    run_dir = args.runs / f"{args.prefix}-{n}-s{seed}"
    cmd = [sys.executable, "-m", "propl", "train", "--data", str(args.data), "--tasks",
           args.task, "--labelled", n, "--init", args.init, "--seed", str(seed),
           "--out", str(run_dir)]  # fmt: skip
    seconds = run(cmd, log)
    best = str(run_dir / "best")
    nerve = evaluate(best, args.data, run_dir / "eval-nerve.json", args.cache)[args.task]
    # the final weights: no choice on the validation scans (their labels are more than N)
    last = str(run_dir / "last")
    nerve_last = evaluate(last, args.data, run_dir / "eval-nerve-last.json", args.cache)
    nerve_last = nerve_last[args.task]
    kept = shipped_weights_kept(best, args.init)
    scored = args.score_shipped or not kept
    shipped = (
        {
            t: d
            for t, d in evaluate(
                best, args.universal, run_dir / "eval-shipped.json", args.cache
            ).items()
            if t in args.reference
        }
        if scored
        else dict(args.reference)
    )
    return {"labelled": int(n), "seed": seed, "train_seconds": round(seconds, 1),
            "nerve_dice": nerve, "nerve_dice_last": nerve_last, "shipped_tasks": shipped,
            "shipped_weights_kept": kept, "shipped_tasks_scored": scored}  # fmt: skip


def summary(runs: list[dict], reference: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in sorted({r["labelled"] for r in runs}):
        rows = [r for r in runs if r["labelled"] == n]
        dice = [r["nerve_dice"] for r in rows]
        dice_last = [r["nerve_dice_last"] for r in rows]
        loss = [np.mean([reference[t] - r["shipped_tasks"][t] for t in reference]) for r in rows]
        worst = [max(reference[t] - r["shipped_tasks"][t] for t in reference) for r in rows]
        out[str(n)] = {
            "nerve_dice_mean": round(float(np.mean(dice)), 2),
            "nerve_dice_std": round(float(np.std(dice)), 2),
            "nerve_dice_last_mean": round(float(np.mean(dice_last)), 2),
            "nerve_dice_last_std": round(float(np.std(dice_last)), 2),
            "train_minutes_max": round(max(r["train_seconds"] for r in rows) / 60, 2),
            "shipped_loss_mean": round(float(np.mean(loss)), 2),
            "shipped_loss_worst_task": round(float(max(worst)), 2),
            "shipped_weights_kept": f"{sum(r['shipped_weights_kept'] for r in rows)}/{len(rows)}",
        }
    return out


def leave_one_out_base(args: argparse.Namespace, log: list[dict[str, Any]]) -> Path:
    """A universal model trained on --universal's tasks but TASK (``benchmarks/new_task.py``'s
    first step), trained unless it is there; returns its ``best`` checkpoint."""
    tasks = list(json.loads((args.universal / "tasks.json").read_text()))
    if args.task not in tasks:
        raise SystemExit(f"--leave-out: {args.task!r} is not a task of {args.universal}")
    base = ROOT / "runs" / f"loto-{args.task}"
    if not (base / "best" / "model.safetensors").is_file():
        others = [t for t in tasks if t != args.task]
        run([sys.executable, "-m", "propl", "train", "--data", str(args.universal), "--tasks",
             *others, "--method", "full", "--size", "192", "--steps", str(args.base_steps),
             "--batch-size", "8", "--eval-every", "250", "--seed", "0", "--cache",
             str(args.cache), "--out", str(base)], log)  # fmt: skip
    return base / "best"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATASETS / "us-new-task-dev")
    parser.add_argument("--task", default=TASK, help=f"the task to learn (default {TASK})")
    parser.add_argument(
        "--leave-out",
        action="store_true",
        help="TASK is one of --universal's: start from a model trained on the others only",
    )
    parser.add_argument("--base-steps", type=int, default=1500, help="--leave-out base steps")
    parser.add_argument("--universal", type=Path, default=DATASETS / "us-universal")
    parser.add_argument("--labelled", nargs="+", default=["10", "30"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, help="run folders (default runs/new-task-TASK)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "arrays")
    parser.add_argument(
        "--score-shipped",
        action="store_true",
        help="score the five shipped tasks after every run even when the shipped weights came "
        "through bit-identical (their outputs are then the shipped model's)",
    )
    args = parser.parse_args()
    args.data, args.universal = args.data.resolve(), args.universal.resolve()
    nerve = args.task == TASK and not args.leave_out
    args.prefix = "nerve" if nerve else args.task
    name = f"loto-{args.task}" if args.leave_out else args.task
    args.runs = args.runs or ROOT / "runs" / ("new-task-nerve" if nerve else f"new-task-{name}")
    args.runs.mkdir(parents=True, exist_ok=True)
    log: list[dict[str, Any]] = []
    args.init = "shipped"
    if args.leave_out:
        args.init = str(leave_one_out_base(args, log))
    reference = evaluate(args.init, args.universal, args.runs / "eval-shipped.json", args.cache)
    reference.pop(args.task, None)
    args.reference = reference
    runs = [one_run(args, n, s, log) for n in args.labelled for s in args.seeds]
    doc = {
        "benchmark": f"a task the {'starting' if args.leave_out else 'shipped'} model never "
        f"saw ({args.task}) from the plain command `propl train --data DATA --tasks "
        f"{args.task} --labelled N --init {'LOTO' if args.leave_out else 'shipped'}`"
        + (
            f" (LOTO: a universal model trained on the other tasks only, {args.base_steps} steps)"
            if args.leave_out
            else ""
        ),
        "task": args.task,
        "init": args.init,
        "command": shlex.join(["python", "benchmarks/new_task_nerve.py", *sys.argv[1:]]),
        "targets": TARGETS,
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },  # fmt: skip
        "shipped_model": reference,
        "summary": summary(runs, reference),
        "runs": runs,
        "commands": log,
    }
    path = args.out / f"new-task-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


def markdown(doc: dict[str, Any]) -> str:
    task = doc.get("task", TASK)
    where = "the nerve's test split (207 scans, subjects the training scans do not come from)"
    if task != TASK:
        where = f"{task}'s test split"
    lines = [
        f"`{doc['command']}`: {doc['benchmark']}. Dice on {where}, scored at the model's input "
        "size (192 px): `last` = the final weights; `best` = the checkpoint chosen on a "
        "validation part of the task's train split (a tenth of it: more labels than N, so "
        "`last` is the honest figure for a user with N). Forgetting = the starting model's "
        "test Dice minus the new model's on the starting model's tasks: 0 exactly where every "
        "weight of the starting model came through bit-identical ('weights kept').",
        "",
        f"| labelled | {task} Dice, last (mean ± std) | best | target | slowest run (min) | "
        "known tasks: mean loss | worst task loss | weights kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, row in doc["summary"].items():
        target = doc["targets"].get(n) if task == TASK else None
        lines.append(
            f"| {n} | {row['nerve_dice_last_mean']:.2f} ± {row['nerve_dice_last_std']:.2f} "
            f"| {row['nerve_dice_mean']:.2f} ± {row['nerve_dice_std']:.2f} "
            f"| {'-' if target is None else f'≥ {target:.0f}'} "
            f"| {row['train_minutes_max']:.1f} "
            f"| {row['shipped_loss_mean']:.2f} | {row['shipped_loss_worst_task']:.2f} "
            f"| {row['shipped_weights_kept']} |"
        )
    lines += [
        "",
        f"| labelled | seed | {task} Dice, last | best | train s |",
        "|---|---|---|---|---|",
    ]
    for r in doc["runs"]:
        lines.append(
            f"| {r['labelled']} | {r['seed']} | {r['nerve_dice_last']:.2f} "
            f"| {r['nerve_dice']:.2f} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
