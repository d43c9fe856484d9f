"""The headless demo: a real echo cine segmented with the shipped model, written to files.

``propl demo`` (and ``make demo`` on a machine without a display) runs this; the napari demo
(``python -m napari_propl.demo``) shows the same cine in the viewer instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .export import _png_bytes, _tiff_bytes, write_mask_tiff
from .files import atomic_write_bytes

SAMPLE = "examples_ybr_color.dcm"  # pydicom's 30-frame echocardiography cine (YBR colour)


@dataclass
class DemoResult:
    source: str
    task: str
    model: Path
    frames: int
    confidence: float
    least_confident_frame: int
    files: list[Path]


def sample_cine() -> tuple[np.ndarray, str]:
    """pydicom's bundled echo cine as ``(30, 240, 320, 3)`` uint8 RGB, and its path."""
    from pydicom.data import get_testdata_file

    from .data.readers import read_scan

    path = str(get_testdata_file(SAMPLE, download=False))
    return read_scan(path)[0], path


def heat(values: np.ndarray) -> np.ndarray:
    """``(H, W)`` in [0, 1] → ``(H, W, 3)`` uint8, black → red → yellow → white."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)[..., None] * 3.0
    rgb = np.clip(np.concatenate([v, v - 1.0, v - 2.0], axis=-1), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def overlay(frame: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """The frame in grey with the mask tinted and its outline drawn in ``colour``."""
    from skimage.segmentation import find_boundaries

    grey = frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=-1)
    out = grey.astype(np.float32)
    inside = mask > 0
    out[inside] = 0.6 * out[inside] + 0.4 * np.asarray(colour, np.float32)
    out[find_boundaries(inside, mode="inner")] = colour
    return out.astype(np.uint8)


def overlay_strip(
    frame: np.ndarray, mask: np.ndarray, uncertainty: np.ndarray, colour: tuple[int, int, int]
) -> np.ndarray:
    """Scan | scan with mask | uncertainty, side by side (one RGB image)."""
    rgb = frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=-1)
    gap = np.full((rgb.shape[0], 8, 3), 255, np.uint8)
    return np.concatenate([rgb, gap, overlay(rgb, mask, colour), gap, heat(uncertainty)], axis=1)


def run_demo(
    out: str | Path,
    model: str | Path | None = None,
    task: str = "left_heart",
    device: str = "auto",
    overwrite: bool = False,
) -> DemoResult:
    """Segment the sample cine and write ``<out>/echo_<task>_mask.tif`` (0/1 per frame),
    ``..._uncertainty.tif`` (float32 in [0, 1]) and ``..._overlay.png`` (the least confident
    frame: scan, mask outline, uncertainty).

    Raises:
        CheckpointError: no usable model; FileExistsError: outputs exist and not ``overwrite``.
    """
    from .inference import Predictor, resolve_model
    from .tasks import task_colour

    out = Path(out)
    stem = f"echo_{task}"
    paths = [out / f"{stem}_{kind}" for kind in ("mask.tif", "uncertainty.tif", "overlay.png")]
    for p in paths:  # before any work; only these three files are ever replaced
        if p.exists() and not overwrite:
            raise FileExistsError(f"{p} exists (pass --overwrite to replace it)")
    model_path = resolve_model(model)
    predictor = Predictor.from_checkpoint(model_path, device=device)
    predictor.model.task_index(task)  # unknown task: a clear error before any work
    frames, source = sample_cine()
    pred = predictor.predict(frames, task)
    out.mkdir(parents=True, exist_ok=True)
    worst = int(np.argmin(pred.confidence))
    hex_colour = task_colour(task)
    colour = (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16))
    strip = overlay_strip(frames[worst], pred.mask[worst], pred.uncertainty[worst], colour)
    write_mask_tiff(pred.mask, paths[0], overwrite=True)
    atomic_write_bytes(paths[1], _tiff_bytes(pred.uncertainty.astype(np.float32)))
    atomic_write_bytes(paths[2], _png_bytes(strip))
    return DemoResult(
        source=source,
        task=task,
        model=model_path,
        frames=len(frames),
        confidence=float(np.mean(pred.confidence)),
        least_confident_frame=worst,
        files=paths,
    )
