"""Widgets that keep the dock column narrow: at 1600×1000 the right column has ~450 px, and
one long layer or task name in a combo box would widen it and squeeze the canvas."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

COMBO_CHARS = 14


def compact_combo(chars: int = COMBO_CHARS) -> QComboBox:
    """A combo box about ``chars`` characters wide whatever its items (a longer name is cut
    short on the box; its tooltip and the list it opens show it whole)."""
    combo = QComboBox()
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)
    combo.currentTextChanged.connect(combo.setToolTip)
    return combo
