"""What each ``propl`` sub-command does (argument parsing lives in :mod:`propl.cli`)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tqdm import tqdm

from .data.benchmark import BenchmarkFolder, DataFolderError, parse_labelled
from .data.readers import ReaderError
from .errors import CheckpointError, RetrainError
from .results import write_json
from .store import Project, StoreError, StoreLockedError

if TYPE_CHECKING:
    from .train.distributed import Ranks


def is_user_error(exc: BaseException) -> bool:
    """Errors caused by the user's input: reported in one line, without a traceback."""
    return isinstance(
        exc,
        (
            DataFolderError,
            ReaderError,
            CheckpointError,
            KeyError,
            ValueError,
            FileNotFoundError,
            FloatingPointError,
            FileExistsError,
            StoreError,
            StoreLockedError,
            RetrainError,
        ),
    )


def _tasks(folder: BenchmarkFolder, wanted: list[str] | None) -> list[str]:
    known = folder.task_ids()
    for t in wanted or []:
        if t not in known:
            raise DataFolderError(f"unknown task {t!r}; {folder.root} has: {', '.join(known)}")
    return list(wanted or known)


def lower_priority(nice: int) -> None:
    """``os.nice`` for ``--nice`` (a no-op where the platform has none, e.g. Windows)."""
    if not 0 <= nice <= 19:
        raise ValueError(f"--nice takes 0 to 19, got {nice}")
    if nice and hasattr(os, "nice"):
        os.nice(nice)


def run_train(args: argparse.Namespace) -> int:
    from .train.distributed import process_group, ranks_from_env

    lower_priority(args.nice)
    if args.project is not None:
        if ranks_from_env().parallel:
            raise ValueError(
                "propl train --project trains in one process (a project's reviewed scans fit "
                "one device); start it without torchrun"
            )
        return _retrain_project(args)
    if args.out is None:
        raise ValueError("propl train --data needs --out (the run directory)")
    with process_group(args.device) as (ranks, _):
        return _train_folder(args, ranks)


def _train_folder(args: argparse.Namespace, ranks: Ranks) -> int:
    """``propl train --data``: in one process, or as one rank of a ``torchrun`` group (rank 0
    alone prints and writes)."""
    from .inference import resolve_model
    from .train.distributed import main_first
    from .train.methods import method_options
    from .train.recipe import (
        choose_recipe,
        init_model,
        prepare_data,
        recipe_settings,
        unknown_tasks,
    )
    from .train.trainer import TrainConfig, Trainer, can_cache_features

    folder = BenchmarkFolder(args.data)
    tasks = _tasks(folder, args.tasks)
    labelled = Fraction(1) if args.method == "full" else parse_labelled(args.labelled)
    fresh = {} if args.init else {"input_size": args.size}  # a checkpoint keeps its own size
    init = resolve_model(args.init) if args.init else None
    recipe = choose_recipe(init, tasks)
    if ranks.main and recipe.name != "default":
        print(f"propl train: recipe {recipe.name!r} ({recipe.why})", file=sys.stderr)
    model = init_model(tasks, args.arch, init, seed=args.seed, **fresh)
    new_tasks = unknown_tasks(init, tasks) if recipe.own_decoders else ()
    model.give_own_decoders(new_tasks)
    size = int(model.config.input_size)
    with main_first(ranks):  # rank 0 fills the cache, the others then read it
        data = prepare_data(
            folder,
            tasks,
            labelled,
            args.seed,
            size,
            args.val_fraction,
            cache_dir=args.cache,
            progress=ranks.main and not args.json,
            task_order=model.config.tasks,
        )
    method = args.method
    if method not in ("supervised", "full") and len(data.unlabelled) == 0:
        method = "supervised"  # every scan is labelled: nothing to pseudo-label
        if ranks.main:
            print(
                f"propl train: no unlabelled scans (all {len(data.labelled)} frames are "
                f"labelled), so --method {args.method} trains supervised",
                file=sys.stderr,
            )
    given = dict(
        steps=args.steps,
        lr=args.lr,
        freeze_encoder=args.freeze_encoder,
        cache_features=False if args.no_feature_cache else None,
        anchor=args.anchor,
        eval_every=args.eval_every,
        feature_views=args.feature_views,
    )
    settings = recipe_settings(recipe, **given)
    options = method_options(args, recipe.options)
    settings["cache_features"] &= settings["freeze_encoder"] and can_cache_features(method, options)
    config = TrainConfig(
        method=method,
        batch_size=args.batch_size,
        unlabelled_batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        freeze_norm_stats=init is not None,  # incremental: keep the checkpoint's statistics
        new_tasks=new_tasks,
        options=options,
        **settings,
    )
    trainer = Trainer(model, config, data.labelled, data.unlabelled, data.val, args.out)
    bar = (
        None
        if args.json or not ranks.main
        else tqdm(total=config.steps, desc=f"train {args.method}", unit="step", file=sys.stderr)
    )
    for event in trainer.run(resume=args.resume):
        if not ranks.main:
            continue
        if args.json:
            print(event.to_json(), flush=True)
            continue
        assert bar is not None
        if event.kind == "step":
            bar.n = event.step
            bar.set_postfix(
                loss=f"{event.data['loss']:.3f}",
                img_s=f"{event.data['img_per_s']:.1f}",
                refresh=False,
            )
            bar.refresh()
        elif event.kind == "eval":
            bar.write(f"step {event.step}: validation mDice {event.data.get('mdice', 0):.2f}")
    if bar is not None:
        bar.close()
    if ranks.main and model.has_refine:
        _tune_click_head(args, data.labelled, data.val, trainer.step, config.steps)
    if bar is not None:
        print(
            f"best checkpoint: {args.out / 'best'} (validation mDice "
            f"{trainer.best['mdice']:.2f} at step {trainer.best['step']})"
        )
    return 0


