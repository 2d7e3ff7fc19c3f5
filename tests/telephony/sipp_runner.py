"""Run sipp (Debian package sip-tester) as a caller from a scenario in tests/telephony/sipp/."""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent / "sipp"


@dataclass
class SippResult:
    code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.code == 0


def caller_scenario(audio: Path, agent_port: int, wait_ms: int, dtmf: str | None = None
                    ) -> str:
    """caller.xml with the recording, where the agent's RTP goes, and an optional key press."""
    press = ""
    if dtmf is not None:
        name = {"*": "star", "#": "pound"}.get(dtmf, dtmf)
        press = (f'  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/'
                 f'dtmf_2833_{name}.pcap"/></action></nop>\n  <pause milliseconds="600"/>\n')
    text = (SCENARIOS / "caller.xml").read_text()
    for key, value in (("@AUDIO@", str(audio)), ("@AGENT_PORT@", str(agent_port)),
                       ("@WAIT_MS@", str(wait_ms)), ("@DTMF@", press)):
        text = text.replace(key, value)
    return text


def media_base() -> int:
    """A base port for sipp's media sockets with the next few ports free."""
    for _ in range(50):
        base = random.randrange(20000, 29000, 10)
        try:
            for offset in range(0, 8):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no free media ports for sipp")


async def run_sipp(server_port: int, scenario: str, workdir: Path, name: str = "call",
                   timeout: float = 40.0, extra: tuple[str, ...] = ()) -> SippResult:
    """One call with ``scenario`` (XML text) to 127.0.0.1:``server_port``."""
    path = workdir / f"{name}.xml"
    path.write_text(scenario)
    process = await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{server_port}", "-sf", str(path), "-m", "1", "-i", "127.0.0.1",
        "-p", "0", "-mi", "127.0.0.1", "-mp", str(media_base()), "-nostdin", "-trace_err",
        "-timeout", f"{int(timeout)}s", "-timeout_error", *extra,
        cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout + 10)
    errors = "".join(p.read_text(errors="replace") for p in workdir.glob(f"{name}_*errors.log"))
    return SippResult(process.returncode or 0, output.decode(errors="replace") + errors)
