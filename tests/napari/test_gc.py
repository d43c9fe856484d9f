"""The collector hold of a retraining round: full collections skip the objects that existed
when the round began, and nothing is lost or left frozen when it ends."""

from __future__ import annotations

import gc
import weakref

import pytest

pytest.importorskip("napari")

from napari_propl._gc import CollectorHold  # noqa: E402


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_a_hold_defers_old_cycles_until_release_and_collects_new_ones():
    old = Node()
    old_ref = weakref.ref(old)
    hold = CollectorHold()
    hold.hold()
    assert hold.held and gc.get_freeze_count() > 0
    new = Node()
    new_ref = weakref.ref(new)
    del old, new
    gc.collect()
    assert new_ref() is None  # made during the round: collected as usual
    assert old_ref() is not None  # frozen: skipped by the collection
    hold.hold()  # idempotent
    hold.release()
    assert not hold.held and gc.get_freeze_count() == 0
    gc.collect()
    assert old_ref() is None  # handed back and collected
    hold.release()  # idempotent
    assert gc.get_freeze_count() == 0


def test_a_hold_leaves_someone_elses_freeze_alone():
    theirs = Node()
    theirs_ref = weakref.ref(theirs)
    gc.freeze()
    del theirs
    hold = CollectorHold()
    hold.hold()
    assert not hold.held
    hold.release()
    # Not unfrozen by us: the other freeze still shields its cycle from a full collection.
    # (The freeze count itself is no witness: a frozen object freed by its last reference,
    # in any thread, leaves the permanent generation, so the count may drop on its own.)
    assert gc.get_freeze_count() > 0
    gc.collect()
    assert theirs_ref() is not None
    gc.unfreeze()
    gc.collect()
    assert theirs_ref() is None
