"""Retraining from a project: reviewed scans are the labels, the rest unlabelled, ProPL on top.

One code path for ``propl train --project P`` and the plugin's Retrain widget (which runs that
command as a subprocess and reads its JSON lines)::

    reviewed (accepted/corrected) (scan, task) pairs ──▶ labelled  ─┐
        └─ a stable part held back ─────────────────────▶ held back │  ProPL semi-supervised,
    unreviewed pairs ───────────────────────────────────▶ unlabelled┘  from the current version
                                                                    ▼
    new version models/vNNNN (weights, settings, scans, held-back scores of it and of the
    model that was current: the baseline it must beat)
    outcome: better (promotable) | worse | failed (NaN); cancel writes nothing

Reading the project needs no writer lock (the GUI keeps it while this runs); writing the version
is a write-once folder (:mod:`propl.store.versions`). Which scans are held back and how a
version is judged on them: :mod:`propl.train.verdict`. Promotion moves the project's "current"
pointer and is left to the lock holder: :func:`promote_if_better`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_checkpoint, read_tasks, save_checkpoint
from ..data.benchmark import ArraySet, resize_square
from ..errors import CheckpointError, RetrainError
from ..inference import frames_to_float, resolve_model
from ..promotion import promote_if_better
from ..store import LABELLED, Project, StoreError
from ..store import versions as ver
from ..task_fit import refit_checkpoint
from ..task_shape import refit_shapes
from .methods import LOOP_OPTIONS, MethodOptions
from .recipe import RECIPES, init_model, unknown_tasks
from .refine import RETRAIN_STEPS as REFINE_STEPS
from .refine import tune_on_corrections
from .trainer import TrainConfig, Trainer, TrainEvent, can_cache_features
from .verdict import HeldFrame, gain_bound, judge, select_held_back, without_scans

RETRAIN_STEPS = 150
"""Optimiser steps of a project retrain that learns no new task."""
RETRAIN_LR = 5e-4
"""Learning rate of a project retrain (fine-tuning a trained model)."""


@dataclass(frozen=True)
class RetrainConfig:
    """How a project retrains. The defaults fit a 2-core CPU in a few minutes (see docs).

    Attributes:
        steps: optimiser steps; None: :data:`RETRAIN_STEPS`, or the new-task recipe's when a
            task is new to the parent model (its own decoders start far from what it needs).
        lr: learning rate; None: :data:`RETRAIN_LR` (a new task's own decoders: the new-task
            recipe's).
        frames_per_scan: frames sampled (evenly) from each cine; stills give one.
        hold_back: part of the reviewed pairs held back to judge the new version (at least one).
        freeze_encoder: train decoders and prompt tokens only (faster; the encoder's ImageNet
            and ultrasound features stay as they are).
        cache_features: with a frozen encoder, encode each frame once per weak view and train
            on the cached features: no encoder pass per step.
        feature_views: weak views cached per frame (the first unaugmented; None: the trainer's
            default, or the new-task recipe's, with its colour changes, for a new task); memory
            grows with it (about 0.2 MB per frame and view at 192 px).
        max_unlabelled: cap on unlabelled frames (memory and loading time).
        min_gain: Dice points a new version must gain over the current model on the held-back
            scans to be promotable, at the ``confidence`` below.
        confidence: one-sided confidence of the paired bootstrap over held-back scans: the
            version is promotable only when the lower bound of its gain exceeds ``min_gain``
            (0.9: a version that is truly no better is promoted at most ~10 % of the time).
        anchor: L2-SP strength: a penalty pulling the shared weights toward the parent's, so a
            few reviewed scans of one task move the network less for the other tasks (0: off).
            1.0 was chosen on train-split scans (``benchmarks/results/anchor-sweep``): the
            other tasks lost 0.6 Dice points on average instead of 4.9 without it.
        freeze_norm_stats: keep the parent's BatchNorm running statistics (the decoders'):
            a few reviewed scans of one task must not re-normalise the features of every task.
        options: ProPL's options: :data:`~propl.train.methods.LOOP_OPTIONS` (the strong view,
            λ = 1; it trains without the feature cache); a run that learns a new task takes
            the new-task recipe's (the weak view, on cached features) unless they were changed.
        refine_steps: steps the click refinement head trains on the confirmed corrections
            after the rest (:func:`~propl.train.refine.tune_on_corrections`: kept only if the
            held-back corrections click no worse); 0: the head is left as it was.
    """

    steps: int | None = None
    batch_size: int = 8
    lr: float | None = None
    freeze_encoder: bool = True
    cache_features: bool = True
    feature_views: int | None = None
    frames_per_scan: int = 4
    hold_back: float = 0.2
    max_unlabelled: int = 256
    method: str = "propl"
    seed: int = 0
    device: str = "auto"
    eval_every: int = 25
    min_gain: float = 0.0
    confidence: float = 0.9
    anchor: float = 1.0
    freeze_norm_stats: bool = True
    tasks: tuple[str, ...] | None = None
    options: MethodOptions = LOOP_OPTIONS
    refine_steps: int = REFINE_STEPS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProjectData:
    """What one run learns from and is judged on (arrays at the network's input size)."""

    tasks: tuple[str, ...]
    labelled: ArraySet
    unlabelled: ArraySet
    held_back: ArraySet
    trained_on: list[tuple[str, str]]
    held_back_pairs: list[tuple[str, str]]
    held_back_frames: list[HeldFrame] = field(default_factory=list)
    """Held-back frames at the scan's own resolution: what versions are judged on."""
    damaged: list[str] = field(default_factory=list)
    """Scans left out because they are damaged (one message each, naming scan and file)."""


def frame_indices(n_frames: int, wanted: int) -> np.ndarray:
    """Up to ``wanted`` evenly spaced frame indices (all frames when there are fewer)."""
    if n_frames <= wanted:
        return np.arange(n_frames)
    return np.unique(np.linspace(0, n_frames - 1, wanted).round().astype(int))


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    return np.round(frames_to_float(frames) * 255).astype(np.uint8)


_Item = tuple[np.ndarray, np.ndarray | None, int, str]
"""One training frame: (pixels, mask or None, task index, id)."""


def _arrays(items: list[_Item], size: int) -> ArraySet:
    n = len(items)
    images = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i, (img, mask, _, _) in enumerate(items):
        images[i] = resize_square(img, size, mask=False)
        if mask is not None:
            masks[i] = resize_square(mask, size, mask=True)
    return ArraySet(
        images=images,
        masks=masks,
        task_index=np.array([t for _, _, t, _ in items], np.int64),
        ids=[i for _, _, _, i in items],
        orig_shapes=[img.shape[:2] for img, _, _, _ in items],
    )


def training_tasks(project: Project, wanted: Sequence[str] | None = None) -> list[str]:
    """The tasks to retrain: ``wanted``, or every task with at least one reviewed scan."""
    known = [t.id for t in project.tasks]
    if wanted:
        for t in wanted:
            if t not in known:
                raise RetrainError(f"project '{project.root}' has no task {t!r} ({known})")
        return list(wanted)
    tasks = []
    for task in known:
        for scan_id in project.scan_ids():
            try:
                review = project.review(scan_id, task, with_mask=False)
            except StoreError:  # damaged: collect() names it
                continue
            if review is not None and review.status in LABELLED:
                tasks.append(task)
                break
    if not tasks:
        raise RetrainError(f"project '{project.root}' has no accepted or corrected scans yet")
    return tasks


def collect(
    project: Project,
    tasks: Sequence[str],
    task_order: Sequence[str],
    size: int,
    config: RetrainConfig,
) -> ProjectData:
    """Read the project's reviewed and unreviewed scans for ``tasks`` into arrays.

    Only the frames used are read (up to ``frames_per_scan`` per scan; the unlabelled frames
    are drawn before any pixel is read), so a project of long cines stays cheap.
    """
    reviewed: list[tuple[str, str]] = []
    unreviewed: list[tuple[str, str]] = []
    labelled: dict[tuple[str, str], np.ndarray] = {}
    damaged: list[str] = []
    for scan_id in project.scan_ids():
        for task in tasks:
            try:
                review = project.review(scan_id, task, with_mask=False)
                predicted = project.prediction_confidence(scan_id, task) is not None
                project.scan(scan_id)
            except StoreError as exc:  # damaged: skipped, and said so
                damaged.append(str(exc))
                break
            if review is not None and review.status != "draft":
                if review.is_labelled:  # only the frames the annotator confirmed
                    reviewed.append((scan_id, task))
                    labelled[(scan_id, task)] = review.labelled_frames
                continue  # rejected / skipped: neither a label nor an image of the target
            if len(tasks) == 1 or predicted:  # unreviewed, or a draft nobody confirmed
                unreviewed.append((scan_id, task))
    train_pairs, held_pairs = select_held_back(reviewed, config.hold_back)
    order = list(task_order)

    def frames_of(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str, np.ndarray]]:
        """Up to ``frames_per_scan`` frames of each pair: of a reviewed pair, only those the
        annotator confirmed."""
        chosen = []
        for pair in pairs:
            frames = labelled.get(pair)
            if frames is None:  # an unlabelled scan: any of its frames
                frames = np.arange(project.scan(pair[0]).n_frames)
            chosen.append((*pair, frames[frame_indices(len(frames), config.frames_per_scan)]))
        return chosen

    def read(chosen: list[tuple[str, str, np.ndarray]], with_masks: bool) -> list[_Item]:
        items: list[_Item] = []
        for scan_id, task, idx in chosen:
            try:
                pixels = _to_uint8(project.image(scan_id, idx))
                mask = None
                if with_masks:
                    review = project.review(scan_id, task)
                    assert review is not None and review.mask is not None
                    mask = review.mask[idx]
            except StoreError as exc:  # damage only a full read reveals: skipped, said so
                damaged.append(str(exc))
                continue
            for k, f in enumerate(idx):
                m = None if mask is None else mask[k]
                items.append((pixels[k], m, order.index(task), f"{scan_id}:{f}"))
        return items

    unlab = [(s, t, np.array([f])) for s, t, idx in frames_of(unreviewed) for f in idx]
    if len(unlab) > config.max_unlabelled:
        rng = np.random.default_rng(config.seed)
        keep = np.sort(rng.choice(len(unlab), config.max_unlabelled, replace=False))
        unlab = [unlab[i] for i in keep]
    held = read(frames_of(held_pairs), with_masks=True)
    return ProjectData(
        tasks=tuple(order),
        labelled=_arrays(read(frames_of(train_pairs), with_masks=True), size),
        unlabelled=_arrays(read(unlab, with_masks=False), size),
        held_back=_arrays(held, size),
        trained_on=train_pairs,
        held_back_pairs=held_pairs,
        held_back_frames=[
            (img, m, order[t], fid.rsplit(":", 1)[0]) for img, m, t, fid in held if m is not None
        ],
        damaged=damaged,
    )


