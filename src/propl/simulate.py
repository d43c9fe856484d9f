"""A simulated annotator: does correcting the least confident scans first teach faster?

``propl simulate --data DIR --task T`` runs the plugin's loop without a person::

    pool of the task's train scans ──▶ project; the first --start scans corrected (ground truth)
    round 0: retrain a fresh network (ImageNet encoder, new decoders: it has never seen the
             task's labels) on them
    round r = 1..R, for each strategy (from the same round-0 project and model):
        predict every unreviewed scan of the pool (the plugin's Predictor, MC uncertainty)
        pick K scans: "uncertainty" = the review queue's first K (least confident first),
                      "random" = K unreviewed scans drawn with the seed,
                      "error" (not run by default) = the K with the most pixels expected to
                      be wrong (the largest ``Prediction.expected_error`` of any frame)
        "correct" them: the ground-truth mask replaces the prediction and is confirmed, by the
                      plugin's rule (:class:`~propl.annotation.AnnotationSession`; edited
                      pixels counted); or, with ``--correct clicks``, simulated clicks on the
                      current version's refinement head fix the pseudo-label until IoU 0.90
                      with the ground truth or 20 clicks, and THAT mask is confirmed
                      (:mod:`propl.click_annotator`; clicks counted)
        retrain from the current version (the project retraining path: held-back scans,
        ProPL semi-supervised with the rest of the pool unlabelled)
        score the new version on the task's test split: Dice and the AUROC of pixel
        uncertainty for pixel errors

Every new version is followed, whatever the promotion gate said (its verdict is recorded), so
the two curves show what each strategy's picks teach. Results: ``{"task", "rounds",
"per_round", "strategies": {name: [test Dice after round 0..R]}, "pixel_auroc", ...}``; a run
corrected with clicks is named ``STRATEGY+clicks`` and has ``"clicks": {name: [per round]}``.
The start scans are corrected with the ground truth in every mode (before round 0 no model
knows the task). The fresh network starts with the ``--like`` model's click head, trained on
that model's encoder (``"refine_head"`` says so); each retraining round then tunes it on the
round's corrections, as project retraining does (kept only if the held-back corrections click
no worse; each round's ``"refine"`` record says what happened).
"""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .annotation import AnnotationSession, predict_scan
from .click_annotator import click_summary, click_table, confirm_with_clicks, refine_head_source
from .data.benchmark import BenchmarkFolder, FirstScans
from .data.readers import read_mask
from .evaluate import evaluate_folder
from .inference import Predictor, resolve_model
from .results import provenance
from .store import Project
from .tasks import load_tasks_json

#: The strategies run by default; :data:`CHOICES` also has "error" (most expected error first).
STRATEGIES = ("uncertainty", "random")
CHOICES = ("uncertainty", "random", "error")
#: How picked scans are corrected: the ground truth (default), or clicks to IoU 0.90.
CORRECTIONS = ("truth", "clicks")


