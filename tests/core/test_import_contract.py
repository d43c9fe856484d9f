"""The core (``propl``) never imports the GUI stack or the plugin.

Every submodule is imported in a fresh interpreter, so modules this test process has already
imported cannot hide a forbidden import; the module that pulled in a forbidden package is named.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("napari", "napari_propl", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6")

# Runs in the child interpreter: imports every propl module one by one and reports, per module,
# the import error (if any) and the forbidden top-level packages that appeared in sys.modules.
_PROBE = r"""
import importlib, json, pkgutil, sys, traceback

FORBIDDEN = set(sys.argv[1].split(","))

def forbidden_loaded():
    return {name.partition(".")[0] for name in sys.modules} & FORBIDDEN

report = {"modules": [], "errors": {}, "forbidden": {}}

def record(name, before):
    new = sorted(forbidden_loaded() - before)
    if new:
        report["forbidden"][name] = new

def import_one(name):
    before = forbidden_loaded()
    try:
        importlib.import_module(name)
    except BaseException:
        report["errors"][name] = traceback.format_exc(limit=-3)
    record(name, before)
    report["modules"].append(name)

import_one("propl")
if "propl" not in report["errors"]:
    import propl
    names = [info.name for info in pkgutil.walk_packages(
        propl.__path__, "propl.", onerror=lambda name: None)]
    for name in names:
        import_one(name)
report["loaded"] = sorted(forbidden_loaded())
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Import every propl module in a fresh interpreter and return its report."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path_factory.mktemp("import-probe"),
    )
    assert result.returncode == 0, f"import probe crashed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_core_module_imports(probe: dict) -> None:
    errors = probe["errors"]
    details = "\n".join(f"--- {name}\n{tb}" for name, tb in errors.items())
    if errors:
        pytest.fail(
            f"propl modules that fail to import: {sorted(errors)}\n{details}", pytrace=False
        )


def test_core_never_imports_gui_or_plugin(probe: dict) -> None:
    assert "propl" in probe["modules"]
    offenders = probe["forbidden"]
    if offenders:
        lines = [f"importing {mod} loaded {', '.join(pkgs)}" for mod, pkgs in offenders.items()]
        pytest.fail(
            "propl must not import the GUI stack or the plugin:\n" + "\n".join(lines),
            pytrace=False,
        )
    assert not probe["loaded"], f"forbidden packages loaded: {probe['loaded']}"


def _lint_imports_executable() -> str | None:
    beside_python = Path(sys.executable).with_name("lint-imports")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("lint-imports")


def test_import_linter_contract(tmp_path: Path) -> None:
    executable = _lint_imports_executable()
    if executable is None:
        pytest.skip("lint-imports (import-linter) is not installed")
    result = subprocess.run(
        [executable, "--config", str(REPO_ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"import-linter failed:\n{result.stdout}\n{result.stderr}"


# Opening a project, saving a correction and exporting masks need neither PyTorch nor the model:
# a process that only does those (a writer, `propl export`, `propl models`, the plugin before its
# first prediction) must not pay torch's import (seconds on a small CPU); nor must building the
# command line's parser (`propl --help`).
TORCH_FREE = (
    "propl.store",
    "propl.files",
    "propl.results",
    "propl.export",
    "propl.project_export",
    "propl.cli",
    "propl.commands",
    "propl.errors",
    "propl.bench.profiles",
)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_loads_without_torch(module: str, torch_loaded_by) -> None:
    loaded = torch_loaded_by(f"import {module}")
    assert loaded == [], f"importing {module} loaded {loaded}"
