"""Results files are strict JSON: NaN never reaches the file."""

import json
import math

from propl.results import json_safe, write_json


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