@dataclass(frozen=True)
class SimulationConfig:
    """One simulated annotation campaign.

    Attributes:
        task: the us-universal task.
        rounds: correction rounds after round 0.
        per_round: scans corrected per round (K).
        start: scans corrected before round 0.
        pool: train scans in the project (a seeded choice; the rest of the pool is unlabelled).
        strategies: which picks to compare.
        seed: the pool, the start scans and the random picks.
        test_scans: first N test scans scored (0: all).
        first_steps: training steps of round 0 (new decoders learn from scratch).
        steps: training steps of every later round (incremental, from the last version).
        device: ``auto``, ``cpu``, ``cuda`` ...
        like: checkpoint whose architecture the fresh round-0 network copies (not its
            weights, but its click refinement head's when ``clicks`` corrects); default: the
            shipped model's.
        correct: how picked scans are corrected, each mode run for every strategy from the
            same round 0: ``truth`` (the ground truth) and/or ``clicks`` (simulated clicks).
    """

    task: str
    rounds: int = 3
    per_round: int = 10
    start: int = 10
    pool: int = 200
    strategies: tuple[str, ...] = STRATEGIES
    seed: int = 0
    test_scans: int = 0
    first_steps: int = 300
    steps: int = 150
    device: str = "auto"
    like: str | None = None
    correct: tuple[str, ...] = ("truth",)
    retrain: dict[str, Any] = field(default_factory=dict)
    """Other :class:`~propl.train.project.RetrainConfig` fields (e.g. ``{"lr": 1e-3}``)."""

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in CHOICES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(CHOICES)}")
        modes = [c for c in self.correct if c not in CORRECTIONS]
        if modes or not self.correct:
            raise ValueError(f"--correct {modes}: choose from {', '.join(CORRECTIONS)}")
        if self.rounds < 1 or self.per_round < 1 or self.start < 2:
            raise ValueError("need rounds >= 1, per_round >= 1 and start >= 2")
        if self.pool < self.start + self.rounds * self.per_round:
            raise ValueError(
                f"a pool of {self.pool} scans cannot give {self.start} + {self.rounds} x "
                f"{self.per_round} corrections"
            )

    def command(self, option_flags: Sequence[str] = ()) -> str:
        """The ``propl simulate`` line that redoes this campaign (``--data DATA`` stands for
        the folder; *option_flags*: ProPL's options, from ``option_flags``)."""
        line = (
            f"propl simulate --data DATA --task {self.task} --rounds {self.rounds} "
            f"--per-round {self.per_round} --start {self.start} --pool {self.pool} "
            f"--seed {self.seed} --test-scans {self.test_scans} --first-steps "
            f"{self.first_steps} --steps {self.steps}"
        )
        if self.strategies != STRATEGIES:
            line += " --strategies " + " ".join(self.strategies)
        if self.correct != ("truth",):
            line += " --correct " + " ".join(self.correct)
        if self.like:
            line += f" --like {shlex.quote(self.like)}"
        if "lr" in self.retrain:
            line += f" --lr {self.retrain['lr']:g}"
        if self.retrain.get("cache_features") is False:
            line += " --no-feature-cache"
        if "feature_views" in self.retrain:
            line += f" --feature-views {self.retrain['feature_views']}"
        return line + "".join(f" {flag}" for flag in option_flags)


Progress = Callable[[str], None]


def _fresh_model(path: Path, task: str, like: Path, seed: int, head: bool = False) -> Path:
    """A network shaped like the shipped one that has never seen a label: ImageNet encoder,
    new decoders (initialised from ``seed``) and prompt tokens for ``task`` only; ``head``:
    with ``like``'s click refinement head (project retraining tunes it from there)."""
    from .checkpoint import load_checkpoint, save_checkpoint
    from .models import ProPLConfig, ProPLNet
    from .train.recipe import seeded

    source = load_checkpoint(like).model
    config = source.config.to_dict() | {"tasks": [task], "pretrained": True}
    with seeded(seed):
        model = ProPLNet(ProPLConfig(**config))
    if head and model.refine is not None and source.refine is not None:
        model.refine.load_state_dict(source.refine.state_dict())
    save_checkpoint(model, path, {"simulation": "round 0 start"})
    return path


def _head_tuning(clicks: bool) -> dict[str, int]:
    """Retraining settings for the click head: the product's where clicks correct; none where
    the ground truth does (the head is never used there)."""
    return {} if clicks else {"refine_steps": 0}


def _retrain(
    project: Path, config: SimulationConfig, steps: int, init: Path | None, **fixed: Any
) -> dict:
    """One retraining round through the project path; the new version becomes current."""
    from .train.project import RetrainConfig, retrain

    fields: dict[str, Any] = {"seed": config.seed, "device": config.device}
    fields |= config.retrain | {"steps": steps, "tasks": (config.task,)} | fixed
    settings = RetrainConfig(**fields)
    result: dict[str, Any] = {}
    t0 = time.perf_counter()
    for event in retrain(project, settings, init=init):
        if event.kind == "version":
            result = dict(event.data)
    with Project.open(project) as p:
        if p.version(result["version"]).usable:
            AnnotationSession(p).use_version(
                result["version"], "simulation: follow every new version"
            )
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["settings"] = settings.to_dict()  # every RetrainConfig field, defaults included
    return result


def _current_predictor(project: Project, config: SimulationConfig) -> Predictor:
    """The project's current version as the plugin would run it (MC uncertainty)."""
    model = project.current_model_path() or resolve_model(None)
    return Predictor.from_checkpoint(model, device=config.device)


