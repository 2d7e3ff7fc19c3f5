"""The pipeline clock: virtual time that jumps, blocking work that takes none, real time."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cascade import RealClock, VirtualClock


def test_a_long_virtual_sleep_finishes_at_once_at_the_right_time() -> None:
    clock = VirtualClock()

    async def main() -> float:
        assert clock.now() == 0.0
        await clock.sleep(60.0)
        return clock.now()

    started = time.perf_counter()
    assert clock.run(main()) == 60.0
    assert time.perf_counter() - started < 1.0
    assert clock.now() == 60.0


def test_virtual_time_starts_where_asked_and_sleep_until_lands_there() -> None:
    clock = VirtualClock(start=5.0)

    async def main() -> list[float]:
        seen = [clock.now()]
        await clock.sleep_until(7.5)
        seen.append(clock.now())
        await clock.sleep_until(2.0)  # in the past: no wait
        await clock.sleep(-1.0)
        seen.append(clock.now())
        return seen

    assert clock.run(main()) == [5.0, 7.5, 7.5]


def test_sleeps_longer_than_a_day_are_exact() -> None:
    clock = VirtualClock()

    async def main() -> None:
        await clock.sleep(2 * 86400.0 + 0.5)

    clock.run(main())
    assert clock.now() == 172800.5


def test_concurrent_sleeps_wake_in_time_order() -> None:
    clock = VirtualClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    async def main() -> None:
        await asyncio.gather(sleeper("c", 3.0), sleeper("a", 1.0), sleeper("b1", 2.0),
                             sleeper("b2", 2.0), sleeper("z", 0.0))

    clock.run(main())
    assert woke == [("z", 0.0), ("a", 1.0), ("b1", 2.0), ("b2", 2.0), ("c", 3.0)]


def test_run_blocking_runs_in_a_thread_and_takes_no_virtual_time() -> None:
    clock = VirtualClock(start=1.0)
    loop_thread = threading.get_ident()

    def blocking(seconds: float) -> int:
        time.sleep(seconds)  # real blocking work: that is the point here
        return threading.get_ident()

    async def main() -> int:
        return await clock.run_blocking(blocking, 0.05)

    started = time.perf_counter()
    worker = clock.run(main())
    assert time.perf_counter() - started >= 0.05
    assert worker != loop_thread
    assert clock.now() == 1.0
    assert clock.blocking_jobs == 0


def test_timers_wait_while_blocking_work_runs() -> None:
    clock = VirtualClock()
    order: list[tuple[str, float]] = []

    async def sleeper() -> None:
        await clock.sleep(0.01)
        order.append(("timer", clock.now()))

    async def worker() -> None:
        await clock.run_blocking(time.sleep, 0.05)
        order.append(("blocking", clock.now()))

    async def main() -> None:
        await asyncio.gather(sleeper(), worker())

    clock.run(main())
    # The 0.01 s timer did not fire during 50 ms of real blocking work.
    assert order == [("blocking", 0.0), ("timer", 0.01)]


def test_run_blocking_sees_context_variables_and_passes_errors_on() -> None:
    clock = VirtualClock()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def fails() -> None:
        raise KeyError("inside the worker")

    async def main() -> str:
        var.set("conversation c1")
        seen = await clock.run_blocking(var.get)
        with pytest.raises(KeyError, match="inside the worker"):
            await clock.run_blocking(fails)
        return seen

    assert clock.run(main()) == "conversation c1"
    assert clock.blocking_jobs == 0


def test_virtual_runs_are_identical() -> None:
    def once() -> list[tuple[int, float]]:
        clock = VirtualClock()
        out: list[tuple[int, float]] = []

        async def tick(n: int) -> None:
            for _ in range(3):
                await clock.sleep(0.1 * n)
                out.append((n, round(clock.now(), 9)))

        async def main() -> None:
            await asyncio.gather(*(tick(n) for n in (3, 1, 2)))

        clock.run(main())
        return out

    first = once()
    assert first == once()
    expected = sorted((n, round(0.1 * n * k, 9)) for n in (3, 1, 2) for k in (1, 2, 3))
    assert sorted(first) == expected  # every wake-up at its own virtual time
    assert [t for _, t in first] == sorted(t for _, t in first)  # and in time order


def test_real_clock_now_increases_from_zero() -> None:
    clock = RealClock()
    first = clock.now()
    assert 0.0 <= first < 1.0
    later = first
    for _ in range(1_000_000):
        later = clock.now()
        if later > first:
            break
    assert later > first
    assert clock.virtual is False and VirtualClock.virtual is True


def test_real_clock_runs_a_coroutine() -> None:
    clock = RealClock()

    async def main() -> tuple[float, float]:
        before = clock.now()
        await clock.sleep(0.01)
        return before, clock.now()

    before, after = clock.run(main())
    assert after - before >= 0.01  # real time passed while it slept


@pytest.mark.parametrize("make_clock", [VirtualClock, RealClock])
def test_run_blocking_on_its_own_executor_leaves_the_shared_pool_free(make_clock: Any) -> None:
    """Work that only waits (a network reply) runs on its own executor: a busy wait there
    does not hold the loop's default pool, and the virtual clock still holds its time."""
    clock = make_clock()
    release = threading.Event()
    waits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="waits")

    def wait_for_network() -> str:
        release.wait(5)
        return threading.current_thread().name

    async def main() -> tuple[str, str]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        waiting = asyncio.create_task(clock.run_blocking(wait_for_network, executor=waits))
        await asyncio.sleep(0)
        free = await asyncio.wait_for(clock.run_blocking(lambda: "free"), 2)
        release.set()
        return free, await waiting

    free, thread = clock.run(main())
    waits.shutdown()
    assert free == "free" and thread.startswith("waits")
