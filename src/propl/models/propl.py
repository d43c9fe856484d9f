"""The ProPL network: shared encoder, learnable task prompts, two prompted decoders."""

from __future__ import annotations

import copy
import math
import numbers
import reprlib
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .decoder import PromptedDecoder
from .encoder import (
    FEATURE_CHANNELS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EfficientNetLite0,
    load_lite0_imagenet,
)
from .refine import RefineConfig, RefineHead


class DecoderPair(nn.Module):
    """A task's own decoder 1 and decoder 2 (see :meth:`ProPLNet.give_own_decoders`)."""

    first: PromptedDecoder
    second: PromptedDecoder

    def __init__(self, first: PromptedDecoder, second: PromptedDecoder) -> None:
        super().__init__()
        self.first, self.second = first, second


INT_BOUNDS: dict[str, tuple[int, int]] = {
    "input_size": (32, 4096),
    "prompt_tokens": (1, 64),
    "prompt_dim": (1, 512),
    "heads": (1, 32),
}
"""Inclusive bounds of the config's integer fields: a model outside them is a broken file."""
CHANNEL_BOUNDS = (1, 512)
"""Inclusive bounds of each decoder width in ``channels``."""
MAX_TASKS = 256
"""Most tasks (prompts) one model may have."""
MAX_TASK_NAME = 200
"""Longest task id, in characters."""
ALPHA_BOUND = 100.0
"""Largest ``|alpha_init|``."""


def _shown(value: object) -> str:
    """``repr`` cut short, so that a huge value still gives a one-line message."""
    return reprlib.repr(value)


