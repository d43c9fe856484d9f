"""Results files are strict JSON: NaN never reaches the file."""

import json
import math
import subprocess
from pathlib import Path

import propl
from propl.results import checkout_commit, json_safe, provenance, write_json


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


def test_a_package_untracked_in_the_enclosing_checkout_gets_no_commit(tmp_path):
    """propl installed into a virtual environment inside someone's checkout must not report
    that checkout's commit; a tracked package reports it, and says when files changed."""
    repo = tmp_path / "repo"
    for folder in ("pkg", ".venv/site-packages/pkg"):
        (repo / folder).mkdir(parents=True)
        (repo / folder / "__init__.py").write_text("")
    (repo / ".gitignore").write_text(".venv/\n")

    def git(*args: str) -> str:
        cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
        return subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "x")
    head = git("rev-parse", "HEAD").strip()
    assert checkout_commit(repo / "pkg") == (head, False)
    assert checkout_commit(repo / ".venv" / "site-packages" / "pkg") == (None, None)
    (repo / "pkg" / "__init__.py").write_text("x = 1\n")
    assert checkout_commit(repo / "pkg") == (head, True)
    assert checkout_commit(tmp_path) == (None, None)  # not a checkout at all


def test_write_results_writes_the_json_and_the_table_side_by_side(tmp_path):
    from propl.results import write_results

    stem = tmp_path / "new" / "bench"
    text = write_results(stem, {"a": 1.5}, "| a |\n|---|\n| 1.5 |\n")
    assert text.startswith("| a |")
    assert json.loads(stem.with_suffix(".json").read_text()) == {"a": 1.5}
    assert stem.with_suffix(".md").read_text() == text
