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


def test_names_lead_with_the_role_and_differ() -> None:
    """The layer list cuts a long name in the middle: mask, outline and uncertainty of one
    scan must still be told apart, so each name starts with what the layer shows."""
    review = _layers.names("ddti_0012 thyroid", None)
    assert review == {
        "mask": "mask · ddti_0012 thyroid",
        "low": "uncertain outline · ddti_0012 thyroid",
        "uncertainty": "uncertainty · ddti_0012 thyroid",
    }
    segment = _layers.names("ddti_0012 thyroid", "thyroid_nodule")
    assert segment["mask"] == "mask · ddti_0012 thyroid [thyroid_nodule]"
    assert not set(review.values()) & set(segment.values())  # review never reuses Segment's


def test_layers_carry_their_role_and_the_uncertainty_shows() -> None:
    viewer = FakeViewer()
    viewer.add_image = lambda data, **kw: Image(data, **kw)  # type: ignore[attr-defined]
    viewer.add_labels = lambda data, **kw: Labels(data, **kw)  # type: ignore[attr-defined]
    made = [u.apply(viewer) for u in updates()]
    assert [_layers.role_of(layer) for layer in made] == ["uncertainty", "low", "mask"]
    unc = made[0]
    assert unc.visible and unc.blending == "additive"
    # the outline level on the scale: the band around a mask glows instead of staying black
    assert unc.contrast_limits[0] < 0.15 < unc.contrast_limits[1] <= 0.6
    assert _layers.role_of(Image(np.zeros((4, 4)))) is None
