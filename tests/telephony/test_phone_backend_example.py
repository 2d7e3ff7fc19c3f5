"""examples/phone_backend.py works as written: a backend with the Twilio endpoint mounted,
its own route beside it, a trace file per call, the caller's parameters, drain on exit."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from cascade import read_trace
from tests.telephony.conftest import CLIPS, phone_pipeline
from tests.telephony.twilio_caller import TwilioCaller, stream_url, webhook

EXAMPLE = Path(__file__).parents[2] / "examples" / "phone_backend.py"


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("phone_backend", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_phone_backend_example_answers_a_call(
        tmp_path: Path, ulaw: dict[str, bytes], caplog: pytest.LogCaptureFixture) -> None:
    import uvicorn

    backend = example()
    backend.TRACES = tmp_path / "traces"
    app, phone = backend.build_app(phone_pipeline(CLIPS["0880"]), "example-token")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    with caplog.at_level(logging.INFO, "phone_backend"):
        async with httpx.AsyncClient() as client:
            assert (await client.get(base + "/")).json()["service"] == "my backend"
            assert (await client.get(base + "/phone/readyz")).status_code == 200
        answered = await webhook(base + "/phone", "example-token",
                                 {"CallSid": "CA77", "From": "+15550100", "FromCity": "Leeds"})
        assert answered.status_code == 200, answered.text
        assert '<Parameter name="caller_city" value="Leeds"' in answered.text
        url = stream_url(answered.text)
        assert "/phone/twilio/media/" in url
        caller = await TwilioCaller(url, call_sid="CA77").connect()
        await caller.play(ulaw["0880"])
        assert await caller.silence_until(lambda: caller.heard.seconds() > 0.3, 12)
        await caller.hang_up()
        server.should_exit = True  # the lifespan's drain runs: no call is left
        await asyncio.wait_for(serving, 20)
    assert not phone.calls.active
    assert any("call twilio-CA77 from +15550100" in r.getMessage() for r in caplog.records)
    spans = read_trace(tmp_path / "traces" / "twilio-CA77.jsonl")
    assert [s.attrs["text"] for s in spans if s.name == "end_of_turn"] == [CLIPS["0880"]]
