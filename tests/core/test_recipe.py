"""The new-task recipe: chosen when ``--init`` meets a task it does not know, and only then;
options the user gives explicitly win over it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from propl.checkpoint import save_checkpoint
from propl.cli import main
from propl.data.synthetic import SYNTHETIC_TASKS, write_benchmark_folder
from propl.models import build_model
from propl.train.recipe import RECIPES, choose_recipe, recipe_settings, unknown_tasks

KNOWN, NEW = SYNTHETIC_TASKS


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A tiny model that knows the first synthetic task only."""
    model = build_model("propl-small", tasks=(KNOWN,), input_size=64, pretrained=False)
    save_checkpoint(model, tmp_path / "known")
    return tmp_path / "known"


def test_new_task_recipe_only_when_init_meets_an_unknown_task(checkpoint: Path) -> None:
    assert unknown_tasks(checkpoint, [KNOWN, NEW]) == (NEW,)
    assert choose_recipe(checkpoint, [KNOWN, NEW]).name == "new-task"
    assert choose_recipe(checkpoint, [NEW]).name == "new-task"
    assert choose_recipe(checkpoint, [KNOWN]).name == "default"
    assert choose_recipe(None, [KNOWN, NEW]).name == "default"


def test_explicit_settings_win_and_unknown_names_fail() -> None:
    recipe = RECIPES["new-task"]
    settings = recipe_settings(recipe, steps=7, lr=None, freeze_encoder=False)
    assert settings["steps"] == 7 and settings["freeze_encoder"] is False
    assert settings["lr"] == recipe.lr and settings["anchor"] == recipe.anchor
    with pytest.raises(KeyError, match="no recipe setting"):
        recipe_settings(recipe, stepz=3)


def _trained_config(out: Path) -> dict:
    return json.loads((out / "best" / "model.json").read_text())["metadata"]["train"]


def test_train_init_unknown_task_uses_new_task_recipe(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_benchmark_folder(tmp_path / "syn", n_train=8, n_test=2)
    base = ["train", "--data", str(folder), "--labelled", "3", "--init", str(checkpoint)]
    base += ["--steps", "2", "--batch-size", "2", "--device", "cpu"]
    assert main([*base, "--tasks", NEW, "--out", str(tmp_path / "new")]) == 0
    assert "recipe 'new-task'" in capsys.readouterr().err
    config, recipe = _trained_config(tmp_path / "new"), RECIPES["new-task"]
    assert config["steps"] == 2  # given: wins over the recipe's
    assert config["freeze_encoder"] and config["cache_features"]
    assert (config["lr"], config["anchor"]) == (recipe.lr, recipe.anchor)

    explicit = ["--train-encoder", "--lr", "0.01", "--anchor", "0"]
    assert main([*base, "--tasks", NEW, *explicit, "--out", str(tmp_path / "explicit")]) == 0
    config = _trained_config(tmp_path / "explicit")
    assert not config["freeze_encoder"] and not config["cache_features"]
    assert (config["lr"], config["anchor"]) == (0.01, 0.0)

    capsys.readouterr()
    assert main([*base, "--tasks", KNOWN, "--out", str(tmp_path / "known")]) == 0
    assert "recipe" not in capsys.readouterr().err
    config, default = _trained_config(tmp_path / "known"), RECIPES["default"]
    assert not config["freeze_encoder"] and config["anchor"] == default.anchor


def test_a_new_task_is_learnt_on_its_own_decoders_and_the_known_task_stays_exact(
    tmp_path: Path, checkpoint: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    folder = write_benchmark_folder(tmp_path / "syn", n_train=8, n_test=2)
    args = ["train", "--data", str(folder), "--labelled", "3", "--init", str(checkpoint)]
    args += ["--tasks", NEW, "--steps", "3", "--batch-size", "2", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "new")]) == 0
    doc = json.loads((tmp_path / "new" / "last" / "model.json").read_text())
    assert doc["config"]["own_decoders"] == [NEW]
    before = load_file(checkpoint / "model.safetensors")
    after = load_file(tmp_path / "new" / "last" / "model.safetensors")
    own = [k for k in after if k.startswith("task_decoders.0.")]
    assert own and len(own) == len([k for k in before if k.startswith("decoder1.")]) * 2
    for key, value in before.items():  # everything the known task uses, to the bit
        kept = after[key][: value.shape[0]] if key == "prompts" else after[key]
        assert torch.equal(kept.to(value.dtype), value), key
    start = before["decoder2.head.weight"].to(after["task_decoders.0.second.head.weight"].dtype)
    assert not torch.equal(after["task_decoders.0.second.head.weight"], start)  # it learnt


def test_train_from_a_model_with_a_click_head_tunes_the_head_on_the_labelled_scans(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The head learnt on the starting model's tasks; a task the run adds must not get clicks
    from a head that never met it: the best and last checkpoints' heads are tuned on the
    labelled scans, each kept only if the validation scans click no worse (as a project's
    retraining does), and --refine-steps 0 leaves the head as it came."""
    import torch

    from propl.checkpoint import load_checkpoint

    with_head = tmp_path / "with-head"
    model = load_checkpoint(checkpoint).model
    save_checkpoint(model.add_refine(), with_head)
    start = {
        k: v for k, v in load_checkpoint(with_head).model.state_dict().items() if "refine." in k
    }
    folder = write_benchmark_folder(tmp_path / "syn", n_train=8, n_test=2)
    args = ["train", "--data", str(folder), "--labelled", "3", "--init", str(with_head)]
    args += ["--tasks", NEW, "--steps", "2", "--batch-size", "2", "--device", "cpu", "--json"]

    capsys.readouterr()
    assert main([*args, "--refine-steps", "5", "--out", str(tmp_path / "tuned")]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    tuned = {e["data"].pop("checkpoint"): e["data"] for e in events if e["kind"] == "refine"}
    assert set(tuned) == {"best", "last"}
    for name, record in tuned.items():
        assert record["trained"] and record["steps"] == 5 and record["frames"] == 3
        clicks = record["held_back_click_iou"]
        assert record["kept"] is (clicks["after"] >= clicks["before"])
        saved = load_checkpoint(tmp_path / "tuned" / name)
        assert (saved.metadata.get("refine_tuning") == record) is record["kept"]
        head = {k: v for k, v in saved.model.state_dict().items() if "refine." in k}
        moved = any(not torch.equal(head[k], start[k].to(head[k].dtype)) for k in start)
        assert moved is record["kept"], name

    assert main([*args, "--refine-steps", "0", "--out", str(tmp_path / "as-it-came")]) == 0
    assert all(json.loads(x)["kind"] != "refine" for x in capsys.readouterr().out.splitlines())
    saved = load_checkpoint(tmp_path / "as-it-came" / "last").model.state_dict()
    assert all(torch.equal(saved[k], start[k].to(saved[k].dtype)) for k in start)
