"""docs/cli.md is generated from the parsers: it lists every command and option, and is current."""

from __future__ import annotations

import argparse
from pathlib import Path

from propl.cli import build_parser
from propl.cli_reference import COMMAND, main, render

ROOT = Path(__file__).resolve().parents[2]


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_the_committed_reference_is_current() -> None:
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == render(), f"docs/cli.md is out of date: run `{COMMAND}` from the repo root"


def test_every_command_and_option_is_documented() -> None:
    text = render()
    for parser in _parsers(build_parser()):
        assert f"## {parser.prog}\n" in text
        for action in parser._actions:
            for option in action.option_strings:
                assert option in ("-h", "--help") or f"`{option}" in text, (parser.prog, option)


def test_check_mode_reports_a_stale_page(tmp_path: Path, capsys) -> None:
    page = tmp_path / "cli.md"
    assert main([str(page)]) == 0
    assert main(["--check", str(page)]) == 0
    page.write_text(page.read_text(encoding="utf-8") + "edited by hand\n", encoding="utf-8")
    assert main(["--check", str(page)]) == 1
    assert COMMAND in capsys.readouterr().err


def test_usage_groups_and_required_options() -> None:
    text = render()
    assert "usage: propl train (--data DATA | --project PROJECT)" in text
    assert "[--use VERSION | --add CHECKPOINT]" in text
    assert "| `--task TASK` |  | **required.**" in text
