"""Read video files (MP4, MOV, AVI, MKV) into RGB frames with PyAV.

Frames come back "as acquired": ``(F, H, W, 3)`` uint8 RGB; the model converts to grayscale
elsewhere. Use :func:`propl.data.readers.read_scan`, which detects videos by their content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .readers import ReaderError, ScanMeta, SizeLimits, _size

PYAV_HINT = "reading video needs PyAV: pip install av"
# A container whose declared (or duration-estimated) frame count exceeds what decodes by more
# than this share, and at least _SHORTFALL_MIN frames, is truncated. Some slack is needed:
# edit lists and variable frame rates make the declared count approximate.
_SHORTFALL_SHARE = 0.05
_SHORTFALL_MIN = 2


def read_video(path: Path, limits: SizeLimits) -> tuple[np.ndarray, ScanMeta]:
    """Decode every frame of the first video stream of ``path``.

    Args:
        path: an MP4, MOV, AVI or MKV file (anything FFmpeg can demux).
        limits: refuse videos whose RGB frames take more bytes (or have more pixels
            ``F * H * W``); checked before decoding from the frame size and the declared
            frame count when the container has one, else while decoding.

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
            _check_declared(path, info, limits)
            frames = _decode(path, container, stream, limits)
    except ReaderError:
        raise
    except av.error.FFmpegError as exc:  # also FFmpeg's ENOMEM for an impossible box size
        raise ReaderError(path, f"truncated or corrupt video ({exc})") from exc
    except MemoryError:
        raise
    except Exception as exc:  # OSError, ValueError, ...
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


def _decode(path: Path, container: Any, stream: Any, limits: SizeLimits) -> list[np.ndarray]:
    """All frames as (H, W, 3) uint8, stopping once they would exceed ``limits``."""
    frames: list[np.ndarray] = []
    n_pixels = 0
    for frame in container.decode(stream):
        n_pixels += frame.width * frame.height  # checked before the RGB copy is made
        _check_decoded(path, n_pixels, len(frames) + 1, limits)
        rgb = frame.to_ndarray(format="rgb24")
        if frames and rgb.shape != frames[0].shape:
            raise ReaderError(
                path, f"frames of different sizes ({frames[0].shape[:2]} then {rgb.shape[:2]})"
            )
        frames.append(rgb)
    return frames


def _check_decoded(path: Path, n_pixels: int, n_frames: int, limits: SizeLimits) -> None:
    """Raise once the first ``n_frames`` frames hold too many pixels or bytes."""
    if limits.max_pixels is not None and n_pixels > limits.max_pixels:
        raise ReaderError(
            path,
            f"too many pixels (more than max_pixels={limits.max_pixels:,} after {n_frames} frames)",
        )
    if 3 * n_pixels > limits.max_bytes:
        raise ReaderError(
            path, limits.too_large(f"its frames take more than {_size(3 * n_pixels)} decoded")
        )


def _check_declared(path: Path, info: dict[str, Any], limits: SizeLimits) -> None:
    """Before decoding: the declared frames (at least one), then the frames the duration
    and rate imply (Matroska declares no count) against the size limit in bytes."""
    frame = info["width"] * info["height"]
    if frame <= 0:  # known once a frame decodes
        return
    limits.check(path, max(info["declared_frames"], 1) * frame, 3)
    if info["declared_frames"] <= 0 and info["duration_s"] and info["average_rate"]:
        estimate = round(info["duration_s"] * info["average_rate"])
        if 3 * estimate * frame > limits.max_bytes:
            size = _size(3 * estimate * frame)
            raise ReaderError(
                path,
                limits.too_large(
                    f"its {estimate:,} frames (from its duration) take about {size} decoded"
                ),
            )


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