def _tune_click_head(
    args: argparse.Namespace, labelled: Any, val: Any, step: int, total: int
) -> None:
    """After ``propl train --data`` from a model with a click head: tune the head of the best
    and last checkpoints on the labelled scans, each kept only if the validation scans click no
    worse with it (as project retraining does; ``--refine-steps 0`` leaves the head as it
    came). The head learnt on the starting model's tasks: without this, a task the run added
    gets clicks from a head that never met it."""
    from .train.refine import RETRAIN_STEPS, tune_checkpoint
    from .train.trainer import TrainEvent

    steps = RETRAIN_STEPS if args.refine_steps is None else args.refine_steps
    if steps <= 0:
        return
    for name in ("best", "last"):
        path = args.out / name
        if not (path / "model.json").is_file():
            continue
        record = tune_checkpoint(path, labelled, val, steps, args.seed)
        if args.json:
            event = TrainEvent("refine", step, total, {"checkpoint": name} | record)
            print(event.to_json(), flush=True)
        elif not record.get("trained"):
            print(f"click head of {name}: not tuned ({record.get('why')})", file=sys.stderr)
        else:
            iou = cast(dict[str, float], record["held_back_click_iou"])
            print(
                f"click head of {name}: tuned {steps} steps on {record['frames']} labelled "
                f"frames; validation click IoU {iou['before']:.3f} -> {iou['after']:.3f}, "
                + ("kept" if record["kept"] else "put back"),
                file=sys.stderr,
            )


