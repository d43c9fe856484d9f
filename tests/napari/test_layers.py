"""How layer updates are grouped into event-loop turns (napari_propl._layers)."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels

from napari_propl import _layers


class FakeViewer:
    """Just the ``layers`` lookup that planning needs."""

    def __init__(self, *layers: object) -> None:
        self.layers = {layer.name: layer for layer in layers}  # type: ignore[attr-defined]


def updates(defer_secondary: bool = False) -> list[_layers.LayerUpdate]:
    frame = np.zeros((1, 8, 8), np.uint8)
    return _layers.prediction_updates(
        "scan",
        "task",
        "#ff0000",
        frame,
        frame.astype(np.float16),
        frame,
        (1.0, 1.0, 1.0),
        defer_secondary=defer_secondary,
    )


def existing() -> FakeViewer:
    names = _layers.names("scan", "task")
    frame = np.zeros((1, 8, 8), np.uint8)
    return FakeViewer(
        Image(frame.astype(np.float16), name=names["uncertainty"]),
        Labels(frame, name=names["low"]),
        Labels(frame, name=names["mask"]),
    )


def test_existing_layers_are_updated_together_in_one_turn() -> None:
    """Reviewing the next scan replaces data only: one turn, one repaint (not one per layer)."""
    names = _layers.names("scan", "task")
    turns, later = _layers.plan_turns(existing(), updates())
    assert [[u.name for u in turn] for turn in turns] == [
        [names["uncertainty"], names["low"], names["mask"]]
    ]
    assert later == []


def test_deferred_updates_of_existing_layers_wait_for_a_later_turn() -> None:
    """The review shows image and mask first; the outline and uncertainty follow."""
    names = _layers.names("scan", "task")
    turns, later = _layers.plan_turns(existing(), updates(defer_secondary=True))
    assert [[u.name for u in turn] for turn in turns] == [[names["mask"]]]
    assert [u.name for u in later] == [names["uncertainty"], names["low"]]
    # a layer to create is never deferred: the layers keep their order (mask on top)
    turns, later = _layers.plan_turns(FakeViewer(), updates(defer_secondary=True))
    assert [[u.name for u in turn] for turn in turns] == [
        [names["uncertainty"]],
        [names["low"]],
        [names["mask"]],
        [],
    ]
    assert later == []


def test_each_layer_to_create_gets_a_turn_of_its_own() -> None:
    names = _layers.names("scan", "task")
    frame = np.zeros((1, 8, 8), np.uint8)
    # the mask exists, but as an Image: it must be made again as Labels
    viewer = FakeViewer(
        Image(frame.astype(np.float16), name=names["uncertainty"]),
        Image(frame, name=names["mask"]),
    )
    turns, _ = _layers.plan_turns(viewer, updates())
    assert [[u.name for u in turn] for turn in turns] == [
        [names["uncertainty"]],
        [names["low"]],
        [names["mask"]],
        [],  # ``done`` runs after the last creation has been painted
    ]
    assert _layers.plan_turns(FakeViewer(), []) == ([[]], [])
