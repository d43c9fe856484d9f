"""napari reader: ultrasound scans (DICOM, PNG/JPEG/BMP, TIFF, video) and folders of them.

The core reads (``propl.data.readers``); this module only turns frames + metadata into layer
data. A file that cannot be read becomes a napari notification naming it, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_warning

from propl.data.readers import SUPPORTED_SUFFIXES, ReaderError, read_scan

LayerData = list[tuple[Any, ...]]
NULL_LAYER: LayerData = [(None,)]  # napari's "nothing to show" sentinel (no error dialog)


def layer_data(frames: Any, meta: Any, name: str) -> tuple[Any, dict[str, Any], str]:
    """One Image layer: colour shown as acquired, spacing as the layer scale (mm)."""
    scale = (1.0, *meta.spacing_mm) if meta.spacing_mm else (1.0, 1.0, 1.0)
    kwargs = {
        "name": name,
        "rgb": bool(meta.is_color),
        "scale": scale,
        "metadata": {"propl_source": meta.path, "propl_spacing_mm": meta.spacing_mm},
    }
    return frames, kwargs, "image"


def read_paths(paths: list[str]) -> LayerData:
    """Read files and folders; unreadable files are reported and skipped."""
    from propl.data.readers import iter_scan_files

    out: LayerData = []
    for p in map(Path, paths):
        try:
            files = iter_scan_files(p) if p.is_dir() else [p]
        except ReaderError as exc:
            show_error(str(exc))
            continue
        for f in files:
            try:
                frames, meta = read_scan(f)
            except ReaderError as exc:
                show_error(str(exc))
                continue
            except MemoryError:
                show_error(f"cannot read '{f}': not enough memory")
                continue
            out.append(layer_data(frames, meta, f.stem))
    if not out:
        show_warning(f"no scan could be read from {', '.join(paths)}")
        return NULL_LAYER
    return out


def get_reader(path: str | list[str]) -> Callable[[Any], LayerData] | None:
    """Claim folders and files with a supported suffix (content is checked when reading)."""
    paths = [path] if isinstance(path, str) else list(path)
    for p in map(Path, paths):
        if p.suffix.lower() == ".zarr":
            return None  # a project store: opened from the Review widget, not as layers
        if not (p.is_dir() or p.suffix.lower() in SUPPORTED_SUFFIXES):
            return None
    return lambda _p: read_paths(paths)
