"""Speed benchmark: ProPL vs the plain U-Net reference, measured side by side in one run.

Timings alternate between candidates (the order rotates every repeat) so that load from other
processes hits all of them alike; we report medians and ratios. Peak memory is measured in a
fresh subprocess per candidate (peak resident set size above the idle interpreter with torch).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import atomic_write_bytes
from ..models import ProPLNet, build_model
from ..models.unet import UNet
from ..results import write_json

TASKS = ("breast_lesion", "thyroid_nodule", "fetal_head", "left_heart", "ovarian_tumor")


def _propl_model(input_size: int) -> ProPLNet:
    return build_model("propl", tasks=TASKS, input_size=input_size, pretrained=False)


def inference_candidates(
    frame_size: int = 256, only: str | None = None
) -> dict[str, Callable[[], Any]]:
    """Callables that each segment one ``frame_size``² frame, end to end from a numpy array.

    ``propl<S>_<mode>``: the network at input size S with uncertainty mode (mc: T=4);
    ``shipped_mc``: the model inside the package, at its own input size, as users run it.
    """
    from ..inference import Predictor, default_model_path

    frame = (np.random.default_rng(0).random((frame_size, frame_size)) * 255).astype(np.uint8)
    out: dict[str, Callable[[], Any]] = {}
    for size in (224, 256):
        if only not in (None, *(f"propl{size}_{m}" for m in ("mc", "disagreement", "none"))):
            continue
        model = _propl_model(size)
        for mode in ("mc", "disagreement", "none"):
            if only in (None, f"propl{size}_{mode}"):
                pred = Predictor(model, device="cpu", uncertainty=mode, mc_samples=4)
                out[f"propl{size}_{mode}"] = partial(pred.predict, frame, TASKS[0])
    shipped = default_model_path()
    if shipped is not None and only in (None, "shipped_mc"):
        pred = Predictor.from_checkpoint(shipped, device="cpu", uncertainty="mc", mc_samples=4)
        out["shipped_mc"] = partial(pred.predict, frame, pred.tasks[0])
    if only not in (None, "unet"):
        return out
    unet = UNet().eval()
    x = torch.from_numpy(frame).float().div(255).view(1, 1, frame_size, frame_size)

    def unet_infer() -> Any:
        with torch.inference_mode():
            return torch.sigmoid(unet(x)).numpy()

    out["unet"] = unet_infer
    return out


def training_candidates(
    size: int = 224, batch: int = 8, only: str | None = None
) -> dict[str, Callable[[], int]]:
    """Callables that each run one optimiser step and return the number of images it used.

    ProPL's step uses half the batch labelled and half unlabelled (T=3 dropout passes).
    ``propl_<method>``: the model placed as the trainer places it (channels-last on the CPU);
    ``propl_propl_nchw``: PyTorch's default layout, to measure what channels-last gains. The
    U-Net reference stays plain.
    """
    from ..device import place_model
    from ..train.methods import Batch, MethodOptions, build_method

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.7).float()
    t = torch.arange(batch) % len(TASKS)
    out: dict[str, Callable[[], int]] = {}
    for method, placed in (("supervised", True), ("propl", True), ("propl", False)):
        name = f"propl_{method}" + ("" if placed else "_nchw")
        if only not in (None, name):
            continue
        model = _propl_model(size).train()
        if placed:
            model = place_model(model, torch.device("cpu"))
        opt = torch.optim.AdamW(model.parameters(), 1e-4)
        m = build_method(method, model, MethodOptions(), gen)
        half = batch // 2
        b = (
            Batch(x[:half], y[:half], t[:half], x[half:], t[half:])
            if m.needs_unlabelled
            else Batch(x, y, t)
        )

        def step(m: Any = m, opt: Any = opt, b: Batch = b) -> int:
            loss, _ = m.loss(b, 0.5)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return batch

        out[name] = step
    if only not in (None, "unet"):
        return out
    unet = UNet().train()
    uopt = torch.optim.AdamW(unet.parameters(), 1e-4)

    def unet_step() -> int:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(unet(x), y)
        uopt.zero_grad()
        loss.backward()
        uopt.step()
        return batch

    out["unet"] = unet_step
    return out


def alternate(
    cands: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds per call for each candidate, alternating and rotating the order each repeat."""
    names = list(cands)
    for name in names:
        for _ in range(warmup):
            cands[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            cands[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def peak_memory_mb(kind: str, name: str) -> float:
    """Peak RSS growth (MB) of a fresh process that builds only candidate ``name`` and runs it
    3 times. The kernel's high-water mark is reset after imports (``/proc/self/clear_refs``), so
    the import of torch itself does not hide the model's peak."""
    threads = torch.get_num_threads()
    code = (
        f"import torch;torch.set_num_threads({threads});"
        f"from propl.bench.speed import {kind}_candidates as c, _vm;"
        "open('/proc/self/clear_refs','w').write('5');base=_vm('VmRSS');"
        f"f=c(only={name!r})[{name!r}];[f() for _ in range(3)];"
        "print((_vm('VmHWM')-base)/1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def _vm(field: str) -> int:
    """A ``/proc/self/status`` memory field in kB (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def train_repeats(repeats: int) -> int:
    """Training steps are ~50× longer than inference calls: half the repeats, at least 3."""
    return max(3, repeats // 2)


def run_speed_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    print(f"threads: {torch.get_num_threads()}, repeats: {args.repeats}", file=sys.stderr)
    inf = {
        k: statistics.median(v) * 1e3
        for k, v in alternate(inference_candidates(), args.repeats).items()
    }
    trn_cands = training_candidates()
    trn = {
        k: 8 / statistics.median(v)
        for k, v in alternate(trn_cands, train_repeats(args.repeats), warmup=1).items()
    }
    mem = {f"infer_{n}": peak_memory_mb("inference", n) for n in ("propl224_mc", "unet")}
    mem |= {f"train_{n}": peak_memory_mb("training", n) for n in ("propl_propl", "unet")}
    result = {
        "device": f"cpu ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__})",
        "frame": "256x256 uint8, end to end (resize in, network, resize out)",
        "infer_ms_256_with_uncertainty": round(inf["propl224_mc"], 1),
        "train_img_per_s_224": round(trn["propl_propl"], 2),
        "unet_reference": {
            "infer_ms_256": round(inf["unet"], 1),
            "train_img_per_s_224": round(trn["unet"], 2),
        },
        "infer_ms": {k: round(v, 1) for k, v in inf.items()},
        "train_img_per_s": {k: round(v, 2) for k, v in trn.items()},
        "ratios_vs_unet": {
            "infer_speedup_mc": round(inf["unet"] / inf["propl224_mc"], 2),
            "train_speedup_propl": round(trn["propl_propl"] / trn["unet"], 2),
        },
        "channels_last_train_speedup": round(trn["propl_propl"] / trn["propl_propl_nchw"], 2),
        "shipped_model": shipped_model_summary(inf),
        "peak_mem_mb": mem,
        "repeats": args.repeats,
        "command": f"propl benchmark speed --repeats {args.repeats}",
    }
    results = Path(args.results)
    write_json(results / "speed.json", result)
    atomic_write_bytes(results / "speed.md", speed_markdown(result).encode())
    print(speed_markdown(result))
    return result


def shipped_model_summary(inf: dict[str, float]) -> dict[str, Any] | None:
    """The shipped model's input size and MC inference time (None when the build has none)."""
    from ..checkpoint import read_config
    from ..inference import default_model_path

    shipped = default_model_path()
    if shipped is None or "shipped_mc" not in inf:
        return None
    size = int(read_config(shipped)["input_size"])
    return {"input_size": size, "infer_ms_256_mc": round(inf["shipped_mc"], 1)}


def speed_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Device: {r['device']}. Medians of alternating repeats: {r['repeats']} for "
        f"inference, {train_repeats(r['repeats'])} for training.",
        "",
        "| inference, one 256² frame | ms | vs U-Net |",
        "|---|---|---|",
    ]
    unet = r["infer_ms"]["unet"]
    for k, v in r["infer_ms"].items():
        lines.append(f"| {k} | {v} | {unet / v:.2f}× |")
    if r.get("shipped_model"):
        lines += [
            "",
            f"shipped_mc: the shipped model, at its input size "
            f"{r['shipped_model']['input_size']}², MC dropout T = 4.",
        ]
    lines += ["", "| training at 224² (batch 8) | img/s | vs U-Net |", "|---|---|---|"]
    u = r["train_img_per_s"]["unet"]
    for k, v in r["train_img_per_s"].items():
        lines.append(f"| {k} | {v} | {v / u:.2f}× |")
    lines += ["", "| peak memory | MB |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["peak_mem_mb"].items()]
    return "\n".join(lines) + "\n"
