#!/usr/bin/env bash
# System packages the project needs on a fresh Debian/Ubuntu machine: ffmpeg/ffprobe (every upload
# is decoded through pydub over ffmpeg) and Python's venv module (Debian ships it separately).
set -euo pipefail
PYTHON=${PYTHON:-python3}
need=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need+=(ffmpeg)
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || need+=("python3-venv")
# Tests only (TEST_TOOLS=1, from `make test-system`): the scripted escalation call is spoken by
# espeak-ng and assembled by sox at test time (tests/escalation_call.py).
if [ "${TEST_TOOLS:-0}" = 1 ]; then
  command -v espeak-ng >/dev/null || need+=(espeak-ng)
  command -v sox >/dev/null && command -v soxi >/dev/null || need+=(sox)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null; then
  echo "installing ${need[*]} (apt-get)" >&2
  # Waits for a package manager run already in progress (unattended upgrades on a fresh machine).
  "$(dirname "$0")/apt-get-wait.sh" update -qq
  "$(dirname "$0")/apt-get-wait.sh" install -y -qq "${need[@]}"
elif command -v brew >/dev/null && [[ " ${need[*]} " == *" ffmpeg "* ]]; then
  brew install ffmpeg
else
  echo "please install: ${need[*]}" >&2; exit 1
fi
