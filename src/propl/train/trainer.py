"""The trainer: multi-task batches, any method, progress events, stop flag, checkpoint/resume.

``Trainer.run()`` is a generator of :class:`TrainEvent`; a GUI, the CLI or a subprocess pipe
consumes them (``event.to_json()`` for JSON lines). Nothing here prints.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..checkpoint import save_checkpoint
from ..data.augment import affine_theta, photometric, warp
from ..device import place_model
from ..files import atomic_write_bytes
from ..metrics import dice
from ..models import ProPLNet
from .distributed import any_rank, barrier, current_ranks, rank_device, rank_seed
from .methods import METHODS, Batch, MethodOptions, build_method

CACHEABLE = ("propl", "supervised", "full")
"""Methods that can train on cached encoder features (their views are geometric only)."""


def can_cache_features(method: str, options: MethodOptions) -> bool:
    """Whether ``method`` with ``options`` can train on cached features of a frozen encoder."""
    return method in CACHEABLE and options.view == "weak"


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Validated on creation."""

    method: str = "propl"
    steps: int = 1000
    batch_size: int = 8  # labelled images per step
    unlabelled_batch_size: int = 8
    lr: float = 1e-3  # decoders and prompts
    encoder_lr_mult: float = 0.2  # the pretrained encoder moves slower
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | sgd (the paper: SGD lr 1e-3, momentum 0.9, poly 0.9)
    warmup: float = 0.05
    freeze_encoder: bool = False
    cache_features: bool = False  # frozen encoder: encode every image once, train on features
    # cache_features: weak views encoded per image (the first unaugmented); each step takes
    # one of them, its mask warped alike (real views of the image: warping the cached
    # features instead was far worse, benchmarks/results/unsup-weight-thyroid_nodule.md)
    feature_views: int = 4
    # cached views after the first also get the strong view's colour changes (brightness,
    # contrast, gamma, blur, speckle noise) at this strength; 0: geometric views only
    view_photometric: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    eval_every: int = 100
    anchor: float = 0.0  # L2-SP: pull the shared weights toward their starting values
    # BatchNorm running statistics stay as they start, where they were learnt (a layer that
    # has never seen a batch still learns them). For incremental training: batches of a few
    # scans of one task would otherwise re-normalise every task's decoder features (the other
    # tasks lost 4-13 Dice points that way in benchmarks/new_task.py).
    freeze_norm_stats: bool = False
    # tasks learnt for the first time, on decoders of their own (ProPLNet.give_own_decoders):
    # their decoders and prompt tokens train free of the anchor; when every labelled scan is of
    # such a task and the encoder is frozen, nothing else trains, so every other task keeps
    # its exact output
    new_tasks: tuple[str, ...] = ()
    new_task_lr: float | None = None  # the new tasks' own decoders (None: lr)
    options: MethodOptions = field(default_factory=MethodOptions)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.steps < 1 or self.batch_size < 1 or self.unlabelled_batch_size < 1:
            raise ValueError("steps and batch sizes must be >= 1")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.anchor < 0:
            raise ValueError(f"anchor must be >= 0, got {self.anchor}")
        if self.feature_views < 1:
            raise ValueError(f"feature_views must be >= 1, got {self.feature_views}")
        if isinstance(self.options, dict):
            object.__setattr__(self, "options", MethodOptions(**self.options))
        object.__setattr__(self, "new_tasks", tuple(self.new_tasks))
        if self.options.view not in ("weak", "strong"):
            raise ValueError(f"view must be 'weak' or 'strong', got {self.options.view!r}")
        if self.options.unsup_weight < 0:
            raise ValueError(f"unsup_weight must be >= 0, got {self.options.unsup_weight}")
        if self.options.teacher not in ("self", "ema"):
            raise ValueError(f"teacher must be 'self' or 'ema', got {self.options.teacher!r}")
        if self.cache_features and not (
            self.freeze_encoder and can_cache_features(self.method, self.options)
        ):
            raise ValueError(
                "cache_features needs freeze_encoder and method propl (weak view), supervised "
                "or full"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainEvent:
    """A progress event: kind is start | step | eval | checkpoint | done | stopped."""

    kind: str
    step: int
    total: int
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code may use the global RNG
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class TaskBalancedSampler:
    """Draws batches with tasks equally likely, then images uniformly within the task."""

    def __init__(self, task_index: np.ndarray, rng: np.random.Generator) -> None:
        self.rng = rng
        self.by_task = [np.flatnonzero(task_index == t) for t in np.unique(task_index)]

    def draw(self, n: int) -> np.ndarray:
        tasks = self.rng.integers(0, len(self.by_task), n)
        return np.array([self.rng.choice(self.by_task[t]) for t in tasks])


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(N, H, W)`` uint8 → ``(N, 1, H, W)`` float in [0, 1] on ``device``."""
    return torch.from_numpy(images).to(device).unsqueeze(1).float().div_(255.0)


class _Objective(torch.nn.Module):
    """The training loss as a module's ``forward``, for DistributedDataParallel to wrap: DDP
    averages the gradients of whatever a wrapped forward computed, and a method's loss calls
    the network's parts (encoder, decoders, MC passes) directly, not its ``forward``."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.model = trainer.model  # registered: DDP syncs its parameters
        self.loss = trainer.objective

    def forward(self, batch: Batch, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(batch, progress)


class Trainer:
    """Train a ProPL network on preloaded arrays.

    Under ``torchrun`` (an initialised process group, see :mod:`.distributed`) every rank
    trains on its own batches with averaged gradients; rank 0 alone validates and writes.

    Args:
        model: a ProPL network; its ``config.tasks`` order defines the task indices.
        config: how to train.
        labelled: an ``ArraySet`` (images, masks, task_index) of labelled scans.
        unlabelled: an ``ArraySet`` of unlabelled scans (masks unused), for SSL methods.
        val: an ``ArraySet`` carved from the train split, for checkpoint selection.
        out_dir: where ``best/``, ``last/`` and ``log.jsonl`` go; None for no files.
        validator: scores the model instead of :func:`validate` on ``val`` (same return
            shape), e.g. at the scans' own resolution.
    """

    def __init__(
        self,
        model: ProPLNet,
        config: TrainConfig,
        labelled: Any,
        unlabelled: Any = None,
        val: Any = None,
        out_dir: str | Path | None = None,
        validator: Callable[[ProPLNet], dict[str, Any]] | None = None,
    ) -> None:
        method_cls = METHODS[config.method]
        if method_cls.needs_unlabelled and (unlabelled is None or len(unlabelled.images) == 0):
            raise ValueError(f"method {config.method!r} needs unlabelled scans; none were given")
        self.config, self.labelled, self.unlabelled, self.val = config, labelled, unlabelled, val
        self.validator = validator
        self.ranks = current_ranks()
        self.device = rank_device(config.device, self.ranks)
        self.model = place_model(model, self.device)
        self.out_dir = Path(out_dir) if out_dir else None
        seed = rank_seed(config.seed, self.ranks.rank)
        self.gen = seed_everything(seed)
        self.rng = np.random.default_rng(seed)
        # decided once, before any step: a layer that has never seen a batch learns its
        # statistics for the whole run (checking in _train_mode would freeze it after a step)
        # (a new task's own decoders too: letting them learn the new scans' statistics cost the
        # development nerve 9.6 Dice points from 10 labelled scans, 43.2 against 52.8)
        self.frozen_norms = (
            [m for m in self.model.modules() if _is_norm(m) and _learnt(m)]
            if config.freeze_norm_stats
            else []
        )
        self.optimizer = self._make_optimizer()  # decides which parameters train
        self.loss_fn: Callable[[Batch, float], tuple[torch.Tensor, dict[str, float]]]
        self.loss_fn = self.objective
        if self.ranks.parallel:  # after the optimiser: DDP syncs the parameters that train
            self.loss_fn = torch.nn.parallel.DistributedDataParallel(
                _Objective(self),  # its construction copies rank 0's weights to every rank
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # every method trains every parameter that requires a gradient (each one runs
                # under torchrun in tests/core/test_distributed.py); a method that did not would
                # fail there with DDP's "unused parameters" error
                find_unused_parameters=False,
            )
        self.method = build_method(config.method, self.model, config.options, self.gen)
        self.method.train_mode = self._train_mode
        self.start_weights = self._start_weights()
        self.step = 0
        self.best: dict[str, Any] = {"mdice": -1.0, "step": 0}
        # cached encoder features: per set ("l", "u"), per level (views, N, C, h, w) in
        # float16, and the affine matrix that made each view (views, N, 2, 3)
        self.features: dict[str, list[torch.Tensor]] = {}
        self.view_thetas: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _cache_features(self) -> None:
        """Encode every labelled and unlabelled image once per weak view (the encoder is
        frozen, in eval mode); kept in float16 on the CPU and moved per batch. The views are
        drawn from their own generator, seeded by the config: the same on every rank and on
        resume, and the training stream is untouched."""
        self.model.encoder.eval()
        sets = {"l": self.labelled}
        if self.method.needs_unlabelled:
            sets["u"] = self.unlabelled
        gen = torch.Generator().manual_seed(self.config.seed)
        views = self.config.feature_views
        for key, data in sets.items():
            n = len(data.images)
            theta = affine_theta(views * n, gen, torch.device("cpu")).view(views, n, 2, 3)
            theta[0] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # the image itself
            store: list[torch.Tensor] = []  # filled in place: no second copy to stack
            for start in range(0, n, 32):
                x = to_tensor(data.images[start : start + 32], self.device)  # read once
                for v in range(views):
                    x_v = warp(x, theta[v, start : start + 32].to(self.device)) if v else x
                    if v and self.config.view_photometric > 0:
                        x_v = photometric(x_v, gen, self.config.view_photometric)
                    feats = self.model.encode(x_v)
                    if not store:
                        store = [
                            torch.empty((views, n, *f.shape[1:]), dtype=torch.float16)
                            for f in feats
                        ]
                    for level, f in zip(store, feats, strict=True):
                        level[v, start : start + len(f)] = f.to("cpu", torch.float16)
            self.features[key] = store
            self.view_thetas[key] = theta

    def _only_new_tasks(self) -> bool:
        """Whether every labelled scan is of a task in ``config.new_tasks`` (then only those
        tasks' own decoders and prompt tokens train)."""
        new = {self.model.task_index(t) for t in self.config.new_tasks}
        return bool(new) and set(np.unique(self.labelled.task_index).tolist()) <= new

    def _new_task_parameters(self) -> list[torch.Tensor]:
        """The own decoders' parameters of ``config.new_tasks`` (each must have a pair)."""
        missing = [t for t in self.config.new_tasks if t not in self.model.config.own_decoders]
        if missing:
            raise ValueError(f"new tasks without decoders of their own: {', '.join(missing)}")
        return [p for _, p in self.model.own_parameters(self.config.new_tasks)]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        enc = list(self.model.encoder.parameters())
        for p in enc:
            p.requires_grad_(not cfg.freeze_encoder)
        enc_ids = {id(p) for p in enc}
        rest = [p for p in self.model.parameters() if id(p) not in enc_ids]
        groups = [{"params": rest, "lr": cfg.lr}]
        self.frozen_prompt_rows: torch.Tensor | None = None
        new_lr = cfg.lr if cfg.new_task_lr is None else cfg.new_task_lr
        if cfg.new_tasks and cfg.freeze_encoder and self._only_new_tasks():
            # the new tasks' own decoders, and their rows of the prompt table (the other rows'
            # gradients are zeroed each step, and the table has no weight decay: they stay
            # exactly as they were)
            own = self._new_task_parameters()
            own_ids = {id(p) for p in own} | {id(self.model.prompts)}
            for p in self.model.parameters():
                p.requires_grad_(id(p) in own_ids)
            rows = [self.model.task_index(t) for t in cfg.new_tasks]
            frozen = torch.ones(len(self.model.config.tasks), dtype=torch.bool)
            frozen[rows] = False
            self.frozen_prompt_rows = frozen
            groups = [
                {"params": own, "lr": new_lr},
                {"params": [self.model.prompts], "lr": new_lr, "weight_decay": 0.0},
            ]
        else:
            if cfg.new_tasks:  # known tasks train too: the new tasks' decoders at their own lr
                own = self._new_task_parameters()
                own_ids = {id(p) for p in own}
                groups = [
                    {"params": [p for p in rest if id(p) not in own_ids], "lr": cfg.lr},
                    {"params": own, "lr": new_lr},
                ]
            if not cfg.freeze_encoder:
                groups.append({"params": enc, "lr": cfg.lr * cfg.encoder_lr_mult})
        for g in groups:
            g["initial_lr"] = g["lr"]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, momentum=0.9, weight_decay=cfg.weight_decay)
        # On CUDA the fused kernel updates every tensor at once: the step is bound by kernel
        # launches there, and this made a supervised step 0.71-0.85x as long on an H200
        # (benchmarks/results/gpu/gpu-profile*.json)
        fused = True if self.device.type == "cuda" else None
        return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=fused)

    def _start_weights(self) -> dict[str, torch.Tensor]:
        """The shared trainable weights as they start (for the ``anchor`` penalty). Prompt
        tokens are left free: each task's tokens only move for that task's own scans."""
        if self.config.anchor <= 0:
            return {}
        free = {n for n, _ in self.model.own_parameters(self.config.new_tasks)}
        return {
            name: p.detach().clone()
            for name, p in self.model.named_parameters()
            if p.requires_grad and name != "prompts" and name not in free
        }

    def _anchor_penalty(self) -> torch.Tensor | None:
        """L2-SP (Li et al. 2018): ``anchor · Σ ‖w − w₀‖²`` over the shared weights."""
        if not self.start_weights:
            return None
        params = dict(self.model.named_parameters())
        total = torch.stack(
            [((params[n] - w0) ** 2).sum() for n, w0 in self.start_weights.items()]
        ).sum()
        return self.config.anchor * total

    def _set_lr(self) -> float:
        cfg, t = self.config, self.step / self.config.steps
        factor = min(1.0, (t + 1e-9) / cfg.warmup) if cfg.warmup > 0 else 1.0
        factor *= (1 - t) ** 0.9
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * factor
        return self.optimizer.param_groups[0]["lr"]

    def _batch(
        self, sampler_l: TaskBalancedSampler, sampler_u: TaskBalancedSampler | None
    ) -> Batch:
        dev, cfg = self.device, self.config
        il = sampler_l.draw(cfg.batch_size)
        batch = Batch(
            x_l=to_tensor(self.labelled.images[il], dev),
            y_l=torch.from_numpy(self.labelled.masks[il]).to(dev).unsqueeze(1).float(),
            t_l=torch.from_numpy(self.labelled.task_index[il]).to(dev),
        )
        if sampler_u is not None:
            iu = sampler_u.draw(cfg.unlabelled_batch_size)
            batch.x_u = to_tensor(self.unlabelled.images[iu], dev)
            batch.t_u = torch.from_numpy(self.unlabelled.task_index[iu]).to(dev)
        if self.features:
            batch.f_l, theta = self._cached_views("l", il)
            batch.y_l = warp(batch.y_l, theta, "nearest")
            if sampler_u is not None:
                batch.f_u = self._cached_views("u", iu)[0]
        return batch

    def _cached_views(self, key: str, index: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Cached features of images ``index`` of set ``key``, one random view each, and the
        affine matrices of those views."""
        n_views = self.features[key][0].shape[0]
        views = torch.from_numpy(self.rng.integers(n_views, size=len(index)))
        rows = torch.from_numpy(np.asarray(index))
        feats = [f[views, rows].to(self.device).float() for f in self.features[key]]
        return feats, self.view_thetas[key][views, rows].to(self.device)

    @contextmanager
    def _quiet_backward(self) -> Iterator[None]:
        """DDP on the CPU warns that some gradients' strides differ from its buckets': the
        channels-last weights of shape (N, C, 1, 1) have more than one valid stride for their
        size-1 dimensions. The values are right (tests/core/test_distributed.py); only that
        warning is silenced."""
        with warnings.catch_warnings():
            if self.ranks.parallel and self.device.type == "cpu":
                warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
            yield

    def _autocast(self) -> Any:
        if self.config.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def run(
        self, should_stop: Callable[[], bool] = lambda: False, resume: bool = False
    ) -> Iterator[TrainEvent]:
        """Train, yielding events. Returns early (after saving ``last/``) when ``should_stop()``."""
        cfg = self.config
        if resume:
            self.load_state()
        if cfg.cache_features and not self.features:
            self._cache_features()
        sampler_l = TaskBalancedSampler(self.labelled.task_index, self.rng)
        sampler_u = None
        if self.method.needs_unlabelled:
            sampler_u = TaskBalancedSampler(self.unlabelled.task_index, self.rng)
        yield self._log(
            TrainEvent(
                "start",
                self.step,
                cfg.steps,
                {
                    "device": str(self.device),
                    "method": cfg.method,
                    "labelled": len(self.labelled.images),
                    "unlabelled": 0 if self.unlabelled is None else len(self.unlabelled.images),
                    "ranks": self.ranks.world,
                    "view": cfg.options.view,
                    "cached_features": bool(self.features),
                },
            )
        )
        self._train_mode()
        seen, t0 = 0, time.perf_counter()
        while self.step < cfg.steps:
            if any_rank(should_stop(), self.device):
                self.save_state()
                yield self._log(TrainEvent("stopped", self.step, cfg.steps, self.best))
                return
            lr = self._set_lr()
            batch = self._batch(sampler_l, sampler_u)
            with self._autocast():
                loss, parts = self.loss_fn(batch, self.step / cfg.steps)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {float(loss.detach())} at step {self.step}")
            self.optimizer.zero_grad(set_to_none=True)
            with self._quiet_backward():
                loss.backward()
            if self.frozen_prompt_rows is not None and self.model.prompts.grad is not None:
                self.model.prompts.grad[self.frozen_prompt_rows.to(self.device)] = 0
            self.optimizer.step()
            self.method.after_step()
            self.step += 1
            seen += self.ranks.world * (
                batch.x_l.shape[0] + (0 if batch.x_u is None else batch.x_u.shape[0])
            )
            rate = seen / (time.perf_counter() - t0)
            yield TrainEvent(
                "step",
                self.step,
                cfg.steps,
                {"loss": float(loss.detach()), "lr": lr, "img_per_s": rate, **parts},
            )
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                yield from self._evaluate_and_save()
                self._train_mode()
        yield self._log(TrainEvent("done", self.step, cfg.steps, self.best))

    def objective(self, batch: Batch, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        """One step's loss: the method's, plus the anchor penalty when there is one."""
        loss, parts = self.method.loss(batch, progress)
        penalty = self._anchor_penalty()
        if penalty is not None:
            loss = loss + penalty
            parts = parts | {"anchor": float(penalty.detach())}
        return loss, parts

    def _train_mode(self) -> None:
        self.model.train()
        if self.config.freeze_encoder:  # a frozen encoder keeps its BatchNorm statistics too
            self.model.encoder.eval()
        for norm in self.frozen_norms:
            norm.eval()

    def _evaluate_and_save(self) -> Iterator[TrainEvent]:
        if not self.ranks.main:  # the weights are the same on every rank: rank 0 judges them
            barrier()
            return
        try:
            yield from self._evaluate_and_save_main()
        finally:
            barrier()

    def _evaluate_and_save_main(self) -> Iterator[TrainEvent]:
        if self.validator is not None:
            scores = self.validator(self.model)
        else:
            scores = validate(self.model, self.val, self.device) if self.val is not None else {}
        mdice = scores.get("mdice", float("nan"))
        yield self._log(TrainEvent("eval", self.step, self.config.steps, scores))
        validated = self.val is not None or self.validator is not None
        improved = not validated or mdice > self.best["mdice"]
        if improved:
            self.best = {"mdice": mdice if validated else -1.0, "step": self.step}
        if self.out_dir is not None:
            meta = {"train": self.config.to_dict(), "step": self.step, "val": scores}
            if improved:
                save_checkpoint(self.model, self.out_dir / "best", meta)
                yield self._log(
                    TrainEvent(
                        "checkpoint",
                        self.step,
                        self.config.steps,
                        {"path": str(self.out_dir / "best"), "val": scores},
                    )
                )
            self.save_state()

    def _log(self, event: TrainEvent) -> TrainEvent:
        if self.out_dir is not None and self.ranks.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "log.jsonl", "a") as fh:
                fh.write(event.to_json() + "\n")
        return event

    # --- resume ---------------------------------------------------------------------------
    def save_state(self) -> None:
        """Save model, optimiser, method (EMA teacher) and RNG states under ``out_dir/last``."""
        if self.out_dir is None or not self.ranks.main:
            return
        last = self.out_dir / "last"
        save_checkpoint(self.model, last, {"train": self.config.to_dict(), "step": self.step})
        tensors, doc = flatten_optimizer(self.optimizer.state_dict())
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.gen"] = self.gen.get_state()
        teacher = getattr(self.method, "teacher", None)
        if teacher is not None:
            tensors |= {
                f"teacher.{k}": v.detach().cpu().contiguous()
                for k, v in teacher.state_dict().items()
            }
        tensors |= {f"anchor.{k}": v.detach().cpu() for k, v in self.start_weights.items()}
        doc |= {"step": self.step, "best": self.best, "rng_numpy": self.rng.bit_generator.state}
        tmp = last / ".train_state.tmp"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        tmp.replace(last / "train_state.safetensors")
        atomic_write_bytes(last / "train_state.json", json.dumps(doc).encode())

    def load_state(self) -> None:
        """Restore what :meth:`save_state` wrote (no-op when there is nothing to resume)."""
        if self.out_dir is None or not (self.out_dir / "last" / "train_state.json").is_file():
            return
        from ..checkpoint import load_checkpoint

        last = self.out_dir / "last"
        self.model.load_state_dict(load_checkpoint(last).model.state_dict())
        place_model(self.model, self.device)
        tensors = load_file(str(last / "train_state.safetensors"))
        doc = json.loads((last / "train_state.json").read_text())
        state = unflatten_optimizer(tensors, doc)
        for saved, fresh in zip(state["param_groups"], self.optimizer.param_groups, strict=True):
            # how to step (fused on CUDA) is this device's choice, not the saving device's: a
            # run stopped on a GPU resumes on a CPU and the other way round
            saved |= {k: fresh[k] for k in ("fused", "foreach") if k in fresh}
        self.optimizer.load_state_dict(state)
        torch.set_rng_state(tensors["rng.torch"])
        self.gen.set_state(tensors["rng.gen"])
        teacher = getattr(self.method, "teacher", None)
        if teacher is not None:
            teacher.load_state_dict(
                {k[8:]: v for k, v in tensors.items() if k.startswith("teacher.")}
            )
        if self.start_weights:  # anchored to where the run started, not where it resumed
            self.start_weights = {
                k: tensors[f"anchor.{k}"].to(self.device) for k in self.start_weights
            }
        self.rng.bit_generator.state = doc["rng_numpy"]
        self.step, self.best = doc["step"], doc["best"]
        if self.ranks.rank > 0:  # rank 0 saved its own streams; the others start fresh ones
            seed = rank_seed(self.config.seed, self.ranks.rank) + self.step
            self.gen.manual_seed(seed)
            torch.manual_seed(seed)
            self.rng = np.random.default_rng(seed)


def _is_norm(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


def _learnt(norm: torch.nn.Module) -> bool:
    """Whether a BatchNorm layer's running statistics come from training (it has seen batches)."""
    tracked = getattr(norm, "num_batches_tracked", None)
    return not isinstance(tracked, torch.Tensor) or int(tracked) > 0


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into safetensors-able tensors and JSON (no pickle)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{key}"] = value.detach().cpu()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "opt_scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], doc: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entry in doc["opt_scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    return {"state": state, "param_groups": doc["param_groups"]}


@torch.no_grad()
def validate(model: ProPLNet, val: Any, device: torch.device, batch: int = 16) -> dict[str, Any]:
    """Dice of decoder 2 on preloaded validation arrays (at the network's input size).

    Returns:
        ``{"mdice": %, "per_task": {task: %}}``, Dice as a percentage, mean over tasks.
    """
    model.eval()
    per_task: dict[str, list[float]] = {}
    for start in range(0, len(val.images), batch):
        sl = slice(start, start + batch)
        x = to_tensor(val.images[sl], device)
        t = torch.from_numpy(val.task_index[sl]).to(device)
        pred = (model.decode(model.encode(x), t, 2) > 0).cpu().numpy()[:, 0]  # decoder 2 only
        for p, m, ti in zip(pred, val.masks[sl], val.task_index[sl], strict=True):
            per_task.setdefault(model.config.tasks[int(ti)], []).append(dice(p, m > 0))
    means = {k: 100.0 * float(np.mean(v)) for k, v in per_task.items()}
    return {
        "mdice": float(np.mean(list(means.values()))) if means else float("nan"),
        "per_task": means,
    }
