"""Workers: bad payloads are dropped without harm; logins and TLS come from the broker URL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import aiomqtt
import pytest

from cascade import Pipeline, load_pipeline
from cascade.distributed.link import BrokerUnavailable
from cascade.distributed.topics import ServiceTopics, caller_topic
from cascade.distributed.wire import Envelope, encode
from cascade.distributed.worker import Worker
from cascade.frames import LLMText, UserAudio
from tests.distributed.conftest import Broker, WorkerProcess, pipeline_file, start_workers
from tests.distributed.test_remote import ONE_TURN, SCRIPT, TWO_TURNS, stages, talk, texts


def bad_payloads(topics: ServiceTopics, worker: str) -> list[tuple[str, bytes]]:
    inbound = topics.inbound(worker, "c1-x", "victim")
    control = topics.control(worker, "c1-x", "victim")
    audio = UserAudio(conversation="victim", turn=1, time=0.0, pcm=__import__("numpy").zeros(
        4, "int16"), sample_rate=16000)
    good_audio = encode(Envelope("frame", "victim", "asr", seq=1, epoch=1, frame=audio))
    return [
        (topics.new, b""),
        (topics.new, b"\x01\x00\x00\x00\x05garbage"),
        (topics.new, encode(Envelope("open", "victim", "asr", epoch=1))),  # no caller
        (topics.new, encode(Envelope("frame", "victim", "asr", epoch=1))),
        (topics.new, b"\x07" + b"\x00" * 64),  # another wire version
        (inbound, b"\xff" * 10),
        (inbound, good_audio[:-3]),  # truncated PCM: odd length
        (inbound, good_audio),  # valid, but for a conversation that does not exist
        (inbound, encode(Envelope("open", "victim", "asr", epoch=1))),
        (control, encode(Envelope("frame", "victim", "asr", seq=1, epoch=1, frame=LLMText(
            conversation="victim", turn=1, time=0.0, text="ordered, not control")))),
        (control, b"\x01\x00\x00\x00\x01\xc1"),
        (caller_topic("c1-x"), b"nonsense"),
        (topics.alive("nobody"), b"nonsense"),
    ]


async def test_bad_payloads_are_dropped_and_the_worker_keeps_serving(
        broker: Broker, workers: list[WorkerProcess], tmp_path: Path) -> None:
    path = pipeline_file(tmp_path, stages({"asr": broker.url}))
    (process,) = start_workers(workers, path, broker.url, ("asr", "sturdy"))
    topics = ServiceTopics.of(load_pipeline(path), "asr")
    async with aiomqtt.Client("127.0.0.1", broker.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        for topic, data in bad_payloads(topics, "sturdy"):
            await client.publish(topic, data, qos=1)
    trace, _ = await talk(Pipeline(load_pipeline(path)), TWO_TURNS)
    assert texts(trace, "asr") == SCRIPT
    assert process.process.poll() is None, "the worker is still running"
    log = process.output
    assert log.count("dropped a bad message") >= 7
    assert "wire format version 7 is not supported" in log
    assert "odd number of bytes" in log
    assert "needs a text 'caller'" in log
    assert "expected a control frame" in log


def make_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "broker.pem", folder / "broker.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True)
    return cert, key


@pytest.fixture
def secure_broker(tmp_path: Path) -> Broker:
    for tool in ("openssl", "mosquitto_passwd", "mosquitto"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"needs {tool}")
    folder = tmp_path / "secure"
    folder.mkdir()
    passwords = folder / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "agent", "s3cret/!"],
                   check=True, capture_output=True)
    passwords.chmod(0o600)
    cert, key = make_certificate(folder)
    # as root, mosquitto would switch to its own user, who cannot read the test's folder
    user = "user root\n" if os.geteuid() == 0 else ""
    return Broker(folder, extra=f"{user}allow_anonymous false\npassword_file {passwords}\n"
                                f"certfile {cert}\nkeyfile {key}\n")


async def test_login_and_tls_come_from_the_broker_url(secure_broker: Broker,
                                                      tmp_path: Path) -> None:
    secure_broker.start()
    try:
        ca = secure_broker.folder / "broker.pem"
        url = f"mqtts://agent:s3cret%2F%21@127.0.0.1:{secure_broker.port}?ca={ca}"
        path = pipeline_file(tmp_path, stages({"asr": url}))
        worker = Worker(load_pipeline(path), "asr", url, worker_id="tls")
        ready = asyncio.Event()
        serving = asyncio.create_task(worker.serve(ready.set))
        await asyncio.wait_for(ready.wait(), 10)
        trace, _ = await talk(Pipeline(load_pipeline(path)), ONE_TURN)
        assert texts(trace, "asr") == SCRIPT[:1]
        assert {s.attrs["worker"] for s in trace.named("asr")} == {"tls"}

        wrong = url.replace("s3cret%2F%21", "guess")
        intruder = Worker(load_pipeline(path), "asr", wrong, worker_id="intruder")
        refused = r"mqtts://agent@127\.0\.0\.1.*refused the login"
        with pytest.raises(BrokerUnavailable, match=refused) as caught:
            await intruder.serve()
        assert "guess" not in str(caught.value)
        worker.stop()
        await asyncio.wait_for(serving, 5)
    finally:
        secure_broker.stop()
        with contextlib.suppress(Exception):
            worker.stop()
