"""The "Retrain (ProPL)" dock widget: retrain from the project's reviews without blocking napari.

Training runs as a subprocess, the same ``propl train --project P --json --no-promote`` the
command line offers, started with ``QProcess`` (its output arrives through the event loop: no
thread here). The widget draws the loss and the held-back Dice as JSON lines arrive; Cancel
sends SIGTERM (the run stops at the next step and writes nothing). When a version comes back
better than the current model the core session promotes it (this process holds the project's
writer lock; :meth:`propl.annotation.AnnotationSession.settle_round`), re-predicts the
unreviewed scans in a worker (:meth:`~propl.annotation.AnnotationSession.iter_repredict`) and
the review queue re-orders.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QPointF, QProcess, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from propl.store.review_state import CONFIRMED

from ._gc import CollectorHold
from ._session import Session, SessionMember, tab_with

if TYPE_CHECKING:
    import napari

LOSS_COLOUR = QColor("#f5a623")
DICE_COLOUR = QColor("#4fc3f7")
CANCEL_GRACE_MS = 15000
AUTO_STEPS = 0
"""The steps box's "auto": no --steps, so the core chooses (``propl.train.project``)."""
TRAIN_NICE = 10  # the training subprocess yields the CPU to the GUI (Unix nice)


class CurvePlot(QWidget):
    """Training loss (left axis, own scale) and held-back Dice (right axis, 0-100) per step."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(170)
        self.loss: list[tuple[int, float]] = []
        self.dice: list[tuple[int, float]] = []
        self.baseline: float | None = None  # the current model's held-back Dice (dashed)
        self.baseline_name = ""
        self.total = 1

    def reset(self, total: int) -> None:
        self.loss, self.dice, self.baseline, self.total = [], [], None, max(total, 1)
        self.update()

    def add_loss(self, step: int, loss: float) -> None:
        self.loss.append((step, loss))
        self.update()

    def add_dice(self, step: int, dice: float) -> None:
        self.dice.append((step, dice))
        self.update()

    def legend(self) -> list[tuple[QColor, str]]:
        """The legend's entries: the latest loss and Dice, the current model's Dice."""
        entries = []
        if self.loss:
            entries.append((LOSS_COLOUR, f"loss {self.loss[-1][1]:.3f}"))
        if self.dice:
            entries.append((DICE_COLOUR, f"held-back Dice {self.dice[-1][1]:.1f}"))
        if self.baseline is not None:
            name = self.baseline_name or "current"
            entries.append((DICE_COLOUR, f"- - {name} {self.baseline:.1f}"))
        return entries

    def _legend_places(self, width: int) -> list[tuple[int, int]]:
        """Where each legend entry starts, (x, baseline y): as many lines as the width needs
        (the dock column is narrow at 1600 px)."""
        metrics, gap = self.fontMetrics(), 14
        x, y, places = 4, metrics.ascent() + 2, []
        for _, text in self.legend():
            advance = metrics.horizontalAdvance(text)
            if x > 4 and x + advance > width - 4:
                x, y = 4, y + metrics.height()
            places.append((x, y))
            x += advance + gap
        return places

    def paintEvent(self, _event: Any) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        w, h = self.width(), self.height()
        places = self._legend_places(w)
        top = max(20, places[-1][1] + 6) if places else 20
        left, right, bottom = 40, 34, 18
        pw, ph = w - left - right, h - top - bottom
        painter.fillRect(self.rect(), QColor("#262930"))
        painter.setPen(QPen(QColor("#888888"), 1))
        painter.drawRect(left, top, pw, ph)

        def x_of(step: float) -> float:
            return left + pw * step / self.total

        def y_of(v: float, high: float) -> float:
            return top + ph * (1 - v / high)

        painter.drawText(left - 4, h - 4, "0")
        painter.drawText(left + pw - 30, h - 4, f"{self.total}")
        painter.drawText(left + pw // 2 - 14, h - 4, "step")
        painter.drawText(w - right + 4, top + 10, "100")
        painter.drawText(w - right + 4, top + ph, "0")
        if self.loss:
            high = max(v for _, v in self.loss) * 1.1 or 1.0
            painter.setPen(QPen(LOSS_COLOUR, 1.5))
            painter.drawPolyline(QPolygonF([QPointF(x_of(s), y_of(v, high)) for s, v in self.loss]))
            painter.drawText(2, top + 10, f"{high:.2f}")
            painter.drawText(2, top + ph, "0")
        if self.baseline is not None:
            painter.setPen(QPen(DICE_COLOUR, 1, Qt.DashLine))
            y = y_of(self.baseline, 100.0)
            painter.drawLine(QPointF(left, y), QPointF(left + pw, y))
        if self.dice:
            painter.setPen(QPen(DICE_COLOUR, 2))
            points = [QPointF(x_of(s), y_of(v, 100.0)) for s, v in self.dice]
            painter.drawPolyline(QPolygonF(points))
            for p in points:
                painter.drawEllipse(p, 2.5, 2.5)
        for (colour, text), (x, y) in zip(self.legend(), places, strict=True):
            painter.setPen(QPen(colour, 1))
            painter.drawText(x, y, text)
        painter.end()


class RetrainWidget(SessionMember, QWidget):
    """Retrain the project's model from its reviews; versions, promotion and rollback."""

    # every JSON event of the training subprocess, once the widget has shown it
    event_received = Signal(dict)
    # a round is over: its verdict and, after a promotion, the re-prediction and the queue's
    # re-ordering are done. {"outcome": "better" | "worse" | "failed" | "cancelled" |
    # "error", "version": name or None, "promoted": bool, "status": the status line}
    round_settled = Signal(dict)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.setObjectName("QtProplRetrainWidget")
        self.process: QProcess | None = None
        self._buffer = b""
        self._result: dict[str, Any] | None = None
        self._cancelled = False
        self._closing = False  # napari is closing: the run is stopped, not failed
        self._since_training = 0
        self.clock = RoundClock()
        self._tick = QTimer(self)  # the elapsed time moves on between the run's events
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._show_time)
        self._repredict_worker: Any = None
        self._promoted: str | None = None  # the promoted version whose re-prediction runs
        self._repredict_note = ""  # what the status says before the re-prediction count
        self._collector = CollectorHold()  # held from the start of a round until it settles
        self.events: list[dict[str, Any]] = []  # every JSON event of the last run (tests)

        self.model_label = QLabel("no project open")
        self.model_label.setWordWrap(True)
        self.steps = QSpinBox()
        self.steps.setRange(AUTO_STEPS, 100000)
        self.steps.setSpecialValueText("auto")  # the core's choice: 150, 300 for a new task
        self.steps.setValue(AUTO_STEPS)
        self.steps.setToolTip(
            "training steps of a round (more: longer, often better). auto: 150, or 300 when "
            "the round learns a task the model does not know yet"
        )
        self.train_encoder = QCheckBox("train encoder")
        self.train_encoder.setToolTip(
            "train the encoder too, not only the decoder (slower; may fit a new scanner better)"
        )
        self.strong_view = QCheckBox("strong view")
        self.strong_view.setChecked(True)  # the default: propl.train.methods.LOOP_OPTIONS
        self.strong_view.setToolTip(
            "on (default): ProPL's strong view at pseudo-label weight 1, more accurate from few "
            "reviews: the clean decoder learns from a recoloured, CutMixed copy of each "
            "unreviewed frame, and the encoder runs every step. A round that learns a new task "
            "uses the new-task recipe instead (cached features). Off: the paper's weak view at "
            "weight 6 on cached features, faster, less accurate in the benchmarks"
        )
        self.auto_every = QSpinBox()
        self.auto_every.setRange(0, 1000)
        self.auto_every.setSpecialValueText("off")
        self.auto_every.setToolTip("retrain by itself after this many new reviews (off: never)")
        self.run_button = QPushButton("Retrain")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.plot = CurvePlot()
        self.versions = QListWidget()
        self.versions.setWordWrap(True)
        self.versions.setMaximumHeight(160)
        self.use_button = QPushButton("Use selected")
        self.use_button.setToolTip("predict with the version selected above (a rollback)")
        self.shipped_button = QPushButton("Use shipped")
        self.shipped_button.setToolTip("predict with the model that came with ProPL")
        self.add_button = QPushButton("Add model…")
        self.add_button.setToolTip(
            "add a checkpoint folder (model.safetensors + model.json), e.g. your lab's model, as "
            "a new version: the project predicts with it and retrains from it"
        )
        self.versions.setToolTip("newest first; ● the version in use")
        self._import_worker: Any = None

        # two compact columns, the details in tooltips: the dock column stays narrow and
        # leaves the canvas >= 800 px of a 1600 px screen
        form = QGridLayout()
        form.addWidget(_label("steps", self.steps), 0, 0)
        form.addWidget(self.steps, 0, 1)
        form.addWidget(_label("auto every", self.auto_every), 0, 2)
        form.addWidget(self.auto_every, 0, 3)
        form.addWidget(self.train_encoder, 1, 0, 1, 2)
        form.addWidget(self.strong_view, 1, 2, 1, 2)
        form.setColumnStretch(1, 1)
        form.setColumnStretch(3, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        swap = QHBoxLayout()
        swap.addWidget(self.use_button)
        swap.addWidget(self.shipped_button)
        swap.addWidget(self.add_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.model_label)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.plot, 2)
        layout.addWidget(self.status_label)
        layout.addWidget(_label("model versions", self.versions))
        layout.addWidget(self.versions, 1)
        layout.addLayout(swap)

        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button.clicked.connect(self._use_selected)
        self.shipped_button.clicked.connect(lambda: self.use_version(None))
        self.add_button.clicked.connect(self._choose_model)
        self.join_session_when_docked()
        QTimer.singleShot(0, self._tab_with_review)

    # -- session ---------------------------------------------------------------------------

    def _tab_with_review(self) -> None:
        """Docked as a tab of the Review dock: stacked under it, the window outgrows 1000 px."""
        try:
            tab_with(self, "QtProplReviewWidget")
        except RuntimeError:  # closed before the event loop came round
            pass

    def _connect_session(self, session: Session) -> None:
        session.project_changed.connect(self.refresh)
        session.model_changed.connect(self.refresh)
        session.review_saved.connect(self._on_review_saved)
        session.closed.connect(self._on_closed)
        self.refresh()

    def refresh(self) -> None:
        """Show the current model and the version list."""
        project = self.session.project
        self.versions.clear()
        if project is None:
            self.model_label.setText("no project open: open one in the Review widget")
            return
        current = project.current_version()
        name = current.name if current else "shipped"
        if current is not None and current.held_back_score is not None:
            score = f" (held-back Dice {current.held_back_score:.1f})"
        else:
            score = ""
        self.model_label.setText(f"current model: {name}{score}")
        for v in reversed(project.versions()):
            mark = "● " if v.name == name else "   "
            item = QListWidgetItem(mark + v.describe())
            item.setData(Qt.UserRole, v.name)
            item.setToolTip(v.message or json.dumps(v.record.get("settings", {}), indent=1))
            if not v.usable:
                item.setForeground(QColor("#e57373"))
            self.versions.addItem(item)

    # -- running ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """The training subprocess is running."""
        return self.process is not None

    @property
    def busy(self) -> bool:
        """Training, or re-predicting the project's scans with a new current model."""
        return self.running or self._repredict_worker is not None

    def _settled(self, outcome: str, version: str | None, promoted: bool = False) -> None:
        self._collector.release()
        self.round_settled.emit(
            {
                "outcome": outcome,
                "version": version,
                "promoted": promoted,
                "status": self.status_label.text(),
            }
        )

    def command(self) -> list[str]:
        project = self.session.project
        assert project is not None
        args = ["-m", "propl", "train", "--project", str(project.root), "--json", "--no-promote"]
        args += ["--nice", str(TRAIN_NICE)]  # napari's event loop comes first on a busy CPU
        if self.steps.value() != AUTO_STEPS:
            args += ["--steps", str(self.steps.value())]
        if self.train_encoder.isChecked():
            args.append("--train-encoder")
        if not self.strong_view.isChecked():  # on is the default: the core decides the views
            args += ["--view", "weak", "--unsup-weight", "6"]
        return [sys.executable, *args]

    def start(self) -> QProcess | None:
        """Start a retraining subprocess; returns it (tests wait on it)."""
        project = self.session.project
        if project is None:
            show_error("no project is open: open or create one in the Review widget")
            return None
        if self.running:
            return self.process
        self.events, self._result, self._buffer, self._cancelled = [], None, b"", False
        self._since_training = 0
        steps = self.steps.value() or 1  # auto: the prepare event says how many
        self.plot.reset(steps)
        self.progress.setRange(0, steps)
        self.progress.setValue(0)
        self.clock = RoundClock(total=steps)
        self._show_time()
        self._tick.start()
        self.status_label.setText("preparing: reading the reviewed scans…")
        process = QProcess(self)
        process.readyReadStandardOutput.connect(self._read_output)
        process.finished.connect(self._on_finished)
        cmd = self.command()
        process.start(cmd[0], cmd[1:])
        self.process = process
        self._collector.hold()  # no long full collections while training takes the CPU
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        return process

    def cancel(self) -> None:
        """Stop the run at its next step (SIGTERM); nothing is written, nothing is lost."""
        if self.process is None:
            return
        self._cancelled = True
        self.status_label.setText("cancelling…")
        self.process.terminate()
        _kill_later(self.process)

    def _read_output(self) -> None:
        if self.process is not None:
            self._drain(self.process)

    def _drain(self, process: QProcess) -> None:
        """Handle every complete JSON line the process has written so far."""
        self._buffer += bytes(process.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"{"):
                try:
                    self._on_event(json.loads(line))
                except ValueError:
                    continue

    def _take_total(self, total: int) -> None:
        """The round's steps, as the core chose them (the steps box may say "auto")."""
        if total > 0 and total != self.progress.maximum():
            self.progress.setRange(0, total)
            self.plot.total = total
            self.clock.total = total

    def _on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        kind, data, step = event["kind"], event.get("data", {}), event.get("step", 0)
        if kind in ("prepare", "step"):
            self._take_total(int(event.get("total") or 0))
        if kind == "prepare":
            reviewed = data["labelled"] + data["held_back"]
            self.status_label.setText(
                f"learning from {data['labelled']} of {reviewed} reviewed scans (the other "
                f"{data['held_back']} judge the new version) and {data['unlabelled_frames']} "
                f"unlabelled frames, starting from {data['parent']}"
            )
        elif kind == "baseline":
            self.plot.baseline = float(data["mdice"])
            self.plot.baseline_name = str(data.get("name", ""))
            self.plot.update()
        elif kind == "step":
            self.progress.setValue(step)
            self.clock.step(step)
            self._show_time()
            if step % 2 == 0 or step == 1:
                self.plot.add_loss(step, float(data["loss"]))
        elif kind == "eval":
            self.plot.add_dice(step, float(data["mdice"]))
        elif kind == "refine":
            self.status_label.setText(
                f"click tool: learning from {data['frames']} corrected frames"
            )
        elif kind == "version":
            self._result = data
        self.event_received.emit(event)

    def _show_time(self) -> None:
        self.progress.setFormat(self.clock.describe())

    def _on_finished(self, code: int, _status: Any = None) -> None:
        self._tick.stop()
        self.progress.setFormat(f"%p% · {_duration(self.clock.elapsed())}")
        process, self.process = self.process, None
        if process is not None:
            self._drain(process)
            err = bytes(process.readAllStandardError()).decode(errors="replace").strip()
            process.deleteLater()
        else:
            err = ""
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        result = self._result
        if result is None:
            if self._closing:  # killed because napari closed: nothing to report as a failure
                self.status_label.setText("cancelled: napari closed during retraining")
            elif self._cancelled:
                self.status_label.setText("cancelled: the current model is unchanged")
            else:
                last = err.splitlines()[-1] if err else f"exit code {code}"
                self.status_label.setText(f"retraining failed: {last}")
                show_error(f"retraining failed: {last}")
            stopped = self._cancelled or self._closing
            self._settled("cancelled" if stopped else "error", None)
            return
        self._settle(result)

    def _settle(self, result: dict[str, Any]) -> None:
        """The core promotes a better version (this process holds the lock); re-predict."""
        round_ = self.session.core.settle_round(result)
        if round_.error:
            show_error(round_.error)
        text = round_.summary
        self.status_label.setToolTip("")
        if round_.outcome == "worse":  # the statistics' words, for the tooltip only
            text = plain_verdict(result)
            self.status_label.setToolTip(round_.summary)
        if round_.promoted:
            text += "; "
            self.repredict(text, new_tasks=round_.learnt)
            text += "re-predicting the unreviewed scans…"
        self.status_label.setText(text)
        show_info(text)
        self.refresh()
        if round_.promoted:  # settled when the unreviewed scans are re-predicted
            self._promoted = round_.version
        else:
            self._settled(round_.outcome, round_.version)

    # -- versions ----------------------------------------------------------------------------

    def _use_selected(self) -> None:
        item = self.versions.currentItem()
        if item is None:
            show_error("choose a version in the list first")
            return
        self.use_version(item.data(Qt.UserRole))

    def use_version(self, name: str | None, reason: str = "chosen in the Retrain widget") -> None:
        """Roll back (or forward) to a version, or to the shipped model; re-predict."""
        try:
            self.session.use_version(name, reason)
        except (ValueError, RuntimeError, OSError) as exc:
            show_error(str(exc))
            return
        note = f"now using {name or 'the shipped model'}; "
        self.status_label.setText(f"{note}re-predicting…")
        self.repredict(note)

    def _choose_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model checkpoint folder to add")
        if folder:
            self.add_model(folder)

    def add_model(self, folder: str) -> Any:
        """Add a checkpoint folder as a new version (loaded and stored in a worker), then make
        it current and re-predict. A folder that is not a usable checkpoint is named in an
        error and nothing changes. Returns the worker."""
        project = self.session.project
        if project is None:
            show_error("open a project first (Review widget): models are added to a project")
            return None
        if self._import_worker is not None or self.running:
            show_error("wait for the current training or import to finish")
            return None
        worker = create_worker(
            project.import_model, folder, make_current=False, _ignore_errors=True
        )
        worker.returned.connect(self._on_model_added)
        worker.errored.connect(self._on_add_failed)
        self._import_worker = worker
        self.add_button.setEnabled(False)
        self.status_label.setText(f"adding {folder}…")
        worker.start()
        return worker

    def _on_model_added(self, version: Any) -> None:
        self._import_worker = None
        self.add_button.setEnabled(True)
        self.use_version(version.name, f"added in the Retrain widget ({version.parent})")

    def _on_add_failed(self, exc: BaseException) -> None:
        self._import_worker = None
        self.add_button.setEnabled(True)
        self.status_label.setText("")
        show_error(f"cannot add the model: {exc}")

    def repredict(self, note: str = "", new_tasks: Sequence[str] = ()) -> Any:
        """Re-predict every unreviewed scan that has a prediction, with the current model, in
        a worker; the review queue re-orders when it is done (the status then reads ``note``
        and the count). ``new_tasks``: tasks the version just learnt; one that nothing was
        ever predicted for (a new task) gets all its unreviewed scans predicted. Returns the
        worker."""
        core = self.session.core
        if core.project is None or core.model_path() is None:
            return None
        worker = create_worker(_repredict, core, list(new_tasks), _ignore_errors=True)
        worker.yielded.connect(self._on_repredict_progress)
        worker.returned.connect(self._on_repredicted)
        worker.errored.connect(self._on_repredict_failed)
        self._repredict_worker, self._repredict_note = worker, note
        worker.start()
        return worker

    def _on_repredict_progress(self, value: tuple[int, int]) -> None:
        done, total = value
        self.progress.setFormat("re-predicting: %v of %m scans")
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def _on_repredicted(self, n: int) -> None:
        self._repredict_worker = None  # the core said the predictions changed
        self.progress.setFormat(f"done: {n} scans re-predicted")  # not "re-predicting" still
        self.status_label.setText(
            f"{self._repredict_note}{n} scans re-predicted; the queue is re-ordered"
        )
        self._promotion_settled()

    def _on_repredict_failed(self, exc: BaseException) -> None:
        self._repredict_worker = None
        show_error(f"re-prediction failed: {exc}")
        self._promotion_settled()

    def _promotion_settled(self) -> None:
        name, self._promoted = self._promoted, None
        if name is not None:  # only a version judged better is promoted
            self._settled("better", name, promoted=True)

    # -- automatic retraining ------------------------------------------------------------------

    def _on_review_saved(self, status: str) -> None:
        if status not in CONFIRMED:  # only labels teach
            return
        self._since_training += 1
        n = self.auto_every.value()
        if n and self._since_training >= n and not self.running:
            self.status_label.setText(f"{self._since_training} new reviews: retraining")
            self.start()

    def _on_closed(self) -> None:
        self._collector.release()
        self._tick.stop()
        if self.process is not None:
            self._closing = True  # the run is stopped on purpose: no "failed" for it
            self.process.kill()
            self.process.waitForFinished(5000)
        if self._repredict_worker is not None:  # stops at its next scan
            self._repredict_worker.quit()


