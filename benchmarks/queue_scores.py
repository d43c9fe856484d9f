"""Which per-scan confidence puts the scans with the most to correct first in the review queue?

    python benchmarks/queue_scores.py --data DATA [--run NAME=WORKDIR ...] [--scans N]
        [--out benchmarks/results/queue-scores.json]

The review queue shows the least confident scans first, so that an annotator's corrections go
where the model is most wrong. A confidence does that job when it ranks scans by their true
Dice: this script predicts scans as the plugin does (decoder 2's mask, T = 4 MC-dropout passes
of decoder 1, one encoder pass, at the decoder's 1/4 scale) and scores per-scan scores on the
same predictions:

- ``expected Dice`` (``propl.uncertainty.confidence_score``, the plugin's from ``9b576f2``):
  the Dice the mask is expected to score against a truth drawn from decoder 1's MC-dropout
  mean; ``expected Dice x shape``: that times the mask's shape factor (``propl.task_shape``:
  its ellipse fit over the task's floor, when below it; the model's own floors, refitted at
  each retraining from the confirmed masks);
- ``own probabilities``: the same expected Dice against decoder 2's own probabilities
  instead of decoder 1's MC mean; ``own probabilities x shape`` (the plugin's today): that
  times the shape factor;
- ``mean uncertainty`` (the plugin's before ``9b576f2``): 1 − the mean of the uncertainty map
  shown over the predicted foreground dilated by 3 pixels and every pixel above 0.5
  (``previous_score`` here);
- ``expected error`` (``propl.uncertainty.expected_error_fraction``, ``propl simulate
  --strategies error``): the fraction of the frame's pixels the mask is expected to get wrong
  against the same belief; the queue would put the largest first.

For each set of scans and score, in the score's queue order: Spearman's ρ between the order and
the true Dice (higher is better), the mean true Dice of the first 10 scans (the queue's first
page; lower means more to correct; the oracle's 10 worst and the set's mean, what random picks
get on average, for comparison), the mean count of wrong pixels on the first page as a multiple
of the set's mean (more is more to correct; the oracle's 10 most for comparison), and the mean
absolute gap between the score and what it estimates (the true Dice, or the true fraction of
wrong pixels).

Sets: the shipped model on each task's test scans, and, with ``--run``, the review pools of the
simulated annotator (``propl simulate --workdir WORKDIR``): the round-0 model (10 corrected
scans, never saw the task before) on its 190 unreviewed scans, and the last version of the
least-confident-first strategy on the scans still unreviewed at the end:

    propl simulate --data DATA --task thyroid_nodule --seed S --workdir WORK_S --out /tmp/s.json
    python benchmarks/queue_scores.py --data DATA --run "seed 0=WORK_0" --run "seed 1=WORK_1" ...
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import Tensor

from propl.data.benchmark import BenchmarkFolder, FirstScans
from propl.data.readers import read_mask, read_scan
from propl.inference import Predictor, frames_to_float, resolve_model
from propl.metrics import dice
from propl.results import provenance, write_json
from propl.store import Project
from propl.uncertainty import confidence_score, expected_error_fraction

RESULTS = Path(__file__).resolve().parent / "results"
#: score -> +1 (least first, like a confidence) or -1 (largest first)
SCORES = {
    "expected Dice x shape": 1,
    "expected Dice": 1,
    "own probabilities": 1,
    "own probabilities x shape": 1,
    "mean uncertainty": 1,
    "expected error": -1,
}
FIRST_PAGE = 10


def previous_score(prob: Tensor, uncertainty: Tensor, threshold: float = 0.5) -> Tensor:
    """The plugin's per-frame confidence before the expected Dice (git history of
    ``propl.uncertainty.confidence_score``): 1 − mean uncertainty over the region of interest,
    the predicted foreground dilated by 3 pixels or any pixel above 0.5 (the whole frame when
    that region is empty)."""
    unc = uncertainty.float()
    band = F.max_pool2d((prob > threshold).float(), kernel_size=7, stride=1, padding=3) > 0
    roi = (band | (unc > 0.5)).float()
    n_roi = roi.sum(dim=(1, 2, 3))
    roi_mean = (unc * roi).sum(dim=(1, 2, 3)) / n_roi.clamp_min(1.0)
    return 1.0 - torch.where(n_roi > 0, roi_mean, unc.mean(dim=(1, 2, 3))).clamp(0.0, 1.0)


@torch.inference_mode()
def score_scans(model: Path, task: str, scans: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """``{"dice": [...], "error_fraction": [...], "error_pixels": [...], score: [...]}``: true
    Dice and wrong pixels (at the stored resolution) and each score."""
    predictor = Predictor.from_checkpoint(model, device="cpu")
    out: dict[str, list[float]] = {
        "dice": [],
        "error_fraction": [],
        "error_pixels": [],
        **{k: [] for k in SCORES},
    }
    for frames, truth in scans:
        x = torch.from_numpy(frames_to_float(frames[:1]))
        features, t = predictor.encode(x, predictor.model.task_index(task))
        p2, shown_map, mean = predictor._forward(features, t)  # as the plugin predicts
        h, w = truth.shape[-2:]
        full = F.interpolate(p2, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        shown, true = full.numpy() > 0.5, truth.reshape(h, w) > 0
        wrong = shown != true
        out["dice"].append(dice(shown, true))
        out["error_fraction"].append(float(wrong.mean()))
        out["error_pixels"].append(float(wrong.sum()))
        out["expected Dice"].append(float(confidence_score(p2, mean)[0]))
        shape = None if predictor.task_shape is None else predictor.task_shape.factor(shown, task)
        out["expected Dice x shape"].append(
            out["expected Dice"][-1] * (1.0 if shape is None else float(shape[0]))
        )
        out["own probabilities"].append(float(confidence_score(p2, p2)[0]))
        out["own probabilities x shape"].append(
            out["own probabilities"][-1] * (1.0 if shape is None else float(shape[0]))
        )
        out["mean uncertainty"].append(float(previous_score(p2, shown_map)[0]))
        out["expected error"].append(float(expected_error_fraction(p2, mean)[0]))
    return out


def summary(scored: dict) -> dict:
    dice = np.asarray(scored["dice"])
    wrong = np.asarray(scored["error_pixels"])
    row = {
        "scans": len(dice),
        "mean_dice": float(dice.mean()),
        "oracle_first_page_dice": float(np.sort(dice)[:FIRST_PAGE].mean()),
        "mean_error_pixels": float(wrong.mean()),
        "oracle_first_page_error_x": float(np.sort(wrong)[::-1][:FIRST_PAGE].mean() / wrong.mean()),
    }
    for name, sign in SCORES.items():
        value = np.asarray(scored[name])
        key = sign * value  # ascending: the queue's order
        first = np.argsort(key, kind="stable")[:FIRST_PAGE]
        target = dice if sign > 0 else np.asarray(scored["error_fraction"])
        row[name] = {
            "spearman": float(spearmanr(key, dice).statistic),
            "first_page_dice": float(dice[first].mean()),
            "first_page_error_x": float(wrong[first].mean() / wrong.mean()),
            "mean_abs_gap": float(np.abs(value - target).mean()),
        }
    return row


def pool_scans(project: Path, task: str, masks: dict[str, Path]) -> list:
    """The unreviewed scans of a simulated annotator's project, with their ground truth."""
    with Project.open(project, read_only=True) as p:
        return [
            (p.image(i), read_mask(masks[p.scan(i).name]))  # the store keeps no paths
            for i in p.scan_ids()
            if p.review(i, task, with_mask=False) is None
        ]