def _retrain_project(args: argparse.Namespace) -> int:
    from .promotion import promote_if_better
    from .train.methods import method_options
    from .train.project import RetrainConfig, retrain

    if args.method == "full":
        raise ValueError("--method full is for --data; a project trains on its reviews")
    defaults = RetrainConfig()
    config = RetrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        freeze_encoder=defaults.freeze_encoder
        if args.freeze_encoder is None
        else args.freeze_encoder,
        cache_features=not args.no_feature_cache,
        feature_views=args.feature_views,
        frames_per_scan=args.frames_per_scan,
        hold_back=args.hold_back,
        confidence=args.confidence,
        min_gain=args.min_gain,
        anchor=defaults.anchor if args.anchor is None else args.anchor,
        method=args.method,
        seed=args.seed,
        device=args.device,
        eval_every=args.eval_every or defaults.eval_every,
        tasks=tuple(args.tasks) if args.tasks else None,
        options=method_options(args, RetrainConfig().options),
        refine_steps=defaults.refine_steps if args.refine_steps is None else args.refine_steps,
    )
    # Take the writer lock first (unless the caller holds it and promotes): a second writer
    # is refused before any training time is spent.
    project = None if args.no_promote else Project.open(args.project)
    # SIGTERM (the plugin's Cancel) stops at the next step: nothing is written, nothing lost.
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    bar = (
        None
        if args.json
        else tqdm(total=config.steps, desc="retrain", unit="step", file=sys.stderr)  # see prepare
    )
    result = None
    damaged: list[str] = []
    try:
        for event in retrain(args.project, config, init=args.init, should_stop=stop.is_set):
            if args.json:
                print(event.to_json(), flush=True)
            elif event.kind == "prepare":
                d = event.data
                if bar is not None:
                    bar.total = event.total  # the steps chosen for what it learns
                tqdm.write(
                    f"from {d['parent']}: {d['labelled']} reviewed scans to learn from, "
                    f"{d['held_back']} held back, {d['unlabelled_frames']} unlabelled frames "
                    f"({d['method']})",
                    file=sys.stderr,
                )
            if event.kind == "prepare":
                damaged = list(event.data.get("damaged", []))
                for message in damaged if not args.json else []:
                    tqdm.write(f"skipped: {message}", file=sys.stderr)
            elif event.kind == "step" and bar is not None:
                bar.n = event.step
                bar.set_postfix(loss=f"{event.data['loss']:.3f}", refresh=False)
                bar.refresh()
            elif event.kind == "eval" and bar is not None:
                bar.write(f"step {event.step}: held-back Dice {event.data.get('mdice', 0):.2f}")
            elif event.kind == "refine" and bar is not None:
                bar.write(f"click tool: learning from {event.data['frames']} corrected frames")
            if event.kind == "version":
                result = event.data
        if bar is not None:
            bar.close()
        if result is None:
            print("propl train: cancelled; no version written", file=sys.stderr)
            return 1
        promoted = project is not None and promote_if_better(project, result["version"])
        if args.json:
            print(
                json.dumps(
                    {"kind": "promotion", "version": result["version"], "promoted": promoted}
                ),
                flush=True,
            )
        else:
            score = "n/a" if result["score"] is None else f"{result['score']:.2f}"
            print(
                f"{result['version']}: {result['outcome']} (held-back Dice {score} vs "
                f"{result['baseline_score']:.2f} for {result['baseline']}); "
                + ("promoted to current" if promoted else "current model unchanged")
                + (f" - {result['message']}" if result["message"] else "")
            )
        if damaged:
            print(
                f"propl train: {len(damaged)} damaged scan(s) left out (see above; "
                f"`propl check --project {args.project}` lists them)",
                file=sys.stderr,
            )
        return 0 if result["outcome"] != "failed" and not damaged else 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        if project is not None:
            project.close()


def run_check(args: argparse.Namespace) -> int:
    """List a project's damage (and repair what can be); exit 1 while any is left."""
    from .store.check import check_project

    with Project.open(args.project, read_only=not args.repair) as project:
        report = check_project(project, repair=args.repair)
    if args.json:
        print(
            json.dumps(
                {
                    "scans": report.scans,
                    "revisions": report.revisions,
                    "damage": [d.__dict__ for d in report.damage],
                }
            )
        )
    else:
        for damage in report.damage:
            print(damage.describe())
        left = len(report.unrepaired)
        print(
            f"checked {report.scans} scans and {report.revisions} predictions and reviews: "
            + (f"{len(report.damage)} damaged, {left} not repaired" if report.damage else "intact")
        )
        if left and not args.repair:
            print(f"`propl check --project {args.project} --repair` rolls back what it can")
    return 1 if report.unrepaired else 0


