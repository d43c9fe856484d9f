"""Robustness: what bad input files do to the scan readers.

Every trial reads one file with ``propl.data.readers.read_scan`` in a worker process (so a
decoder that crashes, hangs or eats the machine's memory is counted, not fatal) and counts one
outcome:

- ``ok``: it read (a warning may say what was ignored);
- ``clean_error``: a ``ReaderError`` naming the file;
- ``crash``: anything else: another exception type, an error that does not name the file,
  running out of memory (even when reported as a ``ReaderError``), the worker dying, or a read
  over ``--timeout`` seconds.

Sections (one function each, returning ``{kind: counts}`` and optional details, in
``SECTIONS``):

- :func:`input_trials`: ``--n`` mutations (byte flips, truncations, zeroed and duplicated
  runs, header field mutations with valid checksums) of real DICOM, PNG/APNG, TIFF, JPEG, BMP
  and video files made here from pydicom's test files and arrays, plus the crafted cases of the
  issue (text or NaN spacing, palettes without LUT, decompression bombs, 20,000-page TIFF).
- ``store_damage`` and ``kill`` (``benchmarks/robustness_store.py``): damaged project folders
  read back as the commands do (``lost``: wrong data read as valid), and SIGKILLs of a writer
  (``lost``: a reported save not whole afterwards).

Usage::

    .venv/bin/python benchmarks/robustness.py            # ~2 min on a 2-core CPU
    .venv/bin/python benchmarks/robustness.py --n 200 --out /tmp/robustness.json

Writes ``benchmarks/results/robustness.json``. ``tests/core/test_mutation_corpus.py`` runs a
few hundred of the same mutations in CI.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import platform
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # robustness_store beside this file

OUT = Path(__file__).resolve().parent / "results" / "robustness.json"
OUTCOMES = ("ok", "clean_error", "crash")
MEMORY_LIMIT = 6 << 30  # the worker's address space: a bomb that gets through fails, not the host


# -- seed files: real, valid files of every format --------------------------------------------


def _testdata(name: str) -> Path | None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    return Path(path) if path else None


def _write_dicom_cine(path: Path) -> None:
    """A 4-frame 32x40 RGB ultrasound DICOM with regions, frame time and spacing."""
    from pydicom import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientName, ds.BurnedInAnnotation = "US", "Doe^Jane", "NO"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns, ds.NumberOfFrames = 32, 40, 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime, ds.CineRate, ds.PixelSpacing = "33.3", 30, [0.2, 0.2]
    region = Dataset()
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.02
    ds.SequenceOfUltrasoundRegions = [region]
    rng = np.random.default_rng(0)
    ds.PixelData = rng.integers(0, 256, (4, 32, 40, 3), dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _seed_dicoms(folder: Path) -> list[Path]:
    import shutil

    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    seeds = []
    for name in ("CT_small.dcm", "MR_small_bigendian.dcm", "examples_palette.dcm"):
        source = _testdata(name)
        if source is not None:
            seeds.append(Path(shutil.copy(source, folder / name)))
    for name in ("ybr_color", "rgb_color"):
        try:
            from pydicom import examples

            seeds.append(Path(shutil.copy(examples.get_path(name), folder / f"{name}.dcm")))
        except Exception:  # an older pydicom without that example
            continue
    ct = pydicom.dcmread(seeds[0])
    ct.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ct.save_as(folder / "deflated.dcm")
    _write_dicom_cine(folder / "cine.dcm")
    return [*seeds, folder / "deflated.dcm", folder / "cine.dcm"]


def _seed_images(folder: Path) -> list[Path]:
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(1)
    gray = (np.add.outer(np.arange(40), np.arange(48)) * 3 % 256).astype(np.uint8)
    rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(gray).save(folder / "gray.png")
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(gray.astype(np.uint16) * 200).save(folder / "deep.png")
    Image.fromarray(gray).convert("P").save(folder / "palette.png")
    frames = [Image.fromarray(np.roll(gray, i, axis=1)) for i in range(4)]
    frames[0].save(folder / "cine.png", save_all=True, append_images=frames[1:])  # APNG
    Image.fromarray(rgb).save(folder / "scan.jpg", quality=90)
    Image.fromarray(gray).save(folder / "scan.bmp")
    tifffile.imwrite(folder / "gray.tif", gray)
    tifffile.imwrite(folder / "rgb.tif", rgb, photometric="rgb", compression="zlib")
    tifffile.imwrite(folder / "cine.tif", np.stack([gray] * 4), photometric="minisblack")
    tifffile.imwrite(folder / "deep.tif", gray.astype(np.uint16) * 200, compression="zlib")
    with tifffile.TiffWriter(folder / "pages.tif") as tif:
        for i in range(3):
            tif.write(np.roll(gray, i, axis=0), contiguous=False)
    names = ["gray.png", "rgb.png", "deep.png", "palette.png", "cine.png", "scan.jpg"]
    names += ["scan.bmp", "gray.tif", "rgb.tif", "cine.tif", "deep.tif", "pages.tif"]
    return [folder / name for name in names]


def _seed_videos(folder: Path) -> list[Path]:
    """Short MP4 (mpeg4) and MKV (ffv1) clips; none without PyAV or those encoders."""
    seeds = []
    for name, codec in (("clip.mp4", "mpeg4"), ("clip.mkv", "ffv1")):
        try:
            write_video(folder / name, codec, 12, 48, 64)
        except Exception:  # no PyAV, or no such encoder
            continue
        seeds.append(folder / name)
    return seeds


def write_video(
    path: Path, codec: str, n_frames: int, height: int, width: int, moving: bool = True
) -> None:
    """A clip of ``n_frames`` colour ramps, moving a pixel a frame unless ``moving`` is off."""
    import av

    yy, xx = np.mgrid[:height, :width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n_frames):
            shift = i if moving else 0
            rgb = np.stack([(xx + shift) % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def seed_files(folder: Path, videos: bool = True) -> list[Path]:
    """Valid files of every supported format, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds = _seed_dicoms(folder) + _seed_images(folder)
    return seeds + (_seed_videos(folder) if videos else [])


