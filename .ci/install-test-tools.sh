#!/usr/bin/env bash
# System tools the test suite drives: Debian's chromium (the chat page's browser test) and
# prometheus/promtool (dashboard and alert tests), the kubectl/helm binaries (Kubernetes and
# chart tests), checkov and hadolint (chart and image checks).
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  missing+=(prometheus)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# prometheus' own service (where systemd runs it), checkov, hadolint, helm and kubectl
bash .ci/install-chart-tools.sh
