"""The simulated annotator's click correction of one scan (``propl simulate --correct clicks``).

The annotator opens a scan showing the model's pseudo-label and clicks, frame by frame, with
the refinement head (:class:`~propl.annotation.interaction.ScanInteraction`, as the Review
widget's click tool does) until the frame's IoU with the ground truth reaches
:data:`CLICK_TARGET` or :data:`~propl.interactive.MAX_CLICKS` clicks were made; each click
goes to the largest error region (:func:`propl.interactive.simulate`). What the clicks made,
not the ground truth, is confirmed, with the clicks in the review's provenance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .annotation import AnnotationSession
from .annotation.interaction import ScanInteraction
from .checkpoint import read_config
from .inference import Predictor
from .interactive import MAX_CLICKS, Click, RefineUnavailableError
from .interactive import simulate as simulate_clicks

CLICK_TARGET = 0.90
"""IoU with the ground truth at which the simulated annotator stops clicking a frame."""


@dataclass(frozen=True)
class ClickCorrection:
    """One scan fixed with clicks.

    Attributes:
        mask: ``(F, H, W)`` uint8, what the clicks made (the pseudo-label where none was needed).
        ious: per frame, the IoU with the ground truth after 0, 1, ... clicks.
        clicks: per frame, the clicks made.
    """

    mask: np.ndarray
    ious: tuple[tuple[float, ...], ...]
    clicks: tuple[int, ...]

    @property
    def reached(self) -> bool:
        """Whether every frame reached :data:`CLICK_TARGET`."""
        return all(ious[-1] >= CLICK_TARGET for ious in self.ious)


def click_to_truth(
    interaction: ScanInteraction,
    start: np.ndarray,
    truth: np.ndarray,
    max_clicks: int = MAX_CLICKS,
) -> ClickCorrection:
    """Click every frame of ``start`` toward ``truth`` (both ``(F, H, W)``) until IoU
    :data:`CLICK_TARGET` or ``max_clicks`` clicks."""
    if start.shape != truth.shape:
        raise ValueError(f"start mask {start.shape} and ground truth {truth.shape} differ")
    masks = np.array(start > 0, np.uint8)
    ious, counts = [], []
    for f in range(len(truth)):
        masks[f], frame_ious = _click_frame(interaction, f, masks[f], truth[f], max_clicks)
        ious.append(tuple(frame_ious))
        counts.append(len(interaction.clicks(f)))
    return ClickCorrection(masks, tuple(ious), tuple(counts))


def _click_frame(
    interaction: ScanInteraction, f: int, start: np.ndarray, truth: np.ndarray, max_clicks: int
) -> tuple[np.ndarray, list[float]]:
    """Frame ``f``'s mask after the simulated clicks, and the IoU after 0, 1, ... clicks."""
    made = [start]

    def refine(mask: np.ndarray | None, clicks: Sequence[Click]) -> np.ndarray:
        made[0] = interaction.click(f, np.asarray(mask), clicks[-1]).mask
        return made[0]

    ious = simulate_clicks(refine, truth, start, max_clicks, CLICK_TARGET)
    return made[0], ious


def confirm_with_clicks(
    session: AnnotationSession, predictor: Predictor, scan_id: str, truth: np.ndarray
) -> ClickCorrection:
    """Open ``scan_id`` (its pseudo-label), fix it with clicks and confirm every frame; the
    clicks and the IoUs they reached go into the review's provenance."""
    view = session.open_scan(scan_id)
    interaction = ScanInteraction(predictor, view.image, view.task, view.scan.region)
    result = click_to_truth(interaction, view.mask, truth)
    provenance = interaction.provenance() | {
        "simulated": {"target_iou": CLICK_TARGET, "iou": [list(i) for i in result.ious]}
    }
    session.store(session.review_save("accepted", result.mask, provenance=provenance))
    return result


def click_summary(corrections: Sequence[ClickCorrection]) -> dict[str, Any]:
    """One round's clicks: per scan, their mean and total, how many scans reached
    :data:`CLICK_TARGET`, and the mean IoU before and after clicking."""
    per_scan = [sum(c.clicks) for c in corrections]
    before = [float(np.mean([i[0] for i in c.ious])) for c in corrections]
    after = [float(np.mean([i[-1] for i in c.ious])) for c in corrections]
    return {
        "per_scan": per_scan,
        "mean": float(np.mean(per_scan)) if per_scan else 0.0,
        "total": int(sum(per_scan)),
        "reached": sum(c.reached for c in corrections),
        "scans": len(corrections),
        "iou_before": float(np.mean(before)) if before else None,
        "iou_after": float(np.mean(after)) if after else None,
    }


