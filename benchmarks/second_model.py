"""Second model: does a second, independently trained network see the errors the shipped one
cannot see in itself?

    benchmarks/second_model.sh [DATA]    (trains the second model, ~20 min on a 2-core CPU)
    python benchmarks/second_model.py --second runs/second-model/best [--data DATA]

Two networks trained on the same scans from different seeds (a deep ensemble of two) disagree
where the data leave the answer open; their disagreement is the usual stronger rival to one
network's self-agreement as a per-scan confidence. The second model is trained like the shipped
one (``benchmarks/shipped_model.sh``: full supervision, 192², 3,000 steps) from seed 1. On the
first frame of every test scan it scores, per task:

- the true Dice of each model's mask (decoder 2, at the scan's size) and the two masks' Dice
  with each other;
- Spearman ρ of the shipped model's Dice with the second's: do both find the same scans hard?
- Spearman ρ with the shipped model's true Dice (target >= 0.7 per task, 95 % bootstrap
  intervals) of: the confidence shown (``shown``: confidence_score(p2, p2) times the shape
  factor), and the same expected Dice of the shipped probabilities against the second model's
  (``second``), against the two models' mean (``pair_mean``), and the two masks' Dice
  (``mask_agreement``), each times the shape factor.

Both models were trained on every train scan, so there is no train-subset check here. Writes
``benchmarks/results/second-model.json`` and ``second-model.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMAND = "benchmarks/second_model.sh"
TARGET = 0.7
#: signal -> what it is
SIGNALS: dict[str, str] = {
    "shown": "the confidence shown: confidence_score(p2, p2) x the mask's shape factor",
    "second": "confidence_score(p2, the second model's p2) x the shape factor",
    "pair_mean": "confidence_score(p2, the mean of both models' p2) x the shape factor",
    "mask_agreement": "the Dice of the two models' masks x the shape factor",
}

sys.path.insert(0, str(Path(__file__).parent))
from confidence_signals import interval, spearman  # noqa: E402  (benchmarks/confidence_signals.py)


def signals(p_first: Any, p_second: Any, mask_dice: float, factor: float) -> dict[str, float]:
    """Every signal of one frame from the two models' probabilities at the decoders' scale
    (tensors ``(1, 1, h, w)``), their masks' Dice at the scan's size and the shape factor."""
    from propl.uncertainty import confidence_score

    def expected(belief: Any) -> float:
        return float(confidence_score(p_first, belief)[0]) * factor

    return {
        "shown": expected(p_first),
        "second": expected(p_second),
        "pair_mean": expected((p_first + p_second) / 2),
        "mask_agreement": mask_dice * factor,
    }


def score_scans(first: Any, second: Any, task: str, samples: list[Any]) -> list[dict[str, float]]:
    """Both models' Dice, their masks' agreement and every signal, per scan's first frame."""
    import torch
    import torch.nn.functional as F

    from propl.data.readers import read_mask, read_scan
    from propl.inference import frames_to_float
    from propl.metrics import dice

    def probabilities(predictor: Any, x: Any) -> Any:
        with torch.inference_mode():
            feats, t = predictor.encode(x, predictor.model.task_index(task))
            return predictor._forward(feats, t)[0]

    rows = []
    for s in samples:
        frames, _ = read_scan(s.image)
        truth = read_mask(s.mask) > 0
        x = torch.from_numpy(frames_to_float(frames[:1]))
        size = tuple(x.shape[1:])
        p1, p2 = probabilities(first, x), probabilities(second, x)
        m1, m2 = (
            (F.interpolate(p, size=size, mode="bilinear", align_corners=False) > 0.5).numpy()[0, 0]
            for p in (p1, p2)
        )
        fit = None if first.task_shape is None else first.task_shape.factor(m1, task)
        factor = 1.0 if fit is None else float(fit[0])
        agreement = dice(m1.astype(np.uint8), m2)
        rows.append(
            {
                "dice": dice(m1.astype(np.uint8), truth),
                "second_dice": dice(m2.astype(np.uint8), truth),
                "agreement": agreement,
                **signals(p1, p2, agreement, factor),
            }
        )
    return rows


