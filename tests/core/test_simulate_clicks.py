"""``propl simulate --correct clicks``: picked scans fixed with simulated clicks, not truth."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import propl.simulate as simulate_module
from propl.checkpoint import load_checkpoint, save_checkpoint
from propl.cli import build_parser, main
from propl.click_annotator import CLICK_TARGET, ClickCorrection, click_summary, click_to_truth
from propl.data.benchmark import BenchmarkFolder
from propl.data.synthetic import write_benchmark_folder
from propl.inference import Predictor
from propl.interactive import MAX_CLICKS, Click, iou
from propl.models import build_model
from propl.simulate import SimulationConfig, build_pool, simulate, svg, table
from propl.store import Project

TASK = "dark_blob"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_benchmark_folder(tmp_path_factory.mktemp("data") / "syn", n_train=8, n_test=2)


def tiny(path: Path, head: bool) -> Path:
    torch.manual_seed(0)
    model = build_model("propl-small", tasks=(TASK,), input_size=64, pretrained=False)
    if head:
        model.add_refine()
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="module")
def with_head(tmp_path_factory):
    return tiny(tmp_path_factory.mktemp("m") / "head", head=True)


# --- one scan: clicks until IoU 0.90 or 20 ------------------------------------------------


@dataclass
class _Refined:
    mask: np.ndarray


class DiskInteraction:
    """A stand-in for the refinement head: a click paints (positive) or erases (negative) a
    disk of ``radius`` pixels, painting only inside ``edges`` (a head that follows the
    structure's boundary); a negative radius: a head that changes nothing."""

    def __init__(self, radius: float, edges: np.ndarray | None = None) -> None:
        self.radius, self.edges, self.made = radius, edges, {}

    def click(self, frame: int, mask: np.ndarray, click: Click) -> _Refined:
        self.made.setdefault(frame, []).append(click)
        yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
        disk = ((yy - click.y) ** 2 + (xx - click.x) ** 2 <= self.radius**2) & (self.radius >= 0)
        if self.edges is not None:
            disk &= self.edges[frame] > 0
        new = (mask > 0) | disk if click.positive else (mask > 0) & ~disk
        return _Refined(new.astype(np.uint8))

    def clicks(self, frame: int) -> tuple[Click, ...]:
        return tuple(self.made.get(frame, ()))


def square(y0: int, y1: int, x0: int = 8, x1: int = 24) -> np.ndarray:
    mask = np.zeros((32, 32), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def test_clicks_stop_once_the_frame_reaches_iou_090():
    truth = np.stack([square(8, 24), square(8, 24)])
    start = np.stack([square(8, 16), truth[1]])  # frame 1 is right already: no click there
    head = DiskInteraction(radius=3, edges=truth)
    result = click_to_truth(head, start, truth)  # type: ignore[arg-type]
    assert result.clicks[1] == 0 and result.ious[1] == (1.0,)
    assert 0 < result.clicks[0] < MAX_CLICKS and result.reached
    assert result.ious[0][-1] >= CLICK_TARGET > result.ious[0][-2]
    assert iou(result.mask[0], truth[0]) == pytest.approx(result.ious[0][-1])
    assert not np.array_equal(result.mask[0], truth[0])  # the clicks' mask, not the truth


def test_a_head_that_cannot_fix_it_gets_20_clicks_and_its_mask_is_kept():
    truth, start = square(8, 24)[None], square(8, 12)[None]
    result = click_to_truth(DiskInteraction(radius=-1), start, truth)  # type: ignore[arg-type]
    assert result.clicks == (MAX_CLICKS,) and not result.reached
    assert len(result.ious[0]) == MAX_CLICKS + 1
    np.testing.assert_array_equal(result.mask, start)


def test_click_summary_of_a_round():
    def done(clicks: int, after: float) -> ClickCorrection:
        return ClickCorrection(np.zeros((1, 2, 2), np.uint8), ((0.5, after),), (clicks,))

    summary = click_summary([done(2, 0.95), done(20, 0.6), done(5, 0.9)])
    assert summary["per_scan"] == [2, 20, 5] and summary["total"] == 27
    assert summary["mean"] == pytest.approx(9.0) and summary["reached"] == 2
    assert summary["scans"] == 3 and summary["iou_before"] == pytest.approx(0.5)


# --- a round corrected with clicks ---------------------------------------------------------


def test_a_click_round_confirms_what_the_clicks_made_with_their_provenance(
    folder, with_head, tmp_path, monkeypatch
):
    config = SimulationConfig(task=TASK, rounds=1, per_round=2, start=2, pool=4, device="cpu")
    masks, start = build_pool(tmp_path / "p.zarr", BenchmarkFolder(folder), config)
    predictor = Predictor.from_checkpoint(with_head, device="cpu")
    monkeypatch.setattr(simulate_module, "_current_predictor", lambda p, c: predictor)
    rng = np.random.default_rng(0)
    row = simulate_module._correct(tmp_path / "p.zarr", config, "uncertainty", masks, rng, "clicks")
    clicks = row["clicks"]
    assert clicks["scans"] == 2 and len(clicks["per_scan"]) == 2
    assert all(0 <= n <= MAX_CLICKS for n in clicks["per_scan"])
    assert clicks["total"] == sum(clicks["per_scan"])
    with Project.open(tmp_path / "p.zarr", read_only=True) as p:
        for scan_id, n in zip(row["picked"], clicks["per_scan"], strict=True):
            review = p.review(scan_id, TASK)
            assert review is not None and review.status in ("accepted", "corrected")
            assert review.provenance["clicks"] == n and review.provenance["simulated"]["iou"]
            truth = simulate_module._truth(masks[scan_id])
            final = review.provenance["simulated"]["iou"][0][-1]
            assert iou(review.mask, truth) == pytest.approx(final)  # the clicks' mask is stored
            if final < 1.0:
                assert not np.array_equal(review.mask > 0, truth > 0)


def test_simulate_runs_each_correction_mode_from_the_same_round_0(
    folder, with_head, tmp_path, monkeypatch
):
    """Orchestration (training and scoring stubbed; the CLI test below runs them for real)."""
    predictor = Predictor.from_checkpoint(with_head, device="cpu")
    fresh, tuning = [], []

    def retrain(project, config, steps, init, **fixed):
        if init is not None:
            fresh.append(load_checkpoint(init).model)
        tuning.append((Path(project).name, fixed.get("refine_steps")))
        return {"version": "v", "steps": steps}

    monkeypatch.setattr(simulate_module, "_retrain", retrain)
    monkeypatch.setattr(simulate_module, "_current_predictor", lambda p, c: predictor)
    score = {"dice": 50.0, "iou": 40.0, "hd95": 1.0, "n": 2, "pixel_auroc": 0.5}
    monkeypatch.setattr(simulate_module, "_score", lambda *a: dict(score))
    config = SimulationConfig(
        task=TASK, rounds=1, per_round=2, start=2, pool=4, device="cpu", like=str(with_head),
        strategies=("uncertainty",), correct=("truth", "clicks"),
    )  # fmt: skip
    doc = simulate(folder, config, tmp_path / "work")
    assert set(doc["strategies"]) == {"uncertainty", "uncertainty+clicks"}
    assert (
        set(doc["clicks"]) == {"uncertainty+clicks"}
        and doc["clicks"]["uncertainty+clicks"][0] is None
    )
    assert doc["clicks"]["uncertainty+clicks"][1]["scans"] == 2
    assert doc["refine_head"] == {"copied_from": str(with_head), "trained": False}
    # the head is tuned (the product's default) where clicks correct, never where truth does
    assert tuning == [
        ("round0.zarr", None),
        ("uncertainty.zarr", 0),
        ("uncertainty+clicks.zarr", None),
    ]
    like = load_checkpoint(with_head).model.refine.state_dict()
    for key, tensor in fresh[0].refine.state_dict().items():  # the head is like's, not new
        torch.testing.assert_close(tensor, like[key])
    text = table(doc)
    assert "| uncertainty+clicks |" in text and "never trained" in text
    assert "Clicks per corrected scan" in text
    assert 'stroke-dasharray="6 3"' in svg(doc)  # the click run's line is dashed


def test_clicks_need_a_model_with_the_refinement_head(folder, tmp_path, capsys):
    bare = tiny(tmp_path / "bare", head=False)
    out = tmp_path / "s.json"
    cmd = (
        f"simulate --data {folder} --task {TASK} --rounds 1 --per-round 2 --start 2 --pool 4 "
        f"--device cpu --like {bare} --correct clicks --workdir {tmp_path / 'w'} --out {out}"
    )
    assert main(shlex.split(cmd)) == 2
    err = capsys.readouterr().err
    assert "refinement head" in err and str(bare) in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "w" / "round0.zarr").exists()  # refused first


def test_the_recorded_command_keeps_the_correction_modes():
    config = SimulationConfig(task=TASK, correct=("truth", "clicks"))
    argv = shlex.split(config.command())[1:]
    args = build_parser().parse_args([a.replace("DATA", "/data") for a in argv])
    assert args.correct == ["truth", "clicks"]
    assert "--correct" not in SimulationConfig(task=TASK).command()  # the default: unchanged
    with pytest.raises(ValueError, match="choose from truth, clicks"):
        SimulationConfig(task=TASK, correct=("brush",))


@pytest.mark.slow  # about a minute on 2 CPU cores: real training and scoring
def test_propl_simulate_correct_clicks_end_to_end(folder, with_head, tmp_path):
    out = tmp_path / "s.json"
    cmd = (
        f"simulate --data {folder} --task {TASK} --rounds 1 --per-round 2 --start 2 --pool 4 "
        f"--first-steps 2 --steps 1 --no-feature-cache --device cpu --test-scans 1 "
        f"--like {with_head} --strategies uncertainty --correct clicks "
        f"--workdir {tmp_path / 'w'} --out {out}"
    )
    assert main(shlex.split(cmd)) == 0
    doc = json.loads(out.read_text())
    assert set(doc["strategies"]) == {"uncertainty+clicks"} and "--correct clicks" in doc["command"]
    assert doc["clicks"]["uncertainty+clicks"][1]["scans"] == 2
    assert "Clicks per corrected scan" in out.with_suffix(".md").read_text()


def test_the_click_table_says_when_each_rounds_tuned_head_was_kept():
    from propl.click_annotator import click_table

    clicks = {"mean": 10.0, "reached": 1, "scans": 2, "total": 20}
    tune = {"trained": True, "steps": 100, "held_back_click_iou": {"before": 0.4, "after": 0.3}}
    doc = {
        "rounds": 1,
        "strategies": {"uncertainty+clicks": [50.0, 52.0]},
        "clicks": {"uncertainty+clicks": [None, clicks]},
        "refine_head": {"copied_from": "shipped", "trained": True},
        "per_round_details": {
            "uncertainty+clicks": [
                {"round": 0, "retrain": {"refine": tune | {"kept": True}}},
                {"round": 1, "retrain": {"refine": tune | {"kept": False}}},
            ]
        },
    }
    text = "\n".join(click_table(doc))
    assert "the shipped model's" in text and "tunes the head" in text
    assert "round 0 0.40 → 0.30 (kept); round 1 0.40 → 0.30 (put back)" in text
