"""The CUDA path: device choice, inference, bf16 training of every method, checkpoints that load
on the CPU, and training under torchrun with NCCL.

CI has no GPU, so every test here skips there. On a lent GPU ``benchmarks/gpu.sh`` runs them
(``python -m pytest tests/gpu``); see benchmarks/README.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from propl.checkpoint import load_checkpoint, save_checkpoint
from propl.data.benchmark import ArraySet
from propl.data.synthetic import SYNTHETIC_TASKS, make_arrays, write_benchmark_folder
from propl.device import select_device
from propl.inference import Predictor
from propl.models import build_model
from propl.train.losses import bce_dice
from propl.train.methods import METHODS
from propl.train.trainer import TrainConfig, Trainer, to_tensor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SIZE = 64


def arrays(n: int, seed: int) -> ArraySet:
    return make_arrays(n, SIZE, seed)


def new_model():
    torch.manual_seed(0)
    return build_model("propl-small", tasks=SYNTHETIC_TASKS, input_size=SIZE, pretrained=False)


def labelled_loss(model, lab: ArraySet) -> float:
    model = model.cpu().eval()
    with torch.no_grad():
        x = to_tensor(lab.images, torch.device("cpu"))
        y = torch.from_numpy(lab.masks).unsqueeze(1).float()
        return float(bce_dice(model(x, torch.from_numpy(lab.task_index))["d2"], y))


def test_auto_picks_cuda():
    assert select_device("auto").type == "cuda"
    assert select_device("cuda:0") == torch.device("cuda:0")


@pytest.mark.parametrize("uncertainty", ["none", "disagreement"])
def test_cuda_inference_matches_the_cpu(uncertainty, monkeypatch):
    """Deterministic modes (MC dropout draws differ per device): same mask and maps, in full
    float32 (TF32 convolutions, PyTorch's CUDA default, round to 10-bit mantissas)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = new_model().eval()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 90, 120), dtype=np.uint8)  # not the input size
    task = SYNTHETIC_TASKS[1]
    cpu = Predictor(model, device="cpu", uncertainty=uncertainty).predict(frames, task)
    gpu = Predictor(new_model().eval(), device="cuda", uncertainty=uncertainty)
    assert next(gpu.model.parameters()).is_cuda
    out = gpu.predict(frames, task)
    assert out.mask.shape == cpu.mask.shape == (3, 90, 120)
    np.testing.assert_allclose(out.probability, cpu.probability, atol=2e-3)
    np.testing.assert_allclose(out.uncertainty, cpu.uncertainty, atol=2e-3)
    np.testing.assert_allclose(out.confidence, cpu.confidence, atol=2e-3)
    clear = np.abs(cpu.probability - 0.5) > 1e-2  # only pixels at the threshold may flip
    assert np.array_equal(out.mask[clear], cpu.mask[clear])


def test_mc_uncertainty_runs_on_cuda():
    pred = Predictor(new_model().eval(), device="cuda", uncertainty="mc", mc_samples=4)
    out = pred.predict(np.zeros((2, 64, 64), np.uint8), SYNTHETIC_TASKS[0])
    assert np.isfinite(out.uncertainty).all() and out.uncertainty.max() > 0
    assert ((out.confidence >= 0) & (out.confidence <= 1)).all()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_bf16_training_on_cuda_lowers_the_loss(method, tmp_path):
    lab, unlab, val = arrays(8, 0), arrays(8, 1), arrays(4, 2)
    model = new_model()
    before = labelled_loss(model, lab)
    cfg = TrainConfig(method=method, steps=25, batch_size=4, unlabelled_batch_size=4, lr=3e-3,
                      eval_every=25, device="cuda", warmup=0.0, amp=True)  # fmt: skip
    trainer = Trainer(model, cfg, lab, unlab, val, tmp_path / "run")
    seen_bf16 = []

    def watch(module, args, output):  # autocast is on inside the step: convolutions run in bf16
        seen_bf16.append(output.dtype == torch.bfloat16)

    hook = model.encoder._conv_stem.register_forward_hook(watch)
    events = list(trainer.run())
    hook.remove()
    assert events[-1].kind == "done"
    assert all(np.isfinite(e.data["loss"]) for e in events if e.kind == "step")
    assert sum(seen_bf16) >= cfg.steps  # at least the step's own forward pass in every step
    after = labelled_loss(model, lab)
    assert after < 0.85 * before, (method, before, after)


def test_a_checkpoint_trained_on_cuda_loads_on_the_cpu(tmp_path):
    lab, unlab, val = arrays(8, 0), arrays(8, 1), arrays(4, 2)
    model = new_model()
    cfg = TrainConfig(method="propl", steps=4, batch_size=2, unlabelled_batch_size=2,
                      eval_every=2, device="cuda")  # fmt: skip
    list(Trainer(model, cfg, lab, unlab, val, tmp_path / "run").run())
    loaded = load_checkpoint(tmp_path / "run" / "best").model
    assert all(not p.is_cuda for p in loaded.parameters())
    save_checkpoint(model, tmp_path / "again")  # a model still on the GPU saves too
    again = load_checkpoint(tmp_path / "again").model
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a.cpu(), b), k


def test_adamw_is_fused_on_cuda_and_a_stopped_run_moves_between_devices(tmp_path):
    """AdamW steps with its fused kernel on CUDA; a run stopped there resumes on the CPU, and
    one stopped on the CPU resumes on CUDA, each stepping the way its own device does."""
    lab = arrays(8, 0)

    def trainer(device: str, out: Path) -> Trainer:
        cfg = TrainConfig(method="supervised", steps=4, batch_size=2, eval_every=100,
                          device=device)  # fmt: skip
        return Trainer(new_model(), cfg, lab, out_dir=out)

    for first, then in (("cuda", "cpu"), ("cpu", "cuda")):
        out, calls = tmp_path / first, []
        stopped = trainer(first, out)
        assert stopped.optimizer.param_groups[0]["fused"] is (True if first == "cuda" else None)
        list(stopped.run(should_stop=lambda calls=calls: len(calls) > 2 or calls.append(1)))
        resumed = trainer(then, out)
        events = list(resumed.run(resume=True))
        assert events[-1].kind == "done" and resumed.step == 4
        assert resumed.optimizer.param_groups[0]["fused"] is (True if then == "cuda" else None)
        step = resumed.optimizer.state_dict()["state"][0]["step"]
        assert float(step) == 4 and step.device.type == then


def test_propl_train_under_torchrun_with_nccl(tmp_path):
    """``propl train`` under torchrun on CUDA (NCCL), one process per GPU (at most two): one
    event stream, a best checkpoint. Equal weights on every rank are tested on the CPU
    (tests/core/test_distributed.py)."""
    n = min(2, torch.cuda.device_count())
    folder = write_benchmark_folder(tmp_path / "syn", n_train=12, n_test=3)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(n), "-m", "propl", "train", "--data", str(folder), "--method", "propl",
           "--labelled", "1/4", "--steps", "6", "--eval-every", "3", "--batch-size", "2",
           "--out", "run", "--json", "--size", "64", "--arch", "propl-small",
           "--device", "cuda"]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    kinds = [e["kind"] for e in events]
    assert kinds.count("start") == 1 and kinds[-1] == "done"
    assert events[0]["data"]["ranks"] == n and kinds.count("step") == 6
    assert Path(tmp_path / "run" / "best" / "model.safetensors").is_file()
