"""Confidence signals: which cheap per-scan signal ranks a task's scans by their true Dice?

    python benchmarks/confidence_signals.py [--data DATA] [--train-scans 150]

Issue 28 asks that the per-scan confidence's Spearman rho with the true Dice be >= 0.7 for
every task of the shipped model's test scans. This scores candidate signals on the first
frame of each scan: the Dice of decoder 2's mask (upsampled to the scan's size) against the
expert mask, and per signal the expected Dice :func:`propl.uncertainty.confidence_score` of
decoder 2's probabilities ``p2`` against a belief, at the decoders' native 1/4 scale:

- mc_mean: the MC-dropout mean of decoder 1 (``Predictor._forward``), the plugin's belief
  before; shown: own probabilities (below) times the mask's shape factor
  (``propl.task_shape``), the plugin's confidence;
- own probabilities (``p2`` itself); decoder 1's single pass;
- test-time augmentation: ``p2`` of the horizontally flipped frame flipped back, of the frame
  zero-padded by 10% each side (cropped back), of the frame under gamma 0.8, and the mean of
  ``p2`` and those three;
- shape: own probabilities times the solidity of the mask's largest component, or times that
  component's share of the mask;
- the click head's second opinion: its mask from the shown mask with no click (the head is
  trained to correct the decoder's masks);
- own probabilities softened (temperature 2), which spreads the belief at the mask's edge;
- the mask widened by decoder 1's MC spread (the uncertainty map shown): is the error where the
  map marks it?
- the mask's edge as the scan shows it (contrast across the outline, inside, outside): own
  probabilities lowered where that edge is unlike the task's expert masks' (a mask stopping
  at the wrong wall), and the same four statistics as features of the learnt estimators;
- the outline's typicality: how close the mask, moved to its centre and scaled by its size, is
  to its nearest expert masks of the task (a richer shape than the ellipse fit, for a heart's
  chambers and valve notches);
- the neighbours' Dice: the true Dice the model scored on the train scans that look most like
  this one to its encoder (scans like those it got wrong);
- own probabilities softened to the task's calibrated temperature: the one at which the mean
  confidence on the train subset equals the mean Dice there (the confidence read as a Dice);
- a learnt belief: a small convolutional head on decoder 2's last feature map and its logits,
  trained (binary cross-entropy) to give the expert's mask on the train subsets: where does
  the expert differ from a mask like this one?

Beside each ρ over a task's scans it reports ρ within the 80 % best-segmented scans and
within the rest: where in the range of Dice a signal's ranking is lost.

Sets: each task's whole test split, and a fixed random subset of each task's train split
(one ``numpy.random.default_rng(0)`` drawn in task order; the model was trained on these
scans). Writes ``benchmarks/results/confidence-signals.json`` and ``confidence-signals.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMAND = "python benchmarks/confidence_signals.py"
TARGET = 0.7
#: signal -> (what it is, extra encoder passes per frame)
SIGNALS: dict[str, tuple[str, int]] = {
    "shown": (
        "the plugin's confidence: confidence_score(p2, p2) times the mask's shape factor "
        "(propl.task_shape)",
        0,
    ),
    "mc_mean": (
        "confidence_score(p2, decoder 1's MC-dropout mean): the plugin's confidence before "
        "(no shape factor)",
        0,
    ),
    "own": ("confidence_score(p2, p2): own probabilities", 0),
    "decoder1": ("confidence_score(p2, decoder 1's single pass)", 0),
    "flip": ("belief: p2 of the horizontally flipped frame, flipped back", 1),
    "zoom_out": ("belief: p2 of the frame zero-padded by 10% each side, cropped back", 1),
    "gamma": ("belief: p2 of the frame under gamma 0.8", 1),
    "tta_mean": ("belief: mean of p2, flip, zoom-out and gamma", 3),
    "own_x_solidity": ("own x solidity of the mask's largest component", 0),
    "own_x_largest": ("own x the largest component's share of the mask", 0),
    "narrow_band": ("minus the uncertain band (0.05 < p2 < 0.95) over the mask's size", 0),
    "full_res": (
        "confidence_score at the scan's own size: p2 and decoder 1's MC mean upsampled "
        "(bilinear) before scoring, not at the decoders' 1/4 scale",
        0,
    ),
    "tempered": ("belief: p2 softened, sigmoid(logit(p2) / 2) (widens the belief at the edge)", 0),
    "mc_spread": (
        "belief: the mask widened by the uncertainty map shown (decoder 1's MC spread): "
        "m(1 - u) + (1 - m)u, so the error the spread marks counts in full",
        0,
    ),
    "edge_typical": (
        "own x how typical the mask's edge looks for the task: the Mahalanobis distance of "
        "its four edge statistics (below) from those of the task's expert masks on the train "
        "subset; beyond the experts' 95th percentile d², own x exp(-(d² - q95) / q95)",
        0,
    ),
    "outline_typical": (
        "own x how typical the outline is for the task: the mask sampled on a 32 x 32 grid "
        "spanning its centre ± 2 sqrt(area) (position and size taken out, orientation kept: "
        "ultrasound shows the probe at the top), its mean soft Dice with its 5 nearest expert "
        "masks of the train subset; below the experts' 5th percentile (each against the other "
        "experts), own x typicality / that floor",
        0,
    ),
    "neighbour_dice": (
        "the mean true Dice of the shown masks on the 10 train-subset scans nearest to this one "
        "in pooled encoder features (standardised, 20 principal components; train rows leave "
        "themselves out)",
        0,
    ),
    "calibrated": (
        "belief: p2 softened to the task's temperature T (grid 1-6) at which the mean of "
        "confidence x shape factor on the train subset is nearest its mean Dice",
        0,
    ),
    "learnt_belief": (
        "belief: a 4-layer convolutional head (32 channels, dilations 1, 2, 4) on decoder 2's "
        "last feature map and logits at 1/4 scale, trained with binary cross-entropy to give "
        "the expert's mask on the train subsets of every task (600 steps of 32); times the "
        "shape factor; test rows from the head fitted on every train row, train rows out of "
        "fold",
        0,
    ),
    "click_head": (
        "belief: the click head's mask from the shown mask with no click (a second opinion "
        "trained to correct it; it can reuse the frame's encoding, this script encodes again)",
        0,
    ),
    "learnt_linear": (
        "ridge regression (lambda 10) of the Dice on every 0-extra signal and the features "
        "below, fitted on the train subsets (out of fold on them)",
        0,
    ),
    "learnt_mlp": (
        "one-hidden-layer network (32 units) fitted to each task's Dice rank on the same "
        "inputs, train subsets (out of fold on them)",
        0,
    ),
}
LEARNT = ("learnt_linear", "learnt_mlp", "learnt_belief")
#: the learnt belief's training: steps, batch, learning rate (one cycle)
BELIEF_STEPS, BELIEF_BATCH, BELIEF_LR = 600, 32, 2e-3
#: the mask's edge as the scan shows it, intensities over the scan's standard deviation: the
#: band just inside the outline minus the band just outside; the core (inside the inner band)
#: minus the inner band; the core and the outer band minus the scan's mean. Bands are 8 % of
#: the mask's equivalent radius wide (at least 2 pixels)
EDGE = ("edge_in_out", "edge_core_in", "edge_core", "edge_out")
EDGE_BAND = 0.08
#: per-scan features the learnt estimators see beside the cheap signals (and the task)
FEATURES = (
    "log_area",
    "inside",
    "decoder_gap",
    "mc_variance",
    "task_fit",
    "components",
    "largest",
    "solidity",
    "ellipse",
    "extent",
    "on_edge",
    *EDGE,
)
FOLDS = 5
#: the tempered belief's temperature
TEMPERATURE = 2.0
#: the calibrated belief's candidate temperatures
TEMPERATURES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0)
#: the outline's canonical grid: GRID x GRID samples over its centre ± OUTLINE_SPAN sqrt(area)
GRID, OUTLINE_SPAN, OUTLINE_NEAREST, OUTLINE_FLOOR = 32, 2.0, 5, 5.0
#: the neighbours' Dice: this many nearest train scans, in this many principal components
NEIGHBOURS, NEIGHBOUR_COMPONENTS = 10, 20
#: the share of each task's scans, best segmented first, whose ranking is read on its own
BULK = 0.8
INTERVAL = 0.95  # bootstrap interval of each ρ
RESAMPLES = 1000


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])


def shape(mask: np.ndarray) -> dict[str, float]:
    """The mask's largest component: solidity, share of the mask, area over that of the ellipse
    of the same second moments (or its inverse, whichever is <= 1), bounding-box fill, sides of
    the frame it touches; and log(1 + components). All 0 for an empty mask."""
    from skimage.measure import label, regionprops

    props = regionprops(label(mask))
    keys = ("solidity", "largest", "ellipse", "extent", "on_edge", "components")
    if not props:
        return dict.fromkeys(keys, 0.0)
    areas = np.array([p.area for p in props], dtype=float)
    big = props[int(areas.argmax())]
    ellipse = np.pi * big.axis_major_length * big.axis_minor_length / 4
    r0, c0, r1, c1 = big.bbox
    values = (
        big.solidity,
        areas.max() / areas.sum(),
        min(big.area, ellipse) / max(big.area, ellipse) if ellipse > 0 else 0.0,
        big.extent,
        (r0 == 0) + (c0 == 0) + (r1 == mask.shape[0]) + (c1 == mask.shape[1]),
        np.log1p(len(props)),
    )
    return {k: float(v) for k, v in zip(keys, values, strict=True)}


def edge(image: np.ndarray, mask: np.ndarray) -> list[float] | None:
    """The ``EDGE`` statistics of ``mask`` on ``image`` (both at the scan's size), or None for a
    mask under 20 pixels."""
    from scipy import ndimage as ndi

    m = mask.astype(bool)
    if m.sum() < 20:
        return None
    width = max(2.0, EDGE_BAND * float(np.sqrt(m.sum() / np.pi)))
    inside, outside = ndi.distance_transform_edt(m), ndi.distance_transform_edt(~m)
    inner, core = (inside > 0) & (inside <= width), inside > width
    outer = (outside > 0) & (outside <= width)
    mean, sd = float(image.mean()), float(image.std()) + 1e-6
    m_in, m_out = float(image[inner].mean()), float(image[outer].mean())
    m_core = float(image[core].mean()) if core.any() else m_in
    return [(m_in - m_out) / sd, (m_core - m_in) / sd, (m_core - mean) / sd, (m_out - mean) / sd]


def outline(mask: np.ndarray) -> np.ndarray | None:
    """The mask on the canonical ``GRID`` x ``GRID`` grid over its centre ± ``OUTLINE_SPAN``
    sqrt(area) (bilinear, flattened), or None for a mask too small to judge (the task shape's
    ``MIN_PIXELS``)."""
    from scipy.ndimage import map_coordinates

    from propl.task_shape import MIN_PIXELS

    m = mask.astype(np.float32)
    n = float(m.sum())
    if n < MIN_PIXELS:
        return None
    r, c = np.nonzero(mask)
    g = np.linspace(-OUTLINE_SPAN, OUTLINE_SPAN, GRID) * np.sqrt(n)
    yy, xx = np.meshgrid(r.mean() + g, c.mean() + g, indexing="ij")
    return np.asarray(map_coordinates(m, [yy, xx], order=1, mode="constant")).ravel()


def score_scan(predictor: Any, image: Path, truth: np.ndarray, task: str) -> dict[str, float]:
    """The true Dice of the shown mask and every signal for one scan's first frame."""
    import torch
    import torch.nn.functional as F
    from torch import Tensor

    from propl.data.readers import read_scan
    from propl.inference import frames_to_float
    from propl.interactive import Refiner
    from propl.metrics import dice
    from propl.task_fit import pool_features
    from propl.uncertainty import confidence_score, mc_statistics, mc_uncertainty

    net, task_id = predictor.model, predictor.model.task_index(task)

    def up(p: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(p, size=size, mode="bilinear", align_corners=False)

    def decoder2(x: Tensor) -> Tensor:  # one more encoder pass
        feats, t = predictor.encode(x, task_id)
        return torch.sigmoid(net.decode(feats, t, 2, size=tuple(feats[0].shape[-2:])))

    frames, _ = read_scan(image)
    x = torch.from_numpy(frames_to_float(frames[:1]))
    h, w = x.shape[1:]
    with torch.inference_mode():
        feats, t = predictor.encode(x, task_id)
        size = (feats[0].shape[-2], feats[0].shape[-1])
        logit2 = net.decode(feats, t, 2, size=size)
        hidden = HIDDEN["decoder"]  # decoder 2's last feature map (the hook below)
        p2, _, mc_mean = predictor._forward(feats, t)
        mc_var = mc_statistics(net.mc_decoder1(feats, t, predictor.mc_samples, size=size))[1]
        spread = mc_uncertainty(mc_var)
        fit = predictor.score_fit(feats, task)
        pooled = pool_features(feats, range(len(feats)))[0]
        p1 = torch.sigmoid(net.decode(feats, t, 1, size=size))
        flip = torch.flip(decoder2(torch.flip(x, dims=[-1])), dims=[-1])
        ph, pw = int(h * 0.1), int(w * 0.1)
        q = decoder2(F.pad(x[None], (pw, pw, ph, ph))[0])
        n = q.shape[-1]
        qh, qw = round(n * ph / (h + 2 * ph)), round(n * pw / (w + 2 * pw))
        zoom = up(q[..., qh : n - qh, qw : n - qw], size)
        gamma = decoder2(x.clamp(0, 1) ** 0.8)
        mask = (up(p2, (h, w)) > 0.5).numpy()[0, 0]
    factor = None if predictor.task_shape is None else predictor.task_shape.factor(mask, task)
    outline_factor = 1.0 if factor is None else float(factor[0])
    second = torch.from_numpy(Refiner(predictor, frames[0], task).refine(mask, [])[1])
    second = F.interpolate(second[None, None], size=size, mode="area")

    def cs(belief: Tensor) -> float:
        return float(confidence_score(p2, belief)[0])

    own = cs(p2)
    q, q1 = p2[0, 0].numpy(), p1[0, 0].numpy()
    small = q > 0.5  # the mask at the decoders' native scale
    union = small | (q1 > 0.5)
    form = shape(small)
    scan = x[0].numpy()
    edges, expert_edges = edge(scan, mask), edge(scan, truth > 0)
    m2 = (p2 > 0.5).float()
    features = {
        "log_area": float(np.log(small.mean() + 1e-4)),
        "inside": float(q[small].mean()) if small.any() else 0.0,
        "decoder_gap": float(np.abs(q - q1)[union].mean()) if union.any() else 0.0,
        "mc_variance": float(mc_var[0, 0].numpy()[small].mean()) if small.any() else 0.0,
        "task_fit": 1.0 if fit is None else float(fit[0]),
        **{k: form[k] for k in ("components", "largest", "ellipse", "extent", "on_edge")},
        "solidity": form["solidity"],
        **dict(zip(EDGE, edges or [0.0] * len(EDGE), strict=True)),
    }
    return {
        "dice": dice(mask.astype(np.uint8), truth),
        "shown": own * outline_factor,
        "mc_mean": cs(mc_mean),
        "own": own,
        "decoder1": cs(p1),
        "flip": cs(flip),
        "zoom_out": cs(zoom),
        "gamma": cs(gamma),
        "tta_mean": cs((p2 + flip + zoom + gamma) / 4),
        "own_x_solidity": own * form["solidity"],
        "own_x_largest": own * form["largest"],
        "narrow_band": -float(((q > 0.05) & (q < 0.95)).sum() / (small.sum() + 1)),
        "full_res": float(confidence_score(up(p2, (h, w)), up(mc_mean, (h, w)))[0]),
        "tempered": cs(torch.sigmoid(torch.logit(p2, eps=1e-6) / TEMPERATURE)),
        "mc_spread": cs(m2 * (1 - spread) + (1 - m2) * spread),
        "edge_typical": own,  # x the typicality, once every task's expert edges are known
        "outline_typical": own,  # x the typicality, once every task's expert outlines are known
        "neighbour_dice": 0.0,  # once every train scan's Dice is known
        "calibrated": 0.0,  # once the task's temperature is chosen
        "tempered_grid": [
            cs(torch.sigmoid(torch.logit(p2, eps=1e-6) / temp)) * outline_factor
            for temp in TEMPERATURES
        ],
        "pooled": pooled,
        "shape_factor": outline_factor,
        "p2": p2[0].numpy(),
        "belief_input": torch.cat([hidden[0], logit2[0] / 5]).half().numpy(),
        "belief_target": F.interpolate(
            torch.from_numpy((truth > 0).astype(np.float32))[None, None], size=size, mode="area"
        )[0].numpy(),
        "learnt_belief": 0.0,  # once the head is trained on the train rows
        "outline": outline(mask),
        "expert_outline": outline(truth > 0),
        "click_head": cs(second),
        "features": features,
        "edge": edges,
        "expert_edge": expert_edges,
    }


HIDDEN: dict[str, Any] = {}


def hook_decoders(net: Any) -> None:
    """Keep each decoder's last feature map (its 1x1 head's input) in ``HIDDEN``."""
    from propl.models.decoder import PromptedDecoder

    def keep(module: Any, args: tuple[Any, ...]) -> None:
        HIDDEN["decoder"] = args[0].detach()

    for m in net.modules():
        if isinstance(m, PromptedDecoder):
            m.head.register_forward_pre_hook(keep)


def belief_head(channels: int) -> Any:
    from torch import nn

    def conv(c_in: int, dilation: int) -> list[Any]:
        return [nn.Conv2d(c_in, 32, 3, padding=dilation, dilation=dilation), nn.ReLU()]

    return nn.Sequential(*conv(channels, 1), *conv(32, 2), *conv(32, 4), nn.Conv2d(32, 1, 1))


def fit_belief(
    x: np.ndarray, y: np.ndarray, steps: int = BELIEF_STEPS
) -> Callable[[np.ndarray], Any]:
    """Train the learnt belief's head on inputs ``x`` (N, C, h, w) and soft expert masks ``y``
    (N, 1, h, w); returns inputs -> probabilities (a tensor)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    xs, ys = torch.from_numpy(x).float(), torch.from_numpy(y)
    head = belief_head(xs.shape[1])
    opt = torch.optim.AdamW(head.parameters(), BELIEF_LR, weight_decay=1e-4)  # one cycle sets it
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, BELIEF_LR, total_steps=steps)
    draws = torch.Generator().manual_seed(0)
    for _ in range(steps):
        i = torch.randint(0, len(xs), (BELIEF_BATCH,), generator=draws)
        loss = F.binary_cross_entropy_with_logits(head(xs[i]), ys[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()

    def predict(x2: np.ndarray) -> Any:
        with torch.no_grad():
            return torch.sigmoid(head(torch.from_numpy(x2).float()))

    return predict


def add_learnt_belief(
    rows: dict[str, dict[str, list[dict[str, Any]]]], steps: int = BELIEF_STEPS
) -> None:
    """Score every row's learnt_belief: confidence_score(p2, the head's belief) x shape factor;
    the head is fitted on every train row for the test rows, out of fold for the train rows."""
    import torch

    from propl.uncertainty import confidence_score

    def score(r: dict[str, Any], q: Any) -> float:
        p2 = torch.from_numpy(r["p2"])[None]
        return float(confidence_score(p2, q[None])[0]) * r["shape_factor"]

    train = [r for t in rows["train"] for r in rows["train"][t]]
    x = np.stack([r["belief_input"] for r in train])
    y = np.stack([r["belief_target"] for r in train])
    fold = np.random.default_rng(0).integers(0, FOLDS, len(train))
    for k in range(FOLDS):
        predict = fit_belief(x[fold != k], y[fold != k], steps)
        for r, q in zip(
            [r for r, f in zip(train, fold, strict=True) if f == k],
            predict(x[fold == k]),
            strict=True,
        ):
            r["learnt_belief"] = score(r, q)
    predict = fit_belief(x, y, steps)
    for task_rows in rows["test"].values():
        beliefs = predict(np.stack([r["belief_input"] for r in task_rows]))
        for r, q in zip(task_rows, beliefs, strict=True):
            r["learnt_belief"] = score(r, q)


def score_rows(predictor: Any, task: str, samples: list[Any]) -> list[dict[str, Any]]:
    from propl.data.readers import read_mask

    return [score_scan(predictor, s.image, read_mask(s.mask), task) for s in samples]


def inputs(rows: list[dict[str, Any]], task: str, tasks: list[str]) -> np.ndarray:
    """The learnt estimators' inputs: the signals with no extra encoder pass, the features and
    the task (one-hot)."""
    cheap = [k for k, (_, extra) in SIGNALS.items() if extra == 0 and k not in LEARNT]
    onehot = [float(t == task) for t in tasks]
    return np.array(
        [[r[k] for k in cheap] + [r["features"][k] for k in FEATURES] + onehot for r in rows]
    )


def ridge(x: np.ndarray, y: np.ndarray, lam: float = 10.0) -> Callable[[np.ndarray], np.ndarray]:
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = np.c_[np.ones(len(x)), (x - mu) / sd]
    reg = lam * np.eye(z.shape[1])
    reg[0, 0] = 0.0
    w = np.linalg.solve(z.T @ z + reg, z.T @ y)
    return lambda x2: np.c_[np.ones(len(x2)), (x2 - mu) / sd] @ w


def mlp(x: np.ndarray, y: np.ndarray, steps: int = 500) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    torch.manual_seed(0)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3)
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    for _ in range(steps):
        opt.zero_grad()
        ((net(xt)[:, 0] - yt) ** 2).mean().backward()
        opt.step()

    def predict(x2: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.tensor((x2 - mu) / sd, dtype=torch.float32))[:, 0].numpy()

    return predict


def add_learnt(rows: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    """Score the learnt estimators into every row: fitted on all train-subset rows, applied to
    the test rows; the train rows get out-of-fold scores (FOLDS folds, rng 0)."""
    from scipy.stats import rankdata

    tasks = list(rows["train"])
    x = np.concatenate([inputs(rows["train"][t], t, tasks) for t in tasks])
    dice = np.concatenate([[r["dice"] for r in rows["train"][t]] for t in tasks])
    rank = np.concatenate(
        [rankdata([r["dice"] for r in rows["train"][t]]) / len(rows["train"][t]) for t in tasks]
    )
    fold = np.random.default_rng(0).integers(0, FOLDS, len(x))
    fits = {"learnt_linear": (ridge, dice), "learnt_mlp": (mlp, rank)}
    for name, (fit, y) in fits.items():
        oof = np.zeros(len(x))
        for k in range(FOLDS):
            oof[fold == k] = fit(x[fold != k], y[fold != k])(x[fold == k])
        train_rows = [r for t in tasks for r in rows["train"][t]]
        for r, v in zip(train_rows, oof, strict=True):
            r[name] = float(v)
        full = fit(x, y)
        for t in tasks:
            for r, v in zip(rows["test"][t], full(inputs(rows["test"][t], t, tasks)), strict=True):
                r[name] = float(v)


def add_edge_typical(rows: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    """Multiply every row's edge_typical (own probabilities) by its edge's typicality: a
    Gaussian of each task's expert-mask edge statistics on the train subset; a mask whose
    Mahalanobis d² passes the experts' 95th percentile q95 gets exp(-(d² - q95) / q95)."""
    for task in rows["train"]:
        experts = np.array([r["expert_edge"] for r in rows["train"][task] if r["expert_edge"]])
        mean = experts.mean(0)
        inverse = np.linalg.inv(np.cov(experts.T) + 1e-6 * np.eye(len(EDGE)))

        def d2(v: Any, mean: np.ndarray = mean, inverse: np.ndarray = inverse) -> float:
            return float((np.asarray(v) - mean) @ inverse @ (np.asarray(v) - mean))

        q95 = float(np.percentile([d2(e) for e in experts], 95))
        for split in rows:
            for r in rows[split][task]:
                excess = 0.0 if r["edge"] is None else max(0.0, d2(r["edge"]) - q95)
                r["edge_typical"] *= float(np.exp(-excess / q95))


def add_outline_typical(rows: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    """Multiply every row's outline_typical (own probabilities) by its outline's typicality:
    the mean soft Dice of its canonical outline with the ``OUTLINE_NEAREST`` nearest expert
    outlines of the task's train subset (a train row's own expert left out), over the floor
    (the experts' ``OUTLINE_FLOOR``-th percentile against each other), at most 1."""

    def nearest(a: np.ndarray, bank: np.ndarray, skip: int | None) -> float:
        d = 2 * (bank @ a) / (bank.sum(1) + a.sum() + 1e-6)
        if skip is not None:
            d[skip] = -1.0
        return float(np.sort(d)[-OUTLINE_NEAREST:].mean())

    for task, train in rows["train"].items():
        keep = [i for i, r in enumerate(train) if r["expert_outline"] is not None]
        in_bank = {i: j for j, i in enumerate(keep)}  # train row -> its expert's place in bank
        bank = np.array([train[i]["expert_outline"] for i in keep])
        floor = float(
            np.percentile([nearest(bank[j], bank, j) for j in range(len(bank))], OUTLINE_FLOOR)
        )
        for split in rows:
            for i, r in enumerate(rows[split][task]):
                if r["outline"] is None:
                    continue
                own_expert = in_bank.get(i) if split == "train" else None
                r["outline_typical"] *= min(1.0, nearest(r["outline"], bank, own_expert) / floor)


def add_neighbour_dice(rows: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    """Every row's neighbour_dice: the mean true Dice of the ``NEIGHBOURS`` train-subset scans of
    its task nearest in pooled encoder features (standardised on the train subset, projected on
    its ``NEIGHBOUR_COMPONENTS`` principal components); a train row leaves itself out."""
    for task, train in rows["train"].items():
        feats = np.array([r["pooled"] for r in train])
        mean, sd = feats.mean(0), feats.std(0) + 1e-6
        basis = np.linalg.svd((feats - mean) / sd, full_matrices=False)[2][:NEIGHBOUR_COMPONENTS]
        bank = ((feats - mean) / sd) @ basis.T
        dices = np.array([r["dice"] for r in train])
        for split in rows:
            for i, r in enumerate(rows[split][task]):
                d2 = (((r["pooled"] - mean) / sd @ basis.T - bank) ** 2).sum(1)
                if split == "train":
                    d2[i] = np.inf
                r["neighbour_dice"] = float(dices[np.argsort(d2)[:NEIGHBOURS]].mean())


def add_calibrated(rows: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, float]:
    """Every row's calibrated confidence: at the task's temperature, the one of
    ``TEMPERATURES`` whose mean confidence on the train subset is nearest its mean Dice.
    Returns task -> temperature."""
    chosen: dict[str, float] = {}
    for task, train in rows["train"].items():
        grid = np.array([r["tempered_grid"] for r in train])
        gap = np.abs(grid.mean(0) - np.mean([r["dice"] for r in train]))
        k = int(gap.argmin())
        chosen[task] = TEMPERATURES[k]
        for split in rows:
            for r in rows[split][task]:
                r["calibrated"] = float(r["tempered_grid"][k])
    return chosen


def interval(signal: list[float], dices: np.ndarray) -> list[float]:
    """The ``INTERVAL`` bootstrap interval (percentile, ``RESAMPLES`` resamples of the scans,
    rng 0) of the signal's Spearman ρ with the Dice: how much the scans decide."""
    from scipy.stats import spearmanr

    values, rng = np.asarray(signal), np.random.default_rng(0)
    draws = [rng.integers(0, len(dices), len(dices)) for _ in range(RESAMPLES)]
    rhos = [float(spearmanr(values[i], dices[i])[0]) for i in draws]
    tail = 100 * (1 - INTERVAL) / 2
    return [round(float(q), 4) for q in np.nanpercentile(rhos, [tail, 100 - tail])]


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per set: the Dice spread, each signal's ρ, and its ρ within the bulk (the ``BULK`` best
    segmented scans) and within the rest, to show where a ranking is lost."""
    dices = np.array([r["dice"] for r in rows])
    bulk = np.zeros(len(rows), dtype=bool)
    bulk[np.argsort(-dices, kind="stable")[: int(np.ceil(BULK * len(rows)))]] = True
    cut = float(dices[bulk].min())

    def rho(k: str, keep: np.ndarray) -> float:
        return round(spearman([r[k] for r, b in zip(rows, keep, strict=True) if b], dices[keep]), 4)

    return {
        "scans": len(rows),
        "mean_dice": round(float(np.mean(dices)), 4),
        "spearman_interval": {k: interval([r[k] for r in rows], dices) for k in SIGNALS},
        "dice_iqr": [round(float(q), 4) for q in np.percentile(dices, [25, 75])],
        "bulk_dice": [round(cut, 4), round(float(dices.max()), 4)],
        "spearman": {k: round(spearman([r[k] for r in rows], list(dices)), 4) for k in SIGNALS},
        "mean": {k: round(float(np.mean([r[k] for r in rows])), 4) for k in SIGNALS},
        "spearman_bulk": {k: rho(k, bulk) for k in SIGNALS},
        "spearman_rest": {k: rho(k, ~bulk) for k in SIGNALS},
    }


def table(doc: dict[str, Any]) -> str:
    tasks = list(doc["sets"]["test"])
    lines = [
        "Confidence signals: which cheap per-scan signal ranks scans by their true Dice?",
        "",
        f"`{doc['command']}`: Spearman ρ of each per-scan signal with the true Dice of the "
        "shipped model's shown mask (decoder 2, first frame of each scan, at the scan's size), "
        "per task, on each task's whole test split and on a fixed random subset of "
        f"{doc['train_scans']} scans of its train split (rng 0; **the model was trained on "
        "these**, so they show whether a choice made on the test scans holds elsewhere). "
        f"Target: ρ >= {TARGET} for every task. All signals but shown, the shape, band and "
        "learnt ones are `confidence_score(p2, belief)` with the belief named; extra = encoder "
        "passes per "
        "frame beyond the one the plugin runs. The learnt estimators see every signal with no "
        "extra pass, the task and these features of the prediction: "
        + ", ".join(FEATURES)
        + f"; they are fitted on the train subsets and scored on the test splits, and scored "
        f"out of fold ({FOLDS} folds) on the train subsets themselves.",
        "",
    ]
    for split, head in (("test", "Test splits"), ("train", "Train subsets (trained on)")):
        sets = doc["sets"][split]
        lines += [
            f"{head}: scans "
            + ", ".join(f"{t} {sets[t]['scans']}" for t in tasks)
            + "; mean Dice (interquartile range) "
            + ", ".join(
                f"{t} {100 * sets[t]['mean_dice']:.1f} ({100 * sets[t]['dice_iqr'][0]:.1f}-"
                f"{100 * sets[t]['dice_iqr'][1]:.1f})"
                for t in tasks
            )
            + ".",
            "",
            "| signal | extra | " + " | ".join(tasks) + " | min |",
            "|---|---|" + "---|" * (len(tasks) + 1),
        ]
        for k, (_, extra) in SIGNALS.items():
            rhos = [sets[t]["spearman"][k] for t in tasks]
            lo = doc["min"][split][k]
            lines.append(
                f"| {k} | {extra} | "
                + " | ".join(f"{r:.2f}" for r in rhos)
                + (f" | **{lo:.2f}** |" if lo >= TARGET else f" | {lo:.2f} |")
            )
        lines.append("")
    lines += [
        "Signals: " + "; ".join(f"{k}: {what}" for k, (what, _) in SIGNALS.items()) + ".",
        "",
        "**Reading.** " + reading(doc),
        "",
        f"{doc['seconds']} s on the CPU, torch threads: {doc['provenance']['torch_threads']}.",
    ]
    return "\n".join(lines) + "\n"


def fmt(rho: float) -> str:
    """A ρ for the text; n/a where the Dice are all tied (a constant has no rank)."""
    return "n/a" if np.isnan(rho) else f"{rho:.2f}"


def reading(doc: dict[str, Any]) -> str:
    """What the numbers say, worded from them (so a rerun's text follows its numbers)."""
    test, train, low = doc["sets"]["test"], doc["sets"]["train"], doc["min"]["test"]
    met = [k for k in SIGNALS if low[k] >= TARGET]
    out = [
        f"Signals with ρ >= {TARGET} on every task's test scans: "
        + (", ".join(met) if met else "none")
        + "; the best minimum over tasks is "
        + ", ".join(f"{k} {low[k]:.2f}" for k in sorted(SIGNALS, key=lambda k: -low[k])[:3])
        + f" (shown {low['shown']:.2f}). Tasks below {TARGET} with every signal: "
        + (", ".join(t for t in test if max(test[t]["spearman"].values()) < TARGET) or "none")
        + ". Best signal per task, test ρ (train ρ of the same signal): "
    ]
    best = {t: max(SIGNALS, key=lambda k, t=t: test[t]["spearman"][k]) for t in test}
    out.append(
        "; ".join(
            f"{t} {k} {test[t]['spearman'][k]:.2f} ({train[t]['spearman'][k]:.2f})"
            for t, k in best.items()
        )
        + "."
    )
    for a, b, what in (
        ("shown", "own", "Shown (own x shape) vs own probabilities"),
        ("own", "mc_mean", "Own probabilities vs decoder 1's MC mean"),
        ("own_x_solidity", "own", "Shape (x solidity) vs own"),
        ("tta_mean", "own", "TTA mean vs own"),
        ("learnt_mlp", "own", "Learnt (network) vs own"),
        ("tempered", "own", "Tempered vs own"),
        ("full_res", "mc_mean", "Full resolution vs the MC mean"),
        ("mc_spread", "own", "MC spread vs own"),
        ("edge_typical", "own", "Edge typicality vs own"),
        ("outline_typical", "shown", "Outline typicality vs shown"),
        ("neighbour_dice", "shown", "Neighbours' Dice vs shown"),
        ("calibrated", "shown", "Calibrated temperature vs shown"),
        ("learnt_belief", "shown", "Learnt belief vs shown"),
    ):
        out.append(
            f" {what}, ρ change test / train: "
            + ", ".join(
                f"{t} {test[t]['spearman'][a] - test[t]['spearman'][b]:+.2f} / "
                f"{train[t]['spearman'][a] - train[t]['spearman'][b]:+.2f}"
                for t in test
            )
            + "."
        )
    out.append(
        " Read as a Dice (mean over the test scans: true Dice / shown / calibrated / learnt "
        "belief): "
        + ", ".join(
            f"{t} {100 * test[t]['mean_dice']:.1f} / "
            + " / ".join(
                f"{100 * test[t]['mean'][k]:.1f}" for k in ("shown", "calibrated", "learnt_belief")
            )
            for t in test
        )
        + "."
    )
    out.append(
        " Calibrated temperatures (train subsets): "
        + ", ".join(f"{t} {v:g}" for t, v in doc["calibrated_temperature"].items())
        + "."
    )
    out.append(
        f" How much the scans decide: {INTERVAL:.0%} bootstrap interval of the test ρ, shown "
        "(own probabilities): "
        + "; ".join(
            f"{t} {test[t]['spearman_interval']['shown'][0]:.2f}-"
            f"{test[t]['spearman_interval']['shown'][1]:.2f} "
            f"({test[t]['spearman_interval']['own'][0]:.2f}-"
            f"{test[t]['spearman_interval']['own'][1]:.2f})"
            for t in test
        )
        + "."
    )
    out.append(
        f" Where the ranking is lost: within the {BULK:.0%} best-segmented test scans of each "
        "task, ρ of own probabilities (of the task's best signal) and the Dice those scans span: "
        + "; ".join(
            f"{t} {test[t]['spearman_bulk']['own']:.2f} ({test[t]['spearman_bulk'][best[t]]:.2f}),"
            f" Dice {100 * test[t]['bulk_dice'][0]:.1f}-{100 * test[t]['bulk_dice'][1]:.1f}"
            for t in test
        )
        + f"; within the other {1 - BULK:.0%}: "
        + ", ".join(f"{t} {fmt(test[t]['spearman_rest']['own'])}" for t in test)
        + "."
    )
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/us-universal")
    ap.add_argument("--train-scans", type=int, default=150, help="train subset size per task")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a shared CPU: 1)")
    ap.add_argument("--out", type=Path, default=RESULTS / "confidence-signals.json")
    args = ap.parse_args(argv)

    import torch

    from propl.data.benchmark import BenchmarkFolder
    from propl.inference import Predictor, resolve_model
    from propl.results import provenance, write_json

    torch.manual_seed(0)  # decoder 1's MC dropout
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    predictor = Predictor.from_checkpoint(resolve_model(None), device="cpu")
    hook_decoders(predictor.model)
    folder = BenchmarkFolder(args.data)
    tasks = [t for t in folder.task_ids() if t in predictor.tasks]
    rng = np.random.default_rng(0)
    pick: dict[str, Callable[[list[Any]], list[Any]]] = {
        "test": lambda s: s,
        "train": lambda s: [
            s[i] for i in rng.choice(len(s), size=min(args.train_scans, len(s)), replace=False)
        ],
    }
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for split, choose in pick.items():
        rows[split] = {}
        for task in tasks:
            rows[split][task] = score_rows(predictor, task, choose(folder.samples(task, split)))
            print(split, task, len(rows[split][task]), flush=True)
    add_edge_typical(rows)
    add_outline_typical(rows)
    add_neighbour_dice(rows)
    temperatures = add_calibrated(rows)
    add_learnt(rows)
    add_learnt_belief(rows)
    sets = {split: {t: summarise(rows[split][t]) for t in tasks} for split in rows}
    doc = {
        "command": COMMAND,
        "target": TARGET,
        "train_scans": args.train_scans,
        "calibrated_temperature": temperatures,
        "signals": {k: {"what": w, "extra_encoder_passes": e} for k, (w, e) in SIGNALS.items()},
        "sets": sets,
        "min": {
            split: {k: min(sets[split][t]["spearman"][k] for t in tasks) for k in SIGNALS}
            for split in sets
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "provenance": provenance(),
    }
    write_json(args.out, doc)
    args.out.with_suffix(".md").write_text(table(doc))
    print(table(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
