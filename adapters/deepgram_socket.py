"""The ``/v1/listen`` websocket of ``deepgram-asr``: sending speech, matching results.

Per Deepgram's public streaming docs: the client opens
``wss://api.deepgram.com/v1/listen?model=...&encoding=linear16&sample_rate=16000
&channels=1&...`` with ``Authorization: Token <key>`` and sends raw audio as
binary messages; ``{"type": "KeepAlive"}`` while it has no audio to send (the
service closes a socket idle for about 10 s), ``{"type": "Finalize"}`` to flush
what it holds, ``{"type": "CloseStream"}`` to end, after which the service sends
its ``Metadata`` and closes. ``type: "Results"`` messages carry ``start`` and
``duration`` in stream time (seconds of audio sent on the socket), ``is_final``
(false for interim results, sent when ``interim_results=true``),
``channel.alternatives[0]`` (``transcript``, ``confidence``, ``words``) and, on
the flush's last result, ``from_finalize: true`` - not guaranteed when little
audio was left to flush.

``ListenSocket`` carries one conversation's segments (``Utterance``) on one
socket: each segment's audio goes out as it arrives and a Finalize at its end;
its final transcript joins the final results whose stream time falls in it. A
segment is complete at its ``from_finalize`` result, once final results cover
its audio, or once the service answers for a later segment. A dropped socket
is reopened and the unfinished segments sent again; the drop is reported as a
``Fault``.

The socket is ``websockets``' blocking client, driven by a sender thread (which
connects, sends and keeps alive) and a reader thread, so the event loop never
waits on the network; a final is awaited in a worker thread (``result``). Its
log is pinned at INFO: websockets logs the handshake's headers, the API key
among them, at DEBUG.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cascade.adapters.provider import ProviderError, retry_delay, scrub
from cascade.adapters.secrets import Secret
from cascade.frames import PCM, Word
from cascade.stages.asr import Recognition

if TYPE_CHECKING:
    from cascade.adapters.deepgram import DeepgramOptions

SLACK = 0.05
"""Seconds by which a result's stream time may miss the audio we counted."""

LOG = logging.getLogger("cascade.adapters.deepgram.websocket")
LOG.setLevel(logging.INFO)  # never DEBUG: websockets would log "Authorization: Token <key>"


class Utterance:
    """One speech segment on the socket: the audio sent for it and what came back."""

    def __init__(self, turn: int, start: float) -> None:
        self.turn = turn
        self.start = start  # media time of its first sample
        self.sent: list[bytes] = []  # every message sent, to send again after a reconnect
        self.resent = 0  # times it was sent again
        self.closed = False  # the caller stopped: a Finalize follows its audio
        self.begin: float | None = None  # stream time of its first sample on this socket
        self.end: float | None = None  # stream time after its last, once finalized
        self.finals: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.result: Recognition | None = None
        self.error: ProviderError | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    """A failure no final reports (a dropped socket): ``turn`` it hit, if any."""

    turn: int | None
    message: str


@dataclass(frozen=True, slots=True)
class Interim:
    """An interim result for an open utterance (``seconds`` of it covered)."""

    utterance: Utterance
    text: str
    confidence: float
    seconds: float


