"""The us-universal benchmark folder: tasks, fixed splits, labelled subsets and preloaded arrays.

Layout read here::

    root/tasks.json                task id -> organ, target, prompt, ...
    root/splits.json               task id -> {"train": [ids], "test": [ids]}
    root/<task>/images/<id>.png    8-bit grayscale scan
    root/<task>/masks/<id>.png     8-bit mask, 0 = background, non-zero = target
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..tasks import Task, load_tasks_json
from .readers import ReaderFileNotFoundError, read_mask, read_scan, to_grayscale

_CACHE_VERSION = 1


class DataFolderError(ValueError):
    """A benchmark folder is missing, malformed, or asked for something it does not have."""


@dataclass(frozen=True)
class Sample:
    """One scan of a task: its id and the files of its image and mask."""

    task: str
    id: str
    image: Path
    mask: Path


class BenchmarkFolder:
    """A us-universal-style folder.

    Args:
        root: the folder holding ``tasks.json`` and ``splits.json``.

    Raises:
        DataFolderError: the folder, ``tasks.json`` or ``splits.json`` is missing or invalid.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataFolderError(f"data folder '{self.root}' not found")
        for name in ("tasks.json", "splits.json"):
            if not (self.root / name).is_file():
                raise DataFolderError(f"data folder '{self.root}' has no {name}")
        try:
            self.tasks: list[Task] = load_tasks_json(self.root / "tasks.json")
            splits = json.loads((self.root / "splits.json").read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise DataFolderError(f"data folder '{self.root}': {exc}") from exc
        if not isinstance(splits, dict):
            raise DataFolderError(f"'{self.root / 'splits.json'}' must map task ids to splits")
        self._splits: dict[str, dict[str, list[str]]] = splits

    def __repr__(self) -> str:
        return f"BenchmarkFolder('{self.root}', tasks={self.task_ids()})"

    def task_ids(self) -> list[str]:
        """Task ids in ``tasks.json`` order."""
        return [t.id for t in self.tasks]

    def samples(self, task: str, split: str) -> list[Sample]:
        """The samples of one task's split, in ``splits.json`` order.

        Args:
            task: a task id of this folder.
            split: a split name in ``splits.json`` (``"train"`` or ``"test"`` in us-universal).

        Raises:
            DataFolderError: unknown task or split, or a listed image file is missing.
        """
        known = self.task_ids()
        if task not in known:
            raise DataFolderError(f"unknown task {task!r}; available: {', '.join(known)}")
        splits = self._splits.get(task)
        if not isinstance(splits, dict):
            raise DataFolderError(f"task {task!r} has no entry in '{self.root / 'splits.json'}'")
        if split not in splits:
            raise DataFolderError(
                f"unknown split {split!r} for task {task!r}; available: {', '.join(splits)}"
            )
        out = []
        for sid in splits[split]:
            image = self.root / task / "images" / f"{sid}.png"
            if not image.is_file():
                raise DataFolderError(f"image file '{image}' listed in splits.json is missing")
            out.append(Sample(task, str(sid), image, self.root / task / "masks" / f"{sid}.png"))
        return out


class FirstScans(BenchmarkFolder):
    """A folder whose splits are cut to their first ``n`` scans, sorted by id (0: all): a
    fixed, smaller scoring set for benchmarks that cannot afford every test scan."""

    def __init__(self, root: str | Path, n: int) -> None:
        super().__init__(root)
        self.n = n

    def samples(self, task: str, split: str) -> list[Sample]:
        out = sorted(super().samples(task, split), key=lambda s: s.id)
        return out[: self.n] if self.n else out


def _check_fraction(value: Fraction, spec: object) -> Fraction:
    if not 0 < value <= 1:
        raise ValueError(f"labelled fraction {spec!r} must be in (0, 1]")
    return value


def parse_labelled(spec: str | int | float | Fraction) -> Fraction | int:
    """Parse how many train scans per task are labelled.

    ``"1/16"``, ``"0.125"``, ``"12.5%"``, ``0.125`` -> a fraction in (0, 1];
    ``"10"`` or ``10`` -> an absolute count (>= 1) of labelled scans per task.

    Raises:
        ValueError: anything else, a fraction outside (0, 1] or a count below 1.
    """
    if isinstance(spec, bool):
        raise ValueError(f"invalid labelled amount {spec!r}")
    if isinstance(spec, Fraction):
        return _check_fraction(spec, spec)
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"labelled count {spec} must be at least 1")
        return spec
    if isinstance(spec, float):
        if not math.isfinite(spec):
            raise ValueError(f"invalid labelled fraction {spec!r}")
        return _check_fraction(Fraction(repr(spec)), spec)
    if not isinstance(spec, str):
        raise ValueError(f"invalid labelled amount {spec!r}")
    text = spec.strip()
    if text.isdigit():
        return parse_labelled(int(text))
    try:
        value = Fraction(text[:-1].strip()) / 100 if text.endswith("%") else Fraction(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(
            f"invalid labelled amount {spec!r}: use a fraction such as '1/8' or "
            "'0.125', or a count such as '10'"
        ) from exc
    return _check_fraction(value, spec)


def _sorted(samples: Sequence[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: (s.task, s.id))


def _round_half_up(x: Fraction | float) -> int:
    return math.floor(x + Fraction(1, 2))


def split_labelled(
    samples: Sequence[Sample], labelled: Fraction | int, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Draw the labelled subset; the rest is the unlabelled pool.

    Samples are sorted by (task, id) and shuffled with ``Generator(PCG64(seed))``, so the
    result does not depend on the input order; the labelled part is a prefix of that
    shuffle, so with one seed a smaller fraction is a subset of a larger one.

    Args:
        samples: the candidates (usually one task's train split minus validation).
        labelled: a fraction (``round(n * fraction)``, halves up, at least 1) or a count
            (more than ``n`` labels everything).
        seed: the random seed.

    Returns:
        ``(labelled, unlabelled)``, disjoint, together the input; each sorted by (task, id).
    """
    if not samples:
        raise ValueError("no samples to split into labelled and unlabelled")
    if isinstance(labelled, Fraction):
        k = max(1, _round_half_up(len(samples) * _check_fraction(labelled, labelled)))
    else:
        k = min(len(samples), int(parse_labelled(int(labelled))))
    ordered = _sorted(samples)
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(len(ordered))
    chosen = set(perm[:k].tolist())
    lab = [s for i, s in enumerate(ordered) if i in chosen]
    unlab = [s for i, s in enumerate(ordered) if i not in chosen]
    return lab, unlab


def carve_validation(
    samples: Sequence[Sample], fraction: float = 0.1, seed: int = 0, min_count: int = 2
) -> tuple[list[Sample], list[Sample]]:
    """Hold back a validation part of a train split for checkpoint selection.

    ``max(min_count, round(n * fraction))`` samples go to validation, but at least one
    sample always stays for training. Deterministic given ``seed`` and independent of the
    input order (a random stream separate from :func:`split_labelled`'s).

    Returns:
        ``(train_part, val_part)``, disjoint, each sorted by (task, id).
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction {fraction} must be in [0, 1)")
    n = len(samples)
    n_val = max(0, min(max(min_count, _round_half_up(Fraction(repr(fraction)) * n)), n - 1))
    ordered = _sorted(samples)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1])))
    chosen = set(rng.permutation(n)[:n_val].tolist())
    train = [s for i, s in enumerate(ordered) if i not in chosen]
    val = [s for i, s in enumerate(ordered) if i in chosen]
    return train, val


@dataclass
class ArraySet:
    """Preloaded, resized arrays for fast training.

    Attributes:
        images: ``(N, S, S)`` uint8 grayscale.
        masks: ``(N, S, S)`` uint8 in {0, 1} (all zero when loaded without masks).
        task_index: ``(N,)`` int64 index into the task order given to :func:`load_arrays`.
        ids: the N sample ids.
        orig_shapes: ``(H, W)`` of each stored image before resizing.
    """

    images: np.ndarray
    masks: np.ndarray
    task_index: np.ndarray
    ids: list[str]
    orig_shapes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.ids)


