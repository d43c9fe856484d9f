"""Small seeded synthetic ultrasound-like data for tests and examples.

Each image holds a bright and a dark ellipse on speckled background. Task 0 ("bright_blob")
segments the bright one, task 1 ("dark_blob") the dark one, so the prompt decides the answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .benchmark import ArraySet

SYNTHETIC_TASKS = ("bright_blob", "dark_blob")


def _ellipse(size: int, rng: np.random.Generator, avoid: np.ndarray | None) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    for _ in range(50):
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        ry, rx = rng.uniform(0.1, 0.2, 2) * size
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if avoid is None or not (m & avoid).any():
            return m
    return m


def make_scan(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One ``(size, size)`` uint8 scan and its two masks (bright, dark) in {0, 1}."""
    bright = _ellipse(size, rng, None)
    dark = _ellipse(size, rng, bright)
    img = np.full((size, size), 0.45) + rng.normal(0, 0.03, (size, size)).cumsum(0) * 0.02
    img[bright] = 0.8
    img[dark] = 0.12
    img = img * rng.gamma(4.0, 0.25, (size, size))  # multiplicative speckle
    return (
        (np.clip(img, 0, 1) * 255).astype(np.uint8),
        bright.astype(np.uint8),
        dark.astype(np.uint8),
    )


def make_dataset(
    n: int, size: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` scans alternating between the two tasks.

    Returns:
        images ``(n, size, size)`` uint8, masks ``(n, size, size)`` uint8 {0, 1},
        task indices ``(n,)``.
    """
    rng = np.random.default_rng(seed)
    images, masks, tasks = [], [], []
    for i in range(n):
        img, bright, dark = make_scan(size, rng)
        images.append(img)
        masks.append(bright if i % 2 == 0 else dark)
        tasks.append(i % 2)
    return np.stack(images), np.stack(masks), np.array(tasks, np.int64)


def make_arrays(n: int, size: int = 64, seed: int = 0) -> ArraySet:
    """:func:`make_dataset` as the trainer's :class:`ArraySet` (ids ``s<seed>_<i>``)."""
    images, masks, tasks = make_dataset(n, size, seed)
    ids = [f"s{seed}_{i}" for i in range(n)]
    return ArraySet(images, masks, tasks, ids, [(size, size)] * n)


def write_benchmark_folder(
    root: str | Path, n_train: int = 16, n_test: int = 4, size: int = 64, seed: int = 0
) -> Path:
    """Write a tiny us-universal-style folder (tasks.json, splits.json, images, masks)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    tasks, splits = {}, {}
    for t_idx, task in enumerate(SYNTHETIC_TASKS):
        (root / task / "images").mkdir(parents=True, exist_ok=True)
        (root / task / "masks").mkdir(parents=True, exist_ok=True)
        ids = [f"syn_{task}_{i}" for i in range(n_train + n_test)]
        for sid in ids:
            img, bright, dark = make_scan(size, rng)
            Image.fromarray(img).save(root / task / "images" / f"{sid}.png")
            Image.fromarray(bright if t_idx == 0 else dark).save(
                root / task / "masks" / f"{sid}.png"
            )
        tasks[task] = {
            "organ": "phantom",
            "target": task.replace("_", " "),
            "prompt": task.replace("_", " "),
            "labels": {"0": "background", "1": task},
            "count": len(ids),
        }
        splits[task] = {"train": ids[:n_train], "test": ids[n_train:]}
    (root / "tasks.json").write_text(json.dumps(tasks, indent=1))
    (root / "splits.json").write_text(json.dumps(splits, indent=1))
    return root