def simulated_sets(data: Path, name: str, work: Path) -> dict[str, dict]:
    """Round 0 and the last least-confident-first version of one ``propl simulate`` workdir."""
    with Project.open(work / "round0.zarr", read_only=True) as p:
        (task,) = [t.id for t in p.tasks]
    folder = BenchmarkFolder(data)
    masks = {s.image.stem: s.mask for s in folder.samples(task, "train")}  # scans' names
    rows = {}
    for label, project in (("round 0", "round0.zarr"), ("last round", "uncertainty.zarr")):
        with Project.open(work / project, read_only=True) as p:
            model = p.current_model_path()
        assert model is not None, f"{work / project} has no current model"
        scored = score_scans(model, task, pool_scans(work / project, task, masks))
        rows[f"{name}, {label}: {task} pool"] = summary(scored) | {"model": str(model)}
    return rows


def table(doc: dict) -> str:
    n = doc["first_page"]
    lines = [
        "Per-scan scores as a review-queue order (`python benchmarks/queue_scores.py`): "
        "Spearman ρ of the queue's order with the true Dice (higher is better); the mean true "
        f"Dice of the queue's first {n} scans (lower: more to correct; the set's mean is what "
        f"random picks get, the oracle's {n} worst the floor); the wrong pixels on the first "
        f"page as a multiple of the set's mean (more: more to correct; the oracle's {n} most in "
        "brackets); the mean gap between the score and what it estimates (the true Dice, or "
        "the true fraction of wrong pixels).",
        "",
        f"| scans | n | mean Dice | score | ρ | first {n}: Dice (oracle) | first {n}: wrong "
        "pixels × mean (oracle) | gap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in doc["sets"].items():
        for i, s in enumerate(doc["scores"]):
            r = row[s]
            head = (
                [name, str(row["scans"]), f"{100 * row['mean_dice']:.1f}"] if i == 0 else [""] * 3
            )
            cells = head + [
                s,
                f"{r['spearman']:.2f}",
                f"{100 * r['first_page_dice']:.1f} ({100 * row['oracle_first_page_dice']:.1f})",
                f"{r['first_page_error_x']:.2f} ({row['oracle_first_page_error_x']:.2f})",
                f"{r['mean_abs_gap']:.3f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="us-universal folder")
    parser.add_argument(
        "--run", action="append", default=[], help="NAME=WORKDIR of propl simulate (repeatable)"
    )
    parser.add_argument("--scans", type=int, default=0, help="first N test scans a task; 0: all")
    parser.add_argument("--out", type=Path, default=RESULTS / "queue-scores.json")
    args = parser.parse_args()
    t0 = time.perf_counter()
    sets: dict[str, dict] = {}
    shipped = resolve_model(None)
    folder = FirstScans(args.data, args.scans)
    for task in Predictor.from_checkpoint(shipped, device="cpu").tasks:
        samples = folder.samples(task, "test")
        scans = [(read_scan(s.image)[0], read_mask(s.mask)) for s in samples]
        sets[f"shipped: {task} test"] = summary(score_scans(shipped, task, scans))
        print(f"shipped {task}: {sets[f'shipped: {task} test']}", flush=True)
    for run in args.run:
        name, work = run.split("=", 1)
        sets |= simulated_sets(args.data, name, Path(work))
        print(f"{name}: done", flush=True)
    doc = {
        "scores": list(SCORES),
        "first_page": FIRST_PAGE,
        "test_scans": args.scans or "all",
        "sets": sets,
        "seconds": round(time.perf_counter() - t0, 1),
        "provenance": provenance(),
    }
    write_json(args.out, doc)
    args.out.with_suffix(".md").write_text(table(doc))
    print(table(doc))


if __name__ == "__main__":
    main()
