"""Where a training step's time goes on a GPU, and whether cheap switches shorten it.

    python benchmarks/gpu_profile.py --out DIR [--device cuda] [--methods supervised propl]

For each method, at the ``full`` profile's size and batch on synthetic scans (as
``gpu_throughput.py``):

1. ``torch.profiler`` over ``--active`` steps (after a few warm-up steps): the wall time per step,
   the GPU's busy time per step (the sum of its kernels' times) and the kernels launched per step.
   A GPU busy for a small part of the step means the step is bound by Python and kernel launches,
   not by arithmetic. The profiler's top operators go to ``DIR/profile-<method>.txt``.
2. Median step time with each switch, alternating the variants over ``--repeats`` rounds (the
   order rotates every round; the committed results of 2026-12-04 predate that):
   ``base``; ``cudnn_benchmark`` (cuDNN picks its fastest convolution per shape);
   ``channels_last`` (model in NHWC memory layout); ``fused_adamw`` (AdamW's fused CUDA
   kernel); ``all`` three.

Writes ``DIR/gpu-profile.json``. Run on a lent GPU (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, schedule

from propl.bench.profiles import PROFILES
from propl.device import select_device
from propl.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from gpu_throughput import synthetic_trainer  # noqa: E402  (benchmarks/gpu_throughput.py)

# (cudnn.benchmark, channels-last model, fused AdamW); "base" is the trainer's step before the
# fused optimiser became its CUDA default (commit 6638d99)
VARIANTS = {
    "base": (False, False, False),
    "cudnn_benchmark": (True, False, False),
    "channels_last": (False, True, False),
    "fused_adamw": (False, False, True),
    "all": (True, True, True),
}


def make_trainer(method: str, device: torch.device, size: int, batch: int, steps: int,
                 channels_last: bool = False, fused: bool = False) -> Trainer:  # fmt: skip
    trainer = synthetic_trainer(method, device, size, batch, steps, channels_last)
    # the update in one fused kernel, or (False) one kernel per operation over lists of tensors
    groups = [{k: g[k] for k in ("params", "lr", "initial_lr")}
              for g in trainer.optimizer.param_groups]  # fmt: skip
    trainer.optimizer = torch.optim.AdamW(
        groups, weight_decay=trainer.config.weight_decay, fused=fused, foreach=not fused
    )
    return trainer


def step_times(trainer: Trainer) -> list[float]:
    stamps = [time.perf_counter() for e in trainer.run() if e.kind == "step"]
    return np.diff(stamps).tolist()


def profile_steps(method: str, device: torch.device, size: int, batch: int, active: int,
                  out: Path) -> dict[str, float]:  # fmt: skip
    wait, warmup = 3, 3
    trainer = make_trainer(method, device, size, batch, wait + warmup + active + 1)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    stamps = []
    with profile(activities=activities, schedule=schedule(wait=wait, warmup=warmup,
                 active=active, repeat=1)) as prof:  # fmt: skip
        for event in trainer.run():
            if event.kind == "step":
                stamps.append(time.perf_counter())
                prof.step()
    events = prof.key_averages()
    # GPU-side events only, not the CPU's annotations that span them (as the table's footer)
    gpu = [e for e in events if e.device_type.name == "CUDA" and not e.is_user_annotation]
    busy_us = sum(e.self_device_time_total for e in gpu)
    kernels = sum(e.count for e in gpu)
    wall = np.diff(stamps[wait + warmup : wait + warmup + active + 1])
    result = {
        "wall_ms_per_step": round(float(np.median(wall)) * 1000, 2),
        "gpu_busy_ms_per_step": round(busy_us / 1000 / active, 2),
        "kernels_per_step": round(kernels / active),
    }
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    text = events.table(sort_by="self_cpu_time_total", row_limit=30)
    text += "\n\n" + events.table(sort_by=sort, row_limit=20)
    (out / f"profile-{method}.txt").write_text(text)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--methods", nargs="+", default=["supervised", "propl"])
    p.add_argument("--active", type=int, default=10, help="profiled steps")
    p.add_argument("--steps", type=int, default=25, help="steps per timed variant")
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds of the variants")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--size", type=int)
    p.add_argument("--batch", type=int)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = select_device(args.device)
    size, batch = args.size or PROFILES["full"].size, args.batch or PROFILES["full"].batch
    doc: dict = {"device": str(device), "torch": torch.__version__, "size": size, "batch": batch,
                 "profile": {}, "variants_ms_per_step": {}}  # fmt: skip
    if device.type == "cuda":
        doc["device"] = torch.cuda.get_device_name(device)
    path = args.out / "gpu-profile.json"
    for method in args.methods:
        doc["profile"][method] = profile_steps(method, device, size, batch, args.active, args.out)
        print(method, doc["profile"][method], file=sys.stderr, flush=True)
        path.write_text(json.dumps(doc, indent=1))
    for method in args.methods:
        times: dict[str, list[float]] = {v: [] for v in args.variants}
        for r in range(args.repeats):  # the order rotates: a machine that drifts hits all
            k = r % len(args.variants)
            for name in args.variants[k:] + args.variants[:k]:
                bench, last, fused = VARIANTS[name]
                torch.backends.cudnn.benchmark = bench
                trainer = make_trainer(method, device, size, batch, args.steps, last, fused)
                times[name] += step_times(trainer)[5:]  # the first steps warm up (and tune)
        torch.backends.cudnn.benchmark = False
        med = {v: statistics.median(t) * 1000 for v, t in times.items()}
        doc["variants_ms_per_step"][method] = {
            v: {"ms": round(m, 2), "ratio_to_base": round(m / med["base"], 3)}
            for v, m in med.items()
        }
        print(method, doc["variants_ms_per_step"][method], file=sys.stderr, flush=True)
        path.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
