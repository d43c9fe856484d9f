"""napari reader: ultrasound scans (DICOM, PNG/JPEG/BMP, TIFF, video) and folders of them.

The core reads (``propl.data.readers``); this module only turns frames + metadata into layer
data. A file that cannot be read becomes a napari notification naming it, never a traceback:
opening a folder or several files loads every good one and lists the bad ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_warning

from propl.data.readers import SUPPORTED_SUFFIXES, ReaderError, ReaderWarning, read_scan
from propl.exam import exam_of

LayerData = list[tuple[Any, ...]]
NULL_LAYER: LayerData = [(None,)]  # napari's "nothing to show" sentinel (no error dialog)
_LISTED = 5  # bad files named in the summary of a multi-file open


def layer_data(frames: Any, meta: Any, name: str) -> tuple[Any, dict[str, Any], str]:
    """One Image layer: colour shown as acquired, spacing as the layer scale (mm)."""
    scale = (1.0, *meta.spacing_mm) if meta.spacing_mm else (1.0, 1.0, 1.0)
    kwargs = {
        "name": name,
        "rgb": bool(meta.is_color),
        "scale": scale,
        "metadata": {
            "propl_source": meta.path,
            "propl_spacing_mm": meta.spacing_mm,
            "propl_burned_in_annotation": bool(getattr(meta, "burned_in_annotation", False)),
            # the imaging region (a DICOM's ultrasound region): Segment runs the model on it
            "propl_region": getattr(meta, "region", None),
            # the exam the file names (a DICOM's exam type): Segment suggests its task
            "propl_exam": exam_of(getattr(meta, "header", None)),
        },
    }
    return frames, kwargs, "image"


def _read_one(path: Path) -> tuple[Any, dict[str, Any], str] | None:
    """The layer of one file; None (after a notification naming it) when it cannot be read.

    The reader's warnings (ignored spacing, burned-in annotation) become napari warnings.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReaderWarning)
        try:
            frames, meta = read_scan(path)
        except ReaderError as exc:
            show_error(str(exc))
            return None
        except Exception as exc:  # read_scan promises ReaderError: never let napari see one
            show_error(f"cannot read '{path}': {type(exc).__name__}: {exc}")
            return None
    for warning in caught:
        if issubclass(warning.category, ReaderWarning):
            show_warning(str(warning.message))
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return layer_data(frames, meta, path.stem)


def _list_files(p: Path) -> list[Path]:
    """``p`` itself, or the scan files of the folder ``p`` ([] after a notification)."""
    from propl.data.readers import iter_scan_files

    try:
        return iter_scan_files(p) if p.is_dir() else [p]
    except ReaderError as exc:
        show_error(str(exc))
        return []


def read_paths(paths: list[str]) -> LayerData:
    """Read files and folders; unreadable files are reported and skipped."""
    out: LayerData = []
    bad: list[Path] = []
    for f in (f for p in map(Path, paths) for f in _list_files(p)):
        layer = _read_one(f)
        if layer is None:
            bad.append(f)
        else:
            out.append(layer)
    if not out:
        show_warning(f"no scan could be read from {', '.join(paths)}")
        return NULL_LAYER
    if bad:
        names = ", ".join(f.name for f in bad[:_LISTED]) + (" ..." if len(bad) > _LISTED else "")
        show_warning(f"opened {len(out)} scan(s); {len(bad)} file(s) could not be read: {names}")
    return out


PLUGIN = "napari-propl"
PREFERRED_FOR = ("*.dcm", "*.dicom")
"""Patterns napari's builtins claim too but misread (no JPEG-compressed DICOM, no pixel
spacing): without a preference napari asks which reader to use on every open."""


def prefer_for_dicom() -> list[str]:
    """Make this plugin napari's reader for DICOM where the user has set no preference
    (Preferences > Plugins > File extension readers changes it); returns the patterns set."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    new = {p: PLUGIN for p in PREFERRED_FOR if p not in plugins.extension2reader}
    if new:
        plugins.extension2reader = {**plugins.extension2reader, **new}
    return list(new)


def get_reader(path: str | list[str]) -> Callable[[Any], LayerData] | None:
    """Claim folders and files with a supported suffix (content is checked when reading)."""
    paths = [path] if isinstance(path, str) else list(path)
    for p in map(Path, paths):
        if p.suffix.lower() == ".zarr":
            return None  # a project store: opened from the Review widget, not as layers
        if not (p.is_dir() or p.suffix.lower() in SUPPORTED_SUFFIXES):
            return None
    return lambda _p: read_paths(paths)
