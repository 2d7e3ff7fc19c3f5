"""Cascade: voice agents as an asynchronous stage graph, traced and measurable.

How the pieces fit, in reading order:

* ``frames``       - the typed events that flow (caller audio, VAD, transcripts,
                     reply text, agent audio, control).
* ``clock``        - the only source of time: ``RealClock`` or ``VirtualClock``.
* ``stage``        - the contract of one processor (``process``/``on_system``/``push``).
* ``inbox``/``graph`` - stages joined by bounded queues; control frames jump ahead.
* ``tracing``/``metrics`` - spans as JSON Lines, per-turn latency derived from them.
* ``registry``/``config`` - adapters by name (entry points), pipelines as YAML.
* ``conversation`` - a pipeline instantiated for one call; ``playout`` plays agent audio.
* ``cascade.stages`` - generic VAD/ASR/turn/LLM/TTS logic; ``cascade.adapters`` - engines.

A minimal run::

    from cascade import Pipeline, RealClock, load_pipeline
    pipeline = Pipeline(load_pipeline("pipeline.yaml"))
    conversation = pipeline.conversation(RealClock())
"""

from cascade.clock import Clock, RealClock, VirtualClock
from cascade.config import PipelineConfig, load_pipeline, parse_pipeline
from cascade.conversation import Conversation, Pipeline
from cascade.errors import (
    AdapterNotFound,
    AudioInputError,
    CascadeError,
    ConfigError,
    GraphError,
    MissingDependency,
)
from cascade.graph import Graph
from cascade.registry import Adapter, Capabilities, load_adapter
from cascade.stage import Stage, StageContext
from cascade.tracing import MemoryTrace, Span, Tracer, TraceWriter, read_trace

__version__ = "0.1.0"

__all__ = [
    "Adapter",
    "AdapterNotFound",
    "AudioInputError",
    "Capabilities",
    "CascadeError",
    "Clock",
    "ConfigError",
    "Conversation",
    "Graph",
    "GraphError",
    "MemoryTrace",
    "MissingDependency",
    "Pipeline",
    "PipelineConfig",
    "RealClock",
    "Span",
    "Stage",
    "StageContext",
    "TraceWriter",
    "Tracer",
    "VirtualClock",
    "load_adapter",
    "load_pipeline",
    "parse_pipeline",
    "read_trace",
]