def _score(project: Path, folder: BenchmarkFolder, config: SimulationConfig) -> dict[str, Any]:
    with Project.open(project, read_only=True) as p:
        predictor = _current_predictor(p, config)
    result = evaluate_folder(
        predictor, FirstScans(folder.root, config.test_scans), "test", [config.task]
    )
    row = result["per_task"][config.task]
    return {
        "dice": row["dice"],
        "iou": row["iou"],
        "hd95": row["hd95"],
        "n": row["n"],
        "pixel_auroc": result["uncertainty_auroc"],
    }


def _correct(
    project: Path,
    config: SimulationConfig,
    strategy: str,
    masks: dict[str, Path],
    rng: np.random.Generator,
    mode: str = "truth",
) -> dict[str, Any]:
    """Predict the unreviewed pool with the current version, pick K, confirm the ground truth
    (``mode`` ``truth``) or what simulated clicks made of the pseudo-label (``clicks``)."""
    task = config.task
    with Project.open(project) as p:
        session = AnnotationSession(p, task, author=f"simulate:{strategy}")
        predictor = _current_predictor(p, config)
        unreviewed = [s for s in p.scan_ids() if p.review(s, task, with_mask=False) is None]
        predictions, errors = {}, {}
        for scan_id in unreviewed:
            pred = predict_scan(p, predictor, scan_id, task)
            predictions[scan_id], errors[scan_id] = pred.mask, float(pred.expected_error.max())
        if strategy == "uncertainty":
            picked = session.queue().ids[: config.per_round]
        elif strategy == "error":  # ties (none in practice) keep the pool's order
            picked = sorted(unreviewed, key=lambda s: -errors[s])[: config.per_round]
        else:
            picked = [str(s) for s in rng.choice(unreviewed, config.per_round, replace=False)]
        edited, corrections = 0, []
        for scan_id in picked:
            truth = _truth(masks[scan_id])
            if mode == "clicks":
                corrections.append(confirm_with_clicks(session, predictor, scan_id, truth))
                truth = corrections[-1].mask  # the label now stored
            else:
                _confirm(session, scan_id, truth)
            edited += int(((predictions[scan_id] > 0) != (truth > 0)).sum())
        confidence = [p.prediction_confidence(s, task) for s in picked]
    return {
        "picked": picked,
        "edited_pixels": edited,
        "picked_confidence": float(np.mean([c for c in confidence if c is not None])),
    } | ({"clicks": click_summary(corrections)} if mode == "clicks" else {})


def _truth(mask_path: Path) -> np.ndarray:
    return (read_mask(mask_path) > 0).astype(np.uint8)[None]


def _confirm(session: AnnotationSession, scan_id: str, truth: np.ndarray) -> None:
    """The annotator opens the scan, draws the ground truth and confirms every frame: a label
    (corrected where it differs from the prediction), by the plugin's own rule."""
    session.open_scan(scan_id)
    session.confirm(truth, whole=True)


def build_pool(
    path: Path, folder: BenchmarkFolder, config: SimulationConfig
) -> tuple[dict[str, Path], list[str]]:
    """The project: a seeded choice of the task's train scans, the first ``start`` corrected.
    Returns {scan id: ground-truth mask file} and the start scan ids."""
    samples = sorted(folder.samples(config.task, "train"), key=lambda s: s.id)
    if config.pool > len(samples):
        raise ValueError(
            f"{config.task} has {len(samples)} train scans; a pool of {config.pool} was asked"
        )
    order = np.random.Generator(np.random.PCG64(config.seed)).permutation(len(samples))
    masks: dict[str, Path] = {}
    start: list[str] = []
    tasks = [t for t in load_tasks_json(folder.root / "tasks.json") if t.id == config.task]
    with Project.create(path, tasks=tasks) as p:
        session = AnnotationSession(p, config.task)
        for i in order[: config.pool]:
            scan_id = p.add_file(samples[i].image)
            masks[scan_id] = samples[i].mask
            if len(start) < config.start:
                _confirm(session, scan_id, _truth(samples[i].mask))
                start.append(scan_id)
    return masks, start


