"""What the Retrain widget tells while a round runs: elapsed time and time left, a verdict in
plain words, and a run stopped because napari closed is not a failure."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("napari")

from napari_propl import _retrain  # noqa: E402
from napari_propl._retrain import RoundClock, _duration, plain_verdict  # noqa: E402

PLUGIN = "napari-propl"


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_clock_tells_elapsed_and_time_left_from_the_steps_pace() -> None:
    now = FakeTime()
    clock = RoundClock(total=100, now=now)
    now.t += 30  # reading the scans, the baseline: not a step's pace
    assert clock.describe() == "preparing · 30 s"
    clock.step(10)
    assert clock.left() is None and "step 10 of 100" in clock.describe()
    now.t += 10
    clock.step(20)  # 10 steps in 10 s: 80 steps left
    assert clock.left() == pytest.approx(80.0)
    assert clock.describe() == "step 20 of 100 · 40 s · about 1 min 20 s left"
    now.t += 5  # counts down between steps
    assert clock.left() == pytest.approx(75.0)
    clock.step(100)
    assert clock.describe().startswith("judging the new version")


def test_durations_read_like_a_clock() -> None:
    assert [_duration(s) for s in (0.4, 59, 75, 3600 + 120)] == [
        "0 s",
        "59 s",
        "1 min 15 s",
        "1 h 02 min",
    ]


def test_verdict_in_plain_words() -> None:
    result = {"version": "v0003", "baseline": "v0002", "score": 71.4, "baseline_score": 70.9}
    text = plain_verdict(result | {"gain_lower_bound": -0.8})
    assert "lower bound" not in text and "%" not in text
    assert "71.4" in text and "70.9" in text and "review more scans" in text
    assert plain_verdict(result | {"score": 65.0}).endswith("not better")


def test_closing_napari_during_a_retrain_is_no_failure(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    errors: list[str] = []
    monkeypatch.setattr(_retrain, "show_error", errors.append)
    viewer = make_napari_viewer()
    retrain = viewer.window.add_plugin_dock_widget(PLUGIN, "Retrain (ProPL)")[1]
    qtbot.wait(50)
    retrain.session.open_project(tmp_path / "p.zarr", create=True)
    # a stand-in for `propl train --json`: one step, then it trains on and on
    step = json.dumps({"kind": "step", "step": 1, "total": 150, "data": {"loss": 0.5}})
    script = f"import sys, time; print({step!r}, flush=True); time.sleep(120)"
    monkeypatch.setattr(retrain, "command", lambda: [sys.executable, "-c", script])
    settled: list[dict] = []
    retrain.round_settled.connect(settled.append)
    retrain.start()
    qtbot.waitUntil(lambda: any(e["kind"] == "step" for e in retrain.events), timeout=30_000)
    assert "step 1 of 150" in retrain.progress.format()
    viewer.close()
    qtbot.waitUntil(lambda: bool(settled), timeout=10_000)
    assert errors == []
    assert settled[0]["outcome"] == "cancelled"
    assert settled[0]["status"] == "cancelled: napari closed during retraining"


def test_the_bar_says_done_once_the_scans_are_re_predicted(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    retrain = viewer.window.add_plugin_dock_widget(PLUGIN, "Retrain (ProPL)")[1]
    retrain._on_repredict_progress((3, 14))
    assert "re-predicting" in retrain.progress.format()
    retrain._on_repredicted(14)
    assert retrain.progress.format() == "done: 14 scans re-predicted"