def run_models(args: argparse.Namespace) -> int:
    with Project.open(args.project, read_only=args.use is None and args.add is None) as project:
        if args.use is not None:
            project.set_current(args.use, "chosen with propl models --use")
        if args.add is not None:
            added = project.import_model(args.add)
            if not args.json:
                print(f"added {args.add} as {added.name} (tasks: {', '.join(added.tasks)})")
        current = project.current_version()
        current_name = current.name if current else "shipped"
        rows = project.versions()
        if args.json:
            print(
                json.dumps(
                    {
                        "current": current_name,
                        "versions": [
                            {k: v for k, v in r.record.items() if k != "curve"} for r in rows
                        ],
                        "history": project.model_history(),
                    }
                )
            )
            return 0
        print(f"current: {current_name}")
        for r in rows:
            print(("* " if r.name == current_name else "  ") + r.describe())
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_folder
    from .inference import Predictor, resolve_model

    folder = BenchmarkFolder(args.data)
    predictor = Predictor.from_checkpoint(
        resolve_model(args.model), device=args.device, uncertainty=args.uncertainty
    )
    tasks = _tasks(folder, args.tasks)
    bar = tqdm(desc=f"evaluate {args.split}", unit="scan", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    result = evaluate_folder(predictor, folder, args.split, tasks, progress)
    bar.close()
    result["model"] = str(resolve_model(args.model))
    for task, row in result["per_task"].items():
        print(f"{task:20s} Dice {row['dice']:6.2f}  IoU {row['iou']:6.2f}  HD95 {row['hd95']:7.2f}")
    print(f"{'mDice':20s} {result['mdice']:.2f}")
    if args.out:
        write_json(args.out, result)
    return 0


def parse_shard(spec: str) -> tuple[int, int]:
    """``"K/N"`` (1-based, as users count) → ``(K - 1, N)``."""
    try:
        k, n = (int(part) for part in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes K/N, e.g. 1/4; got {spec!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard K/N needs 1 <= K <= N; got {spec!r}")
    return k - 1, n


def run_predict(args: argparse.Namespace) -> int:
    from .data.readers import read_scan
    from .export import write_prediction
    from .inference import Predictor, resolve_model
    from .task_fit import fit_warning
    from .task_shape import shape_note
    from .train.distributed import rank_device, ranks_from_env

    first_with_stem: dict[str, Path] = {}
    for path in args.files:  # outputs are named by stem: two same-named inputs would collide
        other = first_with_stem.setdefault(Path(path).stem, Path(path))
        if other != Path(path):
            raise ValueError(
                f"{other} and {path} would both write {Path(path).stem}_mask: predict them "
                "into different --out folders"
            )
    ranks = ranks_from_env()
    part, parts = ranks.rank, ranks.world  # under torchrun: every WORLD_SIZE-th file
    if args.shard:
        if ranks.parallel:
            raise ValueError("--shard and torchrun both split the files: use one of them")
        part, parts = parse_shard(args.shard)
    files = args.files[part::parts]
    predictor = Predictor.from_checkpoint(
        resolve_model(args.model),
        device=str(rank_device(args.device, ranks)),
        uncertainty=args.uncertainty,
    )
    predictor.model.task_index(args.task)  # fail fast on an unknown task
    failures: list[ReaderError] = []
    desc = "predict" if parts == 1 else f"predict {part + 1}/{parts}"
    for path in tqdm(files, desc=desc, unit="file", file=sys.stderr, disable=part > 0):
        try:
            frames, meta = read_scan(path, detect_region=args.detect_region)
        except ReaderError as exc:
            tqdm.write(f"propl predict: skipped: {exc}", file=sys.stderr)  # own line, not the bar's
            failures.append(exc)
            continue
        region = None if args.whole_frame else meta.region
        pred = predictor.predict(frames, args.task, region=region)
        written = write_prediction(pred, Path(args.out), Path(path).stem, args.format)
        conf = ", ".join(f"{c:.3f}" for c in pred.confidence[:5])
        tqdm.write(  # stdout, on a line of its own above the progress bar
            f"{path}: confidence {conf}{' ...' if len(pred.confidence) > 5 else ''} -> "
            f"{', '.join(str(w) for w in written)}",
            file=sys.stdout,
        )
        if warning := fit_warning(args.task, pred.task_fit):  # the scan is not the task's
            tqdm.write(f"propl predict: {path}: {warning}", file=sys.stderr)
        if note := shape_note(args.task, pred.shape_fit):  # the mask is an odd shape
            tqdm.write(f"propl predict: {path}: {note}", file=sys.stderr)
    if failures:  # the batch went on; list what failed where the user looks last
        print(f"propl predict: {len(failures)} of {len(files)} files failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
    return 1 if failures else 0


def run_export(args: argparse.Namespace) -> int:
    from .project_export import export_project

    bar = tqdm(desc="export", unit="scan", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    with Project.open(args.project, read_only=True) as project:
        report = export_project(
            project,
            args.task,
            args.out,
            progress,
            formats=args.format,
            include_unreviewed=args.include_unreviewed,
            overwrite=args.overwrite,
            names=args.names,
            keep_phi=args.keep_patient_data,
        )
    bar.close()
    for note in report.skipped:
        print(f"skipped {note}", file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {len(report.written)} files and {report.csv} to {args.out}")
    if report.failed:
        print(f"{len(report.failed)} scan(s) failed and were not exported:", file=sys.stderr)
        for note in report.failed:
            print(f"failed {note}", file=sys.stderr)
        return 1
    return 0


def run_train_refine(args: argparse.Namespace) -> int:
    import functools

    import torch

    from .train.refine import RefineTrainConfig, train_refine_head

    # every core unless the environment says how many (OMP_NUM_THREADS on a shared machine)
    given = os.environ.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(int(given) if given.isdigit() and int(given) > 0 else os.cpu_count() or 1)
    optional = {"generic_prior": args.generic_prior, "lr": args.lr}
    chosen = {k: v for k, v in optional.items() if v is not None}  # else the trainer's default
    config = RefineTrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        box_rate=args.box_rate,
        generic_rate=args.generic_rate,
        max_rounds=args.max_rounds,
        zoomed_views=args.zoomed_views,
        seed=args.seed,
        **chosen,
    )
    cache = None if args.cache is None else str(args.cache)
    log = functools.partial(print, flush=True)
    train_refine_head(
        args.model, str(args.data), str(args.out), config, cache, log=log, fresh=not args.keep_head
    )
    return 0


def run_pack(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import keep_side_files, load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    metadata = ckpt.metadata | {
        "version": args.version or args.out.name,
        "packed_from": str(args.checkpoint),
        "dtype": "float16",
    }
    weights = save_checkpoint(ckpt.model, args.out, metadata, dtype=torch.float16)
    kept = [p.name for p in keep_side_files(args.checkpoint, args.out)]
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB, float16)")
    if kept:
        print(f"kept {', '.join(kept)} beside it")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo as demo

    result = demo(args.out, args.model, args.task, args.device, overwrite=args.overwrite)
    print(
        f"{result.source}: {result.frames} frames, task {result.task}, model {result.model}\n"
        f"mean confidence {result.confidence:.2f}; least confident frame "
        f"{result.least_confident_frame}\n" + "\n".join(f"wrote {p}" for p in result.files)
    )
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from .simulate import SimulationConfig, simulate, table, write
    from .train.methods import LOOP_OPTIONS, method_options, option_flags

    options = method_options(args, LOOP_OPTIONS)
    retrain: dict[str, Any] = {"options": options} | ({"lr": args.lr} if args.lr else {})
    if args.no_feature_cache:
        retrain["cache_features"] = False
    if args.feature_views is not None:
        retrain["feature_views"] = args.feature_views
    config = SimulationConfig(
        task=args.task,
        rounds=args.rounds,
        per_round=args.per_round,
        start=args.start,
        pool=args.pool,
        strategies=tuple(args.strategies),
        correct=tuple(args.correct),
        seed=args.seed,
        test_scans=args.test_scans,
        first_steps=args.first_steps,
        steps=args.steps,
        device=args.device,
        like=str(args.like) if args.like else None,
        retrain=retrain,
    )
    out = args.out or Path("benchmarks/results") / f"simulate-{args.task}.json"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="propl-simulate-"))
    try:
        doc = simulate(
            args.data, config, workdir, progress=lambda m: print(m, file=sys.stderr, flush=True)
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    doc["command"] = config.command(option_flags(options, LOOP_OPTIONS))
    for path in write(doc, out):
        print(f"wrote {path}", file=sys.stderr)
    print(table(doc))
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    if args.which == "report":
        from .bench.report import update_markdown

        for doc in args.docs:
            print(f"{doc}: updated {', '.join(update_markdown(doc, args.results)) or 'nothing'}")
        return 0
    if args.which == "ssl":
        from .bench.ssl import run_ssl_benchmark

        run_ssl_benchmark(args)
    else:
        from .bench.speed import run_speed_benchmark

        run_speed_benchmark(args)
    return 0
