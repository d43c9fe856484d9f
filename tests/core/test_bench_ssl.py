"""The SSL benchmark's report: one row per run, and a per-seed summary that pairs each method
with supervised training on the same seed (the seed draws the labelled subset)."""

from __future__ import annotations

import pytest

from propl.bench.ssl import seed_summary, ssl_markdown


def run(method: str, seed: int, mdice: float, labelled: str = "1/16", **kw) -> dict:
    per_task = {"a": {"dice": mdice, "iou": mdice - 10, "hd95": 5.0}}
    return {"method": method, "labelled": labelled, "seed": seed, "mdice": mdice,
            "miou": mdice - 10, "val_mdice": mdice + 1, "per_task": per_task, **kw}  # fmt: skip


RUNS = [
    run("supervised", 0, 70.0),
    run("supervised", 1, 74.0),
    run("propl", 1, 75.0, pseudo_label="uplc", view="weak"),
    run("propl", 0, 69.0, pseudo_label="uplc", view="weak"),
    run("propl", 0, 71.5, pseudo_label="weighted", view="weak"),  # one seed: no summary
    run("unimatch", 0, 72.0),
    run("unimatch", 1, 73.0),
    run("unimatch", 2, 90.0),  # no supervised seed 2: left out of the paired difference
    run("supervised", 0, 80.0, labelled="1/8"),
]


def test_seed_summary_pairs_each_method_with_supervised_on_the_same_seed():
    rows = {(r["method"], r["labelled"]): r for r in seed_summary(RUNS)}
    assert set(rows) == {("supervised", "1/16"), ("propl", "1/16"), ("unimatch", "1/16")}
    assert rows["supervised", "1/16"]["vs_supervised"] is None
    propl = rows["propl", "1/16"]
    assert propl["seeds"] == [0, 1]
    assert propl["mdice_mean"] == pytest.approx(72.0)
    assert propl["vs_supervised"] == pytest.approx([-1.0, 1.0])  # seed order, not run order
    uni = rows["unimatch", "1/16"]
    assert uni["mdice_mean"] == pytest.approx(235 / 3)
    assert (uni["mdice_min"], uni["mdice_max"]) == (72.0, 90.0)
    assert uni["vs_supervised"] == pytest.approx([2.0, -1.0])


def test_markdown_has_a_seed_column_and_the_summary_only_with_several_seeds():
    md = ssl_markdown({"profile": "quick", "device": "cpu", "tasks": ["a"], "runs": RUNS})
    assert "| propl (weighted) | 1/16 | 0 | 71.5 |" in md
    assert "| propl | 1/16 | 1 | 75.0 |" in md
    assert "| propl | 1/16 | 0, 1 | **72.00** | 69.00 – 75.00 | +0.00 (-1.00, +1.00) |" in md
    assert "| unimatch | 1/16 | 0, 1, 2 | **78.33** | 72.00 – 90.00 | +0.50 (+2.00, -1.00) |" in md
    # rows are ordered by labels, method, variant, seed
    lines = [line for line in md.splitlines() if line.startswith("| propl")]
    assert [line.split(" | ")[2] for line in lines[:3]] == ["0", "1", "0"]

    single = ssl_markdown({"profile": "quick", "tasks": ["a"], "runs": RUNS[:1]})
    assert "Over seeds" not in single


def test_propl_variants_are_named_and_rows_from_before_an_option_keep_the_papers_setting():
    from propl.bench.ssl import _key, run_name, variant_name
    from propl.train.methods import MethodOptions

    old = run("propl", 0, 70.0, pseudo_label="uplc", view="weak")  # written before --teacher
    paper = run("propl", 0, 70.0, pseudo_label="uplc", view="weak", teacher="self",
                unsup_weight=6.0)  # fmt: skip
    assert _key(old) == _key(paper) and run_name(old) == "propl"
    ema = run("propl", 0, 70.0, pseudo_label="weighted", teacher="ema", unsup_weight=1.0)
    assert run_name(ema) == "propl (weighted, ema, weight 1)"
    assert _key(ema) != _key(paper)
    opts = MethodOptions(pseudo_label="weighted", teacher="ema", unsup_weight=1.0)
    assert variant_name(opts) == "-weighted-ema-w1" and variant_name(MethodOptions()) == ""
    # other methods carry no ProPL options, whatever the arguments said
    assert run_name(run("unimatch", 0, 70.0, teacher=None)) == "unimatch"


def test_every_profile_can_be_chosen_on_the_command_line():
    from propl.bench.ssl import PROFILES
    from propl.cli import build_parser

    for name in PROFILES:
        args = build_parser().parse_args(["benchmark", "ssl", "--data", "d", "--profile", name])
        assert args.profile == name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["benchmark", "ssl", "--data", "d", "--profile", "huge"])
