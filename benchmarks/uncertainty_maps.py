"""Which per-pixel uncertainty ranks the shown mask's errors best? AUROC on test scans.

    python benchmarks/uncertainty_maps.py --data DATA \
        [--model NAME=PATH ...] [--tasks T ...] [--scans N] [--out results/uncertainty-maps.json]

Every model predicts every test scan of each task once (decoder 2's mask, as the plugin shows
it) and several uncertainty maps are scored on the same pixels: the AUROC of each map as a
detector of the mask's error pixels, at the stored resolution (``propl.metrics``'s
``UncertaintyAUROC``, the metric of ``propl evaluate``). The maps, all from one encoder pass:

- ``√(2σ)``: what the plugin shows (``propl.uncertainty.mc_uncertainty``): decoder 1's
  MC-dropout standard deviation σ alone (T = 4, the plugin's T; and T = 8), at the decoder's
  1/4 scale, then upsampled like every map here;
- ``max rule``: what the plugin showed before (``propl.uncertainty.uncertainty_map``): the
  maximum of the entropy of decoder 1's MC-dropout mean, its σ / 0.5 and the decoders'
  disagreement;
- ``entropy, MC mean`` and ``entropy, decoder 2``: the entropy of one probability map;
- ``disagreement``: |MC mean − decoder 2|;
- ``mutual information``: entropy of the MC mean minus the mean entropy of the samples (BALD).

Without ``--model``, the shipped model. A weak model like the plugin's first ones for a new
task (10 corrected scans) comes from the simulated annotator, which keeps its projects:

    propl simulate --data DATA --task thyroid_nodule --strategies uncertainty --seed 0 \
        --workdir WORK --out /tmp/sim.json
    python benchmarks/uncertainty_maps.py --data DATA --tasks thyroid_nodule \
        --model "10 scans=WORK/round0.zarr/models/v0001" \
        --model "40 scans=WORK/uncertainty.zarr/models/v0004"
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from propl.data.benchmark import FirstScans
from propl.data.readers import read_mask, read_scan
from propl.inference import Predictor, frames_to_float, resolve_model
from propl.metrics import UncertaintyAUROC
from propl.results import provenance, write_json
from propl.uncertainty import (
    OUTLINE_THRESHOLD,
    binary_entropy,
    disagreement,
    mc_statistics,
    mc_uncertainty,
    uncertainty_map,
)

RESULTS = Path(__file__).resolve().parent / "results"
SHOWN, MAX_RULE = "√(2σ) (shown now)", "max rule (shown before)"
MAPS = (
    SHOWN,
    "√(2σ), T = 8",
    MAX_RULE,
    "entropy, MC mean",
    "entropy, decoder 2",
    "disagreement",
    "mutual information",
)
#: the plugin's default outline level of the map shown now, and of the max rule before it
OUTLINES = {SHOWN: OUTLINE_THRESHOLD, MAX_RULE: 0.5}


def _maps(predictor: Predictor, frames: np.ndarray, task: str) -> tuple[Tensor, dict[str, Tensor]]:
    """Decoder 2's probability and every candidate map, at the decoder's 1/4 scale."""
    model = predictor.model
    x = torch.from_numpy(frames_to_float(frames[:1]))
    features, t = predictor.encode(x, model.task_index(task))
    size = (features[0].shape[-2], features[0].shape[-1])
    p2 = torch.sigmoid(model.decode(features, t, 2, size=size))
    samples = model.mc_decoder1(features, t, predictor.mc_samples, size=size)
    mean, var = mc_statistics(samples)
    _, var8 = mc_statistics(model.mc_decoder1(features, t, 8, size=size))
    return p2, {
        SHOWN: mc_uncertainty(var),
        "√(2σ), T = 8": mc_uncertainty(var8),
        MAX_RULE: uncertainty_map(mean, var, p2),
        "entropy, MC mean": binary_entropy(mean),
        "entropy, decoder 2": binary_entropy(p2),
        "disagreement": disagreement(mean, p2),
        "mutual information": binary_entropy(mean) - binary_entropy(samples).mean(dim=0),
    }


@torch.inference_mode()
def score(
    model: Path, data: Path, tasks: list[str], scans: int, log: Callable[[str], None] = print
) -> dict[str, dict[str, dict]]:
    """``{"auroc"|"median"|"flagged": {task: {map: ...}}}`` of one model; ``flagged``: the
    fractions of all pixels and of the error pixels at or above the map's outline level."""
    torch.manual_seed(0)
    predictor = Predictor.from_checkpoint(model, device="cpu")
    folder = FirstScans(data, scans)
    out: dict[str, dict[str, dict]] = {"auroc": {}, "median": {}, "flagged": {}}
    for task in tasks:
        if task not in predictor.tasks:
            continue
        auroc = {name: UncertaintyAUROC() for name in MAPS}
        samples = folder.samples(task, "test")
        for sample in samples:
            frames, _ = read_scan(sample.image)
            gt = read_mask(sample.mask)
            p2, maps = _maps(predictor, frames, task)
            h, w = gt.shape[-2:]

            def up(a: Tensor, h: int = h, w: int = w) -> np.ndarray:
                full = F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)
                return full[0, 0].numpy()

            mask = (up(p2) > 0.5).astype(np.uint8)  # the mask the plugin shows
            for name, m in maps.items():
                auroc[name].update(np.clip(up(m), 0.0, 1.0), mask, gt)
        out["auroc"][task] = {name: a.compute() for name, a in auroc.items()}
        out["median"][task] = {name: a.quantile(0.5) for name, a in auroc.items()}
        out["flagged"][task] = {name: auroc[name].flagged(t) for name, t in OUTLINES.items()}
        log(f"{model}: {task} ({len(samples)} scans) " + str(out["auroc"][task]))
    return out


