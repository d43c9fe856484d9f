"""Clicks to a good mask: the refinement head with the field's simulated annotator.

    python benchmarks/clicks.py [--data DATA] [--new-task NEW] [--model MODEL] [--limit N]
                                [--baseline OLD] [--no-zoom --out benchmarks/results/clicks-no-zoom]

For every us-universal task's test split (scans with a non-empty mask), clicks with the
simulated annotator of :mod:`propl.interactive` (largest error region, its deepest interior
point, positive for a missed region and negative for a false one; each round feeds the previous
result back), starting (a) from the model's own pseudo-label, (b) from an empty mask and (c)
from the structure's bounding box (the box alone makes the start mask and stays with every
click: how a dragged box works in the Review widget) and (d) from a rough outline (the expert
mask grown by 15 % of its radius: a mask brushed quickly around the structure); and on
``NEW`` (us-new-task-dev, a brachial plexus nerve the model has never seen) from an empty mask
and from a rough outline, with no task prompt. Per set: NoC@85 and NoC@90 (clicks until IoU
>= 0.85 / 0.90, at most 20; one that never gets there counts 20), NoF (share never there),
mean IoU after 0, 1, 3 and 5 clicks, and the brush baseline: the fewest pixels an annotator
would repaint in the start mask to reach the same IoU (:func:`propl.interactive.brush_pixels`,
at the scan's resolution).
The refiner zooms in from the second click as in the plugin (:mod:`propl.interactive`);
``--no-zoom`` refines every click on the whole frame, for comparison.

Latency on the CPU (threads as the Predictor sets them): per-click refinement (the light head
only; the frame encoded once) alternating with plain prediction of the same frame, repeated,
median and 95th percentile. ``--baseline OLD`` also checks that the candidate's automatic
segmentation is bit-identical to OLD's on the first test scans of every task.

Writes ``benchmarks/results/clicks.json`` and ``clicks.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMAND = "python benchmarks/clicks.py"
CLICKS_AT = (0, 1, 3, 5)
THRESHOLDS = (0.85, 0.90)


def load_scans(folder: Any, task: str, limit: int | None) -> list[tuple[str, Any, Any]]:
    """(id, first frame, mask) of the task's test scans with a non-empty mask."""
    from propl.data.readers import read_mask, read_scan

    out = []
    for s in folder.samples(task, "test"):
        truth = read_mask(s.mask)
        if not truth.any():
            continue  # no object to click on (BUSI's normal scans)
        frames, _ = read_scan(s.image)
        out.append((s.id, frames[0], truth))
        if limit is not None and len(out) >= limit:
            break
    return out


BOX = "box"
"""The start that draws the structure's bounding box: the box alone gives the start mask (IoU
after 0 clicks), and stays with every click after it."""


ROUGH = "rough outline"
"""The start an annotator brushes quickly around the structure: the expert mask grown by
:data:`ROUGH_GROWTH` of its equivalent radius (:func:`rough_outline`). Clicks should tighten it,
never throw it away, on a structure no task taught the model as on the others."""
ROUGH_GROWTH = 0.15
"""How much wider than the structure the rough outline is, as a share of the radius of the disc
of the structure's area (a disc grown so has IoU 1 / 1.15² ≈ 0.76 with it)."""


def rough_outline(truth: Any) -> Any:
    """The :data:`ROUGH` start: ``truth`` grown by :data:`ROUGH_GROWTH` of its equivalent
    radius (at least 2 pixels), as uint8."""
    from scipy import ndimage

    fg = np.asarray(truth) > 0
    grow = max(2.0, ROUGH_GROWTH * float(np.sqrt(fg.sum() / np.pi)))
    return (ndimage.distance_transform_edt(~fg) <= grow).astype(np.uint8)


