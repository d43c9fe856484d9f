"""CLI smoke runs on a tiny synthetic benchmark folder, and clear errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from propl.cli import main
from propl.data.synthetic import write_benchmark_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_benchmark_folder(tmp_path_factory.mktemp("data") / "syn", n_train=12, n_test=3)


@pytest.fixture(scope="module")
def run_dir(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(
        [
            "train",
            "--data",
            str(folder),
            "--method",
            "propl",
            "--labelled",
            "1/4",
            "--steps",
            "3",
            "--size",
            "64",
            "--arch",
            "propl-small",
            "--eval-every",
            "3",
            "--batch-size",
            "2",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    return out


def test_train_writes_best_checkpoint(run_dir):
    assert (run_dir / "best" / "model.safetensors").is_file()
    meta = json.loads((run_dir / "best" / "model.json").read_text())
    assert meta["config"]["tasks"] == ["bright_blob", "dark_blob"]
    assert meta["metadata"]["train"]["method"] == "propl"


def test_train_json_progress(folder, tmp_path, capsys):
    code = main(
        [
            "train",
            "--data",
            str(folder),
            "--method",
            "supervised",
            "--steps",
            "2",
            "--size",
            "64",
            "--arch",
            "propl-small",
            "--eval-every",
            "2",
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
            "--json",
            "--tasks",
            "dark_blob",
        ]
    )
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["kind"] for e in events][:2] == ["start", "step"] and events[-1]["kind"] == "done"


def test_evaluate_prints_and_writes_metrics(folder, run_dir, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(folder),
                "--model",
                str(run_dir / "best"),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "mDice" in printed and "bright_blob" in printed
    result = json.loads(out.read_text())
    assert set(result["per_task"]) == {"bright_blob", "dark_blob"}
    assert 0 <= result["mdice"] <= 100 and result["per_task"]["dark_blob"]["n"] == 3


def test_predict_writes_masks_and_uncertainty(folder, run_dir, tmp_path):
    src = next((folder / "bright_blob" / "images").glob("*.png"))
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                str(src),
                "--task",
                "bright_blob",
                "--model",
                str(run_dir / "best"),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    mask = tifffile.imread(out / f"{src.stem}_mask.tif")
    unc = tifffile.imread(out / f"{src.stem}_uncertainty.tif")
    assert mask.shape == unc.shape == (1, 64, 64) and mask.dtype == np.uint8
    assert (
        main(
            [
                "predict",
                str(src),
                "--task",
                "bright_blob",
                "--model",
                str(run_dir / "best"),
                "--out",
                str(out),
                "--format",
                "png",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert np.asarray(Image.open(out / f"{src.stem}_mask.png")).shape == (64, 64)


def test_predict_bad_file_is_named_and_others_still_written(run_dir, folder, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    good = next((folder / "dark_blob" / "images").glob("*.png"))
    code = main(
        [
            "predict",
            str(bad),
            str(good),
            "--task",
            "dark_blob",
            "--model",
            str(run_dir / "best"),
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cpu",
        ]
    )
    assert code == 1
    assert "broken.png" in capsys.readouterr().err
    assert (tmp_path / "o" / f"{good.stem}_mask.tif").is_file()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--data", "/no/such/folder", "--out", "x"], "/no/such/folder"),
        (["evaluate", "--data", "/no/such/folder", "--model", "m"], "not found"),
    ],
)
def test_missing_data_folder(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_unknown_task_and_pickle_model(folder, run_dir, tmp_path, capsys):
    assert main(["train", "--data", str(folder), "--tasks", "liver", "--out", str(tmp_path)]) == 2
    assert "liver" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "x.png",
                "--task",
                "liver",
                "--model",
                str(run_dir / "best"),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "liver" in capsys.readouterr().err
    (tmp_path / "w.pt").write_bytes(b"\x80\x04")
    assert main(["evaluate", "--data", str(folder), "--model", str(tmp_path / "w.pt")]) == 2
    assert "pickle" in capsys.readouterr().err


def test_bad_labelled_spec(folder, tmp_path, capsys):
    assert main(["train", "--data", str(folder), "--labelled", "3/2", "--out", str(tmp_path)]) == 2
    assert "3/2" in capsys.readouterr().err


@pytest.mark.parametrize(
    "cmd",
    [
        [],
        ["train"],
        ["evaluate"],
        ["predict"],
        ["benchmark"],
        ["benchmark", "ssl"],
        ["benchmark", "speed"],
    ],
)
def test_help(cmd):
    out = subprocess.run(
        [sys.executable, "-m", "propl.cli", *cmd, "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "usage: propl" in out


def test_benchmark_ssl_smoke(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "benchmark",
                "ssl",
                "--data",
                str(folder),
                "--profile",
                "smoke",
                "--methods",
                "supervised",
                "propl",
                "--labelled",
                "1/4",
                "--results",
                str(tmp_path / "r"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "r" / "ssl-smoke.json").read_text())
    assert {(r["method"], r["labelled"]) for r in doc["runs"]} == {
        ("supervised", "1/4"),
        ("propl", "1/4"),
    }
    row = doc["runs"][0]
    assert set(row["per_task"]["bright_blob"]) == {"dice", "iou", "hd95"}
    assert "| propl | 1/4 |" in (tmp_path / "r" / "ssl-smoke.md").read_text()