def _integer(key: str, value: object, low: int, high: int) -> int:
    """``value`` as an ``int`` in ``[low, high]``.

    Raises:
        TypeError: not an integer (a bool or a float is not one).
        ValueError: out of bounds; the message names ``key``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"'{key}' must be an integer, got {_shown(value)}")
    if not low <= int(value) <= high:
        raise ValueError(f"'{key}' must be from {low} to {high}, got {_shown(value)}")
    return int(value)


def _real(key: str, value: object, low: float, high: float, high_open: bool = False) -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (``[low, high)`` if ``high_open``).

    Raises:
        TypeError: not a number (a bool is not one).
        ValueError: not finite or out of bounds; the message names ``key``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"'{key}' must be a number, got {_shown(value)}")
    x = float(value)
    inside = low <= x < high if high_open else low <= x <= high
    if not (math.isfinite(x) and inside):
        bound = f"[{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"'{key}' must be in {bound}, got {_shown(value)}")
    return x


def _sequence(key: str, value: object) -> tuple[Any, ...]:
    """A list or tuple as a tuple (a string, a dict or a number is refused)."""
    if not isinstance(value, list | tuple):
        raise TypeError(f"'{key}' must be a list, got {_shown(value)}")
    return tuple(value)


def _task_ids(value: object) -> tuple[str, ...]:
    """Validated task ids: 1 to MAX_TASKS distinct non-empty strings."""
    tasks = _sequence("tasks", value)
    if not 1 <= len(tasks) <= MAX_TASKS:
        raise ValueError(f"'tasks' must hold 1 to {MAX_TASKS} task ids, got {len(tasks)}")
    for task in tasks:
        if not isinstance(task, str) or not 0 < len(task) <= MAX_TASK_NAME:
            raise TypeError(
                f"'tasks' must be strings of 1 to {MAX_TASK_NAME} characters, got {_shown(task)}"
            )
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"'tasks' has duplicate task ids: {_shown(tasks)}")
    return tasks


def _widths(value: object, heads: int) -> tuple[int, int, int, int]:
    """Four decoder widths in CHANNEL_BOUNDS; the three prompted ones divisible by ``heads``."""
    widths = _sequence("channels", value)
    if len(widths) != 4:
        raise ValueError(f"'channels' must be 4 widths, got {_shown(value)}")
    c32, c16, c8, c4 = (_integer("channels", c, *CHANNEL_BOUNDS) for c in widths)
    for c in (c32, c16, c8):
        if c % heads:
            raise ValueError(
                f"'channels' {c} is not divisible by 'heads' ({heads}): every attention head "
                "needs the same width"
            )
    return c32, c16, c8, c4


def _own_decoders(value: object, tasks: tuple[str, ...]) -> tuple[str, ...]:
    """Validated ``own_decoders``: distinct task ids, each one of ``tasks``."""
    own = _sequence("own_decoders", value)
    unknown = [t for t in own if t not in tasks]
    if unknown:
        raise ValueError(f"'own_decoders' names tasks the model does not have: {_shown(unknown)}")
    if len(set(own)) != len(own):
        raise ValueError(f"'own_decoders' has duplicate task ids: {_shown(own)}")
    return tuple(own)


@dataclass(frozen=True)
class ProPLConfig:
    """Everything needed to rebuild a ProPL network (saved next to its weights).

    Attributes:
        tasks: task ids, in prompt-table order; a task's index selects its prompt tokens.
        input_size: side of the square input the network is trained and run at.
        channels: decoder widths at strides 32, 16, 8, 4.
        prompt_tokens: learnable tokens per task (L).
        prompt_dim: width of a prompt token (D).
        heads: attention heads in every prompt stage.
        dropout: dropout on the deepest feature for decoder 1 (MC-dropout uncertainty).
        alpha_init: initial cross-attention gate α (the paper starts at 1.7).
        pretrained: load ImageNet encoder weights when the model is built fresh.
        refine: the click refinement head's config (:class:`~propl.models.refine.RefineConfig`,
            or its JSON object); None: the model has no head (checkpoints before it).
        own_decoders: tasks with a pair of decoders of their own instead of the shared pair
            (tasks learnt after the model was trained: see :meth:`ProPLNet.give_own_decoders`).
            Learning such a task leaves every other task's output bit-identical.
    """

    tasks: tuple[str, ...]
    input_size: int = 224
    channels: tuple[int, int, int, int] = (96, 64, 48, 32)
    prompt_tokens: int = 8
    prompt_dim: int = 64
    heads: int = 4
    dropout: float = 0.3
    alpha_init: float = 1.7
    pretrained: bool = True
    refine: RefineConfig | None = None
    own_decoders: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Validate every field (type and bounds) and normalise it.

        Raises:
            TypeError: a field has the wrong type; the message names it.
            ValueError: a field is out of bounds (:data:`INT_BOUNDS`, :data:`CHANNEL_BOUNDS`,
                :data:`MAX_TASKS`, :data:`ALPHA_BOUND`); the message names it.
        """
        values: dict[str, Any] = {"tasks": _task_ids(self.tasks)}
        for key, (low, high) in INT_BOUNDS.items():
            values[key] = _integer(key, getattr(self, key), low, high)
        if values["input_size"] % 32:
            raise ValueError(f"'input_size' must be a multiple of 32, got {self.input_size}")
        values["channels"] = _widths(self.channels, values["heads"])
        values["dropout"] = _real("dropout", self.dropout, 0.0, 1.0, high_open=True)
        values["alpha_init"] = _real("alpha_init", self.alpha_init, -ALPHA_BOUND, ALPHA_BOUND)
        if not isinstance(self.pretrained, bool):
            raise TypeError(f"'pretrained' must be true or false, got {_shown(self.pretrained)}")
        if self.refine is not None:
            values["refine"] = RefineConfig.from_value(self.refine)
        values["own_decoders"] = _own_decoders(self.own_decoders, values["tasks"])
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"], d["channels"] = list(self.tasks), list(self.channels)
        if self.refine is None:
            del d["refine"]  # a model without the head keeps the config it always had
        if self.own_decoders:
            d["own_decoders"] = list(self.own_decoders)
        else:
            del d["own_decoders"]  # nor does a model without task decoders get a new key
        return d


