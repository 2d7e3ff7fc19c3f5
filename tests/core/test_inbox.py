"""The bounded inbox: FIFO order, waiting put/get, offer, discard."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from cascade import VirtualClock
from cascade.inbox import Inbox
from tests.core.harness import Note, Token, label, note, token


def run(main: Coroutine[Any, Any, None]) -> None:
    VirtualClock().run(main)


async def drain(inbox: Inbox) -> list[str]:
    return [label(await inbox.get()) for _ in range(len(inbox))]


def test_frames_come_out_in_the_order_they_went_in() -> None:
    async def main() -> None:
        inbox = Inbox(8)
        await inbox.put(note("a"))
        assert inbox.offer(note("b"))
        await inbox.put(token("c"))
        assert len(inbox) == 3
        assert await drain(inbox) == ["a", "b", "c"]
        assert len(inbox) == 0

    run(main())


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1, got 0"):
        Inbox(0)


def test_get_waits_for_a_frame() -> None:
    clock = VirtualClock()

    async def main() -> None:
        inbox = Inbox(2)
        got: list[tuple[str, float]] = []

        async def consumer() -> None:
            for _ in range(2):
                got.append((label(await inbox.get()), clock.now()))

        task = asyncio.create_task(consumer())
        await asyncio.sleep(2.0)
        assert got == []
        await inbox.put(note("x"))
        await asyncio.sleep(1.0)
        await inbox.put(note("y"))
        await task
        assert got == [("x", 2.0), ("y", 3.0)]

    clock.run(main())


def test_put_waits_while_full_and_waiting_putters_go_in_order() -> None:
    async def main() -> None:
        inbox = Inbox(1)
        await inbox.put(note("first"))
        second = asyncio.create_task(inbox.put(note("second")))
        third = asyncio.create_task(inbox.put(note("third")))
        await asyncio.sleep(5.0)
        assert not second.done() and not third.done()
        assert len(inbox) == 1
        out = [label(await inbox.get())]
        await second
        assert not third.done()
        out.append(label(await inbox.get()))
        await third
        out.append(label(await inbox.get()))
        assert out == ["first", "second", "third"]

    run(main())


def test_offer_refuses_when_full_and_counts_the_drop() -> None:
    async def main() -> None:
        inbox = Inbox(2)
        assert [inbox.offer(note(str(i))) for i in range(5)] == [True, True, False, False, False]
        assert inbox.dropped == 3
        assert len(inbox) == 2
        await inbox.get()
        assert inbox.offer(note("late"))
        assert inbox.dropped == 3
        assert await drain(inbox) == ["1", "late"]

    run(main())


def test_discard_removes_matching_frames_and_keeps_the_order_of_the_rest() -> None:
    async def main() -> None:
        inbox = Inbox(8)
        for frame in (token("t1", 1), note("n1", 1), token("t2", 2), token("t1b", 1),
                      note("n2", 2)):
            await inbox.put(frame)
        removed = inbox.discard(lambda f: isinstance(f, Token) and f.turn <= 1)
        assert removed == 2
        assert await drain(inbox) == ["n1", "t2", "n2"]
        assert inbox.discard(lambda f: True) == 0

    run(main())


def test_discard_of_nothing_changes_nothing() -> None:
    async def main() -> None:
        inbox = Inbox(4)
        await inbox.put(note("a"))
        assert inbox.discard(lambda f: isinstance(f, Token)) == 0
        assert await drain(inbox) == ["a"]

    run(main())


def test_discard_lets_waiting_putters_in() -> None:
    async def main() -> None:
        inbox = Inbox(2)
        await inbox.put(token("stale", 1))
        await inbox.put(token("stale too", 1))
        waiting = [asyncio.create_task(inbox.put(note(f"w{i}"))) for i in range(3)]
        await asyncio.sleep(1.0)
        assert not any(t.done() for t in waiting)
        assert inbox.discard(lambda f: isinstance(f, Token)) == 2
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [t.done() for t in waiting] == [True, True, False]
        assert await drain(inbox) == ["w0", "w1"]
        await waiting[2]
        assert await drain(inbox) == ["w2"]

    run(main())


def test_a_cancelled_put_leaves_no_frame_behind() -> None:
    async def main() -> None:
        inbox = Inbox(1)
        await inbox.put(note("kept"))
        gone = asyncio.create_task(inbox.put(note("gone")))
        await asyncio.sleep(1.0)
        gone.cancel()
        await asyncio.sleep(0)
        assert await drain(inbox) == ["kept"]
        await inbox.put(note("next"))
        assert await drain(inbox) == ["next"]

    run(main())


def test_a_cancelled_get_loses_no_frame() -> None:
    async def main() -> None:
        inbox = Inbox(2)
        waiting = asyncio.create_task(inbox.get())
        await asyncio.sleep(1.0)
        waiting.cancel()
        await asyncio.sleep(0)
        await inbox.put(note("a"))
        assert label(await inbox.get()) == "a"

    run(main())


def test_a_woken_then_cancelled_putter_passes_the_wakeup_on() -> None:
    async def main() -> None:
        inbox = Inbox(1)
        await inbox.put(note("a"))
        first = asyncio.create_task(inbox.put(note("b")))
        second = asyncio.create_task(inbox.put(note("c")))
        await asyncio.sleep(0)
        await inbox.get()  # room for one: wakes ``first``
        first.cancel()  # ... which is cancelled before it runs
        await asyncio.sleep(1.0)
        assert second.done(), "the inbox is empty but the second put still waits"
        assert isinstance(await inbox.get(), Note)

    run(main())
