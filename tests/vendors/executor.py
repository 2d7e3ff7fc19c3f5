"""A check for models shared by conversations: those waiting their turn must not park a
worker thread of the event loop's executor (so other blocking work still runs)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cascade.clock import RealClock

T = TypeVar("T")


def run_leaving_executor_free(clock: RealClock, calls: list[Coroutine[Any, Any, T]],
                              entered: threading.Event, release: threading.Event) -> list[T]:
    """Run ``calls`` (conversations on one model) with a two-thread executor; once one holds
    the model (sets ``entered``), assert the pool's second thread is still free for other
    blocking work (a conversation's ASR, LLM, TTS), then set ``release``; what they return."""

    async def main() -> tuple[str, list[T]]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=2))
        tasks = [asyncio.create_task(call) for call in calls]
        try:
            while not entered.is_set():
                await asyncio.sleep(0.005)
            free = await asyncio.wait_for(clock.run_blocking(lambda: "free"), 5)
        finally:
            release.set()
            results = await asyncio.gather(*tasks)
        return free, results

    free, results = clock.run(main())
    assert free == "free"
    return results
