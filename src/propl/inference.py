"""Inference: frames of any size in, mask + uncertainty + confidence per frame out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .checkpoint import load_checkpoint
from .device import place_model, select_device
from .errors import CheckpointError
from .models import ProPLNet
from .models.fuse import fuse_batchnorm
from .region import Region, crop_window, paste
from .task_fit import TaskFit, load_task_fit, pool_features
from .task_shape import TaskShapes, load_task_shapes
from .uncertainty import (
    confidence_score,
    expected_error_fraction,
    mc_statistics,
    mc_uncertainty,
    uncertainty_map,
)

UNCERTAINTY_MODES = ("mc", "disagreement", "none")
SHIPPED_MODEL = Path(__file__).parent / "weights" / "universal"


def default_model_path() -> Path | None:
    """The model shipped inside the package, or None when this build has none."""
    return SHIPPED_MODEL if (SHIPPED_MODEL / "model.safetensors").is_file() else None


def resolve_model(path: str | Path | None) -> Path:
    """A checkpoint folder from the user's choice: a path, or None / "shipped" for the
    universal model inside the package.

    Raises:
        CheckpointError: the shipped model was asked for and this build has none.
    """
    if path is not None and str(path) != "shipped":
        return Path(path)
    shipped = default_model_path()
    if shipped is None:
        raise CheckpointError(
            f"this build has no shipped model ({SHIPPED_MODEL}): pass a checkpoint folder"
        )
    return shipped


@dataclass
class Prediction:
    """Results for ``F`` frames of one scan, at the scan's own resolution.

    Attributes:
        mask: ``(F, H, W)`` uint8 in {0, 1}.
        probability: ``(F, H, W)`` float32 foreground probability of decoder 2.
        uncertainty: ``(F, H, W)`` float32 in [0, 1] (zeros when uncertainty is off).
        confidence: ``(F,)`` float32 per-frame confidence in [0, 1], read like a Dice: the
            overlap the mask is expected to score (:func:`~propl.uncertainty.confidence_score`),
            times ``shape_fit`` when there is one.
        expected_error: ``(F,)`` float32, the fraction of the frame's pixels the mask is
            expected to get wrong (:func:`~propl.uncertainty.expected_error_fraction`); 0
            without uncertainty. With a region, its pixels' expected errors over the whole
            frame's pixels (none are expected outside it).
        task_fit: ``(F,)`` float32 in [0, 1], how much each frame looks like the task's
            training scans (:mod:`propl.task_fit`); None when the model has no statistics for
            the task (old checkpoints). :func:`~propl.task_fit.fit_warning` words it.
        agreement: ``(F,)`` float32, the network's self-agreement (the confidence before
            ``shape_fit``); None when there is neither a task fit nor a shape fit.
        shape_fit: ``(F,)`` float32 in (0, 1], 1 unless a mask is less elliptic than the
            task's expert masks (:mod:`propl.task_shape`); None when the model has no floor for
            the task or the confidence is not computed (``uncertainty="none"``).
    """

    mask: np.ndarray
    probability: np.ndarray
    uncertainty: np.ndarray
    confidence: np.ndarray
    expected_error: np.ndarray
    task_fit: np.ndarray | None = None
    agreement: np.ndarray | None = None
    shape_fit: np.ndarray | None = None


def frames_to_float(frames: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(F, H, W)`` or ``(F, H, W, 3)`` of any dtype → ``(F, H, W)`` float32 [0, 1]."""
    a = np.asarray(frames)
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 4 and a.shape[-1] in (3, 4):
        a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        if np.asarray(frames).dtype == np.uint8:
            a = a / 255.0
    if a.ndim != 3 or 0 in a.shape:
        raise ValueError(f"expected frames (H, W), (F, H, W) or (F, H, W, 3), got {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if np.issubdtype(a.dtype, np.integer):
        top = float(a.max()) or 1.0
        return a.astype(np.float32) / top
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:  # floats outside [0, 1]: stretch, as a viewer would
        a = (a - lo) / ((hi - lo) or 1.0)
    return a


#: Seed of the MC-dropout masks at prediction: a scan gets the same uncertainty map and
#: confidence every time it is predicted, alone or batched with others.
MC_DROPOUT_SEED = 0


class Predictor:
    """Run a ProPL network on scans.

    Args:
        model: a ProPL network (or use :meth:`from_checkpoint`).
        device: ``"auto"`` (cuda > mps > cpu), ``"cuda"``, ``"cpu"`` ...
        batch_size: frames per forward pass.
        uncertainty: ``"mc"`` (MC dropout of decoder 1, T passes batched: its standard
            deviation, :func:`~propl.uncertainty.mc_uncertainty`), ``"disagreement"`` (one pass
            of each decoder: entropy of decoder 2 and the decoders' disagreement), or ``"none"``.
        mc_samples: T for ``"mc"``; the T dropout masks are drawn from ``MC_DROPOUT_SEED``
            and shared by every frame, so a frame's result never varies between runs.
        task_fit: per-task feature statistics (:class:`~propl.task_fit.TaskFit`; read from the
            checkpoint folder by :meth:`from_checkpoint`); None: no task fit.
        task_shape: per-task shape floors (:class:`~propl.task_shape.TaskShapes`; read from
            the checkpoint folder by :meth:`from_checkpoint`); None: confidence unscaled.
    """

    def __init__(
        self,
        model: ProPLNet,
        device: str = "auto",
        batch_size: int = 8,
        uncertainty: str = "mc",
        mc_samples: int = 4,
        task_fit: TaskFit | None = None,
        task_shape: TaskShapes | None = None,
    ) -> None:
        if uncertainty not in UNCERTAINTY_MODES:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY_MODES}, got {uncertainty!r}")
        self.device = select_device(device)
        self.model = place_model(fuse_batchnorm(model), self.device)
        self.batch_size, self.uncertainty, self.mc_samples = batch_size, uncertainty, mc_samples
        self.input_size = int(model.config.input_size)
        self.version: str | None = None
        self.task_fit = task_fit
        self.task_shape = task_shape

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kw: object) -> Predictor:
        ckpt = load_checkpoint(path)
        if "task_fit" not in kw:  # the statistics beside the weights, when there are any
            kw["task_fit"] = load_task_fit(path)
        if "task_shape" not in kw:
            kw["task_shape"] = load_task_shapes(path)
        predictor = cls(ckpt.model, **kw)  # type: ignore[arg-type]
        predictor.version = str(ckpt.metadata.get("version", Path(path).name))
        return predictor

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.model.config.tasks)

    def predict(
        self, frames: np.ndarray, task: str, threshold: float = 0.5, region: Region | None = None
    ) -> Prediction:
        """Segment every frame of one scan (see :class:`Prediction`).

        Args:
            frames: ``(H, W)``, ``(F, H, W)`` or ``(F, H, W, 3)``, any dtype
                (:func:`frames_to_float`).
            task: one of :attr:`tasks`.
            threshold: probability above which a pixel is foreground.
            region: the imaging region (``meta.region`` of :func:`~propl.data.read_scan`,
                ``Scan.region`` of a project): the network sees only this crop of each frame,
                its confidence and task fit are the crop's, and the mask, probability and
                uncertainty are zero outside it. None: the whole frame.

        Raises:
            KeyError: an unknown task.
            ValueError: frames not shaped as above, or a region that does not fit them.
        """
        parts = list(self.iter_predict(frames, task, threshold, region))

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return Prediction(
            mask=cat("mask"),
            probability=cat("probability"),
            uncertainty=cat("uncertainty"),
            confidence=cat("confidence"),
            expected_error=cat("expected_error"),
            task_fit=None if parts[0].task_fit is None else cat("task_fit"),
            agreement=None if parts[0].agreement is None else cat("agreement"),
            shape_fit=None if parts[0].shape_fit is None else cat("shape_fit"),
        )

    def iter_predict(
        self, frames: np.ndarray, task: str, threshold: float = 0.5, region: Region | None = None
    ) -> Iterator[Prediction]:
        """Like :meth:`predict`, one batch at a time (for progress bars and cancel)."""
        task_id = self.model.task_index(task)
        x_all = frames_to_float(frames)  # scaled over whole frames, as without a region
        shape = (x_all.shape[1], x_all.shape[2])
        window = crop_window(region, shape)
        crop = x_all if window is None else x_all[(slice(None), *window.slices)]
        for start in range(0, len(x_all), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(crop[start : start + self.batch_size]))
            yield _pasted(self._predict_batch(chunk, task_id, threshold), window, shape)

    @torch.inference_mode()
    def _predict_batch(self, x: Tensor, task_id: int, threshold: float) -> Prediction:
        features, t = self.encode(x, task_id)
        return self.predict_encoded(features, t, (x.shape[1], x.shape[2]), threshold)

    @torch.inference_mode()
    def predict_encoded(
        self, features: list[Tensor], t: Tensor, size: tuple[int, int], threshold: float = 0.5
    ) -> Prediction:
        """The :class:`Prediction` of frames already encoded (:meth:`encode`) for one task,
        ``t`` holding its id once per frame, at the frames' ``size`` ``(H, W)``: what
        :meth:`predict` shows, without encoding again (one encoding can serve several tasks)."""
        if t.numel() == 0 or bool((t != t[0]).any()):
            raise ValueError(f"t must hold one task's id for every frame, got {t.tolist()}")
        h, w = size
        b = t.shape[0]
        prob, unc, belief = self._forward(features, t)
        # confidence on the decoder's native 1/4-scale maps (cheap); maps resized once to the scan
        if belief is None:
            conf, error = torch.ones(b), torch.zeros(b)
        else:
            # the expected Dice against the probabilities the mask was cut from (a better
            # queue order than against decoder 1's MC mean: see confidence_score)
            conf = confidence_score(prob, prob, threshold)
            error = expected_error_fraction(prob, belief, threshold)
        prob = F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)
        unc = F.interpolate(unc, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
        agreement = conf.float().cpu().numpy()
        mask = (prob > threshold).to(torch.uint8).cpu().numpy()[:, 0]
        task = self.tasks[int(t[0])]
        fit = self.score_fit(features, task)
        shape = None
        if belief is not None and self.task_shape is not None:
            shape = self.task_shape.factor(mask, task)
        return Prediction(
            mask=mask,
            probability=prob.float().cpu().numpy()[:, 0],
            uncertainty=unc.float().cpu().numpy()[:, 0],
            # the fit is shown beside the confidence, not folded into it: it also flags scans
            # of the task's own anatomy from other scanners and sites (see propl.task_fit);
            # the shape is folded in: an outline unlike the task's expert masks is likely wrong
            confidence=agreement if shape is None else agreement * shape,
            expected_error=error.float().cpu().numpy(),
            task_fit=fit,
            agreement=None if fit is None and shape is None else agreement,
            shape_fit=shape,
        )

    def score_fit(self, features: list[Tensor], task: str) -> np.ndarray | None:
        """``(B,)`` float32 task fit of encoded frames (:meth:`encode`), or None when this
        model has no statistics for ``task``."""
        if self.task_fit is None or task not in self.task_fit.tasks:
            return None
        fit = self.task_fit.score(pool_features(features, self.task_fit.levels), task)
        return None if fit is None else fit.astype(np.float32)

    def encode(self, x: Tensor, task_id: int) -> tuple[list[Tensor], Tensor]:
        """Float frames ``(B, H, W)`` (:func:`frames_to_float`) resized to the network's input
        and encoded once: the encoder's features and the batch's task ids, on the device. The
        decoders' native maps are ``features[0]``'s size, 1/4 of the input."""
        s = self.input_size
        x_in = F.interpolate(
            x[:, None].to(self.device),
            size=(s, s),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        t = torch.full((x.shape[0],), task_id, dtype=torch.long, device=self.device)
        return self.model.encode(x_in), t

    def _forward(self, features: list[Tensor], t: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Probabilities, uncertainty and the second opinion the expected error is scored against
        (decoder 1: its MC mean, or its single pass; None without uncertainty), all at the
        decoder's native 1/4 scale, ``(B, 1, S/4, S/4)``.

        Uncertainty statistics are computed before upsampling: T maps at 1/4 scale instead of T
        full-size maps.
        """
        model = self.model
        size = (features[0].shape[-2], features[0].shape[-1])
        p2 = torch.sigmoid(model.decode(features, t, 2, size=size))
        if self.uncertainty == "none":
            return p2, torch.zeros_like(p2), None
        if self.uncertainty == "disagreement":
            p1 = torch.sigmoid(model.decode(features, t, 1, size=size))
            return p2, uncertainty_map(p2, None, p1), p1
        draws = torch.Generator().manual_seed(MC_DROPOUT_SEED)  # same scan, same result
        samples = model.mc_decoder1(features, t, self.mc_samples, size=size, generator=draws)
        mean, var = mc_statistics(samples)
        return p2, mc_uncertainty(var), mean


def _pasted(pred: Prediction, region: Region | None, shape: tuple[int, int]) -> Prediction:
    """A prediction of a region's crop as one of the whole frame (zeros outside)."""
    if region is None:
        return pred
    inside = region.shape[0] * region.shape[1] / (shape[0] * shape[1])
    return Prediction(
        mask=paste(pred.mask, region, shape),
        probability=paste(pred.probability, region, shape),
        uncertainty=paste(pred.uncertainty, region, shape),
        confidence=pred.confidence,
        expected_error=(pred.expected_error * inside).astype(np.float32),
        task_fit=pred.task_fit,
        agreement=pred.agreement,
        shape_fit=pred.shape_fit,
    )