class RoundClock:
    """Elapsed time of a retraining round and an estimate of the time left, from the pace of
    its steps so far (the preparation before the first step is not a step's pace)."""

    def __init__(self, total: int = 1, now: Any = time.monotonic) -> None:
        self.total, self._now = max(total, 1), now
        self.started = now()
        self._first: tuple[int, float] | None = None  # (step, time) of the first step seen
        self._last: tuple[int, float] | None = None

    def step(self, step: int) -> None:
        mark = (step, self._now())
        if self._first is None:
            self._first = mark
        self._last = mark

    def elapsed(self) -> float:
        return self._now() - self.started

    def left(self) -> float | None:
        """Seconds left at the steps' pace, counting down between steps (None until two
        steps have been seen)."""
        if self._first is None or self._last is None or self._last[0] <= self._first[0]:
            return None
        (s0, t0), (s1, t1) = self._first, self._last
        return max((self.total - s1) * (t1 - t0) / (s1 - s0) - (self._now() - t1), 0.0)

    def describe(self) -> str:
        """The progress bar's text: step, elapsed, about how long is left."""
        elapsed = _duration(self.elapsed())
        if self._last is None:
            return f"preparing · {elapsed}"
        step = self._last[0]
        if step >= self.total:
            return f"judging the new version · {elapsed}"
        left = self.left()
        about = "" if left is None else f" · about {_duration(left)} left"
        return f"step {step} of {self.total} · {elapsed}{about}"


