"""The queue-order and simulate-seeds tables read the same per-seed results files: one
``propl simulate --strategies uncertainty random error`` run per seed serves both."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

CURVES = {  # seed -> strategy -> test Dice per round (round 0 shared)
    0: {"uncertainty": [60.0, 61.0, 62.0, 64.0], "random": [60.0, 60.5, 61.0, 62.0],
        "error": [60.0, 62.0, 63.0, 65.0]},
    1: {"uncertainty": [50.0, 53.0, 54.0, 56.0], "random": [50.0, 51.0, 52.0, 53.0],
        "error": [50.0, 52.0, 55.0, 57.0]},
}  # fmt: skip


def simulate_doc(seed: int, curves: dict[str, list[float]]) -> dict:
    """What ``propl simulate`` writes, as far as the two tables read it."""
    gain = {s: c[-1] - c[0] for s, c in curves.items()}
    return {
        "task": "thyroid_nodule",
        "rounds": 3,
        "per_round": 10,
        "config": {"seed": seed},
        "strategies": curves,
        "gain": gain,
        "gain_ratio": gain.get("uncertainty", 0.0) / gain.get("random", 1.0),
        "pixel_auroc": 0.9,
        "edited_pixels": {s: [100, 200, 300] for s in curves},
        "pixel_auroc_per_round": {s: [0.8, 0.85, 0.88, 0.9] for s in curves},
    }


@pytest.fixture
def benches(tmp_path, monkeypatch, load_benchmark):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # queue_order imports its sibling
    monkeypatch.delitem(sys.modules, "simulate_seeds", raising=False)
    queue_order = load_benchmark("queue_order.py")
    seeds = sys.modules["simulate_seeds"]
    monkeypatch.setattr(seeds, "RESULTS", tmp_path)
    for seed, curves in CURVES.items():
        name = "simulate-thyroid_nodule" + (f"-seed{seed}" if seed else "")
        (tmp_path / f"{name}.json").write_text(json.dumps(simulate_doc(seed, curves)))
    (tmp_path / "simulate-thyroid_nodule-clicks.json").write_text("not a seed run")
    return queue_order, seeds, tmp_path


def test_both_tables_read_the_seed_runs_and_nothing_else(benches, monkeypatch) -> None:
    queue_order, seeds, results = benches
    files = seeds.seed_files("thyroid_nodule")
    assert sorted(f.name for f in files) == [
        "simulate-thyroid_nodule-seed1.json",
        "simulate-thyroid_nodule.json",
    ]  # the clicks run is another experiment, not a seed
    out = results / "queue-order.md"
    monkeypatch.setattr(sys, "argv", ["queue_order.py", "--out", str(out)])
    queue_order.main()
    table = out.read_text()
    # mean gains: uncertainty (4 + 6) / 2 = 5, error 6, random 2.5 -> ratios 2.00 and 2.40
    assert "| uncertainty | 55.00 | 57.00 | 58.00 | 60.00 | +5.00 |" in table
    assert "**2.00**" in table and "**2.40**" in table
    seeds_table = seeds.table("thyroid_nodule", [json.loads(f.read_text()) for f in files])
    assert "| mean | | +5.00 | +2.50 | **2.00** |" in seeds_table


def test_runs_of_one_seed_that_start_apart_are_refused(benches) -> None:
    queue_order, _, _ = benches
    other = simulate_doc(0, {"random": [59.0, 60.0, 61.0, 62.0]})
    with pytest.raises(ValueError, match="not the same round 0"):
        queue_order.merge([simulate_doc(0, CURVES[0]), other])