class ProPLNet(nn.Module):
    """Universal prompt-guided segmentation network with dual decoders.

    Input: ``(B, 1, H, W)`` grayscale in [0, 1] (H, W multiples of 32) and ``(B,)`` task indices.
    Decoder 1 sees the deepest feature through dropout and is trained on ground truth; decoder 2
    sees clean features and learns from decoder 1's pseudo-labels; decoder 2 is the output.
    """

    pixel_mean: Tensor
    pixel_std: Tensor

    def __init__(self, config: ProPLConfig) -> None:
        super().__init__()
        self.config = config
        self.registry_name = "propl"
        self.encoder = EfficientNetLite0()
        if config.pretrained:
            load_lite0_imagenet(self.encoder)
        # Unit-scale tokens, like word embeddings: at 0.02 the projector's biases swamp them and
        # the prompt gets almost no gradient (tasks then never separate).
        self.prompts = nn.Parameter(
            torch.randn(len(config.tasks), config.prompt_tokens, config.prompt_dim)
        )
        kw: dict[str, Any] = dict(
            skip_channels=FEATURE_CHANNELS,
            channels=config.channels,
            prompt_dim=config.prompt_dim,
            prompt_tokens=config.prompt_tokens,
            heads=config.heads,
            alpha_init=config.alpha_init,
        )
        self.decoder1 = PromptedDecoder(dropout=config.dropout, **kw)
        self.decoder2 = PromptedDecoder(dropout=0.0, **kw)
        # decoder pairs of the tasks in config.own_decoders, in that order
        self.task_decoders = nn.ModuleList(
            DecoderPair(PromptedDecoder(dropout=config.dropout, **kw), PromptedDecoder(**kw))
            for _ in config.own_decoders
        )
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.refine: RefineHead | None = None
        if config.refine is not None:
            self.refine = RefineHead(config.refine, FEATURE_CHANNELS, config.prompt_dim)

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.config.tasks

    @property
    def has_refine(self) -> bool:
        """Whether this model has the click refinement head (older checkpoints do not)."""
        return self.refine is not None

    def add_refine(self, config: RefineConfig | None = None) -> ProPLNet:
        """Give the model a fresh (untrained) click refinement head; the rest is unchanged."""
        config = config or RefineConfig()
        self.refine = RefineHead(config, FEATURE_CHANNELS, self.config.prompt_dim)
        self.refine.to(self.prompts.device)
        self.config = ProPLConfig(**(asdict(self.config) | {"refine": config}))
        return self

    def give_own_decoders(self, tasks: tuple[str, ...]) -> ProPLNet:
        """Give each of ``tasks`` a pair of decoders of its own, copied from the shared pair.

        Training such a task then moves only its own decoders and prompt tokens (see
        :meth:`own_parameters`): every other task keeps exactly the output it had, however far
        the new task's decoders move, so a hard new structure can be learnt without any
        forgetting. Costs two decoders' weights per task. Tasks that have a pair already are
        left as they are.
        """
        fresh = tuple(t for t in tasks if t not in self.config.own_decoders)
        for task in fresh:
            self.task_index(task)  # the task must have a prompt first (add_tasks)
            self.task_decoders.append(
                DecoderPair(copy.deepcopy(self.decoder1), copy.deepcopy(self.decoder2))
            )
        if fresh:
            own = self.config.own_decoders + fresh
            self.config = ProPLConfig(**(asdict(self.config) | {"own_decoders": own}))
        return self

    def own_parameters(self, tasks: tuple[str, ...]) -> list[tuple[str, nn.Parameter]]:
        """Named parameters of the own decoder pairs of ``tasks`` (those that have one)."""
        out = []
        for k, task in enumerate(self.config.own_decoders):
            if task in tasks:
                pairs = self.task_decoders[k].named_parameters(prefix=f"task_decoders.{k}")
                out += list(pairs)
        return out

    def _decoder(self, task_index: int, decoder: int) -> PromptedDecoder:
        task = self.config.tasks[task_index]
        if task in self.config.own_decoders:
            pair: DecoderPair = self.task_decoders[self.config.own_decoders.index(task)]  # type: ignore[assignment]
            return pair.first if decoder == 1 else pair.second
        return self.decoder1 if decoder == 1 else self.decoder2

    def task_index(self, task: str) -> int:
        try:
            return self.config.tasks.index(task)
        except ValueError:
            raise KeyError(
                f"unknown task {task!r}; this model knows: {', '.join(self.config.tasks)}"
            ) from None

    def check_input(self, x: Tensor, task_ids: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected (B, 1, H, W) grayscale input, got {tuple(x.shape)}")
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            h, w = (-(-s // 32) * 32 for s in x.shape[-2:])
            raise ValueError(
                f"H and W must be multiples of 32, got {tuple(x.shape[-2:])}; "
                f"resize or pad to ({h}, {w})"
            )
        if task_ids.shape != (x.shape[0],):
            raise ValueError(
                f"task_ids must have shape ({x.shape[0]},), got {tuple(task_ids.shape)}"
            )

    def encode(self, x: Tensor) -> list[Tensor]:
        """``(B, 1, H, W)`` in [0, 1] → four encoder feature maps."""
        x = (x.expand(-1, 3, -1, -1) - self.pixel_mean) / self.pixel_std
        return self.encoder(x)

    def prompt(self, task_ids: Tensor) -> Tensor:
        """``(B,)`` task indices → ``(B, L, D)`` prompt tokens."""
        return self.prompts[task_ids]

    def decode(
        self,
        features: list[Tensor],
        task_ids: Tensor,
        decoder: int = 2,
        mc: bool = False,
        size: tuple[int, int] | None = None,
    ) -> Tensor:
        """Logits ``(B, 1, H, W)`` of decoder 1 or 2, upsampled to ``size`` (default: input).

        Each scan goes through its task's decoder: the shared one, or the task's own
        (``config.own_decoders``). The deepest feature may hold T samples of each scan
        (batch T·B, ``task_ids`` repeated T times, as :meth:`mc_decoder1` passes them).
        """
        size = size or (features[0].shape[-2] * 4, features[0].shape[-1] * 4)
        groups = self._decoder_groups(task_ids, decoder)
        if len(groups) == 1:
            net = next(iter(groups))
            logits = net(features, self.prompt(task_ids), mc=mc)
            return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        b, n = features[0].shape[0], task_ids.shape[0]
        out: Tensor | None = None
        for net, rows in groups.items():
            # rows of the batch of n (T repeats of the b scans); their scans' rows of the b
            scans = rows[rows < b]
            sub = [f[scans] for f in features[:-1]] + [features[-1][rows]]
            logits = net(sub, self.prompt(task_ids[rows]), mc=mc)
            if out is None:
                out = logits.new_empty((n, *logits.shape[1:]))
            out[rows] = logits
        assert out is not None
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)

    def _decoder_groups(self, task_ids: Tensor, decoder: int) -> dict[nn.Module, Tensor]:
        """The decoder each row of ``task_ids`` goes through → those rows (ascending)."""
        if not self.config.own_decoders:
            shared = self.decoder1 if decoder == 1 else self.decoder2
            return {shared: torch.arange(len(task_ids), device=task_ids.device)}
        nets = [self._decoder(int(t), decoder) for t in task_ids.tolist()]
        groups: dict[nn.Module, list[int]] = {}
        for row, net in enumerate(nets):
            groups.setdefault(net, []).append(row)
        return {net: torch.tensor(rows, device=task_ids.device) for net, rows in groups.items()}

    def forward(self, x: Tensor, task_ids: Tensor) -> dict[str, Tensor]:
        """Both decoders' logits, ``{"d1": (B, 1, H, W), "d2": (B, 1, H, W)}``."""
        self.check_input(x, task_ids)
        features = self.encode(x)
        size = (x.shape[-2], x.shape[-1])
        return {
            "d1": self.decode(features, task_ids, 1, size=size),
            "d2": self.decode(features, task_ids, 2, size=size),
        }

    def mc_decoder1(
        self,
        features: list[Tensor],
        task_ids: Tensor,
        samples: int,
        size: tuple[int, int] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``samples`` dropout passes of decoder 1 in one batched call → ``(T, B, 1, H, W)`` probs.

        The encoder runs once. Dropout acts on the deepest feature only, so only that one is
        repeated T times along the batch; the decoder computes the skips' share once for all T
        samples (see :class:`~propl.models.decoder.UpFuse`). ``size`` defaults to the input
        size; pass the 1/4-scale size to get the decoder's native maps.

        With a (CPU) ``generator`` the T dropout masks are drawn from it and shared by every
        scan of the batch: a scan's result then depends on the generator's seed alone, not on
        the global random stream (left untouched) or on the other scans batched with it, and
        scans are compared under the same draws. Without one, each sample of each scan draws
        its own mask from the global stream (training).
        """
        b = task_ids.shape[0]
        deep = features[-1].repeat(samples, 1, 1, 1)
        p = float(self.config.dropout)
        shared = generator is not None and p > 0
        if shared:
            c, h, w = features[-1].shape[1:]
            keep = torch.rand((samples, 1, c, h, w), generator=generator) >= p
            scale = keep.to(device=deep.device, dtype=deep.dtype) / (1.0 - p)
            deep = deep * scale.expand(samples, b, c, h, w).reshape(deep.shape)
        rep = [*features[:-1], deep]
        logits = self.decode(rep, task_ids.repeat(samples), 1, mc=not shared, size=size)
        return torch.sigmoid(logits).view(samples, b, *logits.shape[1:])

    def add_tasks(self, new_tasks: tuple[str, ...]) -> ProPLNet:
        """Grow the prompt table for new tasks.

        A new prompt starts as the mean of the known prompts plus noise drawn from a generator
        seeded by the task's name, so it is the same in every process that adds the task: the
        model a retrain starts from and the baseline it is judged against get the same prompt,
        runs are repeatable, and the global random stream is not touched.
        """
        fresh = tuple(t for t in new_tasks if t not in self.config.tasks)
        if not fresh:
            return self
        known = self.prompts.data
        rows = []
        for name in fresh:
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode("utf-8")))
            noise = torch.randn(known.shape[1:], generator=gen).to(known)
            rows.append(known.mean(0) + noise * known.std())
        self.prompts = nn.Parameter(torch.cat([known, torch.stack(rows)], 0))
        cfg = asdict(self.config) | {"tasks": self.config.tasks + fresh}
        self.config = ProPLConfig(**cfg)
        return self
