"""The ``propl`` command line: train, evaluate, predict, benchmark. Thin over the library."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .bench.profiles import PROFILES

EXIT_USAGE = 2

# The training methods (``propl.train.methods.METHODS``), spelled out so that building the parser
# imports no torch; a test keeps this list equal to the registry.
METHOD_CHOICES = ["propl", "supervised", "mean-teacher", "unimatch", "full"]
DEVICE_HELP = "auto (cuda > mps > cpu), cuda, mps or cpu"


class CLIError(Exception):
    """A user-facing error: printed as ``propl: error: ...`` without a traceback."""


def _add_propl_options(p: argparse.ArgumentParser) -> None:
    """ProPL's variants: --pseudo-label, --view, --teacher and --unsup-weight (other methods
    ignore them)."""
    p.add_argument(
        "--pseudo-label",
        default="uplc",
        choices=["uplc", "weighted", "agreement", "hermes"],
        help="ProPL pseudo-label rule: the paper's UPLC, or an alternative",
    )
    p.add_argument(
        "--view",
        choices=["weak", "strong"],
        help="ProPL: decoder 2 learns the pseudo-labels on the weak view (the paper's) or on a "
        "photometric + CutMix view (default: strong; weak in the new-task recipe, which trains "
        "on cached features, and in propl benchmark ssl's paper setting; see "
        "propl.train.methods.LOOP_OPTIONS)",
    )
    p.add_argument(
        "--teacher",
        default="self",
        choices=["self", "ema"],
        help="ProPL: pseudo-labels from the model's own decoder 1 (paper) or from decoder 1 of "
        "an exponential moving average of the model",
    )
    p.add_argument(
        "--unsup-weight",
        type=float,
        metavar="LAMBDA",
        help="ProPL: weight of decoder 2's loss on pseudo-labels (default 1 with the strong "
        "view; the paper's lambda, 6, with the weak view)",
    )


def _add_common_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="checkpoint directory (model.safetensors + model.json) written by `propl train` "
        "(default: the shipped universal model)",
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument(
        "--uncertainty",
        default="mc",
        choices=["mc", "disagreement", "none"],
        help="mc: MC dropout of decoder 1 (T=4); disagreement: decoder 1 vs 2 (faster); none",
    )


def _add_results(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--results",
        type=Path,
        default=Path("benchmarks/results"),
        help=f"folder of {what} (default benchmarks/results)",
    )


def _add_feature_cache(parser: argparse.ArgumentParser, when: str = "") -> None:
    parser.add_argument(
        "--no-feature-cache",
        action="store_true",
        help=f"{when}run the frozen encoder every step on augmented images instead of encoding "
        "each frame once per weak view",
    )
    parser.add_argument(
        "--feature-views",
        type=int,
        metavar="N",
        help="weak views of each frame encoded once and cached, the first unaugmented (4; 12 "
        "with colour changes for a task the starting model does not know: the new-task "
        "recipe's)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="propl",
        description="Universal prompt-guided semi-supervised ultrasound "
        "segmentation (ProPL). Research use, not for diagnosis.",
    )
    parser.add_argument("--version", action="version", version=f"propl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train on a benchmark-layout folder, or retrain from a project's reviews",
        description="With --data: train a ProPL network (or a baseline) on a us-universal-style "
        "folder: labelled subset drawn per task with --seed, validation carved from the train "
        "split, the best checkpoint by validation Dice saved to OUT/best. With --project: "
        "retrain from the project's reviewed scans (labelled; a stable part held back to judge "
        "the result) and the unreviewed ones (unlabelled), starting from the project's current "
        "model; the run becomes a new model version, promoted to current only if it beats its "
        "parent on the held-back scans.",
    )
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="folder with tasks.json, splits.json")
    src.add_argument("--project", type=Path, help="project folder (.zarr) to retrain from")
    t.add_argument(
        "--method",
        default="propl",
        choices=METHOD_CHOICES,
        help="propl (the paper's semi-supervised method, default), supervised (labelled subset "
        "only), mean-teacher, unimatch (UniMatch-style), full (every train label: the upper "
        "bound)",
    )
    t.add_argument(
        "--labelled",
        default="1/16",
        help="--data: labelled part of each task's train split: a fraction (1/16, 0.125) or a "
        "count (10); ignored by --method full",
    )
    t.add_argument(
        "--tasks",
        nargs="+",
        help="task ids to train on (default: all in the folder, "
        "or every project task with reviewed scans)",
    )
    t.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the labelled subset, the initialisation and the batches (default 0)",
    )
    t.add_argument("--out", type=Path, help="--data: run directory (required)")
    t.add_argument(
        "--steps",
        type=int,
        help="optimiser steps (default 2000; 150 with --project; a task the starting model "
        "does not know (--init, or a project's new task): the new-task recipe's, see "
        "propl.train.recipe.RECIPES)",
    )
    t.add_argument("--size", type=int, default=224, help="input side (multiple of 32)")
    t.add_argument("--batch-size", type=int, default=8, help="labelled (and unlabelled) per step")
    t.add_argument("--arch", default="propl", help="registered model name (propl, propl-small)")
    t.add_argument(
        "--init",
        help="start from this checkpoint folder, or 'shipped' for the universal model "
        "(incremental training; new tasks get new prompt tokens). --project: default is the "
        "project's current version",
    )
    _add_propl_options(t)
    t.add_argument("--lr", type=float, help="learning rate (default 1e-3; 5e-4 with --project)")
    freeze = t.add_mutually_exclusive_group()
    freeze.add_argument(
        "--freeze-encoder",
        action="store_true",
        default=None,
        help="train decoders and prompt tokens only (default with --project)",
    )
    freeze.add_argument(
        "--train-encoder",
        dest="freeze_encoder",
        action="store_false",
        help="--project: train the encoder too (slower, can adapt more)",
    )
    _add_feature_cache(t, "with a frozen encoder (--project, or --data's new-task recipe): ")
    t.add_argument("--eval-every", type=int, help="validation every N steps (200; 25 --project)")
    t.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="--data: part of each task's train split carved out for validation (default 0.1)",
    )
    t.add_argument(
        "--hold-back",
        type=float,
        default=0.2,
        help="--project: part of the reviewed scans held back to judge the new version",
    )
    t.add_argument(
        "--frames-per-scan", type=int, default=4, help="--project: frames sampled per cine"
    )
    t.add_argument(
        "--confidence",
        type=float,
        default=0.9,
        help="--project: promote only when the held-back gain is positive at this one-sided "
        "confidence (paired bootstrap over held-back scans; 0.5 = the mean gain alone)",
    )
    t.add_argument(
        "--min-gain",
        type=float,
        default=0.0,
        help="--project: Dice points the gain's lower bound must exceed to promote",
    )
    t.add_argument(
        "--anchor",
        type=float,
        help="L2-SP strength: pull the shared weights toward the starting model's, so other "
        "tasks are forgotten less (default 1.0 with --project, 0 with --data; 0: off)",
    )
    t.add_argument(
        "--refine-steps",
        type=int,
        help="steps the click refinement head then trains on the confirmed corrections "
        "(--project) or the labelled scans (--data, for the best and last checkpoints), kept "
        "only if the held-back corrections or validation scans click no worse (default 100; "
        "0: leave the head as it is)",
    )
    t.add_argument(
        "--no-promote",
        action="store_true",
        help="--project: write the version but leave promotion to the program holding the "
        "project (the napari plugin runs training this way)",
    )
    t.add_argument(
        "--nice",
        type=int,
        default=0,
        metavar="N",
        help="lower this process's CPU priority by N (Unix; 0-19) so that interactive programs "
        "sharing the CPU stay responsive: the napari plugin trains with --nice 10",
    )
    t.add_argument("--device", default="auto", help=DEVICE_HELP)
    t.add_argument("--resume", action="store_true", help="--data: continue from OUT/last")
    t.add_argument("--cache", type=Path, help="cache folder for resized arrays")
    t.add_argument("--json", action="store_true", help="print progress as JSON lines")

    m = sub.add_parser(
        "models",
        help="list a project's model versions; roll back to one; add your own",
        description="Every version a retraining wrote (outcome, held-back Dice, parent, scans) "
        "and which one is current. --use makes another version current (a rollback), "
        "'shipped' returns to the model inside the package. --add stores a checkpoint folder "
        "(e.g. your lab's model) as a new version and makes it current: the project predicts "
        "with it and retrains from it.",
    )
    m.add_argument("--project", required=True, type=Path, help="project folder (.zarr)")
    group = m.add_mutually_exclusive_group()
    group.add_argument("--use", metavar="VERSION", help="make this version current (or 'shipped')")
    group.add_argument(
        "--add",
        metavar="CHECKPOINT",
        type=Path,
        help="add this checkpoint folder (model.safetensors + model.json) as a new version "
        "and make it current",
    )
    m.add_argument("--json", action="store_true", help="print the list as JSON")

    c = sub.add_parser(
        "check",
        help="verify a project's scans, predictions and reviews against their checksums",
        description="Reads everything the project stored and verifies it against the checksums "
        "written with it. Lists each damaged part (scan and file) and exits 1 while any is "
        "left. --repair moves a damaged prediction or review back to its newest intact "
        "revision (the damaged one stays on disk); a damaged image needs the file imported "
        "again.",
    )
    c.add_argument("--project", required=True, type=Path, help="project folder (.zarr)")
    c.add_argument(
        "--repair", action="store_true", help="roll damaged pointers back where possible"
    )
    c.add_argument("--json", action="store_true", help="print the report as JSON")

    e = sub.add_parser(
        "evaluate",
        help="score a model on a folder split",
        description="Per-task Dice/IoU/HD95 and mDice at the stored resolution.",
    )
    e.add_argument("--data", required=True, type=Path, help="folder with tasks.json, splits.json")
    e.add_argument(
        "--split", default="test", choices=["train", "test"], help="split to score (default test)"
    )
    e.add_argument("--tasks", nargs="+", help="task ids to score (default: all in the folder)")
    e.add_argument("--out", type=Path, help="write metrics as JSON here")
    _add_common_model(e)

    p = sub.add_parser(
        "predict",
        help="segment image files",
        description="Write <name>_mask and <name>_uncertainty per input file. Large archives: "
        "under `torchrun --nproc_per_node N -m propl predict ...` each process (one per GPU) "
        "takes every N-th file; --shard K/N does the same for processes you start yourself.",
    )
    p.add_argument(
        "files", nargs="+", type=Path, help="PNG, JPEG, BMP, TIFF or DICOM (stills and cines)"
    )
    p.add_argument("--task", required=True, help="task prompt id, e.g. thyroid_nodule")
    p.add_argument("--out", required=True, type=Path, help="folder to write (created if needed)")
    p.add_argument(
        "--format",
        default="tiff",
        choices=["tiff", "png"],
        help="tiff: one stack per file (default); png: one image per frame",
    )
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="predict only the K-th of N interleaved parts of FILES (K = 1..N)",
    )
    region = p.add_mutually_exclusive_group()
    region.add_argument(
        "--whole-frame",
        action="store_true",
        help="segment the whole frame; by default a DICOM with an ultrasound region is "
        "segmented only inside it (masks empty outside)",
    )
    region.add_argument(
        "--detect-region",
        action="store_true",
        help="files without an ultrasound region (PNG, video, ...): segment only the box "
        "around the image found in the pixels (leaves out text panels and black borders)",
    )
    _add_common_model(p)

    x = sub.add_parser(
        "export",
        help="export a project's masks and measurements",
        description="Accepted and corrected masks of one task as TIFF stacks, per-frame PNG, "
        "NIfTI and DICOM-SEG (DICOM sources, where the standard allows), plus a CSV of "
        "area, ellipse axes and circumference per frame (mm when the spacing is known). "
        "Files are moved into OUT only when the export is complete. A scan that cannot be "
        "exported is listed and the others are exported; the exit status is then 1.",
    )
    x.add_argument("--project", required=True, type=Path, help="project folder (.zarr)")
    x.add_argument("--task", required=True, help="task id whose masks to export")
    x.add_argument("--out", required=True, type=Path, help="folder to write (created if needed)")
    x.add_argument(
        "--format",
        nargs="+",
        default=["tiff", "png", "nifti", "dicom-seg"],
        choices=["tiff", "png", "nifti", "dicom-seg"],
        help="one or more formats (default: all four)",
    )
    x.add_argument(
        "--include-unreviewed",
        action="store_true",
        help="also export the current prediction of scans nobody reviewed",
    )
    x.add_argument("--overwrite", action="store_true", help="replace existing files in OUT")
    x.add_argument(
        "--names",
        default="id",
        choices=["id", "source"],
        help="what names the files and the CSV's scan column: id = the scan's pseudonymous "
        "id (default; no file or patient names leave the project), source = the scan's name "
        "in the project (usually the imported file's name, which may hold the patient's name)",
    )
    x.add_argument(
        "--keep-patient-data",
        action="store_true",
        help="keep the patient and study data (name, ID, birth date, dates, accession "
        "number, ...) in DICOM-SEG files; by default they are de-identified (DICOM PS3.15 "
        "basic profile, UIDs kept so the SEG still references its source)",
    )

    r = sub.add_parser(
        "train-refine",
        help="train the click refinement head (the rest of the model stays frozen)",
        description="Give a checkpoint a click refinement head trained with iterative click "
        "simulation on the data folder's train split; the encoder and decoders are frozen, so "
        "the automatic segmentation stays bit-identical. Pack the result with `propl pack`.",
    )
    r.add_argument("--data", required=True, type=Path, help="us-universal-style data folder")
    r.add_argument("--model", default="shipped", help="checkpoint folder (default: shipped)")
    r.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    r.add_argument("--steps", type=int, default=6000, help="training steps (default 6000)")
    r.add_argument("--batch-size", type=int, default=16, help="frames per step (default 16)")
    r.add_argument(
        "--lr",
        type=float,
        help="peak learning rate of the cosine schedule (default: the trainer's; lower when "
        "training a head on from where it is, --keep-head)",
    )
    r.add_argument(
        "--box-rate",
        type=float,
        default=0.25,
        help="share of training frames that also get a box around the structure (half of them "
        "with no click), so a dragged box is understood (default 0.25)",
    )
    r.add_argument(
        "--generic-rate",
        type=float,
        default=0.2,
        help="share of training frames whose object is a region of the frame itself (similar "
        "echo, found without labels) clicked with no task, so clicks work on structures no "
        "task taught (default 0.2)",
    )
    r.add_argument(
        "--generic-prior",
        type=float,
        help="share of those region frames that start from a rough mask of the region "
        "(grown, shrunk, spilling over or missing a part) instead of an empty one, so a mask "
        "brushed around a structure no task taught is kept and tightened by clicks, not erased "
        "(default: the trainer's)",
    )
    r.add_argument(
        "--max-rounds",
        type=int,
        default=6,
        help="most click rounds the head runs on its own output before the round it learns "
        "from, so it learns to use later clicks (default 6)",
    )
    r.add_argument(
        "--zoomed-views",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train on each frame cut to the window the refiner zooms into from the "
        "second click (default: on; --no-zoomed-views: whole frames only)",
    )
    r.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    r.add_argument("--cache", type=Path, help="folder to keep the resized arrays between runs")
    r.add_argument(
        "--keep-head",
        action="store_true",
        help="train the checkpoint's own head on (default: a new head, seeded by --seed)",
    )

    k = sub.add_parser(
        "pack",
        help="store a checkpoint in half precision (the shipped model's format)",
        description="Cast a checkpoint's floating weights to float16 (safetensors + JSON): "
        "half the size, same predictions up to rounding. The task fit and task shape files beside "
        "the weights come along.",
    )
    k.add_argument("checkpoint", type=Path, help="checkpoint folder, e.g. RUN/best")
    k.add_argument("--out", required=True, type=Path, help="folder to write")
    k.add_argument("--version", help="model version recorded in the metadata (default: OUT name)")

    d = sub.add_parser(
        "demo",
        help="segment the sample echo cine and write masks, uncertainty and an overlay",
        description="Headless demo: pydicom's 30-frame echo cine, segmented with the shipped "
        "model (or --model) for the left heart; writes TIFF stacks and an overlay PNG.",
    )
    d.add_argument(
        "--out", type=Path, default=Path("demo-output"), help="folder to write (demo-output)"
    )
    d.add_argument("--task", default="left_heart", help="task prompt id (left_heart)")
    d.add_argument("--overwrite", action="store_true", help="replace files from an earlier run")
    _add_common_model(d)

    s = sub.add_parser(
        "simulate",
        help="simulated annotator: least-confident-first vs random corrections",
        description="On one us-universal task: correct --start scans, train new decoders, then "
        "each round correct --per-round scans picked by least confidence (the review queue) or "
        "at random (ground truth replaces the prediction), retrain from the last version and "
        "score the test split. Writes JSON, a markdown table and an SVG chart.",
    )
    s.add_argument("--data", required=True, type=Path, help="us-universal folder")
    s.add_argument("--task", required=True, help="task id, e.g. thyroid_nodule")
    s.add_argument("--rounds", type=int, default=3, help="correction rounds after round 0 (3)")
    s.add_argument("--per-round", type=int, default=10, help="scans corrected per round (K)")
    s.add_argument("--start", type=int, default=10, help="scans corrected before round 0")
    s.add_argument("--pool", type=int, default=200, help="train scans in the project")
    s.add_argument(
        "--strategies",
        nargs="+",
        default=["uncertainty", "random"],
        help="uncertainty (the review queue's order), random; or error (most pixels expected "
        "wrong first)",
    )
    s.add_argument(
        "--correct",
        nargs="+",
        choices=["truth", "clicks"],
        default=["truth"],
        help="how picked scans are corrected: truth (the ground truth replaces the prediction; "
        "default) and/or clicks (simulated clicks on the refinement head fix the pseudo-label "
        "until IoU 0.90 or 20 clicks, and that mask trains the next round)",
    )
    s.add_argument(
        "--seed", type=int, default=0, help="seed of the scans drawn and of training (0)"
    )
    s.add_argument("--test-scans", type=int, default=0, help="first N test scans scored; 0: all")
    s.add_argument("--first-steps", type=int, default=300, help="training steps of round 0")
    s.add_argument("--steps", type=int, default=150, help="training steps of later rounds")
    s.add_argument("--lr", type=float, help="retraining learning rate (default 5e-4)")
    _add_feature_cache(s)
    _add_propl_options(s)
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument(
        "--like",
        type=Path,
        help="checkpoint whose architecture (not weights) the fresh network copies "
        "(default: the shipped model's); with --correct clicks also its refinement head",
    )
    s.add_argument("--workdir", type=Path, help="keep the simulated projects here")
    s.add_argument(
        "--out", type=Path, help="results JSON (default benchmarks/results/simulate-TASK.json)"
    )

    b = sub.add_parser(
        "benchmark",
        help="reproduce the README's numbers",
        description="ssl: the semi-supervised table; speed: CPU speed vs a U-Net.",
    )
    bsub = b.add_subparsers(dest="which", required=True, metavar="{ssl,speed,report}")
    bs = bsub.add_parser("ssl", help="side-by-side semi-supervised benchmark")
    bs.add_argument("--data", required=True, type=Path, help="us-universal folder")
    bs.add_argument(
        "--profile",
        default="quick",
        choices=list(PROFILES),
        help="; ".join(f"{name}: {p.size} px, {p.steps:,} steps" for name, p in PROFILES.items())
        + " (quick: the whole table in about an hour on a 2-core CPU; full: for a GPU; smoke: "
        "checks the code only)",
    )
    bs.add_argument(
        "--methods",
        nargs="+",
        choices=METHOD_CHOICES,
        metavar="METHOD",
        help=f"methods to run (default: all: {', '.join(METHOD_CHOICES)})",
    )
    bs.add_argument(
        "--labelled",
        nargs="+",
        metavar="FRACTION",
        help="labelled parts of each task's train split (default: 1/16 1/8); full ignores it",
    )
    bs.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    _add_results(bs, "ssl-PROFILE.json/.md; runs already there are skipped")
    bs.add_argument("--device", default="auto", help=DEVICE_HELP)
    bs.add_argument("--cache", type=Path, help="cache folder for resized arrays (faster re-runs)")
    _add_propl_options(bs)
    br = bsub.add_parser("report", help="copy the results tables into README/docs")
    br.add_argument(
        "docs",
        nargs="*",
        type=Path,
        default=[Path("README.md"), Path("docs/user-guide.md"), Path("docs/benchmarks.md")],
        help="markdown files with <!-- BEGIN name --> ... <!-- END name --> blocks",
    )
    _add_results(br, "the results files")
    bp = bsub.add_parser("speed", help="inference and training speed vs the U-Net reference")
    bp.add_argument(
        "--repeats",
        type=int,
        default=7,
        help="timed repeats per candidate, alternating (default 7; training: half, at least 3)",
    )
    _add_results(bp, "speed.json/.md")
    bp.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    return parser


def _file_warnings(command: str) -> Callable[..., None]:
    """A :func:`warnings.showwarning` that prints a reader's warning about a file (it names
    the file) as ``propl <command>: warning: <message>`` on a line of its own above any
    progress bar, and leaves every other warning to Python's own display."""
    from tqdm import tqdm

    from .data.readers import ReaderWarning

    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *rest: Any, **kw: Any) -> None:
        if issubclass(category, ReaderWarning):
            tqdm.write(f"propl {command}: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *rest, **kw)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import commands  # heavier imports only once the arguments are valid
    from .data.readers import ReaderWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", ReaderWarning)  # one per file, however many files
        warnings.showwarning = _file_warnings(args.command)
        return _run(commands, args)


def _run(commands: Any, args: argparse.Namespace) -> int:
    try:
        return int(getattr(commands, f"run_{args.command.replace('-', '_')}")(args) or 0)
    except KeyboardInterrupt:
        print("propl: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # user-facing: one line naming the problem, no traceback
        if not commands.is_user_error(exc):
            raise
        print(f"propl {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def print_json(obj: object) -> None:
    print(json.dumps(obj), flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
