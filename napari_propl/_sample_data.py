"""Sample data: real echo cine loops shipped in pydicom (and pydicom-data when installed)."""

from __future__ import annotations

from pathlib import Path

from ._reader import LayerData, layer_data


def _read(path: Path, name: str) -> LayerData:
    from propl.data.readers import read_scan

    frames, meta = read_scan(path)
    return [layer_data(frames, meta, name)]


def echo_cine() -> LayerData:
    """pydicom's 30-frame colour echo cine (US multi-frame, YBR), always available."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("examples_ybr_color.dcm", download=False)
    if path is None:  # pragma: no cover - the file ships inside the pydicom wheel
        raise FileNotFoundError("pydicom's examples_ybr_color.dcm is missing")
    return _read(Path(str(path)), "echo cine (pydicom)")


def pydicom_data_file(name: str) -> Path | None:
    """A file of the installed ``pydicom-data`` package, without ever downloading."""
    import importlib.util

    spec = importlib.util.find_spec("data_store")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    return path if path.is_file() else None


def apical_four_chamber() -> LayerData:
    """pydicom-data's 120-frame apical four-chamber echo cine (JPEG baseline)."""
    path = pydicom_data_file("color3d_jpeg_baseline.dcm")
    if path is None:
        from napari.utils.notifications import show_warning

        show_warning("this sample needs the pydicom-data package: pip install pydicom-data")
        return [(None,)]
    return _read(path, "apical 4-chamber echo (pydicom-data)")
