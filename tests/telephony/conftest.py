"""Fixtures for phone tests: real recorded speech as telephone audio, servers on loopback."""

from __future__ import annotations

import asyncio
import functools
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from cascade import Pipeline
from tests.conftest import LIBRIVOX, scripted_pipeline

CLIPS = {  # librivox clip id -> what is said
    "0880": "he was not an ill disposed young man",
    "0930": "he might even have been made amiable himself",
    "0890": "unless to be rather cold hearted and rather selfish is to be ill disposed",
}
needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="needs sox (apt: sox)")
needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None,
                                reason="needs sipp (apt: sip-tester)")


@pytest.fixture(scope="session")
def ulaw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The librivox clips as raw 8 kHz μ-law, converted by sox (not by our codec)."""
    if shutil.which("sox") is None:
        pytest.skip("needs sox (apt: sox)")
    folder = tmp_path_factory.mktemp("ulaw")
    for clip in CLIPS:
        source = LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{clip}.wav"
        subprocess.run(["sox", str(source), "-r", "8000", "-c", "1", "-e", "u-law", "-t",
                        "raw", str(folder / f"{clip}.ulaw")], check=True)
    return folder


@pytest.fixture(scope="session")
def ulaw(ulaw_dir: Path) -> dict[str, bytes]:
    return {clip: (ulaw_dir / f"{clip}.ulaw").read_bytes() for clip in CLIPS}


@functools.cache
def phone_pipeline(*script: str) -> Pipeline:
    """The model-free pipeline tuned for real speech: pauses inside a sentence are not turns.

    Shared between tests like one process shares it between calls (each call builds its
    own stages from it)."""
    return scripted_pipeline(
        vad={"min_silence": 0.5},
        asr={"script": list(script or CLIPS.values())},
        turn={"vad_stop_delay": 0.5, "min_delay": 0.3},
    )


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1 inside this event loop; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
