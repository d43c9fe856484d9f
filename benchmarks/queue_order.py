"""Which order of the review queue teaches the model most? One table from simulate runs.

    propl simulate --data DATA --task thyroid_nodule --seed N \
        --strategies uncertainty random error \
        --out benchmarks/results/simulate-thyroid_nodule-seedN.json    (seed 0: no suffix)
    python benchmarks/queue_order.py [--dir DIR]
        (writes benchmarks/results/queue-order.md, or --out)

The same per-seed results files as ``simulate_seeds.py`` (one run per seed serves both
tables); ``--dir`` reads every ``simulate-TASK*.json`` of another folder instead.

Strategies: ``uncertainty`` (the plugin's queue: least expected Dice first), ``error`` (most
pixels expected wrong first, ``Prediction.expected_error``) and ``random``. A seed's strategies
may come from several files (e.g. ``--strategies random`` run on its own): they are merged when
their round 0 agrees to the last digit, which it does when every run is on the same machine and
code (round 0 trains from the seed alone).

Per seed: test Dice gain after the last round per strategy and the pixels edited in all
rounds; then the mean test Dice after each round, and the pooled gain ratio of each ordered
strategy to random (a ratio of mean gains).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from simulate_seeds import RESULTS, seed_files  # benchmarks/simulate_seeds.py

ORDER = ("uncertainty", "error", "random")


def merge(docs: list[dict]) -> dict[int, dict]:
    """``{seed: {"round0": Dice, "rounds": R, "dice": {strategy: curve}, "edited": {...},
    "auroc": {...}}}``; refuses files of one seed that disagree on round 0."""
    seeds: dict[int, dict] = {}
    for doc in docs:
        seed = doc["config"]["seed"]
        entry = seeds.setdefault(
            seed, {"round0": None, "rounds": doc["rounds"], "dice": {}, "edited": {}, "auroc": {}}
        )
        for s, curve in doc["strategies"].items():
            if entry["round0"] is None:
                entry["round0"] = curve[0]
            if curve[0] != entry["round0"] or doc["rounds"] != entry["rounds"]:
                raise ValueError(
                    f"seed {seed}: {s} starts from round-0 Dice {curve[0]}, another run from "
                    f"{entry['round0']}: not the same round 0, cannot compare"
                )
            entry["dice"][s] = curve
            entry["edited"][s] = sum(doc["edited_pixels"][s])
            entry["auroc"][s] = doc["pixel_auroc_per_round"][s][-1]
    return seeds


def table(task: str, seeds: dict[int, dict]) -> str:
    strategies = [s for s in ORDER if all(s in e["dice"] for e in seeds.values())]
    rounds = next(iter(seeds.values()))["rounds"]
    lines = [
        f"Review-queue order, task `{task}`, {len(seeds)} seeds (`propl simulate --strategies "
        f"{' '.join(strategies)} --seed N`; `python benchmarks/queue_order.py`): "
        "uncertainty = least expected Dice first (the plugin's queue), error = most pixels "
        "expected wrong first, random. Test Dice gain after "
        f"{rounds} rounds of corrections, pixels edited in all rounds, pixel AUROC of the "
        "last model.",
        "",
        "| seed | round-0 Dice | "
        + " | ".join(f"gain, {s} | edited px, {s} | AUROC, {s}" for s in strategies)
        + " |",
        "|---|---|" + "---|---|---|" * len(strategies),
    ]
    for seed, e in sorted(seeds.items()):
        cells = [str(seed), f"{e['round0']:.2f}"]
        for s in strategies:
            curve = e["dice"][s]
            cells += [f"{curve[-1] - curve[0]:+.2f}", f"{e['edited'][s]:,}", f"{e['auroc'][s]:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    means = {
        s: [statistics.mean(e["dice"][s][r] for e in seeds.values()) for r in range(rounds + 1)]
        for s in strategies
    }
    gains = {s: m[-1] - m[0] for s, m in means.items()}
    lines += [
        "",
        "| mean test Dice | " + " | ".join(f"round {r}" for r in range(rounds + 1))
        + " | gain | mean pixel AUROC | ratio to random |",
        "|---|" + "---|" * (rounds + 4),
    ]  # fmt: skip
    for s in strategies:
        auroc = statistics.mean(e["auroc"][s] for e in seeds.values())
        ratio = ""
        if s != "random" and gains.get("random", 0) > 0:
            ratio = f"**{gains[s] / gains['random']:.2f}**"
        cells = [s, *(f"{m:.2f}" for m in means[s]), f"{gains[s]:+.2f}", f"{auroc:.4f}", ratio]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", type=Path, help="a folder of simulate results (default: the seeds')"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "queue-order.md")
    parser.add_argument("--task", default="thyroid_nodule")
    args = parser.parse_args()
    if args.dir is None:
        files, where = seed_files(args.task), RESULTS
    else:
        files, where = sorted(args.dir.glob(f"simulate-{args.task}*.json")), args.dir
    if not files:
        raise SystemExit(f"no simulate-{args.task}*.json in {where}")
    seeds = merge([json.loads(f.read_text()) for f in files])
    args.out.write_text(table(args.task, seeds))
    print(args.out.read_text(), end="")


if __name__ == "__main__":
    main()
