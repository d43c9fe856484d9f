"""Confidence signals: which cheap per-scan signal ranks a task's scans by their true Dice?

    python benchmarks/confidence_signals.py [--data DATA] [--train-scans 150]

Issue 28 asks that the per-scan confidence's Spearman rho with the true Dice be >= 0.7 for
every task of the shipped model's test scans. This scores candidate signals on the first
frame of each scan: the Dice of decoder 2's mask (upsampled to the scan's size) against the
expert mask, and per signal the expected Dice :func:`propl.uncertainty.confidence_score` of
decoder 2's probabilities ``p2`` against a belief, at the decoders' native 1/4 scale:

- shown: the MC-dropout mean of decoder 1 (``Predictor._forward``, the plugin's today);
- own probabilities (``p2`` itself); decoder 1's single pass;
- test-time augmentation: ``p2`` of the horizontally flipped frame flipped back, of the frame
  zero-padded by 10% each side (cropped back), of the frame under gamma 0.8, and the mean of
  ``p2`` and those three;
- shape: own probabilities times the solidity of the mask's largest component, or times that
  component's share of the mask.

Sets: each task's whole test split, and a fixed random subset of each task's train split
(one ``numpy.random.default_rng(0)`` drawn in task order; the model was trained on these
scans). Writes ``benchmarks/results/confidence-signals.json`` and ``confidence-signals.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMAND = "python benchmarks/confidence_signals.py"
TARGET = 0.7
#: signal -> (what it is, extra encoder passes per frame)
SIGNALS: dict[str, tuple[str, int]] = {
    "shown": ("confidence_score(p2, decoder 1's MC-dropout mean): the plugin's today", 0),
    "own": ("confidence_score(p2, p2): own probabilities", 0),
    "decoder1": ("confidence_score(p2, decoder 1's single pass)", 0),
    "flip": ("belief: p2 of the horizontally flipped frame, flipped back", 1),
    "zoom_out": ("belief: p2 of the frame zero-padded by 10% each side, cropped back", 1),
    "gamma": ("belief: p2 of the frame under gamma 0.8", 1),
    "tta_mean": ("belief: mean of p2, flip, zoom-out and gamma", 3),
    "own_x_solidity": ("own x solidity of the mask's largest component", 0),
    "own_x_largest": ("own x the largest component's share of the mask", 0),
}


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])


def shape(mask: np.ndarray) -> tuple[float, float]:
    """Solidity of the mask's largest component and its share of the mask (0, 0 if empty)."""
    from skimage.measure import label, regionprops

    props = regionprops(label(mask))
    if not props:
        return 0.0, 0.0
    areas = np.array([p.area for p in props], dtype=float)
    big = props[int(areas.argmax())]
    return float(big.solidity), float(areas.max() / areas.sum())


