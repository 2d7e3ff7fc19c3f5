"""`cascade serve` (twilio, sip) as a process: SIGTERM drains calls, then exits cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from tests.telephony.conftest import CLIPS, free_port
from tests.telephony.sip_caller import SipCaller, offer
from tests.telephony.twilio_caller import TwilioCaller, stream_url, webhook

TOKEN = "drain-token"
CALL = {"CallSid": "CA0002", "From": "+15550001111", "To": "+15550002222"}


def pipeline_file(folder: Path) -> Path:
    path = folder / "phone.yaml"
    path.write_text(yaml.safe_dump({"name": "phone", "stages": {
        "vad": {"adapter": "energy-vad", "options": {"min_silence": 0.5}},
        "asr": {"adapter": "scripted-asr", "options": {"script": [CLIPS["0880"]]}},
        "turn": {"adapter": "turn", "options": {"vad_stop_delay": 0.5}},
        "llm": {"adapter": "echo-llm", "options": {"template": "Noted: {text}."}},
        "tts": {"adapter": "tone-tts"},
    }}))
    return path


async def wait_up(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with httpx.AsyncClient(verify=False) as client:
        for _ in range(600):
            assert process.poll() is None, log.read_text()
            try:
                if (await client.get(base + "/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError("the server did not come up")


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`cascade serve ARGS` with the test pipeline; its stderr goes to a file."""
    log = tmp_path / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-c", "from cascade.cli import main; main()", "serve", *args,
         "--pipeline", str(pipeline_file(tmp_path))],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return process, log


def draining(log: Path) -> bool:
    """The server said it took the SIGTERM (it logs before refusing anything)."""
    return "SIGTERM: draining" in log.read_text(errors="replace")


async def test_sigterm_finishes_calls_in_progress_and_refuses_new_ones(
        tmp_path: Path, ulaw: dict[str, bytes]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process, log = start(tmp_path, "--protocol", "twilio", "--port", str(port),
                         "--token", TOKEN)
    try:
        await wait_up(base, process, log)
        answered = await webhook(base, TOKEN, CALL)
        caller = await TwilioCaller(stream_url(answered.text), call_sid="CA0002").connect()
        await caller.silence(0.2)
        process.send_signal(signal.SIGTERM)
        assert await caller.silence_until(lambda: draining(log), 10)
        async with httpx.AsyncClient(verify=False) as client:
            ready = await client.get(base + "/readyz")
        refused = await webhook(base, TOKEN, {**CALL, "CallSid": "CA0003"})
        assert ready.status_code == 503 and ready.json()["draining"]
        assert refused.status_code == 503
        # the call in progress goes on: the caller speaks, the agent answers
        await caller.play(ulaw["0880"])
        assert await caller.silence_until(lambda: caller.heard.seconds() > 0.5, 6)
        assert process.poll() is None
        await caller.hang_up()
        exit_code = await asyncio.to_thread(process.wait, 10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert exit_code == 0, log.read_text()


async def test_sip_server_drains_on_sigterm_too(tmp_path: Path) -> None:
    port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    ops = f"http://127.0.0.1:{http_port}"
    process, log = start(tmp_path, "--protocol", "sip", "--port", str(port),
                         "--http-port", str(http_port))
    try:
        caller = SipCaller(("127.0.0.1", port))
        for _ in range(600):  # until the server answers OPTIONS
            caller.send(caller.request("OPTIONS")[0])
            try:
                await caller.expect(200, timeout=0.05)
                break
            except (TimeoutError, AssertionError):
                assert process.poll() is None, log.read_text()
        await caller.call()
        async with httpx.AsyncClient() as client:
            assert (await client.get(ops + "/healthz")).json() == {"status": "ok"}
            ready = await client.get(ops + "/readyz")
            assert ready.status_code == 200 and ready.json()["active_calls"] == 1
            process.send_signal(signal.SIGTERM)
            for _ in range(200):
                if draining(log):
                    break
                await asyncio.sleep(0.05)
            late = SipCaller(("127.0.0.1", port))
            late.send(late.request("INVITE", offer(late.rtp_port))[0])
            await late.expect(503)
            assert process.poll() is None  # the call in progress keeps it running
            draining_now = await client.get(ops + "/readyz")  # a load balancer sees it
            assert draining_now.status_code == 503 and draining_now.json()["draining"]
            metrics = (await client.get(ops + "/metrics")).text
            assert "cascade_phone_active_calls 1.0" in metrics
        await caller.hang_up()
        exit_code = await asyncio.to_thread(process.wait, 10)
        caller.close()
        late.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert exit_code == 0, log.read_text()