def bounding_box(truth: Any) -> tuple[int, int, int, int]:
    """``(y0, x0, y1, x1)``, end exclusive, of the mask's foreground."""
    ys, xs = np.nonzero(truth)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def click_run(
    predictor: Any, frame: Any, truth: Any, task: str | None, start: Any, zoom: bool = True
) -> tuple[list[float], list[int]]:
    """IoU after 0..k clicks (until 0.90 and at least 5 clicks) and per-click milliseconds;
    ``start`` :data:`BOX`: from the box alone, the box kept with every click."""
    from propl.interactive import MAX_CLICKS, Refiner, simulate

    refiner = Refiner(predictor, frame, task, zoom=zoom)
    times: list[int] = []
    box = None
    if isinstance(start, str) and start == BOX:
        box = bounding_box(truth)
        start = refiner.refine(None, [], box=box)[0]

    def refine(mask: Any, clicks: Any) -> Any:
        t0 = time.perf_counter_ns()
        out = refiner.refine(mask, clicks, box=box)[0]
        times.append(time.perf_counter_ns() - t0)
        return out

    ious = simulate(refine, truth, start, MAX_CLICKS, stop_at=max(THRESHOLDS), min_clicks=5)
    return ious, times


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """NoC, NoF, mIoU@k and the brush baseline over a set's runs."""
    from propl.interactive import MAX_CLICKS, noc

    out: dict[str, Any] = {"n": len(runs)}
    for thr in THRESHOLDS:
        key = f"{round(thr * 100)}"
        nocs = [noc(r["ious"], thr) for r in runs]
        out[f"noc{key}"] = float(np.mean(nocs))
        out[f"nof{key}"] = float(np.mean([n >= MAX_CLICKS for n in nocs]))
        out[f"brush{key}_px"] = float(np.mean([r[f"brush{key}"] for r in runs]))
        out[f"brush{key}_pct_area"] = float(
            np.mean([100 * r[f"brush{key}"] / r["area"] for r in runs])
        )
    for k in CLICKS_AT:
        out[f"miou@{k}"] = float(np.mean([r["ious"][min(k, len(r["ious"]) - 1)] for r in runs]))
    return out


def run_set(
    predictor: Any,
    scans: list[tuple[str, Any, Any]],
    task: str | None,
    starts: dict[str, Callable[[Any], Any]],
    times: list[int],
    zoom: bool = True,
) -> dict[str, Any]:
    """Every start of every scan of one set: the summary per start."""
    from propl.interactive import brush_pixels

    result: dict[str, Any] = {}
    for name, start_of in starts.items():
        runs = []
        for sid, frame, truth in scans:
            start = start_of(frame)
            if isinstance(start, str) and start == ROUGH:
                start = rough_outline(truth)
            ious, ms = click_run(predictor, frame, truth, task, start, zoom)
            if name == BOX:
                start = None  # the brush starts from nothing: a box is not a mask
            times.extend(ms)
            runs.append(
                {
                    "id": sid,
                    "ious": ious,
                    "area": int(truth.sum()),
                    **{f"brush{round(t * 100)}": brush_pixels(start, truth, t) for t in THRESHOLDS},
                }
            )
        result[name] = summarise(runs)
        s = result[name]
        print(
            f"  {task or 'no task'} from {name}: NoC@85 {s['noc85']:.2f} NoC@90 {s['noc90']:.2f} "
            f"mIoU@0/1/3/5 {s['miou@0']:.3f}/{s['miou@1']:.3f}/{s['miou@3']:.3f}/"
            f"{s['miou@5']:.3f} (n={s['n']})",
            flush=True,
        )
    return result


