#!/usr/bin/env bash
# Installs the headless browser the dashboard test drives (Debian's chromium and
# its chromedriver), only when missing: safe to run before every test session.
# Playwright's own browser download does not work on these machines, so the test
# uses Selenium against the system Chromium. Needs root (or sudo) for apt-get.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
