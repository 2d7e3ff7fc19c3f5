"""What a phone call costs the server: N concurrent calls at real-time pace, no models.

Each call runs the real transport (SIP + RTP with the jitter buffer and 20 ms
packets, or a Twilio Media Stream over a websocket whose caller echoes every
``mark`` back as Twilio does), the G.711 codec and
resampling both ways, and a Cascade graph of pass-through stages whose last one
mirrors the caller's audio back as agent audio (so Playout paces it and the
outbound path runs too). The server is a separate process pinned to one core;
the callers run in this process on another core.

For each N: set up N calls, warm up, then measure for ``--seconds``:

* server CPU share of its core, and calls per core at that cost (N / share);
* inbound frames dropped (pipeline full) and concealed/late (jitter buffer);
* outbound: agent packets the callers got, and gaps (an agent packet that was
  silence or arrived more than 60 ms after the previous one);
* media clock: how late the server's 20 ms tick woke up, at worst (SIP);
* the longest garbage-collector pause in the server (a pause stalls every call).

``--transport floor`` is the yardstick under the Twilio row: the same callers
against a bare Starlette websocket app on the same uvicorn that only does what
any Media Streams server must (parse each message, decode its base64, send one
media message back), with no Cascade at all.

A size "keeps up" when no frame was dropped, concealed or late, no outbound gap
occurred, and the server used less than its core. The goal is >= 100 calls per
core. A run takes about a minute.

    python benchmarks/phone.py                       # both transports
    python benchmarks/phone.py --transport sip --sizes 50,100,200,300
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import importlib.util
import json
import multiprocessing
import os
import platform
import socket
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from cascade.config import PipelineConfig, StageConfig
from cascade.conversation import Pipeline
from cascade.frames import AgentAudio, Frame, UserAudio
from cascade.stage import Stage
from cascade.telephony import g711
from cascade.telephony import sip_message as sm
from cascade.telephony.rtp import RtpSender
from cascade.telephony.sdp import parse_offer

TOKEN = "bench"
SERVER_CORE, CALLER_CORE = 0, 1
BUDGET = 45.0
"""Seconds a transport's ladder may take; larger sizes are skipped after that."""
GAP = 0.06
TONE = g711.ulaw_encode((np.sin(np.arange(160) * 2 * np.pi / 16) * 8000).astype(np.int16))
PAYLOAD = base64.b64encode(TONE).decode()
QUIET = 500


# --- the pass-through pipeline --------------------------------------------------


class Relay(Stage):
    accepts = (UserAudio,)

    async def process(self, frame: Frame) -> None:
        await self.push(frame)


class Mirror(Stage):
    """The caller's audio, back as agent audio."""

    accepts = (UserAudio,)

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, UserAudio)
        await self.push(AgentAudio(conversation=frame.conversation, turn=frame.turn,
                                   time=frame.time, pcm=frame.pcm,
                                   sample_rate=frame.sample_rate, text="echo"))


class PassThrough(Pipeline):
    """Three relays and a mirror: framework, codec and transport, no model."""

    def __init__(self, rate: int = 16000) -> None:
        names = ("relay1", "relay2", "relay3", "mirror")
        self.config = PipelineConfig(
            name="passthrough", sample_rate=rate,
            stages={n: StageConfig(adapter="relay") for n in names},
            edges=["relay1 -> relay2", "relay2 -> relay3", "relay3 -> mirror",
                   "mirror -> playout"])
        self.adapters = {}

    def build_stages(self) -> dict[str, Stage]:
        return {"relay1": Relay(), "relay2": Relay(), "relay3": Relay(), "mirror": Mirror()}


# --- the server process ---------------------------------------------------------