def summarise(rows: list[dict[str, float]]) -> dict[str, Any]:
    """A task's Dice of both models, their agreement, ρ between their Dice, and each signal's ρ
    with the shipped model's Dice (with its bootstrap interval)."""
    dices = np.array([r["dice"] for r in rows])
    return {
        "scans": len(rows),
        "mean_dice": round(100 * float(dices.mean()), 2),
        "second_mean_dice": round(100 * float(np.mean([r["second_dice"] for r in rows])), 2),
        "mean_agreement": round(100 * float(np.mean([r["agreement"] for r in rows])), 2),
        "dice_spearman": round(spearman(list(dices), [r["second_dice"] for r in rows]), 4),
        "spearman": {k: round(spearman([r[k] for r in rows], list(dices)), 4) for k in SIGNALS},
        "interval": {k: interval([r[k] for r in rows], dices) for k in SIGNALS},
    }


def reading(doc: dict[str, Any]) -> str:
    """What the numbers say, worded from them."""
    tasks = doc["tasks"]
    worst = min(tasks, key=lambda t: tasks[t]["spearman"]["shown"])
    w = tasks[worst]
    lifted = [t for t in tasks if tasks[t]["spearman"]["pair_mean"] > tasks[t]["spearman"]["shown"]]
    lowered = [t for t in tasks if t not in lifted]
    return (
        f"**Reading.** The task the confidence shown ranks worst is {worst} "
        f"(ρ {w['spearman']['shown']:.2f}). There the two models agree with each other at Dice "
        f"{w['mean_agreement']:.1f} but with the expert at {w['mean_dice']:.1f} and "
        f"{w['second_mean_dice']:.1f}, and rank the scans by their Dice alike "
        f"(ρ {w['dice_spearman']:.2f}): both find the same scans hard and draw them the same "
        f"way, so their disagreement ranks them at {w['spearman']['pair_mean']:.2f} (pair mean) "
        f"and {w['spearman']['mask_agreement']:.2f} (mask agreement). "
        f"The pair mean ranks better than the confidence shown on "
        f"{', '.join(lifted) or 'no task'} and worse on {', '.join(lowered) or 'no task'}."
    )


def table(doc: dict[str, Any]) -> str:
    tasks = doc["tasks"]
    names = list(tasks)
    lines = [
        "Second model: does a second, independently trained network see the shipped model's "
        "errors?",
        "",
        f"`{doc['command']}`: the shipped model and a second one trained like it from "
        "seed 1, on the first frame of every test scan. Spearman ρ with the shipped model's "
        f"true Dice (target >= {doc['target']}); 95 % bootstrap interval in brackets.",
        "",
        "| task | scans | Dice shipped / second | agreement | ρ of the two Dice | "
        + " | ".join(SIGNALS)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(SIGNALS),
    ]
    for t in names:
        s = tasks[t]
        cells = [
            f"{s['spearman'][k]:.2f} ({s['interval'][k][0]:.2f}-{s['interval'][k][1]:.2f})"
            for k in SIGNALS
        ]
        lines.append(
            f"| {t} | {s['scans']} | {s['mean_dice']:.1f} / {s['second_mean_dice']:.1f} | "
            f"{s['mean_agreement']:.1f} | {s['dice_spearman']:.2f} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Signals: " + "; ".join(f"{k}: {w}" for k, w in SIGNALS.items()) + ".",
        "",
        reading(doc),
        "",
        f"{doc['seconds']:.0f} s on the CPU (scoring; training the second model is apart).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/us-universal")
    ap.add_argument("--second", type=Path, required=True, help="the second model's folder")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--out", type=Path, default=RESULTS / "second-model.json")
    args = ap.parse_args(argv)

    import torch

    from propl.data.benchmark import BenchmarkFolder
    from propl.inference import Predictor, resolve_model
    from propl.results import provenance, write_results

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    first = Predictor.from_checkpoint(resolve_model(None), device="cpu")
    second = Predictor.from_checkpoint(args.second, device="cpu")
    folder = BenchmarkFolder(args.data)
    tasks = [t for t in folder.task_ids() if t in first.tasks and t in second.tasks]
    doc: dict[str, Any] = {"command": COMMAND, "target": TARGET, "tasks": {}}
    for task in tasks:
        rows = score_scans(first, second, task, folder.samples(task, "test"))
        doc["tasks"][task] = summarise(rows)
        print(task, doc["tasks"][task]["spearman"], flush=True)
    doc["signals"] = SIGNALS
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    doc["provenance"] = provenance()
    print(write_results(args.out.with_suffix(""), doc, table(doc)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
