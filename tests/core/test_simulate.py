"""``propl simulate``: the simulated annotator on a tiny synthetic benchmark folder."""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

import propl.simulate as simulate_module
from propl.checkpoint import save_checkpoint
from propl.cli import main
from propl.data.benchmark import BenchmarkFolder
from propl.data.synthetic import write_benchmark_folder
from propl.inference import Prediction
from propl.models import build_model
from propl.simulate import SimulationConfig, build_pool, table
from propl.store import Project

ROUNDS, K, START = 2, 3, 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_benchmark_folder(tmp_path_factory.mktemp("data") / "syn", n_train=20, n_test=4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The architecture the fresh network copies: propl-small at 64 px."""
    torch.manual_seed(0)
    model = build_model("propl-small", tasks=("dark_blob",), input_size=64, pretrained=False)
    path = tmp_path_factory.mktemp("tiny") / "ckpt"
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="module")
def run(folder, tiny, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    out = tmp_path_factory.mktemp("out") / "simulate-dark_blob.json"
    cmd = (
        f"simulate --data {folder} --task dark_blob --rounds {ROUNDS} --per-round {K} "
        f"--start {START} --pool 16 --first-steps 20 --steps 8 --lr 1e-2 --unsup-weight 2 "
        f"--no-feature-cache --device cpu "
        f"--like {tiny} --workdir {work} --out {out}"
    )
    assert main(shlex.split(cmd)) == 0
    return json.loads(out.read_text()), out, work


def test_results_have_the_fixed_keys_and_one_dice_per_round(run):
    doc, _, _ = run
    assert doc["task"] == "dark_blob" and doc["rounds"] == ROUNDS and doc["per_round"] == K
    curves = doc["strategies"]
    assert set(curves) == {"uncertainty", "random"}
    assert all(len(c) == ROUNDS + 1 and all(0 <= d <= 100 for d in c) for c in curves.values())
    assert curves["uncertainty"][0] == curves["random"][0]  # both start from the same round 0
    assert 0.0 <= doc["pixel_auroc"] <= 1.0
    assert doc["gain"]["uncertainty"] == pytest.approx(
        curves["uncertainty"][-1] - curves["uncertainty"][0]
    )


def test_each_round_corrects_k_scans_the_strategy_picked(run):
    doc, _, work = run
    details = doc["per_round_details"]
    for strategy, rows in details.items():
        picked = [set(r["picked"]) for r in rows]
        assert len(picked[0]) == START and all(len(p) == K for p in picked[1:])
        assert not set.intersection(*picked[:2]) and not picked[1] & picked[2]  # never twice
        assert all(r["edited_pixels"] > 0 for r in rows[1:])  # ground truth replaced predictions
        with Project.open(work / f"{strategy}.zarr", read_only=True) as p:
            reviewed = {s for s in p.scan_ids() if p.review(s, "dark_blob") is not None}
            assert reviewed == set().union(*picked)
            assert len(p.versions()) == ROUNDS + 1  # round 0 and one version per round
    # round 1 ranks the same predictions: the queue's picks are the least confident
    assert (
        details["uncertainty"][1]["picked_confidence"] <= details["random"][1]["picked_confidence"]
    )


def test_propl_options_reach_every_round_and_the_command(run):
    """``--unsup-weight 2`` (like --pseudo-label, --view, --teacher) and ``--no-feature-cache``
    are what each round trains with, and the recorded command repeats them so the run can be
    redone."""
    doc, _, work = run
    assert doc["config"]["retrain"]["options"]["unsup_weight"] == 2.0
    assert doc["command"].endswith("--lr 0.01 --no-feature-cache --unsup-weight 2")
    assert "--strategies" not in doc["command"]  # the default pair
    for strategy in ("uncertainty", "random"):
        with Project.open(work / f"{strategy}.zarr", read_only=True) as p:
            for version in p.versions():
                settings = version.record["settings"]
                assert settings["options"]["unsup_weight"] == 2.0 and settings["lr"] == 0.01
                assert settings["cache_features"] is False


def test_every_round_records_its_full_settings_and_the_software(run):
    """The results file alone says how each round trained (every RetrainConfig field, the
    defaults too: they change between commits) and which propl produced it."""
    doc, _, work = run
    for strategy, rows in doc["per_round_details"].items():
        with Project.open(work / f"{strategy}.zarr", read_only=True) as p:
            for row in rows[1:]:
                settings = row["retrain"]["settings"]
                assert settings == p.version(row["retrain"]["version"]).record["settings"]
                assert settings["steps"] == 8 and settings["feature_views"] is None  # default:
                resolved = p.version(row["retrain"]["version"]).record["resolved"]
                assert resolved["feature_views"] == 4  # ... the trainer's, as recorded
                assert settings["anchor"] == 1.0 and settings["tasks"] == ["dark_blob"]
        first = rows[0]["retrain"]["settings"]
        assert first["steps"] == 20 and first["anchor"] == 0.0  # new decoders: nothing to keep
    software = doc["provenance"]
    assert software["propl"] and software["torch"] == torch.__version__
    assert software["commit"] is None or len(software["commit"]) == 40


def test_table_and_chart_are_written(run):
    doc, out, _ = run
    table = out.with_suffix(".md").read_text()
    assert "| uncertainty |" in table and "| random |" in table and "Gain ratio" in table
    root = ET.fromstring(out.with_suffix(".svg").read_text())
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 2
    assert sorted(p.name for p in out.parent.iterdir()) == [  # written whole, no temp files left
        f"{out.stem}{suffix}" for suffix in (".json", ".md", ".svg")
    ]


def test_the_table_of_one_strategy_does_not_claim_random_gained_nothing(run):
    doc, _, _ = run
    only = {
        **doc,
        "strategies": {"uncertainty": doc["strategies"]["uncertainty"]},
        "gain": {"uncertainty": doc["gain"]["uncertainty"]},
        "edited_pixels": {"uncertainty": doc["edited_pixels"]["uncertainty"]},
        "gain_ratio": None,
    }
    text = table(only)
    assert "| random |" not in text and "n/a (needs both strategies)" in text
    stalled = {**doc, "gain_ratio": None}  # both ran and random gained nothing
    assert "n/a (random gained nothing)" in table(stalled)


def test_the_error_strategy_runs_and_is_recorded(folder, tiny, tmp_path):
    out = tmp_path / "s.json"
    cmd = (
        f"simulate --data {folder} --task dark_blob --rounds 1 --per-round {K} --start {START} "
        f"--pool 12 --first-steps 10 --steps 2 --no-feature-cache --device cpu --like {tiny} "
        f"--strategies error --workdir {tmp_path / 'work'} --out {out}"
    )
    assert main(shlex.split(cmd)) == 0
    doc = json.loads(out.read_text())
    assert set(doc["strategies"]) == {"error"} and doc["gain_ratio"] is None
    assert "--strategies error" in doc["command"]
    assert len(doc["per_round_details"]["error"][1]["picked"]) == K


def test_the_error_strategy_picks_the_most_expected_error(folder, tmp_path, monkeypatch):
    """The picks are the K unreviewed scans whose worst frame has the largest expected error
    (MC dropout makes real predictions vary, so a stand-in predictor gives known errors)."""
    config = SimulationConfig(task="dark_blob", rounds=1, per_round=K, start=START, pool=12)
    masks, start = build_pool(tmp_path / "p.zarr", BenchmarkFolder(folder), config)
    pool = [s for s in masks if s not in start]
    error = dict(zip(pool, np.random.default_rng(0).permutation(len(pool)) / 100, strict=True))

    def known(project, predictor, scan_id, task):
        z = np.zeros((1, *project.image(scan_id).shape[-2:]), np.float32)
        errors = np.array([0.0, error[scan_id]], np.float32)  # two frames: the worst counts
        pred = Prediction(z.astype(np.uint8), z, z, np.ones(1, np.float32), errors)
        project.save_prediction(scan_id, task, pred.mask, z, pred.confidence, "known")
        return pred

    monkeypatch.setattr(simulate_module, "_current_predictor", lambda p, c: None)
    monkeypatch.setattr(simulate_module, "predict_scan", known)
    rng = np.random.default_rng(0)
    picked = simulate_module._correct(tmp_path / "p.zarr", config, "error", masks, rng)["picked"]
    assert picked == sorted(pool, key=lambda s: -error[s])[:K]


def test_bad_arguments_are_clear_errors(folder, tmp_path, capsys):
    base = f"simulate --data {folder} --device cpu --workdir {tmp_path} --out {tmp_path}/x.json"
    assert main(shlex.split(f"{base} --task no_such_task")) == 2
    assert "no_such_task" in capsys.readouterr().err
    assert main(shlex.split(f"{base} --task dark_blob --pool 500")) == 2
    assert "pool of 500" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown strategies"):
        SimulationConfig(task="t", strategies=("oracle",))
    assert not (tmp_path / "x.json").exists()


def test_the_recorded_command_parses_back_to_the_same_campaign():
    """Every choice that differs from the defaults is in the line, so it redoes the run."""
    from propl.cli import build_parser

    config = SimulationConfig(
        task="thyroid_nodule",
        rounds=2,
        per_round=5,
        start=6,
        pool=40,
        strategies=("uncertainty",),
        seed=3,
        test_scans=7,
        first_steps=30,
        steps=12,
        like="my models/small",
        retrain={"lr": 5e-4, "cache_features": False, "feature_views": 2},
    )
    argv = shlex.split(config.command(["--unsup-weight", "1"]))[1:]
    args = build_parser().parse_args([a.replace("DATA", "/data") for a in argv])
    assert (args.task, args.rounds, args.per_round, args.start, args.pool) == (
        "thyroid_nodule",
        2,
        5,
        6,
        40,
    )
    assert (args.strategies, args.seed, args.test_scans, args.first_steps, args.steps) == (
        ["uncertainty"],
        3,
        7,
        30,
        12,
    )
    assert str(args.like) == "my models/small" and args.lr == 5e-4 and args.unsup_weight == 1.0
    assert args.no_feature_cache and args.feature_views == 2
