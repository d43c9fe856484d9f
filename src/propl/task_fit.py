"""Task fit: does a scan look like the scans a task was trained on?

The confidence (:func:`~propl.uncertainty.confidence_score`) measures how much the network
agrees with itself; a scan of another organ can be segmented with high self-agreement. The task
fit is a cheap second signal from the encoder features the prediction computes anyway: the
features of one encoder level (stride 16 by default) are averaged over the frame, and their
distance to the task's training frames is a Mahalanobis distance under a low-rank + isotropic
covariance (the top principal components of the standardised training features, and one shared
variance for the rest). The distance becomes a fit in [0, 1] with the task's own training
frames, scored out of fold: 1 up to their 95th percentile of distance, then an exponential tail
fitted to the distances beyond it, ``exp(-(d - d95) / mean excess)``. A fit ``f < 1`` means
about ``5 % · f`` of the task's own frames lie as far or farther.

**What it flags, honestly.** On the shipped model it tells each task's test scans from the
other tasks' scans and from an unseen nerve (AUROC 0.996-1.000, ``benchmarks/results/
task-fit.md``), but every task comes from one public dataset, and scans of the *same* anatomy
from another scanner or site are flagged too: pydicom-data's apical four-chamber echo gets a
``left_heart`` fit of 0.00. So the fit is shown beside the confidence as a warning ("unlike
the task's training scans: check the mask"), and is **not** folded into the confidence or the
review queue's order, where it would push every scan of a new site to zero. :func:`combine`
is the folding that was measured (its Spearman ρ is in the results file), kept for the
benchmark.

The same statistics rank the tasks for a scan (:func:`rank_tasks`): the Segment widget starts
its task prompt at the task a newly chosen image looks most like, when it fits that task at all
(on the shipped model a task's own test scans rank it first, 124 of 125 checked; the pydicom
echoes, which fit no task, keep the prompt as it was).

The statistics live in the checkpoint folder as ``task_fit.json`` (plain JSON, validated on
load; checkpoints without it predict as before, with no fit). ``benchmarks/task_fit.py`` fits
and installs them for the shipped model, and project retraining refits them for each new
version (:func:`refit_checkpoint`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CheckpointError
from .files import (
    atomic_write_bytes,
    beside_weights,
    beside_weights_header,
    read_json_beside_weights,
)

if TYPE_CHECKING:
    from torch import Tensor

    from .data.benchmark import ArraySet
    from .inference import Predictor

FILE_NAME = "task_fit.json"
KIND = "propl-task-fit"
SCHEMA = 1
LEVELS: tuple[int, ...] = (2,)
"""Encoder feature maps pooled (index into the encoder's four maps: 2 is stride 16)."""
COMPONENTS = 8
TAIL_QUANTILE = 0.95
FOLDS = 5
MIN_FRAMES = 20
"""Fewer frames of a task than this: no statistics for it (no fit, no flag)."""
FLAG_BELOW = 0.25
"""A scan whose (mean) fit is below this is reported as not looking like the task."""
RANK_FRAMES = 4
"""Frames of a cine (evenly spaced) whose features rank the tasks for it."""


def pool_features(features: Sequence[Tensor], levels: Sequence[int] = LEVELS) -> np.ndarray:
    """Encoder feature maps → ``(B, D)`` float64: each chosen level averaged over the frame."""
    import torch

    pooled = torch.cat([features[i].float().mean(dim=(2, 3)) for i in levels], dim=1)
    return pooled.cpu().numpy().astype(np.float64)


@dataclass(frozen=True)
class TaskStats:
    """One task's feature statistics and the calibration of its distance.

    Attributes:
        mean: ``(D,)`` mean pooled feature.
        std: ``(D,)`` standard deviation (features are standardised by it).
        components: ``(K, D)`` orthonormal principal directions of the standardised features.
        variances: ``(K,)`` their variances.
        residual: the variance of every other direction (one shared value).
        threshold: the distance where the fit starts to fall (95th percentile, out of fold).
        tail: mean excess of the out-of-fold distances beyond ``threshold`` (the fit's decay).
        n: frames fitted.
    """

    mean: np.ndarray
    std: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual: float
    threshold: float
    tail: float
    n: int

    def distance(self, x: np.ndarray) -> np.ndarray:
        """``(B, D)`` pooled features → ``(B,)`` distances, about 1 for a typical frame."""
        z = (np.asarray(x, np.float64) - self.mean) / self.std
        proj = z @ self.components.T
        rest = np.maximum((z**2).sum(1) - (proj**2).sum(1), 0.0)
        d2 = (proj**2 / self.variances).sum(1) + rest / self.residual
        return np.sqrt(d2 / z.shape[1])

    def fit(self, x: np.ndarray) -> np.ndarray:
        """``(B, D)`` pooled features → ``(B,)`` task fit in [0, 1] (see the module doc)."""
        return fit_of_distance(self.distance(x), self.threshold, self.tail)


def fit_of_distance(d: np.ndarray, threshold: float, tail: float) -> np.ndarray:
    """1 up to ``threshold``, then ``exp(-(d - threshold) / tail)``."""
    return np.exp(-np.maximum(np.asarray(d, np.float64) - threshold, 0.0) / tail)


def _moments(x: np.ndarray, components: int) -> TaskStats:
    """Mean, scale and principal directions of ``x`` (calibration left at 0)."""
    mean = x.mean(0)
    var = x.var(0)
    std = np.sqrt(var + 1e-6 * float(var.mean()) + 1e-12)
    z = (x - mean) / std
    k = max(1, min(components, len(x) - 2, x.shape[1] - 1))
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    ev = s[:k] ** 2 / len(x)
    d = x.shape[1]
    residual = max(float((z**2).sum() / len(x) - ev.sum()) / (d - k), 1e-3)
    return TaskStats(mean, std, vt[:k], np.maximum(ev, 1e-3), residual, 0.0, 1.0, len(x))


def fit_task(
    x: np.ndarray, components: int = COMPONENTS, folds: int = FOLDS, seed: int = 0
) -> TaskStats:
    """Fit one task's statistics to its frames' pooled features ``(N, D)``.

    The calibration (threshold, tail) uses out-of-fold distances: a frame's distance to
    statistics fitted without it, as a new scan of the task would be measured.

    Raises:
        ValueError: fewer than :data:`MIN_FRAMES` frames, or non-finite features.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < MIN_FRAMES:
        raise ValueError(f"need at least {MIN_FRAMES} frames of (N, D) features, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite")
    fold = np.random.default_rng(seed).permutation(len(x)) % folds
    held = np.empty(len(x))
    for f in range(folds):
        held[fold == f] = _moments(x[fold != f], components).distance(x[fold == f])
    threshold = float(np.quantile(held, TAIL_QUANTILE))
    excess = held[held > threshold] - threshold
    tail = max(float(excess.mean()) if excess.size else 0.0, 0.05 * threshold, 1e-3)
    stats = _moments(x, components)
    return TaskStats(
        stats.mean,
        stats.std,
        stats.components,
        stats.variances,
        stats.residual,
        threshold,
        tail,
        len(x),
    )


@dataclass
class TaskFit:
    """Every task's statistics for one checkpoint.

    Attributes:
        tasks: task id → its statistics (tasks without any have no fit).
        levels: the encoder levels pooled.
        metadata: provenance (what was fitted on), JSON-serialisable.
        source: the file it was read from, for error messages.
    """

    tasks: dict[str, TaskStats]
    levels: tuple[int, ...] = LEVELS
    metadata: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def score(self, pooled: np.ndarray, task: str) -> np.ndarray | None:
        """``(B, D)`` pooled features → ``(B,)`` fit to ``task``; None when it has no statistics.

        Raises:
            CheckpointError: the features' size is not the statistics' (a mismatched file).
        """
        stats = self.tasks.get(task)
        if stats is None:
            return None
        if pooled.shape[-1] != stats.mean.shape[0]:
            raise CheckpointError(
                f"{self.source or FILE_NAME}: statistics of {stats.mean.shape[0]} features, the "
                f"model's encoder gives {pooled.shape[-1]}: refit them for this model"
            )
        return stats.fit(pooled)

    def to_json(self) -> dict[str, Any]:
        """The JSON document (numbers rounded to 6 significant digits)."""
        return {
            "kind": KIND,
            "schema": SCHEMA,
            "levels": list(self.levels),
            "metadata": self.metadata,
            "tasks": {t: _stats_json(s) for t, s in self.tasks.items()},
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/task_fit.json`` (atomically); returns its path."""
        path = Path(folder) / FILE_NAME
        text = json.dumps(self.to_json(), separators=(",", ":"))
        atomic_write_bytes(path, text.encode("utf-8"))
        return path


def _round(a: np.ndarray | float) -> Any:
    """Numbers (or nested lists of them) at 6 significant digits."""
    if isinstance(a, np.ndarray):
        return [_round(v) for v in a]
    return float(f"{float(a):.6g}")


def _stats_json(s: TaskStats) -> dict[str, Any]:
    return {
        "n": s.n,
        "mean": _round(s.mean),
        "std": _round(s.std),
        "components": _round(s.components),
        "variances": _round(s.variances),
        "residual": _round(s.residual),
        "threshold": _round(s.threshold),
        "tail": _round(s.tail),
    }


def _array(doc: dict[str, Any], key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """``doc[key]`` as a finite float64 array of ``shape`` (-1: any size)."""
    try:
        a = np.asarray(doc[key], np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: '{key}' is missing or not numbers") from exc
    ok = a.ndim == len(shape) and all(w in (-1, n) for w, n in zip(shape, a.shape, strict=True))
    if not ok or not np.isfinite(a).all():
        raise ValueError(f"{where}: '{key}' must be finite numbers of shape {shape}, got {a.shape}")
    return a


def _positive(doc: dict[str, Any], key: str, where: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: '{key}' must be a number")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: '{key}' must be positive, got {value}")
    return float(value)


def _stats_from_json(doc: Any, where: str) -> TaskStats:
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: must be an object")
    mean = _array(doc, "mean", (-1,), where)
    d = mean.shape[0]
    std = _array(doc, "std", (d,), where)
    comps = _array(doc, "components", (-1, d), where)
    variances = _array(doc, "variances", (comps.shape[0],), where)
    if (std <= 0).any() or (variances <= 0).any():
        raise ValueError(f"{where}: 'std' and 'variances' must be positive")
    n = doc.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{where}: 'n' must be a positive integer")
    return TaskStats(
        mean,
        std,
        comps,
        variances,
        _positive(doc, "residual", where),
        _positive(doc, "threshold", where),
        _positive(doc, "tail", where),
        n,
    )


def task_fit_from_json(doc: Any, source: Path | None = None) -> TaskFit:
    """Validate a parsed ``task_fit.json`` document.

    Raises:
        CheckpointError: anything malformed; the message names the file.
    """
    name = str(source or FILE_NAME)
    try:
        tasks, metadata = beside_weights_header(doc, KIND, SCHEMA, "task fit")
        levels = doc.get("levels")
        if (
            not isinstance(levels, list)
            or not levels
            or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 3 for v in levels
            )
        ):
            raise ValueError("'levels' must be a list of encoder levels 0-3")
        stats = {str(t): _stats_from_json(s, f"task {t!r}") for t, s in tasks.items()}
    except ValueError as exc:
        raise CheckpointError(f"{name}: invalid task fit statistics: {exc}") from exc
    return TaskFit(stats, tuple(levels), metadata, source)


def task_fit_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's statistics live: beside its weights."""
    return beside_weights(checkpoint, FILE_NAME)


def load_task_fit(checkpoint: str | Path) -> TaskFit | None:
    """A checkpoint's statistics (folder or weights path), or None when it has none.

    Raises:
        CheckpointError: the file exists but is unreadable or invalid; the message names it.
    """
    found = read_json_beside_weights(checkpoint, FILE_NAME, "task fit statistics")
    return None if found is None else task_fit_from_json(found[1], found[0])


def fit_features(
    per_task: Mapping[str, np.ndarray],
    levels: Sequence[int] = LEVELS,
    metadata: dict[str, Any] | None = None,
    components: int = COMPONENTS,
) -> TaskFit:
    """Statistics for every task with at least :data:`MIN_FRAMES` frames of features."""
    stats = {t: fit_task(x, components) for t, x in per_task.items() if len(x) >= MIN_FRAMES}
    return TaskFit(stats, tuple(levels), dict(metadata or {}))


def combine(
    confidence: np.ndarray, fit: np.ndarray | None, below: float = FLAG_BELOW
) -> np.ndarray:
    """The confidence shown: the self-agreement, scaled down by ``fit / below`` where the fit is
    below ``below`` (a flagged scan), else unchanged; unchanged without a fit.

    Why not the plain product: a task's own atypical scans (fit between ``below`` and 1) are
    segmented about as well as the rest, and the product ranked them too low (Spearman ρ with
    the true Dice of the shipped model's test scans fell from 0.81 to 0.70 for ovarian_tumor);
    scans of other organs have fits near 0 either way (``benchmarks/results/task-fit.md``).
    """
    if fit is None:
        return confidence
    return (np.asarray(confidence) * np.minimum(1.0, np.asarray(fit) / below)).astype(np.float32)


def fit_warning(task: str, fit: np.ndarray | None, below: float = FLAG_BELOW) -> str | None:
    """``"does not look like the <task> training scans (fit 0.12): ..."`` when the scan's
    mean fit is below ``below``; None when it fits or there is no fit."""
    if fit is None or len(fit) == 0:
        return None
    mean = float(np.mean(fit))
    if mean >= below:
        return None
    return (
        f"does not look like the {task} training scans (fit {mean:.2f}): another anatomy, view "
        "or scanner; check the mask"
    )


def encode_pooled(
    checkpoint: str | Path,
    images: np.ndarray,
    device: str = "cpu",
    batch_size: int = 32,
    levels: Sequence[int] = LEVELS,
) -> np.ndarray:
    """Pooled features ``(N, D)`` of frames ``(N, H, W)`` (any dtype :class:`Predictor` takes)
    under a checkpoint's encoder, exactly as the predictor computes them."""
    from .inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, device=device, uncertainty="none")
    return pooled_of(predictor, images, batch_size, levels)


def pooled_of(
    predictor: Predictor,
    images: np.ndarray,
    batch_size: int = 32,
    levels: Sequence[int] = LEVELS,
) -> np.ndarray:
    """Pooled features ``(N, D)`` of frames ``(N, H, W)`` or ``(N, H, W, 3)`` under a loaded
    predictor's encoder."""
    import torch

    from .inference import frames_to_float

    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(frames_to_float(images[start : start + batch_size]))
        with torch.inference_mode():
            features, _ = predictor.encode(x, 0)
        out.append(pool_features(features, levels))
    return np.concatenate(out) if out else np.zeros((0, 0))


@dataclass(frozen=True)
class TaskMatch:
    """How much a scan looks like one task's training scans.

    Attributes:
        task: the task id.
        fit: the mean fit of the scan's frames, in [0, 1].
        distance: the mean distance over the task's threshold (at most 1: as near as most of
            the task's own frames).
    """

    task: str
    fit: float
    distance: float


def rank_tasks(
    task_fit: TaskFit, pooled: np.ndarray, tasks: Sequence[str] | None = None
) -> list[TaskMatch]:
    """The tasks a scan's frames ``(B, D)`` look like, most first: by mean fit, and among tasks
    the frames fit as well (e.g. fully), by relative distance. Only ``tasks`` (default: all)
    that have statistics are ranked.

    Raises:
        CheckpointError: the features' size is not the statistics' (a mismatched file).
    """
    matches = []
    for task in tasks if tasks is not None else list(task_fit.tasks):
        fit = task_fit.score(pooled, task)
        if fit is None:
            continue
        stats = task_fit.tasks[task]
        relative = float(np.mean(stats.distance(pooled))) / stats.threshold
        matches.append(TaskMatch(task, float(np.mean(fit)), relative))
    return sorted(matches, key=lambda m: (-m.fit, m.distance))


def best_task(ranking: Sequence[TaskMatch], below: float = FLAG_BELOW) -> TaskMatch | None:
    """The first of a ranking when the scan fits it (mean fit at least ``below``), else None:
    a scan that looks like none of the tasks suggests none."""
    return ranking[0] if ranking and ranking[0].fit >= below else None


def describe_ranking(ranking: Sequence[TaskMatch], below: float = FLAG_BELOW) -> str:
    """``"task: left_heart (looks most like it)"``, or that the scan looks like none of the
    tasks (naming the nearest); ``""`` without a ranking."""
    if not ranking:
        return ""
    best = best_task(ranking, below)
    if best is not None:
        return f"task: {best.task} (looks most like it)"
    near = ranking[0]
    return f"like no task's training scans (nearest {near.task}, fit {near.fit:.2f})"


def rank_tasks_of_scan(
    predictor: Predictor,
    frames: np.ndarray,
    tasks: Sequence[str] | None = None,
    n_frames: int = RANK_FRAMES,
) -> list[TaskMatch]:
    """Rank the tasks for a scan, ``(F, H, W)`` or ``(F, H, W, 3)``, from ``n_frames`` evenly
    spaced frames under the predictor's encoder; ``[]`` when it has no statistics."""
    if predictor.task_fit is None or len(frames) == 0:
        return []
    pick = np.unique(np.linspace(0, len(frames) - 1, n_frames).round().astype(int))
    pooled = pooled_of(predictor, np.asarray(frames[pick]), levels=predictor.task_fit.levels)
    return rank_tasks(predictor.task_fit, pooled, tasks)


def _same_encoder(a: str | Path, b: str | Path) -> bool:
    """Whether two checkpoints' encoders hold the same weights (features unchanged)."""
    import torch

    from .checkpoint import load_checkpoint

    ea, eb = load_checkpoint(a).model.encoder, load_checkpoint(b).model.encoder
    sa, sb = ea.state_dict(), eb.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def refit_checkpoint(
    folder: str | Path,
    sets: Sequence[ArraySet],
    task_order: Sequence[str],
    tasks: Sequence[str],
    parent: str | Path | None = None,
    device: str = "cpu",
) -> TaskFit | None:
    """Fit a new checkpoint's statistics for ``tasks`` from its training frames; write them.

    The frames of every set (e.g. the labelled and unlabelled frames of a retraining run) are
    encoded by the new checkpoint. Tasks the run did not train keep the parent's statistics
    when the encoder is unchanged (their features are the same), else they get none. Tasks with
    fewer than :data:`MIN_FRAMES` frames get none either.

    Args:
        folder: the new checkpoint folder; ``task_fit.json`` is written there.
        sets: frame sets with ``images`` ``(N, S, S)`` and ``task_index`` into ``task_order``.
        task_order: the model's task ids.
        tasks: the tasks trained.
        parent: the checkpoint trained from (its statistics may be kept).
        device: where to encode.

    Returns:
        The statistics written, or None when there were none to write.
    """
    images = [s.images for s in sets if len(s.images)]
    index = np.concatenate([s.task_index for s in sets if len(s.images)]) if images else None
    stats: dict[str, TaskStats] = {}
    if images and index is not None:
        pooled = encode_pooled(folder, np.concatenate(images), device)
        for task in tasks:
            x = pooled[index == list(task_order).index(task)]
            if len(x) >= MIN_FRAMES and np.isfinite(x).all():  # else no statistics, no error
                stats[task] = fit_task(x)
    old = load_task_fit(parent) if parent is not None else None
    if old is not None and any(t not in stats for t in old.tasks):
        if _same_encoder(folder, parent):  # type: ignore[arg-type]
            stats = {t: s for t, s in old.tasks.items() if t in task_order} | stats
    if not stats:
        return None
    meta = {"fitted_on": "retraining frames", "refit": sorted(set(tasks) & set(stats))}
    result = TaskFit(stats, LEVELS, meta)
    result.save(folder)
    return result
