"""Packaging follows the napari plugin template: napari is the host, not a dependency; the
PyPI / napari hub description has only absolute links, and those into the repository exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPO_URL = "https://github.com/napari-propl/napari-propl"
RAW_URL = "https://raw.githubusercontent.com/napari-propl/napari-propl"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def test_napari_and_qt_bindings_are_extras_not_dependencies() -> None:
    base = {_name(r) for r in PROJECT["dependencies"]}
    gui_stack = {"napari", "pyqt5", "pyqt6", "pyside2", "pyside6"}
    assert not base & gui_stack, base & gui_stack
    assert {"magicgui", "qtpy"} <= base  # the widgets' own, as in the template
    extras = PROJECT["optional-dependencies"]
    assert any(r.startswith("napari[all]") for r in extras["all"])
    assert any(_name(r) == "napari" for r in extras["gui"])  # make and tox install it


def test_urls_and_dynamic_version() -> None:
    assert set(PROJECT["urls"]) >= {"Homepage", "Documentation", "Source", "Issues"}
    assert all(u.startswith(REPO_URL) for u in PROJECT["urls"].values())
    assert "version" in PROJECT["dynamic"] and "version" not in PROJECT
    source = ROOT / PYPROJECT["tool"]["hatch"]["version"]["path"]
    assert re.search(r'^__version__ = "[^"]+"$', source.read_text(encoding="utf-8"), re.M)


def test_the_package_description_has_no_broken_links() -> None:
    readme = ROOT / PROJECT["readme"]
    targets = re.findall(r"\]\(([^)\s]+)\)", readme.read_text(encoding="utf-8"))
    assert targets
    relative = [t for t in targets if "://" not in t]
    assert not relative, f"PyPI and the napari hub cannot resolve {relative}"
    for target in targets:
        for prefix in (f"{REPO_URL}/blob/main/", f"{RAW_URL}/main/"):
            if target.startswith(prefix):
                path = target.removeprefix(prefix).split("#")[0]
                assert (ROOT / path).exists(), target