class ListenSocket:
    """One /v1/listen websocket for a conversation, reopened when it drops.

    ``begin``, ``send`` and ``finalize`` only queue (the event loop calls them);
    ``result`` blocks until an utterance is complete. ``news`` collects interim
    results and faults for the stage to pass on.
    """

    def __init__(self, url: str, rate: int, secret: Secret | None, options: DeepgramOptions,
                 where: str) -> None:
        self.url, self.rate, self.secret, self.options = url, rate, secret, options
        self.where = where
        self.news: deque[Interim | Fault] = deque()
        self._outbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._open: list[Utterance] = []  # not yet complete, in stream order
        self._socket: Any = None
        self._reader: threading.Thread | None = None
        self._position = 0.0  # seconds of audio sent on the current socket
        self._closing = False
        self._stopping = threading.Event()  # close() was called: connect no more
        self._sender = threading.Thread(target=self._run, name="deepgram-send", daemon=True)
        self._sender.start()

    # --- the caller's side ----------------------------------------------------

    def begin(self, turn: int, start: float) -> Utterance:
        utterance = Utterance(turn, start)
        self._outbox.put(("begin", utterance))
        return utterance

    def send(self, utterance: Utterance, pcm: PCM) -> None:
        self._outbox.put(("audio", utterance, pcm.astype("<i2", copy=False).tobytes()))

    def finalize(self, utterance: Utterance) -> None:
        self._outbox.put(("finalize", utterance))

    def result(self, utterance: Utterance, timeout: float) -> Recognition:
        """The utterance's recognition (blocking); a ProviderError if it failed. One
        that times out is abandoned: never sent again, nor blamed for a later drop."""
        if not utterance.done.wait(timeout):
            self.abandon(utterance, ProviderError(
                f"{self.where}: no result of Finalize within {timeout} s; raise "
                "finalize_timeout or check the service", retryable=True))
        if utterance.error is not None:
            raise utterance.error
        assert utterance.result is not None
        return utterance.result

    def abandon(self, utterance: Utterance, error: ProviderError) -> None:
        """Stop waiting for ``utterance`` (failing it with ``error``) unless it is done."""
        with self._lock:
            if utterance.done.is_set():
                return
            if utterance in self._open:
                self._open.remove(utterance)
            utterance.error = error
            utterance.done.set()

    def close(self, wait: bool = True) -> None:
        """CloseStream, then wait (``close_timeout``) for the Metadata and the close; a
        connect in progress gives up. ``wait=False``: the sender thread closes alone."""
        self._stopping.set()
        self._outbox.put(("close",))
        if wait:
            self._sender.join(self.options.close_timeout + 1.0)

    # --- the sender thread ----------------------------------------------------

    def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                item = self._outbox.get(timeout=self.options.keepalive_interval)
            except queue.Empty:
                socket = self._socket
                if socket is not None:
                    try:
                        socket.send(json.dumps({"type": "KeepAlive"}))
                    except ConnectionClosed as exc:
                        self._lost(socket, str(exc))
                continue
            kind = item[0]
            if kind == "close":
                self._close()
                return
            try:
                self._deliver(item)
            except Exception as exc:  # a bug must not leave finals waiting for the timeout
                self._fail(ProviderError(f"{self.where}: {type(exc).__name__}: {exc}"))

    def _deliver(self, item: tuple[Any, ...]) -> None:
        from websockets.exceptions import ConnectionClosed

        kind = item[0]
        if kind == "dropped":
            self._lost(item[1], item[2])
            return
        utterance: Utterance = item[1]
        if kind == "begin":
            with self._lock:
                if not utterance.done.is_set():  # not abandoned while it queued
                    self._open.append(utterance)
        if utterance.done.is_set() or (socket := self._connected()) is None:
            return
        try:
            if kind == "audio":
                utterance.sent.append(item[2])
                self._write(socket, utterance, item[2])
            elif kind == "finalize":
                utterance.closed = True
                self._write_finalize(socket, utterance)
        except ConnectionClosed as exc:
            self._lost(socket, str(exc))

    def _write(self, socket: Any, utterance: Utterance, data: bytes) -> None:
        with self._lock:
            if utterance.begin is None:
                utterance.begin = self._position
            self._position += len(data) / 2 / self.rate
        socket.send(data)

    def _write_finalize(self, socket: Any, utterance: Utterance) -> None:
        with self._lock:
            if utterance.begin is None:  # no audio at all: nothing to ask for
                self._complete(utterance)
                return
            utterance.end = self._position
        socket.send(json.dumps({"type": "Finalize"}))

    def _connected(self) -> Any:
        """The open socket; connects (sending the unfinished utterances again, each up to
        ``retries`` times) if needed. None when connecting failed (the unfinished
        utterances fail with it)."""
        from websockets.exceptions import ConnectionClosed

        drops = 0
        while self._socket is None:
            try:
                socket = self._open_socket()
            except ProviderError as exc:
                self._fail(exc)
                return None
            with self._lock:
                self._socket, self._position = socket, 0.0
                again = []
                for utterance in list(self._open):
                    utterance.resent += bool(utterance.sent)
                    if utterance.resent > self.options.retries:
                        self._open.remove(utterance)
                        utterance.error = ProviderError(
                            f"{self.where}: the connection dropped {utterance.resent} times "
                            "while this speech was on it; check the service", retryable=True)
                        utterance.done.set()
                        continue
                    utterance.finals.clear()
                    utterance.begin = utterance.end = None
                    again.append(utterance)
            self._reader = threading.Thread(target=self._read, args=(socket,),
                                            name="deepgram-read", daemon=True)
            self._reader.start()
            try:
                for utterance in again:
                    for data in utterance.sent:
                        self._write(socket, utterance, data)
                    if utterance.closed:
                        self._write_finalize(socket, utterance)
            except ConnectionClosed as exc:
                drops += 1
                with self._lock:
                    self._socket = None
                if drops > self.options.retries:
                    self._fail(ProviderError(f"{self.where}: the connection dropped again "
                                             f"while sending the speech again ({exc})",
                                             retryable=True))
                    return None
        return self._socket

    def _open_socket(self) -> Any:
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        opts = self.options
        headers = {"Authorization": f"Token {self.secret.reveal()}"} if self.secret else {}
        attempt = 0
        while True:
            self._check_stopping()
            try:
                socket = connect(self.url, additional_headers=headers, max_size=2**22,
                                 open_timeout=opts.connect_timeout,
                                 close_timeout=opts.close_timeout, logger=LOG)
            except InvalidStatus as exc:
                status = exc.response.status_code
                fix = (f"check the API key in {opts.api_key_env}" if status in (401, 403)
                       else "check base_url and the options")
                failure = ProviderError(f"{self.where} refused the connection: HTTP "
                                        f"{status}; {fix}", status=status,
                                        retryable=status == 429 or status >= 500)
            except (OSError, TimeoutError, WebSocketException) as exc:
                reason = scrub(str(exc), self.secret) or type(exc).__name__
                failure = ProviderError(f"{self.where} failed to connect ({reason}) after "
                                        f"{attempt + 1} attempt(s); check base_url and that "
                                        "the server is up", retryable=True)
            else:
                if self._stopping.is_set():  # hung up while it connected
                    socket.close()
                    self._check_stopping()
                return socket
            if not failure.retryable or attempt >= opts.retries:
                raise failure
            self._stopping.wait(retry_delay(opts, attempt))  # the sender thread; close() wakes it
            attempt += 1

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise ProviderError(f"{self.where}: the conversation ended before the "
                                "connection opened")

    def _lost(self, socket: Any, reason: str | None) -> None:
        """``socket`` is gone; unfinished utterances go out again on a new one at once."""
        with self._lock:
            if socket is not self._socket:
                return  # already replaced
            self._socket = None
            pending = self._open[0].turn if self._open else None
        socket.close()
        if reason is not None:
            self.news.append(Fault(pending, f"{self.where}: the connection dropped "
                                   f"({reason}); " + (
                                       "it reopens at the next speech" if pending is None
                                       else "sending the unfinished speech again")))
        if pending is not None:
            self._connected()

    def _close(self) -> None:
        from websockets.exceptions import ConnectionClosed

        with self._lock:
            self._closing = True
            socket, reader = self._socket, self._reader
        if socket is not None and reader is not None:
            with contextlib.suppress(ConnectionClosed):
                socket.send(json.dumps({"type": "CloseStream"}))
            reader.join(self.options.close_timeout)  # it ends when the service closes
            socket.close()
        self._fail(ProviderError(f"{self.where}: the conversation ended before the final "
                                 "result"))

    # --- the reader thread ----------------------------------------------------

    def _read(self, socket: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for raw in socket:
                self._take(socket, self._message(raw))
            reason = f"closed by the service: {socket.close_code} {socket.close_reason}"
        except ConnectionClosed as exc:
            reason = str(exc)
        except (ProviderError, ValueError, KeyError, TypeError) as exc:
            failure = exc if isinstance(exc, ProviderError) else ProviderError(
                f"{self.where}: a message is not what Deepgram sends ({type(exc).__name__}: "
                f"{exc})")
            with self._lock:  # the stream is not to be trusted: fail what is on it
                if socket is not self._socket:
                    return
                self._socket = None
                failed = bool(self._open)
            self._fail(failure)
            if not failed:
                self.news.append(Fault(None, str(failure)))
            socket.close()
            return
        if not self._closing:
            self._outbox.put(("dropped", socket, reason))

    def _message(self, raw: str | bytes) -> dict[str, Any]:
        try:
            message = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProviderError(f"{self.where}: a message is not JSON: "
                                f"{str(raw)[:120]!r}") from None
        if not isinstance(message, dict):
            raise ProviderError(f"{self.where}: a message is not a JSON object")
        if message.get("type") == "Error" or "err_code" in message:
            raise ProviderError(f"{self.where}: the service reported {str(message)[:200]}")
        return message

    def _take(self, socket: Any, message: dict[str, Any]) -> None:
        """File a message under the utterance whose stream time it covers."""
        if message.get("type") != "Results":  # Metadata, SpeechStarted, UtteranceEnd
            return
        end = float(message.get("start", 0.0)) + float(message.get("duration", 0.0))
        with self._lock:
            if socket is not self._socket:
                return
            owner = next((u for u in self._open if u.begin is not None
                          and u.begin + SLACK < end
                          <= (math.inf if u.end is None else u.end) + SLACK), None)
            if owner is None:
                return
            for earlier in self._open[: self._open.index(owner)]:
                if earlier.end is not None:  # the service answers in stream order
                    self._complete(earlier)
            assert owner.begin is not None
            if message.get("is_final"):
                owner.finals.append(message)
                if owner.end is not None and (message.get("from_finalize")
                                              or end >= owner.end - SLACK):
                    self._complete(owner)
            elif owner.end is None:
                best = _best(message)
                self.news.append(Interim(owner, str(best.get("transcript") or ""),
                                         float(best.get("confidence", 1.0)),
                                         end - owner.begin))

    def _complete(self, utterance: Utterance) -> None:
        """(Lock held.) The utterance's results are all in."""
        utterance.result = recognition(utterance.finals, utterance.begin or 0.0)
        self._open.remove(utterance)
        utterance.done.set()

    def _fail(self, error: ProviderError) -> None:
        with self._lock:
            failed, self._open = self._open, []
        for utterance in failed:
            utterance.error = error
            utterance.done.set()


def _best(result: dict[str, Any]) -> dict[str, Any]:
    alternatives = (result.get("channel") or {}).get("alternatives") or [{}]
    best: dict[str, Any] = alternatives[0]
    return best


def recognition(results: list[dict[str, Any]], begin: float) -> Recognition:
    """The final results of one utterance joined; word times from ``begin`` (stream time)."""
    texts: list[str] = []
    words: list[Word] = []
    confidences: list[float] = []
    for result in results:
        best = _best(result)
        if best.get("transcript"):
            texts.append(str(best["transcript"]))
            confidences.append(float(best.get("confidence", 1.0)))
        words.extend(Word(str(w.get("punctuated_word") or w["word"]),
                          float(w["start"]) - begin, float(w["end"]) - begin,
                          float(w.get("confidence", 1.0)))
                     for w in best.get("words") or [])
    confidence = sum(confidences) / len(confidences) if confidences else 0.0
    return Recognition(" ".join(texts).strip(), avg_logprob=math.log(max(confidence, 1e-6)),
                       no_speech_prob=0.0 if texts else 1.0, words=words)