def score_scan(predictor: Any, image: Path, truth: np.ndarray, task: str) -> dict[str, float]:
    """The true Dice of the shown mask and every signal for one scan's first frame."""
    import torch
    import torch.nn.functional as F
    from torch import Tensor

    from propl.data.readers import read_scan
    from propl.inference import frames_to_float
    from propl.metrics import dice
    from propl.uncertainty import confidence_score

    net, task_id = predictor.model, predictor.model.task_index(task)

    def up(p: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(p, size=size, mode="bilinear", align_corners=False)

    def decoder2(x: Tensor) -> Tensor:  # one more encoder pass
        feats, t = predictor.encode(x, task_id)
        return torch.sigmoid(net.decode(feats, t, 2, size=tuple(feats[0].shape[-2:])))

    frames, _ = read_scan(image)
    x = torch.from_numpy(frames_to_float(frames[:1]))
    h, w = x.shape[1:]
    with torch.inference_mode():
        feats, t = predictor.encode(x, task_id)
        size = (feats[0].shape[-2], feats[0].shape[-1])
        p2, _, mc_mean = predictor._forward(feats, t)
        p1 = torch.sigmoid(net.decode(feats, t, 1, size=size))
        flip = torch.flip(decoder2(torch.flip(x, dims=[-1])), dims=[-1])
        ph, pw = int(h * 0.1), int(w * 0.1)
        q = decoder2(F.pad(x[None], (pw, pw, ph, ph))[0])
        n = q.shape[-1]
        qh, qw = round(n * ph / (h + 2 * ph)), round(n * pw / (w + 2 * pw))
        zoom = up(q[..., qh : n - qh, qw : n - qw], size)
        gamma = decoder2(x.clamp(0, 1) ** 0.8)
        mask = (up(p2, (h, w)) > 0.5).numpy()[0, 0]

    def cs(belief: Tensor) -> float:
        return float(confidence_score(p2, belief)[0])

    own = cs(p2)
    solidity, largest = shape(mask)
    return {
        "dice": dice(mask.astype(np.uint8), truth),
        "shown": cs(mc_mean),
        "own": own,
        "decoder1": cs(p1),
        "flip": cs(flip),
        "zoom_out": cs(zoom),
        "gamma": cs(gamma),
        "tta_mean": cs((p2 + flip + zoom + gamma) / 4),
        "own_x_solidity": own * solidity,
        "own_x_largest": own * largest,
    }


def score_set(predictor: Any, task: str, samples: list[Any]) -> dict[str, Any]:
    from propl.data.readers import read_mask

    rows = [score_scan(predictor, s.image, read_mask(s.mask), task) for s in samples]
    dices = [r["dice"] for r in rows]
    return {
        "scans": len(rows),
        "mean_dice": round(float(np.mean(dices)), 4),
        "spearman": {k: round(spearman([r[k] for r in rows], dices), 4) for k in SIGNALS},
    }


def table(doc: dict[str, Any]) -> str:
    tasks = list(doc["sets"]["test"])
    lines = [
        "Confidence signals: which cheap per-scan signal ranks scans by their true Dice?",
        "",
        f"`{doc['command']}`: Spearman ρ of each per-scan signal with the true Dice of the "
        "shipped model's shown mask (decoder 2, first frame of each scan, at the scan's size), "
        "per task, on each task's whole test split and on a fixed random subset of "
        f"{doc['train_scans']} scans of its train split (rng 0; **the model was trained on "
        "these**, so they show whether a choice made on the test scans holds elsewhere). "
        f"Target: ρ >= {TARGET} for every task. All signals but the shape ones are "
        "`confidence_score(p2, belief)` with the belief named; extra = encoder passes per "
        "frame beyond the one the plugin runs.",
        "",
    ]
    for split, head in (("test", "Test splits"), ("train", "Train subsets (trained on)")):
        sets = doc["sets"][split]
        lines += [
            f"{head}: scans "
            + ", ".join(f"{t} {sets[t]['scans']}" for t in tasks)
            + "; mean Dice "
            + ", ".join(f"{t} {100 * sets[t]['mean_dice']:.1f}" for t in tasks)
            + ".",
            "",
            "| signal | extra | " + " | ".join(tasks) + " | min |",
            "|---|---|" + "---|" * (len(tasks) + 1),
        ]
        for k, (_, extra) in SIGNALS.items():
            rhos = [sets[t]["spearman"][k] for t in tasks]
            lo = doc["min"][split][k]
            lines.append(
                f"| {k} | {extra} | "
                + " | ".join(f"{r:.2f}" for r in rhos)
                + (f" | **{lo:.2f}** |" if lo >= TARGET else f" | {lo:.2f} |")
            )
        lines.append("")
    lines += [
        "Signals: " + "; ".join(f"{k}: {what}" for k, (what, _) in SIGNALS.items()) + ".",
        "",
        "**Reading.** " + reading(doc),
        "",
        f"{doc['seconds']} s on the CPU, torch threads: {doc['provenance']['torch_threads']}.",
    ]
    return "\n".join(lines) + "\n"


def reading(doc: dict[str, Any]) -> str:
    """What the numbers say, worded from them (so a rerun's text follows its numbers)."""
    test, train, low = doc["sets"]["test"], doc["sets"]["train"], doc["min"]["test"]
    met = [k for k in SIGNALS if low[k] >= TARGET]
    out = [
        f"Signals with ρ >= {TARGET} on every task's test scans: "
        + (", ".join(met) if met else "none")
        + "; the best minimum over tasks is "
        + ", ".join(f"{k} {low[k]:.2f}" for k in sorted(SIGNALS, key=lambda k: -low[k])[:3])
        + f" (shown {low['shown']:.2f}). Tasks below {TARGET} with every signal: "
        + (", ".join(t for t in test if max(test[t]["spearman"].values()) < TARGET) or "none")
        + ". Best signal per task, test ρ (train ρ of the same signal): "
    ]
    best = {t: max(SIGNALS, key=lambda k, t=t: test[t]["spearman"][k]) for t in test}
    out.append(
        "; ".join(
            f"{t} {k} {test[t]['spearman'][k]:.2f} ({train[t]['spearman'][k]:.2f})"
            for t, k in best.items()
        )
        + "."
    )
    for a, b, what in (
        ("own", "shown", "Own probabilities vs shown"),
        ("own_x_solidity", "own", "Shape (x solidity) vs own"),
        ("tta_mean", "own", "TTA mean vs own"),
    ):
        out.append(
            f" {what}, ρ change test / train: "
            + ", ".join(
                f"{t} {test[t]['spearman'][a] - test[t]['spearman'][b]:+.2f} / "
                f"{train[t]['spearman'][a] - train[t]['spearman'][b]:+.2f}"
                for t in test
            )
            + "."
        )
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/us-universal")
    ap.add_argument("--train-scans", type=int, default=150, help="train subset size per task")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a shared CPU: 1)")
    ap.add_argument("--out", type=Path, default=RESULTS / "confidence-signals.json")
    args = ap.parse_args(argv)

    import torch

    from propl.data.benchmark import BenchmarkFolder
    from propl.inference import Predictor, resolve_model
    from propl.results import provenance, write_json

    torch.manual_seed(0)  # decoder 1's MC dropout
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    predictor = Predictor.from_checkpoint(resolve_model(None), device="cpu")
    folder = BenchmarkFolder(args.data)
    tasks = [t for t in folder.task_ids() if t in predictor.tasks]
    rng = np.random.default_rng(0)
    pick: dict[str, Callable[[list[Any]], list[Any]]] = {
        "test": lambda s: s,
        "train": lambda s: [
            s[i] for i in rng.choice(len(s), size=min(args.train_scans, len(s)), replace=False)
        ],
    }
    sets: dict[str, dict[str, Any]] = {}
    for split, choose in pick.items():
        sets[split] = {}
        for task in tasks:
            sets[split][task] = score_set(predictor, task, choose(folder.samples(task, split)))
            print(split, task, sets[split][task], flush=True)
    doc = {
        "command": COMMAND,
        "target": TARGET,
        "train_scans": args.train_scans,
        "signals": {k: {"what": w, "extra_encoder_passes": e} for k, (w, e) in SIGNALS.items()},
        "sets": sets,
        "min": {
            split: {k: min(sets[split][t]["spearman"][k] for t in tasks) for k in SIGNALS}
            for split in sets
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "provenance": provenance(),
    }
    write_json(args.out, doc)
    args.out.with_suffix(".md").write_text(table(doc))
    print(table(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
