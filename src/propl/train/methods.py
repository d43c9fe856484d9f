"""One training step per method, written to be read next to the papers.

Every method trains the same ProPL network (shared encoder, prompt tokens, two decoders), so the
benchmark compares training signals, not architectures. Names follow the papers: ``x_l``/``y_l``
labelled images and masks, ``x_u_w``/``x_u_s`` weak and strong views of unlabelled images,
``conf_u``/``mask_u`` confidence and pseudo-label.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.augment import cutmix_boxes, photometric, random_affine
from ..models import ProPLNet
from ..uncertainty import hermes_mask, make_pseudo_label, mc_statistics
from .losses import bce_dice, sigmoid_mse


@dataclass
class Batch:
    """One step's data on the training device."""

    x_l: Tensor  # (B, 1, H, W) labelled images in [0, 1]
    y_l: Tensor  # (B, 1, H, W) masks in {0, 1}
    t_l: Tensor  # (B,) task indices
    x_u: Tensor | None = None  # (B', 1, H, W) unlabelled images
    t_u: Tensor | None = None  # (B',)
    f_l: list[Tensor] | None = None  # cached frozen-encoder features of a weak view of x_l
    f_u: list[Tensor] | None = None  # ... of x_u


@dataclass(frozen=True)
class MethodOptions:
    """Hyper-parameters of the semi-supervised methods (defaults follow the papers)."""

    unsup_weight: float = 6.0  # ProPL's λ for decoder 2 on pseudo-labels
    mc_samples: int = 3  # ProPL's T dropout passes of decoder 1
    pseudo_label: str = "uplc"  # uplc | weighted | agreement | hermes
    gamma: float = 2.0  # UPLC exponent
    rampup: float = 0.1  # fraction of training over which unsupervised weights ramp up
    view: str = "weak"  # ProPL: decoder 2 learns pseudo-labels on the weak or a strong view
    teacher: str = "self"  # ProPL: pseudo-labels from the model's own decoder 1, or an EMA copy's
    ema_decay: float = 0.99  # Mean Teacher
    mt_weight: float = 1.0  # Mean Teacher consistency weight
    conf_threshold: float = 0.95  # UniMatch
    fp_dropout: float = 0.5  # UniMatch feature perturbation


LOOP_OPTIONS = MethodOptions(view="strong", unsup_weight=1.0)
"""ProPL's options where the user gives none: ``propl train --data`` from ImageNet, project
retraining and ``propl simulate``. The strong view at λ = 1 was ahead of the paper's weak view
at λ = 6 in every seed: +2.0 (quick) and +2.5 (long) mDice at 1/16 labels, +1.3 and +1.8 over
supervised training (``benchmarks/results/ssl-*.md``), and +1.5 test Dice after three rounds of
the annotation loop (``benchmarks/results/unsup-weight-thyroid_nodule.md``). The new-task recipe
keeps the weak view: it trains on cached features (:data:`propl.train.recipe.RECIPES`)."""


def method_options(args: Any, defaults: MethodOptions | None = None) -> MethodOptions:
    """The ProPL options of parsed command-line arguments (``--pseudo-label``, ``--view``,
    ``--teacher``, ``--unsup-weight``); ``--view`` and ``--unsup-weight`` not given (None) come
    from ``defaults`` (default: the paper's, :class:`MethodOptions`)."""
    defaults = defaults or MethodOptions()
    view = getattr(args, "view", None)
    weight = getattr(args, "unsup_weight", None)
    return MethodOptions(
        pseudo_label=args.pseudo_label,
        view=defaults.view if view is None else view,
        teacher=args.teacher,
        unsup_weight=defaults.unsup_weight if weight is None else weight,
    )


def option_flags(opts: MethodOptions, defaults: MethodOptions | None = None) -> list[str]:
    """The command-line flags that give ``opts`` (only the options that differ from
    ``defaults``, the command's; default: the paper's), the inverse of :func:`method_options`."""
    defaults = defaults or MethodOptions()
    flags = []
    for name in ("pseudo_label", "view", "teacher", "unsup_weight"):
        value = getattr(opts, name)
        if value != getattr(defaults, name):
            text = f"{value:g}" if isinstance(value, float) else str(value)
            flags += ["--" + name.replace("_", "-"), text]
    return flags


