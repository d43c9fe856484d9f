"""The simulated annotator over several seeds: one table from the per-seed results files.

    propl simulate --data DATA --task thyroid_nodule --seed N \
        --out benchmarks/results/simulate-thyroid_nodule-seedN.json     (seed 0: no suffix)
    python benchmarks/simulate_seeds.py [--task thyroid_nodule]
        (writes benchmarks/results/simulate-thyroid_nodule-seeds.md)

Each seed draws its own 10 starting scans, its own round-0 network and its own random picks.
The pooled ratio is the mean gain of least-confident-first picks over the mean gain of random
picks (a ratio of means: one seed with a tiny random gain cannot dominate it).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def seed_files(task: str) -> list[Path]:
    files = [RESULTS / f"simulate-{task}.json", *RESULTS.glob(f"simulate-{task}-seed*.json")]
    return [f for f in files if f.is_file()]


def table(task: str, docs: list[dict]) -> str:
    docs = sorted(docs, key=lambda d: d["config"]["seed"])
    lines = [
        f"Simulated annotator, task `{task}`, {len(docs)} seeds (`propl simulate --seed N`; "
        "`python benchmarks/simulate_seeds.py`): Dice gain on the test scans after "
        f"{docs[0]['rounds']} rounds of {docs[0]['per_round']} corrections.",
        "",
        "| seed | round-0 Dice | gain, least confident first | gain, random | ratio | "
        "pixel AUROC (least confident first) |",
        "|---|---|---|---|---|---|",
    ]
    for d in docs:
        lines.append(
            f"| {d['config']['seed']} | {d['strategies']['uncertainty'][0]:.2f} | "
            f"{d['gain']['uncertainty']:+.2f} | {d['gain']['random']:+.2f} | "
            f"{d['gain_ratio']:.2f} | {d['pixel_auroc']:.3f} |"
        )
    unc = statistics.mean(d["gain"]["uncertainty"] for d in docs)
    rnd = statistics.mean(d["gain"]["random"] for d in docs)
    auroc = statistics.mean(d["pixel_auroc"] for d in docs)
    lines.append(f"| mean | | {unc:+.2f} | {rnd:+.2f} | **{unc / rnd:.2f}** | **{auroc:.3f}** |")
    lines += [
        "",
        f"Pooled gain ratio (mean gains): **{unc / rnd:.2f}** (target >= 1.5); mean pixel "
        f"AUROC: **{auroc:.3f}** (target >= 0.9).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="thyroid_nodule")
    args = parser.parse_args()
    files = seed_files(args.task)
    if not files:
        raise SystemExit(f"no simulate-{args.task}*.json in {RESULTS}")
    docs = [json.loads(f.read_text()) for f in files]
    out = RESULTS / f"simulate-{args.task}-seeds.md"
    out.write_text(table(args.task, docs))
    print(out.read_text(), end="")


if __name__ == "__main__":
    main()
