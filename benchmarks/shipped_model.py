"""Score a candidate universal model on the test split and ship it only if it is better.

    python benchmarks/shipped_model.py --data DATA --candidate runs/shipped/packed [--install]

Evaluates the candidate (fp16 checkpoint folder) and the model now in the package on every
us-universal task's test split (stored resolution; protocol in docs/method.md). With
``--install`` the candidate replaces the packaged model when it has the higher test mDice (or
there is none).
Writes ``benchmarks/results/shipped-model.json`` (``mdice``/``per_task`` keys like the SSL
results) and ``shipped-model.md`` for the README, both describing the model that ships.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TRAIN_COMMAND = "benchmarks/shipped_model.sh [DATA]"


def score(model: Path, data: Path, device: str) -> dict[str, Any]:
    from tqdm import tqdm

    from propl.checkpoint import load_checkpoint
    from propl.data.benchmark import BenchmarkFolder
    from propl.evaluate import evaluate_folder
    from propl.inference import Predictor

    predictor = Predictor.from_checkpoint(model, device=device)
    bar = tqdm(desc=f"test {model}", unit="scan", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    t0 = time.perf_counter()
    result = evaluate_folder(predictor, BenchmarkFolder(data), "test", progress=progress)
    bar.close()
    ckpt = load_checkpoint(model)
    weights = model / "model.safetensors"
    result["model"] = {
        "version": predictor.version,
        "input_size": int(ckpt.config["input_size"]),
        "tasks": list(ckpt.config["tasks"]),
        "size_mb": round(weights.stat().st_size / 1e6, 2),
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "train": ckpt.metadata.get("train", {}),
        "validation": ckpt.metadata.get("val", {}),
        "packed_from": ckpt.metadata.get("packed_from"),
    }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["device"] = str(predictor.device)
    return result


def install(candidate: Path, target: Path) -> None:
    """Replace ``target`` by a copy of ``candidate`` (copied beside it, then renamed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".universal."))
    for name in ("model.safetensors", "model.json"):
        shutil.copy2(candidate / name, tmp / name)
    old = target.with_name(target.name + ".old")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def table(doc: dict[str, Any]) -> str:
    m = doc["model"]
    rows = [
        f"Shipped model `{m['version']}`: {m['size_mb']} MB fp16, input {m['input_size']}², "
        f"trained with `{doc['trained_with']}`; test split, stored resolution.",
        "",
        "| task | scans | Dice % | IoU % | HD95 px |",
        "|---|---|---|---|---|",
    ]
    for task, r in doc["per_task"].items():
        rows.append(f"| {task} | {r['n']} | {r['dice']:.2f} | {r['iou']:.2f} | {r['hd95']:.1f} |")
    rows.append(f"| **mean** | | **{doc['mdice']:.2f}** | {doc['miou']:.2f} | |")
    prev = doc.get("previous")
    if prev:
        rows += ["", f"Model it replaced or was compared with: test mDice {prev['mdice']:.2f}."]
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--candidate", type=Path, required=True, help="packed checkpoint folder")
    parser.add_argument("--install", action="store_true", help="ship the candidate if better")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--trained-with", default=TRAIN_COMMAND, help="the command that trained the candidate"
    )
    args = parser.parse_args()

    from propl.inference import SHIPPED_MODEL, default_model_path
    from propl.results import write_json

    cand = score(args.candidate, args.data, args.device)
    current = default_model_path()
    prev = None
    if current is not None:
        same = (current / "model.safetensors").read_bytes() == (
            args.candidate / "model.safetensors"
        ).read_bytes()
        prev = cand if same else score(current, args.data, args.device)
    better = prev is None or cand["mdice"] > prev["mdice"]
    shipped = cand if (args.install and better) else (prev or cand)
    doc = dict(shipped)
    doc["decision"] = (
        "candidate installed"
        if args.install and better and prev is not cand
        else "candidate is the shipped model"
        if prev is cand
        else "candidate better; not installed (no --install)"
        if better
        else "kept the shipped model (candidate not better)"
    )
    if shipped is cand:
        doc["trained_with"] = args.trained_with
    else:  # the packaged model stays: keep what its results file says about it
        old = RESULTS / "shipped-model.json"
        doc["trained_with"] = (
            json.loads(old.read_text()).get("trained_with", "?") if old.is_file() else "?"
        )
    doc["candidate"] = {k: cand[k] for k in ("mdice", "miou", "per_task", "model")}
    if prev is not None and prev is not cand:
        doc["previous"] = {k: prev[k] for k in ("mdice", "miou", "per_task", "model")}
    doc["command"] = (
        f"python benchmarks/shipped_model.py --data DATA --candidate {args.candidate} --install"
    )
    write_json(RESULTS / "shipped-model.json", doc)
    (RESULTS / "shipped-model.md").write_text(table(doc))
    if args.install and better and prev is not cand:
        install(args.candidate, SHIPPED_MODEL)
    print(json.dumps({k: doc[k] for k in ("mdice", "decision")}, indent=2))


if __name__ == "__main__":
    main()
