"""From a benchmark folder to a trained model: the path shared by ``propl train`` and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_checkpoint
from ..data.benchmark import (
    ArraySet,
    BenchmarkFolder,
    carve_validation,
    load_arrays,
    split_labelled,
)
from ..models import ProPLNet, build_model
from .methods import LOOP_OPTIONS, MethodOptions
from .trainer import TrainConfig


@dataclass
class DataSplits:
    """Preloaded arrays for one training run; task indices follow ``tasks``."""

    tasks: tuple[str, ...]
    labelled: ArraySet
    unlabelled: ArraySet
    val: ArraySet


def prepare_data(
    folder: BenchmarkFolder,
    tasks: Sequence[str],
    labelled: Fraction | int,
    seed: int,
    size: int,
    val_fraction: float = 0.1,
    cache_dir: Path | None = None,
    progress: bool = True,
    task_order: Sequence[str] | None = None,
) -> DataSplits:
    """Per task: carve a validation part from the train split, then draw the labelled subset.

    ``task_order`` is the model's task list (task indices refer to it); default ``tasks``.
    The test split is never touched here. With ``labelled`` = 1 (Fraction) every remaining train
    scan is labelled (the fully supervised upper bound) and the unlabelled pool is empty.
    """
    lab, unlab, val = [], [], []
    for task in tasks:
        train = folder.samples(task, "train")
        rest, val_part = carve_validation(train, fraction=val_fraction, seed=seed)
        if labelled == Fraction(1):
            lab_part, unlab_part = list(rest), list[Any]()
        else:
            lab_part, unlab_part = split_labelled(rest, labelled, seed)
        lab += lab_part
        unlab += unlab_part
        val += val_part
    order = list(task_order or tasks)
    load: dict[str, Any] = dict(size=size, task_order=order, cache_dir=cache_dir, progress=progress)
    return DataSplits(
        tasks=tuple(order),
        labelled=load_arrays(lab, **load),
        unlabelled=load_arrays(unlab, with_masks=False, **load) if unlab else _empty(size),
        val=load_arrays(val, **load),
    )


def _empty(size: int) -> ArraySet:
    return ArraySet(
        images=np.zeros((0, size, size), np.uint8),
        masks=np.zeros((0, size, size), np.uint8),
        task_index=np.zeros(0, np.int64),
        ids=[],
        orig_shapes=[],
    )


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draw from torch's CPU random stream seeded with ``seed``, then put the stream back."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def init_model(
    tasks: Sequence[str],
    model_name: str = "propl",
    init: str | Path | None = None,
    seed: int = 0,
    **model_kw: Any,
) -> ProPLNet:
    """A fresh model (ImageNet encoder, new decoders initialised from ``seed``), or one started
    from a checkpoint.

    Starting from a checkpoint keeps its weights; tasks it does not know get new prompt tokens
    (the incremental path: learn a new task without rebuilding the network).
    """
    if init is None:
        with seeded(seed):
            return build_model(model_name, tasks=tuple(tasks), **model_kw)
    model = load_checkpoint(init).model
    model.add_tasks(tuple(tasks))
    return model


@dataclass(frozen=True)
class Recipe:
    """Training settings ``propl train --data`` uses where the user gave none.

    Attributes:
        name: shown to the user (``propl train: recipe 'new-task' ...``).
        why: one line saying when it applies.
        steps: optimiser steps.
        lr: learning rate of the decoders and prompts.
        freeze_encoder: train decoders and prompt tokens only.
        cache_features: with a frozen encoder, encode each scan once per weak view.
        anchor: L2-SP strength toward the starting model.
        eval_every: validation interval in steps.
        options: ProPL's options where the user gives none (``--view``, ``--unsup-weight``).
        feature_views: with cached features, the views encoded per scan (the first unaugmented).
        view_photometric: strength of the colour changes of the cached views after the first.
        own_decoders: tasks the starting model does not know get decoders of their own
            (:meth:`~propl.models.propl.ProPLNet.give_own_decoders`), so learning them leaves
            the known tasks exactly as they were.
    """

    name: str
    why: str
    steps: int
    lr: float
    freeze_encoder: bool
    cache_features: bool
    anchor: float
    eval_every: int
    options: MethodOptions = LOOP_OPTIONS
    own_decoders: bool = False
    feature_views: int = TrainConfig.feature_views
    view_photometric: float = 0.0


RECIPES: dict[str, Recipe] = {
    "default": Recipe(
        name="default",
        why="training from ImageNet, or tasks the --init model already knows",
        steps=2000,
        lr=1e-3,
        freeze_encoder=False,
        cache_features=False,
        anchor=0.0,
        eval_every=200,
    ),
    # a task the --init model has never seen: the feature cache makes the frozen encoder cost
    # one pass per scan and view; the new task gets decoders of its own, free to move as far
    # as it needs (a shared decoder moved that far cost the shipped tasks up to 47 Dice points,
    # benchmarks/results/new-task-brachial_plexus-tried.md) while the known tasks stay exact;
    # the anchor only holds the shared decoders when known tasks train in the same run
    "new-task": Recipe(
        name="new-task",
        why="--init meets task(s) it does not know",
        steps=300,
        lr=3e-3,
        freeze_encoder=True,
        cache_features=True,
        anchor=1.0,
        eval_every=100,
        options=MethodOptions(),  # the weak view: the only one that trains on cached features
        own_decoders=True,
        # more cached views, with the strong view's colour changes (gain, contrast, gamma,
        # blur, speckle): the development nerve from 10 scans (seed 0), test Dice of the final
        # weights 51.8 with 4 plain views, 52.1 with 8, 55.4 with 8 at strength 0.5, 58.7 at 1;
        # 12 views: from 30 scans 65.66 +- 0.46 (3 seeds; 64.65 with 8), from 10 57.16 +- 2.99
        # (58.61 with 8): benchmarks/results/new-task-brachial_plexus-tried.md, row o
        feature_views=12,
        view_photometric=1.0,
    ),
}


def unknown_tasks(init: str | Path | None, tasks: Sequence[str]) -> tuple[str, ...]:
    """The tasks of ``tasks`` that checkpoint ``init`` has no prompt for (none without one)."""
    if init is None:
        return ()
    from ..checkpoint import read_tasks

    known = set(read_tasks(init))
    return tuple(t for t in tasks if t not in known)


def choose_recipe(init: str | Path | None, tasks: Sequence[str]) -> Recipe:
    """``new-task`` when starting from a checkpoint that does not know some of ``tasks``,
    else ``default``."""
    return RECIPES["new-task" if unknown_tasks(init, tasks) else "default"]


def recipe_settings(recipe: Recipe, **given: Any) -> dict[str, Any]:
    """The recipe's settings with the explicitly given ones (not None) put over them.

    Args:
        recipe: the defaults.
        given: settings the user chose, by :class:`Recipe` field name; None means not given.

    Raises:
        KeyError: a name that is no recipe setting.
    """
    settings = {
        k: v for k, v in vars(recipe).items() if k not in ("name", "why", "own_decoders", "options")
    }
    for key, value in given.items():
        if key not in settings:
            raise KeyError(f"{key!r} is no recipe setting; choose from {', '.join(settings)}")
        if value is not None:
            settings[key] = value
    return settings
