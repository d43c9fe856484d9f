"""``make demo``: napari with the plugin's widgets and the sample echo cine, segmented.

    python -m napari_propl.demo [--headless] [--out DIR] [--task left_heart] [--model DIR]

Opens napari, loads pydicom's echo cine (File > Open Sample does the same), docks the Segment,
Review and Retrain widgets and segments every frame with the shipped model in a worker. On a machine
without a display (or with ``--headless``) it says so and runs ``propl demo`` instead: masks,
uncertainty and an overlay PNG written to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

PLUGIN = "napari-propl"


def has_display() -> bool:
    """Whether a window can open (Linux/BSD need X11 or Wayland; macOS and Windows have one)."""
    if not sys.platform.startswith(("linux", "freebsd")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_headless(args: argparse.Namespace) -> int:
    from propl.cli import main as propl_main

    argv = ["demo", "--out", str(args.out), "--task", args.task, "--overwrite"]
    if args.model:
        argv += ["--model", str(args.model)]
    return propl_main(argv)


def open_viewer(task: str, model: str | None = None, segment: bool = True) -> object:
    """A viewer with the sample cine, the plugin's widgets docked, segmentation started."""
    import napari

    from ._sample_data import echo_cine

    viewer = napari.Viewer(title="napari-propl demo")
    [(data, kwargs, _kind)] = echo_cine()
    layer = viewer.add_image(data, **kwargs)
    viewer.window.add_plugin_dock_widget(PLUGIN, "Review (ProPL)")
    viewer.window.add_plugin_dock_widget(PLUGIN, "Retrain (ProPL)", tabify=True)
    # the last tab added is in front: Segment, which shows the segmentation's result
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment (ProPL)", tabify=True)
    if model:
        seg.model_edit.setText(model)
        seg._refresh_tasks()
    seg.image_combo.setCurrentText(layer.name)
    seg.task_combo.setCurrentText(task)
    seg.scope_combo.setCurrentText("all frames")
    if segment:
        seg.run()
    return viewer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_propl.demo", description=__doc__)
    parser.add_argument("--headless", action="store_true", help="write files, open no window")
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--task", default="left_heart")
    parser.add_argument("--model", help="checkpoint folder (default: the shipped model)")
    args = parser.parse_args(argv)
    if args.headless or not has_display():
        if not args.headless:
            print(
                "no display found (DISPLAY/WAYLAND_DISPLAY unset): running the headless demo, "
                f"files go to {args.out}/",
                file=sys.stderr,
            )
        return run_headless(args)
    import napari

    open_viewer(args.task, args.model)
    napari.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
