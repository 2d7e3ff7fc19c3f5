#!/usr/bin/env bash
# Install everything the test suite needs (Debian packages included) and run it all:
# lint, types, and pytest. Works on a fresh Debian machine as root with Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(pocketsphinx-testdata espeak-ng sox libsox-fmt-all libsndfile1 libportaudio2 mosquitto openssl
  pulseaudio pulseaudio-utils libasound2-plugins alsa-utils chromium sip-tester)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "== apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PIP=(python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore)
# torch (for the transformers adapter's tests): the pinned CPU build, which pip takes from
# this machine's disk; an unpinned torch would pull a multi-GB CUDA build.
echo "== pip install torch==2.13.0 (CPU)"
"${PIP[@]}" "torch==2.13.0"
echo "== pip install -e .[local,test]"
"${PIP[@]}" -e ".[local,test]"
# Coqui TTS with a torchaudio that loads beside the CPU torch (see the script's comments).
bash scripts/install_coqui.sh
# Model files that ship inside wheels whose own dependencies would clash with ours
# (pipecat-ai pins older soxr/soundfile/protobuf; silero-vad imports torch): we only
# read one file from each, so they go in without their dependencies.
echo "== pip install --no-deps pipecat-ai silero-vad (model files only)"
"${PIP[@]}" --no-deps "pipecat-ai==1.14.0" "silero-vad==6.2.3"

echo "== ruff"
ruff check .
echo "== mypy (strict: cascade/, stages/, adapters/)"
bash scripts/typecheck.sh
echo "== pytest"
# Everything above is installed, so a skipped test means something is broken: fail.
CASCADE_FORBID_SKIPS=1 python3 -m pytest -q -rs -p no:cacheprovider "$@"
