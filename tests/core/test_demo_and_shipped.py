"""The shipped model, `propl pack`, the default-model rule and the headless demo."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from propl.checkpoint import CheckpointError, save_checkpoint
from propl.cli import main
from propl.inference import Predictor, default_model_path, resolve_model
from propl.models import build_model

FIVE_TASKS = ["breast_lesion", "thyroid_nodule", "fetal_head", "left_heart", "ovarian_tumor"]


def safetensors_dtypes(path: Path) -> set[str]:
    """The tensor dtypes in a safetensors header (read as JSON, nothing executed)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("propl-small", tasks=("left_heart", "fetal_head"), input_size=64)
    return save_checkpoint(model, tmp_path_factory.mktemp("m") / "tiny").parent


def test_shipped_model_is_small_fp16_and_knows_the_five_tasks() -> None:
    shipped = default_model_path()
    assert shipped is not None, "the package must ship src/propl/weights/universal"
    weights = shipped / "model.safetensors"
    assert weights.stat().st_size <= 15_000_000
    assert safetensors_dtypes(weights) <= {"F16", "I64"}  # BatchNorm counters stay int64
    predictor = Predictor.from_checkpoint(shipped, device="cpu")
    assert list(predictor.tasks) == FIVE_TASKS
    assert predictor.version and predictor.version != "universal"  # a real version name


def test_shipped_click_head_is_what_train_refine_trains_by_default() -> None:
    """The shipped head is reproducible by the committed command: `propl train-refine` with
    no options (as benchmarks/refine_head.sh runs it) trains with the settings it records."""
    from dataclasses import asdict

    from propl.train.refine import RefineTrainConfig

    shipped = default_model_path()
    assert shipped is not None
    recorded = json.loads((shipped / "model.json").read_text())["metadata"]["refine"]["settings"]
    defaults = asdict(RefineTrainConfig())
    assert recorded == {k: defaults[k] for k in recorded}
    # settings the trainer gained after the shipped head was trained are off by default, so
    # the defaults still train it as it was
    assert {k: defaults[k] for k in defaults.keys() - recorded.keys()} == {"generic_prior": 0.0}


def test_resolve_model_defaults_to_the_shipped_one(tmp_path, monkeypatch) -> None:
    from propl import inference

    assert resolve_model("some/run/best") == Path("some/run/best")
    monkeypatch.setattr(inference, "SHIPPED_MODEL", tmp_path / "none")
    with pytest.raises(CheckpointError, match="no shipped model"):
        resolve_model(None)
    with pytest.raises(CheckpointError, match="no shipped model"):
        resolve_model("shipped")


def test_pack_halves_the_file_and_keeps_predictions(tiny, tmp_path, capsys) -> None:
    out = tmp_path / "packed"
    assert main(["pack", str(tiny), "--out", str(out), "--version", "v7"]) == 0
    full, half = tiny / "model.safetensors", out / "model.safetensors"
    assert safetensors_dtypes(half) <= {"F16", "I64"} and "F32" in safetensors_dtypes(full)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    frames = np.random.default_rng(0).integers(0, 255, (2, 80, 96), np.uint8)
    a = Predictor.from_checkpoint(tiny, device="cpu").predict(frames, "left_heart")
    packed = Predictor.from_checkpoint(out, device="cpu")
    b = packed.predict(frames, "left_heart")
    assert packed.version == "v7"
    np.testing.assert_allclose(a.probability, b.probability, atol=0.02)
    assert main(["pack", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "missing" in capsys.readouterr().err


def test_demo_writes_mask_uncertainty_and_overlay_and_never_overwrites(
    tiny, tmp_path, capsys
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny), "--out", str(out)]) == 0
    mask = tifffile.imread(out / "echo_left_heart_mask.tif")
    unc = tifffile.imread(out / "echo_left_heart_uncertainty.tif")
    strip = np.asarray(Image.open(out / "echo_left_heart_overlay.png"))
    assert mask.shape == unc.shape == (30, 240, 320) and set(np.unique(mask)) <= {0, 1}
    assert unc.dtype == np.float32 and 0.0 <= unc.min() and unc.max() <= 1.0
    assert strip.shape == (240, 3 * 320 + 16, 3)
    before = (out / "echo_left_heart_mask.tif").read_bytes()
    assert main(["demo", "--model", str(tiny), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "echo_left_heart_mask.tif").read_bytes() == before
    assert main(["demo", "--model", str(tiny), "--out", str(out), "--task", "thyroid"]) == 2
    assert "thyroid" in capsys.readouterr().err


def test_make_demo_without_a_display_writes_files_with_the_shipped_model(tmp_path) -> None:
    """What `make demo` runs, on a machine without a display (like CI)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["OMP_NUM_THREADS"] = "1"
    run = subprocess.run(
        [sys.executable, "-m", "napari_propl.demo", "--out", str(tmp_path / "d")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "no display found" in run.stderr
    assert "weights/universal" in run.stdout
    assert (tmp_path / "d" / "echo_left_heart_overlay.png").is_file()
