"""Video scans: small clips written with PyAV in tmp_path, read back; broken videos."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from propl.data import video
from propl.data.readers import SUPPORTED_SUFFIXES, ReaderError, read_scan, to_grayscale

av = pytest.importorskip("av")

N_FRAMES, HEIGHT, WIDTH, RATE = 10, 48, 64, 25


def has_encoder(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        return False
    return True


def clip(n_frames: int = N_FRAMES) -> np.ndarray:
    """(F, H, W, 3) uint8: smooth colour ramps that brighten frame by frame."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    frames = np.empty((n_frames, HEIGHT, WIDTH, 3), np.uint8)
    for i in range(n_frames):
        frames[i, ..., 0] = xx * 2 + i * 8
        frames[i, ..., 1] = yy * 4
        frames[i, ..., 2] = 200 - xx * 2
    return frames


def write_video(path: Path, codec: str, frames: np.ndarray, rate: int = RATE) -> Path:
    if not has_encoder(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def assert_error_names(path: Path, match: str | None = None, **kw) -> ReaderError:
    with pytest.raises(ReaderError, match=match) as info:
        read_scan(path, **kw)
    assert path.name in str(info.value)
    return info.value


@pytest.fixture
def mp4(tmp_path: Path) -> Path:
    return write_video(tmp_path / "clip.mp4", "mpeg4", clip())


@pytest.fixture
def mkv(tmp_path: Path) -> Path:
    """Matroska does not declare its frame count (only its duration)."""
    return write_video(tmp_path / "clip.mkv", "ffv1", clip())


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("clip.mp4", "mpeg4"),
        ("clip.mp4", "libx264"),
        ("clip.avi", "mpeg4"),
        ("clip.mov", "mjpeg"),
        ("clip.mkv", "ffv1"),
    ],
)
def test_video_roundtrip(tmp_path, name, codec):
    source = clip()
    frames, meta = read_scan(write_video(tmp_path / name, codec, source))
    assert frames.shape == (N_FRAMES, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert meta.format == "video" and meta.is_color and meta.n_frames == N_FRAMES
    assert meta.frame_time_ms == pytest.approx(1000 / RATE)
    assert meta.spacing_mm is None and meta.modality is None and meta.header == {}
    assert meta.extra["width"] == WIDTH and meta.extra["height"] == HEIGHT
    # lossy (and 4:2:0 chroma) but close; frame order kept (brightness rises)
    assert np.abs(frames.astype(int) - source).mean() < 6
    red = frames[..., 0].reshape(N_FRAMES, -1).mean(axis=1)
    assert (np.diff(red) > 0).all()
    assert to_grayscale(frames).shape == (N_FRAMES, HEIGHT, WIDTH)


def test_video_frame_time_follows_rate(tmp_path):
    path = write_video(tmp_path / "slow.mp4", "mpeg4", clip(4), rate=10)
    assert read_scan(path)[1].frame_time_ms == pytest.approx(100.0)


@pytest.mark.parametrize("fixture", ["mp4", "mkv"])
def test_video_detected_by_content(request, tmp_path, fixture):
    path = request.getfixturevalue(fixture)
    odd = tmp_path / "export.bin"
    odd.write_bytes(path.read_bytes())
    frames, meta = read_scan(odd)
    assert meta.format == "video" and frames.shape[0] == N_FRAMES


def test_avi_detected_by_riff_header(tmp_path):
    path = write_video(tmp_path / "clip.avi", "mpeg4", clip())
    head = path.read_bytes()[:12]
    assert head[:4] == b"RIFF" and head[8:12] == b"AVI "
    renamed = path.rename(tmp_path / "clip")
    assert read_scan(renamed)[1].format == "video"


def test_video_suffixes_supported():
    assert {".mp4", ".avi", ".mov", ".mkv"} <= set(SUPPORTED_SUFFIXES)


def test_too_many_pixels_checked_before_decoding(mp4, monkeypatch):
    monkeypatch.setattr(video, "_decode", lambda *a: pytest.fail("decoded"))
    assert_error_names(mp4, match="too many pixels", max_pixels=N_FRAMES * HEIGHT * WIDTH - 1)


def test_too_many_pixels_without_declared_count_stops_decoding(mkv):
    err = assert_error_names(mkv, match="too many pixels", max_pixels=3 * HEIGHT * WIDTH)
    assert "after 4 frames" in str(err)
    assert read_scan(mkv, max_pixels=N_FRAMES * HEIGHT * WIDTH)[0].shape[0] == N_FRAMES


def test_size_limit_in_bytes_counts_rgb_and_is_checked_before_decoding(mp4, mkv, monkeypatch):
    rgb_bytes = N_FRAMES * HEIGHT * WIDTH * 3
    assert read_scan(mp4, max_bytes=rgb_bytes)[0].shape == (N_FRAMES, HEIGHT, WIDTH, 3)
    monkeypatch.setattr(video, "_decode", lambda *a: pytest.fail("decoded"))
    for path in (mp4, mkv):  # mkv: the frames its duration implies
        err = assert_error_names(path, match="too large", max_bytes=rgb_bytes - 1)
        assert "PROPL_MAX_SCAN_BYTES" in str(err)


def test_ffmpeg_refusing_an_impossible_allocation_is_a_corrupt_file(mp4, monkeypatch):
    """FFmpeg answers ENOMEM (av.error.MemoryError) for a box that declares an absurd size."""

    def refuse(*args, **kwargs):
        raise av.error.MemoryError(12, "Cannot allocate memory", str(mp4))

    monkeypatch.setattr(av, "open", refuse)
    err = assert_error_names(mp4, match="truncated or corrupt video")
    assert "not enough memory" not in str(err)


def test_size_limit_in_bytes_stops_decoding(mkv, monkeypatch):
    monkeypatch.setattr(video, "_check_declared", lambda *a: None)  # a container that lies
    err = assert_error_names(mkv, match="too large", max_bytes=3 * HEIGHT * WIDTH * 3)
    assert "more than" in str(err)


# -- broken videos: every error names the file ---------------------------------------------


@pytest.mark.parametrize("fixture", ["mp4", "mkv"])
def test_truncated_video(request, tmp_path, fixture):
    path = request.getfixturevalue(fixture)
    half = tmp_path / f"half{path.suffix}"
    half.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_error_names(half, match="truncated")


def test_random_bytes_named_mp4(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_error_names(path, match="not a video file")


def test_garbage_after_ftyp(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2" + noise)
    assert_error_names(path, match="corrupt|no video stream|no decodable frames")


def test_empty_video_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert_error_names(tmp_path / "empty.mp4", match="empty")


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_video_without_frames(tmp_path, suffix):
    path = tmp_path / f"zero{suffix}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        container.start_encoding()
    assert_error_names(path)


def test_audio_only_file(tmp_path):
    if not has_encoder("mp2"):
        pytest.skip("this PyAV build has no mp2 encoder")
    path = tmp_path / "sound.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp2", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.int16), "s16", "mono")
        frame.sample_rate = 44100
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    assert_error_names(path, match="no video stream")


def test_missing_pyav_says_what_to_install(mp4, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    assert_error_names(mp4, match="pip install av")