def floor_app(metrics: Any) -> Any:
    """The websocket stack alone: TwiML webhook, then echo each media message's audio."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from cascade.telephony import twilio_protocol as tp

    async def voice(request: Any) -> Response:
        url = f"ws://{request.url.netloc}/twilio/media/floor"
        return Response(f'<Response><Connect><Stream url="{url}"/></Connect></Response>',
                        media_type="text/xml")

    async def media(ws: WebSocket) -> None:
        await ws.accept()
        metrics.active_calls.inc()
        accepted = metrics.media.labels("in", "accepted")
        reply = None
        try:
            while True:
                message = tp.parse(await ws.receive_text())
                if isinstance(message, tp.Start):
                    reply = tp.media_messages(message.stream_sid)
                elif isinstance(message, tp.Media) and reply is not None:
                    accepted.inc()
                    await ws.send_text(reply(message.payload))
                elif isinstance(message, tp.Stop):
                    break
        except WebSocketDisconnect:
            pass
        finally:
            metrics.active_calls.dec()

    return Starlette(routes=[Route("/twilio/voice", voice, methods=["POST"]),
                             WebSocketRoute("/twilio/media/floor", media)])




def serve(transport: str, rate: int, loop: str, conn: Connection) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {SERVER_CORE})
    if loop == "uvloop":
        import uvloop

        uvloop.run(_serve(transport, rate, conn))
    else:
        asyncio.run(_serve(transport, rate, conn))


class GcPauses:
    """The longest pause of Python's cyclic garbage collector since the last reset."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._began = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.worst = max(self.worst, time.perf_counter() - self._began)


async def _serve(transport: str, rate: int, conn: Connection) -> None:
    from cascade.telephony.sip_call import MediaSettings
    from cascade.telephony.sip_server import SipServer, SipSettings
    from cascade.telephony.twilio_call import CallLimits
    from cascade.telephony.twilio_server import TwilioEndpoint, TwilioSettings

    loop = asyncio.get_running_loop()
    if transport == "sip":
        sip = SipServer(PassThrough(rate), SipSettings(port=0, max_calls=10_000,
                                                   media=MediaSettings(media_timeout=60)))
        await sip.start()
        metrics, port = sip.metrics, sip.port
    else:
        import uvicorn

        from cascade.telephony.telemetry import PhoneMetrics

        if transport == "floor":
            metrics = PhoneMetrics("twilio")
            app = floor_app(metrics)
        else:
            endpoint = TwilioEndpoint(PassThrough(rate), TwilioSettings(
                auth_token=TOKEN, max_calls=10_000, limits=CallLimits(idle_timeout=60)))
            metrics, app = endpoint.metrics, endpoint.app
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off",
                                               log_level="error", ws_ping_interval=None,
                                               ws_per_message_deflate=False))
        serving = loop.create_task(server.serve(sockets=[sock]))
        port = sock.getsockname()[1]
    pauses = GcPauses()
    conn.send(port)
    while (command := await loop.run_in_executor(None, conn.recv)) != "stop":
        def value(name: str, **labels: str) -> float:
            return metrics.registry.get_sample_value(name, labels) or 0.0

        snapshot = {
            "cpu": time.process_time(), "wall": time.perf_counter(),
            "active": value("cascade_phone_active_calls"),
            "accepted": value("cascade_phone_media_frames_total", direction="in",
                              fate="accepted"),
            "dropped": value("cascade_phone_media_frames_total", direction="in",
                             fate="dropped"),
            "concealed": 0, "late": 0, "tick_lag": 0.0, "gc_pause": pauses.worst,
        }
        if command == "reset":
            pauses.worst = 0.0
        if transport == "sip":
            calls = [d.call for d in sip.dialogs.values() if d.call is not None]
            snapshot["concealed"] = sum(c.jitter.stats.concealed for c in calls)
            snapshot["late"] = sum(c.jitter.stats.late for c in calls)
            snapshot["tick_lag"] = sip.clock.worst_lag
            if command == "reset":
                sip.clock.worst_lag = 0.0
        conn.send(snapshot)
    if transport != "sip":
        server.should_exit = True
        await serving


# --- the callers ----------------------------------------------------------------


