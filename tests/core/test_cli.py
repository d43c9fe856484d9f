"""CLI smoke runs on a tiny synthetic benchmark folder, and clear errors for bad input."""

import argparse
import json
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from propl.cli import main
from propl.data.synthetic import write_benchmark_folder

TINY = "--size 64 --arch propl-small --device cpu"


def propl(cmdline: str) -> int:
    """Run ``propl <cmdline>`` in-process; returns the exit code."""
    return main(shlex.split(cmdline))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_benchmark_folder(tmp_path_factory.mktemp("data") / "syn", n_train=12, n_test=3)


@pytest.fixture(scope="module")
def run_dir(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cmd = f"train --data {folder} --method propl --labelled 1/4 --steps 3 --eval-every 3"
    assert propl(f"{cmd} --batch-size 2 --out {out} {TINY}") == 0
    return out


def test_train_writes_best_checkpoint(run_dir):
    assert (run_dir / "best" / "model.safetensors").is_file()
    meta = json.loads((run_dir / "best" / "model.json").read_text())
    assert meta["config"]["tasks"] == ["bright_blob", "dark_blob"]
    assert meta["metadata"]["train"]["method"] == "propl"


def test_train_json_progress(folder, tmp_path, capsys):
    cmd = f"train --data {folder} --method supervised --steps 2 --eval-every 2 --json"
    assert propl(f"{cmd} --out {tmp_path} --tasks dark_blob {TINY}") == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["kind"] for e in events][:2] == ["start", "step"] and events[-1]["kind"] == "done"


def test_train_with_every_scan_labelled_trains_supervised_and_says_so(folder, tmp_path, capsys):
    """10 scans from a new site, all labelled: ProPL has nothing to pseudo-label."""
    cmd = f"train --data {folder} --method propl --labelled 12 --steps 2 --eval-every 2"
    assert propl(f"{cmd} --batch-size 2 --val-fraction 0 --out {tmp_path} {TINY}") == 0
    assert "no unlabelled scans" in capsys.readouterr().err
    meta = json.loads((tmp_path / "best" / "model.json").read_text())
    assert meta["metadata"]["train"]["method"] == "supervised"