def kind_of(path: Path) -> str:
    """The format a seed file is (its suffix's)."""
    suffix = path.suffix.lower()
    return {".dcm": "dicom", ".png": "png", ".jpg": "jpeg", ".bmp": "bmp", ".tif": "tiff"}.get(
        suffix, "video"
    )


# -- mutations -------------------------------------------------------------------------------

_BAD_US = (0, 1, 2, 3, 7, 9, 255, 4096, 65535)
_BAD_TEXT = (b"0", b"-1", b"nan", b"inf", b"1e308", b"abc", b"2147483648", b"", b"1\\2\\3")
_DICOM_FIELDS = (
    (0x00280010, "US", "Rows"),
    (0x00280011, "US", "Columns"),
    (0x00280100, "US", "BitsAllocated"),
    (0x00280101, "US", "BitsStored"),
    (0x00280102, "US", "HighBit"),
    (0x00280002, "US", "SamplesPerPixel"),
    (0x00280103, "US", "PixelRepresentation"),
    (0x00280006, "US", "PlanarConfiguration"),
    (0x00280008, "IS", "NumberOfFrames"),
    (0x00280030, "DS", "PixelSpacing"),
    (0x00181063, "DS", "FrameTime"),
    (0x00180040, "IS", "CineRate"),
    (0x00280004, "CS", "PhotometricInterpretation"),
    (0x00280301, "CS", "BurnedInAnnotation"),
    (0x00281101, "US", "RedPaletteColorLookupTableDescriptor"),
)
_PHOTOMETRIC = (b"MONOCHROME1", b"RGB", b"PALETTE COLOR", b"YBR_FULL", b"YBR_FULL_422", b"XYZ")


def flip_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """1-16 random bytes replaced by random values."""
    out = bytearray(data)
    for pos in rng.integers(0, len(out), int(rng.integers(1, 17))):
        out[pos] = int(rng.integers(0, 256))
    return bytes(out)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    """The file cut at a random length (at least one byte)."""
    return data[: int(rng.integers(1, len(data)))]


