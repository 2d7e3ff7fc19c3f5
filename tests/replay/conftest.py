"""Recorded calls shared by the replay tests: the model-free pipeline on the virtual clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade import Pipeline, VirtualClock
from cascade.conversation import Conversation
from cascade.frames import PCM
from cascade.replay import record_call
from cascade.replay.recorder import Recorder
from cascade.runner import CallResult
from tests.conftest import babble, script, scripted_pipeline, silence

SCRIPT = ["hello there", "stop please", "um"]


def agent(**overrides: dict[str, object]) -> Pipeline:
    """The scripted pipeline with a greeting and a three-line ASR script."""
    stages: dict[str, dict[str, object]] = {
        "asr": {"script": SCRIPT}, "llm": {"greeting": "Hi, how can I help?"}}
    for name, options in overrides.items():
        stages[name] = {**stages.get(name, {}), **options}
    return scripted_pipeline(**stages)


def busy_call() -> PCM:
    """The caller talks over the greeting, finishes a turn, barges in on the reply, then
    says "um" over the next reply: interruptions, cancelled work and an unfinished turn."""
    return script(silence(0.5), babble(1.5, 1), silence(0.8), babble(1.5, 2), silence(2.0),
                  babble(0.3, 3), silence(6.0))


def recorded_conversation(pipeline: Pipeline, clock: VirtualClock,
                          conversation_id: str) -> tuple[Conversation, Recorder]:
    """A conversation of ``pipeline`` and the ``Recorder`` attached to it."""
    conversation = pipeline.conversation(clock, conversation_id=conversation_id)
    return conversation, Recorder(conversation, pipeline)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CallResult]:
    path = tmp_path_factory.mktemp("replay") / "busy.rec"
    return path, record_call(agent(), busy_call(), VirtualClock(), path,
                             conversation_id="busy")
