"""End to end on the real us-universal scans (slow; skipped when the folder is absent)."""

import json

import pytest

from propl.cli import main

pytestmark = pytest.mark.slow


def test_train_evaluate_predict_on_real_scans(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(data_root),
                "--tasks",
                "fetal_head",
                "thyroid_nodule",
                "--method",
                "propl",
                "--labelled",
                "1/16",
                "--steps",
                "30",
                "--size",
                "96",
                "--eval-every",
                "30",
                "--batch-size",
                "4",
                "--out",
                str(run),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    metrics = tmp_path / "metrics.json"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(data_root),
                "--tasks",
                "fetal_head",
                "--model",
                str(run / "best"),
                "--out",
                str(metrics),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    result = json.loads(metrics.read_text())
    assert result["per_task"]["fetal_head"]["n"] == 209
    # 30 steps from ImageNet weights already find fetal heads better than chance
    assert result["per_task"]["fetal_head"]["dice"] > 30
    scan = next((data_root / "fetal_head" / "images").glob("*.png"))
    assert (
        main(
            [
                "predict",
                str(scan),
                "--task",
                "fetal_head",
                "--model",
                str(run / "best"),
                "--out",
                str(tmp_path / "pred"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (tmp_path / "pred" / f"{scan.stem}_mask.tif").is_file()
    assert "mDice" in capsys.readouterr().out
