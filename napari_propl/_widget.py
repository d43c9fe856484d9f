"""The "Segment (ProPL)" dock widget.

A placeholder until the model is wired in: it shows which tasks the core knows about.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

if TYPE_CHECKING:
    import napari


def _task_names() -> list[str]:
    """Names of the built-in tasks, or an empty list while the registry is unavailable."""
    try:
        from propl.tasks import DEFAULT_TASKS
    except ImportError:
        return []
    return [f"{task.id} ({task.organ}: {task.target})" for task in DEFAULT_TASKS]


class SegmentWidget(QWidget):
    """Dock widget for prompt-guided ultrasound segmentation.

    Parameters
    ----------
    napari_viewer
        The viewer this widget belongs to (napari passes a proxy of it).
    parent
        The Qt parent, if any.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = napari_viewer
        self.setObjectName("QtProplSegmentWidget")

        names = _task_names()
        tasks_text = "\n".join(f"• {name}" for name in names) if names else "(none registered)"
        self.status_label = QLabel("The segmentation model is coming soon.")
        self.tasks_label = QLabel(f"Available tasks:\n{tasks_text}")
        self.tasks_label.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(self.status_label)
        layout.addWidget(self.tasks_label)
        layout.addStretch(1)
