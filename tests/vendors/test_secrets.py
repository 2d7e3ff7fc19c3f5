"""API keys: found in the environment or CASCADE_SECRETS_FILE, and never shown in a
repr, a log line or a trace - even when a request fails and the server echoes the key."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from cascade.adapters.openai_llm import OpenAILLM, OpenAILLMOptions
from cascade.adapters.secrets import Secret, find_secret, require_secret
from cascade.clock import RealClock
from cascade.errors import ConfigError
from cascade.frames import EndOfTurn, LLMReply, LLMText
from cascade.tracing import TraceWriter
from tests.adapters.harness import CONVERSATION, Collector, Run, build, drive
from tests.vendors.fault_llm import FaultLLM

KEY = "sk-live-abcdef0123456789-do-not-leak"


def test_secret_masks_itself() -> None:
    secret = Secret(KEY)
    assert KEY not in repr(secret) and KEY not in str(secret) and KEY not in f"{secret}"
    assert KEY not in repr({"key": secret}) and secret.reveal() == KEY
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(secret)


def test_environment_first_then_the_secrets_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "secrets.env"
    env_file.write_text("# keys\nOTHER=1\nTEST_KEY = 'from-file'\n")
    monkeypatch.delenv("TEST_KEY", raising=False)
    monkeypatch.setenv("CASCADE_SECRETS_FILE", str(env_file))
    found = find_secret("TEST_KEY")
    assert found is not None and found.reveal() == "from-file"
    monkeypatch.setenv("TEST_KEY", "from-env")
    found = find_secret("TEST_KEY")
    assert found is not None and found.reveal() == "from-env"

    json_file = tmp_path / "secrets.json"
    json_file.write_text('{"JSON_KEY": "from-json"}')
    monkeypatch.setenv("CASCADE_SECRETS_FILE", str(json_file))
    found = find_secret("JSON_KEY")
    assert found is not None and found.reveal() == "from-json"


def test_a_missing_key_says_where_it_was_looked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    monkeypatch.delenv("CASCADE_SECRETS_FILE", raising=False)
    with pytest.raises(ConfigError, match=r"NO_SUCH_KEY.*CASCADE_SECRETS_FILE"):
        require_secret("NO_SUCH_KEY", "openai-llm")
    with pytest.raises(ConfigError, match=r"adapter 'openai-llm'.*NO_SUCH_KEY"):
        OpenAILLM(OpenAILLMOptions(api_key_env="NO_SUCH_KEY"))


def test_the_key_never_reaches_trace_json_or_logs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        fault_llm: tuple[FaultLLM, str]) -> None:
    server, base = fault_llm
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f"LEAK_TEST_KEY={KEY}\n")
    monkeypatch.delenv("LEAK_TEST_KEY", raising=False)
    monkeypatch.setenv("CASCADE_SECRETS_FILE", str(secrets))
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log requests at DEBUG
    trace_path = tmp_path / "trace.jsonl"
    writer = TraceWriter(trace_path)
    stage = OpenAILLM(OpenAILLMOptions(base_url=base, api_key_env="LEAK_TEST_KEY",
                                       model="status-401", retries=1, backoff=0.0))
    clock = RealClock()
    run = build(clock, [("llm", stage)], Collector(LLMText, LLMReply))
    run.ctx.tracer.sinks.append(writer)

    async def feed(run: Run) -> None:
        for turn, model in [(1, "status-401"), (2, "ok")]:
            stage.remote.model = model
            await run.graph.send(EndOfTurn(conversation=CONVERSATION, turn=turn, time=0.0,
                                           text="hello", reason="test", speech_end=0.0))
            while not (run.trace.named("error") if turn == 1 else run.collector.of(LLMReply)):
                await asyncio.sleep(0.01)

    clock.run(drive(run, feed, deadline=30))
    writer.close()
    assert server.headers[-1]["authorization"] == f"Bearer {KEY}"  # it was sent...
    trace = trace_path.read_text()
    assert "HTTP 401" in trace and KEY not in trace  # ...but never recorded
    assert KEY not in caplog.text and "HTTP 401" in caplog.text
    assert KEY not in repr(stage.remote) and KEY not in repr(stage.__dict__)
