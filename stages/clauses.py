"""Split a streamed reply into speakable pieces, so TTS starts on the first clause.

A piece ends at a sentence end (. ! ? followed by a space or the end), or at a
clause mark (, ; : —) once it holds at least ``min_words`` words. Decimal
points ("3.5") and common abbreviations ("Dr.") do not end a sentence.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s")
_CLAUSE_END = re.compile(r"[,;:—]\s")
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "e.g.", "i.e.", "etc.", "no."}


class ClauseSplitter:
    """Accumulates text deltas and yields finished clauses."""

    def __init__(self, min_words: int = 4) -> None:
        self.min_words = min_words
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        self._buffer += delta
        out: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                return out
            piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if piece:
                out.append(piece)

    def flush(self) -> str:
        piece, self._buffer = self._buffer.strip(), ""
        return piece

    def _next_cut(self) -> int | None:
        text = self._buffer
        for match in _SENTENCE_END.finditer(text):
            words = text[: match.start() + 1].split()
            if words and words[-1].lower() in _ABBREVIATIONS:
                continue
            return match.end()
        for match in _CLAUSE_END.finditer(text):
            if len(text[: match.start()].split()) >= self.min_words:
                return match.end()
        return None
