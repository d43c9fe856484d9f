"""The annotation loop's rules, headless: one :class:`AnnotationSession` per annotator.

The session holds the open project, the task under review, the scan on screen and a cached
predictor, and says what each step of the loop means::

    queue()            scans still to decide (unreviewed, drafts, damaged), least confident first
    open_scan(id)      what a view shows: image, the mask to edit, uncertainty, warnings
    save_draft(mask)   any edit: stored at once, never a training label
    confirm(mask, ..)  a label: accepted as drawn or corrected (a cine: the frame on screen and
                       the frames edited since their last confirmation; ``whole``: every frame)
    reject / skip      stored with a reason, no mask
    next_scan() ...    how the queue advances
    segment / repredict / promote / retrain   the model side of the loop

Frame by frame semantics live in :mod:`propl.store.review_state`. The napari widgets, the
command line and ``propl simulate`` are views over this object; it never imports a GUI.

Threads: every method may be called from any thread. A lock guards the session's state and
another the predictor cache (two threads asking at once get one predictor). Hooks
(:class:`Hook`) run on the thread that made the change, after the store has it, outside the
locks; a GUI re-emits them as its own signals. A view that saves from a worker thread makes
the save on its own thread (:meth:`AnnotationSession.review_save`: it binds the scan, task and
time spent) and stores it in the worker (:meth:`AnnotationSession.store`).

Extending: a click-to-fix step reads the open scan's frame (``current.image[f]``), refines the
mask with :meth:`AnnotationSession.predictor` (its refinement head) and saves the result with
:meth:`AnnotationSession.save_draft`, like any other edit; propagation to the other frames of
a cine does the same for each frame it changes.
"""

from .records import (
    BURNED_IN,
    Hook,
    QueueView,
    ReviewSave,
    RoundOutcome,
    ScanView,
    SegmentReport,
)
from .rules import next_after_save, predict_scan, read_scan, step_in_queue
from .session import AnnotationSession

__all__ = [
    "BURNED_IN",
    "AnnotationSession",
    "Hook",
    "QueueView",
    "ReviewSave",
    "RoundOutcome",
    "ScanView",
    "SegmentReport",
    "next_after_save",
    "predict_scan",
    "read_scan",
    "step_in_queue",
]
