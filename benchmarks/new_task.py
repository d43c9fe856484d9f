"""An unseen task learnt from 10 labelled scans, from the command line, and what the other
tasks lose meanwhile.

    python benchmarks/new_task.py [--data DATA] [--task fetal_head] [--labelled 10]
        [--base-steps 1500] [--steps 300]

Every us-universal task is in the shipped model, so a truly unseen task needs a model that
never saw it. The script runs four real ``propl`` commands (each is printed and timed):

1. ``propl train --data DATA --tasks <the other four> --method full ...``: a leave-one-task-out
   universal model, like the shipped one but shorter (``--base-steps``), in ``runs/loto-TASK``
   (git-ignored; skipped when it is already there). About a quarter of an hour on a 2-core CPU.
2. ``propl evaluate`` of that model on the other tasks' test split: before.
3. ``propl train --data DATA --tasks TASK --labelled 10 --init runs/loto-TASK/best ...``: the
   new task gains a prompt token; its 10 labelled train scans are the labelled set and the rest
   of its train split the unlabelled pool (ProPL, semi-supervised). The encoder is frozen and
   the shared weights are anchored to the starting model (L2-SP), as a project retrain does.
4. ``propl evaluate`` of the result on the new task's test split and on the other tasks' (after).

Both checkpoints of step 3 are scored: ``best`` (chosen on a validation part of the train
split, as in the SSL benchmark's protocol: it uses more labelled scans than the 10 to choose)
and ``last`` (no choice at all: what an annotator with only 10 labelled scans gets).
Writes ``benchmarks/results/new-task-TASK.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "us-universal"


def run(cmd: list[str], log: list[dict[str, Any]]) -> float:
    """Run a propl command (its own output goes to the terminal); returns its wall time."""
    shown = shlex.join(["propl", *cmd[3:]])
    print(f"\n$ {shown}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    log.append({"command": shown, "seconds": round(seconds, 1)})
    return seconds


def scores(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    return {
        t: {k: round(v, 2) for k, v in row.items() if k in ("dice", "iou", "hd95", "n")}
        for t, row in doc["per_task"].items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--task", default="fetal_head", help="the task left out, then learnt")
    parser.add_argument("--labelled", default="10")
    parser.add_argument("--base-steps", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=300, help="steps to learn the new task")
    parser.add_argument("--lr", default="1e-3")
    parser.add_argument("--anchor", default="1.0")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--tag", default="", help="suffix for the run folder and results")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = args.data.resolve()
    tasks = list(json.loads((data / "tasks.json").read_text()))
    if args.task not in tasks:
        parser.error(f"{args.task!r} is not a task of {data} ({', '.join(tasks)})")
    others = [t for t in tasks if t != args.task]
    propl = [sys.executable, "-m", "propl"]
    base = args.runs / f"loto-{args.task}"
    tag = f"-{args.tag}" if args.tag else ""
    new = args.runs / f"new-{args.task}{tag}"
    out = args.out or ROOT / "benchmarks" / "results" / f"new-task-{args.task}{tag}.json"
    log: list[dict[str, Any]] = []

    if not (base / "best" / "model.safetensors").is_file():
        run(
            [*propl, "train", "--data", str(data), "--tasks", *others, "--method", "full",
             "--size", "192", "--steps", str(args.base_steps), "--batch-size", "8",
             "--eval-every", "250", "--seed", "0", "--cache", ".cache/arrays", "--out", str(base)],
            log,
        )  # fmt: skip
    else:
        print(f"{base}/best exists: the leave-one-task-out model is reused")
        log.append({"command": f"(step 1 skipped: {base.relative_to(ROOT)}/best reused)"})
    meta = json.loads((base / "best" / "model.json").read_text()).get("metadata", {})
    base_val = {"step": meta.get("step"), "val_mdice": meta.get("val", {}).get("mdice")}
    before = new / "before.json"
    new.mkdir(parents=True, exist_ok=True)
    run([*propl, "evaluate", "--data", str(data), "--tasks", *others, "--model",
         str(base / "best"), "--out", str(before)], log)  # fmt: skip
    train_seconds = run(
        [*propl, "train", "--data", str(data), "--tasks", args.task, "--labelled",
         args.labelled, "--init", str(base / "best"), "--method", "propl", "--freeze-encoder",
         "--anchor", args.anchor, "--lr", args.lr, "--steps", str(args.steps), "--batch-size",
         "8", "--eval-every", "50", "--seed", "0", "--cache", ".cache/arrays", "--out",
         str(new / "run")],
        log,
    )  # fmt: skip
    result: dict[str, Any] = {}
    for which in ("best", "last"):
        path = new / f"{which}.json"
        run([*propl, "evaluate", "--data", str(data), "--tasks", args.task, *others,
             "--model", str(new / "run" / which), "--out", str(path)], log)  # fmt: skip
        result[which] = scores(path)
    before_scores = scores(before)
    doc = {
        "benchmark": "an unseen task from a few labelled scans (propl train --init), and the "
        "other tasks' test Dice before and after",
        "command": shlex.join(["python", "benchmarks/new_task.py", *sys.argv[1:]]),
        "task": args.task,
        "labelled": args.labelled,
        "settings": {
            "base": f"full supervision on {', '.join(others)}, 192 px, {args.base_steps} steps",
            "new_task": f"propl, frozen encoder, anchor {args.anchor}, lr {args.lr}, "
            f"{args.steps} steps, batch 8",
        },
        "machine": {
            "cpu_count": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },  # fmt: skip
        "base_checkpoint": base_val,
        "train_seconds": round(train_seconds, 1),
        "new_task": {which: result[which][args.task] for which in result},
        "other_tasks": {
            t: {
                "before": before_scores[t]["dice"],
                **{which: result[which][t]["dice"] for which in result},
            }
            for t in others
        },
        "commands": log,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


def markdown(doc: dict[str, Any]) -> str:
    task = doc["task"]
    lines = [
        f"Unseen task `{task}` from {doc['labelled']} labelled train scans (`{doc['command']}`). "
        f"Start: {doc['settings']['base']}. New task: {doc['settings']['new_task']}; trained in "
        f"{doc['train_seconds']:.0f} s. Test split, Dice / IoU / HD95 (px).",
        "",
        "| checkpoint | Dice | IoU | HD95 | test scans |",
        "|---|---|---|---|---|",
    ]
    for which, row in doc["new_task"].items():
        lines.append(f"| {which} | {row['dice']:.2f} | {row['iou']:.2f} | {row['hd95']:.2f} "
                     f"| {row.get('n', '')} |")  # fmt: skip
    lines += [
        "",
        "`best`: chosen on a validation part of the train split (more labels than the "
        f"{doc['labelled']}); `last`: the final weights, no choice.",
        "",
        "Other tasks (forgetting), test Dice:",
        "",
        "| task | before | after (best) | after (last) |",
        "|---|---|---|---|",
    ]
    for t, row in doc["other_tasks"].items():
        lines.append(f"| {t} | {row['before']:.2f} | {row['best']:.2f} | {row['last']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
