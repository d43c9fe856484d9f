"""`propl demo` into the folder `make demo` wrote: refused at once, with the way out."""

from __future__ import annotations

from pathlib import Path

from propl.cli import main


def test_existing_outputs_are_refused_before_any_work(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo-output"
    out.mkdir()
    mine = out / "echo_left_heart_mask.tif"
    mine.write_bytes(b"from make demo")
    notes = out / "notes.txt"
    notes.write_text("the user's own file")
    # a model that does not exist: the refusal must come first, before any model is read
    assert main(["demo", "--out", str(out), "--model", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err
    assert "echo_left_heart_mask.tif exists" in err and "--overwrite" in err
    assert mine.read_bytes() == b"from make demo" and notes.read_text() == "the user's own file"
