"""Deterministic record and replay of conversations.

Record a call with ``record_call`` (or attach a ``Recorder`` to any
conversation before it starts); re-execute it with ``replay_call``, optionally through a
changed pipeline: stages whose configuration and inputs are unchanged replay
their recorded output at their recorded times, the rest run for real. See
``format`` for the file layout and ``player`` for what replay can and cannot
reproduce.
"""

from cascade.replay.format import Recording, RecordingError, read_recording, write_recording
from cascade.replay.player import ReplayResult, StagePlan, plan_replay, replay_call
from cascade.replay.recorder import Recorder, record_call
from cascade.replay.substitute import ReplayedStage

__all__ = [
    "Recorder",
    "Recording",
    "RecordingError",
    "ReplayResult",
    "ReplayedStage",
    "StagePlan",
    "plan_replay",
    "read_recording",
    "record_call",
    "replay_call",
    "write_recording",
]
