"""Which pseudo-label weight (ProPL's λ) should project retraining use? One table from the
simulated annotator's runs at each weight.

    for seed in 0 1 2; do for w in 6 1; do
      propl simulate --data DATA --task thyroid_nodule --strategies uncertainty --seed $seed \
          --unsup-weight $w \
          --out benchmarks/results/unsup-weight/simulate-thyroid_nodule-w$w-seed$seed.json
    done; done
    python benchmarks/unsup_weight.py [--task thyroid_nodule]
        (writes benchmarks/results/unsup-weight-thyroid_nodule.md, a README block)

(The committed λ = 1 runs also ran random picks, which this table leaves out; the commands
recorded in the committed files predate ``--strategies`` being written into them.)

Result (3 seeds): λ = 1 is not better than the paper's λ = 6 when a project retrains, so
projects keep λ = 6 (``MethodOptions``' default).

The runs follow the plugin's loop with least-confident-first picks (the review queue): 10
corrected scans train new decoders (round 0), then each round corrects the 10 least confident
scans and retrains from the last version, with the 190 other pool scans unlabelled. Every
weight sees the same seed (the same pool, start scans and round-0 network), so the difference
per seed is paired. Dice is on the task's whole test split, which nothing is chosen on.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "unsup-weight"


def load(task: str) -> dict[float, dict[int, dict]]:
    """{weight: {seed: results}} from ``simulate-TASK-wW-seedN.json``."""
    runs: dict[float, dict[int, dict]] = {}
    for path in RESULTS.glob(f"simulate-{task}-w*-seed*.json"):
        m = re.fullmatch(rf"simulate-{task}-w([0-9.]+)-seed(\d+)\.json", path.name)
        if m is None:
            continue
        doc = json.loads(path.read_text())
        weight = doc["config"]["retrain"]["options"]["unsup_weight"]
        if weight != float(m.group(1)):
            raise SystemExit(f"{path}: the run used weight {weight}, not the file name's")
        runs.setdefault(weight, {})[int(m.group(2))] = doc
    return runs


def table(task: str, runs: dict[float, dict[int, dict]]) -> str:
    weights = sorted(runs, reverse=True)  # the paper's 6 first
    seeds = sorted(set.intersection(*(set(runs[w]) for w in weights))) if weights else []
    if len(weights) < 2 or not seeds:
        raise SystemExit("need runs at two weights with a seed in common")
    ref, alt = weights[0], weights[-1]

    def dice(w: float, seed: int) -> list[float]:
        return runs[w][seed]["strategies"]["uncertainty"]

    rounds = len(dice(ref, seeds[0]))
    lines = [
        f"Pseudo-label weight λ in project retraining, task `{task}`, least-confident-first "
        f"corrections (`propl simulate --strategies uncertainty --unsup-weight W --seed N`; "
        f"`python benchmarks/unsup_weight.py`). Test Dice after each round (round 0: 10 "
        "corrected scans; each later round 10 more).",
        "",
        "| seed | λ | " + " | ".join(f"round {r}" for r in range(rounds)) + " | pixel AUROC |",
        "|---|---|" + "---|" * rounds + "---|",
    ]
    diffs: list[list[float]] = [[] for _ in range(rounds)]
    for seed in seeds:
        for w in weights:
            lines.append(
                f"| {seed} | {w:g} | "
                + " | ".join(f"{d:.2f}" for d in dice(w, seed))
                + f" | {runs[w][seed]['pixel_auroc']:.3f} |"
            )
        for r in range(rounds):
            diffs[r].append(dice(alt, seed)[r] - dice(ref, seed)[r])
    means = {
        w: [statistics.mean(dice(w, s)[r] for s in seeds) for r in range(rounds)] for w in weights
    }
    for w in weights:
        auroc = statistics.mean(runs[w][s]["pixel_auroc"] for s in seeds)
        lines.append(
            f"| mean | {w:g} | "
            + " | ".join(f"**{d:.2f}**" for d in means[w])
            + f" | {auroc:.3f} |"
        )
    lines.append(
        f"| λ {alt:g} − λ {ref:g} | | "
        + " | ".join(
            f"{statistics.mean(d):+.2f} ({', '.join(f'{x:+.2f}' for x in d)})" for d in diffs
        )
        + " | |"
    )
    wins = sum(x > 0 for d in diffs[1:] for x in d)
    lines += [
        "",
        f"Seeds {', '.join(map(str, seeds))}. After the first round of corrections, λ = {alt:g} "
        f"is ahead in {wins} of {len(seeds) * (rounds - 1)} seed/round pairs; mean difference "
        f"after the last round {statistics.mean(diffs[-1]):+.2f} Dice.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="thyroid_nodule")
    args = parser.parse_args()
    text = table(args.task, load(args.task))
    out = RESULTS.parent / f"unsup-weight-{args.task}.md"
    out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
