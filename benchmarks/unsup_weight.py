"""Which settings should project retraining use: ProPL's pseudo-label weight λ, its view, and
how the frozen encoder's features reach the decoders? One table from the simulated annotator's
runs at each setting.

    R=benchmarks/results/unsup-weight/simulate-thyroid_nodule
    sim="propl simulate --data DATA --task thyroid_nodule --strategies uncertainty"
    for seed in 0 1 2; do
      $sim --seed $seed --unsup-weight 6 --out $R-w6-seed$seed.json      # at 6d24333
      $sim --seed $seed --unsup-weight 1 --out $R-w1-seed$seed.json      # at 6d24333
      $sim --seed $seed --out $R-w6-views4-seed$seed.json                # 4 cached views
      $sim --seed $seed --no-feature-cache --out $R-w6-nocache-seed$seed.json
      $sim --seed $seed --unsup-weight 1 --view strong --out $R-w1-strong-seed$seed.json
      $sim --seed $seed --unsup-weight 0 --out $R-w0-strong-seed$seed.json   # no unlabelled
    done
    # the default again, on the code of the λ 0 runs (how far a run moves between versions)
    Q=benchmarks/results/unsup-weight/rerun/simulate-thyroid_nodule
    $sim --seed 0 --unsup-weight 1 --out $Q-w1-strong-seed0.json
    # the nerve (us-new-task-dev), both settings on the same code
    for seed in 0 1; do for w in 1 0; do
      propl simulate --data NERVE --task brachial_plexus --strategies uncertainty --seed $seed \
        --unsup-weight $w --out $R2-w$w-strong-seed$seed.json   # R2=.../simulate-brachial_plexus
    done; done
    python benchmarks/unsup_weight.py [--task thyroid_nodule]
        (writes benchmarks/results/unsup-weight-thyroid_nodule.md, a README block)

Runs without a tag in the file name trained on one cached feature map per frame, warped by the
weak view's affine each step (the code up to ``6d24333``); ``-views4`` runs on 4 weak views of
each frame encoded and cached (the default since). The other settings do not use the cache.
(The committed λ = 1 runs also ran random picks, which this table leaves out; the commands
recorded in the untagged files predate ``--strategies`` being written into them.)

The runs follow the plugin's loop with least-confident-first picks (the review queue): 10
corrected scans train new decoders (round 0), then each round corrects the 10 least confident
scans and retrains from the last version, with the 190 other pool scans unlabelled. Every
setting sees the same seed (the same pool, start scans and round-0 network), so the difference
per seed is paired. Dice is on the task's whole test split, which nothing is chosen on.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "unsup-weight"
# (λ, view, how the frozen encoder's features reach the decoders: "warp" (cached once, the
# weak view's affine applied to the features: the code before 4 cached views), "views4" (4
# weak views of each frame encoded and cached) or "none" (the encoder runs every step))
Setting = tuple[float, str, str]
DEFAULT: Setting = (1.0, "strong", "none")  # what projects retrain with (LOOP_OPTIONS)
NO_UNLABELLED: Setting = (0.0, "strong", "none")  # the same loop, pseudo-labels weighted 0
# Paired comparisons (a − b), each changing one thing, or the strong view with the λ it wants
COMPARISONS: list[tuple[Setting, Setting]] = [
    (DEFAULT, NO_UNLABELLED),  # what the unlabelled scans add to the default loop
    ((6.0, "weak", "views4"), (6.0, "weak", "warp")),  # the cache: 4 real views vs warping
    ((6.0, "weak", "none"), (6.0, "weak", "views4")),  # no cache vs the cached views
    ((1.0, "weak", "warp"), (6.0, "weak", "warp")),  # the weight alone
    ((1.0, "strong", "none"), (6.0, "weak", "none")),  # the view, neither cached
    ((1.0, "strong", "none"), (6.0, "weak", "views4")),  # the view vs the default
]
# tasks whose λ 0 runs came after the default's, on later code (the others: same code)
LATER_NO_UNLABELLED = {"thyroid_nodule"}
UNLABELLED_TARGET = 2.0  # Dice the unlabelled scans should add after round 0 and the last
TAGS = {"": "warp", "-views4": "views4", "-nocache": "none", "-strong": "none"}


def label(setting: Setting) -> str:
    weight, view, cache = setting
    if weight == 0:
        return "0 (unlabelled scans unused)"
    if view != "weak":
        return f"{weight:g}, {view} view"
    return (
        f"{weight:g}, "
        + {
            "warp": "warped cached features",
            "views4": "4 cached views",
            "none": "no feature cache",
        }[cache]
    )


def load(task: str) -> dict[Setting, dict[int, dict]]:
    """{setting: {seed: results}} from ``simulate-TASK-wW[-views4|-nocache|-strong]-seedN``
    ``.json``. The records give λ, the view and ``--no-feature-cache``; runs without a tag
    ran with the cache as it was before views (``6d24333``), ``-views4`` runs with it after."""
    runs: dict[Setting, dict[int, dict]] = {}
    for path in RESULTS.glob(f"simulate-{task}-w*-seed*.json"):
        m = re.fullmatch(rf"simulate-{task}-w([0-9.]+)(-[a-z0-9]+)?-seed(\d+)\.json", path.name)
        if m is None or (m.group(2) or "") not in TAGS:
            continue
        doc = json.loads(path.read_text())
        retrain = doc["config"]["retrain"]
        options = retrain["options"]
        tag = m.group(2) or ""
        cached = options["view"] == "weak" and retrain.get("cache_features", True)
        named = (float(m.group(1)), "strong" if tag == "-strong" else "weak", cached)
        if (options["unsup_weight"], options["view"], TAGS[tag] != "none") != named:
            raise SystemExit(f"{path}: the record does not match the file name")
        setting = (options["unsup_weight"], options["view"], TAGS[tag])
        runs.setdefault(setting, {})[int(m.group(3))] = doc
    return runs


def table(task: str, runs: dict[Setting, dict[int, dict]]) -> str:
    if DEFAULT not in runs or len(runs) < 2:
        raise SystemExit(f"need runs at {label(DEFAULT)} and at another setting")
    # the default first, then by falling weight, weak view before strong
    order = {"views4": 0, "warp": 1, "none": 2}
    settings = sorted(runs, key=lambda s: (s != DEFAULT, -s[0], s[1] != "weak", order[s[2]]))

    def dice(s: Setting, seed: int) -> list[float]:
        return runs[s][seed]["strategies"]["uncertainty"]

    def seeds_text(seeds: list[int]) -> str:
        return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))

    rounds = len(dice(DEFAULT, min(runs[DEFAULT])))
    lines = [
        f"Pseudo-label weight λ, view and feature cache in project retraining, task `{task}`, "
        "least-confident-first corrections (`propl simulate --strategies uncertainty "
        "[--unsup-weight W] [--view strong] [--no-feature-cache] --seed N`; "
        "`python benchmarks/unsup_weight.py`). Test Dice after each round (round 0: 10 "
        "corrected scans train new decoders; each later round 10 more).",
        "",
        "| seed | λ, features | "
        + " | ".join(f"round {r}" for r in range(rounds))
        + " | pixel AUROC |",
        "|---|---|" + "---|" * rounds + "---|",
    ]
    for seed in sorted(set().union(*(runs[s] for s in settings))):
        for s in settings:
            if seed in runs[s]:
                lines.append(
                    f"| {seed} | {label(s)} | "
                    + " | ".join(f"{d:.2f}" for d in dice(s, seed))
                    + f" | {runs[s][seed]['pixel_auroc']:.3f} |"
                )
    for s in settings:
        seeds = sorted(runs[s])
        auroc = statistics.mean(runs[s][seed]["pixel_auroc"] for seed in seeds)
        means = [statistics.mean(dice(s, seed)[r] for seed in seeds) for r in range(rounds)]
        lines.append(
            f"| mean ({seeds_text(seeds)}) | {label(s)} | "
            + " | ".join(f"**{d:.2f}**" for d in means)
            + f" | {auroc:.3f} |"
        )
    summary = []
    for a, b in COMPARISONS:
        paired = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
        if not paired:
            continue
        diffs = [[dice(a, seed)[r] - dice(b, seed)[r] for seed in paired] for r in range(rounds)]
        lines.append(
            f"| λ {label(a)} − λ {label(b)} | | "
            + " | ".join(
                f"{statistics.mean(d):+.2f} ({', '.join(f'{x:+.2f}' for x in d)})" for d in diffs
            )
            + " | |"
        )
        wins = sum(x > 0 for d in diffs[1:] for x in d)
        summary.append(
            f"λ = {label(a)} is ahead of λ = {label(b)} in {wins} of "
            f"{len(paired) * (rounds - 1)} seed/round pairs ({seeds_text(paired)}; mean "
            f"difference after the last round {statistics.mean(diffs[-1]):+.2f} Dice)"
        )
    paired = sorted(set(runs.get(DEFAULT, {})) & set(runs.get(NO_UNLABELLED, {})))
    if paired:
        gains = [
            statistics.mean(
                dice(DEFAULT, seed)[r] - dice(NO_UNLABELLED, seed)[r] for seed in paired
            )
            for r in (0, rounds - 1)
        ]
        met = all(g >= UNLABELLED_TARGET for g in gains)
        lines += [
            "",
            f"**What the unlabelled scans add to the default loop** (λ {label(DEFAULT)} − λ 0, "
            f"{seeds_text(paired)}): {gains[0]:+.2f} Dice after round 0, {gains[1]:+.2f} after "
            f"round {rounds - 1} (target ≥ +{UNLABELLED_TARGET:g} at both: "
            f"{'met' if met else 'missed'})."
            + (
                " The λ 0 runs were made later than the default's, on the same seeds and "
                "settings but later code."
                if task in LATER_NO_UNLABELLED
                else " Both on the same code."
            ),
        ]
        lines += same_code_check(task, runs)
    lines += [
        "",
        "Differences are paired by seed (same pool, start scans and round-0 initialisation); "
        "each comparison changes one setting, or the view with the weight it trains best at. "
        f"After the first round of corrections: {'; '.join(summary)}.",
    ]
    return "\n".join(lines) + "\n"


def same_code_check(task: str, runs: dict[Setting, dict[int, dict]]) -> list[str]:
    """The default rerun on the λ 0 runs' code (``RESULTS/rerun/``, file names as above):
    how far a single run moves between code versions, and the gain paired on one code."""
    lines = []
    for path in sorted((RESULTS / "rerun").glob(f"simulate-{task}-w1-strong-seed*.json")):
        seed = int(path.stem.rsplit("seed", 1)[1])
        if seed not in runs.get(NO_UNLABELLED, {}) or seed not in runs.get(DEFAULT, {}):
            continue
        again = json.loads(path.read_text())["strategies"]["uncertainty"]
        first = runs[DEFAULT][seed]["strategies"]["uncertainty"]
        none = runs[NO_UNLABELLED][seed]["strategies"]["uncertainty"]
        fmt = ", ".join
        lines += [
            "",
            f"Same-code check, seed {seed}: the default rerun on the λ 0 runs' code scored "
            f"{fmt(f'{d:.2f}' for d in again)} after rounds 0–{len(again) - 1} (first run "
            f"{fmt(f'{d:.2f}' for d in first)}): a single run of this loop moves by up to "
            f"{max(abs(a - b) for a, b in zip(again, first, strict=True)):.2f} Dice between code "
            "versions. Paired on one code, the unlabelled scans add "
            f"{fmt(f'{a - b:+.2f}' for a, b in zip(again, none, strict=True))} in this seed.",
        ]
    return lines


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
