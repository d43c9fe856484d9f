"""Is the click head's output resolution what keeps masks from IoU 0.90?

    python benchmarks/mask_resolution.py [--data DATA]

Each test scan's true mask (first frame, non-empty) is shrunk to S x S by area averaging and
blown back to the scan's size bilinearly, thresholded at 0.5: the IoU with the original is the
best any mask made at S x S can reach. S = 96 is the refinement head's output (half the shipped
model's 192-pixel input), 192 the input, 384 twice it. Writes
``benchmarks/results/mask-resolution.json`` and ``.md``. Under a minute on the CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = (96, 192, 384)


def ceiling(truth: np.ndarray, size: int) -> float:
    """IoU of ``truth`` with itself shrunk to ``size`` x ``size`` and blown back."""
    import torch
    import torch.nn.functional as F

    from propl.interactive import iou

    m = torch.from_numpy((truth > 0).astype(np.float32))[None, None]
    small = F.interpolate(m, size=(size, size), mode="area")
    back = F.interpolate(small, size=truth.shape, mode="bilinear", align_corners=False)
    return iou(back[0, 0].numpy() > 0.5, truth)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/us-universal")
    args = ap.parse_args(argv)

    from propl.data.benchmark import BenchmarkFolder
    from propl.data.readers import read_mask
    from propl.results import write_results

    folder = BenchmarkFolder(args.data)
    tasks: dict[str, Any] = {}
    for task in folder.task_ids():
        scores: dict[int, list[float]] = {s: [] for s in SIZES}
        for sample in folder.samples(task, "test"):
            truth = read_mask(sample.mask)
            truth = truth[0] if truth.ndim == 3 else truth
            if not truth.any():
                continue
            for s in SIZES:
                scores[s].append(ceiling(truth, s))
        tasks[task] = {
            str(s): {
                "mean_iou": float(np.mean(v)),
                "min_iou": float(np.min(v)),
                "below_090": float(np.mean(np.array(v) < 0.9)),
                "n": len(v),
            }
            for s, v in scores.items()
        }
    lines = [
        "Best IoU a mask made at S x S can reach: each test scan's true mask shrunk to S x S "
        "(area) and blown back (bilinear, threshold 0.5) (`python benchmarks/mask_resolution.py`"
        "). 96 = the click head's output, 192 = the shipped model's input.",
        "",
        "| task | n | "
        + " | ".join(f"S = {s}: mean / min IoU, share < 0.90" for s in SIZES)
        + " |",
        "|---|---|" + "---|" * len(SIZES),
    ]
    for task, per in tasks.items():
        cells = [
            f"{v['mean_iou']:.3f} / {v['min_iou']:.3f}, {100 * v['below_090']:.0f} %"
            for v in per.values()
        ]
        lines.append(f"| {task} | {per[str(SIZES[0])]['n']} | " + " | ".join(cells) + " |")
    doc = {"command": "python benchmarks/mask_resolution.py", "sizes": SIZES, "tasks": tasks}
    print(write_results(ROOT / "benchmarks/results/mask-resolution", doc, "\n".join(lines) + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