def _label(text: str, buddy: QWidget) -> QLabel:
    """A short label that shows its widget's tooltip too."""
    label = QLabel(text)
    label.setToolTip(buddy.toolTip())
    label.setBuddy(buddy)
    return label


def _duration(seconds: float) -> str:
    """``75`` → ``1 min 15 s``; under a minute in seconds, from an hour in h and min."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def plain_verdict(result: dict[str, Any]) -> str:
    """A version not shown better, in words for the annotator (the statistics, a lower bound
    of the gain at a confidence level, go to the tooltip)."""
    name, score, base = result["version"], result.get("score"), result.get("baseline_score")
    if score is None or base is None:
        return f"{name} kept but not used: the current model stays"
    text = (
        f"{name} kept but not used: on the scans held back to judge it, it scores "
        f"{score:.1f}, the current model ({result['baseline']}) {base:.1f}"
    )
    if score <= base:
        return f"{text}: not better"
    return f"{text}: too close to be sure it is better; review more scans, then retrain"


def _kill_later(process: QProcess) -> None:
    """Kill the process if it has not stopped a while after SIGTERM."""

    def kill() -> None:
        try:
            if process.state() != QProcess.NotRunning:
                process.kill()
        except RuntimeError:  # already deleted
            pass

    QTimer.singleShot(CANCEL_GRACE_MS, kill)


def _repredict(core: Any, new_tasks: list[str]) -> Generator[tuple[int, int], None, int]:
    """Worker body: the core's re-prediction with the current model, (done, total) per scan."""
    return (yield from core.iter_repredict(new_tasks))
