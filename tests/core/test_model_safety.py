"""A broken model is never used: bad configs and non-finite weights are refused at load, and a
model is smoke-tested before it becomes a project's current one (``propl models --add``,
promotion after retraining)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from propl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, verify_checkpoint
from propl.cli import main
from propl.models import ProPLConfig, build_model
from propl.models.propl import INT_BOUNDS
from propl.promotion import promote_if_better
from propl.store import Project
from propl.store import versions as ver

SIZE = 64


def tiny_model(tasks: tuple[str, ...] = ("a", "b")) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("propl-small", tasks=tasks, input_size=SIZE, pretrained=False).eval()


def save_tiny(path: Path, spoil: Callable[[torch.nn.Module], None] | None = None) -> Path:
    """A small checkpoint folder; ``spoil`` edits the model's weights first."""
    model = tiny_model()
    if spoil is not None:
        with torch.no_grad():
            spoil(model)
    save_checkpoint(model, path)
    return path


def nan_weights(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.fill_(float("nan"))


def negative_variance(model: torch.nn.Module) -> None:
    """Finite weights whose predictions are NaN: a BatchNorm's running variance below 0."""
    model.decoder2.ups[0].fuse[1].running_var.fill_(-1.0)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return save_tiny(tmp_path / "good")


@pytest.fixture
def nan_model(tmp_path: Path) -> Path:
    return save_tiny(tmp_path / "nan-model", nan_weights)


@pytest.fixture
def scan_png(tmp_path: Path) -> Path:
    path = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40), np.uint8)).save(path)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "p.zarr"
    Project.create(path).close()
    return path


def current_of(project: Path) -> tuple[str | None, list[str]]:
    with Project.open(project, read_only=True) as p:
        current = p.current_version()
        return (current.name if current else None), [v.name for v in p.versions()]


# --- non-finite weights -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_at_load_naming_file_and_tensor(tmp_path, value):
    def spoil(model: torch.nn.Module) -> None:
        model.decoder2.head.bias.fill_(value)

    ck = save_tiny(tmp_path / "ck", spoil)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ck)
    message = str(info.value)
    assert str(ck / "model.safetensors") in message and "decoder2.head.bias" in message
    assert "non-finite" in message


def test_all_nan_weights_refused_by_models_add_current_unchanged(good, nan_model, project, capsys):
    assert main(["models", "--project", str(project), "--add", str(good)]) == 0
    assert current_of(project) == ("v0001", ["v0001"])
    capsys.readouterr()

    assert main(["models", "--project", str(project), "--add", str(nan_model)]) != 0
    err = capsys.readouterr().err
    assert str(nan_model) in err and "non-finite" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert current_of(project) == ("v0001", ["v0001"])
    assert not list((project / "models").glob(".staging-*"))