def _load_image(path: Path) -> np.ndarray:
    """The first frame of a scan as (H, W) uint8 grayscale."""
    frames, _ = read_scan(path)
    frame = frames[:1]
    if frame.dtype != np.uint8 or frame.ndim == 4:
        frame = np.round(to_grayscale(frame) * 255).astype(np.uint8)
    return frame[0]


def resize_square(img: np.ndarray, size: int, *, mask: bool) -> np.ndarray:
    from skimage.transform import resize

    if img.shape == (size, size):
        return img.astype(np.uint8, copy=True)
    out = resize(
        img, (size, size), order=0 if mask else 1, anti_aliasing=not mask, preserve_range=True
    )
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise ReaderFileNotFoundError(path, "no such file") from exc
    return st.st_mtime_ns, st.st_size


def _cache_key(
    samples: Sequence[Sample], size: int, task_order: Sequence[str], with_masks: bool
) -> str:
    parts: list[object] = [_CACHE_VERSION, size, list(task_order), with_masks]
    for s in samples:
        files = [s.image, s.mask] if with_masks else [s.image]
        stats = [_stat(f) for f in files]
        parts.append([s.task, s.id, [str(f) for f in files], stats])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def _read_cache(path: Path) -> ArraySet | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
            masks = z["masks"] if "masks" in z.files else np.zeros(images.shape, np.uint8)
            return ArraySet(
                images=images,
                masks=masks,
                task_index=z["task_index"],
                ids=[str(i) for i in z["ids"]],
                orig_shapes=[(int(h), int(w)) for h, w in z["orig_shapes"]],
            )
    except (OSError, ValueError, KeyError, EOFError):
        return None  # unreadable cache: rebuild it


