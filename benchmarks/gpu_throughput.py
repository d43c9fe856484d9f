"""Training and inference speed on a GPU, at the ``full`` SSL profile's settings.

    python benchmarks/gpu_throughput.py --out gpu-throughput.json [--device cuda] [--steps 60]
    python benchmarks/gpu_throughput.py --table benchmarks/results/gpu-throughput.json


Each method trains for ``--steps`` steps of batch 16 (+ 16 unlabelled) at 224² on synthetic
scans (speed does not depend on what the scans show), bf16 autocast as in every CUDA run; the
median step time after the first ``--warmup`` steps gives steps/s, and from it the minutes the
8,000 training steps of one ``full`` profile run would take (its validations not counted).
Inference: one 256² frame with MC-dropout uncertainty, and frames of a batch of 16, median of
``--repeats`` calls.
Run by ``benchmarks/gpu.sh`` on a lent GPU; it writes JSON so that the next session can size its
GPU runs from measurements, and a markdown table beside it (``--table`` writes the table of an
existing JSON file without measuring) with the training minutes of the whole ``full`` SSL table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from propl.bench.profiles import PROFILES
from propl.data.synthetic import SYNTHETIC_TASKS, make_arrays
from propl.device import select_device
from propl.inference import Predictor
from propl.models import build_model
from propl.train.trainer import TrainConfig, Trainer

METHODS = ("supervised", "propl", "mean-teacher", "unimatch")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_trainer(method: str, device: torch.device, size: int, batch: int, steps: int,
                      channels_last: bool = False) -> Trainer:  # fmt: skip
    """A trainer of the full-size network on synthetic scans, ``batch`` labelled (+ ``batch``
    unlabelled) a step, no validation within ``steps`` (also used by ``gpu_profile.py``)."""
    lab, unlab = make_arrays(4 * batch, size, 0), make_arrays(4 * batch, size, 1)
    val = make_arrays(4, size, 2)
    torch.manual_seed(0)
    model = build_model("propl", tasks=SYNTHETIC_TASKS, input_size=size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    cfg = TrainConfig(method=method, steps=steps, batch_size=batch, unlabelled_batch_size=batch,
                      eval_every=steps + 1, device=str(device))  # fmt: skip
    return Trainer(model, cfg, lab, unlab, val)


def train_speed(method: str, device: torch.device, size: int, batch: int, steps: int,
                warmup: int) -> dict[str, float]:  # fmt: skip
    trainer = synthetic_trainer(method, device, size, batch, steps)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stamps = []
    for event in trainer.run():
        if event.kind == "step":  # the event follows the step's loss.item(): the GPU is done
            stamps.append(time.perf_counter())
    step_s = statistics.median(np.diff(stamps[warmup:]).tolist())
    full = PROFILES["full"]
    out = {
        "steps_per_s": round(1 / step_s, 2),
        "labelled_img_per_s": round(batch / step_s, 1),
        "full_profile_train_minutes": round(full.steps * step_s / 60, 1),
    }
    if device.type == "cuda":
        out["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return out


def infer_speed(device: torch.device, repeats: int) -> dict[str, float]:
    model = build_model("propl", tasks=SYNTHETIC_TASKS, input_size=256).eval()
    pred = Predictor(model, device=str(device), uncertainty="mc", mc_samples=4, batch_size=16)
    frames = np.random.default_rng(0).integers(0, 256, (16, 256, 256), dtype=np.uint8)
    out = {}
    for name, x in (("ms_one_frame_256_mc", frames[:1]), ("ms_per_frame_batch16_256_mc", frames)):
        for _ in range(3):
            pred.predict(x, SYNTHETIC_TASKS[0])
        times = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            pred.predict(x, SYNTHETIC_TASKS[0])  # returns NumPy arrays: synchronised
            times.append((time.perf_counter() - t0) * 1000 / len(x))
        out[name] = round(statistics.median(times), 2)
    return out


def markdown(doc: dict) -> str:
    """The table for the README: per method, and the whole ``full`` SSL table's training time
    (every method at 1/16 and 1/8 labels, plus full supervision, whose step is supervised's)."""
    train = doc["train"]
    rows = [
        f"| {m} | {r['steps_per_s']} | {r['labelled_img_per_s']} | "
        f"{r['full_profile_train_minutes']} | {r.get('peak_mem_mb', '-')} |"
        for m, r in train.items()
    ]
    lines = [
        f"{doc['device']}, torch {doc['torch']}, {doc['size']}² input, {doc['batch']} labelled "
        f"scans a step (+ {doc['batch']} unlabelled for the semi-supervised methods), bf16 "
        "autocast, synthetic scans "
        f"(`benchmarks/results/gpu-throughput.json`).",
        "",
        "| method | steps/s | labelled img/s | min per `full` run (training only) | peak GPU MB |",
        "|---|---|---|---|---|",
        *rows,
    ]
    if all(m in train for m in METHODS):
        per_run = {m: train[m]["full_profile_train_minutes"] for m in METHODS}
        total = 2 * sum(per_run.values()) + per_run["supervised"]
        lines += ["", f"The whole `full` SSL table (9 runs): **{total:.0f} min** of training."]
    if "inference" in doc:
        inf = doc["inference"]
        lines += [
            "",
            f"Inference with MC-dropout uncertainty (T = 4), 256²: one frame "
            f"{inf['ms_one_frame_256_mc']} ms; per frame in a batch of 16 "
            f"{inf['ms_per_frame_batch16_256_mc']} ms.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="JSON results (and the markdown table beside it)")
    p.add_argument("--table", type=Path, help="only write the table of this results file")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--size", type=int, help="input side (default: the full profile's)")
    p.add_argument("--batch", type=int, help="batch (default: the full profile's)")
    args = p.parse_args(argv)
    if args.table is not None:
        doc = json.loads(args.table.read_text())
        args.table.with_suffix(".md").write_text(markdown(doc))
        return 0
    if args.out is None:
        p.error("--out or --table is required")
    if args.steps <= args.warmup + 1:
        p.error("--steps must exceed --warmup + 1")
    device = select_device(args.device)
    full = PROFILES["full"]
    doc: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "size": args.size or full.size,
        "batch": args.batch or full.batch,
        "steps_timed": args.steps - args.warmup - 1,
        "train": {},
    }
    for method in args.methods:
        doc["train"][method] = train_speed(
            method, device, doc["size"], doc["batch"], args.steps, args.warmup
        )
        print(method, doc["train"][method], file=sys.stderr, flush=True)
        args.out.write_text(json.dumps(doc, indent=1))  # partial results survive a timeout
    doc["inference"] = infer_speed(device, args.repeats)
    print(doc["inference"], file=sys.stderr)
    args.out.write_text(json.dumps(doc, indent=1))
    args.out.with_suffix(".md").write_text(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
