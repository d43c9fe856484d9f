"""Copy the benchmark tables into a markdown file between ``<!-- BEGIN name -->`` markers.

The README's numbers then come verbatim from ``benchmarks/results/<name>.md``, which the
benchmark commands generate from their JSON results.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..checkpoint import atomic_write_bytes


def update_markdown(doc: Path, results: Path) -> list[str]:
    """Replace every ``<!-- BEGIN x -->...<!-- END x -->`` block of ``doc`` with ``results/x.md``.

    Returns:
        The names of the blocks that were filled. A block whose results file is missing is left
        as it is.
    """
    text = doc.read_text()
    filled: list[str] = []

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        table = results / f"{name}.md"
        if not table.is_file():
            return match.group(0)
        filled.append(name)
        return f"<!-- BEGIN {name} -->\n{table.read_text().strip()}\n<!-- END {name} -->"

    new = re.sub(r"<!-- BEGIN ([\w.-]+) -->.*?<!-- END \1 -->", fill, text, flags=re.S)
    if new != text:
        atomic_write_bytes(doc, new.encode())
    return filled
