"""The exam a scan says it comes from, and the task prompt to suggest for it.

A DICOM ultrasound file names its exam: Image Type (0008,0008) value 3 of the US Image module
(defined terms such as ``EPICARDIAL``, ``OBSTETRICAL``, ``BREAST``, ``GYNECOLOGY``) and, in some
files, Body Part Examined (0018,0015). That is the scanner's word for the anatomy, so it holds on
scans from any site, where the task fit (:mod:`propl.task_fit`: does the scan look like a task's
*training* scans) flags every scan of a new site: pydicom's two SonoSite echo cines fit
``left_heart`` no better than a lymph node does, yet both say ``EPICARDIAL``.

:func:`suggest_task` combines the two: a scan that fits a task's training scans gets that task;
one that fits none gets the task of its exam's organ when exactly one of the model's tasks
scans that organ; otherwise no suggestion (the prompt stays as it is). Terms that name no single
organ (``SMALL PARTS``: thyroid, breast, testis or a lymph node; ``ABDOMINAL``; ``PELVIC``) give
no hint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .task_fit import FLAG_BELOW, TaskMatch, best_task, describe_ranking
from .tasks import DEFAULT_TASKS, Task

#: DICOM US Image Type value 3 and Body Part Examined terms -> the organ scanned, in the words
#: of :attr:`propl.tasks.Task.organ`. Only terms that name one organ are here.
EXAM_ORGANS: dict[str, str] = {
    # heart
    "EPICARDIAL": "heart",
    "TRANSTHORACIC": "heart",
    "TRANSESOPHAGEAL": "heart",
    "TEE": "heart",
    "INTRACARDIAC": "heart",
    "ECHOCARDIOGRAPHY": "heart",
    "CARDIAC": "heart",
    "HEART": "heart",
    # obstetric scans are of a fetus (a fetal heart exam is not a head's)
    "OBSTETRICAL": "fetus",
    "OBSTETRIC": "fetus",
    "FETUS": "fetus",
    # breast
    "BREAST": "breast",
    # gynaecology: the ovaries (and uterus)
    "GYNECOLOGY": "ovary",
    "GYNECOLOGICAL": "ovary",
    "ENDOVAGINAL": "ovary",
    "TRANSVAGINAL": "ovary",
    "OVARY": "ovary",
    # thyroid (Body Part Examined; the US Image Type says SMALL PARTS, which is not one organ)
    "THYROID": "thyroid",
}


@dataclass(frozen=True)
class Exam:
    """What a file says it is an exam of.

    Attributes:
        term: the DICOM term as written (e.g. ``"EPICARDIAL"``).
        organ: the organ it names (e.g. ``"heart"``).
    """

    term: str
    organ: str


@dataclass(frozen=True)
class Suggestion:
    """The task prompt to suggest for a scan, and why (shown beside the prompt).

    Attributes:
        task: the task id, or None: leave the prompt as it is.
        why: one line for the user (empty when there is nothing to say).
    """

    task: str | None
    why: str


def exam_of(header: Mapping[str, Any] | None) -> Exam | None:
    """The exam a DICOM header (``{keyword: value}``, :attr:`ScanMeta.header`) names: Body Part
    Examined first, then Image Type value 3; None where neither names one organ (or no
    header: PNG, TIFF, video)."""
    if not header:
        return None
    candidates: list[Any] = [header.get("BodyPartExamined")]
    image_type = header.get("ImageType")
    if isinstance(image_type, Sequence) and not isinstance(image_type, str):
        candidates.append(image_type[2] if len(image_type) > 2 else None)
    elif isinstance(image_type, str):  # a single string "ORIGINAL\\PRIMARY\\EPICARDIAL"
        parts = image_type.split("\\")
        candidates.append(parts[2] if len(parts) > 2 else None)
    for value in candidates:
        term = str(value).strip().upper() if value is not None else ""
        if term in EXAM_ORGANS:
            return Exam(term, EXAM_ORGANS[term])
    return None


def tasks_of_organ(
    organ: str, tasks: Iterable[str], known: Iterable[Task] = DEFAULT_TASKS
) -> list[str]:
    """The task ids of ``tasks`` whose organ (from ``known``, the task registry: a later entry
    for the same id wins, e.g. a project's own tasks after the built-in ones) is ``organ``."""
    organs = {t.id: t.organ.lower() for t in known}
    return [t for t in tasks if organs.get(t) == organ.lower()]


def suggest_task(
    ranking: Sequence[TaskMatch],
    exam: Exam | None,
    tasks: Sequence[str],
    known: Iterable[Task] = DEFAULT_TASKS,
    below: float = FLAG_BELOW,
) -> Suggestion:
    """The task to suggest among ``tasks`` (the prompts on offer): the one the scan fits
    (:func:`~propl.task_fit.best_task`), else the only one of its exam's organ, else none.

    The line says which and why; where the scan fits no task and its exam decides, it says both
    (the scan is unlike the training scans, so the confidence may mislead).
    """
    best = best_task(ranking, below)
    if best is not None and best.task in tasks:
        return Suggestion(best.task, describe_ranking(ranking, below))
    matching = tasks_of_organ(exam.organ, tasks, known) if exam is not None else []
    if exam is not None and len(matching) == 1:
        why = f"task: {matching[0]} (exam: {exam.term.lower()}"
        why += "; unlike its training scans)" if ranking else ")"
        return Suggestion(matching[0], why)
    return Suggestion(None, describe_ranking(ranking, below))
