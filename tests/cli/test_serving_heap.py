"""Servers freeze the heap once models are loaded, so collections skip the models."""

from __future__ import annotations

import gc
import weakref

from cascade.run_command import freeze_heap


def test_what_is_alive_when_serving_starts_is_frozen_and_garbage_is_not() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector can free it

    kept = Node()
    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage
    frozen_before = gc.get_freeze_count()
    try:
        freeze_heap()
        assert gc.get_freeze_count() > frozen_before
        ids = {id(o) for o in gc.get_objects(generation=2)}
        assert id(kept) not in ids  # moved to the permanent generation: never walked
        assert gone() is None  # garbage is collected first, not frozen forever
    finally:
        gc.unfreeze()