def simulate(
    data: str | Path,
    config: SimulationConfig,
    workdir: str | Path,
    progress: Progress = lambda message: None,
) -> dict[str, Any]:
    """Run the simulation (see the module docstring); returns the results document."""
    folder = BenchmarkFolder(data)
    if config.task not in folder.task_ids():
        raise KeyError(f"unknown task {config.task!r}; {folder.root} has {folder.task_ids()}")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = work / "round0.zarr"
    shutil.rmtree(base, ignore_errors=True)
    progress(f"importing {config.pool} {config.task} train scans")
    like = resolve_model(config.like)
    # fail early; the head's source named as given (the shipped model: "shipped"), not by
    # this machine's path
    head = (
        refine_head_source(like) | {"copied_from": config.like or "shipped"}
        if "clicks" in config.correct
        else None
    )
    masks, start = build_pool(base, folder, config)
    init = _fresh_model(work / "fresh", config.task, like, config.seed, head is not None)
    progress(f"round 0: training new decoders on {len(start)} corrected scans")
    # new decoders: nothing to keep, so no anchor toward their random start; the click head is
    # tuned only where clicks correct (else it is never used)
    first = _retrain(
        base, config, config.first_steps, init, anchor=0.0, **_head_tuning(head is not None)
    )
    round0 = _score(base, folder, config)
    progress(f"round 0: test Dice {round0['dice']:.2f}")
    runs: dict[str, list[dict[str, Any]]] = {}
    for mode, strategy in ((m, s) for m in config.correct for s in config.strategies):
        name = strategy if mode == "truth" else f"{strategy}+{mode}"
        project = work / f"{name}.zarr"
        shutil.rmtree(project, ignore_errors=True)
        shutil.copytree(base, project)
        rng = np.random.default_rng(config.seed)
        rows = [{"round": 0, "retrain": first, **round0, "edited_pixels": 0, "picked": start}]
        for r in range(1, config.rounds + 1):
            picked = _correct(project, config, strategy, masks, rng, mode)
            version = _retrain(
                project, config, config.steps, None, **_head_tuning(mode == "clicks")
            )
            scores = _score(project, folder, config)
            rows.append({"round": r, **picked, "retrain": version, **scores})
            clicks = (
                f", {picked['clicks']['mean']:.1f} clicks per scan" if "clicks" in picked else ""
            )
            progress(f"{name} round {r}: test Dice {scores['dice']:.2f}{clicks}")
        runs[name] = rows
    doc = results(config, runs, time.perf_counter() - t0)
    if head is not None:
        doc["refine_head"] = head
    return doc


def results(
    config: SimulationConfig, runs: dict[str, list[dict[str, Any]]], seconds: float
) -> dict[str, Any]:
    """The results document (the keys the issue fixes, then the details)."""
    curves = {s: [row["dice"] for row in rows] for s, rows in runs.items()}
    gains = {s: c[-1] - c[0] for s, c in curves.items()}
    u, r = _ratio_pair(curves)
    final = runs.get(u) or next(iter(runs.values()))
    doc: dict[str, Any] = {
        "task": config.task,
        "rounds": config.rounds,
        "per_round": config.per_round,
        "strategies": curves,
        "pixel_auroc": final[-1]["pixel_auroc"],
        "gain": gains,
        "gain_ratio": (gains[u] / gains[r] if {u, r} <= gains.keys() and gains[r] > 0 else None),
        "targets": {"gain_ratio": 1.5, "pixel_auroc": 0.90},
        "edited_pixels": {s: [row["edited_pixels"] for row in rows] for s, rows in runs.items()},
        "pixel_auroc_per_round": {
            s: [row["pixel_auroc"] for row in rows] for s, rows in runs.items()
        },
        "config": asdict(config),
        "provenance": provenance(),
        "seconds": round(seconds, 1),
        "per_round_details": runs,
    }
    clicks = {  # per round; None for round 0 (its start scans take the ground truth)
        s: [row.get("clicks") for row in rows]
        for s, rows in runs.items()
        if any("clicks" in row for row in rows)
    }
    return doc | ({"clicks": clicks} if clicks else {})


def _ratio_pair(runs: Collection[str]) -> tuple[str, str]:
    """The runs the gain ratio compares: uncertainty and random corrected with the ground
    truth, else (``--correct clicks`` alone) with clicks."""
    if "uncertainty" not in runs and "uncertainty+clicks" in runs:
        return "uncertainty+clicks", "random+clicks"
    return "uncertainty", "random"


