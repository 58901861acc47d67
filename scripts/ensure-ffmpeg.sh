#!/usr/bin/env bash
# ffmpeg/ffprobe decode every upload (through pydub); install them from Debian if missing.
set -euo pipefail
if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then exit 0; fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null; then
  echo "installing ffmpeg (apt-get)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
elif command -v brew >/dev/null; then
  brew install ffmpeg
else
  echo "please install ffmpeg (with ffprobe) and re-run" >&2; exit 1
fi