def ramp(progress: float, length: float) -> float:
    """Sigmoid-shaped ramp-up exp(-5 (1 - t)^2) over the first ``length`` of training."""
    if length <= 0:
        return 1.0
    t = min(max(progress / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def supervised_loss(model: ProPLNet, x_l: Tensor, y_l: Tensor, t_l: Tensor) -> Tensor:
    """Both decoders on ground truth (decoder 1 through its dropout)."""
    out = model(x_l, t_l)
    return bce_dice(out["d1"], y_l) + bce_dice(out["d2"], y_l)


def frozen_copy(model: ProPLNet) -> ProPLNet:
    """A copy of ``model`` in eval mode that no optimiser moves (an EMA teacher)."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: ProPLNet, student: ProPLNet, decay: float) -> None:
    """teacher ← decay·teacher + (1 − decay)·student; buffers (BatchNorm statistics) copied."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(decay).add_(s.detach(), alpha=1 - decay)
    for t_buf, s_buf in zip(teacher.buffers(), student.buffers(), strict=True):
        t_buf.copy_(s_buf)


def paste(a: Tensor, box: Tensor, perm: Tensor) -> Tensor:
    """CutMix: inside ``box`` take ``a[perm]`` (another image of the batch), outside keep ``a``."""
    return a * (1 - box) + a[perm] * box


class Method:
    """Base class: ``loss(batch, progress)`` → (scalar loss, logged parts)."""

    name = "base"
    needs_unlabelled = False

    def __init__(self, model: ProPLNet, options: MethodOptions, gen: torch.Generator) -> None:
        self.model, self.opt, self.gen = model, options, gen
        # back to training mode after an eval-mode pass; the trainer replaces it with its own
        # (a frozen encoder and frozen normalisation statistics stay in eval mode)
        self.train_mode: Callable[[], Any] = model.train

    def weak(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Weak view of labelled images and their masks (same geometry)."""
        x_w, y_w = random_affine(x, y, self.gen)
        assert y_w is not None
        return x_w, y_w

    def weak_u(self, x: Tensor) -> Tensor:
        """Weak view of unlabelled images."""
        return random_affine(x, None, self.gen)[0]

    def loss(self, batch: Batch, progress: float) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after each optimiser step (EMA updates)."""


class Supervised(Method):
    """Labelled scans only (``full`` is the same step on every train label: the upper bound)."""

    name = "supervised"

    def loss(self, batch: Batch, progress: float) -> tuple[Tensor, dict[str, float]]:
        if batch.f_l is not None:  # cached features of weak views; y_l is warped alike
            feats, y = batch.f_l, batch.y_l
            size = (y.shape[-2], y.shape[-1])
            loss = bce_dice(self.model.decode(feats, batch.t_l, 1, size=size), y)
            loss = loss + bce_dice(self.model.decode(feats, batch.t_l, 2, size=size), y)
            return loss, {"sup": float(loss.detach())}
        x_l, y_l = self.weak(batch.x_l, batch.y_l)
        loss = supervised_loss(self.model, x_l, y_l, batch.t_l)
        return loss, {"sup": float(loss.detach())}


class ProPL(Method):
    """ProPL: decoder 1 learns from labels, decoder 2 from decoder 1's calibrated pseudo-labels.

    L = BCE+Dice(d1, y_l) + BCE+Dice(d2, y_l) + λ·ramp·BCE+Dice(d2(x_u), pseudo-label(d1 MC)).
    Decoder 2 also sees the labels of labelled scans (our reading; it only adds clean signal).

    With ``teacher="ema"`` (our option, after the EMA teachers of BUS, arXiv 2603.06167) the MC
    passes run through decoder 1 of an exponential moving average of the model: a temporal
    ensemble whose pseudo-labels drift less from step to step than the student's own.
    """

    name = "propl"
    needs_unlabelled = True

    def __init__(self, model: ProPLNet, options: MethodOptions, gen: torch.Generator) -> None:
        super().__init__(model, options, gen)
        self.teacher = frozen_copy(model) if options.teacher == "ema" else None

    def loss(self, batch: Batch, progress: float) -> tuple[Tensor, dict[str, float]]:
        assert batch.x_u is not None and batch.t_u is not None
        model, opt = self.model, self.opt
        if batch.f_l is not None and batch.f_u is not None:  # cached features of weak views
            feats_l, feats_u, y_l = batch.f_l, batch.f_u, batch.y_l
            x_u_w = batch.x_u  # unused: the strong view cannot train on cached features
        else:
            x_l, y_l = self.weak(batch.x_l, batch.y_l)
            x_u_w = self.weak_u(batch.x_u)
            n_l = x_l.shape[0]
            feats = model.encode(torch.cat([x_l, x_u_w]))
            feats_l = [f[:n_l] for f in feats]
            feats_u = [f[n_l:] for f in feats]
        size = (y_l.shape[-2], y_l.shape[-1])
        loss_sup = bce_dice(model.decode(feats_l, batch.t_l, 1, size=size), y_l)
        loss_sup = loss_sup + bce_dice(model.decode(feats_l, batch.t_l, 2, size=size), y_l)

        with torch.no_grad():
            source = model if self.teacher is None else self.teacher
            # the teacher encodes the view itself, unless the encoder is frozen and cached
            # (then the student's features are the teacher's too)
            own = self.teacher is not None and batch.f_u is None
            feats_t = source.encode(x_u_w) if own else [f.detach() for f in feats_u]
            mean_u, var_u = mc_statistics(source.mc_decoder1(feats_t, batch.t_u, opt.mc_samples))
        if opt.view == "strong":
            pred_u_2, pseudo = self.strong_view(x_u_w, batch.t_u, mean_u, var_u, progress)
        else:
            pred_u_2 = model.decode(feats_u, batch.t_u, 2, size=size)
            pseudo = self.pseudo_label(mean_u, var_u, torch.sigmoid(pred_u_2.detach()), progress)
        loss_u = bce_dice(pred_u_2, pseudo[0], pseudo[1])
        weight = opt.unsup_weight * ramp(progress, opt.rampup)
        loss = loss_sup + weight * loss_u
        kept = float(pseudo[1].mean())
        return loss, {
            "sup": float(loss_sup.detach()),
            "unsup": float(loss_u.detach()),
            "kept": kept,
        }

    def strong_view(
        self, x_u_w: Tensor, t_u: Tensor, mean_u: Tensor, var_u: Tensor, progress: float
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Decoder 2 on a photometric + CutMix view; the weak view's pseudo-label is pasted the
        same way (our option, borrowing UniMatch's perturbation; not in the ProPL paper)."""
        b, _, h, w = x_u_w.shape
        perm = torch.roll(torch.arange(b), 1)
        box = cutmix_boxes(b, h, w, self.gen).to(x_u_w.device)
        x_u_s = paste(photometric(x_u_w, self.gen), box, perm)
        pred_u_s = self.model(x_u_s, t_u)["d2"]
        with torch.no_grad():
            target, weight = self.pseudo_label(
                mean_u, var_u, torch.sigmoid(pred_u_s.detach()), progress
            )
            same = (t_u == t_u[perm]).float().view(b, 1, 1, 1)
            target = paste(target, box, perm)
            weight = paste(weight, box, perm) * (1 - box * (1 - same))
        return pred_u_s, (target, weight)

    def pseudo_label(
        self, mean_u: Tensor, var_u: Tensor, p2: Tensor, progress: float
    ) -> tuple[Tensor, Tensor]:
        mode = self.opt.pseudo_label
        if mode == "hermes":
            return (mean_u > 0.5).float(), hermes_mask(mean_u, progress)
        pl = make_pseudo_label(mean_u, var_u, mode=mode, gamma=self.opt.gamma, p2=p2)
        return pl.target, pl.weight

    def after_step(self) -> None:
        if self.teacher is not None:
            ema_update(self.teacher, self.model, self.opt.ema_decay)


class MeanTeacher(Method):
    """Mean Teacher: an EMA copy's predictions on noisy views supervise the student (MSE)."""

    name = "mean-teacher"
    needs_unlabelled = True

    def __init__(self, model: ProPLNet, options: MethodOptions, gen: torch.Generator) -> None:
        super().__init__(model, options, gen)
        self.teacher = frozen_copy(model)

    def loss(self, batch: Batch, progress: float) -> tuple[Tensor, dict[str, float]]:
        assert batch.x_u is not None and batch.t_u is not None
        x_l, y_l = self.weak(batch.x_l, batch.y_l)
        loss_sup = supervised_loss(self.model, x_l, y_l, batch.t_l)
        x_u_w = self.weak_u(batch.x_u)
        with torch.no_grad():
            x_u_t = photometric(x_u_w, self.gen, strength=0.3)
            p_teacher = torch.sigmoid(self.teacher(x_u_t, batch.t_u)["d2"])
        x_u_s = photometric(x_u_w, self.gen, strength=0.3)
        loss_u = sigmoid_mse(self.model(x_u_s, batch.t_u)["d2"], p_teacher)
        loss = loss_sup + self.opt.mt_weight * ramp(progress, self.opt.rampup) * loss_u
        return loss, {"sup": float(loss_sup.detach()), "unsup": float(loss_u.detach())}

    def after_step(self) -> None:
        ema_update(self.teacher, self.model, self.opt.ema_decay)


class UniMatch(Method):
    """UniMatch-style: weak-view pseudo-labels (conf ≥ 0.95) supervise two strong CutMix views
    and a feature-perturbed weak view (Yang et al. 2023), on decoder 2."""

    name = "unimatch"
    needs_unlabelled = True

    def loss(self, batch: Batch, progress: float) -> tuple[Tensor, dict[str, float]]:
        assert batch.x_u is not None and batch.t_u is not None
        model, opt = self.model, self.opt
        x_l, y_l = self.weak(batch.x_l, batch.y_l)
        loss_x = supervised_loss(model, x_l, y_l, batch.t_l)
        x_u_w = self.weak_u(batch.x_u)
        b, _, h, w = x_u_w.shape
        with torch.no_grad():
            model.eval()
            pred_u_w = torch.sigmoid(model(x_u_w, batch.t_u)["d2"])
            self.train_mode()
        conf_u = torch.maximum(pred_u_w, 1 - pred_u_w)
        mask_u = (pred_u_w > 0.5).float()
        perm = torch.roll(torch.arange(b), 1)  # each image mixes with its neighbour
        losses = []
        for _ in range(2):
            box = cutmix_boxes(b, h, w, self.gen).to(x_u_w.device)
            x_u_s = photometric(x_u_w, self.gen)
            x_u_s = paste(x_u_s, box, perm)
            target, conf = paste(mask_u, box, perm), paste(conf_u, box, perm)
            # the pasted box carries the neighbour's task prompt only when tasks match
            same = (batch.t_u == batch.t_u[perm]).float().view(b, 1, 1, 1)
            valid = (conf >= opt.conf_threshold).float() * (1 - box * (1 - same))
            losses.append(bce_dice(model(x_u_s, batch.t_u)["d2"], target, valid))
        feats = model.encode(x_u_w)
        feats_fp = [F.dropout(f, opt.fp_dropout, training=True) for f in feats]
        pred_fp = model.decode(feats_fp, batch.t_u, 2, size=(h, w))
        loss_fp = bce_dice(pred_fp, mask_u, (conf_u >= opt.conf_threshold).float())
        loss_u = 0.25 * losses[0] + 0.25 * losses[1] + 0.5 * loss_fp
        loss = loss_x + ramp(progress, opt.rampup) * loss_u
        return loss, {
            "sup": float(loss_x.detach()),
            "unsup": float(loss_u.detach()),
            "kept": float(conf_u.ge(opt.conf_threshold).float().mean()),
        }


METHODS: dict[str, type[Method]] = {
    "supervised": Supervised,
    "full": Supervised,
    "propl": ProPL,
    "mean-teacher": MeanTeacher,
    "unimatch": UniMatch,
}


def build_method(
    name: str, model: ProPLNet, options: MethodOptions, gen: torch.Generator
) -> Method:
    """Instantiate a training method by name (KeyError lists the valid names)."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](model, options, gen)
