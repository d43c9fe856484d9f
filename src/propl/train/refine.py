"""Training the click refinement head with iterative click simulation (RITM-style).

Only the head learns: the encoder and both decoders stay frozen, so the model's automatic
segmentation is unchanged exactly, and every frame is encoded once (:func:`cache_frames`).
Each step (:meth:`RefineTrainer.step`), for a batch of frames:

1. a start mask: empty (the head must work on tasks the model does not know and on scans it
   got wrong), or the frozen decoder 2's pseudo-label (so it learns to fix our own masks),
   thresholded at a random level and sometimes grown or shrunk;
2. first clicks: a random interior point of the object from an empty start, the simulated
   annotator's click (jittered) from a pseudo-label; for some frames a box around the object
   too (its bounding box, each side moved by up to a tenth of its size), then half of those
   frames get no first click (a box alone);
3. a random number of rounds without gradient, each feeding the head's own previous output
   back as the mask and adding the simulated annotator's next click;
4. one round with gradient: binary cross-entropy + soft Dice against the ground truth.

The task prompt is dropped for some frames, so the head also works with no task (``None``).
For a share of the frames (``generic_rate``) the object is not the task's structure but a
region of the frame itself (:func:`frame_regions`: a patch of similar echo, found without any
label), with no prompt: the head learns to follow clicks on structures no task taught it,
instead of marking nothing where it sees no structure it knows. Most of those start from an
empty mask; a ``generic_prior`` share start from a rough mask of the region
(:func:`rough_prior`: grown or shrunk, spilling into a neighbouring region or missing a part),
so the head also learns to keep and tighten a mask the annotator brushed, or another model
drew, around a structure it does not know, where it would otherwise erase it as it erases its
own false positives.

Project retraining tunes the head on the annotator's confirmed corrections
(:func:`tune_on_corrections`): a short run from where the head is, kept only if clicking on
the held-back corrections goes no worse (:func:`click_iou`), so the head learns the project's
structures (a new task above all) without ever getting worse on them. Both the tuning and that
judgement see each frame twice: whole, and cut to the window the refiner zooms into from the
second click (:func:`with_zoomed_views`), so the tuned head learns, and is judged on, what it
refines in the plugin.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from ..data.benchmark import ArraySet
from ..models import ProPLNet
from ..models.refine import RefineConfig, click_maps


@dataclass(frozen=True)
class RefineTrainConfig:
    """Settings of :class:`RefineTrainer` (saved in the checkpoint's metadata)."""

    steps: int = 6000
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_rounds: int = 6
    empty_start: float = 0.4
    prompt_drop: float = 0.3
    box_rate: float = 0.25
    generic_rate: float = 0.2
    generic_prior: float = 0.0
    zoomed_views: bool = True
    seed: int = 0


GENERIC_AREA = (0.003, 0.15)
"""Smallest and largest share of the frame a region of :func:`frame_regions` may cover to be
clicked on as an object."""
GENERIC_SCALE = 100.0
"""Felzenszwalb's scale for :func:`frame_regions` at the maps' size (larger: larger regions)."""


def frame_regions(image: Tensor, size: tuple[int, int]) -> np.ndarray:
    """Regions of similar echo of each frame, made without labels (Felzenszwalb's graph
    segmentation of the frame smoothed against speckle, at the head's map size).

    Args:
        image: ``(N, 1, S, S)`` network inputs in [0, 1].
        size: ``(h, w)`` of the label maps.

    Returns:
        ``(N, h, w)`` int32 region labels, 0..k-1 per frame.
    """
    from skimage.segmentation import felzenszwalb

    small = F.interpolate(image.float(), size=size, mode="area")[:, 0].numpy()
    return np.stack(
        [felzenszwalb(f, scale=GENERIC_SCALE, sigma=1.0, min_size=20) for f in small]
    ).astype(np.int32)


def generic_object(
    labels: np.ndarray, image: np.ndarray, rng: np.random.Generator
) -> np.ndarray | None:
    """One region of ``labels`` (from :func:`frame_regions`) as a boolean object mask, holes
    filled: a random one covering a :data:`GENERIC_AREA` share of the frame and not black (the
    dark surround of a sector scan is no object); None when no region qualifies."""
    counts = np.bincount(labels.ravel())
    share = counts / labels.size
    mean = np.bincount(labels.ravel(), weights=image.ravel()) / np.maximum(counts, 1)
    ok = np.nonzero((share >= GENERIC_AREA[0]) & (share <= GENERIC_AREA[1]) & (mean > 0.05))[0]
    if len(ok) == 0:
        return None
    return ndimage.binary_fill_holes(labels == int(rng.choice(ok)))


def rough_prior(region: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rough mask of ``region`` (boolean, from :func:`generic_object`), as a quick brush
    outline or another model leaves it, one of: spilling into a neighbouring region of
    ``labels`` no larger than twice the region; missing the part beyond a random line (keeping
    60-90 % of it); grown or shrunk by up to a quarter of the region's equivalent radius (at
    least a pixel, never to nothing) or left as it is."""
    mask = region.copy()
    draw = rng.random()
    if draw < 0.3:
        ring = ndimage.binary_dilation(mask) & ~mask
        near = [k for k in np.unique(labels[ring]) if (labels == k).sum() <= 2 * mask.sum()]
        if near:
            mask |= ndimage.binary_fill_holes(labels == int(rng.choice(near)))
    elif draw < 0.5:
        ys, xs = np.nonzero(mask)
        angle = rng.uniform(0, 2 * np.pi)
        along = ys * np.cos(angle) + xs * np.sin(angle)
        kept = along <= np.quantile(along, rng.uniform(0.6, 0.9))
        mask = np.zeros_like(mask)
        mask[ys[kept], xs[kept]] = True
    else:
        most = max(1, round(0.25 * float(np.sqrt(region.sum() / np.pi))))
        k = int(rng.integers(-most, most + 1))
        if k > 0:
            mask = ndimage.distance_transform_edt(~mask) <= k
        elif k < 0:
            shrunk = ndimage.distance_transform_edt(mask) > -k
            mask = shrunk if shrunk.any() else mask
    return mask


RETRAIN_STEPS = 100
"""Steps the head trains on a project's confirmed corrections at each retraining."""
RETRAIN_LR = 5e-4
"""The head's learning rate at a project retraining (tuning a trained head)."""
RETRAIN_BATCH = 8
"""Frames per step at a project retraining."""
JUDGE_CLICKS = 3
"""Simulated clicks per held-back frame when the tuned head is judged."""


@dataclass
class FrameCache:
    """Everything the head's training needs per frame, computed once by the frozen model.

    Attributes:
        features: the encoder's four maps, float16, ``(N, C, S/k, S/k)``.
        image: ``(N, 1, S, S)`` float16 network input.
        pseudo: ``(N, 1, S/2, S/2)`` float16 decoder-2 probability.
        truth: ``(N, 1, S/2, S/2)`` float16 ground truth, area-averaged.
        task_index: ``(N,)`` task indices.
    """

    features: list[Tensor]
    image: Tensor
    pseudo: Tensor
    truth: Tensor
    task_index: Tensor

    def __len__(self) -> int:
        return int(self.image.shape[0])


@torch.inference_mode()
def cache_frames(model: ProPLNet, data: ArraySet, batch_size: int = 32) -> FrameCache:
    """Encode every frame once with the frozen model (see :class:`FrameCache`)."""
    model.eval()
    parts: dict[str, list[Tensor]] = {k: [] for k in ("f0", "f1", "f2", "f3", "img", "p", "y")}
    for start in range(0, len(data), batch_size):
        sl = slice(start, start + batch_size)
        x = torch.from_numpy(data.images[sl]).float()[:, None] / 255.0
        y = torch.from_numpy(data.masks[sl]).float()[:, None]
        t = torch.from_numpy(data.task_index[sl])
        features = model.encode(x)
        half = (x.shape[-2] // 2, x.shape[-1] // 2)
        pseudo = torch.sigmoid(model.decode(features, t, 2, size=half))
        for i, f in enumerate(features):
            parts[f"f{i}"].append(f.half())
        parts["img"].append(x.half())
        parts["p"].append(pseudo.half())
        parts["y"].append(F.interpolate(y, size=half, mode="area").half())
    cat = {k: torch.cat(v) for k, v in parts.items()}
    return FrameCache(
        features=[cat[f"f{i}"] for i in range(4)],
        image=cat["img"],
        pseudo=cat["p"],
        truth=cat["y"],
        task_index=torch.from_numpy(data.task_index).long(),
    )


def with_zoomed_views(data: ArraySet) -> ArraySet:
    """The frames, then for each frame with a structure the window the refiner zooms into
    around it (:func:`propl.interactive.zoom_window` on the true mask, no clicks), cut out and
    resized to the frames' size. Frames whose window would be the whole frame add nothing.

    Why: a head tuned on whole frames only clicks worse zoomed in than on the whole frame
    (``benchmarks/results/refine-retrain*.md``), and the plugin zooms in from the second click.
    """
    from ..data.benchmark import resize_square
    from ..interactive import zoom_window
    from ..region import Region

    size = data.images.shape[-1]
    bounds = Region(0, 0, size, size)
    images, masks, picked = [], [], []
    for i, mask in enumerate(data.masks):
        window = zoom_window(mask, [], None, bounds)  # None for an empty mask
        if window is None:
            continue
        images.append(resize_square(data.images[i][window.slices], size, mask=False))
        # the mask resampled as the image is, then thresholded, so the two stay aligned
        blown = resize_square(mask[window.slices] * 255, size, mask=False)
        masks.append((blown >= 128).astype(np.uint8))
        picked.append(i)
    if not picked:
        return data
    return ArraySet(
        np.concatenate([data.images, np.stack(images)]),
        np.concatenate([data.masks, np.stack(masks)]),
        np.concatenate([data.task_index, data.task_index[picked]]),
        [*data.ids, *(f"{data.ids[i]}@zoom" for i in picked)],
        [*data.orig_shapes, *(data.orig_shapes[i] for i in picked)],
    )


def _region_point(region: np.ndarray, rng: np.random.Generator | None) -> tuple[int, int]:
    """The interior point farthest from the region's boundary; with ``rng``, a random point
    among those at least 60% as deep (the first clicks of RITM vary, so should ours)."""
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    if rng is None:
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return int(y), int(x)
    ys, xs = np.nonzero(dist >= 0.6 * dist.max())
    k = int(rng.integers(len(ys)))
    return int(ys[k]), int(xs[k])


def training_click(
    pred: np.ndarray, truth: np.ndarray, rng: np.random.Generator | None
) -> tuple[int, int, float] | None:
    """The simulated annotator's next click ``(y, x, sign)`` on boolean maps (None: no error);
    the point is jittered when ``rng`` is given."""
    from ..interactive import largest_region

    missed, n_missed = largest_region(truth & ~pred)
    false, n_false = largest_region(pred & ~truth)
    if n_missed == 0 and n_false == 0:
        return None
    positive = n_missed >= n_false
    y, x = _region_point(missed if positive else false, rng)
    return y, x, 1.0 if positive else -1.0


def _points(clicks: list[list[tuple[int, int, float]]]) -> Tensor:
    """Per-sample click lists as a padded ``(B, N, 3)`` tensor (sign 0 = padding)."""
    n = max(1, max(len(c) for c in clicks))
    out = torch.zeros(len(clicks), n, 3)
    for b, cs in enumerate(clicks):
        if cs:
            out[b, : len(cs)] = torch.tensor(cs, dtype=torch.float32)
    return out


def soft_dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """1 - soft Dice per sample, averaged; ``(B, 1, H, W)`` logits and target in [0, 1]."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


class RefineTrainer:
    """Trains ``model.refine`` (the rest frozen) on a :class:`FrameCache`.

    Args:
        model: a ProPL network with a refinement head (:meth:`ProPLNet.add_refine`).
        cache: the frames, encoded once.
        config: the training settings.
    """

    def __init__(self, model: ProPLNet, cache: FrameCache, config: RefineTrainConfig) -> None:
        if model.refine is None:
            raise ValueError("the model has no refinement head: call model.add_refine() first")
        self.model, self.head, self.cache, self.config = model, model.refine, cache, config
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self.head.parameters():
            p.requires_grad_(True)
        self.opt = torch.optim.AdamW(
            self.head.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        warm = max(1, config.steps // 20)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt,
            lambda i: (
                min(1.0, (i + 1) / warm)
                * 0.5
                * (1 + np.cos(np.pi * min(i, config.steps) / config.steps))
            ),
        )
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        self.radius = self.head.config.click_radius / 2  # the maps are at half the input size
        self.regions: np.ndarray | None = None  # frame_regions, when generic objects are on
        self._small: np.ndarray | None = None  # the frames at the maps' size, for their echo
        if config.generic_rate > 0:
            size = (int(cache.truth.shape[-2]), int(cache.truth.shape[-1]))
            self.regions = frame_regions(cache.image, size)
            self._small = F.interpolate(cache.image.float(), size=size, mode="area")[:, 0].numpy()

    def _start_masks(self, pseudo: Tensor) -> Tensor:
        """Empty for some frames, a perturbed pseudo-label for the rest (``(B, 1, h, w)``)."""
        b = pseudo.shape[0]
        level = torch.from_numpy(self.rng.uniform(0.2, 0.8, b)).float().view(b, 1, 1, 1)
        mask = (pseudo > level).float()
        k = int(self.rng.choice([0, 0, 3, 5, 7]))
        if k:  # grow or shrink the whole batch's pseudo-labels a little
            grow = self.rng.random() < 0.5
            pooled = F.max_pool2d(mask if grow else 1 - mask, k, 1, k // 2)
            mask = pooled if grow else 1 - pooled
        empty = torch.from_numpy(self.rng.random(b) < self.config.empty_start)
        mask[empty] = 0.0
        return mask

    def _swap_generic(self, idx: Tensor, truth: Tensor, keep: Tensor, pseudo: Tensor) -> None:
        """For a ``generic_rate`` share of the batch, in place: a region of the frame as the
        object (:func:`generic_object`), no prompt, and as the start an empty mask or, for a
        ``generic_prior`` share, a rough mask of the region (:func:`rough_prior`; the start
        can still be emptied by :meth:`_start_masks`)."""
        if self.regions is None or self._small is None:
            return
        for b, i in enumerate(idx.tolist()):
            if self.rng.random() >= self.config.generic_rate:
                continue
            region = generic_object(self.regions[i], self._small[i], self.rng)
            if region is None:
                continue
            truth[b, 0] = torch.from_numpy(region.astype(np.float32))
            keep[b] = 0.0
            pseudo[b] = 0.0
            if self.config.generic_prior > 0 and self.rng.random() < self.config.generic_prior:
                prior = rough_prior(region, self.regions[i], self.rng)
                pseudo[b, 0] = torch.from_numpy(prior.astype(np.float32))

    def _first_clicks(self, mask: Tensor, truth: np.ndarray) -> list[list[tuple[int, int, float]]]:
        clicks: list[list[tuple[int, int, float]]] = []
        pred = mask[:, 0].numpy() > 0.5
        for b in range(len(truth)):
            click = None
            if self.rng.random() > 0.1:  # sometimes no click: the head must keep a good mask
                if not pred[b].any() and truth[b].any():
                    click = (*_region_point(truth[b], self.rng), 1.0)
                else:
                    click = training_click(pred[b], truth[b], self.rng)
            clicks.append([click] if click else [])
        return clicks

    def _boxes(self, truth: np.ndarray, clicks: list[list[tuple[int, int, float]]]) -> Tensor:
        """``(B, 4)`` jittered bounding boxes of the truth for a ``box_rate`` share of the
        frames (NaN rows for the others); half of the boxed frames lose their first click."""
        boxes = torch.full((len(truth), 4), float("nan"))
        h, w = truth.shape[1:]
        for b in range(len(truth)):
            if not truth[b].any() or self.rng.random() >= self.config.box_rate:
                continue
            ys, xs = np.nonzero(truth[b])
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            jy, jx = 0.1 * (y1 - y0), 0.1 * (x1 - x0)
            y0, y1 = y0 + jy * self.rng.uniform(-1, 1), y1 + jy * self.rng.uniform(-1, 1)
            x0, x1 = x0 + jx * self.rng.uniform(-1, 1), x1 + jx * self.rng.uniform(-1, 1)
            boxes[b] = torch.tensor([max(0, y0), max(0, x0), min(h, y1), min(w, x1)])
            if self.rng.random() < 0.5:
                clicks[b] = []
        return boxes

    def step(self) -> float:
        """One iterative-training step; returns the loss."""
        cfg, cache = self.config, self.cache
        idx = torch.from_numpy(self.rng.choice(len(cache), cfg.batch_size, replace=False))
        features = [f[idx].float() for f in cache.features]
        truth = cache.truth[idx].float()
        keep = torch.from_numpy(self.rng.random(len(idx)) >= cfg.prompt_drop).float()
        pseudo = cache.pseudo[idx].float()
        self._swap_generic(idx, truth, keep, pseudo)
        truth_np = truth[:, 0].numpy() > 0.5
        prompt = self.model.prompt(cache.task_index[idx]).detach()
        emb = self.head.embed(features, cache.image[idx].float(), prompt, keep)
        mask = self._start_masks(pseudo)
        clicks = self._first_clicks(mask, truth_np)
        boxes = self._boxes(truth_np, clicks) if cfg.box_rate > 0 else None
        self.head.eval()
        with torch.no_grad():
            for _ in range(int(self.rng.integers(0, cfg.max_rounds + 1))):
                logits = self.head.decode(
                    emb, click_maps(mask, _points(clicks), self.radius, boxes)
                )
                mask = (logits > 0).float()
                pred = mask[:, 0].numpy() > 0.5
                for b in range(len(idx)):
                    click = training_click(pred[b], truth_np[b], None)
                    if click:
                        clicks[b].append(click)
        self.head.train()
        logits = self.head.decode(emb, click_maps(mask, _points(clicks), self.radius, boxes))
        loss = F.binary_cross_entropy_with_logits(logits, truth) + soft_dice_loss(logits, truth)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.head.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        return float(loss.detach())

    def fit(self, progress: Callable[[int, float], None] | None = None) -> dict[str, object]:
        """Run every step; returns a summary for the checkpoint's metadata."""
        start, losses = time.perf_counter(), []
        for i in range(self.config.steps):
            losses.append(self.step())
            if progress is not None:
                progress(i + 1, float(np.mean(losses[-50:])))
        return {
            "settings": asdict(self.config),
            "frames": len(self.cache),
            "final_loss": float(np.mean(losses[-100:])) if losses else None,
            "seconds": round(time.perf_counter() - start, 1),
        }


def train_refine_head(
    model_path: str,
    data: str,
    out: str,
    config: RefineTrainConfig,
    cache_dir: str | None = None,
    log: Callable[[str], None] = print,
    fresh: bool = True,
    head: RefineConfig | None = None,
) -> dict[str, object]:
    """Give a checkpoint a trained refinement head and save it (the rest bit-identical).

    Trains on the train split of every task of the data folder the model knows (never the
    test split).

    Args:
        model_path: a checkpoint folder, or ``"shipped"``.
        data: a us-universal-style folder (:class:`~propl.data.benchmark.BenchmarkFolder`).
        out: the checkpoint folder to write (float32; ``propl pack`` halves it).
        config: the training settings.
        cache_dir: where to keep the resized arrays between runs.
        log: where progress lines go.
        fresh: start a new head (seeded by ``config.seed``) even if the checkpoint has one;
            False trains the checkpoint's head on from where it is.
        head: the new head's config (default :class:`~propl.models.refine.RefineConfig`).

    Returns:
        The summary saved in the metadata under ``"refine"``.
    """
    from ..checkpoint import keep_side_files, load_checkpoint, save_checkpoint
    from ..data.benchmark import BenchmarkFolder, load_arrays
    from ..inference import resolve_model

    path = resolve_model(model_path)
    ckpt = load_checkpoint(path)
    model = ckpt.model
    if fresh or not model.has_refine:
        torch.manual_seed(config.seed)  # the head's start does not depend on what was loaded
        model.add_refine(head)
    folder = BenchmarkFolder(data)
    tasks = [t for t in folder.task_ids() if t in model.tasks]
    samples = [s for t in tasks for s in folder.samples(t, "train")]
    size = model.config.input_size
    arrays = load_arrays(
        samples, size, model.tasks, cache_dir=Path(cache_dir) if cache_dir else None
    )
    if config.zoomed_views:  # also each frame's window the refiner zooms into
        arrays = with_zoomed_views(arrays)
    t0 = time.perf_counter()
    cache = cache_frames(model, arrays)
    seconds = time.perf_counter() - t0
    log(f"encoded {len(cache)} train frames of {len(tasks)} tasks in {seconds:.0f} s")

    def progress(step: int, loss: float) -> None:
        if step % 50 == 0 or step == config.steps:
            log(f"step {step}/{config.steps} loss {loss:.4f} ({time.perf_counter() - t0:.0f} s)")

    summary = RefineTrainer(model, cache, config).fit(progress)
    summary |= {"from": str(path), "data": str(folder.root), "tasks": tasks}
    save_checkpoint(model, out, ckpt.metadata | {"refine": summary})
    keep_side_files(path, out)  # the encoder and decoders they describe are unchanged
    log(f"wrote {out}")
    return summary


@torch.no_grad()
def click_iou(model: ProPLNet, cache: FrameCache, clicks: int = JUDGE_CLICKS) -> float:
    """Mean IoU (at half the input size) after each of ``clicks`` simulated clicks, over the
    cached frames: the clicks the simulated annotator makes on the frozen decoder's
    pseudo-label (deterministic: the deepest point of the largest error region), each round
    feeding the head's own output back. Frames without any foreground count too."""
    head = model.refine
    if head is None:
        raise ValueError("the model has no refinement head")
    head.eval()
    radius = head.config.click_radius / 2
    truth = cache.truth[:, 0].float().numpy() > 0.5
    scores: list[float] = []
    for start in range(0, len(cache), 16):
        idx = torch.arange(start, min(len(cache), start + 16))
        emb = head.embed(
            [f[idx].float() for f in cache.features],
            cache.image[idx].float(),
            model.prompt(cache.task_index[idx]),
        )
        mask = (cache.pseudo[idx].float() > 0.5).float()
        made: list[list[tuple[int, int, float]]] = [[] for _ in idx]
        for _ in range(clicks):
            pred = mask[:, 0].numpy() > 0.5
            for b, i in enumerate(idx.tolist()):
                click = training_click(pred[b], truth[i], None)
                if click:
                    made[b].append(click)
            mask = (head.decode(emb, click_maps(mask, _points(made), radius)) > 0).float()
            pred = mask[:, 0].numpy() > 0.5
            for b, i in enumerate(idx.tolist()):
                union = (pred[b] | truth[i]).sum()
                scores.append(1.0 if union == 0 else float((pred[b] & truth[i]).sum() / union))
    return float(np.mean(scores)) if scores else 0.0


def tune_on_corrections(
    model: ProPLNet,
    corrected: ArraySet,
    held_back: ArraySet,
    steps: int = RETRAIN_STEPS,
    seed: int = 0,
) -> dict[str, object]:
    """Train the model's refinement head on from where it is, on a project's confirmed
    corrections, and keep the result only if the held-back corrections click no worse
    (:func:`click_iou`); the rest of the model is not touched. Runs on the CPU, where the
    model must be.

    Returns:
        What happened, for the version's record: ``{"trained": False, "why": ...}`` when there
        is no head, no step or nothing to learn from; else the steps, the held-back click IoU
        before and after and whether the tuned head was ``kept``.
    """
    import copy

    head = model.refine
    if head is None:
        return {"trained": False, "why": "the model has no refinement head"}
    if steps <= 0 or len(corrected) == 0 or len(held_back) == 0:
        return {"trained": False, "why": "no steps, corrections or held-back scans"}
    start = time.perf_counter()
    was = copy.deepcopy(head.state_dict())
    grads = [p.requires_grad for p in model.parameters()]
    judge = cache_frames(model, with_zoomed_views(held_back))
    before = click_iou(model, judge)
    train = cache_frames(model, with_zoomed_views(corrected))
    config = RefineTrainConfig(  # the project's own structures only: no generic objects
        steps=steps,
        batch_size=min(RETRAIN_BATCH, len(train)),
        lr=RETRAIN_LR,
        generic_rate=0.0,
        seed=seed,
    )
    with torch.random.fork_rng(devices=[]):  # the caller's random stream goes on as it was
        summary = RefineTrainer(model, train, config).fit()
    after = click_iou(model, judge)
    kept = after >= before
    if not kept:
        head.load_state_dict(was)
    for p, g in zip(model.parameters(), grads, strict=True):  # RefineTrainer froze the rest
        p.requires_grad_(g)
    return {
        "trained": True,
        "kept": kept,
        "steps": steps,
        "frames": len(corrected),
        "held_back_frames": len(held_back),
        "zoomed_views": len(train) - len(corrected),
        "held_back_click_iou": {"before": round(before, 4), "after": round(after, 4)},
        "final_loss": summary["final_loss"],
        "seconds": round(time.perf_counter() - start, 1),
    }


def tune_checkpoint(
    path: str | Path,
    corrected: ArraySet,
    held_back: ArraySet,
    steps: int = RETRAIN_STEPS,
    seed: int = 0,
) -> dict[str, object]:
    """:func:`tune_on_corrections` on the checkpoint at ``path``, saved back in place (under
    ``"refine_tuning"`` in its metadata) when the tuned head is kept; the encoder and decoders
    are untouched. What ``propl train --data`` does with its best and last checkpoints, so a
    model that learnt a task from the command line clicks on it as one retrained in a project
    does.

    Returns:
        The tuning's record (``{"trained": False, ...}`` when there was nothing to do).
    """
    from ..checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(path)
    model = ckpt.model.float().cpu()
    record = tune_on_corrections(model, corrected, held_back, steps, seed)
    if record.get("kept"):
        save_checkpoint(model, path, ckpt.metadata | {"refine_tuning": record})
    return record
