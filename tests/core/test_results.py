"""Results files are strict JSON: NaN never reaches the file."""

import json
import math
import subprocess
from pathlib import Path

import propl
from propl.results import json_safe, provenance, write_json


def test_nan_and_inf_become_null(tmp_path):
    path = write_json(
        tmp_path / "r" / "x.json",
        {"a": float("nan"), "b": [1.0, math.inf], "c": {"d": (2, -math.inf)}, "e": "ok"},
    )
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": [2, None]}, "e": "ok"}


def test_json_safe_keeps_finite_values():
    assert json_safe({"x": 0.5, "y": [1, 2]}) == {"x": 0.5, "y": [1, 2]}


def test_provenance_names_the_commit_of_a_checkout_and_none_elsewhere(monkeypatch):
    """A results file says which code made it: the commit when propl runs from a git checkout
    (as benchmarks do), None when git or the checkout is missing; never an error."""
    here = Path(propl.__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True)
    record = provenance()
    assert record["propl"] == propl.__version__
    if head.returncode == 0:
        assert record["commit"] == head.stdout.strip()
        assert isinstance(record["uncommitted_changes"], bool)
    monkeypatch.setenv("PATH", "/nonexistent")  # no git at all
    record = provenance()
    assert record["commit"] is None and record["uncommitted_changes"] is None
    assert record["torch"] and (record["cpus_usable"] is None or record["cpus_usable"] >= 1)
