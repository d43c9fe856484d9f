"""A dialog to add a task (name, organ, target, colour) to the open project."""

from __future__ import annotations

from typing import Any

from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QColorDialog,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from propl.tasks import PALETTE, Task


class NewTaskDialog(QDialog):
    """Ask for a new task; ``task()`` builds it (raises ValueError naming the bad field)."""

    def __init__(self, existing: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New task")
        self.existing = existing
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. kidney_stone (lowercase, digits, _)")
        self.organ = QLineEdit()
        self.organ.setPlaceholderText("e.g. kidney")
        self.target = QLineEdit()
        self.target.setPlaceholderText("e.g. stone")
        self.colour = PALETTE[len(existing) % len(PALETTE)]
        self.colour_button = QPushButton()
        self.colour_button.clicked.connect(self._pick_colour)
        self._show_colour()
        self.error = QLabel("")
        self.error.setStyleSheet("color: #e57373")
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self._check_and_accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("name", self.name)
        form.addRow("organ", self.organ)
        form.addRow("target", self.target)
        form.addRow("colour", self.colour_button)
        form.addRow(self.error)
        form.addRow(
            QLabel(
                "The model learns the task when you retrain after labelling a few scans\n"
                "(at least 2: one is held back to check the new model)."
            )
        )
        form.addRow(buttons)

    def _show_colour(self) -> None:
        self.colour_button.setText(self.colour)
        self.colour_button.setStyleSheet(f"background-color: {self.colour}")

    def _pick_colour(self) -> None:
        picked = QColorDialog.getColor(QColor(self.colour), self, "Task colour")
        if picked.isValid():
            self.colour = picked.name()
            self._show_colour()

    def task(self) -> Task:
        name = self.name.text().strip()
        if name in self.existing:
            raise ValueError(f"the project already has a task {name!r}")
        organ, target = self.organ.text().strip(), self.target.text().strip()
        prompt = f"{organ} {target}".strip()
        return Task(name, organ, target, prompt, self.colour)

    def _check_and_accept(self) -> None:
        try:
            self.task()
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        self.accept()


def ask_new_task(existing: list[str], parent: QWidget | None = None) -> Any:
    """Show the dialog; the new Task, or None when cancelled."""
    dialog = NewTaskDialog(existing, parent)
    return dialog.task() if dialog.exec_() == QDialog.Accepted else None
