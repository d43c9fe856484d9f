"""Does the click tool learn a new structure from the annotator's corrections?

    python benchmarks/refine_retrain.py [--data NERVE] [--labelled 10 30] [--seeds 0 1 2]
                                        [--limit 24] [--threads 2]
                                        [--no-zoom --out benchmarks/results/refine-retrain-no-zoom]

Project retraining tunes the click refinement head on the confirmed corrections after the rest
of the model has trained (:func:`propl.train.refine.tune_on_corrections`, kept only if the
held-back corrections click no worse). This measures what that gives on a structure the
shipped model never saw: for each N of ``--labelled`` and S of ``--seeds``, the model that
learnt the nerve from N scans (``propl train --data NERVE --tasks brachial_plexus --labelled N
--init shipped --seed S``, trained here into ``runs/refine-retrain/`` when it is not there yet;
the runs of ``benchmarks/new_task_nerve.py`` are the same) gets its head tuned on those N
scans, held-back judged on ``--held-back`` scans of the run's validation part (scans it never
trained on, as a project holds back a part of its reviewed scans). Both heads then click on
the nerve's test scans with the simulated annotator of ``benchmarks/clicks.py``: from the new
model's pseudo-label, from an empty mask with the nerve's prompt, and from an empty mask with
no prompt (how the shipped model's head met the nerve).

Writes ``benchmarks/results/refine-retrain.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clicks import load_scans, run_set  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def train_model(data: Path, task: str, labelled: int, seed: int, out: Path) -> Path:
    """The new-task model, trained with the plain command unless it is already there."""
    if not (out / "last" / "model.json").is_file():
        cmd = [sys.executable, "-m", "propl", "train", "--data", str(data), "--tasks", task]
        cmd += ["--labelled", str(labelled), "--init", "shipped", "--seed", str(seed)]
        subprocess.run(
            [*cmd, "--out", str(out), "--cache", str(ROOT / ".cache/arrays")], check=True
        )
    return out / "last"


def one_run(args: argparse.Namespace, labelled: int, seed: int) -> dict[str, Any]:
    """Tune one new-task model's head and click the test scans with both heads."""
    from propl.checkpoint import load_checkpoint
    from propl.data.benchmark import ArraySet, BenchmarkFolder
    from propl.inference import Predictor, resolve_model
    from propl.train.recipe import prepare_data
    from propl.train.refine import RETRAIN_STEPS, tune_on_corrections

    run = ROOT / "runs" / "refine-retrain" / f"{args.task}-{labelled}-s{seed}"
    path = train_model(args.data, args.task, labelled, seed, run)
    model = load_checkpoint(path).model.float().eval()
    # the shipped head as it is now (training the new task never touches the head, so a run
    # made before a new head was shipped carries the old one)
    shipped = load_checkpoint(resolve_model("shipped")).model.float()
    if model.refine is None or shipped.refine is None:
        raise SystemExit("the shipped model and the run need the click refinement head")
    model.refine.load_state_dict(shipped.refine.state_dict())
    folder = BenchmarkFolder(args.data)
    data = prepare_data(
        folder,
        [args.task],
        labelled,
        seed,
        int(model.config.input_size),
        cache_dir=ROOT / ".cache/arrays",
        progress=False,
        task_order=model.config.tasks,
    )
    k, v = min(args.held_back, len(data.val)), data.val
    held = ArraySet(v.images[:k], v.masks[:k], v.task_index[:k], v.ids[:k], v.orig_shapes[:k])
    tuned = copy.deepcopy(model)
    tune = tune_on_corrections(tuned, data.labelled, held, RETRAIN_STEPS, seed)
    print(f"{labelled} scans, seed {seed}: {tune}", flush=True)
    scans = load_scans(folder, args.task, args.limit)
    out: dict[str, Any] = {"labelled": labelled, "seed": seed, "scans": len(scans), "tune": tune}
    for name, net in (("shipped", model), ("tuned", tuned)):
        predictor = Predictor(net, device="cpu", uncertainty="none")
        task = args.task
        starts = {
            "pseudo-label": lambda frame, p=predictor, t=task: p.predict(frame, t).mask[0],
            "empty": lambda frame: None,
        }
        zoom = not args.no_zoom
        out[name] = run_set(predictor, scans, task, starts, [], zoom=zoom)
        no_prompt = {"empty": lambda frame: None}
        out[name]["empty, no prompt"] = run_set(predictor, scans, None, no_prompt, [], zoom=zoom)[
            "empty"
        ]
    return out


