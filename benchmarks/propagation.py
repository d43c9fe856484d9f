"""Propagation through a cine against segmenting each frame on its own.

No public labelled echo cines are at hand, so the labelled cines here are **synthetic**: each
is made from one labelled test scan of us-universal, moved over 30 frames by a smooth, seeded
deformation (translation, rotation, scaling and a slow elastic warp, each a sum of low
frequencies), the mask deformed with the image. On each cine:

- (a) per-frame prediction: the model's automatic mask of every frame;
- (b) propagation from a correct first frame: the true mask of frame 0 carried forward by the
  refinement head with no clicks (:func:`propl.propagation.propagate`), stopping nowhere
  (``stop_below=0``), and with the default stop: how many frames it reached.

Reported: Dice per frame (mean over cines, per task), and the adjacent-frame area change of
the masks on pydicom's real echo cines (no truth there: the median and largest relative change
of the mask's area from one frame to the next), for per-frame prediction and for propagation
from the per-frame prediction of the frame it is most confident of.

    python benchmarks/propagation.py [--data DATA] [--model PATH] [--per-task 6]

Writes ``benchmarks/results/propagation.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
N_FRAMES = 30


def _smooth(rng: np.random.Generator, n: int, amplitude: float) -> np.ndarray:
    """A smooth curve over n frames starting at 0: a sum of two low-frequency sines."""
    t = np.linspace(0, 1, n)
    curve = np.zeros(n)
    for k in (1, 2):
        curve += rng.uniform(-1, 1) * np.sin(np.pi * k * t + rng.uniform(0, np.pi))
    return amplitude * (curve - curve[0]) / 2


def synthetic_cine(
    image: np.ndarray, mask: np.ndarray, seed: int, n: int = N_FRAMES
) -> tuple[np.ndarray, np.ndarray]:
    """``(frames, masks)``: ``image`` and ``mask`` moved smoothly over ``n`` frames."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    ty, tx = _smooth(rng, n, 0.08 * h), _smooth(rng, n, 0.08 * w)
    angle = _smooth(rng, n, np.deg2rad(10))
    scale = 1 + _smooth(rng, n, 0.1)
    warp_phase = rng.uniform(0, 2 * np.pi, 2)
    warp = _smooth(rng, n, 0.03 * min(h, w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h / 2, w / 2
    frames = np.empty((n, h, w), image.dtype)
    masks = np.empty((n, h, w), np.uint8)
    for f in range(n):
        c, s = np.cos(angle[f]) / scale[f], np.sin(angle[f]) / scale[f]
        y0, x0 = yy - cy - ty[f], xx - cx - tx[f]
        src_y = c * y0 - s * x0 + cy + warp[f] * np.sin(2 * np.pi * xx / w + warp_phase[0])
        src_x = s * y0 + c * x0 + cx + warp[f] * np.sin(2 * np.pi * yy / h + warp_phase[1])
        coords = np.stack([src_y, src_x])
        frames[f] = ndimage.map_coordinates(image, coords, order=1, mode="reflect")
        masks[f] = ndimage.map_coordinates(mask.astype(np.float32), coords, order=1) > 0.5
    return frames, masks


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def synthetic_trials(predictor: Any, data: Path, per_task: int) -> dict[str, Any]:
    from propl.data.benchmark import BenchmarkFolder
    from propl.data.readers import read_mask, read_scan, to_grayscale
    from propl.propagation import propagate

    folder = BenchmarkFolder(data)
    out: dict[str, Any] = {}
    for task in folder.task_ids():
        samples = folder.samples(task, "test")
        pick = np.random.default_rng(0).choice(len(samples), per_task, replace=False)
        per_frame, propagated, reached = [], [], []
        for k, i in enumerate(sorted(pick)):
            gray = to_grayscale(read_scan(samples[i].image)[0])[0]
            image = np.round(gray * 255).astype(np.uint8)
            frames, truth = synthetic_cine(image, read_mask(samples[i].mask), seed=k)
            auto = predictor.predict(frames, task).mask
            per_frame.append([_dice(auto[f], truth[f]) for f in range(len(frames))])
            start = np.zeros_like(truth)
            start[0] = truth[0]
            carried = propagate(
                predictor, frames, task, 0, start, direction="forward", stop_below=0.0
            )
            propagated.append([_dice(carried.masks[f], truth[f]) for f in range(len(frames))])
            stopped = propagate(predictor, frames, task, 0, start, direction="forward")
            reached.append(len(stopped.reached))
        out[task] = {
            "cines": per_task,
            "dice_per_frame": np.mean(per_frame, axis=0).round(4).tolist(),
            "dice_propagated": np.mean(propagated, axis=0).round(4).tolist(),
            "mean_dice_per_frame": round(float(np.mean(per_frame)) * 100, 2),
            "mean_dice_propagated": round(float(np.mean(propagated)) * 100, 2),
            "frames_reached_with_default_stop": reached,
        }
        print(
            task,
            out[task]["mean_dice_per_frame"],
            out[task]["mean_dice_propagated"],
            reached,
            file=sys.stderr,
            flush=True,
        )
    return out


def _area_changes(masks: np.ndarray) -> dict[str, float]:
    area = masks.reshape(len(masks), -1).sum(axis=1).astype(float)
    change = np.abs(np.diff(area)) / np.maximum(area[:-1], 1)
    return {
        "median": round(float(np.median(change)) * 100, 1),
        "max": round(float(change.max()) * 100, 1),
    }


def real_cines(predictor: Any, task: str = "left_heart") -> dict[str, Any]:
    from pydicom.data import get_testdata_file

    from propl.data.readers import read_scan
    from propl.propagation import propagate

    paths = {"examples_ybr_color.dcm": get_testdata_file("examples_ybr_color.dcm")}
    try:
        from napari_propl._sample_data import pydicom_data_file

        paths["color3d_jpeg_baseline.dcm"] = pydicom_data_file("color3d_jpeg_baseline.dcm")
    except Exception:  # noqa: BLE001 - the samples extra is optional
        pass
    out = {}
    for name, path in paths.items():
        if path is None:
            continue
        frames, _ = read_scan(path)
        pred = predictor.predict(frames, task)
        start = int(np.argmax(pred.confidence))
        carried = propagate(predictor, frames, task, start, pred.mask, stop_below=0.0)
        out[name] = {
            "frames": len(frames),
            "start": start,
            "per_frame": _area_changes(pred.mask),
            "propagated": _area_changes(carried.masks),
        }
    return out


def table(doc: dict[str, Any]) -> str:
    rows = [
        f"`{doc['command']}`; model `{doc['model']}`. **The labelled cines are synthetic**: "
        f"{doc['per_task']} test scans per task, each moved over {N_FRAMES} frames by a "
        "smooth seeded deformation (the mask deformed with the image). Mean Dice over all "
        "frames: per-frame prediction, and propagation of the true first-frame mask by the "
        "refinement head (no clicks, never stopping); frames reached with the default stop.",
        "",
        "| task | per-frame prediction | propagated from a correct frame 0 | Dice at frame 29 "
        "(per-frame / propagated) | frames reached (default stop) |",
        "|---|---|---|---|---|",
    ]
    for task, r in doc["synthetic"].items():
        rows.append(
            f"| {task} | {r['mean_dice_per_frame']:.1f} | {r['mean_dice_propagated']:.1f} "
            f"| {r['dice_per_frame'][-1] * 100:.1f} / {r['dice_propagated'][-1] * 100:.1f} "
            f"| {', '.join(map(str, r['frames_reached_with_default_stop']))} |"
        )
    rows += [
        "",
        "Real echo cines (pydicom; no truth): adjacent-frame change of the mask's area, "
        "median / largest, per-frame prediction vs propagation from the frame the model is "
        "most confident of (left_heart).",
        "",
        "| cine | frames | per-frame prediction | propagated |",
        "|---|---|---|---|",
    ]
    for name, r in doc["real"].items():
        rows.append(
            f"| {name} | {r['frames']} | {r['per_frame']['median']} % / {r['per_frame']['max']} % "
            f"| {r['propagated']['median']} % / {r['propagated']['max']} % |"
        )
    rows += ["", f"{doc['seconds']} s on {doc['device']}."]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/us-universal")
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the shipped one)")
    ap.add_argument("--per-task", type=int, default=6, help="synthetic cines per task (6)")
    ap.add_argument("--out", type=Path, default=RESULTS / "propagation.json")
    args = ap.parse_args(argv)
    import torch

    from propl.inference import Predictor, resolve_model

    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = resolve_model(args.model)
    predictor = Predictor.from_checkpoint(model, device="cpu")
    doc = {
        "command": "python benchmarks/propagation.py"
        + (f" --per-task {args.per_task}" if args.per_task != 6 else ""),
        "model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else str(model),
        "per_task": args.per_task,
        "synthetic": synthetic_trials(predictor, args.data, args.per_task),
        "real": real_cines(predictor),
        "device": "cpu",
    }
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table(doc))
    print(table(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
