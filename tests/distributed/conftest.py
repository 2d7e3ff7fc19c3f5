"""Fixtures for remote stages: a real Mosquitto on loopback and worker processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("aiomqtt")
pytest.importorskip("msgpack")
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def terminate(process: subprocess.Popen[Any]) -> None:
    """Stop a process we started: SIGTERM, then SIGKILL after 5 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Broker:
    """A Mosquitto process on 127.0.0.1 with a config of its own; can be restarted."""

    def __init__(self, folder: Path, extra: str = "") -> None:
        self.port = free_port()
        self.folder = folder
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"{extra or 'allow_anonymous true'}\n"
            "persistence false\nset_tcp_nodelay true\n"
            "log_dest none\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode()}"
                                   if self.process.stderr else "mosquitto exited")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.01)
        raise RuntimeError("mosquitto did not start listening within 5 s")

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
            self.process = None

    def restart(self, down: float = 0.3) -> None:
        self.stop()
        time.sleep(down)
        self.start()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.skip("needs the mosquitto broker (apt-get install mosquitto)")
    found = Broker(tmp_path)
    found.start()
    yield found
    found.stop()


class WorkerProcess:
    """``python -m cascade.distributed.worker`` in a subprocess, its output captured."""

    def __init__(self, pipeline: Path, stage: str, broker: str, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.ready = threading.Event()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cascade.distributed.worker", "--stage", stage,
             "--pipeline", str(pipeline), "--broker", broker, "--id", name],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("ready:"):
                self.ready.set()

    def wait_ready(self, timeout: float = 30) -> None:
        if not self.ready.wait(timeout):
            raise RuntimeError(f"worker {self.name} not ready:\n" + "\n".join(self.lines))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)

    def stop(self) -> None:
        terminate(self.process)


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def start_workers(started: list[WorkerProcess], pipeline: Path, broker: str,
                  *names: tuple[str, str]) -> list[WorkerProcess]:
    """Start (stage, id) workers in parallel and wait until all are ready."""
    new = [WorkerProcess(pipeline, stage, broker, name) for stage, name in names]
    started.extend(new)
    for worker in new:
        worker.wait_ready()
    return new


def pipeline_file(folder: Path, stages: dict[str, dict[str, object]],
                  name: str = "remote-test") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "stages": stages}, sort_keys=False))
    return path