def latency(
    predictors: dict[str, Any],
    refiner_predictor: Any,
    frames: list[Any],
    tasks: list[str],
    repeats: int,
    zoom: bool = True,
) -> dict[str, Any]:
    """Per-click refinement vs plain prediction, alternating on the same frames (ms); the
    third click zooms in (a second encoding) unless ``zoom`` is False."""
    from propl.interactive import Click, Refiner

    stats: dict[str, list[float]] = {"refine_click": [], "encode_frame": []}
    stats |= {f"predict_{k}": [] for k in predictors}
    for frame, task in zip(frames, tasks, strict=True):
        h, w = frame.shape[:2]
        t0 = time.perf_counter()
        refiner = Refiner(refiner_predictor, frame, task, zoom=zoom)
        stats["encode_frame"].append(1e3 * (time.perf_counter() - t0))
        clicks = [Click(h / 2, w / 2, True), Click(h / 3, w / 3, False), Click(h / 2, w / 3)]
        mask = None
        for _ in range(repeats):
            for name, predictor in predictors.items():
                t0 = time.perf_counter()
                predictor.predict(frame, task)
                stats[f"predict_{name}"].append(1e3 * (time.perf_counter() - t0))
            for k in range(1, len(clicks) + 1):
                t0 = time.perf_counter()
                mask = refiner.refine(mask, clicks[:k])[0]
                stats["refine_click"].append(1e3 * (time.perf_counter() - t0))
    return {
        k: {"median_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95)), "n": len(v)}
        for k, v in stats.items()
    }


def auto_identical(old: Any, new: Any, scans: dict[str, list[tuple[str, Any, Any]]]) -> bool:
    """Whether two predictors' automatic masks and probabilities are bit-identical."""
    import torch

    for task, items in scans.items():
        for _, frame, _ in items[:3]:
            torch.manual_seed(0)  # the same MC-dropout masks for both
            a = old.predict(frame, task)
            torch.manual_seed(0)
            b = new.predict(frame, task)
            for field in ("mask", "probability", "uncertainty", "confidence"):
                if not np.array_equal(getattr(a, field), getattr(b, field)):
                    print(f"  {task}: {field} differs", flush=True)
                    return False
    return True


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"`{doc['command']}` — model `{doc['model']}`, CPU, {doc['threads']} threads. Simulated "
        "annotator: largest error region, deepest interior point (Xu et al. 2016 / RITM "
        "protocol), at most 20 clicks; brush = fewest pixels repainted in the start mask to "
        "reach the IoU. Test splits, scans with a non-empty mask. "
        + (
            "Zoom-in from the second click (the refiner's default)."
            if doc.get("zoom", True)
            else "No zoom-in: every click refined on the whole frame."
        ),
        "",
        "| set | start | n | NoC@85 | NoC@90 | NoF@90 | mIoU@0 | @1 | @3 | @5 "
        "| brush px @85 | @90 | brush % area @90 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, starts in doc["sets"].items():
        for start, s in starts.items():
            lines.append(
                f"| {name} | {start} | {s['n']} | {s['noc85']:.2f} | {s['noc90']:.2f} | "
                f"{100 * s['nof90']:.0f}% | {s['miou@0']:.3f} | {s['miou@1']:.3f} | "
                f"{s['miou@3']:.3f} | {s['miou@5']:.3f} | {s['brush85_px']:.0f} | "
                f"{s['brush90_px']:.0f} | {s['brush90_pct_area']:.0f}% |"
            )
    t = doc["targets"]
    lines += [
        "",
        f"Mean over the five tasks: from the pseudo-label NoC@90 **{t['pseudo_noc90']:.2f}** "
        f"(target ≤ 3: {'met' if t['pseudo_noc90'] <= 3 else 'missed'}); from an empty mask "
        f"NoC@85 **{t['empty_noc85']:.2f}** (target ≤ 4: "
        f"{'met' if t['empty_noc85'] <= 4 else 'missed'})",
    ]
    if t.get("new_task_noc85") is not None:
        ok = "met" if t["new_task_noc85"] <= 6 else "missed"
        lines[-1] += f"; unseen nerve from empty NoC@85 **{t['new_task_noc85']:.2f}** (≤ 6: {ok})"
    lines[-1] += "."
    if t.get("rough_noc90") is not None:
        lines[-1] += (
            f" From a rough outline (start `{ROUGH}`: the expert mask grown by "
            f"{100 * ROUGH_GROWTH:.0f} % of its radius), NoC@90 **{t['rough_noc90']:.2f}** "
            "over the five tasks"
            + (
                f"; on the unseen nerve NoC@85 **{t['new_task_rough_noc85']:.2f}**."
                if t.get("new_task_rough_noc85") is not None
                else "."
            )
        )
    if t.get("box_miou0") is not None:
        lines[-1] += (
            f" From the structure's bounding box alone (start `box`), mean IoU "
            f"**{t['box_miou0']:.3f}** over the five tasks."
        )
    if doc.get("limit"):
        lines += [
            "",
            f"Limited run: the first {doc['limit']} test scans with a mask per set (split order).",
        ]
    load = ", ".join(f"{x:.1f}" for x in doc.get("load_average", []))
    lines += [
        "",
        f"Latency (ms, CPU, alternating, medians of repeats; machine load average {load} on a "
        "shared 2-core CPU, so absolute times vary with the other jobs):",
        "",
    ]
    lines += ["| what | median | p95 | n |", "|---|---|---|---|"]
    for k, v in doc["latency"].items():
        lines.append(f"| {k} | {v['median_ms']:.1f} | {v['p95_ms']:.1f} | {v['n']} |")
    click = doc["click_latency_benchmark_runs"]
    lines += [
        "",
        f"Per-click time over all benchmark clicks: median {click['median_ms']:.1f} ms, "
        f"p95 {click['p95_ms']:.1f} ms (n = {click['n']}; the 50 ms target is for the median).",
    ]
    if doc.get("auto_identical") is not None:
        lines += [
            "",
            f"Automatic segmentation vs `{doc['baseline']}` on 3 test scans per task: "
            f"{'bit-identical' if doc['auto_identical'] else 'DIFFERENT'}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/us-universal")
    ap.add_argument(
        "--new-task", type=Path, default=ROOT.parent / "shared/datasets/us-new-task-dev"
    )
    ap.add_argument("--model", default="shipped", help="checkpoint with a refinement head")
    ap.add_argument("--baseline", help="checkpoint whose automatic segmentation must be equal")
    ap.add_argument("--limit", type=int, help="at most N scans per set (quick runs)")
    ap.add_argument("--repeats", type=int, default=5, help="latency repeats per frame")
    ap.add_argument(
        "--no-zoom", action="store_true", help="refine on the whole frame at every click"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "clicks")
    args = ap.parse_args(argv)

    import torch

    from propl.data.benchmark import BenchmarkFolder
    from propl.inference import Predictor, resolve_model

    torch.set_num_threads(2)
    path = resolve_model(args.model)
    predictor = Predictor.from_checkpoint(path, device="cpu", uncertainty="none")
    folder = BenchmarkFolder(args.data)
    tasks = [t for t in folder.task_ids() if t in predictor.tasks]
    scans = {t: load_scans(folder, t, args.limit) for t in tasks}
    times: list[int] = []
    sets: dict[str, Any] = {}
    for task in tasks:
        starts = {
            "pseudo-label": lambda frame, task=task: predictor.predict(frame, task).mask[0],
            "empty": lambda frame: None,
            BOX: lambda frame: BOX,
            ROUGH: lambda frame: ROUGH,
        }
        sets[task] = run_set(predictor, scans[task], task, starts, times, not args.no_zoom)
    if args.new_task.is_dir():
        new = BenchmarkFolder(args.new_task)
        for task in new.task_ids():
            items = load_scans(new, task, args.limit)
            sets[f"{task} (unseen)"] = run_set(
                predictor,
                items,
                None,
                {"empty": lambda frame: None, ROUGH: lambda frame: ROUGH},
                times,
                not args.no_zoom,
            )
    ms = np.array(times) / 1e6
    plain = {
        "mc": Predictor.from_checkpoint(path, device="cpu"),
        "none": predictor,
    }
    lat_frames = [scans[t][i][1] for t in tasks for i in range(min(2, len(scans[t])))]
    lat_tasks = [t for t in tasks for i in range(min(2, len(scans[t])))]
    doc: dict[str, Any] = {
        "command": COMMAND
        + (f" --model {args.model}" if args.model != "shipped" else "")
        + (f" --baseline {args.baseline}" if args.baseline else "")
        + (f" --limit {args.limit}" if args.limit else "")
        + (" --no-zoom" if args.no_zoom else "")
        + (
            f" --out {args.out.resolve().relative_to(ROOT)}"
            if args.out.resolve() != RESULTS / "clicks"
            else ""
        ),
        "model": str(args.model),
        "threads": torch.get_num_threads(),
        "limit": args.limit,
        "zoom": not args.no_zoom,
        "load_average": list(os.getloadavg()),
        "sets": sets,
        "click_latency_benchmark_runs": {
            "median_ms": float(np.median(ms)),
            "p95_ms": float(np.percentile(ms, 95)),
            "n": int(len(ms)),
        },
        "latency": latency(plain, predictor, lat_frames, lat_tasks, args.repeats, not args.no_zoom),
    }
    known = [sets[t] for t in tasks]
    unseen = [v for k, v in sets.items() if k.endswith("(unseen)")]
    doc["targets"] = {
        "pseudo_noc90": float(np.mean([s["pseudo-label"]["noc90"] for s in known])),
        "empty_noc85": float(np.mean([s["empty"]["noc85"] for s in known])),
        "new_task_noc85": unseen[0]["empty"]["noc85"] if unseen else None,
        "box_miou0": float(np.mean([s[BOX]["miou@0"] for s in known])),
        "rough_noc90": float(np.mean([s[ROUGH]["noc90"] for s in known])),
        "new_task_rough_noc85": unseen[0][ROUGH]["noc85"] if unseen else None,
    }
    if args.baseline:
        old = Predictor.from_checkpoint(resolve_model(args.baseline), device="cpu")
        doc["baseline"] = args.baseline
        doc["auto_identical"] = auto_identical(old, plain["mc"], scans)
    from propl.results import write_results

    print(write_results(args.out, doc, markdown(doc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