def table(doc: dict) -> str:
    cols = [(m, t) for m, per_task in doc["models"].items() for t in per_task]
    lines = [
        "Pixel uncertainty as a detector of the shown mask's errors: AUROC on the test scans "
        "(`python benchmarks/uncertainty_maps.py`; higher is better, 0.5 is chance). "
        "Bold: the best map of each column.",
        "",
        "| map | " + " | ".join(f"{m}: {t}" for m, t in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    best = {c: max(doc["models"][c[0]][c[1]].values()) for c in cols}
    for name in MAPS:
        cells = []
        for m, t in cols:
            v = doc["models"][m][t][name]
            cells.append(f"**{v:.3f}**" if v == best[(m, t)] else f"{v:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Outlines at the default level: % of the pixels flagged / % of the errors flagged.",
        "",
    ]
    lines.append("| map, level | " + " | ".join(f"{m}: {t}" for m, t in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for name, level in doc["outline_levels"].items():
        cells = [
            "{:.1f} / {:.1f}".format(*(100 * v for v in doc["flagged"][m][t][name]))
            for m, t in cols
        ]
        lines.append(f"| {name}, {level} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="us-universal folder")
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH (repeatable)")
    parser.add_argument("--tasks", nargs="+", help="tasks to score (default: the model's)")
    parser.add_argument("--scans", type=int, default=0, help="first N test scans; 0: all")
    parser.add_argument("--out", type=Path, default=RESULTS / "uncertainty-maps.json")
    args = parser.parse_args()
    models = dict(m.split("=", 1) for m in args.model) or {"shipped": str(resolve_model(None))}
    t0 = time.perf_counter()
    doc: dict = {"maps": list(MAPS), "scans": args.scans or "all", "models": {}, "paths": {}}
    doc["median_uncertainty"] = {}  # over every scored pixel: how much of a scan a map flags
    doc["outline_levels"] = OUTLINES
    doc["flagged"] = {}  # [fraction of the pixels, fraction of the error pixels] at that level
    for name, path in models.items():
        tasks = args.tasks or list(Predictor.from_checkpoint(path, device="cpu").tasks)
        scores = score(Path(path), args.data, tasks, args.scans)
        doc["models"][name] = scores["auroc"]
        doc["median_uncertainty"][name] = scores["median"]
        doc["flagged"][name] = scores["flagged"]
        doc["paths"][name] = path
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    doc["provenance"] = provenance()
    write_json(args.out, doc)
    args.out.with_suffix(".md").write_text(table(doc))
    print(table(doc))


if __name__ == "__main__":
    main()
