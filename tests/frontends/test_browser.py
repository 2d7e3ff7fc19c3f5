"""The browser voice page: its server on 127.0.0.1 (token, origin, the wire), then the page
itself in headless Chromium with a spoken question as its fake microphone."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cascade import Pipeline, parse_pipeline
from cascade.servers.browser import BrowserServer
from tests.conftest import RATE, babble, needs_models, silence, wer
from tests.frontends.conftest import ARTIFACTS, spoken

TOKEN = "page-token-not-a-secret"
CLIENT_RATE = 48000
CHROMIUM = "/usr/bin/chromium"


@functools.cache
def scripted(template: str = "You said {text}.") -> Pipeline:
    return Pipeline(parse_pipeline({"name": "scripted-page", "stages": {
        "vad": {"adapter": "energy-vad"},
        "asr": {"adapter": "scripted-asr", "options": {"script": ["hello there"]}},
        "turn": {"adapter": "turn"},
        "llm": {"adapter": "echo-llm", "options": {"first_token_delay": 0.05,
                                                    "template": template}},
        "tts": {"adapter": "tone-tts", "options": {"seconds_per_word": 0.2}},
    }}))


def client(pipeline: Pipeline, token: str | None = TOKEN) -> Any:
    from starlette.testclient import TestClient

    return TestClient(BrowserServer(pipeline, token=token).app)


def test_the_page_and_the_socket_need_the_token() -> None:
    from starlette.websockets import WebSocketDisconnect

    with client(scripted()) as http:
        assert http.get("/").status_code == 401
        assert http.get("/?token=wrong").status_code == 401
        page = http.get(f"/?token={TOKEN}")
        assert page.status_code == 200 and "scripted-page" in page.text
        assert http.get("/static/worklet.js").status_code == 200
        for url in ("/ws", "/ws?token=wrong"):
            with pytest.raises(WebSocketDisconnect), http.websocket_connect(url):
                pass
        with pytest.raises(WebSocketDisconnect), http.websocket_connect(
                f"/ws?token={TOKEN}", headers={"origin": "https://evil.example"}):
            pass
        with http.websocket_connect(f"/ws?token={TOKEN}",
                                    headers={"origin": "http://testserver"}) as ws:
            ws.send_text(json.dumps({"type": "hello", "sample_rate": CLIENT_RATE}))
            assert ws.receive_json()["type"] == "ready"


def test_without_a_token_loopback_pages_open_freely() -> None:
    with client(scripted(), token=None) as http:
        assert http.get("/").status_code == 200


def stream(ws: Any, pcm: np.ndarray) -> None:
    """Send 16 kHz PCM as the page would: at the page's rate, 20 ms at a time, in real time."""
    import soxr

    wire = soxr.resample(pcm, RATE, CLIENT_RATE).astype("<i2")
    step = CLIENT_RATE // 50
    started = time.monotonic()
    for index, begin in enumerate(range(0, len(wire), step)):
        ws.send_bytes(wire[begin : begin + step].tobytes())
        time.sleep(max(0.0, started + (index + 1) * 0.02 - time.monotonic()))


def events_until(ws: Any, kind: str, seen: list[Any], timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = ws.receive()
        if message.get("bytes") is not None:
            seen.append(message["bytes"])
            continue
        event = json.loads(message["text"])
        seen.append(event)
        if event["type"] == kind:
            return dict(event)
    raise AssertionError(f"no {kind} event within {timeout} s")


def test_a_turn_over_the_wire_and_a_press_to_talk_interruption() -> None:
    import threading

    long_reply = "You said {text}. " + "That is very interesting indeed. " * 4
    with client(scripted(long_reply)) as http, http.websocket_connect(
            f"/ws?token={TOKEN}") as ws:
        ws.send_text(json.dumps({"type": "hello", "sample_rate": CLIENT_RATE}))
        assert ws.receive_json()["sample_rate"] == CLIENT_RATE
        feeder = threading.Thread(target=stream, args=(ws, np.concatenate(
            [silence(0.3), babble(1.0), silence(4.0)])))
        feeder.start()
        seen: list[Any] = []
        turn = events_until(ws, "user_turn", seen)
        assert turn["text"] == "hello there"
        events_until(ws, "agent_started", seen)
        time.sleep(0.3)
        ws.send_text(json.dumps({"type": "interrupt"}))
        stopped = events_until(ws, "agent_stopped", seen)
        feeder.join()
    kinds = [e["type"] for e in seen if isinstance(e, dict)]
    assert stopped["interrupted"] is True and "clear" in kinds
    assert {"state", "user_speech", "agent_text", "span"} <= set(kinds)
    audio = b"".join(e for e in seen if isinstance(e, bytes))
    assert len(audio) // 2 > 0.2 * CLIENT_RATE  # agent audio at the page's rate
    spans = [e for e in seen if isinstance(e, dict) and e["type"] == "span"]
    assert any(s["name"] == "interruption" and s["attrs"]["reason"] for s in spans)


needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or not shutil.which("chromium"),
    reason="needs Chromium (apt install chromium) and Playwright (pip install playwright)")
QUESTION = "What is the capital of France?"


@needs_models
@needs_chromium
async def test_the_page_in_chromium_hears_the_question_and_plays_the_answer() -> None:
    from playwright.async_api import async_playwright

    pipeline = Pipeline(parse_pipeline({"name": "page", "stages": {
        "vad": {"adapter": "silero"},
        "asr": {"adapter": "faster-whisper", "options": {"partial_interval": 1.0}},
        "turn": {"adapter": "turn"},
        "llm": {"adapter": "echo-llm", "options": {"template": "You asked: {text} "
                                                    "Paris, of course."}},
        "tts": {"adapter": "piper"},
    }}))  # real ears and voice; the LLM is not what this test is about
    await asyncio.to_thread(pipeline.preload)
    server = BrowserServer(pipeline, token=TOKEN)
    await server.start("127.0.0.1", 0)
    question = spoken(QUESTION, pad=0.5)
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--disable-quic", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={question}%noloop",
            "--autoplay-policy=no-user-gesture-required"]
    problems: list[str] = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=args)
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("console", lambda message: problems.append(message.text)
                    if message.type == "error" else None)
            await page.goto(f"http://127.0.0.1:{server.port}/?token={TOKEN}")
            await page.click("#start")
            agent = page.locator(".bubble.agent:not(.planned)")
            try:
                await agent.first.wait_for(timeout=90_000)  # the reply was played and heard
            except Exception:
                await page.screenshot(path=str(ARTIFACTS / "browser-page-failed.png"))
                raise AssertionError(f"no reply on the page: {problems}; "
                                     f"{await page.inner_text('body')}") from None
            await page.locator(".waterfall svg rect.agent_speech").first.wait_for(
                timeout=10_000)
            await asyncio.sleep(0.5)  # let the last events land before the picture
            heard = await page.locator(".bubble.you").first.inner_text()
            stats = await page.evaluate("window.cascadeStats")
            state = await page.inner_text("#connection")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "browser-page.png"), full_page=True)
            await browser.close()
    finally:
        await server.close()
    assert problems == []
    assert wer(QUESTION, heard) <= 0.2, heard
    assert stats["receivedSamples"] > 0.5 * stats["rate"]  # over half a second came back
    assert stats["sentSamples"] > 2 * stats["rate"]
    assert state.startswith("connected")