def _write_cache(path: Path, data: ArraySet, with_masks: bool) -> None:
    """Write beside the target, then rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(
        images=data.images,
        task_index=data.task_index,
        ids=np.array(data.ids, str),
        orig_shapes=np.array(data.orig_shapes, np.int64).reshape(-1, 2),
    )
    if with_masks:
        arrays["masks"] = data.masks
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_arrays(
    samples: Sequence[Sample], size: int, index: dict[str, int], with_masks: bool, progress: bool
) -> ArraySet:
    from tqdm import tqdm

    n = len(samples)
    images = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    shapes = []
    for i, s in enumerate(
        tqdm(
            samples,
            desc=f"load {size}px",
            unit="scan",
            file=sys.stderr,
            disable=not progress or n == 0,
        )
    ):
        img = _load_image(s.image)
        shapes.append((int(img.shape[0]), int(img.shape[1])))
        images[i] = resize_square(img, size, mask=False)
        if with_masks:
            masks[i] = resize_square(read_mask(s.mask), size, mask=True)
    task_index = np.array([index[s.task] for s in samples], np.int64)
    return ArraySet(images, masks, task_index, [s.id for s in samples], shapes)


def load_arrays(
    samples: Sequence[Sample],
    size: int,
    task_order: Sequence[str],
    *,
    with_masks: bool = True,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> ArraySet:
    """Read and resize samples into one :class:`ArraySet`, in the order given.

    Images: first frame, grayscale uint8, resized bilinearly with antialiasing; masks:
    nearest neighbour. The aspect ratio is not kept (every scan becomes ``size x size``).

    Args:
        samples: the scans to load.
        size: ``S``, the side of the square output.
        task_order: the task list ``task_index`` refers to (the model's tasks).
        with_masks: read masks; without, ``masks`` is all zero.
        cache_dir: if given, reuse or write ``arrays-<hash>.npz`` there; the hash covers the
            ids, files, their mtimes and sizes, ``size``, ``task_order`` and ``with_masks``.
        progress: show a tqdm bar on stderr.

    Raises:
        ValueError: a sample's task is not in ``task_order``.
        ReaderError: an image or mask cannot be read.
    """
    index = {t: i for i, t in enumerate(task_order)}
    unknown = sorted({s.task for s in samples} - set(index))
    if unknown:
        raise ValueError(f"task(s) {unknown} not in task_order {list(task_order)}")
    cache = None
    if cache_dir is not None:
        key = _cache_key(samples, size, task_order, with_masks)
        cache = Path(cache_dir) / f"arrays-{key}.npz"
        cached = _read_cache(cache) if cache.is_file() else None
        if cached is not None:
            return cached
    data = _read_arrays(samples, size, index, with_masks, progress)
    if cache is not None:
        _write_cache(cache, data, with_masks)
    return data


def load_full_masks(samples: Sequence[Sample]) -> list[np.ndarray]:
    """The masks at their stored resolution, each ``(H, W)`` uint8 in {0, 1}."""
    return [read_mask(s.mask) for s in samples]
