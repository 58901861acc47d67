#!/usr/bin/env bash
# The dashboard's browser tests drive headless Chromium through Playwright using the distribution's
# browser (Playwright's own browser download is not used); install it from Debian if missing.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if command -v apt-get >/dev/null; then
  echo "installing chromium and chromium-driver (apt-get)" >&2
  # Waits for a package manager run already in progress (unattended upgrades on a fresh machine).
  "$(dirname "$0")/apt-get-wait.sh" update -qq
  "$(dirname "$0")/apt-get-wait.sh" install -y -qq chromium chromium-driver
else
  echo "please install Chromium at /usr/bin/chromium (or set CALLPULSE_TEST_CHROMIUM) and re-run" >&2; exit 1
fi
