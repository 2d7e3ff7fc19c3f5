"""Stage contracts and generic stage logic: VAD, ASR, turn-taking, LLM, TTS.

Each module holds one contract: the base class a vendor adapter subclasses,
with the logic every vendor shares (framing, hysteresis, history, clause
splitting, resampling) and the standard spans and metrics emitted by the base,
so no adapter can forget them.
"""