def test_evaluate_prints_and_writes_metrics(folder, run_dir, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    cmd = f"evaluate --data {folder} --model {run_dir / 'best'} --out {out} --device cpu"
    assert propl(cmd) == 0
    printed = capsys.readouterr().out
    assert "mDice" in printed and "bright_blob" in printed
    result = json.loads(out.read_text())
    assert set(result["per_task"]) == {"bright_blob", "dark_blob"}
    assert 0 <= result["mdice"] <= 100 and result["per_task"]["dark_blob"]["n"] == 3


def test_predict_writes_masks_and_uncertainty(folder, run_dir, tmp_path):
    src = next((folder / "bright_blob" / "images").glob("*.png"))
    out = tmp_path / "pred"
    cmd = f"predict {src} --task bright_blob --model {run_dir / 'best'} --out {out} --device cpu"
    assert propl(cmd) == 0
    mask = tifffile.imread(out / f"{src.stem}_mask.tif")
    unc = tifffile.imread(out / f"{src.stem}_uncertainty.tif")
    assert mask.shape == unc.shape == (1, 64, 64) and mask.dtype == np.uint8
    assert propl(f"{cmd} --format png") == 0
    assert np.asarray(Image.open(out / f"{src.stem}_mask.png")).shape == (64, 64)


def test_predict_bad_file_is_named_and_others_still_written(run_dir, folder, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    good = next((folder / "dark_blob" / "images").glob("*.png"))
    model = run_dir / "best"
    code = propl(f"predict {bad} {good} --task dark_blob --model {model} --out {tmp_path / 'o'}")
    assert code == 1
    assert "broken.png" in capsys.readouterr().err
    assert (tmp_path / "o" / f"{good.stem}_mask.tif").is_file()


def test_predict_shards_split_the_files_between_processes(folder, run_dir, tmp_path, monkeypatch):
    files = sorted((folder / "bright_blob" / "images").glob("*.png"))[:5]
    base = f"predict {' '.join(map(str, files))} --task bright_blob --model {run_dir / 'best'}"
    written = []
    for k in (1, 2):
        out = tmp_path / f"shard{k}"
        assert propl(f"{base} --out {out} --shard {k}/2 --device cpu") == 0
        written.append({p.name.removesuffix("_mask.tif") for p in out.glob("*_mask.tif")})
    assert written == [{f.stem for f in files[0::2]}, {f.stem for f in files[1::2]}]
    # under torchrun the rank picks its part
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert propl(f"{base} --out {tmp_path / 'rank1'} --device cpu") == 0
    assert {p.name.removesuffix("_mask.tif") for p in (tmp_path / "rank1").glob("*_mask.tif")} == {
        f.stem for f in files[1::2]
    }


def test_predict_refuses_inputs_whose_outputs_would_collide(folder, run_dir, tmp_path, capsys):
    src = next((folder / "bright_blob" / "images").glob("*.png"))
    twin = tmp_path / "elsewhere" / src.name
    twin.parent.mkdir()
    twin.write_bytes(src.read_bytes())
    out = tmp_path / "out"
    cmd = f"predict {src} {twin} --task bright_blob --model {run_dir / 'best'} --out {out}"
    assert propl(cmd) == 2
    err = capsys.readouterr().err
    assert str(src) in err and str(twin) in err
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("shard", ["0/2", "3/2", "half", "1/0"])
def test_predict_bad_shard(folder, run_dir, tmp_path, shard, capsys):
    src = next((folder / "bright_blob" / "images").glob("*.png"))
    cmd = f"predict {src} --task bright_blob --model {run_dir / 'best'} --out {tmp_path}"
    assert propl(f"{cmd} --shard {shard}") == 2
    assert "--shard" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "cmdline, needle",
    [
        ("train --data /no/such/folder --out x", "/no/such/folder"),
        ("evaluate --data /no/such/folder --model m", "not found"),
    ],
)
def test_missing_data_folder(cmdline, needle, capsys):
    assert propl(cmdline) == 2
    assert needle in capsys.readouterr().err


def test_unknown_task_and_pickle_model(folder, run_dir, tmp_path, capsys):
    assert propl(f"train --data {folder} --tasks liver --out {tmp_path}") == 2
    assert "liver" in capsys.readouterr().err
    model = run_dir / "best"
    assert propl(f"predict x.png --task liver --model {model} --out {tmp_path}") == 2
    assert "liver" in capsys.readouterr().err
    (tmp_path / "w.pt").write_bytes(b"\x80\x04")
    assert propl(f"evaluate --data {folder} --model {tmp_path / 'w.pt'}") == 2
    assert "pickle" in capsys.readouterr().err


def test_bad_labelled_spec(folder, tmp_path, capsys):
    assert propl(f"train --data {folder} --labelled 3/2 --out {tmp_path}") == 2
    assert "3/2" in capsys.readouterr().err


@pytest.mark.parametrize(
    "cmd",
    ["", "train", "evaluate", "predict", "benchmark", "benchmark ssl", "benchmark speed"],
)
def test_help(cmd):
    argv = [sys.executable, "-m", "propl.cli", *cmd.split(), "--help"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert "usage: propl" in out


def _options(parser, name="propl"):
    """(command, option) for every argument of every (sub)command."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _options(sub, f"{name} {sub_name}")
        elif action.dest != "help":
            yield name, action


def test_every_option_of_every_command_is_explained_in_help():
    from propl.cli import build_parser

    unexplained = [
        f"{cmd} {'/'.join(a.option_strings) or a.dest}"
        for cmd, a in _options(build_parser())
        if not a.help
    ]
    assert unexplained == []


def test_method_choices_are_the_registered_methods():
    from propl.bench.ssl import METHODS as BENCH_METHODS
    from propl.cli import METHOD_CHOICES, build_parser
    from propl.train.methods import METHODS

    assert sorted(METHOD_CHOICES) == sorted(METHODS) == sorted(BENCH_METHODS)
    args = build_parser().parse_args(["benchmark", "ssl", "--data", "d", "--methods", "propl"])
    assert args.methods == ["propl"]
    with pytest.raises(SystemExit):  # a typo is refused before any data is read
        build_parser().parse_args(["benchmark", "ssl", "--data", "d", "--methods", "unimach"])


def test_benchmark_ssl_smoke(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "r"
    cmd = f"benchmark ssl --data {folder} --profile smoke --methods supervised propl"
    assert propl(f"{cmd} --labelled 1/4 --results {results} --device cpu") == 0
    doc = json.loads((results / "ssl-smoke.json").read_text())
    runs = {(r["method"], r["labelled"]) for r in doc["runs"]}
    assert runs == {("supervised", "1/4"), ("propl", "1/4")}
    assert set(doc["runs"][0]["per_task"]["bright_blob"]) == {"dice", "iou", "hd95"}
    assert "| propl | 1/4 |" in (results / "ssl-smoke.md").read_text()


def test_benchmark_report_fills_marked_blocks(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "speed.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    doc = tmp_path / "README.md"
    doc.write_text(
        "intro\n<!-- BEGIN speed -->\nold\n<!-- END speed -->\n"
        "<!-- BEGIN ssl-x -->\nkept\n<!-- END ssl-x -->\nend\n"
    )
    assert propl(f"benchmark report {doc} --results {results}") == 0
    text = doc.read_text()
    assert "| 1 | 2 |" in text and "old" not in text
    assert "kept" in text and text.startswith("intro") and text.endswith("end\n")


@pytest.mark.parametrize("argv", ["train --data d", "simulate --data d --task t"])
def test_the_feature_views_default_is_the_trainers(argv):
    """Not given, the views come from one place: the trainer's default, which the default
    recipe and project retraining use (the new-task recipe sets its own)."""
    from propl.cli import build_parser
    from propl.train.project import RetrainConfig
    from propl.train.recipe import RECIPES
    from propl.train.trainer import TrainConfig

    args = build_parser().parse_args(shlex.split(argv))
    assert args.feature_views is None and RetrainConfig.feature_views is None
    assert RECIPES["default"].feature_views == TrainConfig.feature_views
    assert RECIPES["new-task"].feature_views > TrainConfig.feature_views
    # and the help says both numbers as they are
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(subcommands.choices["train"].format_help().split())
    assert f"({TrainConfig.feature_views}; {RECIPES['new-task'].feature_views} " in text


def test_the_refine_steps_default_is_the_cores():
    """``propl train --project`` without --refine-steps tunes the click head as many steps as
    project retraining does by default, and its help says that number."""
    from propl.cli import build_parser
    from propl.train.project import RetrainConfig

    parser = build_parser()
    assert parser.parse_args(["train", "--project", "p"]).refine_steps is None
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(subcommands.choices["train"].format_help().split())
    assert f"(default {RetrainConfig.refine_steps}; 0: leave the head as it is)" in text


@pytest.mark.parametrize("views, more", [("--zoomed-views", True), ("--no-zoomed-views", False)])
def test_train_refine_zoomed_views_add_the_refiners_windows(run_dir, folder, tmp_path, views, more):
    """With --zoomed-views the head also trains on each train frame cut to the window the
    refiner zooms into (the structures here are small, so nearly every frame has one); the
    checkpoint records the setting."""
    out = tmp_path / "head"
    cmd = f"train-refine --data {folder} --model {run_dir / 'best'} --out {out}"
    assert propl(f"{cmd} --steps 1 --batch-size 2 {views}") == 0
    refine = json.loads((out / "model.json").read_text())["metadata"]["refine"]
    assert refine["settings"]["zoomed_views"] is more
    train_scans = 2 * 12  # two tasks, 12 train scans each
    if more:
        assert train_scans < refine["frames"] <= 2 * train_scans
    else:
        assert refine["frames"] == train_scans


@pytest.fixture
def with_side_files(run_dir, tmp_path):
    """The trained run's checkpoint with task shape floors and task fit statistics beside it."""
    import shutil

    from propl.inference import resolve_model
    from propl.task_shape import fit_shapes

    source = tmp_path / "source"
    shutil.copytree(run_dir / "best", source)
    yy, xx = np.mgrid[:32, :32]
    discs = [((yy - 16) ** 2 + (xx - 16) ** 2 < r * r).astype(np.uint8) for r in range(5, 15)]
    fit_shapes({"bright_blob": discs}).save(source)
    shutil.copy(resolve_model(None) / "task_fit.json", source / "task_fit.json")
    return source


@pytest.mark.parametrize(
    "command",
    [
        "pack {src} --out {out}",
        "train-refine --data {data} --model {src} --out {out} --steps 1 --batch-size 2",
    ],
)
def test_pack_and_train_refine_keep_the_side_files(with_side_files, folder, tmp_path, command):
    """Packing and a new click head leave the encoder and decoders as they were, so the task
    fit statistics and shape floors that describe them come along, byte for byte."""
    out = tmp_path / "out"
    cmd = command.format(src=with_side_files, out=out, data=folder)
    assert propl(cmd) == 0
    for name in ("task_fit.json", "task_shape.json"):
        assert (out / name).read_bytes() == (with_side_files / name).read_bytes()


def test_pack_refuses_a_damaged_side_file_and_names_it(with_side_files, tmp_path, capsys):
    (with_side_files / "task_shape.json").write_text("{not json")
    assert propl(f"pack {with_side_files} --out {tmp_path / 'out'}") != 0
    assert "task_shape.json" in capsys.readouterr().err
    assert not (tmp_path / "out" / "task_shape.json").exists()


def test_train_refine_defaults_are_the_trainers():
    """`propl train-refine` with no options trains the head the way the shipped one was."""
    from propl.cli import build_parser
    from propl.train.refine import RefineTrainConfig

    args = build_parser().parse_args(["train-refine", "--data", "d", "--out", "o"])
    config = RefineTrainConfig()
    given = (args.steps, args.batch_size, args.box_rate, args.generic_rate, args.max_rounds)
    assert (*given, args.zoomed_views, args.seed) == (
        config.steps,
        config.batch_size,
        config.box_rate,
        config.generic_rate,
        config.max_rounds,
        config.zoomed_views,
        config.seed,
    )
    assert args.generic_prior is None and args.lr is None  # left to the trainer's defaults
