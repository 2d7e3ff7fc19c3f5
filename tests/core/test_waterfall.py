"""The waterfall PNG drawn from hand-built spans."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from cascade.errors import MissingDependency
from cascade.waterfall import COLOURS, colour_of, draw_waterfall, row_names
from tests.core.sample_trace import span, two_turn_conversation

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])


def pixels_near(image: np.ndarray, hex_colour: str) -> int:
    """How many pixels are (almost) exactly this colour."""
    rgb255 = np.round(image[..., :3] * 255).astype(int)
    return int((np.abs(rgb255 - rgb(hex_colour)).max(axis=-1) <= 3).sum())


def test_draws_a_png_with_a_coloured_bar_per_span_name(tmp_path: Path) -> None:
    out = draw_waterfall(two_turn_conversation(), tmp_path / "call.png")
    assert out == tmp_path / "call.png"
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert 20_000 < len(data) < 2_000_000
    image = imread(out)
    height, width = image.shape[:2]
    assert width >= 1200 and 600 <= height <= 1200
    not_white = (image[..., :3] < 0.95).any(axis=-1).mean()
    assert 0.03 < not_white < 0.6, f"{not_white:.1%} of the picture is drawn"
    for name in ("user_speech", "asr", "end_of_turn", "llm", "tts", "agent_speech",
                 "interruption", "backchannel"):
        assert pixels_near(image, COLOURS[name]) > 100, f"no {name} bar in the picture"


def test_rows_follow_the_pipeline_then_unknown_names() -> None:
    spans = [*two_turn_conversation(), span(2, "x", "zeta", 1, 2), span(2, "x", "alpha", 1, 2)]
    assert row_names(spans) == [
        "user_speech", "asr", "end_of_turn", "llm", "tts", "agent_speech",
        "interruption", "backchannel", "error", "alpha", "zeta",
    ]
    rows = row_names(spans)
    assert colour_of("alpha", rows) != colour_of("zeta", rows)
    assert colour_of("llm", rows) == COLOURS["llm"]


def test_empty_trace_still_draws(tmp_path: Path) -> None:
    out = draw_waterfall([], tmp_path / "empty.png")
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_without_matplotlib_says_which_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in [m for m in sys.modules if m.split(".")[0] == "matplotlib"]:
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependency, match=r"voice-cascade\[plot\]"):
        draw_waterfall(two_turn_conversation(), tmp_path / "call.png")
    assert not (tmp_path / "call.png").exists()
