#!/usr/bin/env bash
# Install coqui-tts (the [coqui] extra's engine) into a Python that already has a CPU
# torch, plus the two packages coqui-tts checks for at import but does not depend on:
# torchaudio, and (with torch >= 2.9) torchcodec. Safe to run again: each step only
# acts when its package is missing or broken.
#
#   PYTHON=/path/to/python scripts/install_coqui.sh      (default: python3)
#
# Why this is not just `pip install coqui-tts torchaudio torchcodec`:
# - torchaudio on PyPI is built for one torch release and for CUDA (its newest, 2.11.0,
#   ships libtorchaudio linked against libc10_cuda.so), so next to a CPU torch 2.13 its
#   native libraries cannot load, and `import torchaudio` fails. torchaudio's own loader
#   treats a missing native library as a supported deployment
#   (torchaudio/_extension/utils.py::_load_lib), so we install it and, if its libraries
#   do not load, delete them: the pure-Python part (functional.resample, transforms)
#   works, which is all Coqui's VITS code needs (it imports torchaudio at module level).
#   --no-deps because releases before 2.11 pin torch==<their release>, which would
#   replace the installed torch with a multi-GB CUDA build.
# - torchcodec: every PyPI wheel from 0.10 on links CUDA libraries (libnvrtc.so.13,
#   libc10_cuda.so), and the CPU-only ones (<= 0.9) were built against torch 2.9's ABI
#   and FFmpeg libraries this machine lacks, so none loads with a CPU torch 2.13.
#   coqui-tts only checks that the package is there (TTS/utils/import_utils.py,
#   importlib.util.find_spec), so we install the small CPU-only 0.9.1 to pass that
#   check. Nothing on the synthesis path imports it; it is used only by
#   torchaudio.load/save, i.e. for reading and writing audio files, which Cascade's
#   adapter never asks Coqui to do.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
COQUI="coqui-tts>=0.27.4"
TORCHAUDIO="torchaudio==2.11.0"
TORCHCODEC="torchcodec==0.9.1"
PIP=("$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore)

has() { "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }

if ! has torch; then
  echo "install_coqui.sh: $PYTHON has no torch; install it first (e.g. pip install torch==2.13.0)" >&2
  exit 1
fi
echo "== coqui-tts for torch $("$PYTHON" -c 'import importlib.metadata as m; print(m.version("torch"))')"

# coqui-tts itself. It does not depend on torch, so pip leaves the installed torch alone.
# six: coqui-tts 0.28.0 imports it (TTS/tts/utils/text/punctuation.py) without declaring
# it; it used to arrive through python-dateutil 2.x, which 4.x no longer requires.
"${PIP[@]}" "$COQUI" six

# torchaudio, without dependencies (see above), then without native libraries if needed.
if ! has torchaudio; then
  echo "== pip install --no-deps $TORCHAUDIO"
  "${PIP[@]}" --no-deps "$TORCHAUDIO"
fi
if ! "$PYTHON" -c "import torchaudio" 2>/dev/null; then
  libs="$("$PYTHON" -c "import importlib.util, pathlib
spec = importlib.util.find_spec('torchaudio')
print(pathlib.Path(next(iter(spec.submodule_search_locations))) / 'lib')")"
  echo "== torchaudio's native libraries do not load with this torch: removing $libs/*.so"
  rm -f "$libs"/*.so
  "$PYTHON" -c "import torchaudio" || {
    echo "install_coqui.sh: torchaudio still does not import; see the error above" >&2; exit 1; }
fi

# torchcodec, for coqui-tts's presence check only (see above); only with torch >= 2.9.
if "$PYTHON" -c "import importlib.metadata as m, sys; v = m.version('torch').split('.')
sys.exit((int(v[0]), int(v[1])) < (2, 9))" && ! has torchcodec; then
  echo "== pip install --no-deps $TORCHCODEC (for coqui-tts's import check; not loaded)"
  "${PIP[@]}" --no-deps "$TORCHCODEC"
fi

# The check that matters: Coqui's synthesizer and VITS import, and resampling works.
"$PYTHON" - <<'EOF'
import torch
import torchaudio.functional
from TTS.tts.models.vits import Vits  # noqa: F401
from TTS.utils.synthesizer import Synthesizer  # noqa: F401

out = torchaudio.functional.resample(torch.zeros(1, 22050), 22050, 16000)
assert out.shape[-1] == 16000, out.shape
print("== coqui-tts ready:", __import__("TTS").__version__)
EOF