def table(doc: dict[str, Any]) -> str:
    """Markdown: test Dice per round and strategy, edited pixels, the targets."""
    rounds = range(doc["rounds"] + 1)
    lines = [
        f"Simulated annotator, task `{doc['task']}`: {doc['config']['start']} corrected scans, "
        f"then {doc['rounds']} rounds of {doc['per_round']} corrections (pool of "
        f"{doc['config']['pool']} train scans; test Dice on "
        f"{doc['per_round_details'][next(iter(doc['strategies']))][0]['n']} test scans).",
        "",
        "| strategy | " + " | ".join(f"round {r}" for r in rounds) + " | gain | edited pixels |",
        "|---|" + "---|" * (len(rounds) + 2),
    ]
    for s, curve in doc["strategies"].items():
        edited = sum(doc["edited_pixels"][s])
        lines.append(
            f"| {s} | "
            + " | ".join(f"{d:.2f}" for d in curve)
            + f" | {doc['gain'][s]:+.2f} | {edited:,} |"
        )
    ratio, pair = doc["gain_ratio"], _ratio_pair(doc["strategies"])
    if ratio is not None:
        ratio_text = f"**{ratio:.2f}**"
    elif set(pair) <= doc["strategies"].keys():
        ratio_text = "n/a (random gained nothing)"
    else:
        ratio_text = "n/a (needs both strategies)"
    lines += [
        "",
        f"Gain ratio ({pair[0]} / {pair[1]}) after {doc['rounds']} rounds: {ratio_text}"
        + f" (target >= {doc['targets']['gain_ratio']}); pixel uncertainty AUROC for errors "
        f"(final uncertainty-picked model): **{doc['pixel_auroc']:.3f}** "
        f"(target >= {doc['targets']['pixel_auroc']}).",
    ]
    return "\n".join(lines + click_table(doc)) + "\n"


def svg(doc: dict[str, Any], width: int = 560, height: int = 320) -> str:
    """A line chart of test Dice per round, one line per strategy (no plotting library)."""
    colours = {"uncertainty": "#d62728", "random": "#1f77b4"}
    curves = doc["strategies"]
    values = [v for c in curves.values() for v in c]
    lo, hi = min(values), max(values)
    pad = max(1.0, 0.1 * (hi - lo))
    lo, hi = lo - pad, hi + pad
    left, right, top, bottom = 60, 20, 30, 50
    n = doc["rounds"]

    def xy(r: int, v: float) -> tuple[float, float]:
        x = left + (width - left - right) * r / max(n, 1)
        y = top + (height - top - bottom) * (hi - v) / (hi - lo)
        return x, y

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="18" text-anchor="middle">{doc["task"]}: test Dice per '
        f"round ({doc['per_round']} corrections per round)</text>",
    ]
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        _, y = xy(0, v)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.1f}</text>'
        )
    for r in range(n + 1):
        x, _ = xy(r, lo)
        parts.append(
            f'<text x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle">{r}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 10}" text-anchor="middle">'
        "round</text>"
    )
    for i, (s, curve) in enumerate(curves.items()):
        colour = colours.get(s.split("+")[0], "#333")
        dash = ' stroke-dasharray="6 3"' if "+" in s else ""  # corrected with clicks
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(r, v) for r, v in enumerate(curve)))
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        for r, v in enumerate(curve):
            x, y = xy(r, v)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{left + 10}" y="{top + 16 + 16 * i}" fill="{colour}">{s}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write(doc: dict[str, Any], out: str | Path) -> list[Path]:
    """Write the JSON, and the markdown table and SVG chart beside it, each atomically (a
    crash leaves the previous file or the new one, never half of one)."""
    from .files import atomic_write_bytes
    from .results import write_json

    out = Path(out)
    write_json(out, doc)
    md, chart = out.with_suffix(".md"), out.with_suffix(".svg")
    atomic_write_bytes(md, table(doc).encode())
    atomic_write_bytes(chart, svg(doc).encode())
    return [out, md, chart]


__all__ = [
    "CORRECTIONS",
    "STRATEGIES",
    "SimulationConfig",
    "build_pool",
    "results",
    "simulate",
    "svg",
    "table",
    "write",
]
