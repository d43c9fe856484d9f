"""The command-line reference, ``docs/cli.md``, rendered from the ``propl`` parsers.

The page is generated so that it cannot drift from the commands: a test compares the committed
file with :func:`render`. After changing an option in ``propl.cli``::

    python -m propl.cli_reference docs/cli.md            # rewrite the page
    python -m propl.cli_reference --check docs/cli.md    # exit 1 when it is out of date

The usage lines and tables are built from the parsers' actions rather than from argparse's own
help text, whose layout depends on the terminal's width and on the Python version.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from .cli import build_parser

COMMAND = "python -m propl.cli_reference docs/cli.md"
USAGE_WIDTH = 96


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole reference page as markdown: the commands' list, then each command's usage and
    options (subcommands such as ``propl benchmark ssl`` included)."""
    parser = parser or build_parser()
    lines = [
        "# Command-line reference",
        "",
        f"<!-- Generated from the parsers in src/propl/cli.py by `{COMMAND}`;",
        "     do not edit by hand (tests/core/test_cli_reference.py checks it). -->",
        "",
        "Every command also takes `-h`/`--help`. Commands that take `--model` use the shipped",
        "universal model unless it is given. The folder layout that `--data` expects, and where",
        "the us-universal data comes from: [data.md](data.md).",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    commands = list(_commands(parser, "propl"))
    for name, _, summary in commands[1:]:
        lines.append(f"| [`{name}`](#{_anchor(name)}) | {_cell(summary)} |")
    lines.append("")
    for name, sub, summary in commands:
        lines += _section(name, sub, summary)
    return "\n".join(lines).rstrip() + "\n"


def _commands(
    parser: argparse.ArgumentParser, name: str, summary: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """``(full name, parser, one-line help)`` of ``parser`` and every subcommand, depth first."""
    yield name, parser, summary
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for sub_name, sub in action.choices.items():
                yield from _commands(sub, f"{name} {sub_name}", helps.get(sub_name, ""))


def _section(name: str, parser: argparse.ArgumentParser, summary: str) -> list[str]:
    lines = [f"## {name}", ""]
    for text in dict.fromkeys(t for t in (summary, parser.description) if t):
        lines += [_markdown(text), ""]
    lines += ["```text", *_usage(name, parser), "```", ""]
    rows = [_row(a, name) for a in parser._actions if _documented(a)]
    if rows:
        lines += ["| option | default | description |", "|---|---|---|", *rows, ""]
    return lines


def _documented(action: argparse.Action) -> bool:
    return action.help is not argparse.SUPPRESS and not isinstance(
        action, argparse._HelpAction | argparse._SubParsersAction
    )


def _usage(name: str, parser: argparse.ArgumentParser) -> list[str]:
    """``usage: NAME [options] POSITIONALS``, wrapped at :data:`USAGE_WIDTH` columns; a mutually
    exclusive group reads ``(--a A | --b B)`` when one is required, else ``[--a A | --b B]``."""
    grouped: dict[argparse.Action, argparse._MutuallyExclusiveGroup] = {}
    for exclusive in parser._mutually_exclusive_groups:
        for action in exclusive._group_actions:
            grouped[action] = exclusive
    optional: list[str] = []
    positional: list[str] = []
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help is argparse.SUPPRESS:
            continue
        group = grouped.get(action)
        if not action.option_strings:
            positional.append(_word(action))
        elif group is None:
            optional.append(_word(action, bracket=not action.required))
        elif id(group) not in seen:
            seen.add(id(group))
            inner = " | ".join(_word(a) for a in group._group_actions)
            optional.append(f"({inner})" if group.required else f"[{inner}]")
    return _wrap(f"usage: {name}", optional + positional)


def _word(action: argparse.Action, bracket: bool = False) -> str:
    """How ``action`` reads in a usage line: ``--out OUT``, ``[--json]``, ``files [files ...]``."""
    args = _args(action)
    if isinstance(action, argparse._SubParsersAction):
        return f"{args} ..."
    if not action.option_strings:
        return args
    text = f"{action.option_strings[0]} {args}".strip()
    return f"[{text}]" if bracket else text


def _args(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        metavar = str(action.metavar)
    elif action.choices is not None:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        metavar = action.dest if not action.option_strings else action.dest.upper()
    if action.nargs is None or action.nargs == argparse.PARSER:
        return metavar
    if action.nargs == argparse.REMAINDER:
        return "..."
    if action.nargs == "?":
        return f"[{metavar}]"
    if action.nargs == "*":
        return f"[{metavar} ...]"
    if action.nargs == "+":
        return f"{metavar} [{metavar} ...]"
    return " ".join([metavar] * int(action.nargs))  # type: ignore[arg-type]


def _wrap(head: str, words: list[str]) -> list[str]:
    lines, line = [], head
    indent = " " * (len(head) + 1)
    for word in words:
        if len(line) + 1 + len(word) > USAGE_WIDTH and line.strip() != head.strip():
            lines.append(line)
            line = indent + word
        else:
            line = f"{line} {word}"
    return [*lines, line]


def _row(action: argparse.Action, prog: str) -> str:
    args = _args(action)
    names = ", ".join(f"`{o} {args}`".replace(" `", "`") for o in action.option_strings)
    names = names or f"`{args}`"
    help_text = action.help or ""
    if "%(" in help_text:
        help_text = help_text % {**vars(action), "prog": prog}
    if action.required and action.option_strings:
        help_text = f"**required.** {help_text}"
    return f"| {names} | {_cell(_default(action))} | {_cell(help_text)} |"


def _default(action: argparse.Action) -> str:
    """The default worth printing: none for flags, required options and unset values."""
    default = action.default
    if action.nargs == 0 or action.required or default in (None, argparse.SUPPRESS):
        return ""
    if isinstance(default, list | tuple):
        return " ".join(map(str, default))
    return str(default)


def _cell(text: str) -> str:
    """``text`` as one table cell: one line, ``|`` escaped."""
    return " ".join(_markdown(text).replace("|", "\\|").split())


def _markdown(text: str) -> str:
    """``<`` outside code spans escaped, so ``<name>`` is not read as an HTML tag."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;")
    return "`".join(parts)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading made of words, spaces and hyphens."""
    return heading.lower().replace(" ", "-")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m propl.cli_reference", description=__doc__.splitlines()[0]
    )
    ap.add_argument("out", type=Path, help="the page to write, e.g. docs/cli.md")
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when they differ")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