def core_busy(core: int) -> tuple[int, int]:
    """(busy, total) jiffies of one core so far, from /proc/stat (0, 0 elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            for line in stat:
                if line.startswith(f"cpu{core} "):
                    fields = [int(v) for v in line.split()[1:]]
                    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
                    return sum(fields) - idle, sum(fields)
    except OSError:
        pass
    return 0, 0


class Tally:
    """What one caller heard from the agent during the measured window."""

    def __init__(self) -> None:
        self.measuring = False
        self.packets = 0
        self.gaps = 0
        self.last = 0.0

    def heard(self, payload: bytes, now: float) -> None:
        if not self.measuring:
            self.last = now
            return
        self.packets += 1
        silent = np.abs(g711.ulaw_decode(payload).astype(np.int32)).max() < QUIET
        if silent or now - self.last > GAP:
            self.gaps += 1
        self.last = now


class RtpEar(asyncio.DatagramProtocol):
    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.tally.heard(data[12:], time.perf_counter())


async def sip_call(port: int, index: int) -> tuple[Any, Tally]:
    """INVITE (offering PCMU to a port that counts the agent's packets), 200 OK, ACK."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: RtpEar(tally), local_addr=("127.0.0.1", 0))
    rtp_port = transport.get_extra_info("sockname")[1]
    signal = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    signal.bind(("127.0.0.1", 0))
    signal.setblocking(False)
    here = signal.getsockname()[1]
    sdp = (f"v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=audio {rtp_port} RTP/AVP 0\r\n")
    head = (f"SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{here};branch={sm.new_branch()}\r\n"
            f"From: <sip:b{index}@127.0.0.1>;tag=t{index}\r\nTo: <sip:agent@127.0.0.1>")
    common = f"\r\nCall-ID: bench-{index}-{time.time()}\r\nMax-Forwards: 70\r\n"
    invite = (f"INVITE sip:agent@127.0.0.1:{port} {head}{common}CSeq: 1 INVITE\r\n"
              f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
    signal.sendto(invite.encode(), ("127.0.0.1", port))
    while True:
        data = await asyncio.wait_for(loop.sock_recv(signal, 4096), 10)
        try:
            reply = sm.parse(data)
        except sm.SipError:
            continue  # stray RTP from a call of the previous size on a reused port
        if reply.status == 200:
            break
    offer = parse_offer(reply.body)
    ack = (f"ACK sip:agent@127.0.0.1:{port} {head};tag={reply.to_tag}{common}"
           "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
    signal.sendto(ack.encode(), ("127.0.0.1", port))
    dialog = f"{head};tag={reply.to_tag}"  # in-dialog requests carry the agent's To tag
    call = (transport, RtpSender(0), (offer.address, offer.port), signal, dialog, common)
    return call, tally


async def sip_calls(port: int, n: int) -> tuple[list[Any], list[Tally]]:
    made = await asyncio.gather(*(sip_call(port, index) for index in range(n)))
    return [call for call, _ in made], [tally for _, tally in made]


async def sip_hang_up(port: int, calls: list[Any]) -> None:
    for transport, _, _, signal, dialog, common in calls:
        bye = (f"BYE sip:agent@127.0.0.1:{port} {dialog}{common}CSeq: 2 BYE\r\n"
               "Content-Length: 0\r\n\r\n")
        signal.sendto(bye.encode(), ("127.0.0.1", port))
        transport.close()
        signal.close()


async def twilio_calls(port: int, n: int) -> tuple[list[Any], list[Tally]]:
    """Signed webhooks, then a Media Stream each: ``start`` sent, the agent's media counted."""
    import httpx
    import websockets
    from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

    base = f"http://127.0.0.1:{port}"
    gate = asyncio.Semaphore(25)

    async def call(client: httpx.AsyncClient, index: int) -> tuple[Any, Tally]:
        form = {"CallSid": f"CA{index}", "From": "+1555", "To": "+1666"}
        signature = RequestValidator(TOKEN).compute_signature(base + "/twilio/voice", form)
        async with gate:
            twiml = (await client.post(base + "/twilio/voice", data=form,
                                       headers={"X-Twilio-Signature": signature})).text
            url = twiml.split('url="', 1)[1].split('"', 1)[0]
            ws = await websockets.connect(url, ping_interval=None, compression=None)
        await ws.send(json.dumps({"event": "start", "start": {
            "streamSid": f"MZ{index}", "callSid": f"CA{index}",
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        tally = Tally()
        return (ws, asyncio.create_task(twilio_ear(ws, tally)), index), tally

    async with httpx.AsyncClient(verify=False, timeout=30) as client:
        made = await asyncio.gather(*(call(client, index) for index in range(n)))
    return [c for c, _ in made], [t for _, t in made]


async def twilio_ear(ws: Any, tally: Tally) -> None:
    """Counts the agent's media and echoes each mark, as Twilio does once it played."""
    try:
        async for raw in ws:
            message = json.loads(raw)
            if message["event"] == "media":
                tally.heard(base64.b64decode(message["media"]["payload"]), time.perf_counter())
            elif message["event"] == "mark":
                await ws.send(raw)
    except Exception:
        pass


class Feed:
    """Sends a 20 ms packet to every call each period, calls spread over four phases."""

    def __init__(self) -> None:
        self.measuring = False
        self.sent = 0
        self.worst_lag = 0.0

    async def run(self, n: int, send: Any, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.01
        groups = [list(range(g, n, 4)) for g in range(4)]
        await asyncio.gather(*(self._group(loop, m, start + i * 0.005, seconds, send)
                               for i, m in enumerate(groups)))

    async def _group(self, loop: asyncio.AbstractEventLoop, members: list[int], start: float,
                     seconds: float, send: Any) -> None:
        for k in range(round(seconds / 0.02)):
            due = start + k * 0.02
            await asyncio.sleep(max(0.0, due - loop.time()))
            if self.measuring:
                self.worst_lag = max(self.worst_lag, loop.time() - due)
                self.sent += len(members)
            for index in members:
                send(index, k)


async def run_point(transport: str, port: int, conn: Connection, n: int, seconds: float,
                    warmup: float) -> dict[str, Any]:
    if transport == "sip":
        calls, tallies = await sip_calls(port, n)

        def send(index: int, k: int) -> None:
            rtp, sender, remote, *_ = calls[index]
            rtp.sendto(sender.packet(TONE), remote)
    else:
        calls, tallies = await twilio_calls(port, n)
        pending: set[asyncio.Task[Any]] = set()

        def send(index: int, k: int) -> None:
            ws, _, sid = calls[index]
            message = (f'{{"event":"media","streamSid":"MZ{sid}","media":{{"chunk":"{k + 1}",'
                       f'"payload":"{PAYLOAD}"}}}}')
            task = asyncio.ensure_future(ws.send(message))
            pending.add(task)
            task.add_done_callback(pending.discard)

    feeder = Feed()
    feeding = asyncio.create_task(feeder.run(n, send, warmup + seconds + 0.3))
    await asyncio.sleep(warmup)
    conn.send("reset")
    before = conn.recv()
    busy0 = core_busy(SERVER_CORE)
    for tally in tallies:
        tally.measuring = True
    feeder.measuring = True
    cpu0 = time.process_time()
    await asyncio.sleep(seconds)
    feeder.measuring = False
    for tally in tallies:
        tally.measuring = False
    conn.send("stats")
    after = conn.recv()
    busy1 = core_busy(SERVER_CORE)
    caller_cpu = (time.process_time() - cpu0) / seconds
    await feeding
    if transport == "sip":
        await sip_hang_up(port, calls)
    else:
        for ws, ear, sid in calls:
            await ws.send(json.dumps({"event": "stop", "streamSid": f"MZ{sid}"}))
            await ws.close()
            ear.cancel()
    for _ in range(100):
        conn.send("stats")
        if conn.recv()["active"] == 0:
            break
        await asyncio.sleep(0.05)
    wall = after["wall"] - before["wall"]
    cpu = (after["cpu"] - before["cpu"]) / wall
    core = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    expected = n * seconds / 0.02
    heard = sum(t.packets for t in tallies)
    gaps = sum(t.gaps for t in tallies)
    frames_in = after["accepted"] - before["accepted"]
    bad_in = sum(after[k] - before[k] for k in ("dropped", "concealed", "late"))
    return {
        "transport": transport, "n": n, "cpu": cpu, "caller_cpu": caller_cpu,
        "others": max(0.0, core - cpu),
        "per_core": n / cpu if cpu > 0 else float("inf"),
        "cpu_per_call_frame_us": (after["cpu"] - before["cpu"]) * 1e6 / max(1.0, frames_in),
        "sent": feeder.sent, "caller_lag_ms": feeder.worst_lag * 1000,
        "in_frames": frames_in, "in_bad": bad_in, "out_heard": heard / expected,
        "out_gaps": gaps, "tick_lag_ms": after["tick_lag"] * 1000,
        "gc_ms": after["gc_pause"] * 1000,
        "ok": (bad_in == 0 and gaps == 0 and frames_in >= 0.98 * feeder.sent
               and heard >= 0.98 * expected and cpu < 0.95),
    }


async def ladder(transport: str, conn: Connection, port: int, sizes: Sequence[int],
                 seconds: float, warmup: float) -> list[dict[str, Any]]:
    points = []
    began = time.monotonic()
    for n in sizes:
        if time.monotonic() - began > BUDGET:
            print(f"{transport:<9} {n:>5}  skipped: the run's {BUDGET:.0f} s budget is spent")
            break
        point = await run_point(transport, port, conn, n, seconds, warmup)
        points.append(point)
        print(row(point), flush=True)
        if not point["ok"] and point["cpu"] > 0.95:
            break
    return points


HEADER = (f"{'transport':<9} {'calls':>5} {'server CPU':>10} {'calls/core':>10} "
          f"{'us/frame':>8} {'sent':>6} {'in frames':>9} {'in bad':>6} {'out heard':>9} "
          f"{'out gaps':>8} {'tick lag':>8} {'GC pause':>8} {'caller lag':>10} {'caller CPU':>10} "
          f"{'others':>6}  kept up")


def row(p: dict[str, Any]) -> str:
    return (f"{p['transport']:<9} {p['n']:>5} {p['cpu']:>9.0%} {p['per_core']:>10.0f} "
            f"{p['cpu_per_call_frame_us']:>8.0f} {p['sent']:>6} {p['in_frames']:>9.0f} "
            f"{p['in_bad']:>6.0f} {p['out_heard']:>9.1%} {p['out_gaps']:>8} "
            f"{p['tick_lag_ms']:>6.1f}ms {p['gc_ms']:>6.1f}ms {p['caller_lag_ms']:>8.1f}ms "
            f"{p['caller_cpu']:>9.0%} "
            f"{p['others']:>6.0%}  {'yes' if p['ok'] else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=("sip", "twilio", "both", "floor"),
                        default="both", help="floor: the websocket stack alone, no Cascade")
    parser.add_argument("--sizes", default="50,100,150,200")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rate", type=int, default=16000, help="pipeline sample rate; "
                        "8000 leaves resampling out, to see what it costs")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default=None,
                        help="the server's event loop (default: uvloop when installed, as "
                        "cascade serve uses for phone calls)")
    args = parser.parse_args()
    have_uvloop = importlib.util.find_spec("uvloop") is not None
    if args.loop is None:
        args.loop = "uvloop" if have_uvloop else "asyncio"
    elif args.loop == "uvloop" and not have_uvloop:
        parser.error("--loop uvloop: uvloop is not installed (pip install uvloop)")
    sizes = [int(s) for s in args.sizes.split(",")]
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {CALLER_CORE})
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, server on core {SERVER_CORE}, callers on core "
          f"{CALLER_CORE}; pipeline at {args.rate} Hz; server loop {args.loop}; "
          f"{args.seconds:.0f} s measured per size")
    print(HEADER)
    summary = []
    for transport in (("sip", "twilio") if args.transport == "both" else (args.transport,)):
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.get_context("spawn").Process(
            target=serve, args=(transport, args.rate, args.loop, child), daemon=True)
        server.start()
        child.close()  # the server holds its end: if it dies, recv() fails instead of hanging
        port = parent.recv()
        points = asyncio.run(ladder(transport, parent, port, sizes, args.seconds,
                                    args.warmup))
        parent.send("stop")
        server.join(5)
        kept = [p["n"] for p in points if p["ok"]]
        best = max((p for p in points if p["ok"]), key=lambda p: p["n"], default=None)
        summary.append(f"{transport}: kept up with {max(kept, default=0)} calls; "
                       + (f"at that load {best['cpu']:.0%} of a core, so about "
                          f"{best['per_core']:.0f} calls per core" if best else "none kept up"))
    print("\n".join(summary))
    print("goal: >= 100 calls per core with no dropped or late frames")


if __name__ == "__main__":
    main()
