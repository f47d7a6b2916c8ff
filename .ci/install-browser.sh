#!/usr/bin/env bash
# Debian's chromium for the chat page's browser test (tests/ui), driven by Playwright with
# executable_path=/usr/bin/chromium: no `playwright install` download. Idempotent.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version