def test_all_nan_weights_refused_by_predict(nan_model, scan_png, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["predict", str(scan_png), "--task", "a", "--model", str(nan_model), "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) != 0
    captured = capsys.readouterr()
    assert str(nan_model) in captured.err and "non-finite" in captured.err, captured.err
    assert "confidence" not in captured.out
    assert not out.exists() or not list(out.iterdir())


# --- the smoke prediction -----------------------------------------------------------------------


def test_verify_checkpoint_returns_the_loaded_checkpoint(good):
    checkpoint = verify_checkpoint(good)
    assert checkpoint.model.config.tasks == ("a", "b") and not checkpoint.model.training


def test_verify_checkpoint_refuses_a_model_that_predicts_nan(tmp_path):
    ck = save_tiny(tmp_path / "nan-out", negative_variance)
    load_checkpoint(ck)  # every tensor is finite: only a prediction shows it is broken
    with pytest.raises(CheckpointError, match="smoke prediction") as info:
        verify_checkpoint(ck)
    assert str(ck) in str(info.value)


def overflowing_refine_head(model: torch.nn.Module) -> None:
    """Finite refinement-head weights whose refinements are not: they overflow float32."""
    model.add_refine()
    for p in (*model.refine.fine2.parameters(), *model.refine.fine_out.parameters()):
        p.fill_(1e30)  # fine2's output is then >= 1e30, and fine_out's 1e30 x that is infinite


def test_verify_checkpoint_smoke_runs_the_click_refinement_head(tmp_path):
    ok = save_tiny(tmp_path / "ok", lambda model: model.add_refine())
    assert verify_checkpoint(ok).model.has_refine
    ck = save_tiny(tmp_path / "bad-head", overflowing_refine_head)
    assert load_checkpoint(ck).model.has_refine  # every tensor is finite, the decoders are fine
    with pytest.raises(CheckpointError, match="click refinement head") as info:
        verify_checkpoint(ck)
    assert str(ck) in str(info.value) and "NaN or infinity" in str(info.value)


def test_verify_checkpoint_refuses_a_refinement_head_that_fails(tmp_path, monkeypatch):
    from propl.models.refine import RefineHead

    def fail(self, embedding, maps):
        raise RuntimeError("mat1 and mat2 shapes cannot be\nmultiplied")

    ck = save_tiny(tmp_path / "ck", lambda model: model.add_refine())
    monkeypatch.setattr(RefineHead, "decode", fail)
    with pytest.raises(CheckpointError, match="refinement head cannot refine") as info:
        verify_checkpoint(ck)
    assert str(ck) in str(info.value) and "\n" not in str(info.value)


def test_nan_refinement_head_weights_are_refused(tmp_path):
    def spoil(model: torch.nn.Module) -> None:
        model.add_refine()
        model.refine.mask_gain.fill_(float("nan"))

    ck = save_tiny(tmp_path / "ck", spoil)
    with pytest.raises(CheckpointError, match="refine.mask_gain") as info:
        verify_checkpoint(ck)
    assert str(ck) in str(info.value)


def test_models_add_refuses_a_broken_refinement_head(good, project, tmp_path, capsys):
    assert main(["models", "--project", str(project), "--add", str(good)]) == 0
    bad = save_tiny(tmp_path / "bad-head", overflowing_refine_head)
    assert main(["models", "--project", str(project), "--add", str(bad)]) != 0
    err = capsys.readouterr().err
    assert str(bad) in err and "click refinement head" in err, err
    assert current_of(project) == ("v0001", ["v0001"])


def test_models_add_refuses_a_model_that_predicts_nan(good, project, tmp_path, capsys):
    assert main(["models", "--project", str(project), "--add", str(good)]) == 0
    bad = save_tiny(tmp_path / "nan-out", negative_variance)
    assert main(["models", "--project", str(project), "--add", str(bad)]) != 0
    assert str(bad) in capsys.readouterr().err
    assert current_of(project) == ("v0001", ["v0001"])


def test_import_refuses_weights_beyond_half_precision(project, tmp_path):
    """Every version is stored in float16: a weight beyond its range would become infinite."""

    def spoil(model: torch.nn.Module) -> None:
        model.decoder1.head.bias.fill_(1e6)

    ck = save_tiny(tmp_path / "wide", spoil)
    verify_checkpoint(ck)  # fine in float32
    with pytest.raises(CheckpointError, match="half precision") as info:
        ver.import_checkpoint(project, ck, {})
    assert str(ck) in str(info.value)
    assert ver.version_names(project) == []
    assert not list((project / "models").glob(".staging-*"))


def add_better_version(project: Path, checkpoint: Path) -> str:
    """A version whose run judged it better than the shipped model (no training needed)."""
    staged = ver.new_staging(project)
    save_checkpoint(load_checkpoint(checkpoint).model, staged)
    record = {"outcome": "better", "parent": "shipped", "baseline": "shipped"}
    return ver.add_version(project, staged, record | {"held_back": {"score": 80.0}})


def test_promotion_verifies_the_version_first(good, project, tmp_path):
    broken = add_better_version(project, save_tiny(tmp_path / "nan-out", negative_variance))
    with Project.open(project) as p:
        with pytest.raises(CheckpointError, match=broken):
            promote_if_better(p, broken)
        assert p.current_version() is None
        fine = add_better_version(project, good)
        assert promote_if_better(p, fine)
        assert p.current_version().name == fine


# --- model.json validation ----------------------------------------------------------------------


def set_config(key: str, value: Any) -> Callable[[dict], Any]:
    def edit(doc: dict) -> dict:
        doc["config"][key] = value
        return doc

    return edit


BAD_CONFIGS: dict[str, tuple[Callable[[dict], Any], str]] = {
    "heads 0": (set_config("heads", 0), "'heads'"),
    "heads not dividing the widths": (set_config("heads", 5), "'heads'"),
    "heads a string": (set_config("heads", "4"), "'heads'"),
    "heads a bool": (set_config("heads", True), "'heads'"),
    "huge prompt_dim": (set_config("prompt_dim", 2**40), "'prompt_dim'"),
    "negative prompt_tokens": (set_config("prompt_tokens", -1), "'prompt_tokens'"),
    "input_size 2**31": (set_config("input_size", 2147483648), "'input_size'"),
    "input_size a float": (set_config("input_size", float(SIZE)), "'input_size'"),
    "tasks a string": (set_config("tasks", "ab"), "'tasks'"),
    "tasks not strings": (set_config("tasks", [1, 2]), "'tasks'"),
    "channels a string": (set_config("channels", "wide"), "'channels'"),
    "channels too wide": (set_config("channels", [48, 32, 24, 4096]), "'channels'"),
    "alpha_init NaN": (set_config("alpha_init", math.nan), "'alpha_init'"),
    "dropout a string": (set_config("dropout", "0.3"), "'dropout'"),
    "a list instead of an object": (lambda doc: [doc], "JSON object"),
    "config a list": (lambda doc: doc | {"config": list(doc["config"])}, "'config'"),
    "model a number": (lambda doc: doc | {"model": 3}, "'model'"),
    "metadata a list": (lambda doc: doc | {"metadata": []}, "'metadata'"),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One good checkpoint, copied by each bad-config case (building a model takes a while)."""
    return save_tiny(tmp_path_factory.mktemp("template") / "ck")


def write_bad(template: Path, folder: Path, variant: str) -> Path:
    shutil.copytree(template, folder)
    edit, _ = BAD_CONFIGS[variant]
    doc = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps(edit(doc)))
    return folder


@pytest.mark.parametrize("variant", BAD_CONFIGS)
def test_a_bad_model_json_is_refused_naming_file_and_key(template, tmp_path, variant):
    bad = write_bad(template, tmp_path / "bad", variant)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    message = str(info.value)
    assert str(bad / "model.json") in message and BAD_CONFIGS[variant][1] in message, message
    assert "\n" not in message


@pytest.mark.parametrize("variant", BAD_CONFIGS)
def test_predict_with_a_bad_model_json_fails_in_one_line(
    template, tmp_path, scan_png, capsys, variant
):
    bad = write_bad(template, tmp_path / "bad", variant)
    out = tmp_path / "out"
    argv = ["predict", str(scan_png), "--task", "a", "--model", str(bad), "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(bad / "model.json") in err and BAD_CONFIGS[variant][1] in err, err


def test_models_add_with_a_bad_model_json_leaves_the_project_unchanged(
    template, project, tmp_path, capsys
):
    bad = write_bad(template, tmp_path / "bad", "input_size 2**31")
    assert main(["models", "--project", str(project), "--add", str(bad)]) != 0
    assert "'input_size'" in capsys.readouterr().err
    assert current_of(project) == (None, [])


def test_config_bounds_are_inclusive_and_checked_without_building():
    low, high = INT_BOUNDS["input_size"]
    assert ProPLConfig(tasks=("a",), input_size=low).input_size == low
    assert ProPLConfig(tasks=("a",), input_size=high).input_size == high
    with pytest.raises(ValueError, match="'input_size'"):
        ProPLConfig(tasks=("a",), input_size=high + 32)
    assert ProPLConfig(tasks=["a"], channels=[8, 8, 8, 8], heads=2).channels == (8, 8, 8, 8)
