#!/usr/bin/env bash
# apt-get that waits for the package manager's lock instead of failing: on a fresh cloud machine
# unattended-upgrades or cloud-init often holds /var/lib/dpkg/lock-frontend (or the lists lock) for
# the first minutes, and a plain apt-get then fails with "Could not get lock". Retries only that
# failure, every 5 s, for at most CALLPULSE_APT_LOCK_WAIT_S seconds (default 600); any other failure,
# or the lock still held then, exits non-zero with apt-get's own message.
# Usage: scripts/apt-get-wait.sh update -qq ; scripts/apt-get-wait.sh install -y -qq ffmpeg
set -uo pipefail
wait_s=${CALLPULSE_APT_LOCK_WAIT_S:-600}
deadline=$((SECONDS + wait_s))
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
said=""
while :; do
  out=$($SUDO env DEBIAN_FRONTEND=noninteractive apt-get "$@" 2>&1)
  status=$?
  if [ $status -eq 0 ]; then
    exit 0
  fi
  if grep -qE "Could not get lock|Unable to acquire the dpkg frontend lock|Unable to lock (the )?(administration )?directory|is another process using it" <<<"$out"; then
    if [ $SECONDS -ge $deadline ]; then
      printf '%s\n' "$out" >&2
      echo "apt-get: the package manager's lock was still held after ${wait_s} s (another apt/dpkg run); retry when it has finished, or raise CALLPULSE_APT_LOCK_WAIT_S" >&2
      exit $status
    fi
    if [ -z "$said" ]; then
      echo "waiting for another package manager run to release its lock (up to ${wait_s} s)..." >&2
      said=1
    fi
    sleep "${CALLPULSE_APT_LOCK_POLL_S:-5}"
    continue
  fi
  printf '%s\n' "$out" >&2
  exit $status
done
