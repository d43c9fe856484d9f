"""The semi-supervised benchmark: every method, same data, labels, budget and seed.

Each run trains on a labelled subset of every task's train split (the rest unlabelled), picks
its checkpoint on a validation part of the train split, and is scored once on the test split at
the stored resolution. Results are written after every run (so a long benchmark can be resumed)
to ``<results>/ssl-<profile>.json`` and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..data.benchmark import BenchmarkFolder, parse_labelled
from ..device import select_device
from ..evaluate import evaluate_folder
from ..files import atomic_write_bytes
from ..inference import Predictor
from ..results import write_json
from ..train.methods import MethodOptions, method_options
from ..train.recipe import init_model, prepare_data
from ..train.trainer import TrainConfig, Trainer
from .profiles import PROFILES, Profile

METHODS = ("supervised", "propl", "mean-teacher", "unimatch", "full")


def run_one(
    folder: BenchmarkFolder,
    tasks: list[str],
    method: str,
    labelled: str,
    seed: int,
    profile: Profile,
    device: str,
    run_dir: Path,
    cache: Path | None,
    options: MethodOptions | None = None,
) -> dict[str, Any]:
    """Train one method and score it on the test split; returns one ``runs`` row."""
    fraction = Fraction(1) if method == "full" else parse_labelled(labelled)
    model = init_model(tasks, profile.arch, seed=seed, input_size=profile.size)
    data = prepare_data(
        folder, tasks, fraction, seed, profile.size, cache_dir=cache, progress=False
    )
    config = TrainConfig(
        method=method,
        steps=profile.steps,
        batch_size=profile.batch,
        unlabelled_batch_size=profile.batch,
        seed=seed,
        device=device,
        eval_every=profile.eval_every,
        options=options or MethodOptions(),
    )
    trainer = Trainer(model, config, data.labelled, data.unlabelled, data.val, run_dir)
    t0, rate = time.perf_counter(), 0.0
    bar = tqdm(total=profile.steps, desc=f"{method} {labelled}", unit="step", file=sys.stderr)
    for event in trainer.run():
        if event.kind == "step":
            rate = event.data["img_per_s"]
            bar.update(1)
    bar.close()
    train_s = time.perf_counter() - t0
    predictor = Predictor.from_checkpoint(run_dir / "best", device=device, uncertainty="mc")
    scores = evaluate_folder(predictor, folder, "test", tasks)
    return {
        "method": method,
        "labelled": "all" if method == "full" else labelled,
        "seed": seed,
        "mdice": scores["mdice"],
        "miou": scores["miou"],
        "per_task": {
            t: {k: v[k] for k in ("dice", "iou", "hd95")} for t, v in scores["per_task"].items()
        },
        "val_mdice": trainer.best["mdice"],
        "best_step": trainer.best["step"],
        "n_labelled": len(data.labelled.images),
        "n_unlabelled": len(data.unlabelled.images),
        "train_seconds": round(train_s, 1),
        "img_per_s": round(rate, 2),
        "ece": scores["ece"],
        "uncertainty_auroc": scores["uncertainty_auroc"],
        **variant_of(method, options or MethodOptions()),
    }


VARIANT_FIELDS: dict[str, Any] = {
    "pseudo_label": "uplc",
    "view": "weak",
    "teacher": "self",
    "unsup_weight": 6.0,
}
"""ProPL's options recorded with each run, and the paper's setting of each."""


def variant_of(method: str, opts: MethodOptions) -> dict[str, Any]:
    """The ProPL options of a run (None for the other methods, which ignore them)."""
    return {f: getattr(opts, f) if method == "propl" else None for f in VARIANT_FIELDS}


def _variant_values(run: dict[str, Any]) -> tuple[Any, ...]:
    """A run's ProPL options; rows written before an option existed had the paper's setting."""
    propl = run["method"] == "propl"
    return tuple(
        run[f] if run.get(f) is not None else (default if propl else None)
        for f, default in VARIANT_FIELDS.items()
    )


def _variant_parts(run: dict[str, Any], folder: bool = False) -> list[str]:
    """The ProPL options that differ from the paper's (none for the other methods), as words
    for a table ("weight 1") or for a folder name ("w1")."""
    parts = []
    for field, value in zip(VARIANT_FIELDS, _variant_values(run), strict=True):
        if value is None or value == VARIANT_FIELDS[field]:
            continue
        if field == "unsup_weight":
            parts.append(f"w{value:g}" if folder else f"weight {value:g}")
        else:
            parts.append(str(value))
    return parts


def variant_name(opts: MethodOptions) -> str:
    """Run-folder suffix of a non-default ProPL variant ("" for the paper's settings)."""
    return "".join(
        f"-{p}"
        for p in _variant_parts({"method": "propl", **variant_of("propl", opts)}, folder=True)
    )


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _key(run: dict[str, Any]) -> tuple:
    return (run["method"], run["labelled"], run["seed"], *_variant_values(run))


def run_ssl_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    profile = PROFILES[args.profile]
    folder = BenchmarkFolder(args.data)
    tasks = folder.task_ids()
    results_dir = Path(args.results)
    out = results_dir / f"ssl-{args.profile}.json"
    doc = _load(out) or {"profile": args.profile, "runs": []}
    doc |= {
        "profile": args.profile,
        "device": str(select_device(args.device)),
        "settings": profile.__dict__,
        "tasks": tasks,
        "command": f"propl benchmark ssl --data DATA --profile {args.profile}",
    }
    done = {_key(r) for r in doc["runs"]}
    plan = [
        (m, lab)
        for lab in (args.labelled or ["1/16", "1/8"])
        for m in (args.methods or METHODS)
        if m != "full"
    ]
    if "full" in (args.methods or METHODS):
        plan.append(("full", "all"))
    opts = method_options(args)
    for method, lab in plan:
        key = _key(
            {"method": method, "labelled": lab, "seed": args.seed, **variant_of(method, opts)}
        )
        if key in done:
            print(f"skip {method} {lab} (already in {out})", file=sys.stderr)
            continue
        variant = variant_name(opts) if method == "propl" else ""
        run_dir = (
            Path("runs")
            / "bench"
            / f"{args.profile}-{method}{variant}-{lab.replace('/', 'of')}-s{args.seed}"
        )
        row = run_one(
            folder, tasks, method, lab, args.seed, profile, args.device, run_dir, args.cache, opts
        )
        doc["runs"] = [r for r in doc["runs"] if _key(r) != key] + [row]
        write_json(out, doc)
        atomic_write_bytes(out.with_suffix(".md"), ssl_markdown(doc).encode())
        print(f"{method} {lab}: mDice {row['mdice']:.2f}", file=sys.stderr)
    print(ssl_markdown(doc))
    return doc


def run_name(run: dict[str, Any]) -> str:
    """``propl (weighted, strong)``: the method and its non-default ProPL options."""
    parts = _variant_parts(run)
    return run["method"] + (f" ({', '.join(parts)})" if parts else "")


def seed_summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method and label fraction run with two seeds or more: mean mDice over the seeds and
    the paired difference to supervised training on the same labels and seeds (the seed draws
    the labelled subset, so only same-seed differences compare like with like)."""
    groups: dict[tuple[str, str], dict[int, float]] = {}
    for r in runs:
        groups.setdefault((run_name(r), r["labelled"]), {})[r["seed"]] = r["mdice"]
    rows = []
    for (name, lab), by_seed in groups.items():
        if len(by_seed) < 2:
            continue
        base = groups.get(("supervised", lab), {})
        diffs = [v - base[s] for s, v in sorted(by_seed.items()) if s in base]
        rows.append(
            {
                "method": name,
                "labelled": lab,
                "seeds": sorted(by_seed),
                "mdice_mean": sum(by_seed.values()) / len(by_seed),
                "mdice_min": min(by_seed.values()),
                "mdice_max": max(by_seed.values()),
                "vs_supervised": diffs if name != "supervised" and len(diffs) >= 2 else None,
            }
        )
    return rows


def ssl_markdown(doc: dict[str, Any]) -> str:
    """The results as a markdown table: one row per run, Dice per task and mDice; then, where
    a method ran with several seeds, its mean and its paired difference to supervised."""
    tasks = doc.get("tasks", [])
    head = (
        "| method | labels | seed | "
        + " | ".join(tasks)
        + " | mDice | mIoU | mHD95 (px) | val mDice |"
    )
    lines = [
        f"Profile `{doc['profile']}` on {doc.get('device')}, seed(s) "
        f"{sorted({r['seed'] for r in doc['runs']})}; Dice % on the test split.",
        "",
        head,
        "|" + "---|" * (len(tasks) + 7),
    ]
    order = {m: i for i, m in enumerate(METHODS)}
    runs = sorted(
        doc["runs"],
        key=lambda r: (
            r["labelled"] == "all",
            r["labelled"],
            order.get(r["method"], 99),
            run_name(r),
            r["seed"],
        ),
    )
    for r in runs:
        cells = [f"{r['per_task'].get(t, {}).get('dice', float('nan')):.1f}" for t in tasks]
        hd = [v["hd95"] for v in r["per_task"].values() if v.get("hd95") is not None]
        mhd = f"{sum(hd) / len(hd):.1f}" if hd else "–"
        lines.append(
            f"| {run_name(r)} | {r['labelled']} | {r['seed']} | "
            + " | ".join(cells)
            + f" | **{r['mdice']:.2f}** | {r['miou']:.2f} | {mhd} | {r['val_mdice']:.2f} |"
        )
    summary = seed_summary(runs)
    if summary:
        lines += [
            "",
            "Over seeds (each seed draws its own labelled subset and initialisation): mean mDice,"
            " range, and the difference to supervised training on the same labels and seed.",
            "",
            "| method | labels | seeds | mean mDice | min – max | vs supervised, mean (per seed) |",
            "|---|---|---|---|---|---|",
        ]
        for row in summary:
            d = row["vs_supervised"]
            vs = f"{sum(d) / len(d):+.2f} ({', '.join(f'{x:+.2f}' for x in d)})" if d else "–"
            lines.append(
                f"| {row['method']} | {row['labelled']} | {', '.join(map(str, row['seeds']))} | "
                f"**{row['mdice_mean']:.2f}** | {row['mdice_min']:.2f} – {row['mdice_max']:.2f} "
                f"| {vs} |"
            )
    return "\n".join(lines) + "\n"