def click_table(doc: dict[str, Any]) -> list[str]:
    """Markdown lines of a ``propl simulate`` results document's clicks per round (none when
    no run corrected with clicks), each run's test Dice beside them."""
    runs = doc.get("clicks") or {}
    if not runs:
        return []
    rounds = range(1, doc["rounds"] + 1)
    lines = [
        "",
        f"Clicks per corrected scan (simulated clicks until IoU {CLICK_TARGET:.2f} with the "
        f"ground truth or {MAX_CLICKS} clicks; in brackets the scans that reached it, then the "
        "test Dice after the round; round 0's start scans take the ground truth):",
        "",
        "| run | " + " | ".join(f"round {r}" for r in rounds) + " | clicks | reached |",
        "|---|" + "---|" * (len(rounds) + 2),
    ]
    for name, per_round in runs.items():
        dice, cells = doc["strategies"][name], []
        for r in rounds:
            c = per_round[r]
            cells.append(f"{c['mean']:.1f} ({c['reached']}/{c['scans']}) · {dice[r]:.2f}")
        total = sum(per_round[r]["total"] for r in rounds)
        reached = sum(per_round[r]["reached"] for r in rounds)
        scans = sum(per_round[r]["scans"] for r in rounds)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {total} | {reached}/{scans} |")
    head = doc.get("refine_head") or {}
    if head:
        trained = (
            ""
            if head.get("trained")
            else " **It was never trained** (no `propl train-refine` record in its metadata): "
            "these clicks say nothing about a trained head."
        )
        lines += [
            "",
            f"The refinement head is {_owner(head['copied_from'])}, trained on that model's "
            "encoder; "
            "the simulated network's encoder starts from ImageNet and is retrained each round, "
            "and each round's retraining tunes the head on that round's corrections, keeping "
            "it only if the held-back corrections click no worse." + trained,
        ]
    lines += _tuning_lines(doc, list(runs))
    return lines


def _owner(source: str) -> str:
    return "the shipped model's" if source == "shipped" else f"{source}'s"


def _tuning_lines(doc: dict[str, Any], names: list[str]) -> list[str]:
    """Per click run: in which rounds the tuned head was kept, with the held-back click IoU
    (after 3 clicks) before and after tuning."""
    details = doc.get("per_round_details") or {}
    out: list[str] = []
    for name in names:
        cells = []
        for row in details.get(name, []):
            tune = (row.get("retrain") or {}).get("refine") or {}
            if tune.get("trained"):
                iou = tune["held_back_click_iou"]
                verdict = "kept" if tune["kept"] else "put back"
                cells.append(
                    f"round {row['round']} {iou['before']:.2f} → {iou['after']:.2f} ({verdict})"
                )
        if cells:
            out += [
                "",
                f"Click head tuning, {name} (held-back click IoU): " + "; ".join(cells) + ".",
            ]
    return out


def refine_head_source(like: Path) -> dict[str, Any]:
    """What the simulation's refinement head is: copied from ``like``, and whether ``like``'s
    head was ever trained (``propl train-refine`` records that in the metadata).

    Raises:
        RefineUnavailableError: ``like`` has no refinement head.
    """
    import json

    from .checkpoint import CONFIG_NAME

    if read_config(like).get("refine") is None:
        raise RefineUnavailableError(
            f"--correct clicks needs a model with the click refinement head; {like} has none "
            "(give it one with `propl train-refine`, or pass --like a model that has one)"
        )
    config_file = like / CONFIG_NAME if like.is_dir() else like.with_name(CONFIG_NAME)
    metadata = json.loads(config_file.read_text()).get("metadata") or {}
    return {"copied_from": str(like), "trained": "refine" in metadata}


__all__ = [
    "CLICK_TARGET",
    "ClickCorrection",
    "click_summary",
    "click_table",
    "click_to_truth",
    "confirm_with_clicks",
    "refine_head_source",
]