def zero_run(data: bytes, rng: np.random.Generator) -> bytes:
    """A run of up to 256 bytes set to 0x00 or 0xFF."""
    start = int(rng.integers(0, len(data)))
    length = int(rng.integers(1, 257))
    fill = bytes([int(rng.choice([0, 255]))]) * length
    return (data[:start] + fill + data[start + length :])[: len(data)]


def duplicate_run(data: bytes, rng: np.random.Generator) -> bytes:
    """A run of up to 512 bytes copied to another place (inserted)."""
    start = int(rng.integers(0, len(data)))
    piece = data[start : start + int(rng.integers(1, 513))]
    at = int(rng.integers(0, len(data)))
    return data[:at] + piece + data[at:]


def mutate_dicom_field(data: bytes, rng: np.random.Generator) -> bytes:
    """One pixel or geometry element of a DICOM set to an odd value, written as is."""
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = pydicom.dcmread(io.BytesIO(data))
    tag, vr, keyword = _DICOM_FIELDS[int(rng.integers(0, len(_DICOM_FIELDS)))]
    little = ds.original_encoding[1] is not False
    if keyword.endswith("Descriptor"):
        value = struct.pack("<3H" if little else ">3H", *rng.choice(_BAD_US, 3))
    elif vr == "US":
        value = struct.pack("<H" if little else ">H", int(rng.choice(_BAD_US)))
    elif vr == "CS":
        value = _PHOTOMETRIC[int(rng.integers(0, len(_PHOTOMETRIC)))]
        value = value if keyword != "BurnedInAnnotation" else b"YES"
    else:
        value = _BAD_TEXT[int(rng.integers(0, len(_BAD_TEXT)))]
    value += b" " * (len(value) % 2)
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, little)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _png_chunks(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, type) of each PNG chunk."""
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.append((pos, kind))
        pos += 12 + length
    return chunks


def mutate_png_field(data: bytes, rng: np.random.Generator) -> bytes:
    """A field of IHDR, acTL or fcTL set to an odd value, with the chunk's CRC fixed."""
    chunks = [(pos, kind) for pos, kind in _png_chunks(data) if kind in (b"IHDR", b"acTL", b"fcTL")]
    pos, kind = chunks[int(rng.integers(0, len(chunks)))]
    length = struct.unpack(">I", data[pos : pos + 4])[0]
    out = bytearray(data)
    if kind == b"IHDR" and rng.random() < 0.5:  # bit depth or colour type
        out[pos + 16 + int(rng.integers(0, 5))] = int(rng.choice([0, 1, 2, 3, 4, 6, 8, 16, 255]))
    else:  # a 4-byte size or count: width, height, frames, offsets
        field = pos + 8 + 4 * int(rng.integers(0, max(1, min(length, 20) // 4)))
        value = int(rng.choice([0, 1, 65535, 100_000, 2**31 - 1, 2**32 - 1]))
        struct.pack_into(">I", out, field, value)
    crc = zlib.crc32(bytes(out[pos + 4 : pos + 8 + length]))
    struct.pack_into(">I", out, pos + 8 + length, crc)
    return bytes(out)


def mutate_tiff_field(data: bytes, rng: np.random.Generator) -> bytes:
    """The value of one entry of the first IFD of a classic TIFF set to an odd number."""
    endian = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(endian + "I", data[4:8])
    (count,) = struct.unpack(endian + "H", data[ifd : ifd + 2])
    entry = ifd + 2 + 12 * int(rng.integers(0, count))
    out = bytearray(data)
    value = int(rng.choice([0, 1, 2, 3, 7, 255, 65535, 100_000, 2**31 - 1, 2**32 - 1]))
    if rng.random() < 0.2:  # the entry's count instead of its value
        struct.pack_into(endian + "I", out, entry + 4, value)
    elif struct.unpack(endian + "H", data[entry + 2 : entry + 4])[0] == 3:  # SHORT
        struct.pack_into(endian + "H", out, entry + 8, value & 0xFFFF)
    else:
        struct.pack_into(endian + "I", out, entry + 8, value)
    return bytes(out)


def mutate_header_field(data: bytes, rng: np.random.Generator, kind: str) -> bytes:
    """A header field of the format set to an odd value; bytes of the first 64 otherwise."""
    if kind == "dicom":
        return mutate_dicom_field(data, rng)
    if kind == "png":
        return mutate_png_field(data, rng)
    if kind == "tiff":
        return mutate_tiff_field(data, rng)
    out = bytearray(data)
    for pos in rng.integers(0, min(64, len(out)), int(rng.integers(1, 4))):
        out[pos] = int(rng.integers(0, 256))
    return bytes(out)


MUTATIONS: dict[str, Callable[..., bytes]] = {
    "flip_bytes": flip_bytes,
    "truncate": truncate,
    "zero_run": zero_run,
    "duplicate_run": duplicate_run,
    "header_field": mutate_header_field,
}


def mutated_corpus(
    seeds: list[Path], n: int, folder: Path, seed: int = 0
) -> list[tuple[str, str, Path]]:
    """``n`` mutated copies of the seeds in ``folder``: ``(kind, mutation, path)`` each.

    Seeds are taken in turn; the mutation is drawn with ``np.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    originals = [(path, path.read_bytes(), kind_of(path)) for path in seeds]
    names = list(MUTATIONS)
    corpus = []
    for i in range(n):
        source, data, kind = originals[i % len(originals)]
        name = names[int(rng.integers(0, len(names)))]
        try:
            if name == "header_field":
                mutated = MUTATIONS[name](data, rng, kind)
            else:
                mutated = MUTATIONS[name](data, rng)
        except Exception:  # the seed could not be parsed for a field mutation: flip bytes
            name, mutated = "flip_bytes", flip_bytes(data, rng)
        path = folder / f"{i:05d}_{name}_{source.stem}{source.suffix}"
        path.write_bytes(mutated)
        corpus.append((kind, name, path))
    return corpus


# -- crafted cases: what the issue found ---------------------------------------------------


def _ct() -> Any:
    import pydicom

    source = _testdata("CT_small.dcm")
    if source is None:
        raise FileNotFoundError("pydicom's CT_small.dcm")
    return pydicom.dcmread(source)


def _raw(ds: Any, tag: int, vr: str, value: bytes) -> Any:
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    return ds


def _deflate_bomb(path: Path, inflated: int) -> None:
    """A deflated DICOM (CT_small's header) whose PixelData inflates to ``inflated`` bytes."""
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = _ct()
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    body = io.BytesIO()
    from pydicom.filebase import DicomFileLike

    fp = DicomFileLike(body)
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    body.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, inflated))
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(16 << 20)
    with path.open("wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        meta = DicomFileLike(fh)
        meta.is_little_endian, meta.is_implicit_VR = True, False
        write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
        fh.write(squeeze.compress(body.getvalue()))
        for start in range(0, inflated, len(zeros)):
            fh.write(squeeze.compress(zeros[: min(len(zeros), inflated - start)]))
        fh.write(squeeze.flush())


def _tiff_bomb(path: Path) -> None:
    """A TIFF of a few hundred bytes that declares 40,000 x 40,000 pixels (1.6 GB)."""
    import tifffile

    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        spots = [
            (tags[name].valueoffset, tags[name].dtype) for name in ("ImageWidth", "ImageLength")
        ]
    data = bytearray(path.read_bytes())
    for offset, dtype in spots:
        struct.pack_into("<H" if dtype == 3 else "<I", data, offset, 40_000)
    path.write_bytes(bytes(data))


def _apng_bomb(path: Path) -> None:
    """An APNG of 40 frames of 3000 x 3000 RGB that differ by one pixel (1.08 GB decoded)."""
    from PIL import Image

    base = np.zeros((3000, 3000, 3), np.uint8)
    frames = []
    for i in range(40):
        base[0, i] = 255
        frames.append(Image.fromarray(base.copy()))
    frames[0].save(path, save_all=True, append_images=frames[1:])


def _many_pages(path: Path, n: int = 20_000) -> None:
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        for _ in range(n):
            tif.write(np.zeros((1, 1), np.uint8), contiguous=False)


def _crafted_dicoms(folder: Path) -> dict[str, tuple[Path, str]]:
    """The crafted DICOM cases: ``{name: (path, expected outcome)}``."""
    import pydicom

    cases: dict[str, tuple[Path, str]] = {}

    def add(name: str, ds: Any, expected: str) -> None:
        ds.save_as(folder / f"{name}.dcm")
        cases[name] = (folder / f"{name}.dcm", expected)

    add("text_pixel_spacing", _raw(_ct(), 0x00280030, "DS", b"abc\\def "), "ok")
    add("text_frame_time", _raw(_ct(), 0x00181063, "DS", b"fast"), "ok")
    add("text_cine_rate", _raw(_ct(), 0x00180040, "IS", b"slow"), "ok")
    add("nan_pixel_spacing", _raw(_ct(), 0x00280030, "DS", b"nan\\nan "), "ok")
    add("inf_pixel_spacing", _raw(_ct(), 0x00280030, "DS", b"inf\\1.0 "), "ok")
    burned = _ct()
    burned.BurnedInAnnotation = "YES"
    add("burned_in_annotation", burned, "ok")
    palette = _testdata("examples_palette.dcm")
    if palette is not None:
        ds = pydicom.dcmread(palette)
        del ds.RedPaletteColorLookupTableData
        add("palette_without_lut", ds, "clean_error")
        ds = pydicom.dcmread(palette)
        ds.RedPaletteColorLookupTableData = ds.RedPaletteColorLookupTableData[:100]
        add("palette_short_lut", ds, "clean_error")
    huge = _raw(_ct(), 0x00280008, "IS", b"100000")
    huge.Rows = huge.Columns = 65535
    add("dicom_declares_terabytes", huge, "clean_error")
    _deflate_bomb(folder / "deflate_bomb.dcm", 3 << 29)
    cases["deflate_bomb_1.5gib"] = (folder / "deflate_bomb.dcm", "clean_error")
    return cases


def crafted_cases(folder: Path) -> dict[str, tuple[Path, str]]:
    """Every crafted case: ``{name: (path, expected outcome)}``."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = _crafted_dicoms(folder)
    for name, make in (
        ("tiff_bomb_1.6gb", _tiff_bomb),
        ("tiff_20000_pages", _many_pages),
        ("apng_bomb_1.08gb", _apng_bomb),
    ):
        suffix = ".tif" if name.startswith("tiff") else ".png"
        make(folder / f"{name}{suffix}")
        cases[name] = (folder / f"{name}{suffix}", "clean_error")
    try:  # 1,200 still frames of 640 x 480 decode to 1.1 GB; the file is small
        write_video(folder / "mkv_bomb.mkv", "mpeg4", 1200, 480, 640, moving=False)
        cases["mkv_bomb_1.1gb"] = (folder / "mkv_bomb.mkv", "clean_error")
    except Exception:  # no PyAV or no ffv1 encoder
        pass
    return cases


# -- reading in a worker process -------------------------------------------------------------


def _worker(conn: Any, memory_limit: int) -> None:
    """Read each path sent; answer ``(outcome, message, seconds)``."""
    import logging
    import resource
    import warnings

    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)  # tifffile logs each broken tag it meets
    from propl.data.readers import ReaderError, read_scan

    while (path := conn.recv()) is not None:
        start = time.perf_counter()
        try:
            read_scan(path)
            outcome, message = "ok", ""
        except ReaderError as exc:
            named = Path(path).name in str(exc)
            memory = "not enough memory" in str(exc)  # read_scan ran out of memory
            outcome = "clean_error" if named and not memory else "crash"
            message = str(exc)
        except BaseException as exc:  # what this benchmark looks for
            outcome, message = "crash", f"{type(exc).__name__}: {exc}"
        conn.send((outcome, message[:300], time.perf_counter() - start))


class Reader:
    """A worker process that reads files; restarted when it dies or hangs."""

    def __init__(self, timeout: float, memory_limit: int = MEMORY_LIMIT) -> None:
        self.timeout, self.memory_limit = timeout, memory_limit
        self.ctx = mp.get_context("spawn")
        self.proc: Any = None
        self.conn: Any = None

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, self.memory_limit), daemon=True)
        self.proc.start()

    def read(self, path: Path) -> tuple[str, str, float]:
        """``(outcome, message, seconds)`` of reading ``path``."""
        if self.proc is None or not self.proc.is_alive():
            self._start()
        start = time.perf_counter()
        self.conn.send(str(path))
        if self.conn.poll(self.timeout):
            try:
                return self.conn.recv()
            except EOFError:
                pass
        died = self.proc.exitcode
        self.close()
        reason = f"worker died (exit code {died})" if died is not None else "timed out"
        return "crash", reason, time.perf_counter() - start

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.conn.send(None)
                self.proc.join(2)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
        self.proc = None


def _counts() -> dict[str, Any]:
    return {"tried": 0, **dict.fromkeys(OUTCOMES, 0), "max_seconds": 0.0}


def _count(table: dict[str, Any], kind: str, outcome: str, seconds: float) -> None:
    counts = table.setdefault(kind, _counts())
    counts["tried"] += 1
    counts[outcome] += 1
    counts["max_seconds"] = round(max(counts["max_seconds"], seconds), 3)


# -- sections --------------------------------------------------------------------------------


def input_trials(n: int, seed: int, timeout: float, workdir: Path) -> dict[str, Any]:
    """Mutated and crafted input files through ``read_scan``.

    Returns:
        ``{"by_kind": {kind: counts}, "by_mutation": {mutation: counts}, "crafted": {name:
        {expected, outcome, seconds, message}}, "crashes": [...]}``; a kind's counts are
        ``{tried, ok, clean_error, crash, max_seconds}``; crafted cases count as kind
        ``"crafted"``.
    """
    seeds = seed_files(workdir / "seeds")
    corpus = mutated_corpus(seeds, n, workdir / "mutated", seed)
    reader = Reader(timeout)
    by_kind: dict[str, Any] = {}
    by_mutation: dict[str, Any] = {}
    crashes: list[dict[str, str]] = []
    try:
        for kind, mutation, path in corpus:
            outcome, message, seconds = reader.read(path)
            _count(by_kind, kind, outcome, seconds)
            _count(by_mutation, mutation, outcome, seconds)
            if outcome == "crash":
                crashes.append({"file": path.name, "error": message.replace(str(workdir), "<tmp>")})
        crafted = {}
        for name, (path, expected) in crafted_cases(workdir / "crafted").items():
            outcome, message, seconds = reader.read(path)
            _count(by_kind, "crafted", outcome, seconds)
            crafted[name] = {
                "expected": expected,
                "outcome": outcome,
                "seconds": round(seconds, 3),
                "message": message.replace(str(path.parent), "<tmp>"),
            }
    finally:
        reader.close()
    return {
        "seeds": [p.name for p in seeds],
        "by_kind": by_kind,
        "by_mutation": by_mutation,
        "crafted": crafted,
        "crashes": crashes,
    }


def _store_damage(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from robustness_store import damage_trials

    return damage_trials(args.damage_n, args.seed, work)


def _kills(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from robustness_store import kill_trials

    return kill_trials(args.kills, args.seed, work)


SECTIONS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "inputs": lambda args, work: input_trials(args.n, args.seed, args.timeout, work),
    "store_damage": _store_damage,
    "kill": _kills,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="mutated input files (2000)")
    parser.add_argument("--seed", type=int, default=0, help="mutation RNG seed (0)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per read (60)")
    parser.add_argument(
        "--damage-n", type=int, default=25, help="damaged project copies per kind of damage (25)"
    )
    parser.add_argument("--kills", type=int, default=50, help="kill -9 trials of a writer (50)")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=OUT, help=f"results file ({OUT.name})")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items() if k != "out"},
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory(prefix="propl-robustness-") as tmp:
        for name in args.sections:
            start = time.perf_counter()
            results[name] = SECTIONS[name](args, Path(tmp) / name)
            results[name]["seconds"] = round(time.perf_counter() - start, 1)
            print(f"{name}: {json.dumps(results[name].get('by_kind', {}))}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    crashed = sum(
        c["crash"] + c.get("lost", 0) for s in args.sections for c in results[s]["by_kind"].values()
    )
    unexpected = [
        name
        for s in args.sections
        for name, case in results[s].get("crafted", {}).items()
        if case["outcome"] != case["expected"]
    ]
    print(f"wrote {args.out}: {crashed} crash(es), unexpected: {unexpected}", file=sys.stderr)
    return 1 if crashed or unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
