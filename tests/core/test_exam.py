"""The exam a DICOM file names, and the task prompt suggested from it and the task fit."""

from __future__ import annotations

import pytest

from propl.exam import Exam, exam_of, suggest_task, tasks_of_organ
from propl.task_fit import TaskMatch
from propl.tasks import DEFAULT_TASKS

TASKS = [t.id for t in DEFAULT_TASKS]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"ImageType": ["DERIVED", "PRIMARY", "EPICARDIAL", "0001"]}, Exam("EPICARDIAL", "heart")),
        ({"ImageType": ["ORIGINAL", "PRIMARY", "OBSTETRICAL"]}, Exam("OBSTETRICAL", "fetus")),
        ({"ImageType": "ORIGINAL\\PRIMARY\\gynecology"}, Exam("GYNECOLOGY", "ovary")),
        # Body Part Examined names the organ more precisely than the exam type
        (
            {"BodyPartExamined": "THYROID", "ImageType": ["ORIGINAL", "PRIMARY", "SMALL PARTS"]},
            Exam("THYROID", "thyroid"),
        ),
        # small parts: thyroid, breast, testis or lymph node - no single organ
        ({"ImageType": ["ORIGINAL", "PRIMARY", "SMALL PARTS"]}, None),
        ({"ImageType": ["ORIGINAL", "PRIMARY"]}, None),
        ({"ImageType": None, "BodyPartExamined": ""}, None),
        ({}, None),
        (None, None),
    ],
)
def test_exam_of_reads_the_organ_a_header_names(header, expected) -> None:
    assert exam_of(header) == expected


def test_tasks_of_organ_uses_the_registry() -> None:
    assert tasks_of_organ("heart", TASKS) == ["left_heart"]
    assert tasks_of_organ("fetus", TASKS) == ["fetal_head"]
    assert tasks_of_organ("heart", ["breast_lesion"]) == []
    assert tasks_of_organ("spleen", TASKS) == []


def test_a_scan_that_fits_a_task_gets_it_whatever_the_exam_says() -> None:
    ranking = [TaskMatch("thyroid_nodule", 0.9, 0.5), TaskMatch("left_heart", 0.0, 3.0)]
    got = suggest_task(ranking, Exam("EPICARDIAL", "heart"), TASKS)
    assert got.task == "thyroid_nodule"
    assert "looks most like it" in got.why


def test_an_echo_from_another_site_gets_the_heart_task_from_its_exam() -> None:
    """pydicom's SonoSite echo fits no task's training scans (0.00 for left_heart, 0.02 for
    ovarian_tumor): the fit alone suggests nothing, the exam suggests the heart task and the
    line says the scan is unlike the training scans."""
    ranking = [TaskMatch("ovarian_tumor", 0.02, 4.0), TaskMatch("left_heart", 0.0, 5.0)]
    got = suggest_task(ranking, Exam("EPICARDIAL", "heart"), TASKS)
    assert got.task == "left_heart"
    assert "(exam: epicardial" in got.why and "unlike its training scans" in got.why
    # without task-fit statistics the exam still decides, and says nothing of a fit
    plain = suggest_task([], Exam("EPICARDIAL", "heart"), TASKS)
    assert plain.task == "left_heart" and "unlike" not in plain.why


def test_no_suggestion_without_a_fit_or_a_single_task_for_the_exam() -> None:
    ranking = [TaskMatch("ovarian_tumor", 0.02, 4.0)]
    none = suggest_task(ranking, None, TASKS)
    assert none.task is None and "like no task's training scans" in none.why
    # the model has no task for the organ
    assert suggest_task(ranking, Exam("EPICARDIAL", "heart"), ["breast_lesion"]).task is None
    # two tasks of the same organ: the exam cannot choose
    two = [*DEFAULT_TASKS, DEFAULT_TASKS[3].__class__("right_heart", "heart", "ventricle")]
    got = suggest_task(ranking, Exam("EPICARDIAL", "heart"), [*TASKS, "right_heart"], known=two)
    assert got.task is None
    # a fitted task the prompt list does not offer is not suggested
    fits = [TaskMatch("fetal_head", 0.9, 0.5)]
    assert suggest_task(fits, None, ["breast_lesion"]).task is None


def test_pydicom_echo_names_a_heart_exam() -> None:
    """On disk only (``get_testdata_file`` downloads what is missing)."""
    data = pytest.importorskip("pydicom.data")
    from pathlib import Path

    from propl.data.readers import read_scan

    path = Path(data.__file__).parent / "test_files" / "examples_ybr_color.dcm"
    if not path.is_file():
        pytest.skip("pydicom's test files are not installed")
    with pytest.warns(Warning):  # its ultrasound region lies outside the frame
        _, meta = read_scan(path)
    assert exam_of(meta.header) == Exam("EPICARDIAL", "heart")


def test_a_projects_own_task_is_found_by_its_organ() -> None:
    """A task added to a project (New task…) carries its organ: an exam of that organ finds it;
    a later registry entry for an id replaces the built-in one."""
    from propl.tasks import Task

    known = [*DEFAULT_TASKS, Task("brachial_plexus", "neck", "nerve"), Task("left_heart", "chest")]
    tasks = [*TASKS, "brachial_plexus"]
    assert tasks_of_organ("neck", tasks, known) == ["brachial_plexus"]
    assert tasks_of_organ("heart", tasks, known) == []
    assert suggest_task([], Exam("NECK", "neck"), tasks, known).task == "brachial_plexus"