def parent_of(project: Project, init: str | Path | None) -> tuple[str, Path]:
    """(name, checkpoint folder) the run starts from: ``init``, else the project's current
    version, else the shipped model."""
    if init is not None and str(init) != ver.SHIPPED:
        path = Path(init)
        if path.parent == ver.models_dir(project.root):
            return path.name, path
        return str(path), path
    current = None if init is not None else project.current_version()
    if current is not None:
        return current.name, current.path
    return ver.SHIPPED, resolve_model(None)


def _finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.state_dict().values())


def retrain(
    project_path: str | Path,
    config: RetrainConfig | None = None,
    init: str | Path | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[TrainEvent]:
    """Retrain from a project's reviews and write a new model version; yields progress events.

    Events: ``prepare`` (what it learns from), ``baseline`` (the current model's held-back
    Dice), then the trainer's ``start``/``step``/``eval`` (held-back Dice of the model being
    trained), then ``version`` (name, outcome, scores; the final weights, not the best
    evaluation, so the verdict is not chosen on the scans that judge it) or ``stopped``
    (cancelled: nothing is written). Promotion is left to the caller (:func:`promote_if_better`).

    Raises:
        RetrainError: too few reviewed scans, or an unknown task.
        StoreError: not a project.
    """
    config = config or RetrainConfig()
    with Project.open(project_path, read_only=True) as project:
        tasks = training_tasks(project, config.tasks)
        parent_name, parent_path = parent_of(project, init)
        baseline_name, baseline_path = parent_of(project, None)
        model = init_model(tasks, init=parent_path)
        # a task the parent has never seen is learnt on decoders of its own (the new-task
        # recipe of propl train): the tasks it knows keep their outputs
        new_tasks = unknown_tasks(parent_path, tasks)
        model.give_own_decoders(new_tasks)
        # a new task's decoders start far from what it needs: the new-task recipe's steps and lr
        new_task = RECIPES["new-task"]
        steps = config.steps or (new_task.steps if new_tasks else RETRAIN_STEPS)
        lr = config.lr or RETRAIN_LR
        new_task_lr = config.lr or new_task.lr
        feature_views = config.feature_views or (
            new_task.feature_views if new_tasks else TrainConfig.feature_views
        )
        # ... and its options (the weak view, which trains on cached features), unless changed
        options = (
            new_task.options if new_tasks and config.options == LOOP_OPTIONS else config.options
        )
        size = int(model.config.input_size)
        data = collect(project, tasks, model.config.tasks, size, config)
        root = project.root
    method = config.method
    if method != "supervised" and len(data.unlabelled) == 0:
        method = "supervised"  # every scan reviewed: nothing to pseudo-label
    yield TrainEvent(
        "prepare",
        0,
        steps,
        {
            "parent": parent_name,
            "baseline": baseline_name,
            "tasks": list(tasks),
            "labelled": len(data.trained_on),
            "held_back": len(data.held_back_pairs),
            "labelled_frames": len(data.labelled),
            "unlabelled_frames": len(data.unlabelled),
            "method": method,
            "damaged": data.damaged,
        },
    )
    trainer_config = TrainConfig(
        method=method,
        steps=steps,
        new_task_lr=new_task_lr if new_tasks else None,
        new_tasks=new_tasks,
        batch_size=config.batch_size,
        unlabelled_batch_size=config.batch_size,
        lr=lr,
        freeze_encoder=config.freeze_encoder,
        cache_features=config.freeze_encoder
        and config.cache_features
        and can_cache_features(method, options),
        feature_views=feature_views,
        view_photometric=new_task.view_photometric if new_tasks else 0.0,
        seed=config.seed,
        device=config.device,
        eval_every=config.eval_every,
        warmup=0.0,  # fine-tuning a trained model: no warm-up
        anchor=config.anchor,
        freeze_norm_stats=config.freeze_norm_stats,
        options=options,
    )
    trainer = Trainer(
        model,
        trainer_config,
        data.labelled,
        data.unlabelled,
        data.held_back,
        # the curve the widget draws is judged like the final verdict: at scan resolution
        validator=lambda m: without_scans(judge(m, data.held_back_frames, config.device)),
    )
    # What the annotator gets today, judged like the candidate will be (at scan resolution);
    # judge() works on a copy, so the model about to train can stand in for its own start.
    same = Path(baseline_path).resolve() == Path(parent_path).resolve()
    baseline = model if same else init_model(tasks, init=baseline_path)
    base = judge(baseline, data.held_back_frames, config.device, set(read_tasks(baseline_path)))
    del baseline
    yield TrainEvent("baseline", 0, steps, {"name": baseline_name, **without_scans(base)})
    record: dict[str, Any] = {
        "parent": parent_name,
        "parent_path": str(parent_path),
        "baseline": baseline_name,
        "tasks": list(tasks),
        "model_tasks": list(data.tasks),
        "trained_on": [list(p) for p in data.trained_on],
        "settings": config.to_dict() | {"method": method},
        # what the run used where the settings leave it open (None) or a new task changes it
        "resolved": {"steps": steps, "lr": lr, "new_tasks": list(new_tasks)}
        | {"feature_views": feature_views}
        | {"options": asdict(options)},
        "started": time.time(),
    }
    held: dict[str, Any] = {
        "scans": [list(p) for p in data.held_back_pairs],
        "frames": len(data.held_back_frames),
        "baseline_score": base["mdice"],
        "baseline_per_task": base["per_task"],
        "baseline_per_scan": base["per_scan"],
    }
    curve: list[dict[str, float]] = []
    staged = ver.new_staging(root)
    try:
        for event in trainer.run(should_stop):
            if event.kind == "stopped":
                shutil.rmtree(staged, ignore_errors=True)
                yield event
                return
            if event.kind == "step" and (event.step % 5 == 0 or event.step == 1):
                curve.append({"step": event.step, "loss": event.data["loss"]})
            yield event
        if not _finite(trainer.model):
            raise FloatingPointError("the trained weights are not finite")
        if trainer.model.has_refine and config.refine_steps > 0:
            yield TrainEvent("refine", trainer.step, steps, {"frames": len(data.labelled)})
        # the click head learns the corrections too (on the CPU: a light head, a short run)
        record["refine"] = tune_on_corrections(
            trainer.model.cpu(), data.labelled, data.held_back, config.refine_steps, config.seed
        )
    except FloatingPointError as exc:
        record |= {"outcome": "failed", "message": f"training diverged: {exc}"}
        record["held_back"] = held | {"score": None}
        name = ver.add_version(root, staged, record)
        yield TrainEvent("version", trainer.step, steps, _summary(name, record))
        return
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    save_checkpoint(
        trainer.model,
        staged,
        {"parent": parent_name, "tasks": list(tasks), "project": str(root)},
        dtype=torch.float16,
    )
    try:
        stored = load_checkpoint(staged).model  # judge the weights exactly as they will be used
    except CheckpointError as exc:  # e.g. weights beyond half precision: never to be used
        for leftover in staged.iterdir():
            leftover.unlink()
        record |= {"outcome": "failed", "message": f"the stored weights are unusable: {exc}"}
        record["held_back"] = held | {"score": None}
        name = ver.add_version(root, staged, record)
        yield TrainEvent("version", trainer.step, steps, _summary(name, record))
        return
    # the new encoder's features of this run's frames: the trained tasks' task-fit statistics
    refit_checkpoint(
        staged, [data.labelled, data.unlabelled], data.tasks, tasks, parent_path, config.device
    )
    # the shape floors: from the masks the annotator confirmed (once there are enough)
    refit_shapes(staged, [data.labelled, data.held_back], data.tasks, tasks, parent_path)
    score = judge(stored, data.held_back_frames, config.device)
    gain, bound = gain_bound(base["per_scan"], score["per_scan"], config.confidence)
    better = bound > config.min_gain
    record |= {
        "outcome": "better" if better else "worse",
        "message": ""
        if better
        else (
            f"not shown better than {baseline_name} on the {len(base['per_scan'])} held-back "
            f"scans: gain {gain:+.1f}, {config.confidence:.0%} lower bound {bound:+.1f} "
            f"(needs > {config.min_gain:+.1f}); review more scans for a surer verdict"
        ),
        "held_back": held
        | {
            "score": score["mdice"],
            "per_task": score["per_task"],
            "per_scan": score["per_scan"],
            "gain": gain,
            "gain_lower_bound": bound,
            "confidence": config.confidence,
        },
        "curve": curve,
        "finished": time.time(),
    }
    name = ver.add_version(root, staged, record)
    yield TrainEvent("version", trainer.step, steps, _summary(name, record))


def _summary(name: str, record: dict[str, Any]) -> dict[str, Any]:
    held = record.get("held_back", {})
    return {
        "version": name,
        "outcome": record["outcome"],
        "score": held.get("score"),
        "parent": record["parent"],
        "baseline": record["baseline"],
        "baseline_score": held.get("baseline_score"),
        "gain_lower_bound": held.get("gain_lower_bound"),
        "message": record.get("message", ""),
        "refine": record.get("refine"),
    }


__all__ = [
    "ProjectData",
    "RetrainConfig",
    "RetrainError",
    "StoreError",
    "collect",
    "promote_if_better",
    "retrain",
]
