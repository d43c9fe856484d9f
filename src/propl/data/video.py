"""Read video files (MP4, MOV, AVI, MKV) into RGB frames with PyAV.

Frames come back "as acquired": ``(F, H, W, 3)`` uint8 RGB; the model converts to grayscale
elsewhere. Use :func:`propl.data.readers.read_scan`, which detects videos by their content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .readers import ReaderError, ScanMeta, _check_pixels

PYAV_HINT = "reading video needs PyAV: pip install av"
# A container whose declared (or duration-estimated) frame count exceeds what decodes by more
# than this share, and at least _SHORTFALL_MIN frames, is truncated. Some slack is needed:
# edit lists and variable frame rates make the declared count approximate.
_SHORTFALL_SHARE = 0.05
_SHORTFALL_MIN = 2


def read_video(path: Path, max_pixels: int) -> tuple[np.ndarray, ScanMeta]:
    """Decode every frame of the first video stream of ``path``.

    Args:
        path: an MP4, MOV, AVI or MKV file (anything FFmpeg can demux).
        max_pixels: refuse videos with more than ``F * H * W`` pixels; checked before
            decoding when the container declares its frame count, else while decoding.

    Returns:
        ``(F, H, W, 3)`` uint8 RGB frames and their :class:`ScanMeta` (format ``"video"``,
        ``frame_time_ms`` from the stream's average frame rate).

    Raises:
        ReaderError: PyAV missing; a corrupt, truncated or empty container; no video
            stream; no decodable frame; too many pixels. The message names the file.
    """
    try:
        import av
    except ImportError as exc:
        raise ReaderError(path, PYAV_HINT) from exc
    try:
        with path.open("rb") as fh, av.open(fh) as container:
            if not container.streams.video:
                raise ReaderError(path, "the file has no video stream")
            stream = container.streams.video[0]
            info = _stream_info(container, stream)
            declared = info["declared_frames"]
            if declared > 0:
                _check_pixels(path, declared * info["width"] * info["height"], max_pixels)
            frames = _decode(path, container, stream, max_pixels)
    except ReaderError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # av.error.FFmpegError subclasses, OSError, ValueError, ...
        raise ReaderError(path, f"truncated or corrupt video ({exc})") from exc
    _check_complete(path, len(frames), info)
    arr = np.stack(frames)
    rate = info["average_rate"]
    meta = ScanMeta(
        str(path),
        "video",
        arr.shape[0],
        True,
        frame_time_ms=1000.0 / rate if rate else None,
        photometric=info["pix_fmt"],
        extra=info,
    )
    return arr, meta


def _stream_info(container: Any, stream: Any) -> dict[str, Any]:
    """JSON-serialisable facts about the stream (rate in frames/s; None when unknown)."""
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate
    rate = float(rate) if rate else None
    seconds = None
    if stream.duration is not None and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration and len(container.streams) == 1:  # else it may be the audio's
        seconds = container.duration / 1e6
    return {
        "container": container.format.name,
        "codec": ctx.name,
        "pix_fmt": ctx.pix_fmt,
        "width": int(ctx.width),
        "height": int(ctx.height),
        "declared_frames": int(stream.frames or 0),
        "duration_s": seconds,
        "average_rate": rate,
    }


def _decode(path: Path, container: Any, stream: Any, max_pixels: int) -> list[np.ndarray]:
    """All frames as (H, W, 3) uint8, stopping once more than ``max_pixels`` have decoded."""
    frames: list[np.ndarray] = []
    n_pixels = 0
    for frame in container.decode(stream):
        rgb = frame.to_ndarray(format="rgb24")
        if frames and rgb.shape != frames[0].shape:
            raise ReaderError(
                path, f"frames of different sizes ({frames[0].shape[:2]} then {rgb.shape[:2]})"
            )
        n_pixels += rgb.shape[0] * rgb.shape[1]
        if n_pixels > max_pixels:
            raise ReaderError(
                path,
                f"too many pixels (more than max_pixels={max_pixels:,} "
                f"after {len(frames) + 1} frames)",
            )
        frames.append(rgb)
    return frames


def _check_complete(path: Path, n_decoded: int, info: dict[str, Any]) -> None:
    """Raise when nothing decoded, or clearly fewer frames than the container announces."""
    if n_decoded == 0:
        raise ReaderError(path, "the video has no decodable frames (empty or truncated)")
    expected = info["declared_frames"]
    if expected <= 0 and info["duration_s"] and info["average_rate"]:
        expected = round(info["duration_s"] * info["average_rate"])
    shortfall = expected - n_decoded
    if shortfall > max(_SHORTFALL_MIN, _SHORTFALL_SHARE * expected):
        raise ReaderError(
            path, f"truncated video: {n_decoded} frames decode of the {expected} announced"
        )