def markdown(doc: dict[str, Any]) -> str:
    runs = doc["runs"]
    lines = [
        "Clicks on a structure the shipped model never saw, before and after project "
        f"retraining tunes the click head on the corrections (`{doc['command']}`). Each run: "
        f"the shipped model after learning `{doc['task']}` from N corrected scans (`propl "
        "train --data NERVE --tasks brachial_plexus --labelled N --init shipped --seed S`); "
        f"its head tuned {runs[0]['tune']['steps']} steps on those N scans, judged on "
        f"{runs[0]['tune']['held_back_frames']} held-back scans it never trained on (kept "
        "only if they click no worse); then both heads click on the first "
        f"{runs[0]['scans']} test scans with a mask. Simulated annotator as in "
        "`benchmarks/clicks.py` (NoC: clicks to IoU 0.85 / 0.90, at most 20); "
        + (
            "clicks zoom in from the second, as in the plugin."
            if doc.get("zoom", True)
            else "every click refined on the whole frame (`--no-zoom`)."
        ),
        "",
        "| N | seed | start | NoC@85 shipped → tuned | NoC@90 | mIoU@1 | mIoU@3 | "
        "held-back click IoU | kept | tune s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        t = r["tune"]
        for start in r["shipped"]:
            a, b = r["shipped"][start], r["tuned"][start]
            lines.append(
                f"| {r['labelled']} | {r['seed']} | {start} | {a['noc85']:.2f} → "
                f"{b['noc85']:.2f} | {a['noc90']:.2f} → {b['noc90']:.2f} | "
                f"{a['miou@1']:.3f} → {b['miou@1']:.3f} | {a['miou@3']:.3f} → "
                f"{b['miou@3']:.3f} | {t['held_back_click_iou']['before']:.3f} → "
                f"{t['held_back_click_iou']['after']:.3f} | {'yes' if t['kept'] else 'no'} | "
                f"{t['seconds']:.0f} |"
            )
    lines += ["", "Mean over seeds, NoC@85 from an empty mask with the task's prompt:"]
    for n in sorted({r["labelled"] for r in runs}):
        mine = [r for r in runs if r["labelled"] == n]
        a = np.mean([r["shipped"]["empty"]["noc85"] for r in mine])
        b = np.mean([r["tuned"]["empty"]["noc85"] for r in mine])
        lines.append(f"- {n} scans ({len(mine)} seeds): {a:.2f} → **{b:.2f}**")
    lines += ["", f"{doc['seconds']:.0f} s in all, torch threads {doc['threads']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/us-new-task-dev")
    ap.add_argument("--task", default="brachial_plexus")
    ap.add_argument("--labelled", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--held-back", type=int, default=8, help="validation scans that judge")
    ap.add_argument("--limit", type=int, default=24, help="test scans with a mask")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (a shared CPU: 1)")
    ap.add_argument("--no-zoom", action="store_true", help="refine every click on the whole frame")
    ap.add_argument("--out", type=Path, default=RESULTS / "refine-retrain")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    runs = [one_run(args, n, s) for n in args.labelled for s in args.seeds]
    doc = {
        "command": " ".join(["python benchmarks/refine_retrain.py", *(argv or sys.argv[1:])]),
        "task": args.task,
        "zoom": not args.no_zoom,
        "runs": runs,
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    from propl.results import write_results

    print(write_results(args.out, doc, markdown(doc)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
